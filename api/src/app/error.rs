//! What a use case can fail with, independent of any transport: each transport maps these
//! to its own codes in one function (`graphql::error` for GraphQL).

use cqrs_es::AggregateError;
use tessera_domain::{Classify, ErrorKind};

/// A failure a use case reports.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// No valid bearer token.
    #[error("authentication required")]
    Unauthenticated,
    /// Valid token, someone else's data.
    #[error("not allowed for this caller")]
    Forbidden,
    /// Valid token, own data, but a change to how the user authenticates needs a fresh proof:
    /// a step-up of the user completed within `max_age_seconds`, or a token from a login with
    /// a second factor that recent.
    #[error(
        "this change needs a fresh proof: complete a step-up and name it, or log in again with a second factor"
    )]
    ReauthenticationRequired {
        /// The user to step up.
        user_id: tessera_domain::ids::UserId,
        /// How old a proof may be.
        max_age_seconds: i64,
    },
    /// Valid token, own data, but the user's second factor is hard-locked: only an
    /// administrator changes the account until it is unlocked.
    #[error("the user's second factor is locked; an administrator must unlock it first")]
    HardLocked,
    /// `login` with an unknown login or a wrong password (the two are not told apart).
    #[error("login or password is wrong")]
    InvalidCredentials,
    /// A domain rejection or input check.
    #[error("{message}")]
    Rejected {
        /// Which code.
        kind: ErrorKind,
        /// Stable reason (`FACTOR_NOT_ACTIVE`).
        reason: &'static str,
        /// Human message; never contains a secret.
        message: String,
    },
    /// A limit on how often something may happen, with the time until a retry can succeed.
    #[error("{message}")]
    RateLimited {
        /// Stable reason (`RESEND_TOO_SOON`).
        reason: &'static str,
        /// Human message.
        message: String,
        /// Whole seconds until a retry can succeed.
        retry_after_seconds: i64,
    },
    /// Optimistic-concurrency retries ran out.
    #[error("concurrent modification; retry")]
    Conflict,
    /// Anything else: logged, not shown.
    #[error("internal error")]
    Internal(String),
}

impl AppError {
    /// A rejection of malformed input.
    pub fn bad_input(reason: &'static str, message: impl Into<String>) -> Self {
        Self::Rejected {
            kind: ErrorKind::InvalidInput,
            reason,
            message: message.into(),
        }
    }

    /// A missing thing.
    pub fn not_found(reason: &'static str, message: impl Into<String>) -> Self {
        Self::Rejected {
            kind: ErrorKind::NotFound,
            reason,
            message: message.into(),
        }
    }

    /// An internal error: the detail is logged, never returned.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self::Internal(detail.to_string())
    }

    /// The stable `reason` every transport reports beside its own code.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::Forbidden => "FORBIDDEN",
            Self::ReauthenticationRequired { .. } => "REAUTHENTICATION_REQUIRED",
            Self::HardLocked => "USER_HARD_LOCKED",
            Self::InvalidCredentials => "INVALID_CREDENTIALS",
            Self::Rejected { reason, .. } | Self::RateLimited { reason, .. } => reason,
            Self::Conflict => "CONCURRENT_MODIFICATION",
            Self::Internal(_) => "INTERNAL",
        }
    }
}

impl<E: Classify + std::error::Error> From<AggregateError<E>> for AppError {
    fn from(e: AggregateError<E>) -> Self {
        match e {
            AggregateError::UserError(e) => match e.retry_after_seconds() {
                Some(retry_after_seconds) if e.kind() == ErrorKind::RateLimited => {
                    Self::RateLimited {
                        reason: e.reason(),
                        message: e.to_string(),
                        retry_after_seconds,
                    }
                }
                _ => Self::Rejected {
                    kind: e.kind(),
                    reason: e.reason(),
                    message: e.to_string(),
                },
            },
            AggregateError::AggregateConflict => Self::Conflict,
            AggregateError::DatabaseConnectionError(e) => Self::internal(format!("database: {e}")),
            AggregateError::DeserializationError(e) => {
                Self::internal(format!("deserialization: {e}"))
            }
            AggregateError::UnexpectedError(e) => Self::internal(format!("unexpected: {e}")),
        }
    }
}

impl From<tessera_store::Error> for AppError {
    fn from(e: tessera_store::Error) -> Self {
        Self::internal(e)
    }
}

/// The result of a use case.
pub type AppResult<T> = Result<T, AppError>;

/// A rejection straight from an aggregate's rules, before any command ran.
macro_rules! from_domain_error {
    ($($error:ty),*) => {$(
        impl From<$error> for AppError {
            fn from(e: $error) -> Self {
                AggregateError::UserError(e).into()
            }
        }
    )*};
}

from_domain_error!(
    tessera_domain::user::UserError,
    tessera_domain::factor::FactorError,
    tessera_domain::challenge::ChallengeError,
    tessera_domain::credential::CredentialError
);
