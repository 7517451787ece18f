//! Trusted devices: `completeLogin(rememberDevice)` hands out a device token; a
//! later `login` with the right password and that token skips the second factor, until the
//! trust expires or is revoked (by the user, a password change, a removed factor, a
//! recovery-code use).

use chrono::TimeDelta;
use serde_json::{Value, json};
use tessera_tests::{TestServer, both_stores, error_code, error_reason, jwt_claims};

const PASSWORD: &str = "correct horse battery staple";
const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0";

const LOGIN: &str = "mutation($l: String!, $p: String!, $d: String) { login(input: {login: $l, password: $p, deviceToken: $d}) { accessToken mfaRequired challenge { id } } }";

async fn login_with(s: &TestServer, login: &str, password: &str, device: &str) -> Value {
    s.gql_as(
        None,
        LOGIN,
        json!({ "l": login, "p": password, "d": device }),
    )
    .await
}

/// Logs in with the password and the TOTP factor, asking to be remembered; returns the
/// whole `completeLogin` payload.
async fn remembered(s: &TestServer, login: &str, factor: &str, secret: &str) -> Value {
    s.clock.advance(TimeDelta::seconds(30));
    let r = s.login(login, PASSWORD).await;
    let challenge = r["data"]["login"]["challenge"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_string();
    let r = s
        .gql_with(
            None,
            &[("user-agent", BROWSER)],
            "mutation($c: ID!, $f: ID!, $p: String!) { completeLogin(input: {challengeId: $c, factorId: $f, passCode: $p, rememberDevice: true}) { factorResult accessToken deviceToken } }",
            json!({ "c": challenge, "f": factor, "p": s.code(secret, 0) }),
        )
        .await;
    assert_eq!(r["data"]["completeLogin"]["factorResult"], "SUCCESS", "{r}");
    r["data"]["completeLogin"].clone()
}

async fn device_token(s: &TestServer, login: &str, factor: &str, secret: &str) -> String {
    remembered(s, login, factor, secret).await["deviceToken"]
        .as_str()
        .expect("a device token")
        .to_string()
}

/// A user with a password and an active TOTP factor: (user, factor, secret).
async fn user_with_totp(s: &TestServer, login: &str) -> (String, String, String) {
    let user = s.create_full_user(login, PASSWORD).await;
    let (factor, secret) = s.enroll_totp(&user).await;
    let r = s.activate(&factor, &s.code(&secret, 0)).await;
    assert_eq!(r["factorResult"], "SUCCESS", "{r}");
    (user, factor, secret)
}

async fn devices(s: &TestServer, user: &str) -> Value {
    s.ok(
        "query($u: ID!) { user(id: $u) { trustedDevices { id label createdAt lastUsedAt expiresAt } } }",
        json!({ "u": user }),
    )
    .await["user"]["trustedDevices"]
        .clone()
}

fn skipped_mfa(r: &Value) -> bool {
    let data = &r["data"]["login"];
    assert!(r["errors"].is_null(), "{r}");
    data["mfaRequired"] == false && data["accessToken"].is_string()
}

both_stores!(
    a_remembered_device_skips_the_second_factor,
    |store| async move {
        let s = TestServer::start(store).await;
        let (alice, factor, secret) = user_with_totp(&s, "alice").await;
        let (_bob, _, _) = user_with_totp(&s, "bob").await;
        let token = device_token(&s, "alice", &factor, &secret).await;

        let r = login_with(&s, "alice", PASSWORD, &token).await;
        assert!(skipped_mfa(&r), "{r}");
        let claims = jwt_claims(r["data"]["login"]["accessToken"].as_str().unwrap());
        assert_eq!(claims["sub"], alice.as_str());
        // On record as the device, and not a factor proven now.
        assert_eq!(claims["amr"], json!(["pwd", "device"]));
        assert_eq!(claims["acr"], "pwd");
        let types = s.event_types("User", &alice).await;
        assert!(
            types.ends_with(&["DeviceTrusted".into(), "TrustedDeviceUsed".into()]),
            "{types:?}"
        );
        let shown = devices(&s, &alice).await;
        assert_eq!(shown.as_array().unwrap().len(), 1, "{shown}");
        assert_eq!(shown[0]["label"], BROWSER);
        assert!(shown[0]["lastUsedAt"].is_string(), "{shown}");

        // Never instead of the password.
        let r = login_with(&s, "alice", "not the password", &token).await;
        assert_eq!(error_code(&r), "UNAUTHENTICATED", "{r}");
        assert_eq!(error_reason(&r), "INVALID_CREDENTIALS");
        // Worthless for another user, or altered.
        let r = login_with(&s, "bob", PASSWORD, &token).await;
        assert_eq!(r["data"]["login"]["mfaRequired"], true, "{r}");
        let (id, secret_part) = token.split_once('.').unwrap();
        let altered = format!("{id}.{}", secret_part.chars().rev().collect::<String>());
        let r = login_with(&s, "alice", PASSWORD, &altered).await;
        assert_eq!(r["data"]["login"]["mfaRequired"], true, "{r}");
        let r = login_with(&s, "alice", PASSWORD, "garbage").await;
        assert_eq!(r["data"]["login"]["mfaRequired"], true, "{r}");

        // Only a keyed hash is stored: the dump holds no part of the token's secret.
        let dump = s.dump_database().await;
        assert!(
            !dump.contains(secret_part),
            "the device token is in the database"
        );

        // The trust ends after 30 days.
        s.clock.advance(TimeDelta::days(30));
        let r = login_with(&s, "alice", PASSWORD, &token).await;
        assert_eq!(r["data"]["login"]["mfaRequired"], true, "{r}");
        assert_eq!(devices(&s, &alice).await, json!([]));
    }
);

both_stores!(revocations_end_the_trust, |store| async move {
    let s = TestServer::start(store).await;
    let (user, factor, secret) = user_with_totp(&s, "carol").await;
    let still = |token: String| {
        let s = &s;
        async move { skipped_mfa(&login_with(s, "carol", PASSWORD, &token).await) }
    };

    // Revoked by the user's own token.
    let token = device_token(&s, "carol", &factor, &secret).await;
    let keep = device_token(&s, "carol", &factor, &secret).await;
    assert!(still(token.clone()).await);
    let r = login_with(&s, "carol", PASSWORD, &token).await;
    let own = r["data"]["login"]["accessToken"]
        .as_str()
        .unwrap()
        .to_string();
    let shown = devices(&s, &user).await;
    assert_eq!(shown.as_array().unwrap().len(), 2, "{shown}");
    let r = s
        .gql_as(
            Some(&own),
            "mutation($i: ID!) { revokeTrustedDevice(input: {id: $i}) { trustedDevice { id } } }",
            json!({ "i": shown[0]["id"] }),
        )
        .await;
    assert_eq!(
        r["data"]["revokeTrustedDevice"]["trustedDevice"]["id"], shown[0]["id"],
        "{r}"
    );
    assert!(!still(token).await);
    assert!(still(keep.clone()).await, "only that device was revoked");

    // A recovery-code use revokes them all.
    let codes = s
        .ok(
            "mutation($u: ID!) { regenerateRecoveryCodes(input: {userId: $u}) { recoveryCodes } }",
            json!({ "u": user }),
        )
        .await["regenerateRecoveryCodes"]["recoveryCodes"]
        .clone();
    let r = s
        .ok(
            "mutation($u: ID!, $c: String!) { useRecoveryCode(input: {userId: $u, code: $c}) { factorResult } }",
            json!({ "u": user, "c": codes[0] }),
        )
        .await;
    assert_eq!(r["useRecoveryCode"]["factorResult"], "SUCCESS");
    assert!(!still(keep).await);

    // A password change revokes them all.
    let token = device_token(&s, "carol", &factor, &secret).await;
    assert!(still(token.clone()).await);
    s.ok(
        "mutation($u: ID!, $p: String!) { setPasswordV2(input: {userId: $u, password: $p}) { user { id } } }",
        json!({ "u": user, "p": PASSWORD }),
    )
    .await;
    assert!(!still(token).await);

    // A removed factor (here a pending second one) revokes them all.
    let (second, _) = s.enroll_totp(&user).await;
    let token = device_token(&s, "carol", &factor, &secret).await;
    assert!(still(token.clone()).await);
    s.ok(
        "mutation($f: ID!) { removeFactor(input: {factorId: $f}) { status } }",
        json!({ "f": second }),
    )
    .await;
    assert!(!still(token).await);
    let types = s.event_types("User", &user).await;
    assert_eq!(
        types.iter().filter(|t| *t == "DeviceRevoked").count(),
        4,
        "{types:?}"
    );
    assert_eq!(devices(&s, &user).await, json!([]));
});

both_stores!(
    no_device_token_when_trusted_devices_are_off,
    |store| async move {
        let s = TestServer::start_with(store, |c| c.trusted_device_days = 0).await;
        let (user, factor, secret) = user_with_totp(&s, "dave").await;
        let r = remembered(&s, "dave", &factor, &secret).await;
        assert!(r["accessToken"].is_string(), "{r}");
        assert_eq!(r["deviceToken"], Value::Null);
        assert_eq!(
            s.event_types("User", &user)
                .await
                .iter()
                .filter(|t| *t == "DeviceTrusted")
                .count(),
            0
        );
    }
);

const SET_POLICY: &str = "mutation($d: Int) { setMfaPolicyV2(input: {mode: OPTIONAL, allowedFactorTypes: [TOTP], trustedDeviceDays: $d}) { policy { trustedDeviceDays effectiveTrustedDeviceDays } } }";

both_stores!(
    the_mfa_policy_decides_whether_and_how_long_devices_are_trusted,
    |store| async move {
        let s = TestServer::start(store).await;
        let (user, factor, secret) = user_with_totp(&s, "erin").await;
        let policy = s
            .ok(
                "{ mfaPolicy { trustedDeviceDays effectiveTrustedDeviceDays } }",
                json!({}),
            )
            .await;
        assert_eq!(
            policy["mfaPolicy"],
            json!({ "trustedDeviceDays": null, "effectiveTrustedDeviceDays": 30 }),
            "without a policy of its own, the server's 30 days"
        );
        let earlier = device_token(&s, "erin", &factor, &secret).await;
        assert!(skipped_mfa(
            &login_with(&s, "erin", PASSWORD, &earlier).await
        ));

        // 0: no device token, and the one given earlier skips no factor any more.
        let r = s.ok(SET_POLICY, json!({ "d": 0 })).await;
        assert_eq!(
            r["setMfaPolicyV2"]["policy"],
            json!({ "trustedDeviceDays": 0, "effectiveTrustedDeviceDays": 0 })
        );
        let r = remembered(&s, "erin", &factor, &secret).await;
        assert!(r["accessToken"].is_string(), "{r}");
        assert_eq!(r["deviceToken"], Value::Null);
        let r = login_with(&s, "erin", PASSWORD, &earlier).await;
        assert_eq!(r["data"]["login"]["mfaRequired"], true, "{r}");

        // 7: a new trust lasts a week.
        let r = s.ok(SET_POLICY, json!({ "d": 7 })).await;
        assert_eq!(
            r["setMfaPolicyV2"]["policy"]["effectiveTrustedDeviceDays"],
            7
        );
        let week = device_token(&s, "erin", &factor, &secret).await;
        let shown = devices(&s, &user).await;
        let newest = shown.as_array().unwrap().last().unwrap().clone();
        let at =
            |k: &str| chrono::DateTime::parse_from_rfc3339(newest[k].as_str().unwrap()).unwrap();
        assert_eq!(
            at("expiresAt") - at("createdAt"),
            TimeDelta::days(7),
            "{newest}"
        );
        assert!(skipped_mfa(&login_with(&s, "erin", PASSWORD, &week).await));
        s.clock.advance(TimeDelta::days(7));
        let r = login_with(&s, "erin", PASSWORD, &week).await;
        assert_eq!(r["data"]["login"]["mfaRequired"], true, "{r}");

        // Out of range: bad input, and the policy stays as it was.
        let before = s.event_types("MfaPolicy", "global").await.len();
        for days in [366, -1] {
            let r = s.gql(SET_POLICY, json!({ "d": days })).await;
            assert_eq!(error_code(&r), "BAD_USER_INPUT", "{r}");
        }
        assert_eq!(s.event_types("MfaPolicy", "global").await.len(), before);
        let policy = s.ok("{ mfaPolicy { trustedDeviceDays } }", json!({})).await;
        assert_eq!(policy["mfaPolicy"]["trustedDeviceDays"], 7);
    }
);
