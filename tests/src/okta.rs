//! Talking to the Okta-compatible API as Okta's clients do: `SSWS` keys, JSON bodies, status
//! codes and headers kept for the test to assert; and the metadata of stored events.

use reqwest::{Method, StatusCode, header::HeaderMap};
use serde_json::Value;

use crate::{ADMIN_KEY, TestServer};

/// One answer of the Okta API.
#[derive(Debug)]
pub struct OktaAnswer {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body as JSON (`Null` when empty or not JSON).
    pub body: Value,
    /// The raw body.
    pub bytes: Vec<u8>,
}

impl OktaAnswer {
    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl TestServer {
    /// A request to `path` (under the server's base URL) with `Authorization: SSWS <admin key>`.
    pub async fn okta(&self, method: Method, path: &str, body: Option<&Value>) -> OktaAnswer {
        let auth = format!("SSWS {ADMIN_KEY}");
        self.okta_as(Some(&auth), method, path, body).await
    }

    /// A request with the `Authorization` header given verbatim (or none).
    pub async fn okta_as(
        &self,
        authorization: Option<&str>,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> OktaAnswer {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        };
        let mut request = self
            .http
            .request(method, url)
            .header("accept", "application/json")
            .header("user-agent", "okta-client-test/1.0");
        if let Some(auth) = authorization {
            request = request.header("authorization", auth);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.expect("HTTP request");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body").to_vec();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        OktaAnswer {
            status,
            headers,
            body,
            bytes,
        }
    }

    /// `(event_type, metadata)` of one aggregate, in order, straight from the event table.
    pub async fn event_metadata(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Vec<(String, Value)> {
        self.event_column(aggregate_type, aggregate_id, "metadata")
            .await
    }
}
