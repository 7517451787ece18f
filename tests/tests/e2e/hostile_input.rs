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

/// The introspected type reference `t` as a variable type (`[ID!]!`) and its named type.
fn type_of(t: &serde_json::Value) -> (String, String) {
    match t["kind"].as_str() {
        Some("NON_NULL") => {
            let (inner, name) = type_of(&t["ofType"]);
            (format!("{inner}!"), name)
        }
        Some("LIST") => {
            let (inner, name) = type_of(&t["ofType"]);
            (format!("[{inner}]"), name)
        }
        _ => {
            let name = t["name"].as_str().unwrap_or_default().to_string();
            (name.clone(), name)
        }
    }
}

/// A hostile value of the named type: `text` in every string, extreme numbers and dates,
/// every field of an input object filled.
fn hostile(
    types: &std::collections::HashMap<String, serde_json::Value>,
    t: &serde_json::Value,
    text: &str,
    depth: usize,
) -> serde_json::Value {
    match t["kind"].as_str() {
        Some("NON_NULL") => return hostile(types, &t["ofType"], text, depth),
        Some("LIST") => return json!([hostile(types, &t["ofType"], text, depth)]),
        _ => {}
    }
    let name = t["name"].as_str().unwrap_or_default();
    let Some(def) = types.get(name) else {
        return json!(text);
    };
    match (def["kind"].as_str(), name) {
        (Some("SCALAR"), "Int") => json!(2_147_483_647),
        (Some("SCALAR"), "Float") => json!(1e308),
        (Some("SCALAR"), "Boolean") => json!(true),
        (Some("SCALAR"), "DateTime") => json!("+200000-01-01T00:00:00Z"),
        (Some("SCALAR"), "JSON") => json!({ "k": text }),
        (Some("ENUM"), _) => def["enumValues"][0]["name"].clone(),
        (Some("INPUT_OBJECT"), _) if depth < 4 => {
            let mut object = serde_json::Map::new();
            for field in def["inputFields"].as_array().into_iter().flatten() {
                object.insert(
                    field["name"].as_str().unwrap_or_default().to_string(),
                    hostile(types, &field["type"], text, depth + 1),
                );
            }
            serde_json::Value::Object(object)
        }
        _ => json!(text),
    }
}

const INTROSPECT: &str = "{ __schema { types { name kind enumValues { name } \
    inputFields { name type { ...T } } \
    fields { name type { ...T } args { name type { ...T } } } } } } \
    fragment T on __Type { kind name ofType { kind name ofType { kind name ofType { kind name } } } }";

both_stores!(
    every_argument_of_every_field_survives_hostile_values,
    |store| async move {
        let s = TestServer::start(store).await;
        s.create_user("alice").await;
        let schema = s.ok(INTROSPECT, json!({})).await;
        let types: std::collections::HashMap<String, serde_json::Value> =
            schema["__schema"]["types"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| (t["name"].as_str().unwrap().to_string(), t.clone()))
                .collect();
        // Long enough to be refused by every length limit, short enough that a document
        // repeating it in every string field stays under the body limit (1 MB strings are
        // below, one per document).
        let big = "x".repeat(100 * 1024);
        let texts = [
            "a\u{0}b",
            big.as_str(),
            "-1.99999999999999999999",
            "00000000-0000-0000-0000-000000000000",
            "' OR 1=1 --\u{feff}\u{202e}💥",
        ];
        let mut sent = 0;
        for (root, keyword) in [("Query", "query"), ("Mutation", "mutation")] {
            for field in types[root]["fields"].as_array().unwrap() {
                let name = field["name"].as_str().unwrap();
                let (_, returns) = type_of(&field["type"]);
                let selection = match types.get(&returns).and_then(|t| t["kind"].as_str()) {
                    Some("OBJECT" | "INTERFACE" | "UNION") => " { __typename }",
                    _ => "",
                };
                let args = field["args"].as_array().unwrap();
                for text in texts {
                    let mut declared = Vec::new();
                    let mut passed = Vec::new();
                    let mut variables = serde_json::Map::new();
                    for (i, arg) in args.iter().enumerate() {
                        let (ty, _) = type_of(&arg["type"]);
                        declared.push(format!("$a{i}: {ty}"));
                        passed.push(format!("{}: $a{i}", arg["name"].as_str().unwrap()));
                        variables.insert(format!("a{i}"), hostile(&types, &arg["type"], text, 0));
                    }
                    let (declared, passed) = if args.is_empty() {
                        (String::new(), String::new())
                    } else {
                        (
                            format!("({})", declared.join(", ")),
                            format!("({})", passed.join(", ")),
                        )
                    };
                    let document = format!("{keyword}{declared} {{ {name}{passed}{selection} }}");
                    for token in [Some(tessera_tests::ADMIN_KEY), None] {
                        let mut request = s.http.post(format!("{}/graphql", s.base));
                        if let Some(token) = token {
                            request = request.bearer_auth(token);
                        }
                        let answer = request
                            .json(&json!({ "query": document, "variables": variables }))
                            .send()
                            .await
                            .expect("an answer");
                        let status = answer.status().as_u16();
                        let body = answer.text().await.unwrap_or_default();
                        let shown: String = body.chars().take(300).collect();
                        assert!(
                            status < 500,
                            "{name} with {:?}: {status} {shown}",
                            &text[..text.len().min(20)]
                        );
                        assert!(
                            !body.contains("\"INTERNAL\""),
                            "{name} with {:?}: {shown}",
                            &text[..text.len().min(20)]
                        );
                        sent += 1;
                    }
                }
            }
        }
        assert!(sent > 100, "{sent} documents");
        // A string of nearly 1 MB (the body limit) in one argument: refused, not a fault.
        let huge = "y".repeat(tessera_api::MAX_BODY_BYTES - 1024);
        let r = s
            .gql(
                "mutation($l: String!) { createUserV2(input: {login: $l}) { user { id } } }",
                json!({ "l": huge }),
            )
            .await;
        assert_eq!(
            error_code(&r),
            "BAD_USER_INPUT",
            "{}",
            r.to_string().chars().take(300).collect::<String>()
        );
        // Over the limit: 413 before anything is parsed. The server drops a connection whose
        // body it did not read, so this one is not handed back to the client's pool: the next
        // request would otherwise race the close (hyper's IncompleteMessage).
        let over = s
            .http
            .post(format!("{}/graphql", s.base))
            .header(reqwest::header::CONNECTION, "close")
            .bearer_auth(tessera_tests::ADMIN_KEY)
            .json(&json!({ "query": "{ __typename }", "variables": { "l": "z".repeat(tessera_api::MAX_BODY_BYTES) } }))
            .send()
            .await
            .unwrap();
        assert_eq!(over.status(), 413);
        // The server still serves.
        s.create_user("bob").await;
    }
);
