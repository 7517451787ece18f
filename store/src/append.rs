//! The one statement that writes the event log.

use sqlx::{Any, Executor, Row};

use crate::{Dialect, log::Cursor};

/// One event row to append.
#[derive(Clone, Debug)]
pub struct NewEvent<'a> {
    /// `User`, `Factor`, …
    pub aggregate_type: &'a str,
    /// The stream id.
    pub aggregate_id: &'a str,
    /// Position within the stream, from 1: the unique key with the two above is what makes
    /// optimistic concurrency work.
    pub sequence: i64,
    /// The variant name.
    pub event_type: &'a str,
    /// The payload schema version.
    pub event_version: &'a str,
    /// The payload, JSON text.
    pub payload: String,
    /// Actor, request id, command, causation id, client IP, user agent: JSON text.
    pub metadata: String,
}

/// What an append does when a row's `(aggregate type, id, sequence)` is taken already.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conflict {
    /// Fail the whole append: the caller lost an optimistic-concurrency race.
    Fail,
    /// Skip the taken rows and append the rest: for events with deterministic ids that
    /// several consumers may write (one alert per incident, however many nodes raise it).
    Skip,
}

/// Why an append wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// A sequence was taken (with [`Conflict::Fail`]).
    #[error("a sequence was taken by a concurrent writer")]
    Conflict,
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// Appends `rows` (of any streams) in one statement: one round trip and, outside a
/// transaction, one durable commit; all of them or none with [`Conflict::Fail`]. Returns how
/// many rows were written. `executor` may be a pool or an open transaction (a consumer that
/// writes events together with its checkpoint).
///
/// # Errors
/// [`AppendError::Conflict`] when a sequence is taken; database errors.
pub async fn append<'c, E>(
    executor: E,
    dialect: Dialect,
    rows: &[NewEvent<'_>],
    on_conflict: Conflict,
) -> Result<u64, AppendError>
where
    E: Executor<'c, Database = Any>,
{
    if rows.is_empty() {
        return Ok(0);
    }
    let sql = insert_sql(dialect, rows.len(), on_conflict, false);
    match bind(&sql, rows).execute(executor).await {
        Ok(done) => Ok(done.rows_affected()),
        Err(e) => Err(classify(e)),
    }
}

/// Like [`append`] with [`Conflict::Fail`], in one statement still, returning where the last
/// of the rows sits in the log on PostgreSQL (`RETURNING`: no second query to find it, which
/// read-your-writes waits need); on SQLite, whose log position is set by a trigger `RETURNING`
/// does not see, `None`.
///
/// # Errors
/// As [`append`].
pub async fn append_returning<'c, E>(
    executor: E,
    dialect: Dialect,
    rows: &[NewEvent<'_>],
) -> Result<Option<Cursor>, AppendError>
where
    E: Executor<'c, Database = Any>,
{
    if rows.is_empty() {
        return Ok(None);
    }
    if dialect == Dialect::Sqlite {
        return append(executor, dialect, rows, Conflict::Fail)
            .await
            .map(|_| None);
    }
    let sql = insert_sql(dialect, rows.len(), Conflict::Fail, true);
    match bind(&sql, rows).fetch_all(executor).await {
        Ok(written) => Ok(last_position(&written)?),
        Err(e) => Err(classify(e)),
    }
}

/// The furthest log position among the rows an `INSERT … RETURNING tx_id, global_position`
/// ([`insert_sql`] with `returning`) gave back, if it gave any.
pub(crate) fn last_position(written: &[sqlx::any::AnyRow]) -> Result<Option<Cursor>, sqlx::Error> {
    let mut last: Option<Cursor> = None;
    for row in written {
        let cursor = Cursor {
            tx: row.try_get(0)?,
            pos: row.try_get(1)?,
        };
        last = Some(last.map_or(cursor, |l| l.max(cursor)));
    }
    Ok(last)
}

fn classify(e: sqlx::Error) -> AppendError {
    match e {
        sqlx::Error::Database(e) if e.is_unique_violation() => AppendError::Conflict,
        e => AppendError::Db(e),
    }
}

pub(crate) fn insert_sql(
    dialect: Dialect,
    n: usize,
    on_conflict: Conflict,
    returning: bool,
) -> String {
    let json = dialect.json_type();
    let mut sql = String::from(
        "INSERT INTO events \
         (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) VALUES ",
    );
    for i in 0..n {
        let n = i * 7;
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(&format!(
            "(${}, ${}, ${}, ${}, ${}, CAST(${} AS {json}), CAST(${} AS {json}))",
            n + 1,
            n + 2,
            n + 3,
            n + 4,
            n + 5,
            n + 6,
            n + 7
        ));
    }
    if on_conflict == Conflict::Skip {
        sql.push_str(" ON CONFLICT DO NOTHING");
    }
    if returning {
        sql.push_str(" RETURNING tx_id::text::bigint, global_position");
    }
    sql
}

fn bind<'q>(
    sql: &'q str,
    rows: &'q [NewEvent<'q>],
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
    let mut query = sqlx::query(sql);
    for row in rows {
        query = query
            .bind(row.aggregate_type)
            .bind(row.aggregate_id)
            .bind(row.sequence)
            .bind(row.event_type)
            .bind(row.event_version)
            .bind(row.payload.as_str())
            .bind(row.metadata.as_str());
    }
    query
}
