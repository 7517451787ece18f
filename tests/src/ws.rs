//! A graphql-transport-ws client over a real websocket.

use std::time::Duration;

use serde_json::{Value, json};

/// A graphql-transport-ws client over a real websocket.
pub struct WsClient {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

/// A message a [`WsClient`] received.
#[derive(Clone, Debug, PartialEq)]
pub enum WsMessage {
    /// `next`: a result of subscription `id`.
    Next {
        /// Subscription id.
        id: String,
        /// `{"data": …}` (or `errors`).
        payload: Value,
    },
    /// `error` for subscription `id`.
    Error {
        /// Subscription id.
        id: String,
        /// The errors.
        payload: Value,
    },
    /// `complete` of subscription `id`.
    Complete {
        /// Subscription id.
        id: String,
    },
    /// The server closed the connection (close code, if any).
    Closed(Option<u16>),
}

impl WsClient {
    /// Connects to `url` with the graphql-transport-ws subprotocol and sends
    /// `connection_init` with `{"Authorization": "Bearer <token>"}` (or an empty payload).
    /// Returns the client once acknowledged, or how the server refused.
    pub async fn connect(url: &str, token: Option<&str>) -> Result<Self, WsMessage> {
        use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue};
        let mut request = url.into_client_request().expect("ws request");
        request.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_static("graphql-transport-ws"),
        );
        let (ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("websocket handshake");
        let mut client = Self { ws };
        let payload = match token {
            Some(t) => json!({ "Authorization": format!("Bearer {t}") }),
            None => json!({}),
        };
        client
            .send(json!({ "type": "connection_init", "payload": payload }))
            .await;
        loop {
            match client.raw(Duration::from_secs(10)).await {
                Some(Ok(m)) if m["type"] == "connection_ack" => return Ok(client),
                Some(Ok(_)) => continue,
                Some(Err(closed)) => return Err(closed),
                None => return Err(WsMessage::Closed(None)),
            }
        }
    }

    /// Connects to `url` with the graphql-transport-ws subprotocol and sends nothing.
    pub async fn connect_without_init(url: &str) -> Self {
        use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue};
        let mut request = url.into_client_request().expect("ws request");
        request.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_static("graphql-transport-ws"),
        );
        let (ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("websocket handshake");
        Self { ws }
    }

    async fn send(&mut self, message: Value) {
        use futures::SinkExt;
        self.ws
            .send(tokio_tungstenite::tungstenite::Message::Text(
                message.to_string().into(),
            ))
            .await
            .expect("ws send");
    }

    /// Starts subscription `id`.
    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        self.send(json!({ "type": "subscribe", "id": id,
                          "payload": { "query": query, "variables": variables } }))
            .await;
    }

    /// The next protocol message (pings answered on the way), `Err` if the connection
    /// closed, `None` on timeout.
    async fn raw(&mut self, timeout: Duration) -> Option<Result<Value, WsMessage>> {
        use futures::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()?;
            match next {
                Some(Ok(Message::Text(text))) => {
                    let value: Value = serde_json::from_str(&text).expect("JSON message");
                    if value["type"] == "ping" {
                        self.send(json!({ "type": "pong" })).await;
                        continue;
                    }
                    return Some(Ok(value));
                }
                Some(Ok(Message::Close(frame))) => {
                    return Some(Err(WsMessage::Closed(frame.map(|f| f.code.into()))));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Some(Err(WsMessage::Closed(None))),
            }
        }
    }

    /// The next message, or `None` if nothing came within `timeout`.
    pub async fn recv(&mut self, timeout: Duration) -> Option<WsMessage> {
        let value = match self.raw(timeout).await? {
            Ok(v) => v,
            Err(closed) => return Some(closed),
        };
        let id = value["id"].as_str().unwrap_or_default().to_string();
        Some(match value["type"].as_str() {
            Some("next") => WsMessage::Next {
                id,
                payload: value["payload"].clone(),
            },
            Some("error") => WsMessage::Error {
                id,
                payload: value["payload"].clone(),
            },
            Some("complete") => WsMessage::Complete { id },
            other => panic!("unexpected message type {other:?}: {value}"),
        })
    }

    /// Collects `n` `next` payloads' `data.<field>` of subscription `id`, failing on anything
    /// else or if `timeout` passes between two messages.
    pub async fn take(&mut self, id: &str, field: &str, n: usize, timeout: Duration) -> Vec<Value> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            match self.recv(timeout).await {
                Some(WsMessage::Next { id: got, payload }) if got == id => {
                    assert!(
                        payload.get("errors").is_none(),
                        "subscription error: {payload}"
                    );
                    out.push(payload["data"][field].clone());
                }
                other => panic!(
                    "expected {n} results on {id}, got {} then {other:?}",
                    out.len()
                ),
            }
        }
        out
    }
}
