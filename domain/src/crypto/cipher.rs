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

/// AES-256-GCM under one key.
#[derive(Clone)]
pub struct SecretCipher {
    cipher: Aes256Gcm,
    key_id: String,
}

impl std::fmt::Debug for SecretCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretCipher({})", self.key_id)
    }
}

impl SecretCipher {
    /// A cipher under `key`.
    pub fn new(key: [u8; 32]) -> Self {
        let digest = Sha256::digest(key);
        let key_id = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Self {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key)),
            key_id,
        }
    }

    /// The id stored beside every ciphertext.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Seals `secret`, bound to `aad` (the owning aggregate's id).
    pub fn seal(&self, secret: &SecretBytes, aad: &str) -> EncryptedSecret {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ciphertext = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: secret.expose(),
                    aad: aad.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of a short secret cannot fail");
        EncryptedSecret {
            key_id: self.key_id.clone(),
            nonce: B64.encode(nonce),
            ciphertext: B64.encode(ciphertext),
        }
    }

    /// Opens a sealed secret.
    ///
    /// # Errors
    /// [`CipherError::UnknownKey`] if sealed under another key, [`CipherError::Corrupt`] if it
    /// fails authentication (tampering, wrong `aad`).
    pub fn open(&self, sealed: &EncryptedSecret, aad: &str) -> Result<SecretBytes, CipherError> {
        if sealed.key_id != self.key_id {
            return Err(CipherError::UnknownKey(sealed.key_id.clone()));
        }
        let nonce = B64
            .decode(&sealed.nonce)
            .map_err(|_| CipherError::Corrupt)?;
        if nonce.len() != 12 {
            return Err(CipherError::Corrupt);
        }
        let ciphertext = B64
            .decode(&sealed.ciphertext)
            .map_err(|_| CipherError::Corrupt)?;
        self.cipher
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
    fn nonces_differ_between_seals() {
        let c = SecretCipher::new([7; 32]);
        let s = SecretBytes::new(vec![1; 20]);
        assert_ne!(c.seal(&s, "x").nonce, c.seal(&s, "x").nonce);
    }
}
