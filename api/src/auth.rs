//! Who is calling: `Authorization: Bearer <token>` to a [`Caller`]. API keys are
//! `tsk_<id>_<secret>`; only a keyed hash (HMAC-SHA256) of the secret is stored, which is
//! enough for 256-bit random secrets and costs microseconds rather than argon2's milliseconds.
//! User access tokens are JWTs ([`crate::tokens`]), valid while their user's token generation
//! is the one they carry (read from the user's stream on every request, so a revocation holds
//! at once on every node).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rand::RngCore;
use sqlx::Row;
use tessera_domain::{
    api_key::{ApiKeyCreated, ApiKeyScope},
    crypto::KeyedHasher,
    ids::UserId,
    services::Clock,
    user::User,
};
use tessera_store::{Db, Store, parse_ts, ts};

use crate::tokens::{Scope, TokenIssuer};

const KEY_DOMAIN: &str = "api-key";
const BOOTSTRAP_ID: &str = "bootstrap";

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// An admin API key (or the bootstrap key): may do everything.
    Admin {
        /// The key's id (`bootstrap` for the bootstrap key), recorded as the actor.
        key_id: String,
    },
    /// A user's access token: may act only on that user.
    User {
        /// The user.
        user_id: UserId,
        /// Whether the token's login proved a second factor (`acr` = `mfa`).
        mfa: bool,
        /// When the user authenticated (`auth_time`).
        auth_time: DateTime<Utc>,
    },
    /// An enrolment-only token (policy REQUIRED, no factor yet): may only enrol and activate
    /// factors of that user, and read it.
    Enrollment {
        /// The user.
        user_id: UserId,
    },
    /// A `read:audit` API key: may read the event log (query and subscription), nothing else.
    Auditor {
        /// The key's id, recorded as the actor.
        key_id: String,
    },
    /// Someone with the database and the master key at hand, running a `tessera` subcommand:
    /// an admin, recorded as `operator:cli`.
    Operator,
}

impl Caller {
    /// The actor recorded in event metadata.
    pub fn actor(&self) -> String {
        match self {
            Self::Admin { key_id } | Self::Auditor { key_id } => format!("api-key:{key_id}"),
            Self::Operator => "operator:cli".to_string(),
            Self::User { user_id, .. } | Self::Enrollment { user_id } => format!("user:{user_id}"),
        }
    }

    /// Whether this caller may act on `user`'s data. Enrolment-only tokens may not: the few
    /// operations open to them ask [`Caller::may_enroll_for`].
    pub fn may_act_on(&self, user: UserId) -> bool {
        match self {
            Self::Admin { .. } | Self::Operator => true,
            Self::User { user_id, .. } => *user_id == user,
            Self::Enrollment { .. } | Self::Auditor { .. } => false,
        }
    }

    /// Whether this caller may enrol and activate factors of `user` (and read that user).
    pub fn may_enroll_for(&self, user: UserId) -> bool {
        match self {
            Self::Admin { .. } | Self::Operator => true,
            Self::User { user_id, .. } | Self::Enrollment { user_id } => *user_id == user,
            Self::Auditor { .. } => false,
        }
    }

    /// Whether this caller holds full admin rights (an admin key, the bootstrap key, the CLI).
    pub fn is_admin(&self) -> bool {
        matches!(self, Self::Admin { .. } | Self::Operator)
    }

    /// Whether this caller may read the event log: admins and `read:audit` keys.
    pub fn may_read_audit(&self) -> bool {
        matches!(
            self,
            Self::Admin { .. } | Self::Operator | Self::Auditor { .. }
        )
    }
}

/// One row of `api_keys`: what a listing shows (never the hash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyRow {
    /// The key's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// `admin` or `read:audit`.
    pub scope: ApiKeyScope,
    /// When it was minted.
    pub created_at: DateTime<Utc>,
    /// Who minted it (`None` for keys minted before their events were recorded).
    pub created_by: Option<String>,
    /// When it stops working by itself.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Who revoked it.
    pub revoked_by: Option<String>,
}

/// A freshly drawn key: its id, the token shown once, and the secret's keyed hash.
pub struct MintedKey {
    /// The public id.
    pub id: String,
    /// `tsk_<id>_<secret>`.
    pub token: String,
    hash: String,
}

/// Checks bearer tokens.
#[derive(Clone)]
pub struct Authenticator {
    hasher: KeyedHasher,
    bootstrap_hash: Option<String>,
    db: Db,
    tokens: Arc<TokenIssuer>,
    users: Arc<Store<User>>,
    clock: Arc<dyn Clock>,
}

impl Authenticator {
    /// An authenticator over the `api_keys` table and access tokens.
    pub fn new(
        hasher: KeyedHasher,
        bootstrap_key: Option<&str>,
        db: Db,
        tokens: Arc<TokenIssuer>,
        users: Arc<Store<User>>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let bootstrap_hash = bootstrap_key
            .filter(|k| !k.is_empty())
            .map(|k| hasher.hash(KEY_DOMAIN, k));
        Self {
            hasher,
            bootstrap_hash,
            db,
            tokens,
            users,
            clock,
        }
    }

    /// The caller a bearer token stands for, or `None`.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Option<Caller> {
        let token = authorization?.strip_prefix("Bearer ")?.trim();
        if token.is_empty() || token.len() > 4096 {
            return None;
        }
        if let Some(stored) = &self.bootstrap_hash
            && self.hasher.verify(KEY_DOMAIN, token, stored)
        {
            return Some(Caller::Admin {
                key_id: BOOTSTRAP_ID.into(),
            });
        }
        if token.bytes().filter(|b| *b == b'.').count() == 2 {
            let claims = self.tokens.verify(token, self.clock.now()).await?;
            let user_id = claims.user_id()?;
            let (user, _) = self
                .users
                .load(&user_id.to_string())
                .await
                .inspect_err(|e| tracing::error!(error = %e, "user lookup failed"))
                .ok()?;
            // A password change, a hard lock, a deactivation or `revokeSessions` since the
            // token was issued ends it.
            if !user.exists() || claims.generation != user.token_generation {
                return None;
            }
            return match claims.scope()? {
                Scope::User => Some(Caller::User {
                    user_id,
                    mfa: claims.is_mfa(),
                    auth_time: claims.auth_time()?,
                }),
                Scope::Enroll => Some(Caller::Enrollment { user_id }),
            };
        }
        let (id, secret) = parse_api_key(token)?;
        // Read on every request, so a revocation or an expiry holds at once on every node.
        let row = sqlx::query(
            "SELECT key_hash, scope FROM api_keys WHERE id = $1 AND revoked_at IS NULL \
             AND (expires_at IS NULL OR expires_at > $2)",
        )
        .bind(id)
        .bind(ts(self.clock.now()))
        .fetch_optional(&self.db.pool)
        .await
        .inspect_err(|e| tracing::error!(error = %e, "api key lookup failed"))
        .ok()??;
        let stored: String = row.try_get("key_hash").ok()?;
        let scope: String = row.try_get("scope").ok()?;
        if !self.hasher.verify(KEY_DOMAIN, secret, &stored) {
            return None;
        }
        let key_id = id.to_string();
        match ApiKeyScope::parse(&scope)? {
            ApiKeyScope::Admin => Some(Caller::Admin { key_id }),
            ApiKeyScope::ReadAudit => Some(Caller::Auditor { key_id }),
        }
    }

    /// Draws a new key's id and secret. Nothing is stored yet.
    pub fn mint(&self) -> MintedKey {
        let mut id = [0u8; 8];
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut id);
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let id = hex(&id);
        let secret = hex(&secret);
        MintedKey {
            token: format!("tsk_{id}_{secret}"),
            hash: self.hasher.hash(KEY_DOMAIN, &secret),
            id,
        }
    }

    /// Stores the row of a key whose `ApiKeyCreated` is recorded.
    ///
    /// # Errors
    /// Database errors.
    pub async fn insert_key(
        &self,
        key: &MintedKey,
        created: &ApiKeyCreated,
    ) -> Result<(), sqlx::Error> {
        let _turn = self.db.write_turn().await;
        sqlx::query(
            "INSERT INTO api_keys (id, name, key_hash, created_at, scope, expires_at, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&key.id)
        .bind(&created.name)
        .bind(&key.hash)
        .bind(ts(created.at))
        .bind(created.scope.as_str())
        .bind(created.expires_at.map(ts))
        .bind(&created.created_by)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// Marks a key's row revoked (a second call keeps the first time and actor). Returns
    /// whether the row exists.
    ///
    /// # Errors
    /// Database errors.
    pub async fn revoke_key(
        &self,
        id: &str,
        by: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, sqlx::Error> {
        let _turn = self.db.write_turn().await;
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2), \
             revoked_by = COALESCE(revoked_by, $3) WHERE id = $1",
        )
        .bind(id)
        .bind(ts(at))
        .bind(by)
        .execute(&self.db.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Up to `limit` keys with ids after `after`, in id order.
    ///
    /// # Errors
    /// Database errors.
    pub async fn list_keys(
        &self,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<ApiKeyRow>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT id, name, scope, created_at, created_by, expires_at, revoked_at, revoked_by \
             FROM api_keys WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(key_row).collect()
    }

    /// How many keys there are, revoked and expired ones included.
    ///
    /// # Errors
    /// Database errors.
    pub async fn count_keys(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT COUNT(*) FROM api_keys")
            .fetch_one(&self.db.pool)
            .await
    }

    /// One key's row.
    ///
    /// # Errors
    /// Database errors.
    pub async fn key(&self, id: &str) -> Result<Option<ApiKeyRow>, sqlx::Error> {
        sqlx::query(
            "SELECT id, name, scope, created_at, created_by, expires_at, revoked_at, revoked_by \
             FROM api_keys WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.db.pool)
        .await?
        .as_ref()
        .map(key_row)
        .transpose()
    }
}

fn key_row(row: &sqlx::any::AnyRow) -> Result<ApiKeyRow, sqlx::Error> {
    let time = |c: &str| -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        Ok(row
            .try_get::<Option<String>, _>(c)?
            .as_deref()
            .and_then(parse_ts))
    };
    let scope: String = row.try_get("scope")?;
    Ok(ApiKeyRow {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        scope: ApiKeyScope::parse(&scope).unwrap_or_default(),
        created_at: time("created_at")?.unwrap_or_default(),
        created_by: row.try_get("created_by")?,
        expires_at: time("expires_at")?,
        revoked_at: time("revoked_at")?,
        revoked_by: row.try_get("revoked_by")?,
    })
}

fn parse_api_key(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix("tsk_")?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == 16 && secret.len() == 64).then_some((id, secret))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
