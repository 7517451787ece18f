//! Passkeys and security keys (`WEBAUTHN` factors), with a soft authenticator answering the
//! real options over the real API: registration, verification, single use, lifetime, forged
//! and foreign answers, cloned authenticators, bad input, duplicate credentials, races, step-up
//! and login.

use chrono::TimeDelta;
use futures::future::join_all;
use serde_json::{Value, json};
use tessera_tests::{
    TestServer, both_stores, error_code, error_reason, jwt_claims, passkeys::Authenticator,
};

/// The reasons of the factor's `FailedAttempt` events, oldest first, once the whole log shows
/// in the events API.
async fn failure_reasons(s: &TestServer, factor: &str) -> Vec<String> {
    s.settled_events()
        .await
        .iter()
        .filter(|e| e["aggregateId"] == factor && e["eventType"] == "FailedAttempt")
        .map(|e| {
            e["payload"]["FailedAttempt"]["reason"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

async fn event_count(s: &TestServer) -> usize {
    s.quiesce().await.len()
}

both_stores!(
    a_passkey_registers_then_verifies_once_per_challenge,
    |store| async move {
        let s = TestServer::start(store).await;
        let user = s.create_user("alice").await;
        let (factor, options) = s.enroll_webauthn(&user).await;
        assert_eq!(options["rp"]["id"], "localhost");
        assert_eq!(
            options["authenticatorSelection"]["userVerification"],
            "required"
        );
        assert_eq!(
            options["authenticatorSelection"]["residentKey"],
            "preferred"
        );
        assert!(
            options["challenge"].as_str().is_some_and(|c| c.len() >= 43),
            "{options}"
        );

        let mut key = Authenticator::default();
        let activated = s.activate_webauthn(&factor, &key.create(&options)).await;
        let payload = &activated["data"]["activateFactor"];
        assert_eq!(payload["factorResult"], "SUCCESS", "{activated}");
        assert_eq!(payload["factor"]["status"], "ACTIVE");
        assert_eq!(payload["recoveryCodes"].as_array().map(Vec::len), Some(10));
        // What a settings page shows, from the read model as from the aggregate.
        let shown = s
            .ok(
                "query($u: ID!) { user(id: $u) { factors { id type label credentialId aaguid \
                 backedUp lastVerifiedAt } } }",
                json!({ "u": user }),
            )
            .await;
        let listed = &shown["user"]["factors"][0];
        assert_eq!(listed["type"], "WEBAUTHN");
        assert_eq!(listed["label"], "Key");
        assert!(
            listed["credentialId"]
                .as_str()
                .is_some_and(|id| id.len() >= 16),
            "{listed}"
        );
        assert_eq!(listed["backedUp"], false);
        assert!(listed["aaguid"].is_null());

        let (_, request) = s.webauthn_challenge(&factor, None).await;
        assert_eq!(request["userVerification"], "required");
        assert_eq!(
            request["allowCredentials"].as_array().map(Vec::len),
            Some(1)
        );
        let assertion = key.get(&request);
        assert_eq!(s.verify_webauthn(&factor, &assertion).await, "SUCCESS");
        // webauthn-rs alone would take it again; the factor's ceremony is single use.
        assert_eq!(
            s.verify_webauthn(&factor, &assertion).await,
            "PASSCODE_REPLAYED"
        );
        let (_, next) = s.webauthn_challenge(&factor, None).await;
        assert_eq!(s.verify_webauthn(&factor, &key.get(&next)).await, "SUCCESS");
        // The ceremony state stays on the server: not in the audit log's payloads.
        let events = s.settled_events().await;
        let requested: Vec<&Value> = events
            .iter()
            .filter(|e| e["aggregateId"] == factor && e["eventType"] == "AssertionRequested")
            .collect();
        assert_eq!(requested.len(), 2);
        assert_eq!(
            requested[0]["payload"]["AssertionRequested"]["ceremony"],
            "[REDACTED]"
        );
    }
);

both_stores!(
    a_ceremony_past_its_lifetime_is_expired,
    |store| async move {
        let s = TestServer::start_with(store, |c| c.webauthn_timeout_seconds = 60).await;
        let (_, factor, mut key) = s.active_passkey("alice").await;
        let (_, request) = s.webauthn_challenge(&factor, None).await;
        let assertion = key.get(&request);
        s.clock.advance(TimeDelta::seconds(61));
        assert_eq!(s.verify_webauthn(&factor, &assertion).await, "EXPIRED");
        // A registration, too: enrolled, answered after the timeout.
        let user = s.create_user("bob").await;
        let (pending, options) = s.enroll_webauthn(&user).await;
        let response = Authenticator::default().create(&options);
        s.clock.advance(TimeDelta::seconds(61));
        let r = s.activate_webauthn(&pending, &response).await;
        assert_eq!(
            r["data"]["activateFactor"]["factorResult"], "EXPIRED",
            "{r}"
        );
        assert_eq!(
            r["data"]["activateFactor"]["factor"]["status"],
            "PENDING_ACTIVATION"
        );
    }
);

both_stores!(
    forged_foreign_and_unverified_answers_are_rejected_and_counted,
    |store| async move {
        let s = TestServer::start(store).await;
        let (_, factor, mut key) = s.active_passkey("alice").await;
        let (_, request) = s.webauthn_challenge(&factor, None).await;

        let foreign = key.get_from("http://localhost:9999", &request);
        assert_eq!(s.verify_webauthn(&factor, &foreign).await, "REJECTED");

        let mut tampered = key.get(&request);
        let signature = tampered["response"]["signature"]
            .as_str()
            .unwrap()
            .to_string();
        // A character in the middle: all six of its bits are the signature's (the last one's
        // may be padding bits, and a change there is not canonical base64url, so the answer
        // was sometimes refused as malformed instead of checked).
        let middle = signature.len() / 2;
        let flipped = if &signature[middle..=middle] == "A" {
            "B"
        } else {
            "A"
        };
        tampered["response"]["signature"] = json!(format!(
            "{}{flipped}{}",
            &signature[..middle],
            &signature[middle + 1..]
        ));
        assert_eq!(s.verify_webauthn(&factor, &tampered).await, "REJECTED");

        let mut without_uv = request.clone();
        without_uv["userVerification"] = json!("discouraged");
        assert_eq!(
            s.verify_webauthn(&factor, &key.get(&without_uv)).await,
            "REJECTED"
        );

        let wrong_rp = key.get_for_rp_id("example.com", &request);
        let r = s.verify_webauthn_raw(&factor, &wrong_rp).await;
        assert_eq!(r["data"]["verifyFactor"]["factorResult"], "REJECTED", "{r}");
        assert_eq!(r["data"]["verifyFactor"]["factor"]["failedAttempts"], 4);

        let mut someone_elses = key.get(&request);
        someone_elses["id"] = json!("AAAAAAAAAAAAAAAAAAAAAA");
        someone_elses["rawId"] = json!("AAAAAAAAAAAAAAAAAAAAAA");
        let r = s.verify_webauthn_raw(&factor, &someone_elses).await;
        // The fifth counted failure locks the factor, as five wrong codes would.
        assert_eq!(r["data"]["verifyFactor"]["factorResult"], "REJECTED", "{r}");
        assert_eq!(r["data"]["verifyFactor"]["factor"]["status"], "LOCKED_OUT");
        assert_eq!(
            s.verify_webauthn(&factor, &key.get(&request)).await,
            "LOCKED_OUT"
        );
        assert_eq!(
            failure_reasons(&s, &factor).await,
            [
                "FOREIGN_ORIGIN",
                "BAD_SIGNATURE",
                "USER_NOT_VERIFIED",
                "WRONG_RP_ID",
                "UNKNOWN_CREDENTIAL",
                "LOCKED"
            ]
        );
    }
);

both_stores!(
    a_counter_that_goes_backwards_is_rejected_and_raises_an_alert_at_once,
    |store| async move {
        let s = TestServer::start(store).await;
        let (user, factor, mut key) = s.active_passkey("alice").await;
        let step_up = s
            .ok(
                "mutation($u: ID!) { startStepUp(input: {userId: $u}) { challenge { id } } }",
                json!({ "u": user }),
            )
            .await["startStepUp"]["challenge"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let (_, standalone) = s.webauthn_challenge(&factor, None).await;
        let (_, bound) = s.webauthn_challenge(&factor, Some(&step_up)).await;
        // Signed first, answered last: what a clone of the key answers with.
        let older = key.get(&standalone);
        let newer = key.get(&bound);
        let done = s
            .gql(
                "mutation($c: ID!, $f: ID!, $w: JSON!) { completeStepUp(input: {challengeId: $c, \
                 factorId: $f, webauthn: $w}) { factorResult } }",
                json!({ "c": step_up, "f": factor, "w": newer }),
            )
            .await;
        assert_eq!(
            done["data"]["completeStepUp"]["factorResult"], "SUCCESS",
            "{done}"
        );
        assert_eq!(s.verify_webauthn(&factor, &older).await, "REJECTED");
        assert_eq!(failure_reasons(&s, &factor).await, ["COUNTER_REGRESSED"]);
        // One failure is below the failure-count rule's threshold: this alert is its own.
        let alerted = s
            .eventually(|| async {
                let alerts = s
                    .ok(
                        "query($u: ID) { securityAlerts(userId: $u) { edges { node { kind } } } }",
                        json!({ "u": user }),
                    )
                    .await;
                alerts["securityAlerts"]["edges"]
                    .as_array()
                    .is_some_and(|e| {
                        e.iter()
                            .any(|n| n["node"]["kind"] == "POSSIBLE_CLONED_AUTHENTICATOR")
                    })
            })
            .await;
        assert!(alerted, "no POSSIBLE_CLONED_AUTHENTICATOR alert");
    }
);

both_stores!(
    malformed_or_oversized_answers_are_bad_input_and_write_nothing,
    |store| async move {
        let s = TestServer::start(store).await;
        let (_, factor, mut key) = s.active_passkey("alice").await;
        let (_, request) = s.webauthn_challenge(&factor, None).await;
        let before = event_count(&s).await;
        let mut not_base64 = key.get(&request);
        not_base64["response"]["authenticatorData"] = json!("*not base64*");
        let mut huge = key.get(&request);
        huge["padding"] = json!("x".repeat(10_000));
        for bad in [
            json!({ "id": 5 }),
            json!("a string"),
            json!([1, 2, 3]),
            not_base64,
            huge,
        ] {
            let r = s.verify_webauthn_raw(&factor, &bad).await;
            assert_eq!(error_code(&r), "BAD_USER_INPUT", "{bad}: {r}");
        }
        let r = s
            .activate_webauthn(&factor, &json!({ "rawId": "AA" }))
            .await;
        assert_eq!(error_code(&r), "BAD_USER_INPUT", "{r}");
        // Both answers at once, or neither, is refused too.
        let r = s
            .gql(
                "mutation($f: ID!) { verifyFactor(input: {factorId: $f}) { factorResult } }",
                json!({ "f": factor }),
            )
            .await;
        assert_eq!(error_reason(&r), "ANSWER_REQUIRED", "{r}");
        assert_eq!(event_count(&s).await, before, "bad input wrote events");
        // The ceremony is still there for the real answer.
        assert_eq!(
            s.verify_webauthn(&factor, &key.get(&request)).await,
            "SUCCESS"
        );
    }
);

both_stores!(
    a_credential_registers_for_one_user_only,
    |store| async move {
        let s = TestServer::start(store).await;
        let alice = s.create_user("alice").await;
        let (first, options) = s.enroll_webauthn(&alice).await;
        let mut key = Authenticator::default();
        let registration = key.create(&options);
        let r = s.activate_webauthn(&first, &registration).await;
        assert_eq!(
            r["data"]["activateFactor"]["factorResult"], "SUCCESS",
            "{r}"
        );

        let bob = s.create_user("bob").await;
        let (second, _) = s.enroll_webauthn(&bob).await;
        let before = event_count(&s).await;
        let r = s.activate_webauthn(&second, &registration).await;
        assert_eq!(error_code(&r), "CONFLICT", "{r}");
        assert_eq!(error_reason(&r), "CREDENTIAL_ALREADY_REGISTERED", "{r}");
        assert_eq!(
            event_count(&s).await,
            before,
            "a refused claim wrote events"
        );
        let f = s
            .ok(
                "query($f: ID!) { factor(id: $f) { status } }",
                json!({ "f": second }),
            )
            .await;
        assert_eq!(f["factor"]["status"], "PENDING_ACTIVATION");
    }
);

both_stores!(
    twenty_parallel_answers_to_one_challenge_give_one_success,
    |store| async move {
        let s = TestServer::start(store).await;
        let (_, factor, mut key) = s.active_passkey("alice").await;
        let (_, request) = s.webauthn_challenge(&factor, None).await;
        let answers: Vec<Value> = (0..20).map(|_| key.get(&request)).collect();
        let results = join_all(answers.iter().map(|a| s.verify_webauthn(&factor, a))).await;
        let successes = results.iter().filter(|r| *r == "SUCCESS").count();
        assert_eq!(successes, 1, "{results:?}");
        assert!(
            results
                .iter()
                .all(|r| r == "SUCCESS" || r == "PASSCODE_REPLAYED"),
            "{results:?}"
        );
    }
);

both_stores!(
    a_passkey_completes_a_login_with_hwk_in_amr,
    |store| async move {
        let s = TestServer::start(store).await;
        let user = s.create_full_user("alice", "correct horse battery").await;
        let (factor, options) = s.enroll_webauthn(&user).await;
        let mut key = Authenticator::default();
        let r = s.activate_webauthn(&factor, &key.create(&options)).await;
        assert_eq!(
            r["data"]["activateFactor"]["factorResult"], "SUCCESS",
            "{r}"
        );
        let login = s.login("alice", "correct horse battery").await;
        assert_eq!(login["data"]["login"]["mfaRequired"], true, "{login}");
        let challenge = login["data"]["login"]["challenge"]["id"].as_str().unwrap();
        // The second step of a login asks for options without a token.
        let options = s
            .gql_as(
                None,
                "mutation($f: ID!, $c: ID) { challengeFactor(input: {factorId: $f, challengeId: $c}) \
                 { webauthn { publicKey } } }",
                json!({ "f": factor, "c": challenge }),
            )
            .await;
        let request = &options["data"]["challengeFactor"]["webauthn"]["publicKey"];
        let done = s
            .gql_as(
                None,
                "mutation($c: ID!, $f: ID!, $w: JSON!) { completeLogin(input: {challengeId: $c, \
                 factorId: $f, webauthn: $w}) { accessToken factorResult } }",
                json!({ "c": challenge, "f": factor, "w": key.get(request) }),
            )
            .await;
        assert_eq!(
            done["data"]["completeLogin"]["factorResult"], "SUCCESS",
            "{done}"
        );
        let token = done["data"]["completeLogin"]["accessToken"]
            .as_str()
            .unwrap();
        let amr = jwt_claims(token)["amr"].clone();
        assert_eq!(amr, json!(["pwd", "hwk"]), "{amr}");
    }
);

const START_PASSKEY_LOGIN: &str = "mutation($l: String) { startPasskeyLogin(input: {login: $l}) \
     { challenge { id status purpose } webauthn { publicKey } } }";
const COMPLETE_PASSKEY_LOGIN: &str = "mutation($c: ID!, $w: JSON!) { completePasskeyLogin(input: \
     {challengeId: $c, webauthn: $w}) { accessToken factorResult challenge { status } } }";

async fn start_passkey_login(s: &TestServer, login: Option<&str>) -> (String, Value) {
    let r = s
        .gql_as(None, START_PASSKEY_LOGIN, json!({ "l": login }))
        .await;
    let payload = &r["data"]["startPasskeyLogin"];
    assert_eq!(payload["challenge"]["purpose"], "PASSKEY_LOGIN", "{r}");
    (
        payload["challenge"]["id"]
            .as_str()
            .expect("challenge")
            .into(),
        payload["webauthn"]["publicKey"].clone(),
    )
}

async fn complete_passkey_login(s: &TestServer, challenge: &str, assertion: &Value) -> Value {
    s.gql_as(
        None,
        COMPLETE_PASSKEY_LOGIN,
        json!({ "c": challenge, "w": assertion }),
    )
    .await
}

both_stores!(
    a_passkey_logs_in_without_a_password_once_per_challenge,
    |store| async move {
        let s = TestServer::start(store).await;
        let (user, factor, mut key) = s.active_passkey("alice").await;
        let (challenge, options) = start_passkey_login(&s, Some("alice")).await;
        assert_eq!(
            options["allowCredentials"].as_array().map(Vec::len),
            Some(1)
        );
        let assertion = key.get(&options);
        let r = complete_passkey_login(&s, &challenge, &assertion).await;
        let payload = &r["data"]["completePasskeyLogin"];
        assert_eq!(payload["factorResult"], "SUCCESS", "{r}");
        assert_eq!(payload["challenge"]["status"], "COMPLETED");
        let claims = jwt_claims(payload["accessToken"].as_str().unwrap());
        assert_eq!(claims["sub"], user.as_str());
        assert_eq!(claims["amr"], json!(["hwk"]));
        assert_eq!(claims["acr"], "mfa");
        let again = complete_passkey_login(&s, &challenge, &assertion).await;
        assert_eq!(
            again["data"]["completePasskeyLogin"]["factorResult"], "PASSCODE_REPLAYED",
            "{again}"
        );
        assert!(again["data"]["completePasskeyLogin"]["accessToken"].is_null());

        // Another challenge, answered too late.
        let (late, options) = start_passkey_login(&s, Some("alice")).await;
        let assertion = key.get(&options);
        s.clock.advance(TimeDelta::seconds(301));
        let r = complete_passkey_login(&s, &late, &assertion).await;
        assert_eq!(
            r["data"]["completePasskeyLogin"]["factorResult"], "EXPIRED",
            "{r}"
        );

        // A removed passkey logs nobody in.
        let (removed, options) = start_passkey_login(&s, Some("alice")).await;
        let assertion = key.get(&options);
        s.ok(
            "mutation($f: ID!) { removeFactorV2(input: {factorId: $f}) { factor { status } } }",
            json!({ "f": factor }),
        )
        .await;
        let r = complete_passkey_login(&s, &removed, &assertion).await;
        assert_eq!(
            r["data"]["completePasskeyLogin"]["factorResult"], "REJECTED",
            "{r}"
        );
        assert!(r["data"]["completePasskeyLogin"]["accessToken"].is_null());
    }
);

both_stores!(
    a_locked_passkey_logs_nobody_in_and_a_forged_answer_counts,
    |store| async move {
        let s = TestServer::start(store).await;
        let (_, factor, mut key) = s.active_passkey("alice").await;
        let (challenge, options) = start_passkey_login(&s, Some("alice")).await;
        let foreign = key.get_from("http://localhost:9999", &options);
        let r = complete_passkey_login(&s, &challenge, &foreign).await;
        assert_eq!(
            r["data"]["completePasskeyLogin"]["factorResult"], "REJECTED",
            "{r}"
        );
        assert_eq!(failure_reasons(&s, &factor).await, ["FOREIGN_ORIGIN"]);
        // Four more counted failures lock the factor.
        for _ in 0..4 {
            let (_, request) = s.webauthn_challenge(&factor, None).await;
            let forged = key.get_from("http://localhost:9999", &request);
            assert_eq!(s.verify_webauthn(&factor, &forged).await, "REJECTED");
        }
        let (challenge, options) = start_passkey_login(&s, Some("alice")).await;
        let r = complete_passkey_login(&s, &challenge, &key.get(&options)).await;
        assert_eq!(
            r["data"]["completePasskeyLogin"]["factorResult"], "LOCKED_OUT",
            "{r}"
        );
        assert!(r["data"]["completePasskeyLogin"]["accessToken"].is_null());
    }
);

both_stores!(
    without_a_known_login_the_options_name_no_credential,
    |store| async move {
        let s = TestServer::start(store).await;
        let (_, _, mut key) = s.active_passkey("alice").await;
        // No login, and an unknown one, look the same: a discoverable request.
        for login in [None, Some("nobody")] {
            let (challenge, options) = start_passkey_login(&s, login).await;
            assert!(
                options["allowCredentials"]
                    .as_array()
                    .is_none_or(Vec::is_empty),
                "{options}"
            );
            assert_eq!(options["userVerification"], "required");
            let c = s
                .ok(
                    "query($c: ID!) { challenge(id: $c) { id } }",
                    json!({ "c": challenge }),
                )
                .await;
            // It belongs to nobody yet, so nobody reads it.
            assert!(c["challenge"].is_null(), "{c}");
        }
        // An assertion from a credential no factor has is rejected.
        let (challenge, options) = start_passkey_login(&s, Some("alice")).await;
        let mut stranger = key.get(&options);
        stranger["id"] = json!("AAAAAAAAAAAAAAAAAAAAAA");
        stranger["rawId"] = json!("AAAAAAAAAAAAAAAAAAAAAA");
        let r = complete_passkey_login(&s, &challenge, &stranger).await;
        assert_eq!(
            r["data"]["completePasskeyLogin"]["factorResult"], "REJECTED",
            "{r}"
        );
    }
);

both_stores!(
    an_unknown_credential_is_recorded_on_its_challenge_and_five_end_it,
    |store| async move {
        let s = TestServer::start(store).await;
        let (_, _, mut key) = s.active_passkey("alice").await;
        let credential_streams = || async {
            s.log_identities()
                .await
                .iter()
                .filter(|(t, _, _)| t == "WebAuthnCredential")
                .count()
        };
        let before = credential_streams().await;
        // Options naming alice's credential, so the soft key can sign (it has no discoverable
        // credentials); each answer then claims another id.
        let (challenge, options) = start_passkey_login(&s, Some("alice")).await;
        let mut answers = Vec::new();
        for i in 0..6 {
            let mut stranger = key.get(&options);
            // A made-up credential id per answer, as an attacker would send.
            let id = format!("{}AAAAAAAAAAAAAAAAAAAAA", "BCDEFG".as_bytes()[i] as char);
            stranger["id"] = json!(id);
            stranger["rawId"] = json!(id);
            let r = complete_passkey_login(&s, &challenge, &stranger).await;
            answers.push(
                r["data"]["completePasskeyLogin"]["factorResult"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{r}"))
                    .to_string(),
            );
        }
        assert_eq!(
            answers,
            [
                "REJECTED", "REJECTED", "REJECTED", "REJECTED", "REJECTED", "EXPIRED"
            ]
        );
        let events = s.events("Challenge", &challenge).await;
        let failed: Vec<&Value> = events
            .iter()
            .filter(|(t, _)| t == "FailedAttempt")
            .map(|(_, p)| &p["FailedAttempt"])
            .collect();
        assert_eq!(failed.len(), 5, "{events:?}");
        for (n, f) in failed.iter().enumerate() {
            assert_eq!(f["reason"], "UNKNOWN_CREDENTIAL", "{f}");
            assert!(f["factor_id"].is_null(), "{f}");
            assert_eq!(f["failed_attempts"], n + 1);
        }
        assert_eq!(
            events.last().map(|(t, _)| t.as_str()),
            Some("Expired"),
            "five failures end the challenge; the sixth answer wrote nothing"
        );
        assert_eq!(
            credential_streams().await,
            before,
            "no stream per made-up credential id"
        );
    }
);

both_stores!(
    remember_device_on_a_passkey_login_gives_a_device_token,
    |store| async move {
        let s = TestServer::start(store).await;
        let (user, _, mut key) = s.active_passkey("alice").await;
        let complete = |challenge: String, assertion: Value, remember: bool| {
            let s = &s;
            async move {
                s.gql_as(
                    None,
                    "mutation($c: ID!, $w: JSON!, $r: Boolean!) { completePasskeyLogin(input: \
                     {challengeId: $c, webauthn: $w, rememberDevice: $r}) { accessToken factorResult deviceToken } }",
                    json!({ "c": challenge, "w": assertion, "r": remember }),
                )
                .await["data"]["completePasskeyLogin"]
                    .clone()
            }
        };
        let (challenge, options) = start_passkey_login(&s, Some("alice")).await;
        let r = complete(challenge, key.get(&options), false).await;
        assert_eq!(r["factorResult"], "SUCCESS", "{r}");
        assert!(r["deviceToken"].is_null(), "{r}");

        let (challenge, options) = start_passkey_login(&s, Some("alice")).await;
        let r = complete(challenge, key.get(&options), true).await;
        assert_eq!(r["factorResult"], "SUCCESS", "{r}");
        assert!(r["accessToken"].is_string(), "{r}");
        let token = r["deviceToken"].as_str().expect("a device token");
        assert_eq!(token.split_once('.').map(|(_, s)| s.len()), Some(43));
        let trusted = s
            .event_types("User", &user)
            .await
            .iter()
            .filter(|t| *t == "DeviceTrusted")
            .count();
        assert_eq!(trusted, 1);

        // A policy that trusts no device gives none, on a passkey login too.
        s.ok(
            "mutation { setMfaPolicyV2(input: {mode: OPTIONAL, allowedFactorTypes: [WEBAUTHN], trustedDeviceDays: 0}) { policy { mode } } }",
            json!({}),
        )
        .await;
        let (challenge, options) = start_passkey_login(&s, Some("alice")).await;
        let r = complete(challenge, key.get(&options), true).await;
        assert_eq!(r["factorResult"], "SUCCESS", "{r}");
        assert!(r["deviceToken"].is_null(), "{r}");
    }
);

both_stores!(
    starting_passkey_logins_is_rate_limited_per_client_address,
    |store| async move {
        let s = TestServer::start_with(store, |c| c.passkey_login_starts_per_minute = 3).await;
        for _ in 0..3 {
            start_passkey_login(&s, None).await;
        }
        let r = s
            .gql_as(None, START_PASSKEY_LOGIN, json!({ "l": null }))
            .await;
        assert_eq!(error_code(&r), "RATE_LIMITED", "{r}");
        assert_eq!(error_reason(&r), "PASSKEY_LOGIN_RATE_LIMITED");
        assert!(
            r["errors"][0]["extensions"]["retryAfter"]
                .as_i64()
                .is_some_and(|s| (1..=60).contains(&s)),
            "{r}"
        );
        // Another address is not affected.
        let other = reqwest::Client::builder()
            .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
            .build()
            .unwrap();
        let r: Value = other
            .post(format!("{}/graphql", s.base))
            .json(&json!({ "query": START_PASSKEY_LOGIN, "variables": { "l": null } }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            r["data"]["startPasskeyLogin"]["challenge"]["purpose"], "PASSKEY_LOGIN",
            "{r}"
        );
        s.clock.advance(TimeDelta::seconds(60));
        start_passkey_login(&s, None).await;
    }
);

both_stores!(
    a_removed_passkey_releases_its_credential_id,
    |store| async move {
        let s = TestServer::start(store).await;
        let alice = s.create_user("alice").await;
        let (first, options) = s.enroll_webauthn(&alice).await;
        let mut key = Authenticator::default();
        let registration = key.create(&options);
        let r = s.activate_webauthn(&first, &registration).await;
        assert_eq!(
            r["data"]["activateFactor"]["factorResult"], "SUCCESS",
            "{r}"
        );
        let (challenge, options) = start_passkey_login(&s, Some("alice")).await;
        s.ok(
            "mutation($f: ID!) { removeFactorV2(input: {factorId: $f}) { factor { status } } }",
            json!({ "f": first }),
        )
        .await;
        let released: Vec<(String, String, i64)> = s
            .log_identities()
            .await
            .into_iter()
            .filter(|(t, _, _)| t == "WebAuthnCredential")
            .collect();
        assert_eq!(released.len(), 2, "claimed, then released: {released:?}");
        let types = s.event_types("WebAuthnCredential", &released[0].1).await;
        assert_eq!(types, ["CredentialClaimed", "CredentialReleased"]);
        // The id is no one's: another user's factor is not refused it as taken (this old
        // response then fails its own ceremony's check, as any stale answer does).
        let bob = s.create_user("bob").await;
        let (second, _) = s.enroll_webauthn(&bob).await;
        let r = s.activate_webauthn(&second, &registration).await;
        assert!(
            r["errors"].is_null(),
            "no longer CREDENTIAL_ALREADY_REGISTERED: {r}"
        );
        assert_eq!(
            r["data"]["activateFactor"]["factorResult"], "REJECTED",
            "{r}"
        );
        // And the removed passkey's assertion names nobody now: recorded on the challenge.
        let r = complete_passkey_login(&s, &challenge, &key.get(&options)).await;
        assert_eq!(
            r["data"]["completePasskeyLogin"]["factorResult"], "REJECTED",
            "{r}"
        );
        let failed = s.events("Challenge", &challenge).await;
        assert!(
            failed.iter().any(|(t, p)| t == "FailedAttempt"
                && p["FailedAttempt"]["reason"] == "UNKNOWN_CREDENTIAL"),
            "{failed:?}"
        );
    }
);
