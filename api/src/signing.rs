//! Access-token signing keys: Ed25519, one per generation, derived from the master key
//! (`HMAC(master-derived root, generation)` is the private seed), so every node holding the
//! master key signs and verifies with the same keys and nothing secret is stored. The table
//! `signing_keys` records which generations exist and since when; `tessera signing-key
//! rotate` adds one. The newest generation signs; an older one stays published and accepted
//! for one token lifetime after its successor appeared, so tokens it signed verify until they
//! expire. The `kid` is the key's RFC 7638 JWK thumbprint.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64URL};
use chrono::{DateTime, TimeDelta, Utc};
use hmac::{Hmac, Mac};
use jsonwebtoken::{DecodingKey, EncodingKey};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::Row;
use tessera_domain::crypto::MasterKey;
use tessera_store::{Db, parse_ts, ts};

/// The JOSE algorithm of every key.
pub const ALGORITHM: &str = "EdDSA";

/// PKCS#8 v1 wrapping of an Ed25519 seed (RFC 8410): this prefix, then the 32 seed bytes.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Derives the key of any generation; holds only a subkey of the master key.
#[derive(Clone)]
pub struct KeyDeriver {
    root: [u8; 32],
}

impl std::fmt::Debug for KeyDeriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyDeriver(***)")
    }
}

/// One generation's key pair.
pub struct SigningKey {
    /// 1, 2, …
    pub generation: i64,
    /// The JWK thumbprint.
    pub kid: String,
    /// When this generation was added.
    pub created_at: DateTime<Utc>,
    /// The public key, base64url (`x` of the JWK).
    pub x: String,
    pub(crate) encoding: EncodingKey,
    pub(crate) decoding: DecodingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("generation", &self.generation)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl KeyDeriver {
    /// The deriver under `master`.
    pub fn new(master: &MasterKey) -> Self {
        Self {
            root: master.derive("access-token/ed25519"),
        }
    }

    /// Generation `generation`'s key, recorded at `created_at`.
    pub fn key(&self, generation: i64, created_at: DateTime<Utc>) -> SigningKey {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.root).expect("HMAC takes any key");
        mac.update(&generation.to_be_bytes());
        let seed: [u8; 32] = mac.finalize().into_bytes().into();
        let mut der = Vec::with_capacity(48);
        der.extend_from_slice(&PKCS8_ED25519_PREFIX);
        der.extend_from_slice(&seed);
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
            .expect("a 32-byte seed is a valid Ed25519 key");
        let public = pair.public_key().as_ref().to_vec();
        let x = B64URL.encode(&public);
        SigningKey {
            generation,
            kid: thumbprint(&x),
            created_at,
            encoding: EncodingKey::from_ed_der(&der),
            decoding: DecodingKey::from_ed_der(&public),
            x,
        }
    }
}

/// RFC 7638 thumbprint of an Ed25519 public key (members in lexicographic order).
fn thumbprint(x: &str) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    B64URL.encode(Sha256::digest(canonical.as_bytes()))
}

/// The keys of every generation, oldest first.
#[derive(Debug, Default)]
pub struct KeyRing {
    keys: Vec<SigningKey>,
}

impl KeyRing {
    /// From the keys (any order).
    pub fn new(mut keys: Vec<SigningKey>) -> Self {
        keys.sort_by_key(|k| k.generation);
        Self { keys }
    }

    /// The key that signs: the newest generation.
    pub fn active(&self) -> Option<&SigningKey> {
        self.keys.last()
    }

    /// The keys published and accepted at `now`: the active one, and each older one until
    /// `token_ttl` after its successor appeared (no token it signed is valid after that).
    pub fn live(&self, now: DateTime<Utc>, token_ttl: TimeDelta) -> Vec<&SigningKey> {
        self.keys
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                self.keys
                    .get(i + 1)
                    .is_none_or(|successor| now < successor.created_at + token_ttl)
            })
            .map(|(_, k)| k)
            .collect()
    }

    /// Whether a key with `kid` is on the ring at all.
    pub fn knows(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid == kid)
    }

    /// The JWKS document of the live keys.
    pub fn jwks(&self, now: DateTime<Utc>, token_ttl: TimeDelta) -> Value {
        let keys: Vec<Value> = self
            .live(now, token_ttl)
            .into_iter()
            .rev()
            .map(|k| {
                json!({ "kty": "OKP", "crv": "Ed25519", "x": k.x, "kid": k.kid,
                        "alg": ALGORITHM, "use": "sig" })
            })
            .collect();
        json!({ "keys": keys })
    }
}

/// Reads the ring from the store, creating generation 1 if there is none yet (two nodes
/// starting at once both insert it; one insert wins, both read the same row).
///
/// # Errors
/// Database errors.
pub async fn load(
    db: &Db,
    deriver: &KeyDeriver,
    now: DateTime<Utc>,
) -> Result<KeyRing, sqlx::Error> {
    let rows = sqlx::query("SELECT generation, created_at FROM signing_keys")
        .fetch_all(&db.pool)
        .await?;
    if rows.is_empty() {
        insert(db, deriver, 1, now).await?;
        return Box::pin(load(db, deriver, now)).await;
    }
    let mut keys = Vec::with_capacity(rows.len());
    for row in rows {
        let generation: i64 = row.try_get("generation")?;
        let created_at: String = row.try_get("created_at")?;
        let created_at = parse_ts(&created_at).ok_or_else(|| {
            sqlx::Error::Decode(format!("signing_keys {generation}: bad created_at").into())
        })?;
        keys.push(deriver.key(generation, created_at));
    }
    Ok(KeyRing::new(keys))
}

async fn insert(
    db: &Db,
    deriver: &KeyDeriver,
    generation: i64,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let key = deriver.key(generation, now);
    let _turn = db.write_turn().await;
    let inserted = sqlx::query(
        "INSERT INTO signing_keys (generation, kid, algorithm, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (generation) DO NOTHING",
    )
    .bind(generation)
    .bind(&key.kid)
    .bind(ALGORITHM)
    .bind(ts(now))
    .execute(&db.pool)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Adds the next generation, which signs from the moment each node reloads its ring (within
/// seconds). Returns it.
///
/// # Errors
/// Database errors.
pub async fn rotate(
    db: &Db,
    deriver: &KeyDeriver,
    now: DateTime<Utc>,
) -> Result<SigningKey, sqlx::Error> {
    loop {
        let ring = load(db, deriver, now).await?;
        let next = ring.active().map_or(1, |k| k.generation + 1);
        // A concurrent rotation took this generation: take the one after it.
        if insert(db, deriver, next, now).await? {
            return Ok(deriver.key(next, now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_deterministic_per_master_key_and_generation() {
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let a = KeyDeriver::new(&MasterKey::new([1; 32]));
        let b = KeyDeriver::new(&MasterKey::new([2; 32]));
        assert_eq!(a.key(1, at).kid, a.key(1, at).kid);
        assert_eq!(a.key(1, at).x, a.key(1, at).x);
        assert_ne!(a.key(1, at).x, a.key(2, at).x);
        assert_ne!(a.key(1, at).x, b.key(1, at).x);
        assert_eq!(B64URL.decode(&a.key(1, at).x).unwrap().len(), 32);
        assert_eq!(B64URL.decode(&a.key(1, at).kid).unwrap().len(), 32);
    }

    #[test]
    fn an_old_key_lives_one_token_lifetime_past_its_successor() {
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let d = KeyDeriver::new(&MasterKey::new([1; 32]));
        let ttl = TimeDelta::seconds(900);
        let ring = KeyRing::new(vec![d.key(2, t0 + TimeDelta::seconds(100)), d.key(1, t0)]);
        assert_eq!(ring.active().unwrap().generation, 2);
        let gens = |now| {
            ring.live(now, ttl)
                .iter()
                .map(|k| k.generation)
                .collect::<Vec<_>>()
        };
        assert_eq!(gens(t0 + TimeDelta::seconds(999)), [1, 2]);
        assert_eq!(gens(t0 + TimeDelta::seconds(1000)), [2]);
        let jwks = ring.jwks(t0 + TimeDelta::seconds(500), ttl);
        assert_eq!(jwks["keys"][0]["kid"], ring.active().unwrap().kid.as_str());
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
        assert!(jwks.to_string().find("\"d\"").is_none(), "no private part");
    }
}
