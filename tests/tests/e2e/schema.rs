//! The schema checked in as `schema.graphql` is the schema `tessera schema` prints, with root
//! types named `Query`, `Mutation` and `Subscription` and every argument described.

use serde_json::json;
use tessera_tests::{TestServer, both_stores};

const CHECKED_IN: &str = include_str!("../../../schema.graphql");

#[test]
fn schema_graphql_matches_tessera_schema() {
    // `tessera schema` prints the SDL and a newline.
    let printed = format!("{}\n", tessera_api::graphql::build_schema(None).sdl());
    assert!(
        CHECKED_IN == printed,
        "schema.graphql is out of date: run `cargo run -q -p tessera-api --bin tessera -- schema > schema.graphql`"
    );
    for root in ["type Query {", "type Mutation {", "type Subscription {"] {
        assert!(printed.contains(root), "{root}");
    }
}

both_stores!(every_argument_is_described, |store| async move {
    let s = TestServer::start(store).await;
    let r = s
        .ok(
            "{ __schema { types { name fields { name args { name description } } } } }",
            json!({}),
        )
        .await;
    let mut undocumented = Vec::new();
    for t in r["__schema"]["types"].as_array().unwrap() {
        let name = t["name"].as_str().unwrap();
        if name.starts_with("__") {
            continue;
        }
        for f in t["fields"].as_array().into_iter().flatten() {
            for a in f["args"].as_array().unwrap() {
                if a["description"].as_str().is_none_or(str::is_empty) {
                    undocumented.push(format!("{name}.{}({})", f["name"], a["name"]));
                }
            }
        }
    }
    assert_eq!(undocumented, Vec::<String>::new());
});
