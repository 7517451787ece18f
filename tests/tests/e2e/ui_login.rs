//! The hosted pages under `/ui/` in a real browser: sign-in with each kind of second factor,
//! a remembered device, passkeys, step-up with `return_to`, and the headers every page and
//! asset carries. Screenshots of the sign-in and step-up pages at desktop and phone width go
//! to `target/ui-screenshots/`.

use std::time::Duration;

use serde_json::{Value, json};
use tessera_tests::{
    ADMIN_KEY, Phones, Store, TestServer, both_stores,
    browser::{Browser, DESKTOP, PHONE, Page, WAIT},
    jwt_claims,
    webhook_sink::{HttpSink, Received},
};

/// An origin a test lists in `TESSERA_UI_RETURN_ORIGINS`.
const APP_ORIGIN: &str = "https://app.example.test";

async fn server_returning_to(store: Store, origins: &[&str]) -> TestServer {
    let origins: Vec<String> = origins.iter().map(|o| (*o).to_string()).collect();
    TestServer::start_with(store, move |c| c.ui_return_origins = origins).await
}

both_stores!(
    every_ui_response_carries_the_security_headers,
    |store| async move {
        let s = server_returning_to(store, &[APP_ORIGIN]).await;
        let challenge = uuid::Uuid::new_v4();
        let cases = [
            ("/ui/login", 200, "text/html; charset=utf-8"),
            ("/ui/account", 200, "text/html; charset=utf-8"),
            ("/ui/console", 200, "text/html; charset=utf-8"),
            (
                &*format!("/ui/step-up/{challenge}"),
                200,
                "text/html; charset=utf-8",
            ),
            (
                "/ui/step-up/not-a-challenge",
                404,
                "text/plain; charset=utf-8",
            ),
            ("/ui/assets/tessera.css", 200, "text/css; charset=utf-8"),
            ("/ui/assets/gql.js", 200, "text/javascript; charset=utf-8"),
            (
                "/ui/assets/session.js",
                200,
                "text/javascript; charset=utf-8",
            ),
            ("/ui/assets/missing.js", 404, "text/plain; charset=utf-8"),
            (
                "/ui/assets/..%2FCargo.toml",
                404,
                "text/plain; charset=utf-8",
            ),
        ];
        for (path, status, content_type) in cases {
            let r = s
                .http
                .get(format!("{}{path}", s.base))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), status, "{path}");
            let h = r.headers();
            assert_eq!(h["content-type"], content_type, "{path}");
            let csp = h["content-security-policy"].to_str().unwrap();
            for directive in [
                "default-src 'self'",
                "frame-ancestors 'none'",
                "base-uri 'none'",
                "object-src 'none'",
            ] {
                assert!(csp.contains(directive), "{path}: {csp}");
            }
            assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
            assert!(!csp.contains(APP_ORIGIN), "{path}: no return_to, {csp}");
            assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
            assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        }

        // An application hands a token to the step-up page by form POST: rendered into the
        // page as an attribute value, and only a token-shaped value.
        let url = format!("{}/ui/step-up/{challenge}", s.base);
        let post = |content_type: &'static str, body: String| {
            let s = &s;
            let url = url.clone();
            async move {
                s.http
                    .post(url)
                    .header("content-type", content_type)
                    .body(body)
                    .send()
                    .await
                    .unwrap()
            }
        };
        let r = post(
            "application/x-www-form-urlencoded",
            "access_token=eyJ.abc-_.x9".into(),
        )
        .await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["cache-control"], "no-store");
        assert!(
            r.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'")
        );
        let html = r.text().await.unwrap();
        assert!(
            html.contains("<meta name=\"tessera-token\" content=\"eyJ.abc-_.x9\">"),
            "{html}"
        );
        for body in [
            "access_token=%22%3E%3Cscript%3E",
            "access_token=",
            "token=eyJ.abc",
        ] {
            let r = post("application/x-www-form-urlencoded", body.into()).await;
            assert_eq!(r.status(), 400, "{body}");
            assert!(!r.text().await.unwrap().contains("<script>"), "{body}");
        }
        let r = post("application/json", "{\"access_token\":\"eyJ.abc\"}".into()).await;
        assert_eq!(r.status(), 415);
    }
);

both_stores!(
    the_server_decides_where_a_page_may_return_to,
    |store| async move {
        let s = server_returning_to(store, &[APP_ORIGIN]).await;
        let get = |query: String| {
            let s = &s;
            async move {
                let r = s
                    .http
                    .get(format!("{}/ui/login?{query}", s.base))
                    .send()
                    .await
                    .unwrap();
                let csp = r.headers()["content-security-policy"]
                    .to_str()
                    .unwrap()
                    .to_string();
                (csp, r.text().await.unwrap())
            }
        };
        let target = format!("{APP_ORIGIN}/mfa/done?x=\"1\"");
        let (csp, html) = get(format!("return_to={}", url_encode(&target))).await;
        assert!(
            csp.ends_with(&format!("form-action 'self' {APP_ORIGIN}")),
            "{csp}"
        );
        assert!(
            html.contains(&format!(
                "<meta name=\"tessera-return-to\" content=\"{APP_ORIGIN}/mfa/done?x=%221%22\">"
            )),
            "{html}"
        );
        for refused in [
            "https://evil.test/",
            "https://app.example.test.evil.test/",
            "javascript:alert(1)",
        ] {
            let (csp, html) = get(format!("return_to={}", url_encode(refused))).await;
            assert!(csp.ends_with("form-action 'self'"), "{refused}: {csp}");
            assert!(
                html.contains("name=\"tessera-return-refused\""),
                "{refused}"
            );
            assert!(!html.contains("tessera-return-to"), "{refused}");
        }
        // Markup in return_to stays inside the attribute.
        let (_, html) = get(format!(
            "return_to={}",
            url_encode("https://evil.test/\"><script src=x></script>")
        ))
        .await;
        assert!(!html.contains("<script src=x>"), "{html}");
    }
);

/// `application/x-www-form-urlencoded` escaping of one value.
fn url_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A server for browser tests: its pages at `http://localhost:PORT` (a WebAuthn RP id of
/// `localhost` covers it), codes to real SMTP/SMS receivers, and an "application" (a
/// recording HTTP server) listed as the one origin pages may return to.
struct Ui {
    s: TestServer,
    phones: Phones,
    app: HttpSink,
    /// `http://localhost:PORT`.
    base: String,
}

impl Ui {
    async fn start(store: Store) -> Self {
        Self::start_with(store, |_| {}).await
    }

    async fn start_with(store: Store, adjust: impl FnOnce(&mut tessera_api::Config)) -> Self {
        let phones = Phones::start().await;
        let app = HttpSink::start().await;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let app_origin = app.url("");
        let s = TestServer::start_with(store, |c| {
            phones.configure(c);
            c.listen = format!("127.0.0.1:{port}").parse().expect("address");
            c.webauthn_origins = vec![format!("http://localhost:{port}")];
            c.ui_return_origins = vec![app_origin];
            adjust(c);
        })
        .await;
        Self {
            s,
            phones,
            app,
            base: format!("http://localhost:{port}"),
        }
    }

    /// A user with a password, a phone number and an active TOTP factor, the clock one step
    /// past activation; (user id, factor id, secret, recovery codes).
    async fn user_with_totp(&self, login: &str) -> (String, String, String, Vec<String>) {
        let s = &self.s;
        let user = s.create_full_user(login, PASSWORD).await;
        let (factor, secret) = s.enroll_totp(&user).await;
        let activated = s.activate(&factor, &s.code(&secret, 0)).await;
        assert_eq!(activated["factorResult"], "SUCCESS", "{activated}");
        let codes = activated["recoveryCodes"]
            .as_array()
            .expect("recovery codes")
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect();
        s.clock.advance(chrono::TimeDelta::seconds(30));
        (user, factor, secret, codes)
    }

    /// Opens the sign-in page and submits the login and password.
    async fn sign_in(&self, browser: &Browser, login: &str, query: &str) {
        browser
            .goto(&format!("{}/ui/login{query}", self.base))
            .await;
        browser.type_into("#login", login).await;
        browser.type_into("#password", PASSWORD).await;
        browser.click_css("#sign-in").await;
    }

    /// The `n`-th form POST the application received, waiting for it.
    async fn posted(&self, n: usize) -> Received {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let posts = self.posts();
            if posts.len() >= n {
                return posts[n - 1].clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} posts arrived, not {n}",
                posts.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The POSTs the application received (the browser also asks it for a favicon).
    fn posts(&self) -> Vec<Received> {
        self.app
            .requests()
            .into_iter()
            .filter(|r| r.method == "POST")
            .collect()
    }
}

const PASSWORD: &str = "correct horse battery";

/// The fields of a form body.
fn form(r: &Received) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://x/?{}", r.text()))
        .expect("form body")
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Waits until the page's path is `path`.
async fn wait_for_path(browser: &Browser, path: &str) {
    browser
        .wait_for(
            &format!("return location.pathname === {}", json!(path)),
            WAIT,
        )
        .await;
}

/// The token the account page's tab holds.
async fn tab_token(browser: &Browser) -> String {
    browser
        .execute("return sessionStorage.getItem('tessera.token')", json!([]))
        .await
        .as_str()
        .expect("a token in sessionStorage")
        .to_string()
}

/// Screenshots at desktop and phone width (`<name>-desktop.png`, `<name>-phone.png`); the
/// page fits the phone's width (no sideways scrolling).
async fn screenshots(browser: &Browser, name: &str) {
    browser.set_window_size(PHONE).await;
    let overflow = browser
        .execute(
            "return document.documentElement.scrollWidth - window.innerWidth",
            json!([]),
        )
        .await;
    assert_eq!(overflow, json!(0), "{name} scrolls sideways at 360 px");
    browser.screenshot(&format!("{name}-phone")).await;
    browser.set_window_size(DESKTOP).await;
    browser.screenshot(&format!("{name}-desktop")).await;
}

both_stores!(
    signs_in_with_password_and_totp_then_remembers_the_device,
    |store| async move {
        let ui = Ui::start(store).await;
        let s = &ui.s;
        let (user, _, secret, _) = ui.user_with_totp("ada").await;
        let browser = Browser::start().await;
        browser.set_window_size(DESKTOP).await;
        browser.goto(&format!("{}/ui/login", ui.base)).await;
        browser.wait_for_visible("#passkey-sign-in").await;
        let autocomplete = browser
            .execute(
                "return [document.getElementById('login').autocomplete,
                         document.getElementById('password').autocomplete,
                         document.getElementById('code').autocomplete]",
                json!([]),
            )
            .await;
        assert_eq!(
            autocomplete,
            json!(["username webauthn", "current-password", "one-time-code"])
        );
        // Everything on the page came from Tessera: its weight is what it transferred.
        let weight = browser
            .execute(
                "const n = performance.getEntriesByType('navigation')[0];
                 const r = performance.getEntriesByType('resource');
                 return { bytes: r.reduce((sum, e) => sum + e.transferSize, n.transferSize),
                          origins: r.map(e => new URL(e.name).origin) };",
                json!([]),
            )
            .await;
        let bytes = weight["bytes"].as_u64().expect("bytes");
        println!("sign-in page: {bytes} bytes transferred");
        assert!(bytes > 1000 && bytes < 100_000, "{weight}");
        for origin in weight["origins"].as_array().unwrap() {
            assert_eq!(origin, ui.base.as_str(), "{weight}");
        }
        screenshots(&browser, "login").await;

        // A wrong code is refused with a message tied to the field; the right one signs in.
        ui.sign_in(&browser, "ada", "").await;
        browser.wait_for_visible("#code").await;
        screenshots(&browser, "login-code").await;
        browser.type_into("#code", &s.wrong_code(&secret)).await;
        browser.click_css("#verify").await;
        browser.wait_for_text("#code-error", "not right").await;
        assert_eq!(
            browser
                .execute(
                    "return document.getElementById('code').getAttribute('aria-invalid')",
                    json!([])
                )
                .await,
            "true"
        );
        let code = s.code(&secret, 0);
        browser.type_into("#code", &code).await;
        browser.click_css("#verify").await;
        wait_for_path(&browser, "/ui/account").await;
        let first = tab_token(&browser).await;
        assert_eq!(jwt_claims(&first)["sub"], user.as_str());
        let remembered = browser
            .execute(
                "return localStorage.getItem('tessera.device.ada')",
                json!([]),
            )
            .await;
        assert_eq!(remembered, Value::Null, "not remembered unless asked");

        // The same code again: replayed, and said so.
        ui.sign_in(&browser, "ada", "").await;
        browser.wait_for_visible("#code").await;
        browser.type_into("#code", &code).await;
        browser.click_css("#verify").await;
        browser.wait_for_text("#code-error", "already used").await;
        // The next code, with "remember this device".
        browser.click_css("#remember").await;
        browser.type_into("#code", &s.code(&secret, 1)).await;
        browser.click_css("#verify").await;
        wait_for_path(&browser, "/ui/account").await;
        let device = browser
            .execute(
                "return localStorage.getItem('tessera.device.ada')",
                json!([]),
            )
            .await;
        assert!(device.as_str().is_some_and(|d| d.len() > 20), "{device}");

        // Next time: the password alone, no second step.
        browser.execute("sessionStorage.clear()", json!([])).await;
        ui.sign_in(&browser, "ada", "").await;
        wait_for_path(&browser, "/ui/account").await;
        let again = tab_token(&browser).await;
        assert_ne!(again, first);
        assert_eq!(jwt_claims(&again)["sub"], user.as_str());
        let devices = s
            .ok(
                "query($u: ID!) { user(id: $u) { trustedDevices { id } } }",
                json!({ "u": user }),
            )
            .await;
        assert_eq!(
            devices["user"]["trustedDevices"].as_array().map(Vec::len),
            Some(1),
            "{devices}"
        );
        browser.quit().await;
    }
);

both_stores!(
    signs_in_with_sms_or_a_recovery_code_and_posts_the_token_to_return_to,
    |store| async move {
        let ui = Ui::start(store).await;
        let s = &ui.s;
        let (user, _, _, recovery) = ui.user_with_totp("grace").await;
        let phone = "+14155550123";
        let enrolled = s.enroll_oob(&user, "SMS", phone).await;
        let sms = enrolled["factor"]["id"].as_str().unwrap().to_string();
        let activated = s.activate(&sms, &ui.phones.sms_code(phone, 1).await).await;
        assert_eq!(activated["factorResult"], "SUCCESS", "{activated}");
        // Past the resend interval of the activation code.
        s.clock.advance(chrono::TimeDelta::seconds(31));
        let return_to = ui.app.url("/mfa/done?state=xyz");
        let query = format!("?return_to={}", url_encode(&return_to));
        let browser = Browser::start().await;

        ui.sign_in(&browser, "grace", &query).await;
        browser.wait_for_visible("[data-factor-type=SMS]").await;
        screenshots(&browser, "login-choose").await;
        browser.click_css("[data-factor-type=SMS]").await;
        let code = ui.phones.sms_code(phone, 2).await;
        browser
            .wait_for_text("#countdown", "You can ask for a new code in")
            .await;
        browser.type_into("#code", &code).await;
        browser.click_css("#verify").await;
        let posted = ui.posted(1).await;
        assert_eq!(posted.method, "POST");
        assert_eq!(posted.path, "/mfa/done?state=xyz");
        assert_eq!(
            posted.header("content-type"),
            Some("application/x-www-form-urlencoded")
        );
        let fields = form(&posted);
        assert_eq!(fields.len(), 1, "{fields:?}");
        assert_eq!(fields[0].0, "access_token");
        let claims = jwt_claims(&fields[0].1);
        assert_eq!(claims["sub"], user.as_str());
        assert!(
            claims["amr"].as_array().unwrap().contains(&json!("sms")),
            "{claims}"
        );
        // The browser is on the application's page, and no token was in any URL.
        let href = browser.execute("return location.href", json!([])).await;
        assert_eq!(href, return_to.as_str());

        // A recovery code, once.
        ui.sign_in(&browser, "grace", &query).await;
        browser.click_css("#use-recovery").await;
        browser.type_into("#recovery-code", &recovery[0]).await;
        browser.click_css("#use-recovery-code").await;
        let posted = ui.posted(2).await;
        let fields = form(&posted);
        assert_eq!(fields[0].0, "access_token", "{fields:?}");
        assert_eq!(jwt_claims(&fields[0].1)["sub"], user.as_str());
        ui.sign_in(&browser, "grace", &query).await;
        browser.click_css("#use-recovery").await;
        browser.type_into("#recovery-code", &recovery[0]).await;
        browser.click_css("#use-recovery-code").await;
        browser
            .wait_for_text("#recovery-error", "already used")
            .await;
        assert_eq!(ui.posts().len(), 2, "nothing more was posted");
        let left = s
            .ok(
                "query($u: ID!) { user(id: $u) { recoveryCodesRemaining } }",
                json!({ "u": user }),
            )
            .await;
        assert_eq!(left["user"]["recoveryCodesRemaining"], 9, "{left}");
        browser.quit().await;
    }
);

both_stores!(
    a_refused_return_to_origin_shows_why_and_posts_nothing,
    |store| async move {
        let ui = Ui::start(store).await;
        ui.user_with_totp("mallory").await;
        let browser = Browser::start().await;
        for target in [
            "https://evil.example/steal",
            &ui.app.url("/x").replace("://127.0.0.1:", "://localhost:"),
        ] {
            browser
                .goto(&format!(
                    "{}/ui/login?return_to={}",
                    ui.base,
                    url_encode(target)
                ))
                .await;
            browser.wait_for_text("#page-error", "not valid").await;
            let form_shown = browser
                .execute(
                    "return !document.getElementById('password-form').hidden",
                    json!([]),
                )
                .await;
            assert_eq!(form_shown, json!(false), "{target}");
        }
        screenshots(&browser, "login-refused").await;
        // The step-up page alike; and without a token it asks for a sign-in, nothing else.
        let challenge = uuid::Uuid::new_v4();
        browser
            .goto(&format!(
                "{}/ui/step-up/{challenge}?return_to={}",
                ui.base,
                url_encode("https://evil.example/")
            ))
            .await;
        browser.wait_for_text("#page-error", "not valid").await;
        browser
            .goto(&format!(
                "{}/ui/step-up/{challenge}?return_to={}",
                ui.base,
                url_encode(&ui.app.url("/stepped"))
            ))
            .await;
        browser.wait_for_text("#page-error", "Sign in first").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(ui.posts().is_empty(), "nothing was posted");
        browser.quit().await;
    }
);

both_stores!(
    a_step_up_shows_what_is_confirmed_and_posts_the_result_back,
    |store| async move {
        let ui = Ui::start(store).await;
        let s = &ui.s;
        let (user, factor, secret, _) = ui.user_with_totp("lin").await;
        let token = s.mfa_token("lin", PASSWORD, &factor, &secret).await;
        s.clock.advance(chrono::TimeDelta::seconds(30));
        let started = s
            .ok(
                "mutation($u: ID!, $s: JSON) { startStepUp(input: {userId: $u, state: $s}) { challenge { id display } } }",
                json!({ "u": user, "s": { "display": "Pay €1,250.00 to ACME GmbH", "cents": 125_000 } }),
            )
            .await;
        let challenge = started["startStepUp"]["challenge"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            started["startStepUp"]["challenge"]["display"],
            "Pay €1,250.00 to ACME GmbH"
        );
        let return_to = ui.app.url("/stepped");
        // The application's page hands the user's token over by an auto-submitted form.
        let app_page =
            Page::serve("<!doctype html><meta charset=utf-8><title>app</title><p>app").await;
        let browser = Browser::start().await;
        browser.goto(&format!("{}/", app_page.origin)).await;
        browser
            .execute(
                "const [action, token] = arguments;
                 const f = document.createElement('form');
                 f.method = 'post'; f.action = action;
                 const i = document.createElement('input');
                 i.type = 'hidden'; i.name = 'access_token'; i.value = token;
                 f.append(i); document.body.append(f); f.submit();",
                json!([
                    format!(
                        "{}/ui/step-up/{challenge}?return_to={}",
                        ui.base,
                        url_encode(&return_to)
                    ),
                    token
                ]),
            )
            .await;
        browser
            .wait_for_text("#display", "Pay €1,250.00 to ACME GmbH")
            .await;
        browser.wait_for_visible("#code").await;
        screenshots(&browser, "step-up").await;
        browser.type_into("#code", &s.code(&secret, 0)).await;
        browser.click_css("#verify").await;
        let posted = ui.posted(1).await;
        assert_eq!(posted.path, "/stepped");
        assert_eq!(
            posted.header("content-type"),
            Some("application/x-www-form-urlencoded")
        );
        assert_eq!(
            form(&posted),
            vec![
                ("challenge_id".to_string(), challenge.clone()),
                ("factor_result".to_string(), "SUCCESS".to_string()),
            ]
        );
        assert_eq!(s.challenge(&challenge).await["status"], "COMPLETED");
        // The token went in no URL: not the page's, not the application's.
        let href = browser.execute("return location.href", json!([])).await;
        assert_eq!(href, return_to.as_str());
        browser.quit().await;
    }
);

/// Registers a passkey for `user` from the page (the admin enrols, the virtual
/// authenticator answers); the activated factor's id.
const REGISTER_PASSKEY: &str = "const [user, key, done] = arguments;
    const call = (query, variables) => fetch('/graphql', { method: 'POST',
        headers: { 'Content-Type': 'application/json', 'Authorization': 'Bearer ' + key },
        body: JSON.stringify({ query, variables }) }).then(r => r.json());
    (async () => {
      const e = await call('mutation($u: ID!) { enrollFactor(input: {userId: $u, type: WEBAUTHN, label: \"Laptop\"}) { factor { id } webauthn { publicKey } } }', { u: user });
      const publicKey = PublicKeyCredential.parseCreationOptionsFromJSON(e.data.enrollFactor.webauthn.publicKey);
      const credential = await navigator.credentials.create({ publicKey });
      const a = await call('mutation($f: ID!, $w: JSON!) { activateFactor(input: {factorId: $f, webauthn: $w}) { factorResult } }',
          { f: e.data.enrollFactor.factor.id, w: credential.toJSON() });
      done({ factor: e.data.enrollFactor.factor.id, result: a.data && a.data.activateFactor.factorResult, a });
    })().catch(e => done({ error: String(e) }));";

both_stores!(
    a_passkey_signs_in_through_autofill_and_confirms_a_step_up,
    |store| async move {
        let ui = Ui::start(store).await;
        let s = &ui.s;
        let user = s.create_full_user("kim", PASSWORD).await;
        let browser = Browser::start().await;
        // Registered from a page of Tessera's with no passkey request of its own pending.
        browser.goto(&format!("{}/ui/console", ui.base)).await;
        browser
            .command(
                reqwest::Method::POST,
                "webauthn/authenticator",
                json!({
                    "protocol": "ctap2", "transport": "internal", "hasResidentKey": true,
                    "hasUserVerification": true, "isUserVerified": true,
                }),
            )
            .await
            .unwrap_or_else(|e| panic!("virtual authenticator: {e}"));
        let registered = browser
            .execute_async(REGISTER_PASSKEY, json!([user, ADMIN_KEY]))
            .await;
        assert_eq!(registered["result"], "SUCCESS", "{registered}");

        // The login field offers the passkey (conditional UI); choosing it signs in.
        browser.goto(&format!("{}/ui/login", ui.base)).await;
        // The field has the focus already: the virtual authenticator may answer at once;
        // otherwise focusing the field again offers it.
        let on_login = browser
            .wait_for(
                "return location.pathname === '/ui/account' ? 'account'
                   : document.body.dataset.passkeyAutofill === 'waiting' ? 'login' : null",
                WAIT,
            )
            .await;
        if on_login == "login" {
            let _ = browser
                .command(
                    reqwest::Method::POST,
                    "execute/sync",
                    json!({ "script": "const l = document.getElementById('login');
                        if (l) { document.getElementById('password').focus(); l.focus(); }",
                        "args": [] }),
                )
                .await;
        }
        wait_for_path(&browser, "/ui/account").await;
        let claims = jwt_claims(&tab_token(&browser).await);
        assert_eq!(claims["sub"], user.as_str());
        assert!(
            claims["amr"].as_array().unwrap().contains(&json!("hwk")),
            "{claims}"
        );

        // A step-up in the same tab (its token), answered by the passkey; no return_to.
        let started = s
            .ok(
                "mutation($u: ID!) { startStepUp(input: {userId: $u, state: {display: \"Delete the project\"}}) { challenge { id } } }",
                json!({ "u": user }),
            )
            .await;
        let challenge = started["startStepUp"]["challenge"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        browser
            .goto(&format!("{}/ui/step-up/{challenge}", ui.base))
            .await;
        browser
            .wait_for_text("#display", "Delete the project")
            .await;
        browser.click_css("[data-factor-type=WEBAUTHN]").await;
        browser.wait_for_text("#done", "Confirmed").await;
        assert_eq!(s.challenge(&challenge).await["status"], "COMPLETED");
        assert!(ui.posts().is_empty());
        browser.quit().await;
    }
);

/// The page's answer to the last submit, once there is one (a submit clears both).
const ANSWERED: &str = "const t = ['password-error', 'code-error', 'page-error']
      .map(id => document.getElementById(id).textContent).join(' ').trim();
    return t || null;";

both_stores!(
    the_sign_in_page_says_why_it_cannot_go_on,
    |store| async move {
        let ui = Ui::start_with(store, |c| {
            c.login_lockout_threshold = 2;
            c.lockout_threshold = 2;
        })
        .await;
        let s = &ui.s;
        ui.user_with_totp("noor").await;
        let browser = Browser::start().await;

        // A wrong password, tied to its field; then the throttle, with the time to wait.
        browser.goto(&format!("{}/ui/login", ui.base)).await;
        browser.type_into("#login", "noor").await;
        browser.type_into("#password", "not the password").await;
        browser.click_css("#sign-in").await;
        browser
            .wait_for_text("#password-error", "login or password is not right")
            .await;
        let mut said = String::new();
        for _ in 0..3 {
            browser.click_css("#sign-in").await;
            said = browser
                .wait_for(ANSWERED, WAIT)
                .await
                .as_str()
                .unwrap_or_default()
                .to_string();
            if said.contains("Too many failed sign-ins") {
                break;
            }
        }
        assert!(said.contains("Try again in 5 minutes"), "{said}");
        screenshots(&browser, "login-throttled").await;

        // A login challenge answered too late: expired, back to the password.
        let (_, _, other, _) = ui.user_with_totp("omar").await;
        ui.sign_in(&browser, "omar", "").await;
        browser.wait_for_visible("#code").await;
        s.clock.advance(chrono::TimeDelta::seconds(301));
        browser.type_into("#code", &s.code(&other, 0)).await;
        browser.click_css("#verify").await;
        browser.wait_for_text("#page-error", "expired").await;
        browser.wait_for_visible("#password").await;

        // Wrong codes until the factor locks: then even the right one is refused, and said so.
        s.clock.advance(chrono::TimeDelta::seconds(400));
        ui.sign_in(&browser, "omar", "").await;
        browser.wait_for_visible("#code").await;
        browser.type_into("#code", &s.wrong_code(&other)).await;
        browser.click_css("#verify").await;
        browser.wait_for_text("#code-error", "not right").await;
        browser.type_into("#code", &s.wrong_code(&other)).await;
        browser.click_css("#verify").await;
        browser.wait_for(ANSWERED, WAIT).await;
        // Signing in again: the factor is listed as locked, not offered.
        ui.sign_in(&browser, "omar", "").await;
        browser
            .wait_for_text(
                "[data-factor-type=TOTP]",
                "Locked after too many wrong codes",
            )
            .await;
        let disabled = browser
            .execute(
                "return document.querySelector('[data-factor-type=TOTP]').disabled",
                json!([]),
            )
            .await;
        assert_eq!(disabled, json!(true));
        browser.quit().await;
    }
);
