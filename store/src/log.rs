//! Reading the event log in an order safe to checkpoint.
//!
//! PostgreSQL draws `global_position` at insert time, so positions are not committed in
//! order: a transaction can commit position 12 while position 10 is still open. A reader that
//! checkpoints "last position seen" would then skip 10 for ever. Filtering
//! `tx_id < xmin` alone is not enough either, because one transaction's positions can
//! interleave with another's (9 and 12 in one, 10 in the other). The tailer therefore orders
//! by `(tx_id, global_position)` and reads only `tx_id < pg_snapshot_xmin(..)`: every
//! transaction below xmin has ended, and every transaction that commits later has a larger
//! id, so nothing can ever appear behind the cursor. SQLite serialises writers and assigns
//! `global_seq` inside the writing transaction, so its order is commit order already.

use serde_json::Value;
use sqlx::{AnyConnection, Row, any::AnyRow};
use tessera_domain::versioning::{self, Versioned};

use std::{sync::Arc, time::Duration};

use tokio::{
    sync::{Notify, watch},
    task::JoinHandle,
};

use crate::{Db, Dialect, Error};

/// A place in the log, in tailing order. On SQLite `tx` is always 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cursor {
    /// Writing transaction id (PostgreSQL `xid8`).
    pub tx: i64,
    /// Global position.
    pub pos: i64,
}

impl Cursor {
    /// The opaque string form used in APIs: `tx.pos` (sorts as the cursor does only when
    /// parsed, not as text).
    pub fn encode(self) -> String {
        format!("{}.{}", self.tx, self.pos)
    }

    /// Parses [`Cursor::encode`] output.
    pub fn decode(s: &str) -> Option<Self> {
        let (tx, pos) = s.split_once('.')?;
        Some(Self {
            tx: tx.parse().ok()?,
            pos: pos.parse().ok()?,
        })
    }
}

/// One event as stored, with its place in the log.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEvent {
    /// Where it is in tailing order.
    pub cursor: Cursor,
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
    /// The payload (externally tagged by variant).
    pub payload: Value,
    /// Actor, request id, client IP, user agent.
    pub metadata: Value,
    /// When the store recorded it (RFC 3339).
    pub recorded_at: String,
}

impl StoredEvent {
    /// Decodes the payload as an aggregate's event enum, upcasting an older version first
    /// (the same upcaster the write side loads through).
    ///
    /// # Errors
    /// [`Error::Decode`] if the payload does not match.
    pub fn decode<E: Versioned>(&self) -> Result<E, Error> {
        versioning::decode(&self.event_type, &self.event_version, self.payload.clone()).map_err(
            |source| Error::Decode {
                aggregate_type: self.aggregate_type.clone(),
                aggregate_id: self.aggregate_id.clone(),
                sequence: self.sequence,
                source,
            },
        )
    }
}

pub const PG_COLUMNS: &str = "tx_id::text::bigint AS tx, global_position AS pos, aggregate_type, \
    aggregate_id, sequence, event_type, event_version, payload::text AS payload, \
    metadata::text AS metadata, \
    to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS recorded_at";

pub const LITE_COLUMNS: &str = "0 AS tx, global_seq AS pos, aggregate_type, aggregate_id, sequence, \
    event_type, event_version, payload, metadata, recorded_at";

/// Which events a page of the log may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visibility {
    /// Only those no event committed later can precede: what a checkpointing reader may see.
    Final,
    /// Every row written so far, in tailing order (the log's verifier wants even the rows of
    /// transactions still open elsewhere).
    Written,
}

/// Reads up to `limit` events after `after`, in tailing order, that can never be followed by
/// an earlier one.
///
/// # Errors
/// Database or decoding errors.
pub async fn read_after(
    conn: &mut AnyConnection,
    dialect: Dialect,
    after: Cursor,
    limit: i64,
) -> Result<Vec<StoredEvent>, Error> {
    read_page(conn, dialect, after, limit, Visibility::Final).await
}

/// The page read of [`read_page`] on PostgreSQL (`$1`, `$2`: the cursor; `$3`: the limit). A
/// consumer's tick starts with it, so it must be an index probe as [`PG_PEEK`] is.
pub fn pg_page(visibility: Visibility) -> String {
    let below_xmin = match visibility {
        Visibility::Final => "AND tx_id < pg_snapshot_xmin(pg_current_snapshot())",
        Visibility::Written => "",
    };
    format!(
        "SELECT {PG_COLUMNS} FROM events \
         WHERE (tx_id, global_position) > ($1::bigint::text::xid8, $2) {below_xmin} \
         ORDER BY tx_id, global_position LIMIT $3"
    )
}

/// Reads up to `limit` events after `after`, in tailing order, of the given visibility.
///
/// # Errors
/// Database or decoding errors.
pub async fn read_page(
    conn: &mut AnyConnection,
    dialect: Dialect,
    after: Cursor,
    limit: i64,
    visibility: Visibility,
) -> Result<Vec<StoredEvent>, Error> {
    let rows = match dialect {
        Dialect::Postgres => {
            let sql = pg_page(visibility);
            sqlx::query(&sql)
                .bind(after.tx)
                .bind(after.pos)
                .bind(limit)
                .fetch_all(&mut *conn)
                .await?
        }
        // SQLite serialises writers: what is written is final.
        Dialect::Sqlite => {
            let sql = format!(
                "SELECT {LITE_COLUMNS} FROM events WHERE global_seq > $1 \
                 ORDER BY global_seq LIMIT $2"
            );
            sqlx::query(&sql)
                .bind(after.pos)
                .bind(limit)
                .fetch_all(&mut *conn)
                .await?
        }
    };
    rows.iter().map(from_row).collect()
}

/// The peek of [`has_after`] on PostgreSQL. The ORDER BY is what makes it an index probe:
/// without it the planner guesses that a sequential scan finds a row at once, and it reads the
/// whole log whenever nothing is pending (12 ms a peek at 30k events, most of the database's
/// time under load).
pub const PG_PEEK: &str = "SELECT 1 FROM events \
     WHERE (tx_id, global_position) > ($1::bigint::text::xid8, $2) \
       AND tx_id < pg_snapshot_xmin(pg_current_snapshot()) \
     ORDER BY tx_id, global_position LIMIT 1";

/// The peek of [`has_after`] on SQLite.
pub const LITE_PEEK: &str =
    "SELECT 1 FROM events WHERE global_seq > $1 ORDER BY global_seq LIMIT 1";

/// Whether anything is readable after `after` (a cheap, read-only peek before opening a
/// write transaction).
///
/// # Errors
/// Database errors.
pub async fn has_after(
    conn: &mut AnyConnection,
    dialect: Dialect,
    after: Cursor,
) -> Result<bool, Error> {
    let row = match dialect {
        Dialect::Postgres => {
            sqlx::query(PG_PEEK)
                .bind(after.tx)
                .bind(after.pos)
                .fetch_optional(&mut *conn)
                .await?
        }
        Dialect::Sqlite => {
            sqlx::query(LITE_PEEK)
                .bind(after.pos)
                .fetch_optional(&mut *conn)
                .await?
        }
    };
    Ok(row.is_some())
}

/// The last event a tailing reader can see now: every event at or before it is committed and
/// nothing can ever appear before it. [`Cursor::default`] for an empty log.
///
/// # Errors
/// Database errors.
pub async fn head(conn: &mut AnyConnection, dialect: Dialect) -> Result<Cursor, Error> {
    let sql = match dialect {
        Dialect::Postgres => {
            "SELECT tx_id::text::bigint AS tx, global_position AS pos FROM events \
             WHERE tx_id < pg_snapshot_xmin(pg_current_snapshot()) \
             ORDER BY tx_id DESC, global_position DESC LIMIT 1"
        }
        Dialect::Sqlite => {
            "SELECT 0 AS tx, global_seq AS pos FROM events WHERE global_seq IS NOT NULL \
             ORDER BY global_seq DESC LIMIT 1"
        }
    };
    Ok(match sqlx::query(sql).fetch_optional(&mut *conn).await? {
        Some(r) => Cursor {
            tx: r.try_get("tx")?,
            pos: r.try_get("pos")?,
        },
        None => Cursor::default(),
    })
}

/// The log's [`head`] as a watch: tailing readers (subscriptions) wait on it instead of each
/// polling the database. It polls, so it sees events written by any process on the database,
/// and a local commit can [`LogHead::nudge`] it for promptness.
pub struct LogHead {
    db: Db,
    head: watch::Sender<Cursor>,
    wake: Notify,
}

impl LogHead {
    /// A watch over `db`'s log, not yet polling.
    pub fn new(db: Db) -> Arc<Self> {
        Arc::new(Self {
            db,
            head: watch::channel(Cursor::default()).0,
            wake: Notify::new(),
        })
    }

    /// Changes whenever the head moves.
    pub fn subscribe(&self) -> watch::Receiver<Cursor> {
        self.head.subscribe()
    }

    /// Polls now instead of at the next tick.
    pub fn nudge(&self) {
        self.wake.notify_one();
    }

    /// Reads the head and publishes it if it moved.
    ///
    /// # Errors
    /// Database errors.
    pub async fn refresh(&self) -> Result<Cursor, Error> {
        let mut conn = self.db.pool.acquire().await?;
        let now = head(&mut conn, self.db.dialect).await?;
        self.head.send_if_modified(|seen| {
            let moved = now > *seen;
            if moved {
                *seen = now;
            }
            moved
        });
        Ok(now)
    }

    /// Polls every `poll` (and when nudged, at most once every `pace`: under load one read of
    /// the head serves many commits) until `shutdown` turns true.
    pub fn spawn(
        self: &Arc<Self>,
        poll: Duration,
        pace: Duration,
        shutdown: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        crate::worker::spawn_paced(
            Arc::clone(self),
            "log head",
            poll,
            crate::worker::Pace {
                every: pace,
                hurry: None,
            },
            shutdown,
            |h| &h.wake,
            |h| async move { h.refresh().await.map(|_| ()) },
        )
    }
}

/// The cursor of one committed event, for read-your-writes waits.
///
/// # Errors
/// Database errors.
pub async fn cursor_of(
    conn: &mut AnyConnection,
    dialect: Dialect,
    aggregate_type: &str,
    aggregate_id: &str,
    sequence: i64,
) -> Result<Option<Cursor>, Error> {
    let sql = match dialect {
        Dialect::Postgres => {
            "SELECT tx_id::text::bigint AS tx, global_position AS pos FROM events \
             WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3"
        }
        Dialect::Sqlite => {
            "SELECT 0 AS tx, global_seq AS pos FROM events \
             WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3"
        }
    };
    let row = sqlx::query(sql)
        .bind(aggregate_type)
        .bind(aggregate_id)
        .bind(sequence)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(match row {
        Some(r) => Some(Cursor {
            tx: r.try_get("tx")?,
            pos: r.try_get("pos")?,
        }),
        None => None,
    })
}

/// Decodes a row selected with the columns of [`PG_COLUMNS`] or [`LITE_COLUMNS`].
///
/// # Errors
/// Missing columns or undecodable JSON.
pub fn from_row(row: &AnyRow) -> Result<StoredEvent, Error> {
    let payload: String = row.try_get("payload")?;
    let metadata: String = row.try_get("metadata")?;
    let aggregate_type: String = row.try_get("aggregate_type")?;
    let aggregate_id: String = row.try_get("aggregate_id")?;
    let sequence: i64 = row.try_get("sequence")?;
    let parse = |s: &str| {
        serde_json::from_str(s).map_err(|source| Error::Decode {
            aggregate_type: aggregate_type.clone(),
            aggregate_id: aggregate_id.clone(),
            sequence,
            source,
        })
    };
    Ok(StoredEvent {
        cursor: Cursor {
            tx: row.try_get("tx")?,
            pos: row.try_get("pos")?,
        },
        payload: parse(&payload)?,
        metadata: parse(&metadata)?,
        aggregate_type: aggregate_type.clone(),
        aggregate_id: aggregate_id.clone(),
        sequence,
        event_type: row.try_get("event_type")?,
        event_version: row.try_get("event_version")?,
        recorded_at: row.try_get("recorded_at")?,
    })
}
