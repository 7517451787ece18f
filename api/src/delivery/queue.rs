//! The durable queue of code messages (`message_outbox`): a message is written, sealed, before
//! the request that asked for it is answered, and a worker sends it with the transport's
//! retries, then records what came of it on the code's challenge. A crash before or during the
//! send leaves the row due, so the message goes out after the restart: at least once, never
//! lost. Once delivered or given up, the sealed body is erased.

use std::{collections::HashMap, sync::Arc};

use chrono::{TimeDelta, Utc};
use sqlx::Row;
use tessera_domain::{
    challenge::{Challenge, ChallengeCommand, Channel, DeliveryOutcome},
    crypto::{EncryptedSecret, SecretCipher},
    ids::{ChallengeId, FactorId},
    secret::Secret,
};
use tessera_store::{Db, Dialect, Store, ts};
use tokio::sync::Notify;

use crate::delivery::{Delivery, Message};

/// How long a claimed message is reserved for the worker that claimed it: longer than a send
/// with all its retries takes, so two workers (nodes) do not send it at once; a worker that
/// dies leaves it due again after this.
const LEASE: TimeDelta = TimeDelta::seconds(60);

/// Messages a worker claims at a time.
const CLAIM: i64 = 20;

/// One message to queue: what to send, and the challenge its code belongs to.
pub struct Queued {
    /// The message (its body holds the code).
    pub message: Message,
    /// The code's challenge, which records the delivery.
    pub challenge_id: ChallengeId,
    /// The factor the code is for.
    pub factor_id: FactorId,
    /// Metadata for the delivery's event (the request that asked for the code).
    pub metadata: HashMap<String, String>,
}

/// The queue and its worker.
pub struct MessageQueue {
    db: Db,
    cipher: SecretCipher,
    delivery: Arc<Delivery>,
    challenges: Arc<Store<Challenge>>,
    wake: Notify,
}

impl MessageQueue {
    /// A queue on `db`, sealing bodies with `cipher`, sending through `delivery`.
    pub fn new(
        db: Db,
        cipher: SecretCipher,
        delivery: Arc<Delivery>,
        challenges: Arc<Store<Challenge>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            db,
            cipher,
            delivery,
            challenges,
            wake: Notify::new(),
        })
    }

    /// Writes a message to the queue (durably: it is sent even if the server stops now) and
    /// wakes the worker.
    ///
    /// # Errors
    /// Database errors; the message is not queued then.
    pub async fn enqueue(&self, queued: Queued) -> Result<(), sqlx::Error> {
        let id = queued.message.id.clone();
        let body = Secret::new(queued.message.body.expose().as_bytes().to_vec());
        let sealed = serde_json::to_string(&self.cipher.seal(&body, &id))
            .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        let metadata = serde_json::to_string(&queued.metadata)
            .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        let turn = self.db.write_turn().await;
        sqlx::query(
            "INSERT INTO message_outbox (id, channel, destination, subject, sealed_body, \
             challenge_id, factor_id, metadata, next_attempt_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&id)
        .bind(queued.message.channel.as_str())
        .bind(&queued.message.to)
        .bind(&queued.message.subject)
        .bind(sealed)
        .bind(queued.challenge_id.to_string())
        .bind(queued.factor_id.to_string())
        .bind(metadata)
        .bind(ts(Utc::now()))
        .execute(&self.db.pool)
        .await?;
        drop(turn);
        self.wake.notify_one();
        Ok(())
    }

    /// The worker's wake-up.
    pub fn waker(&self) -> &Notify {
        &self.wake
    }

    /// Sends every due message; returns when none is left.
    ///
    /// # Errors
    /// Database errors (what was claimed is due again when its lease ends).
    pub async fn drain(&self) -> Result<(), sqlx::Error> {
        loop {
            let claimed = self.claim().await?;
            if claimed.is_empty() {
                return Ok(());
            }
            for row in claimed {
                self.send(row).await?;
            }
        }
    }

    /// Claims due messages by pushing their next attempt a lease ahead.
    async fn claim(&self) -> Result<Vec<ClaimedRow>, sqlx::Error> {
        let now = Utc::now();
        let lock = match self.db.dialect {
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        // SQLite: `BEGIN IMMEDIATE` in the process's write turn, so the read and the
        // updates after it are one serialised claim.
        let mut tx = self.db.begin_write().await?;
        let rows = sqlx::query(&format!(
            "SELECT id, channel, destination, subject, sealed_body, challenge_id, factor_id, \
             metadata FROM message_outbox WHERE done_at IS NULL AND next_attempt_at <= $1 \
             ORDER BY next_attempt_at LIMIT $2{lock}"
        ))
        .bind(ts(now))
        .bind(CLAIM)
        .fetch_all(&mut *tx)
        .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in rows {
            let id: String = row.try_get("id")?;
            sqlx::query("UPDATE message_outbox SET next_attempt_at = $1 WHERE id = $2")
                .bind(ts(now + LEASE))
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            claimed.push(ClaimedRow {
                id,
                channel: row.try_get("channel")?,
                destination: row.try_get("destination")?,
                subject: row.try_get("subject")?,
                sealed_body: row.try_get("sealed_body")?,
                challenge_id: row.try_get("challenge_id")?,
                factor_id: row.try_get("factor_id")?,
                metadata: row.try_get("metadata")?,
            });
        }
        tx.commit().await?;
        Ok(claimed)
    }

    /// Sends one claimed message with the transport's retries, records the result on its
    /// challenge, and closes the row (erasing the body).
    async fn send(&self, row: ClaimedRow) -> Result<(), sqlx::Error> {
        let _in_flight = self.delivery.track();
        let (report, channel) = match self.open(&row) {
            Ok(message) => (self.delivery.send(&message).await, Some(message.channel)),
            Err(error) => {
                tracing::error!(message = %row.id, %error, "a queued message cannot be read; giving it up");
                (
                    crate::delivery::DeliveryReport {
                        attempts: 0,
                        result: Err(crate::delivery::DeliveryError::permanent(error)),
                    },
                    None,
                )
            }
        };
        let last_error = report.result.as_ref().err().map(|e| e.summary.clone());
        let turn = self.db.write_turn().await;
        sqlx::query(
            "UPDATE message_outbox SET done_at = $1, sealed_body = NULL, \
             attempts = attempts + $2, last_error = $3 WHERE id = $4",
        )
        .bind(ts(Utc::now()))
        .bind(i64::from(report.attempts))
        .bind(&last_error)
        .bind(&row.id)
        .execute(&self.db.pool)
        .await?;
        drop(turn);
        let (Some(channel), Some(challenge_id), Some(factor_id)) = (
            channel,
            ChallengeId::parse(&row.challenge_id),
            FactorId::parse(&row.factor_id),
        ) else {
            return Ok(());
        };
        let outcome = match report.result {
            Ok(()) => DeliveryOutcome::Delivered {
                attempts: report.attempts,
            },
            Err(e) => {
                tracing::error!(challenge = %challenge_id, channel = channel.as_str(), attempts = report.attempts, error = %e, "code delivery failed");
                DeliveryOutcome::Failed {
                    attempts: report.attempts,
                    error: e.summary,
                }
            }
        };
        let metadata: HashMap<String, String> =
            serde_json::from_str(&row.metadata).unwrap_or_default();
        let command = ChallengeCommand::RecordDelivery {
            factor_id,
            channel,
            outcome,
        };
        if let Err(e) = self
            .challenges
            .execute(&challenge_id.to_string(), command, &metadata)
            .await
        {
            tracing::error!(challenge = %challenge_id, error = %e, "could not record a delivery result");
        }
        Ok(())
    }

    /// The message of a claimed row, its body opened.
    fn open(&self, row: &ClaimedRow) -> Result<Message, String> {
        let channel = match row.channel.as_str() {
            "SMS" => Channel::Sms,
            "EMAIL" => Channel::Email,
            other => return Err(format!("unknown channel {other}")),
        };
        let sealed: EncryptedSecret = row
            .sealed_body
            .as_deref()
            .ok_or("no body")
            .and_then(|s| serde_json::from_str(s).map_err(|_| "malformed body"))?;
        let body = self
            .cipher
            .open(&sealed, &row.id)
            .map_err(|e| e.to_string())?;
        let body = String::from_utf8(body.expose().clone()).map_err(|_| "body is not text")?;
        Ok(Message {
            id: row.id.clone(),
            channel,
            to: row.destination.clone(),
            subject: row.subject.clone(),
            body: Secret::new(body),
        })
    }
}

struct ClaimedRow {
    id: String,
    channel: String,
    destination: String,
    subject: String,
    sealed_body: Option<String>,
    challenge_id: String,
    factor_id: String,
    metadata: String,
}
