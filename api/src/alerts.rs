//! Delivery of security alerts from the `alert_deliveries` outbox: at least once, with
//! exponential backoff, a stable id per alert for de-duplication; to the alert webhook and to
//! the user by e-mail (through the same SMTP relay or development outbox as codes). Webhooks are signed per the
//! Standard Webhooks convention (`webhook-id`, `webhook-timestamp`, `webhook-signature`:
//! `v1,` + base64 HMAC-SHA256 over `id.timestamp.body` under the `whsec_` key).

use std::{sync::Arc, time::Duration};

use crate::delivery::{Delivery, Message};
use base64::{Engine, engine::general_purpose::STANDARD as B64};
use chrono::{TimeDelta, Utc};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use sqlx::{FromRow, Row};
use tessera_domain::{challenge::Channel, secret::Secret};
use tessera_projections::{alerts::AlertRow, read_model::Queries};
use tessera_store::{Db, Dialect, parse_ts, ts};
use tokio::{
    sync::{Notify, watch},
    task::JoinHandle,
};

/// A configured alert webhook.
#[derive(Clone)]
pub struct Webhook {
    /// Where to POST.
    pub url: String,
    key: Vec<u8>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Webhook {
    /// A webhook with a `whsec_…` secret (the alert webhook; the SMS gateway signs with it too).
    ///
    /// # Errors
    /// If the secret is not `whsec_` + base64.
    pub fn new(url: String, secret: &str) -> Result<Self, String> {
        let key = secret
            .strip_prefix("whsec_")
            .and_then(|b| B64.decode(b).ok())
            .filter(|k| !k.is_empty())
            .ok_or("must be whsec_ followed by base64")?;
        Ok(Self { url, key })
    }

    /// The `webhook-signature` value for a message.
    pub fn sign(&self, id: &str, timestamp: i64, body: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
        format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
    }
}

/// The JSON an alert is delivered as.
pub fn alert_json(row: &AlertRow) -> Value {
    json!({
        "id": row.id,
        "userId": row.user_id,
        "kind": row.kind,
        "reason": row.reason,
        "raisedAt": row.raised_at,
        "causedBy": serde_json::from_str::<Value>(&row.caused_by).unwrap_or(Value::Null),
    })
}

#[derive(FromRow)]
struct Due {
    alert_id: String,
    channel: String,
    attempts: i64,
}

/// Drains the outbox.
pub struct Deliverer {
    db: Db,
    queries: Queries,
    http: reqwest::Client,
    webhook: Option<Webhook>,
    mail: Arc<Delivery>,
    wake: Notify,
}

/// Longest pause between two attempts of one delivery.
const MAX_BACKOFF: TimeDelta = TimeDelta::minutes(10);
/// How long a claimed delivery is reserved for the worker that claimed it.
const LEASE: TimeDelta = TimeDelta::seconds(30);

impl Deliverer {
    /// A worker for the configured channels.
    pub fn new(db: Db, webhook: Option<Webhook>, mail: Arc<Delivery>) -> Arc<Self> {
        Arc::new(Self {
            queries: Queries::new(db.clone()),
            db,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            webhook,
            mail,
            wake: Notify::new(),
        })
    }

    /// The channels to queue for each alert.
    /// E-mail always: to the SMTP relay, or to the development outbox without one.
    pub fn channels(webhook: bool) -> Vec<&'static str> {
        let mut channels = vec!["email"];
        if webhook {
            channels.push("webhook");
        }
        channels
    }

    /// Looks at the outbox now.
    pub fn nudge(&self) {
        self.wake.notify_one();
    }

    /// Claims due deliveries by pushing their next attempt a lease ahead, so a second worker
    /// (another node) does not send them at the same time.
    async fn claim(&self) -> Result<Vec<Due>, sqlx::Error> {
        let now = Utc::now();
        let pick = match self.db.dialect {
            Dialect::Postgres => {
                "SELECT alert_id, channel FROM alert_deliveries WHERE delivered_at IS NULL \
                 AND next_attempt_at <= $2 ORDER BY next_attempt_at LIMIT 20 FOR UPDATE SKIP LOCKED"
            }
            Dialect::Sqlite => {
                "SELECT alert_id, channel FROM alert_deliveries WHERE delivered_at IS NULL \
                 AND next_attempt_at <= $2 ORDER BY next_attempt_at LIMIT 20"
            }
        };
        let _turn = self.db.write_turn().await;
        sqlx::query_as(&format!(
            "UPDATE alert_deliveries SET next_attempt_at = $1 \
             WHERE (alert_id, channel) IN ({pick}) RETURNING alert_id, channel, attempts"
        ))
        .bind(ts(now + LEASE))
        .bind(ts(now))
        .fetch_all(&self.db.pool)
        .await
    }

    async fn send(&self, due: &Due) -> Result<(), String> {
        let row = self
            .queries
            .alert(&due.alert_id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("alert row missing")?;
        match due.channel.as_str() {
            "webhook" => {
                let hook = self
                    .webhook
                    .as_ref()
                    .ok_or("webhook no longer configured")?;
                let raised = parse_ts(&row.raised_at).unwrap_or_else(Utc::now);
                let body = json!({
                    "type": "security_alert.raised",
                    "timestamp": ts(raised),
                    "data": alert_json(&row),
                })
                .to_string();
                let timestamp = Utc::now().timestamp();
                let response = self
                    .http
                    .post(&hook.url)
                    .header("content-type", "application/json")
                    .header("webhook-id", &row.id)
                    .header("webhook-timestamp", timestamp.to_string())
                    .header("webhook-signature", hook.sign(&row.id, timestamp, &body))
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| format!("webhook: {e}"))?;
                if response.status().is_success() {
                    Ok(())
                } else {
                    Err(format!("webhook answered {}", response.status()))
                }
            }
            "email" => {
                let user = self
                    .queries
                    .user(&row.user_id)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("user row missing")?;
                // No address is not a failure to retry: there is nobody to write to.
                let Some(to) = user.email else {
                    return Ok(());
                };
                let body = format!(
                    "Security alert for {login}: {reason}.\n\nKind: {kind}\nWhen: {at}\nAlert id: {id}\n\n\
                     If this was not you, contact your administrator.\n",
                    login = user.login,
                    reason = row.reason,
                    kind = row.kind,
                    at = row.raised_at,
                    id = row.id,
                );
                let message = Message {
                    id: row.id.clone(),
                    channel: Channel::Email,
                    to,
                    subject: format!("Security alert: {}", row.kind),
                    body: Secret::new(body),
                };
                self.mail
                    .send_once(&message)
                    .await
                    .map_err(|e| format!("e-mail: {e:?}"))
            }
            other => Err(format!("unknown channel {other}")),
        }
    }

    async fn record(&self, due: &Due, result: Result<(), String>) -> Result<(), sqlx::Error> {
        let attempts = due.attempts + 1;
        let _turn = self.db.write_turn().await;
        match result {
            Ok(()) => {
                tracing::info!(alert = %due.alert_id, channel = %due.channel, attempts, "alert delivered");
                sqlx::query(
                    "UPDATE alert_deliveries SET delivered_at = $1, attempts = $2, last_error = NULL \
                     WHERE alert_id = $3 AND channel = $4",
                )
                .bind(ts(Utc::now()))
                .bind(attempts)
                .bind(&due.alert_id)
                .bind(&due.channel)
                .execute(&self.db.pool)
                .await?;
            }
            Err(error) => {
                let backoff = TimeDelta::seconds(1i64 << attempts.clamp(0, 10)).min(MAX_BACKOFF);
                tracing::warn!(alert = %due.alert_id, channel = %due.channel, attempts, %error, "alert delivery failed; will retry");
                sqlx::query(
                    "UPDATE alert_deliveries SET attempts = $1, last_error = $2, next_attempt_at = $3 \
                     WHERE alert_id = $4 AND channel = $5",
                )
                .bind(attempts)
                .bind(error)
                .bind(ts(Utc::now() + backoff))
                .bind(&due.alert_id)
                .bind(&due.channel)
                .execute(&self.db.pool)
                .await?;
            }
        }
        Ok(())
    }

    async fn drain(&self) -> Result<(), sqlx::Error> {
        loop {
            let due = self.claim().await?;
            if due.is_empty() {
                return Ok(());
            }
            for d in &due {
                let result = self.send(d).await;
                self.record(d, result).await?;
            }
        }
    }

    /// Delivery attempts so far for an alert on a channel, and whether it was delivered.
    ///
    /// # Errors
    /// Database errors.
    pub async fn status(
        &self,
        alert_id: &str,
        channel: &str,
    ) -> Result<Option<(i64, bool)>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT attempts, delivered_at FROM alert_deliveries WHERE alert_id = $1 AND channel = $2",
        )
        .bind(alert_id)
        .bind(channel)
        .fetch_optional(&self.db.pool)
        .await?;
        Ok(match row {
            Some(r) => Some((
                r.try_get("attempts")?,
                r.try_get::<Option<String>, _>("delivered_at")?.is_some(),
            )),
            None => None,
        })
    }

    /// Runs until `shutdown` turns true.
    pub fn spawn(
        self: &Arc<Self>,
        poll: Duration,
        shutdown: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        tessera_store::worker::spawn(
            Arc::clone(self),
            "alert outbox",
            poll,
            shutdown,
            |d| &d.wake,
            |d| async move { d.drain().await },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example from the Standard Webhooks specification.
    #[test]
    fn signature_matches_the_standard_webhooks_example() {
        let hook =
            Webhook::new("http://x".into(), "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = hook.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(Webhook::new("http://x".into(), "nope").is_err());
    }
}
