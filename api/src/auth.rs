//! Who is calling: `Authorization: Bearer <token>` to a [`Caller`]. API keys are
//! `tsk_<id>_<secret>`; only a keyed hash (HMAC-SHA256) of the secret is stored, which is
//! enough for 256-bit random secrets and costs microseconds rather than argon2's milliseconds.
//! User access tokens are JWTs ([`crate::tokens`]).

use std::sync::Arc;

use rand::RngCore;
use sqlx::Row;
use tessera_domain::{crypto::KeyedHasher, ids::UserId, services::Clock};
use tessera_store::{Db, ts};

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
    },
    /// An enrolment-only token (policy REQUIRED, no factor yet): may only enrol and activate
    /// factors of that user, and read it.
    Enrollment {
        /// The user.
        user_id: UserId,
    },
}

impl Caller {
    /// The actor recorded in event metadata.
    pub fn actor(&self) -> String {
        match self {
            Self::Admin { key_id } => format!("api-key:{key_id}"),
            Self::User { user_id } | Self::Enrollment { user_id } => format!("user:{user_id}"),
        }
    }

    /// Whether this caller may act on `user`'s data. Enrolment-only tokens may not: the few
    /// operations open to them ask [`Caller::may_enroll_for`].
    pub fn may_act_on(&self, user: UserId) -> bool {
        match self {
            Self::Admin { .. } => true,
            Self::User { user_id } => *user_id == user,
            Self::Enrollment { .. } => false,
        }
    }

    /// Whether this caller may enrol and activate factors of `user` (and read that user).
    pub fn may_enroll_for(&self, user: UserId) -> bool {
        match self {
            Self::Admin { .. } => true,
            Self::User { user_id } | Self::Enrollment { user_id } => *user_id == user,
        }
    }
}

/// Checks bearer tokens.
#[derive(Clone)]
pub struct Authenticator {
    hasher: KeyedHasher,
    bootstrap_hash: Option<String>,
    db: Db,
    tokens: Arc<TokenIssuer>,
    clock: Arc<dyn Clock>,
}

impl Authenticator {
    /// An authenticator over the `api_keys` table and access tokens.
    pub fn new(
        hasher: KeyedHasher,
        bootstrap_key: Option<&str>,
        db: Db,
        tokens: Arc<TokenIssuer>,
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
            return match claims.scope()? {
                Scope::User => Some(Caller::User { user_id }),
                Scope::Enroll => Some(Caller::Enrollment { user_id }),
            };
        }
        let (id, secret) = parse_api_key(token)?;
        let row = sqlx::query("SELECT key_hash FROM api_keys WHERE id = $1 AND revoked_at IS NULL")
            .bind(id)
            .fetch_optional(&self.db.pool)
            .await
            .inspect_err(|e| tracing::error!(error = %e, "api key lookup failed"))
            .ok()??;
        let stored: String = row.try_get("key_hash").ok()?;
        self.hasher
            .verify(KEY_DOMAIN, secret, &stored)
            .then(|| Caller::Admin { key_id: id.into() })
    }

    /// Mints an admin API key named `name`; returns `(id, token)`. The token is shown once.
    ///
    /// # Errors
    /// Database errors.
    pub async fn create_api_key(&self, name: &str) -> Result<(String, String), sqlx::Error> {
        let mut id = [0u8; 8];
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut id);
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let id = hex(&id);
        let secret = hex(&secret);
        sqlx::query(
            "INSERT INTO api_keys (id, name, key_hash, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&id)
        .bind(name)
        .bind(self.hasher.hash(KEY_DOMAIN, &secret))
        .bind(ts(chrono::Utc::now()))
        .execute(&self.db.pool)
        .await?;
        let token = format!("tsk_{id}_{secret}");
        Ok((id, token))
    }
}

fn parse_api_key(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix("tsk_")?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == 16 && secret.len() == 64).then_some((id, secret))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
