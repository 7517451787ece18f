use crate::{factor::FactorType, policy::MfaMode};

/// Commands on the MFA policy.
#[derive(Clone, Debug)]
pub enum MfaPolicyCommand {
    /// Replace the policy.
    Set {
        /// Whether logins ask for a second factor.
        mode: MfaMode,
        /// Factor types that may be enrolled and used at login.
        allowed_factor_types: Vec<FactorType>,
        /// Days a remembered device stays trusted (0: off, at most
        /// [`crate::policy::MAX_TRUSTED_DEVICE_DAYS`]); `None`: the server's setting.
        trusted_device_days: Option<u32>,
    },
}

impl crate::versioning::CommandName for MfaPolicyCommand {
    fn name(&self) -> &'static str {
        match self {
            Self::Set { .. } => "SetMfaPolicy",
        }
    }
}
