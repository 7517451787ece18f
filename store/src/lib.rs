//! Tessera's event store: the only code that writes the `events` table.
//!
//! One pool per process over PostgreSQL or SQLite ([`Db`]), with every SQL difference between
//! the two in one place ([`Dialect`]). On top of it: [`Store`] loads an aggregate (newest
//! snapshot and the events after it, in one query), lets it decide, and appends what it decided,
//! retrying lost optimistic-concurrency races; [`execute_with`] commits two streams in one
//! statement; [`append`] is the one INSERT into the log, also used by consumers that write
//! events inside their checkpoint transaction (the alert reactor). [`log`] tails the log in an
//! order that never skips an event committed late, and [`Runner`] applies it to a
//! [`Projection`] with the checkpoint in the same transaction. `docs/architecture.md` explains
//! why each piece is built the way it is.
#![forbid(unsafe_code)]
#![deny(clippy::all)]

pub mod append;
pub mod db;
pub mod event_store;
pub mod limits;
pub mod log;
pub mod runner;
pub mod worker;
pub mod writer;

pub use append::{AppendError, Conflict, NewEvent, append};
pub use db::{Db, Dialect};
pub use event_store::{Committed, Joint, Store, Then, execute_with, unexpected};
pub use log::{Cursor, LogHead, StoredEvent};
pub use runner::{Projection, Runner};

/// Errors of the store's readers and consumers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// A stored event could not be decoded.
    #[error("event {aggregate_type}/{aggregate_id}#{sequence} cannot be decoded: {source}")]
    Decode {
        /// Aggregate type of the event.
        aggregate_type: String,
        /// Aggregate id of the event.
        aggregate_id: String,
        /// Sequence of the event.
        sequence: i64,
        /// The decoding error.
        source: serde_json::Error,
    },
    /// The log does not match its hash chain, or the chain is malformed.
    #[error("log seal: {0}")]
    Seal(String),
}

/// Fixed-width RFC 3339 UTC text, which sorts as text in both stores.
pub fn ts(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Parses what [`ts`] wrote.
pub fn parse_ts(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}
