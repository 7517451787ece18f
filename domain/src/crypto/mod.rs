//! The only place that touches AEAD, HMAC and argon2. Pure functions over key material that
//! the API loads (`api/src/keys.rs`); domain tests use the real cipher with a fixed key.

mod cipher;
mod hash;

pub use cipher::{CipherError, EncryptedSecret, SecretCipher};
pub use hash::{
    KeyedHasher, dummy_password_hash, hash_password, hash_recovery_code, verify_password,
    verify_recovery_code,
};

use hmac::{Hmac, Mac};
use sha2::Sha256;

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
