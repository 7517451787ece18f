//! The Okta "add Google Authenticator" guide path, over GraphQL.

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use serde_json::json;
use tessera_tests::{TestServer, both_stores, code_at, error_code, error_reason};

both_stores!(
    guide_path_enrol_activate_verify_remove,
    |store| async move {
        let s = TestServer::start(store).await;
        let user = s.create_user("Alice@Example.com").await;

        let data = s
        .ok(
            "mutation($u: ID!) { enrollFactor(input: {userId: $u, type: TOTP, label: \"phone\"}) {
                factor { id userId type status label failedAttempts lastVerifiedAt }
                totp { secretBase32 otpauthUri qrCodePng } } }",
            json!({ "u": user }),
        )
        .await;
        let enrolled = &data["enrollFactor"];
        let factor = enrolled["factor"]["id"].as_str().unwrap().to_string();
        assert_eq!(enrolled["factor"]["status"], "PENDING_ACTIVATION");
        assert_eq!(enrolled["factor"]["type"], "TOTP");
        assert_eq!(enrolled["factor"]["userId"], user.as_str());
        assert_eq!(enrolled["factor"]["label"], "phone");
        let secret = enrolled["totp"]["secretBase32"]
            .as_str()
            .unwrap()
            .to_string();
        // 160 bits = 32 base32 characters.
        assert!(secret.len() >= 32, "secret too short: {secret}");
        let uri = enrolled["totp"]["otpauthUri"].as_str().unwrap();
        assert_eq!(
            uri,
            format!("otpauth://totp/Tessera:alice%40example.com?secret={secret}&issuer=Tessera")
        );
        let png = enrolled["totp"]["qrCodePng"].as_str().unwrap();
        let png = B64
            .decode(
                png.strip_prefix("data:image/png;base64,")
                    .expect("data URI"),
            )
            .unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");

        // Verifying before activation is a wrong state.
        let early = s.verify_raw(&factor, &s.code(&secret, 0)).await;
        assert_eq!(error_code(&early), "CONFLICT");
        assert_eq!(error_reason(&early), "FACTOR_NOT_ACTIVE");

        let wrong = s.activate(&factor, "000000").await;
        let code = s.code(&secret, 0);
        let wrong = if code == "000000" {
            s.activate(&factor, "111111").await
        } else {
            wrong
        };
        assert_eq!(wrong["factorResult"], "REJECTED");
        assert_eq!(wrong["factor"]["status"], "PENDING_ACTIVATION");
        assert_eq!(wrong["factor"]["failedAttempts"], 1);

        let activated = s.activate(&factor, &code).await;
        assert_eq!(activated["factorResult"], "SUCCESS");
        assert_eq!(activated["factor"]["status"], "ACTIVE");
        assert_eq!(activated["factor"]["failedAttempts"], 0);

        s.clock.advance(chrono::TimeDelta::seconds(30));
        assert_eq!(s.verify(&factor, &s.code(&secret, 0)).await, "SUCCESS");

        // The read side shows it right after the mutation.
        let read = s
        .ok(
            "query($u: ID!) { user(id: $u) { login email factors { id status lastVerifiedAt failedAttempts } recoveryCodesRemaining } }",
            json!({ "u": user }),
        )
        .await;
        assert_eq!(read["user"]["login"], "alice@example.com");
        assert_eq!(read["user"]["factors"][0]["id"], factor.as_str());
        assert_eq!(read["user"]["factors"][0]["status"], "ACTIVE");
        assert!(read["user"]["factors"][0]["lastVerifiedAt"].is_string());
        let by_login = s
            .ok(
                "{ userByLogin(login: \"ALICE@example.com\") { id } }",
                json!({}),
            )
            .await;
        assert_eq!(by_login["userByLogin"]["id"], user.as_str());

        let removed = s
            .ok(
                "mutation($f: ID!) { removeFactor(input: {factorId: $f}) { status } }",
                json!({ "f": factor }),
            )
            .await;
        assert_eq!(removed["removeFactor"]["status"], "REMOVED");
        s.clock.advance(chrono::TimeDelta::seconds(30));
        let after = s.verify_raw(&factor, &s.code(&secret, 0)).await;
        assert_eq!(error_code(&after), "CONFLICT");
        assert_eq!(error_reason(&after), "FACTOR_REMOVED");
        let read = s
            .ok(
                "query($f: ID!) { factor(id: $f) { status } }",
                json!({ "f": factor }),
            )
            .await;
        assert_eq!(read["factor"]["status"], "REMOVED");
    }
);

both_stores!(
    codes_from_the_secret_match_an_independent_totp_implementation,
    |store| async move {
        // The code computed by totp-rs from the returned base32 secret is what the server
        // accepts: the same secret an authenticator app scans.
        let s = TestServer::start(store).await;
        let user = s.create_user("bob").await;
        let (factor, secret) = s.enroll_totp(&user).await;
        let code = code_at(&secret, s.clock_unix());
        assert_eq!(s.activate(&factor, &code).await["factorResult"], "SUCCESS");
    }
);

both_stores!(pending_enrolment_expires, |store| async move {
    let s = TestServer::start(store).await;
    let user = s.create_user("carol").await;
    let (factor, secret) = s.enroll_totp(&user).await;
    s.clock.advance(chrono::TimeDelta::minutes(16));
    let read = s
        .ok(
            "query($f: ID!) { factor(id: $f) { status } }",
            json!({ "f": factor }),
        )
        .await;
    assert_eq!(read["factor"]["status"], "EXPIRED");
    let first = s.activate(&factor, &s.code(&secret, 0)).await;
    assert_eq!(first["factorResult"], "EXPIRED");
    assert_eq!(first["factor"]["status"], "EXPIRED");
    let second = s.activate(&factor, &s.code(&secret, 0)).await;
    assert_eq!(second["factorResult"], "EXPIRED");
});

both_stores!(duplicate_login_is_a_conflict, |store| async move {
    let s = TestServer::start(store).await;
    s.create_user("dave").await;
    let again = s
        .gql(
            "mutation { createUser(input: {login: \" DAVE \"}) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&again), "CONFLICT");
    assert_eq!(error_reason(&again), "LOGIN_TAKEN");
    let users = s
        .ok("{ users { edges { node { login } } } }", json!({}))
        .await;
    assert_eq!(users["users"]["edges"].as_array().unwrap().len(), 1);
});

both_stores!(
    invalid_input_is_bad_user_input_and_writes_nothing,
    |store| async move {
        let s = TestServer::start(store).await;
        for (input, reason) in [
            (json!({"login": "has space"}), "INVALID_LOGIN"),
            (
                json!({"login": "erin", "email": "not-an-address"}),
                "INVALID_EMAIL",
            ),
            // Addresses a loose check passed and the SMTP layer then refused or rewrote (L7).
            (
                json!({"login": "erin", "email": "a,victim@example.com"}),
                "INVALID_EMAIL",
            ),
            (
                json!({"login": "erin", "email": "\"evil\"@example.com"}),
                "INVALID_EMAIL",
            ),
            (
                json!({"login": "erin", "email": "Erin <erin@example.com>"}),
                "INVALID_EMAIL",
            ),
            (
                json!({"login": "erin", "phoneNumber": "0155 555"}),
                "INVALID_PHONE_NUMBER",
            ),
            (
                json!({"login": "erin", "password": "short"}),
                "INVALID_PASSWORD",
            ),
        ] {
            let r = s
                .gql(
                    "mutation($i: CreateUserInput!) { createUser(input: $i) { id } }",
                    json!({ "i": input }),
                )
                .await;
            assert_eq!(error_code(&r), "BAD_USER_INPUT", "{r}");
            assert_eq!(error_reason(&r), reason, "{r}");
        }
        let users = s.ok("{ users { edges { node { id } } } }", json!({})).await;
        assert_eq!(users["users"]["edges"], json!([]));
        let count = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events")
            .fetch_one(&s.server().state.db.pool)
            .await
            .unwrap();
        assert_eq!(count, 0);

        let user = s.create_user("erin").await;
        let long_label = "x".repeat(129);
        let r = s
        .gql(
            "mutation($u: ID!, $l: String) { enrollFactor(input: {userId: $u, type: TOTP, label: $l}) { factor { id } } }",
            json!({ "u": user, "l": long_label }),
        )
        .await;
        assert_eq!(error_code(&r), "BAD_USER_INPUT");
        assert_eq!(error_reason(&r), "INVALID_LABEL");
        let (factor, _) = s.enroll_totp(&user).await;
        let r = s
        .gql("mutation($f: ID!) { activateFactor(input: {factorId: $f, passCode: \"12a456\"}) { factorResult } }", json!({ "f": factor }))
        .await;
        assert_eq!(error_code(&r), "BAD_USER_INPUT");
        assert_eq!(error_reason(&r), "MALFORMED_PASS_CODE");
        let r = s
            .ok(
                "query($f: ID!) { factor(id: $f) { failedAttempts } }",
                json!({ "f": factor }),
            )
            .await;
        assert_eq!(
            r["factor"]["failedAttempts"], 0,
            "a malformed code is not an attempt"
        );
        let r = s
            .gql("{ user(id: \"not-a-uuid\") { id } }", json!({}))
            .await;
        assert_eq!(error_code(&r), "BAD_USER_INPUT");
        let r = s.gql("{ nosuchfield }", json!({})).await;
        assert_eq!(error_code(&r), "GRAPHQL_VALIDATION_FAILED");
    }
);

both_stores!(unknown_ids_are_not_found, |store| async move {
    let s = TestServer::start(store).await;
    let ghost = uuid::Uuid::now_v7().to_string();
    let r = s.verify_raw(&ghost, "123456").await;
    assert_eq!(error_code(&r), "NOT_FOUND");
    assert_eq!(error_reason(&r), "FACTOR_NOT_FOUND");
    let r = s
        .gql("mutation($f: ID!) { activateFactor(input: {factorId: $f, passCode: \"123456\"}) { factorResult } }", json!({ "f": ghost }))
        .await;
    assert_eq!(error_code(&r), "NOT_FOUND");
    let r = s
        .gql(
            "mutation($f: ID!) { removeFactor(input: {factorId: $f}) { id } }",
            json!({ "f": ghost }),
        )
        .await;
    assert_eq!(error_code(&r), "NOT_FOUND");
    let r = s
        .gql(
            "mutation($u: ID!) { enrollFactor(input: {userId: $u, type: TOTP}) { factor { id } } }",
            json!({ "u": ghost }),
        )
        .await;
    assert_eq!(error_code(&r), "NOT_FOUND");
    assert_eq!(error_reason(&r), "USER_NOT_FOUND");
    // Nullable queries answer null for a well-formed id that names nothing.
    let r = s
        .ok(
            "query($i: ID!) { user(id: $i) { id } factor(id: $i) { id } }",
            json!({ "i": ghost }),
        )
        .await;
    assert_eq!(r, json!({ "user": null, "factor": null }));
});

both_stores!(database_dump_holds_no_secret, |store| async move {
    let s = TestServer::start(store).await;
    let password = "correct-horse-battery-staple";
    s.ok(
        "mutation($p: String!) { createUser(input: {login: \"frank\", password: $p}) { id } }",
        json!({ "p": password }),
    )
    .await;
    let user = s
        .ok("{ userByLogin(login: \"frank\") { id } }", json!({}))
        .await["userByLogin"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (factor, secret) = s.enroll_totp(&user).await;
    assert_eq!(
        s.activate(&factor, &s.code(&secret, 0)).await["factorResult"],
        "SUCCESS"
    );
    let raw = totp_rs::Secret::Encoded(secret.clone()).to_bytes().unwrap();
    let dump = s.dump_database().await;
    assert!(
        dump.contains(&factor),
        "the dump must include the factor's events"
    );
    for needle in [
        secret.clone(),
        secret.to_lowercase(),
        B64.encode(&raw),
        raw.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        password.to_string(),
        tessera_tests::ADMIN_KEY.to_string(),
    ] {
        assert!(
            !dump.contains(&needle),
            "the database holds {needle} in the clear"
        );
    }
    // The raw bytes as JSON array, the way a careless serializer would write them.
    let as_json_array = serde_json::to_string(&raw).unwrap();
    assert!(!dump.contains(&as_json_array[1..as_json_array.len() - 1]));
});
