//! Error codes clients already handle (Apollo's names) for documents refused before any
//! resolver runs: `GRAPHQL_PARSE_FAILED` when the document does not parse,
//! `GRAPHQL_VALIDATION_FAILED` when it does not validate against the schema or exceeds the
//! depth and complexity limits. Codes set earlier (the proof budget's `RATE_LIMITED`) stay.

use std::sync::Arc;

use async_graphql::{
    ServerError, ServerResult, ValidationResult, Variables,
    extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextValidation},
    parser::types::ExecutableDocument,
};

/// Registers the coding of parse and validation errors.
pub struct DocumentErrorCodes;

impl ExtensionFactory for DocumentErrorCodes {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(DocumentErrorCodes)
    }
}

fn code(mut error: ServerError, code: &str) -> ServerError {
    let extensions = error.extensions.get_or_insert_with(Default::default);
    if extensions.get("code").is_none() {
        extensions.set("code", code);
    }
    error
}

#[async_trait::async_trait]
impl Extension for DocumentErrorCodes {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        next.run(ctx, query, variables)
            .await
            .map_err(|e| code(e, "GRAPHQL_PARSE_FAILED"))
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        next.run(ctx).await.map_err(|errors| {
            errors
                .into_iter()
                .map(|e| code(e, "GRAPHQL_VALIDATION_FAILED"))
                .collect()
        })
    }
}
