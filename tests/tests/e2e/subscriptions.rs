//! `subscription events` over graphql-transport-ws at `/graphql/ws`, with a real websocket
//! client: history from a position, then live events, from any node, without gap or duplicate
//! across a server restart.

use std::{sync::Arc, time::Duration};

use serde_json::{Value, json};
use tessera_tests::{ADMIN_KEY, TestServer, WsClient, WsMessage, both_stores, identity};

const EVENTS: &str = "subscription($f: EventFilter, $p: String) {
    events(filter: $f, fromPosition: $p) { position aggregateType aggregateId sequence eventType
                                           eventVersion payload metadata recordedAt } }";

const WAIT: Duration = Duration::from_secs(10);

both_stores!(
    history_then_live_without_gap_or_duplicate_across_a_restart,
    |store| async move {
        let mut s = TestServer::start(store).await;
        let (_, factor, secret) = s.active_totp("alice").await;
        s.create_user("bob").await;
        // Counts are read from the log itself: commands write user events too, and the
        // alert reactor writes alerts after them.
        let history = s.quiesce().await;
        assert!(history.len() >= 4, "{history:#?}");

        let mut ws = WsClient::connect(&s.ws_url(), Some(ADMIN_KEY))
            .await
            .unwrap();
        ws.subscribe("all", EVENTS, json!({})).await;
        let mut received = ws.take("all", "events", history.len(), WAIT).await;
        assert_eq!(received, history, "history first, as the query shows it");

        // Live: a wrong code and a success.
        let wrong = s.wrong_code(&secret);
        assert_eq!(s.verify(&factor, &wrong).await, "REJECTED");
        assert_eq!(s.verify(&factor, &s.code(&secret, 0)).await, "SUCCESS");
        let log = s.quiesce().await;
        let new = log.len() - received.len();
        received.extend(ws.take("all", "events", new, WAIT).await);
        assert_eq!(received, log);
        let live: Vec<&Value> = received[history.len()..]
            .iter()
            .filter(|e| e["aggregateId"] == factor.as_str())
            .map(|e| &e["eventType"])
            .collect();
        assert_eq!(live, [&json!("FailedAttempt"), &json!("Verified")]);

        // The server restarts: the session ends with it.
        s.restart().await;
        let mut closed = false;
        for _ in 0..5 {
            match ws.recv(WAIT).await {
                Some(WsMessage::Closed(_)) | None => {
                    closed = true;
                    break;
                }
                // The stream may end cleanly before the socket drops.
                Some(WsMessage::Complete { .. }) => continue,
                Some(other) => panic!("nothing more was written, got {other:?}"),
            }
        }
        assert!(closed, "the old session is gone");

        // Written while no one listens.
        s.create_user("carol").await;
        s.clock.advance(chrono::TimeDelta::seconds(30));
        assert_eq!(s.verify(&factor, &wrong).await, "REJECTED");
        let while_away = s.quiesce().await.len() - received.len();
        assert!(while_away >= 2);

        // Resume from the last position received.
        let last = received.last().unwrap()["position"].clone();
        let mut ws = WsClient::connect(&s.ws_url(), Some(ADMIN_KEY))
            .await
            .unwrap();
        ws.subscribe("again", EVENTS, json!({ "p": last })).await;
        received.extend(ws.take("again", "events", while_away, WAIT).await);
        // And live again.
        assert_eq!(s.verify(&factor, &s.code(&secret, 0)).await, "SUCCESS");
        let log = s.quiesce().await;
        let new = log.len() - received.len();
        received.extend(ws.take("again", "events", new, WAIT).await);

        assert_eq!(
            received.iter().map(identity).collect::<Vec<_>>(),
            log.iter().map(identity).collect::<Vec<_>>(),
            "every event exactly once, in order"
        );
        assert_eq!(received, log);
        // Nothing beyond.
        assert_eq!(ws.recv(Duration::from_millis(500)).await, None);
    }
);

both_stores!(
    a_subscription_sees_events_written_by_another_node,
    |store| async move {
        let s = TestServer::start(store).await;
        let user = s.create_user("alice").await;
        s.settled_events().await;
        // A second server process on the same database.
        let mut config = s.config.clone();
        config.listen = "127.0.0.1:0".parse().unwrap();
        let other = tessera_api::start_with_clock(config, Arc::new(s.clock.clone()))
            .await
            .unwrap();
        let other_base = format!("http://{}", other.addr);

        let mut ws = WsClient::connect(&s.ws_url(), Some(ADMIN_KEY))
            .await
            .unwrap();
        ws.subscribe(
            "factors",
            EVENTS,
            json!({ "f": { "aggregateType": "Factor" } }),
        )
        .await;
        // History holds no factor event: nothing comes yet.
        assert_eq!(ws.recv(Duration::from_millis(300)).await, None);

        let enrolled: Value = s
            .http
            .post(format!("{other_base}/graphql"))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({
                "query": "mutation($u: ID!) { enrollFactor(input: {userId: $u, type: TOTP}) { factor { id } } }",
                "variables": { "u": user } }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let factor = enrolled["data"]["enrollFactor"]["factor"]["id"].clone();
        assert!(factor.is_string(), "{enrolled}");
        let got = ws.take("factors", "events", 1, WAIT).await;
        assert_eq!(got[0]["eventType"], "Enrolled");
        assert_eq!(got[0]["aggregateId"], factor);
        assert_eq!(
            got[0]["payload"]["Enrolled"]["totp"]["secret"],
            "[REDACTED]"
        );
        // The user-only event the other node writes next is filtered out.
        s.http
            .post(format!("{other_base}/graphql"))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({ "query": "mutation { createUser(input: {login: \"bob\"}) { id } }" }))
            .send()
            .await
            .unwrap();
        assert_eq!(ws.recv(Duration::from_millis(500)).await, None);
        other.stop().await;
    }
);

both_stores!(
    subscriptions_need_an_admin_token_and_a_valid_position,
    |store| async move {
        let s = TestServer::start(store).await;
        for token in [None, Some("not-a-key")] {
            match WsClient::connect(&s.ws_url(), token).await {
                Err(WsMessage::Closed(code)) => assert_eq!(code, Some(1002), "{token:?}"),
                Err(other) => panic!("expected a close, got {other:?}"),
                Ok(_) => panic!("connection_init accepted {token:?}"),
            }
        }
        let mut ws = WsClient::connect(&s.ws_url(), Some(ADMIN_KEY))
            .await
            .unwrap();
        ws.subscribe("bad", EVENTS, json!({ "p": "yesterday" }))
            .await;
        // The field's error arrives as a result with `errors`, then the subscription completes.
        match ws.recv(WAIT).await {
            Some(WsMessage::Next { id, payload }) => {
                assert_eq!(id, "bad");
                assert_eq!(payload["data"], Value::Null);
                let error = &payload["errors"][0]["extensions"];
                assert_eq!(error["code"], "BAD_USER_INPUT", "{payload}");
                assert_eq!(error["reason"], "INVALID_CURSOR", "{payload}");
            }
            other => panic!("expected an error result, got {other:?}"),
        }
        assert_eq!(
            ws.recv(WAIT).await,
            Some(WsMessage::Complete { id: "bad".into() })
        );
    }
);

both_stores!(
    a_long_history_arrives_complete_and_in_order,
    |store| async move {
        let s = TestServer::start(store).await;
        // 900 events, more than a subscription reads per query, streams interleaved.
        let written = tessera_tests::synthetic::insert_users(&s.server().state.db, 45, 9).await;
        assert_eq!(written, 900);
        // The synthetic lockouts raise alerts: wait for the log to settle.
        let log = s.quiesce().await;
        let mut ws = WsClient::connect(&s.ws_url(), Some(ADMIN_KEY))
            .await
            .unwrap();
        ws.subscribe("all", EVENTS, json!({})).await;
        ws.subscribe(
            "locks",
            "subscription { events(filter: {eventTypes: [\"LockedOut\"]}) { position eventType } }",
            json!({}),
        )
        .await;
        let mut all = Vec::new();
        let mut locks = Vec::new();
        while all.len() < log.len() || locks.len() < 45 {
            match ws.recv(WAIT).await {
                Some(WsMessage::Next { id, payload }) if id == "all" => {
                    all.push(payload["data"]["events"].clone());
                }
                Some(WsMessage::Next { id, payload }) if id == "locks" => {
                    locks.push(payload["data"]["events"].clone());
                }
                other => panic!("after {} + {}: {other:?}", all.len(), locks.len()),
            }
        }
        assert_eq!(all, log);
        let expected: Vec<Value> = log
            .iter()
            .filter(|e| e["eventType"] == "LockedOut")
            .map(|e| json!({ "position": e["position"], "eventType": "LockedOut" }))
            .collect();
        assert_eq!(locks, expected);
        assert_eq!(ws.recv(Duration::from_millis(300)).await, None);
    }
);
