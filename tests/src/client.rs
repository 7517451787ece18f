//! Talking to the server as a client does: GraphQL over HTTP with a token, reading the audit
//! log page by page, waiting for what settles asynchronously; and reading answers.

use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use crate::{ADMIN_KEY, TestServer};

impl TestServer {
    /// POSTs a GraphQL request with the admin key; returns the whole JSON response.
    pub async fn gql(&self, query: &str, variables: Value) -> Value {
        self.gql_as(Some(ADMIN_KEY), query, variables).await
    }

    /// POSTs a GraphQL request with `token` (or none).
    pub async fn gql_as(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        self.gql_with(token, &[], query, variables).await
    }

    /// POSTs a GraphQL request with `token` (or none) and extra headers.
    pub async fn gql_with(
        &self,
        token: Option<&str>,
        headers: &[(&str, &str)],
        query: &str,
        variables: Value,
    ) -> Value {
        let mut request = self
            .http
            .post(format!("{}/graphql", self.base))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("HTTP request");
        response.json().await.expect("JSON response")
    }

    /// Runs a query that must succeed; returns `data`.
    pub async fn ok(&self, query: &str, variables: Value) -> Value {
        let response = self.gql(query, variables).await;
        assert!(
            response.get("errors").is_none(),
            "unexpected errors: {response}"
        );
        response["data"].clone()
    }

    /// Every page of `events(filter)` with `first` per page, concatenated; also checks that
    /// each edge's cursor is its node's position and that the last page says so.
    pub async fn all_events(&self, filter: Value, first: i64) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after = Value::Null;
        loop {
            let data = self
                .ok(
                    "query($f: EventFilter, $n: Int, $a: String) { events(filter: $f, first: $n, after: $a) {
                        edges { cursor node { position aggregateType aggregateId sequence eventType
                                              eventVersion payload metadata recordedAt } }
                        pageInfo { hasNextPage endCursor } } }",
                    json!({ "f": filter, "n": first, "a": after }),
                )
                .await;
            let page = &data["events"];
            let edges = page["edges"].as_array().expect("edges");
            assert!(edges.len() as i64 <= first, "page larger than first");
            for edge in edges {
                assert_eq!(edge["cursor"], edge["node"]["position"]);
                out.push(edge["node"].clone());
            }
            if page["pageInfo"]["hasNextPage"] != true {
                return out;
            }
            assert_eq!(edges.len() as i64, first, "a page before the last is full");
            after = page["pageInfo"]["endCursor"].clone();
        }
    }

    /// Every event through `events(first: 500)` once it shows all `log_identities` (a
    /// transaction elsewhere on the PostgreSQL cluster can hold the tail back briefly).
    pub async fn settled_events(&self) -> Vec<Value> {
        for _ in 0..100 {
            // The table is read first: the log may grow meanwhile (the alert reactor writes),
            // so retry until the API shows exactly what the table held just before.
            let want = self.log_identities().await;
            let all = self.all_events(Value::Null, 500).await;
            if all.iter().map(identity).collect::<Vec<_>>() == want {
                return all;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the events query never showed the whole log");
    }

    /// Waits until the log stops growing: the alert reactor has looked at every event and
    /// raised whatever it raises. Returns the log as the events API shows it then.
    pub async fn quiesce(&self) -> Vec<Value> {
        let state = &self.server().state;
        let mut last = usize::MAX;
        for _ in 0..100 {
            state.reactor.catch_up().await.expect("reactor");
            let log = self.settled_events().await;
            state.reactor.catch_up().await.expect("reactor");
            if log.len() == last && self.log_identities().await.len() == log.len() {
                return log;
            }
            last = log.len();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the log never stopped growing");
    }

    /// Waits briefly for something eventually true.
    pub async fn eventually<F, Fut>(&self, mut check: F) -> bool
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        for _ in 0..100 {
            if check().await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}

/// `(aggregateType, aggregateId, sequence)` of an `AuditEvent` node.
pub fn identity(node: &Value) -> (String, String, i64) {
    (
        node["aggregateType"]
            .as_str()
            .expect("aggregateType")
            .to_string(),
        node["aggregateId"]
            .as_str()
            .expect("aggregateId")
            .to_string(),
        node["sequence"].as_i64().expect("sequence"),
    )
}

/// The claims of a JWT (its middle part), unverified.
pub fn jwt_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT has three parts");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// `extensions.code` of the first error.
pub fn error_code(response: &Value) -> &str {
    response["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {response}"))
}

/// `extensions.reason` of the first error.
pub fn error_reason(response: &Value) -> &str {
    response["errors"][0]["extensions"]["reason"]
        .as_str()
        .unwrap_or("")
}
