//! Step-up: a challenge carries the caller's state, is completed once by one of the user's
//! factors, and answers EXPIRED when its time or its attempts run out.

use chrono::TimeDelta;
use serde_json::{Value, json};
use tessera_tests::{Phones, TestServer, both_stores, error_code, error_reason};

const START: &str = "mutation($u: ID!, $s: JSON, $t: Int) { startStepUp(input: {userId: $u, state: $s, ttlSeconds: $t}) { challenge { id userId status purpose expiresAt } } }";
const COMPLETE: &str = "mutation($c: ID!, $f: ID!, $p: String!) { completeStepUp(input: {challengeId: $c, factorId: $f, passCode: $p}) { factorResult state challenge { status failedAttempts } factor { failedAttempts } } }";

fn transfer() -> Value {
    json!({
        "action": "transfer",
        "amount": {"cents": 125000, "currency": "EUR"},
        "to": "DE89 3704 0044 0532 0130 00",
        "memo": "Grüße — 💶 \"quoted\" \\ back",
        "flags": [true, false, null, 1.5e3, -0],
        "nested": {"deeper": {"deepest": []}}
    })
}

async fn start(s: &TestServer, user: &str, state: Value, ttl: i64) -> String {
    let r = s
        .gql(START, json!({ "u": user, "s": state, "t": ttl }))
        .await;
    r["data"]["startStepUp"]["challenge"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_string()
}

async fn complete(s: &TestServer, challenge: &str, factor: &str, code: &str) -> Value {
    s.gql(COMPLETE, json!({ "c": challenge, "f": factor, "p": code }))
        .await
}

both_stores!(
    step_up_round_trips_json_state_and_completes_once,
    |store| async move {
        let s = TestServer::start(store).await;
        let (user, factor, secret) = s.active_totp("alice").await;
        let r = s
            .gql(START, json!({ "u": user, "s": transfer(), "t": 120 }))
            .await;
        let c = &r["data"]["startStepUp"]["challenge"];
        assert_eq!(c["status"], "ISSUED", "{r}");
        assert_eq!(c["purpose"], "STEP_UP");
        assert_eq!(c["userId"], user.as_str());
        let challenge = c["id"].as_str().unwrap().to_string();

        let right = s.code(&secret, 0);
        let wrong = if right == "123456" {
            "654321"
        } else {
            "123456"
        };
        let r = complete(&s, &challenge, &factor, wrong).await;
        let p = &r["data"]["completeStepUp"];
        assert_eq!(p["factorResult"], "REJECTED", "{r}");
        assert_eq!(p["state"], Value::Null, "no state without success");
        assert_eq!(p["challenge"]["failedAttempts"], 1);

        let r = complete(&s, &challenge, &factor, &right).await;
        let p = &r["data"]["completeStepUp"];
        assert_eq!(p["factorResult"], "SUCCESS", "{r}");
        assert_eq!(p["state"], transfer(), "the state comes back as given");
        assert_eq!(p["challenge"]["status"], "COMPLETED");

        // Once: the next valid code is refused without being used.
        s.clock.advance(TimeDelta::seconds(30));
        let next = s.code(&secret, 0);
        let r = complete(&s, &challenge, &factor, &next).await;
        assert_eq!(error_code(&r), "CONFLICT", "{r}");
        assert_eq!(error_reason(&r), "CHALLENGE_COMPLETED");
        assert_eq!(
            s.verify(&factor, &next).await,
            "SUCCESS",
            "the code was not used"
        );
        assert_eq!(
            s.event_types("Challenge", &challenge).await,
            ["Issued", "FailedAttempt", "Completed"]
        );
    }
);

both_stores!(concurrent_completions_succeed_once, |store| async move {
    let s = TestServer::start(store).await;
    let (user, factor, secret) = s.active_totp("alice").await;
    let challenge = start(&s, &user, json!({"n": 1}), 300).await;
    // Codes of the current and the next step are both valid: the factor accepts both, the
    // challenge only one.
    let codes = [s.code(&secret, 0), s.code(&secret, 1)];
    let attempts = (0..8).map(|i| complete(&s, &challenge, &factor, &codes[i % 2]));
    let responses = futures::future::join_all(attempts).await;
    let successes: Vec<&Value> = responses
        .iter()
        .filter(|r| r["data"]["completeStepUp"]["factorResult"] == "SUCCESS")
        .collect();
    assert_eq!(successes.len(), 1, "{responses:?}");
    assert_eq!(
        successes[0]["data"]["completeStepUp"]["state"],
        json!({"n": 1})
    );
    for r in &responses {
        let ok = r["data"]["completeStepUp"]["factorResult"] == "SUCCESS"
            || r["data"]["completeStepUp"]["factorResult"] == "PASSCODE_REPLAYED"
            || error_reason(r) == "CHALLENGE_COMPLETED";
        assert!(ok, "{r}");
    }
    let types = s.event_types("Challenge", &challenge).await;
    assert_eq!(
        types.iter().filter(|t| *t == "Completed").count(),
        1,
        "{types:?}"
    );
});

both_stores!(
    an_expired_step_up_answers_expired_and_uses_no_code,
    |store| async move {
        let s = TestServer::start(store).await;
        let (user, factor, secret) = s.active_totp("alice").await;
        let challenge = start(&s, &user, json!("x"), 30).await;
        s.clock.advance(TimeDelta::seconds(30));
        let code = s.code(&secret, 0);
        for _ in 0..2 {
            let r = complete(&s, &challenge, &factor, &code).await;
            assert_eq!(
                r["data"]["completeStepUp"]["factorResult"], "EXPIRED",
                "{r}"
            );
            assert_eq!(r["data"]["completeStepUp"]["state"], Value::Null);
            assert_eq!(
                r["data"]["completeStepUp"]["challenge"]["status"],
                "EXPIRED"
            );
        }
        assert_eq!(
            s.event_types("Challenge", &challenge).await,
            ["Issued", "Expired"]
        );
        assert_eq!(
            s.verify(&factor, &code).await,
            "SUCCESS",
            "the code was not used"
        );
    }
);

both_stores!(five_failed_attempts_end_a_step_up, |store| async move {
    let s = TestServer::start_with(store, |c| c.lockout_threshold = 10).await;
    let (user, factor, secret) = s.active_totp("alice").await;
    let challenge = start(&s, &user, json!(null), 300).await;
    let right = s.code(&secret, 0);
    let wrong = if right == "123456" {
        "654321"
    } else {
        "123456"
    };
    for n in 1..=5 {
        let r = complete(&s, &challenge, &factor, wrong).await;
        assert_eq!(r["data"]["completeStepUp"]["factorResult"], "REJECTED");
        assert_eq!(
            r["data"]["completeStepUp"]["challenge"]["failedAttempts"],
            n
        );
    }
    let r = complete(&s, &challenge, &factor, &right).await;
    assert_eq!(
        r["data"]["completeStepUp"]["factorResult"], "EXPIRED",
        "{r}"
    );
    assert_eq!(s.challenge(&challenge).await["status"], "EXPIRED");
    assert_eq!(
        s.verify(&factor, &right).await,
        "SUCCESS",
        "the code was not used"
    );
});

both_stores!(
    step_up_with_an_sms_code_sent_for_the_challenge,
    |store| async move {
        let phones = Phones::start().await;
        let s = TestServer::start_with_phones(store, &phones).await;
        let user = s.create_user("bob").await;
        let phone = "+447700900123";
        let factor = s.enroll_oob(&user, "SMS", phone).await["factor"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let code = phones.sms_code(phone, 1).await;
        assert_eq!(s.activate(&factor, &code).await["factorResult"], "SUCCESS");
        let challenge = start(&s, &user, transfer(), 300).await;
        // No code was sent for this challenge yet.
        let r = complete(&s, &challenge, &factor, &code).await;
        assert_eq!(
            r["data"]["completeStepUp"]["factorResult"], "CHALLENGE_REQUIRED",
            "{r}"
        );
        s.clock.advance(TimeDelta::seconds(30));
        let r = s.challenge_factor(&factor, Some(&challenge)).await;
        assert_eq!(
            r["data"]["challengeFactor"]["challenge"]["id"],
            challenge.as_str(),
            "{r}"
        );
        assert_eq!(
            r["data"]["challengeFactor"]["challenge"]["purpose"],
            "STEP_UP"
        );
        let bound = phones.sms_code(phone, 2).await;
        // Bound to the step-up: verifyFactor by factor id alone cannot use it.
        assert_eq!(s.verify(&factor, &bound).await, "CHALLENGE_REQUIRED");
        let r = complete(&s, &challenge, &factor, &bound).await;
        assert_eq!(
            r["data"]["completeStepUp"]["factorResult"], "SUCCESS",
            "{r}"
        );
        assert_eq!(r["data"]["completeStepUp"]["state"], transfer());
        s.wait_for_event("Challenge", &challenge, "Delivered").await;
        assert_eq!(s.challenge(&challenge).await["delivery"], "DELIVERED");
    }
);

both_stores!(
    bad_step_up_requests_are_typed_errors_and_write_nothing,
    |store| async move {
        let s = TestServer::start(store).await;
        let (user, factor, _) = s.active_totp("alice").await;
        for (ttl, state, reason) in [
            (29, json!(1), "INVALID_TTL"),
            (3601, json!(1), "INVALID_TTL"),
            (
                300,
                json!({"blob": "x".repeat(16 * 1024)}),
                "STATE_TOO_LARGE",
            ),
        ] {
            let r = s
                .gql(START, json!({ "u": user, "s": state, "t": ttl }))
                .await;
            assert_eq!(error_code(&r), "BAD_USER_INPUT", "{r}");
            assert_eq!(error_reason(&r), reason);
        }
        let nobody = s.create_user("nobody").await;
        let r = s.gql(START, json!({ "u": nobody, "s": 1, "t": 60 })).await;
        assert_eq!(error_code(&r), "CONFLICT");
        assert_eq!(error_reason(&r), "NO_ACTIVE_FACTOR");
        let r = s
            .gql(
                START,
                json!({ "u": "0190aaaa-0000-7000-8000-000000000000", "t": 60 }),
            )
            .await;
        assert_eq!(error_code(&r), "NOT_FOUND");

        // Another user's factor cannot answer alice's challenge.
        let challenge = start(&s, &user, json!(1), 300).await;
        let (_, bobs_factor, bobs_secret) = s.active_totp("bob").await;
        let r = complete(&s, &challenge, &bobs_factor, &s.code(&bobs_secret, 0)).await;
        assert_eq!(error_code(&r), "BAD_USER_INPUT", "{r}");
        assert_eq!(error_reason(&r), "FACTOR_OF_ANOTHER_USER");
        let r = complete(&s, &challenge, &factor, "12345").await;
        assert_eq!(error_reason(&r), "MALFORMED_PASS_CODE");
        let r = complete(
            &s,
            "0190aaaa-0000-7000-8000-000000000000",
            &factor,
            "123456",
        )
        .await;
        assert_eq!(error_code(&r), "NOT_FOUND");
        assert_eq!(error_reason(&r), "CHALLENGE_NOT_FOUND");
        assert_eq!(s.event_types("Challenge", &challenge).await, ["Issued"]);
    }
);

// Red-team finding M8: any user could grow the undeletable log at megabytes a second with
// large step-up states. A state is at most 4 KiB, and a user's step-up starts are limited;
// a refused start writes nothing.
both_stores!(
    step_up_states_are_small_and_starts_are_limited,
    |store| async move {
        let s = TestServer::start(store).await;
        let (user, _, _) = s.active_totp("alice").await;
        let start = "mutation($u: ID!, $s: JSON) { startStepUp(input: {userId: $u, state: $s}) { challenge { id } } }";
        let big = json!({ "blob": "x".repeat(5 * 1024) });
        let r = s.gql(start, json!({ "u": user, "s": big })).await;
        assert_eq!(error_code(&r), "BAD_USER_INPUT", "{r}");
        assert_eq!(error_reason(&r), "STATE_TOO_LARGE", "{r}");

        // Counted in the table itself: the events API shows only what every older transaction
        // of the cluster has finished with, so on PostgreSQL it can lag behind a commit.
        let challenges = || async {
            s.log_identities()
                .await
                .into_iter()
                .filter(|(kind, _, _)| kind == "Challenge")
                .count()
        };
        let before = challenges().await;
        let mut refused = None;
        for n in 0..STEP_UP_STARTS_PER_MINUTE + 1 {
            let r = s.gql(start, json!({ "u": user, "s": { "n": n } })).await;
            if r.get("errors").is_some() {
                refused = Some((n, r));
                break;
            }
        }
        let (n, r) = refused.expect("a burst of starts is refused");
        assert_eq!(
            n, STEP_UP_STARTS_PER_MINUTE,
            "the first {STEP_UP_STARTS_PER_MINUTE} run: {r}"
        );
        assert_eq!(error_code(&r), "RATE_LIMITED", "{r}");
        assert_eq!(error_reason(&r), "STEP_UP_RATE_LIMITED", "{r}");
        let retry = r["errors"][0]["extensions"]["retryAfter"].as_i64().unwrap();
        assert!((1..=60).contains(&retry), "{r}");
        let after = challenges().await;
        assert_eq!(
            after - before,
            STEP_UP_STARTS_PER_MINUTE as usize,
            "refusals wrote nothing"
        );

        // Another user is not limited by alice's starts; alice again after the window.
        let (bob, _, _) = s.active_totp("bob").await;
        let r = s.gql(start, json!({ "u": bob, "s": null })).await;
        assert!(r.get("errors").is_none(), "{r}");
        s.clock.advance(chrono::TimeDelta::seconds(61));
        let r = s.gql(start, json!({ "u": user, "s": null })).await;
        assert!(r.get("errors").is_none(), "{r}");
    }
);

/// Step-up starts a user may make per minute.
const STEP_UP_STARTS_PER_MINUTE: i64 = 10;
