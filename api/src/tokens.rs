//! Access tokens: short-lived JWTs signed with HS256 under a key derived from the master key
//! (`MasterKey::derive("access-token/v1")`), so every node of a cluster verifies what any
//! node issued and rotating the master key ends every token.
//!
//! Claims: `iss` = `tessera`, `sub` = the user id, `iat`/`exp` from the server clock,
//! `jti`, `amr` (RFC 8176 methods used: `pwd`, `otp`, `sms`, `email`), `acr` (`mfa` when a
//! second factor was used, `pwd` when not) and `scope` (`user`, or `enroll` for the
//! enrolment-only token a user without factors gets under policy REQUIRED). Expiry is checked
//! against the injected clock, not the system's.

use chrono::{DateTime, TimeDelta, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tessera_domain::{crypto::MasterKey, ids::UserId};

/// The `iss` of every token.
pub const ISSUER: &str = "tessera";

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
    /// `user` or `enroll`.
    pub scope: String,
}

impl Claims {
    /// The user, if `sub` is one.
    pub fn user_id(&self) -> Option<UserId> {
        UserId::parse(&self.sub)
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
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl: TimeDelta,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl TokenIssuer {
    /// An issuer whose key is derived from `master`; tokens live `ttl`.
    pub fn new(master: &MasterKey, ttl: TimeDelta) -> Self {
        let key = master.derive("access-token/v1");
        Self {
            encoding: EncodingKey::from_secret(&key),
            decoding: DecodingKey::from_secret(&key),
            ttl,
        }
    }

    /// How long tokens live.
    pub fn ttl(&self) -> TimeDelta {
        self.ttl
    }

    /// A token for `user`, who proved `amr`, with `scope`, issued at `now`.
    ///
    /// # Errors
    /// Only if signing fails, which HS256 over a fixed key does not.
    pub fn issue(
        &self,
        user: UserId,
        amr: &[&str],
        scope: Scope,
        now: DateTime<Utc>,
    ) -> Result<(String, Claims), jsonwebtoken::errors::Error> {
        let mfa = amr.iter().any(|m| *m != "pwd");
        let claims = Claims {
            iss: ISSUER.into(),
            sub: user.to_string(),
            iat: now.timestamp(),
            exp: (now + self.ttl).timestamp(),
            jti: uuid::Uuid::new_v4().to_string(),
            amr: amr.iter().map(|m| (*m).to_string()).collect(),
            acr: if mfa { "mfa" } else { "pwd" }.into(),
            scope: scope.as_str().into(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?;
        Ok((token, claims))
    }

    /// The claims of a token signed by us, issued by us and not expired at `now`.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Option<Claims> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        // Expiry is checked against the server's clock below, not the system clock.
        validation.validate_exp = false;
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .ok()?
            .claims;
        let now = now.timestamp();
        (now < claims.exp && claims.iat <= now + 60).then_some(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer(key: u8) -> TokenIssuer {
        TokenIssuer::new(&MasterKey::new([key; 32]), TimeDelta::seconds(900))
    }

    #[test]
    fn tokens_verify_until_they_expire_and_only_under_their_key() {
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let user = UserId::for_login("alice");
        let (token, claims) = issuer(1)
            .issue(user, &["pwd", "otp"], Scope::User, now)
            .unwrap();
        assert_eq!(claims.acr, "mfa");
        assert_eq!(claims.exp - claims.iat, 900);
        let seen = issuer(1).verify(&token, now).unwrap();
        assert_eq!(seen, claims);
        assert_eq!(seen.user_id(), Some(user));
        assert_eq!(seen.scope(), Some(Scope::User));
        assert!(
            issuer(1)
                .verify(&token, now + TimeDelta::seconds(899))
                .is_some()
        );
        assert!(
            issuer(1)
                .verify(&token, now + TimeDelta::seconds(900))
                .is_none()
        );
        assert!(issuer(2).verify(&token, now).is_none());
        let mut tampered = token;
        tampered.insert(tampered.find('.').unwrap() + 3, 'A');
        assert!(issuer(1).verify(&tampered, now).is_none());
        let (pwd_only, claims) = issuer(1).issue(user, &["pwd"], Scope::Enroll, now).unwrap();
        assert_eq!(claims.acr, "pwd");
        assert_eq!(
            issuer(1).verify(&pwd_only, now).unwrap().scope(),
            Some(Scope::Enroll)
        );
    }

    #[test]
    fn unsigned_tokens_are_refused() {
        use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let header = B64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = B64.encode(
            serde_json::json!({"iss": ISSUER, "sub": UserId::for_login("alice").to_string(),
                "iat": now.timestamp(), "exp": now.timestamp() + 60, "jti": "x",
                "amr": ["pwd"], "acr": "pwd", "scope": "user"})
            .to_string(),
        );
        assert!(
            issuer(1)
                .verify(&format!("{header}.{body}."), now)
                .is_none()
        );
    }
}
