//! Every mutation has an input object and a payload (`…V2`), and the first release's forms
//! that answered a bare entity still work, marked deprecated in introspection.

use serde_json::json;
use tessera_tests::{TestServer, both_stores, error_code};

/// The successor of each deprecated mutation, and the payload field holding the entity.
const RENAMED: [(&str, &str); 7] = [
    ("createUser", "createUserV2"),
    ("setPassword", "setPasswordV2"),
    ("removeFactor", "removeFactorV2"),
    ("unlockFactor", "unlockFactorV2"),
    ("unlockUser", "unlockUserV2"),
    ("setMfaPolicy", "setMfaPolicyV2"),
    ("acknowledgeSecurityAlert", "acknowledgeSecurityAlertV2"),
];

/// Three wrong codes: with the thresholds below, the factor locks out and the user's second
/// factor is hard-locked.
async fn lock(s: &TestServer, factor: &str, secret: &str) {
    let wrong = if s.code(secret, 0) == "000000" {
        "111111"
    } else {
        "000000"
    };
    for _ in 0..3 {
        s.verify(factor, wrong).await;
    }
}

both_stores!(
    new_payload_forms_and_deprecated_forms_both_work,
    |store| async move {
        let s = TestServer::start_with(store, |c| {
            c.lockout_threshold = 3;
            c.hard_lock_threshold = 3;
        })
        .await;

        // createUser: the payload, and the bare user.
        let r = s
        .ok(
            "mutation { createUserV2(input: {login: \"alice\", password: \"correct horse battery\"}) { user { id login } } }",
            json!({}),
        )
        .await;
        let alice = r["createUserV2"]["user"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(r["createUserV2"]["user"]["login"], "alice");
        let bob = s.create_user("bob").await;
        let taken = s
            .gql(
                "mutation { createUserV2(input: {login: \"bob\"}) { user { id } } }",
                json!({}),
            )
            .await;
        assert_eq!(error_code(&taken), "CONFLICT", "{taken}");

        // setPassword: both forms set a password that logs in.
        let r = s
        .ok(
            "mutation($u: ID!) { setPasswordV2(input: {userId: $u, password: \"a longer passphrase\"}) { user { id login } } }",
            json!({ "u": alice }),
        )
        .await;
        assert_eq!(
            r["setPasswordV2"]["user"],
            json!({ "id": alice, "login": "alice" })
        );
        s.password_token("alice", "a longer passphrase").await;
        let r = s
        .ok(
            "mutation($u: ID!) { setPassword(input: {userId: $u, password: \"bob's passphrase\"}) { id } }",
            json!({ "u": bob }),
        )
        .await;
        assert_eq!(r["setPassword"]["id"], json!(bob));
        s.password_token("bob", "bob's passphrase").await;

        // unlockUser and unlockFactor: the payloads, then the bare entities.
        let (factor, secret) = s.enroll_totp(&alice).await;
        s.activate(&factor, &s.code(&secret, 0)).await;
        s.clock.advance(chrono::TimeDelta::seconds(30));
        lock(&s, &factor, &secret).await;
        assert_eq!(
            s.lock_state(&alice, &factor).await,
            (json!(true), json!("LOCKED_OUT"))
        );
        let r = s
        .ok(
            "mutation($u: ID!) { unlockUserV2(input: {userId: $u}) { user { id secondFactorLocked } } }",
            json!({ "u": alice }),
        )
        .await;
        assert_eq!(
            r["unlockUserV2"]["user"],
            json!({ "id": alice, "secondFactorLocked": false })
        );
        let r = s
        .ok(
            "mutation($f: ID!) { unlockFactorV2(input: {factorId: $f}) { factor { id status failedAttempts } } }",
            json!({ "f": factor }),
        )
        .await;
        assert_eq!(
            r["unlockFactorV2"]["factor"],
            json!({ "id": factor, "status": "ACTIVE", "failedAttempts": 0 })
        );
        lock(&s, &factor, &secret).await;
        assert_eq!(
            s.lock_state(&alice, &factor).await,
            (json!(true), json!("LOCKED_OUT"))
        );
        let r = s
            .ok(
                "mutation($u: ID!) { unlockUser(input: {userId: $u}) { secondFactorLocked } }",
                json!({ "u": alice }),
            )
            .await;
        assert_eq!(r["unlockUser"]["secondFactorLocked"], false);
        let r = s
            .ok(
                "mutation($f: ID!) { unlockFactor(input: {factorId: $f}) { status } }",
                json!({ "f": factor }),
            )
            .await;
        assert_eq!(r["unlockFactor"]["status"], "ACTIVE");
        assert_eq!(s.verify(&factor, &s.code(&secret, 0)).await, "SUCCESS");

        // acknowledgeSecurityAlert: the lockouts raised alerts; one through each form.
        let ids = {
            let mut ids = Vec::new();
            for _ in 0..100 {
                let r = s
                    .ok(
                        "query($u: ID) { securityAlerts(userId: $u) { edges { node { id } } } }",
                        json!({ "u": alice }),
                    )
                    .await;
                ids = r["securityAlerts"]["edges"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["node"]["id"].as_str().unwrap().to_string())
                    .collect::<Vec<_>>();
                if ids.len() >= 2 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            ids
        };
        assert!(ids.len() >= 2, "two lockouts raise alerts: {ids:?}");
        let r = s
        .ok(
            "mutation($a: ID!) { acknowledgeSecurityAlertV2(input: {alertId: $a}) { securityAlert { id acknowledgedAt } } }",
            json!({ "a": ids[0] }),
        )
        .await;
        assert_eq!(
            r["acknowledgeSecurityAlertV2"]["securityAlert"]["id"],
            json!(ids[0])
        );
        assert!(r["acknowledgeSecurityAlertV2"]["securityAlert"]["acknowledgedAt"].is_string());
        let r = s
            .ok(
                "mutation($a: ID!) { acknowledgeSecurityAlert(id: $a) { id acknowledgedAt } }",
                json!({ "a": ids[1] }),
            )
            .await;
        assert_eq!(r["acknowledgeSecurityAlert"]["id"], json!(ids[1]));
        assert!(r["acknowledgeSecurityAlert"]["acknowledgedAt"].is_string());
        let unknown = s
        .gql(
            "mutation { acknowledgeSecurityAlertV2(input: {alertId: \"00000000-0000-0000-0000-000000000000\"}) { securityAlert { id } } }",
            json!({}),
        )
        .await;
        assert_eq!(error_code(&unknown), "NOT_FOUND", "{unknown}");

        // setMfaPolicy: the payload, then the bare policy.
        let r = s
        .ok(
            "mutation { setMfaPolicyV2(input: {mode: OPTIONAL, allowedFactorTypes: [TOTP]}) { policy { mode allowedFactorTypes } } }",
            json!({}),
        )
        .await;
        assert_eq!(
            r["setMfaPolicyV2"]["policy"],
            json!({ "mode": "OPTIONAL", "allowedFactorTypes": ["TOTP"] })
        );
        let r = s
        .ok(
            "mutation { setMfaPolicy(input: {mode: OPTIONAL, allowedFactorTypes: [TOTP, SMS]}) { allowedFactorTypes } }",
            json!({}),
        )
        .await;
        assert_eq!(
            r["setMfaPolicy"]["allowedFactorTypes"],
            json!(["TOTP", "SMS"])
        );

        // removeFactor: the payload, then the bare factor.
        let r = s
        .ok(
            "mutation($f: ID!) { removeFactorV2(input: {factorId: $f}) { factor { id status } } }",
            json!({ "f": factor }),
        )
        .await;
        assert_eq!(
            r["removeFactorV2"]["factor"],
            json!({ "id": factor, "status": "REMOVED" })
        );
        let (other, _) = s.enroll_totp(&bob).await;
        let r = s
            .ok(
                "mutation($f: ID!) { removeFactor(input: {factorId: $f}) { id status } }",
                json!({ "f": other }),
            )
            .await;
        assert_eq!(
            r["removeFactor"],
            json!({ "id": other, "status": "REMOVED" })
        );
    }
);

both_stores!(
    deprecated_mutations_say_so_in_introspection,
    |store| async move {
        let s = TestServer::start(store).await;
        let r = s
            .ok(
                "{ __type(name: \"Mutation\") { fields(includeDeprecated: true) {
                name isDeprecated deprecationReason type { kind name ofType { name } } } } }",
                json!({}),
            )
            .await;
        let fields = r["__type"]["fields"].as_array().unwrap();
        let field = |name: &str| {
            fields
                .iter()
                .find(|f| f["name"] == name)
                .unwrap_or_else(|| panic!("no mutation {name}"))
        };
        for (old, new) in RENAMED {
            let (old_field, new_field) = (field(old), field(new));
            assert_eq!(old_field["isDeprecated"], true, "{old}");
            let reason = old_field["deprecationReason"].as_str().unwrap();
            assert!(reason.contains(new), "{old}: {reason}");
            assert_eq!(new_field["isDeprecated"], false, "{new}");
            let payload = new_field["type"]["ofType"]["name"].as_str().unwrap();
            assert!(payload.ends_with("Payload"), "{new} answers {payload}");
        }
        // Everything else already had the shape, and nothing else is deprecated.
        for f in fields {
            let name = f["name"].as_str().unwrap();
            let deprecated = RENAMED.iter().any(|(old, _)| *old == name);
            assert_eq!(f["isDeprecated"], deprecated, "{name}");
            if !deprecated {
                let payload = f["type"]["ofType"]["name"].as_str().unwrap_or_default();
                assert!(payload.ends_with("Payload"), "{name} answers {payload}");
            }
        }
        // Without includeDeprecated the old forms are hidden from tools, yet still answer.
        let r = s
            .ok(
                "{ __type(name: \"Mutation\") { fields { name } } }",
                json!({}),
            )
            .await;
        let names: Vec<&str> = r["__type"]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        assert!(!names.contains(&"createUser") && names.contains(&"createUserV2"));
    }
);
