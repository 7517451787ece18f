//! Where codes go in a test: a real SMTP server and a real HTTP "SMS gateway" on loopback, and
//! reading the codes out of what they received.

use std::time::Duration;

use tessera_api::Config;

use crate::{smtp_sink::SmtpSink, webhook_sink::HttpSink};

/// The two receivers.
pub struct Phones {
    /// The mailbox.
    pub smtp: SmtpSink,
    /// The SMS gateway.
    pub sms: HttpSink,
}

/// How long a test waits for a message to arrive.
pub const DELIVERY_WAIT: Duration = Duration::from_secs(10);

impl Phones {
    /// Starts both receivers.
    pub async fn start() -> Self {
        Self {
            smtp: SmtpSink::start().await,
            sms: HttpSink::start().await,
        }
    }

    /// Points `config` at them, with quick retries (3 attempts, 20 ms apart).
    pub fn configure(&self, config: &mut Config) {
        config.smtp_url = Some(self.smtp.url());
        config.mail_from = "Tessera <no-reply@tessera.test>".into();
        config.sms_webhook_url = Some(self.sms.url("/sms"));
        config.delivery_attempts = 3;
        config.delivery_backoff_ms = 20;
    }

    /// The code in the `n`-th (1-based) text message to `phone`, waiting for it.
    pub async fn sms_code(&self, phone: &str, n: usize) -> String {
        let messages = self.sms.wait_for("to", phone, n, DELIVERY_WAIT).await;
        extract_code(messages[n - 1].json()["body"].as_str().expect("body"))
    }

    /// The code in the `n`-th (1-based) e-mail to `address`, waiting for it.
    pub async fn email_code(&self, address: &str, n: usize) -> String {
        let mails = self.smtp.wait_for(address, n, DELIVERY_WAIT).await;
        extract_code(mails[n - 1].body())
    }
}

/// The first run of exactly six digits in `text` (the code in a message).
pub fn extract_code(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if i - start == 6 {
                return text[start..i].to_string();
            }
        } else {
            i += 1;
        }
    }
    panic!("no six-digit code in {text:?}")
}

/// Whether `code` occurs in `haystack` as a run of six digits of its own, other than as the
/// fraction of a timestamp (`.123456`): how a code would show if it leaked.
pub fn contains_code(haystack: &str, code: &str) -> bool {
    haystack.match_indices(code).any(|(at, _)| {
        let before = haystack[..at].chars().next_back();
        let after = haystack[at + code.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_digit() || c == '.')
            && !after.is_some_and(|c| c.is_ascii_digit())
    })
}
