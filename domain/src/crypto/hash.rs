use argon2::{
    Argon2, PasswordHash, PasswordHasher, PasswordVerifier,
    password_hash::{SaltString, rand_core::OsRng},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// HMAC-SHA256 under a derived key, for high-entropy API keys and short one-time codes.
/// A slow hash adds nothing to a random 6-digit code with a 5-try budget, and would cost every
/// request; the key keeps a database dump from being brute-forced offline.
#[derive(Clone)]
pub struct KeyedHasher {
    key: [u8; 32],
}

impl std::fmt::Debug for KeyedHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyedHasher(***)")
    }
}

impl KeyedHasher {
    /// A hasher under `key`.
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    fn mac(&self, domain: &str, value: &str) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(domain.as_bytes());
        mac.update(&[0]);
        mac.update(value.as_bytes());
        mac
    }

    /// The keyed hash of `value` in `domain` (e.g. `"api-key"`), base64url.
    pub fn hash(&self, domain: &str, value: &str) -> String {
        B64.encode(self.mac(domain, value).finalize().into_bytes())
    }

    /// Constant-time comparison of `value` against a stored hash.
    pub fn verify(&self, domain: &str, value: &str, stored: &str) -> bool {
        match B64.decode(stored) {
            Ok(tag) => self.mac(domain, value).verify_slice(&tag).is_ok(),
            Err(_) => false,
        }
    }
}

/// A password's argon2id hash as a command carries it. Made only by [`HashedPassword::of`],
/// so a command cannot carry anything else; slow, so the API makes it on its bounded hashing
/// pool, never inside an aggregate's `handle`.
#[derive(Clone, PartialEq, Eq)]
pub struct HashedPassword(String);

impl HashedPassword {
    /// Hashes `password` ([`hash_password`]).
    pub fn of(password: &str) -> Self {
        Self(hash_password(password))
    }

    /// The PHC string.
    pub fn phc(&self) -> &str {
        &self.0
    }

    /// The PHC string, for the event.
    pub fn into_phc(self) -> String {
        self.0
    }
}

impl std::fmt::Debug for HashedPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HashedPassword(***)")
    }
}

/// An argon2id hash (PHC string) with the crate's defaults (19 MiB, t=2, p=1: OWASP's
/// minimum recommendation).
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters cannot fail")
        .to_string()
}

/// argon2id for recovery codes: 50 random bits each, so a memory-hard hash at 4 MiB and one
/// pass already puts an offline search of a dumped hash at 2^50 argon2 evaluations, while a
/// check that may try all ten unused hashes stays in tens of milliseconds.
fn recovery_argon2() -> Argon2<'static> {
    let params =
        argon2::Params::new(4096, 1, 1, None).expect("constant argon2 parameters are valid");
    Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
}

/// An argon2id hash (PHC string) of a recovery code.
pub fn hash_recovery_code(code: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    recovery_argon2()
        .hash_password(code.as_bytes(), &salt)
        .expect("argon2 with constant parameters cannot fail")
        .to_string()
}

/// Checks a recovery code against its PHC string; a malformed hash never verifies.
pub fn verify_recovery_code(code: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            recovery_argon2()
                .verify_password(code.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// An argon2id hash of a random password nobody knows, with the same parameters as real
/// ones: checking a login of an unknown user (or one without a password) against it costs what
/// checking a real one costs, so timing does not tell whether a login exists.
pub fn dummy_password_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        hash_password(salt.as_str())
    })
}

/// Checks a password against a PHC string; a malformed hash never verifies.
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_hash_verifies_only_the_same_value_domain_and_key() {
        let h = KeyedHasher::new([1; 32]);
        let stored = h.hash("api-key", "secret");
        assert!(h.verify("api-key", "secret", &stored));
        assert!(!h.verify("api-key", "secreT", &stored));
        assert!(!h.verify("otp", "secret", &stored));
        assert!(!KeyedHasher::new([2; 32]).verify("api-key", "secret", &stored));
        assert!(!h.verify("api-key", "secret", "not base64!"));
    }

    #[test]
    fn the_dummy_hash_is_a_real_argon2id_hash_that_nothing_matches() {
        let dummy = dummy_password_hash();
        assert!(
            dummy.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{dummy}"
        );
        assert_eq!(dummy, dummy_password_hash());
        assert!(!verify_password("", dummy));
        assert!(!verify_password("password", dummy));
    }

    #[test]
    fn argon2id_round_trip() {
        let phc = hash_password("correct horse");
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &phc));
        assert!(!verify_password("wrong horse", &phc));
        assert!(!verify_password("correct horse", "garbage"));
    }
}
