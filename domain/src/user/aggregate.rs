use std::sync::Arc;

use chrono::{DateTime, Utc};
use cqrs_es::{Aggregate, event_sink::EventSink};
use serde::{Deserialize, Serialize};

use crate::{
    crypto::{hash_password, hash_recovery_code, verify_password, verify_recovery_code},
    ids::{FactorId, normalize_login},
    secret::Secret,
    services::Clock,
    user::{
        FailuresReset, LoginFailed, LoginFailureReason, PasswordSet, ProfileUpdated,
        RecoveryCodesGenerated, RecoveryUsed, Register, Registered, RevocationReason,
        SessionsRevoked, SetPassword, UserCommand, UserDeactivated, UserError, UserEvent,
        UserFailedAttempt, UserFailureReason, UserLockedOut, UserReactivated, UserUnlocked,
        recovery,
    },
};

/// Whether a user may use Tessera.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserStatus {
    /// Not registered (the default state of an empty stream).
    #[default]
    Unregistered,
    /// Registered and active.
    Active,
    /// Deactivated by an administrator: cannot log in or prove anything.
    Deactivated,
}

/// A user, folded from its events.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// Lifecycle state.
    pub status: UserStatus,
    /// Normalised login.
    pub login: String,
    /// E-mail address.
    pub email: Option<String>,
    /// Phone number (E.164).
    pub phone_number: Option<String>,
    /// Display name.
    pub display_name: Option<String>,
    /// argon2id hash of the password, if one was set.
    pub password_hash: Option<String>,
    /// When the user registered.
    pub created_at: Option<DateTime<Utc>>,
    /// The current recovery-code set (0: never generated).
    pub recovery_generation: u32,
    /// argon2id hashes of the current set.
    pub recovery_hashes: Vec<String>,
    /// Which codes of the current set were spent.
    pub recovery_used: Vec<bool>,
    /// Consecutive failed proofs across every factor and recovery code.
    pub consecutive_failures: u32,
    /// Locked until an administrator unlocks it.
    pub second_factor_locked: bool,
    /// Failed logins so far.
    #[serde(default)]
    pub failed_logins: u32,
    /// The token generation: access tokens carry the one they were issued under, and one
    /// older than this is refused.
    #[serde(default)]
    pub token_generation: u32,
}

/// What a user's commands need from outside.
#[derive(Clone, Debug)]
pub struct UserServices {
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Consecutive failures that lock the second factor for good
    /// (`TESSERA_HARD_LOCK_THRESHOLD`, NIST SP 800-63B's 100).
    pub hard_lock_threshold: u32,
}

impl User {
    /// Whether the stream holds a registered user.
    pub fn exists(&self) -> bool {
        self.status != UserStatus::Unregistered
    }

    /// Whether the user is deactivated (no login, no proof).
    pub fn is_deactivated(&self) -> bool {
        self.status == UserStatus::Deactivated
    }

    /// Unused codes in the current set.
    pub fn recovery_codes_remaining(&self) -> u32 {
        u32::try_from(self.recovery_used.iter().filter(|used| !**used).count()).unwrap_or(0)
    }
}

impl Aggregate for User {
    const TYPE: &'static str = "User";
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = UserError;
    type Services = UserServices;

    async fn handle(
        &mut self,
        command: UserCommand,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        if !matches!(command, UserCommand::Register(_)) && !self.exists() {
            return Err(UserError::NotFound);
        }
        let now = services.clock.now();
        match command {
            UserCommand::Register(cmd) => self.register(cmd, services, sink).await,
            UserCommand::GenerateRecoveryCodes {
                codes,
                only_if_none,
            } => {
                if only_if_none && self.recovery_generation > 0 {
                    return Ok(());
                }
                self.generate_recovery_codes(&codes, now, sink).await
            }
            UserCommand::UseRecoveryCode { code } => {
                self.use_recovery_code(&code, services, now, sink).await
            }
            UserCommand::RecordFactorFailure { factor_id } => {
                let reason = UserFailureReason::FactorCheckFailed;
                self.record_failure(reason, Some(factor_id), services, now, sink)
                    .await;
                Ok(())
            }
            UserCommand::RefuseWhileLocked { factor_id } => {
                self.refuse_locked(Some(factor_id), now, sink).await;
                Ok(())
            }
            UserCommand::ResetFailures => {
                if self.consecutive_failures > 0 && !self.second_factor_locked {
                    let reset = FailuresReset { at: now };
                    sink.write(UserEvent::FailuresReset(reset), self).await;
                }
                Ok(())
            }
            UserCommand::Unlock => {
                if !self.second_factor_locked {
                    return Err(UserError::NotLocked);
                }
                sink.write(UserEvent::Unlocked(UserUnlocked { at: now }), self)
                    .await;
                Ok(())
            }
            UserCommand::SetPassword(cmd) => self.set_password(cmd, services, sink).await,
            UserCommand::UpdateProfile(cmd) => {
                cmd.validate()?;
                let updated = ProfileUpdated {
                    email: cmd.email.or_else(|| self.email.clone()),
                    phone_number: cmd.phone_number.or_else(|| self.phone_number.clone()),
                    display_name: cmd.display_name.or_else(|| self.display_name.clone()),
                    at: now,
                };
                let unchanged = updated.email == self.email
                    && updated.phone_number == self.phone_number
                    && updated.display_name == self.display_name;
                if !unchanged {
                    sink.write(UserEvent::ProfileUpdated(updated), self).await;
                }
                Ok(())
            }
            UserCommand::Deactivate => {
                if self.status == UserStatus::Deactivated {
                    return Err(UserError::Deactivated);
                }
                sink.write(UserEvent::Deactivated(UserDeactivated { at: now }), self)
                    .await;
                self.revoke_sessions(RevocationReason::Deactivated, now, sink)
                    .await;
                Ok(())
            }
            UserCommand::RevokeSessions => {
                self.revoke_sessions(RevocationReason::Requested, now, sink)
                    .await;
                Ok(())
            }
            UserCommand::Reactivate => {
                if self.status != UserStatus::Deactivated {
                    return Err(UserError::NotDeactivated);
                }
                sink.write(UserEvent::Reactivated(UserReactivated { at: now }), self)
                    .await;
                Ok(())
            }
            UserCommand::RecordLoginFailure { reason } => {
                if !self.exists() {
                    return Err(UserError::NotFound);
                }
                self.record_login_failure(reason, services, sink).await;
                Ok(())
            }
        }
    }

    fn apply(&mut self, event: UserEvent) {
        match event {
            UserEvent::Registered(e) => {
                self.status = UserStatus::Active;
                self.login = e.login;
                self.email = e.email;
                self.phone_number = e.phone_number;
                self.display_name = e.display_name;
                self.created_at = Some(e.at);
            }
            UserEvent::PasswordSet(e) => self.password_hash = Some(e.password_hash),
            UserEvent::RecoveryCodesGenerated(e) => {
                self.recovery_generation = e.generation;
                self.recovery_used = vec![false; e.hashes.len()];
                self.recovery_hashes = e.hashes;
            }
            UserEvent::RecoveryUsed(e) => {
                if let Some(used) = self.recovery_used.get_mut(e.index as usize) {
                    *used = true;
                }
            }
            UserEvent::FailedAttempt(e) => self.consecutive_failures = e.consecutive_failures,
            UserEvent::FailuresReset(_) => self.consecutive_failures = 0,
            UserEvent::LockedOut(_) => self.second_factor_locked = true,
            UserEvent::Unlocked(_) => {
                self.second_factor_locked = false;
                self.consecutive_failures = 0;
            }
            UserEvent::LoginFailed(e) => self.failed_logins = e.failed_logins,
            UserEvent::ProfileUpdated(e) => {
                self.email = e.email;
                self.phone_number = e.phone_number;
                self.display_name = e.display_name;
            }
            UserEvent::Deactivated(_) => self.status = UserStatus::Deactivated,
            UserEvent::Reactivated(_) => self.status = UserStatus::Active,
            UserEvent::SessionsRevoked(e) => self.token_generation = e.generation,
        }
    }
}

impl User {
    async fn register(
        &mut self,
        cmd: Register,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        if self.exists() {
            return Err(UserError::AlreadyRegistered);
        }
        cmd.validate()?;
        let at = services.clock.now();
        let registered = Registered {
            login: normalize_login(&cmd.login),
            email: cmd.email,
            phone_number: cmd.phone_number,
            display_name: cmd.display_name,
            at,
        };
        sink.write(UserEvent::Registered(registered), self).await;
        if let Some(password) = cmd.password {
            let password_hash = hash_password(password.expose());
            sink.write(
                UserEvent::PasswordSet(PasswordSet { password_hash, at }),
                self,
            )
            .await;
        }
        Ok(())
    }

    async fn generate_recovery_codes(
        &mut self,
        codes: &[Secret<String>],
        now: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        if codes.len() != recovery::CODES_PER_SET {
            return Err(UserError::InvalidRecoveryCodeSet);
        }
        let mut hashes = Vec::with_capacity(codes.len());
        for code in codes {
            let canonical =
                recovery::normalize(code.expose()).ok_or(UserError::InvalidRecoveryCodeSet)?;
            hashes.push(hash_recovery_code(&canonical));
        }
        let generated = RecoveryCodesGenerated {
            generation: self.recovery_generation + 1,
            hashes,
            at: now,
        };
        sink.write(UserEvent::RecoveryCodesGenerated(generated), self)
            .await;
        Ok(())
    }

    async fn use_recovery_code(
        &mut self,
        code: &Secret<String>,
        services: &UserServices,
        now: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        let canonical =
            recovery::normalize(code.expose()).ok_or(UserError::MalformedRecoveryCode)?;
        if self.second_factor_locked {
            self.refuse_locked(None, now, sink).await;
            return Ok(());
        }
        let matched = self
            .recovery_hashes
            .iter()
            .zip(&self.recovery_used)
            .position(|(hash, used)| !used && verify_recovery_code(&canonical, hash));
        match matched {
            Some(index) => {
                let used = RecoveryUsed {
                    generation: self.recovery_generation,
                    index: u32::try_from(index).unwrap_or(u32::MAX),
                    remaining: self.recovery_codes_remaining().saturating_sub(1),
                    at: now,
                };
                sink.write(UserEvent::RecoveryUsed(used), self).await;
                if self.consecutive_failures > 0 {
                    sink.write(UserEvent::FailuresReset(FailuresReset { at: now }), self)
                        .await;
                }
            }
            None => {
                let reason = UserFailureReason::WrongRecoveryCode;
                self.record_failure(reason, None, services, now, sink).await;
            }
        }
        Ok(())
    }

    /// Counts one failure; the one that reaches the threshold locks the second factor.
    async fn record_failure(
        &mut self,
        reason: UserFailureReason,
        factor_id: Option<FactorId>,
        services: &UserServices,
        now: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) {
        let consecutive_failures = self.consecutive_failures.saturating_add(1);
        let failed = UserFailedAttempt {
            reason,
            factor_id,
            consecutive_failures,
            at: now,
        };
        sink.write(UserEvent::FailedAttempt(failed), self).await;
        let threshold = services.hard_lock_threshold;
        if !self.second_factor_locked && threshold > 0 && consecutive_failures >= threshold {
            let locked = UserLockedOut {
                consecutive_failures,
                at: now,
            };
            sink.write(UserEvent::LockedOut(locked), self).await;
            // Whoever was guessing may hold a session: it ends with the lock.
            self.revoke_sessions(RevocationReason::HardLocked, now, sink)
                .await;
        }
    }

    async fn revoke_sessions(
        &mut self,
        reason: RevocationReason,
        now: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) {
        let revoked = SessionsRevoked {
            generation: self.token_generation.saturating_add(1),
            reason,
            at: now,
        };
        sink.write(UserEvent::SessionsRevoked(revoked), self).await;
    }

    async fn refuse_locked(
        &mut self,
        factor_id: Option<FactorId>,
        now: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) {
        let failed = UserFailedAttempt {
            reason: UserFailureReason::Locked,
            factor_id,
            consecutive_failures: self.consecutive_failures,
            at: now,
        };
        sink.write(UserEvent::FailedAttempt(failed), self).await;
    }
}

impl User {
    async fn set_password(
        &mut self,
        cmd: SetPassword,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        if !self.exists() {
            return Err(UserError::NotFound);
        }
        cmd.validate()?;
        if let Some(current) = &cmd.current_password {
            let matches = self
                .password_hash
                .as_deref()
                .is_some_and(|phc| verify_password(current.expose(), phc));
            if !matches {
                let reason = if self.password_hash.is_some() {
                    LoginFailureReason::WrongPassword
                } else {
                    LoginFailureReason::NoPassword
                };
                self.record_login_failure(reason, services, sink).await;
                return Ok(());
            }
        }
        let now = services.clock.now();
        // Without a password before there was no login, so no session to end.
        let had_password = self.password_hash.is_some();
        let set = PasswordSet {
            password_hash: hash_password(cmd.password.expose()),
            at: now,
        };
        sink.write(UserEvent::PasswordSet(set), self).await;
        if had_password {
            self.revoke_sessions(RevocationReason::PasswordChanged, now, sink)
                .await;
        }
        Ok(())
    }

    async fn record_login_failure(
        &mut self,
        reason: LoginFailureReason,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) {
        let failed = LoginFailed {
            reason,
            failed_logins: self.failed_logins.saturating_add(1),
            at: services.clock.now(),
        };
        sink.write(UserEvent::LoginFailed(failed), self).await;
    }
}
