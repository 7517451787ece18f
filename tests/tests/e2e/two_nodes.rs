//! Two nodes on one PostgreSQL, each run recorded as a history (`tessera_tests::history`:
//! node, operation, arguments, invoke and complete time, answer) and checked as a whole
//! afterwards, against the answers, their real-time order and the event log read back: one
//! code verified 50 times over both nodes succeeds once; 50 wrong codes over both count
//! exactly the threshold; both nodes' reactors raise one alert per incident; every stream's
//! sequences are 1..N.
//!
//! PostgreSQL only: several nodes are a PostgreSQL deployment. Two servers in this one
//! process can open one SQLite file (other tests do, for what one node sees of another's
//! writes), but a SQLite deployment is one node, so its two-node history would check a setup
//! nobody runs.

use chrono::TimeDelta;
use futures::future::join_all;
use serde_json::{Value, json};
use tessera_tests::{
    Store, TestServer,
    history::{
        History, Op, Outcome, assert_valid, check_alerts, check_lockout, check_sequences,
        check_single_use,
    },
};

/// `postgres!(name, |store| async move { .. })`: a test on PostgreSQL only, named
/// `name::postgres` as `both_stores!` names its PostgreSQL half.
macro_rules! postgres {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                ($body)(Store::Postgres).await
            }
        }
    };
}

/// Every operation was answered, each node answered half of them (one more at most).
fn answered_by_both(ops: &[Op], n: usize) {
    assert_eq!(ops.len(), n);
    assert!(
        ops.iter().all(|o| o.outcome != Outcome::Info),
        "a request went unanswered: {:?}",
        ops.iter()
            .filter(|o| o.outcome == Outcome::Info)
            .collect::<Vec<_>>()
    );
    let first = ops.iter().filter(|o| o.process == 0).count();
    assert!(first.abs_diff(n - first) <= 1, "{first} of {n} on node 0");
}

/// The log as the `events` query shows it (once it shows the whole table), and the sequence
/// check on the table itself.
async fn log_with_gapless_sequences(s: &TestServer, ops: &[Op]) -> Vec<Value> {
    let log = s.settled_events().await;
    assert_valid(
        "sequences 1..N",
        &check_sequences(&s.log_identities().await),
        ops,
    );
    log
}

postgres!(
    one_code_verified_fifty_times_over_two_nodes_succeeds_once,
    |store| async move {
        let a = TestServer::start(store).await;
        let b = a.another_node().await;
        let (_, factor, secret) = a.active_totp("alice").await;
        let code = a.code(&secret, 0);
        let nodes = [&a, &b];
        let history = History::new();
        join_all((0..50).map(|i| history.verify(i % 2, nodes[i % 2], &factor, &code))).await;
        let ops = history.ops();
        answered_by_both(&ops, 50);
        let log = log_with_gapless_sequences(&b, &ops).await;
        assert_valid("one success", &check_single_use(&ops, &log, &factor), &ops);
        // The refusals came from both nodes, not only from the one that lost locally.
        for node in 0..2 {
            assert!(
                ops.iter()
                    .any(|o| o.process == node && o.result() == "PASSCODE_REPLAYED"),
                "node {node} refused none"
            );
        }
    }
);

postgres!(
    fifty_wrong_codes_over_two_nodes_count_exactly_the_threshold,
    |store| async move {
        let a = TestServer::start(store).await;
        let b = a.another_node().await;
        let (user, factor, secret) = a.active_totp("bob").await;
        let wrong = a.wrong_code(&secret);
        let nodes = [&a, &b];
        let history = History::new();
        join_all((0..50).map(|i| history.verify(i % 2, nodes[i % 2], &factor, &wrong))).await;
        let ops = history.ops();
        answered_by_both(&ops, 50);
        let log = log_with_gapless_sequences(&a, &ops).await;
        let threshold = i64::from(a.config.lockout_threshold);
        assert_eq!(threshold, 5);
        assert_valid(
            "exact lockout",
            &check_lockout(&ops, &log, &factor, threshold),
            &ops,
        );
        // Only the counted guesses reached the user's hard-lock budget.
        let on_user = log
            .iter()
            .filter(|e| e["aggregateId"] == user.as_str() && e["eventType"] == "FailedAttempt")
            .count();
        assert_eq!(on_user, 5);
    }
);

postgres!(
    both_nodes_reactors_raise_one_alert_per_incident,
    |store| async move {
        // No lockout: the incidents here are repeated failures only.
        let a = TestServer::start_with(store, |c| c.lockout_threshold = 100).await;
        let b = a.another_node().await;
        let mut users = Vec::new();
        for login in ["ann", "ben", "cat", "dan"] {
            users.push(a.active_totp(login).await);
        }
        let nodes = [&a, &b];
        let history = History::new();
        let burst = |per_user: &[usize]| {
            let ops = users
                .iter()
                .zip(per_user)
                .flat_map(|((_, factor, secret), n)| {
                    let wrong = a.wrong_code(secret);
                    (0..*n).map(move |_| (factor.clone(), wrong.clone()))
                })
                .enumerate()
                .map(|(i, (factor, wrong))| {
                    let history = &history;
                    let node = nodes[i % 2];
                    async move { history.verify(i % 2, node, &factor, &wrong).await }
                })
                .collect::<Vec<_>>();
            join_all(ops)
        };
        // An incident for every user (four failures, the threshold is three), then, past the
        // window, a second one for three of them; the fourth fails twice: no incident.
        burst(&[4, 4, 4, 4]).await;
        a.clock
            .advance(TimeDelta::seconds(a.config.alert_window_seconds + 60));
        burst(&[3, 3, 3, 2]).await;
        let ops = history.ops();
        answered_by_both(&ops, 27);
        assert!(ops.iter().all(|o| o.result() == "REJECTED"), "{ops:?}");
        // Both reactors have looked at every event.
        a.quiesce().await;
        b.quiesce().await;
        let log = log_with_gapless_sequences(&a, &ops).await;
        let failures = log
            .iter()
            .filter(|e| {
                e["eventType"] == "FailedAttempt"
                    && e["aggregateType"] == "Factor"
                    && ops
                        .iter()
                        .any(|o| e["metadata"]["client_request_id"] == o.id.as_str())
            })
            .count();
        assert_eq!(failures, 27, "every answered failure is in the log");
        let api: Vec<Value> = b
            .ok(
                "{ securityAlerts(first: 200) { edges { node { id kind userId } } } }",
                json!({}),
            )
            .await["securityAlerts"]["edges"]
            .as_array()
            .expect("edges")
            .iter()
            .map(|e| e["node"].clone())
            .collect();
        assert_valid(
            "one alert per incident",
            &check_alerts(
                &log,
                &api,
                a.config.alert_threshold,
                TimeDelta::seconds(a.config.alert_window_seconds),
            ),
            &ops,
        );
        let incidents = api
            .iter()
            .filter(|a| a["kind"] == "REPEATED_FAILURES")
            .count();
        assert_eq!(incidents, 7, "{api:?}");
    }
);

postgres!(
    wrong_codes_on_two_factors_over_two_nodes_that_keep_the_user_hard_lock_at_exactly_the_threshold,
    |store| async move {
        // Both nodes decide on the user as they keep it, each node's copy outdated by the
        // other's every count: only the append's key keeps the count exact.
        let a = TestServer::start_with(store, |c| {
            c.lockout_threshold = 100;
            c.hard_lock_threshold = 7;
        })
        .await;
        let b = a.another_node().await;
        let user = a.create_user("carol").await;
        let mut factors = Vec::new();
        for _ in 0..2 {
            let (factor, secret) = a.active_totp_of(&user).await;
            factors.push((factor, a.wrong_code(&secret)));
        }
        // Both nodes keep carol and both factors.
        for node in [&a, &b] {
            for (factor, wrong) in &factors {
                let r = node.verify_raw(factor, wrong).await;
                assert_eq!(r["data"]["verifyFactor"]["factorResult"], "REJECTED", "{r}");
            }
        }
        let nodes = [&a, &b];
        let history = History::new();
        join_all((0..40).map(|i| {
            let (factor, wrong) = &factors[(i / 2) % 2];
            history.verify(i % 2, nodes[i % 2], factor, wrong)
        }))
        .await;
        let ops = history.ops();
        answered_by_both(&ops, 40);
        let log = log_with_gapless_sequences(&a, &ops).await;
        let rejected = ops.iter().filter(|o| o.result() == "REJECTED").count();
        assert_eq!(
            rejected, 3,
            "the 4 before and 3 of these reach the threshold: {ops:?}"
        );
        assert!(
            ops.iter()
                .all(|o| o.result() == "REJECTED" || o.result() == "LOCKED_OUT"),
            "{ops:?}"
        );
        // The refusals are on record too (reason LOCKED), but not counted.
        let on_user = |reason: &str| {
            log.iter()
                .filter(|e| {
                    e["aggregateId"] == user.as_str()
                        && e["payload"]["FailedAttempt"]["reason"] == reason
                })
                .count()
        };
        assert_eq!(
            on_user("FACTOR_CHECK_FAILED"),
            7,
            "exactly the threshold counted on the user"
        );
        assert_eq!(
            on_user("LOCKED"),
            37,
            "every other attempt refused unchecked"
        );
        let (carol, _) = b.server().state.users.load_by_replay(&user).await.unwrap();
        assert!(carol.second_factor_locked);
    }
);
