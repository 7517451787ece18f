//! Relay connections (`first`/`after`, `edges { cursor node }`, `pageInfo`) over any source
//! that can fetch "up to N rows after a cursor": one more row than asked tells whether a next
//! page exists.

use std::future::Future;

use async_graphql::connection::{Connection, Edge, query};

use crate::app::AppResult;

/// Page sizes of one connection.
pub(crate) struct PageSize {
    /// Without `first`.
    pub default: usize,
    /// The most `first` may ask for.
    pub max: usize,
}

impl PageSize {
    /// Users, alerts: 50 by default, at most 200.
    pub const STANDARD: Self = Self {
        default: 50,
        max: 200,
    };
}

/// Answers a connection: `fetch(after, n)` reads up to `n` rows after the client's cursor,
/// `cursor` names a row's place, `node` converts it.
pub(crate) async fn connection<R, N, F, Fut>(
    (after, first): (Option<String>, Option<i32>),
    size: PageSize,
    fetch: F,
    cursor: impl Fn(&R) -> String,
    node: impl Fn(R) -> AppResult<N>,
) -> async_graphql::Result<Connection<String, N>>
where
    N: async_graphql::OutputType,
    F: FnOnce(Option<String>, i64) -> Fut,
    Fut: Future<Output = AppResult<Vec<R>>>,
{
    query(
        after,
        None,
        first,
        None,
        |after: Option<String>, _, first: Option<usize>, _| async move {
            let limit = first.unwrap_or(size.default).min(size.max);
            let has_previous = after.is_some();
            let mut rows = fetch(after, i64::try_from(limit).unwrap_or(0) + 1).await?;
            let has_next = rows.len() > limit;
            rows.truncate(limit);
            let mut page = Connection::new(has_previous, has_next);
            for row in rows {
                page.edges.push(Edge::new(cursor(&row), node(row)?));
            }
            Ok::<_, async_graphql::Error>(page)
        },
    )
    .await
}
