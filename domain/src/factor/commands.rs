use crate::{
    factor::{FactorType, totp::TotpParams},
    ids::{FactorId, UserId},
    secret::{PassCode, SecretBytes},
};

/// Commands on a factor.
#[derive(Clone, Debug)]
pub enum FactorCommand {
    /// Enrol a new factor (pending activation).
    Enroll(Enroll),
    /// Activate a pending factor with a code.
    Activate {
        /// The code from the authenticator.
        pass_code: PassCode,
    },
    /// Prove possession of an active factor.
    Verify {
        /// The code from the authenticator.
        pass_code: PassCode,
    },
    /// Remove the factor for good.
    Remove,
    /// Lift a lockout before its time (administrators).
    Unlock,
}

/// Enrols a factor. The caller draws the random secret, so the aggregate stays deterministic.
#[derive(Clone, Debug)]
pub struct Enroll {
    /// This factor's id (the stream id); the secret is bound to it.
    pub factor_id: FactorId,
    /// The owner, who must exist (checked by the caller).
    pub user_id: UserId,
    /// The kind of factor.
    pub factor_type: FactorType,
    /// A label the user chose ("Work phone").
    pub label: Option<String>,
    /// For TOTP: the secret and parameters.
    pub totp: Option<TotpSpec>,
}

/// A new TOTP secret and its parameters.
#[derive(Clone, Debug)]
pub struct TotpSpec {
    /// Raw key bytes, at least 160 bits.
    pub secret: SecretBytes,
    /// Algorithm, digits, period.
    pub params: TotpParams,
}

/// Longest accepted label.
pub const MAX_LABEL: usize = 128;

impl crate::versioning::CommandName for FactorCommand {
    fn name(&self) -> &'static str {
        match self {
            Self::Enroll(_) => "Enroll",
            Self::Activate { .. } => "Activate",
            Self::Verify { .. } => "Verify",
            Self::Remove => "Remove",
            Self::Unlock => "Unlock",
        }
    }
}
