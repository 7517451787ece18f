//! The log's hash chain: evidence that the event table was not edited.
//!
//! A checkpointed consumer, the [`Sealer`], walks the log in tailing order and records for the
//! n-th event `hash_n = SHA-256(hash_{n-1} || canonical(event_n))` (`hash_0` is 32 zero
//! bytes) in `log_seal`. Sealing after the fact, rather than chaining rows at write time, keeps
//! writers independent: nothing serialises commands on one chain head.
//!
//! `canonical(event)` is the canonical JSON (keys sorted, no white space) of the event's place
//! and identity, with SHA-256 digests of its canonical payload and metadata:
//! `{"aggregateId","aggregateType","eventType","eventVersion","metadataSha256","payloadSha256",
//! "position","recordedAt","sequence"}`. Digests rather than the payload itself let an export
//! carry redacted payloads and still be checked link by link by anyone holding it.
//!
//! [`verify`] walks the log and the seal side by side and names every edited, inserted or
//! deleted row. The chain proves the log matches the seal; a party that also keeps the head
//! hash (or the exported lines) elsewhere can tell a rewritten seal too.

use sha2::{Digest, Sha256};
use sqlx::{AnyConnection, Row};

use crate::{
    Db, Dialect, Error,
    log::{self, Cursor, StoredEvent},
    runner::Projection,
    ts,
};

/// The hash before the first event.
pub const GENESIS: [u8; 32] = [0; 32];

/// Writes `value` as canonical JSON: object keys sorted by their UTF-8 bytes, no white space,
/// strings escaped as serde_json does. Independent of serde_json's map ordering features.
pub fn canonical_json(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*key).clone()).to_string());
                out.push(':');
                canonical_json(&map[key.as_str()], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// SHA-256 of the canonical JSON of `value`, hex.
pub fn digest_of(value: &serde_json::Value) -> String {
    let mut text = String::new();
    canonical_json(value, &mut text);
    hex(&Sha256::digest(text.as_bytes()))
}

/// What is hashed for one event (see the module docs).
pub fn canonical_event(event: &StoredEvent) -> String {
    canonical_parts(
        &event.cursor.encode(),
        &event.aggregate_type,
        &event.aggregate_id,
        event.sequence,
        &event.event_type,
        &event.event_version,
        &event.recorded_at,
        &digest_of(&event.payload),
        &digest_of(&event.metadata),
    )
}

/// [`canonical_event`] from its parts, as an exported line carries them.
#[allow(clippy::too_many_arguments)]
pub fn canonical_parts(
    position: &str,
    aggregate_type: &str,
    aggregate_id: &str,
    sequence: i64,
    event_type: &str,
    event_version: &str,
    recorded_at: &str,
    payload_sha256: &str,
    metadata_sha256: &str,
) -> String {
    let object = serde_json::json!({
        "position": position,
        "aggregateType": aggregate_type,
        "aggregateId": aggregate_id,
        "sequence": sequence,
        "eventType": event_type,
        "eventVersion": event_version,
        "recordedAt": recorded_at,
        "payloadSha256": payload_sha256,
        "metadataSha256": metadata_sha256,
    });
    let mut out = String::new();
    canonical_json(&object, &mut out);
    out
}

/// `SHA-256(prev || canonical)`.
pub fn link(prev: &[u8; 32], canonical: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(canonical.as_bytes());
    h.finalize().into()
}

/// One row of `log_seal`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealRow {
    /// 1, 2, 3, … in tailing order.
    pub n: i64,
    /// The sealed event's place in the log.
    pub cursor: Cursor,
    /// `hash_n`, hex.
    pub hash: String,
}

async fn last_seal(conn: &mut AnyConnection) -> Result<Option<SealRow>, Error> {
    let row = sqlx::query("SELECT n, tx_id, position, hash FROM log_seal ORDER BY n DESC LIMIT 1")
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|r| seal_row(&r)).transpose()
}

fn seal_row(r: &sqlx::any::AnyRow) -> Result<SealRow, Error> {
    Ok(SealRow {
        n: r.try_get("n")?,
        cursor: Cursor {
            tx: r.try_get("tx_id")?,
            pos: r.try_get("position")?,
        },
        hash: r.try_get("hash")?,
    })
}

/// The consumer that extends the chain. Never rebuilt: the seal is evidence, and re-sealing
/// would bless whatever the table holds now.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sealer;

/// Rows per multi-row INSERT (5 parameters each).
const INSERT_CHUNK: usize = 200;

impl Projection for Sealer {
    fn name(&self) -> &'static str {
        "log_seal_v1"
    }

    fn tables(&self) -> &'static [&'static str] {
        &[]
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        dialect: Dialect,
        event: &StoredEvent,
    ) -> Result<(), Error> {
        self.apply_batch(conn, dialect, std::slice::from_ref(event))
            .await
    }

    async fn apply_batch(
        &self,
        conn: &mut AnyConnection,
        _backend: Dialect,
        events: &[StoredEvent],
    ) -> Result<(), Error> {
        let head = last_seal(conn).await?;
        let (mut n, mut prev) = match &head {
            Some(row) => (
                row.n,
                unhex(&row.hash)
                    .ok_or_else(|| Error::Seal(format!("seal row {} is not a hash", row.n)))?,
            ),
            None => (0, GENESIS),
        };
        let sealed_at = ts(chrono::Utc::now());
        for chunk in events.chunks(INSERT_CHUNK) {
            let mut sql =
                String::from("INSERT INTO log_seal (n, tx_id, position, hash, sealed_at) VALUES ");
            let mut rows = Vec::with_capacity(chunk.len());
            for (i, event) in chunk.iter().enumerate() {
                n += 1;
                prev = link(&prev, &canonical_event(event));
                let b = i * 5;
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!(
                    "(${}, ${}, ${}, ${}, ${})",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5
                ));
                rows.push((n, event.cursor, hex(&prev)));
            }
            let mut query = sqlx::query(&sql);
            for (n, cursor, hash) in rows {
                query = query
                    .bind(n)
                    .bind(cursor.tx)
                    .bind(cursor.pos)
                    .bind(hash)
                    .bind(sealed_at.clone());
            }
            query.execute(&mut *conn).await?;
        }
        Ok(())
    }
}

/// A discrepancy between the log and its seal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// The event at a sealed position no longer hashes to its seal: edited.
    Edited {
        /// Seal row.
        n: i64,
        /// Position.
        position: String,
    },
    /// A sealed position has no event any more: deleted.
    Missing {
        /// Seal row.
        n: i64,
        /// Position.
        position: String,
    },
    /// An event sits inside the sealed range without a seal: inserted.
    Inserted {
        /// Position (`?` when the row has none).
        position: String,
    },
    /// The seal table itself is inconsistent (gap in `n`, positions out of order, bad hash).
    BrokenSeal {
        /// Seal row.
        n: i64,
        /// What is wrong.
        detail: String,
    },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Edited { n, position } => {
                write!(
                    f,
                    "EDITED   event at position {position} does not match seal #{n}"
                )
            }
            Self::Missing { n, position } => {
                write!(
                    f,
                    "DELETED  event at position {position} (seal #{n}) is gone"
                )
            }
            Self::Inserted { position } => write!(
                f,
                "INSERTED event at position {position} lies inside the sealed range but was never sealed"
            ),
            Self::BrokenSeal { n, detail } => write!(f, "SEAL     row #{n}: {detail}"),
        }
    }
}

/// What [`verify`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Seal rows checked.
    pub sealed: i64,
    /// The last seal row.
    pub head: Option<SealRow>,
    /// Events after the sealed range (written since the sealer last ran; not a problem).
    pub unsealed: i64,
    /// Everything wrong, in log order.
    pub problems: Vec<Problem>,
}

impl Report {
    /// Whether the log matches its seal.
    pub fn intact(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Page size of the verifying and exporting walks.
const PAGE: i64 = 2_000;

/// Every event in tailing order after `after`, whether or not a tailing reader could see it
/// yet; rows an attacker left without a position are counted by [`verify`] separately.
async fn log_page(
    conn: &mut AnyConnection,
    dialect: Dialect,
    after: Cursor,
    limit: i64,
) -> Result<Vec<StoredEvent>, Error> {
    log::read_page(conn, dialect, after, limit, log::Visibility::Written).await
}

async fn seal_page(
    conn: &mut AnyConnection,
    after_n: i64,
    limit: i64,
) -> Result<Vec<SealRow>, Error> {
    let rows = sqlx::query(
        "SELECT n, tx_id, position, hash FROM log_seal WHERE n > $1 ORDER BY n LIMIT $2",
    )
    .bind(after_n)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(seal_row).collect()
}

/// The lowest cursor: below every position a row can have, even one an attacker chose.
const BOTTOM: Cursor = Cursor {
    tx: 0,
    pos: i64::MIN,
};

/// Walks the log and the seal side by side.
struct Walk {
    log: Vec<StoredEvent>,
    log_at: usize,
    log_after: Cursor,
    log_done: bool,
}

impl Walk {
    fn new() -> Self {
        Self {
            log: Vec::new(),
            log_at: 0,
            log_after: BOTTOM,
            log_done: false,
        }
    }

    /// The next log event without consuming it.
    async fn peek(
        &mut self,
        conn: &mut AnyConnection,
        dialect: Dialect,
    ) -> Result<Option<&StoredEvent>, Error> {
        if self.log_at >= self.log.len() && !self.log_done {
            self.log = log_page(conn, dialect, self.log_after, PAGE).await?;
            self.log_at = 0;
            match self.log.last() {
                Some(last) => self.log_after = last.cursor,
                None => self.log_done = true,
            }
        }
        Ok(self.log.get(self.log_at))
    }

    fn next(&mut self) -> Option<StoredEvent> {
        let event = self.log.get(self.log_at).cloned();
        self.log_at += 1;
        event
    }
}

/// Checks the whole log against its seal (read-only).
///
/// # Errors
/// Database or decoding errors (a payload that is not JSON any more is reported as an error,
/// which is itself a sign of tampering).
pub async fn verify(db: &Db) -> Result<Report, Error> {
    let mut conn = db.pool.acquire().await?;
    let dialect = db.dialect;
    let mut report = Report::default();
    if dialect == Dialect::Sqlite {
        let orphans: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE global_seq IS NULL")
                .fetch_one(&mut *conn)
                .await?;
        for _ in 0..orphans {
            report.problems.push(Problem::Inserted {
                position: "?".into(),
            });
        }
    }
    let mut walk = Walk::new();
    let mut prev = GENESIS;
    let mut last: Option<SealRow> = None;
    loop {
        let seals = seal_page(&mut conn, last.as_ref().map_or(0, |r| r.n), PAGE).await?;
        if seals.is_empty() {
            break;
        }
        for seal in seals {
            let expected_n = last.as_ref().map_or(1, |r| r.n + 1);
            if seal.n != expected_n {
                report.problems.push(Problem::BrokenSeal {
                    n: seal.n,
                    detail: format!("expected row #{expected_n}"),
                });
            }
            if let Some(before) = &last
                && seal.cursor <= before.cursor
            {
                report.problems.push(Problem::BrokenSeal {
                    n: seal.n,
                    detail: "position out of order".into(),
                });
            }
            // Events before this seal's position were never sealed: inserted.
            while let Some(event) = walk.peek(&mut conn, dialect).await?
                && event.cursor < seal.cursor
            {
                report.problems.push(Problem::Inserted {
                    position: event.cursor.encode(),
                });
                walk.next();
            }
            let position = seal.cursor.encode();
            match walk.peek(&mut conn, dialect).await? {
                Some(event) if event.cursor == seal.cursor => {
                    let computed = hex(&link(&prev, &canonical_event(event)));
                    if computed != seal.hash {
                        report.problems.push(Problem::Edited {
                            n: seal.n,
                            position,
                        });
                    }
                    walk.next();
                }
                _ => report.problems.push(Problem::Missing {
                    n: seal.n,
                    position,
                }),
            }
            // Continue from the recorded hash, so one edit is reported once, not for every
            // later row.
            match unhex(&seal.hash) {
                Some(h) => prev = h,
                None => report.problems.push(Problem::BrokenSeal {
                    n: seal.n,
                    detail: "hash is not 64 hex digits".into(),
                }),
            }
            report.sealed += 1;
            last = Some(seal);
        }
    }
    while walk.peek(&mut conn, dialect).await?.is_some() {
        report.unsealed += 1;
        walk.next();
    }
    report.head = last;
    Ok(report)
}

/// One event of an export, with its link in the chain.
#[derive(Clone, Debug)]
pub struct Sealed {
    /// Seal row.
    pub n: i64,
    /// The event as stored.
    pub event: StoredEvent,
    /// `hash_{n-1}`, hex.
    pub prev_hash: String,
    /// `hash_n`, hex.
    pub hash: String,
}

/// Walks the sealed range in order from just after `after` (or the start), checking every
/// link as it goes, and hands each sealed event to `emit`. Events not yet sealed are not
/// exported: every exported line can be checked.
///
/// # Errors
/// [`Error::Seal`] at the first event that does not match its seal (run `verify-log`);
/// database errors; whatever `emit` returns.
pub async fn walk_sealed<F, E>(db: &Db, after: Option<Cursor>, mut emit: F) -> Result<i64, E>
where
    F: FnMut(Sealed) -> Result<(), E>,
    E: From<Error>,
{
    let mut conn = db.pool.acquire().await.map_err(Error::from)?;
    let dialect = db.dialect;
    let mut last_n = 0;
    let mut prev = GENESIS;
    if let Some(after) = after {
        let row = sqlx::query(
            "SELECT n, tx_id, position, hash FROM log_seal WHERE tx_id = $1 AND position = $2",
        )
        .bind(after.tx)
        .bind(after.pos)
        .fetch_optional(&mut *conn)
        .await
        .map_err(Error::from)?;
        let Some(row) = row else {
            return Err(E::from(Error::Seal(format!(
                "position {} is not in the sealed range",
                after.encode()
            ))));
        };
        let row = seal_row(&row)?;
        last_n = row.n;
        prev = unhex(&row.hash)
            .ok_or_else(|| Error::Seal(format!("seal row {} is not a hash", row.n)))?;
    }
    let mut count = 0;
    loop {
        let seals = seal_page(&mut conn, last_n, PAGE).await?;
        let (Some(first), Some(last)) = (seals.first(), seals.last()) else {
            return Ok(count);
        };
        // The events of exactly this stretch of the seal.
        let before_first = {
            let mut c = first.cursor;
            c.pos -= 1;
            c
        };
        let mut events = log_page(&mut conn, dialect, before_first, PAGE * 2)
            .await?
            .into_iter()
            .filter(|e| e.cursor <= last.cursor)
            .peekable();
        for seal in &seals {
            let event = match events.next() {
                Some(e) if e.cursor == seal.cursor => e,
                _ => {
                    return Err(E::from(Error::Seal(format!(
                        "the log does not match seal #{} at position {}; run `tessera verify-log`",
                        seal.n,
                        seal.cursor.encode()
                    ))));
                }
            };
            let hash = link(&prev, &canonical_event(&event));
            if hex(&hash) != seal.hash {
                return Err(E::from(Error::Seal(format!(
                    "the event at position {} does not match seal #{}; run `tessera verify-log`",
                    seal.cursor.encode(),
                    seal.n
                ))));
            }
            emit(Sealed {
                n: seal.n,
                event,
                prev_hash: hex(&prev),
                hash: seal.hash.clone(),
            })?;
            prev = hash;
            count += 1;
        }
        if events.peek().is_some() {
            return Err(E::from(Error::Seal(format!(
                "an unsealed event lies inside the sealed range before seal #{}; run `tessera verify-log`",
                last.n
            ))));
        }
        last_n = last.n;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let mut out = String::new();
        canonical_json(
            &json!({ "b": [ { "z": 1, "a": "x\"y" } ], "a": null, "é": true }),
            &mut out,
        );
        assert_eq!(out, r#"{"a":null,"b":[{"a":"x\"y","z":1}],"é":true}"#);
    }

    #[test]
    fn link_is_sha256_of_prev_and_canonical() {
        // SHA-256 of 32 zero bytes followed by "x", computed independently.
        let mut h = Sha256::new();
        h.update([0u8; 32]);
        h.update(b"x");
        let expected: [u8; 32] = h.finalize().into();
        assert_eq!(link(&GENESIS, "x"), expected);
        assert_eq!(unhex(&hex(&expected)), Some(expected));
        assert_eq!(unhex("zz"), None);
    }
}
