//! The one place that turns application errors into GraphQL errors: `extensions.code` from
//! the contract's list and a stable `extensions.reason`. Internal errors are logged here once
//! (inside the request's span, which carries its id) and answered with "internal error" only;
//! the HTTP handler adds the request id to them.

use async_graphql::ErrorExtensions;
use tessera_domain::ErrorKind;

use crate::app::AppError;

impl From<AppError> for async_graphql::Error {
    fn from(e: AppError) -> Self {
        if let AppError::Internal(detail) = &e {
            tracing::error!(error = %detail, "internal error");
        }
        let code = code_of(&e);
        let reason = e.reason();
        // Every RATE_LIMITED says when to try again: exactly where the rule knows it.
        let retry_after = match &e {
            AppError::RateLimited {
                retry_after_seconds,
                ..
            } => Some(*retry_after_seconds),
            AppError::Rejected {
                kind: ErrorKind::RateLimited,
                ..
            } => Some(1),
            _ => None,
        };
        // The step-up that would do: `startStepUp` for this user, then name the completed
        // challenge in the refused mutation's `stepUpChallengeId`.
        let step_up = match &e {
            AppError::ReauthenticationRequired {
                user_id,
                max_age_seconds,
            } => Some((user_id.to_string(), *max_age_seconds)),
            _ => None,
        };
        e.extend_with(|_, x| {
            x.set("code", code);
            x.set("reason", reason);
            if let Some(seconds) = retry_after {
                x.set("retryAfter", seconds);
            }
            if let Some((user_id, max_age)) = &step_up {
                let hint = serde_json::json!({
                    "startStepUp": { "userId": user_id },
                    "thenPass": "stepUpChallengeId",
                    "maxAgeSeconds": max_age,
                });
                if let Ok(hint) = async_graphql::Value::from_json(hint) {
                    x.set("stepUp", hint);
                }
            }
        })
    }
}

/// `extensions.code` of an application error.
pub fn code_of(e: &AppError) -> &'static str {
    match e {
        AppError::Unauthenticated | AppError::InvalidCredentials => "UNAUTHENTICATED",
        AppError::Forbidden | AppError::ReauthenticationRequired { .. } | AppError::HardLocked => {
            "FORBIDDEN"
        }
        AppError::Rejected { kind, .. } => match kind {
            ErrorKind::InvalidInput => "BAD_USER_INPUT",
            ErrorKind::NotFound => "NOT_FOUND",
            ErrorKind::WrongState => "CONFLICT",
            ErrorKind::RateLimited => "RATE_LIMITED",
        },
        AppError::RateLimited { .. } => "RATE_LIMITED",
        AppError::Conflict => "CONFLICT",
        AppError::Internal(_) => "INTERNAL",
    }
}

impl AppError {
    /// The GraphQL error, for places where `?` cannot name the error type.
    pub fn into_gql(self) -> async_graphql::Error {
        self.into()
    }
}
