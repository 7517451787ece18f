//! Plain HTTP endpoints beside GraphQL, and the HTTP side of GraphQL itself.

pub mod cors;
pub(crate) mod graphql;
pub mod serve;
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

/// `GET /metrics`: every series (see `crate::metrics`), in the OpenMetrics text format.
pub(crate) async fn metrics(State(app): State<App>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let delivery = app.state.delivery.metrics().render();
    match app.state.metrics.render(&app.state.db, &delivery).await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "metrics: the store did not answer");
            (StatusCode::SERVICE_UNAVAILABLE, "store unreachable").into_response()
        }
    }
}

/// Counts every request by route and status, and writes the access log line (target
/// `tessera::access`) with the request id, which it draws for every request, hands to the
/// handler (`x-request-id`) and returns to the caller; a caller's own `x-request-id` goes on
/// as theirs (`client_request_id` in the log line and in event metadata).
pub(crate) async fn access(
    State(metrics): State<std::sync::Arc<crate::metrics::Metrics>>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let started = std::time::Instant::now();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    // The request id is always the server's own: a caller's `x-request-id` is handed on as
    // theirs (recorded as `client_request_id`, marked client-supplied), never as ours.
    let request_id = uuid::Uuid::new_v4().to_string();
    let client_request_id = crate::id_header(request.headers(), "x-request-id");
    request.headers_mut().remove(crate::CLIENT_REQUEST_ID);
    if let Some(value) = client_request_id
        .as_deref()
        .and_then(|v| header::HeaderValue::from_str(v).ok())
    {
        request
            .headers_mut()
            .insert(crate::CLIENT_REQUEST_ID, value);
    }
    if let Ok(value) = header::HeaderValue::from_str(&request_id) {
        request.headers_mut().insert("x-request-id", value);
    }
    let method = request.method().clone();
    let mut response = next.run(request).await;
    let status = response.status().as_u16();
    metrics.http_request(&route, status);
    if let Ok(value) = header::HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    tracing::info!(
        target: "tessera::access",
        request_id = %request_id,
        client_request_id = client_request_id.as_deref().unwrap_or(""),
        method = %method,
        route = %route,
        status,
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    response
}
