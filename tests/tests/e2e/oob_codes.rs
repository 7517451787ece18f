//! SMS and e-mail factors: codes sent to real receivers on loopback (an SMTP server and an
//! HTTP "SMS gateway"), enrol → activate → challenge → verify, and every way a code fails.

use chrono::TimeDelta;
use serde_json::json;
use tessera_tests::{Phones, TestServer, both_stores, contains_code, error_code, error_reason};

const PHONE: &str = "+14155550123";
const ADDRESS: &str = "bob@example.org";

/// A code that is not `code`.
fn other_than(code: &str) -> String {
    if code == "000000" { "000001" } else { "000000" }.into()
}

both_stores!(sms_enrol_activate_challenge_verify, |store| async move {
    let phones = Phones::start().await;
    let s = TestServer::start_with_phones(store, &phones).await;
    let user = s.create_user("bob").await;
    let enrolled = s.enroll_oob(&user, "SMS", PHONE).await;
    let factor = enrolled["factor"]["id"].as_str().unwrap().to_string();
    assert_eq!(enrolled["factor"]["type"], "SMS");
    assert_eq!(enrolled["factor"]["status"], "PENDING_ACTIVATION");
    assert_eq!(enrolled["factor"]["phoneNumber"], PHONE);
    assert_eq!(enrolled["totp"], json!(null));
    let challenge = enrolled["challenge"]["id"].as_str().unwrap().to_string();
    assert_eq!(enrolled["challenge"]["purpose"], "FACTOR");
    assert_eq!(enrolled["challenge"]["factorId"], factor.as_str());
    assert_eq!(enrolled["challenge"]["status"], "ISSUED");

    // The phone got exactly the gateway contract: POST {"to", "body"} as JSON.
    let code = phones.sms_code(PHONE, 1).await;
    let sms = &phones.sms.accepted()[0];
    assert_eq!(sms.method, "POST");
    assert_eq!(sms.path, "/sms");
    assert!(
        sms.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    let body = sms.json();
    assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
    assert_eq!(body["to"], PHONE);
    assert!(body["body"].as_str().unwrap().contains(&code));

    // Wrong, then right.
    let wrong = s.activate(&factor, &other_than(&code)).await;
    assert_eq!(wrong["factorResult"], "REJECTED");
    assert_eq!(wrong["factor"]["status"], "PENDING_ACTIVATION");
    assert_eq!(wrong["factor"]["failedAttempts"], 1);
    let activated = s.activate(&factor, &code).await;
    assert_eq!(activated["factorResult"], "SUCCESS");
    assert_eq!(activated["factor"]["status"], "ACTIVE");
    // Single use: the activation code does not verify.
    assert_eq!(s.verify(&factor, &code).await, "PASSCODE_REPLAYED");
    // The code's challenge recorded it all; delivery was recorded too.
    let c = s.challenge(&challenge).await;
    assert_eq!(c["status"], "COMPLETED");
    assert_eq!(c["failedAttempts"], 1);
    s.wait_for_event("Challenge", &challenge, "Delivered").await;
    assert_eq!(s.challenge(&challenge).await["delivery"], "DELIVERED");

    // Later: a fresh code by challengeFactor.
    s.clock.advance(TimeDelta::seconds(30));
    let r = s.challenge_factor(&factor, None).await;
    let second = r["data"]["challengeFactor"]["challenge"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_string();
    assert_ne!(second, challenge);
    let code2 = phones.sms_code(PHONE, 2).await;
    assert_eq!(s.verify(&factor, &code2).await, "SUCCESS");
    assert_eq!(s.verify(&factor, &code2).await, "PASSCODE_REPLAYED");
    // Nothing live any more: a guess is not even checked.
    assert_eq!(
        s.verify(&factor, &other_than(&code2)).await,
        "CHALLENGE_REQUIRED"
    );
    assert_eq!(s.challenge(&second).await["status"], "COMPLETED");

    let read = s
        .ok(
            "query($u: ID!) { user(id: $u) { factors { id type status phoneNumber lastVerifiedAt } } }",
            json!({ "u": user }),
        )
        .await;
    assert_eq!(read["user"]["factors"][0]["status"], "ACTIVE");
    assert_eq!(read["user"]["factors"][0]["phoneNumber"], PHONE);
    assert!(read["user"]["factors"][0]["lastVerifiedAt"].is_string());
});

both_stores!(email_enrol_activate_challenge_verify, |store| async move {
    let phones = Phones::start().await;
    let s = TestServer::start_with_phones(store, &phones).await;
    let user = s.create_user("bob").await;
    let enrolled = s.enroll_oob(&user, "EMAIL", ADDRESS).await;
    let factor = enrolled["factor"]["id"].as_str().unwrap().to_string();
    assert_eq!(enrolled["factor"]["type"], "EMAIL");
    assert_eq!(enrolled["factor"]["email"], ADDRESS);
    let mails = phones
        .smtp
        .wait_for(ADDRESS, 1, tessera_tests::DELIVERY_WAIT)
        .await;
    assert_eq!(mails[0].from, "no-reply@tessera.test");
    assert_eq!(mails[0].to, vec![ADDRESS.to_string()]);
    assert_eq!(
        mails[0].header("Subject").as_deref(),
        Some("Your Tessera code")
    );
    assert!(
        mails[0]
            .header("From")
            .unwrap()
            .contains("no-reply@tessera.test")
    );
    let code = phones.email_code(ADDRESS, 1).await;
    assert_eq!(s.activate(&factor, &code).await["factorResult"], "SUCCESS");

    s.clock.advance(TimeDelta::seconds(31));
    let r = s.challenge_factor(&factor, None).await;
    assert_eq!(
        r["data"]["challengeFactor"]["challenge"]["purpose"], "FACTOR",
        "{r}"
    );
    let code2 = phones.email_code(ADDRESS, 2).await;
    assert_ne!(
        code, code2,
        "a fresh code each time (1 in a million to collide)"
    );
    assert_eq!(s.verify(&factor, &code).await, "REJECTED");
    assert_eq!(s.verify(&factor, &code2).await, "SUCCESS");
});

both_stores!(
    an_expired_code_is_refused_unchecked_and_a_new_one_works,
    |store| async move {
        let phones = Phones::start().await;
        let s = TestServer::start_with_phones(store, &phones).await;
        let user = s.create_user("bob").await;
        let factor = s.enroll_oob(&user, "SMS", PHONE).await["factor"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let code = phones.sms_code(PHONE, 1).await;
        assert_eq!(s.activate(&factor, &code).await["factorResult"], "SUCCESS");
        s.clock.advance(TimeDelta::seconds(60));
        let r = s.challenge_factor(&factor, None).await;
        let challenge = r["data"]["challengeFactor"]["challenge"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let code = phones.sms_code(PHONE, 2).await;
        s.clock.advance(TimeDelta::seconds(300));
        let r = s.verify_raw(&factor, &code).await;
        assert_eq!(r["data"]["verifyFactor"]["factorResult"], "EXPIRED");
        // Not a guess: nothing counted.
        assert_eq!(r["data"]["verifyFactor"]["factor"]["failedAttempts"], 0);
        assert_eq!(s.challenge(&challenge).await["status"], "EXPIRED");
        assert!(
            s.challenge_factor(&factor, None)
                .await
                .get("errors")
                .is_none()
        );
        let fresh = phones.sms_code(PHONE, 3).await;
        assert_eq!(s.verify(&factor, &fresh).await, "SUCCESS");
    }
);

both_stores!(
    five_wrong_tries_kill_a_code_the_sixth_is_not_checked,
    |store| async move {
        let phones = Phones::start().await;
        // A lockout threshold above the code's five tries, so the code's own limit shows.
        let s = TestServer::start_with(store, |c| {
            phones.configure(c);
            c.lockout_threshold = 10;
        })
        .await;
        let user = s.create_user("bob").await;
        let factor = s.enroll_oob(&user, "EMAIL", ADDRESS).await["factor"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let code = phones.email_code(ADDRESS, 1).await;
        let wrong = other_than(&code);
        for n in 1..=5 {
            let r = s.activate(&factor, &wrong).await;
            assert_eq!(r["factorResult"], "REJECTED");
            assert_eq!(r["factor"]["failedAttempts"], n);
        }
        // The sixth try, even with the right code: the code is dead; ask for a new one.
        let sixth = s.activate(&factor, &code).await;
        assert_eq!(sixth["factorResult"], "CHALLENGE_REQUIRED");
        assert_eq!(sixth["factor"]["status"], "PENDING_ACTIVATION");
        assert_eq!(sixth["factor"]["failedAttempts"], 5);
        s.clock.advance(TimeDelta::seconds(30));
        assert!(
            s.challenge_factor(&factor, None)
                .await
                .get("errors")
                .is_none()
        );
        let fresh = phones.email_code(ADDRESS, 2).await;
        assert_eq!(s.activate(&factor, &fresh).await["factorResult"], "SUCCESS");
    }
);

both_stores!(
    with_default_lockout_the_fifth_wrong_code_locks_the_factor,
    |store| async move {
        let phones = Phones::start().await;
        let s = TestServer::start_with_phones(store, &phones).await;
        let user = s.create_user("bob").await;
        let factor = s.enroll_oob(&user, "SMS", PHONE).await["factor"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let code = phones.sms_code(PHONE, 1).await;
        assert_eq!(s.activate(&factor, &code).await["factorResult"], "SUCCESS");
        s.clock.advance(TimeDelta::seconds(30));
        s.challenge_factor(&factor, None).await;
        let code = phones.sms_code(PHONE, 2).await;
        for _ in 0..5 {
            assert_eq!(s.verify(&factor, &other_than(&code)).await, "REJECTED");
        }
        assert_eq!(s.verify(&factor, &code).await, "LOCKED_OUT");
        // No code is sent to a locked factor.
        s.clock.advance(TimeDelta::seconds(30));
        let r = s.challenge_factor(&factor, None).await;
        assert_eq!(error_code(&r), "CONFLICT", "{r}");
        assert_eq!(error_reason(&r), "FACTOR_LOCKED_OUT");
        assert_eq!(phones.sms.accepted().len(), 2);
    }
);

both_stores!(resend_is_limited_per_factor, |store| async move {
    let phones = Phones::start().await;
    let s = TestServer::start_with_phones(store, &phones).await;
    let user = s.create_user("bob").await;
    let factor = s.enroll_oob(&user, "SMS", PHONE).await["factor"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let code = phones.sms_code(PHONE, 1).await;
    assert_eq!(s.activate(&factor, &code).await["factorResult"], "SUCCESS");
    // The activation code went out just now.
    s.clock.advance(TimeDelta::seconds(29));
    let r = s.challenge_factor(&factor, None).await;
    assert_eq!(error_code(&r), "RATE_LIMITED", "{r}");
    assert_eq!(error_reason(&r), "RESEND_TOO_SOON");
    assert_eq!(r["errors"][0]["extensions"]["retryAfter"], 1, "{r}");
    // Nine more, 30 s apart: ten in the hour.
    for _ in 0..9 {
        s.clock.advance(TimeDelta::seconds(30));
        let r = s.challenge_factor(&factor, None).await;
        assert!(r.get("errors").is_none(), "{r}");
    }
    s.clock.advance(TimeDelta::seconds(30));
    let r = s.challenge_factor(&factor, None).await;
    assert_eq!(error_code(&r), "RATE_LIMITED");
    assert_eq!(error_reason(&r), "TOO_MANY_CODES");
    // The first of the ten (the activation code) went out 329 s ago: it stops counting in
    // 3271 s.
    assert_eq!(r["errors"][0]["extensions"]["retryAfter"], 3271, "{r}");
    // Refused requests sent nothing: ten messages in all.
    phones
        .sms
        .wait_for("to", PHONE, 10, tessera_tests::DELIVERY_WAIT)
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(phones.sms.accepted().len(), 10);
    // An hour after the first, one more is allowed.
    s.clock.advance(TimeDelta::minutes(55));
    let r = s.challenge_factor(&factor, None).await;
    assert!(r.get("errors").is_none(), "{r}");
    let eleventh = phones.sms_code(PHONE, 11).await;
    assert_eq!(s.verify(&factor, &eleventh).await, "SUCCESS");
});

both_stores!(
    bad_input_is_a_typed_error_and_writes_nothing,
    |store| async move {
        let phones = Phones::start().await;
        let s = TestServer::start_with_phones(store, &phones).await;
        let user = s.create_user("bob").await;
        for (factor_type, field, value, reason) in [
            ("SMS", "phoneNumber", "4155550123", "INVALID_PHONE_NUMBER"),
            (
                "SMS",
                "phoneNumber",
                "+1 415 555 0123",
                "INVALID_PHONE_NUMBER",
            ),
            ("EMAIL", "email", "bob@localhost", "INVALID_EMAIL"),
            ("EMAIL", "email", "not an address", "INVALID_EMAIL"),
            ("EMAIL", "email", "a,victim@example.com", "INVALID_EMAIL"),
            ("EMAIL", "email", "\"evil\"@x", "INVALID_EMAIL"),
            ("EMAIL", "email", "\"evil\"@example.com", "INVALID_EMAIL"),
            ("EMAIL", "email", "bob@[127.0.0.1]", "INVALID_EMAIL"),
        ] {
            let r = s
            .gql(
                &format!(
                    "mutation($u: ID!, $d: String!) {{ enrollFactor(input: {{userId: $u, type: {factor_type}, {field}: $d}}) {{ factor {{ id }} }} }}"
                ),
                json!({ "u": user, "d": value }),
            )
            .await;
            assert_eq!(error_code(&r), "BAD_USER_INPUT", "{value}: {r}");
            assert_eq!(error_reason(&r), reason);
        }
        // No destination given and none in the profile (created with an e-mail only).
        let r = s
        .gql(
            "mutation($u: ID!) { enrollFactor(input: {userId: $u, type: SMS}) { factor { id } } }",
            json!({ "u": user }),
        )
        .await;
        assert_eq!(error_reason(&r), "INVALID_PHONE_NUMBER", "{r}");
        let read = s
            .ok(
                "query($u: ID!) { user(id: $u) { factors { id } } }",
                json!({ "u": user }),
            )
            .await;
        assert_eq!(read["user"]["factors"], json!([]), "nothing was written");
        assert!(phones.sms.requests().is_empty() && phones.smtp.messages().is_empty());

        // A TOTP factor takes no sent codes.
        let (totp, _) = s.enroll_totp(&user).await;
        let r = s.challenge_factor(&totp, None).await;
        assert_eq!(error_code(&r), "BAD_USER_INPUT");
        assert_eq!(error_reason(&r), "CODES_NOT_SUPPORTED");
        // Malformed codes are refused before anything is looked at.
        let factor = s.enroll_oob(&user, "EMAIL", ADDRESS).await["factor"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        for bad in ["12345", "1234567", "12345a"] {
            let r = s
            .gql(
                "mutation($f: ID!, $c: String!) { activateFactor(input: {factorId: $f, passCode: $c}) { factorResult } }",
                json!({ "f": factor, "c": bad }),
            )
            .await;
            assert_eq!(error_code(&r), "BAD_USER_INPUT");
            assert_eq!(error_reason(&r), "MALFORMED_PASS_CODE");
        }
        let types = s.event_types("Factor", &factor).await;
        assert_eq!(
            types,
            ["Enrolled", "CodeIssued"],
            "malformed codes wrote nothing"
        );
    }
);

both_stores!(
    failed_deliveries_are_retried_and_recorded,
    |store| async move {
        let phones = Phones::start().await;
        let s = TestServer::start_with_phones(store, &phones).await;
        let user = s.create_user("bob").await;

        // The gateway fails twice, then takes it: delivered on the third attempt.
        phones.sms.fail_next(2, 503);
        let enrolled = s.enroll_oob(&user, "SMS", PHONE).await;
        let challenge = enrolled["challenge"]["id"].as_str().unwrap().to_string();
        let delivered = s.wait_for_event("Challenge", &challenge, "Delivered").await;
        assert_eq!(delivered["attempts"], 3);
        assert_eq!(delivered["channel"], "SMS");
        assert_eq!(phones.sms.requests().len(), 3);
        assert_eq!(phones.sms.accepted().len(), 1);

        // It fails every time: given up after three attempts, recorded, counted, visible.
        let factor = enrolled["factor"]["id"].as_str().unwrap().to_string();
        s.clock.advance(TimeDelta::seconds(30));
        phones.sms.fail_next(3, 503);
        let r = s.challenge_factor(&factor, None).await;
        let failing = r["data"]["challengeFactor"]["challenge"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let failed = s
            .wait_for_event("Challenge", &failing, "DeliveryFailed")
            .await;
        assert_eq!(failed["attempts"], 3);
        assert_eq!(failed["error"], "HTTP 503");
        assert_eq!(s.challenge(&failing).await["delivery"], "FAILED");
        // A 4xx answer (but 408/429) is final: no retry.
        s.clock.advance(TimeDelta::seconds(30));
        phones.sms.fail_next(1, 400);
        let r = s.challenge_factor(&factor, None).await;
        let refused_sms = r["data"]["challengeFactor"]["challenge"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let failed = s
            .wait_for_event("Challenge", &refused_sms, "DeliveryFailed")
            .await;
        assert_eq!(failed["attempts"], 1);
        assert_eq!(failed["error"], "HTTP 400");
        assert_eq!(phones.sms.requests().len(), 7);

        // SMTP: a 4xx is retried, a 5xx is final at once.
        let mail = s.enroll_oob(&user, "EMAIL", ADDRESS).await;
        phones
            .smtp
            .wait_for(ADDRESS, 1, tessera_tests::DELIVERY_WAIT)
            .await;
        let email_factor = mail["factor"]["id"].as_str().unwrap().to_string();
        s.clock.advance(TimeDelta::seconds(30));
        phones.smtp.refuse_next(1, "451 4.3.0 try again later");
        let r = s.challenge_factor(&email_factor, None).await;
        let retried = r["data"]["challengeFactor"]["challenge"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            s.wait_for_event("Challenge", &retried, "Delivered").await["attempts"],
            2
        );
        s.clock.advance(TimeDelta::seconds(30));
        phones.smtp.refuse_next(1, "550 5.7.1 mailbox unavailable");
        let r = s.challenge_factor(&email_factor, None).await;
        let refused = r["data"]["challengeFactor"]["challenge"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let failed = s
            .wait_for_event("Challenge", &refused, "DeliveryFailed")
            .await;
        assert_eq!(failed["attempts"], 1);
        assert_eq!(failed["error"], "SMTP 550");
        assert_eq!(phones.smtp.refused(), 2);

        let metrics = s
            .http
            .get(format!("{}/metrics", s.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for line in [
            "tessera_delivery_messages_total{channel=\"sms\",result=\"delivered\"} 1",
            "tessera_delivery_messages_total{channel=\"sms\",result=\"failed\"} 2",
            "tessera_delivery_failed_attempts_total{channel=\"sms\"} 6",
            "tessera_delivery_messages_total{channel=\"email\",result=\"delivered\"} 2",
            "tessera_delivery_messages_total{channel=\"email\",result=\"failed\"} 1",
            "tessera_delivery_failed_attempts_total{channel=\"email\"} 2",
        ] {
            assert!(metrics.contains(line), "{line} not in\n{metrics}");
        }
    }
);

both_stores!(
    unconfigured_delivery_writes_the_outbox_file_0600,
    |store| async move {
        let s = TestServer::start(store).await;
        let user = s.create_user("bob").await;
        let factor = s.enroll_oob(&user, "SMS", PHONE).await["factor"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let path = s.outbox.clone();
        let mut line = String::new();
        assert!(
            s.eventually(|| {
                let path = path.clone();
                async move { std::fs::read_to_string(&path).is_ok_and(|t| t.lines().count() == 1) }
            })
            .await,
            "outbox written"
        );
        line.push_str(std::fs::read_to_string(&s.outbox).unwrap().trim());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&s.outbox).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let message: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(message["channel"], "SMS");
        assert_eq!(message["to"], PHONE);
        let code = tessera_tests::extract_code(message["body"].as_str().unwrap());
        assert_eq!(s.activate(&factor, &code).await["factorResult"], "SUCCESS");
    }
);

both_stores!(no_code_in_the_database, |store| async move {
    let phones = Phones::start().await;
    let s = TestServer::start_with_phones(store, &phones).await;
    let user = s.create_user("bob").await;
    let sms = s.enroll_oob(&user, "SMS", PHONE).await["factor"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let email = s.enroll_oob(&user, "EMAIL", ADDRESS).await["factor"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut codes = vec![
        phones.sms_code(PHONE, 1).await,
        phones.email_code(ADDRESS, 1).await,
    ];
    assert_eq!(s.activate(&sms, &codes[0]).await["factorResult"], "SUCCESS");
    s.clock.advance(TimeDelta::seconds(30));
    s.challenge_factor(&email, None).await;
    codes.push(phones.email_code(ADDRESS, 2).await);
    assert_eq!(
        s.activate(&email, &codes[2]).await["factorResult"],
        "SUCCESS"
    );
    let dump = s.dump_database().await;
    assert!(
        dump.contains("CodeIssued"),
        "the dump holds the code events"
    );
    for code in &codes {
        assert!(
            !contains_code(&dump, code),
            "the database holds code {code}"
        );
    }
});

// A code message is queued durably before the request that asked for it is answered: a
// process that ends right after the answer (before any send) leaves it queued, and the next
// server start delivers it. While it waits, its body is sealed; once sent, it is erased.
both_stores!(
    a_code_queued_before_a_crash_is_sent_after_the_restart,
    |store| async move {
        use std::sync::Arc;

        use tessera_api::{app, auth::Caller, state::RequestMeta};

        let phones = Phones::start().await;
        let mut s = TestServer::start_with_phones(store, &phones).await;
        let user = s.create_user("bob").await;
        let enrolled = s.enroll_oob(&user, "SMS", PHONE).await;
        let factor = enrolled["factor"]["id"].as_str().unwrap().to_string();
        let first = phones.sms_code(PHONE, 1).await;
        assert_eq!(s.activate(&factor, &first).await["factorResult"], "SUCCESS");
        s.stop().await;
        // Past the factor's resend limit.
        s.clock.advance(TimeDelta::seconds(31));

        // The "crashed" process: the store and the use case, no background worker at all.
        let state = tessera_api::open(s.config.clone(), Arc::new(s.clock.clone()))
            .await
            .unwrap();
        let call = app::Call {
            caller: Some(Caller::Admin {
                key_id: "test".into(),
            }),
            meta: RequestMeta::internal(),
        };
        let factor_id = tessera_domain::ids::FactorId::parse(&factor).unwrap();
        app::codes::challenge_factor(&state, &call, factor_id, None)
            .await
            .unwrap();
        let waiting: Vec<(Option<String>,)> =
            sqlx::query_as("SELECT sealed_body FROM message_outbox WHERE done_at IS NULL")
                .fetch_all(&state.db.pool)
                .await
                .unwrap();
        assert_eq!(waiting.len(), 1, "the message waits in the queue");
        let sealed = waiting[0].0.clone().expect("a sealed body");
        assert!(sealed.contains("ciphertext") && !sealed.contains("Your Tessera code"));
        drop(state);
        assert_eq!(phones.sms.accepted().len(), 1, "nothing was sent meanwhile");

        s.restart().await;
        let second = phones.sms_code(PHONE, 2).await;
        assert!(
            !contains_code(&sealed, &second),
            "the code is not in the sealed body"
        );
        assert_eq!(s.verify(&factor, &second).await, "SUCCESS");
        let open: Vec<(Option<String>,)> =
            sqlx::query_as("SELECT sealed_body FROM message_outbox WHERE sealed_body IS NOT NULL")
                .fetch_all(&s.server().state.db.pool)
                .await
                .unwrap();
        assert!(open.is_empty(), "delivered bodies are erased: {open:?}");
    }
);

both_stores!(
    sent_codes_typed_with_a_space_or_a_dash_are_accepted,
    |store| async move {
        let phones = Phones::start().await;
        let s = TestServer::start_with_phones(store, &phones).await;
        let user = s.create_user("bob").await;
        let sms = s.enroll_oob(&user, "SMS", PHONE).await;
        let sms = sms["factor"]["id"].as_str().unwrap().to_string();
        let code = phones.sms_code(PHONE, 1).await;
        let typed = format!("{}-{}", &code[..3], &code[3..]);
        assert_eq!(s.activate(&sms, &typed).await["factorResult"], "SUCCESS");

        let email = s.enroll_oob(&user, "EMAIL", ADDRESS).await;
        let email = email["factor"]["id"].as_str().unwrap().to_string();
        let code = phones.email_code(ADDRESS, 1).await;
        let typed = format!("{} {}", &code[..3], &code[3..]);
        assert_eq!(s.activate(&email, &typed).await["factorResult"], "SUCCESS");
        // The typed form is the code: used once, it is a replay in any form.
        assert_eq!(s.verify(&email, &code).await, "PASSCODE_REPLAYED");
    }
);
