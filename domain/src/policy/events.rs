use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::{factor::FactorType, policy::MfaMode};

/// Events of the MFA policy. The variant name is the stored `event_type`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum MfaPolicyEvent {
    /// The policy was set (it replaces the previous one whole).
    MfaPolicySet(MfaPolicySet),
}

/// Payload of [`MfaPolicyEvent::MfaPolicySet`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MfaPolicySet {
    /// Whether logins ask for a second factor.
    pub mode: MfaMode,
    /// Factor types that may be enrolled and used at login, in a fixed order.
    pub allowed_factor_types: Vec<FactorType>,
    /// When.
    pub at: DateTime<Utc>,
}

impl DomainEvent for MfaPolicyEvent {
    fn event_type(&self) -> String {
        match self {
            Self::MfaPolicySet(_) => "MfaPolicySet",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

impl crate::versioning::Versioned for MfaPolicyEvent {
    fn current_version(event_type: &str) -> Option<&'static str> {
        (event_type == "MfaPolicySet").then_some("1.0")
    }

    fn upcast(
        _event_type: &str,
        _event_version: &str,
        payload: serde_json::Value,
    ) -> serde_json::Value {
        payload
    }
}
