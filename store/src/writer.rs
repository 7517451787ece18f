//! The group commit: one writer per store that commits the commands' appends in batches.
//!
//! Every [`crate::Store`] command commit goes through [`Writer::append`]: the rows are queued,
//! and the writer task, whenever it is free, takes everything queued (no timer: a lone append
//! is committed at once) and commits it in one transaction on its own connection, so a batch
//! of `k` commands costs one commit and one WAL flush instead of `k`. Each caller is answered
//! only after its batch committed (acknowledged means durable), with the log position of its
//! own last row (PostgreSQL; SQLite's position is set by a trigger `RETURNING` does not see).
//!
//! - PostgreSQL: one multi-row `INSERT … RETURNING` for the batch (at most [`MAX_BATCH_ROWS`]
//!   rows, far below the 65,535 bind parameters at 7 per row). A unique violation anywhere
//!   sends the batch's commands back one by one, each its own statement, so the conflicting
//!   one gets [`Appended::Conflict`] (its command reloads and decides again) and the others
//!   commit.
//! - SQLite: one `BEGIN IMMEDIATE … COMMIT` per batch with a `SAVEPOINT` per command; a
//!   conflicting command's savepoint rolls back, the others commit. The commands no longer
//!   wait for each other in SQLite's busy handler: only this connection writes their events,
//!   and each batch takes its turn at the process's write gate ([`crate::Db::begin_write`])
//!   with the other writes of the process, first come first served.
//!
//! A database failure answers every caller of the batch with the error (nothing is
//! acknowledged that is not durable) and drops the connection; the next batch opens a new one,
//! so the writer survives a restarted server. One statement per batch on PostgreSQL keeps the
//! tailer's rule intact: a transaction's rows appear together, below `pg_snapshot_xmin` once it
//! has ended (see [`crate::log`]).

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use sqlx::{Any, AnyConnection, ConnectOptions, Executor, Row as _, any::AnyConnectOptions};
use tokio::sync::{mpsc, oneshot};

use crate::{
    Conflict, Dialect,
    append::{insert_sql, last_position},
    db::Gate,
    log::Cursor,
};

/// Most rows per batch: a bound on the statement's size (7 bind parameters per row, and
/// PostgreSQL allows 65,535). A larger single command still goes alone.
pub const MAX_BATCH_ROWS: usize = 2_000;

/// How long opening the writer's connection may take before the batch fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One event row to append, owned (it crosses to the writer task).
#[derive(Clone, Debug)]
pub struct Row {
    /// `User`, `Factor`, …
    pub aggregate_type: String,
    /// The stream id.
    pub aggregate_id: String,
    /// Position within the stream, from 1.
    pub sequence: i64,
    /// The variant name.
    pub event_type: String,
    /// The payload schema version.
    pub event_version: String,
    /// The payload, JSON text.
    pub payload: String,
    /// The metadata, JSON text.
    pub metadata: String,
}

/// How one caller's append ended.
#[derive(Debug)]
pub enum Appended {
    /// Committed; where its last row sits in the log (PostgreSQL) or `None` (SQLite).
    Done(Option<Cursor>),
    /// A sequence was taken: nothing of this append was written.
    Conflict,
    /// The database failed for the batch this append was in: nothing of it is acknowledged.
    Failed(Arc<sqlx::Error>),
}

struct Job {
    rows: Vec<Row>,
    reply: oneshot::Sender<Appended>,
}

/// The handle on a store's writer task; clones share the task, which ends when the last
/// handle is dropped.
#[derive(Clone, Debug)]
pub struct Writer {
    queue: mpsc::UnboundedSender<Job>,
    counts: Arc<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    submitted: AtomicU64,
    started: AtomicU64,
    batches: AtomicU64,
    answered: AtomicU64,
}

/// What a writer has done so far (for tests and diagnostics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterCounts {
    /// Appends queued.
    pub submitted: u64,
    /// Batches the writer has begun to commit.
    pub started: u64,
    /// Batches it has finished (committed or failed).
    pub batches: u64,
    /// Appends answered.
    pub answered: u64,
}

impl Writer {
    /// Starts the writer task on the current runtime. It connects with `options` (and
    /// `setup`, the session settings every pool connection gets) at its first batch, and
    /// takes a turn at `gate` (SQLite: the process's write lock queue) for each batch.
    pub(crate) fn spawn(
        options: AnyConnectOptions,
        dialect: Dialect,
        setup: Arc<str>,
        gate: Option<Gate>,
    ) -> Self {
        let (queue, jobs) = mpsc::unbounded_channel();
        let counts = Arc::new(Counts::default());
        tokio::spawn(run(
            options,
            dialect,
            setup,
            gate,
            jobs,
            Arc::clone(&counts),
        ));
        Self { queue, counts }
    }

    /// What the writer has done so far.
    pub fn counts(&self) -> WriterCounts {
        WriterCounts {
            submitted: self.counts.submitted.load(Ordering::SeqCst),
            started: self.counts.started.load(Ordering::SeqCst),
            batches: self.counts.batches.load(Ordering::SeqCst),
            answered: self.counts.answered.load(Ordering::SeqCst),
        }
    }

    /// Appends `rows` (of any streams) with [`Conflict::Fail`] semantics: all or none, in the
    /// next batch; answers once that batch committed.
    pub async fn append(&self, rows: Vec<Row>) -> Appended {
        if rows.is_empty() {
            return Appended::Done(None);
        }
        let (reply, answer) = oneshot::channel();
        self.counts.submitted.fetch_add(1, Ordering::SeqCst);
        if self.queue.send(Job { rows, reply }).is_err() {
            return Appended::Failed(Arc::new(sqlx::Error::WorkerCrashed));
        }
        answer
            .await
            .unwrap_or_else(|_| Appended::Failed(Arc::new(sqlx::Error::WorkerCrashed)))
    }
}

async fn run(
    options: AnyConnectOptions,
    dialect: Dialect,
    setup: Arc<str>,
    gate: Option<Gate>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    counts: Arc<Counts>,
) {
    let mut conn: Option<AnyConnection> = None;
    let mut held: Option<Job> = None;
    loop {
        let first = match held.take() {
            Some(job) => job,
            None => match jobs.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        // SQLite: the batch waits its turn behind the other writes of the process (the
        // consumers' transactions), and gathers whatever arrives meanwhile.
        let turn = match &gate {
            Some(gate) => Some(gate.turn().await),
            None => None,
        };
        let mut rows = first.rows.len();
        let mut batch = vec![first];
        // Whatever arrived while the previous batch was being committed (or waited for its
        // turn), and no more.
        while let Ok(job) = jobs.try_recv() {
            if rows + job.rows.len() > MAX_BATCH_ROWS {
                held = Some(job);
                break;
            }
            rows += job.rows.len();
            batch.push(job);
        }
        counts.started.fetch_add(1, Ordering::SeqCst);
        let answers = flush(&mut conn, &options, dialect, &setup, &batch).await;
        drop(turn);
        counts.batches.fetch_add(1, Ordering::SeqCst);
        counts
            .answered
            .fetch_add(batch.len() as u64, Ordering::SeqCst);
        for (job, answer) in batch.into_iter().zip(answers) {
            // A caller that went away still had its rows committed; nobody to tell.
            let _ = job.reply.send(answer);
        }
    }
}

/// Commits `batch`; one answer per job, in order.
async fn flush(
    conn: &mut Option<AnyConnection>,
    options: &AnyConnectOptions,
    dialect: Dialect,
    setup: &str,
    batch: &[Job],
) -> Vec<Appended> {
    let connection = match conn {
        Some(c) => c,
        None => match open(options, setup).await {
            Ok(c) => conn.insert(c),
            Err(e) => return failed(batch, e),
        },
    };
    let outcome = match dialect {
        Dialect::Postgres => postgres_batch(connection, batch).await,
        Dialect::Sqlite => sqlite_batch(connection, batch).await,
    };
    match outcome {
        Ok(answers) => {
            if answers.iter().any(|a| matches!(a, Appended::Failed(_))) {
                *conn = None;
            }
            answers
        }
        Err(e) => {
            // The connection may be broken or inside a failed transaction: start afresh.
            *conn = None;
            tracing::warn!(error = %e, jobs = batch.len(), "a batch of appends failed; every caller gets the error");
            failed(batch, e)
        }
    }
}

fn failed(batch: &[Job], e: sqlx::Error) -> Vec<Appended> {
    let e = Arc::new(e);
    batch
        .iter()
        .map(|_| Appended::Failed(Arc::clone(&e)))
        .collect()
}

async fn open(options: &AnyConnectOptions, setup: &str) -> Result<AnyConnection, sqlx::Error> {
    let mut conn = tokio::time::timeout(CONNECT_TIMEOUT, options.connect())
        .await
        .map_err(|_| {
            sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
            ))
        })??;
    conn.execute(setup).await?;
    Ok(conn)
}

fn is_conflict(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(e) if e.is_unique_violation())
}

fn bind<'q>(
    sql: &'q str,
    rows: impl Iterator<Item = &'q Row>,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
    let mut query = sqlx::query(sql);
    for row in rows {
        query = query
            .bind(row.aggregate_type.as_str())
            .bind(row.aggregate_id.as_str())
            .bind(row.sequence)
            .bind(row.event_type.as_str())
            .bind(row.event_version.as_str())
            .bind(row.payload.as_str())
            .bind(row.metadata.as_str());
    }
    query
}

/// The batch (each job all or none), answered in order.
async fn postgres_batch(
    conn: &mut AnyConnection,
    batch: &[Job],
) -> Result<Vec<Appended>, sqlx::Error> {
    // Two commands of the batch that claim the same row (two requests on one stream that
    // loaded the same state) cannot both commit: the later one loses here, in memory, so the
    // race costs no failed statement and does not send the batch back one by one.
    let mut claimed: HashSet<(&str, &str, i64)> = HashSet::new();
    let mut lost = vec![false; batch.len()];
    for (i, job) in batch.iter().enumerate() {
        if job.rows.iter().any(|r| claimed.contains(&key(r))) {
            lost[i] = true;
        } else {
            claimed.extend(job.rows.iter().map(key));
        }
    }
    let pending: Vec<&Job> = batch
        .iter()
        .zip(&lost)
        .filter(|(_, lost)| !**lost)
        .map(|(job, _)| job)
        .collect();
    let mut answers = postgres_insert(conn, &pending).await?.into_iter();
    Ok(lost
        .iter()
        .map(|lost| {
            if *lost {
                Appended::Conflict
            } else {
                answers.next().unwrap_or(Appended::Conflict)
            }
        })
        .collect())
}

fn key(row: &Row) -> (&str, &str, i64) {
    (
        row.aggregate_type.as_str(),
        row.aggregate_id.as_str(),
        row.sequence,
    )
}

/// `batch` in one statement; on a unique violation, each job in its own.
async fn postgres_insert(
    conn: &mut AnyConnection,
    batch: &[&Job],
) -> Result<Vec<Appended>, sqlx::Error> {
    let rows = batch.iter().map(|j| j.rows.len()).sum();
    let mut sql = insert_sql(Dialect::Postgres, rows, Conflict::Fail, false);
    sql.push_str(
        " RETURNING aggregate_type, aggregate_id, sequence, tx_id::text::bigint, global_position",
    );
    let written = match bind(&sql, batch.iter().flat_map(|j| j.rows.iter()))
        .fetch_all(&mut *conn)
        .await
    {
        Ok(written) => written,
        Err(e) if is_conflict(&e) && batch.len() > 1 => return one_by_one(conn, batch).await,
        Err(e) if is_conflict(&e) => return Ok(vec![Appended::Conflict]),
        Err(e) => return Err(e),
    };
    // Each caller gets the position of its own last row (the rows are matched by their key,
    // not by the order `RETURNING` happens to use).
    let mut owner: HashMap<(&str, &str, i64), usize> = HashMap::with_capacity(rows);
    for (i, job) in batch.iter().enumerate() {
        for row in &job.rows {
            owner.insert(key(row), i);
        }
    }
    let mut last: Vec<Option<Cursor>> = vec![None; batch.len()];
    for row in &written {
        let key: (String, String, i64) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        let cursor = Cursor {
            tx: row.try_get(3)?,
            pos: row.try_get(4)?,
        };
        if let Some(&i) = owner.get(&(key.0.as_str(), key.1.as_str(), key.2)) {
            last[i] = Some(last[i].map_or(cursor, |l| l.max(cursor)));
        }
    }
    Ok(last.into_iter().map(Appended::Done).collect())
}

/// After a conflict in a batch: each job alone, so only the conflicting ones fail.
async fn one_by_one(
    conn: &mut AnyConnection,
    batch: &[&Job],
) -> Result<Vec<Appended>, sqlx::Error> {
    let mut answers = Vec::with_capacity(batch.len());
    for job in batch {
        let sql = insert_sql(Dialect::Postgres, job.rows.len(), Conflict::Fail, true);
        match bind(&sql, job.rows.iter()).fetch_all(&mut *conn).await {
            Ok(written) => answers.push(Appended::Done(last_position(&written)?)),
            Err(e) if is_conflict(&e) => answers.push(Appended::Conflict),
            Err(e) => {
                // The jobs before committed and are answered so; this one and the rest not.
                let e = Arc::new(e);
                answers.resize_with(batch.len(), || Appended::Failed(Arc::clone(&e)));
                return Ok(answers);
            }
        }
    }
    Ok(answers)
}

/// The batch in one transaction, a savepoint per job; a lone job is one statement.
async fn sqlite_batch(
    conn: &mut AnyConnection,
    batch: &[Job],
) -> Result<Vec<Appended>, sqlx::Error> {
    if let [job] = batch {
        let sql = insert_sql(Dialect::Sqlite, job.rows.len(), Conflict::Fail, false);
        return match bind(&sql, job.rows.iter()).execute(&mut *conn).await {
            Ok(_) => Ok(vec![Appended::Done(None)]),
            Err(e) if is_conflict(&e) => Ok(vec![Appended::Conflict]),
            Err(e) => Err(e),
        };
    }
    conn.execute("BEGIN IMMEDIATE").await?;
    let mut answers = Vec::with_capacity(batch.len());
    for job in batch {
        conn.execute("SAVEPOINT command").await?;
        let sql = insert_sql(Dialect::Sqlite, job.rows.len(), Conflict::Fail, false);
        match bind(&sql, job.rows.iter()).execute(&mut *conn).await {
            Ok(_) => answers.push(Appended::Done(None)),
            Err(e) if is_conflict(&e) => {
                conn.execute("ROLLBACK TO command").await?;
                answers.push(Appended::Conflict);
            }
            Err(e) => return Err(e),
        }
        conn.execute("RELEASE command").await?;
    }
    conn.execute("COMMIT").await?;
    Ok(answers)
}
