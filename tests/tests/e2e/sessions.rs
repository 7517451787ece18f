//! Token generations: a password change, a hard lock, a deactivation and `revokeSessions`
//! end every access token the user had; a fresh login works again.

use serde_json::{Value, json};
use tessera_tests::{TestServer, both_stores, error_code, jwt_claims};

const PASSWORD: &str = "correct horse battery";
const ME: &str = "{ me { id } }";
const REVOKE: &str = "mutation($u: ID!) { revokeSessions(input: {userId: $u}) { user { id } } }";

async fn me(s: &TestServer, token: &str) -> Value {
    s.gql_as(Some(token), ME, json!({})).await
}

async fn assert_ended(s: &TestServer, token: &str, why: &str) {
    let r = me(s, token).await;
    assert_eq!(error_code(&r), "UNAUTHENTICATED", "{why}: {r}");
}

async fn assert_works(s: &TestServer, token: &str, user: &str) {
    let r = me(s, token).await;
    assert_eq!(r["data"]["me"]["id"], user, "{r}");
}

/// The reasons of the user's `SessionsRevoked` events, oldest first.
async fn revocations(s: &TestServer, user: &str) -> Vec<String> {
    s.events("User", user)
        .await
        .into_iter()
        .filter(|(t, _)| t == "SessionsRevoked")
        .map(|(_, p)| {
            p["SessionsRevoked"]["reason"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

both_stores!(
    a_password_change_and_revoke_sessions_end_every_token,
    |store| async move {
        let s = TestServer::start(store).await;
        let alice = s.create_full_user("alice", PASSWORD).await;
        let bob = s.create_full_user("bob", PASSWORD).await;
        let (one, two) = (
            s.password_token("alice", PASSWORD).await,
            s.password_token("alice", PASSWORD).await,
        );
        let bobs = s.password_token("bob", PASSWORD).await;
        assert_eq!(jwt_claims(&one)["generation"], 0);
        // Alice changes her password with one token: both end.
        let r = s
            .gql_as(
                Some(&one),
                "mutation($u: ID!, $c: String!) { setPasswordV2(input: {userId: $u, password: \"a new passphrase\", currentPassword: $c}) { user { id } } }",
                json!({ "u": alice, "c": PASSWORD }),
            )
            .await;
        assert_eq!(
            r["data"]["setPasswordV2"]["user"]["id"],
            alice.as_str(),
            "{r}"
        );
        assert_ended(&s, &one, "the token that changed the password").await;
        assert_ended(&s, &two, "another token of hers").await;
        assert_works(&s, &bobs, &bob).await;
        let three = s.password_token("alice", "a new passphrase").await;
        assert_eq!(jwt_claims(&three)["generation"], 1);
        assert_works(&s, &three, &alice).await;
        // An admin's password reset ends them too.
        s.ok(
            "mutation($u: ID!) { setPasswordV2(input: {userId: $u, password: \"reset by admin\"}) { user { id } } }",
            json!({ "u": alice }),
        )
        .await;
        assert_ended(&s, &three, "after an admin's reset").await;
        // A user logs out everywhere, but only herself.
        let four = s.password_token("alice", "reset by admin").await;
        let five = s.password_token("alice", "reset by admin").await;
        let r = s.gql_as(Some(&four), REVOKE, json!({ "u": bob })).await;
        assert_eq!(error_code(&r), "FORBIDDEN", "{r}");
        assert_works(&s, &bobs, &bob).await;
        let r = s.gql_as(Some(&four), REVOKE, json!({ "u": alice })).await;
        assert_eq!(
            r["data"]["revokeSessions"]["user"]["id"],
            alice.as_str(),
            "{r}"
        );
        assert_ended(&s, &four, "the token that logged out").await;
        assert_ended(&s, &five, "the other session").await;
        // And an admin for her.
        s.ok(REVOKE, json!({ "u": bob })).await;
        assert_ended(&s, &bobs, "after an admin's revokeSessions").await;
        assert_eq!(
            revocations(&s, &alice).await,
            ["PASSWORD_CHANGED", "PASSWORD_CHANGED", "REQUESTED"]
        );
        let r = s
            .gql(
                REVOKE,
                json!({ "u": "0190aaaa-0000-7000-8000-000000000000" }),
            )
            .await;
        assert_eq!(error_code(&r), "NOT_FOUND", "{r}");
    }
);

both_stores!(
    a_deactivation_ends_every_token_for_good,
    |store| async move {
        let s = TestServer::start(store).await;
        let alice = s.create_full_user("alice", PASSWORD).await;
        let token = s.password_token("alice", PASSWORD).await;
        s.ok(
            "mutation($u: ID!) { deactivateUser(input: {userId: $u}) { user { id } } }",
            json!({ "u": alice }),
        )
        .await;
        assert_ended(&s, &token, "after deactivation").await;
        s.ok(
            "mutation($u: ID!) { reactivateUser(input: {userId: $u}) { user { id } } }",
            json!({ "u": alice }),
        )
        .await;
        assert_ended(&s, &token, "a reactivation does not bring it back").await;
        let fresh = s.password_token("alice", PASSWORD).await;
        assert_works(&s, &fresh, &alice).await;
        assert_eq!(revocations(&s, &alice).await, ["DEACTIVATED"]);
    }
);

both_stores!(a_hard_lock_ends_every_token, |store| async move {
    let s = TestServer::start_with(store, |c| c.hard_lock_threshold = 3).await;
    let alice = s.create_full_user("alice", PASSWORD).await;
    let (factor, secret) = s.enroll_totp(&alice).await;
    s.activate(&factor, &s.code(&secret, 0)).await;
    let token = s.mfa_token("alice", PASSWORD, &factor, &secret).await;
    let wrong = s.wrong_code(&secret);
    let verify = "mutation($f: ID!, $c: String!) { verifyFactor(input: {factorId: $f, passCode: $c}) { factorResult } }";
    for _ in 0..2 {
        let r = s
            .gql_as(Some(&token), verify, json!({ "f": factor, "c": wrong }))
            .await;
        assert_eq!(r["data"]["verifyFactor"]["factorResult"], "REJECTED", "{r}");
    }
    assert_works(&s, &token, &alice).await;
    let r = s
        .gql_as(Some(&token), verify, json!({ "f": factor, "c": wrong }))
        .await;
    assert_eq!(r["data"]["verifyFactor"]["factorResult"], "REJECTED", "{r}");
    assert_ended(&s, &token, "after the hard lock").await;
    assert_eq!(revocations(&s, &alice).await, ["HARD_LOCKED"]);
});
