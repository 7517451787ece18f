//! The one place that turns failures into GraphQL errors with `extensions.code` (SPEC §4) and
//! a stable `extensions.reason`. Internal errors are logged here once and answered with
//! "internal error" and the request id only.

use async_graphql::{Context, ErrorExtensions};
use cqrs_es::AggregateError;
use tessera_domain::{Classify, ErrorKind};

use crate::state::RequestMeta;

/// A failure a resolver reports.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No valid bearer token.
    #[error("authentication required")]
    Unauthenticated,
    /// Valid token, someone else's data.
    #[error("not allowed for this caller")]
    Forbidden,
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
    /// A limit on how often something may happen (`RATE_LIMITED`, with `retryAfter`).
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

impl ApiError {
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

    /// The GraphQL error, with `code`, `reason` and (for internal errors) `requestId`.
    pub fn into_graphql(self, ctx: &Context<'_>) -> async_graphql::Error {
        let request_id = ctx.data_opt::<RequestMeta>().map(|m| m.request_id.clone());
        if let Self::Internal(detail) = &self {
            tracing::error!(request_id = request_id.as_deref().unwrap_or("-"), error = %detail, "internal error");
        }
        let (code, reason) = match &self {
            Self::Unauthenticated => ("UNAUTHENTICATED", "UNAUTHENTICATED"),
            Self::Forbidden => ("FORBIDDEN", "FORBIDDEN"),
            Self::InvalidCredentials => ("UNAUTHENTICATED", "INVALID_CREDENTIALS"),
            Self::Rejected { kind, reason, .. } => (code_of(*kind), *reason),
            Self::RateLimited { reason, .. } => ("RATE_LIMITED", *reason),
            Self::Conflict => ("CONFLICT", "CONCURRENT_MODIFICATION"),
            Self::Internal(_) => ("INTERNAL", "INTERNAL"),
        };
        let internal = matches!(self, Self::Internal(_));
        let retry_after = match &self {
            Self::RateLimited {
                retry_after_seconds,
                ..
            } => Some(*retry_after_seconds),
            Self::Rejected {
                kind: ErrorKind::RateLimited,
                ..
            } => Some(1),
            _ => None,
        };
        self.extend_with(|_, e| {
            e.set("code", code);
            e.set("reason", reason);
            if let Some(seconds) = retry_after {
                e.set("retryAfter", seconds);
            }
            if internal && let Some(id) = &request_id {
                e.set("requestId", id.as_str());
            }
        })
    }
}

fn code_of(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidInput => "BAD_USER_INPUT",
        ErrorKind::NotFound => "NOT_FOUND",
        ErrorKind::WrongState => "CONFLICT",
        ErrorKind::RateLimited => "RATE_LIMITED",
    }
}

impl<E: Classify + std::error::Error> From<AggregateError<E>> for ApiError {
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

impl From<tessera_projections::Error> for ApiError {
    fn from(e: tessera_projections::Error) -> Self {
        Self::internal(e)
    }
}

/// `Result` of resolvers before conversion.
pub type ApiResult<T> = Result<T, ApiError>;

/// Converts an [`ApiResult`] into a GraphQL result with the mapped extensions.
pub trait IntoGraphql<T> {
    /// Maps the error through [`ApiError::into_graphql`].
    fn gql(self, ctx: &Context<'_>) -> async_graphql::Result<T>;
}

impl<T> IntoGraphql<T> for ApiResult<T> {
    fn gql(self, ctx: &Context<'_>) -> async_graphql::Result<T> {
        self.map_err(|e| e.into_graphql(ctx))
    }
}
