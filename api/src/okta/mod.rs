//! The Okta-compatible Users and Factors API under `/api/v1`: a second transport over the same
//! use cases as GraphQL (`crate::app`), so the same commands write the same events, which differ
//! only by their metadata's `route`. Handlers parse Okta's JSON, call one use case and convert
//! the answer to Okta's shapes (`shapes`); errors go through the one mapper in `error`.
//!
//! Callers authenticate with `Authorization: SSWS <API key>` (also `SSWS<key>`, as some of
//! Okta's own Postman requests send it); only API keys, not user access tokens. The QR-code
//! link of a TOTP enrolment is the one route without a key (`app::qr_link`).

mod error;
mod factors;
mod shapes;
mod users;

use std::net::SocketAddr;

use axum::{
    Router,
    body::Bytes,
    extract::{ConnectInfo, FromRequestParts, MatchedPath},
    http::{HeaderMap, HeaderValue, header, request::Parts},
    response::{IntoResponse, Response},
    routing::{get, post},
};
pub use error::OktaError;
use serde_json::Value;

use crate::{
    App,
    app::{AppError, Call},
    auth::Caller,
    request_meta,
};

/// The routes, to be nested under `/api/v1`.
pub(crate) fn routes() -> Router<App> {
    Router::new()
        .route("/users", get(users::list).post(users::create))
        .route("/users/{user}", get(users::get).delete(users::delete))
        .route(
            "/users/{user}/lifecycle/reset_factors",
            post(factors::reset),
        )
        .route(
            "/users/{user}/factors",
            get(factors::list).post(factors::enroll),
        )
        .route("/users/{user}/factors/catalog", get(factors::catalog))
        .route("/users/{user}/factors/questions", get(factors::questions))
        .route(
            "/users/{user}/factors/{factor}",
            get(factors::get).delete(factors::remove),
        )
        .route(
            "/users/{user}/factors/{factor}/lifecycle/activate",
            post(factors::activate),
        )
        .route(
            "/users/{user}/factors/{factor}/verify",
            post(factors::verify),
        )
        .route(
            "/users/{user}/factors/{factor}/resend",
            post(factors::resend),
        )
        .route(
            "/users/{user}/factors/{factor}/transactions/{transaction}/verify",
            get(factors::push_transaction),
        )
        .route(
            "/users/{user}/factors/{factor}/qr/{token}",
            get(factors::qr_code),
        )
}

/// One request's context: the call (caller and metadata, with the route), the base URL links
/// are built on, and the state.
pub(crate) struct Okta {
    pub(crate) app: App,
    pub(crate) call: Call,
    pub(crate) base: String,
}

/// The key of an `SSWS` authorization header, with or without the space.
fn ssws_key(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let key = value.strip_prefix("SSWS")?.trim();
    (!key.is_empty()).then_some(key)
}

/// Where this server is, as the client reached it: links in answers are absolute, as Okta's.
fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        })
        .unwrap_or("localhost");
    let scheme = match headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
    {
        Some("https") => "https",
        _ => "http",
    };
    format!("{scheme}://{host}")
}

impl Okta {
    /// The context of an unauthenticated request (the QR-code link).
    fn anonymous(app: &App, parts: &Parts) -> Self {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)), |c| c.0);
        let mut meta = request_meta(&parts.headers, peer, &app.state.config.trusted_proxies);
        meta.route = parts
            .extensions
            .get::<MatchedPath>()
            .map(|p| format!("{} {}", parts.method, p.as_str()));
        Self {
            app: app.clone(),
            call: Call { caller: None, meta },
            base: base_url(&parts.headers),
        }
    }

    /// An answer: the value's response, or the error in Okta's envelope; both with the
    /// request id in `x-request-id`.
    pub(crate) fn answer(&self, result: Result<Response, OktaError>) -> Response {
        let mut response = match result {
            Ok(response) => response,
            Err(e) => e.into_response(
                &self.call.meta.request_id,
                self.app.state.clock.now().timestamp(),
            ),
        };
        if let Ok(value) = HeaderValue::from_str(&self.call.meta.request_id) {
            response.headers_mut().insert("x-request-id", value);
        }
        response
    }

    /// The request's body as JSON; an empty body is `None`.
    pub(crate) fn body(body: &Bytes) -> Result<Option<Value>, OktaError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Null) => Ok(None),
            Ok(value) => Ok(Some(value)),
            Err(_) => Err(OktaError::malformed_body()),
        }
    }
}

/// The context of an unauthenticated route (it authenticates nothing).
pub(crate) struct Anonymous(pub(crate) Okta);

impl FromRequestParts<App> for Anonymous {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Response> {
        Ok(Self(Okta::anonymous(app, parts)))
    }
}

impl FromRequestParts<App> for Okta {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Response> {
        let mut okta = Self::anonymous(app, parts);
        // Only API keys: Okta's SSWS tokens are API tokens, never a user's session.
        let caller = match ssws_key(&parts.headers) {
            Some(key) if key.bytes().filter(|b| *b == b'.').count() != 2 => {
                app.state
                    .auth
                    .authenticate(Some(&format!("Bearer {key}")))
                    .await
            }
            _ => None,
        };
        match caller {
            Some(caller @ (Caller::Admin { .. } | Caller::Auditor { .. })) => {
                okta.call.caller = Some(caller);
                Ok(okta)
            }
            _ => Err(okta.answer(Err(AppError::Unauthenticated.into()))),
        }
    }
}

/// A JSON answer with status 200.
pub(crate) fn json(value: Value) -> Response {
    axum::Json(value).into_response()
}
