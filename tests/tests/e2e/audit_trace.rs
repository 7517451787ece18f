//! `auditEvent`: one event with its causation chain. An alert leads back to the failed code
//! that tipped its rule, that code's command shows the other event it wrote (the lock), and the failure
//! shows the alert it caused; each list is checked against the whole log read page by page.

use serde_json::{Value, json};
use tessera_tests::{TestServer, both_stores, error_code, error_reason, identity};

const TRACE: &str = "query($t: String!, $i: ID!, $s: Int!) { auditEvent(aggregateType: $t, aggregateId: $i, sequence: $s) {
    event { aggregateType aggregateId sequence eventType metadata payload }
    causes { aggregateType aggregateId sequence eventType metadata }
    siblings { aggregateType aggregateId sequence eventType metadata }
    effects { aggregateType aggregateId sequence eventType metadata } } }";

fn causation(event: &Value) -> &str {
    event["metadata"]["causation_id"]
        .as_str()
        .unwrap_or_default()
}

fn keys(events: &Value) -> Vec<(String, String, i64)> {
    events
        .as_array()
        .expect("a list")
        .iter()
        .map(identity)
        .collect()
}

async fn trace(s: &TestServer, key: &(String, String, i64)) -> Value {
    s.ok(TRACE, json!({ "t": key.0, "i": key.1, "s": key.2 }))
        .await["auditEvent"]
        .clone()
}

both_stores!(
    an_alert_leads_back_to_the_failure_that_raised_it,
    |store| async move {
        // The third failure also locks the factor: one command, two events.
        let s = TestServer::start_with(store, |c| c.lockout_threshold = 3).await;
        let (_, factor, _) = s.active_totp("alice").await;
        for _ in 0..3 {
            assert_eq!(s.verify(&factor, "000000").await, "REJECTED");
        }
        let log = s.quiesce().await;
        let alert = log
            .iter()
            .find(|e| {
                e["eventType"] == "SecurityAlertRaised"
                    && e["payload"]["SecurityAlertRaised"]["kind"] == "REPEATED_FAILURES"
            })
            .expect("the three failures raised an alert");
        let third = log
            .iter()
            .filter(|e| e["aggregateId"] == factor.as_str() && e["eventType"] == "FailedAttempt")
            .nth(2)
            .expect("three failures");

        // The alert: its cause is the third failure, whose own cause is a command.
        let t = trace(&s, &identity(alert)).await;
        assert_eq!(identity(&t["event"]), identity(alert));
        assert_eq!(keys(&t["causes"]), vec![identity(third)]);
        assert!(causation(&t["causes"][0]).starts_with("cmd-"));

        // The failure: the command's other events, exactly those of the log with its causation
        // id, and the alert it caused.
        let t = trace(&s, &identity(third)).await;
        assert!(
            t["causes"].as_array().unwrap().is_empty(),
            "a command wrote it"
        );
        let same_command: Vec<_> = log
            .iter()
            .filter(|e| causation(e) == causation(third) && identity(e) != identity(third))
            .map(identity)
            .collect();
        let locked = log
            .iter()
            .find(|e| e["aggregateId"] == factor.as_str() && e["eventType"] == "LockedOut")
            .expect("locked at the third failure");
        assert_eq!(
            same_command,
            vec![identity(locked)],
            "the lock was written by the failure's command"
        );
        assert_eq!(keys(&t["siblings"]), same_command);
        let caused: Vec<_> = log
            .iter()
            .filter(|e| causation(e) == format!("Factor/{factor}/{}", third["sequence"]).as_str())
            .map(identity)
            .collect();
        assert!(caused.contains(&identity(alert)), "{caused:?}");
        assert_eq!(keys(&t["effects"]), caused);
        // Redacted as every audit read: the enrolment's sealed secret does not leave.
        let enrolled = log
            .iter()
            .find(|e| e["aggregateId"] == factor.as_str() && e["eventType"] == "Enrolled")
            .unwrap();
        let t = trace(&s, &identity(enrolled)).await;
        assert!(
            !t["event"]["payload"].to_string().contains("ciphertext\":{")
                && t["event"]["payload"].to_string().contains("[REDACTED]"),
            "{}",
            t["event"]["payload"]
        );
    }
);

both_stores!(
    an_event_trace_is_for_auditors_and_names_one_event,
    |store| async move {
        let s = TestServer::start(store).await;
        let (user, _factor, _) = s.active_totp("bob").await;
        // No such event: null, not an error.
        let none = s
            .ok(TRACE, json!({ "t": "User", "i": user, "s": 999 }))
            .await;
        assert_eq!(none["auditEvent"], Value::Null);
        for (t, i, seq) in [("User", user.as_str(), 0), ("", user.as_str(), 1)] {
            let bad = s.gql(TRACE, json!({ "t": t, "i": i, "s": seq })).await;
            assert_eq!(error_code(&bad), "BAD_USER_INPUT", "{bad}");
            assert_eq!(error_reason(&bad), "INVALID_EVENT_KEY", "{bad}");
        }
        let long = "x".repeat(300);
        let bad = s
            .gql(TRACE, json!({ "t": "User", "i": long, "s": 1 }))
            .await;
        assert_eq!(error_reason(&bad), "INVALID_EVENT_KEY", "{bad}");
        // A user's own token may not read the log, not even its own events.
        let carol = s.create_full_user("carol", "correct horse battery").await;
        let token = s.password_token("carol", "correct horse battery").await;
        let denied = s
            .gql_as(
                Some(&token),
                TRACE,
                json!({ "t": "User", "i": carol, "s": 1 }),
            )
            .await;
        assert_eq!(error_code(&denied), "FORBIDDEN", "{denied}");
        let anonymous = s
            .gql_as(None, TRACE, json!({ "t": "User", "i": user, "s": 1 }))
            .await;
        assert_eq!(error_code(&anonymous), "UNAUTHENTICATED", "{anonymous}");
    }
);
