//! The `ApiKey` aggregate: one stream per key (its id), recording who minted it, with which
//! scope and expiry, and who revoked it. The secret never enters an event: it is drawn by the
//! caller, shown once, and stored only as a keyed hash in the `api_keys` table, which the use
//! case writes beside the events (`api/src/app/api_keys.rs` says in which order, and why).

use chrono::{DateTime, Utc};
use cqrs_es::{Aggregate, DomainEvent, event_sink::EventSink};
use serde::{Deserialize, Serialize};

use crate::error::{Classify, ErrorKind};

/// What a key may do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApiKeyScope {
    /// Everything.
    #[default]
    #[serde(rename = "admin")]
    Admin,
    /// Read the event log (`events`, query and subscription) and nothing else: for a SIEM.
    #[serde(rename = "read:audit")]
    ReadAudit,
}

impl ApiKeyScope {
    /// The contract string (`admin`, `read:audit`), also stored in `api_keys.scope`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::ReadAudit => "read:audit",
        }
    }

    /// Parses [`ApiKeyScope::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Self::Admin),
            "read:audit" => Some(Self::ReadAudit),
            _ => None,
        }
    }
}

/// Events of an API key. The variant name is the stored `event_type` (frozen by the contract).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ApiKeyEvent {
    /// A key was minted.
    ApiKeyCreated(ApiKeyCreated),
    /// A key was revoked; it is refused from now on.
    ApiKeyRevoked(ApiKeyRevoked),
    /// A key minted before keys had events (migration 0011) was entered into the log from
    /// its `api_keys` row, so it can be revoked like any other.
    ApiKeyAdopted(ApiKeyAdopted),
}

/// Payload of [`ApiKeyEvent::ApiKeyAdopted`]: what the key's row says. Who minted it was
/// never recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiKeyAdopted {
    /// The key's public id.
    pub key_id: String,
    /// Its name.
    pub name: String,
    /// Its scope.
    pub scope: ApiKeyScope,
    /// When it was minted, by its row.
    pub minted_at: DateTime<Utc>,
    /// Who adopted it (an actor).
    pub adopted_by: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// The `created_by` of an adopted key: nobody recorded who minted it.
pub const UNRECORDED_MINTER: &str = "unrecorded";

/// Payload of [`ApiKeyEvent::ApiKeyCreated`]. No secret, no hash of one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiKeyCreated {
    /// The key's public id (the `<id>` of `tsk_<id>_<secret>`).
    pub key_id: String,
    /// A name to recognise it by.
    pub name: String,
    /// What it may do.
    pub scope: ApiKeyScope,
    /// When it stops working by itself, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// Who minted it (an actor: `api-key:<id>`, `operator:cli`).
    pub created_by: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// Payload of [`ApiKeyEvent::ApiKeyRevoked`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiKeyRevoked {
    /// The key.
    pub key_id: String,
    /// Who revoked it (an actor).
    pub revoked_by: String,
    /// When.
    pub at: DateTime<Utc>,
}

impl DomainEvent for ApiKeyEvent {
    fn event_type(&self) -> String {
        match self {
            Self::ApiKeyCreated(_) => "ApiKeyCreated",
            Self::ApiKeyRevoked(_) => "ApiKeyRevoked",
            Self::ApiKeyAdopted(_) => "ApiKeyAdopted",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

impl crate::versioning::Versioned for ApiKeyEvent {
    fn current_version(event_type: &str) -> Option<&'static str> {
        matches!(
            event_type,
            "ApiKeyCreated" | "ApiKeyRevoked" | "ApiKeyAdopted"
        )
        .then_some("1.0")
    }

    fn upcast(
        _event_type: &str,
        _event_version: &str,
        payload: serde_json::Value,
    ) -> serde_json::Value {
        payload
    }
}

/// Commands on an API key. Times come in the command (the use case reads its clock), so the
/// rules are pure.
#[derive(Clone, Debug)]
pub enum ApiKeyCommand {
    /// Record a freshly minted key.
    Create {
        /// Its id.
        key_id: String,
        /// Its name.
        name: String,
        /// Its scope.
        scope: ApiKeyScope,
        /// Its expiry.
        expires_at: Option<DateTime<Utc>>,
        /// The actor.
        by: String,
        /// Now.
        at: DateTime<Utc>,
    },
    /// Enter a key minted before keys had events, from its row.
    Adopt {
        /// Its id.
        key_id: String,
        /// Its name.
        name: String,
        /// Its scope.
        scope: ApiKeyScope,
        /// When it was minted.
        minted_at: DateTime<Utc>,
        /// The actor.
        by: String,
        /// Now.
        at: DateTime<Utc>,
    },
    /// Revoke it.
    Revoke {
        /// The actor.
        by: String,
        /// Now.
        at: DateTime<Utc>,
    },
}

impl crate::versioning::CommandName for ApiKeyCommand {
    fn name(&self) -> &'static str {
        match self {
            Self::Create { .. } => "CreateApiKey",
            Self::Revoke { .. } => "RevokeApiKey",
            Self::Adopt { .. } => "AdoptApiKey",
        }
    }
}

/// The longest key name accepted.
pub const MAX_NAME_LEN: usize = 100;

/// Why an API-key command was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApiKeyError {
    /// No such key.
    #[error("API key not found")]
    NotFound,
    /// The id is taken (ids are random: only a replayed command gets here).
    #[error("API key already exists")]
    AlreadyExists,
    /// Revoked before.
    #[error("API key already revoked")]
    AlreadyRevoked,
    /// Empty, too long, or with control characters.
    #[error("an API key's name must be 1 to 100 printable characters")]
    InvalidName,
    /// An expiry that is not in the future.
    #[error("an API key's expiry must be in the future")]
    ExpiryInPast,
}

impl Classify for ApiKeyError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::NotFound => ErrorKind::NotFound,
            Self::AlreadyExists | Self::AlreadyRevoked => ErrorKind::WrongState,
            Self::InvalidName | Self::ExpiryInPast => ErrorKind::InvalidInput,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            Self::NotFound => "API_KEY_NOT_FOUND",
            Self::AlreadyExists => "API_KEY_EXISTS",
            Self::AlreadyRevoked => "API_KEY_ALREADY_REVOKED",
            Self::InvalidName => "INVALID_API_KEY_NAME",
            Self::ExpiryInPast => "EXPIRY_IN_PAST",
        }
    }
}

/// An API key, folded from its events.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    /// What was minted (`None`: no such key).
    pub created: Option<ApiKeyCreated>,
    /// The revocation, if any.
    pub revoked: Option<ApiKeyRevoked>,
}

impl ApiKey {
    /// Whether `Revoke` would be accepted now (the use case asks before it marks the table,
    /// so a refused revocation changes nothing anywhere).
    ///
    /// # Errors
    /// `NotFound`, `AlreadyRevoked`.
    pub fn may_revoke(&self) -> Result<(), ApiKeyError> {
        if self.created.is_none() {
            return Err(ApiKeyError::NotFound);
        }
        if self.revoked.is_some() {
            return Err(ApiKeyError::AlreadyRevoked);
        }
        Ok(())
    }

    /// Whether the key authenticates at `now`: minted, not revoked, not expired.
    pub fn is_usable(&self, now: DateTime<Utc>) -> bool {
        self.revoked.is_none()
            && self
                .created
                .as_ref()
                .is_some_and(|c| c.expires_at.is_none_or(|e| now < e))
    }
}

fn valid_name(name: &str) -> bool {
    let n = name.trim();
    !n.is_empty() && name.chars().count() <= MAX_NAME_LEN && !name.chars().any(char::is_control)
}

impl Aggregate for ApiKey {
    const TYPE: &'static str = "ApiKey";
    type Command = ApiKeyCommand;
    type Event = ApiKeyEvent;
    type Error = ApiKeyError;
    type Services = ();

    async fn handle(
        &mut self,
        command: ApiKeyCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), ApiKeyError> {
        let event = match command {
            ApiKeyCommand::Create {
                key_id,
                name,
                scope,
                expires_at,
                by,
                at,
            } => {
                if self.created.is_some() {
                    return Err(ApiKeyError::AlreadyExists);
                }
                if !valid_name(&name) {
                    return Err(ApiKeyError::InvalidName);
                }
                if expires_at.is_some_and(|e| e <= at) {
                    return Err(ApiKeyError::ExpiryInPast);
                }
                ApiKeyEvent::ApiKeyCreated(ApiKeyCreated {
                    key_id,
                    name,
                    scope,
                    expires_at,
                    created_by: by,
                    at,
                })
            }
            ApiKeyCommand::Adopt {
                key_id,
                name,
                scope,
                minted_at,
                by,
                at,
            } => {
                if self.created.is_some() {
                    return Err(ApiKeyError::AlreadyExists);
                }
                ApiKeyEvent::ApiKeyAdopted(ApiKeyAdopted {
                    key_id,
                    name,
                    scope,
                    minted_at,
                    adopted_by: by,
                    at,
                })
            }
            ApiKeyCommand::Revoke { by, at } => {
                self.may_revoke()?;
                let key_id = self.created.as_ref().map(|c| c.key_id.clone());
                ApiKeyEvent::ApiKeyRevoked(ApiKeyRevoked {
                    key_id: key_id.unwrap_or_default(),
                    revoked_by: by,
                    at,
                })
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: ApiKeyEvent) {
        match event {
            ApiKeyEvent::ApiKeyCreated(e) => self.created = Some(e),
            ApiKeyEvent::ApiKeyRevoked(e) => self.revoked = Some(e),
            // Keys from before 0011 had no expiry.
            ApiKeyEvent::ApiKeyAdopted(e) => {
                self.created = Some(ApiKeyCreated {
                    key_id: e.key_id,
                    name: e.name,
                    scope: e.scope,
                    expires_at: None,
                    created_by: UNRECORDED_MINTER.to_string(),
                    at: e.minted_at,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    fn created(expires_at: Option<DateTime<Utc>>) -> ApiKeyCreated {
        ApiKeyCreated {
            key_id: "0123456789abcdef".into(),
            name: "siem".into(),
            scope: ApiKeyScope::ReadAudit,
            expires_at,
            created_by: "api-key:bootstrap".into(),
            at: t(100),
        }
    }

    fn create(name: &str, expires_at: Option<DateTime<Utc>>) -> ApiKeyCommand {
        ApiKeyCommand::Create {
            key_id: "0123456789abcdef".into(),
            name: name.into(),
            scope: ApiKeyScope::ReadAudit,
            expires_at,
            by: "api-key:bootstrap".into(),
            at: t(100),
        }
    }

    fn framework() -> TestFramework<ApiKey> {
        TestFramework::with(())
    }

    #[tokio::test]
    async fn creating_records_who_minted_which_key() {
        framework()
            .given_no_previous_events()
            .when_async(create("siem", Some(t(200))))
            .await
            .then_expect_events(vec![ApiKeyEvent::ApiKeyCreated(created(Some(t(200))))]);
    }

    #[tokio::test]
    async fn a_key_is_created_once() {
        framework()
            .given(vec![ApiKeyEvent::ApiKeyCreated(created(None))])
            .when_async(create("siem", None))
            .await
            .then_expect_error(ApiKeyError::AlreadyExists);
    }

    #[tokio::test]
    async fn names_and_expiries_are_checked() {
        for name in ["", "   ", "a\nb", &"x".repeat(101)] {
            framework()
                .given_no_previous_events()
                .when_async(create(name, None))
                .await
                .then_expect_error(ApiKeyError::InvalidName);
        }
        for expiry in [t(100), t(99)] {
            framework()
                .given_no_previous_events()
                .when_async(create("siem", Some(expiry)))
                .await
                .then_expect_error(ApiKeyError::ExpiryInPast);
        }
    }

    #[tokio::test]
    async fn revoking_records_who_and_happens_once() {
        let revoked = ApiKeyRevoked {
            key_id: "0123456789abcdef".into(),
            revoked_by: "operator:cli".into(),
            at: t(150),
        };
        framework()
            .given(vec![ApiKeyEvent::ApiKeyCreated(created(None))])
            .when_async(ApiKeyCommand::Revoke {
                by: "operator:cli".into(),
                at: t(150),
            })
            .await
            .then_expect_events(vec![ApiKeyEvent::ApiKeyRevoked(revoked.clone())]);
        framework()
            .given(vec![
                ApiKeyEvent::ApiKeyCreated(created(None)),
                ApiKeyEvent::ApiKeyRevoked(revoked),
            ])
            .when_async(ApiKeyCommand::Revoke {
                by: "x".into(),
                at: t(160),
            })
            .await
            .then_expect_error(ApiKeyError::AlreadyRevoked);
        framework()
            .given_no_previous_events()
            .when_async(ApiKeyCommand::Revoke {
                by: "x".into(),
                at: t(160),
            })
            .await
            .then_expect_error(ApiKeyError::NotFound);
    }

    #[test]
    fn usable_until_revoked_or_expired() {
        let mut key = ApiKey::default();
        assert!(!key.is_usable(t(0)));
        key.apply(ApiKeyEvent::ApiKeyCreated(created(Some(t(200)))));
        assert!(key.is_usable(t(199)));
        assert!(!key.is_usable(t(200)));
        key.apply(ApiKeyEvent::ApiKeyRevoked(ApiKeyRevoked {
            key_id: "0123456789abcdef".into(),
            revoked_by: "x".into(),
            at: t(150),
        }));
        assert!(!key.is_usable(t(160)));
    }

    #[test]
    fn event_type_strings_are_frozen() {
        assert_eq!(
            ApiKeyEvent::ApiKeyCreated(created(None)).event_type(),
            "ApiKeyCreated"
        );
        assert_eq!(<ApiKey as Aggregate>::TYPE, "ApiKey");
        assert_eq!(
            serde_json::to_value(ApiKeyScope::ReadAudit).unwrap(),
            serde_json::json!("read:audit")
        );
        assert_eq!(ApiKeyScope::parse("admin"), Some(ApiKeyScope::Admin));
        assert_eq!(ApiKeyScope::parse("root"), None);
    }
    fn adopted() -> ApiKeyAdopted {
        ApiKeyAdopted {
            key_id: "0123456789abcdef".into(),
            name: "old".into(),
            scope: ApiKeyScope::Admin,
            minted_at: t(10),
            adopted_by: "api-key:bootstrap".into(),
            at: t(100),
        }
    }

    #[tokio::test]
    async fn a_key_minted_before_its_events_is_adopted_once_then_revocable() {
        let adopt = ApiKeyCommand::Adopt {
            key_id: "0123456789abcdef".into(),
            name: "old".into(),
            scope: ApiKeyScope::Admin,
            minted_at: t(10),
            by: "api-key:bootstrap".into(),
            at: t(100),
        };
        framework()
            .given_no_previous_events()
            .when_async(adopt.clone())
            .await
            .then_expect_events(vec![ApiKeyEvent::ApiKeyAdopted(adopted())]);
        framework()
            .given(vec![ApiKeyEvent::ApiKeyCreated(created(None))])
            .when_async(adopt)
            .await
            .then_expect_error(ApiKeyError::AlreadyExists);
        framework()
            .given(vec![ApiKeyEvent::ApiKeyAdopted(adopted())])
            .when_async(ApiKeyCommand::Revoke {
                by: "operator:cli".into(),
                at: t(200),
            })
            .await
            .then_expect_events(vec![ApiKeyEvent::ApiKeyRevoked(ApiKeyRevoked {
                key_id: "0123456789abcdef".into(),
                revoked_by: "operator:cli".into(),
                at: t(200),
            })]);
        let mut key = ApiKey::default();
        key.apply(ApiKeyEvent::ApiKeyAdopted(adopted()));
        assert!(key.is_usable(t(1_000_000)));
        assert_eq!(
            key.created.map(|c| (c.created_by, c.at)),
            Some((UNRECORDED_MINTER.to_string(), t(10)))
        );
        assert_eq!(
            ApiKeyEvent::ApiKeyAdopted(adopted()).event_type(),
            "ApiKeyAdopted"
        );
    }
}
