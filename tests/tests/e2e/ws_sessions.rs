//! A websocket session lives no longer than its token: an expired token, a revoked API key
//! or a token generation moved on closes it with 4401; a socket that never sends
//! `connection_init` is closed after 10 s with 4408.

use std::time::Duration;

use chrono::TimeDelta;
use serde_json::json;
use tessera_tests::{TestServer, WsClient, WsMessage, both_stores};

const PASSWORD: &str = "correct horse battery";

/// Waits (bounded) for the server to close `ws`; returns the close code.
async fn closed(ws: &mut WsClient) -> Option<u16> {
    match ws.recv(Duration::from_secs(15)).await {
        Some(WsMessage::Closed(code)) => code,
        other => panic!("still open: {other:?}"),
    }
}

both_stores!(a_websocket_closes_when_its_token_ends, |store| async move {
    let s = TestServer::start(store).await;
    let user = s.create_full_user("alice", PASSWORD).await;
    // Revoked: the user logs out everywhere.
    let token = s.password_token("alice", PASSWORD).await;
    let mut ws = WsClient::connect(&s.ws_url(), Some(&token))
        .await
        .expect("connected");
    assert!(
        ws.recv(Duration::from_millis(1500)).await.is_none(),
        "open while the token is good"
    );
    s.ok(
        "mutation($u: ID!) { revokeSessions(input: {userId: $u}) { user { id } } }",
        json!({ "u": user }),
    )
    .await;
    assert_eq!(closed(&mut ws).await, Some(4401));
    // Expired.
    let token = s.password_token("alice", PASSWORD).await;
    let mut ws = WsClient::connect(&s.ws_url(), Some(&token))
        .await
        .expect("connected");
    s.clock
        .advance(TimeDelta::seconds(s.config.access_token_ttl_seconds + 1));
    assert_eq!(closed(&mut ws).await, Some(4401));
    // An API key revoked.
    let r = s
        .ok(
            "mutation { createApiKey(input: {name: \"siem\"}) { token apiKey { id } } }",
            json!({}),
        )
        .await;
    let key = r["createApiKey"]["token"].as_str().unwrap().to_string();
    let id = r["createApiKey"]["apiKey"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut ws = WsClient::connect(&s.ws_url(), Some(&key))
        .await
        .expect("connected");
    s.ok(
        "mutation($i: ID!) { revokeApiKey(input: {id: $i}) { apiKey { id } } }",
        json!({ "i": id }),
    )
    .await;
    assert_eq!(closed(&mut ws).await, Some(4401));
});

both_stores!(
    a_websocket_without_connection_init_is_closed,
    |store| async move {
        let s = TestServer::start(store).await;
        let mut ws = WsClient::connect_without_init(&s.ws_url()).await;
        assert_eq!(closed(&mut ws).await, Some(4408));
    }
);
