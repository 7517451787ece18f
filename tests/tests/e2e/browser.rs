//! Real browser checks (headless Chromium over WebDriver): GraphiQL loads from Tessera alone
//! and its docs show the schema; a page on another loopback origin calls `/graphql` through
//! CORS when its origin is listed and is refused by the browser when it is not, and cannot
//! fire a mutation with a "simple" cross-site request.

use std::time::Duration;

use serde_json::{Value, json};
use tessera_tests::{
    ADMIN_KEY, TestServer, both_stores,
    browser::{Browser, Page, WAIT},
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
