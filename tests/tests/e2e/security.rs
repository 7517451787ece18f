//! Issue 3: recovery codes, exact lockout under concurrency, the hard lock, abuse limits.

use chrono::TimeDelta;
use serde_json::{Value, json};
use tessera_tests::{TestServer, both_stores, error_code, error_reason};

const USE_RECOVERY: &str = "mutation($u: ID!, $c: String!) { useRecoveryCode(input: {userId: $u, code: $c}) { factorResult } }";

async fn use_code(s: &TestServer, user: &str, code: &str) -> String {
    let r = s.gql(USE_RECOVERY, json!({ "u": user, "c": code })).await;
    r["data"]["useRecoveryCode"]["factorResult"]
        .as_str()
        .unwrap_or_else(|| panic!("no factorResult: {r}"))
        .to_string()
}

async fn remaining(s: &TestServer, user: &str) -> Value {
    s.ok(
        "query($u: ID!) { user(id: $u) { recoveryCodesRemaining secondFactorLocked } }",
        json!({ "u": user }),
    )
    .await["user"]
        .clone()
}

both_stores!(
    first_activation_issues_ten_single_use_recovery_codes,
    |store| async move {
        let s = TestServer::start(store).await;
        let user = s.create_user("alice").await;
        let (factor, secret) = s.enroll_totp(&user).await;
        let activated = s.activate(&factor, &s.code(&secret, 0)).await;
        let codes: Vec<String> = activated["recoveryCodes"]
            .as_array()
            .expect("codes on first activation")
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect();
        assert_eq!(codes.len(), 10);
        for code in &codes {
            assert!(
                code.len() == 11
                    && code.as_bytes()[5] == b'-'
                    && code.chars().all(|c| c == '-' || c.is_ascii_alphanumeric()),
                "{code}"
            );
        }
        assert_eq!(remaining(&s, &user).await["recoveryCodesRemaining"], 10);

        // A second factor's activation does not replace the set.
        let (f2, secret2) = s.enroll_totp(&user).await;
        assert_eq!(
            s.activate(&f2, &s.code(&secret2, 0)).await["recoveryCodes"],
            json!(null)
        );

        assert_eq!(
            use_code(&s, &user, &codes[0].to_lowercase()).await,
            "SUCCESS"
        );
        assert_eq!(use_code(&s, &user, &codes[0]).await, "REJECTED");
        assert_eq!(remaining(&s, &user).await["recoveryCodesRemaining"], 9);
        let malformed = s.gql(USE_RECOVERY, json!({ "u": user, "c": "nope" })).await;
        assert_eq!(error_code(&malformed), "BAD_USER_INPUT");

        let fresh = s
        .ok(
            "mutation($u: ID!) { regenerateRecoveryCodes(input: {userId: $u}) { recoveryCodes } }",
            json!({ "u": user }),
        )
        .await["regenerateRecoveryCodes"]["recoveryCodes"]
        .clone();
        assert_eq!(fresh.as_array().unwrap().len(), 10);
        assert_eq!(
            use_code(&s, &user, &codes[1]).await,
            "REJECTED",
            "old set is void"
        );
        assert_eq!(
            use_code(&s, &user, fresh[0].as_str().unwrap()).await,
            "SUCCESS"
        );
        assert_eq!(remaining(&s, &user).await["recoveryCodesRemaining"], 9);

        let dump = s.dump_database().await;
        for code in codes.iter().chain(
            fresh
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap())
                .map(str::to_string)
                .collect::<Vec<_>>()
                .iter(),
        ) {
            assert!(
                !dump.contains(code.as_str()) && !dump.contains(&code.replace('-', "")),
                "{code} in dump"
            );
        }
        let used: Vec<_> = s
            .events_of(&user)
            .await
            .into_iter()
            .filter(|(t, _)| t == "RecoveryUsed")
            .collect();
        assert_eq!(used.len(), 2);
    }
);

both_stores!(
    twenty_parallel_uses_of_one_recovery_code_succeed_once,
    |store| async move {
        let s = TestServer::start(store).await;
        let user = s.create_user("bob").await;
        let (factor, secret) = s.enroll_totp(&user).await;
        let codes = s.activate(&factor, &s.code(&secret, 0)).await["recoveryCodes"].clone();
        let code = codes[4].as_str().unwrap().to_string();
        let results = futures::future::join_all((0..20).map(|_| use_code(&s, &user, &code))).await;
        assert_eq!(
            results.iter().filter(|r| *r == "SUCCESS").count(),
            1,
            "{results:?}"
        );
        assert_eq!(
            results.iter().filter(|r| *r == "REJECTED").count(),
            19,
            "{results:?}"
        );
        assert_eq!(remaining(&s, &user).await["recoveryCodesRemaining"], 9);
        // A lost race is not a wrong guess: the losers are on record as uses of a spent
        // code, and none of them counts towards the hard lock.
        assert_eq!(s.failures(&user, "WRONG_RECOVERY_CODE").await, 0);
        assert_eq!(s.failures(&user, "RECOVERY_CODE_USED").await, 19);
        let counted = s
            .events_of(&user)
            .await
            .into_iter()
            .filter(|(t, _)| t == "FailedAttempt")
            .map(|(_, p)| p["FailedAttempt"]["consecutive_failures"].as_u64().unwrap())
            .max();
        assert_eq!(counted, Some(0), "no loser moved the user's failure count");
    }
);

both_stores!(
    twenty_parallel_login_answers_with_one_recovery_code_succeed_once,
    |store| async move {
        let s = TestServer::start(store).await;
        let user = s
            .create_full_user("bert", "correct horse battery staple")
            .await;
        let (factor, secret) = s.enroll_totp(&user).await;
        let codes = s.activate(&factor, &s.code(&secret, 0)).await["recoveryCodes"].clone();
        let code = codes[2].as_str().unwrap().to_string();
        let r = s.login("bert", "correct horse battery staple").await;
        let challenge = r["data"]["login"]["challenge"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no challenge: {r}"))
            .to_string();
        let complete = "mutation($c: ID!, $r: String) { completeLogin(input: {challengeId: $c, recoveryCode: $r}) { factorResult accessToken } }";
        let answers = futures::future::join_all(
            (0..20).map(|_| s.gql_as(None, complete, json!({ "c": challenge, "r": code }))),
        )
        .await;
        let won = answers
            .iter()
            .filter(|r| r["data"]["completeLogin"]["factorResult"] == "SUCCESS")
            .count();
        assert_eq!(won, 1, "{answers:?}");
        for r in answers.iter().filter(|r| r.get("errors").is_some()) {
            assert_eq!(error_code(r), "CONFLICT", "{r}");
        }
        assert_eq!(remaining(&s, &user).await["recoveryCodesRemaining"], 9);
        assert_eq!(s.failures(&user, "WRONG_RECOVERY_CODE").await, 0);
    }
);

both_stores!(
    fifty_parallel_wrong_guesses_record_exactly_the_threshold,
    |store| async move {
        let s = TestServer::start(store).await;
        let (user, factor, secret) = s.active_totp("carol").await;
        let right = s.code(&secret, 0);
        let wrong = if right == "123456" {
            "654321"
        } else {
            "123456"
        };
        let results = futures::future::join_all((0..50).map(|_| s.verify(&factor, wrong))).await;
        assert_eq!(
            results.iter().filter(|r| *r == "REJECTED").count(),
            5,
            "{results:?}"
        );
        assert_eq!(
            results.iter().filter(|r| *r == "LOCKED_OUT").count(),
            45,
            "{results:?}"
        );
        assert_eq!(s.failures(&factor, "WRONG_CODE").await, 5);
        assert_eq!(s.failures(&factor, "LOCKED").await, 45);
        // While locked the right code is refused too, and the lockout lasts its full time.
        assert_eq!(s.verify(&factor, &right).await, "LOCKED_OUT");
        // Only checked guesses count towards the user's hard-lock budget.
        let user_failures = s
            .events_of(&user)
            .await
            .iter()
            .filter(|(t, _)| t == "FailedAttempt")
            .count();
        assert_eq!(user_failures, 5);

        let unlocked = s
        .ok("mutation($f: ID!) { unlockFactor(input: {factorId: $f}) { status failedAttempts } }", json!({ "f": factor }))
        .await;
        assert_eq!(
            unlocked["unlockFactor"],
            json!({ "status": "ACTIVE", "failedAttempts": 0 })
        );
        assert_eq!(s.verify(&factor, &right).await, "SUCCESS");
    }
);

both_stores!(
    the_hard_lock_survives_lockout_cycles_until_an_admin_unlocks,
    |store| async move {
        let s = TestServer::start_with(store, |c| {
            c.lockout_threshold = 3;
            c.lockout_seconds = 60;
            c.hard_lock_threshold = 7;
        })
        .await;
        let user = s.create_user("dave").await;
        let (factor, secret) = s.enroll_totp(&user).await;
        let codes = s.activate(&factor, &s.code(&secret, 0)).await["recoveryCodes"].clone();
        s.clock.advance(TimeDelta::seconds(30));
        let wrong = |s: &TestServer| {
            if s.code(&secret, 0) == "000000" {
                "111111"
            } else {
                "000000"
            }
        };
        // Two lockout cycles of 3, then one recovery-code failure: 7 consecutive failures.
        for _ in 0..2 {
            for _ in 0..3 {
                assert_eq!(s.verify(&factor, wrong(&s)).await, "REJECTED");
            }
            assert_eq!(s.verify(&factor, wrong(&s)).await, "LOCKED_OUT");
            s.clock.advance(TimeDelta::seconds(61));
        }
        assert_eq!(remaining(&s, &user).await["secondFactorLocked"], false);
        assert_eq!(use_code(&s, &user, "ZZZZZ-ZZZZZ").await, "REJECTED");
        assert_eq!(remaining(&s, &user).await["secondFactorLocked"], true);

        // Locked for good: the right code and a valid recovery code are refused unchecked.
        s.clock.advance(TimeDelta::hours(2));
        assert_eq!(s.verify(&factor, &s.code(&secret, 0)).await, "LOCKED_OUT");
        assert_eq!(
            use_code(&s, &user, codes[0].as_str().unwrap()).await,
            "LOCKED_OUT"
        );
        assert_eq!(remaining(&s, &user).await["recoveryCodesRemaining"], 10);

        let r = s
            .ok(
                "mutation($u: ID!) { unlockUser(input: {userId: $u}) { secondFactorLocked } }",
                json!({ "u": user }),
            )
            .await;
        assert_eq!(r["unlockUser"]["secondFactorLocked"], false);
        assert_eq!(s.verify(&factor, &s.code(&secret, 0)).await, "SUCCESS");
        let again = s
            .gql(
                "mutation($u: ID!) { unlockUser(input: {userId: $u}) { id } }",
                json!({ "u": user }),
            )
            .await;
        assert_eq!(error_code(&again), "CONFLICT");
    }
);

both_stores!(
    a_success_resets_the_users_failure_budget,
    |store| async move {
        let s = TestServer::start_with(store, |c| c.hard_lock_threshold = 4).await;
        let (user, factor, secret) = s.active_totp("erin").await;
        for _ in 0..3 {
            assert_eq!(s.verify(&factor, "000000").await, "REJECTED");
        }
        s.clock.advance(TimeDelta::seconds(30));
        assert_eq!(s.verify(&factor, &s.code(&secret, 0)).await, "SUCCESS");
        for _ in 0..3 {
            assert_eq!(s.verify(&factor, "000000").await, "REJECTED");
        }
        assert_eq!(remaining(&s, &user).await["secondFactorLocked"], false);
    }
);

both_stores!(
    sixty_aliased_guesses_are_refused_whole,
    |store| async move {
        let s = TestServer::start(store).await;
        let (_, factor, _) = s.active_totp("frank").await;
        let before = s.events_of(&factor).await.len();
        let fields: String = (0..60)
        .map(|i| format!("g{i}: verifyFactor(input: {{factorId: \"{factor}\", passCode: \"{:06}\"}}) {{ factorResult }} ", i * 7))
        .collect();
        let r = s.gql(&format!("mutation {{ {fields} }}"), json!({})).await;
        assert_eq!(error_code(&r), "RATE_LIMITED", "{r}");
        assert_eq!(error_reason(&r), "PROOF_BUDGET_EXCEEDED");
        assert!(r["data"].is_null());
        // Through a fragment, too.
        let r = s
        .gql(
            &format!("mutation {{ ...G ...G }} fragment G on Mutation {{ verifyFactor(input: {{factorId: \"{factor}\", passCode: \"000000\"}}) {{ factorResult }} }}"),
            json!({}),
        )
        .await;
        assert_eq!(error_code(&r), "RATE_LIMITED", "{r}");
        // A batched array of guesses is refused whole as well.
        let one = json!({ "query": format!("mutation {{ verifyFactor(input: {{factorId: \"{factor}\", passCode: \"000000\"}}) {{ factorResult }} }}") });
        let batch = Value::Array(vec![one; 60]);
        let response = s
            .http
            .post(format!("{}/graphql", s.base))
            .bearer_auth(tessera_tests::ADMIN_KEY)
            .json(&batch)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        assert_eq!(
            s.events_of(&factor).await.len(),
            before,
            "nothing was checked or recorded"
        );
    }
);

both_stores!(depth_limit_refuses_deep_queries, |store| async move {
    let s = TestServer::start(store).await;
    let mut q = String::from("name");
    for _ in 0..14 {
        q = format!("ofType {{ {q} }}");
    }
    let r = s
        .gql(
            &format!("{{ __schema {{ types {{ fields {{ type {{ {q} }} }} }} }} }}"),
            json!({}),
        )
        .await;
    assert_eq!(error_code(&r), "GRAPHQL_VALIDATION_FAILED", "{r}");
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("nested too deep"),
        "{r}"
    );
});

both_stores!(
    the_hard_lock_also_covers_step_up_answers,
    |store| async move {
        let s = TestServer::start_with(store, |c| c.hard_lock_threshold = 2).await;
        let (user, factor, secret) = s.active_totp("grace").await;
        let start = "mutation($u: ID!) { startStepUp(input: {userId: $u, state: {}, ttlSeconds: 300}) { challenge { id } } }";
        let complete = "mutation($c: ID!, $f: ID!, $p: String!) { completeStepUp(input: {challengeId: $c, factorId: $f, passCode: $p}) { factorResult } }";
        let challenge =
            s.ok(start, json!({ "u": user })).await["startStepUp"]["challenge"]["id"].clone();
        let wrong = if s.code(&secret, 0) == "000000" {
            "111111"
        } else {
            "000000"
        };
        for _ in 0..2 {
            let r = s
                .ok(complete, json!({ "c": challenge, "f": factor, "p": wrong }))
                .await;
            assert_eq!(r["completeStepUp"]["factorResult"], "REJECTED");
        }
        assert_eq!(
            remaining(&s, &user).await["secondFactorLocked"],
            true,
            "step-up failures count"
        );
        let r = s
            .ok(
                complete,
                json!({ "c": challenge, "f": factor, "p": s.code(&secret, 0) }),
            )
            .await;
        assert_eq!(
            r["completeStepUp"]["factorResult"], "LOCKED_OUT",
            "the right code is not checked"
        );
        assert_eq!(s.verify(&factor, &s.code(&secret, 0)).await, "LOCKED_OUT");
    }
);

both_stores!(
    parallel_guesses_on_two_factors_reach_the_hard_lock_exactly,
    |store| async move {
        let s = TestServer::start_with(store, |c| {
            c.lockout_threshold = 1000;
            c.hard_lock_threshold = 6;
        })
        .await;
        let (user, first, secret) = s.active_totp("hana").await;
        let (second, second_secret) = s.enroll_totp(&user).await;
        assert_eq!(
            s.activate(&second, &s.code(&second_secret, 0)).await["factorResult"],
            "SUCCESS"
        );
        let (a, b) = (s.wrong_code(&secret), s.wrong_code(&second_secret));
        let guesses = (0..40).map(|i| {
            if i % 2 == 0 {
                s.verify(&first, &a)
            } else {
                s.verify(&second, &b)
            }
        });
        let results = futures::future::join_all(guesses).await;
        // A guess either is checked and counted in the same commit, or finds the user locked
        // and is not checked at all: never a checked guess past the budget.
        assert_eq!(
            results.iter().filter(|r| *r == "REJECTED").count(),
            6,
            "{results:?}"
        );
        assert_eq!(
            results.iter().filter(|r| *r == "LOCKED_OUT").count(),
            34,
            "{results:?}"
        );
        let checked =
            s.failures(&first, "WRONG_CODE").await + s.failures(&second, "WRONG_CODE").await;
        assert_eq!(checked, 6);
        let user_events = s.events_of(&user).await;
        let reasons: Vec<&str> = user_events
            .iter()
            .filter(|(t, _)| t == "FailedAttempt")
            .map(|(_, p)| p["FailedAttempt"]["reason"].as_str().unwrap())
            .collect();
        let count = |reason: &str| reasons.iter().filter(|r| **r == reason).count();
        assert_eq!(count("FACTOR_CHECK_FAILED"), 6, "{reasons:?}");
        assert_eq!(count("LOCKED"), 34, "{reasons:?}");
        assert_eq!(
            user_events.iter().filter(|(t, _)| t == "LockedOut").count(),
            1
        );
    }
);

both_stores!(
    a_checked_code_and_its_count_on_the_user_commit_together,
    |store| async move {
        let s = TestServer::start(store).await;
        let (user, factor, secret) = s.active_totp("ines").await;
        let before = s.event_types("Factor", &factor).await;
        // The database refuses the user's half of the commit.
        let refuse = match s.store {
            tessera_tests::Store::Postgres => vec![
                "CREATE FUNCTION refuse_user_events() RETURNS trigger LANGUAGE plpgsql AS $$ \
                 BEGIN RAISE EXCEPTION 'refused'; END $$",
                "CREATE TRIGGER refuse_user_events BEFORE INSERT ON events FOR EACH ROW \
                 WHEN (NEW.aggregate_type = 'User') EXECUTE FUNCTION refuse_user_events()",
            ],
            tessera_tests::Store::Sqlite => vec![
                "CREATE TRIGGER refuse_user_events BEFORE INSERT ON events \
                 WHEN NEW.aggregate_type = 'User' BEGIN SELECT RAISE(ABORT, 'refused'); END",
            ],
        };
        for sql in refuse {
            s.execute_sql(sql).await;
        }
        let response = s.verify_raw(&factor, &s.wrong_code(&secret)).await;
        assert_eq!(error_code(&response), "INTERNAL", "{response}");
        // Neither half was written: the factor's FailedAttempt went with the user's count.
        assert_eq!(s.event_types("Factor", &factor).await, before);
        assert_eq!(s.failures(&factor, "WRONG_CODE").await, 0);
        s.execute_sql(match s.store {
            tessera_tests::Store::Postgres => "DROP TRIGGER refuse_user_events ON events",
            tessera_tests::Store::Sqlite => "DROP TRIGGER refuse_user_events",
        })
        .await;
        assert_eq!(s.verify(&factor, &s.wrong_code(&secret)).await, "REJECTED");
        assert_eq!(s.failures(&factor, "WRONG_CODE").await, 1);
        let counted = s
            .events_of(&user)
            .await
            .iter()
            .filter(|(t, _)| t == "FailedAttempt")
            .count();
        assert_eq!(counted, 1);
    }
);
