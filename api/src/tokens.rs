//! Access tokens: short-lived JWTs signed with Ed25519 (`EdDSA`) under the key ring of
//! [`crate::signing`], each with the `kid` of its key, so any backend verifies them with a
//! stock JWT library against `GET /.well-known/jwks.json`, and every node of a cluster
//! verifies what any node issued.
//!
//! Claims: `iss` (`TESSERA_ISSUER`), `sub` = the user id, `iat`/`exp` from the server clock,
//! `jti`, `amr` (RFC 8176 methods used: `pwd`, `otp`, `sms`, `email`), `acr` (`mfa` when a
//! second factor was used, `pwd` when not), `auth_time` (when the user last proved who they
//! are: the login; OpenID Connect Core §2), `generation` (the user's token generation at
//! issue: a password change, a hard lock, a deactivation or `revokeSessions` moves it on, and
//! older tokens are refused) and `scope` (`user`, or `enroll` for the
//! enrolment-only token a user without factors gets under policy REQUIRED). Expiry is checked
//! against the injected clock, not the system's.

use std::{
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use chrono::{DateTime, TimeDelta, Utc};
use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};
use tessera_domain::{crypto::MasterKey, ids::UserId, services::Clock};
use tessera_store::Db;
use tokio::{sync::watch, task::JoinHandle};

use crate::signing::{self, KeyDeriver, KeyRing};

/// How often a node reloads the key ring on its own (a rotation reaches every node within
/// this); a token or JWKS request naming a key it does not know reloads sooner.
pub const RING_REFRESH: Duration = Duration::from_secs(5);

/// The least time between two reloads a request may cause.
const ON_DEMAND_REFRESH: Duration = Duration::from_secs(1);

/// What a token lets its bearer do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Read and manage the own user.
    User,
    /// Only enrol and activate factors of the own user (policy REQUIRED, no factor yet).
    Enroll,
}

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Enroll => "enroll",
        }
    }
}

/// The claims of an access token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// The user id.
    pub sub: String,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Expires at (Unix seconds).
    pub exp: i64,
    /// Token id.
    pub jti: String,
    /// Authentication methods used.
    pub amr: Vec<String>,
    /// `mfa` or `pwd`.
    pub acr: String,
    /// When the user authenticated (Unix seconds); tokens issued before the claim existed
    /// count from `iat`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
    /// The user's token generation when it was issued.
    #[serde(default)]
    pub generation: u32,
    /// `user` or `enroll`.
    pub scope: String,
}

impl Claims {
    /// The user, if `sub` is one.
    pub fn user_id(&self) -> Option<UserId> {
        UserId::parse(&self.sub)
    }

    /// Whether a second factor was proven (`acr` = `mfa`).
    pub fn is_mfa(&self) -> bool {
        self.acr == "mfa"
    }

    /// When the user authenticated.
    pub fn auth_time(&self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp(self.auth_time.unwrap_or(self.iat), 0)
    }

    /// The scope, if known.
    pub fn scope(&self) -> Option<Scope> {
        match self.scope.as_str() {
            "user" => Some(Scope::User),
            "enroll" => Some(Scope::Enroll),
            _ => None,
        }
    }
}

/// Issues and checks access tokens.
pub struct TokenIssuer {
    issuer: String,
    ttl: TimeDelta,
    deriver: KeyDeriver,
    db: Db,
    clock: Arc<dyn Clock>,
    ring: RwLock<Arc<KeyRing>>,
    loaded: Mutex<Instant>,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("issuer", &self.issuer)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl TokenIssuer {
    /// An issuer named `issuer` with keys derived from `master` and the generations recorded
    /// in the store (generation 1 is created on first start); tokens live `ttl`.
    ///
    /// # Errors
    /// Database errors.
    pub async fn load(
        master: &MasterKey,
        issuer: String,
        ttl: TimeDelta,
        db: Db,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, sqlx::Error> {
        let deriver = KeyDeriver::new(master);
        let ring = signing::load(&db, &deriver, clock.now()).await?;
        Ok(Self {
            issuer,
            ttl,
            deriver,
            db,
            clock,
            ring: RwLock::new(Arc::new(ring)),
            loaded: Mutex::new(Instant::now()),
        })
    }

    /// How long tokens live.
    pub fn ttl(&self) -> TimeDelta {
        self.ttl
    }

    /// The `iss` of every token.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    fn ring(&self) -> Arc<KeyRing> {
        match self.ring.read() {
            Ok(ring) => Arc::clone(&ring),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Reloads the key ring from the store.
    ///
    /// # Errors
    /// Database errors (the old ring stays).
    pub async fn refresh(&self) -> Result<(), sqlx::Error> {
        let ring = signing::load(&self.db, &self.deriver, self.clock.now()).await?;
        match self.ring.write() {
            Ok(mut slot) => *slot = Arc::new(ring),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(ring),
        }
        if let Ok(mut at) = self.loaded.lock() {
            *at = Instant::now();
        }
        Ok(())
    }

    /// Reloads unless the ring was loaded less than `age` ago.
    async fn refresh_if_older(&self, age: Duration) {
        let stale = self.loaded.lock().map_or(true, |at| at.elapsed() >= age);
        if stale && let Err(e) = self.refresh().await {
            tracing::warn!(error = %e, "could not reload the signing keys");
        }
    }

    /// Reloads the ring every [`RING_REFRESH`] until `stop` turns true.
    pub fn spawn(self: Arc<Self>, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(RING_REFRESH) => {}
                    changed = stop.changed() => if changed.is_err() { return },
                }
                if *stop.borrow() {
                    return;
                }
                self.refresh_if_older(RING_REFRESH).await;
            }
        })
    }

    /// The JWKS document: every key a valid token can carry now.
    pub async fn jwks(&self) -> serde_json::Value {
        self.refresh_if_older(ON_DEMAND_REFRESH).await;
        self.ring().jwks(self.clock.now(), self.ttl)
    }

    /// A token for `user`, who proved `amr`, with `scope`, under the user's token `generation`,
    /// issued at `now`.
    ///
    /// # Errors
    /// Only if signing fails, which Ed25519 over a derived key does not.
    pub fn issue(
        &self,
        user: UserId,
        amr: &[&str],
        scope: Scope,
        generation: u32,
        now: DateTime<Utc>,
    ) -> Result<(String, Claims), jsonwebtoken::errors::Error> {
        // A trusted device stands in for a factor at login, but proves none now: not `mfa`.
        let mfa = amr.iter().any(|m| *m != "pwd" && *m != "device");
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: user.to_string(),
            iat: now.timestamp(),
            exp: (now + self.ttl).timestamp(),
            jti: uuid::Uuid::new_v4().to_string(),
            amr: amr.iter().map(|m| (*m).to_string()).collect(),
            acr: if mfa { "mfa" } else { "pwd" }.into(),
            auth_time: Some(now.timestamp()),
            generation,
            scope: scope.as_str().into(),
        };
        let ring = self.ring();
        let key = ring
            .active()
            .ok_or(jsonwebtoken::errors::ErrorKind::InvalidEcdsaKey)?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &key.encoding)?;
        Ok((token, claims))
    }

    /// The claims of a token signed by a live key of ours, issued by us and not expired at
    /// `now`. A key this node has not loaded yet (rotated on another node) reloads the ring
    /// first.
    pub async fn verify(&self, token: &str, now: DateTime<Utc>) -> Option<Claims> {
        let kid = jsonwebtoken::decode_header(token).ok()?.kid?;
        if !self.ring().knows(&kid) {
            self.refresh_if_older(ON_DEMAND_REFRESH).await;
        }
        self.verify_loaded(token, &kid, now)
    }

    fn verify_loaded(&self, token: &str, kid: &str, now: DateTime<Utc>) -> Option<Claims> {
        let ring = self.ring();
        let key = ring
            .live(now, self.ttl)
            .into_iter()
            .find(|k| k.kid == kid)?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        // Expiry is checked against the server's clock below, not the system clock.
        validation.validate_exp = false;
        let claims = jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation)
            .ok()?
            .claims;
        let now = now.timestamp();
        (now < claims.exp && claims.iat <= now + 60).then_some(claims)
    }
}

#[cfg(test)]
mod tests {
    use tessera_domain::services::FixedClock;

    use super::*;

    const T0: i64 = 1_700_000_000;

    /// An issuer over a fresh in-memory store holding only the key table.
    async fn issuer(key: u8) -> TokenIssuer {
        let db = Db::connect("sqlite::memory:", 1).await.unwrap();
        sqlx::raw_sql(include_str!(
            "../../migrations/sqlite/0008_signing_keys.sql"
        ))
        .execute(&db.pool)
        .await
        .unwrap();
        TokenIssuer::load(
            &MasterKey::new([key; 32]),
            "https://tessera.example".into(),
            TimeDelta::seconds(900),
            db,
            Arc::new(FixedClock::at_unix(T0)),
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn tokens_verify_until_they_expire_and_only_under_their_key() {
        let now = DateTime::from_timestamp(T0, 0).unwrap();
        let user = UserId::for_login("alice");
        let one = issuer(1).await;
        let (token, claims) = one
            .issue(user, &["pwd", "otp"], Scope::User, 0, now)
            .unwrap();
        assert_eq!(claims.acr, "mfa");
        assert_eq!(claims.iss, "https://tessera.example");
        assert_eq!(claims.exp - claims.iat, 900);
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::EdDSA);
        assert_eq!(
            header.kid.as_deref(),
            Some(one.ring().active().unwrap().kid.as_str())
        );
        let seen = one.verify(&token, now).await.unwrap();
        assert_eq!(seen, claims);
        assert_eq!(seen.user_id(), Some(user));
        assert_eq!(seen.scope(), Some(Scope::User));
        assert!(
            one.verify(&token, now + TimeDelta::seconds(899))
                .await
                .is_some()
        );
        assert!(
            one.verify(&token, now + TimeDelta::seconds(900))
                .await
                .is_none()
        );
        assert!(issuer(2).await.verify(&token, now).await.is_none());
        let mut tampered = token;
        tampered.insert(tampered.rfind('.').unwrap() - 3, 'A');
        assert!(one.verify(&tampered, now).await.is_none());
        let (pwd_only, claims) = one.issue(user, &["pwd"], Scope::Enroll, 0, now).unwrap();
        assert_eq!(claims.acr, "pwd");
        assert_eq!(
            one.verify(&pwd_only, now).await.unwrap().scope(),
            Some(Scope::Enroll)
        );
    }

    #[tokio::test]
    async fn unsigned_and_symmetric_tokens_are_refused() {
        use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
        let now = DateTime::from_timestamp(T0, 0).unwrap();
        let one = issuer(1).await;
        let kid = one.ring().active().unwrap().kid.clone();
        let body = B64.encode(
            serde_json::json!({"iss": one.issuer(), "sub": UserId::for_login("alice").to_string(),
                "iat": now.timestamp(), "exp": now.timestamp() + 60, "jti": "x",
                "amr": ["pwd"], "acr": "pwd", "scope": "user"})
            .to_string(),
        );
        let none = B64.encode(format!(r#"{{"alg":"none","typ":"JWT","kid":"{kid}"}}"#));
        assert!(one.verify(&format!("{none}.{body}."), now).await.is_none());
        // HS256 "signed" with the public key, the classic algorithm confusion.
        let x = one.ring().active().unwrap().x.clone();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid);
        let claims: Claims = serde_json::from_slice(&B64.decode(&body).unwrap()).unwrap();
        let forged = jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(x.as_bytes()),
        )
        .unwrap();
        assert!(one.verify(&forged, now).await.is_none());
    }
}
