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
        SecretCipher::new(self.derive(TOTP_SECRET))
    }

    /// The cipher for message bodies waiting in the outbox (they hold one-time codes).
    pub fn message_cipher(&self) -> SecretCipher {
        SecretCipher::new(self.derive(MESSAGE_OUTBOX))
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
        SecretCipher::new(self.derive(QR_LINK))
    }

    /// This key sealed under `wrapping` (AES-GCM under a subkey of `wrapping`, bound to a fixed
    /// label): how a store keeps its root key once the key it was created with is rotated.
    pub fn seal_under(&self, wrapping: &MasterKey) -> EncryptedSecret {
        SecretCipher::new(wrapping.derive(ROOT_WRAP))
            .seal(&crate::secret::SecretBytes::new(self.0.to_vec()), ROOT_WRAP)
    }

    /// A key sealed by [`MasterKey::seal_under`] under one of `ring`'s keys.
    ///
    /// # Errors
    /// [`CipherError::UnknownKey`] if no key of the ring sealed it; [`CipherError::Corrupt`]
    /// if it fails authentication or is not 32 bytes.
    pub fn unseal(sealed: &EncryptedSecret, ring: &KeyRing) -> Result<MasterKey, CipherError> {
        let cipher = SecretCipher::new(ring.active.derive(ROOT_WRAP))
            .with_previous(ring.previous.iter().map(|k| k.derive(ROOT_WRAP)));
        let bytes = cipher.open(sealed, ROOT_WRAP)?;
        let bytes: [u8; 32] = bytes
            .expose()
            .as_slice()
            .try_into()
            .map_err(|_| CipherError::Corrupt)?;
        Ok(MasterKey(bytes))
    }

    /// The keyed hasher for API keys and one-time codes.
    pub fn keyed_hasher(&self) -> KeyedHasher {
        KeyedHasher::new(self.derive("keyed-hash/v1"))
    }
}

/// The master keys a node holds: the active one, which seals every new secret, and older ones,
/// which only open what they sealed (chosen by the ciphertext's key id). Rotation puts a new key
/// first; an old key can go once nothing sealed under it is left.
#[derive(Clone, Debug)]
pub struct KeyRing {
    active: MasterKey,
    previous: Vec<MasterKey>,
}

impl KeyRing {
    /// The ring of `active` and the `previous` keys.
    pub fn new(active: MasterKey, previous: Vec<MasterKey>) -> Self {
        Self { active, previous }
    }

    /// The key that seals.
    pub fn active(&self) -> &MasterKey {
        &self.active
    }

    /// Every key, the active one first.
    pub fn keys(&self) -> impl Iterator<Item = &MasterKey> {
        std::iter::once(&self.active).chain(&self.previous)
    }

    fn cipher(&self, label: &str) -> SecretCipher {
        SecretCipher::new(self.active.derive(label))
            .with_previous(self.previous.iter().map(|k| k.derive(label)))
    }

    /// The cipher of TOTP secrets at rest under every key of the ring.
    pub fn totp_cipher(&self) -> SecretCipher {
        self.cipher(TOTP_SECRET)
    }

    /// The cipher of outbox message bodies under every key of the ring.
    pub fn message_cipher(&self) -> SecretCipher {
        self.cipher(MESSAGE_OUTBOX)
    }

    /// The cipher of QR-code link tokens under every key of the ring.
    pub fn qr_link_cipher(&self) -> SecretCipher {
        self.cipher(QR_LINK)
    }
}

const TOTP_SECRET: &str = "totp-secret/v1";
const MESSAGE_OUTBOX: &str = "message-outbox/v1";
const QR_LINK: &str = "qr-link/v1";
const ROOT_WRAP: &str = "root-wrap/v1";

#[cfg(test)]
mod tests {
    use super::{KeyRing, MasterKey};

    #[test]
    fn a_ring_seals_under_the_active_key_and_opens_under_each() {
        let old = MasterKey::new([1; 32]);
        let new = MasterKey::new([2; 32]);
        let secret = crate::secret::SecretBytes::new(vec![5; 20]);
        let sealed = old.totp_cipher().seal(&secret, "f");
        let ring = KeyRing::new(new.clone(), vec![old.clone()]);
        assert_eq!(ring.totp_cipher().open(&sealed, "f").unwrap(), secret);
        let resealed = ring.totp_cipher().seal(&secret, "f");
        assert_eq!(resealed.key_id, new.check().key_id);
        assert_eq!(
            ring.totp_cipher().key_ids(),
            vec![new.check().key_id, old.check().key_id]
        );
        assert_eq!(
            ring.message_cipher().key_id(),
            new.message_cipher().key_id()
        );
        // The old key, sealed under the new one, comes back only through a ring holding it.
        let wrapped = old.seal_under(&new);
        assert_eq!(
            MasterKey::unseal(&wrapped, &KeyRing::new(new, vec![]))
                .unwrap()
                .check(),
            old.check()
        );
        assert!(MasterKey::unseal(&wrapped, &KeyRing::new(old, vec![])).is_err());
        assert!(
            !serde_json::to_string(&wrapped)
                .unwrap()
                .contains("AQEBAQEB")
        );
    }

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
