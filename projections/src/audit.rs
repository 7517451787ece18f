//! The event log as an audit product: filtered, paginated reads in tailing order, point-in-time
//! reads of one stream, and the redaction every event passes before it leaves the server.
//!
//! Pages are read in the tailer's order and only below the oldest running transaction (see
//! [`crate::log`]), so a cursor handed to a client can never be overtaken by an event that
//! commits late: paging with `after` and resuming a subscription from a position see every
//! event exactly once.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{AnyConnection, Row};

use crate::{
    Dialect, Error,
    log::{Cursor, LITE_COLUMNS, PG_COLUMNS, StoredEvent, from_row},
};

/// What a redacted value is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// Whether a payload or metadata key may hold secret material (a secret, its ciphertext or
/// nonce, a password or code hash, a token, a code). Matching is by name, recursively, so an
/// event added later is covered without touching this file, as long as its secret fields are
/// named for what they are.
pub fn is_sensitive_key(key: &str) -> bool {
    const WORDS: [&str; 21] = [
        "secret",
        "secrets",
        "password",
        "passwords",
        "passphrase",
        "hash",
        "hashes",
        "cipher",
        "ciphertext",
        "nonce",
        "salt",
        "token",
        "tokens",
        "private",
        "mac",
        "code",
        "codes",
        "passcode",
        "pin",
        "otp",
        // WebAuthn ceremony state: the challenge a browser signs; it never leaves the server.
        "ceremony",
    ];
    const ANYWHERE: [&str; 3] = ["secret", "password", "cipher"];
    let lower = key.to_ascii_lowercase();
    ANYWHERE.iter().any(|s| lower.contains(s)) || words(key).any(|w| WORDS.contains(&w.as_str()))
}

/// The words of a `snake_case`, `kebab-case` or `camelCase` key, lower-cased.
fn words(key: &str) -> impl Iterator<Item = String> + '_ {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut prev_lower = false;
    for c in key.chars() {
        let boundary = !c.is_ascii_alphanumeric() || (c.is_ascii_uppercase() && prev_lower);
        if boundary && !word.is_empty() {
            out.push(std::mem::take(&mut word));
        }
        if c.is_ascii_alphanumeric() {
            word.push(c.to_ascii_lowercase());
        }
        prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
    }
    if !word.is_empty() {
        out.push(word);
    }
    out.into_iter()
}

/// A copy of `value` with every sensitive key's value (whatever its shape) replaced by
/// [`REDACTED`]. Safe to show to an auditor; used for every event that leaves the server
/// (GraphQL `events`, the subscription, `tessera export-events`).
pub fn redact(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = if is_sensitive_key(k) {
                        Value::String(REDACTED.into())
                    } else {
                        redact(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact).collect()),
        other => other.clone(),
    }
}

/// [`redact`] for an event payload, whose top-level key is the event's variant name
/// (`{"PasswordSet": {..}}`): the name stays even when it sounds sensitive, its fields are
/// redacted as usual.
pub fn redact_payload(payload: &Value) -> Value {
    match payload {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(tag, body)| {
                    let body = match body {
                        Value::Object(_) | Value::Array(_) => redact(body),
                        _ if is_sensitive_key(tag) => Value::String(REDACTED.into()),
                        other => other.clone(),
                    };
                    (tag.clone(), body)
                })
                .collect(),
        ),
        other => redact(other),
    }
}

/// Exact filters on the log; all given ones must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// `User`, `Factor`, …
    pub aggregate_type: Option<String>,
    /// One stream.
    pub aggregate_id: Option<String>,
    /// The user's own events and those of every stream the user owns (their factors).
    pub user_id: Option<String>,
    /// The events of this user's security activity ([`crate::activity`]): those of the
    /// kinds it shows, from the user's own stream and every stream the user owns (factors,
    /// challenges, alerts).
    pub activity_of: Option<String>,
    /// Any of these event types.
    pub event_types: Option<Vec<String>>,
    /// Recorded at or after.
    pub from: Option<DateTime<Utc>>,
    /// Recorded before.
    pub to: Option<DateTime<Utc>>,
}

/// Streams a user owns besides their own `User` stream: the aggregate type, the event that
/// creates such a stream, and the payload field naming its owner. The owner is fixed when the
/// stream is created, so membership can be read from the log itself, exactly, with no read
/// model in between (`migrations/*/0005_audit.sql` indexes these fields).
const OWNED_STREAMS: &[(&str, &str)] = &[("Factor", "Enrolled")];

/// Every stream a user owns besides their `User` stream, as [`OWNED_STREAMS`]: a user's
/// activity reads these (`migrations/*/0023_user_activity.sql` indexes the last two).
const ACTIVITY_STREAMS: &[(&str, &str)] = &[
    ("Factor", "Enrolled"),
    ("Challenge", "Issued"),
    ("Alert", "SecurityAlertRaised"),
];

/// SQL for "the owner named in this creating event's payload", per store.
fn owner_expr(dialect: Dialect, event_type: &str) -> String {
    match dialect {
        Dialect::Postgres => format!("payload->'{event_type}'->>'user_id'"),
        Dialect::Sqlite => format!("json_extract(payload, '$.{event_type}.user_id')"),
    }
}

/// How a time bound rounds to the store's precision (PostgreSQL µs, SQLite ms), so that a
/// comparison with the stored value is exact.
#[derive(Clone, Copy)]
enum Round {
    Up,
    Down,
}

fn time_bound(t: DateTime<Utc>, dialect: Dialect, round: Round) -> String {
    let unit: i64 = match dialect {
        Dialect::Postgres => 1_000,
        Dialect::Sqlite => 1_000_000,
    };
    let nanos = i64::from(t.timestamp_subsec_nanos());
    let rem = nanos % unit;
    let t = match round {
        Round::Down => t - chrono::TimeDelta::nanoseconds(rem),
        Round::Up if rem == 0 => t,
        Round::Up => t + chrono::TimeDelta::nanoseconds(unit - rem),
    };
    match dialect {
        Dialect::Postgres => t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        Dialect::Sqlite => t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
    }
}

enum Bind {
    Text(String),
    Int(i64),
}

/// A WHERE clause under construction with its parameters (`$n`, shared by both stores).
#[derive(Default)]
struct Where {
    clauses: Vec<String>,
    binds: Vec<Bind>,
}

impl Where {
    fn param(&mut self, bind: Bind) -> String {
        self.binds.push(bind);
        format!("${}", self.binds.len())
    }

    fn time(&self, dialect: Dialect, param: &str) -> String {
        match dialect {
            Dialect::Postgres => format!("{param}::timestamptz"),
            Dialect::Sqlite => param.to_string(),
        }
    }

    fn cursor(&self, dialect: Dialect, tx: &str, pos: &str) -> (String, String) {
        match dialect {
            Dialect::Postgres => (
                "(tx_id, global_position)".into(),
                format!("({tx}::bigint::text::xid8, {pos})"),
            ),
            Dialect::Sqlite => ("global_seq".into(), pos.to_string()),
        }
    }

    fn filter(&mut self, dialect: Dialect, filter: &Filter) {
        if let Some(t) = &filter.aggregate_type {
            let p = self.param(Bind::Text(t.clone()));
            self.clauses.push(format!("aggregate_type = {p}"));
        }
        if let Some(id) = &filter.aggregate_id {
            let p = self.param(Bind::Text(id.clone()));
            self.clauses.push(format!("aggregate_id = {p}"));
        }
        if let Some(user) = &filter.user_id {
            self.streams_of(dialect, user, OWNED_STREAMS);
        }
        if let Some(user) = &filter.activity_of {
            self.streams_of(dialect, user, ACTIVITY_STREAMS);
            self.clauses.push(crate::activity::kinds_clause(dialect));
        }
        if let Some(types) = &filter.event_types {
            if types.is_empty() {
                self.clauses.push("1 = 0".into());
            } else {
                let ps: Vec<String> = types
                    .iter()
                    .map(|t| self.param(Bind::Text(t.clone())))
                    .collect();
                self.clauses
                    .push(format!("event_type IN ({})", ps.join(", ")));
            }
        }
        if let Some(from) = filter.from {
            let p = self.param(Bind::Text(time_bound(from, dialect, Round::Up)));
            let t = self.time(dialect, &p);
            self.clauses.push(format!("recorded_at >= {t}"));
        }
        if let Some(to) = filter.to {
            let p = self.param(Bind::Text(time_bound(to, dialect, Round::Up)));
            let t = self.time(dialect, &p);
            self.clauses.push(format!("recorded_at < {t}"));
        }
    }

    /// The event is on `user`'s own stream or on one of the `owned` streams naming `user`.
    fn streams_of(&mut self, dialect: Dialect, user: &str, owned: &[(&str, &str)]) {
        let p = self.param(Bind::Text(user.to_string()));
        let mut any = vec![format!("(aggregate_type = 'User' AND aggregate_id = {p})")];
        for (aggregate_type, creator) in owned {
            let owner = owner_expr(dialect, creator);
            any.push(format!(
                "(aggregate_type = '{aggregate_type}' AND aggregate_id IN (\
                 SELECT aggregate_id FROM events WHERE aggregate_type = '{aggregate_type}' \
                 AND event_type = '{creator}' AND {owner} = {p}))"
            ));
        }
        self.clauses.push(format!("({})", any.join(" OR ")));
    }

    fn sql(&self) -> String {
        if self.clauses.is_empty() {
            "1 = 1".into()
        } else {
            self.clauses.join(" AND ")
        }
    }

    async fn fetch(
        self,
        conn: &mut AnyConnection,
        sql: &str,
    ) -> Result<Vec<sqlx::any::AnyRow>, Error> {
        let mut query = sqlx::query(sql);
        for bind in self.binds {
            query = match bind {
                Bind::Text(s) => query.bind(s),
                Bind::Int(n) => query.bind(n),
            };
        }
        Ok(query.fetch_all(&mut *conn).await?)
    }
}

/// Up to `limit` events matching `filter`, after `after` and at or before `upto` (if given),
/// in tailing order, read only where nothing can commit behind them.
///
/// # Errors
/// Database or decoding errors.
pub async fn read(
    conn: &mut AnyConnection,
    dialect: Dialect,
    filter: &Filter,
    after: Cursor,
    upto: Option<Cursor>,
    limit: i64,
) -> Result<Vec<StoredEvent>, Error> {
    let mut w = Where::default();
    let (tx, pos) = (w.param(Bind::Int(after.tx)), w.param(Bind::Int(after.pos)));
    let (key, value) = w.cursor(dialect, &tx, &pos);
    w.clauses.push(format!("{key} > {value}"));
    if let Some(upto) = upto {
        let (tx, pos) = (w.param(Bind::Int(upto.tx)), w.param(Bind::Int(upto.pos)));
        let (key, value) = w.cursor(dialect, &tx, &pos);
        w.clauses.push(format!("{key} <= {value}"));
    }
    select(conn, dialect, filter, w, "", limit).await
}

/// Up to `limit` events matching `filter` before `before` (from the newest if `None`), newest
/// first: the reverse of [`read`]'s order, over the same readable part of the log. A cursor
/// handed out here is stable too: nothing can commit behind the newest readable event, only
/// ahead of it.
///
/// # Errors
/// Database or decoding errors.
pub async fn read_newest_first(
    conn: &mut AnyConnection,
    dialect: Dialect,
    filter: &Filter,
    before: Option<Cursor>,
    limit: i64,
) -> Result<Vec<StoredEvent>, Error> {
    let mut w = Where::default();
    if let Some(before) = before {
        let (tx, pos) = (
            w.param(Bind::Int(before.tx)),
            w.param(Bind::Int(before.pos)),
        );
        let (key, value) = w.cursor(dialect, &tx, &pos);
        w.clauses.push(format!("{key} < {value}"));
    }
    select(conn, dialect, filter, w, " DESC", limit).await
}

async fn select(
    conn: &mut AnyConnection,
    dialect: Dialect,
    filter: &Filter,
    mut w: Where,
    direction: &str,
    limit: i64,
) -> Result<Vec<StoredEvent>, Error> {
    if dialect == Dialect::Postgres {
        w.clauses
            .push("tx_id < pg_snapshot_xmin(pg_current_snapshot())".into());
    }
    w.filter(dialect, filter);
    let limit = w.param(Bind::Int(limit));
    let sql = match dialect {
        Dialect::Postgres => format!(
            "SELECT {PG_COLUMNS} FROM events WHERE {} \
             ORDER BY tx_id{direction}, global_position{direction} LIMIT {limit}",
            w.sql()
        ),
        Dialect::Sqlite => format!(
            "SELECT {LITE_COLUMNS} FROM events WHERE {} ORDER BY global_seq{direction} LIMIT {limit}",
            w.sql()
        ),
    };
    let rows = w.fetch(conn, &sql).await?;
    rows.iter().map(from_row).collect()
}

/// How many events match `filter`, counted where [`read`] reads (nothing that could still
/// commit behind a reader): the total of every page `read` hands out from the start.
///
/// # Errors
/// Database errors.
pub async fn count(
    conn: &mut AnyConnection,
    dialect: Dialect,
    filter: &Filter,
) -> Result<i64, Error> {
    let mut w = Where::default();
    if dialect == Dialect::Postgres {
        w.clauses
            .push("tx_id < pg_snapshot_xmin(pg_current_snapshot())".into());
    }
    w.filter(dialect, filter);
    let sql = format!("SELECT COUNT(*) FROM events WHERE {}", w.sql());
    let rows = w.fetch(conn, &sql).await?;
    let row = rows.first().ok_or(sqlx::Error::RowNotFound)?;
    Ok(row.try_get::<i64, _>(0)?)
}

/// One stream's events recorded at or before `as_of`, by sequence: the history an aggregate
/// folds to give its state at that time. Stops at the first gap, so the result is always a
/// prefix of the stream.
///
/// # Errors
/// Database or decoding errors.
pub async fn stream_as_of(
    conn: &mut AnyConnection,
    dialect: Dialect,
    aggregate_type: &str,
    aggregate_id: &str,
    as_of: DateTime<Utc>,
) -> Result<Vec<StoredEvent>, Error> {
    let mut w = Where::default();
    let t = w.param(Bind::Text(aggregate_type.into()));
    let id = w.param(Bind::Text(aggregate_id.into()));
    let at = w.param(Bind::Text(time_bound(as_of, dialect, Round::Down)));
    let at = w.time(dialect, &at);
    let columns = match dialect {
        Dialect::Postgres => PG_COLUMNS,
        Dialect::Sqlite => LITE_COLUMNS,
    };
    let sql = format!(
        "SELECT {columns} FROM events WHERE aggregate_type = {t} AND aggregate_id = {id} \
         AND recorded_at <= {at} ORDER BY sequence"
    );
    let rows = w.fetch(conn, &sql).await?;
    let mut events = Vec::with_capacity(rows.len());
    for row in &rows {
        let event = from_row(row)?;
        if event.sequence != i64::try_from(events.len()).unwrap_or(i64::MAX) + 1 {
            break;
        }
        events.push(event);
    }
    Ok(events)
}

/// Ids of the streams of `aggregate_type` that `user_id` owned at `as_of` (created by then),
/// in id order.
///
/// # Errors
/// Database errors.
pub async fn owned_as_of(
    conn: &mut AnyConnection,
    dialect: Dialect,
    user_id: &str,
    aggregate_type: &str,
    as_of: DateTime<Utc>,
) -> Result<Vec<String>, Error> {
    let Some((_, creator)) = OWNED_STREAMS.iter().find(|(t, _)| *t == aggregate_type) else {
        return Ok(Vec::new());
    };
    let mut w = Where::default();
    let t = w.param(Bind::Text(aggregate_type.into()));
    let c = w.param(Bind::Text((*creator).into()));
    let u = w.param(Bind::Text(user_id.into()));
    let at = w.param(Bind::Text(time_bound(as_of, dialect, Round::Down)));
    let at = w.time(dialect, &at);
    let owner = owner_expr(dialect, creator);
    let sql = format!(
        "SELECT aggregate_id FROM events WHERE aggregate_type = {t} AND event_type = {c} \
         AND {owner} = {u} AND recorded_at <= {at} ORDER BY aggregate_id"
    );
    let rows = w.fetch(conn, &sql).await?;
    rows.iter()
        .map(|r| r.try_get::<String, _>("aggregate_id").map_err(Error::from))
        .collect()
}

/// The event at `(aggregate_type, aggregate_id, sequence)`, once readers may see it (on
/// PostgreSQL: below the oldest running transaction, as [`read`] reads).
///
/// # Errors
/// Database or decoding errors.
pub async fn one(
    conn: &mut AnyConnection,
    dialect: Dialect,
    aggregate_type: &str,
    aggregate_id: &str,
    sequence: i64,
) -> Result<Option<StoredEvent>, Error> {
    let mut w = Where::default();
    let t = w.param(Bind::Text(aggregate_type.into()));
    let id = w.param(Bind::Text(aggregate_id.into()));
    let seq = w.param(Bind::Int(sequence));
    w.clauses.push(format!(
        "aggregate_type = {t} AND aggregate_id = {id} AND sequence = {seq}"
    ));
    let sql = match dialect {
        Dialect::Postgres => {
            w.clauses
                .push("tx_id < pg_snapshot_xmin(pg_current_snapshot())".into());
            format!("SELECT {PG_COLUMNS} FROM events WHERE {}", w.sql())
        }
        Dialect::Sqlite => format!("SELECT {LITE_COLUMNS} FROM events WHERE {}", w.sql()),
    };
    let rows = w.fetch(conn, &sql).await?;
    rows.first().map(from_row).transpose()
}

/// Up to `limit` events whose metadata names `causation_id`, in tailing order: the events of
/// one command (`cmd-…`), or those an event caused (`Type/id/sequence`, the reactor's alerts).
/// An index probe (`migrations/*/0024_events_causation.sql`).
///
/// # Errors
/// Database or decoding errors.
pub async fn with_causation(
    conn: &mut AnyConnection,
    dialect: Dialect,
    causation_id: &str,
    limit: i64,
) -> Result<Vec<StoredEvent>, Error> {
    let mut w = Where::default();
    let c = w.param(Bind::Text(causation_id.into()));
    let limit = w.param(Bind::Int(limit));
    // The expressions are exactly the indexed ones, so the planners use the index.
    let sql = match dialect {
        Dialect::Postgres => format!(
            "SELECT {PG_COLUMNS} FROM events WHERE (metadata->>'causation_id') = {c} \
             AND tx_id < pg_snapshot_xmin(pg_current_snapshot()) \
             ORDER BY tx_id, global_position LIMIT {limit}"
        ),
        Dialect::Sqlite => format!(
            "SELECT {LITE_COLUMNS} FROM events WHERE json_extract(metadata, '$.causation_id') = {c} \
             ORDER BY global_seq LIMIT {limit}"
        ),
    };
    let rows = w.fetch(conn, &sql).await?;
    rows.iter().map(from_row).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn sensitive_keys() {
        for key in [
            "secret",
            "ciphertext",
            "nonce",
            "password_hash",
            "passwordHash",
            "code_hash",
            "pass_code",
            "recovery_codes",
            "code",
            "token",
            "access_token",
            "salt",
            "private_key",
            "mac",
            "SECRET",
        ] {
            assert!(is_sensitive_key(key), "{key}");
        }
        for key in [
            "reason",
            "consecutive_failures",
            "counted",
            "key_id",
            "params",
            "user_id",
            "login",
            "at",
            "until",
            "machine",
            "factor_type",
            "request_id",
            "user_agent",
            "client_ip",
        ] {
            assert!(!is_sensitive_key(key), "{key}");
        }
    }

    #[test]
    fn redaction_is_recursive_and_keeps_the_rest() {
        let event = json!({ "Enrolled": {
            "factor_id": "f", "label": "phone",
            "totp": { "secret": { "key_id": "k1", "nonce": "bm9uY2U=", "ciphertext": "Y2lwaGVy" },
                      "params": { "algorithm": "SHA1", "digits": 6, "period": 30 } },
            "list": [ { "password_hash": "$argon2id$..." } ] } });
        let redacted = redact(&event);
        assert_eq!(
            redacted,
            json!({ "Enrolled": {
                "factor_id": "f", "label": "phone",
                "totp": { "secret": REDACTED,
                          "params": { "algorithm": "SHA1", "digits": 6, "period": 30 } },
                "list": [ { "password_hash": REDACTED } ] } })
        );
        let text = redacted.to_string();
        assert!(
            !text.contains("Y2lwaGVy") && !text.contains("bm9uY2U=") && !text.contains("argon2")
        );
    }

    #[test]
    fn a_payload_keeps_its_variant_name() {
        let set = json!({ "PasswordSet": { "password_hash": "$argon2id$v=19$x", "at": "t" } });
        assert_eq!(
            redact_payload(&set),
            json!({ "PasswordSet": { "password_hash": REDACTED, "at": "t" } })
        );
        // Generic redaction would hide the whole event behind its name.
        assert_eq!(redact(&set), json!({ "PasswordSet": REDACTED }));
        // A scalar under a sensitive-sounding variant name is still hidden.
        assert_eq!(
            redact_payload(&json!({ "SecretShown": "abc" })),
            json!({ "SecretShown": REDACTED })
        );
    }

    /// Every event the domain writes, sealed with the real cipher and hashed with the real
    /// argon2id: what is secret at rest never survives redaction, the rest does.
    #[test]
    fn no_domain_event_keeps_secret_material() {
        use tessera_domain::{
            crypto::{SecretCipher, hash_password},
            factor::{self, FactorEvent, FactorType},
            ids::{FactorId, UserId},
            secret::SecretBytes,
            user::{self, UserEvent},
        };
        let at = Utc::now();
        let cipher = SecretCipher::new([9; 32]);
        let sealed = cipher.seal(&SecretBytes::new(vec![7; 20]), "f");
        let hash = hash_password("correct horse battery");
        let code_hash = tessera_domain::crypto::KeyedHasher::new([5; 32]).hash("code", "123456");
        // A WebAuthn ceremony's challenge: it must not leave the server.
        let ceremony = "c2VydmVyLW9ubHktY2hhbGxlbmdl".to_string();
        let factor_events = [
            FactorEvent::Enrolled(factor::Enrolled {
                factor_id: FactorId(uuid::Uuid::now_v7()),
                user_id: UserId::for_login("a"),
                factor_type: FactorType::Totp,
                label: Some("phone".into()),
                totp: Some(factor::TotpEnrollment {
                    secret: sealed.clone(),
                    params: factor::totp::TotpParams::default(),
                }),
                oob: None,
                expires_at: at,
                at,
            }),
            FactorEvent::Activated(factor::Activated {
                step: Some(1),
                challenge_id: None,
                at,
            }),
            FactorEvent::Verified(factor::Verified {
                step: Some(2),
                challenge_id: None,
                at,
            }),
            FactorEvent::FailedAttempt(factor::FailedAttempt {
                reason: factor::FailureReason::WrongCode,
                counted: true,
                consecutive_failures: 1,
                challenge_id: None,
                at,
            }),
            FactorEvent::CodeIssued(factor::CodeIssued {
                challenge_id: tessera_domain::ids::ChallengeId::generate(),
                standalone: true,
                code_hash: code_hash.clone(),
                expires_at: at,
                at,
            }),
            FactorEvent::LockedOut(factor::LockedOut {
                until: at,
                consecutive_failures: 5,
                at,
            }),
            FactorEvent::Unlocked(factor::Unlocked {
                automatic: true,
                at,
            }),
            FactorEvent::Removed(factor::Removed { at }),
            FactorEvent::EnrollmentExpired(factor::EnrollmentExpired { at }),
            FactorEvent::RegistrationRequested(factor::RegistrationRequested {
                ceremony: json!({ "rs": { "challenge": ceremony } }),
                expires_at: at,
                at,
            }),
            FactorEvent::CredentialRegistered(factor::CredentialRegistered {
                credential_id: "AAEC".into(),
                passkey: json!({ "cred": { "cred_id": "AAEC" } }),
                aaguid: None,
                backup_eligible: true,
                backup_state: false,
                transports: vec!["internal".into()],
                counter: 0,
                at,
            }),
            FactorEvent::AssertionRequested(factor::AssertionRequested {
                challenge_id: tessera_domain::ids::ChallengeId::generate(),
                standalone: true,
                ceremony: json!({ "ast": { "challenge": ceremony } }),
                discoverable: false,
                expires_at: at,
                at,
            }),
            FactorEvent::CredentialUsed(factor::CredentialUsed {
                counter: 2,
                backup_state: false,
                backup_eligible: true,
                passkey: json!({ "cred": { "cred_id": "AAEC" } }),
                at,
            }),
            FactorEvent::SecretResealed(factor::SecretResealed {
                secret: sealed.clone(),
                previous_key_id: "0011223344556677".into(),
                at,
            }),
        ];
        // A new variant must be added above (and looked at for secrets).
        for e in &factor_events {
            match e {
                FactorEvent::Enrolled(_)
                | FactorEvent::Activated(_)
                | FactorEvent::Verified(_)
                | FactorEvent::FailedAttempt(_)
                | FactorEvent::LockedOut(_)
                | FactorEvent::Unlocked(_)
                | FactorEvent::Removed(_)
                | FactorEvent::EnrollmentExpired(_)
                | FactorEvent::CodeIssued(_)
                | FactorEvent::RegistrationRequested(_)
                | FactorEvent::CredentialRegistered(_)
                | FactorEvent::AssertionRequested(_)
                | FactorEvent::CredentialUsed(_)
                | FactorEvent::SecretResealed(_) => {}
            }
        }
        let user_events = [
            UserEvent::Registered(user::Registered {
                login: "a".into(),
                email: None,
                phone_number: None,
                display_name: None,
                first_name: None,
                last_name: None,
                at,
            }),
            UserEvent::PasswordSet(user::PasswordSet {
                password_hash: hash.clone(),
                at,
            }),
            UserEvent::RecoveryCodesGenerated(user::RecoveryCodesGenerated {
                generation: 1,
                hashes: vec![hash.clone(), hash.clone()],
                at,
            }),
            UserEvent::RecoveryUsed(user::RecoveryUsed {
                generation: 1,
                index: 0,
                remaining: 1,
                at,
            }),
            UserEvent::FailedAttempt(user::UserFailedAttempt {
                reason: user::UserFailureReason::WrongRecoveryCode,
                factor_id: None,
                consecutive_failures: 1,
                at,
            }),
            UserEvent::FailuresReset(user::FailuresReset { at }),
            UserEvent::LockedOut(user::UserLockedOut {
                consecutive_failures: 100,
                at,
            }),
            UserEvent::Unlocked(user::UserUnlocked { at }),
            UserEvent::LoginFailed(user::LoginFailed {
                reason: user::LoginFailureReason::WrongPassword,
                failed_logins: 1,
                at,
            }),
            UserEvent::LoginThrottled(user::LoginThrottled {
                runs: 1,
                until: at,
                at,
            }),
            UserEvent::LoginFailuresReset(user::LoginFailuresReset { at }),
            UserEvent::DeviceTrusted(user::DeviceTrusted {
                device_id: uuid::Uuid::nil(),
                token_hash: hash.clone(),
                label: None,
                expires_at: at,
                at,
            }),
            UserEvent::TrustedDeviceUsed(user::TrustedDeviceUsed {
                device_id: uuid::Uuid::nil(),
                at,
            }),
            UserEvent::DeviceRevoked(user::DeviceRevoked {
                device_id: uuid::Uuid::nil(),
                reason: user::DeviceRevocationReason::Revoked,
                at,
            }),
            UserEvent::ProfileUpdated(user::ProfileUpdated {
                email: Some("a@example.com".into()),
                phone_number: None,
                display_name: None,
                first_name: None,
                last_name: None,
                at,
            }),
            UserEvent::Deactivated(user::UserDeactivated { at }),
            UserEvent::Reactivated(user::UserReactivated { at }),
            UserEvent::Deleted(user::UserDeleted { at }),
            UserEvent::SessionsRevoked(user::SessionsRevoked {
                generation: 1,
                reason: user::RevocationReason::Requested,
                at,
            }),
            UserEvent::CodeRefused(user::CodeRefused {
                channel: tessera_domain::challenge::Channel::Sms,
                reason: user::code_limits::CodeRefusalReason::CountryNotAllowed,
                destination: "+88 ••• ••• 3456".into(),
                country_code: Some(882),
                factor_id: None,
                retry_after_seconds: 86_400,
                at,
            }),
            UserEvent::SmsBudgetThresholdCrossed(user::SmsBudgetThresholdCrossed {
                sent: 800,
                budget: 1000,
                window_ends_at: at,
                at,
            }),
        ];
        for e in &user_events {
            match e {
                UserEvent::Registered(_)
                | UserEvent::PasswordSet(_)
                | UserEvent::RecoveryCodesGenerated(_)
                | UserEvent::RecoveryUsed(_)
                | UserEvent::FailedAttempt(_)
                | UserEvent::FailuresReset(_)
                | UserEvent::LockedOut(_)
                | UserEvent::Unlocked(_)
                | UserEvent::LoginFailed(_)
                | UserEvent::LoginThrottled(_)
                | UserEvent::LoginFailuresReset(_)
                | UserEvent::DeviceTrusted(_)
                | UserEvent::TrustedDeviceUsed(_)
                | UserEvent::DeviceRevoked(_)
                | UserEvent::ProfileUpdated(_)
                | UserEvent::Deactivated(_)
                | UserEvent::Reactivated(_)
                | UserEvent::Deleted(_)
                | UserEvent::SessionsRevoked(_)
                | UserEvent::CodeRefused(_)
                | UserEvent::SmsBudgetThresholdCrossed(_) => {}
            }
        }
        let payloads: Vec<Value> = factor_events
            .iter()
            .map(|e| serde_json::to_value(e).unwrap())
            .chain(user_events.iter().map(|e| serde_json::to_value(e).unwrap()))
            .collect();
        for payload in &payloads {
            let shown = redact_payload(payload).to_string();
            for secret in [
                &sealed.ciphertext,
                &sealed.nonce,
                &hash,
                &code_hash,
                &ceremony,
            ] {
                assert!(!shown.contains(secret.as_str()), "{shown}");
            }
            // The variant name and the non-secret fields stay.
            let tag = payload.as_object().unwrap().keys().next().unwrap();
            assert!(shown.contains(tag.as_str()), "{shown}");
            assert!(shown.contains("\"at\""), "{shown}");
        }
    }

    #[test]
    fn time_bounds_round_to_the_store_precision() {
        let t: DateTime<Utc> = "2026-01-02T03:04:05.123456789Z".parse().unwrap();
        assert_eq!(
            time_bound(t, Dialect::Sqlite, Round::Up),
            "2026-01-02T03:04:05.124Z"
        );
        assert_eq!(
            time_bound(t, Dialect::Sqlite, Round::Down),
            "2026-01-02T03:04:05.123Z"
        );
        assert_eq!(
            time_bound(t, Dialect::Postgres, Round::Up),
            "2026-01-02T03:04:05.123457Z"
        );
        assert_eq!(
            time_bound(t, Dialect::Postgres, Round::Down),
            "2026-01-02T03:04:05.123456Z"
        );
        let exact: DateTime<Utc> = "2026-01-02T03:04:05.123Z".parse().unwrap();
        assert_eq!(
            time_bound(exact, Dialect::Sqlite, Round::Up),
            "2026-01-02T03:04:05.123Z"
        );
    }
}
