//! Tessera's read side: everything here is built only from the event log.
//!
//! [`log`] tails the log in an order that never skips an event committed late;
//! [`runner`] applies batches of events and the consumer's checkpoint in one transaction;
//! [`read_model`] holds the `users_v1` and `factors_v1` tables and their queries. Read models
//! can be dropped and rebuilt from the log at any time ([`runner::Runner::rebuild`]).
//! [`audit`] reads the log for auditors (filters, point-in-time streams, redaction) and
//! [`seal`] keeps a hash chain over it that shows any edited, inserted or deleted row.
#![forbid(unsafe_code)]
#![deny(clippy::all)]

pub mod alerts;
pub mod audit;
pub mod db;
pub mod log;
pub mod read_model;
pub mod runner;
pub mod seal;

pub use db::{Backend, Db};
pub use log::{Cursor, LogHead, StoredEvent};
pub use runner::{Projection, Runner};

/// Errors of the read side.
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
