//! A bearer token alone does not take over a user's MFA: with a user token, adding, removing
//! or activating a factor, regenerating recovery codes and changing the password need a fresh
//! proof (a completed step-up named as `stepUpChallengeId`, or a token from a login with a
//! second factor within `TESSERA_REAUTH_SECONDS`); the first factor is the exception; nothing
//! changes while the user is hard-locked but through an admin; each factor change raises an
//! alert of its own kind.

use chrono::TimeDelta;
use serde_json::{Value, json};
use tessera_tests::{ADMIN_KEY, TestServer, both_stores, error_code, error_reason};

const PASSWORD: &str = "correct horse battery";
const ENROLL: &str = "mutation($u: ID!, $s: ID) { enrollFactor(input: {userId: $u, type: TOTP, stepUpChallengeId: $s}) { factor { id } totp { secretBase32 } } }";
const ACTIVATE: &str = "mutation($f: ID!, $c: String!, $s: ID) { activateFactor(input: {factorId: $f, passCode: $c, stepUpChallengeId: $s}) { factorResult } }";
const REGENERATE: &str = "mutation($u: ID!, $s: ID) { regenerateRecoveryCodes(input: {userId: $u, stepUpChallengeId: $s}) { recoveryCodes } }";
const REMOVE: &str = "mutation($f: ID!, $s: ID) { removeFactorV2(input: {factorId: $f, stepUpChallengeId: $s}) { factor { status } } }";
const SET_PASSWORD: &str = "mutation($u: ID!, $p: String!, $c: String, $s: ID) { setPasswordV2(input: {userId: $u, password: $p, currentPassword: $c, stepUpChallengeId: $s}) { user { id } } }";

fn assert_reauth_required(r: &Value, user: &str, what: &str) {
    assert_eq!(error_code(r), "FORBIDDEN", "{what}: {r}");
    assert_eq!(error_reason(r), "REAUTHENTICATION_REQUIRED", "{what}: {r}");
    let step_up = &r["errors"][0]["extensions"]["stepUp"];
    assert_eq!(step_up["startStepUp"]["userId"], user, "{what}: {r}");
    assert_eq!(step_up["thenPass"], "stepUpChallengeId");
    assert_eq!(step_up["maxAgeSeconds"], 600);
}

/// Every change a stolen password-only token tries, refused.
async fn every_change_refused(
    s: &TestServer,
    token: &str,
    user: &str,
    factor: &str,
    step_up: Option<&str>,
) {
    let as_user = |q: &'static str, v: Value| async move { s.gql_as(Some(token), q, v).await };
    let r = as_user(ENROLL, json!({ "u": user, "s": step_up })).await;
    assert_reauth_required(&r, user, "enrollFactor");
    let r = as_user(REGENERATE, json!({ "u": user, "s": step_up })).await;
    assert_reauth_required(&r, user, "regenerateRecoveryCodes");
    let r = as_user(REMOVE, json!({ "f": factor, "s": step_up })).await;
    assert_reauth_required(&r, user, "removeFactorV2");
    let r = as_user(
        "mutation($f: ID!, $s: ID) { removeFactor(input: {factorId: $f, stepUpChallengeId: $s}) { status } }",
        json!({ "f": factor, "s": step_up }),
    )
    .await;
    assert_reauth_required(&r, user, "removeFactor");
    let r = as_user(
        SET_PASSWORD,
        json!({ "u": user, "p": "a new passphrase", "c": PASSWORD, "s": step_up }),
    )
    .await;
    assert_reauth_required(&r, user, "setPasswordV2");
}

both_stores!(
    a_password_only_token_cannot_take_over_a_users_mfa,
    |store| async move {
        let s = TestServer::start(store).await;
        let user = s.create_full_user("alice", PASSWORD).await;
        // The token is taken while alice has no factor (a password-only login); then she
        // activates one, as the admin console does.
        let stolen = s.password_token("alice", PASSWORD).await;
        let (factor, secret) = s.enroll_totp(&user).await;
        assert_eq!(
            s.activate(&factor, &s.code(&secret, 0)).await["factorResult"],
            "SUCCESS"
        );
        let before = s.event_types("User", &user).await;
        every_change_refused(&s, &stolen, &user, &factor, None).await;
        // A step-up id that is not a completed step-up of hers is no proof: one still open,
        // one of another user, one that does not exist.
        let r = s
            .gql_as(
                Some(&stolen),
                "mutation($u: ID!) { startStepUp(input: {userId: $u}) { challenge { id } } }",
                json!({ "u": user }),
            )
            .await;
        let open = r["data"]["startStepUp"]["challenge"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        every_change_refused(&s, &stolen, &user, &factor, Some(&open)).await;
        let (bob, bobs_factor, bobs_secret) = s.active_totp("bob").await;
        let bobs = s
            .step_up_with(ADMIN_KEY, &bob, &bobs_factor, &bobs_secret)
            .await;
        every_change_refused(&s, &stolen, &user, &factor, Some(&bobs)).await;
        every_change_refused(
            &s,
            &stolen,
            &user,
            &factor,
            Some("0190aaaa-0000-7000-8000-000000000000"),
        )
        .await;
        // Nothing was written: no factor enrolled, none removed, no codes, no password.
        assert_eq!(s.event_types("User", &user).await, before);
        let r = s
            .ok(
                "query($u: ID!) { user(id: $u) { factors { id status } } }",
                json!({ "u": user }),
            )
            .await;
        assert_eq!(
            r["user"]["factors"],
            json!([{ "id": factor, "status": "ACTIVE" }])
        );
        // The admin key is not asked.
        let r = s.gql(REGENERATE, json!({ "u": user })).await;
        assert!(
            r["data"]["regenerateRecoveryCodes"]["recoveryCodes"].is_array(),
            "{r}"
        );
    }
);

both_stores!(
    a_completed_step_up_is_a_fresh_proof_for_its_window,
    |store| async move {
        let s = TestServer::start(store).await;
        let user = s.create_full_user("alice", PASSWORD).await;
        let token = s.password_token("alice", PASSWORD).await;
        let (factor, secret) = s.enroll_totp(&user).await;
        s.activate(&factor, &s.code(&secret, 0)).await;
        let as_user = |q: &'static str, v: Value| {
            let s = &s;
            let token = token.clone();
            async move { s.gql_as(Some(&token), q, v).await }
        };
        let proof = s.step_up_with(&token, &user, &factor, &secret).await;
        // Enrol and activate a second factor, regenerate the codes, change the password.
        let r = as_user(ENROLL, json!({ "u": user, "s": proof })).await;
        let second = r["data"]["enrollFactor"]["factor"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{r}"))
            .to_string();
        let second_secret = r["data"]["enrollFactor"]["totp"]["secretBase32"]
            .as_str()
            .unwrap()
            .to_string();
        let r = as_user(
            ACTIVATE,
            json!({ "f": second, "c": s.code(&second_secret, 0) }),
        )
        .await;
        assert_reauth_required(&r, &user, "activateFactor without the step-up");
        let r = as_user(
            ACTIVATE,
            json!({ "f": second, "c": s.code(&second_secret, 0), "s": proof }),
        )
        .await;
        assert_eq!(
            r["data"]["activateFactor"]["factorResult"], "SUCCESS",
            "{r}"
        );
        let r = as_user(REGENERATE, json!({ "u": user, "s": proof })).await;
        assert_eq!(
            r["data"]["regenerateRecoveryCodes"]["recoveryCodes"]
                .as_array()
                .map(Vec::len),
            Some(10),
            "{r}"
        );
        // 600 s after the step-up it is stale.
        s.clock.advance(TimeDelta::seconds(601));
        let r = as_user(REMOVE, json!({ "f": second, "s": proof })).await;
        assert_reauth_required(&r, &user, "removeFactor with a stale step-up");
        let fresh = s.step_up_with(&token, &user, &factor, &secret).await;
        let r = as_user(REMOVE, json!({ "f": second, "s": fresh })).await;
        assert_eq!(
            r["data"]["removeFactorV2"]["factor"]["status"], "REMOVED",
            "{r}"
        );
        let r = as_user(
            SET_PASSWORD,
            json!({ "u": user, "p": "a new passphrase", "c": PASSWORD, "s": fresh }),
        )
        .await;
        assert_eq!(
            r["data"]["setPasswordV2"]["user"]["id"],
            user.as_str(),
            "{r}"
        );
        let r = s.login("alice", "a new passphrase").await;
        assert_eq!(r["data"]["login"]["mfaRequired"], true, "{r}");
    }
);

both_stores!(
    an_mfa_token_is_a_fresh_proof_until_reauth_seconds,
    |store| async move {
        let s = TestServer::start(store).await;
        let user = s.create_full_user("alice", PASSWORD).await;
        let (factor, secret) = s.enroll_totp(&user).await;
        s.activate(&factor, &s.code(&secret, 0)).await;
        let token = s.mfa_token("alice", PASSWORD, &factor, &secret).await;
        let claims = tessera_tests::jwt_claims(&token);
        assert_eq!(claims["acr"], "mfa");
        assert_eq!(claims["auth_time"], claims["iat"]);
        let r = s
            .gql_as(Some(&token), REGENERATE, json!({ "u": user }))
            .await;
        assert!(
            r["data"]["regenerateRecoveryCodes"]["recoveryCodes"].is_array(),
            "{r}"
        );
        s.clock.advance(TimeDelta::seconds(601));
        // The token still works (it lives 900 s) but is no longer a fresh proof.
        let r = s.gql_as(Some(&token), "{ me { id } }", json!({})).await;
        assert_eq!(r["data"]["me"]["id"], user.as_str(), "{r}");
        let r = s
            .gql_as(Some(&token), REGENERATE, json!({ "u": user }))
            .await;
        assert_reauth_required(&r, &user, "regenerateRecoveryCodes 601 s after login");
    }
);

both_stores!(
    the_first_factor_needs_no_second_but_the_next_does,
    |store| async move {
        let s = TestServer::start(store).await;
        let user = s.create_full_user("alice", PASSWORD).await;
        let token = s.password_token("alice", PASSWORD).await;
        let r = s.gql_as(Some(&token), ENROLL, json!({ "u": user })).await;
        let factor = r["data"]["enrollFactor"]["factor"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{r}"))
            .to_string();
        let secret = r["data"]["enrollFactor"]["totp"]["secretBase32"]
            .as_str()
            .unwrap()
            .to_string();
        let r = s
            .gql_as(
                Some(&token),
                ACTIVATE,
                json!({ "f": factor, "c": s.code(&secret, 0) }),
            )
            .await;
        assert_eq!(
            r["data"]["activateFactor"]["factorResult"], "SUCCESS",
            "{r}"
        );
        // Now she has one: the same token may not add another.
        let r = s.gql_as(Some(&token), ENROLL, json!({ "u": user })).await;
        assert_reauth_required(&r, &user, "a second factor");
    }
);

both_stores!(
    nothing_changes_while_hard_locked_but_through_an_admin,
    |store| async move {
        let s = TestServer::start_with(store, |c| c.hard_lock_threshold = 3).await;
        let user = s.create_full_user("alice", PASSWORD).await;
        let (factor, secret) = s.enroll_totp(&user).await;
        s.activate(&factor, &s.code(&secret, 0)).await;
        let token = s.mfa_token("alice", PASSWORD, &factor, &secret).await;
        let wrong = s.wrong_code(&secret);
        for _ in 0..3 {
            let r = s
                .gql_as(
                    Some(&token),
                    "mutation($f: ID!, $c: String!) { verifyFactor(input: {factorId: $f, passCode: $c}) { factorResult } }",
                    json!({ "f": factor, "c": wrong }),
                )
                .await;
            assert_eq!(r["data"]["verifyFactor"]["factorResult"], "REJECTED", "{r}");
        }
        // The lock ended that token; a password-only one (policy DISABLED) changes nothing.
        let r = s.gql_as(Some(&token), "{ me { id } }", json!({})).await;
        assert_eq!(error_code(&r), "UNAUTHENTICATED", "{r}");
        s.ok(
            "mutation { setMfaPolicy(input: {mode: DISABLED, allowedFactorTypes: []}) { mode } }",
            json!({}),
        )
        .await;
        let token = s.password_token("alice", PASSWORD).await;
        for (query, vars) in [
            (REGENERATE, json!({ "u": user })),
            (REMOVE, json!({ "f": factor })),
            (ENROLL, json!({ "u": user })),
            (
                SET_PASSWORD,
                json!({ "u": user, "p": "a new passphrase", "c": PASSWORD }),
            ),
        ] {
            let r = s.gql_as(Some(&token), query, vars).await;
            assert_eq!(error_code(&r), "FORBIDDEN", "{query}: {r}");
            assert_eq!(error_reason(&r), "USER_HARD_LOCKED", "{query}: {r}");
        }
        let r = s.gql(REMOVE, json!({ "f": factor })).await;
        assert_eq!(
            r["data"]["removeFactorV2"]["factor"]["status"], "REMOVED",
            "{r}"
        );
    }
);

both_stores!(
    each_factor_change_raises_an_alert_of_its_own_kind,
    |store| async move {
        let s = TestServer::start(store).await;
        let user = s.create_full_user("alice", PASSWORD).await;
        let (factor, secret) = s.enroll_totp(&user).await;
        s.activate(&factor, &s.code(&secret, 0)).await;
        s.ok(REGENERATE, json!({ "u": user })).await;
        s.ok(REMOVE, json!({ "f": factor })).await;
        let mut kinds: Vec<String> = Vec::new();
        for _ in 0..100 {
            let r = s
                .ok(
                    "query($u: ID!) { securityAlerts(userId: $u) { edges { node { kind } } } }",
                    json!({ "u": user }),
                )
                .await;
            kinds = r["securityAlerts"]["edges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["node"]["kind"].as_str().unwrap().to_string())
                .collect();
            if kinds.len() >= 3 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        kinds.sort_unstable();
        assert_eq!(
            kinds,
            [
                "FACTOR_ADDED",
                "FACTOR_REMOVED",
                "RECOVERY_CODES_REGENERATED"
            ]
        );
    }
);
