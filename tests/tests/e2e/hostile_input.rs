//! Hostile input at the edge (red-team findings L3, L9, L11): every bad value is a typed
//! `BAD_USER_INPUT` that runs nothing, on both stores alike; no document is cheap to send and
//! expensive to answer; the embedded store's files are readable by their owner only.

use serde_json::json;
use tessera_tests::{TestServer, both_stores, error_code, error_reason};

both_stores!(nul_bytes_are_bad_input_everywhere, |store| async move {
    let s = TestServer::start(store).await;
    let user = s.create_user("alice").await;
    let cases = [
        (
            "mutation($u: ID!, $s: JSON) { startStepUp(input: {userId: $u, state: $s}) { challenge { id } } }",
            json!({ "u": user, "s": { "note": "a\u{0}b" } }),
        ),
        (
            "query($a: String) { events(after: $a) { edges { cursor } } }",
            json!({ "a": "1.\u{0}2" }),
        ),
        (
            "query($t: String!) { events(filter: {eventTypes: [$t]}) { edges { cursor } } }",
            json!({ "t": "Enrolled\u{0}" }),
        ),
        (
            "query($a: String) { users(after: $a) { edges { cursor } } }",
            json!({ "a": "x\u{0}" }),
        ),
        (
            "mutation($l: String!) { createUser(input: {login: $l}) { id } }",
            json!({ "l": "bob\u{0}" }),
        ),
    ];
    for (query, variables) in cases {
        let r = s.gql(query, variables).await;
        assert_eq!(error_code(&r), "BAD_USER_INPUT", "{query}: {r}");
        assert_eq!(error_reason(&r), "NUL_IN_INPUT", "{query}: {r}");
    }
    // The same byte inline in the document.
    let r = s
        .gql(
            "mutation { createUser(input: {login: \"eve\\u0000\"}) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&r), "BAD_USER_INPUT", "{r}");
    // Nothing ran: alice is the only user.
    let users = s
        .ok("{ users { edges { node { login } } } }", json!({}))
        .await;
    assert_eq!(users["users"]["edges"].as_array().unwrap().len(), 1);
});

both_stores!(
    moments_outside_the_stores_range_are_bad_input,
    |store| async move {
        let s = TestServer::start(store).await;
        let (user, factor, _) = s.active_totp("alice").await;
        for at in ["+200000-01-01T00:00:00Z", "-0001-01-01T00:00:00Z"] {
            for (query, variables) in [
                (
                    "query($f: ID!, $t: DateTime) { factor(id: $f, asOf: $t) { id } }",
                    json!({ "f": factor, "t": at }),
                ),
                (
                    "query($u: ID!, $t: DateTime) { user(id: $u, asOf: $t) { id } }",
                    json!({ "u": user, "t": at }),
                ),
                (
                    "query($t: DateTime) { events(filter: {from: $t}) { edges { cursor } } }",
                    json!({ "t": at }),
                ),
            ] {
                let r = s.gql(query, variables).await;
                assert_eq!(error_code(&r), "BAD_USER_INPUT", "{query} at {at}: {r}");
            }
        }
    }
);

both_stores!(
    typename_aliases_count_towards_the_complexity_limit,
    |store| async move {
        let s = TestServer::start(store).await;
        // Two thousand aliases of a free field: cheap to send, costly to answer; anonymous.
        let fields: Vec<String> = (0..2000).map(|i| format!("a{i}: __typename")).collect();
        let r = s
            .gql_as(None, &format!("{{ {} }}", fields.join(" ")), json!({}))
            .await;
        assert!(r["data"].is_null(), "nothing is answered: {r}");
        assert!(
            r["errors"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("complex")),
            "{r}"
        );
        // An ordinary document with __typename still runs.
        let r = s.gql_as(None, "{ __typename }", json!({})).await;
        assert!(r["data"]["__typename"].is_string(), "{r}");
    }
);

both_stores!(the_embedded_stores_files_are_private, |store| async move {
    use std::os::unix::fs::PermissionsExt;

    let s = TestServer::start(store).await;
    s.create_user("alice").await;
    let Some(dir) = &s.dir else {
        return; // PostgreSQL keeps its files itself.
    };
    for name in ["tessera.db", "tessera.db-wal", "tessera.db-shm"] {
        let mode = std::fs::metadata(dir.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name} has mode {:o}", mode & 0o777);
    }
});
