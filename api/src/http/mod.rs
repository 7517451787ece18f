//! Plain HTTP endpoints beside GraphQL, and the HTTP side of GraphQL itself.

pub mod cors;
pub(crate) mod graphql;
pub mod shutdown;

use axum::{
    extract::State,
    http::{StatusCode, header},
};

use crate::App;

/// `GET /healthz`: the process is up.
pub(crate) async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: the store answers.
pub(crate) async fn readyz(State(app): State<App>) -> (StatusCode, &'static str) {
    if app.state.db.ping().await {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "store unreachable")
    }
}

/// `GET /metrics`: Prometheus text format.
pub(crate) async fn metrics(
    State(app): State<App>,
) -> ([(header::HeaderName, &'static str); 1], String) {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.state.delivery.metrics().render(),
    )
}
