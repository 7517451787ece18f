use std::sync::Arc;

use cqrs_es::{Aggregate, event_sink::EventSink};
use serde::{Deserialize, Serialize};

use crate::{
    factor::FactorType,
    policy::{MfaMode, MfaPolicyCommand, MfaPolicyError, MfaPolicyEvent, MfaPolicySet},
    services::Clock,
};

/// The id of the one policy stream.
pub const POLICY_ID: &str = "global";

/// The longest a policy may trust a remembered device, in days.
pub const MAX_TRUSTED_DEVICE_DAYS: u32 = 365;

/// The MFA policy, folded from its events. Before any is set: OPTIONAL, every supported type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MfaPolicy {
    /// Whether logins ask for a second factor.
    pub mode: MfaMode,
    /// Factor types that may be enrolled and used at login.
    pub allowed_factor_types: Vec<FactorType>,
    /// Days a remembered device stays trusted; `Some(0)`: off; `None`: the server decides.
    #[serde(default)]
    pub trusted_device_days: Option<u32>,
}

impl Default for MfaPolicy {
    fn default() -> Self {
        Self {
            mode: MfaMode::Optional,
            allowed_factor_types: vec![
                FactorType::Totp,
                FactorType::Sms,
                FactorType::Email,
                FactorType::Webauthn,
            ],
            trusted_device_days: None,
        }
    }
}

impl MfaPolicy {
    /// Whether factors of type `t` may be enrolled and used at login.
    pub fn allows(&self, t: FactorType) -> bool {
        self.allowed_factor_types.contains(&t)
    }

    /// Days a remembered device stays trusted: the policy's, else `server_days`
    /// (`TESSERA_TRUSTED_DEVICE_DAYS`). 0: devices are not trusted at all.
    pub fn trusted_device_days(&self, server_days: u32) -> u32 {
        self.trusted_device_days.unwrap_or(server_days)
    }

    /// How long a new trust lasts, `None` when devices are not trusted at all (then no
    /// device token is issued and none is honoured, whenever it was issued).
    pub fn trust_period(&self, server_days: u32) -> Option<chrono::TimeDelta> {
        let days = self.trusted_device_days(server_days);
        (days > 0).then(|| chrono::TimeDelta::days(i64::from(days)))
    }
}

/// What the policy's commands need from outside.
#[derive(Clone, Debug)]
pub struct MfaPolicyServices {
    /// The clock.
    pub clock: Arc<dyn Clock>,
}

impl Aggregate for MfaPolicy {
    const TYPE: &'static str = "MfaPolicy";
    type Command = MfaPolicyCommand;
    type Event = MfaPolicyEvent;
    type Error = MfaPolicyError;
    type Services = MfaPolicyServices;

    async fn handle(
        &mut self,
        command: MfaPolicyCommand,
        services: &MfaPolicyServices,
        sink: &EventSink<Self>,
    ) -> Result<(), MfaPolicyError> {
        match command {
            MfaPolicyCommand::Set {
                mode,
                allowed_factor_types,
                trusted_device_days,
            } => {
                if trusted_device_days.is_some_and(|d| d > MAX_TRUSTED_DEVICE_DAYS) {
                    return Err(MfaPolicyError::TrustedDeviceDaysOutOfRange);
                }
                // A fixed order and no duplicates, so equal policies have equal events.
                let allowed: Vec<FactorType> = [
                    FactorType::Totp,
                    FactorType::Sms,
                    FactorType::Email,
                    FactorType::Webauthn,
                ]
                .into_iter()
                .filter(|t| allowed_factor_types.contains(t))
                .collect();
                if allowed.is_empty() && mode != MfaMode::Disabled {
                    return Err(MfaPolicyError::NoFactorTypeAllowed);
                }
                let set = MfaPolicySet {
                    mode,
                    allowed_factor_types: allowed,
                    trusted_device_days,
                    at: services.clock.now(),
                };
                sink.write(MfaPolicyEvent::MfaPolicySet(set), self).await;
                Ok(())
            }
        }
    }

    fn apply(&mut self, event: MfaPolicyEvent) {
        match event {
            MfaPolicyEvent::MfaPolicySet(e) => {
                self.mode = e.mode;
                self.allowed_factor_types = e.allowed_factor_types;
                self.trusted_device_days = e.trusted_device_days;
            }
        }
    }
}
