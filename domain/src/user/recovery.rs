//! Recovery codes: ten per user, 50 random bits each, shown once as `XXXXX-XXXXX` in
//! Crockford's base32 (no I, L, O, U: nothing to misread).

use rand::RngCore;

use crate::{
    crypto::{hash_recovery_code, verify_recovery_code},
    secret::Secret,
    user::UserError,
};

/// Codes per set.
pub const CODES_PER_SET: usize = 10;

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A fresh code from `rng` (a CSPRNG in production): 10 symbols of 5 bits.
pub fn new_code(rng: &mut impl RngCore) -> String {
    let mut bytes = [0u8; 8];
    rng.fill_bytes(&mut bytes);
    let mut n = u64::from_le_bytes(bytes);
    let mut out = String::with_capacity(11);
    for i in 0..10 {
        if i == 5 {
            out.push('-');
        }
        out.push(char::from(ALPHABET[(n & 31) as usize]));
        n >>= 5;
    }
    out
}

/// The canonical form of what a user typed: upper case, without separators, with the
/// look-alikes Crockford maps (`I`/`L` → `1`, `O` → `0`). `None` unless 10 valid symbols.
pub fn normalize(input: &str) -> Option<String> {
    let mut out = String::with_capacity(10);
    for c in input.chars() {
        let c = match c.to_ascii_uppercase() {
            '-' | ' ' => continue,
            'I' | 'L' => '1',
            'O' => '0',
            c => c,
        };
        if !c.is_ascii() || !ALPHABET.contains(&(c as u8)) {
            return None;
        }
        out.push(c);
    }
    (out.len() == 10).then_some(out)
}

/// The argon2id hashes of a set of codes, as `GenerateRecoveryCodes` carries them. Made only
/// by [`hash_set`], so a command cannot carry anything else.
#[derive(Clone, PartialEq, Eq)]
pub struct HashedCodeSet(Vec<String>);

impl HashedCodeSet {
    /// The PHC strings, in the order of the codes.
    pub fn into_hashes(self) -> Vec<String> {
        self.0
    }
}

impl std::fmt::Debug for HashedCodeSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HashedCodeSet({} hashes)", self.0.len())
    }
}

/// Hashes a set of codes in their canonical form. Slow (ten argon2 runs): the API calls it
/// on its hashing pool.
///
/// # Errors
/// [`UserError::InvalidRecoveryCodeSet`] unless exactly [`CODES_PER_SET`] well-formed codes.
pub fn hash_set(codes: &[Secret<String>]) -> Result<HashedCodeSet, UserError> {
    if codes.len() != CODES_PER_SET {
        return Err(UserError::InvalidRecoveryCodeSet);
    }
    let canonical = codes
        .iter()
        .map(|c| normalize(c.expose()).ok_or(UserError::InvalidRecoveryCodeSet))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(HashedCodeSet(
        canonical.iter().map(|c| hash_recovery_code(c)).collect(),
    ))
}

/// What checking a code against a user's set found, as `UseRecoveryCode` carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeCheck {
    /// Not looked at: the user's second factor was locked when loaded (a locked user's codes
    /// are refused unchecked).
    Skipped,
    /// Checked against every code of set `generation`, spent or not: the index of the one it
    /// is, if any. Whether that code is still unspent is the aggregate's decision, on the
    /// state it commits against, so of racing answers only one spends it.
    Checked {
        /// The set checked.
        generation: u32,
        /// The code's index in it.
        matched: Option<u32>,
    },
}

/// Checks `canonical` (from [`normalize`]) against the hashes of set `generation`, stopping
/// at the first match. Slow (up to ten argon2 runs): the API calls it on its hashing pool.
pub fn check(canonical: &str, generation: u32, hashes: &[String]) -> CodeCheck {
    let matched = hashes
        .iter()
        .position(|h| verify_recovery_code(canonical, h))
        .map(|i| u32::try_from(i).unwrap_or(u32::MAX));
    CodeCheck::Checked {
        generation,
        matched,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_formatted_and_normalise_back() {
        let mut rng = rand::rngs::OsRng;
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let code = new_code(&mut rng);
            assert_eq!(code.len(), 11);
            assert_eq!(&code[5..6], "-");
            let canonical = normalize(&code).unwrap();
            assert_eq!(canonical, code.replace('-', ""));
            assert_eq!(normalize(&code.to_lowercase()), Some(canonical.clone()));
            seen.insert(canonical);
        }
        assert_eq!(seen.len(), 200, "50-bit codes do not repeat in 200 draws");
        assert_eq!(normalize("abcde fghjk"), Some("ABCDEFGHJK".into()));
        assert_eq!(normalize("ILOOO-00000"), Some("1100000000".into()));
        assert_eq!(normalize("UUUUU-00000"), None, "U is not in the alphabet");
        assert_eq!(normalize("12345"), None);
        assert_eq!(normalize("12345-678901"), None);
    }

    #[test]
    fn a_set_is_stored_only_as_argon2id_and_each_code_finds_its_index() {
        let mut rng = rand::rngs::OsRng;
        let codes: Vec<String> = (0..CODES_PER_SET).map(|_| new_code(&mut rng)).collect();
        let secrets: Vec<Secret<String>> = codes.iter().cloned().map(Secret::new).collect();
        let hashes = hash_set(&secrets).unwrap().into_hashes();
        assert_eq!(hashes.len(), CODES_PER_SET);
        for (hash, code) in hashes.iter().zip(&codes) {
            assert!(hash.starts_with("$argon2id$v=19$m=4096,t=1,p=1$"), "{hash}");
            assert!(!hash.contains(&code.replace('-', "")));
        }
        let canonical = normalize(&codes[3]).unwrap();
        assert_eq!(
            check(&canonical, 7, &hashes),
            CodeCheck::Checked {
                generation: 7,
                matched: Some(3)
            }
        );
        let other = normalize(&new_code(&mut rng)).unwrap();
        assert_eq!(
            check(&other, 7, &hashes),
            CodeCheck::Checked {
                generation: 7,
                matched: None
            }
        );
        assert!(!format!("{:?}", hash_set(&secrets).unwrap()).contains("argon2"));
    }

    #[test]
    fn only_a_full_set_of_well_formed_codes_is_hashed() {
        let mut rng = rand::rngs::OsRng;
        let mut codes: Vec<Secret<String>> = (0..CODES_PER_SET - 1)
            .map(|_| Secret::new(new_code(&mut rng)))
            .collect();
        assert_eq!(hash_set(&codes), Err(UserError::InvalidRecoveryCodeSet));
        codes.push(Secret::new("UUUUU-00000".into()));
        assert_eq!(hash_set(&codes), Err(UserError::InvalidRecoveryCodeSet));
    }
}
