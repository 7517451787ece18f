//! One pool over either store, through sqlx's `Any` driver. Statements are written once in the
//! dialect both stores share (`$n` parameters, `ON CONFLICT`, `RETURNING`); what differs is
//! asked of [`Dialect`], the one place that knows the two apart.

use std::{
    ops::{Deref, DerefMut},
    path::Path,
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use sqlx::{
    Any, AnyConnection, AnyPool, ConnectOptions, Connection, Executor, Transaction,
    any::{AnyConnectOptions, AnyPoolOptions, install_default_drivers},
    migrate::{MigrateError, Migrator},
};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::{
    append::{AppendError, NewEvent, append_returning},
    writer::{Appended, Row, Writer, WriterCounts},
};

/// The embedded migrations of each store (the two dialects need their own files, with the same
/// numbers).
static PG_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/postgres");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/sqlite");

/// Which store is behind the pool, and the SQL that differs between them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL (production, several nodes).
    Postgres,
    /// Embedded SQLite (the default, one node).
    Sqlite,
}

impl Dialect {
    /// The dialect of a `TESSERA_DATABASE_URL`.
    pub fn of_url(url: &str) -> Self {
        if url.starts_with("postgres") {
            Self::Postgres
        } else {
            Self::Sqlite
        }
    }

    /// The type a JSON column is stored as (`CAST($n AS …)` on insert).
    pub fn json_type(self) -> &'static str {
        match self {
            Self::Postgres => "json",
            Self::Sqlite => "text",
        }
    }

    /// `column` read back as text (JSON columns are `json` on PostgreSQL, text on SQLite).
    pub fn json_text(self, column: &str) -> String {
        match self {
            Self::Postgres => format!("{column}::text"),
            Self::Sqlite => column.to_string(),
        }
    }

    /// The `ORDER BY` list of the log in tailing order (see [`crate::log`]).
    pub fn log_order(self) -> &'static str {
        match self {
            Self::Postgres => "tx_id, global_position",
            Self::Sqlite => "global_seq",
        }
    }
}

/// A pool on either store: the one pool of a process, shared by the write side, the
/// consumers and the readers; and the store's one writer ([`crate::writer`]), which commits
/// the commands' appends in batches on a connection of its own.
///
/// On SQLite every write of the process takes its turn at the one write lock through a FIFO
/// gate ([`Db::begin_write`], [`Db::write_turn`]), the writer's batches included, instead of
/// racing for it in SQLite's busy handler (sleep and retry, first come not first served).
#[derive(Clone, Debug)]
pub struct Db {
    /// The pool.
    pub pool: AnyPool,
    /// Which store.
    pub dialect: Dialect,
    /// The group commit; `None` on an in-memory SQLite store, whose pool connections are the
    /// only way to its data (commands then append through the pool).
    writer: Option<Writer>,
    /// SQLite: the process's turn at the write lock; `None` on PostgreSQL, whose row locks
    /// need no queue.
    gate: Option<Gate>,
}

/// The FIFO queue for SQLite's write lock (tokio's mutex serves its waiters in order).
#[derive(Clone, Debug, Default)]
pub(crate) struct Gate {
    lock: Arc<Mutex<()>>,
    turns: Arc<AtomicU64>,
}

impl Gate {
    pub(crate) async fn turn(&self) -> WriteTurn {
        let asked = std::time::Instant::now();
        let guard = Arc::clone(&self.lock).lock_owned().await;
        self.turns.fetch_add(1, Ordering::Relaxed);
        let waited = asked.elapsed();
        if waited > SLOW_STATEMENT {
            // What a statement waiting in the busy handler used to show as a slow statement.
            tracing::warn!(
                waited_ms = u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
                "slow write turn: waited for the SQLite write lock"
            );
        }
        WriteTurn(Some(guard))
    }
}

/// A turn at SQLite's write lock: the other writes of the process wait until it is dropped.
/// Empty on PostgreSQL.
#[derive(Debug)]
#[must_use = "the turn ends when it is dropped"]
pub struct WriteTurn(#[allow(dead_code)] Option<OwnedMutexGuard<()>>);

/// A write transaction that holds its [`WriteTurn`] until it ends: on SQLite begun with
/// `BEGIN IMMEDIATE` (the write lock up front, never a failed upgrade), on PostgreSQL a plain
/// `BEGIN`. Dereferences to the connection, like [`sqlx::Transaction`].
#[derive(Debug)]
pub struct WriteTx {
    tx: Transaction<'static, Any>,
    _turn: WriteTurn,
}

impl WriteTx {
    /// Commits, then gives the turn to the next writer.
    ///
    /// # Errors
    /// The commit's error; nothing of the transaction is kept then.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }

    /// Rolls back, then gives the turn to the next writer.
    ///
    /// # Errors
    /// The rollback's error.
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

impl Deref for WriteTx {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        &self.tx
    }
}

impl DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }
}

/// How long a SQLite connection waits in its busy handler for a write lock another process
/// holds (the CLI on the same file; this process's own writes queue at the gate instead).
const SQLITE_BUSY_TIMEOUT_MS: u32 = 10_000;

/// What every connection runs once opened: PostgreSQL durable commits; SQLite WAL, durable
/// commits, a busy timeout and foreign keys.
fn session_setup(dialect: Dialect, busy_timeout_ms: u32) -> String {
    match dialect {
        Dialect::Sqlite => format!(
            "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = {busy_timeout_ms}; \
             PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;"
        ),
        Dialect::Postgres => "SET synchronous_commit = on".into(),
    }
}

/// Most connections per SQLite pool, whatever `TESSERA_DB_POOL_SIZE` says. SQLite lets one
/// writer in at a time; more connections would only wait for it (see `docs/architecture.md`
/// for the measurements behind the figure).
pub const SQLITE_MAX_CONNECTIONS: u32 = 8;

/// A statement that takes longer is logged as a warning (`slow statement`, with its text and
/// time): an authentication backend's statements take milliseconds, and one over this is a
/// stall worth seeing (the benchmark counts them).
pub const SLOW_STATEMENT: Duration = Duration::from_millis(100);

/// How long opening a connection may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl Db {
    /// Connects to `url` (`postgres://…` or `sqlite://…`). PostgreSQL sessions get
    /// `synchronous_commit = on`; SQLite connections get WAL, `synchronous = FULL` (acknowledged
    /// means durable) and a busy timeout, and a missing database file is created, readable by
    /// its owner only.
    ///
    /// # Errors
    /// The connection error.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, sqlx::Error> {
        Self::connect_with_busy_timeout(url, max_connections, SQLITE_BUSY_TIMEOUT_MS).await
    }

    /// [`Db::connect`] with SQLite's busy timeout set to `busy_timeout_ms` (0: a write that
    /// finds the lock taken fails at once with `database is locked`). For tests that prove the
    /// process's own writes never wait in the busy handler; PostgreSQL ignores it.
    ///
    /// # Errors
    /// The connection error.
    #[doc(hidden)]
    pub async fn connect_with_busy_timeout(
        url: &str,
        max_connections: u32,
        busy_timeout_ms: u32,
    ) -> Result<Self, sqlx::Error> {
        install_default_drivers();
        let dialect = Dialect::of_url(url);
        if dialect == Dialect::Sqlite {
            create_sqlite_file(url)?;
        } else {
            // One connection first, so an unreachable server is reported with its cause
            // (refused, no route, bad password) rather than as the pool's bare timeout.
            let probe = tokio::time::timeout(CONNECT_TIMEOUT, AnyConnection::connect(url))
                .await
                .map_err(|_| {
                    sqlx::Error::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
                    ))
                })??;
            let _ = probe.close().await;
        }
        let options = AnyConnectOptions::from_str(url)?
            .log_slow_statements(log::LevelFilter::Warn, SLOW_STATEMENT);
        let setup: Arc<str> = session_setup(dialect, busy_timeout_ms).into();
        let gate = (dialect == Dialect::Sqlite).then(Gate::default);
        let pool = AnyPoolOptions::new()
            .max_connections(match dialect {
                Dialect::Postgres => max_connections,
                Dialect::Sqlite => max_connections.min(SQLITE_MAX_CONNECTIONS),
            })
            .acquire_timeout(CONNECT_TIMEOUT)
            // No ping before every query (a round trip each on the hot path); a broken
            // connection fails its query instead, and is dropped.
            .test_before_acquire(false)
            .after_connect({
                let setup = Arc::clone(&setup);
                move |conn, _| {
                    let setup = Arc::clone(&setup);
                    Box::pin(async move {
                        conn.execute(&*setup).await?;
                        Ok(())
                    })
                }
            })
            .connect_with(options.clone())
            .await?;
        let writer = (dialect == Dialect::Postgres || sqlite_path(url).is_some())
            .then(|| Writer::spawn(options, dialect, setup, gate.clone()));
        Ok(Self {
            pool,
            dialect,
            writer,
            gate,
        })
    }

    /// Waits for this process's turn at SQLite's write lock (FIFO, shared with the writer's
    /// batches and every [`Db::begin_write`]); hold it across a single writing statement on
    /// the pool. Returns at once on PostgreSQL.
    pub async fn write_turn(&self) -> WriteTurn {
        match &self.gate {
            Some(gate) => gate.turn().await,
            None => WriteTurn(None),
        }
    }

    /// Begins a write transaction on a pool connection, in its turn ([`WriteTx`]). The turn
    /// is taken before the connection, so a writer waiting for its turn holds none.
    ///
    /// # Errors
    /// Database errors.
    pub async fn begin_write(&self) -> Result<WriteTx, sqlx::Error> {
        let turn = self.write_turn().await;
        let tx = match self.dialect {
            Dialect::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Dialect::Postgres => self.pool.begin().await?,
        };
        Ok(WriteTx { tx, _turn: turn })
    }

    /// How many write turns this process has taken (SQLite; 0 on PostgreSQL): for tests and
    /// diagnostics.
    pub fn write_turns(&self) -> u64 {
        self.gate
            .as_ref()
            .map_or(0, |g| g.turns.load(Ordering::Relaxed))
    }

    /// What the store's writer has done so far (`None`: no writer, an in-memory store).
    pub fn writer_counts(&self) -> Option<WriterCounts> {
        self.writer.as_ref().map(Writer::counts)
    }

    /// Appends the rows of one command (of any streams), all or none, through the store's
    /// writer: committed in the next batch, answered once that batch is durable.
    pub async fn append_command(&self, rows: Vec<Row>) -> Appended {
        if let Some(writer) = &self.writer {
            return writer.append(rows).await;
        }
        let events: Vec<NewEvent<'_>> = rows
            .iter()
            .map(|r| NewEvent {
                aggregate_type: &r.aggregate_type,
                aggregate_id: &r.aggregate_id,
                sequence: r.sequence,
                event_type: &r.event_type,
                event_version: &r.event_version,
                payload: r.payload.clone(),
                metadata: r.metadata.clone(),
            })
            .collect();
        let _turn = self.write_turn().await;
        match append_returning(&self.pool, self.dialect, &events).await {
            Ok(cursor) => Appended::Done(cursor),
            Err(AppendError::Conflict) => Appended::Conflict,
            Err(AppendError::Db(e)) => Appended::Failed(std::sync::Arc::new(e)),
        }
    }

    /// Applies pending migrations (PostgreSQL takes an advisory lock, so nodes may race).
    ///
    /// # Errors
    /// The migration error.
    pub async fn migrate(&self) -> Result<(), MigrateError> {
        match self.dialect {
            Dialect::Postgres => PG_MIGRATIONS.run(&self.pool).await,
            Dialect::Sqlite => SQLITE_MIGRATIONS.run(&self.pool).await,
        }
    }

    /// Whether the store answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }
}

/// The file of a `sqlite://PATH[?…]` URL, if it names one (not `:memory:`).
pub fn sqlite_path(url: &str) -> Option<&Path> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && !path.starts_with(":memory:")).then(|| Path::new(path))
}

/// Creates the database file of `url` if it is missing, mode 0600 on Unix: the log holds
/// metadata (addresses, user agents) and sealed secrets.
fn create_sqlite_file(url: &str) -> Result<(), sqlx::Error> {
    let Some(path) = sqlite_path(url) else {
        return Ok(());
    };
    if path.exists() {
        return Ok(());
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(sqlx::Error::Configuration(
            format!("cannot create the database file {}: {e}", path.display()).into(),
        )),
    }
}
