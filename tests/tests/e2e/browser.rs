//! Real browser checks (headless Chromium over WebDriver): GraphiQL loads from Tessera alone
//! and its docs show the schema; a page on another loopback origin calls `/graphql` through
//! CORS when its origin is listed and is refused by the browser when it is not, and cannot
//! fire a mutation with a "simple" cross-site request; a passkey made by Chromium's virtual
//! CTAP2 authenticator registers and logs in without a login (a discoverable credential),
//! modally and through a username field's autofill (conditional mediation).

use std::time::Duration;

use serde_json::{Value, json};
use tessera_tests::{
    ADMIN_KEY, Store, TestServer, both_stores,
    browser::{Browser, Page, WAIT},
    jwt_claims,
};

both_stores!(
    graphiql_loads_offline_and_its_docs_show_factor,
    |store| async move {
        let s = TestServer::start(store).await;
        let browser = Browser::start().await;
        browser
            .goto(&format!("{}/graphql#key={ADMIN_KEY}", s.base))
            .await;
        // The key moved into the headers editor and out of the address bar.
        let href = browser.execute("return location.href", json!([])).await;
        assert_eq!(href, format!("{}/graphql", s.base));
        let docs = browser
            .find("button[aria-label*='Documentation Explorer']")
            .await;
        browser.click(&docs).await;
        // The explorer lists every type once the introspection query came back.
        let types = browser
            .wait_for(
                "const d = document.querySelector('.graphiql-doc-explorer');
                 const names = d ? Array.from(d.querySelectorAll('a')).map(a => a.textContent) : [];
                 return names.includes('Factor') ? names : null;",
                WAIT,
            )
            .await;
        assert!(
            types
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t == "FactorStatus"),
            "{types}"
        );
        // Open Factor: its fields are listed.
        browser
            .execute(
                "Array.from(document.querySelectorAll('.graphiql-doc-explorer a'))
                   .find(a => a.textContent === 'Factor').click()",
                json!([]),
            )
            .await;
        let fields = browser
            .wait_for(
                "const t = document.querySelector('.graphiql-doc-explorer-title');
                 const c = document.querySelector('.graphiql-doc-explorer-content');
                 return t && t.textContent === 'Factor' && c.textContent.includes('failedAttempts')
                   ? c.textContent : null;",
                WAIT,
            )
            .await;
        assert!(
            fields.as_str().unwrap().contains("lastVerifiedAt"),
            "{fields}"
        );
        // Everything came from Tessera, and the page's policy blocked nothing.
        let resources = browser
            .execute(
                "return performance.getEntriesByType('resource').map(e => e.name)",
                json!([]),
            )
            .await;
        let resources: Vec<&str> = resources
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        assert!(resources.len() >= 5, "{resources:?}");
        for r in &resources {
            assert!(r.starts_with(&s.base), "{r} is not from Tessera");
        }
        let violations = browser
            .execute("return window.__cspViolations", json!([]))
            .await;
        assert_eq!(violations, json!([]));
        browser.quit().await;
    }
);

const APP_PAGE: &str = "<!doctype html><meta charset=utf-8><title>app</title><p>app";

/// `fetch` of a GraphQL query from the page, with the headers a frontend sends.
async fn call(browser: &Browser, url: &str) -> Value {
    browser
        .execute_async(
            "const [url, key, done] = arguments;
             fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/json',
                 'Authorization': 'Bearer ' + key, 'X-Correlation-Id': 'browser-test' },
                 body: JSON.stringify({ query: '{ __typename users { edges { cursor } } }' }) })
               .then(r => r.json().then(body => done({ ok: true, status: r.status, body,
                   requestId: r.headers.get('x-request-id') })))
               .catch(e => done({ ok: false, error: String(e) }));",
            json!([url, ADMIN_KEY]),
        )
        .await
}

/// Whether a websocket to `url` opens from the page.
async fn websocket_opens(browser: &Browser, url: &str) -> bool {
    browser
        .execute_async(
            "const [url, done] = arguments;
             const ws = new WebSocket(url, 'graphql-transport-ws');
             ws.onopen = () => { ws.close(); done(true); };
             ws.onerror = () => done(false);",
            json!([url]),
        )
        .await
        == true
}

both_stores!(
    a_page_on_another_origin_calls_graphql_only_when_listed,
    |store| async move {
        let allowed = Page::serve(APP_PAGE).await;
        let refused = Page::serve(APP_PAGE).await;
        let origin = allowed.origin.clone();
        let s = TestServer::start_with(store, move |c| c.cors_origins = vec![origin]).await;
        s.create_full_user("alice", "correct horse battery").await;
        let graphql = format!("{}/graphql", s.base);
        let browser = Browser::start().await;

        browser.goto(&format!("{}/", allowed.origin)).await;
        let r = call(&browser, &graphql).await;
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(r["body"]["data"]["__typename"], "Query", "{r}");
        assert!(r["requestId"].is_string(), "x-request-id is exposed: {r}");
        assert!(websocket_opens(&browser, &s.ws_url()).await);

        browser.goto(&format!("{}/", refused.origin)).await;
        let r = call(&browser, &graphql).await;
        assert_eq!(r["ok"], false, "{r}");
        assert!(
            r["error"].as_str().unwrap().contains("Failed to fetch"),
            "{r}"
        );
        assert!(!websocket_opens(&browser, &s.ws_url()).await);

        // A "simple" request needs no preflight, so the browser sends it whatever the
        // server's CORS answer: text/plain is refused before anything runs.
        let before = s.log_identities().await;
        let sent = browser
            .execute_async(
                "const [url, done] = arguments;
                 fetch(url, { method: 'POST', mode: 'no-cors', headers: { 'Content-Type': 'text/plain' },
                     body: JSON.stringify({ query: 'mutation { login(input: {login: \"alice\", password: \"guess\"}) { accessToken } }' }) })
                   .then(r => done(r.type)).catch(e => done(String(e)));",
                json!([graphql]),
            )
            .await;
        assert_eq!(sent, "opaque", "the request went out");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            s.log_identities().await,
            before,
            "no login ran, no failure was recorded"
        );
        browser.quit().await;
    }
);

/// `gql(query, variables, token)` in the page: a POST to Tessera's `/graphql` (the script's
/// first argument), with a bearer token when given.
const GQL_JS: &str = "const gql = (url, query, variables, token) => fetch(url, { method: 'POST',
       headers: Object.assign({ 'Content-Type': 'application/json' },
           token ? { 'Authorization': 'Bearer ' + token } : {}),
       body: JSON.stringify({ query, variables }) }).then(r => r.json());";

/// Registers a passkey as a frontend would: the admin creates the user and enrols a
/// `WEBAUTHN` factor, the page hands the options to `navigator.credentials.create` and the
/// credential's JSON to `activateFactor`.
const REGISTER_JS: &str = "const [url, key, done] = arguments;
    (async () => {
      const user = await gql(url, 'mutation { createUser(input: {login: \"alice\", email: \"alice@example.com\"}) { id } }', {}, key);
      const userId = user.data.createUser.id;
      const enrolled = await gql(url, 'mutation($u: ID!) { enrollFactor(input: {userId: $u, type: WEBAUTHN, label: \"Laptop\"}) { factor { id } webauthn { publicKey } } }', { u: userId }, key);
      if (!enrolled.data) return done({ error: 'enrol', enrolled });
      const factorId = enrolled.data.enrollFactor.factor.id;
      const publicKey = PublicKeyCredential.parseCreationOptionsFromJSON(enrolled.data.enrollFactor.webauthn.publicKey);
      const credential = await navigator.credentials.create({ publicKey });
      const activated = await gql(url, 'mutation($f: ID!, $w: JSON!) { activateFactor(input: {factorId: $f, webauthn: $w}) { factorResult factor { status } } }', { f: factorId, w: credential.toJSON() }, key);
      done({ userId, factorId, credentialId: credential.id, activated });
    })().catch(e => done({ error: String(e) }));";

/// A passwordless login with no login given: the options name no credential, the virtual
/// authenticator answers with its discoverable one; with `conditional`, through the
/// username field's autofill (`mediation: "conditional"`).
const LOGIN_JS: &str = "const [url, conditional, done] = arguments;
    (async () => {
      const available = await PublicKeyCredential.isConditionalMediationAvailable();
      if (conditional && !available) return done({ error: 'no conditional mediation' });
      const started = await gql(url, 'mutation { startPasskeyLogin(input: {}) { challenge { id } webauthn { publicKey } } }', {}, null);
      if (!started.data) return done({ error: 'start', started });
      const options = started.data.startPasskeyLogin.webauthn.publicKey;
      const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(options);
      let assertion;
      if (conditional) {
        // As a sign-in form does: the username field offers passkeys in autofill.
        document.getElementById('username').focus();
        assertion = await navigator.credentials.get({ publicKey, mediation: 'conditional',
            signal: AbortSignal.timeout(15000) });
      } else {
        assertion = await navigator.credentials.get({ publicKey });
      }
      const json = assertion.toJSON();
      const completed = await gql(url, 'mutation($c: ID!, $w: JSON!) { completePasskeyLogin(input: {challengeId: $c, webauthn: $w}) { accessToken factorResult challenge { status } } }', { c: started.data.startPasskeyLogin.challenge.id, w: json }, null);
      done({ options, credentialId: assertion.id, userHandle: json.response.userHandle, completed });
    })().catch(e => done({ error: String(e) }));";

/// Base64url without padding, whichever alphabet and padding `id` came in.
fn base64url(id: &str) -> String {
    id.trim_end_matches('=').replace('+', "-").replace('/', "_")
}

/// A sign-in page: a username field that offers passkeys in autofill.
const SIGN_IN_PAGE: &str = "<!doctype html><meta charset=utf-8><title>sign in</title>
    <form><input id=username name=username autocomplete=\"username webauthn\"></form>";

both_stores!(
    a_browser_passkey_registers_and_logs_in_without_a_login,
    |store| async move { passkey_round_trip(store, false).await }
);

both_stores!(
    a_browser_passkey_logs_in_through_autofill,
    |store| async move { passkey_round_trip(store, true).await }
);

/// Registers a passkey from the browser, then logs in with it without a login: a modal
/// `navigator.credentials.get`, or with `conditional` mediation.
async fn passkey_round_trip(store: Store, conditional: bool) {
    let page = Page::serve(SIGN_IN_PAGE).await;
    let origin = page.localhost_origin();
    let listed = origin.clone();
    let s = TestServer::start_with(store, move |c| {
        c.cors_origins = vec![listed.clone()];
        c.webauthn_origins = vec![listed];
    })
    .await;
    let graphql = format!("{}/graphql", s.base);
    let browser = Browser::start().await;
    browser.goto(&format!("{origin}/")).await;
    let support = browser
        .execute(
            "return { secure: window.isSecureContext,
                   create: typeof PublicKeyCredential?.parseCreationOptionsFromJSON,
                   request: typeof PublicKeyCredential?.parseRequestOptionsFromJSON }",
            json!([]),
        )
        .await;
    assert_eq!(
        support,
        json!({ "secure": true, "create": "function", "request": "function" }),
        "Chromium lacks the WebAuthn JSON helpers or a secure context"
    );

    let authenticator = browser
        .command(
            reqwest::Method::POST,
            "webauthn/authenticator",
            json!({
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": true,
                "hasUserVerification": true,
                "isUserVerified": true,
                "defaultBackupEligibility": true,
                "defaultBackupState": true,
            }),
        )
        .await
        .unwrap_or_else(|e| panic!("add a virtual authenticator: {e}"));
    let authenticator = authenticator
        .as_str()
        .expect("authenticator id")
        .to_string();

    let registered = browser
        .execute_async(
            &format!("{GQL_JS}\n{REGISTER_JS}"),
            json!([graphql, ADMIN_KEY]),
        )
        .await;
    assert!(registered.get("error").is_none(), "{registered}");
    let activated = &registered["activated"]["data"]["activateFactor"];
    assert_eq!(activated["factorResult"], "SUCCESS", "{registered}");
    assert_eq!(activated["factor"]["status"], "ACTIVE", "{registered}");
    let user = registered["userId"].as_str().unwrap().to_string();
    let factor = registered["factorId"].as_str().unwrap().to_string();
    let credential = registered["credentialId"].as_str().unwrap().to_string();

    // The authenticator keeps it as a resident (discoverable) credential for localhost.
    let held = browser
        .command(
            reqwest::Method::GET,
            &format!("webauthn/authenticator/{authenticator}/credentials"),
            json!({}),
        )
        .await
        .unwrap_or_else(|e| panic!("the authenticator's credentials: {e}"));
    let held = held.as_array().expect("credentials");
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0]["isResidentCredential"], true, "{held:?}");
    assert_eq!(held[0]["rpId"], "localhost", "{held:?}");
    assert_eq!(
        base64url(held[0]["credentialId"].as_str().unwrap()),
        credential
    );

    let login = browser
        .execute_async(
            &format!("{GQL_JS}\n{LOGIN_JS}"),
            json!([graphql, conditional]),
        )
        .await;
    assert!(login.get("error").is_none(), "{login}");
    assert!(
        login["options"]["allowCredentials"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "a discoverable ceremony names no credential: {login}"
    );
    assert_eq!(login["credentialId"], credential.as_str(), "{login}");
    assert!(login["userHandle"].is_string(), "{login}");
    let completed = &login["completed"]["data"]["completePasskeyLogin"];
    assert_eq!(completed["factorResult"], "SUCCESS", "{login}");
    assert_eq!(completed["challenge"]["status"], "COMPLETED", "{login}");
    let claims = jwt_claims(completed["accessToken"].as_str().expect("access token"));
    assert_eq!(claims["sub"], user.as_str());
    assert!(
        claims["amr"]
            .as_array()
            .is_some_and(|amr| amr.contains(&json!("hwk"))),
        "{claims}"
    );

    // The factor shows the credential and the backup state the authenticator reported.
    // The factor list is a read model: a mutation waits for it only so long (5 s), and a
    // loaded parallel suite can take longer, so wait for the activation to reach it.
    let mut shown = Value::Null;
    for _ in 0..300 {
        shown = s
            .ok(
                "query($u: ID!) { user(id: $u) { factors { id type status credentialId backedUp } } }",
                json!({ "u": user }),
            )
            .await;
        if shown["user"]["factors"][0]["status"] == "ACTIVE" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let listed = &shown["user"]["factors"][0];
    assert_eq!(listed["id"], factor.as_str(), "{shown}");
    assert_eq!(listed["type"], "WEBAUTHN");
    assert_eq!(listed["status"], "ACTIVE");
    assert_eq!(listed["credentialId"], credential.as_str(), "{shown}");
    assert_eq!(listed["backedUp"], true, "{shown}");

    browser
        .command(
            reqwest::Method::DELETE,
            &format!("webauthn/authenticator/{authenticator}"),
            json!({}),
        )
        .await
        .unwrap_or_else(|e| panic!("remove the authenticator: {e}"));
    browser.quit().await;
}
