use sqlx::{AnyConnection, FromRow};
use tessera_domain::user::UserEvent;

use crate::{Error, StoredEvent, read_model::Queries, ts};

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
    /// `ACTIVE`, …
    pub status: String,
    /// RFC 3339.
    pub created_at: String,
    /// Last applied stream sequence.
    pub last_seq: i64,
}

pub(super) async fn apply(
    conn: &mut AnyConnection,
    stored: &StoredEvent,
    event: UserEvent,
) -> Result<(), Error> {
    let id = stored.aggregate_id.as_str();
    let seq = stored.sequence;
    match event {
        UserEvent::Registered(e) => {
            sqlx::query(
                "INSERT INTO users_v1 (id, login, email, phone_number, display_name, status, created_at, last_seq) \
                 VALUES ($1, $2, $3, $4, $5, 'ACTIVE', $6, $7) ON CONFLICT (id) DO NOTHING",
            )
            .bind(id)
            .bind(e.login)
            .bind(e.email)
            .bind(e.phone_number)
            .bind(e.display_name)
            .bind(ts(e.at))
            .bind(seq)
            .execute(&mut *conn)
            .await?;
        }
        UserEvent::PasswordSet(_) | UserEvent::LoginFailed(_) => {
            sqlx::query("UPDATE users_v1 SET last_seq = $1 WHERE id = $2 AND last_seq < $1")
                .bind(seq)
                .bind(id)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

const COLUMNS: &str = "id, login, email, phone_number, display_name, status, created_at, last_seq";

impl Queries {
    /// One user by id.
    ///
    /// # Errors
    /// Database errors.
    pub async fn user(&self, id: &str) -> Result<Option<UserRow>, Error> {
        Ok(
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM users_v1 WHERE id = $1"))
                .bind(id)
                .fetch_optional(&self.db.pool)
                .await?,
        )
    }

    /// Up to `limit` users with id greater than `after`, by id.
    ///
    /// # Errors
    /// Database errors.
    pub async fn users_after(
        &self,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<UserRow>, Error> {
        Ok(sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM users_v1 WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.db.pool)
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
