//! A real HTTP server (axum) on `127.0.0.1:0` that records every request: the "phone" of the
//! SMS gateway, or a webhook receiver. It answers 200 unless told to answer the next requests
//! with another status.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri},
};
use serde_json::Value;
use tokio::{sync::Notify, task::JoinHandle};

/// One request as received.
#[derive(Clone, Debug)]
pub struct Received {
    /// `POST`, …
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers, lower-case names, in order.
    pub headers: Vec<(String, String)>,
    /// The raw body.
    pub body: Vec<u8>,
    /// The status the sink answered with.
    pub answered: u16,
}

impl Received {
    /// A header's value by (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[derive(Default)]
struct Inner {
    requests: Mutex<Vec<Received>>,
    statuses: Mutex<Vec<u16>>,
    arrived: Notify,
}

/// The running server; stops when dropped.
pub struct HttpSink {
    addr: SocketAddr,
    inner: Arc<Inner>,
    task: JoinHandle<()>,
}

impl Drop for HttpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let status = {
        let mut statuses = inner.statuses.lock().expect("lock");
        if statuses.is_empty() {
            200
        } else {
            statuses.remove(0)
        }
    };
    inner.requests.lock().expect("lock").push(Received {
        method: method.to_string(),
        path: uri
            .path_and_query()
            .map_or_else(|| uri.path().to_string(), ToString::to_string),
        headers: headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
        answered: status,
    });
    inner.arrived.notify_waiters();
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

impl HttpSink {
    /// Listens on a free loopback port; every path and method is recorded.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let inner = Arc::new(Inner::default());
        let router = Router::new()
            .fallback(record)
            .with_state(Arc::clone(&inner));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { addr, inner, task }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request so far, in order (refused ones included, with their status).
    pub fn requests(&self) -> Vec<Received> {
        self.inner.requests.lock().expect("lock").clone()
    }

    /// Requests answered with 2xx so far.
    pub fn accepted(&self) -> Vec<Received> {
        self.requests()
            .into_iter()
            .filter(|r| (200..300).contains(&r.answered))
            .collect()
    }

    /// Waits until `n` requests were accepted (answered 2xx) and whose JSON `field` equals
    /// `value`, at most `timeout`; returns them. Panics on timeout, naming what arrived.
    pub async fn wait_for(
        &self,
        field: &str,
        value: &str,
        n: usize,
        timeout: Duration,
    ) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.inner.arrived.notified();
            let matching: Vec<Received> = self
                .accepted()
                .into_iter()
                .filter(|r| r.json()[field] == value)
                .collect();
            if matching.len() >= n {
                return matching;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!(
                    "{} of {n} requests with {field} = {value} in {timeout:?}; all: {:?}",
                    matching.len(),
                    self.requests()
                        .iter()
                        .map(|r| (r.answered, r.text()))
                        .collect::<Vec<_>>()
                );
            }
        }
    }

    /// Waits up to `timeout` until at least `n` requests arrived (whatever they were answered);
    /// returns every request so far.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.inner.arrived.notified();
            let got = self.requests();
            if got.len() >= n || tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return self.requests();
            }
        }
    }

    /// Answers the next `n` requests with `status` instead of 200.
    pub fn fail_next(&self, n: usize, status: u16) {
        self.inner
            .statuses
            .lock()
            .expect("lock")
            .extend(std::iter::repeat_n(status, n));
    }
}
