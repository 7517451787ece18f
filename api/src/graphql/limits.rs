//! Per-request abuse limits (part of the contract, docs/architecture.md). Root mutation fields run one after
//! another, so sixty aliased `verifyFactor`s would be sixty guesses: a request may carry at
//! most one proof-of-possession field, counted over aliases, fragments and every operation in
//! the document, and a request over the budget is refused before anything executes.

use std::{collections::HashSet, sync::Arc};

use async_graphql::{
    ServerError, ServerResult, Variables,
    extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery},
    parser::types::{ExecutableDocument, Selection, SelectionSet},
};

/// Fields that check a secret the caller claims to hold.
pub const PROOF_FIELDS: &[&str] = &[
    "verifyFactor",
    "activateFactor",
    "completeStepUp",
    "completeLogin",
    "useRecoveryCode",
    "login",
];

/// The extension enforcing the one-proof budget.
pub struct ProofBudget;

impl ExtensionFactory for ProofBudget {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ProofBudgetExtension)
    }
}

struct ProofBudgetExtension;

#[async_trait::async_trait]
impl Extension for ProofBudgetExtension {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        let proofs = count_proofs(&document);
        if proofs > 1 {
            tracing::warn!(
                proofs,
                "refused a request carrying several proofs of possession"
            );
            let mut error = ServerError::new(
                format!(
                    "a request may carry at most one proof of possession; this one has {proofs}"
                ),
                None,
            );
            let extensions = error.extensions.get_or_insert_with(Default::default);
            extensions.set("code", "RATE_LIMITED");
            extensions.set("reason", "PROOF_BUDGET_EXCEEDED");
            return Err(error);
        }
        Ok(document)
    }
}

/// How many proof fields the document selects at the root of its operations.
pub fn count_proofs(document: &ExecutableDocument) -> usize {
    let mut visited = HashSet::new();
    document
        .operations
        .iter()
        .map(|(_, op)| count_in(document, &op.node.selection_set.node, &mut visited))
        .sum()
}

fn count_in(
    document: &ExecutableDocument,
    set: &SelectionSet,
    visited: &mut HashSet<String>,
) -> usize {
    set.items
        .iter()
        .map(|item| match &item.node {
            Selection::Field(f) => usize::from(PROOF_FIELDS.contains(&f.node.name.node.as_str())),
            Selection::InlineFragment(f) => count_in(document, &f.node.selection_set.node, visited),
            Selection::FragmentSpread(s) => {
                let name = s.node.fragment_name.node.to_string();
                // A fragment spread twice still selects its fields once per spread, but a
                // cycle (rejected later by validation) must not recurse for ever.
                if !visited.insert(name.clone()) {
                    return 0;
                }
                let n = document
                    .fragments
                    .get(s.node.fragment_name.node.as_str())
                    .map_or(0, |frag| {
                        count_in(document, &frag.node.selection_set.node, visited)
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
