//! Okta's object shapes: users and factors as its API answers them, and its factor types.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tessera_domain::factor::{Factor, FactorStatus, FactorType};
use tessera_projections::read_model::{FactorRow, UserRow};
use tessera_store::parse_ts;

use crate::app::{AppError, AppResult};

/// The label a TOTP factor enrolled with provider `OKTA` gets: how its provider is read back.
pub(crate) const OKTA_VERIFY_LABEL: &str = "Okta Verify";
/// The label a TOTP factor enrolled with provider `GOOGLE` gets.
pub(crate) const GOOGLE_LABEL: &str = "Google Authenticator";

/// ISO 8601 with milliseconds and `Z`, as Okta writes times.
pub(crate) fn okta_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn time_of(text: &str) -> AppResult<String> {
    parse_ts(text)
        .map(okta_time)
        .ok_or_else(|| AppError::internal(format!("malformed time {text} in a read model")))
}

/// `{"href", "hints": {"allow": [...]}}`.
fn link(href: String, allow: &[&str]) -> Value {
    json!({ "href": href, "hints": { "allow": allow } })
}

/// A user: `{id, status, created, activated, lastLogin, profile, _links}`.
pub(crate) fn user(base: &str, row: &UserRow) -> AppResult<Value> {
    let created = time_of(&row.created_at)?;
    let status = if row.status == "DEACTIVATED" {
        "DEPROVISIONED"
    } else {
        "ACTIVE"
    };
    let href = format!("{base}/api/v1/users/{}", row.id);
    Ok(json!({
        "id": row.id,
        "status": status,
        "created": created,
        "activated": created,
        "statusChanged": null,
        "lastLogin": null,
        "lastUpdated": created,
        "passwordChanged": null,
        "profile": {
            "firstName": row.first_name,
            "lastName": row.last_name,
            "email": row.email,
            "login": row.login,
            "mobilePhone": row.phone_number,
            "displayName": row.display_name,
        },
        "credentials": { "provider": { "type": "OKTA", "name": "OKTA" } },
        "_links": {
            "self": { "href": href },
            "factors": { "href": format!("{href}/factors") },
            "resetFactors": link(format!("{href}/lifecycle/reset_factors"), &["POST"]),
        },
    }))
}

/// Okta's `factorType` of a Tessera factor type.
pub(crate) fn factor_type_name(t: FactorType) -> &'static str {
    match t {
        FactorType::Totp => "token:software:totp",
        FactorType::Sms => "sms",
        FactorType::Email => "email",
        FactorType::Webauthn => "webauthn",
    }
}

/// A factor's facts, from the read model or from the aggregate as a command left it.
pub(crate) struct FactorFacts {
    id: String,
    user_id: String,
    factor_type: FactorType,
    status: FactorStatus,
    label: Option<String>,
    created: DateTime<Utc>,
    updated: DateTime<Utc>,
    destination: Option<String>,
}

impl FactorFacts {
    /// From `factors_v1`.
    pub(crate) fn from_row(row: &FactorRow, now: DateTime<Utc>) -> AppResult<Self> {
        let bad = || AppError::internal(format!("malformed factors_v1 row {}", row.id));
        let created = parse_ts(&row.created_at).ok_or_else(bad)?;
        let verified = row.last_verified_at.as_deref().and_then(parse_ts);
        Ok(Self {
            id: row.id.clone(),
            user_id: row.user_id.clone(),
            factor_type: row.factor_type().ok_or_else(bad)?,
            status: row.status_at(now).ok_or_else(bad)?,
            label: row.label.clone(),
            created,
            updated: verified.map_or(created, |v| v.max(created)),
            destination: row.destination.clone(),
        })
    }

    /// From the aggregate.
    pub(crate) fn from_aggregate(id: &str, f: &Factor, now: DateTime<Utc>) -> AppResult<Self> {
        let created = f.created_at.unwrap_or(now);
        Ok(Self {
            id: id.to_string(),
            user_id: f
                .user_id
                .map(|u| u.to_string())
                .ok_or_else(|| AppError::internal("factor without owner"))?,
            factor_type: f
                .factor_type
                .ok_or_else(|| AppError::internal("factor without type"))?,
            status: f.status_at(now),
            label: f.label.clone(),
            created,
            updated: f.last_verified_at.map_or(created, |v| v.max(created)),
            destination: f.oob.as_ref().map(|o| o.destination.clone()),
        })
    }

    /// Whether the factor is pending activation.
    pub(crate) fn is_pending(&self) -> bool {
        self.status == FactorStatus::PendingActivation
    }

    /// Whether the factor was removed (Okta forgets deleted factors).
    pub(crate) fn is_removed(&self) -> bool {
        self.status == FactorStatus::Removed
    }

    /// The owner's id.
    pub(crate) fn user_id(&self) -> &str {
        &self.user_id
    }

    /// The factor type.
    pub(crate) fn factor_type(&self) -> FactorType {
        self.factor_type
    }

    /// Okta's `provider`: TOTP factors keep the one they were enrolled with in their label.
    pub(crate) fn provider(&self) -> &'static str {
        match self.factor_type {
            FactorType::Totp if self.label.as_deref() != Some(OKTA_VERIFY_LABEL) => "GOOGLE",
            FactorType::Webauthn => "FIDO",
            _ => "OKTA",
        }
    }

    /// The factor as Okta shows it; `login` is the owner's (a TOTP factor's `credentialId`).
    pub(crate) fn to_json(&self, base: &str, login: &str) -> Value {
        let user = format!("{base}/api/v1/users/{}", self.user_id);
        let href = format!("{user}/factors/{}", self.id);
        let status = match self.status {
            FactorStatus::PendingActivation => "PENDING_ACTIVATION",
            // A lockout is temporary: the factor stays enrolled (a verify answers E0000069).
            FactorStatus::Active | FactorStatus::LockedOut => "ACTIVE",
            FactorStatus::Expired => "EXPIRED",
            FactorStatus::Removed => "INACTIVE",
        };
        let profile = match self.factor_type {
            FactorType::Totp => json!({ "credentialId": login }),
            FactorType::Sms => json!({ "phoneNumber": self.destination }),
            FactorType::Email => json!({ "email": self.destination }),
            FactorType::Webauthn => json!({}),
        };
        let mut links = serde_json::Map::new();
        links.insert("self".into(), link(href.clone(), &["GET", "DELETE"]));
        links.insert("user".into(), link(user, &["GET"]));
        if self.is_pending() {
            links.insert(
                "activate".into(),
                link(format!("{href}/lifecycle/activate"), &["POST"]),
            );
            if matches!(self.factor_type, FactorType::Sms | FactorType::Email) {
                let mut resend = link(format!("{href}/resend"), &["POST"]);
                resend["name"] = json!(factor_type_name(self.factor_type));
                links.insert("resend".into(), json!([resend]));
            }
        } else if status == "ACTIVE" {
            links.insert("verify".into(), link(format!("{href}/verify"), &["POST"]));
        }
        json!({
            "id": self.id,
            "factorType": factor_type_name(self.factor_type),
            "provider": self.provider(),
            "vendorName": self.provider(),
            "status": status,
            "created": okta_time(self.created),
            "lastUpdated": okta_time(self.updated),
            "profile": profile,
            "_links": links,
        })
    }
}

/// Okta's E.164 forms (`+1-415-555-0132`, `+1 (415) 555 0132`) as Tessera's (`+14155550132`):
/// the separators go, anything else is left for the user's checks to refuse.
pub(crate) fn e164(phone: &str) -> String {
    phone
        .chars()
        .filter(|c| !matches!(c, '-' | ' ' | '(' | ')' | '.'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_lose_their_separators_only() {
        assert_eq!(e164("+1-415-555-0132"), "+14155550132");
        assert_eq!(e164("+1 (415) 555.0132"), "+14155550132");
        assert_eq!(e164("+1415x"), "+1415x");
    }

    #[test]
    fn times_have_milliseconds_and_z() {
        let t = DateTime::parse_from_rfc3339("2026-12-02T00:21:08.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(okta_time(t), "2026-12-02T00:21:08.123Z");
    }
}
