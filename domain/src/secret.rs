//! Values that must never be printed: `Debug` and `Display` show `***`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A secret value. Its `Debug` is redacted so it cannot leak into logs or error messages.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a value.
    pub fn new(value: T) -> Self {
        Self(value)
    }
    /// The plaintext; call sites are few and each is a deliberate disclosure.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A one-time passcode typed by a user.
pub type PassCode = Secret<String>;
/// Raw TOTP key bytes.
pub type SecretBytes = Secret<Vec<u8>>;
