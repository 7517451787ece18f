use crate::error::{Classify, ErrorKind};

/// Why a command on a user was rejected. Messages never contain a secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    /// A user with this login exists.
    #[error("a user with this login already exists")]
    AlreadyRegistered,
    /// The user does not exist.
    #[error("user not found")]
    NotFound,
    /// Empty, too long, or refused by the PRECIS UsernameCaseMapped profile (whitespace,
    /// control or format characters such as a zero-width space or a direction override,
    /// symbols, unassigned code points).
    #[error(
        "login must be 1 to 256 letters, digits or punctuation, without spaces, invisible or direction characters"
    )]
    InvalidLogin,
    /// A part of the login (between `@` and `.`) mixes scripts, such as a Cyrillic `а` among
    /// Latin letters.
    #[error("login must not mix letters of different scripts, such as Latin and Cyrillic")]
    MixedScriptLogin,
    /// Not an e-mail address.
    #[error("email is not a valid address")]
    InvalidEmail,
    /// Not an E.164 number.
    #[error("phoneNumber must be in E.164 form, e.g. +14155550100")]
    InvalidPhoneNumber,
    /// Too long or containing control characters.
    #[error("displayName must be at most 256 characters")]
    InvalidDisplayName,
    /// Outside 8 to 256 characters.
    #[error("password must be 8 to 256 characters")]
    InvalidPassword,
    /// Not ten symbols of the recovery-code alphabet.
    #[error("recovery code must look like XXXXX-XXXXX")]
    MalformedRecoveryCode,
    /// A recovery-code set must have exactly ten codes.
    #[error("a recovery-code set has exactly ten codes")]
    InvalidRecoveryCodeSet,
    /// The user is deactivated: no login, no proof, no change but reactivation.
    #[error("the user is deactivated")]
    Deactivated,
    /// Reactivation of a user who is not deactivated.
    #[error("the user is not deactivated")]
    NotDeactivated,
    /// Unlock of a user whose second factor is not locked.
    #[error("the user's second factor is not locked")]
    NotLocked,
    /// No such trusted device of this user.
    #[error("no such trusted device")]
    DeviceNotFound,
    /// The command carries a check (of a current password, of a recovery code) made against
    /// a state that changed since: the caller checks again against the new one.
    #[error("the user changed while the check ran; retry")]
    CheckOutdated,
    /// Too many wrong passwords: none is checked for a while.
    #[error("too many wrong passwords; try again later")]
    LoginThrottled {
        /// Whole seconds until a password is checked again.
        retry_after_seconds: i64,
    },
}

impl Classify for UserError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::AlreadyRegistered => ErrorKind::WrongState,
            Self::NotFound | Self::DeviceNotFound => ErrorKind::NotFound,
            Self::InvalidLogin
            | Self::MixedScriptLogin
            | Self::InvalidEmail
            | Self::InvalidPhoneNumber
            | Self::InvalidDisplayName
            | Self::InvalidPassword
            | Self::MalformedRecoveryCode
            | Self::InvalidRecoveryCodeSet => ErrorKind::InvalidInput,
            Self::NotLocked | Self::Deactivated | Self::NotDeactivated | Self::CheckOutdated => {
                ErrorKind::WrongState
            }
            Self::LoginThrottled { .. } => ErrorKind::RateLimited,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            Self::AlreadyRegistered => "LOGIN_TAKEN",
            Self::NotFound => "USER_NOT_FOUND",
            Self::DeviceNotFound => "DEVICE_NOT_FOUND",
            Self::InvalidLogin => "INVALID_LOGIN",
            Self::MixedScriptLogin => "MIXED_SCRIPT_LOGIN",
            Self::InvalidEmail => "INVALID_EMAIL",
            Self::InvalidPhoneNumber => "INVALID_PHONE_NUMBER",
            Self::InvalidDisplayName => "INVALID_DISPLAY_NAME",
            Self::InvalidPassword => "INVALID_PASSWORD",
            Self::MalformedRecoveryCode => "MALFORMED_RECOVERY_CODE",
            Self::InvalidRecoveryCodeSet => "INVALID_RECOVERY_CODE_SET",
            Self::NotLocked => "USER_NOT_LOCKED",
            Self::Deactivated => "USER_DEACTIVATED",
            Self::NotDeactivated => "USER_NOT_DEACTIVATED",
            Self::CheckOutdated => "CHECK_OUTDATED",
            Self::LoginThrottled { .. } => "LOGIN_THROTTLED",
        }
    }

    fn retry_after_seconds(&self) -> Option<i64> {
        match self {
            Self::LoginThrottled {
                retry_after_seconds,
            } => Some(*retry_after_seconds),
            _ => None,
        }
    }
}
