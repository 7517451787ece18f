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
    /// How many days a remembered device stays trusted; `Some(0)`: no device is trusted;
    /// `None`: the server's `TESSERA_TRUSTED_DEVICE_DAYS` decides. Added in 1.1 (a 1.0 event
    /// left it to the server).
    #[serde(default)]
    pub trusted_device_days: Option<u32>,
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
        "1.1".to_string()
    }
}

impl crate::versioning::Versioned for MfaPolicyEvent {
    fn current_version(event_type: &str) -> Option<&'static str> {
        // 1.1: the policy gained `trusted_device_days`.
        (event_type == "MfaPolicySet").then_some("1.1")
    }

    fn upcast(
        event_type: &str,
        event_version: &str,
        mut payload: serde_json::Value,
    ) -> serde_json::Value {
        // 1.0 → 1.1: a policy set before trusted devices were a policy left them to the server.
        if event_version == "1.0"
            && let Some(body) = payload
                .get_mut(event_type)
                .and_then(serde_json::Value::as_object_mut)
        {
            body.entry("trusted_device_days")
                .or_insert(serde_json::Value::Null);
        }
        payload
    }
}
