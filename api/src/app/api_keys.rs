//! API keys: create (with a scope and an optional expiry), list, revoke. Admins only.
//!
//! Every change is an `ApiKey` event (who minted or revoked which key id, never the secret)
//! *and* a write of the `api_keys` row that authentication reads on every request, so a
//! revocation or an expiry holds at once on every node without waiting for a consumer. The two
//! writes are ordered to fail closed: a new key's event is recorded before its row exists (a
//! failure in between leaves a recorded key nobody can use, never a usable key with no
//! record); a revocation marks the row before its event (a failure in between leaves a dead
//! key, and the retry, which the aggregate still allows, records the event).

use chrono::{DateTime, TimeDelta, Utc};
use tessera_domain::api_key::{ApiKey, ApiKeyCommand, ApiKeyEvent, ApiKeyScope};

use crate::{
    app::{AppError, AppResult, Call},
    auth::ApiKeyRow,
    state::AppState,
};

/// What `createApiKey` asks for.
#[derive(Clone, Debug)]
pub struct NewApiKey {
    /// A name to recognise the key by.
    pub name: String,
    /// What it may do.
    pub scope: ApiKeyScope,
    /// When it stops working by itself.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A minted key: its row and the token, shown only now.
#[derive(Clone, Debug)]
pub struct CreatedKey {
    /// The key as listed.
    pub key: ApiKeyRow,
    /// `tsk_<id>_<secret>`.
    pub token: String,
}

/// Parses an expiry as an operator types it: an RFC 3339 time, or a duration from `now` in
/// whole days, hours or minutes (`90d`, `12h`, `30m`).
///
/// # Errors
/// `INVALID_EXPIRY`.
pub fn parse_expiry(s: &str, now: DateTime<Utc>) -> AppResult<DateTime<Utc>> {
    let bad = || {
        AppError::bad_input(
            "INVALID_EXPIRY",
            format!("{s}: not an RFC 3339 time or a duration such as 90d, 12h, 30m"),
        )
    };
    let s = s.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(s) {
        return super::moment(at.with_timezone(&Utc));
    }
    let unit = s.chars().last().ok_or_else(bad)?;
    let n: i64 = s[..s.len() - unit.len_utf8()].parse().map_err(|_| bad())?;
    let delta = match unit {
        'd' => TimeDelta::try_days(n),
        'h' => TimeDelta::try_hours(n),
        'm' => TimeDelta::try_minutes(n),
        _ => None,
    }
    .filter(|d| *d > TimeDelta::zero())
    .ok_or_else(bad)?;
    now.checked_add_signed(delta)
        .ok_or_else(bad)
        .and_then(super::moment)
}

fn db(e: sqlx::Error) -> AppError {
    AppError::internal(e)
}

/// `createApiKey`: records `ApiKeyCreated`, then stores the key's row.
///
/// # Errors
/// Not an admin; the key's checks (name, expiry in the past); store errors.
pub async fn create(state: &AppState, call: &Call, input: NewApiKey) -> AppResult<CreatedKey> {
    let by = call.admin()?.actor();
    if let Some(at) = input.expires_at {
        super::moment(at)?;
    }
    let minted = state.auth.mint();
    let command = ApiKeyCommand::Create {
        key_id: minted.id.clone(),
        name: input.name,
        scope: input.scope,
        expires_at: input.expires_at,
        by,
        at: state.clock.now(),
    };
    let committed = state
        .api_keys
        .execute(&minted.id, command, &call.metadata())
        .await?;
    let Some(ApiKeyEvent::ApiKeyCreated(created)) = committed.payloads().into_iter().next() else {
        return Err(AppError::internal("ApiKeyCreated was not recorded"));
    };
    state.auth.insert_key(&minted, &created).await.map_err(db)?;
    state.nudge();
    Ok(CreatedKey {
        key: ApiKeyRow {
            id: minted.id.clone(),
            name: created.name,
            scope: created.scope,
            created_at: created.at,
            created_by: Some(created.created_by),
            expires_at: created.expires_at,
            revoked_at: None,
            revoked_by: None,
        },
        token: minted.token,
    })
}

/// `revokeApiKey`: marks the row revoked (refused from the next request on, on every node),
/// then records `ApiKeyRevoked`. A key minted before keys had events (migration 0011: a row,
/// no stream) is first adopted: `ApiKeyAdopted` enters it into the log from its row, so
/// every key that authenticates can be revoked. Revoking the bootstrap key is not possible: it lives in
/// configuration (`TESSERA_BOOTSTRAP_API_KEY`); unset it instead.
///
/// # Errors
/// Not an admin; `API_KEY_NOT_FOUND`, `API_KEY_ALREADY_REVOKED`; store errors.
pub async fn revoke(state: &AppState, call: &Call, id: &str) -> AppResult<ApiKeyRow> {
    let by = call.admin()?.actor();
    let mut loaded = state.api_keys.load(id).await?;
    if loaded.0.created.is_none()
        && let Some(row) = state.auth.key(id).await.map_err(db)?
    {
        let command = ApiKeyCommand::Adopt {
            key_id: row.id,
            name: row.name,
            scope: row.scope,
            minted_at: row.created_at,
            by: by.clone(),
            at: state.clock.now(),
        };
        let committed = state
            .api_keys
            .execute_from(id, Some(loaded), command, &call.metadata())
            .await?;
        let seq = committed.last_sequence().unwrap_or(0);
        loaded = (committed.state, seq);
    }
    let key: &ApiKey = &loaded.0;
    key.may_revoke()
        .map_err(|e| AppError::from(cqrs_es::AggregateError::UserError(e)))?;
    let at = state.clock.now();
    if !state.auth.revoke_key(id, &by, at).await.map_err(db)? {
        return Err(AppError::internal(format!(
            "API key {id} has events but no row"
        )));
    }
    let command = ApiKeyCommand::Revoke { by, at };
    state
        .api_keys
        .execute_from(id, Some(loaded), command, &call.metadata())
        .await?;
    state.nudge();
    state
        .auth
        .key(id)
        .await
        .map_err(db)?
        .ok_or_else(|| AppError::internal("revoked key vanished"))
}

/// `apiKeys`: up to `limit` keys with ids after `after`, by id.
///
/// # Errors
/// Not an admin; store errors.
pub async fn list(
    state: &AppState,
    call: &Call,
    after: Option<&str>,
    limit: i64,
) -> AppResult<Vec<ApiKeyRow>> {
    call.admin()?;
    state.auth.list_keys(after, limit).await.map_err(db)
}

/// How many keys `list` pages through (admins only).
///
/// # Errors
/// Not an admin; database errors.
pub async fn count(state: &AppState, call: &Call) -> AppResult<i64> {
    call.admin()?;
    state.auth.count_keys().await.map_err(db)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiries_are_times_or_durations() {
        let now = DateTime::from_timestamp(1_000_000, 0).unwrap();
        assert_eq!(
            parse_expiry("2030-01-02T03:04:05Z", now).unwrap(),
            DateTime::parse_from_rfc3339("2030-01-02T03:04:05Z").unwrap()
        );
        assert_eq!(parse_expiry("90d", now).unwrap(), now + TimeDelta::days(90));
        assert_eq!(
            parse_expiry("12h", now).unwrap(),
            now + TimeDelta::hours(12)
        );
        assert_eq!(
            parse_expiry("30m", now).unwrap(),
            now + TimeDelta::minutes(30)
        );
        for bad in [
            "",
            "d",
            "0d",
            "-1d",
            "12",
            "12s",
            "tomorrow",
            "99999999999d",
        ] {
            assert!(parse_expiry(bad, now).is_err(), "{bad}");
        }
    }
}
