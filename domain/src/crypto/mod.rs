//! The only place that touches AEAD, HMAC and argon2. Pure functions over key material that
//! the API loads (`api/src/keys.rs`); domain tests use the real cipher with a fixed key.

mod cipher;
mod hash;

pub use cipher::{CipherError, EncryptedSecret, SecretCipher};
pub use hash::{
    HashedPassword, KeyedHasher, dummy_password_hash, hash_password, hash_recovery_code,
    verify_password, verify_recovery_code,
};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The fingerprint of a master key (see [`MasterKey::check`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyCheck {
    /// The id stored beside every ciphertext sealed under the key.
    pub key_id: String,
    /// HMAC-SHA256 of a fixed label under the key, hex.
    pub mac: String,
}

/// The 32-byte master key from `TESSERA_MASTER_KEY`. Each purpose derives its own subkey, so a
/// leak of one (say, the code-hashing key) reveals nothing about the others.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(***)")
    }
}

impl MasterKey {
    /// Wraps raw key bytes.
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A subkey for one purpose: HMAC-SHA256(master, "tessera/" + purpose), as in HKDF-Expand
    /// with a single block.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key");
        mac.update(b"tessera/");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The cipher for TOTP secrets at rest.
    pub fn totp_cipher(&self) -> SecretCipher {
        SecretCipher::new(self.derive("totp-secret/v1"))
    }

    /// The cipher for message bodies waiting in the outbox (they hold one-time codes).
    pub fn message_cipher(&self) -> SecretCipher {
        SecretCipher::new(self.derive("message-outbox/v1"))
    }

    /// What a store records about the key it was created with, and what every later start
    /// compares its own key against: the key id its ciphertexts carry and an HMAC of a fixed
    /// label under the key (hex). Neither reveals the key.
    pub fn check(&self) -> KeyCheck {
        let mac = self.derive("key-check/v1");
        KeyCheck {
            key_id: self.totp_cipher().key_id().to_string(),
            mac: mac.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }

    /// The cipher for the capability tokens of TOTP QR-code links (they carry the secret of
    /// a factor pending activation).
    pub fn qr_link_cipher(&self) -> SecretCipher {
        SecretCipher::new(self.derive("qr-link/v1"))
    }

    /// The keyed hasher for API keys and one-time codes.
    pub fn keyed_hasher(&self) -> KeyedHasher {
        KeyedHasher::new(self.derive("keyed-hash/v1"))
    }
}

#[cfg(test)]
mod tests {
    use super::MasterKey;

    #[test]
    fn a_key_check_tells_keys_apart_and_reveals_neither() {
        let a = MasterKey::new([1; 32]);
        let b = MasterKey::new([2; 32]);
        assert_eq!(a.check(), MasterKey::new([1; 32]).check());
        assert_ne!(a.check().key_id, b.check().key_id);
        assert_ne!(a.check().mac, b.check().mac);
        assert_eq!(a.check().key_id, a.totp_cipher().key_id());
        assert_eq!(a.check().mac.len(), 64);
        assert!(!a.check().mac.contains(&"01".repeat(32)));
    }
}
