//! SMS pumping (toll fraud) limits: an allow-list of country calling codes, per-destination
//! limits whichever factor or user asks, a budget of SMS per hour for all nodes together, and
//! a cap on the factors of one user. A refusal is `RATE_LIMITED` with its reason, sends
//! nothing and is a `CodeRefused` event on the user's stream; the SMS that spends 80% of the
//! hourly budget raises one `SMS_BUDGET_WARNING` alert per window.

use futures::StreamExt;
use serde_json::{Value, json};
use tessera_tests::{DELIVERY_WAIT, Phones, TestServer, both_stores, error_code, error_reason};

const ENROLL_SMS: &str = "mutation($u: ID!, $d: String!) { enrollFactor(input: {userId: $u, type: SMS, phoneNumber: $d}) { factor { id } } }";

async fn enroll_sms(s: &TestServer, user: &str, phone: &str) -> Value {
    s.gql(ENROLL_SMS, json!({ "u": user, "d": phone })).await
}

/// The payloads of the user's `CodeRefused` events, oldest first.
async fn refusals(s: &TestServer, user: &str) -> Vec<Value> {
    s.events("User", user)
        .await
        .into_iter()
        .filter(|(t, _)| t == "CodeRefused")
        .map(|(_, p)| p["CodeRefused"].clone())
        .collect()
}

both_stores!(
    a_number_outside_the_allowed_countries_gets_nothing,
    |store| async move {
        let phones = Phones::start().await;
        let s = TestServer::start_with(store, |c| {
            phones.configure(c);
            c.sms_allowed_countries = vec![1, 44];
        })
        .await;
        let user = s.create_user("pam").await;
        // +882 (international networks) and +49 (Germany) are not on the list.
        for number in ["+88216123456", "+4915123456789"] {
            let r = enroll_sms(&s, &user, number).await;
            assert_eq!(error_code(&r), "RATE_LIMITED", "{r}");
            assert_eq!(error_reason(&r), "SMS_COUNTRY_NOT_ALLOWED");
        }
        // A UK number is sent; it is the only message the gateway ever sees.
        let r = enroll_sms(&s, &user, "+447700900123").await;
        assert!(r["errors"].is_null(), "{r}");
        phones.sms_code("+447700900123", 1).await;
        let sent = phones.sms.wait_for_requests(1, DELIVERY_WAIT).await;
        assert_eq!(sent.len(), 1, "only the allowed number got a message");
        // Refused enrolments wrote no factor.
        let factors = s
            .ok(
                "query($u: ID!) { user(id: $u) { factors { id } } }",
                json!({ "u": user }),
            )
            .await;
        assert_eq!(factors["user"]["factors"].as_array().unwrap().len(), 1);
        // Each refusal is on record, with its reason and the country, never the number.
        let refused = refusals(&s, &user).await;
        assert_eq!(refused.len(), 2, "{refused:?}");
        for (r, country) in refused.iter().zip([882, 49]) {
            assert_eq!(r["reason"], "SMS_COUNTRY_NOT_ALLOWED", "{r}");
            assert_eq!(r["channel"], "SMS");
            assert_eq!(r["country_code"], country, "{r}");
            assert!(r["factor_id"].is_null(), "{r}");
            assert!(r["retry_after_seconds"].as_i64().unwrap() > 0);
        }
        let dump = s.dump_database().await;
        for number in ["88216123456", "4915123456789"] {
            assert!(
                !dump.contains(number),
                "a refused number is stored in the clear"
            );
        }
    }
);

both_stores!(
    the_hourly_sms_budget_holds_under_parallel_enrolments,
    |store| async move {
        let phones = Phones::start().await;
        let s = TestServer::start_with(store, |c| {
            phones.configure(c);
            c.sms_max_per_hour = 5;
        })
        .await;
        let mut users = Vec::new();
        for i in 0..12 {
            users.push(s.create_user(&format!("u{i}")).await);
        }
        let answers: Vec<Value> = futures::stream::iter(users.iter().enumerate())
            .map(|(i, user)| {
                let s = &s;
                async move { enroll_sms(s, user, &format!("+1415555{:04}", 100 + i)).await }
            })
            .buffer_unordered(12)
            .collect()
            .await;
        let sent = answers.iter().filter(|r| r["errors"].is_null()).count();
        let refused = answers
            .iter()
            .filter(|r| !r["errors"].is_null() && error_reason(r) == "SMS_BUDGET_EXHAUSTED")
            .count();
        assert_eq!((sent, refused), (5, 7), "{answers:?}");
        assert_eq!(
            phones.sms.wait_for_requests(5, DELIVERY_WAIT).await.len(),
            5
        );
        let mut refused = 0;
        for user in &users {
            for r in refusals(&s, user).await {
                assert_eq!(r["reason"], "SMS_BUDGET_EXHAUSTED", "{r}");
                refused += 1;
            }
        }
        assert_eq!(refused, 7, "every refusal is an event");
        // The 4th SMS of 5 spent 80%: one warning, however many requests raced past it.
        let warnings = || async {
            s.ok(
                "{ securityAlerts(first: 100) { edges { node { kind userId reason } } } }",
                json!({}),
            )
            .await["securityAlerts"]["edges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["node"].clone())
                .filter(|a| a["kind"] == "SMS_BUDGET_WARNING")
                .collect::<Vec<_>>()
        };
        assert!(
            s.eventually(|| async { !warnings().await.is_empty() })
                .await,
            "no SMS budget warning"
        );
        let events: usize =
            futures::future::join_all(users.iter().map(|u| s.event_types("User", u)))
                .await
                .iter()
                .map(|t| {
                    t.iter()
                        .filter(|t| *t == "SmsBudgetThresholdCrossed")
                        .count()
                })
                .sum();
        assert_eq!(events, 1, "the mark is crossed once per window");
        s.quiesce().await;
        let raised = warnings().await;
        assert_eq!(raised.len(), 1, "{raised:?}");
        assert!(
            raised[0]["reason"].as_str().unwrap().contains("4 of the 5"),
            "{raised:?}"
        );
    }
);

both_stores!(
    a_user_gets_a_bounded_number_of_sms_a_day,
    |store| async move {
        let phones = Phones::start().await;
        let s = TestServer::start_with(store, |c| {
            phones.configure(c);
            c.sms_max_per_user_per_day = 2;
        })
        .await;
        let user = s.create_user("dora").await;
        for number in ["+14155550161", "+14155550162"] {
            let r = enroll_sms(&s, &user, number).await;
            assert!(r["errors"].is_null(), "{r}");
        }
        let r = enroll_sms(&s, &user, "+14155550163").await;
        assert_eq!(error_code(&r), "RATE_LIMITED", "{r}");
        assert_eq!(error_reason(&r), "SMS_USER_DAILY_LIMIT");
        let refused = refusals(&s, &user).await;
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!(refused[0]["reason"], "SMS_USER_DAILY_LIMIT");
        assert_eq!(refused[0]["country_code"], 1);
        let sent = phones.sms.wait_for_requests(2, DELIVERY_WAIT).await;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert_eq!(phones.sms.requests().len(), 2, "{sent:?}");
        assert!(
            phones
                .sms
                .requests()
                .iter()
                .all(|r| r.json()["to"] != "+14155550163"),
            "the refused number got a message"
        );
    }
);

both_stores!(
    one_number_gets_one_code_per_resend_period_whoever_asks,
    |store| async move {
        let phones = Phones::start().await;
        let s = TestServer::start_with_phones(store, &phones).await;
        let a = s.create_user("ann").await;
        let b = s.create_user("ben").await;
        let r = enroll_sms(&s, &a, "+14155550142").await;
        assert!(r["errors"].is_null(), "{r}");
        // Another user, another factor, the same number: refused, nothing sent.
        let r = enroll_sms(&s, &b, "+14155550142").await;
        assert_eq!(error_code(&r), "RATE_LIMITED", "{r}");
        assert_eq!(error_reason(&r), "DESTINATION_RESEND_TOO_SOON");
        assert!(r["errors"][0]["extensions"]["retryAfter"].as_i64().unwrap() <= 30);
        let refused = refusals(&s, &b).await;
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!(refused[0]["reason"], "DESTINATION_RESEND_TOO_SOON");
        assert!(refusals(&s, &a).await.is_empty());
        s.clock.advance(chrono::TimeDelta::seconds(30));
        let r = enroll_sms(&s, &b, "+14155550142").await;
        assert!(r["errors"].is_null(), "{r}");
        assert_eq!(
            phones.sms.wait_for_requests(2, DELIVERY_WAIT).await.len(),
            2
        );
    }
);

both_stores!(a_user_has_a_bounded_number_of_factors, |store| async move {
    let s = TestServer::start_with(store, |c| c.max_factors_per_user = 4).await;
    let user = s.create_user("fay").await;
    // Three pending enrolments at most.
    let mut pending = Vec::new();
    for _ in 0..3 {
        pending.push(s.enroll_totp(&user).await);
    }
    let enroll =
        "mutation($u: ID!) { enrollFactor(input: {userId: $u, type: TOTP}) { factor { id } } }";
    let r = s.gql(enroll, json!({ "u": user })).await;
    assert_eq!(error_code(&r), "RATE_LIMITED", "{r}");
    assert_eq!(error_reason(&r), "TOO_MANY_PENDING_ENROLLMENTS");
    // One activated makes room for one more pending; then the user has the most allowed.
    let (factor, secret) = &pending[0];
    assert_eq!(
        s.activate(factor, &s.code(secret, 0)).await["factorResult"],
        "SUCCESS"
    );
    let r = s.gql(enroll, json!({ "u": user })).await;
    assert!(r["errors"].is_null(), "{r}");
    let r = s.gql(enroll, json!({ "u": user })).await;
    assert_eq!(error_reason(&r), "TOO_MANY_FACTORS", "{r}");
});
