//! Sending one-time codes out of band: e-mail over SMTP ([`smtp`]), text messages through a
//! generic HTTP gateway ([`sms_webhook`]), and, for whichever channel is not configured, a
//! development outbox file beside the database ([`outbox`]).
//!
//! A message is queued durably ([`queue`]) once the code's hash is committed and sent by the
//! queue's worker with bounded retries; what came of it is recorded on the challenge
//! (`Delivered` or `DeliveryFailed`) and counted in [`DeliveryMetrics`]. Errors carry only a status or a kind of failure, never
//! the message: the body holds a code.

pub mod outbox;
pub mod queue;
pub mod sms_webhook;
pub mod smtp;
pub mod templates;

use std::{
    fmt,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tessera_domain::{challenge::Channel, secret::Secret};
use tokio::sync::Notify;

use crate::config::Config;

/// One message to one recipient.
#[derive(Clone)]
pub struct Message {
    /// Stable across retries of this message (the SMS gateway's `webhook-id`).
    pub id: String,
    /// SMS or e-mail.
    pub channel: Channel,
    /// E.164 number or e-mail address.
    pub to: String,
    /// E-mail subject (unused for SMS).
    pub subject: String,
    /// The text; holds a code, so it never reaches a log.
    pub body: Secret<String>,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("id", &self.id)
            .field("channel", &self.channel)
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
}

/// Why one attempt failed, in words safe to log and store (`SMTP 451`, `HTTP 503`,
/// `connect`): never the message or a credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryError {
    /// What happened.
    pub summary: String,
    /// Whether retrying cannot help (a 5xx SMTP reply, a 4xx HTTP answer but 408/429).
    pub permanent: bool,
}

impl DeliveryError {
    /// A failure worth retrying.
    pub fn transient(summary: impl Into<String>) -> Self {
        Self {
            summary: summary.into(),
            permanent: false,
        }
    }

    /// A failure retrying cannot fix.
    pub fn permanent(summary: impl Into<String>) -> Self {
        Self {
            summary: summary.into(),
            permanent: true,
        }
    }
}

impl fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary)
    }
}

/// What sending a message with retries came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryReport {
    /// Attempts made.
    pub attempts: u32,
    /// The last attempt's result.
    pub result: Result<(), DeliveryError>,
}

/// How often and how patiently a message is retried.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts in all (at least 1).
    pub attempts: u32,
    /// Wait before the second attempt; doubled before each later one.
    pub first_backoff: Duration,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct DeliveryMetrics {
    delivered: [AtomicU64; 2],
    failed: [AtomicU64; 2],
    failed_attempts: [AtomicU64; 2],
}

fn slot(channel: Channel) -> usize {
    match channel {
        Channel::Sms => 0,
        Channel::Email => 1,
    }
}

impl DeliveryMetrics {
    /// Messages delivered on `channel`.
    pub fn delivered(&self, channel: Channel) -> u64 {
        self.delivered[slot(channel)].load(Ordering::Relaxed)
    }

    /// Messages given up on `channel`.
    pub fn failed(&self, channel: Channel) -> u64 {
        self.failed[slot(channel)].load(Ordering::Relaxed)
    }

    /// Failed attempts on `channel` (retried or not).
    pub fn failed_attempts(&self, channel: Channel) -> u64 {
        self.failed_attempts[slot(channel)].load(Ordering::Relaxed)
    }

    /// The counters in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# HELP tessera_delivery_messages_total Code messages by channel and final result.\n\
             # TYPE tessera_delivery_messages_total counter\n",
        );
        for channel in [Channel::Sms, Channel::Email] {
            let name = channel.as_str().to_lowercase();
            out.push_str(&format!(
                "tessera_delivery_messages_total{{channel=\"{name}\",result=\"delivered\"}} {}\n\
                 tessera_delivery_messages_total{{channel=\"{name}\",result=\"failed\"}} {}\n",
                self.delivered(channel),
                self.failed(channel)
            ));
        }
        out.push_str(
            "# HELP tessera_delivery_failed_attempts_total Failed delivery attempts, retried or not.\n\
             # TYPE tessera_delivery_failed_attempts_total counter\n",
        );
        for channel in [Channel::Sms, Channel::Email] {
            out.push_str(&format!(
                "tessera_delivery_failed_attempts_total{{channel=\"{}\"}} {}\n",
                channel.as_str().to_lowercase(),
                self.failed_attempts(channel)
            ));
        }
        out
    }
}

enum EmailTransport {
    Smtp(Box<smtp::SmtpMailer>),
    Outbox(Arc<outbox::Outbox>),
}

enum SmsTransport {
    Webhook(sms_webhook::SmsWebhook),
    Outbox(Arc<outbox::Outbox>),
}

/// Bad delivery settings, found at start.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryConfigError {
    /// `TESSERA_SMTP_URL` or `TESSERA_MAIL_FROM`.
    #[error("SMTP: {0}")]
    Smtp(String),
    /// `TESSERA_SMS_WEBHOOK_URL`.
    #[error("SMS gateway: {0}")]
    Sms(String),
    /// `TESSERA_SMS_TEMPLATE` or `TESSERA_EMAIL_TEMPLATE_DIR`.
    #[error("message template: {0}")]
    Template(String),
}

/// The configured transports, with retries, metrics and a count of messages in flight.
pub struct Delivery {
    email: EmailTransport,
    sms: SmsTransport,
    templates: templates::Templates,
    retry: RetryPolicy,
    metrics: DeliveryMetrics,
    in_flight: AtomicUsize,
    idle: Notify,
}

impl Delivery {
    /// The transports `config` describes: SMTP and the SMS gateway when their URLs are set,
    /// the outbox file otherwise.
    ///
    /// # Errors
    /// Malformed URLs, sender address or SMS gateway secret; a refused message template.
    pub fn from_config(config: &Config) -> Result<Self, DeliveryConfigError> {
        let templates = templates::Templates::load(
            config.sms_template.as_deref(),
            config.email_template_dir.as_deref(),
            &config.totp_issuer,
        )?;
        let outbox = || Arc::new(outbox::Outbox::new(outbox_path(config)));
        let shared = (config.smtp_url.is_none() || config.sms_webhook_url.is_none()).then(outbox);
        let email = match &config.smtp_url {
            Some(url) => EmailTransport::Smtp(Box::new(
                smtp::SmtpMailer::new(url, &config.mail_from).map_err(DeliveryConfigError::Smtp)?,
            )),
            None => EmailTransport::Outbox(shared.clone().unwrap_or_else(outbox)),
        };
        let sms = match &config.sms_webhook_url {
            Some(url) => SmsTransport::Webhook(
                sms_webhook::SmsWebhook::new(url, config.sms_webhook_secret.as_deref())
                    .map_err(DeliveryConfigError::Sms)?,
            ),
            None => SmsTransport::Outbox(shared.unwrap_or_else(outbox)),
        };
        Ok(Self {
            email,
            sms,
            templates,
            retry: RetryPolicy {
                attempts: config.delivery_attempts.max(1),
                first_backoff: Duration::from_millis(config.delivery_backoff_ms),
            },
            metrics: DeliveryMetrics::default(),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
        })
    }

    /// Where each channel goes, for the start-up log (no credentials).
    pub fn describe(&self) -> [(Channel, String); 2] {
        let email = match &self.email {
            EmailTransport::Smtp(m) => format!("SMTP {}", m.display()),
            EmailTransport::Outbox(o) => format!("development outbox {}", o.path().display()),
        };
        let sms = match &self.sms {
            SmsTransport::Webhook(w) if w.signed() => {
                format!("SMS gateway {} (signed)", w.display())
            }
            SmsTransport::Webhook(w) => format!(
                "SMS gateway {} (unsigned: set TESSERA_SMS_WEBHOOK_SECRET to sign its requests)",
                w.display()
            ),
            SmsTransport::Outbox(o) => format!("development outbox {}", o.path().display()),
        };
        [(Channel::Email, email), (Channel::Sms, sms)]
    }

    /// The channels whose messages go to the development outbox file.
    pub fn outbox_channels(&self) -> Vec<Channel> {
        let mut channels = Vec::new();
        if matches!(self.email, EmailTransport::Outbox(_)) {
            channels.push(Channel::Email);
        }
        if matches!(self.sms, SmsTransport::Outbox(_)) {
            channels.push(Channel::Sms);
        }
        channels
    }

    /// The start-up warning when a channel uses the development outbox: what goes there and
    /// the one setting per such channel that sends it for real. `None` when nothing does.
    pub fn outbox_warning(&self) -> Option<String> {
        let path = self.outbox_path()?;
        let (what, settings) = match self.outbox_channels().as_slice() {
            [Channel::Email] => ("e-mail (codes and security alerts) is", "TESSERA_SMTP_URL"),
            [Channel::Sms] => ("text messages with codes are", "TESSERA_SMS_WEBHOOK_URL"),
            _ => (
                "e-mail (codes and security alerts) and text messages with codes are",
                "TESSERA_SMTP_URL and TESSERA_SMS_WEBHOOK_URL",
            ),
        };
        Some(format!(
            "development outbox in use: {what} written to {} (mode 0600); set {settings} for real delivery",
            path.display()
        ))
    }

    /// The development outbox file, if a channel uses it.
    pub fn outbox_path(&self) -> Option<PathBuf> {
        match (&self.email, &self.sms) {
            (EmailTransport::Outbox(o), _) | (_, SmsTransport::Outbox(o)) => {
                Some(o.path().to_path_buf())
            }
            _ => None,
        }
    }

    /// The message carrying `code`, valid for `minutes`, to `to` on `channel`, from the
    /// configured templates (an e-mail subject never holds the code).
    pub fn code_message(&self, channel: Channel, to: String, code: &str, minutes: i64) -> Message {
        let (subject, body) = match channel {
            Channel::Sms => (String::new(), self.templates.sms(code, minutes)),
            Channel::Email => self.templates.email(code, minutes),
        };
        Message {
            id: uuid::Uuid::now_v7().to_string(),
            channel,
            to,
            subject,
            body,
        }
    }

    /// The counters.
    pub fn metrics(&self) -> &DeliveryMetrics {
        &self.metrics
    }

    /// One attempt.
    ///
    /// # Errors
    /// What the transport ran into.
    pub async fn send_once(&self, message: &Message) -> Result<(), DeliveryError> {
        match (message.channel, &self.email, &self.sms) {
            (Channel::Email, EmailTransport::Smtp(m), _) => m.send(message).await,
            (Channel::Email, EmailTransport::Outbox(o), _)
            | (Channel::Sms, _, SmsTransport::Outbox(o)) => o.append(message).await,
            (Channel::Sms, _, SmsTransport::Webhook(w)) => w.send(message).await,
        }
    }

    /// Sends with retries and backoff; stops early on a permanent failure.
    pub async fn send(&self, message: &Message) -> DeliveryReport {
        let slot = slot(message.channel);
        let mut backoff = self.retry.first_backoff;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let result = self.send_once(message).await;
            match result {
                Ok(()) => {
                    self.metrics.delivered[slot].fetch_add(1, Ordering::Relaxed);
                    return DeliveryReport { attempts, result };
                }
                Err(e) => {
                    self.metrics.failed_attempts[slot].fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(channel = message.channel.as_str(), attempt = attempts, error = %e, "delivery attempt failed");
                    if e.permanent || attempts >= self.retry.attempts {
                        self.metrics.failed[slot].fetch_add(1, Ordering::Relaxed);
                        return DeliveryReport {
                            attempts,
                            result: Err(e),
                        };
                    }
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = backoff.saturating_mul(2);
        }
    }

    /// Marks a background delivery as started; the guard marks it done when dropped.
    pub fn track(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(Arc::clone(self))
    }

    /// Waits until no delivery is in flight, or `timeout` passes; returns whether it drained.
    pub async fn drain(&self, timeout: Duration) -> bool {
        let wait = async {
            loop {
                let idle = self.idle.notified();
                if self.in_flight.load(Ordering::SeqCst) == 0 {
                    return;
                }
                idle.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }
}

/// A delivery in flight (see [`Delivery::track`]).
pub struct InFlight(Arc<Delivery>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// The outbox file: `TESSERA_OUTBOX_PATH`, else `<database>.outbox` beside a SQLite database,
/// else `tessera.outbox` in the working directory.
pub fn outbox_path(config: &Config) -> PathBuf {
    if let Some(path) = &config.outbox_path {
        return path.clone();
    }
    match config.sqlite_path() {
        Some(db) => {
            let mut name = db.into_os_string();
            name.push(".outbox");
            PathBuf::from(name)
        }
        None => PathBuf::from("tessera.outbox"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(smtp: bool, sms: bool) -> Delivery {
        let config = Config {
            smtp_url: smtp.then(|| "smtp://127.0.0.1:2525".into()),
            sms_webhook_url: sms.then(|| "http://127.0.0.1:9/sms".into()),
            outbox_path: Some("/var/tmp/dev.outbox".into()),
            ..Config::default()
        };
        Delivery::from_config(&config).expect("valid settings")
    }

    #[test]
    fn the_outbox_warning_names_only_the_channels_that_use_it() {
        let email_only = delivery(false, true)
            .outbox_warning()
            .expect("e-mail uses it");
        assert!(
            email_only.contains("set TESSERA_SMTP_URL for"),
            "{email_only}"
        );
        assert!(!email_only.contains("SMS"), "{email_only}");
        assert!(!email_only.contains("text messages"), "{email_only}");
        assert!(email_only.contains("/var/tmp/dev.outbox"), "{email_only}");

        let sms_only = delivery(true, false).outbox_warning().expect("SMS uses it");
        assert!(
            sms_only.contains("set TESSERA_SMS_WEBHOOK_URL for"),
            "{sms_only}"
        );
        assert!(!sms_only.contains("SMTP"), "{sms_only}");
        assert!(!sms_only.contains("e-mail"), "{sms_only}");

        let both = delivery(false, false)
            .outbox_warning()
            .expect("both use it");
        assert!(
            both.contains("set TESSERA_SMTP_URL and TESSERA_SMS_WEBHOOK_URL for"),
            "{both}"
        );
        assert_eq!(
            delivery(false, false).outbox_channels(),
            vec![Channel::Email, Channel::Sms]
        );

        assert_eq!(delivery(true, true).outbox_warning(), None);
        assert_eq!(delivery(true, true).outbox_channels(), vec![]);
    }
}
