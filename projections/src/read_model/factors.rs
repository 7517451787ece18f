use sqlx::FromRow;
use tessera_domain::factor::{FactorEvent, FactorStatus, FactorType};

use crate::{
    Error, StoredEvent,
    read_model::{Queries, Rows},
    ts,
};

/// A row of `factors_v1`. `status` is as stored; read it through [`FactorRow::status_at`]
/// with the clock before showing it.
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
    /// WebAuthn: the credential id, base64url.
    pub credential_id: Option<String>,
    /// WebAuthn: the authenticator model's AAGUID, when its attestation named one.
    pub aaguid: Option<String>,
    /// WebAuthn: 1 when the key is synced (backed up), 0 when not.
    pub backed_up: Option<i64>,
    /// Last applied stream sequence.
    pub last_seq: i64,
}

impl FactorRow {
    /// The status at `now` (a lock or an enrolment whose time is up reads as it will be), or
    /// `None` for a malformed row.
    pub fn status_at(&self, now: chrono::DateTime<chrono::Utc>) -> Option<FactorStatus> {
        let stored = FactorStatus::parse(&self.status)?;
        let locked_until = self.locked_until.as_deref().and_then(crate::parse_ts);
        let expires_at = self.expires_at.as_deref().and_then(crate::parse_ts);
        Some(tessera_domain::factor::effective_status(
            stored,
            locked_until,
            expires_at,
            now,
        ))
    }

    /// The factor type, or `None` for a malformed row.
    pub fn factor_type(&self) -> Option<FactorType> {
        Some(match self.factor_type.as_str() {
            "TOTP" => FactorType::Totp,
            "SMS" => FactorType::Sms,
            "EMAIL" => FactorType::Email,
            "WEBAUTHN" => FactorType::Webauthn,
            _ => return None,
        })
    }
}

/// Folds one event into the rows of a batch. Mirrors what one SQL statement per event would
/// do: `Enrolled` creates the row unless it exists; any later event applies only to an
/// existing row that has not seen it (`last_seq < seq`), so re-applying is a no-op.
pub(super) fn fold(rows: &mut Rows<FactorRow>, stored: &StoredEvent, event: FactorEvent) {
    let id = stored.aggregate_id.as_str();
    let seq = stored.sequence;
    match event {
        FactorEvent::Enrolled(e) => rows.create(FactorRow {
            id: id.to_string(),
            user_id: e.user_id.to_string(),
            factor_type: e.factor_type.as_str().into(),
            status: "PENDING_ACTIVATION".into(),
            label: e.label,
            created_at: ts(e.at),
            expires_at: Some(ts(e.expires_at)),
            last_verified_at: None,
            failed_attempts: 0,
            locked_until: None,
            destination: e.oob.map(|o| o.destination),
            credential_id: None,
            aaguid: None,
            backed_up: None,
            last_seq: seq,
        }),
        FactorEvent::Activated(e) => rows.update(id, seq, |r| {
            r.status = "ACTIVE".into();
            r.last_verified_at = Some(ts(e.at));
            r.failed_attempts = 0;
        }),
        FactorEvent::Verified(e) => rows.update(id, seq, |r| {
            r.last_verified_at = Some(ts(e.at));
            r.failed_attempts = 0;
        }),
        FactorEvent::FailedAttempt(e) => rows.update(id, seq, |r| {
            r.failed_attempts = i64::from(e.consecutive_failures);
        }),
        FactorEvent::LockedOut(e) => rows.update(id, seq, |r| {
            if r.status == "ACTIVE" {
                r.status = "LOCKED_OUT".into();
            }
            r.locked_until = Some(ts(e.until));
        }),
        FactorEvent::Unlocked(_) => rows.update(id, seq, |r| {
            if r.status == "LOCKED_OUT" {
                r.status = "ACTIVE".into();
            }
            r.locked_until = None;
            r.failed_attempts = 0;
        }),
        FactorEvent::Removed(_) => rows.update(id, seq, |r| r.status = "REMOVED".into()),
        FactorEvent::EnrollmentExpired(_) => {
            rows.update(id, seq, |r| r.status = "EXPIRED".into());
        }
        // Only the hash of a code, or a ceremony's state: nothing a read model shows.
        FactorEvent::CodeIssued(_)
        | FactorEvent::RegistrationRequested(_)
        | FactorEvent::AssertionRequested(_)
        | FactorEvent::SecretResealed(_) => rows.update(id, seq, |_| {}),
        FactorEvent::CredentialRegistered(e) => rows.update(id, seq, |r| {
            r.credential_id = Some(e.credential_id);
            r.aaguid = e.aaguid.map(|a| a.to_string());
            r.backed_up = Some(i64::from(e.backup_state));
        }),
        FactorEvent::CredentialUsed(e) => rows.update(id, seq, |r| {
            r.backed_up = Some(i64::from(e.backup_state));
        }),
    }
}

impl super::Row for FactorRow {
    const TABLE: &'static str = "factors_v1";
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "user_id",
        "factor_type",
        "status",
        "label",
        "created_at",
        "expires_at",
        "last_verified_at",
        "failed_attempts",
        "locked_until",
        "destination",
        "credential_id",
        "aaguid",
        "backed_up",
        "last_seq",
    ];

    fn id(&self) -> &str {
        &self.id
    }

    fn last_seq(&self) -> i64 {
        self.last_seq
    }

    fn set_last_seq(&mut self, seq: i64) {
        self.last_seq = seq;
    }

    fn bind<'q>(&'q self, q: super::AnyQuery<'q>) -> super::AnyQuery<'q> {
        q.bind(&self.id)
            .bind(&self.user_id)
            .bind(&self.factor_type)
            .bind(&self.status)
            .bind(&self.label)
            .bind(&self.created_at)
            .bind(&self.expires_at)
            .bind(&self.last_verified_at)
            .bind(self.failed_attempts)
            .bind(&self.locked_until)
            .bind(&self.destination)
            .bind(&self.credential_id)
            .bind(&self.aaguid)
            .bind(self.backed_up)
            .bind(self.last_seq)
    }
}

const COLUMNS: &str = "id, user_id, factor_type, status, label, created_at, expires_at, \
     last_verified_at, failed_attempts, locked_until, destination, credential_id, aaguid, \
     backed_up, last_seq";

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
