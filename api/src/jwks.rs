//! `GET /.well-known/jwks.json`: the public keys access tokens are signed with (RFC 7517),
//! for backends that verify tokens themselves.

use axum::{
    extract::State,
    http::header,
    response::{IntoResponse, Response},
};

use crate::App;

/// The JWKS document. Caches may keep it a few minutes: a backend that meets an unknown `kid`
/// fetches it again, and a new key is published before any token it signs can reach one.
pub(crate) async fn jwks(State(app): State<App>) -> Response {
    let body = app.state.tokens.jwks().await;
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body.to_string(),
    )
        .into_response()
}
