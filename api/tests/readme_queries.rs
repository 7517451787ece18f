//! Every GraphQL document in README.md (the guide's `'{"query": …}'` bodies and the
//! ```graphql blocks) parses and validates against the real schema, so the README cannot
//! name a field, argument or input that does not exist.

use tessera_api::graphql::build_schema;

fn documents() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let mut out = Vec::new();
    for line in readme.lines() {
        if let Some(start) = line.find("'{\"query\"") {
            let body = &line[start + 1..line.rfind('\'').expect("closing quote")];
            let json: serde_json::Value = serde_json::from_str(body)
                .unwrap_or_else(|e| panic!("README body is not JSON ({e}): {body}"));
            out.push(json["query"].as_str().expect("query").to_string());
        }
    }
    let mut rest = readme.as_str();
    while let Some(at) = rest.find("```graphql\n") {
        let block = &rest[at + "```graphql\n".len()..];
        let end = block.find("```").expect("closed block");
        out.push(block[..end].to_string());
        rest = &block[end..];
    }
    out
}

#[tokio::test]
async fn every_readme_query_validates_against_the_schema() {
    let docs = documents();
    assert!(
        docs.len() >= 15,
        "README documents not found: {}",
        docs.len()
    );
    // Built without state: a document that passes parsing and validation reaches its
    // resolvers, which fail with a path; parse and validation errors have none.
    let schema = build_schema(None);
    for doc in &docs {
        let response = schema.execute(doc.as_str()).await;
        for error in &response.errors {
            assert!(
                !error.path.is_empty(),
                "README document does not validate: {}\n{doc}",
                error.message
            );
        }
        assert!(
            !response.errors.is_empty(),
            "resolvers ran without a store? {doc}"
        );
    }
}
