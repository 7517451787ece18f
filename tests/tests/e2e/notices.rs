//! Notices to the user: each change to how an account authenticates (a factor added or
//! removed, recovery codes replaced or used, a device trusted) and a throttled login reach the
//! user by e-mail, through the alert outbox, and no notice carries a code, a secret, a token
//! or the password.

use std::time::Duration;

use serde_json::json;
use tessera_tests::{TestServer, both_stores, error_reason, smtp_sink::SmtpSink};

const PASSWORD: &str = "correct horse battery staple";
const MAILBOX: &str = "x@example.com";

/// Every notice, by alert kind (the mail's subject names it).
const NOTICES: [&str; 6] = [
    "FACTOR_ADDED",
    "RECOVERY_CODES_REGENERATED",
    "DEVICE_TRUSTED",
    "RECOVERY_CODE_USED",
    "FACTOR_REMOVED",
    "LOGIN_THROTTLED",
];

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect()
}

both_stores!(
    each_account_change_reaches_the_user_by_e_mail_without_a_code,
    |store| async move {
        let smtp = SmtpSink::start().await;
        let url = smtp.url();
        let s = TestServer::start_with(store, move |c| c.smtp_url = Some(url)).await;
        let user = s.create_full_user("nora", PASSWORD).await;
        // Everything secret this account ever shows or is given; no notice may hold any.
        let mut secrets = vec![PASSWORD.to_string()];

        let (factor, secret) = s.enroll_totp(&user).await;
        let code = s.code(&secret, 0);
        let r = s.activate(&factor, &code).await;
        assert_eq!(r["factorResult"], "SUCCESS", "{r}");
        secrets.extend([secret.clone(), code]);
        secrets.extend(strings(&r["recoveryCodes"]));

        let codes = strings(
            &s.ok(
                "mutation($u: ID!) { regenerateRecoveryCodes(input: {userId: $u}) { recoveryCodes } }",
                json!({ "u": user }),
            )
            .await["regenerateRecoveryCodes"]["recoveryCodes"],
        );
        secrets.extend(codes.clone());

        s.clock.advance(chrono::TimeDelta::seconds(30));
        let r = s.login("nora", PASSWORD).await;
        let challenge = r["data"]["login"]["challenge"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{r}"))
            .to_string();
        let code = s.code(&secret, 0);
        let r = s
            .gql_as(
                None,
                "mutation($c: ID!, $f: ID!, $p: String!) { completeLogin(input: {challengeId: $c, factorId: $f, passCode: $p, rememberDevice: true}) { factorResult accessToken deviceToken } }",
                json!({ "c": challenge, "f": factor, "p": code }),
            )
            .await;
        let done = &r["data"]["completeLogin"];
        assert_eq!(done["factorResult"], "SUCCESS", "{r}");
        let device = done["deviceToken"].as_str().expect("a device token");
        let (_, device_secret) = device.split_once('.').unwrap();
        secrets.extend([
            code,
            device.to_string(),
            device_secret.to_string(),
            done["accessToken"].as_str().unwrap().to_string(),
        ]);

        let r = s
            .ok(
                "mutation($u: ID!, $c: String!) { useRecoveryCode(input: {userId: $u, code: $c}) { factorResult } }",
                json!({ "u": user, "c": codes[0] }),
            )
            .await;
        assert_eq!(r["useRecoveryCode"]["factorResult"], "SUCCESS", "{r}");

        s.ok(
            "mutation($f: ID!) { removeFactor(input: {factorId: $f}) { status } }",
            json!({ "f": factor }),
        )
        .await;

        for _ in 0..10 {
            let r = s.login("nora", "not the password").await;
            assert_eq!(error_reason(&r), "INVALID_CREDENTIALS", "{r}");
        }
        let r = s.login("nora", PASSWORD).await;
        assert_eq!(error_reason(&r), "LOGIN_THROTTLED", "{r}");

        let kind_of = |m: &tessera_tests::smtp_sink::Mail| {
            let subject = m.header("Subject").unwrap_or_default();
            NOTICES.iter().find(|k| subject.contains(*k)).copied()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mails = loop {
            let mails = smtp.messages_to(MAILBOX);
            let all = NOTICES
                .iter()
                .all(|k| mails.iter().any(|m| kind_of(m) == Some(*k)));
            if all || std::time::Instant::now() > deadline {
                break mails;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        for kind in NOTICES {
            let n = mails.iter().filter(|m| kind_of(m) == Some(kind)).count();
            assert_eq!(n, 1, "{kind}: {n} mails of {}", mails.len());
        }
        for mail in &mails {
            let text = mail.text();
            for secret in &secrets {
                assert!(
                    !text.contains(secret.as_str()) && !mail.data.contains(secret.as_str()),
                    "a notice holds a secret ({secret}): {text}"
                );
            }
        }
        let trusted = mails
            .iter()
            .find(|m| kind_of(m) == Some("DEVICE_TRUSTED"))
            .unwrap();
        assert!(
            trusted.text().contains("trusted to skip the second factor"),
            "{}",
            trusted.text()
        );
    }
);
