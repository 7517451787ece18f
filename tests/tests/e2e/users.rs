//! The user lifecycle: `updateUser` (factors keep their destinations), `deactivateUser` (no
//! login, answered as a wrong password; no proof, a typed error) and `reactivateUser`.

use serde_json::{Value, json};
use tessera_tests::{TestServer, both_stores, error_code, error_reason};

const PASSWORD: &str = "correct horse battery staple";
const WRONG: &str = "not the password at all";

const UPDATE: &str = "mutation($u: ID!, $e: String, $p: String, $d: String) { updateUser(input: {userId: $u, email: $e, phoneNumber: $p, displayName: $d}) { user { id email phoneNumber displayName status } } }";
const DEACTIVATE: &str =
    "mutation($u: ID!) { deactivateUser(input: {userId: $u}) { user { id status } } }";
const REACTIVATE: &str =
    "mutation($u: ID!) { reactivateUser(input: {userId: $u}) { user { id status } } }";
const START: &str = "mutation($u: ID!) { startStepUp(input: {userId: $u}) { challenge { id } } }";

/// A login answer with what differs between two calls (the request's path, nothing else
/// is expected to) left out.
fn answer(r: &Value) -> Value {
    json!({ "data": r["data"], "message": r["errors"][0]["message"],
            "extensions": r["errors"][0]["extensions"] })
}

both_stores!(
    update_user_leaves_factor_destinations_alone,
    |store| async move {
        let s = TestServer::start(store).await;
        let user = s.create_full_user("alice", PASSWORD).await;
        let sms = s.enroll_oob(&user, "SMS", "+14155550111").await["factor"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let email = s.enroll_oob(&user, "EMAIL", "old@example.com").await["factor"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let r = s
            .ok(
                UPDATE,
                json!({ "u": user, "e": "new@example.com", "p": "+14155550999", "d": "Alice A." }),
            )
            .await;
        let u = &r["updateUser"]["user"];
        assert_eq!(u["email"], "new@example.com");
        assert_eq!(u["phoneNumber"], "+14155550999");
        assert_eq!(u["displayName"], "Alice A.");
        // Only the display name: the rest stays.
        let r = s.ok(UPDATE, json!({ "u": user, "d": "Al" })).await;
        assert_eq!(r["updateUser"]["user"]["email"], "new@example.com");
        assert_eq!(r["updateUser"]["user"]["displayName"], "Al");
        let read = s
            .ok(
                "query($u: ID!) { user(id: $u) { email phoneNumber factors { id phoneNumber email } } }",
                json!({ "u": user }),
            )
            .await;
        assert_eq!(read["user"]["phoneNumber"], "+14155550999");
        for f in read["user"]["factors"].as_array().unwrap() {
            if f["id"] == sms.as_str() {
                assert_eq!(f["phoneNumber"], "+14155550111", "{f}");
            } else if f["id"] == email.as_str() {
                assert_eq!(f["email"], "old@example.com", "{f}");
            }
        }
        let types = s.event_types("User", &user).await;
        assert_eq!(
            types.iter().filter(|t| *t == "ProfileUpdated").count(),
            2,
            "{types:?}"
        );
        let r = s
            .gql(UPDATE, json!({ "u": user, "e": "not an address" }))
            .await;
        assert_eq!(error_code(&r), "BAD_USER_INPUT");
    }
);

both_stores!(
    a_deactivated_user_cannot_log_in_or_prove_until_reactivated,
    |store| async move {
        let s = TestServer::start(store).await;
        let user = s.create_full_user("carol", PASSWORD).await;
        let (factor, secret) = s.enroll_totp(&user).await;
        assert_eq!(
            s.activate(&factor, &s.code(&secret, 0)).await["factorResult"],
            "SUCCESS"
        );
        s.clock.advance(chrono::TimeDelta::seconds(30));
        let ok = s.login("carol", PASSWORD).await;
        assert_eq!(ok["data"]["login"]["mfaRequired"], true, "{ok}");
        let wrong = answer(&s.login("carol", WRONG).await);
        assert_eq!(wrong["extensions"]["code"], "UNAUTHENTICATED", "{wrong}");

        let r = s.ok(DEACTIVATE, json!({ "u": user })).await;
        assert_eq!(r["deactivateUser"]["user"]["status"], "DEACTIVATED");
        let r = s.gql(DEACTIVATE, json!({ "u": user })).await;
        assert_eq!(error_reason(&r), "USER_DEACTIVATED");

        // The right password answers exactly as a wrong one.
        assert_eq!(answer(&s.login("carol", PASSWORD).await), wrong);
        assert_eq!(answer(&s.login("carol", WRONG).await), wrong);
        // Proofs by an admin or anyone: a typed error, nothing checked.
        let r = s.verify_raw(&factor, &s.code(&secret, 0)).await;
        assert_eq!(error_code(&r), "CONFLICT", "{r}");
        assert_eq!(error_reason(&r), "USER_DEACTIVATED");
        let r = s.gql(START, json!({ "u": user })).await;
        assert_eq!(error_reason(&r), "USER_DEACTIVATED", "{r}");
        let read = s
            .ok(
                "query($u: ID!) { user(id: $u) { status } }",
                json!({ "u": user }),
            )
            .await;
        assert_eq!(read["user"]["status"], "DEACTIVATED");

        let r = s.ok(REACTIVATE, json!({ "u": user })).await;
        assert_eq!(r["reactivateUser"]["user"]["status"], "ACTIVE");
        let r = s.gql(REACTIVATE, json!({ "u": user })).await;
        assert_eq!(error_reason(&r), "USER_NOT_DEACTIVATED");
        let ok = s.login("carol", PASSWORD).await;
        assert_eq!(ok["data"]["login"]["mfaRequired"], true, "{ok}");
        assert_eq!(s.verify(&factor, &s.code(&secret, 0)).await, "SUCCESS");
        let types = s.event_types("User", &user).await;
        assert!(types.contains(&"Deactivated".to_string()), "{types:?}");
        assert!(types.contains(&"Reactivated".to_string()), "{types:?}");
    }
);

both_stores!(only_admins_change_users, |store| async move {
    let s = TestServer::start(store).await;
    s.create_full_user("dave", PASSWORD).await;
    let token = s.password_token("dave", PASSWORD).await;
    let user = tessera_tests::jwt_claims(&token)["sub"]
        .as_str()
        .unwrap()
        .to_string();
    for doc in [UPDATE, DEACTIVATE, REACTIVATE] {
        let r = s.gql_as(Some(&token), doc, json!({ "u": user })).await;
        assert_eq!(error_code(&r), "FORBIDDEN", "{doc}: {r}");
    }
    let r = s
        .gql(
            DEACTIVATE,
            json!({ "u": "00000000-0000-4000-8000-000000000000" }),
        )
        .await;
    assert_eq!(error_code(&r), "NOT_FOUND", "{r}");
});

both_stores!(
    delete_user_removes_factors_hides_the_user_and_keeps_the_log,
    |store| async move {
        let s = TestServer::start(store).await;
        let user = s.create_full_user("erin", PASSWORD).await;
        let (factor, secret) = s.enroll_totp(&user).await;
        s.activate(&factor, &s.code(&secret, 0)).await;
        let sms = s.enroll_oob(&user, "SMS", "+14155550123").await["factor"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let other = s.create_user("frank").await;
        let before = s.log_identities().await;
        let r = s
            .ok(
                "mutation($u: ID!) { deleteUser(input: {userId: $u}) { deletedUserId } }",
                json!({ "u": user }),
            )
            .await;
        assert_eq!(r["deleteUser"]["deletedUserId"], user.as_str());
        // Nothing was taken out of the log.
        let after = s.log_identities().await;
        assert!(before.iter().all(|e| after.contains(e)));
        assert_eq!(
            s.event_types("User", &user)
                .await
                .last()
                .map(String::as_str),
            Some("Deleted")
        );
        for f in [&factor, &sms] {
            assert_eq!(
                s.event_types("Factor", f).await.last().map(String::as_str),
                Some("Removed")
            );
        }
        // Gone from every read.
        let read = s
            .ok(
                "query($u: ID!) { user(id: $u) { id } userByLogin(login: \"erin\") { id } users(first: 50) { totalCount edges { node { id } } } }",
                json!({ "u": user }),
            )
            .await;
        assert!(
            read["user"].is_null() && read["userByLogin"].is_null(),
            "{read}"
        );
        assert_eq!(read["users"]["totalCount"], 1);
        assert_eq!(read["users"]["edges"][0]["node"]["id"], other.as_str());
        // No login (as a wrong password), no command, the login stays taken.
        let login = s.login("erin", PASSWORD).await;
        assert_eq!(error_reason(&login), "INVALID_CREDENTIALS", "{login}");
        let enrol = s
            .gql(
                "mutation($u: ID!) { enrollFactor(input: {userId: $u, type: TOTP}) { factor { id } } }",
                json!({ "u": user }),
            )
            .await;
        assert_eq!(error_reason(&enrol), "USER_NOT_FOUND", "{enrol}");
        let again = s
            .gql(
                "mutation($u: ID!) { deleteUser(input: {userId: $u}) { deletedUserId } }",
                json!({ "u": user }),
            )
            .await;
        assert_eq!(error_reason(&again), "USER_NOT_FOUND", "{again}");
        let taken = s
            .gql(
                "mutation { createUserV2(input: {login: \"erin\"}) { user { id } } }",
                json!({}),
            )
            .await;
        assert_eq!(error_code(&taken), "CONFLICT", "{taken}");
        // The log's hash chain covers the deletion and verifies.
        let total = s.log_identities().await.len();
        let mut sealed = false;
        for _ in 0..200 {
            let mut out = Vec::new();
            let report = tessera_api::cli::verify_log(&s.config, &mut out)
                .await
                .unwrap();
            assert!(report.problems.is_empty(), "{:?}", report.problems);
            if report.unsealed == 0 && usize::try_from(report.sealed) == Ok(total) {
                sealed = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(sealed, "the sealer never caught up");
    }
);
