//! Relay connections (`first`/`after`, `edges { cursor node }`, `pageInfo`, `totalCount`) over
//! any source that can fetch "up to N rows after a cursor": one more row than asked tells
//! whether a next page exists.

use std::future::Future;

use async_graphql::{
    Context, SimpleObject,
    connection::{self, Edge, query},
};

use crate::app::AppResult;

/// What every connection adds to Relay's fields.
#[derive(SimpleObject)]
pub struct ConnectionTotal {
    /// How many nodes the whole connection has (every page, with the same arguments but
    /// `first` and `after`), counted when this page was read.
    pub total_count: i64,
}

/// A Relay connection of `N`, with `totalCount`.
pub(crate) type Connection<N> = connection::Connection<String, N, ConnectionTotal>;

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

/// How one connection reads its rows.
pub(crate) struct Source<F, C, K, M> {
    /// `fetch(after, n)` reads up to `n` rows after the client's cursor, in the connection's
    /// order.
    pub fetch: F,
    /// `count()` counts every row of the connection; called only when `totalCount` is asked
    /// for, so a page that does not select it costs no `COUNT(*)`.
    pub count: C,
    /// A row's place: its cursor.
    pub cursor: K,
    /// Converts a row.
    pub node: M,
}

/// Answers a connection over `source`.
pub(crate) async fn connection<R, N, F, Fut, C, CFut, K, M>(
    ctx: &Context<'_>,
    (after, first): (Option<String>, Option<i32>),
    size: PageSize,
    source: Source<F, C, K, M>,
) -> async_graphql::Result<Connection<N>>
where
    N: async_graphql::OutputType,
    F: FnOnce(Option<String>, i64) -> Fut,
    Fut: Future<Output = AppResult<Vec<R>>>,
    C: FnOnce() -> CFut,
    CFut: Future<Output = AppResult<i64>>,
    K: Fn(&R) -> String,
    M: Fn(R) -> AppResult<N>,
{
    let Source {
        fetch,
        count,
        cursor,
        node,
    } = source;
    let wants_total = ctx.look_ahead().field("totalCount").exists();
    query(
        after,
        None,
        first,
        None,
        |after: Option<String>, _, first: Option<usize>, _| async move {
            let limit = first.unwrap_or(size.default).min(size.max);
            let has_previous = after.is_some();
            let mut rows = fetch(after, i64::try_from(limit).unwrap_or(0) + 1).await?;
            let total_count = if wants_total { count().await? } else { 0 };
            let has_next = rows.len() > limit;
            rows.truncate(limit);
            let mut page = Connection::with_additional_fields(
                has_previous,
                has_next,
                ConnectionTotal { total_count },
            );
            for row in rows {
                page.edges.push(Edge::new(cursor(&row), node(row)?));
            }
            Ok::<_, async_graphql::Error>(page)
        },
    )
    .await
}
