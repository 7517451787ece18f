//! `POST /graphql`: only `application/json` bodies run (a browser sends `text/plain`, form
//! and multipart bodies cross-site without a preflight, so refusing them keeps every
//! mutation out of reach of other sites' pages); a body that is not a GraphQL request gets a
//! JSON GraphQL error, never a parser's debug text. Introspection needs a token; an
//! introspection-only document from an authenticated caller runs under limits that fit the
//! standard introspection query (GraphiQL's, codegen's), every other document under the
//! ordinary ones.

use std::{collections::HashSet, net::SocketAddr};

use async_graphql::parser::{
    parse_query,
    types::{DocumentOperations, ExecutableDocument, OperationType, Selection, SelectionSet},
};
use axum::{
    body::Bytes,
    extract::{ConnectInfo, State, rejection::BytesRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;
use tracing::Instrument;

use crate::{App, auth, request_meta};

/// The `retryAfter` given with a `RATE_LIMITED` error that names no time of its own.
const DEFAULT_RETRY_AFTER_SECONDS: i64 = 1;

/// Whether the body is declared as JSON: `application/json`, parameters (charset) allowed.
pub(crate) fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

/// A GraphQL error response that no resolver produced.
fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({ "errors": [{ "message": message, "extensions": { "code": code } }] });
    let mut response = (status, axum::Json(body)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The body as one GraphQL request, or the answer refusing it.
fn read_request(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<async_graphql::Request, Box<Response>> {
    let bad = |message: &str| Box::new(refuse(StatusCode::BAD_REQUEST, "BAD_REQUEST", message));
    if !is_json(headers) {
        return Err(Box::new(refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "BAD_REQUEST",
            "POST /graphql takes a JSON body: send Content-Type: application/json",
        )));
    }
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(Box::new(rejection.into_response()));
        }
        Err(_) => return Err(bad("the request body could not be read")),
    };
    let value: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| bad(&format!("the body is not JSON: {e}")))?;
    if value.is_array() {
        return Err(bad(
            "batched requests are not supported: send one {\"query\": …} object per request",
        ));
    }
    if !value.get("query").is_some_and(serde_json::Value::is_string) {
        return Err(bad(
            "the body needs a \"query\" string: {\"query\": \"…\", \"variables\": {…}}",
        ));
    }
    serde_json::from_value(value)
        .map_err(|e| bad(&format!("the body is not a GraphQL request: {e}")))
}

/// What a document asks of the schema's introspection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Introspection {
    /// No `__schema` or `__type` at the root (`__typename` is not introspection here).
    None,
    /// Some, beside other fields or in a mutation.
    Mixed,
    /// Only introspection fields, in queries only.
    Only,
}

/// Classifies `query`; a document that does not parse is `None` (the schema refuses it).
pub(crate) fn introspection(query: &str) -> Introspection {
    // Most requests never mention introspection: no second parse for them.
    if !query.contains("__schema") && !query.contains("__type") {
        return Introspection::None;
    }
    let Ok(document) = parse_query(query) else {
        return Introspection::None;
    };
    let operations: Vec<_> = match &document.operations {
        DocumentOperations::Single(op) => vec![op],
        DocumentOperations::Multiple(map) => map.values().collect(),
    };
    let mut names = Vec::new();
    let mut queries_only = true;
    for op in operations {
        queries_only &= op.node.ty == OperationType::Query;
        root_fields(
            &document,
            &op.node.selection_set.node,
            &mut names,
            &mut HashSet::new(),
        );
    }
    let is_introspection = |n: &String| n == "__schema" || n == "__type";
    if !names.iter().any(is_introspection) {
        Introspection::None
    } else if queries_only && names.iter().all(|n| n.starts_with("__")) {
        Introspection::Only
    } else {
        Introspection::Mixed
    }
}

fn root_fields(
    document: &ExecutableDocument,
    set: &SelectionSet,
    out: &mut Vec<String>,
    visited: &mut HashSet<String>,
) {
    for item in &set.items {
        match &item.node {
            Selection::Field(f) => out.push(f.node.name.node.to_string()),
            Selection::InlineFragment(f) => {
                root_fields(document, &f.node.selection_set.node, out, visited);
            }
            Selection::FragmentSpread(s) => {
                let name = s.node.fragment_name.node.as_str();
                if visited.insert(name.to_string())
                    && let Some(fragment) = document.fragments.get(name)
                {
                    root_fields(document, &fragment.node.selection_set.node, out, visited);
                }
            }
        }
    }
}

/// Whether the client asked for `application/graphql-response+json`; everyone else gets
/// `application/json`, which every client reads.
fn wants_graphql_response_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| {
            accept
                .split(',')
                .filter_map(|part| part.split(';').next())
                .any(|mime| {
                    mime.trim()
                        .eq_ignore_ascii_case("application/graphql-response+json")
                })
        })
}

/// `POST /graphql`.
pub(crate) async fn graphql_post(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let request = match read_request(&headers, body) {
        Ok(request) => request,
        Err(refused) => return *refused,
    };
    let mut meta = request_meta(&headers, peer, &app.state.config.trusted_proxies);
    meta.route = Some("POST /graphql".into());
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let caller = app.state.auth.authenticate(authorization).await;
    let introspection = introspection(&request.query);
    if caller.is_none() && introspection != Introspection::None {
        return finish(
            async_graphql::Response::from_errors(vec![unauthenticated_introspection()]),
            &headers,
            &meta.request_id,
        );
    }
    let span = tracing::info_span!("graphql", request_id = %meta.request_id, actor = caller.as_ref().map(auth::Caller::actor));
    let mut request = request.data(meta.clone());
    match caller {
        Some(caller) => request = request.data(caller),
        // `__typename` still answers; `__schema` and `__type` do not.
        None => request = request.disable_introspection(),
    }
    let schema = if introspection == Introspection::Only {
        &app.introspection
    } else {
        &app.schema
    };
    let response = schema.execute(request).instrument(span).await;
    finish(response, &headers, &meta.request_id)
}

fn unauthenticated_introspection() -> async_graphql::ServerError {
    let mut error = async_graphql::ServerError::new(
        "introspection needs an API key or access token (Authorization: Bearer …)",
        None,
    );
    let extensions = error.extensions.get_or_insert_with(Default::default);
    extensions.set("code", "UNAUTHENTICATED");
    extensions.set("reason", "INTROSPECTION_NEEDS_TOKEN");
    error
}

fn finish(
    mut response: async_graphql::Response,
    headers: &HeaderMap,
    request_id: &str,
) -> Response {
    for error in &mut response.errors {
        let extensions = error.extensions.get_or_insert_with(Default::default);
        // Parse and validation errors are coded by the schema's extension; what is left
        // without a code failed input coercion before any resolver ran.
        if extensions.get("code").is_none() {
            extensions.set("code", "BAD_USER_INPUT");
        }
        let rate_limited = matches!(
            extensions.get("code"),
            Some(async_graphql::Value::String(code)) if code == "RATE_LIMITED"
        );
        if rate_limited && extensions.get("retryAfter").is_none() {
            extensions.set("retryAfter", DEFAULT_RETRY_AFTER_SECONDS);
        }
        // Internal errors carry the request id, which the log line of the error has too.
        if extensions.get("code") == Some(&async_graphql::Value::from("INTERNAL")) {
            extensions.set("requestId", request_id);
        }
    }
    let mut http = async_graphql_axum::GraphQLResponse::from(response).into_response();
    let content_type = if wants_graphql_response_json(headers) {
        "application/graphql-response+json"
    } else {
        "application/json"
    };
    http.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(value) = HeaderValue::from_str(request_id) {
        http.headers_mut().insert("x-request-id", value);
    }
    http
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_bodies_only() {
        for (value, json) in [
            ("application/json", true),
            ("application/json; charset=utf-8", true),
            ("Application/JSON;charset=UTF-8", true),
            ("text/plain", false),
            ("text/plain; charset=utf-8", false),
            ("application/x-www-form-urlencoded", false),
            ("multipart/form-data; boundary=x", false),
            ("application/jsonp", false),
            ("application/graphql", false),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            assert_eq!(is_json(&headers), json, "{value}");
        }
        assert!(!is_json(&HeaderMap::new()));
    }

    #[test]
    fn introspection_is_told_apart() {
        for (query, want) in [
            ("{ users { edges { cursor } } }", Introspection::None),
            ("{ __typename }", Introspection::None),
            ("{ __schema { types { name } } }", Introspection::Only),
            (
                "query Q { ...F } fragment F on Query { __type(name: \"User\") { name } __typename }",
                Introspection::Only,
            ),
            (
                "{ __schema { types { name } } users { edges { cursor } } }",
                Introspection::Mixed,
            ),
            (
                "mutation { __schema { types { name } } }",
                Introspection::Mixed,
            ),
            ("{ __schema { ", Introspection::None),
        ] {
            assert_eq!(introspection(query), want, "{query}");
        }
    }
}
