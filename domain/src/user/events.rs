use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::versioning::Versioned;

/// Events of a user. The variant name is the stored `event_type` (SPEC §2, frozen).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum UserEvent {
    /// The user exists.
    Registered(Registered),
    /// A first-factor password was set (argon2id hash only).
    PasswordSet(PasswordSet),
}

/// Payload of [`UserEvent::Registered`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Registered {
    /// Normalised login.
    pub login: String,
    /// E-mail address, if given.
    pub email: Option<String>,
    /// Phone number (E.164), if given.
    pub phone_number: Option<String>,
    /// Display name, if given.
    pub display_name: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// Payload of [`UserEvent::PasswordSet`].
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct PasswordSet {
    /// argon2id PHC string.
    pub password_hash: String,
    /// When.
    pub at: DateTime<Utc>,
}

impl std::fmt::Debug for PasswordSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordSet")
            .field("at", &self.at)
            .finish_non_exhaustive()
    }
}

impl DomainEvent for UserEvent {
    fn event_type(&self) -> String {
        match self {
            Self::Registered(_) => "Registered",
            Self::PasswordSet(_) => "PasswordSet",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        <Self as Versioned>::current_version(&self.event_type())
            .unwrap_or("1.0")
            .to_string()
    }
}

impl Versioned for UserEvent {
    fn current_version(event_type: &str) -> Option<&'static str> {
        matches!(event_type, "Registered" | "PasswordSet").then_some("1.0")
    }

    fn upcast(_event_type: &str, _event_version: &str, payload: Value) -> Value {
        payload
    }
}
