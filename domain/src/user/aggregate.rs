use std::sync::Arc;

use chrono::{DateTime, Utc};
use cqrs_es::{Aggregate, event_sink::EventSink};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    ids::FactorId,
    services::Clock,
    user::{
        CodeRefused, DeviceRevocationReason, DeviceRevoked, DeviceTrusted, FailuresReset,
        LoginFailed, LoginFailureReason, LoginFailuresReset, LoginThrottled, PasswordSet,
        ProfileUpdated, RecoveryCodesGenerated, RecoveryUsed, Register, Registered,
        RevocationReason, SessionsRevoked, SetPassword, SmsBudgetThresholdCrossed,
        TrustedDeviceUsed, UserCommand, UserDeactivated, UserDeleted, UserError, UserEvent,
        UserFailedAttempt, UserFailureReason, UserLockedOut, UserReactivated, UserUnlocked,
        login::enforce_login,
        recovery::{CodeCheck, HashedCodeSet},
        throttle::{LoginThrottle, ThrottlePolicy},
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
    /// Deleted by an administrator: gone from the read models, refused everywhere; the
    /// login stays taken (the id is derived from it and the stream keeps the history).
    Deleted,
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
    /// Given name.
    #[serde(default)]
    pub first_name: Option<String>,
    /// Family name.
    #[serde(default)]
    pub last_name: Option<String>,
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
    /// The password throttle: wrong passwords since the last success.
    #[serde(default)]
    pub login_throttle: LoginThrottle,
    /// Devices trusted to stand in for the second factor (revoked ones removed; expired ones
    /// kept until revoked, and refused).
    #[serde(default)]
    pub trusted_devices: Vec<TrustedDevice>,
    /// The token generation: access tokens carry the one they were issued under, and one
    /// older than this is refused.
    #[serde(default)]
    pub token_generation: u32,
}

/// A device the user asked to be remembered on.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct TrustedDevice {
    /// Its id (the first part of its token).
    pub id: Uuid,
    /// Keyed hash of the token's secret part.
    pub token_hash: String,
    /// From the user agent.
    pub label: Option<String>,
    /// When it was trusted.
    pub created_at: DateTime<Utc>,
    /// When it last stood in for a second factor.
    pub last_used_at: Option<DateTime<Utc>>,
    /// When the trust ends.
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for TrustedDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustedDevice")
            .field("id", &self.id)
            .field("label", &self.label)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// What a user's commands need from outside.
#[derive(Clone, Debug)]
pub struct UserServices {
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Consecutive failures that lock the second factor for good
    /// (`TESSERA_HARD_LOCK_THRESHOLD`, NIST SP 800-63B's 100).
    pub hard_lock_threshold: u32,
    /// The password-guessing throttle.
    pub login_throttle: ThrottlePolicy,
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

    /// The trusted device `id`, if the user has it and its trust has not ended at `now`.
    pub fn trusted_device(&self, id: Uuid, now: DateTime<Utc>) -> Option<&TrustedDevice> {
        self.trusted_devices
            .iter()
            .find(|d| d.id == id && d.expires_at > now)
    }

    /// Whether the user was deleted.
    pub fn is_deleted(&self) -> bool {
        self.status == UserStatus::Deleted
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
        // A deleted user takes no command; registering the login again is AlreadyRegistered.
        if self.is_deleted() {
            return Err(match command {
                UserCommand::Register(_) => UserError::AlreadyRegistered,
                _ => UserError::NotFound,
            });
        }
        let now = services.clock.now();
        match command {
            UserCommand::Register(cmd) => self.register(cmd, services, sink).await,
            UserCommand::GenerateRecoveryCodes {
                hashes,
                only_if_none,
            } => {
                if only_if_none && self.recovery_generation > 0 {
                    return Ok(());
                }
                self.generate_recovery_codes(hashes, now, sink).await
            }
            UserCommand::UseRecoveryCode { check } => {
                self.use_recovery_code(check, services, now, sink).await
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
                    first_name: cmd.first_name.or_else(|| self.first_name.clone()),
                    last_name: cmd.last_name.or_else(|| self.last_name.clone()),
                    at: now,
                };
                let unchanged = updated.email == self.email
                    && updated.phone_number == self.phone_number
                    && updated.display_name == self.display_name
                    && updated.first_name == self.first_name
                    && updated.last_name == self.last_name;
                if !unchanged {
                    sink.write(UserEvent::ProfileUpdated(updated), self).await;
                }
                Ok(())
            }
            UserCommand::Delete => {
                sink.write(UserEvent::Deleted(UserDeleted { at: now }), self)
                    .await;
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
            UserCommand::EndEnrollment => {
                self.revoke_sessions(RevocationReason::EnrollmentCompleted, now, sink)
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
            UserCommand::TrustDevice(cmd) => {
                let trusted = DeviceTrusted {
                    device_id: cmd.device_id,
                    token_hash: cmd.token_hash,
                    label: cmd.label,
                    expires_at: cmd.expires_at,
                    at: now,
                };
                sink.write(UserEvent::DeviceTrusted(trusted), self).await;
                Ok(())
            }
            UserCommand::UseTrustedDevice { device_id } => {
                if self.trusted_device(device_id, now).is_none() {
                    return Err(UserError::DeviceNotFound);
                }
                let used = TrustedDeviceUsed { device_id, at: now };
                sink.write(UserEvent::TrustedDeviceUsed(used), self).await;
                Ok(())
            }
            UserCommand::RevokeDevice { device_id } => {
                if !self.trusted_devices.iter().any(|d| d.id == device_id) {
                    return Err(UserError::DeviceNotFound);
                }
                let revoked = DeviceRevoked {
                    device_id,
                    reason: DeviceRevocationReason::Revoked,
                    at: now,
                };
                sink.write(UserEvent::DeviceRevoked(revoked), self).await;
                Ok(())
            }
            UserCommand::RevokeAllDevices { reason } => {
                self.revoke_all_devices(reason, now, sink).await;
                Ok(())
            }
            UserCommand::RecordCodeRefusal(r) => {
                let refused = CodeRefused {
                    channel: r.channel,
                    reason: r.reason,
                    destination: r.destination,
                    country_code: r.country_code,
                    factor_id: r.factor_id,
                    retry_after_seconds: r.retry_after_seconds,
                    at: now,
                };
                sink.write(UserEvent::CodeRefused(refused), self).await;
                Ok(())
            }
            UserCommand::RecordSmsBudgetWarning {
                sent,
                budget,
                window_ends_at,
            } => {
                let crossed = SmsBudgetThresholdCrossed {
                    sent,
                    budget,
                    window_ends_at,
                    at: now,
                };
                sink.write(UserEvent::SmsBudgetThresholdCrossed(crossed), self)
                    .await;
                Ok(())
            }
            UserCommand::ResetLoginFailures => {
                if !self.login_throttle.is_clear() {
                    let reset = LoginFailuresReset { at: now };
                    sink.write(UserEvent::LoginFailuresReset(reset), self).await;
                }
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
                self.first_name = e.first_name;
                self.last_name = e.last_name;
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
            UserEvent::LoginFailed(e) => {
                self.failed_logins = e.failed_logins;
                self.login_throttle.failures = self.login_throttle.failures.saturating_add(1);
            }
            UserEvent::LoginThrottled(e) => {
                self.login_throttle = LoginThrottle {
                    failures: 0,
                    runs: e.runs,
                    until: Some(e.until),
                };
            }
            UserEvent::LoginFailuresReset(_) => self.login_throttle = LoginThrottle::default(),
            UserEvent::DeviceTrusted(e) => self.trusted_devices.push(TrustedDevice {
                id: e.device_id,
                token_hash: e.token_hash,
                label: e.label,
                created_at: e.at,
                last_used_at: None,
                expires_at: e.expires_at,
            }),
            UserEvent::TrustedDeviceUsed(e) => {
                if let Some(d) = self
                    .trusted_devices
                    .iter_mut()
                    .find(|d| d.id == e.device_id)
                {
                    d.last_used_at = Some(e.at);
                }
            }
            UserEvent::DeviceRevoked(e) => self.trusted_devices.retain(|d| d.id != e.device_id),
            UserEvent::ProfileUpdated(e) => {
                self.email = e.email;
                self.phone_number = e.phone_number;
                self.display_name = e.display_name;
                self.first_name = e.first_name;
                self.last_name = e.last_name;
            }
            UserEvent::Deactivated(_) => self.status = UserStatus::Deactivated,
            UserEvent::Reactivated(_) => self.status = UserStatus::Active,
            // Nothing of the user is kept in the state but the login that stays taken.
            UserEvent::Deleted(_) => {
                *self = Self {
                    status: UserStatus::Deleted,
                    login: std::mem::take(&mut self.login),
                    created_at: self.created_at,
                    // Tokens issued before the deletion stay refused.
                    token_generation: self.token_generation,
                    ..Self::default()
                };
            }
            UserEvent::SessionsRevoked(e) => self.token_generation = e.generation,
            // On record for the audit log and the alert reactor; nothing the user decides on.
            UserEvent::CodeRefused(_) | UserEvent::SmsBudgetThresholdCrossed(_) => {}
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
            login: enforce_login(&cmd.login)?,
            email: cmd.email,
            phone_number: cmd.phone_number,
            display_name: cmd.display_name,
            first_name: cmd.first_name,
            last_name: cmd.last_name,
            at,
        };
        sink.write(UserEvent::Registered(registered), self).await;
        if let Some(hashed) = cmd.password_hash {
            let password_hash = hashed.into_phc();
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
        hashes: HashedCodeSet,
        now: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        let generated = RecoveryCodesGenerated {
            generation: self.recovery_generation + 1,
            hashes: hashes.into_hashes(),
            at: now,
        };
        sink.write(UserEvent::RecoveryCodesGenerated(generated), self)
            .await;
        Ok(())
    }

    async fn use_recovery_code(
        &mut self,
        check: CodeCheck,
        services: &UserServices,
        now: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        if self.second_factor_locked {
            self.refuse_locked(None, now, sink).await;
            return Ok(());
        }
        // A check of another set, or none because the user was locked when loaded: the
        // caller checks again against this state.
        let matched = match check {
            CodeCheck::Checked {
                generation,
                matched,
            } if generation == self.recovery_generation => matched,
            CodeCheck::Checked { .. } | CodeCheck::Skipped => {
                return Err(UserError::CheckOutdated);
            }
        };
        let index = matched.and_then(|i| usize::try_from(i).ok());
        let spent = match index.map(|i| self.recovery_used.get(i)) {
            Some(None) => return Err(UserError::CheckOutdated),
            Some(Some(used)) => *used,
            None => false,
        };
        match index {
            Some(index) if !spent => {
                let used = RecoveryUsed {
                    generation: self.recovery_generation,
                    index: u32::try_from(index).unwrap_or(u32::MAX),
                    remaining: self.recovery_codes_remaining().saturating_sub(1),
                    at: now,
                };
                sink.write(UserEvent::RecoveryUsed(used), self).await;
                let reason = DeviceRevocationReason::RecoveryCodeUsed;
                self.revoke_all_devices(reason, now, sink).await;
                if self.consecutive_failures > 0 {
                    sink.write(UserEvent::FailuresReset(FailuresReset { at: now }), self)
                        .await;
                }
            }
            // A spent code of the current set: the answer lost a race to the one that spent
            // it, or repeats it later. Neither is a guess (a guesser cannot tell a spent code
            // from any other), so it is recorded without moving the count, like a replay.
            Some(_) => {
                let failed = UserFailedAttempt {
                    reason: UserFailureReason::RecoveryCodeUsed,
                    factor_id: None,
                    consecutive_failures: self.consecutive_failures,
                    at: now,
                };
                sink.write(UserEvent::FailedAttempt(failed), self).await;
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
            let reason = DeviceRevocationReason::HardLocked;
            self.revoke_all_devices(reason, now, sink).await;
        }
    }

    /// Revokes every trusted device (none: writes nothing).
    async fn revoke_all_devices(
        &mut self,
        reason: DeviceRevocationReason,
        now: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) {
        let ids: Vec<Uuid> = self.trusted_devices.iter().map(|d| d.id).collect();
        for device_id in ids {
            let revoked = DeviceRevoked {
                device_id,
                reason,
                at: now,
            };
            sink.write(UserEvent::DeviceRevoked(revoked), self).await;
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
        let now = services.clock.now();
        if let Some(matched) = &cmd.current_matched {
            if let Some(retry_after_seconds) = self.login_throttle.retry_after(now) {
                return Err(UserError::LoginThrottled {
                    retry_after_seconds,
                });
            }
            // Checked against a password that is no longer the user's.
            if self.password_hash.as_deref() != Some(matched.as_str()) {
                return Err(UserError::CheckOutdated);
            }
        }
        // Without a password before there was no login, so no session to end.
        let had_password = self.password_hash.is_some();
        let set = PasswordSet {
            password_hash: cmd.password_hash.into_phc(),
            at: now,
        };
        sink.write(UserEvent::PasswordSet(set), self).await;
        let reason = DeviceRevocationReason::PasswordChanged;
        self.revoke_all_devices(reason, now, sink).await;
        if had_password {
            self.revoke_sessions(RevocationReason::PasswordChanged, now, sink)
                .await;
        }
        Ok(())
    }

    /// Records a wrong password, and the throttle it starts when it completes a run.
    async fn record_login_failure(
        &mut self,
        reason: LoginFailureReason,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) {
        let now = services.clock.now();
        let (after, throttled_until) = self
            .login_throttle
            .after_failure(&services.login_throttle, now);
        let failed = LoginFailed {
            reason,
            failed_logins: self.failed_logins.saturating_add(1),
            at: now,
        };
        sink.write(UserEvent::LoginFailed(failed), self).await;
        if let Some(until) = throttled_until {
            let throttled = LoginThrottled {
                runs: after.runs,
                until,
                at: now,
            };
            sink.write(UserEvent::LoginThrottled(throttled), self).await;
        }
    }
}
