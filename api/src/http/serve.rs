//! Serving HTTP/1 connections with limits `axum::serve` does not have: a request head must
//! arrive within the header timeout (slow-loris), a kept-alive connection with nothing to do
//! is closed after the idle timeout, and at most a configured number of connections are open
//! at once (one more is answered `503` with `Connection: close` at once, so a client always
//! gets an answer and no file descriptor is held waiting).
//!
//! The timeouts are watched per connection ([`Watch`]): the connection's IO records its
//! traffic and the service records when a request is being answered. Once a websocket is
//! upgraded the connection is no longer HTTP: it keeps its connection slot (the permit lives
//! in its IO) but not the HTTP timeouts; graphql-ws has its own rules.

use std::{
    convert::Infallible,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{Router, extract::ConnectInfo};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{Notify, OwnedSemaphorePermit, Semaphore, watch},
    time::Instant,
};

/// Open files kept free for everything but client connections (database pools, the SQLite
/// files, the outbox, the refusals of connections over the cap).
const FD_RESERVE: u64 = 256;

/// How long a refused connection gets to take its `503`.
const REFUSAL_SEND: Duration = Duration::from_secs(1);

/// The answer to a connection over the cap.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\n\
content-type: text/plain; charset=utf-8\r\nretry-after: 1\r\ncontent-length: 21\r\n\r\n\
too many connections\n";

/// The connection limits (from `TESSERA_HTTP_*` and `TESSERA_MAX_CONNECTIONS`).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Time for a complete request head.
    pub header_timeout: Duration,
    /// Time a connection may sit idle between requests.
    pub idle_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
}

impl Limits {
    /// The limits `config` describes, the cap lowered to what the open-file limit allows
    /// (logged).
    pub fn from_config(config: &crate::Config) -> Self {
        let wanted = usize::try_from(config.max_connections).unwrap_or(usize::MAX);
        let max_connections = match open_file_limit() {
            Some(limit) => {
                let room =
                    usize::try_from(limit.saturating_sub(FD_RESERVE).max(1)).unwrap_or(usize::MAX);
                if room < wanted {
                    tracing::warn!(
                        open_file_limit = limit,
                        max_connections = room,
                        "TESSERA_MAX_CONNECTIONS={wanted} is more than the open-file limit allows; at most {room} connections are served (raise `ulimit -n` for more)"
                    );
                }
                wanted.min(room)
            }
            None => wanted,
        };
        Self {
            header_timeout: Duration::from_secs(config.http_header_timeout_seconds.max(1)),
            idle_timeout: Duration::from_secs(config.http_idle_timeout_seconds.max(1)),
            max_connections: max_connections.max(1),
        }
    }
}

/// The process's open-file limit after raising its soft limit to the hard one (once per
/// process, logged); `None` where it cannot be read.
fn open_file_limit() -> Option<u64> {
    static LIMIT: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let limit = getrlimit(Resource::Nofile);
        let (Some(soft), hard) = (limit.current, limit.maximum) else {
            return None; // unlimited
        };
        match hard {
            Some(hard) if hard > soft => {
                let raised = rustix::process::Rlimit {
                    current: Some(hard),
                    maximum: Some(hard),
                };
                match setrlimit(Resource::Nofile, raised) {
                    Ok(()) => {
                        tracing::info!(from = soft, to = hard, "raised the open-file limit");
                        Some(hard)
                    }
                    Err(e) => {
                        tracing::warn!(
                            open_file_limit = soft,
                            "could not raise the open-file limit: {e}"
                        );
                        Some(soft)
                    }
                }
            }
            _ => Some(soft),
        }
    })
}

/// Accepts connections on `listener` and serves `router` on each until `stop` turns true;
/// then stops accepting, lets each connection finish its request and resolves when all have
/// closed (websockets excepted: they are closed by their own sessions).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    // Every connection task holds a receiver; `closed()` resolves when the last has ended.
    let (open_tx, open_rx) = watch::channel(());
    let mut refused_logged: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                accept_failed(&e).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            if refused_logged.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
                refused_logged = Some(Instant::now());
                tracing::warn!(
                    max_connections = limits.max_connections,
                    "connection cap reached: new connections get 503 (TESSERA_MAX_CONNECTIONS)"
                );
            }
            tokio::spawn(refuse(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let open = open_rx.clone();
        let stop = stop.clone();
        tokio::spawn(connection(
            stream,
            remote,
            permit,
            router.clone(),
            limits,
            stop,
            open,
        ));
    }
    drop(listener);
    drop(open_rx);
    open_tx.closed().await;
}

/// An `accept` error: a connection that went away before it was taken is nothing; anything
/// else (out of file descriptors) is logged and waited out briefly, not spun on.
async fn accept_failed(e: &io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!("accept failed: {e}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Answers a connection over the cap with `503` and closes it. What the client sent is read
/// and dropped until it closes too (within [`REFUSAL_SEND`]): closing with unread bytes would
/// reset the connection, and the reset could overtake the answer.
async fn refuse(mut stream: TcpStream) {
    use tokio::io::AsyncReadExt;
    let _ = tokio::time::timeout(REFUSAL_SEND, async {
        stream.write_all(REFUSAL).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<(), io::Error>(())
    })
    .await;
}

/// Why a connection was closed by its watch.
#[derive(Clone, Copy, Debug)]
enum Expired {
    Header,
    Idle,
}

/// One connection's timing: what its IO and its requests record, what its watch reads.
struct Watch {
    start: Instant,
    /// Requests being answered (from a complete head to the response's head).
    answering: AtomicUsize,
    /// Since when (ms after `start`) a request head is being waited for; `u64::MAX`: none.
    head_since: AtomicU64,
    /// The last traffic or end of an answer (ms after `start`).
    active_at: AtomicU64,
    /// Wakes the watch when a head starts.
    changed: Notify,
}

const NO_HEAD: u64 = u64::MAX;

impl Watch {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            answering: AtomicUsize::new(0),
            // The first request's head is waited for from the opening.
            head_since: AtomicU64::new(0),
            active_at: AtomicU64::new(0),
            changed: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// Bytes arrived: outside an answer and with no head started, they start one.
    fn read(&self) {
        let now = self.now();
        self.active_at.store(now, Ordering::Relaxed);
        if self.answering.load(Ordering::SeqCst) == 0
            && self
                .head_since
                .compare_exchange(NO_HEAD, now, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            self.changed.notify_one();
        }
    }

    fn wrote(&self) {
        self.active_at.store(self.now(), Ordering::Relaxed);
    }

    /// A complete head: the request is being answered.
    fn answering(&self) {
        self.answering.fetch_add(1, Ordering::SeqCst);
        self.head_since.store(NO_HEAD, Ordering::SeqCst);
    }

    /// The response's head is out: the connection is idle again (its body is traffic).
    fn answered(&self) {
        self.active_at.store(self.now(), Ordering::Relaxed);
        self.answering.fetch_sub(1, Ordering::SeqCst);
    }

    /// The timeout that has passed, or how long until the next one could.
    fn check(&self, limits: Limits) -> Result<Duration, Expired> {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 4);
        let now = self.now();
        if self.answering.load(Ordering::SeqCst) > 0 {
            return Ok(limits.header_timeout.min(limits.idle_timeout));
        }
        let head = self.head_since.load(Ordering::SeqCst);
        if head != NO_HEAD {
            let deadline = head.saturating_add(ms(limits.header_timeout));
            return if now >= deadline {
                Err(Expired::Header)
            } else {
                Ok(Duration::from_millis(deadline - now))
            };
        }
        let deadline = self
            .active_at
            .load(Ordering::Relaxed)
            .saturating_add(ms(limits.idle_timeout));
        if now >= deadline {
            Err(Expired::Idle)
        } else {
            Ok(Duration::from_millis(deadline - now))
        }
    }

    /// Resolves when a timeout has passed.
    async fn expired(&self, limits: Limits) -> Expired {
        loop {
            match self.check(limits) {
                Err(expired) => return expired,
                Ok(wait) => {
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = self.changed.notified() => {}
                    }
                }
            }
        }
    }
}

/// A connection's stream: records its traffic in the [`Watch`] and holds its connection slot
/// for as long as it lives (through a websocket upgrade, too).
struct Tracked {
    stream: TcpStream,
    watch: Arc<Watch>,
    _slot: OwnedSemaphorePermit,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.watch.read();
        }
        poll
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.watch.wrote();
        }
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.watch.wrote();
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Counts a request as being answered until dropped (answered, or the connection gone).
struct Answering(Arc<Watch>);

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.answered();
    }
}

/// Serves one connection until it closes, a timeout passes, or the server stops.
async fn connection(
    stream: TcpStream,
    remote: SocketAddr,
    slot: OwnedSemaphorePermit,
    router: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
    _open: watch::Receiver<()>,
) {
    let watch = Arc::new(Watch::new());
    let io = TokioIo::new(Tracked {
        stream,
        watch: Arc::clone(&watch),
        _slot: slot,
    });
    let requests = Arc::clone(&watch);
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let mut router = router.clone();
        requests.answering();
        let answering = Answering(Arc::clone(&requests));
        let mut request = request.map(axum::body::Body::new);
        request.extensions_mut().insert(ConnectInfo(remote));
        async move {
            let response = tower_service::Service::call(&mut router, request).await;
            drop(answering);
            response.map_err(|never: Infallible| match never {})
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::trace!(%remote, "connection ended: {e}");
                }
                return;
            }
            expired = watch.expired(limits) => {
                // No request is being answered: closing drops nothing in flight.
                tracing::debug!(%remote, ?expired, "closing a connection past its timeout");
                return;
            }
            _ = stop.wait_for(|s| *s), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}
