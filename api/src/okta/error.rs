//! The one place that turns application errors into Okta's error envelope (`errorCode`,
//! `errorSummary`, `errorLink`, `errorId`, `errorCauses`) with Okta's codes and statuses, beside
//! the GraphQL mapper (`graphql::error`), not inside it. `errorId` is the request id, which the
//! events and the log lines of the request carry too, so support can find the request. A
//! `429` carries Okta's `X-Rate-Limit-*` headers and `Retry-After`.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;
use tessera_domain::ErrorKind;

use crate::app::AppError;

/// An answer in Okta's error envelope.
#[derive(Debug)]
pub struct OktaError {
    status: StatusCode,
    code: &'static str,
    summary: String,
    causes: Vec<String>,
    /// For 429: seconds until a retry can succeed.
    retry_after: Option<i64>,
}

impl OktaError {
    fn new(status: StatusCode, code: &'static str, summary: impl Into<String>) -> Self {
        Self {
            status,
            code,
            summary: summary.into(),
            causes: Vec::new(),
            retry_after: None,
        }
    }

    fn cause(mut self, cause: impl Into<String>) -> Self {
        self.causes.push(cause.into());
        self
    }

    /// `E0000068`: a wrong passcode (a `REJECTED` proof).
    pub fn wrong_passcode() -> Self {
        Self::new(StatusCode::FORBIDDEN, "E0000068", "Invalid Passcode/Answer")
            .cause("Your passcode doesn't match our records. Please try again.")
    }

    /// `E0000082`: a code whose time step was used already (`PASSCODE_REPLAYED`).
    pub fn replayed_passcode() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "E0000082",
            "Each code can only be used once. Please wait for a new code and try again.",
        )
    }

    /// `E0000069`: the factor or the user is locked (`LOCKED_OUT`).
    pub fn locked() -> Self {
        Self::new(StatusCode::FORBIDDEN, "E0000069", "User Locked")
    }

    /// The body is not JSON.
    pub fn malformed_body() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "E0000003",
            "The request body was not well-formed.",
        )
    }

    /// The envelope, with the request id as `errorId`.
    pub fn into_response(self, request_id: &str, now_unix: i64) -> Response {
        let body = json!({
            "errorCode": self.code,
            "errorSummary": self.summary,
            "errorLink": self.code,
            "errorId": request_id,
            "errorCauses": self.causes.iter().map(|c| json!({ "errorSummary": c })).collect::<Vec<_>>(),
        });
        let mut response = (self.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        if let Some(seconds) = self.retry_after {
            let seconds = seconds.max(1);
            // Okta's headers: the limit that refused (one request in its window), none left,
            // and when the window resets (Unix seconds).
            for (name, value) in [
                ("x-rate-limit-limit", "1".to_string()),
                ("x-rate-limit-remaining", "0".to_string()),
                ("x-rate-limit-reset", (now_unix + seconds).to_string()),
                ("retry-after", seconds.to_string()),
            ] {
                if let Ok(value) = HeaderValue::from_str(&value) {
                    headers.insert(name, value);
                }
            }
        }
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

impl From<AppError> for OktaError {
    fn from(e: AppError) -> Self {
        let message = e.to_string();
        match &e {
            AppError::Unauthenticated => Self::new(
                StatusCode::UNAUTHORIZED,
                "E0000011",
                "Invalid token provided",
            ),
            AppError::InvalidCredentials => Self::new(
                StatusCode::UNAUTHORIZED,
                "E0000004",
                "Authentication failed",
            ),
            AppError::HardLocked => Self::locked(),
            // Only user tokens are asked for a fresh proof; this API takes admin keys.
            AppError::Forbidden | AppError::ReauthenticationRequired { .. } => Self::new(
                StatusCode::FORBIDDEN,
                "E0000006",
                "You do not have permission to perform the requested action",
            ),
            AppError::Rejected { kind, reason, .. } => match kind {
                ErrorKind::NotFound => Self::new(
                    StatusCode::NOT_FOUND,
                    "E0000007",
                    format!("Not found: Resource not found: {message}"),
                ),
                ErrorKind::InvalidInput | ErrorKind::WrongState => match *reason {
                    "FACTOR_LOCKED_OUT" | "USER_LOCKED_OUT" => Self::locked(),
                    "MALFORMED_PASS_CODE" => Self::wrong_passcode(),
                    _ => Self::new(
                        StatusCode::BAD_REQUEST,
                        "E0000001",
                        format!("Api validation failed: {message}"),
                    )
                    .cause(message),
                },
                ErrorKind::RateLimited => rate_limited(reason, message, 1),
            },
            AppError::RateLimited {
                reason,
                retry_after_seconds,
                ..
            } => rate_limited(reason, message, *retry_after_seconds),
            AppError::Conflict => Self::new(
                StatusCode::CONFLICT,
                "E0000001",
                "Api validation failed: concurrent modification; retry",
            ),
            AppError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "E0000009",
                    "Internal Server Error",
                )
            }
        }
    }
}

fn rate_limited(reason: &str, message: String, retry_after: i64) -> OktaError {
    let mut e = if reason == "RESEND_TOO_SOON" {
        OktaError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "E0000109",
            format!(
                "An SMS message was recently sent. Please wait {retry_after} seconds before trying again."
            ),
        )
    } else {
        OktaError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "E0000047",
            "API call exceeded rate limit due to too many requests.",
        )
        .cause(message)
    };
    e.retry_after = Some(retry_after);
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn application_errors_get_oktas_codes_and_statuses() {
        let not_found = AppError::not_found("FACTOR_NOT_FOUND", "factor not found");
        for (e, status, code) in [
            (AppError::Unauthenticated, 401, "E0000011"),
            (AppError::Forbidden, 403, "E0000006"),
            (not_found, 404, "E0000007"),
            (AppError::bad_input("INVALID_ID", "x"), 400, "E0000001"),
            (
                AppError::RateLimited {
                    reason: "RESEND_TOO_SOON",
                    message: "x".into(),
                    retry_after_seconds: 20,
                },
                429,
                "E0000109",
            ),
            (
                AppError::RateLimited {
                    reason: "STEP_UP_RATE",
                    message: "x".into(),
                    retry_after_seconds: 20,
                },
                429,
                "E0000047",
            ),
            (AppError::internal("boom"), 500, "E0000009"),
        ] {
            let okta = OktaError::from(e);
            assert_eq!((okta.status.as_u16(), okta.code), (status, code));
        }
    }

    #[test]
    fn an_internal_error_says_nothing_of_its_detail() {
        let response =
            OktaError::from(AppError::internal("password=hunter2")).into_response("r1", 0);
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let e = OktaError::from(AppError::internal("password=hunter2"));
        assert!(!e.summary.contains("hunter2") && e.causes.is_empty());
    }
}
