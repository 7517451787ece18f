//! verifyFactor: replay, skew, lockout, restart, concurrency.

use chrono::TimeDelta;
use serde_json::json;
use tessera_tests::{Store, TestServer, both_stores};

both_stores!(a_code_is_accepted_once, |store| async move {
    let s = TestServer::start(store).await;
    let (_, factor, secret) = s.active_totp("alice").await;
    let code = s.code(&secret, 0);
    assert_eq!(s.verify(&factor, &code).await, "SUCCESS");
    assert_eq!(s.verify(&factor, &code).await, "PASSCODE_REPLAYED");
    // The previous step's code is older than the step just used: also refused.
    assert_eq!(
        s.verify(&factor, &s.code(&secret, -1)).await,
        "PASSCODE_REPLAYED"
    );
    // A replay is not a guess: it does not count towards lockout.
    let r = s.verify_raw(&factor, &code).await;
    assert_eq!(r["data"]["verifyFactor"]["factor"]["failedAttempts"], 0);
});

both_stores!(
    skew_window_accepts_one_step_either_side_only,
    |store| async move {
        let s = TestServer::start(store).await;
        let (_, factor, secret) = s.active_totp("alice").await;
        // Move well past the activation step, so no step in the window was used before.
        s.clock.advance(TimeDelta::seconds(90));
        assert_eq!(s.verify(&factor, &s.code(&secret, -2)).await, "REJECTED");
        assert_eq!(s.verify(&factor, &s.code(&secret, 2)).await, "REJECTED");
        assert_eq!(s.verify(&factor, &s.code(&secret, -1)).await, "SUCCESS");
        assert_eq!(s.verify(&factor, &s.code(&secret, 1)).await, "SUCCESS");
        // Step +1 is now used, so the current step (earlier) is a replay.
        assert_eq!(
            s.verify(&factor, &s.code(&secret, 0)).await,
            "PASSCODE_REPLAYED"
        );
    }
);

both_stores!(
    zero_skew_accepts_only_the_current_step,
    |store| async move {
        let s = TestServer::start_with(store, |c| c.totp_skew_steps = 0).await;
        let (_, factor, secret) = s.active_totp("alice").await;
        assert_eq!(s.verify(&factor, &s.code(&secret, -1)).await, "REJECTED");
        assert_eq!(s.verify(&factor, &s.code(&secret, 1)).await, "REJECTED");
        assert_eq!(s.verify(&factor, &s.code(&secret, 0)).await, "SUCCESS");
    }
);

both_stores!(
    lockout_after_threshold_then_automatic_unlock,
    |store| async move {
        let s = TestServer::start_with(store, |c| {
            c.lockout_threshold = 3;
            c.lockout_seconds = 120;
        })
        .await;
        let (_, factor, secret) = s.active_totp("alice").await;
        let right = s.code(&secret, 0);
        let wrong = if right == "999999" {
            "999998"
        } else {
            "999999"
        };
        for n in 1..=3 {
            let r = s.verify_raw(&factor, wrong).await;
            assert_eq!(r["data"]["verifyFactor"]["factorResult"], "REJECTED");
            assert_eq!(r["data"]["verifyFactor"]["factor"]["failedAttempts"], n);
        }
        let read = s
            .ok(
                "query($f: ID!) { factor(id: $f) { status failedAttempts lockedUntil } }",
                json!({ "f": factor }),
            )
            .await;
        assert_eq!(read["factor"]["status"], "LOCKED_OUT");
        assert_eq!(read["factor"]["failedAttempts"], 3);
        // Locked: even the right code is refused without being checked, and not consumed.
        assert_eq!(s.verify(&factor, &right).await, "LOCKED_OUT");
        s.clock.advance(TimeDelta::seconds(119));
        assert_eq!(s.verify(&factor, &s.code(&secret, 0)).await, "LOCKED_OUT");
        s.clock.advance(TimeDelta::seconds(1));
        let read = s
            .ok(
                "query($f: ID!) { factor(id: $f) { status } }",
                json!({ "f": factor }),
            )
            .await;
        assert_eq!(read["factor"]["status"], "ACTIVE");
        let r = s.verify_raw(&factor, &s.code(&secret, 0)).await;
        assert_eq!(r["data"]["verifyFactor"]["factorResult"], "SUCCESS");
        assert_eq!(r["data"]["verifyFactor"]["factor"]["failedAttempts"], 0);
    }
);

both_stores!(restart_keeps_state_and_replay_memory, |store| async move {
    let mut s = TestServer::start(store).await;
    let (user, factor, secret) = s.active_totp("alice").await;
    let code = s.code(&secret, 0);
    assert_eq!(s.verify(&factor, &code).await, "SUCCESS");
    s.restart().await;
    assert_eq!(s.verify(&factor, &code).await, "PASSCODE_REPLAYED");
    let read = s
        .ok(
            "query($u: ID!) { user(id: $u) { login factors { id status } } }",
            json!({ "u": user }),
        )
        .await;
    assert_eq!(read["user"]["factors"][0]["status"], "ACTIVE");
    s.clock.advance(TimeDelta::seconds(30));
    assert_eq!(s.verify(&factor, &s.code(&secret, 0)).await, "SUCCESS");
    if store == Store::Sqlite {
        // The generated key file is reused, not regenerated, across restarts.
        let key = s.dir.as_ref().unwrap().join("tessera.db.key");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
});

both_stores!(
    sixteen_concurrent_verifications_of_one_code_succeed_once,
    |store| async move {
        let s = TestServer::start(store).await;
        let (_, factor, secret) = s.active_totp("alice").await;
        let code = s.code(&secret, 0);
        let attempts = (0..16).map(|_| s.verify_raw(&factor, &code));
        let responses = futures::future::join_all(attempts).await;
        let mut results: Vec<String> = responses
            .iter()
            .map(|r| {
                r["data"]["verifyFactor"]["factorResult"]
                    .as_str()
                    .unwrap_or_else(|| panic!("error instead of a result: {r}"))
                    .to_string()
            })
            .collect();
        results.sort();
        let successes = results.iter().filter(|r| *r == "SUCCESS").count();
        assert_eq!(successes, 1, "{results:?}");
        assert_eq!(
            results.iter().filter(|r| *r == "PASSCODE_REPLAYED").count(),
            15,
            "{results:?}"
        );
    }
);

/// `code` as authenticator apps show it: two groups of three.
fn grouped(code: &str, separator: &str) -> String {
    format!("{}{separator}{}", &code[..3], &code[3..])
}

both_stores!(
    totp_codes_typed_as_apps_show_them_are_accepted,
    |store| async move {
        let s = TestServer::start(store).await;
        let user = s.create_full_user("alice", "correct horse battery").await;
        let (factor, secret) = s.enroll_totp(&user).await;
        let activated = s
            .activate(&factor, &grouped(&s.code(&secret, 0), " "))
            .await;
        assert_eq!(activated["factorResult"], "SUCCESS", "{activated}");
        s.clock.advance(TimeDelta::seconds(30));
        let code = s.code(&secret, 0);
        assert_eq!(s.verify(&factor, &grouped(&code, "-")).await, "SUCCESS");
        // The same code with other separators is the same code: a replay.
        assert_eq!(
            s.verify(&factor, &grouped(&code, " ")).await,
            "PASSCODE_REPLAYED"
        );
        // A wrong code with a space is checked and counted like any wrong code.
        let r = s
            .verify_raw(&factor, &grouped(&s.wrong_code(&secret), " "))
            .await;
        assert_eq!(r["data"]["verifyFactor"]["factorResult"], "REJECTED", "{r}");
        assert_eq!(r["data"]["verifyFactor"]["factor"]["failedAttempts"], 1);
        // Separators do not make a short code well-formed.
        let r = s.verify_raw(&factor, "123 45").await;
        assert_eq!(tessera_tests::error_code(&r), "BAD_USER_INPUT", "{r}");
        assert_eq!(tessera_tests::error_reason(&r), "MALFORMED_PASS_CODE");
        // The login hand-off takes them too.
        s.clock.advance(TimeDelta::seconds(30));
        let login = s.login("alice", "correct horse battery").await;
        let challenge = login["data"]["login"]["challenge"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{login}"))
            .to_string();
        let done = s
            .complete_login(&challenge, &factor, &grouped(&s.code(&secret, 0), " "))
            .await;
        assert_eq!(
            done["data"]["completeLogin"]["factorResult"], "SUCCESS",
            "{done}"
        );
        assert!(done["data"]["completeLogin"]["accessToken"].is_string());
    }
);
