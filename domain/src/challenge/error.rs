use crate::error::{Classify, ErrorKind};

/// Why a command on a challenge was rejected. A wrong code is not here: it is recorded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeError {
    /// No challenge has this id.
    #[error("challenge not found")]
    NotFound,
    /// A challenge with this id exists.
    #[error("challenge already issued")]
    AlreadyIssued,
    /// The challenge was answered already; it completes once.
    #[error("challenge was already completed")]
    AlreadyCompleted,
    /// The challenge expired (time, or too many failed attempts).
    #[error("challenge expired")]
    Expired,
    /// `Expire` before the deadline.
    #[error("challenge has not expired yet")]
    NotExpired,
    /// A step-up challenge given to `completeLogin`, or the other way round.
    #[error("challenge is for another purpose")]
    WrongPurpose,
    /// The factor belongs to another user than the challenge.
    #[error("factor does not belong to the challenge's user")]
    FactorOfAnotherUser,
    /// Lifetime outside the accepted range.
    #[error("ttlSeconds must be 30 to 3600")]
    InvalidTtl,
    /// Caller state too large.
    #[error("state must be at most 4 KiB of JSON")]
    StateTooLarge,
}

impl Classify for ChallengeError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::NotFound => ErrorKind::NotFound,
            Self::AlreadyIssued
            | Self::AlreadyCompleted
            | Self::Expired
            | Self::NotExpired
            | Self::WrongPurpose => ErrorKind::WrongState,
            Self::FactorOfAnotherUser | Self::InvalidTtl | Self::StateTooLarge => {
                ErrorKind::InvalidInput
            }
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            Self::NotFound => "CHALLENGE_NOT_FOUND",
            Self::AlreadyIssued => "CHALLENGE_ALREADY_ISSUED",
            Self::AlreadyCompleted => "CHALLENGE_COMPLETED",
            Self::Expired => "CHALLENGE_EXPIRED",
            Self::NotExpired => "CHALLENGE_NOT_EXPIRED",
            Self::WrongPurpose => "WRONG_CHALLENGE_PURPOSE",
            Self::FactorOfAnotherUser => "FACTOR_OF_ANOTHER_USER",
            Self::InvalidTtl => "INVALID_TTL",
            Self::StateTooLarge => "STATE_TOO_LARGE",
        }
    }
}
