//! The generic SMS gateway (frozen by the contract, docs/architecture.md): `POST {"to": "+E164", "body": "text"}` as JSON
//! to `TESSERA_SMS_WEBHOOK_URL`. 2xx is delivered; 408, 429 and 5xx are retried; any other
//! answer is final. With `TESSERA_SMS_WEBHOOK_SECRET` each request is signed as the alert
//! webhooks are (Standard Webhooks: `webhook-id`, the message's id, stable across retries;
//! `webhook-timestamp`; `webhook-signature`), so the gateway can refuse forged messages.

use std::time::Duration;

use serde_json::json;

use crate::{
    alerts::Webhook,
    delivery::{DeliveryError, Message},
};

/// A gateway endpoint.
pub struct SmsWebhook {
    client: reqwest::Client,
    url: reqwest::Url,
    signer: Option<Webhook>,
}

impl SmsWebhook {
    /// A gateway at `url` (http or https), its requests signed under `secret` if given.
    ///
    /// # Errors
    /// A malformed URL or one of another scheme; a secret that is not `whsec_` + base64.
    pub fn new(url: &str, secret: Option<&str>) -> Result<Self, String> {
        let url = reqwest::Url::parse(url).map_err(|e| format!("invalid URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("the URL must be http:// or https://".into());
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        let signer = secret
            .map(|s| Webhook::new(url.to_string(), s))
            .transpose()
            .map_err(|e| format!("TESSERA_SMS_WEBHOOK_SECRET {e}"))?;
        Ok(Self {
            client,
            url,
            signer,
        })
    }

    /// Whether requests are signed.
    pub fn signed(&self) -> bool {
        self.signer.is_some()
    }

    /// The URL without credentials or query (which may hold a token), for logs.
    pub fn display(&self) -> String {
        let mut shown = self.url.clone();
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        shown.set_query(None);
        shown.to_string()
    }

    /// Posts one message.
    ///
    /// # Errors
    /// The status or kind of failure, never the body.
    pub async fn send(&self, message: &Message) -> Result<(), DeliveryError> {
        // Signed over the exact bytes sent.
        let body = json!({ "to": message.to, "body": message.body.expose() }).to_string();
        let mut request = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if let Some(signer) = &self.signer {
            let timestamp = chrono::Utc::now().timestamp();
            request = request
                .header("webhook-id", &message.id)
                .header("webhook-timestamp", timestamp.to_string())
                .header(
                    "webhook-signature",
                    signer.sign(&message.id, timestamp, &body),
                );
        }
        let response = request.body(body).send().await.map_err(|e| {
            DeliveryError::transient(if e.is_timeout() {
                "HTTP timeout"
            } else if e.is_connect() {
                "HTTP connect"
            } else {
                "HTTP request"
            })
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let summary = format!("HTTP {}", status.as_u16());
        if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
            Err(DeliveryError::transient(summary))
        } else {
            Err(DeliveryError::permanent(summary))
        }
    }
}
