//! RFC 6238 time-based one-time passwords over totp-rs, as pure functions.

use serde::{Deserialize, Serialize};
use totp_rs::{Algorithm, Secret as TotpSecret, TOTP};

/// Minimum secret length: 160 bits (RFC 4226 §4 R6 recommends it; the contract requires it).
pub const MIN_SECRET_BYTES: usize = 20;

/// HMAC algorithm of a TOTP factor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TotpAlgorithm {
    /// HMAC-SHA1, what every authenticator app supports.
    #[default]
    Sha1,
    /// HMAC-SHA256.
    Sha256,
    /// HMAC-SHA512.
    Sha512,
}

impl From<TotpAlgorithm> for Algorithm {
    fn from(a: TotpAlgorithm) -> Self {
        match a {
            TotpAlgorithm::Sha1 => Algorithm::SHA1,
            TotpAlgorithm::Sha256 => Algorithm::SHA256,
            TotpAlgorithm::Sha512 => Algorithm::SHA512,
        }
    }
}

/// Parameters of a TOTP factor; the defaults are Google Authenticator's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TotpParams {
    /// HMAC algorithm.
    pub algorithm: TotpAlgorithm,
    /// Code length, 6 to 8.
    pub digits: u8,
    /// Step length in seconds.
    pub period: u32,
}

impl Default for TotpParams {
    fn default() -> Self {
        Self {
            algorithm: TotpAlgorithm::Sha1,
            digits: 6,
            period: 30,
        }
    }
}

fn totp(params: TotpParams, secret: &[u8]) -> TOTP {
    TOTP::new_unchecked(
        params.algorithm.into(),
        usize::from(params.digits),
        0,
        u64::from(params.period),
        secret.to_vec(),
        None,
        String::new(),
    )
}

/// The time step that contains Unix time `unix_secs`.
pub fn step_at(params: TotpParams, unix_secs: u64) -> u64 {
    unix_secs / u64::from(params.period)
}

/// The code for time step `step`.
pub fn code_at_step(params: TotpParams, secret: &[u8], step: u64) -> String {
    totp(params, secret).generate(step * u64::from(params.period))
}

/// The result of checking a code against the steps around now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// The code matches this step, later than any step used before.
    Accepted(u64),
    /// The code matches only steps at or before the last used one (RFC 6238 §5.2).
    Replayed,
    /// The code matches no step in the window.
    Wrong,
}

/// Checks `code` against steps `now_step - skew ..= now_step + skew`. Accepts the earliest
/// matching step after `last_used`; a step at or before `last_used` is never accepted twice.
/// Comparison is constant-time per candidate.
pub fn check(
    params: TotpParams,
    secret: &[u8],
    code: &str,
    unix_secs: u64,
    skew: u8,
    last_used: Option<u64>,
) -> Check {
    let now_step = step_at(params, unix_secs);
    let first = now_step.saturating_sub(u64::from(skew));
    let generator = totp(params, secret);
    let period = u64::from(params.period);
    let mut replayed = false;
    for step in first..=now_step + u64::from(skew) {
        let candidate = generator.generate(step * period);
        if constant_time_eq(candidate.as_bytes(), code.as_bytes()) {
            if last_used.is_some_and(|used| step <= used) {
                replayed = true;
            } else {
                return Check::Accepted(step);
            }
        }
    }
    if replayed {
        Check::Replayed
    } else {
        Check::Wrong
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `code` has the shape of a code for these parameters (only ASCII digits, right length).
pub fn well_formed(params: TotpParams, code: &str) -> bool {
    code.len() == usize::from(params.digits) && code.bytes().all(|b| b.is_ascii_digit())
}

/// What an authenticator app needs to add the factor.
#[derive(Clone)]
pub struct Provisioning {
    /// The secret in unpadded base32 (RFC 4648), for manual entry.
    pub secret_base32: String,
    /// The `otpauth://totp/…` URI.
    pub otpauth_uri: String,
    /// The URI as a QR code, PNG bytes in base64.
    pub qr_png_base64: String,
}

/// Builds the otpauth URI and QR code for `secret`. `issuer` and `account` may not contain
/// `:`, which the URI format reserves; it is replaced by `_`.
pub fn provisioning(
    params: TotpParams,
    secret: &[u8],
    issuer: &str,
    account: &str,
) -> Result<Provisioning, String> {
    let clean = |s: &str| s.replace(':', "_");
    let totp = TOTP::new_unchecked(
        params.algorithm.into(),
        usize::from(params.digits),
        0,
        u64::from(params.period),
        secret.to_vec(),
        Some(clean(issuer)),
        clean(account),
    );
    let qr_png_base64 = totp.get_qr_base64()?;
    Ok(Provisioning {
        secret_base32: TotpSecret::Raw(secret.to_vec()).to_encoded().to_string(),
        otpauth_uri: totp.get_url(),
        qr_png_base64,
    })
}

/// The key bytes of an unpadded base32 secret as [`Provisioning::secret_base32`] shows it, or
/// `None` if it is not base32.
pub fn decode_base32(secret_base32: &str) -> Option<Vec<u8>> {
    TotpSecret::Encoded(secret_base32.to_string())
        .to_bytes()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA1_KEY: &[u8] = b"12345678901234567890";
    const SHA256_KEY: &[u8] = b"12345678901234567890123456789012";
    const SHA512_KEY: &[u8] = b"1234567890123456789012345678901234567890123456789012345678901234";

    /// RFC 6238 Appendix B, all rows, 8 digits.
    #[test]
    fn rfc6238_appendix_b_vectors() {
        let rows: [(u64, &str, &str, &str); 6] = [
            (59, "94287082", "46119246", "90693936"),
            (1_111_111_109, "07081804", "68084774", "25091201"),
            (1_111_111_111, "14050471", "67062674", "99943326"),
            (1_234_567_890, "89005924", "91819424", "93441116"),
            (2_000_000_000, "69279037", "90698825", "38618901"),
            (20_000_000_000, "65353130", "77737706", "47863826"),
        ];
        for (time, sha1, sha256, sha512) in rows {
            for (algorithm, key, want) in [
                (TotpAlgorithm::Sha1, SHA1_KEY, sha1),
                (TotpAlgorithm::Sha256, SHA256_KEY, sha256),
                (TotpAlgorithm::Sha512, SHA512_KEY, sha512),
            ] {
                let params = TotpParams {
                    algorithm,
                    digits: 8,
                    period: 30,
                };
                let step = step_at(params, time);
                assert_eq!(
                    code_at_step(params, key, step),
                    want,
                    "{algorithm:?} at {time}"
                );
                assert_eq!(
                    check(params, key, want, time, 0, None),
                    Check::Accepted(step)
                );
            }
        }
    }

    /// RFC 4226 Appendix D: HOTP is TOTP with the counter as the step (6 digits, SHA1).
    #[test]
    fn rfc4226_appendix_d_vectors() {
        let want = [
            "755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583",
            "399871", "520489",
        ];
        let params = TotpParams::default();
        for (counter, code) in want.iter().enumerate() {
            assert_eq!(code_at_step(params, SHA1_KEY, counter as u64), *code);
        }
    }

    #[test]
    fn skew_window_edges() {
        let p = TotpParams::default();
        let now = 1_700_000_000 - 1_700_000_000 % 30 + 10;
        let step = step_at(p, now);
        let code = |s| code_at_step(p, SHA1_KEY, s);
        let table = [
            (1u8, step - 1, Check::Accepted(step - 1)),
            (1, step + 1, Check::Accepted(step + 1)),
            (1, step - 2, Check::Wrong),
            (1, step + 2, Check::Wrong),
            (0, step, Check::Accepted(step)),
            (0, step - 1, Check::Wrong),
            (0, step + 1, Check::Wrong),
            (2, step - 2, Check::Accepted(step - 2)),
        ];
        for (skew, s, want) in table {
            assert_eq!(
                check(p, SHA1_KEY, &code(s), now, skew, None),
                want,
                "skew {skew}"
            );
        }
    }

    #[test]
    fn never_accepts_the_same_or_an_earlier_step_twice() {
        let p = TotpParams::default();
        let now = 1_700_000_010;
        let step = step_at(p, now);
        let code = code_at_step(p, SHA1_KEY, step);
        assert_eq!(
            check(p, SHA1_KEY, &code, now, 1, Some(step)),
            Check::Replayed
        );
        assert_eq!(
            check(p, SHA1_KEY, &code, now, 1, Some(step + 1)),
            Check::Replayed
        );
        assert_eq!(
            check(p, SHA1_KEY, &code, now, 1, Some(step - 1)),
            Check::Accepted(step)
        );
        let earlier = code_at_step(p, SHA1_KEY, step - 1);
        assert_eq!(
            check(p, SHA1_KEY, &earlier, now, 1, Some(step)),
            Check::Replayed
        );
    }

    #[test]
    fn shape_of_codes() {
        let p = TotpParams::default();
        assert!(well_formed(p, "012345"));
        assert!(!well_formed(p, "12345"));
        assert!(!well_formed(p, "1234567"));
        assert!(!well_formed(p, "12345a"));
        assert!(!well_formed(p, "１２３４５６"));
    }

    #[test]
    fn provisioning_is_what_authenticator_apps_read() {
        let p = provisioning(TotpParams::default(), SHA1_KEY, "Tessera", "alice:x").unwrap();
        assert_eq!(p.secret_base32, "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        assert!(
            p.otpauth_uri.starts_with(
                "otpauth://totp/Tessera:alice_x?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
            ),
            "{}",
            p.otpauth_uri
        );
        assert!(p.otpauth_uri.contains("issuer=Tessera"));
        use base64::Engine;
        let png = base64::engine::general_purpose::STANDARD
            .decode(&p.qr_png_base64)
            .unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    }
}
