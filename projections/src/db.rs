//! One pool over either store, through sqlx's `Any` driver. Queries are written once in the
//! dialect both stores share (`$n` parameters, `ON CONFLICT`, `RETURNING`); the few that differ
//! branch on [`Backend`].

use std::time::Duration;

use sqlx::{
    AnyPool, Executor,
    any::{AnyPoolOptions, install_default_drivers},
};

/// Which store is behind the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL (production, several nodes).
    Postgres,
    /// Embedded SQLite (the default, one node).
    Sqlite,
}

/// A pool on the read side of either store.
#[derive(Clone, Debug)]
pub struct Db {
    /// The pool.
    pub pool: AnyPool,
    /// Which store.
    pub backend: Backend,
}

/// Most connections per SQLite pool, whatever `TESSERA_DB_POOL_SIZE` says. SQLite lets one
/// writer in at a time; more connections only wait in its busy handler, whose sleeps grow to
/// 100 ms. Measured with 32 clients (tessera-bench, 10k users): 24 connections gave 594
/// wrong codes/s at p99 743 ms and RSS 173 MiB; 4 give 438/s at p99 191 ms and 65 MiB (8 were
/// worse than 4 on all three).
pub const SQLITE_MAX_CONNECTIONS: u32 = 4;

impl Db {
    /// Connects to `url` (`postgres://…` or `sqlite://…`). SQLite connections get WAL,
    /// `synchronous=FULL` (acknowledged means durable) and a busy timeout.
    ///
    /// # Errors
    /// The connection error.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, sqlx::Error> {
        install_default_drivers();
        let backend = if url.starts_with("postgres") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        };
        let pool = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Postgres => max_connections,
                Backend::Sqlite => max_connections.min(SQLITE_MAX_CONNECTIONS),
            })
            .acquire_timeout(Duration::from_secs(10))
            // No ping before every query (a round trip each); a broken connection fails its
            // query instead, and is dropped.
            .test_before_acquire(false)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    let setup = match backend {
                        Backend::Sqlite => {
                            "PRAGMA busy_timeout = 10000; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;"
                        }
                        Backend::Postgres => "SET synchronous_commit = on",
                    };
                    conn.execute(setup).await?;
                    Ok(())
                })
            })
            .connect(url)
            .await?;
        Ok(Self { pool, backend })
    }
}
