//! Masked contact details, for answers read before a second factor is proven: enough for a
//! user to recognise which phone or mailbox a code goes to (`+1 ••• ••• 0100`,
//! `j•••@example.com`), not enough to learn a number or address from a password alone.

/// ITU-T E.164 country codes of one and two digits; every other code has three.
const ONE_DIGIT: &[&str] = &["1", "7"];
const TWO_DIGITS: &[&str] = &[
    "20", "27", "30", "31", "32", "33", "34", "36", "39", "40", "41", "43", "44", "45", "46", "47",
    "48", "49", "51", "52", "53", "54", "55", "56", "57", "58", "60", "61", "62", "63", "64", "65",
    "66", "81", "82", "84", "86", "90", "91", "92", "93", "94", "95", "98",
];

/// `+14155550100` → `+1 ••• ••• 0100`: the country code and the last four digits.
pub fn phone(number: &str) -> String {
    let digits: String = number.chars().filter(char::is_ascii_digit).collect();
    let country_len = if ONE_DIGIT.iter().any(|c| digits.starts_with(c)) {
        1
    } else if TWO_DIGITS.iter().any(|c| digits.starts_with(c)) {
        2
    } else {
        3
    };
    // Short numbers show less: never more than a third of the subscriber digits.
    let rest = digits.len().saturating_sub(country_len);
    let shown = if rest >= 8 { 4 } else { rest / 3 };
    let country = &digits[..country_len.min(digits.len())];
    let last = &digits[digits.len() - shown..];
    format!("+{country} ••• ••• {last}").trim_end().to_string()
}

/// `jane.doe@example.com` → `j•••@example.com`: the first character and the domain.
pub fn email(address: &str) -> String {
    match address.rsplit_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}•••@{domain}")
        }
        None => "•••".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_keep_country_and_last_four() {
        for (number, masked) in [
            ("+14155550100", "+1 ••• ••• 0100"),
            ("+447700900123", "+44 ••• ••• 0123"),
            ("+35312345678", "+353 ••• ••• 5678"),
            ("+4930123456789", "+49 ••• ••• 6789"),
            ("+12345", "+1 ••• ••• 5"),
        ] {
            assert_eq!(phone(number), masked, "{number}");
            assert!(!masked.contains(&number[2..]));
        }
    }

    #[test]
    fn emails_keep_first_character_and_domain() {
        assert_eq!(email("jane.doe@example.com"), "j•••@example.com");
        assert_eq!(email("x@example.com"), "x•••@example.com");
        assert_eq!(email("no-at-sign"), "•••");
    }
}
