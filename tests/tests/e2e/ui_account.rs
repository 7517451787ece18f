//! The account page `/ui/account` in a real browser: without a token it sends the user to
//! sign in; with one it lists the factors, adds an authenticator app from its QR code and a
//! passkey (Chromium's virtual authenticator), regenerates recovery codes shown once, forgets
//! a remembered device, removes a factor after the inline step-up the API asks for, and shows
//! the user's activity with a failed proof. Screenshots at desktop and phone width.

use std::time::Duration;

use base64::Engine;
use chrono::TimeDelta;
use serde_json::{Value, json};
use tessera_tests::{
    Phones, Store, TestServer, both_stores,
    browser::{Browser, DESKTOP, PHONE, WAIT},
};

use crate::okta::decode_qr;

const PASSWORD: &str = "correct horse battery staple";
const LAPTOP: &str = "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0";
const ATTACKER: &str = "curl/8.5.0";

/// A server on a known port, so the page's origin `http://localhost:<port>` (a secure
/// context a WebAuthn RP id of `localhost` covers) can be the WebAuthn origin.
async fn server(store: Store, phones: &Phones) -> (TestServer, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let origin = format!("http://localhost:{port}");
    let listed = origin.clone();
    let s = TestServer::start_with(store, move |c| {
        phones.configure(c);
        c.listen = std::net::SocketAddr::from(([127, 0, 0, 1], port)).into();
        c.webauthn_origins = vec![listed];
    })
    .await;
    (s, origin)
}

async fn me(s: &TestServer, token: &str) -> Value {
    let r = s
        .gql_as(
            Some(token),
            "{ me { recoveryCodesRemaining factors { id type status label } trustedDevices { id label } } }",
            json!({}),
        )
        .await;
    assert!(r["errors"].is_null(), "{r}");
    r["data"]["me"].clone()
}

/// Logs alice in with the TOTP factor from `agent`, asking to be remembered.
async fn remember(s: &TestServer, factor: &str, secret: &str, agent: &str) {
    s.clock.advance(TimeDelta::seconds(30));
    let login = s.login("alice", PASSWORD).await;
    let r = s
        .gql_with(
            None,
            &[("user-agent", agent)],
            "mutation($c: ID!, $f: ID!, $p: String!) { completeLogin(input: {challengeId: $c, factorId: $f, passCode: $p, rememberDevice: true}) { factorResult } }",
            json!({ "c": login["data"]["login"]["challenge"]["id"], "f": factor, "p": s.code(secret, 0) }),
        )
        .await;
    assert_eq!(r["data"]["completeLogin"]["factorResult"], "SUCCESS", "{r}");
}

fn active(me: &Value, factor_type: &str) -> Vec<Value> {
    me["factors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["type"] == factor_type && f["status"] == "ACTIVE")
        .cloned()
        .collect()
}

both_stores!(
    the_account_page_adds_and_removes_factors_and_shows_codes_devices_and_activity,
    |store| async move {
        let phones = Phones::start().await;
        let (s, origin) = server(store, &phones).await;
        let user = s.create_full_user("alice", PASSWORD).await;
        let (factor, secret) = s.enroll_totp(&user).await;
        assert_eq!(
            s.activate(&factor, &s.code(&secret, 0)).await["factorResult"],
            "SUCCESS"
        );
        // Three remembered devices, from logins on a laptop and two phones.
        for agent in [LAPTOP, "Phone A", "Phone B"] {
            remember(&s, &factor, &secret, agent).await;
        }
        let token = s.mfa_token("alice", PASSWORD, &factor, &secret).await;
        // Someone else's wrong code.
        let r = s
            .gql_with(
                None,
                &[("user-agent", ATTACKER)],
                "mutation($c: ID!, $f: ID!, $p: String!) { completeLogin(input: {challengeId: $c, factorId: $f, passCode: $p}) { factorResult } }",
                json!({ "c": s.login("alice", PASSWORD).await["data"]["login"]["challenge"]["id"],
                        "f": factor, "p": s.wrong_code(&secret) }),
            )
            .await;
        assert_eq!(
            r["data"]["completeLogin"]["factorResult"], "REJECTED",
            "{r}"
        );
        // The page reads the log where nothing can commit behind it: wait until it is there.
        let failure_seen = s
            .eventually(|| async {
                let r = s
                    .gql_as(
                        Some(&token),
                        "{ me { activity(first: 5) { edges { node { eventType userAgent } } } } }",
                        json!({}),
                    )
                    .await;
                r.to_string().contains(ATTACKER)
            })
            .await;
        assert!(failure_seen, "the failed proof is in the activity");

        let browser = Browser::start().await;
        browser.set_window_size(DESKTOP).await;
        let account = format!("{origin}/ui/account");
        // No token: off to sign in.
        browser.goto(&account).await;
        browser
            .wait_for("return location.pathname === '/ui/login'", WAIT)
            .await;
        browser
            .execute(
                "sessionStorage.setItem('tessera.token', arguments[0]);",
                json!([token]),
            )
            .await;
        browser.goto(&account).await;
        browser
            .wait_for_text("#factors tbody", "Authenticator app")
            .await;
        browser.wait_for_text("#devices", "Firefox/140.0").await;
        let activity = browser
            .wait_for_text("#activity tbody", "Failed verification (wrong code)")
            .await;
        assert!(activity.contains(ATTACKER), "{activity}");
        assert!(activity.contains("127.0.0.1"), "{activity}");

        // An authenticator app, from the QR code on the page.
        browser.click_css("#add-totp").await;
        browser.wait_for_visible("#totp-qr").await;
        let shown = browser
            .execute(
                "return { src: document.getElementById('totp-qr').src,
                          secret: document.getElementById('totp-secret').textContent,
                          autocomplete: document.getElementById('totp-code').autocomplete,
                          describedBy: document.getElementById('totp-code').getAttribute('aria-describedby') }",
                json!([]),
            )
            .await;
        let png = shown["src"]
            .as_str()
            .unwrap()
            .strip_prefix("data:image/png;base64,")
            .expect("a PNG data URI");
        let png = base64::engine::general_purpose::STANDARD
            .decode(png)
            .unwrap();
        let uri = decode_qr(&png);
        let new_secret = shown["secret"].as_str().unwrap().to_string();
        assert!(uri.starts_with("otpauth://totp/"), "{uri}");
        assert!(uri.contains(&format!("secret={new_secret}")), "{uri}");
        assert_eq!(shown["autocomplete"], "one-time-code");
        assert_eq!(shown["describedBy"], "totp-code-error");
        // A wrong code first: the error is tied to the field.
        browser
            .type_into("#totp-code", &s.wrong_code(&new_secret))
            .await;
        browser.click_css("#totp-activate").await;
        browser.wait_for_text("#totp-code-error", "not right").await;
        let invalid = browser
            .execute(
                "return document.getElementById('totp-code').getAttribute('aria-invalid')",
                json!([]),
            )
            .await;
        assert_eq!(invalid, "true");
        browser
            .type_into("#totp-code", &s.code(&new_secret, 0))
            .await;
        browser.click_css("#totp-activate").await;
        browser.wait_for_text("#page-notice", "Added.").await;
        assert_eq!(active(&me(&s, &token).await, "TOTP").len(), 2);

        // A phone: the code sent by SMS, then entered.
        browser.click_css("#add-sms").await;
        let autocomplete = browser
            .execute(
                "return document.getElementById('oob-destination').autocomplete",
                json!([]),
            )
            .await;
        assert_eq!(autocomplete, "tel");
        browser
            .type_into("#oob-destination", "+1 415 555 0199")
            .await;
        browser.click_css("#oob-send").await;
        browser.wait_for_visible("#oob-code").await;
        let code = phones.sms_code("+14155550199", 1).await;
        browser.type_into("#oob-code", &code).await;
        browser.click_css("#oob-activate").await;
        browser.wait_for_text("#page-notice", "Added.").await;
        let sms = active(&me(&s, &token).await, "SMS");
        assert_eq!(sms.len(), 1);

        // Remembered devices: one forgotten, then all the others.
        browser.click_css("#devices li:first-child .revoke").await;
        browser
            .wait_for_text("#page-notice", "Device forgotten.")
            .await;
        let left = me(&s, &token).await["trustedDevices"].clone();
        assert_eq!(left.as_array().unwrap().len(), 2, "{left}");
        assert!(!left.to_string().contains(LAPTOP), "{left}");
        browser.click_css("#revoke-all").await;
        browser
            .wait_for_text("#page-notice", "Every device is forgotten.")
            .await;
        browser.wait_for_visible("#devices-empty").await;
        assert_eq!(me(&s, &token).await["trustedDevices"], json!([]));

        // New recovery codes, shown once; one of them works.
        browser.click_css("#regenerate").await;
        browser.wait_for_visible("#recovery-codes li").await;
        let codes = browser
            .execute(
                "return [...document.querySelectorAll('#recovery-codes li')].map(li => li.textContent)",
                json!([]),
            )
            .await;
        let codes: Vec<String> = serde_json::from_value(codes).unwrap();
        assert_eq!(codes.len(), 10, "{codes:?}");
        browser
            .wait_for_text("#recovery-remaining", "10 codes left.")
            .await;
        let r = s
            .ok(
                "mutation($u: ID!, $c: String!) { useRecoveryCode(input: {userId: $u, code: $c}) { factorResult } }",
                json!({ "u": user, "c": codes[3] }),
            )
            .await;
        assert_eq!(r["useRecoveryCode"]["factorResult"], "SUCCESS", "{r}");
        // The count is a read model's, updated from the log a moment later.
        let counted = s
            .eventually(|| async { me(&s, &token).await["recoveryCodesRemaining"] == 9 })
            .await;
        assert!(counted, "the read model counts the spent code");
        browser.goto(&account).await;
        browser
            .wait_for_text("#recovery-remaining", "9 codes left.")
            .await;
        let html = browser
            .execute("return document.documentElement.outerHTML", json!([]))
            .await;
        assert!(
            !html.as_str().unwrap().contains(&codes[0]),
            "codes shown again"
        );

        // A passkey, from Chromium's virtual authenticator.
        browser
            .command(
                reqwest::Method::POST,
                "webauthn/authenticator",
                json!({ "protocol": "ctap2", "transport": "internal", "hasResidentKey": true,
                        "hasUserVerification": true, "isUserVerified": true }),
            )
            .await
            .unwrap_or_else(|e| panic!("a virtual authenticator: {e}"));
        browser.click_css("#add-passkey").await;
        browser.type_into("#passkey-label", "Laptop key").await;
        browser.click_css("#passkey-create").await;
        browser.wait_for_text("#factors tbody", "Laptop key").await;
        let passkeys = active(&me(&s, &token).await, "WEBAUTHN");
        assert_eq!(passkeys.len(), 1);
        assert_eq!(passkeys[0]["label"], "Laptop key");

        // Ten minutes on, removing a factor needs a fresh proof: the page asks for it inline.
        s.clock.advance(TimeDelta::seconds(601));
        let remove = format!("#factors tr[data-factor-id='{factor}'] .remove");
        browser.click_css(&remove).await;
        browser.click_css(&remove).await;
        browser.wait_for_visible("#stepup").await;
        browser
            .execute(
                "const s = document.getElementById('stepup-factor'); s.value = arguments[0];
                 s.dispatchEvent(new Event('change'));",
                json!([factor]),
            )
            .await;
        browser.type_into("#stepup-code", &s.code(&secret, 0)).await;
        browser.click_css("#stepup-confirm").await;
        browser.wait_for_text("#page-notice", "Removed.").await;
        let after = me(&s, &token).await;
        let removed = after["factors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["id"] == factor.as_str())
            .unwrap()
            .clone();
        assert_eq!(removed["status"], "REMOVED", "{after}");
        assert!(
            browser
                .execute("return document.getElementById('stepup').hidden", json!([]))
                .await
                == true
        );
        // The removal is in the activity (on PostgreSQL, once no older transaction is open).
        let logged = s
            .eventually(|| async {
                let r = s
                    .gql_as(
                        Some(&token),
                        "{ me { activity(first: 10) { edges { node { kind } } } } }",
                        json!({}),
                    )
                    .await;
                r.to_string().contains("Factor removed")
            })
            .await;
        assert!(logged, "the removal is in the activity");

        // Under a REQUIRED policy the last factor stays, with a message saying why.
        s.ok(
            "mutation { setMfaPolicyV2(input: {mode: REQUIRED, allowedFactorTypes: [TOTP, WEBAUTHN]}) { policy { mode } } }",
            json!({}),
        )
        .await;
        let passkey = passkeys[0]["id"].as_str().unwrap();
        let remove = format!("#factors tr[data-factor-id='{passkey}'] .remove");
        browser.click_css(&remove).await;
        browser.click_css(&remove).await;
        browser
            .wait_for(
                &format!(
                    "return !document.querySelector(\"#factors tr[data-factor-id='{passkey}']\")
                       && document.getElementById('main').getAttribute('aria-busy') === 'false'"
                ),
                WAIT,
            )
            .await;
        let last = active(&me(&s, &token).await, "TOTP");
        assert_eq!(last.len(), 1);
        let last = last[0]["id"].as_str().unwrap();
        let remove = format!("#factors tr[data-factor-id='{last}'] .remove");
        browser.click_css(&remove).await;
        browser.click_css(&remove).await;
        browser
            .wait_for_text("#page-error", "signing in requires one")
            .await;
        assert_eq!(
            active(&me(&s, &token).await, "TOTP").len(),
            1,
            "nothing changed"
        );
        browser.screenshot("account-desktop").await;

        // At phone width: nothing wider than the screen.
        browser.set_window_size(PHONE).await;
        browser.goto(&account).await;
        browser
            .wait_for_text("#factors tbody", "Authenticator app")
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let width = browser
            .execute("return document.documentElement.scrollWidth", json!([]))
            .await;
        assert!(width.as_i64().unwrap() <= 360, "{width}");
        browser.screenshot("account-phone").await;
        browser.quit().await;
    }
);
