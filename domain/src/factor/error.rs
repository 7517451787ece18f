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
    /// An SMS factor needs an E.164 phone number.
    #[error("phoneNumber must be in E.164 form, e.g. +14155550100")]
    InvalidPhoneNumber,
    /// An e-mail factor needs a valid address.
    #[error("email is not a valid address")]
    InvalidEmail,
    /// Codes are sent only to SMS and e-mail factors.
    #[error("this factor type does not take sent codes")]
    CodesNotSupported,
    /// No code is sent to a locked factor.
    #[error("factor is locked out")]
    LockedOut,
    /// A WebAuthn answer that does not parse, or an answer of the wrong kind for the factor.
    #[error("webauthn must be the credential's toJSON() of this factor's ceremony")]
    MalformedWebAuthnResponse,
    /// A WebAuthn factor is answered with `webauthn`, not a pass code (and the reverse).
    #[error("this factor type takes a webauthn answer, not a passCode (or the reverse)")]
    WrongAnswerKind,
    /// The WebAuthn ceremony of this challenge was already answered.
    #[error("this challenge's WebAuthn ceremony was already answered")]
    CeremonyAnswered,
    /// A code was sent to this factor too recently.
    #[error("a code was sent to this factor moments ago; ask again in {retry_after_seconds} s")]
    ResendTooSoon {
        /// Seconds until the next code may be sent.
        retry_after_seconds: i64,
    },
    /// Too many codes were sent to this factor in the last hour.
    #[error(
        "too many codes were sent to this factor in the last hour; ask again in {retry_after_seconds} s"
    )]
    TooManyCodes {
        /// Seconds until the oldest code of the hour no longer counts.
        retry_after_seconds: i64,
    },
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
            | Self::SecretUnavailable
            | Self::LockedOut
            | Self::CeremonyAnswered => ErrorKind::WrongState,
            Self::UnsupportedType
            | Self::InvalidTotpSpec
            | Self::InvalidLabel
            | Self::MalformedPassCode
            | Self::InvalidPhoneNumber
            | Self::InvalidEmail
            | Self::CodesNotSupported
            | Self::MalformedWebAuthnResponse
            | Self::WrongAnswerKind => ErrorKind::InvalidInput,
            Self::ResendTooSoon { .. } | Self::TooManyCodes { .. } => ErrorKind::RateLimited,
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
            Self::InvalidPhoneNumber => "INVALID_PHONE_NUMBER",
            Self::InvalidEmail => "INVALID_EMAIL",
            Self::CodesNotSupported => "CODES_NOT_SUPPORTED",
            Self::MalformedWebAuthnResponse => "MALFORMED_WEBAUTHN_RESPONSE",
            Self::WrongAnswerKind => "WRONG_ANSWER_KIND",
            Self::CeremonyAnswered => "WEBAUTHN_CEREMONY_ANSWERED",
            Self::LockedOut => "FACTOR_LOCKED_OUT",
            Self::ResendTooSoon { .. } => "RESEND_TOO_SOON",
            Self::TooManyCodes { .. } => "TOO_MANY_CODES",
        }
    }

    fn retry_after_seconds(&self) -> Option<i64> {
        match self {
            Self::ResendTooSoon {
                retry_after_seconds,
            }
            | Self::TooManyCodes {
                retry_after_seconds,
            } => Some(*retry_after_seconds),
            _ => None,
        }
    }
}
