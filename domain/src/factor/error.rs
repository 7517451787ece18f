use crate::error::{Classify, ErrorKind};

/// Why a command on a factor was rejected. A wrong code is not here: it is a `FailedAttempt`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FactorError {
    /// No factor has this id.
    #[error("factor not found")]
    NotFound,
    /// A factor with this id exists.
    #[error("factor already enrolled")]
    AlreadyEnrolled,
    /// Activation of a factor that is already active.
    #[error("factor is already active")]
    AlreadyActive,
    /// Verification of a factor that is not active (pending, expired or removed).
    #[error("factor is not active")]
    NotActive,
    /// Activation after the enrolment expired.
    #[error("enrolment expired; enrol again")]
    EnrollmentExpired,
    /// The factor was removed.
    #[error("factor was removed")]
    Removed,
    /// Unlock of a factor that is not locked.
    #[error("factor is not locked")]
    NotLocked,
    /// The factor type cannot be enrolled (yet).
    #[error("factor type not supported")]
    UnsupportedType,
    /// The TOTP secret or parameters are unacceptable.
    #[error("TOTP secret must be at least 160 bits, 6 to 8 digits, period 15 to 120 s")]
    InvalidTotpSpec,
    /// The label is too long or has control characters.
    #[error("label must be at most 128 characters")]
    InvalidLabel,
    /// The code is not a string of the right number of digits.
    #[error("passCode must be the factor's number of digits")]
    MalformedPassCode,
    /// The stored secret could not be opened (wrong master key or corruption).
    #[error("factor secret cannot be opened")]
    SecretUnavailable,
}

impl Classify for FactorError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::NotFound => ErrorKind::NotFound,
            Self::AlreadyEnrolled
            | Self::AlreadyActive
            | Self::NotActive
            | Self::EnrollmentExpired
            | Self::Removed
            | Self::NotLocked
            | Self::SecretUnavailable => ErrorKind::WrongState,
            Self::UnsupportedType
            | Self::InvalidTotpSpec
            | Self::InvalidLabel
            | Self::MalformedPassCode => ErrorKind::InvalidInput,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            Self::NotFound => "FACTOR_NOT_FOUND",
            Self::AlreadyEnrolled => "FACTOR_ALREADY_ENROLLED",
            Self::AlreadyActive => "FACTOR_ALREADY_ACTIVE",
            Self::NotActive => "FACTOR_NOT_ACTIVE",
            Self::EnrollmentExpired => "ENROLLMENT_EXPIRED",
            Self::Removed => "FACTOR_REMOVED",
            Self::NotLocked => "FACTOR_NOT_LOCKED",
            Self::UnsupportedType => "UNSUPPORTED_FACTOR_TYPE",
            Self::InvalidTotpSpec => "INVALID_TOTP_SPEC",
            Self::InvalidLabel => "INVALID_LABEL",
            Self::MalformedPassCode => "MALFORMED_PASS_CODE",
            Self::SecretUnavailable => "SECRET_UNAVAILABLE",
        }
    }
}
