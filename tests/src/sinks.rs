//! Real receivers on loopback: an HTTP webhook receiver and a graphql-transport-ws client.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, http::HeaderMap, http::StatusCode, routing::post};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest, http::HeaderValue};

/// One request the webhook receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    /// Lower-cased header names and their values.
    pub headers: Vec<(String, String)>,
    /// The raw body.
    pub body: String,
}

impl Received {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("webhook body is JSON")
    }
}

#[derive(Clone, Default)]
struct SinkState {
    received: Arc<Mutex<Vec<Received>>>,
    fail_first: Arc<AtomicUsize>,
}

/// An HTTP server on 127.0.0.1 that records every POST and answers 200 (or 500 for the first
/// `fail_first` requests, to exercise retries).
pub struct WebhookSink {
    /// Its URL.
    pub url: String,
    state: SinkState,
}

impl WebhookSink {
    /// Starts a receiver.
    pub async fn start(fail_first: usize) -> Self {
        let state = SinkState::default();
        state.fail_first.store(fail_first, Ordering::SeqCst);
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind sink");
        let addr: SocketAddr = listener.local_addr().expect("sink addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url: format!("http://{addr}/hook"),
            state,
        }
    }

    /// Everything received so far (including requests answered with 500).
    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().expect("sink lock").clone()
    }

    /// Waits up to `timeout` until at least `n` requests arrived.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self.received();
            if got.len() >= n || tokio::time::Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn receive(State(state): State<SinkState>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let headers = headers
        .iter()
        .map(|(n, v)| (n.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    state.received.lock().expect("sink lock").push(Received {
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let failing = state
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

/// A graphql-transport-ws client with one subscription.
pub struct WsSubscription {
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl WsSubscription {
    /// Connects to `base` (`http://…`), sends `connection_init` with `token`, waits for the ack
    /// and subscribes. `Err` carries what the server said instead of an ack.
    pub async fn start(
        base: &str,
        token: &str,
        query: &str,
        variables: Value,
    ) -> Result<Self, String> {
        let url = format!("{}/graphql/ws", base.replace("http://", "ws://"));
        let mut request = url.into_client_request().map_err(|e| e.to_string())?;
        request.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_static("graphql-transport-ws"),
        );
        let (mut socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .map_err(|e| e.to_string())?;
        let init = json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } });
        socket
            .send(tungstenite::Message::text(init.to_string()))
            .await
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(Duration::from_secs(5), socket.next()).await {
            Ok(Some(Ok(tungstenite::Message::Text(t)))) if t.contains("connection_ack") => {}
            other => return Err(format!("{other:?}")),
        }
        let subscribe = json!({ "id": "1", "type": "subscribe", "payload": { "query": query, "variables": variables } });
        socket
            .send(tungstenite::Message::text(subscribe.to_string()))
            .await
            .map_err(|e| e.to_string())?;
        Ok(Self { socket })
    }

    /// The next `next` payload's `data`, or `None` after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let message = tokio::time::timeout(left, self.socket.next())
                .await
                .ok()??
                .ok()?;
            if let tungstenite::Message::Text(text) = message {
                let v: Value = serde_json::from_str(&text).ok()?;
                match v["type"].as_str() {
                    Some("next") => return Some(v["payload"]["data"].clone()),
                    Some("ping") => {
                        let _ = self
                            .socket
                            .send(tungstenite::Message::text(
                                json!({"type": "pong"}).to_string(),
                            ))
                            .await;
                    }
                    Some("error") | Some("complete") => return None,
                    _ => {}
                }
            }
        }
    }
}
