//! The `MfaPolicy` aggregate: one stream (`global`) that says whether a login asks for a
//! second factor and which factor types count.

mod aggregate;
mod commands;
mod error;
mod events;
#[cfg(test)]
mod tests;

pub use aggregate::{MAX_TRUSTED_DEVICE_DAYS, MfaPolicy, MfaPolicyServices, POLICY_ID};
pub use commands::MfaPolicyCommand;
pub use error::MfaPolicyError;
pub use events::{MfaPolicyEvent, MfaPolicySet};

use serde::{Deserialize, Serialize};

/// Whether a login asks for a second factor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MfaMode {
    /// Never: the password alone gives a token.
    Disabled,
    /// When the user has an active factor of an allowed type.
    #[default]
    Optional,
    /// Always: a user without a factor gets an enrolment-only token.
    Required,
}

impl MfaMode {
    /// The contract name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disabled => "DISABLED",
            Self::Optional => "OPTIONAL",
            Self::Required => "REQUIRED",
        }
    }
}
