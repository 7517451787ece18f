//! No password, code, TOTP secret or token in the logs (TRACE level, every crate, the whole
//! test process) or in the database, after every flow of this feature ran once.

use chrono::TimeDelta;
use serde_json::json;
use tessera_tests::{
    ADMIN_KEY, Phones, TestServer, both_stores, contains_code, log_capture::LogCapture,
};

const PASSWORD: &str = "Tr0ub4dor&3-horse-battery";
const NEW_PASSWORD: &str = "an-entirely-new-Passphrase!";
const WRONG_PASSWORD: &str = "Wr0ng-guess-of-a-password";
const PHONE: &str = "+14155550142";
const ADDRESS: &str = "eve@example.net";

/// Runs every flow; returns (long secrets, six-digit codes) that must never be stored or logged.
async fn every_flow(s: &TestServer, phones: &Phones) -> (Vec<String>, Vec<String>) {
    let mut secrets = vec![
        PASSWORD.to_string(),
        NEW_PASSWORD.to_string(),
        WRONG_PASSWORD.to_string(),
        ADMIN_KEY.to_string(),
    ];
    let mut codes = Vec::new();
    let user = s.create_full_user("eve", PASSWORD).await;
    // A wrong password, and a login before any factor.
    s.login("eve", WRONG_PASSWORD).await;
    let token = s.password_token("eve", PASSWORD).await;
    secrets.push(token.clone());
    // SMS and e-mail factors, activated.
    let sms = s.enroll_oob(&user, "SMS", PHONE).await["factor"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let email = s.enroll_oob(&user, "EMAIL", ADDRESS).await["factor"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    codes.push(phones.sms_code(PHONE, 1).await);
    codes.push(phones.email_code(ADDRESS, 1).await);
    assert_eq!(s.activate(&sms, &codes[0]).await["factorResult"], "SUCCESS");
    assert_eq!(
        s.activate(&email, &codes[1]).await["factorResult"],
        "SUCCESS"
    );
    // A TOTP factor, with the user's own token: a third factor takes a fresh proof, here a
    // step-up answered by SMS.
    let r = s
        .gql_as(
            Some(&token),
            "mutation($u: ID!) { startStepUp(input: {userId: $u}) { challenge { id } } }",
            json!({ "u": user }),
        )
        .await;
    let proof = r["data"]["startStepUp"]["challenge"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_string();
    s.clock.advance(TimeDelta::seconds(30));
    s.gql_as(
        Some(&token),
        "mutation($f: ID!, $c: ID) { challengeFactor(input: {factorId: $f, challengeId: $c}) { challenge { id } } }",
        json!({ "f": sms, "c": proof }),
    )
    .await;
    let step_up_code = phones.sms_code(PHONE, 2).await;
    let r = s
        .gql_as(
            Some(&token),
            "mutation($c: ID!, $f: ID!, $p: String!) { completeStepUp(input: {challengeId: $c, factorId: $f, passCode: $p}) { factorResult } }",
            json!({ "c": proof, "f": sms, "p": step_up_code }),
        )
        .await;
    assert_eq!(
        r["data"]["completeStepUp"]["factorResult"], "SUCCESS",
        "{r}"
    );
    let r = s
        .gql_as(
            Some(&token),
            "mutation($u: ID!, $s: ID) { enrollFactor(input: {userId: $u, type: TOTP, stepUpChallengeId: $s}) { factor { id } totp { secretBase32 } } }",
            json!({ "u": user, "s": proof }),
        )
        .await;
    let totp = r["data"]["enrollFactor"]["factor"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let secret = r["data"]["enrollFactor"]["totp"]["secretBase32"]
        .as_str()
        .unwrap()
        .to_string();
    secrets.push(secret.clone());
    codes.push(s.code(&secret, 0));
    assert_eq!(
        s.activate(&totp, &codes[2]).await["factorResult"],
        "SUCCESS"
    );
    // Login with SMS.
    s.clock.advance(TimeDelta::seconds(30));
    let r = s.login("eve", PASSWORD).await;
    let challenge = r["data"]["login"]["challenge"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    s.gql_as(
        None,
        "mutation($f: ID!, $c: ID) { challengeFactor(input: {factorId: $f, challengeId: $c}) { challenge { id } } }",
        json!({ "f": sms, "c": challenge }),
    )
    .await;
    codes.push(phones.sms_code(PHONE, 3).await);
    let r = s.complete_login(&challenge, &sms, &codes[3]).await;
    let mfa_token = r["data"]["completeLogin"]["accessToken"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_string();
    secrets.push(mfa_token.clone());
    // Step-up with TOTP, with the user's token.
    let r = s
        .gql_as(
            Some(&mfa_token),
            "mutation($u: ID!) { startStepUp(input: {userId: $u, state: {op: \"pay\"}}) { challenge { id } } }",
            json!({ "u": user }),
        )
        .await;
    let step_up = r["data"]["startStepUp"]["challenge"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    codes.push(s.code(&secret, 0));
    let r = s
        .gql_as(
            Some(&mfa_token),
            "mutation($c: ID!, $f: ID!, $p: String!) { completeStepUp(input: {challengeId: $c, factorId: $f, passCode: $p}) { factorResult } }",
            json!({ "c": step_up, "f": totp, "p": codes[4] }),
        )
        .await;
    assert_eq!(
        r["data"]["completeStepUp"]["factorResult"], "SUCCESS",
        "{r}"
    );
    // A code verified by factor id, and a password change.
    s.clock.advance(TimeDelta::seconds(30));
    s.challenge_factor(&email, None).await;
    codes.push(phones.email_code(ADDRESS, 2).await);
    assert_eq!(s.verify(&email, &codes[5]).await, "SUCCESS");
    let r = s
        .gql_as(
            Some(&mfa_token),
            "mutation($u: ID!, $p: String!, $c: String) { setPassword(input: {userId: $u, password: $p, currentPassword: $c}) { id } }",
            json!({ "u": user, "p": NEW_PASSWORD, "c": PASSWORD }),
        )
        .await;
    assert!(r.get("errors").is_none(), "{r}");
    // An API key minted, used, listed and revoked; the user updated, deactivated, reactivated.
    let r = s
        .ok(
            "mutation { createApiKey(input: {name: \"siem\", scope: READ_AUDIT, expiresAt: \"2999-01-01T00:00:00Z\"}) { token apiKey { id } } }",
            json!({}),
        )
        .await;
    let key = r["createApiKey"]["apiKey"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let api_token = r["createApiKey"]["token"].as_str().unwrap().to_string();
    secrets.push(api_token.clone());
    secrets.push(api_token.rsplit('_').next().unwrap().to_string());
    let r = s
        .gql_as(
            Some(&api_token),
            "{ events(first: 1) { edges { cursor } } }",
            json!({}),
        )
        .await;
    assert!(r.get("errors").is_none(), "{r}");
    s.ok("{ apiKeys { edges { node { id } } } }", json!({}))
        .await;
    s.ok(
        "mutation($i: ID!) { revokeApiKey(input: {id: $i}) { apiKey { id } } }",
        json!({ "i": key }),
    )
    .await;
    s.ok(
        "mutation($u: ID!) { updateUser(input: {userId: $u, displayName: \"Eve\"}) { user { id } } }",
        json!({ "u": user }),
    )
    .await;
    s.ok(
        "mutation($u: ID!) { deactivateUser(input: {userId: $u}) { user { id } } }",
        json!({ "u": user }),
    )
    .await;
    s.login("eve", NEW_PASSWORD).await;
    s.ok(
        "mutation($u: ID!) { reactivateUser(input: {userId: $u}) { user { id } } }",
        json!({ "u": user }),
    )
    .await;
    // Each token's signature on its own, too.
    let signatures: Vec<String> = secrets
        .iter()
        .filter(|t| t.matches('.').count() == 2)
        .map(|t| t.rsplit('.').next().unwrap().to_string())
        .collect();
    secrets.extend(signatures);
    codes.push(step_up_code);
    (secrets, codes)
}

both_stores!(no_secret_in_trace_logs_or_database, |store| async move {
    let capture = LogCapture::global();
    let phones = Phones::start().await;
    let s = TestServer::start_with_phones(store, &phones).await;
    let (secrets, codes) = every_flow(&s, &phones).await;
    // Let background deliveries finish (and log).
    s.server()
        .state
        .delivery
        .drain(std::time::Duration::from_secs(10))
        .await;
    let logs = capture.text();
    let dump = s.dump_database().await;
    // The capture did see this server, at TRACE level, down to the SQL driver.
    assert!(logs.contains("TRACE"), "no trace output captured");
    let user_id = tessera_domain::ids::UserId::for_login("eve").to_string();
    assert!(
        logs.contains(&user_id),
        "this test's requests are not in the log"
    );
    assert!(logs.contains("sqlx"), "no database driver output captured");
    assert!(dump.contains("LoginFailed") && dump.contains("CodeIssued"));
    for secret in &secrets {
        assert!(!logs.contains(secret.as_str()), "a log line holds {secret}");
        assert!(
            !dump.contains(secret.as_str()),
            "the database holds {secret}"
        );
    }
    for code in &codes {
        assert!(!contains_code(&logs, code), "a log line holds code {code}");
        assert!(
            !contains_code(&dump, code),
            "the database holds code {code}"
        );
    }
    eprintln!(
        "checked {} secrets and {} codes against {} KiB of TRACE logs and a {} KiB dump",
        secrets.len(),
        codes.len(),
        logs.len() / 1024,
        dump.len() / 1024
    );
});
