use crate::error::{Classify, ErrorKind};

/// Why a policy change was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MfaPolicyError {
    /// OPTIONAL or REQUIRED with no factor type allowed.
    #[error("allowedFactorTypes must name at least one type unless mode is DISABLED")]
    NoFactorTypeAllowed,
    /// A type that cannot be enrolled yet.
    #[error("factor type not supported")]
    UnsupportedType,
    /// More trusted-device days than allowed.
    #[error("trustedDeviceDays must be between 0 and 365")]
    TrustedDeviceDaysOutOfRange,
}

impl Classify for MfaPolicyError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::NoFactorTypeAllowed
            | Self::UnsupportedType
            | Self::TrustedDeviceDaysOutOfRange => ErrorKind::InvalidInput,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            Self::NoFactorTypeAllowed => "NO_FACTOR_TYPE_ALLOWED",
            Self::UnsupportedType => "UNSUPPORTED_FACTOR_TYPE",
            Self::TrustedDeviceDaysOutOfRange => "TRUSTED_DEVICE_DAYS_OUT_OF_RANGE",
        }
    }
}
