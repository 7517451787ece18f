use std::sync::Arc;

use chrono::{DateTime, Utc};
use cqrs_es::{Aggregate, event_sink::EventSink};
use serde::{Deserialize, Serialize};

use crate::{
    crypto::SecretCipher,
    factor::{
        Activated, Enroll, Enrolled, EnrollmentExpired, FactorCommand, FactorError, FactorEvent,
        FactorStatus, FactorType, FailedAttempt, FailureReason, LockedOut, Removed, TotpEnrollment,
        Unlocked, Verified, commands::MAX_LABEL, effective_status, lockout, totp,
    },
    ids::{FactorId, UserId},
    secret::PassCode,
    services::{Clock, FactorPolicy},
};

/// Where a factor is in its lifecycle, as stored. Lockout is a deadline beside it, so that a
/// lock whose time is up needs no event to end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum FactorState {
    /// Nothing enrolled under this id.
    #[default]
    Unenrolled,
    /// Waiting for activation.
    PendingActivation,
    /// Usable.
    Active,
    /// Not activated in time.
    Expired,
    /// Removed.
    Removed,
}

/// A factor, folded from its events.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Factor {
    /// Lifecycle state.
    pub state: FactorState,
    /// Its id.
    pub id: Option<FactorId>,
    /// Its owner.
    pub user_id: Option<UserId>,
    /// Its kind.
    pub factor_type: Option<FactorType>,
    /// The user's label.
    pub label: Option<String>,
    /// For TOTP: sealed secret and parameters.
    pub totp: Option<TotpEnrollment>,
    /// Enrolment time.
    pub created_at: Option<DateTime<Utc>>,
    /// Activation deadline.
    pub expires_at: Option<DateTime<Utc>>,
    /// The last TOTP step accepted; no step at or before it is accepted again.
    pub last_used_step: Option<u64>,
    /// Time of the last successful verification.
    pub last_verified_at: Option<DateTime<Utc>>,
    /// Consecutive failed guesses since the last success or unlock.
    pub consecutive_failures: u32,
    /// Locked until then, if a lockout is in force (or ran out without an event yet).
    pub locked_until: Option<DateTime<Utc>>,
}

/// What a factor's commands need from outside.
#[derive(Clone, Debug)]
pub struct FactorServices {
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Seals and opens TOTP secrets.
    pub cipher: SecretCipher,
    /// Skew, lockout and enrolment numbers.
    pub policy: FactorPolicy,
}

impl Factor {
    /// Whether anything was ever enrolled under this id.
    pub fn exists(&self) -> bool {
        self.state != FactorState::Unenrolled
    }

    /// The status a client sees at `now`.
    pub fn status_at(&self, now: DateTime<Utc>) -> FactorStatus {
        let stored = match self.state {
            FactorState::Unenrolled | FactorState::PendingActivation => {
                FactorStatus::PendingActivation
            }
            FactorState::Active => FactorStatus::Active,
            FactorState::Expired => FactorStatus::Expired,
            FactorState::Removed => FactorStatus::Removed,
        };
        effective_status(stored, self.locked_until, self.expires_at, now)
    }
}

impl Aggregate for Factor {
    const TYPE: &'static str = "Factor";
    type Command = FactorCommand;
    type Event = FactorEvent;
    type Error = FactorError;
    type Services = FactorServices;

    async fn handle(
        &mut self,
        command: FactorCommand,
        services: &FactorServices,
        sink: &EventSink<Self>,
    ) -> Result<(), FactorError> {
        let now = services.clock.now();
        match command {
            FactorCommand::Enroll(cmd) => self.enroll(cmd, services, now, sink).await,
            FactorCommand::Activate { pass_code } => {
                self.activate(&pass_code, services, now, sink).await
            }
            FactorCommand::Verify { pass_code } => {
                self.verify(&pass_code, services, now, sink).await
            }
            FactorCommand::Remove => self.remove(now, sink).await,
            FactorCommand::Unlock => self.unlock(now, sink).await,
        }
    }

    fn apply(&mut self, event: FactorEvent) {
        match event {
            FactorEvent::Enrolled(e) => {
                self.state = FactorState::PendingActivation;
                self.id = Some(e.factor_id);
                self.user_id = Some(e.user_id);
                self.factor_type = Some(e.factor_type);
                self.label = e.label;
                self.totp = e.totp;
                self.created_at = Some(e.at);
                self.expires_at = Some(e.expires_at);
            }
            FactorEvent::Activated(e) => {
                self.state = FactorState::Active;
                self.last_used_step = e.step.or(self.last_used_step);
                self.last_verified_at = Some(e.at);
                self.consecutive_failures = 0;
            }
            FactorEvent::Verified(e) => {
                self.last_used_step = e.step.or(self.last_used_step);
                self.last_verified_at = Some(e.at);
                self.consecutive_failures = 0;
            }
            FactorEvent::FailedAttempt(e) => self.consecutive_failures = e.consecutive_failures,
            FactorEvent::LockedOut(e) => self.locked_until = Some(e.until),
            FactorEvent::Unlocked(_) => {
                self.locked_until = None;
                self.consecutive_failures = 0;
            }
            FactorEvent::Removed(_) => self.state = FactorState::Removed,
            FactorEvent::EnrollmentExpired(_) => self.state = FactorState::Expired,
        }
    }
}

impl Factor {
    async fn enroll(
        &mut self,
        cmd: Enroll,
        services: &FactorServices,
        now: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) -> Result<(), FactorError> {
        if self.exists() {
            return Err(FactorError::AlreadyEnrolled);
        }
        if let Some(label) = &cmd.label
            && (label.chars().count() > MAX_LABEL || label.chars().any(char::is_control))
        {
            return Err(FactorError::InvalidLabel);
        }
        let totp = match (cmd.factor_type, cmd.totp) {
            (FactorType::Totp, Some(spec)) => {
                let p = spec.params;
                if spec.secret.expose().len() < totp::MIN_SECRET_BYTES
                    || !(6..=8).contains(&p.digits)
                    || !(15..=120).contains(&p.period)
                {
                    return Err(FactorError::InvalidTotpSpec);
                }
                Some(TotpEnrollment {
                    secret: services
                        .cipher
                        .seal(&spec.secret, &cmd.factor_id.to_string()),
                    params: p,
                })
            }
            (FactorType::Totp, None) => return Err(FactorError::InvalidTotpSpec),
            _ => return Err(FactorError::UnsupportedType),
        };
        let enrolled = Enrolled {
            factor_id: cmd.factor_id,
            user_id: cmd.user_id,
            factor_type: cmd.factor_type,
            label: cmd.label,
            totp,
            expires_at: now + services.policy.enrollment_ttl,
            at: now,
        };
        sink.write(FactorEvent::Enrolled(enrolled), self).await;
        Ok(())
    }

    async fn activate(
        &mut self,
        pass_code: &PassCode,
        services: &FactorServices,
        now: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) -> Result<(), FactorError> {
        match self.state {
            FactorState::Unenrolled => return Err(FactorError::NotFound),
            FactorState::Active => return Err(FactorError::AlreadyActive),
            FactorState::Expired => return Err(FactorError::EnrollmentExpired),
            FactorState::Removed => return Err(FactorError::Removed),
            FactorState::PendingActivation => {}
        }
        self.check_shape(pass_code)?;
        if self.expires_at.is_some_and(|t| now >= t) {
            sink.write(
                FactorEvent::EnrollmentExpired(EnrollmentExpired { at: now }),
                self,
            )
            .await;
            return Ok(());
        }
        if self.refuse_while_locked(now, sink).await {
            return Ok(());
        }
        match self.check_code(pass_code, services, now)? {
            totp::Check::Accepted(step) => {
                let activated = Activated {
                    step: Some(step),
                    at: now,
                };
                sink.write(FactorEvent::Activated(activated), self).await;
            }
            totp::Check::Replayed => self.record_replay(now, sink).await,
            totp::Check::Wrong => self.record_wrong_code(services, now, sink).await,
        }
        Ok(())
    }

    async fn verify(
        &mut self,
        pass_code: &PassCode,
        services: &FactorServices,
        now: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) -> Result<(), FactorError> {
        match self.state {
            FactorState::Unenrolled => return Err(FactorError::NotFound),
            FactorState::Removed => return Err(FactorError::Removed),
            FactorState::PendingActivation | FactorState::Expired => {
                return Err(FactorError::NotActive);
            }
            FactorState::Active => {}
        }
        self.check_shape(pass_code)?;
        if self.refuse_while_locked(now, sink).await {
            return Ok(());
        }
        match self.check_code(pass_code, services, now)? {
            totp::Check::Accepted(step) => {
                let verified = Verified {
                    step: Some(step),
                    at: now,
                };
                sink.write(FactorEvent::Verified(verified), self).await;
            }
            totp::Check::Replayed => self.record_replay(now, sink).await,
            totp::Check::Wrong => self.record_wrong_code(services, now, sink).await,
        }
        Ok(())
    }

    async fn remove(
        &mut self,
        now: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) -> Result<(), FactorError> {
        match self.state {
            FactorState::Unenrolled => Err(FactorError::NotFound),
            FactorState::Removed => Err(FactorError::Removed),
            _ => {
                sink.write(FactorEvent::Removed(Removed { at: now }), self)
                    .await;
                Ok(())
            }
        }
    }

    async fn unlock(
        &mut self,
        now: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) -> Result<(), FactorError> {
        match self.state {
            FactorState::Unenrolled => Err(FactorError::NotFound),
            FactorState::Removed => Err(FactorError::Removed),
            _ if self.locked_until.is_none() => Err(FactorError::NotLocked),
            _ => {
                let unlocked = Unlocked {
                    automatic: false,
                    at: now,
                };
                sink.write(FactorEvent::Unlocked(unlocked), self).await;
                Ok(())
            }
        }
    }

    fn check_shape(&self, pass_code: &PassCode) -> Result<(), FactorError> {
        let params = self.totp.as_ref().map(|t| t.params).unwrap_or_default();
        if totp::well_formed(params, pass_code.expose()) {
            Ok(())
        } else {
            Err(FactorError::MalformedPassCode)
        }
    }

    /// While a lock is in force, records the attempt without looking at the code and returns
    /// `true`. A lock whose time is up is ended with an `Unlocked` event first.
    async fn refuse_while_locked(&mut self, now: DateTime<Utc>, sink: &EventSink<Self>) -> bool {
        match self.locked_until {
            Some(until) if now < until => {
                let failed = FailedAttempt {
                    reason: FailureReason::Locked,
                    counted: false,
                    consecutive_failures: self.consecutive_failures,
                    at: now,
                };
                sink.write(FactorEvent::FailedAttempt(failed), self).await;
                true
            }
            Some(_) => {
                let unlocked = Unlocked {
                    automatic: true,
                    at: now,
                };
                sink.write(FactorEvent::Unlocked(unlocked), self).await;
                false
            }
            None => false,
        }
    }

    fn check_code(
        &self,
        pass_code: &PassCode,
        services: &FactorServices,
        now: DateTime<Utc>,
    ) -> Result<totp::Check, FactorError> {
        let enrollment = self.totp.as_ref().ok_or(FactorError::UnsupportedType)?;
        let id = self.id.ok_or(FactorError::NotFound)?;
        let secret = services
            .cipher
            .open(&enrollment.secret, &id.to_string())
            .map_err(|_| FactorError::SecretUnavailable)?;
        let unix = u64::try_from(now.timestamp()).unwrap_or(0);
        Ok(totp::check(
            enrollment.params,
            secret.expose(),
            pass_code.expose(),
            unix,
            services.policy.totp_skew_steps,
            self.last_used_step,
        ))
    }

    /// A replayed code is a failure on record but not a guess: it does not count towards
    /// lockout, so sixteen racing submissions of one code cannot lock the owner out.
    async fn record_replay(&mut self, now: DateTime<Utc>, sink: &EventSink<Self>) {
        let failed = FailedAttempt {
            reason: FailureReason::Replayed,
            counted: false,
            consecutive_failures: self.consecutive_failures,
            at: now,
        };
        sink.write(FactorEvent::FailedAttempt(failed), self).await;
    }

    async fn record_wrong_code(
        &mut self,
        services: &FactorServices,
        now: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) {
        let policy = &services.policy;
        let after = lockout::after_failure(
            self.consecutive_failures,
            policy.lockout_threshold,
            policy.lockout_duration,
            now,
        );
        let failed = FailedAttempt {
            reason: FailureReason::WrongCode,
            counted: true,
            consecutive_failures: after.consecutive_failures,
            at: now,
        };
        sink.write(FactorEvent::FailedAttempt(failed), self).await;
        if let Some(until) = after.lock_until {
            let locked = LockedOut {
                until,
                consecutive_failures: after.consecutive_failures,
                at: now,
            };
            sink.write(FactorEvent::LockedOut(locked), self).await;
        }
    }
}
