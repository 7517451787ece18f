//! GraphiQL on `GET /graphql`, served entirely from the binary: a pinned GraphiQL build
//! (3.9.0, its UMD bundle and CSS, fonts inlined as data URIs) with React 18.3.1, from the npm
//! registry, under `/graphql/assets/`. No CDN: the page works on a machine without internet.
//! Licences: `third_party/` and `NOTICE`. `TESSERA_GRAPHIQL=false` answers 404 instead.

use axum::{
    extract::{Path, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

use crate::App;

/// `(name, content type, bytes)` of every asset the page loads.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "graphiql.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/graphiql/graphiql.min.js"),
    ),
    (
        "graphiql.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/graphiql/graphiql.min.css"),
    ),
    (
        "react.production.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/graphiql/react.production.min.js"),
    ),
    (
        "react-dom.production.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/graphiql/react-dom.production.min.js"),
    ),
    (
        "tessera-graphiql.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/graphiql/tessera-graphiql.js"),
    ),
];

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Tessera GraphiQL</title>
<link rel="stylesheet" href="/graphql/assets/graphiql.min.css">
<style>html, body, #graphiql { height: 100%; margin: 0; }</style>
</head>
<body>
<div id="graphiql">Loading GraphiQL…</div>
<script src="/graphql/assets/react.production.min.js"></script>
<script src="/graphql/assets/react-dom.production.min.js"></script>
<script src="/graphql/assets/graphiql.min.js"></script>
<script src="/graphql/assets/tessera-graphiql.js"></script>
</body>
</html>
"#;

/// Scripts only from Tessera, no framing; GraphiQL sets inline styles and inlines its fonts.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   font-src 'self' data:; img-src 'self' data:; connect-src 'self'; \
                   object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn with_security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// `GET /graphql`: the page.
pub(crate) async fn page(State(app): State<App>) -> Response {
    if !app.state.config.graphiql {
        return StatusCode::NOT_FOUND.into_response();
    }
    with_security_headers(
        (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            [(header::CACHE_CONTROL, "no-store")],
            PAGE,
        )
            .into_response(),
    )
}

/// `GET /graphql/assets/{name}`.
pub(crate) async fn asset(State(app): State<App>, Path(name): Path<String>) -> Response {
    let found = ASSETS.iter().find(|(n, _, _)| *n == name);
    match found {
        Some((_, content_type, bytes)) if app.state.config.graphiql => with_security_headers(
            (
                [(header::CONTENT_TYPE, *content_type)],
                [(header::CACHE_CONTROL, "public, max-age=3600")],
                *bytes,
            )
                .into_response(),
        ),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}
