//! The hosted pages under `/ui/` in a real browser: sign-in with each kind of second factor,
//! a remembered device, passkeys, step-up with `return_to`, and the headers every page and
//! asset carries.

use tessera_tests::{Store, TestServer, both_stores};

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
