//! The group commit against real stores (PostgreSQL at `TESSERA_TEST_PG_URL`, SQLite in a
//! temporary file): batches answer each caller with its own outcome, only after the commit.
//!
//! The tests make batching deterministic by holding the log's write lock from another
//! connection (PostgreSQL `LOCK TABLE events IN EXCLUSIVE MODE`, SQLite `BEGIN IMMEDIATE`):
//! the writer's first batch blocks on it, the appends submitted meanwhile queue behind it,
//! and once the lock is released they all go in the writer's next batch.

use std::{
    collections::HashSet,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use chrono::{TimeDelta, TimeZone, Utc};
use sqlx::{AnyConnection, Connection, Executor, Row as _};
use tessera_store::{
    Cursor, Db, Dialect, Error, Projection, Runner, StoredEvent,
    limits::{Window, hit},
    writer::{Appended, Row, WriterCounts},
};

/// A fresh store, migrated.
struct Fresh {
    db: Db,
    url: String,
    dialect: Dialect,
    pg: Option<String>,
    dir: Option<PathBuf>,
}

fn pg_base() -> String {
    std::env::var("TESSERA_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

fn prefix() -> String {
    std::env::var("TESSERA_TEST_DB_PREFIX")
        .ok()
        .filter(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        .unwrap_or_else(|| "tessera_test".into())
}

impl Fresh {
    async fn new(dialect: Dialect) -> Self {
        Self::with_busy_timeout(dialect, 10_000).await
    }

    /// A fresh store whose SQLite connections wait `busy_timeout_ms` in the busy handler.
    async fn with_busy_timeout(dialect: Dialect, busy_timeout_ms: u32) -> Self {
        let name = format!("{}_gc_{}", prefix(), uuid::Uuid::new_v4().simple());
        let (url, pg, dir) = match dialect {
            Dialect::Postgres => {
                let mut admin = sqlx::PgConnection::connect(&format!("{}/postgres", pg_base()))
                    .await
                    .expect("PostgreSQL must be running for the tests");
                admin
                    .execute(format!("CREATE DATABASE {name}").as_str())
                    .await
                    .expect("create the test database");
                (format!("{}/{name}", pg_base()), Some(name), None)
            }
            Dialect::Sqlite => {
                let dir = std::env::temp_dir().join(&name);
                std::fs::create_dir_all(&dir).expect("temp dir");
                (
                    format!("sqlite://{}/tessera.db", dir.display()),
                    None,
                    Some(dir),
                )
            }
        };
        let db = Db::connect_with_busy_timeout(&url, 4, busy_timeout_ms)
            .await
            .expect("connect");
        db.migrate().await.expect("migrate");
        Self {
            db,
            url,
            dialect,
            pg,
            dir,
        }
    }

    fn counts(&self) -> WriterCounts {
        self.db
            .writer_counts()
            .expect("a file or server store has a writer")
    }

    /// Another connection holding the log's write lock until [`release`].
    async fn hold_writes(&self) -> AnyConnection {
        let mut conn = AnyConnection::connect(&self.url).await.expect("connect");
        match self.dialect {
            Dialect::Postgres => {
                conn.execute("BEGIN").await.unwrap();
                conn.execute("LOCK TABLE events IN EXCLUSIVE MODE")
                    .await
                    .unwrap();
            }
            Dialect::Sqlite => {
                conn.execute("BEGIN IMMEDIATE").await.unwrap();
            }
        }
        conn
    }

    /// Waits (patiently: the machine may be loaded) until the writer's counts satisfy `until`.
    async fn wait(&self, what: &str, until: impl Fn(WriterCounts) -> bool) {
        for _ in 0..6_000 {
            if until(self.counts()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the writer never reached: {what} ({:?})", self.counts());
    }

    async fn finish(self) {
        self.db.pool.close().await;
        drop(self.db);
        if let Some(name) = self.pg
            && let Ok(mut admin) =
                sqlx::PgConnection::connect(&format!("{}/postgres", pg_base())).await
        {
            let _ = admin
                .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                .await;
        }
        if let Some(dir) = self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

async fn release(mut conn: AnyConnection) {
    conn.execute("COMMIT").await.unwrap();
    let _ = conn.close().await;
}

fn row(aggregate_type: &str, id: &str, sequence: i64) -> Row {
    Row {
        aggregate_type: aggregate_type.into(),
        aggregate_id: id.into(),
        sequence,
        event_type: "Tested".into(),
        event_version: "1.0".into(),
        payload: format!(r#"{{"id":"{id}"}}"#),
        metadata: "{}".into(),
    }
}

/// The rows of stream `(aggregate_type, id)` as a reader on another connection sees them, with
/// their log positions (PostgreSQL; `tx` 0 and the SQLite sequence otherwise).
async fn stored(db: &Db, aggregate_type: &str, id: &str) -> Vec<Cursor> {
    let sql = match db.dialect {
        Dialect::Postgres => {
            "SELECT tx_id::text::bigint, global_position FROM events \
             WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence"
        }
        Dialect::Sqlite => {
            "SELECT 0, global_seq FROM events \
             WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence"
        }
    };
    sqlx::query(sql)
        .bind(aggregate_type)
        .bind(id)
        .fetch_all(&db.pool)
        .await
        .unwrap()
        .iter()
        .map(|r| Cursor {
            tx: r.get(0),
            pos: r.get(1),
        })
        .collect()
}

/// Each job's second row: the one taken before the batch (job 7), one that two jobs of the
/// batch race for (11 and 12), a stream of its own otherwise.
fn second_row(i: usize) -> Row {
    match i {
        7 => row("Taken", "t", 1),
        11 | 12 => row("Dup", "d", 1),
        _ => row("B", &format!("b{i}"), 1),
    }
}

const JOBS: usize = 24;

/// 24 appends of two streams each committed in one batch: the one whose row was taken before
/// fails with a conflict and writes nothing; of the two that race for the same row, exactly
/// one commits; every other is durable, visible to a reader on another connection the moment
/// its caller has the answer, and answered with the position of its own last row.
async fn one_batch_fails_only_its_conflicts(dialect: Dialect) {
    let store = Fresh::new(dialect).await;
    let db = &store.db;
    assert!(matches!(
        db.append_command(vec![row("Taken", "t", 1)]).await,
        Appended::Done(_)
    ));
    let before = store.counts();

    let lock = store.hold_writes().await;
    // The opener: the batch that waits on the lock.
    let opener = {
        let db = db.clone();
        tokio::spawn(async move { db.append_command(vec![row("Opener", "o", 1)]).await })
    };
    store
        .wait("the opener's batch begun", |c| {
            c.started == before.started + 1
        })
        .await;
    let db_shared = Arc::new(db.clone());
    let jobs: Vec<_> = (0..JOBS)
        .map(|i| {
            let db = Arc::clone(&db_shared);
            tokio::spawn(async move {
                let rows = vec![row("A", &format!("a{i}"), 1), second_row(i)];
                let answer = db.append_command(rows).await;
                // What another connection sees as soon as the caller has its answer.
                let own = stored(&db, "A", &format!("a{i}")).await;
                (i, answer, own)
            })
        })
        .collect();
    store
        .wait("every append queued", |c| {
            c.submitted == before.submitted + 1 + JOBS as u64
        })
        .await;
    // Nothing can have committed: nobody has an answer.
    assert_eq!(store.counts().answered, before.answered);
    assert!(!opener.is_finished());
    assert!(jobs.iter().all(|j| !j.is_finished()));
    release(lock).await;

    assert!(matches!(opener.await.unwrap(), Appended::Done(_)));
    let mut dup_winners = 0;
    for job in jobs {
        let (i, answer, own) = job.await.unwrap();
        match (i, answer) {
            (7, Appended::Conflict) => assert!(own.is_empty(), "job 7 wrote {own:?}"),
            (7, other) => panic!("job 7 conflicts with the row written before, got {other:?}"),
            (11 | 12, Appended::Conflict) => assert!(own.is_empty(), "job {i} wrote {own:?}"),
            (_, Appended::Done(cursor)) => {
                if matches!(i, 11 | 12) {
                    dup_winners += 1;
                }
                let second = second_row(i);
                let other = stored(db, &second.aggregate_type, &second.aggregate_id).await;
                assert_eq!(own.len(), 1, "job {i}: visible once answered");
                assert_eq!(other.len(), 1, "job {i}: both streams or neither");
                match dialect {
                    Dialect::Postgres => {
                        // Its own last row's position, exactly.
                        let last = own[0].max(other[0]);
                        assert_eq!(cursor, Some(last), "job {i}");
                    }
                    Dialect::Sqlite => assert_eq!(cursor, None),
                }
            }
            (i, other) => panic!("job {i} should have committed, got {other:?}"),
        }
    }
    assert_eq!(dup_winners, 1, "exactly one of two racing appends wins");
    let after = store.counts();
    assert_eq!(
        after.batches,
        before.batches + 2,
        "the opener's batch, then every queued append in one"
    );
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    // Taken, Opener, and two rows for each of the 21 jobs that committed.
    assert_eq!(total, 2 + 2 * (JOBS as i64 - 3) + 2);
    assert_eq!(stored(db, "Taken", "t").await.len(), 1);
    assert_eq!(stored(db, "Dup", "d").await.len(), 1);
    store.finish().await;
}

/// 24 conflict-free appends queued behind one batch commit together: on PostgreSQL in one
/// transaction (one `tx_id` for all), each answered with its own position, distinct from the
/// others'.
async fn a_batch_is_one_transaction(dialect: Dialect) {
    let store = Fresh::new(dialect).await;
    let db = &store.db;
    let before = store.counts();
    let lock = store.hold_writes().await;
    let opener = {
        let db = db.clone();
        tokio::spawn(async move { db.append_command(vec![row("Opener", "o", 1)]).await })
    };
    store
        .wait("the opener's batch begun", |c| {
            c.started == before.started + 1
        })
        .await;
    let jobs: Vec<_> = (0..JOBS)
        .map(|i| {
            let db = db.clone();
            tokio::spawn(async move {
                db.append_command(vec![
                    row("A", &format!("a{i}"), 1),
                    row("B", &format!("b{i}"), 1),
                ])
                .await
            })
        })
        .collect();
    store
        .wait("every append queued", |c| {
            c.submitted == before.submitted + 1 + JOBS as u64
        })
        .await;
    release(lock).await;
    assert!(matches!(opener.await.unwrap(), Appended::Done(_)));
    let mut cursors = Vec::new();
    for (i, job) in jobs.into_iter().enumerate() {
        let Appended::Done(cursor) = job.await.unwrap() else {
            panic!("job {i} should have committed");
        };
        let a = stored(db, "A", &format!("a{i}")).await;
        let b = stored(db, "B", &format!("b{i}")).await;
        assert_eq!((a.len(), b.len()), (1, 1), "job {i}");
        if dialect == Dialect::Postgres {
            assert_eq!(cursor, Some(a[0].max(b[0])), "job {i}");
            cursors.push(cursor.unwrap());
        }
    }
    assert_eq!(store.counts().batches, before.batches + 2);
    if dialect == Dialect::Postgres {
        let txs: HashSet<i64> = cursors.iter().map(|c| c.tx).collect();
        assert_eq!(txs.len(), 1, "one transaction for the batch: {txs:?}");
        let positions: HashSet<i64> = cursors.iter().map(|c| c.pos).collect();
        assert_eq!(positions.len(), JOBS, "each caller its own position");
    }
    store.finish().await;
}

macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                super::$name(tessera_store::Dialect::Postgres).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$name(tessera_store::Dialect::Sqlite).await;
            }
        }
    )*};
}

both_stores!(
    one_batch_fails_only_its_conflicts,
    a_batch_is_one_transaction,
    the_process_writes_take_turns
);

/// A consumer that only moves its checkpoint: each batch is a write transaction on the pool,
/// as every consumer's is.
struct Checkpointed;

impl Projection for Checkpointed {
    fn name(&self) -> &'static str {
        "gate_probe_v1"
    }

    fn tables(&self) -> &'static [&'static str] {
        &[]
    }

    async fn apply(&self, _: &mut AnyConnection, _: Dialect, _: &StoredEvent) -> Result<(), Error> {
        Ok(())
    }
}

/// The writes of one process never race for SQLite's write lock: with the busy handler off
/// (a write that finds the lock taken fails at once with `database is locked`), commands
/// appending through the writer, a consumer applying batches back to back and rate-limit
/// hits on the pool all succeed, because each takes its turn at the process's write gate.
/// Nothing is lost or counted twice: every append is in the log, the consumer's checkpoint
/// reaches its end, the hits count exactly.
async fn the_process_writes_take_turns(dialect: Dialect) {
    const STREAMS: usize = 8;
    const EACH: usize = 30;
    const HITTERS: usize = 4;
    const HITS: usize = 20;
    let store = Fresh::with_busy_timeout(dialect, 0).await;
    let db = &store.db;
    let runner = Runner::new(db.clone(), Checkpointed).await.expect("runner");
    let done = Arc::new(AtomicBool::new(false));
    let consumer = {
        let (runner, done) = (Arc::clone(&runner), Arc::clone(&done));
        tokio::spawn(async move {
            let mut applied = 0;
            while !done.load(Ordering::SeqCst) {
                applied += runner.catch_up().await.expect("a consumer batch");
            }
            applied
        })
    };
    let appends: Vec<_> = (0..STREAMS)
        .map(|s| {
            let db = db.clone();
            tokio::spawn(async move {
                for i in 1..=EACH {
                    let rows = vec![row("Gate", &format!("g{s}"), i64::try_from(i).unwrap())];
                    match db.append_command(rows).await {
                        Appended::Done(_) => {}
                        other => panic!("append {s}/{i}: {other:?}"),
                    }
                }
            })
        })
        .collect();
    let now = Utc.with_ymd_and_hms(2026, 1, 1, 10, 0, 0).unwrap();
    let window = Window {
        length: TimeDelta::hours(1),
    };
    let hitters: Vec<_> = (0..HITTERS)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move {
                let mut seen = Vec::with_capacity(HITS);
                for _ in 0..HITS {
                    seen.push(hit(&db, "gate-probe", window, now).await.expect("a hit"));
                }
                seen
            })
        })
        .collect();
    for append in appends {
        append.await.unwrap();
    }
    let mut counts = Vec::new();
    for hitter in hitters {
        counts.extend(hitter.await.unwrap());
    }
    done.store(true, Ordering::SeqCst);
    let mut applied = consumer.await.unwrap();
    // PostgreSQL's tailer reads below the cluster's oldest open transaction, which another
    // database's may hold back for a moment: wait (patiently) for the rest.
    for _ in 0..6_000 {
        applied += runner.catch_up().await.expect("the last batches");
        if applied >= STREAMS * EACH {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    for s in 0..STREAMS {
        assert_eq!(
            stored(db, "Gate", &format!("g{s}")).await.len(),
            EACH,
            "stream {s}"
        );
    }
    assert_eq!(
        applied,
        STREAMS * EACH,
        "the consumer applied every event once"
    );
    counts.sort_unstable();
    let expected: Vec<i64> = (1..=i64::try_from(HITTERS * HITS).unwrap()).collect();
    assert_eq!(counts, expected, "each hit counted once, in turn");
    if dialect == Dialect::Sqlite {
        assert!(db.write_turns() > 0, "the writes went through the gate");
    } else {
        assert_eq!(db.write_turns(), 0, "PostgreSQL has no gate");
    }
    store.finish().await;
}

/// A lost connection (the backend killed mid-batch, as a restarting server does) fails that
/// batch's callers with the error and writes nothing of it; the next append reconnects and
/// commits. PostgreSQL only: an embedded SQLite has no connection to lose.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writer_survives_a_lost_connection() {
    let store = Fresh::new(Dialect::Postgres).await;
    let db = &store.db;
    assert!(matches!(
        db.append_command(vec![row("Warm", "w", 1)]).await,
        Appended::Done(_)
    ));
    let before = store.counts();
    let lock = store.hold_writes().await;
    let lost = {
        let db = db.clone();
        tokio::spawn(async move { db.append_command(vec![row("Lost", "l", 1)]).await })
    };
    store
        .wait("the batch begun", |c| c.started == before.started + 1)
        .await;
    let mut killed = 0;
    for _ in 0..6_000 {
        killed = sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid() \
               AND query LIKE 'INSERT INTO events%') AS t",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        if killed > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(killed, 1, "the writer's backend, blocked on the lock");
    assert!(
        matches!(lost.await.unwrap(), Appended::Failed(_)),
        "a batch whose connection died is not acknowledged"
    );
    release(lock).await;
    assert!(stored(db, "Lost", "l").await.is_empty());
    assert!(matches!(
        db.append_command(vec![row("After", "a", 1)]).await,
        Appended::Done(Some(_))
    ));
    assert_eq!(stored(db, "After", "a").await.len(), 1);
    store.finish().await;
}
