//! Aggregates kept in memory (`TESSERA_AGGREGATE_CACHE`): a kept user or factor is never acted
//! on stale. Whatever another node (or a writer behind the server's back) appended is read on
//! the next load, so revocations and hard locks hold at once on every node.

use serde_json::json;
use tessera_tests::{TestServer, both_stores, error_code, error_reason};

const PASSWORD: &str = "correct horse battery";
const ME: &str = "{ me { id } }";
const VERIFY: &str = "mutation($f: ID!, $c: String!) { verifyFactor(input: {factorId: $f, passCode: $c}) { factorResult } }";

both_stores!(
    a_kept_factor_folds_what_was_appended_behind_its_back,
    |store| async move {
        let s = TestServer::start(store).await;
        let (_, factor, secret) = s.active_totp("alice").await;
        let r = s.verify_raw(&factor, &s.wrong_code(&secret)).await;
        assert_eq!(
            r["data"]["verifyFactor"]["factor"]["failedAttempts"], 1,
            "{r}"
        );
        let store = &s.server().state.factors;
        let (kept, seq) = store.load(&factor).await.unwrap();
        assert_eq!(kept.consecutive_failures, 1);
        // Another writer appends the next event.
        let db = &s.server().state.db;
        let mut conn = db.pool.acquire().await.unwrap();
        let failure = json!({ "FailedAttempt": { "reason": "WRONG_CODE", "consecutive_failures": 2,
                                             "at": "2026-01-01T00:00:00Z" } });
        tessera_tests::raw::append_one(
            &mut conn,
            db.dialect,
            ("Factor", &factor, i64::try_from(seq + 1).unwrap()),
            "FailedAttempt",
            failure,
        )
        .await;
        drop(conn);
        let (loaded, loaded_seq) = store.load(&factor).await.unwrap();
        assert_eq!(loaded_seq, seq + 1);
        assert_eq!(loaded.consecutive_failures, 2);
        assert_eq!(
            (loaded, loaded_seq),
            store.load_by_replay(&factor).await.unwrap()
        );
        // And the next verification counts on from there.
        let r = s.verify_raw(&factor, &s.wrong_code(&secret)).await;
        assert_eq!(
            r["data"]["verifyFactor"]["factor"]["failedAttempts"], 3,
            "{r}"
        );
    }
);

both_stores!(
    a_token_revoked_on_one_node_is_refused_at_once_on_another,
    |store| async move {
        let a = TestServer::start(store).await;
        let b = a.another_node().await;
        let alice = a.create_full_user("alice", PASSWORD).await;
        let token = a.password_token("alice", PASSWORD).await;
        // Node A has checked the token, and so loaded (and kept) alice.
        for _ in 0..2 {
            let r = a.gql_as(Some(&token), ME, json!({})).await;
            assert_eq!(r["data"]["me"]["id"], alice.as_str(), "{r}");
        }
        b.ok(
            "mutation($u: ID!) { revokeSessions(input: {userId: $u}) { user { id } } }",
            json!({ "u": alice }),
        )
        .await;
        let r = a.gql_as(Some(&token), ME, json!({})).await;
        assert_eq!(error_code(&r), "UNAUTHENTICATED", "{r}");
    }
);

both_stores!(
    a_hard_lock_on_one_node_holds_at_once_on_another_that_kept_the_user,
    |store| async move {
        let a = TestServer::start_with(store, |c| {
            c.hard_lock_threshold = 3;
            c.lockout_threshold = 100;
        })
        .await;
        let b = a.another_node().await;
        let alice = a.create_user("alice").await;
        let (first, first_secret) = a.active_totp_of(&alice).await;
        let (second, second_secret) = a.active_totp_of(&alice).await;
        // Node A loads (and keeps) alice and her first factor.
        let r = a
            .gql(
                VERIFY,
                json!({ "f": first, "c": a.wrong_code(&first_secret) }),
            )
            .await;
        assert_eq!(r["data"]["verifyFactor"]["factorResult"], "REJECTED", "{r}");
        // Node B locks her hard through the second factor: nothing written to the first.
        for _ in 0..2 {
            let r = b
                .gql(
                    VERIFY,
                    json!({ "f": second, "c": b.wrong_code(&second_secret) }),
                )
                .await;
            assert_eq!(r["data"]["verifyFactor"]["factorResult"], "REJECTED", "{r}");
        }
        let (user, _) = b.server().state.users.load(&alice).await.unwrap();
        assert!(user.second_factor_locked, "the user is hard-locked");
        // The right code on node A is refused: A read the lock, not its kept user.
        a.clock.advance(chrono::TimeDelta::seconds(30));
        let r = a
            .gql(VERIFY, json!({ "f": first, "c": a.code(&first_secret, 0) }))
            .await;
        assert_ne!(r["data"]["verifyFactor"]["factorResult"], "SUCCESS", "{r}");
        assert_eq!(
            r["data"]["verifyFactor"]["factorResult"], "LOCKED_OUT",
            "{r}"
        );
    }
);

// Proofs are decided on the kept factor and user without reading them first; the append's
// unique key judges the streams they write to, a read confirms those they do not. Each test
// below has node A keep a state that node B then changes, and would pass a stale answer if
// either half were missing.

/// `(user, factor, secret)` with node A having verified once (so keeping both aggregates).
async fn kept_on_a(a: &TestServer, login: &str) -> (String, String, String) {
    let (user, factor, secret) = a.active_totp(login).await;
    let r = a.verify_raw(&factor, &a.wrong_code(&secret)).await;
    assert_eq!(r["data"]["verifyFactor"]["factorResult"], "REJECTED", "{r}");
    assert!(
        a.server().state.users.kept(&user).is_some(),
        "A keeps the user"
    );
    assert!(
        a.server().state.factors.kept(&factor).is_some(),
        "A keeps the factor"
    );
    (user, factor, secret)
}

/// The `FailedAttempt`s on the user's stream, as the database has them.
async fn failures_on_user(s: &TestServer, user: &str) -> usize {
    let (state, _) = s.server().state.users.load_by_replay(user).await.unwrap();
    usize::try_from(state.consecutive_failures).unwrap()
}

both_stores!(
    a_user_deactivated_on_one_node_is_refused_at_once_on_another_that_kept_it,
    |store| async move {
        let a = TestServer::start(store).await;
        let b = a.another_node().await;
        let (alice, alice_factor, alice_secret) = kept_on_a(&a, "alice").await;
        let (bob, bob_factor, bob_secret) = kept_on_a(&a, "bob").await;
        for user in [&alice, &bob] {
            b.ok(
                "mutation($u: ID!) { deactivateUser(input: {userId: $u}) { user { id } } }",
                json!({ "u": user }),
            )
            .await;
        }
        // A right code writes nothing to the user: the read before the answer sees it.
        a.clock.advance(chrono::TimeDelta::seconds(30));
        let r = a.verify_raw(&alice_factor, &a.code(&alice_secret, 0)).await;
        assert_eq!(error_reason(&r), "USER_DEACTIVATED", "{r}");
        // A wrong code would write to the user: its append loses to the deactivation.
        let r = a.verify_raw(&bob_factor, &a.wrong_code(&bob_secret)).await;
        assert_eq!(error_reason(&r), "USER_DEACTIVATED", "{r}");
        for (user, factor) in [(&alice, &alice_factor), (&bob, &bob_factor)] {
            assert_eq!(failures_on_user(&b, user).await, 1, "nothing counted since");
            let (f, _) = b
                .server()
                .state
                .factors
                .load_by_replay(factor)
                .await
                .unwrap();
            assert_eq!(f.consecutive_failures, 1, "nothing checked since");
        }
    }
);

both_stores!(
    a_factor_removed_on_one_node_is_not_verified_on_another_that_kept_it,
    |store| async move {
        let a = TestServer::start(store).await;
        let b = a.another_node().await;
        let (_, factor, secret) = kept_on_a(&a, "alice").await;
        b.ok(
            "mutation($f: ID!) { removeFactor(input: {factorId: $f}) { status } }",
            json!({ "f": factor }),
        )
        .await;
        a.clock.advance(chrono::TimeDelta::seconds(30));
        let r = a.verify_raw(&factor, &a.code(&secret, 0)).await;
        assert_eq!(error_reason(&r), "FACTOR_REMOVED", "{r}");
    }
);

both_stores!(
    a_factor_unlocked_on_one_node_verifies_on_another_that_kept_it_locked,
    |store| async move {
        let a = TestServer::start_with(store, |c| {
            c.lockout_threshold = 2;
            c.hard_lock_threshold = 100;
        })
        .await;
        let b = a.another_node().await;
        let (_, factor, secret) = kept_on_a(&a, "alice").await;
        let r = a.verify_raw(&factor, &a.wrong_code(&secret)).await;
        assert_eq!(
            r["data"]["verifyFactor"]["factor"]["status"], "LOCKED_OUT",
            "{r}"
        );
        b.ok(
            "mutation($f: ID!) { unlockFactor(input: {factorId: $f}) { status } }",
            json!({ "f": factor }),
        )
        .await;
        // A keeps the factor locked; a refusal writes nothing, so it is read again first.
        a.clock.advance(chrono::TimeDelta::seconds(30));
        let r = a.verify_raw(&factor, &a.code(&secret, 0)).await;
        assert_eq!(r["data"]["verifyFactor"]["factorResult"], "SUCCESS", "{r}");
    }
);

both_stores!(
    a_success_on_a_node_that_kept_a_user_without_failures_resets_the_failures_counted_since,
    |store| async move {
        let a = TestServer::start_with(store, |c| {
            c.lockout_threshold = 100;
            c.hard_lock_threshold = 100;
        })
        .await;
        let b = a.another_node().await;
        let alice = a.create_user("alice").await;
        let (first, first_secret) = a.active_totp_of(&alice).await;
        let (second, second_secret) = a.active_totp_of(&alice).await;
        // A keeps alice with no failure counted, and her first factor.
        a.clock.advance(chrono::TimeDelta::seconds(30));
        let r = a.verify_raw(&first, &a.code(&first_secret, 0)).await;
        assert_eq!(r["data"]["verifyFactor"]["factorResult"], "SUCCESS", "{r}");
        let (kept, _) = a.server().state.users.kept(&alice).expect("A keeps alice");
        assert_eq!(kept.consecutive_failures, 0);
        // B counts two failures on her, through the second factor: nothing written to the
        // first, whose next append therefore does not conflict.
        for _ in 0..2 {
            let r = b.verify_raw(&second, &b.wrong_code(&second_secret)).await;
            assert_eq!(r["data"]["verifyFactor"]["factorResult"], "REJECTED", "{r}");
        }
        assert_eq!(failures_on_user(&b, &alice).await, 2);
        // A success on A resets them: on its kept user there was nothing to reset (the
        // success would write to the factor alone), and only the read of the user before
        // the commit finds the two.
        a.clock.advance(chrono::TimeDelta::seconds(30));
        let r = a.verify_raw(&first, &a.code(&first_secret, 0)).await;
        assert_eq!(r["data"]["verifyFactor"]["factorResult"], "SUCCESS", "{r}");
        assert_eq!(failures_on_user(&b, &alice).await, 0, "the count was reset");
    }
);
