use aes_gcm::{
    Aes256Gcm, Key, Nonce,
    aead::{Aead, AeadCore, KeyInit, OsRng, Payload},
};
use base64::{Engine, engine::general_purpose::STANDARD as B64};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::secret::SecretBytes;

/// A secret encrypted with AES-256-GCM. Carries the id of the key that sealed it, so keys can
/// be rotated; the owning aggregate's id is the associated data, so a ciphertext copied to
/// another factor does not decrypt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedSecret {
    /// First 8 bytes (hex) of SHA-256 of the key: identifies it without revealing it.
    pub key_id: String,
    /// 96-bit random nonce, base64.
    pub nonce: String,
    /// Ciphertext and tag, base64.
    pub ciphertext: String,
}

/// Why a secret could not be opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CipherError {
    /// The secret was sealed under a key we do not hold.
    #[error("secret sealed under unknown key {0}")]
    UnknownKey(String),
    /// Tampered ciphertext, wrong associated data or malformed encoding.
    #[error("secret failed authentication")]
    Corrupt,
}

/// AES-256-GCM under a ring of keys: the first (active) one seals, and each opens what it
/// sealed, chosen by the ciphertext's key id. Keys are rotated by putting a new one first and
/// keeping the old ones until nothing sealed under them is left.
#[derive(Clone)]
pub struct SecretCipher {
    /// Active first; never empty.
    keys: Vec<(String, Aes256Gcm)>,
}

impl std::fmt::Debug for SecretCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretCipher({})", self.key_ids().join(", "))
    }
}

/// The id of a key: the first 8 bytes (hex) of its SHA-256.
fn key_id_of(key: &[u8; 32]) -> String {
    let digest = Sha256::digest(key);
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

impl SecretCipher {
    /// A cipher under `key` alone.
    pub fn new(key: [u8; 32]) -> Self {
        Self {
            keys: vec![(
                key_id_of(&key),
                Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key)),
            )],
        }
    }

    /// This cipher, also opening what `older` keys sealed (they never seal).
    #[must_use]
    pub fn with_previous(mut self, older: impl IntoIterator<Item = [u8; 32]>) -> Self {
        for key in older {
            let id = key_id_of(&key);
            if !self.holds(&id) {
                self.keys
                    .push((id, Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key))));
            }
        }
        self
    }

    /// The id stored beside every ciphertext this cipher seals: the active key's.
    pub fn key_id(&self) -> &str {
        &self.keys[0].0
    }

    /// The ids of every key it holds, the active one first.
    pub fn key_ids(&self) -> Vec<&str> {
        self.keys.iter().map(|(id, _)| id.as_str()).collect()
    }

    /// Whether it holds the key `key_id`.
    pub fn holds(&self, key_id: &str) -> bool {
        self.keys.iter().any(|(id, _)| id == key_id)
    }

    /// Whether `sealed` was sealed under an older key than the active one (a candidate for
    /// re-sealing).
    pub fn is_stale(&self, sealed: &EncryptedSecret) -> bool {
        sealed.key_id != self.key_id()
    }

    /// Seals `secret`, bound to `aad` (the owning aggregate's id).
    pub fn seal(&self, secret: &SecretBytes, aad: &str) -> EncryptedSecret {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let (key_id, cipher) = &self.keys[0];
        let ciphertext = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: secret.expose(),
                    aad: aad.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of a short secret cannot fail");
        EncryptedSecret {
            key_id: key_id.clone(),
            nonce: B64.encode(nonce),
            ciphertext: B64.encode(ciphertext),
        }
    }

    /// Opens a sealed secret.
    ///
    /// # Errors
    /// [`CipherError::UnknownKey`] if sealed under a key it does not hold,
    /// [`CipherError::Corrupt`] if it fails authentication (tampering, wrong `aad`).
    pub fn open(&self, sealed: &EncryptedSecret, aad: &str) -> Result<SecretBytes, CipherError> {
        let Some((_, cipher)) = self.keys.iter().find(|(id, _)| *id == sealed.key_id) else {
            return Err(CipherError::UnknownKey(sealed.key_id.clone()));
        };
        let nonce = B64
            .decode(&sealed.nonce)
            .map_err(|_| CipherError::Corrupt)?;
        if nonce.len() != 12 {
            return Err(CipherError::Corrupt);
        }
        let ciphertext = B64
            .decode(&sealed.ciphertext)
            .map_err(|_| CipherError::Corrupt)?;
        cipher
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &ciphertext,
                    aad: aad.as_bytes(),
                },
            )
            .map(SecretBytes::new)
            .map_err(|_| CipherError::Corrupt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding_to_aad() {
        let c = SecretCipher::new([7; 32]);
        let s = SecretBytes::new(b"12345678901234567890".to_vec());
        let sealed = c.seal(&s, "factor-a");
        assert_eq!(c.open(&sealed, "factor-a").unwrap(), s);
        assert_eq!(c.open(&sealed, "factor-b"), Err(CipherError::Corrupt));
        assert!(!sealed.ciphertext.contains("MTIzNDU2Nzg5"));
        let other = SecretCipher::new([8; 32]);
        assert!(matches!(
            other.open(&sealed, "factor-a"),
            Err(CipherError::UnknownKey(_))
        ));
        let mut tampered = sealed;
        let mut bytes = B64.decode(&tampered.ciphertext).unwrap();
        bytes[0] ^= 1;
        tampered.ciphertext = B64.encode(bytes);
        assert_eq!(c.open(&tampered, "factor-a"), Err(CipherError::Corrupt));
    }

    #[test]
    fn a_ring_seals_under_its_active_key_and_opens_under_any() {
        let old = SecretCipher::new([7; 32]);
        let s = SecretBytes::new(b"12345678901234567890".to_vec());
        let sealed_old = old.seal(&s, "f");
        let ring = SecretCipher::new([8; 32]).with_previous([[7; 32]]);
        assert_eq!(ring.key_ids(), vec![ring.key_id(), old.key_id()]);
        assert_eq!(ring.open(&sealed_old, "f").unwrap(), s);
        assert!(ring.is_stale(&sealed_old));
        let sealed_new = ring.seal(&s, "f");
        assert_ne!(sealed_new.key_id, old.key_id());
        assert!(!ring.is_stale(&sealed_new));
        assert_eq!(ring.open(&sealed_new, "f").unwrap(), s);
        // Without the old key, what it sealed is an unknown key, never garbage.
        assert_eq!(
            old.open(&sealed_new, "f"),
            Err(CipherError::UnknownKey(sealed_new.key_id.clone()))
        );
        assert_eq!(
            SecretCipher::new([8; 32]).open(&sealed_old, "f"),
            Err(CipherError::UnknownKey(old.key_id().to_string()))
        );
    }

    #[test]
    fn nonces_differ_between_seals() {
        let c = SecretCipher::new([7; 32]);
        let s = SecretBytes::new(vec![1; 20]);
        assert_ne!(c.seal(&s, "x").nonce, c.seal(&s, "x").nonce);
    }
}
