//! What a browser and a GraphQL client meet at the HTTP level: CORS for listed origins only,
//! the websocket's origin check, JSON bodies only, JSON errors for malformed bodies, Apollo's
//! codes for documents that do not parse or validate, `retryAfter`, response content types.

use serde_json::{Value, json};
use tessera_tests::{ADMIN_KEY, TestServer, WsClient, both_stores, error_code, error_reason};

const APP: &str = "http://app.example.test";
const EVIL: &str = "http://evil.example.test";

async fn with_cors(store: tessera_tests::Store) -> TestServer {
    TestServer::start_with(store, |c| {
        c.cors_origins = vec![APP.into(), "https://other.example.test/".into()]
    })
    .await
}

fn cors_headers(response: &reqwest::Response) -> Vec<String> {
    response
        .headers()
        .keys()
        .map(|k| k.as_str().to_string())
        .filter(|k| k.starts_with("access-control-"))
        .collect()
}

async fn preflight(s: &TestServer, origin: &str) -> reqwest::Response {
    s.http
        .request(reqwest::Method::OPTIONS, format!("{}/graphql", s.base))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type,x-correlation-id",
        )
        .send()
        .await
        .unwrap()
}

both_stores!(
    preflights_are_answered_for_listed_origins_only,
    |store| async move {
        let s = with_cors(store).await;
        let ok = preflight(&s, APP).await;
        assert!(ok.status().is_success(), "{}", ok.status());
        assert_eq!(ok.headers()["access-control-allow-origin"], APP);
        let allowed = ok.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .to_ascii_lowercase();
        for header in ["authorization", "content-type", "x-correlation-id"] {
            assert!(allowed.contains(header), "{allowed}");
        }
        assert!(
            ok.headers()
                .get("access-control-allow-credentials")
                .is_none()
        );
        // The second entry was given with a trailing slash; browsers send none.
        let other = preflight(&s, "https://other.example.test").await;
        assert_eq!(
            other.headers()["access-control-allow-origin"],
            "https://other.example.test"
        );

        for origin in [
            EVIL,
            "http://app.example.test:8080",
            "https://app.example.test",
            "null",
        ] {
            let refused = preflight(&s, origin).await;
            assert_eq!(cors_headers(&refused), Vec::<String>::new(), "{origin}");
            assert!(
                !refused.status().is_success(),
                "{origin}: {}",
                refused.status()
            );
        }

        // The request itself: the listed origin may read the answer, another may not.
        for (origin, readable) in [(APP, true), (EVIL, false)] {
            let r = s
                .http
                .post(format!("{}/graphql", s.base))
                .header("origin", origin)
                .bearer_auth(ADMIN_KEY)
                .json(&json!({ "query": "{ users { edges { cursor } } }" }))
                .send()
                .await
                .unwrap();
            assert_eq!(
                r.headers().get("access-control-allow-origin").is_some(),
                readable,
                "{origin}"
            );
            if readable {
                assert_eq!(r.headers()["access-control-expose-headers"], "x-request-id");
            }
        }

        // Without TESSERA_CORS_ORIGINS nobody is allowed.
        let closed = TestServer::start(store).await;
        assert_eq!(
            cors_headers(&preflight(&closed, APP).await),
            Vec::<String>::new()
        );
    }
);

async fn ws_handshake(s: &TestServer, origin: Option<&str>) -> Result<(), u16> {
    use tokio_tungstenite::tungstenite::{Error, client::IntoClientRequest, http::HeaderValue};
    let mut request = s.ws_url().into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", HeaderValue::from_str(origin).unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => Ok(()),
        Err(Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("handshake: {e}"),
    }
}

both_stores!(websocket_upgrades_check_the_origin, |store| async move {
    let s = with_cors(store).await;
    assert_eq!(ws_handshake(&s, Some(EVIL)).await, Err(403));
    assert_eq!(ws_handshake(&s, Some("null")).await, Err(403));
    assert_eq!(ws_handshake(&s, Some(APP)).await, Ok(()));
    // Tessera's own pages (GraphiQL) and clients that are not browsers.
    assert_eq!(ws_handshake(&s, Some(&s.base)).await, Ok(()));
    assert_eq!(ws_handshake(&s, None).await, Ok(()));
    assert!(
        WsClient::connect(&s.ws_url(), Some(ADMIN_KEY))
            .await
            .is_ok()
    );
});

async fn post_raw(s: &TestServer, content_type: &str, body: String) -> reqwest::Response {
    s.http
        .post(format!("{}/graphql", s.base))
        .bearer_auth(ADMIN_KEY)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

both_stores!(
    only_json_bodies_run_and_others_change_nothing,
    |store| async move {
        let s = TestServer::start(store).await;
        s.create_full_user("alice", "correct horse battery").await;
        let before = s.log_identities().await;
        let create = json!({ "query": "mutation { createUser(input: {login: \"eve\"}) { id } }" })
            .to_string();
        let login = json!({ "query": "mutation { login(input: {login: \"alice\", password: \"wrong\"}) { accessToken } }" })
            .to_string();
        for content_type in [
            "text/plain",
            "text/plain;charset=UTF-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/graphql",
        ] {
            for body in [&create, &login] {
                let r = post_raw(&s, content_type, body.clone()).await;
                assert_eq!(r.status(), 415, "{content_type}");
                let body: Value = r.json().await.unwrap();
                assert_eq!(error_code(&body), "BAD_REQUEST", "{body}");
            }
        }
        // A request without any content type is refused too.
        let r = s
            .http
            .post(format!("{}/graphql", s.base))
            .bearer_auth(ADMIN_KEY)
            .body(create.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 415);
        // Give the failed-login recorder time to write, had anything run.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert_eq!(s.log_identities().await, before, "nothing was written");
        let eve = s
            .ok("{ userByLogin(login: \"eve\") { id } }", json!({}))
            .await;
        assert_eq!(eve["userByLogin"], Value::Null);
        // The same body as JSON, with a charset, runs.
        let r = post_raw(&s, "application/json; charset=utf-8", create).await;
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert!(body["data"]["createUser"]["id"].is_string(), "{body}");
    }
);

both_stores!(
    malformed_bodies_get_json_graphql_errors,
    |store| async move {
        let s = TestServer::start(store).await;
        for body in [
            "{not json".to_string(),
            "{\"variables\": {}}".to_string(),
            "{\"query\": 42}".to_string(),
            json!([{ "query": "{ __typename }" }, { "query": "{ __typename }" }]).to_string(),
            String::new(),
        ] {
            let r = post_raw(&s, "application/json", body.clone()).await;
            assert_eq!(r.status(), 400, "{body}");
            assert_eq!(r.headers()["content-type"], "application/json");
            let json: Value = r.json().await.unwrap_or_else(|e| panic!("{body}: {e}"));
            assert_eq!(error_code(&json), "BAD_REQUEST", "{json}");
            let message = json["errors"][0]["message"].as_str().unwrap();
            assert!(
                !message.contains("UnsupportedBatch") && !message.contains("Error("),
                "{message}"
            );
        }
    }
);

both_stores!(
    documents_that_do_not_parse_or_validate_get_apollo_codes,
    |store| async move {
        let s = TestServer::start(store).await;
        let r = s.gql("{ users { edges { cursor ", json!({})).await;
        assert_eq!(error_code(&r), "GRAPHQL_PARSE_FAILED", "{r}");
        let r = s.gql("{ noSuchField }", json!({})).await;
        assert_eq!(error_code(&r), "GRAPHQL_VALIDATION_FAILED", "{r}");
        let r = s
            .gql(
                "{ factor(id: \"x\") { type status noSuchField } }",
                json!({}),
            )
            .await;
        assert_eq!(error_code(&r), "GRAPHQL_VALIDATION_FAILED", "{r}");
        let r = s
            .gql(
                "query($n: Int) { users(first: $n) { edges { cursor } } }",
                json!({ "n": "ten" }),
            )
            .await;
        assert_eq!(error_code(&r), "GRAPHQL_VALIDATION_FAILED", "{r}");
        // Anonymous callers get the same codes (nothing about the schema beyond that).
        let r = s.gql_as(None, "{ users { ", json!({})).await;
        assert_eq!(error_code(&r), "GRAPHQL_PARSE_FAILED", "{r}");
        // Bad input to a resolver is still the caller's data.
        let r = s
            .gql("{ user(id: \"not-a-uuid\") { id } }", json!({}))
            .await;
        assert_eq!(error_code(&r), "BAD_USER_INPUT", "{r}");
    }
);

both_stores!(
    every_rate_limited_error_says_when_to_retry,
    |store| async move {
        let s = TestServer::start(store).await;
        let (_, factor, _) = s.active_totp("frank").await;
        let r = s
            .gql(
                &format!("mutation {{ a: verifyFactor(input: {{factorId: \"{factor}\", passCode: \"000000\"}}) {{ factorResult }} b: verifyFactor(input: {{factorId: \"{factor}\", passCode: \"000001\"}}) {{ factorResult }} }}"),
                json!({}),
            )
            .await;
        assert_eq!(error_code(&r), "RATE_LIMITED", "{r}");
        assert_eq!(error_reason(&r), "PROOF_BUDGET_EXCEEDED");
        assert!(
            r["errors"][0]["extensions"]["retryAfter"].as_i64().unwrap() >= 1,
            "{r}"
        );
    }
);

both_stores!(
    responses_are_json_unless_graphql_response_json_is_asked_for,
    |store| async move {
        let s = TestServer::start(store).await;
        for (accept, want) in [
            (None, "application/json"),
            (Some("application/json"), "application/json"),
            (Some("*/*"), "application/json"),
            (
                Some("application/graphql-response+json, application/json;q=0.9"),
                "application/graphql-response+json",
            ),
        ] {
            let mut request = s
                .http
                .post(format!("{}/graphql", s.base))
                .bearer_auth(ADMIN_KEY)
                .json(&json!({ "query": "{ __typename }" }));
            if let Some(accept) = accept {
                request = request.header("accept", accept);
            }
            let r = request.send().await.unwrap();
            assert_eq!(r.headers()["content-type"], want, "{accept:?}");
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["data"]["__typename"], "Query");
        }
    }
);
