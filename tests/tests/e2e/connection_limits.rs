//! Connection limits: a request head sent too slowly (slow-loris) and a kept-alive connection
//! left idle are closed by the server after their timeouts, idle sockets by the thousand do not
//! keep a request from its answer, and a connection over `TESSERA_MAX_CONNECTIONS` is answered
//! `503` at once.
//!
//! The test process holds both ends of every socket; the server raises the process's
//! open-file soft limit to its hard limit at start, which covers the 2,000 sockets here.

use std::time::Duration;

use futures::future::join_all;
use serde_json::json;
use tessera_tests::{ADMIN_KEY, TestServer, WsClient, both_stores};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// How long a test waits for the server to close a socket (the timeouts here are 1–2 s).
const WAIT: Duration = Duration::from_secs(60);

/// A timeout no test waits for.
const NEVER: u64 = 3600;

fn addr(s: &TestServer) -> String {
    s.base
        .strip_prefix("http://")
        .expect("http base")
        .to_string()
}

/// Waits until the server closes `tcp` and returns what it sent before (end of stream or a
/// reset both count as closed). Panics if it stays open for [`WAIT`].
async fn closed_by_server(tcp: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(WAIT, tcp.read(&mut buf)).await {
            Err(_) => panic!("the server kept the connection open; it sent {got:?}"),
            Ok(Ok(0) | Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends `GET /healthz` on `tcp` (kept alive) and reads one whole response.
async fn healthz(tcp: &mut TcpStream, host: &str) -> String {
    tcp.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .expect("send the request");
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().expect("content-length"))
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                return text;
            }
        }
        let n = tokio::time::timeout(WAIT, tcp.read(&mut buf))
            .await
            .expect("an answer")
            .expect("read the answer");
        assert!(n > 0, "closed before the whole answer: {text:?}");
        got.extend_from_slice(&buf[..n]);
    }
}

both_stores!(
    a_request_head_sent_too_slowly_is_closed_after_the_header_timeout,
    |store| async move {
        let s = TestServer::start_with(store, |c| {
            c.http_header_timeout_seconds = 1;
            c.http_idle_timeout_seconds = NEVER;
        })
        .await;
        let tcp = TcpStream::connect(addr(&s)).await.unwrap();
        let (mut read, mut write) = tcp.into_split();
        // A slow-loris: the head trickles in, a header line every 200 ms, never ending.
        let trickle = tokio::spawn(async move {
            write
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                .await?;
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                write.write_all(b"x-slow: 1\r\n").await?;
            }
            #[allow(unreachable_code)]
            Ok::<(), std::io::Error>(())
        });
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            match tokio::time::timeout(WAIT, read.read(&mut buf)).await {
                Err(_) => panic!("the slow head kept its connection open"),
                Ok(Ok(0) | Err(_)) => break,
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            }
        }
        trickle.abort();
        assert!(
            got.is_empty(),
            "an unfinished head got an answer: {:?}",
            String::from_utf8_lossy(&got)
        );
        // The server goes on answering.
        let answer = s.ok("{ __typename }", json!({})).await;
        assert_eq!(answer["__typename"], "Query");
    }
);

both_stores!(
    a_kept_alive_connection_left_idle_is_closed_after_the_idle_timeout,
    |store| async move {
        let s = TestServer::start_with(store, |c| {
            c.http_header_timeout_seconds = NEVER;
            c.http_idle_timeout_seconds = 1;
        })
        .await;
        let host = addr(&s);
        let mut tcp = TcpStream::connect(&host).await.unwrap();
        let answer = healthz(&mut tcp, &host).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            !answer.to_ascii_lowercase().contains("connection: close"),
            "the server meant to keep the connection: {answer}"
        );
        // A second request on the same connection: it is kept alive between requests.
        let again = healthz(&mut tcp, &host).await;
        assert!(again.starts_with("HTTP/1.1 200"), "{again}");
        // Then nothing: the idle timeout closes it, without another answer.
        let after = closed_by_server(&mut tcp).await;
        assert!(after.is_empty(), "{:?}", String::from_utf8_lossy(&after));
    }
);

both_stores!(
    two_thousand_idle_sockets_leave_a_request_its_answer_and_are_closed,
    |store| async move {
        let s = TestServer::start_with(store, |c| {
            c.http_header_timeout_seconds = 2;
            c.http_idle_timeout_seconds = NEVER;
        })
        .await;
        let host = addr(&s);
        // 100 at a time: a burst past the listen backlog (1024) would leave some sockets
        // connected on the client's side that the kernel never hands to the server.
        let mut idle: Vec<TcpStream> = Vec::new();
        for _ in 0..20 {
            let batch = join_all((0..100).map(|_| TcpStream::connect(host.as_str()))).await;
            idle.extend(
                batch
                    .into_iter()
                    .map(|c| c.expect("connect an idle socket")),
            );
        }
        assert_eq!(idle.len(), 2000);
        // A request that writes to the store is answered while they are all open.
        let id = s.create_user("alice").await;
        assert!(!id.is_empty());
        // None of them sent a head: the header timeout closes every one.
        let sent = join_all(
            idle.into_iter()
                .map(|mut tcp| async move { closed_by_server(&mut tcp).await }),
        )
        .await;
        assert!(sent.iter().all(Vec::is_empty), "an idle socket got bytes");
    }
);

both_stores!(
    a_connection_over_the_cap_gets_503_at_once,
    |store| async move {
        let s = TestServer::start_with(store, |c| {
            c.max_connections = 3;
            c.http_header_timeout_seconds = NEVER;
            c.http_idle_timeout_seconds = NEVER;
        })
        .await;
        let host = addr(&s);
        // Three connections, each answered and kept open.
        let mut open = Vec::new();
        for _ in 0..3 {
            let mut tcp = TcpStream::connect(&host).await.unwrap();
            let answer = healthz(&mut tcp, &host).await;
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            open.push(tcp);
        }
        // The fourth is refused, with an answer, and closed.
        let mut fourth = TcpStream::connect(&host).await.unwrap();
        let _ = fourth
            .write_all(format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
            .await;
        let refused = String::from_utf8(closed_by_server(&mut fourth).await).unwrap();
        assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
        assert!(
            refused.to_ascii_lowercase().contains("connection: close"),
            "{refused}"
        );
        assert!(refused.ends_with("too many connections\n"), "{refused}");
        // The open ones are still served.
        let answer = healthz(&mut open[0], &host).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        // A slot freed by a client that leaves is taken by the next one.
        drop(open.pop());
        let mut served = None;
        for _ in 0..600 {
            let mut tcp = TcpStream::connect(&host).await.unwrap();
            let _ = tcp
                .write_all(format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
                .await;
            let mut buf = [0u8; 12];
            if tcp.read_exact(&mut buf).await.is_ok() && &buf == b"HTTP/1.1 200" {
                served = Some(tcp);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(served.is_some(), "the freed slot was never taken");
    }
);

both_stores!(
    a_websocket_is_not_closed_by_the_http_timeouts,
    |store| async move {
        let s = TestServer::start_with(store, |c| {
            c.http_header_timeout_seconds = 1;
            c.http_idle_timeout_seconds = 1;
        })
        .await;
        s.create_user("alice").await;
        let mut ws = WsClient::connect(&s.ws_url(), Some(ADMIN_KEY))
            .await
            .unwrap();
        // Silent for longer than both timeouts: an upgraded connection keeps its own rules.
        tokio::time::sleep(Duration::from_secs(3)).await;
        ws.subscribe(
            "all",
            "subscription { events { aggregateType } }",
            json!({}),
        )
        .await;
        let first = ws.take("all", "events", 1, WAIT).await;
        assert_eq!(first[0]["aggregateType"], "User");
    }
);
