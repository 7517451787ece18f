//! Logins: the one form a login is stored, keyed and looked up in.
//!
//! A login is enforced with the PRECIS `UsernameCaseMapped` profile (RFC 8265 §3.3):
//! full-width and half-width characters are mapped to their ordinary forms (`ａｌｉｃｅ` is
//! `alice`), case is folded (`ALICE` is `alice`), the result is in Unicode NFC (a `josé` typed
//! with a combining accent is the `josé` typed with `é`), and what the profile disallows is
//! refused: spaces, control and format characters (zero-width space, the right-to-left
//! override), symbols, unassigned code points, and right-to-left text that breaks the Bidi
//! rule. PRECIS does not map look-alike letters of other scripts, so on top of it a login is
//! refused when a part of it mixes scripts (UTS #39 "highly restrictive"): Cyrillic `а` in
//! `аlice` is refused rather than made a second `alice`. Each part between `@` and `.` is
//! judged alone, so `иван@example.com` is fine.
//!
//! Logins written before these rules were trimmed and lower-cased only ([`legacy_login`]);
//! their users' ids derive from that form and keep working (see `docs/architecture.md`).

use precis_profiles::{UsernameCaseMapped, precis_core::profile::PrecisFastInvocation};
use unicode_script::{Script, UnicodeScript};

use crate::user::UserError;

/// The longest login, in characters of its enforced form.
pub const MAX_LOGIN: usize = 256;

/// Scripts that may share one part of a login besides a single script alone: the
/// combinations UTS #39 §5.2 ("highly restrictive") allows, for Japanese, Chinese and Korean.
const SCRIPT_SETS: [&[Script]; 3] = [
    &[
        Script::Latin,
        Script::Han,
        Script::Hiragana,
        Script::Katakana,
    ],
    &[Script::Latin, Script::Han, Script::Bopomofo],
    &[Script::Latin, Script::Han, Script::Hangul],
];

/// The enforced form of `login`: surrounding whitespace trimmed, then the PRECIS
/// `UsernameCaseMapped` profile, then at most [`MAX_LOGIN`] characters and no part that mixes
/// scripts. Two logins name the same user exactly when their enforced forms are equal.
///
/// # Errors
/// [`UserError::InvalidLogin`] for what the profile refuses (and empty or too long logins);
/// [`UserError::MixedScriptLogin`] for a part mixing scripts.
pub fn enforce_login(login: &str) -> Result<String, UserError> {
    let login = login.trim();
    // Composition shrinks a string by far less than this: a bound on the work for any input.
    if login.chars().count() > 4 * MAX_LOGIN {
        return Err(UserError::InvalidLogin);
    }
    let enforced = UsernameCaseMapped::enforce(login)
        .map_err(|_| UserError::InvalidLogin)?
        .into_owned();
    if enforced.chars().count() > MAX_LOGIN {
        return Err(UserError::InvalidLogin);
    }
    if !enforced.split(['@', '.']).all(one_script) {
        return Err(UserError::MixedScriptLogin);
    }
    Ok(enforced)
}

/// The form logins had before [`enforce_login`]: trimmed and lower-cased. The ids of users
/// registered then derive from it.
pub fn legacy_login(login: &str) -> String {
    login.trim().to_lowercase()
}

/// Whether the letters of `part` (ignoring digits, punctuation and combining marks, which
/// belong to every script) are of one script or of one allowed combination.
fn one_script(part: &str) -> bool {
    let mut scripts: Vec<Script> = Vec::new();
    for c in part.chars() {
        let script = c.script();
        if !matches!(script, Script::Common | Script::Inherited) && !scripts.contains(&script) {
            scripts.push(script);
        }
    }
    scripts.len() <= 1
        || SCRIPT_SETS
            .iter()
            .any(|set| scripts.iter().all(|s| set.contains(s)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> String {
        enforce_login(s).unwrap_or_else(|e| panic!("{s:?} refused: {e}"))
    }

    #[test]
    fn ascii_logins_are_trimmed_and_lower_cased_as_before() {
        for s in [
            "alice",
            "Alice",
            "ALICE",
            "  alice ",
            "Alice@Example.COM",
            "a.b-c_d+e",
        ] {
            assert_eq!(ok(s), legacy_login(s), "{s:?}");
        }
    }

    #[test]
    fn width_case_and_composition_variants_are_one_login() {
        assert_eq!(ok("ａｌｉｃｅ"), "alice");
        assert_eq!(ok("ＡＬＩＣＥ"), "alice");
        assert_eq!(ok("ALICE"), "alice");
        let nfc = "jos\u{e9}";
        let nfd = "jose\u{301}";
        assert_ne!(nfc, nfd);
        assert_eq!(ok(nfd), nfc);
        assert_eq!(ok(nfc), nfc);
        assert_eq!(ok("JOS\u{c9}"), nfc);
        assert_eq!(ok("ＪＯＳＥ\u{301}"), nfc);
    }

    #[test]
    fn invisible_and_direction_characters_are_refused() {
        for s in [
            "alice\u{200b}",
            "al\u{200b}ice",
            "\u{202e}ecila",
            "alice\u{202e}",
            "ali\u{200d}ce",
            "alice\u{feff}",
            "ali ce",
            "ali\tce",
            "ali\u{0}ce",
            "",
            "   ",
            "alice\u{2603}",
        ] {
            assert_eq!(enforce_login(s), Err(UserError::InvalidLogin), "{s:?}");
        }
    }

    #[test]
    fn mixed_scripts_in_one_part_are_refused() {
        // Cyrillic а (U+0430) before Latin lice.
        for s in [
            "\u{430}lice",
            "alic\u{435}",
            "p\u{430}ypal@example.com",
            "alice@ex\u{430}mple.com",
        ] {
            assert_eq!(enforce_login(s), Err(UserError::MixedScriptLogin), "{s:?}");
        }
        // One script per part, digits and punctuation go with any.
        assert_eq!(
            ok("\u{438}\u{432}\u{430}\u{43d}"),
            "\u{438}\u{432}\u{430}\u{43d}"
        );
        assert_eq!(
            ok("\u{418}\u{432}\u{430}\u{43d}2@example.com"),
            "\u{438}\u{432}\u{430}\u{43d}2@example.com"
        );
        assert_eq!(
            ok("\u{3b1}\u{3bb}\u{3af}\u{3ba}\u{3b7}"),
            "\u{3b1}\u{3bb}\u{3af}\u{3ba}\u{3b7}"
        );
        // Japanese mixes Han, Hiragana and Katakana (and Latin) by nature.
        ok("\u{5c71}\u{7530}\u{305f}\u{308d}\u{3046}");
        ok("tanaka\u{7530}\u{4e2d}");
    }

    #[test]
    fn length_counts_the_enforced_form() {
        assert_eq!(ok(&"a".repeat(MAX_LOGIN)).len(), MAX_LOGIN);
        assert_eq!(
            enforce_login(&"a".repeat(MAX_LOGIN + 1)),
            Err(UserError::InvalidLogin)
        );
        // 256 letters with combining accents (512 code points) compose to 256 and pass.
        assert_eq!(ok(&"e\u{301}".repeat(MAX_LOGIN)).chars().count(), MAX_LOGIN);
        assert_eq!(
            enforce_login(&"y".repeat(1 << 20)),
            Err(UserError::InvalidLogin)
        );
    }

    #[test]
    fn enforcing_twice_changes_nothing() {
        for s in [
            "ａｌｉｃｅ",
            "jose\u{301}",
            "Alice@Example.com",
            "\u{418}\u{432}\u{430}\u{43d}",
        ] {
            let once = ok(s);
            assert_eq!(ok(&once), once);
        }
    }
}
