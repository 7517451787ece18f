//! The SMS gateway's requests signed under their own secret (Standard Webhooks), and the texts
//! of code messages from templates, checked at start.

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use hmac::{Hmac, Mac};
use tessera_tests::{
    DELIVERY_WAIT, Phones, TestServer, both_stores, extract_code, fresh::FreshStore,
    log_capture::LogCapture, webhook_sink::Received,
};

const PHONE: &str = "+14155550123";
const ADDRESS: &str = "carol@example.org";
/// Not the alert webhook's secret: the gateway has its own.
const SMS_SECRET: &str = "whsec_c21zLWdhdGV3YXktc2VjcmV0LWZvci10ZXN0cw==";

/// The signature over `id.timestamp.body`, computed here, not by the server's code.
fn expected_signature(secret: &str, r: &Received) -> String {
    let id = r.header("webhook-id").expect("webhook-id");
    let timestamp = r.header("webhook-timestamp").expect("webhook-timestamp");
    let key = B64.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.{}", r.text()).as_bytes());
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

/// The start-up log line naming this server's gateway (its URL has the sink's own port).
fn gateway_line(capture: &LogCapture, url: &str) -> String {
    let text = capture.text();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(&format!("SMS gateway {url}")))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    lines[0].to_string()
}

both_stores!(sms_gateway_requests_are_signed, |store| async move {
    let capture = LogCapture::global();
    let phones = Phones::start().await;
    let s = TestServer::start_with(store, |c| {
        phones.configure(c);
        c.sms_webhook_secret = Some(SMS_SECRET.into());
    })
    .await;
    let line = gateway_line(&capture, &phones.sms.url("/sms"));
    assert!(line.contains("(signed)"), "{line}");
    assert!(!line.contains("whsec_"), "the secret is not logged: {line}");

    // The first attempt fails: the retry carries the same id, a fresh valid signature.
    phones.sms.fail_next(1, 503);
    let user = s.create_user("carol").await;
    let enrolled = s.enroll_oob(&user, "SMS", PHONE).await;
    let factor = enrolled["factor"]["id"].as_str().unwrap().to_string();
    let code = phones.sms_code(PHONE, 1).await;
    let requests = phones.sms.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0].answered, 503);
    for r in &requests {
        let signature = r.header("webhook-signature").expect("signed");
        assert_eq!(signature, expected_signature(SMS_SECRET, r));
        assert!(r.text().contains(&code));
        let timestamp: i64 = r.header("webhook-timestamp").unwrap().parse().unwrap();
        assert!((chrono::Utc::now().timestamp() - timestamp).abs() < 60);
    }
    assert_eq!(
        requests[0].header("webhook-id"),
        requests[1].header("webhook-id"),
        "a retry is the same message"
    );
    // A body altered on the way no longer verifies.
    let mut forged = requests[1].clone();
    forged.body = forged.text().replace(&code, "000000").into_bytes();
    assert_ne!(
        forged.header("webhook-signature").unwrap(),
        expected_signature(SMS_SECRET, &forged)
    );
    assert_eq!(s.activate(&factor, &code).await["factorResult"], "SUCCESS");

    // The next message has an id of its own.
    s.clock.advance(chrono::TimeDelta::seconds(60));
    s.challenge_factor(&factor, None).await;
    phones.sms_code(PHONE, 2).await;
    let accepted = phones.sms.accepted();
    assert_eq!(
        accepted[1].header("webhook-signature").unwrap(),
        expected_signature(SMS_SECRET, &accepted[1])
    );
    assert_ne!(
        accepted[0].header("webhook-id"),
        accepted[1].header("webhook-id")
    );
});

both_stores!(
    without_a_secret_the_gateway_is_unsigned_and_the_log_says_so,
    |store| async move {
        let capture = LogCapture::global();
        let phones = Phones::start().await;
        let s = TestServer::start_with_phones(store, &phones).await;
        let line = gateway_line(&capture, &phones.sms.url("/sms"));
        assert!(line.contains("unsigned"), "{line}");
        assert!(line.contains("TESSERA_SMS_WEBHOOK_SECRET"), "{line}");
        let user = s.create_user("carol").await;
        s.enroll_oob(&user, "SMS", PHONE).await;
        phones.sms_code(PHONE, 1).await;
        let r = &phones.sms.accepted()[0];
        for header in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
            assert_eq!(r.header(header), None, "{header}");
        }
    }
);

both_stores!(message_texts_come_from_the_templates, |store| async move {
    let phones = Phones::start().await;
    let dir = std::env::temp_dir().join(format!("tpl_{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("subject.txt"),
        "{issuer} sign-in ({minutes} min)\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("body.txt"),
        "Hello from {issuer}.\nCode: {code}\nValid {minutes} minutes.\n",
    )
    .unwrap();
    let s = TestServer::start_with(store, |c| {
        phones.configure(c);
        c.totp_issuer = "Acme Corp".into();
        c.oob_code_ttl_seconds = 600;
        c.sms_template = Some("{code} is your {issuer} code ({minutes} min)".into());
        c.email_template_dir = Some(dir.clone());
    })
    .await;
    let user = s.create_user("carol").await;

    s.enroll_oob(&user, "SMS", PHONE).await;
    let code = phones.sms_code(PHONE, 1).await;
    assert_eq!(
        phones.sms.accepted()[0].json()["body"],
        format!("{code} is your Acme Corp code (10 min)")
    );

    s.enroll_oob(&user, "EMAIL", ADDRESS).await;
    let mails = phones.smtp.wait_for(ADDRESS, 1, DELIVERY_WAIT).await;
    let subject = mails[0].header("Subject").unwrap();
    assert_eq!(subject, "Acme Corp sign-in (10 min)");
    let code = extract_code(mails[0].body());
    assert!(!subject.contains(&code));
    assert_eq!(
        mails[0].body().replace("\r\n", "\n").trim_end(),
        format!("Hello from Acme Corp.\nCode: {code}\nValid 10 minutes.")
    );
    let _ = std::fs::remove_dir_all(&dir);
});

both_stores!(
    a_code_in_the_subject_template_is_refused_at_start,
    |store| async move {
        let fresh = FreshStore::new(store).await;
        let dir = std::env::temp_dir().join(format!("tpl_{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("subject.txt"), "Your code is {code}").unwrap();
        let mut config = fresh.config.clone();
        config.email_template_dir = Some(dir.clone());
        let error = match tessera_api::start(config).await {
            Ok(server) => {
                server.stop().await;
                panic!("started with {{code}} in the subject");
            }
            Err(e) => e.to_string(),
        };
        assert!(
            error.contains("subject.txt must not hold {code}"),
            "{error}"
        );
        assert!(error.contains("e-mail subject"), "{error}");

        // An unknown placeholder in the SMS template is refused too.
        let mut config = fresh.config.clone();
        config.sms_template = Some("{code} for {user}".into());
        let error = tessera_api::start(config)
            .await
            .err()
            .expect("refused")
            .to_string();
        assert!(
            error.contains("TESSERA_SMS_TEMPLATE: unknown placeholder {user}"),
            "{error}"
        );

        // Without {code} in the subject the same folder starts.
        std::fs::write(dir.join("subject.txt"), "Your sign-in code").unwrap();
        let mut config = fresh.config.clone();
        config.email_template_dir = Some(dir.clone());
        tessera_api::start(config)
            .await
            .expect("starts")
            .stop()
            .await;
        let _ = std::fs::remove_dir_all(&dir);
    }
);
