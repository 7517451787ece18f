use sqlx::{AnyConnection, FromRow};
use tessera_domain::factor::FactorEvent;

use crate::{Error, StoredEvent, read_model::Queries, ts};

/// A row of `factors_v1`. `status` is as stored; apply
/// `tessera_domain::factor::effective_status` with the clock before showing it.
#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct FactorRow {
    /// Factor id.
    pub id: String,
    /// Owner.
    pub user_id: String,
    /// `TOTP`, …
    pub factor_type: String,
    /// `PENDING_ACTIVATION`, `ACTIVE`, `LOCKED_OUT`, `EXPIRED`, `REMOVED`.
    pub status: String,
    /// User's label.
    pub label: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// Activation deadline, RFC 3339.
    pub expires_at: Option<String>,
    /// Last success, RFC 3339.
    pub last_verified_at: Option<String>,
    /// Consecutive failures.
    pub failed_attempts: i64,
    /// Lock deadline, RFC 3339.
    pub locked_until: Option<String>,
    /// SMS and e-mail: the phone number or address codes go to.
    pub destination: Option<String>,
    /// Last applied stream sequence.
    pub last_seq: i64,
}

pub(super) async fn apply(
    conn: &mut AnyConnection,
    stored: &StoredEvent,
    event: FactorEvent,
) -> Result<(), Error> {
    let id = stored.aggregate_id.as_str();
    let seq = stored.sequence;
    if let FactorEvent::Enrolled(e) = event {
        sqlx::query(
            "INSERT INTO factors_v1 (id, user_id, factor_type, status, label, created_at, expires_at, last_seq, destination) \
             VALUES ($1, $2, $3, 'PENDING_ACTIVATION', $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(e.user_id.to_string())
        .bind(e.factor_type.as_str())
        .bind(e.label)
        .bind(ts(e.at))
        .bind(ts(e.expires_at))
        .bind(seq)
        .bind(e.oob.map(|o| o.destination))
        .execute(&mut *conn)
        .await?;
        return Ok(());
    }
    // Every other event updates one row; `last_seq < seq` makes a re-applied event a no-op.
    // `$1` is the sequence, `$2` the id, `$3` the one value an event carries, if any.
    let (set, value) = match event {
        FactorEvent::Enrolled(_) => unreachable!("handled above"),
        FactorEvent::Activated(e) => (
            "status = 'ACTIVE', last_verified_at = $3, failed_attempts = 0",
            Some(Value::Text(ts(e.at))),
        ),
        FactorEvent::Verified(e) => (
            "last_verified_at = $3, failed_attempts = 0",
            Some(Value::Text(ts(e.at))),
        ),
        FactorEvent::FailedAttempt(e) => (
            "failed_attempts = $3",
            Some(Value::Int(i64::from(e.consecutive_failures))),
        ),
        FactorEvent::LockedOut(e) => (
            "status = CASE WHEN status = 'ACTIVE' THEN 'LOCKED_OUT' ELSE status END, locked_until = $3",
            Some(Value::Text(ts(e.until))),
        ),
        FactorEvent::Unlocked(_) => (
            "status = CASE WHEN status = 'LOCKED_OUT' THEN 'ACTIVE' ELSE status END, \
             locked_until = NULL, failed_attempts = 0",
            None,
        ),
        FactorEvent::Removed(_) => ("status = 'REMOVED'", None),
        // Only the hash of a code; nothing a read model shows.
        FactorEvent::CodeIssued(_) => ("status = status", None),
        FactorEvent::EnrollmentExpired(_) => ("status = 'EXPIRED'", None),
    };
    let sql = format!("UPDATE factors_v1 SET {set}, last_seq = $1 WHERE id = $2 AND last_seq < $1");
    let query = sqlx::query(&sql).bind(seq).bind(id);
    let query = match value {
        Some(Value::Text(s)) => query.bind(s),
        Some(Value::Int(n)) => query.bind(n),
        None => query,
    };
    query.execute(&mut *conn).await?;
    Ok(())
}

enum Value {
    Text(String),
    Int(i64),
}

const COLUMNS: &str = "id, user_id, factor_type, status, label, created_at, expires_at, \
     last_verified_at, failed_attempts, locked_until, destination, last_seq";

impl Queries {
    pub(super) async fn factors_where(
        &self,
        condition: &str,
        bind: Option<&str>,
    ) -> Result<Vec<FactorRow>, Error> {
        let sql = format!("SELECT {COLUMNS} FROM factors_v1 WHERE {condition} ORDER BY id");
        let mut query = sqlx::query_as(&sql);
        if let Some(value) = bind {
            query = query.bind(value);
        }
        Ok(query.fetch_all(&self.db.pool).await?)
    }

    /// One factor by id.
    ///
    /// # Errors
    /// Database errors.
    pub async fn factor(&self, id: &str) -> Result<Option<FactorRow>, Error> {
        Ok(self.factors_where("id = $1", Some(id)).await?.pop())
    }

    /// A user's factors, removed ones included, oldest first.
    ///
    /// # Errors
    /// Database errors.
    pub async fn factors_of_user(&self, user_id: &str) -> Result<Vec<FactorRow>, Error> {
        self.factors_where("user_id = $1", Some(user_id)).await
    }
}
