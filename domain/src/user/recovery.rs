//! Recovery codes: ten per user, 50 random bits each, shown once as `XXXXX-XXXXX` in
//! Crockford's base32 (no I, L, O, U: nothing to misread).

use rand::RngCore;

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
}
