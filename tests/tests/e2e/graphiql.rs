//! GraphiQL served from Tessera itself, and the introspection it runs: the exact query
//! graphql-js `getIntrospectionQuery()` emits with its default options
//! (`tests/fixtures/introspection-query.graphql`, printed by graphql 16.15.0 from the npm
//! registry; GraphiQL 3.9.0 sends the same) succeeds with a key, is refused without one, and
//! documents nested deeper still are refused.

use serde_json::{Value, json};
use tessera_tests::{TestServer, both_stores, error_code, error_reason};

const INTROSPECTION: &str = include_str!("../../fixtures/introspection-query.graphql");

/// The pinned assets and their sizes in bytes.
const ASSETS: &[(&str, &str, usize)] = &[
    ("graphiql.min.js", "text/javascript", 978_022),
    ("graphiql.min.css", "text/css", 410_559),
    ("react.production.min.js", "text/javascript", 10_751),
    ("react-dom.production.min.js", "text/javascript", 131_835),
    ("tessera-graphiql.js", "text/javascript", 0),
];

both_stores!(
    graphiql_and_every_asset_come_from_tessera,
    |store| async move {
        let s = TestServer::start(store).await;
        let page = s
            .http
            .get(format!("{}/graphql", s.base))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        assert!(
            page.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        let csp = page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
        let html = page.text().await.unwrap();
        assert!(
            !html.contains("//unpkg") && !html.contains("https://") && !html.contains("http://"),
            "{html}"
        );
        for (name, content_type, size) in ASSETS {
            assert!(html.contains(&format!("/graphql/assets/{name}")), "{name}");
            let r = s
                .http
                .get(format!("{}/graphql/assets/{name}", s.base))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{name}");
            assert!(
                r.headers()["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with(content_type)
            );
            let body = r.bytes().await.unwrap();
            if *size > 0 {
                assert_eq!(body.len(), *size, "{name}");
            } else {
                assert!(!body.is_empty());
            }
        }
        let missing = s
            .http
            .get(format!("{}/graphql/assets/../Cargo.toml", s.base))
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), 404);
        let missing = s
            .http
            .get(format!("{}/graphql/assets/nope.js", s.base))
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), 404);
    }
);

both_stores!(graphiql_can_be_switched_off, |store| async move {
    let s = TestServer::start_with(store, |c| c.graphiql = false).await;
    for path in ["/graphql", "/graphql/assets/graphiql.min.js"] {
        let r = s
            .http
            .get(format!("{}{path}", s.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
    // The API itself still answers.
    assert_eq!(
        s.ok("{ __typename }", json!({})).await["__typename"],
        "Query"
    );
});

fn type_names(response: &Value) -> Vec<String> {
    response["data"]["__schema"]["types"]
        .as_array()
        .unwrap_or_else(|| panic!("no types: {response}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

both_stores!(
    the_standard_introspection_query_runs_with_a_key_only,
    |store| async move {
        let s = TestServer::start(store).await;
        let r = s
            .gql_with(
                Some(tessera_tests::ADMIN_KEY),
                &[],
                INTROSPECTION,
                json!({}),
            )
            .await;
        assert!(r.get("errors").is_none(), "{r}");
        let names = type_names(&r);
        for t in ["Factor", "User", "Query", "Mutation", "Subscription"] {
            assert!(names.iter().any(|n| n == t), "{t} missing");
        }
        assert_eq!(r["data"]["__schema"]["queryType"]["name"], "Query");
        assert_eq!(r["data"]["__schema"]["mutationType"]["name"], "Mutation");
        // A user's access token is enough as well (a frontend's codegen).
        s.create_full_user("alice", "correct horse battery").await;
        let token = s.password_token("alice", "correct horse battery").await;
        let r = s.gql_as(Some(&token), INTROSPECTION, json!({})).await;
        assert!(r.get("errors").is_none(), "{r}");

        // Without a key: refused, nothing about the schema.
        for query in [INTROSPECTION, "{ __type(name: \"Factor\") { name } }"] {
            let r = s.gql_as(None, query, json!({})).await;
            assert_eq!(error_code(&r), "UNAUTHENTICATED", "{r}");
            assert_eq!(error_reason(&r), "INTROSPECTION_NEEDS_TOKEN");
            assert_eq!(r["data"], Value::Null);
        }
        // `__typename` is not introspection; clients add it everywhere.
        let r = s.gql_as(None, "{ __typename }", json!({})).await;
        assert_eq!(r["data"]["__typename"], "Query", "{r}");
    }
);

both_stores!(
    documents_nested_deeper_than_introspection_are_still_refused,
    |store| async move {
        let s = TestServer::start(store).await;
        let mut q = String::from("name");
        for _ in 0..30 {
            q = format!("ofType {{ {q} }}");
        }
        let deep = format!("{{ __schema {{ types {{ fields {{ type {{ {q} }} }} }} }} }}");
        // So deep that the parser itself refuses it, before any schema rule runs.
        let r = s.gql(&deep, json!({})).await;
        assert_eq!(error_code(&r), "GRAPHQL_PARSE_FAILED", "{r}");
        assert!(
            r["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("recursion depth"),
            "{r}"
        );
        assert_eq!(r["data"], Value::Null);
        // The standard query goes `types.fields.type` and nine `ofType`s down to `name`, which
        // is admitted; one level more than that is refused (ten pass, measured).
        let mut q = String::from("name");
        for _ in 0..11 {
            q = format!("ofType {{ {q} }}");
        }
        let r = s
            .gql(
                &format!("{{ __schema {{ types {{ fields {{ type {{ {q} }} }} }} }} }}"),
                json!({}),
            )
            .await;
        assert_eq!(error_code(&r), "GRAPHQL_VALIDATION_FAILED", "{r}");
        assert!(
            r["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("nested too deep"),
            "{r}"
        );
        // Introspection beside an ordinary field gets the ordinary limits: the standard
        // query's depth is too much there.
        let mixed =
            INTROSPECTION.replacen("__schema {", "users { edges { cursor } } __schema {", 1);
        let r = s.gql(&mixed, json!({})).await;
        assert_eq!(error_code(&r), "GRAPHQL_VALIDATION_FAILED", "{r}");
    }
);
