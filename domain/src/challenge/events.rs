use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    challenge::{ChallengePurpose, Channel, Method},
    factor::FailureReason,
    ids::{ChallengeId, FactorId, UserId},
};

/// Events of a challenge. The variant name is the stored `event_type` (frozen by the contract; `Issued`,
/// `CodeSent`, `Completed`, `FailedAttempt` and `Expired` are named by the spec).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ChallengeEvent {
    /// The challenge exists and waits for an answer.
    Issued(Issued),
    /// A passwordless login's challenge exists and waits for a passkey's answer.
    PasskeyLoginIssued(PasskeyLoginIssued),
    /// A one-time code for one of the user's factors was handed to delivery.
    CodeSent(CodeSent),
    /// Answered; nothing completes it again.
    Completed(Completed),
    /// An attempt to answer it failed.
    FailedAttempt(FailedAttempt),
    /// Its time ran out, or too many attempts failed.
    Expired(Expired),
    /// The code's message was accepted by the SMTP server or SMS gateway.
    Delivered(Delivered),
    /// The code's message could not be delivered, after every retry.
    DeliveryFailed(DeliveryFailed),
}

/// Payload of [`ChallengeEvent::Issued`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Issued {
    /// The challenge (also the stream id).
    pub challenge_id: ChallengeId,
    /// Whose proof is asked for.
    pub user_id: UserId,
    /// What for.
    pub purpose: ChallengePurpose,
    /// For factor challenges: the one factor that can answer it.
    pub factor_id: Option<FactorId>,
    /// The caller's state (step-up), handed back on completion. Caller data, not a secret.
    pub state: Option<Value>,
    /// No answer is accepted from then on.
    pub expires_at: DateTime<Utc>,
    /// When.
    pub at: DateTime<Utc>,
}

/// Payload of [`ChallengeEvent::PasskeyLoginIssued`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PasskeyLoginIssued {
    /// The challenge (also the stream id).
    pub challenge_id: ChallengeId,
    /// webauthn-rs's ceremony state, serialised: kept on the server, redacted in audit reads.
    pub ceremony: Value,
    /// Whether the ceremony named no credential (discoverable, conditional UI).
    pub discoverable: bool,
    /// No answer is accepted from then on.
    pub expires_at: DateTime<Utc>,
    /// When.
    pub at: DateTime<Utc>,
}

/// Payload of [`ChallengeEvent::CodeSent`]. Never the code: the factor keeps its keyed hash.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CodeSent {
    /// The factor the code belongs to.
    pub factor_id: FactorId,
    /// SMS or e-mail.
    pub channel: Channel,
    /// The destination, masked (`+1•••0100`).
    pub destination: String,
    /// The code is refused from then on.
    pub code_expires_at: DateTime<Utc>,
    /// When.
    pub at: DateTime<Utc>,
}

/// Payload of [`ChallengeEvent::Completed`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Completed {
    /// The factor that answered (none for a password-only login).
    pub factor_id: Option<FactorId>,
    /// How it was answered.
    pub method: Method,
    /// When.
    pub at: DateTime<Utc>,
}

/// Payload of [`ChallengeEvent::FailedAttempt`]: the factor's answer, as the factor recorded
/// it (`Factor/FailedAttempt` with the same reason holds the lockout count), or a wrong
/// recovery code (no factor; the user's `FailedAttempt` holds the hard-lock count).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailedAttempt {
    /// The factor tried; none for a recovery code, or when the answer named no factor of
    /// anyone's (a passkey login's assertion with an unknown credential id, reason
    /// `UNKNOWN_CREDENTIAL`). Optional since 1.1; every 1.0 event names one.
    #[serde(default)]
    pub factor_id: Option<FactorId>,
    /// Why it failed.
    pub reason: FailureReason,
    /// Wrong codes given to this challenge so far, this one included (replays, attempts on
    /// a locked factor and attempts without a live code are recorded but not counted).
    pub failed_attempts: u32,
    /// When.
    pub at: DateTime<Utc>,
}

/// Why a challenge ended unanswered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ExpiryReason {
    /// Its lifetime ran out.
    TimedOut,
    /// Too many attempts failed.
    TooManyFailures,
}

/// Payload of [`ChallengeEvent::Expired`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Expired {
    /// Why.
    pub reason: ExpiryReason,
    /// When.
    pub at: DateTime<Utc>,
}

/// Payload of [`ChallengeEvent::Delivered`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Delivered {
    /// The factor the message went to.
    pub factor_id: FactorId,
    /// SMS or e-mail.
    pub channel: Channel,
    /// Attempts it took (1 when the first one worked).
    pub attempts: u32,
    /// When.
    pub at: DateTime<Utc>,
}

/// Payload of [`ChallengeEvent::DeliveryFailed`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeliveryFailed {
    /// The factor the message was for.
    pub factor_id: FactorId,
    /// SMS or e-mail.
    pub channel: Channel,
    /// Attempts made.
    pub attempts: u32,
    /// What the last attempt ran into (`HTTP 503`, `SMTP 451`, `connect`): never the message.
    pub error: String,
    /// When.
    pub at: DateTime<Utc>,
}

impl DomainEvent for ChallengeEvent {
    fn event_type(&self) -> String {
        match self {
            Self::Issued(_) => "Issued",
            Self::PasskeyLoginIssued(_) => "PasskeyLoginIssued",
            Self::CodeSent(_) => "CodeSent",
            Self::Completed(_) => "Completed",
            Self::FailedAttempt(_) => "FailedAttempt",
            Self::Expired(_) => "Expired",
            Self::Delivered(_) => "Delivered",
            Self::DeliveryFailed(_) => "DeliveryFailed",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        <Self as crate::versioning::Versioned>::current_version(&self.event_type())
            .unwrap_or("1.0")
            .to_string()
    }
}

impl crate::versioning::Versioned for ChallengeEvent {
    fn current_version(event_type: &str) -> Option<&'static str> {
        // 1.1: a failed attempt may name no factor (an unknown passkey credential).
        if event_type == "FailedAttempt" {
            return Some("1.1");
        }
        matches!(
            event_type,
            "Issued"
                | "PasskeyLoginIssued"
                | "CodeSent"
                | "Completed"
                | "Expired"
                | "Delivered"
                | "DeliveryFailed"
        )
        .then_some("1.0")
    }

    // 1.0 → 1.1 needs no rewrite: a 1.0 `FailedAttempt` always has its `factor_id`, which reads
    // as `Some` in 1.1.
    fn upcast(
        _event_type: &str,
        _event_version: &str,
        payload: serde_json::Value,
    ) -> serde_json::Value {
        payload
    }
}
