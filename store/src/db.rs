//! One pool over either store, through sqlx's `Any` driver. Statements are written once in the
//! dialect both stores share (`$n` parameters, `ON CONFLICT`, `RETURNING`); what differs is
//! asked of [`Dialect`], the one place that knows the two apart.

use std::{path::Path, str::FromStr, time::Duration};

use sqlx::{
    AnyConnection, AnyPool, ConnectOptions, Connection, Executor,
    any::{AnyConnectOptions, AnyPoolOptions, install_default_drivers},
    migrate::{MigrateError, Migrator},
};

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
#[derive(Clone, Debug)]
pub struct Db {
    /// The pool.
    pub pool: AnyPool,
    /// Which store.
    pub dialect: Dialect,
    /// The group commit; `None` on an in-memory SQLite store, whose pool connections are the
    /// only way to its data (commands then append through the pool).
    writer: Option<Writer>,
}

/// What every connection runs once opened: PostgreSQL durable commits; SQLite WAL, durable
/// commits, a busy timeout and foreign keys.
fn session_setup(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => {
            "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 10000; \
             PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;"
        }
        Dialect::Postgres => "SET synchronous_commit = on",
    }
}

/// Most connections per SQLite pool, whatever `TESSERA_DB_POOL_SIZE` says. SQLite lets one
/// writer in at a time; more connections only wait in its busy handler, whose sleeps grow to
/// 100 ms (see `docs/architecture.md` for the measurements behind the figure).
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
        let pool = AnyPoolOptions::new()
            .max_connections(match dialect {
                Dialect::Postgres => max_connections,
                Dialect::Sqlite => max_connections.min(SQLITE_MAX_CONNECTIONS),
            })
            .acquire_timeout(CONNECT_TIMEOUT)
            // No ping before every query (a round trip each on the hot path); a broken
            // connection fails its query instead, and is dropped.
            .test_before_acquire(false)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    conn.execute(session_setup(dialect)).await?;
                    Ok(())
                })
            })
            .connect_with(options.clone())
            .await?;
        let writer = (dialect == Dialect::Postgres || sqlite_path(url).is_some())
            .then(|| Writer::spawn(options, dialect, session_setup(dialect)));
        Ok(Self {
            pool,
            dialect,
            writer,
        })
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
