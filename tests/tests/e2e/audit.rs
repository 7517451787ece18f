//! The audit log over GraphQL: `events` filters and pagination are exact and complete, no
//! secret leaves in any page, failures say why and can be followed by their causation id, and
//! `asOf` answers match the history.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tessera_store::Dialect;
use tessera_tests::{TestServer, both_stores, error_code, error_reason};

/// What [`activity`] created.
struct Activity {
    alice: String,
    alice_factor: String,
    bob: String,
    bob_factor: String,
    bob_secret: String,
    alice_secret: String,
}

/// Alice: active factor, three wrong codes (locked at the third), one attempt while locked.
/// Bob: active factor, one success. Carol: a user with a password.
async fn activity(s: &TestServer) -> Activity {
    let (alice, alice_factor, alice_secret) = s.active_totp("alice").await;
    let wrong = s.wrong_code(&alice_secret);
    for _ in 0..3 {
        assert_eq!(s.verify(&alice_factor, &wrong).await, "REJECTED");
    }
    assert_eq!(
        s.verify(&alice_factor, &s.code(&alice_secret, 0)).await,
        "LOCKED_OUT"
    );
    let (bob, bob_factor, bob_secret) = s.active_totp("bob").await;
    assert_eq!(
        s.verify(&bob_factor, &s.code(&bob_secret, 0)).await,
        "SUCCESS"
    );
    s.ok(
        "mutation { createUser(input: {login: \"carol\", password: \"correct horse battery\"}) { id } }",
        json!({}),
    )
    .await;
    Activity {
        alice,
        alice_factor,
        bob,
        bob_factor,
        bob_secret,
        alice_secret,
    }
}

async fn locked_server(store: tessera_tests::Store) -> TestServer {
    TestServer::start_with(store, |c| c.lockout_threshold = 3).await
}

/// Which events a filter should keep.
type Keep<'a> = Box<dyn Fn(&Value) -> bool + 'a>;

fn time_of(node: &Value) -> DateTime<Utc> {
    node["recordedAt"].as_str().unwrap().parse().unwrap()
}

both_stores!(
    pages_and_filters_are_exact_and_complete,
    |store| async move {
        let s = locked_server(store).await;
        let a = activity(&s).await;
        // Whatever the commands and the alert reactor wrote, once it stops growing.
        let all = s.quiesce().await;
        assert!(all.len() >= 14, "{all:#?}");

        // Small pages give exactly the one big page, in the log's order.
        for first in [1, 3, 5] {
            assert_eq!(
                s.all_events(Value::Null, first).await,
                all,
                "first = {first}"
            );
        }
        // Positions strictly increase in the log's order.
        let positions: Vec<(i64, i64)> = all
            .iter()
            .map(|n| {
                let (tx, pos) = n["position"].as_str().unwrap().split_once('.').unwrap();
                (tx.parse().unwrap(), pos.parse().unwrap())
            })
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");

        let factor_of = |user: &str| {
            if user == a.alice {
                &a.alice_factor
            } else {
                &a.bob_factor
            }
        };
        let mid = time_of(&all[6]);
        let late = time_of(&all[11]);
        let cases: Vec<(Value, Keep)> = vec![
            (
                json!({ "aggregateType": "Factor" }),
                Box::new(|n: &Value| n["aggregateType"] == "Factor"),
            ),
            (
                json!({ "aggregateId": a.alice_factor }),
                Box::new(|n: &Value| n["aggregateId"] == a.alice_factor.as_str()),
            ),
            (
                json!({ "userId": a.alice }),
                Box::new(|n: &Value| {
                    n["aggregateId"] == a.alice.as_str()
                        || n["aggregateId"] == factor_of(&a.alice).as_str()
                }),
            ),
            (
                json!({ "userId": a.bob, "aggregateType": "Factor" }),
                Box::new(|n: &Value| n["aggregateId"] == a.bob_factor.as_str()),
            ),
            (
                json!({ "eventTypes": ["FailedAttempt", "LockedOut"] }),
                Box::new(|n: &Value| {
                    n["eventType"] == "FailedAttempt" || n["eventType"] == "LockedOut"
                }),
            ),
            (
                json!({ "userId": a.alice, "eventTypes": ["FailedAttempt"] }),
                Box::new(|n: &Value| {
                    n["eventType"] == "FailedAttempt"
                        && (n["aggregateId"] == a.alice_factor.as_str()
                            || n["aggregateId"] == a.alice.as_str())
                }),
            ),
            (json!({ "eventTypes": [] }), Box::new(|_: &Value| false)),
            (
                json!({ "from": all[6]["recordedAt"] }),
                Box::new(move |n: &Value| time_of(n) >= mid),
            ),
            (
                json!({ "to": all[11]["recordedAt"] }),
                Box::new(move |n: &Value| time_of(n) < late),
            ),
            (
                json!({ "from": all[6]["recordedAt"], "to": all[11]["recordedAt"], "aggregateType": "User" }),
                Box::new(move |n: &Value| {
                    time_of(n) >= mid && time_of(n) < late && n["aggregateType"] == "User"
                }),
            ),
            (
                json!({ "aggregateId": "no-such-stream" }),
                Box::new(|_: &Value| false),
            ),
        ];
        for (filter, keep) in &cases {
            let expected: Vec<Value> = all.iter().filter(|n| keep(n)).cloned().collect();
            for first in [2, 50] {
                let got = s.all_events(filter.clone(), first).await;
                assert_eq!(got, expected, "filter {filter} first {first}");
            }
        }
        // The user filter is not vacuous: Alice's stream and her factor's are both in.
        let alice_only = s.all_events(json!({ "userId": a.alice }), 50).await;
        assert_eq!(alice_only[0]["eventType"], "Registered");
        assert!(
            alice_only
                .iter()
                .any(|e| e["aggregateType"] == "User" && e["sequence"] == 1)
        );
        assert_eq!(
            alice_only
                .iter()
                .filter(|e| e["aggregateType"] == "Factor")
                .count(),
            7
        );
    }
);

both_stores!(
    failures_say_why_and_link_to_their_cause,
    |store| async move {
        let s = locked_server(store).await;
        let a = activity(&s).await;
        s.settled_events().await;
        let events = s
            .all_events(json!({ "aggregateId": a.alice_factor }), 50)
            .await;
        let types: Vec<&str> = events
            .iter()
            .map(|n| n["eventType"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            [
                "Enrolled",
                "Activated",
                "FailedAttempt",
                "FailedAttempt",
                "FailedAttempt",
                "LockedOut",
                "FailedAttempt"
            ]
        );
        let reasons: Vec<&Value> = events[2..]
            .iter()
            .filter(|n| n["eventType"] == "FailedAttempt")
            .map(|n| &n["payload"]["FailedAttempt"]["reason"])
            .collect();
        assert_eq!(
            reasons,
            [
                &json!("WRONG_CODE"),
                &json!("WRONG_CODE"),
                &json!("WRONG_CODE"),
                &json!("LOCKED")
            ]
        );
        assert_eq!(events[4]["payload"]["FailedAttempt"]["counted"], true);
        assert_eq!(events[6]["payload"]["FailedAttempt"]["counted"], false);
        assert_eq!(events[4]["eventVersion"], "2.0");
        // The third wrong code and the lockout it caused: one command, one causation id.
        let (third, lock) = (&events[4]["metadata"], &events[5]["metadata"]);
        assert_eq!(third["causation_id"], lock["causation_id"]);
        assert_eq!(third["command"], "Verify");
        assert_eq!(events[5]["payload"]["LockedOut"]["consecutive_failures"], 3);
        // Different commands, different causation ids.
        assert_ne!(events[3]["metadata"]["causation_id"], third["causation_id"]);
        for m in [third, lock] {
            assert_eq!(m["actor"], "api-key:bootstrap");
            assert_eq!(m["client_ip"], "127.0.0.1");
            assert!(m["request_id"].as_str().is_some_and(|r| !r.is_empty()));
            assert_eq!(m["correlation_id"], m["request_id"], "{m}");
            assert_eq!(m.get("client_request_id"), None, "{m}");
            assert_eq!(m.get("client_supplied"), None, "{m}");
        }

        // A caller's correlation id ties several requests (a login flow) together.
        let r = s
        .gql_with(
            Some(tessera_tests::ADMIN_KEY),
            &[("x-correlation-id", "login-flow-42"), ("x-request-id", "req-1"), ("user-agent", "audit-test/1.0")],
            "mutation($f: ID!, $c: String!) { verifyFactor(input: {factorId: $f, passCode: $c}) { factorResult } }",
            json!({ "f": a.bob_factor, "c": s.wrong_code(&a.bob_secret) }),
        )
        .await;
        assert!(r.get("errors").is_none(), "{r}");
        let found = s
            .eventually(|| async {
                s.all_events(
                    json!({ "aggregateId": a.bob_factor, "eventTypes": ["FailedAttempt"] }),
                    10,
                )
                .await
                .len()
                    == 1
            })
            .await;
        assert!(found);
        let failed = s
            .all_events(
                json!({ "aggregateId": a.bob_factor, "eventTypes": ["FailedAttempt"] }),
                10,
            )
            .await;
        let m = &failed[0]["metadata"];
        assert_eq!(m["correlation_id"], "login-flow-42");
        assert_eq!(m["user_agent"], "audit-test/1.0");
        // What the client said is kept, marked as the client's; the request id on record is
        // always the server's own (L10).
        assert_eq!(m["client_request_id"], "req-1", "{m}");
        assert_eq!(
            m["client_supplied"], "client_request_id,correlation_id,user_agent",
            "{m}"
        );
        let own = m["request_id"].as_str().unwrap_or_default();
        assert!(
            uuid::Uuid::parse_str(own).is_ok(),
            "the server's own id: {m}"
        );
        let _ = a.alice_secret;
    }
);

both_stores!(no_secret_leaves_in_any_page, |store| async move {
    let s = locked_server(store).await;
    let a = activity(&s).await;
    let log = s.quiesce().await;
    // What is sealed at rest, read straight from the table.
    let (enrolled, password_set) = stored_secrets(&s, &a.alice_factor).await;
    let sealed = &enrolled["Enrolled"]["totp"]["secret"];
    let ciphertext = sealed["ciphertext"].as_str().unwrap().to_string();
    let nonce = sealed["nonce"].as_str().unwrap().to_string();
    let hash = password_set["PasswordSet"]["password_hash"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(ciphertext.len() > 20 && nonce.len() > 10 && hash.starts_with("$argon2id$"));
    let forbidden = [
        ciphertext.as_str(),
        nonce.as_str(),
        hash.as_str(),
        a.alice_secret.as_str(),
        "correct horse battery",
        // Any argon2id hash at all (passwords, recovery codes).
        "$argon2id$",
    ];
    // Every page, one event at a time, as raw response text.
    let mut after = Value::Null;
    let mut pages = 0;
    loop {
        let response = s
            .gql(
                "query($a: String) { events(first: 1, after: $a) { edges { node { payload metadata } }
                                       pageInfo { hasNextPage endCursor } } }",
                json!({ "a": after }),
            )
            .await;
        let text = response.to_string();
        for secret in forbidden {
            assert!(
                !text.contains(secret),
                "page {pages} leaks a secret: {text}"
            );
        }
        pages += 1;
        let info = &response["data"]["events"]["pageInfo"];
        if info["hasNextPage"] != true {
            break;
        }
        after = info["endCursor"].clone();
    }
    assert_eq!(pages, log.len());
    let enrolled = s
        .all_events(
            json!({ "eventTypes": ["Enrolled"], "aggregateId": a.alice_factor }),
            1,
        )
        .await;
    let shown = &enrolled[0]["payload"]["Enrolled"]["totp"];
    assert_eq!(shown["secret"], "[REDACTED]");
    assert_eq!(shown["params"]["digits"], 6, "the rest stays: {shown}");
    let set = s
        .all_events(json!({ "eventTypes": ["PasswordSet"] }), 1)
        .await;
    assert_eq!(
        set[0]["payload"]["PasswordSet"]["password_hash"],
        "[REDACTED]"
    );
});

/// The stored payloads of Alice's `Enrolled` and Carol's `PasswordSet`.
async fn stored_secrets(s: &TestServer, factor: &str) -> (Value, Value) {
    let carol = tessera_domain::ids::UserId::for_login("carol").to_string();
    let db = &s.server().state.db;
    let sql = format!(
        "SELECT {} FROM events WHERE aggregate_id = $1 AND sequence = $2",
        db.dialect.json_text("payload")
    );
    let stored = async |id: &str, sequence: i64| -> String {
        sqlx::query_scalar(&sql)
            .bind(id)
            .bind(sequence)
            .fetch_one(&db.pool)
            .await
            .unwrap()
    };
    let (e, p) = (stored(factor, 1).await, stored(&carol, 2).await);
    (
        serde_json::from_str(&e).unwrap(),
        serde_json::from_str(&p).unwrap(),
    )
}

both_stores!(
    events_are_for_admins_and_check_their_input,
    |store| async move {
        let s = TestServer::start(store).await;
        s.create_user("alice").await;
        let query = "query($f: EventFilter, $a: String) { events(filter: $f, after: $a) { edges { cursor } } }";
        let anonymous = s.gql_as(None, query, json!({})).await;
        assert_eq!(error_code(&anonymous), "UNAUTHENTICATED");
        let wrong_key = s.gql_as(Some("tsk_nope"), query, json!({})).await;
        assert_eq!(error_code(&wrong_key), "UNAUTHENTICATED");
        let bad_cursor = s.gql(query, json!({ "a": "not-a-position" })).await;
        assert_eq!(error_code(&bad_cursor), "BAD_USER_INPUT");
        assert_eq!(error_reason(&bad_cursor), "INVALID_CURSOR");
        let backwards = s
            .gql(
                query,
                json!({ "f": { "from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z" } }),
            )
            .await;
        assert_eq!(error_reason(&backwards), "INVALID_TIME_RANGE");
        let huge = s
            .gql(query, json!({ "f": { "aggregateType": "x".repeat(300) } }))
            .await;
        assert_eq!(error_reason(&huge), "INVALID_FILTER");
        let negative = s
            .gql("{ events(first: -1) { edges { cursor } } }", json!({}))
            .await;
        assert_eq!(error_code(&negative), "BAD_USER_INPUT");
    }
);

both_stores!(as_of_answers_match_the_history, |store| async move {
    let s = locked_server(store).await;
    let before_anything = Utc::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let user = s.create_user("alice").await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let (factor, secret) = s.enroll_totp(&user).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(
        s.activate(&factor, &s.code(&secret, 0)).await["factorResult"],
        "SUCCESS"
    );
    s.clock.advance(chrono::TimeDelta::seconds(30));
    let wrong = s.wrong_code(&secret);
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(s.verify(&factor, &wrong).await, "REJECTED");
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    let all = s.quiesce().await;
    // The factor's own history, and the user's registration.
    let fe: Vec<&Value> = all
        .iter()
        .filter(|n| n["aggregateId"] == factor.as_str())
        .collect();
    let registered = all
        .iter()
        .find(|n| n["aggregateId"] == user.as_str() && n["sequence"] == 1)
        .unwrap();
    let types: Vec<&str> = fe
        .iter()
        .map(|n| n["eventType"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "Enrolled",
            "Activated",
            "FailedAttempt",
            "FailedAttempt",
            "FailedAttempt",
            "LockedOut"
        ]
    );
    let at = |i: usize| {
        if i == 0 {
            registered["recordedAt"].clone()
        } else {
            fe[i - 1]["recordedAt"].clone()
        }
    };

    let query = "query($u: ID!, $f: ID!, $t: DateTime) {
        user(id: $u, asOf: $t) { login factors { id status failedAttempts } }
        factor(id: $f, asOf: $t) { id status failedAttempts lastVerifiedAt } }";
    let read = |t: Value| {
        let s = &s;
        let (user, factor) = (user.clone(), factor.clone());
        async move { s.ok(query, json!({ "u": user, "f": factor, "t": t })).await }
    };

    let r = read(json!(before_anything.to_rfc3339())).await;
    assert_eq!(r["user"], Value::Null);
    assert_eq!(r["factor"], Value::Null);

    let r = read(at(0)).await;
    assert_eq!(r["user"]["login"], "alice");
    assert_eq!(r["user"]["factors"], json!([]));
    assert_eq!(r["factor"], Value::Null);

    let r = read(at(1)).await;
    assert_eq!(r["factor"]["status"], "PENDING_ACTIVATION");
    assert_eq!(r["factor"]["lastVerifiedAt"], Value::Null);
    assert_eq!(r["user"]["factors"][0]["status"], "PENDING_ACTIVATION");

    let r = read(at(2)).await;
    assert_eq!(r["factor"]["status"], "ACTIVE");
    assert_eq!(r["factor"]["failedAttempts"], 0);
    assert!(r["factor"]["lastVerifiedAt"].is_string());

    let r = read(at(4)).await;
    assert_eq!(r["factor"]["status"], "ACTIVE");
    assert_eq!(r["factor"]["failedAttempts"], 2);
    assert_eq!(r["user"]["factors"][0]["failedAttempts"], 2);

    let r = read(at(6)).await;
    assert_eq!(r["factor"]["status"], "LOCKED_OUT");
    assert_eq!(r["factor"]["failedAttempts"], 3);

    // Now, folded from the log, equals the read model.
    let folded = read(json!(Utc::now().to_rfc3339())).await;
    let live = read(Value::Null).await;
    assert_eq!(folded["factor"], live["factor"]);
    assert_eq!(folded["user"], live["user"]);
});

both_stores!(
    a_page_never_passes_an_open_transaction,
    |store| async move {
        let s = TestServer::start(store).await;
        s.create_user("first").await;
        s.settled_events().await;
        let state = &s.server().state;
        if state.db.dialect != Dialect::Postgres {
            // SQLite serialises writers (see projections.rs): what commits is already in order.
            s.create_user("second").await;
            let all = s.settled_events().await;
            assert_eq!(all.len(), 2);
            return;
        }
        let pg = &state.db.pool;
        // C writes, A writes, C writes again and commits while A stays open: C's second
        // position is above A's. A page that ended at C's second event with a position-only
        // cursor would never show A's event.
        let mut c = pg.begin().await.unwrap();
        insert_registered(&mut c, "c1").await;
        let mut a = pg.begin().await.unwrap();
        insert_registered(&mut a, "a1").await;
        insert_registered(&mut c, "c2").await;
        c.commit().await.unwrap();

        // C's events show once every transaction older than C has ended (xmin is
        // cluster-wide, so another test's transaction can hold them back briefly); A's
        // never shows while A is open.
        let mut page = Vec::new();
        for _ in 0..100 {
            page = s.all_events(Value::Null, 50).await;
            if page.len() >= 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let logins: Vec<&str> = page
            .iter()
            .map(|n| n["payload"]["Registered"]["login"].as_str().unwrap())
            .collect();
        assert_eq!(logins, ["first", "c1", "c2"]);
        let end = page.last().unwrap()["position"].clone();
        a.commit().await.unwrap();
        let mut next = Vec::new();
        for _ in 0..100 {
            next = s
                .ok(
                    "query($a: String) { events(after: $a) { edges { node { payload } } } }",
                    json!({ "a": end }),
                )
                .await["events"]["edges"]
                .as_array()
                .unwrap()
                .clone();
            if !next.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            next.len(),
            1,
            "the event committed late comes after the cursor"
        );
        assert_eq!(next[0]["node"]["payload"]["Registered"]["login"], "a1");
    }
);

/// Appends a `Registered` event inside `conn`'s transaction, as another node would.
async fn insert_registered(conn: &mut sqlx::AnyConnection, login: &str) {
    let id = tessera_domain::ids::UserId::for_login(login).to_string();
    let payload = json!({ "Registered": { "login": login, "email": null, "phone_number": null,
                                          "display_name": null, "at": "2026-01-01T00:00:00Z" } });
    tessera_tests::raw::append_one(
        conn,
        Dialect::Postgres,
        ("User", &id, 1),
        "Registered",
        payload,
    )
    .await;
}
