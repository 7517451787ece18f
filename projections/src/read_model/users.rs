use sqlx::FromRow;
use tessera_domain::user::{UserEvent, login::enforce_login};

use crate::{
    Error, StoredEvent,
    read_model::{Queries, Rows},
    ts,
};

/// The status of a deleted user's row, which no query returns.
pub const DELETED: &str = "DELETED";

/// A row of `users_v1`.
#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct UserRow {
    /// User id.
    pub id: String,
    /// Normalised login.
    pub login: String,
    /// E-mail address.
    pub email: Option<String>,
    /// Phone number.
    pub phone_number: Option<String>,
    /// Display name.
    pub display_name: Option<String>,
    /// Given name.
    pub first_name: Option<String>,
    /// Family name.
    pub last_name: Option<String>,
    /// `ACTIVE`, …
    pub status: String,
    /// RFC 3339.
    pub created_at: String,
    /// Last applied stream sequence.
    pub last_seq: i64,
    /// Unused recovery codes.
    pub recovery_codes_remaining: i64,
    /// 1 while the user's second factor is hard-locked.
    pub second_factor_locked: i64,
    /// The login's enforced form (`enforce_login`), `None` when the rules refuse a login
    /// registered before them. Equal to `login` for every user registered since.
    pub login_key: Option<String>,
}

/// Folds one event into the rows of a batch. Mirrors what one SQL statement per event would
/// do: a `Registered` creates the row unless it exists; any later event applies only to an
/// existing row that has not seen it (`last_seq < seq`), so re-applying is a no-op.
pub(super) fn fold(rows: &mut Rows<UserRow>, stored: &StoredEvent, event: UserEvent) {
    let id = stored.aggregate_id.as_str();
    let seq = stored.sequence;
    match event {
        UserEvent::Registered(e) => rows.create(UserRow {
            id: id.to_string(),
            login_key: enforce_login(&e.login).ok(),
            login: e.login,
            email: e.email,
            phone_number: e.phone_number,
            display_name: e.display_name,
            first_name: e.first_name,
            last_name: e.last_name,
            status: "ACTIVE".into(),
            created_at: ts(e.at),
            last_seq: seq,
            recovery_codes_remaining: 0,
            second_factor_locked: 0,
        }),
        UserEvent::RecoveryCodesGenerated(e) => rows.update(id, seq, |r| {
            r.recovery_codes_remaining = i64::try_from(e.hashes.len()).unwrap_or(0);
        }),
        UserEvent::RecoveryUsed(e) => rows.update(id, seq, |r| {
            r.recovery_codes_remaining = i64::from(e.remaining);
        }),
        UserEvent::LockedOut(_) => rows.update(id, seq, |r| r.second_factor_locked = 1),
        UserEvent::Unlocked(_) => rows.update(id, seq, |r| r.second_factor_locked = 0),
        UserEvent::ProfileUpdated(e) => rows.update(id, seq, |r| {
            r.email = e.email;
            r.phone_number = e.phone_number;
            r.display_name = e.display_name;
            r.first_name = e.first_name;
            r.last_name = e.last_name;
        }),
        UserEvent::Deactivated(_) => rows.update(id, seq, |r| r.status = "DEACTIVATED".into()),
        UserEvent::Reactivated(_) => rows.update(id, seq, |r| r.status = "ACTIVE".into()),
        // The row stays (it holds the login, which stays taken) without the person's data;
        // every query leaves it out.
        UserEvent::Deleted(_) => rows.update(id, seq, |r| {
            r.status = DELETED.into();
            r.email = None;
            r.phone_number = None;
            r.display_name = None;
            r.first_name = None;
            r.last_name = None;
            r.recovery_codes_remaining = 0;
            r.second_factor_locked = 0;
        }),
        UserEvent::PasswordSet(_)
        | UserEvent::LoginFailed(_)
        | UserEvent::LoginThrottled(_)
        | UserEvent::LoginFailuresReset(_)
        | UserEvent::DeviceTrusted(_)
        | UserEvent::TrustedDeviceUsed(_)
        | UserEvent::DeviceRevoked(_)
        | UserEvent::FailedAttempt(_)
        | UserEvent::FailuresReset(_)
        | UserEvent::SessionsRevoked(_)
        | UserEvent::CodeRefused(_)
        | UserEvent::SmsBudgetThresholdCrossed(_) => {
            rows.update(id, seq, |_| {});
        }
    }
}

impl super::Row for UserRow {
    const TABLE: &'static str = "users_v1";
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "login",
        "email",
        "phone_number",
        "display_name",
        "first_name",
        "last_name",
        "status",
        "created_at",
        "last_seq",
        "recovery_codes_remaining",
        "second_factor_locked",
        "login_key",
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
            .bind(&self.login)
            .bind(&self.email)
            .bind(&self.phone_number)
            .bind(&self.display_name)
            .bind(&self.first_name)
            .bind(&self.last_name)
            .bind(&self.status)
            .bind(&self.created_at)
            .bind(self.last_seq)
            .bind(self.recovery_codes_remaining)
            .bind(self.second_factor_locked)
            .bind(&self.login_key)
    }
}

const COLUMNS: &str = "id, login, email, phone_number, display_name, first_name, last_name, \
     status, created_at, last_seq, \
     recovery_codes_remaining, second_factor_locked, login_key";

impl Queries {
    /// One user by id.
    ///
    /// # Errors
    /// Database errors.
    pub async fn user(&self, id: &str) -> Result<Option<UserRow>, Error> {
        Ok(sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM users_v1 WHERE id = $1 AND status <> '{DELETED}'"
        ))
        .bind(id)
        .fetch_optional(&self.db.pool)
        .await?)
    }

    /// Up to `limit` users created after the `(created_at, id)` cursor, oldest first (users
    /// created in the same microsecond by id).
    ///
    /// # Errors
    /// Database errors.
    pub async fn users_after(
        &self,
        after: Option<(&str, &str)>,
        limit: i64,
    ) -> Result<Vec<UserRow>, Error> {
        let (at, id) = after.unwrap_or(("", ""));
        Ok(sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM users_v1 \
             WHERE (created_at > $1 OR (created_at = $1 AND id > $2)) AND status <> '{DELETED}' \
             ORDER BY created_at, id LIMIT $3"
        ))
        .bind(at)
        .bind(id)
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?)
    }

    /// The oldest user (deleted ones included: their logins stay taken) whose login enforces
    /// to `key`, whatever form it was registered in.
    ///
    /// # Errors
    /// Database errors.
    pub async fn user_id_by_login_key(&self, key: &str) -> Result<Option<String>, Error> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM users_v1 WHERE login_key = $1 ORDER BY created_at, id LIMIT 1",
        )
        .bind(key)
        .fetch_optional(&self.db.pool)
        .await?)
    }

    /// Users whose logins the login rules no longer accept as they are: refused outright
    /// (no key), or enforcing to the key of an older user (a variant of its login). They
    /// keep logging in with their login as registered; a variant finds the oldest.
    /// `(id, login, key)`, oldest first.
    ///
    /// # Errors
    /// Database errors.
    pub async fn legacy_login_conflicts(
        &self,
    ) -> Result<Vec<(String, String, Option<String>)>, Error> {
        Ok(sqlx::query_as(
            "SELECT u.id, u.login, u.login_key FROM users_v1 u WHERE u.login_key IS NULL \
             OR EXISTS (SELECT 1 FROM users_v1 o WHERE o.login_key = u.login_key \
                        AND (o.created_at < u.created_at \
                             OR (o.created_at = u.created_at AND o.id < u.id))) \
             ORDER BY u.created_at, u.id",
        )
        .fetch_all(&self.db.pool)
        .await?)
    }

    /// How many users there are.
    ///
    /// # Errors
    /// Database errors.
    pub async fn user_count(&self) -> Result<i64, Error> {
        Ok(sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM users_v1 WHERE status <> '{DELETED}'"
        ))
        .fetch_one(&self.db.pool)
        .await?)
    }

    /// Every row of `users_v1` and `factors_v1` as text, in a fixed order: for comparing a
    /// rebuild with the live tables.
    ///
    /// # Errors
    /// Database errors.
    pub async fn dump(&self) -> Result<Vec<String>, Error> {
        let users: Vec<UserRow> =
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM users_v1 ORDER BY id"))
                .fetch_all(&self.db.pool)
                .await?;
        let factors = self.factors_where("1 = 1", None).await?;
        Ok(users
            .iter()
            .map(|u| format!("{u:?}"))
            .chain(factors.iter().map(|f| format!("{f:?}")))
            .collect())
    }
}
