//! `me { activity }`: a user's own security activity from the event log, newest first, in
//! plain words with the IP address and user agent of each request, redacted; user tokens see
//! only their own user's, admins and `read:audit` keys any user's through `user(id)`.

use serde_json::{Value, json};
use tessera_tests::{TestServer, both_stores, error_code};

const PASSWORD: &str = "correct horse battery staple";
const AGENT: &str = "activity-test/1.0 (X11; Linux x86_64)";

const ENTRY: &str = "position at eventType aggregateType kind result reason detail \
                     factorId factorType factorLabel ipAddress userAgent";

fn me_activity(first: i64) -> String {
    format!(
        "query($a: String) {{ me {{ id activity(first: {first}, after: $a) {{ totalCount \
         pageInfo {{ hasNextPage endCursor }} edges {{ cursor node {{ {ENTRY} }} }} }} }} }}"
    )
}

/// Every entry of the caller's `me { activity }`, paging `first` at a time.
async fn my_activity(s: &TestServer, token: &str, first: i64) -> (i64, Vec<Value>) {
    let mut out = Vec::new();
    let mut after = Value::Null;
    loop {
        let r = s
            .gql_as(Some(token), &me_activity(first), json!({ "a": after }))
            .await;
        assert!(r["errors"].is_null(), "{r}");
        let page = &r["data"]["me"]["activity"];
        let total = page["totalCount"].as_i64().unwrap();
        for edge in page["edges"].as_array().unwrap() {
            assert_eq!(edge["cursor"], edge["node"]["position"], "{edge}");
            out.push(edge["node"].clone());
        }
        if page["pageInfo"]["hasNextPage"] != true {
            return (total, out);
        }
        after = page["pageInfo"]["endCursor"].clone();
    }
}

fn position(node: &Value) -> (i64, i64) {
    let (tx, pos) = node["position"].as_str().unwrap().split_once('.').unwrap();
    (tx.parse().unwrap(), pos.parse().unwrap())
}

/// A user with a password and an active TOTP factor labelled "Phone app", and a token from a
/// login with it: (user, factor, secret, token).
async fn alice(s: &TestServer) -> (String, String, String, String) {
    let user = s.create_full_user("alice", PASSWORD).await;
    let data = s
        .ok(
            "mutation($u: ID!) { enrollFactor(input: {userId: $u, type: TOTP, label: \"Phone app\"}) { factor { id } totp { secretBase32 } } }",
            json!({ "u": user }),
        )
        .await;
    let factor = data["enrollFactor"]["factor"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let secret = data["enrollFactor"]["totp"]["secretBase32"]
        .as_str()
        .unwrap()
        .to_string();
    let r = s.activate(&factor, &s.code(&secret, 0)).await;
    assert_eq!(r["factorResult"], "SUCCESS", "{r}");
    let token = s.mfa_token("alice", PASSWORD, &factor, &secret).await;
    (user, factor, secret, token)
}

both_stores!(
    failed_proofs_lockouts_new_factors_and_alerts_appear_with_ip_and_user_agent,
    |store| async move {
        let s = TestServer::start(store).await;
        let (user, factor, secret, token) = alice(&s).await;
        // Five wrong codes from a browser: five failures, the factor locks, alerts follow.
        let wrong = s.wrong_code(&secret);
        for _ in 0..5 {
            let r = s
                .gql_with(
                    Some(&token),
                    &[("user-agent", AGENT)],
                    "mutation($f: ID!, $c: String!) { verifyFactor(input: {factorId: $f, passCode: $c}) { factorResult } }",
                    json!({ "f": factor, "c": wrong }),
                )
                .await;
            assert!(r["errors"].is_null(), "{r}");
        }
        s.quiesce().await;

        let (total, entries) = my_activity(&s, &token, 4).await;
        assert_eq!(total, i64::try_from(entries.len()).unwrap(), "{entries:?}");
        // Newest first, and each entry once.
        let positions: Vec<_> = entries.iter().map(position).collect();
        let mut sorted = positions.clone();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        sorted.dedup();
        assert_eq!(positions, sorted);

        let of = |event_type: &str, aggregate_type: &str| -> Vec<&Value> {
            entries
                .iter()
                .filter(|e| e["eventType"] == event_type && e["aggregateType"] == aggregate_type)
                .collect()
        };
        let failures = of("FailedAttempt", "Factor");
        assert_eq!(failures.len(), 5, "{entries:#?}");
        for f in &failures {
            assert_eq!(f["kind"], "Failed verification");
            assert_eq!(f["result"], "FAILURE");
            assert_eq!(f["reason"], "WRONG_CODE");
            assert_eq!(f["factorId"], factor.as_str());
            assert_eq!(f["factorType"], "TOTP");
            assert_eq!(f["factorLabel"], "Phone app");
            assert_eq!(f["ipAddress"], "127.0.0.1");
            assert_eq!(f["userAgent"], AGENT);
        }
        // The user stream's echo of each factor failure is not shown twice.
        assert!(of("FailedAttempt", "User").is_empty(), "{entries:#?}");
        let locked = of("LockedOut", "Factor");
        assert_eq!(locked.len(), 1, "{entries:#?}");
        assert_eq!(locked[0]["result"], "FAILURE");
        assert_eq!(locked[0]["userAgent"], AGENT);
        let added = of("Activated", "Factor");
        assert_eq!(added.len(), 1, "{entries:#?}");
        assert_eq!(added[0]["kind"], "Factor added");
        assert_eq!(added[0]["result"], "CHANGE");
        assert_eq!(
            of("RecoveryCodesGenerated", "User").len(),
            1,
            "{entries:#?}"
        );
        assert_eq!(
            of("Verified", "Factor").len(),
            1,
            "the login's proof: {entries:#?}"
        );
        let alerts = of("SecurityAlertRaised", "Alert");
        let kinds: Vec<&str> = alerts
            .iter()
            .map(|a| a["reason"].as_str().unwrap())
            .collect();
        for kind in ["FACTOR_ADDED", "REPEATED_FAILURES", "FACTOR_LOCKED"] {
            assert!(kinds.contains(&kind), "{kind} not in {kinds:?}");
        }
        assert!(
            alerts
                .iter()
                .all(|a| a["result"] == "ALERT" && a["detail"].is_string())
        );
        // The lock is newer than every failure.
        assert!(position(locked[0]) > position(failures[0]));

        // Nothing secret, not even redacted, and no ceremony step.
        let text = serde_json::to_string(&entries).unwrap();
        assert!(!text.contains(&secret) && !text.contains(&wrong), "{text}");
        assert!(!text.contains("REDACTED"), "{text}");
        assert!(!text.contains("CodeIssued") && !text.contains("\"Issued\""));

        // The same through `user(id)` with the admin key, which has no `me`.
        let r = s
            .ok(
                "query($u: ID!) { me { id } user(id: $u) { activity(first: 100) { totalCount edges { node { position } } } } }",
                json!({ "u": user }),
            )
            .await;
        assert!(r["me"].is_null(), "{r}");
        assert_eq!(r["user"]["activity"]["totalCount"], total);
        let admin_positions: Vec<_> = r["user"]["activity"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| position(&e["node"]))
            .collect();
        assert_eq!(admin_positions, positions);

        // A cursor that is not one.
        let r = s
            .gql_as(Some(&token), &me_activity(5), json!({ "a": "nope" }))
            .await;
        assert_eq!(error_code(&r), "BAD_USER_INPUT", "{r}");
    }
);

both_stores!(
    a_user_token_never_sees_another_users_activity,
    |store| async move {
        let s = TestServer::start(store).await;
        let (alice_id, factor, secret, _) = alice(&s).await;
        let bob = s.create_full_user("bob", PASSWORD).await;
        let bob_token = s.password_token("bob", PASSWORD).await;
        // Alice fails a proof and gets an alert; Bob does nothing.
        for _ in 0..3 {
            s.verify(&factor, &s.wrong_code(&secret)).await;
        }
        s.quiesce().await;

        let r = s
            .gql_as(
                Some(&bob_token),
                "query($u: ID!) { user(id: $u) { activity { totalCount } } }",
                json!({ "u": alice_id }),
            )
            .await;
        assert_eq!(error_code(&r), "FORBIDDEN", "{r}");
        assert!(r["data"]["user"].is_null(), "{r}");

        let (total, entries) = my_activity(&s, &bob_token, 50).await;
        assert_eq!(total, i64::try_from(entries.len()).unwrap());
        let text = serde_json::to_string(&entries).unwrap();
        assert!(
            !text.contains(&factor) && !text.contains(&alice_id),
            "{text}"
        );
        assert!(
            entries
                .iter()
                .all(|e| e["aggregateType"] == "User" && e["result"] != "FAILURE"),
            "{entries:#?}"
        );
        assert!(
            entries.iter().any(|e| e["eventType"] == "Registered"),
            "{entries:#?}"
        );
        let r = s.gql_as(Some(&bob_token), "{ me { id } }", json!({})).await;
        assert_eq!(r["data"]["me"]["id"], bob.as_str());

        // Without a token there is no `me` to read.
        let r = s.gql_as(None, &me_activity(5), json!({})).await;
        assert!(r["data"]["me"].is_null(), "{r}");
        assert!(!r.to_string().contains("FailedAttempt"), "{r}");
    }
);
