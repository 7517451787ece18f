//! A user's security activity: the events of the log that tell a person what happened to
//! their account (proofs that succeeded or failed, lockouts, factors added and removed,
//! recovery codes, remembered devices, codes sent, alerts), each described in plain words.
//!
//! The events come from every stream the user owns: the `User` stream itself, and the
//! `Factor`, `Challenge` and `Alert` streams whose creating event names the user (see
//! [`crate::audit::Filter::activity_of`]). What leaves is built from the redacted payload
//! and only from named, non-secret fields: an activity entry can never carry more than the
//! audit log shows.

use serde_json::Value;

use crate::{StoredEvent, audit};

/// How an activity entry went, for someone reading their account's history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A proof, a sign-in or a remembered device worked.
    Success,
    /// A proof or a sign-in failed, or something locked.
    Failure,
    /// The account's ways to prove itself changed.
    Change,
    /// Tessera raised a security alert.
    Alert,
}

/// One kind of event shown in the activity, and what it means.
struct Kind {
    aggregate_type: &'static str,
    event_type: &'static str,
    text: &'static str,
    outcome: Outcome,
}

const fn kind(
    aggregate_type: &'static str,
    event_type: &'static str,
    text: &'static str,
    outcome: Outcome,
) -> Kind {
    Kind {
        aggregate_type,
        event_type,
        text,
        outcome,
    }
}

/// Every kind of event the activity shows. Ceremony steps (`CodeIssued`,
/// `RegistrationRequested`, `AssertionRequested`, `CredentialUsed`), a challenge's own
/// bookkeeping and a factor check's echo on the user stream are left out: the factor's own
/// event already tells the story.
const KINDS: &[Kind] = &[
    kind("User", "Registered", "Account created", Outcome::Change),
    kind("User", "PasswordSet", "Password set", Outcome::Change),
    kind("User", "LoginFailed", "Sign-in refused", Outcome::Failure),
    kind(
        "User",
        "LoginThrottled",
        "Sign-in paused after wrong passwords",
        Outcome::Failure,
    ),
    kind(
        "User",
        "DeviceTrusted",
        "Device remembered",
        Outcome::Change,
    ),
    kind(
        "User",
        "TrustedDeviceUsed",
        "Signed in on a remembered device",
        Outcome::Success,
    ),
    kind(
        "User",
        "DeviceRevoked",
        "Remembered device forgotten",
        Outcome::Change,
    ),
    kind(
        "User",
        "RecoveryCodesGenerated",
        "New recovery codes",
        Outcome::Change,
    ),
    kind(
        "User",
        "RecoveryUsed",
        "Recovery code used",
        Outcome::Success,
    ),
    kind(
        "User",
        "FailedAttempt",
        "Wrong recovery code",
        Outcome::Failure,
    ),
    kind(
        "User",
        "LockedOut",
        "Second factor locked until an administrator unlocks it",
        Outcome::Failure,
    ),
    kind(
        "User",
        "Unlocked",
        "Second factor unlocked by an administrator",
        Outcome::Change,
    ),
    kind(
        "User",
        "SessionsRevoked",
        "Signed out everywhere",
        Outcome::Change,
    ),
    kind(
        "User",
        "Deactivated",
        "Account deactivated",
        Outcome::Change,
    ),
    kind(
        "User",
        "Reactivated",
        "Account reactivated",
        Outcome::Change,
    ),
    kind(
        "Factor",
        "Enrolled",
        "Factor enrolment started",
        Outcome::Change,
    ),
    kind("Factor", "Activated", "Factor added", Outcome::Change),
    kind("Factor", "Verified", "Verified", Outcome::Success),
    kind(
        "Factor",
        "FailedAttempt",
        "Failed verification",
        Outcome::Failure,
    ),
    kind(
        "Factor",
        "LockedOut",
        "Factor locked after failed verifications",
        Outcome::Failure,
    ),
    kind("Factor", "Unlocked", "Factor unlocked", Outcome::Change),
    kind("Factor", "Removed", "Factor removed", Outcome::Change),
    kind(
        "Factor",
        "EnrollmentExpired",
        "Factor enrolment expired",
        Outcome::Change,
    ),
    kind("Challenge", "CodeSent", "Code sent", Outcome::Change),
    kind(
        "Alert",
        "SecurityAlertRaised",
        "Security alert",
        Outcome::Alert,
    ),
];

fn kind_of(aggregate_type: &str, event_type: &str) -> Option<&'static Kind> {
    KINDS
        .iter()
        .find(|k| k.aggregate_type == aggregate_type && k.event_type == event_type)
}

/// SQL: the event is of a kind the activity shows. A user-stream `FailedAttempt` that names a
/// factor is the echo of that factor's own `FailedAttempt` and is left out; one without a
/// factor is a wrong recovery code or a refusal while locked.
pub(crate) fn kinds_clause(dialect: crate::Dialect) -> String {
    let any = KINDS
        .iter()
        .map(|k| {
            format!(
                "(aggregate_type = '{}' AND event_type = '{}')",
                k.aggregate_type, k.event_type
            )
        })
        .collect::<Vec<_>>()
        .join(" OR ");
    let echo_factor = match dialect {
        crate::Dialect::Postgres => "payload->'FailedAttempt'->>'factor_id'",
        crate::Dialect::Sqlite => "json_extract(payload, '$.FailedAttempt.factor_id')",
    };
    format!(
        "({any}) AND NOT (aggregate_type = 'User' AND event_type = 'FailedAttempt' \
         AND {echo_factor} IS NOT NULL)"
    )
}

/// One entry of a user's activity, described.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// What happened, in plain words ("Failed verification", "Factor added").
    pub text: &'static str,
    /// How it went.
    pub outcome: Outcome,
    /// Why a failure failed, or why a device was forgotten (`INVALID_CODE`, `REVOKED`): the
    /// payload's `reason`, if it has one. For an alert, its kind (`REPEATED_FAILURES`).
    pub reason: Option<String>,
    /// A sentence or value that says more: an alert's reason, a code's masked destination,
    /// a remembered device's label.
    pub detail: Option<String>,
    /// The factor involved: the stream for factor events, the payload's `factor_id` for the
    /// others.
    pub factor_id: Option<String>,
    /// The client IP of the request that caused it.
    pub client_ip: Option<String>,
    /// The user agent of the request that caused it.
    pub user_agent: Option<String>,
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

/// Describes an event of the activity; `None` for an event of a kind it does not show.
pub fn describe(event: &StoredEvent) -> Option<Entry> {
    let kind = kind_of(&event.aggregate_type, &event.event_type)?;
    let payload = audit::redact_payload(&event.payload);
    let body = payload.get(&event.event_type).unwrap_or(&Value::Null);
    let metadata = audit::redact(&event.metadata);
    let factor_id = if event.aggregate_type == "Factor" {
        Some(event.aggregate_id.clone())
    } else {
        text(body, "factor_id")
    };
    let (reason, detail) = match (event.aggregate_type.as_str(), event.event_type.as_str()) {
        ("Alert", _) => (text(body, "kind"), text(body, "reason")),
        ("Challenge", "CodeSent") => (text(body, "channel"), text(body, "destination")),
        ("User", "DeviceTrusted") => (None, text(body, "label")),
        _ => (text(body, "reason"), None),
    };
    let text_of = |v: Option<String>| v.filter(|s| s != audit::REDACTED);
    let words = match (event.event_type.as_str(), reason.as_deref()) {
        ("FailedAttempt", Some("LOCKED")) if event.aggregate_type == "User" => {
            "Proof refused: second factor locked"
        }
        _ => kind.text,
    };
    Some(Entry {
        text: words,
        outcome: kind.outcome,
        reason: text_of(reason),
        detail: text_of(detail),
        factor_id,
        client_ip: text_of(text(&metadata, "client_ip")),
        user_agent: text_of(text(&metadata, "user_agent")),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tessera_store::Cursor;

    use super::*;

    fn stored(aggregate_type: &str, event_type: &str, payload: Value) -> StoredEvent {
        StoredEvent {
            cursor: Cursor::default(),
            aggregate_type: aggregate_type.into(),
            aggregate_id: "0190-factor".into(),
            sequence: 2,
            event_type: event_type.into(),
            event_version: "1.0".into(),
            payload,
            metadata: json!({ "client_ip": "203.0.113.9", "user_agent": "Firefox/140",
                              "request_id": "r1", "token": "leak" }),
            recorded_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn a_failed_verification_says_why_and_from_where() {
        let e = describe(&stored(
            "Factor",
            "FailedAttempt",
            json!({ "FailedAttempt": { "reason": "INVALID_CODE", "counted": true,
                                       "consecutive_failures": 1, "at": "t" } }),
        ))
        .unwrap();
        assert_eq!(e.text, "Failed verification");
        assert_eq!(e.outcome, Outcome::Failure);
        assert_eq!(e.reason.as_deref(), Some("INVALID_CODE"));
        assert_eq!(e.factor_id.as_deref(), Some("0190-factor"));
        assert_eq!(e.client_ip.as_deref(), Some("203.0.113.9"));
        assert_eq!(e.user_agent.as_deref(), Some("Firefox/140"));
    }

    #[test]
    fn an_alert_gives_its_kind_and_sentence() {
        let e = describe(&stored(
            "Alert",
            "SecurityAlertRaised",
            json!({ "SecurityAlertRaised": { "kind": "FACTOR_LOCKED", "reason": "A factor locked",
                                             "user_id": "u", "caused_by": [], "at": "t" } }),
        ))
        .unwrap();
        assert_eq!(e.outcome, Outcome::Alert);
        assert_eq!(e.reason.as_deref(), Some("FACTOR_LOCKED"));
        assert_eq!(e.detail.as_deref(), Some("A factor locked"));
        assert_eq!(e.factor_id, None);
    }

    #[test]
    fn ceremony_steps_and_unknown_events_are_not_shown() {
        for (t, e) in [
            ("Factor", "CodeIssued"),
            ("Factor", "RegistrationRequested"),
            ("Challenge", "Issued"),
            ("ApiKey", "ApiKeyCreated"),
        ] {
            assert_eq!(describe(&stored(t, e, json!({ e: {} }))), None, "{t}/{e}");
        }
    }

    #[test]
    fn nothing_secret_comes_through_a_described_field() {
        // A device's label is free text from a user agent; a hash beside it stays behind.
        let e = describe(&stored(
            "User",
            "DeviceTrusted",
            json!({ "DeviceTrusted": { "device_id": "d", "token_hash": "h4sh", "label": "Firefox",
                                       "expires_at": "t", "at": "t" } }),
        ))
        .unwrap();
        assert_eq!(e.detail.as_deref(), Some("Firefox"));
        let all = format!("{e:?}");
        assert!(!all.contains("h4sh") && !all.contains("leak"), "{all}");
    }

    #[test]
    fn every_kind_is_listed_once() {
        for (i, k) in KINDS.iter().enumerate() {
            assert!(
                KINDS[i + 1..]
                    .iter()
                    .all(|o| (o.aggregate_type, o.event_type) != (k.aggregate_type, k.event_type)),
                "{}/{}",
                k.aggregate_type,
                k.event_type
            );
        }
    }
}
