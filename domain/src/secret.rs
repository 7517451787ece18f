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

impl PassCode {
    /// A code as a person types or pastes it. Authenticator apps show `123 456`, some
    /// messages `123-456`: spaces (any Unicode white space, as pasted text brings
    /// non-breaking and thin spaces) and dashes (ASCII and the Unicode hyphens, dashes and
    /// minus) only group the digits and are dropped. Every other character stays, so a code
    /// that is not digits still fails the factor's shape check.
    pub fn typed(input: &str) -> Self {
        Self::new(input.chars().filter(|c| !is_separator(*c)).collect())
    }

    /// The same code without separators (see [`Self::typed`]); a no-op on a code that has
    /// none, so a command may apply it to whatever a transport built.
    pub fn without_separators(&self) -> Self {
        if self.0.chars().any(is_separator) {
            Self::typed(&self.0)
        } else {
            self.clone()
        }
    }
}

/// Characters that only group the digits of a code.
fn is_separator(c: char) -> bool {
    c.is_whitespace() || matches!(c, '-' | '\u{2010}'..='\u{2015}' | '\u{2212}')
}
/// Raw TOTP key bytes.
pub type SecretBytes = Secret<Vec<u8>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_typed_as_apps_show_them_lose_their_separators() {
        for (typed, code) in [
            ("123456", "123456"),
            ("123 456", "123456"),
            ("123-456", "123456"),
            (" 123 456\n", "123456"),
            ("12 34 56", "123456"),
            ("123\u{a0}456", "123456"),
            ("123\u{2009}456", "123456"),
            ("123\u{2013}456", "123456"),
            ("1234 5678", "12345678"),
            ("", ""),
        ] {
            assert_eq!(PassCode::typed(typed).expose(), code, "{typed:?}");
            assert_eq!(
                PassCode::new(typed.to_string())
                    .without_separators()
                    .expose(),
                code,
                "{typed:?}"
            );
        }
    }

    #[test]
    fn other_characters_are_kept_for_the_shape_check_to_refuse() {
        for typed in [
            "12a456",
            "123_456",
            "123.456",
            "123/456",
            "１２３４５６",
            "123+456",
        ] {
            assert_eq!(PassCode::typed(typed).expose(), typed);
        }
    }

    #[test]
    fn a_code_prints_as_stars_before_and_after() {
        let code = PassCode::typed("123 456");
        assert_eq!(format!("{code:?} {code}"), "*** ***");
    }
}
