use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;

use crate::{
    challenge::{ChallengePurpose, Channel, Method},
    factor::FailureReason,
    ids::{ChallengeId, FactorId, UserId},
};

/// Commands on a challenge.
#[derive(Clone, Debug)]
pub enum ChallengeCommand {
    /// Open the challenge (and record its first code, if one was sent with it).
    Issue(Issue),
    /// Open a passwordless login's challenge, with its WebAuthn ceremony.
    IssuePasskeyLogin(PasskeyLoginIssue),
    /// Record that a code for one of the user's factors was handed to delivery.
    RecordCodeSent(SentCode),
    /// Answer the challenge: the factor (or, for a login without second factor, the password)
    /// proved possession.
    Complete {
        /// What the caller thinks it completes; another purpose is refused.
        purpose: ChallengePurpose,
        /// The owner of the factor that answered; must be the challenge's user.
        user_id: UserId,
        /// The factor (none for a password-only login).
        factor_id: Option<FactorId>,
        /// How.
        method: Method,
    },
    /// Record a failed answer (the factor judged it and recorded its own `FailedAttempt`).
    RecordFailure {
        /// The factor tried.
        factor_id: FactorId,
        /// Why it failed.
        reason: FailureReason,
    },
    /// Record an answer to a passkey login whose credential id no factor has registered: a
    /// failed attempt of no factor, counted like a guess (five end the challenge), so the
    /// challenge that already exists bounds what an attacker can write.
    RecordUnknownCredential,
    /// Record a failed recovery-code answer (the user's stream judged it and recorded its own
    /// `FailedAttempt`): `WrongCode` for a guess, which takes one of the challenge's tries as a
    /// wrong TOTP code does; `Replayed` for a code already spent, which does not.
    RecordRecoveryCodeFailure {
        /// Why it failed.
        reason: FailureReason,
    },
    /// Record that the lifetime ran out.
    Expire,
    /// Record what came of delivering a code's message.
    RecordDelivery {
        /// The factor the message was for.
        factor_id: FactorId,
        /// SMS or e-mail.
        channel: Channel,
        /// Delivered or failed.
        outcome: DeliveryOutcome,
    },
}

/// Opens a challenge.
#[derive(Clone, Debug)]
pub struct Issue {
    /// The new challenge's id (the stream id), drawn by the caller.
    pub challenge_id: ChallengeId,
    /// Whose proof is asked for (checked to exist by the caller).
    pub user_id: UserId,
    /// What for.
    pub purpose: ChallengePurpose,
    /// For factor challenges: the factor.
    pub factor_id: Option<FactorId>,
    /// Caller state handed back on completion (at most [`MAX_STATE_BYTES`] as JSON).
    pub state: Option<Value>,
    /// Lifetime, [`MIN_TTL_SECONDS`] to [`MAX_TTL_SECONDS`].
    pub ttl: TimeDelta,
    /// The code sent with it, if any.
    pub code: Option<SentCode>,
}

/// Opens a passwordless login's challenge. It has no user yet: the credential that answers
/// it names one.
#[derive(Clone, Debug)]
pub struct PasskeyLoginIssue {
    /// The new challenge's id, drawn by the caller.
    pub challenge_id: ChallengeId,
    /// webauthn-rs's ceremony state (`DiscoverableAuthentication`, or `PasskeyAuthentication`
    /// naming a user's credentials), serialised.
    pub ceremony: Value,
    /// Whether the ceremony named no credential.
    pub discoverable: bool,
    /// Lifetime, [`MIN_TTL_SECONDS`] to [`MAX_TTL_SECONDS`].
    pub ttl: TimeDelta,
}

/// A code handed to delivery (the code itself stays with the factor, hashed).
#[derive(Clone, Debug)]
pub struct SentCode {
    /// The factor.
    pub factor_id: FactorId,
    /// SMS or e-mail.
    pub channel: Channel,
    /// The destination, already masked.
    pub destination: String,
    /// When the code expires.
    pub code_expires_at: DateTime<Utc>,
}

/// What came of delivering a message.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DeliveryOutcome {
    /// Accepted by the server or gateway after `attempts` tries.
    Delivered {
        /// Tries it took.
        attempts: u32,
    },
    /// Given up after `attempts` tries.
    Failed {
        /// Tries made.
        attempts: u32,
        /// What the last one ran into, without the message.
        error: String,
    },
}

/// Shortest lifetime of a challenge.
pub const MIN_TTL_SECONDS: i64 = 30;
/// Longest lifetime of a challenge.
pub const MAX_TTL_SECONDS: i64 = 3600;
/// Largest caller state, serialised as JSON.
pub const MAX_STATE_BYTES: usize = 4 * 1024;

impl crate::versioning::CommandName for ChallengeCommand {
    fn name(&self) -> &'static str {
        match self {
            Self::Issue(_) => "Issue",
            Self::IssuePasskeyLogin(_) => "IssuePasskeyLogin",
            Self::RecordCodeSent(_) => "RecordCodeSent",
            Self::Complete { .. } => "Complete",
            Self::RecordFailure { .. } => "RecordFailure",
            Self::RecordUnknownCredential => "RecordUnknownCredential",
            Self::RecordRecoveryCodeFailure { .. } => "RecordRecoveryCodeFailure",
            Self::Expire => "Expire",
            Self::RecordDelivery { .. } => "RecordDelivery",
        }
    }
}
