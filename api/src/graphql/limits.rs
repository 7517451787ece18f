//! Per-request abuse limits (part of the contract, docs/architecture.md). Root mutation fields run one after
//! another, so sixty aliased `verifyFactor`s would be sixty guesses: a request may carry at
//! most one proof-of-possession field, counted over aliases, fragments and every operation in
//! the document, and a request over the budget is refused before anything executes.
//!
//! Parsed documents that passed these checks are kept by their text ([`DocumentCache`]), so
//! the hot mutation, sent with the same text and new variables every time, is parsed once.
//! Validation (the depth and complexity limits, and the variables' types) still runs on every
//! request: it depends on the variables.

use std::{
    collections::HashSet,
    num::NonZeroUsize,
    sync::{Arc, Mutex},
};

use async_graphql::{
    ServerError, ServerResult, Variables,
    extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery},
    parser::types::{ExecutableDocument, Selection, SelectionSet},
};

/// Fields that check a secret the caller claims to hold (`setPassword*` its `currentPassword`).
pub const PROOF_FIELDS: &[&str] = &[
    "verifyFactor",
    "activateFactor",
    "completeStepUp",
    "completeLogin",
    "useRecoveryCode",
    "login",
    "setPassword",
    "setPasswordV2",
    "completePasskeyLogin",
];

/// Documents kept by [`DocumentCache`] (least recently used first out).
pub const CACHED_DOCUMENTS: usize = 512;

/// Longest document text kept by [`DocumentCache`]: the ordinary operations are a few hundred
/// bytes; a large one parses rarely enough to pay its parse.
pub const CACHED_DOCUMENT_TEXT: usize = 8 * 1024;

/// Parsed documents that passed [`ProofBudget`]'s checks, by their exact text. A parse is a
/// pure function of the text, so a hit is what parsing again would give; the checks made on
/// the way in (the selection and proof counts, async-graphql's recursion and directive limits)
/// depend on the document alone, so they hold for every later request with that text.
pub struct DocumentCache {
    documents: Mutex<lru::LruCache<String, Arc<ExecutableDocument>>>,
}

impl DocumentCache {
    /// A cache of at most `capacity` documents.
    pub fn new(capacity: usize) -> Self {
        Self {
            documents: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }

    /// The document parsed from `query`, if kept.
    pub fn get(&self, query: &str) -> Option<Arc<ExecutableDocument>> {
        self.documents.lock().ok()?.get(query).cloned()
    }

    /// Keeps `document`, parsed from `query` (unless the text is longer than
    /// [`CACHED_DOCUMENT_TEXT`]).
    pub fn put(&self, query: &str, document: &ExecutableDocument) {
        if query.len() <= CACHED_DOCUMENT_TEXT
            && let Ok(mut documents) = self.documents.lock()
        {
            documents.put(query.to_string(), Arc::new(document.clone()));
        }
    }

    /// How many documents are kept.
    pub fn len(&self) -> usize {
        self.documents.lock().map_or(0, |d| d.len())
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The extension enforcing the one-proof budget (and keeping the documents it let through).
pub struct ProofBudget {
    cache: Arc<DocumentCache>,
}

impl Default for ProofBudget {
    fn default() -> Self {
        Self {
            cache: Arc::new(DocumentCache::new(CACHED_DOCUMENTS)),
        }
    }
}

impl ExtensionFactory for ProofBudget {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ProofBudgetExtension {
            cache: Arc::clone(&self.cache),
        })
    }
}

struct ProofBudgetExtension {
    cache: Arc<DocumentCache>,
}

#[async_trait::async_trait]
impl Extension for ProofBudgetExtension {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        // A NUL byte is valid UTF-8 but no store takes it in text (PostgreSQL refuses it):
        // refused here, for both stores alike, before anything runs.
        if has_nul(query, variables) {
            return Err(refusal(
                "text inputs may not contain NUL bytes",
                "BAD_USER_INPUT",
                "NUL_IN_INPUT",
            ));
        }
        if let Some(document) = self.cache.get(query) {
            return Ok(ExecutableDocument::clone(&document));
        }
        let document = next.run(ctx, query, variables).await?;
        // async-graphql's complexity counts no `__typename`: thousands of aliases of it would
        // be free to send and costly to answer. Every selection counts here.
        let fields = count_fields(&document);
        if fields > MAX_SELECTIONS {
            return Err(refusal(
                &format!("the query is too complex: {fields} selections, at most {MAX_SELECTIONS}"),
                "GRAPHQL_VALIDATION_FAILED",
                "TOO_COMPLEX",
            ));
        }
        let proofs = count_proofs(&document);
        if proofs > 1 {
            tracing::warn!(
                proofs,
                "refused a request carrying several proofs of possession"
            );
            return Err(refusal(
                &format!(
                    "a request may carry at most one proof of possession; this one has {proofs}"
                ),
                "RATE_LIMITED",
                "PROOF_BUDGET_EXCEEDED",
            ));
        }
        self.cache.put(query, &document);
        Ok(document)
    }
}

/// Most field selections in one document (every alias and fragment spread counted, and
/// `__typename` too): above the schema's complexity limit, which counts ordinary fields once.
pub const MAX_SELECTIONS: usize = 1_000;

fn refusal(message: &str, code: &str, reason: &str) -> ServerError {
    let mut error = ServerError::new(message, None);
    let extensions = error.extensions.get_or_insert_with(Default::default);
    extensions.set("code", code);
    extensions.set("reason", reason);
    error
}

/// Whether the document (a raw NUL or a `\u0000` escape) or any variable holds a NUL byte.
fn has_nul(query: &str, variables: &Variables) -> bool {
    fn in_value(v: &async_graphql::Value) -> bool {
        match v {
            async_graphql::Value::String(s) => s.contains('\0'),
            async_graphql::Value::List(items) => items.iter().any(in_value),
            async_graphql::Value::Object(fields) => fields
                .iter()
                .any(|(k, v)| k.as_str().contains('\0') || in_value(v)),
            _ => false,
        }
    }
    query.contains('\0')
        || query.to_ascii_lowercase().contains("\\u0000")
        || variables.iter().any(|(_, v)| in_value(v))
}

/// How many fields the document selects, at every depth, over all operations (a fragment
/// counted once per spread).
pub fn count_fields(document: &ExecutableDocument) -> usize {
    sum_over_operations(document, Depth::All, &|_| 1)
}

/// How many proof fields the document selects at the root of its operations.
pub fn count_proofs(document: &ExecutableDocument) -> usize {
    sum_over_operations(document, Depth::Root, &|name| {
        usize::from(PROOF_FIELDS.contains(&name))
    })
}

/// Which selections a count looks at.
#[derive(Clone, Copy)]
enum Depth {
    /// The operation's own fields (through fragments), not their sub-selections.
    Root,
    /// Every field at every depth.
    All,
}

/// Sums `weight(field name)` over the fields of every operation, expanding fragments once per
/// spread (root mutation fields run one after another, so a spread twice runs twice).
fn sum_over_operations(
    document: &ExecutableDocument,
    depth: Depth,
    weight: &dyn Fn(&str) -> usize,
) -> usize {
    let mut visited = HashSet::new();
    document
        .operations
        .iter()
        .map(|(_, op)| {
            sum_in(
                document,
                &op.node.selection_set.node,
                depth,
                weight,
                &mut visited,
            )
        })
        .sum()
}

fn sum_in(
    document: &ExecutableDocument,
    set: &SelectionSet,
    depth: Depth,
    weight: &dyn Fn(&str) -> usize,
    visited: &mut HashSet<String>,
) -> usize {
    set.items
        .iter()
        .map(|item| match &item.node {
            Selection::Field(f) => {
                let below = match depth {
                    Depth::All => {
                        sum_in(document, &f.node.selection_set.node, depth, weight, visited)
                    }
                    Depth::Root => 0,
                };
                weight(f.node.name.node.as_str()) + below
            }
            Selection::InlineFragment(f) => {
                sum_in(document, &f.node.selection_set.node, depth, weight, visited)
            }
            Selection::FragmentSpread(s) => {
                let name = s.node.fragment_name.node.to_string();
                // A cycle (rejected later by validation) must not recurse for ever.
                if !visited.insert(name.clone()) {
                    return 0;
                }
                let n = document
                    .fragments
                    .get(s.node.fragment_name.node.as_str())
                    .map_or(0, |frag| {
                        sum_in(
                            document,
                            &frag.node.selection_set.node,
                            depth,
                            weight,
                            visited,
                        )
                    });
                visited.remove(&name);
                n
            }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use async_graphql::parser::parse_query;

    use super::*;

    #[test]
    fn counts_every_selection_typename_and_spreads_included() {
        let cases = [
            ("{ __typename }", 1),
            ("{ a: __typename b: __typename c: __typename }", 3),
            ("{ user(id: 1) { id login } }", 3),
            (
                "{ ...F ...F } fragment F on Query { __typename me { id } }",
                6,
            ),
            (
                "{ ...F } fragment F on Query { ...G } fragment G on Query { ...F }",
                0,
            ),
        ];
        for (query, want) in cases {
            assert_eq!(count_fields(&parse_query(query).unwrap()), want, "{query}");
        }
    }

    #[test]
    fn the_document_cache_answers_only_for_the_same_text_and_stays_bounded() {
        let cache = DocumentCache::new(2);
        let a = "mutation { verifyFactor(input: {}) { factorResult } }";
        let b = "mutation { activateFactor(input: {}) { factorResult } }";
        cache.put(a, &parse_query(a).unwrap());
        assert_eq!(count_proofs(&cache.get(a).unwrap()), 1);
        assert!(cache.get(b).is_none());
        assert!(cache.get(&format!("{a} ")).is_none());
        cache.put(b, &parse_query(b).unwrap());
        let c = "{ __typename }";
        cache.put(c, &parse_query(c).unwrap());
        assert_eq!(cache.len(), 2);
        // `a` was the least recently used.
        assert!(cache.get(a).is_none());
        assert_eq!(count_fields(&cache.get(c).unwrap()), 1);
        let long = format!("{{ {} }}", "__typename ".repeat(CACHED_DOCUMENT_TEXT / 10));
        cache.put(&long, &parse_query(&long).unwrap());
        assert!(cache.get(&long).is_none());
    }

    #[test]
    fn finds_nul_bytes_in_the_document_and_the_variables() {
        let none = Variables::default();
        assert!(!has_nul("{ me { id } }", &none));
        assert!(has_nul("{ user(id: \"a\\u0000\") { id } }", &none));
        assert!(has_nul("{ user(id: \"a\0\") { id } }", &none));
        let nested = Variables::from_json(serde_json::json!({ "s": { "k": ["x", "y\u{0}"] } }));
        assert!(has_nul("{ me { id } }", &nested));
    }

    #[test]
    fn counts_aliases_fragments_and_operations() {
        let cases = [
            ("mutation { verifyFactor(input: {}) { factorResult } }", 1),
            (
                "mutation { a: verifyFactor(input: {}) { x } b: verifyFactor(input: {}) { x } }",
                2,
            ),
            (
                "mutation { ...F ...F } fragment F on Mutation { verifyFactor(input: {}) { x } }",
                2,
            ),
            (
                "mutation { ... on Mutation { activateFactor(input: {}) { x } login(input: {}) { x } } }",
                2,
            ),
            (
                "mutation A { verifyFactor { x } } mutation B { useRecoveryCode { x } }",
                2,
            ),
            (
                "mutation { createUser(input: {}) { id } enrollFactor(input: {}) { factor { id } } }",
                0,
            ),
            (
                "mutation { ...F } fragment F on Mutation { ...G } fragment G on Mutation { ...F }",
                0,
            ),
        ];
        for (query, want) in cases {
            assert_eq!(count_proofs(&parse_query(query).unwrap()), want, "{query}");
        }
    }
}
