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

/// How long `/readyz` waits for the store: a load balancer's probe must get its answer within
/// a second, also while the store is down (the pool would wait 10 s for a connection).
const READY_WITHIN: std::time::Duration = std::time::Duration::from_millis(900);

/// `GET /readyz`: the store answers (within [`READY_WITHIN`]).
pub(crate) async fn readyz(State(app): State<App>) -> (StatusCode, &'static str) {
    let answered = tokio::time::timeout(READY_WITHIN, app.state.db.ping()).await;
    if answered.unwrap_or(false) {
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
