//! The security-alert reactor: rules, signed webhooks with retries, subscriptions from any
//! node, and exactly one alert per incident across restarts.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tessera_tests::{
    ADMIN_KEY, TestServer, WsClient, both_stores, error_code, error_reason,
    webhook_sink::{HttpSink, Received},
};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn with_webhook(sink: &HttpSink) -> impl FnOnce(&mut tessera_api::Config) + use<> {
    let url = sink.url("/hook");
    move |c| {
        c.alert_webhook_url = Some(url);
        c.alert_webhook_secret = Some(SECRET.into());
    }
}

/// Checks the Standard Webhooks signature independently of the server's code.
fn assert_signed(r: &Received) {
    let id = r.header("webhook-id").expect("webhook-id");
    let timestamp = r.header("webhook-timestamp").expect("webhook-timestamp");
    let signature = r.header("webhook-signature").expect("webhook-signature");
    let key = B64.decode(SECRET.strip_prefix("whsec_").unwrap()).unwrap();
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.{}", r.text()).as_bytes());
    let expected = format!("v1,{}", B64.encode(mac.finalize().into_bytes()));
    assert_eq!(signature, expected, "bad signature");
    assert_eq!(r.json()["data"]["id"], id, "webhook-id is the alert id");
}

/// Factor changes raise alerts of their own kinds (tested in `reauth.rs`); these tests are
/// about incidents, so they wait for their factor's `FACTOR_ADDED` and leave such kinds out.
const FACTOR_CHANGES: [&str; 4] = [
    "FACTOR_ADDED",
    "FACTOR_REMOVED",
    "RECOVERY_CODES_REGENERATED",
    "DEVICE_TRUSTED",
];

fn is_incident(kind: &Value) -> bool {
    !FACTOR_CHANGES.iter().any(|k| kind == k)
}

/// The incident alerts of `user`.
async fn alerts(s: &TestServer, user: &str) -> Vec<Value> {
    all_alerts(s, user)
        .await
        .into_iter()
        .filter(|a| is_incident(&a["kind"]))
        .collect()
}

/// Webhook requests of incident alerts.
fn incidents(sink: &HttpSink) -> Vec<Received> {
    sink.requests()
        .into_iter()
        .filter(|r| is_incident(&r.json()["data"]["kind"]))
        .collect()
}

async fn wait_incidents(sink: &HttpSink, n: usize, timeout: Duration) -> Vec<Received> {
    let deadline = std::time::Instant::now() + timeout;
    while incidents(sink).len() < n && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    incidents(sink)
}

/// A user with an active TOTP factor whose `FACTOR_ADDED` alert is raised.
async fn active_totp(s: &TestServer, login: &str) -> (String, String, String) {
    let (user, factor, secret) = s.active_totp(login).await;
    for _ in 0..100 {
        if all_alerts(s, &user)
            .await
            .iter()
            .any(|a| a["kind"] == "FACTOR_ADDED")
        {
            return (user, factor, secret);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no FACTOR_ADDED alert for {login}");
}

async fn all_alerts(s: &TestServer, user: &str) -> Vec<Value> {
    s.ok(
        "query($u: ID) { securityAlerts(userId: $u) { edges { node { id kind reason userId acknowledgedAt seenByUserAt causedBy } } } }",
        json!({ "u": user }),
    )
    .await["securityAlerts"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"].clone())
        .collect()
}

async fn wait_alerts(s: &TestServer, user: &str, n: usize) -> Vec<Value> {
    for _ in 0..100 {
        let got = alerts(s, user).await;
        if got.len() >= n {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    alerts(s, user).await
}

both_stores!(three_failures_raise_one_signed_alert, |store| async move {
    let sink = HttpSink::start().await;
    let s = TestServer::start_with(store, with_webhook(&sink)).await;
    let (user, factor, _) = active_totp(&s, "alice").await;
    for _ in 0..2 {
        assert_eq!(s.verify(&factor, "000000").await, "REJECTED");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        alerts(&s, &user).await.is_empty(),
        "two failures are not an incident"
    );
    assert_eq!(s.verify(&factor, "000000").await, "REJECTED");
    let raised = wait_alerts(&s, &user, 1).await;
    assert_eq!(raised.len(), 1);
    assert_eq!(raised[0]["kind"], "REPEATED_FAILURES");
    assert_eq!(
        raised[0]["causedBy"].as_array().unwrap().len(),
        3,
        "links the three failures"
    );
    assert_eq!(raised[0]["causedBy"][2]["event_type"], "FailedAttempt");

    let got = wait_incidents(&sink, 1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1, "delivered within a second or so");
    assert_signed(&got[0]);
    assert_eq!(got[0].json()["data"]["kind"], "REPEATED_FAILURES");
    assert_eq!(got[0].json()["data"]["userId"], user.as_str());

    // A fourth failure in the same window is the same incident.
    assert_eq!(s.verify(&factor, "000000").await, "REJECTED");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(alerts(&s, &user).await.len(), 1);
    assert_eq!(incidents(&sink).len(), 1);

    let id = raised[0]["id"].as_str().unwrap();
    let ack = s
        .ok(
            "mutation($i: ID!) { acknowledgeSecurityAlert(id: $i) { acknowledgedAt } }",
            json!({ "i": id }),
        )
        .await;
    assert!(ack["acknowledgeSecurityAlert"]["acknowledgedAt"].is_string());
    let again = s
        .gql(
            "mutation($i: ID!) { acknowledgeSecurityAlert(id: $i) { id } }",
            json!({ "i": id }),
        )
        .await;
    assert_eq!(error_code(&again), "CONFLICT");
    let listed = wait_alerts(&s, &user, 1).await;
    assert!(
        listed[0]["acknowledgedAt"].is_string() || {
            tokio::time::sleep(Duration::from_millis(300)).await;
            alerts(&s, &user).await[0]["acknowledgedAt"].is_string()
        }
    );
});

both_stores!(
    lockouts_and_recovery_codes_raise_alerts,
    |store| async move {
        let s = TestServer::start_with(store, |c| c.alert_threshold = 100).await;
        let user = s.create_user("bob").await;
        let (factor, secret) = s.enroll_totp(&user).await;
        let codes = s.activate(&factor, &s.code(&secret, 0)).await["recoveryCodes"].clone();
        for _ in 0..5 {
            assert_eq!(s.verify(&factor, "000000").await, "REJECTED");
        }
        let raised = wait_alerts(&s, &user, 1).await;
        assert_eq!(raised.len(), 1);
        assert_eq!(raised[0]["kind"], "FACTOR_LOCKED");
        let r = s
        .ok(
            "mutation($u: ID!, $c: String!) { useRecoveryCode(input: {userId: $u, code: $c}) { factorResult } }",
            json!({ "u": user, "c": codes[0] }),
        )
        .await;
        assert_eq!(r["useRecoveryCode"]["factorResult"], "SUCCESS");
        let raised = wait_alerts(&s, &user, 2).await;
        // Both were raised at the same (frozen) instant: the connection orders them by id then.
        let mut kinds: Vec<_> = raised.iter().map(|a| a["kind"].as_str().unwrap()).collect();
        kinds.sort_unstable();
        assert_eq!(kinds, ["FACTOR_LOCKED", "RECOVERY_CODE_USED"]);
    }
);

both_stores!(
    failed_webhook_deliveries_are_retried_with_a_stable_id,
    |store| async move {
        let sink = HttpSink::start().await;
        let s = TestServer::start_with(store, with_webhook(&sink)).await;
        let (user, factor, _) = active_totp(&s, "carol").await;
        // The factor's own alert is delivered first, then the incident's deliveries fail twice.
        assert_eq!(
            sink.wait_for_requests(1, Duration::from_secs(5))
                .await
                .len(),
            1
        );
        sink.fail_next(2, 500);
        for _ in 0..3 {
            s.verify(&factor, "000000").await;
        }
        let got = wait_incidents(&sink, 3, Duration::from_secs(15)).await;
        assert_eq!(got.len(), 3, "two failures then a success: {got:?}");
        let ids: Vec<_> = got
            .iter()
            .map(|r| r.header("webhook-id").unwrap().to_string())
            .collect();
        assert!(
            ids.iter().all(|i| *i == ids[0]),
            "one alert, one id: {ids:?}"
        );
        for r in &got {
            assert_signed(r);
        }
        // The sink has the third request before the deliverer has recorded its answer: wait
        // (bounded) for that record.
        let deliverer = &s.server().state.deliverer;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut status = deliverer.status(&ids[0], "webhook").await.unwrap();
        while status != Some((3, true)) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            status = deliverer.status(&ids[0], "webhook").await.unwrap();
        }
        assert_eq!(status, Some((3, true)));
        assert_eq!(wait_alerts(&s, &user, 1).await.len(), 1);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            incidents(&sink).len(),
            3,
            "nothing after the successful delivery"
        );
    }
);

both_stores!(
    a_restart_between_failure_and_alert_gives_exactly_one_alert,
    |store| async move {
        let sink = HttpSink::start().await;
        let mut s = TestServer::start_with(store, with_webhook(&sink)).await;
        let (user, factor, _) = active_totp(&s, "dave").await;
        for _ in 0..3 {
            s.verify(&factor, "000000").await;
        }
        // Stop at once: the alert may or may not have been raised yet.
        s.stop().await;
        s.restart().await;
        assert_eq!(wait_alerts(&s, &user, 1).await.len(), 1);
        // Even a reactor that lost its checkpoint and reads everything again raises nothing new:
        // the alert id is derived from its trigger and the log's key refuses a second one.
        s.stop().await;
        let url = s.config.database_url.clone();
        let pool = sqlx::AnyPool::connect(&url).await.ok();
        if let Some(pool) = pool {
            sqlx::query("UPDATE projection_checkpoints SET tx_id = 0, position = 0 WHERE name = 'alert_reactor_v1'")
            .execute(&pool)
            .await
            .unwrap();
            pool.close().await;
        }
        s.restart().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(alerts(&s, &user).await.len(), 1);
        let raised_events = s
            .events_of(alerts(&s, &user).await[0]["id"].as_str().unwrap())
            .await;
        assert_eq!(raised_events.len(), 1);
        assert_eq!(raised_events[0].0, "SecurityAlertRaised");
        let got = wait_incidents(&sink, 2, Duration::from_secs(2)).await;
        assert_eq!(got.len(), 1, "delivered once");
    }
);

both_stores!(
    subscribers_on_another_node_receive_the_alert,
    |store| async move {
        let a = TestServer::start(store).await;
        let b = a.another_node().await;
        let (user, factor, _) = active_totp(&a, "erin").await;
        let query = "subscription($u: ID) { securityAlerts(userId: $u) { id kind userId } }";
        assert!(
            WsClient::connect(&b.ws_url(), Some("wrong-token"))
                .await
                .is_err(),
            "connection_init without a valid token is refused"
        );
        let mut subscription = WsClient::connect(&b.ws_url(), Some(ADMIN_KEY))
            .await
            .expect("connected");
        subscription
            .subscribe("1", query, json!({ "u": user }))
            .await;
        // Give the subscription a moment to be registered before the incident.
        tokio::time::sleep(Duration::from_millis(200)).await;
        for _ in 0..3 {
            assert_eq!(a.verify(&factor, "000000").await, "REJECTED");
        }
        let alert = subscription
            .take("1", "securityAlerts", 1, Duration::from_secs(5))
            .await;
        assert_eq!(alert[0]["kind"], "REPEATED_FAILURES");
        assert_eq!(alert[0]["userId"], user.as_str());
        // Both nodes run a reactor; the incident was still raised once.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(alerts(&a, &user).await.len(), 1);
        assert_eq!(
            subscription.recv(Duration::from_millis(300)).await,
            None,
            "no second alert"
        );
    }
);

both_stores!(the_user_gets_the_alert_by_e_mail, |store| async move {
    let smtp = tessera_tests::smtp_sink::SmtpSink::start().await;
    let url = smtp.url();
    let s = TestServer::start_with(store, move |c| c.smtp_url = Some(url)).await;
    let (user, factor, _) = active_totp(&s, "frank").await;
    for _ in 0..3 {
        assert_eq!(s.verify(&factor, "000000").await, "REJECTED");
    }
    let raised = wait_alerts(&s, &user, 1).await;
    let incident_mails = || {
        smtp.messages_to("x@example.com")
            .into_iter()
            .filter(|m| {
                !m.header("Subject")
                    .unwrap_or_default()
                    .contains("FACTOR_ADDED")
            })
            .collect::<Vec<_>>()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while incident_mails().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mails = incident_mails();
    assert_eq!(mails.len(), 1, "one mail per alert");
    let subject = mails[0].header("Subject").unwrap_or_default();
    assert!(subject.contains("REPEATED_FAILURES"), "{subject}");
    assert!(
        mails[0].body().contains(raised[0]["id"].as_str().unwrap()),
        "{}",
        mails[0].body()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(incident_mails().len(), 1, "delivered once");
    assert_eq!(
        smtp.messages_to("x@example.com").len(),
        2,
        "and one for the factor added"
    );
});

both_stores!(only_admins_acknowledge_alerts, |store| async move {
    let s = TestServer::start(store).await;
    let user = s.create_full_user("gina", "correct horse battery").await;
    let (factor, secret) = s.enroll_totp(&user).await;
    s.activate(&factor, &s.code(&secret, 0)).await;
    let token = s
        .mfa_token("gina", "correct horse battery", &factor, &secret)
        .await;
    for _ in 0..3 {
        assert_eq!(s.verify(&factor, "000000").await, "REJECTED");
    }
    let raised = wait_alerts(&s, &user, 1).await;
    let id = raised[0]["id"].as_str().unwrap().to_string();
    // The user can read her alerts but not hide them from the security team.
    let r = s
        .gql_as(
            Some(&token),
            "query { securityAlerts { edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert!(r["data"]["securityAlerts"]["edges"].is_array(), "{r}");
    for query in [
        "mutation($i: ID!) { acknowledgeSecurityAlert(id: $i) { id } }",
        "mutation($i: ID!) { acknowledgeSecurityAlertV2(input: {alertId: $i}) { securityAlert { id } } }",
    ] {
        let r = s.gql_as(Some(&token), query, json!({ "i": id })).await;
        assert_eq!(error_code(&r), "FORBIDDEN", "{r}");
    }
    assert!(alerts(&s, &user).await[0]["acknowledgedAt"].is_null());
    assert!(
        s.event_types("Alert", &id)
            .await
            .iter()
            .all(|t| t != "SecurityAlertAcknowledged")
    );
    let r = s
        .ok(
            "mutation($i: ID!) { acknowledgeSecurityAlert(id: $i) { acknowledgedAt } }",
            json!({ "i": id }),
        )
        .await;
    assert!(r["acknowledgeSecurityAlert"]["acknowledgedAt"].is_string());
});

const MARK_SEEN: &str = "mutation($i: ID!) { markSecurityAlertSeen(input: {alertId: $i}) {
    securityAlert { id seenByUserAt acknowledgedAt } } }";

both_stores!(
    users_mark_their_own_alerts_seen_without_acknowledging_them,
    |store| async move {
        let s = TestServer::start(store).await;
        let user = s.create_full_user("gina", "correct horse battery").await;
        let (factor, secret) = s.enroll_totp(&user).await;
        s.activate(&factor, &s.code(&secret, 0)).await;
        let token = s
            .mfa_token("gina", "correct horse battery", &factor, &secret)
            .await;
        s.create_full_user("hank", "another horse battery").await;
        let other = s.password_token("hank", "another horse battery").await;
        for _ in 0..3 {
            assert_eq!(s.verify(&factor, "000000").await, "REJECTED");
        }
        let raised = wait_alerts(&s, &user, 1).await;
        let id = raised[0]["id"].as_str().unwrap().to_string();
        let events_before = s.event_types("Alert", &id).await;

        // Another user's alert answers exactly as one that does not exist, and stays as it is.
        let theirs = s.gql_as(Some(&other), MARK_SEEN, json!({ "i": id })).await;
        let missing = s
            .gql_as(
                Some(&other),
                MARK_SEEN,
                json!({ "i": uuid::Uuid::new_v4().to_string() }),
            )
            .await;
        assert_eq!(error_code(&theirs), "NOT_FOUND", "{theirs}");
        assert_eq!(error_reason(&theirs), "ALERT_NOT_FOUND", "{theirs}");
        assert_eq!(
            theirs["errors"][0]["message"], missing["errors"][0]["message"],
            "{theirs} {missing}"
        );
        assert_eq!(error_reason(&missing), "ALERT_NOT_FOUND", "{missing}");
        // An administrator acknowledges instead; a bad id is refused.
        let admin = s.gql(MARK_SEEN, json!({ "i": id })).await;
        assert_eq!(error_code(&admin), "FORBIDDEN", "{admin}");
        let bad = s
            .gql_as(Some(&token), MARK_SEEN, json!({ "i": "nope" }))
            .await;
        assert_eq!(error_reason(&bad), "INVALID_ID", "{bad}");
        assert_eq!(s.event_types("Alert", &id).await, events_before);
        assert!(alerts(&s, &user).await[0]["seenByUserAt"].is_null());

        // Her own: seen, still unacknowledged for the security team.
        let r = s.gql_as(Some(&token), MARK_SEEN, json!({ "i": id })).await;
        let seen = &r["data"]["markSecurityAlertSeen"]["securityAlert"];
        assert_eq!(seen["id"], id.as_str(), "{r}");
        assert!(seen["seenByUserAt"].is_string(), "{r}");
        assert!(seen["acknowledgedAt"].is_null(), "{r}");
        let listed = alerts(&s, &user).await;
        assert_eq!(listed[0]["seenByUserAt"], seen["seenByUserAt"]);
        assert!(listed[0]["acknowledgedAt"].is_null());
        let types = s.event_types("Alert", &id).await;
        assert_eq!(
            types,
            [
                events_before.clone(),
                vec!["SecurityAlertSeenByUser".into()]
            ]
            .concat()
        );

        // A second mark keeps the first time and writes nothing.
        s.clock.advance(chrono::TimeDelta::seconds(5));
        let again = s.gql_as(Some(&token), MARK_SEEN, json!({ "i": id })).await;
        assert_eq!(
            again["data"]["markSecurityAlertSeen"]["securityAlert"]["seenByUserAt"],
            seen["seenByUserAt"],
            "{again}"
        );
        assert_eq!(s.event_types("Alert", &id).await, types);

        // The security team acknowledges it as before; the user's "seen" stays.
        let r = s
            .ok(
                "mutation($i: ID!) { acknowledgeSecurityAlertV2(input: {alertId: $i}) {
                    securityAlert { acknowledgedAt seenByUserAt } } }",
                json!({ "i": id }),
            )
            .await;
        let acked = &r["acknowledgeSecurityAlertV2"]["securityAlert"];
        assert!(acked["acknowledgedAt"].is_string(), "{r}");
        assert_eq!(acked["seenByUserAt"], seen["seenByUserAt"]);
    }
);

/// Appends `FailedAttempt`s at `offsets` (seconds after `t0`) to `factor` from sequence
/// `first`: all in one transaction (the reactor reads them as one batch), or each in its own
/// with the reactor caught up after each (one event per batch).
async fn append_failures(
    s: &TestServer,
    factor: &str,
    first: i64,
    t0: chrono::DateTime<chrono::Utc>,
    offsets: &[i64],
    one_batch: bool,
) {
    use tessera_domain::factor::{FactorEvent, FailedAttempt, FailureReason};
    let state = &s.server().state;
    let payload = |i: usize, offset: i64| {
        serde_json::to_value(FactorEvent::FailedAttempt(FailedAttempt {
            reason: FailureReason::WrongCode,
            counted: true,
            consecutive_failures: u32::try_from(i + 1).unwrap(),
            challenge_id: None,
            at: t0 + chrono::TimeDelta::seconds(offset),
        }))
        .unwrap()
    };
    let mut tx = state.db.pool.begin().await.unwrap();
    for (i, offset) in offsets.iter().enumerate() {
        let seq = first + i64::try_from(i).unwrap();
        tessera_tests::raw::append_one(
            &mut tx,
            state.db.dialect,
            ("Factor", factor, seq),
            "FailedAttempt",
            payload(i, *offset),
        )
        .await;
        if !one_batch {
            tx.commit().await.unwrap();
            reactor_applied(s, factor, seq).await;
            tx = state.db.pool.begin().await.unwrap();
        }
    }
    tx.commit().await.unwrap();
    let last = first + i64::try_from(offsets.len()).unwrap() - 1;
    reactor_applied(s, factor, last).await;
}

/// Waits until the alert reactor has applied event `seq` of `factor`. One `catch_up` is not
/// enough on PostgreSQL: the tailer reads below the cluster's snapshot xmin, so another test's
/// open transaction can hold a committed event back for a while.
async fn reactor_applied(s: &TestServer, factor: &str, seq: i64) {
    let applied = s
        .server()
        .state
        .reactor
        .wait_for_event("Factor", factor, seq, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(applied, "the reactor applied event {seq} of {factor}");
}

both_stores!(
    a_batch_of_failures_raises_what_one_failure_at_a_time_raises,
    |store| async move {
        let s = TestServer::start(store).await;
        let window = s.server().state.config.alert_window_seconds;
        // Failures a day ahead, so real ones of these users stay out of their windows: an
        // incident of three, a fourth inside its window, then three more once the window of
        // the first alert has passed (a second incident).
        let t0 = chrono::Utc::now() + chrono::TimeDelta::days(1);
        let offsets = [0, 1, 2, 3, window + 5, window + 6, window + 7];
        let mut shapes = Vec::new();
        for (login, one_batch) in [("batched", true), ("one_by_one", false)] {
            let (user, factor, _) = s.active_totp(login).await;
            let first = i64::try_from(s.events_of(&factor).await.len()).unwrap() + 1;
            append_failures(&s, &factor, first, t0, &offsets, one_batch).await;
            let rows = s
                .server()
                .state
                .queries
                .alerts_after(Some(&user), None, 100)
                .await
                .unwrap();
            let shape: Vec<(String, String, Vec<i64>)> = rows
                .into_iter()
                .filter(|a| a.kind == "REPEATED_FAILURES")
                .map(|a| {
                    let causes: Vec<Value> = serde_json::from_str(&a.caused_by).unwrap();
                    let seqs = causes
                        .iter()
                        .map(|c| c["sequence"].as_i64().unwrap() - first)
                        .collect();
                    (a.kind, a.reason, seqs)
                })
                .collect();
            shapes.push(shape);
        }
        let reason = format!("3 failed proofs of possession within {window} s");
        let expected = vec![
            (
                "REPEATED_FAILURES".to_string(),
                reason.clone(),
                vec![0, 1, 2],
            ),
            ("REPEATED_FAILURES".to_string(), reason, vec![4, 5, 6]),
        ];
        assert_eq!(shapes[1], expected, "one failure per batch");
        assert_eq!(shapes[0], expected, "all failures in one batch");
    }
);
