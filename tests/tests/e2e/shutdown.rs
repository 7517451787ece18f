//! How the server stops: every websocket gets a close frame 1001 (going away), in-flight
//! requests finish, and a stuck request holds the stop no longer than the grace period.

use std::time::{Duration, Instant};

use serde_json::json;
use tessera_tests::{ADMIN_KEY, TestServer, WsClient, WsMessage, both_stores};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const WAIT: Duration = Duration::from_secs(10);

/// How the server ended `ws`: its close code, skipping the `complete` of streams that end
/// first.
async fn close_code(ws: &mut WsClient) -> Option<u16> {
    loop {
        match ws.recv(WAIT).await {
            Some(WsMessage::Closed(code)) => return code,
            Some(WsMessage::Complete { .. }) => continue,
            other => panic!("expected the close, got {other:?}"),
        }
    }
}

/// A `createUser` request whose body is sent only in part: in flight until the rest follows.
async fn half_sent_create_user(s: &TestServer, login: &str) -> (TcpStream, Vec<u8>) {
    let body = json!({
        "query": "mutation($l: String!) { createUser(input: {login: $l}) { id login } }",
        "variables": { "l": login },
    })
    .to_string()
    .into_bytes();
    let addr = s.base.strip_prefix("http://").unwrap();
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /graphql HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let (first, rest) = body.split_at(body.len() / 2);
    tcp.write_all(first).await.unwrap();
    tcp.flush().await.unwrap();
    // The server has the request (its handler is reading the body) before the stop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    (tcp, rest.to_vec())
}

both_stores!(
    every_websocket_gets_going_away_when_the_server_stops,
    |store| async move {
        let mut s = TestServer::start(store).await;
        s.create_user("alice").await;
        let mut subscribed = WsClient::connect(&s.ws_url(), Some(ADMIN_KEY))
            .await
            .unwrap();
        subscribed
            .subscribe(
                "all",
                "subscription { events { eventType aggregateType } }",
                json!({}),
            )
            .await;
        // The subscription is live: the history arrives.
        let first = subscribed.take("all", "events", 1, WAIT).await;
        assert_eq!(first[0]["aggregateType"], "User");
        subscribed
            .subscribe(
                "alerts",
                "subscription { securityAlerts { id } }",
                json!({}),
            )
            .await;
        let mut idle = WsClient::connect(&s.ws_url(), Some(ADMIN_KEY))
            .await
            .unwrap();

        let started = Instant::now();
        s.stop().await;
        // The stop waited for the close frames, not for the grace period.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(close_code(&mut subscribed).await, Some(1001));
        assert_eq!(close_code(&mut idle).await, Some(1001));
    }
);

both_stores!(
    an_in_flight_request_finishes_when_the_server_stops,
    |store| async move {
        let mut s = TestServer::start(store).await;
        let (mut tcp, rest) = half_sent_create_user(&s, "carol").await;

        let _ = s.server().shutdown_handle().send(true);
        // New connections are refused once the stop began.
        let base = s.base.clone();
        let mut refused = false;
        for _ in 0..50 {
            if reqwest::get(format!("{base}/healthz")).await.is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(refused, "still accepting after the stop began");

        // The request that was in flight is answered in full.
        tcp.write_all(&rest).await.unwrap();
        let mut response = Vec::new();
        tokio::time::timeout(WAIT, tcp.read_to_end(&mut response))
            .await
            .expect("answered before the timeout")
            .unwrap();
        let response = String::from_utf8_lossy(&response);
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        let body = response.split_once("\r\n\r\n").unwrap().1;
        let body: serde_json::Value = serde_json::from_str(body).expect("a JSON body, not chunked");
        assert_eq!(body["data"]["createUser"]["login"], "carol", "{body}");
        let id = body["data"]["createUser"]["id"]
            .as_str()
            .unwrap()
            .to_string();

        // And its write is there after a restart.
        s.stop().await;
        s.restart().await;
        let user = s
            .ok(
                "query($l: String!) { userByLogin(login: $l) { id } }",
                json!({ "l": "carol" }),
            )
            .await;
        assert_eq!(user["userByLogin"]["id"], id);
    }
);

both_stores!(
    a_stuck_request_holds_the_stop_only_for_the_grace_period,
    |store| async move {
        let mut s = TestServer::start_with(store, |c| c.shutdown_grace_seconds = 1).await;
        // Never finished.
        let (_tcp, _rest) = half_sent_create_user(&s, "dave").await;
        let started = Instant::now();
        s.stop().await;
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(900),
            "did not wait for the request: {took:?}"
        );
        assert!(
            took < Duration::from_secs(5),
            "waited past the grace period: {took:?}"
        );
    }
);
