use std::sync::Arc;

use chrono::{DateTime, Utc};
use cqrs_es::{Aggregate, event_sink::EventSink};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    challenge::{
        ChallengeCommand, ChallengeError, ChallengeEvent, ChallengePurpose, CodeSent, Completed,
        Delivered, DeliveryFailed, DeliveryOutcome, Expired, ExpiryReason, FailedAttempt, Issue,
        Issued, MAX_STATE_BYTES, MAX_TTL_SECONDS, MIN_TTL_SECONDS, Method, PasskeyLoginIssued,
        SentCode,
    },
    factor::FailureReason,
    ids::{ChallengeId, FactorId, UserId},
    services::Clock,
};

/// Where a challenge is, as stored. An open challenge past its deadline reads `Expired`
/// ([`Challenge::status_at`]) before the event that records it is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChallengeStatus {
    /// Nothing issued under this id.
    #[default]
    Unissued,
    /// Waiting for an answer.
    Issued,
    /// Answered.
    Completed,
    /// Ended unanswered.
    Expired,
}

impl ChallengeStatus {
    /// The contract name (`ISSUED`, `COMPLETED`, `EXPIRED`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unissued => "UNISSUED",
            Self::Issued => "ISSUED",
            Self::Completed => "COMPLETED",
            Self::Expired => "EXPIRED",
        }
    }
}

/// A challenge, folded from its events.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Challenge {
    /// Lifecycle state.
    pub status: ChallengeStatus,
    /// Its id.
    pub id: Option<ChallengeId>,
    /// Whose proof it asks for.
    pub user_id: Option<UserId>,
    /// What for.
    pub purpose: Option<ChallengePurpose>,
    /// For factor challenges: the factor.
    pub factor_id: Option<FactorId>,
    /// Caller state.
    pub state: Option<Value>,
    /// Deadline.
    pub expires_at: Option<DateTime<Utc>>,
    /// Issue time.
    pub created_at: Option<DateTime<Utc>>,
    /// Failed attempts so far.
    pub failed_attempts: u32,
    /// Codes sent for it.
    pub codes_sent: u32,
    /// The factor that answered it.
    pub completed_by: Option<FactorId>,
    /// How it was answered.
    pub method: Option<Method>,
    /// When it was answered.
    pub completed_at: Option<DateTime<Utc>>,
    /// Why it ended unanswered.
    pub expiry_reason: Option<ExpiryReason>,
    /// What came of delivering the latest code: `None` while pending or without a code.
    pub delivery: Option<DeliveryOutcome>,
    /// A passwordless login's WebAuthn ceremony state.
    #[serde(default)]
    pub ceremony: Option<Box<Value>>,
    /// Whether that ceremony named no credential.
    #[serde(default)]
    pub discoverable: bool,
}

/// What a challenge's commands need from outside.
#[derive(Clone, Debug)]
pub struct ChallengeServices {
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Failed attempts after which a challenge expires (5).
    pub max_failed_attempts: u32,
}

/// Longest `display` text a step-up page shows.
pub const MAX_DISPLAY_CHARS: usize = 280;

impl Challenge {
    /// Whether anything was issued under this id.
    pub fn exists(&self) -> bool {
        self.status != ChallengeStatus::Unissued
    }

    /// The status a client sees at `now`.
    pub fn status_at(&self, now: DateTime<Utc>) -> ChallengeStatus {
        match self.status {
            ChallengeStatus::Issued if self.is_past_deadline(now) => ChallengeStatus::Expired,
            other => other,
        }
    }

    /// What a step-up asks the user to confirm, as a page shows it: the `display` text the
    /// caller put in its state (a string, trimmed, at most [`MAX_DISPLAY_CHARS`] characters);
    /// `None` for other challenges, or a state without one.
    pub fn display(&self) -> Option<String> {
        if self.purpose != Some(ChallengePurpose::StepUp) {
            return None;
        }
        let text = self.state.as_ref()?.get("display")?.as_str()?.trim();
        (!text.is_empty()).then(|| text.chars().take(MAX_DISPLAY_CHARS).collect())
    }

    /// Whether it is open and can still be answered at `now`.
    pub fn is_open_at(&self, now: DateTime<Utc>) -> bool {
        self.status_at(now) == ChallengeStatus::Issued
    }

    fn is_past_deadline(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|t| now >= t)
    }

    /// Refuses a command on a challenge that is not open (past its deadline counts as open
    /// here: the caller decides whether to record the expiry).
    fn require_issued(&self) -> Result<(), ChallengeError> {
        match self.status {
            ChallengeStatus::Unissued => Err(ChallengeError::NotFound),
            ChallengeStatus::Completed => Err(ChallengeError::AlreadyCompleted),
            ChallengeStatus::Expired => Err(ChallengeError::Expired),
            ChallengeStatus::Issued => Ok(()),
        }
    }
}

impl Aggregate for Challenge {
    const TYPE: &'static str = "Challenge";
    type Command = ChallengeCommand;
    type Event = ChallengeEvent;
    type Error = ChallengeError;
    type Services = ChallengeServices;

    async fn handle(
        &mut self,
        command: ChallengeCommand,
        services: &ChallengeServices,
        sink: &EventSink<Self>,
    ) -> Result<(), ChallengeError> {
        let now = services.clock.now();
        match command {
            ChallengeCommand::Issue(cmd) => self.issue(cmd, now, sink).await,
            ChallengeCommand::IssuePasskeyLogin(cmd) => {
                if self.exists() {
                    return Err(ChallengeError::AlreadyIssued);
                }
                if !(MIN_TTL_SECONDS..=MAX_TTL_SECONDS).contains(&cmd.ttl.num_seconds()) {
                    return Err(ChallengeError::InvalidTtl);
                }
                let issued = PasskeyLoginIssued {
                    challenge_id: cmd.challenge_id,
                    ceremony: cmd.ceremony,
                    discoverable: cmd.discoverable,
                    expires_at: now + cmd.ttl,
                    at: now,
                };
                sink.write(ChallengeEvent::PasskeyLoginIssued(issued), self)
                    .await;
                Ok(())
            }
            ChallengeCommand::RecordCodeSent(code) => {
                self.require_issued()?;
                if self.is_past_deadline(now) {
                    return Err(ChallengeError::Expired);
                }
                self.record_code(code, now, sink).await;
                Ok(())
            }
            ChallengeCommand::Complete {
                purpose,
                user_id,
                factor_id,
                method,
            } => {
                self.require_issued()?;
                if self.purpose != Some(purpose) {
                    return Err(ChallengeError::WrongPurpose);
                }
                // A passwordless login has no user until a credential answers it.
                let unowned = self.user_id.is_none() && purpose == ChallengePurpose::PasskeyLogin;
                if self.user_id != Some(user_id) && !unowned {
                    return Err(ChallengeError::FactorOfAnotherUser);
                }
                if self.expire_if_due(now, sink).await {
                    return Ok(());
                }
                let completed = Completed {
                    factor_id,
                    method,
                    at: now,
                };
                sink.write(ChallengeEvent::Completed(completed), self).await;
                Ok(())
            }
            ChallengeCommand::RecordFailure { factor_id, reason } => {
                self.record_failure(Some(factor_id), reason, services, now, sink)
                    .await
            }
            ChallengeCommand::RecordUnknownCredential => {
                if self.purpose != Some(ChallengePurpose::PasskeyLogin) {
                    return Err(ChallengeError::WrongPurpose);
                }
                let reason = FailureReason::UnknownCredential;
                self.record_failure(None, reason, services, now, sink).await
            }
            // A wrong recovery code is a guess like a wrong TOTP code: it takes one of the
            // challenge's tries, so a login challenge bounds recovery-code guessing too.
            ChallengeCommand::RecordRecoveryCodeFailure { reason } => {
                self.record_failure(None, reason, services, now, sink).await
            }
            ChallengeCommand::Expire => match self.status {
                ChallengeStatus::Expired => Ok(()),
                _ => {
                    self.require_issued()?;
                    if self.expire_if_due(now, sink).await {
                        Ok(())
                    } else {
                        Err(ChallengeError::NotExpired)
                    }
                }
            },
            ChallengeCommand::RecordDelivery {
                factor_id,
                channel,
                outcome,
            } => {
                if !self.exists() {
                    return Err(ChallengeError::NotFound);
                }
                let event = match outcome {
                    DeliveryOutcome::Delivered { attempts } => {
                        ChallengeEvent::Delivered(Delivered {
                            factor_id,
                            channel,
                            attempts,
                            at: now,
                        })
                    }
                    DeliveryOutcome::Failed { attempts, error } => {
                        ChallengeEvent::DeliveryFailed(DeliveryFailed {
                            factor_id,
                            channel,
                            attempts,
                            error,
                            at: now,
                        })
                    }
                };
                sink.write(event, self).await;
                Ok(())
            }
        }
    }

    fn apply(&mut self, event: ChallengeEvent) {
        match event {
            ChallengeEvent::Issued(e) => {
                self.status = ChallengeStatus::Issued;
                self.id = Some(e.challenge_id);
                self.user_id = Some(e.user_id);
                self.purpose = Some(e.purpose);
                self.factor_id = e.factor_id;
                self.state = e.state;
                self.expires_at = Some(e.expires_at);
                self.created_at = Some(e.at);
            }
            ChallengeEvent::PasskeyLoginIssued(e) => {
                self.status = ChallengeStatus::Issued;
                self.id = Some(e.challenge_id);
                self.purpose = Some(ChallengePurpose::PasskeyLogin);
                self.ceremony = Some(Box::new(e.ceremony));
                self.discoverable = e.discoverable;
                self.expires_at = Some(e.expires_at);
                self.created_at = Some(e.at);
            }
            ChallengeEvent::CodeSent(_) => {
                self.codes_sent += 1;
                self.delivery = None;
            }
            ChallengeEvent::Completed(e) => {
                self.status = ChallengeStatus::Completed;
                self.completed_by = e.factor_id;
                self.method = Some(e.method);
                self.completed_at = Some(e.at);
            }
            ChallengeEvent::FailedAttempt(e) => self.failed_attempts = e.failed_attempts,
            ChallengeEvent::Expired(e) => {
                self.status = ChallengeStatus::Expired;
                self.expiry_reason = Some(e.reason);
            }
            ChallengeEvent::Delivered(e) => {
                self.delivery = Some(DeliveryOutcome::Delivered {
                    attempts: e.attempts,
                });
            }
            ChallengeEvent::DeliveryFailed(e) => {
                self.delivery = Some(DeliveryOutcome::Failed {
                    attempts: e.attempts,
                    error: e.error,
                });
            }
        }
    }
}

impl Challenge {
    async fn issue(
        &mut self,
        cmd: Issue,
        now: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) -> Result<(), ChallengeError> {
        if self.exists() {
            return Err(ChallengeError::AlreadyIssued);
        }
        if !(MIN_TTL_SECONDS..=MAX_TTL_SECONDS).contains(&cmd.ttl.num_seconds()) {
            return Err(ChallengeError::InvalidTtl);
        }
        if cmd.state.as_ref().is_some_and(|s| !state_fits(s)) {
            return Err(ChallengeError::StateTooLarge);
        }
        let issued = Issued {
            challenge_id: cmd.challenge_id,
            user_id: cmd.user_id,
            purpose: cmd.purpose,
            factor_id: cmd.factor_id,
            state: cmd.state,
            expires_at: now + cmd.ttl,
            at: now,
        };
        sink.write(ChallengeEvent::Issued(issued), self).await;
        if let Some(code) = cmd.code {
            self.record_code(code, now, sink).await;
        }
        Ok(())
    }

    async fn record_code(&mut self, code: SentCode, now: DateTime<Utc>, sink: &EventSink<Self>) {
        let sent = CodeSent {
            factor_id: code.factor_id,
            channel: code.channel,
            destination: code.destination,
            code_expires_at: code.code_expires_at,
            at: now,
        };
        sink.write(ChallengeEvent::CodeSent(sent), self).await;
    }

    /// Writes `Expired` if an open challenge is past its deadline; returns whether it did.
    async fn expire_if_due(&mut self, now: DateTime<Utc>, sink: &EventSink<Self>) -> bool {
        if self.status == ChallengeStatus::Issued && self.is_past_deadline(now) {
            let expired = Expired {
                reason: ExpiryReason::TimedOut,
                at: now,
            };
            sink.write(ChallengeEvent::Expired(expired), self).await;
            true
        } else {
            false
        }
    }

    async fn record_failure(
        &mut self,
        factor_id: Option<FactorId>,
        reason: FailureReason,
        services: &ChallengeServices,
        now: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) -> Result<(), ChallengeError> {
        self.require_issued()?;
        if self.expire_if_due(now, sink).await {
            return Ok(());
        }
        // Only a wrong code (or a forged or foreign assertion) is a guess. A replay, a locked factor or a missing code is on
        // record but not counted, so racing submissions of one right code cannot use up the
        // challenge before the one that succeeded completes it.
        let guess = u32::from(reason.is_guess());
        let failed = FailedAttempt {
            factor_id,
            reason,
            failed_attempts: self.failed_attempts.saturating_add(guess),
            at: now,
        };
        sink.write(ChallengeEvent::FailedAttempt(failed), self)
            .await;
        if services.max_failed_attempts > 0 && self.failed_attempts >= services.max_failed_attempts
        {
            let expired = Expired {
                reason: ExpiryReason::TooManyFailures,
                at: now,
            };
            sink.write(ChallengeEvent::Expired(expired), self).await;
        }
        Ok(())
    }
}

/// Whether a caller's step-up state is small enough to keep in the log: at most
/// [`MAX_STATE_BYTES`] as JSON.
pub fn state_fits(state: &serde_json::Value) -> bool {
    serde_json::to_vec(state).is_ok_and(|v| v.len() <= MAX_STATE_BYTES)
}
