//! The generic SMS gateway (frozen by the contract, docs/architecture.md): `POST {"to": "+E164", "body": "text"}` as JSON
//! to `TESSERA_SMS_WEBHOOK_URL`. 2xx is delivered; 408, 429 and 5xx are retried; any other
//! answer is final.

use std::time::Duration;

use serde_json::json;

use crate::delivery::{DeliveryError, Message};

/// A gateway endpoint.
pub struct SmsWebhook {
    client: reqwest::Client,
    url: reqwest::Url,
}

impl SmsWebhook {
    /// A gateway at `url` (http or https).
    ///
    /// # Errors
    /// A malformed URL or one of another scheme.
    pub fn new(url: &str) -> Result<Self, String> {
        let url = reqwest::Url::parse(url).map_err(|e| format!("invalid URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("the URL must be http:// or https://".into());
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Self { client, url })
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
        let response = self
            .client
            .post(self.url.clone())
            .json(&json!({ "to": message.to, "body": message.body.expose() }))
            .send()
            .await
            .map_err(|e| {
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
