use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::user::LoginFailureReason;

/// Events of a user. The variant name is the stored `event_type` (SPEC §2, frozen).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum UserEvent {
    /// The user exists.
    Registered(Registered),
    /// A first-factor password was set (argon2id hash only).
    PasswordSet(PasswordSet),
    /// A login (or a password change) presented a wrong password.
    LoginFailed(LoginFailed),
}

/// Payload of [`UserEvent::LoginFailed`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoginFailed {
    /// Why.
    pub reason: LoginFailureReason,
    /// Failed logins of this user so far, this one included.
    pub failed_logins: u32,
    /// When.
    pub at: DateTime<Utc>,
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
            Self::LoginFailed(_) => "LoginFailed",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}
