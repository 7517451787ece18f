//! Bearer authentication and HTTP limits.

use serde_json::json;
use tessera_tests::{TestServer, both_stores, error_code};

both_stores!(
    calls_without_a_valid_key_are_unauthenticated,
    |store| async move {
        let s = TestServer::start(store).await;
        for token in [
            None,
            Some("wrong"),
            Some(
                "tsk_0000000000000000_0000000000000000000000000000000000000000000000000000000000000000",
            ),
        ] {
            let r = s
                .gql_as(
                    token,
                    "mutation { createUser(input: {login: \"mallory\"}) { id } }",
                    json!({}),
                )
                .await;
            assert_eq!(error_code(&r), "UNAUTHENTICATED", "{token:?}: {r}");
            let r = s
                .gql_as(token, "{ users { edges { cursor } } }", json!({}))
                .await;
            assert_eq!(error_code(&r), "UNAUTHENTICATED");
        }
        let r = s
            .gql("{ userByLogin(login: \"mallory\") { id } }", json!({}))
            .await;
        assert_eq!(r["data"]["userByLogin"], json!(null), "nothing was written");
    }
);

both_stores!(
    minted_api_keys_work_and_are_stored_hashed,
    |store| async move {
        let s = TestServer::start(store).await;
        let created = tessera_api::app::api_keys::create(
            &s.server().state,
            &tessera_api::app::Call::operator(),
            tessera_api::app::api_keys::NewApiKey {
                name: "ci".into(),
                scope: Default::default(),
                expires_at: None,
            },
        )
        .await
        .unwrap();
        let (id, token) = (created.key.id, created.token);
        assert!(token.starts_with(&format!("tsk_{id}_")));
        let r = s
            .gql_as(
                Some(&token),
                "mutation { createUser(input: {login: \"grace\"}) { login } }",
                json!({}),
            )
            .await;
        assert_eq!(r["data"]["createUser"]["login"], "grace", "{r}");
        // A tampered secret is refused.
        let mut bad = token.clone();
        bad.pop();
        bad.push(if token.ends_with('0') { '1' } else { '0' });
        let r = s
            .gql_as(Some(&bad), "{ users { edges { cursor } } }", json!({}))
            .await;
        assert_eq!(error_code(&r), "UNAUTHENTICATED");
        let secret = token.rsplit('_').next().unwrap();
        assert!(!s.dump_database().await.contains(secret));
    }
);

both_stores!(bodies_over_one_mebibyte_get_413, |store| async move {
    let s = TestServer::start(store).await;
    let padding = " ".repeat(1024 * 1024 + 1);
    let body = format!("{{\"query\": \"{{ users {{ edges {{ cursor }} }} }}{padding}\"}}");
    let response = s
        .http
        .post(format!("{}/graphql", s.base))
        .bearer_auth(tessera_tests::ADMIN_KEY)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    // The server drops the connection it refused mid-body; a pooled client could pick that
    // very connection for the next request. Use a fresh one.
    let http = reqwest::Client::new();
    let health = http
        .get(format!("{}/healthz", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = http.get(format!("{}/readyz", s.base)).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let graphiql = http
        .get(format!("{}/graphql", s.base))
        .send()
        .await
        .unwrap();
    assert!(graphiql.text().await.unwrap().contains("graphiql"));
});
