//! E-mail over SMTP with lettre: `TESSERA_SMTP_URL` is `smtp://host:port` (plain, for a local
//! relay; `?tls=required` for STARTTLS) or `smtps://user:pass@host:465` (TLS), and
//! `TESSERA_MAIL_FROM` the sender.

use std::time::Duration;

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Tokio1Executor,
    message::{Mailbox, header::ContentType},
};

use crate::delivery::{DeliveryError, Message};

/// An SMTP relay and the sender address.
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    display: String,
}

impl SmtpMailer {
    /// A mailer for `url` sending as `from`.
    ///
    /// # Errors
    /// A malformed URL or sender address.
    pub fn new(url: &str, from: &str) -> Result<Self, String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("invalid URL: {e}"))?;
        if !matches!(parsed.scheme(), "smtp" | "smtps") {
            return Err("the URL must be smtp:// or smtps://".into());
        }
        let display = format!(
            "{}://{}:{}",
            parsed.scheme(),
            parsed.host_str().unwrap_or(""),
            parsed
                .port()
                .map_or_else(|| "default".to_string(), |p| p.to_string())
        );
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| format!("invalid URL: {e}"))?
            .timeout(Some(Duration::from_secs(10)))
            .build();
        let from = from
            .parse::<Mailbox>()
            .map_err(|e| format!("TESSERA_MAIL_FROM: {e}"))?;
        Ok(Self {
            transport,
            from,
            display,
        })
    }

    /// The relay, without credentials, for logs.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// Sends one message.
    ///
    /// # Errors
    /// The SMTP reply code or kind of failure, never the text.
    pub async fn send(&self, message: &Message) -> Result<(), DeliveryError> {
        let to = message
            .to
            .parse::<Mailbox>()
            .map_err(|_| DeliveryError::permanent("invalid recipient address"))?;
        let email = lettre::Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(message.subject.clone())
            .header(ContentType::TEXT_PLAIN)
            .body(message.body.expose().clone())
            .map_err(|_| DeliveryError::permanent("message could not be built"))?;
        self.transport.send(email).await.map(|_| ()).map_err(|e| {
            let summary = match e.status() {
                Some(code) => format!("SMTP {code}"),
                None if e.is_timeout() => "SMTP timeout".into(),
                None => "SMTP connection".into(),
            };
            if e.is_permanent() {
                DeliveryError::permanent(summary)
            } else {
                DeliveryError::transient(summary)
            }
        })
    }
}
