//! Tessera's read side: everything here is built only from the event log.
//!
//! Each consumer is a `tessera_store::Projection`, driven by the store's runner (a batch of
//! events and the consumer's checkpoint in one transaction, read in an order that never skips
//! an event committed late). [`read_model`] holds the `users_v1` and `factors_v1` tables and their queries. Read models
//! can be dropped and rebuilt from the log at any time (`tessera_store::Runner::rebuild`).
//! [`audit`] reads the log for auditors (filters, point-in-time streams, redaction) and
//! [`seal`] keeps a hash chain over it that shows any edited, inserted or deleted row.
#![forbid(unsafe_code)]
#![deny(clippy::all)]

pub mod activity;
pub mod alerts;
pub mod audit;
pub mod read_model;
pub mod seal;

// The log, its tailer and the runner live in the store crate; the consumers here use them
// under the names they had when they lived here.
pub(crate) use tessera_store::{Db, Dialect, Error, StoredEvent, log, parse_ts, runner, ts};
