use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::versioning::Versioned;

use crate::{ids::FactorId, user::LoginFailureReason};

/// Events of a user. The variant name is the stored `event_type` (frozen by the contract, docs/architecture.md).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum UserEvent {
    /// The user exists.
    Registered(Registered),
    /// A first-factor password was set (argon2id hash only).
    PasswordSet(PasswordSet),
    /// A login (or a password change) presented a wrong password.
    LoginFailed(LoginFailed),
    /// A run of wrong passwords throttled the login: no password is checked until `until`.
    LoginThrottled(LoginThrottled),
    /// A correct password after wrong ones: the throttle's count starts again.
    LoginFailuresReset(LoginFailuresReset),
    /// After a login with a second factor, the user asked to be remembered on this device.
    DeviceTrusted(DeviceTrusted),
    /// A trusted device stood in for the second factor of a login.
    TrustedDeviceUsed(TrustedDeviceUsed),
    /// A device is trusted no more.
    DeviceRevoked(DeviceRevoked),
    /// A new set of recovery codes replaced any old one (argon2id hashes only).
    RecoveryCodesGenerated(RecoveryCodesGenerated),
    /// A recovery code was spent.
    RecoveryUsed(RecoveryUsed),
    /// A proof of possession by this user failed (a factor check or a recovery code).
    FailedAttempt(UserFailedAttempt),
    /// A proof succeeded after failures: the consecutive count starts again.
    FailuresReset(FailuresReset),
    /// Too many consecutive failures across every factor and recovery code: the user's
    /// second factor is locked until an administrator unlocks it (NIST SP 800-63B).
    LockedOut(UserLockedOut),
    /// An administrator lifted the lock.
    Unlocked(UserUnlocked),
    /// An administrator changed the e-mail address, phone number or display name. Factors
    /// keep the destinations they were enrolled with.
    ProfileUpdated(ProfileUpdated),
    /// An administrator deactivated the user: no login, no proof, until reactivated.
    Deactivated(UserDeactivated),
    /// An administrator reactivated the user.
    Reactivated(UserReactivated),
    /// An administrator deleted the user (its factors were removed first).
    Deleted(UserDeleted),
    /// Every access token issued before ends: the user's token generation moved on (a
    /// password change, a hard lock, a deactivation or `revokeSessions`).
    SessionsRevoked(SessionsRevoked),
    /// A one-time code for this user was refused by the SMS pumping limits before anything
    /// was written to a factor or sent.
    CodeRefused(CodeRefused),
    /// This user's text message made the hourly SMS budget of all nodes 80% spent (once per
    /// window); the alert reactor raises `SMS_BUDGET_WARNING` for the security team.
    SmsBudgetThresholdCrossed(SmsBudgetThresholdCrossed),
}

/// Payload of [`UserEvent::CodeRefused`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CodeRefused {
    /// Which way the code would have gone.
    pub channel: crate::challenge::Channel,
    /// Which limit refused it (the error reason the caller got).
    pub reason: crate::user::code_limits::CodeRefusalReason,
    /// The destination, masked as challenges show it (`+1 ••• ••• 0123`).
    pub destination: String,
    /// For SMS: the number's country calling code, if it parses.
    pub country_code: Option<u16>,
    /// The factor that asked (none for an enrolment, refused before its factor exists).
    pub factor_id: Option<crate::ids::FactorId>,
    /// When the caller may try again.
    pub retry_after_seconds: i64,
    /// When.
    pub at: DateTime<Utc>,
}

/// Payload of [`UserEvent::SmsBudgetThresholdCrossed`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SmsBudgetThresholdCrossed {
    /// Text messages sent in the window, this one included.
    pub sent: i64,
    /// The hourly budget (`TESSERA_SMS_MAX_PER_HOUR`).
    pub budget: i64,
    /// When the window ends and the count starts again.
    pub window_ends_at: DateTime<Utc>,
    /// When.
    pub at: DateTime<Utc>,
}

/// Payload of [`UserEvent::Deleted`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserDeleted {
    /// When.
    pub at: DateTime<Utc>,
}

/// Why a user's sessions were revoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RevocationReason {
    /// The password changed.
    PasswordChanged,
    /// The second factor was hard-locked.
    HardLocked,
    /// An administrator deactivated the user.
    Deactivated,
    /// `revokeSessions` (a logout everywhere, or an administrator's).
    Requested,
    /// An enrolment-only token activated the factor it was for: its job is done, and the
    /// next login asks for that factor.
    EnrollmentCompleted,
}

/// Payload of [`UserEvent::SessionsRevoked`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionsRevoked {
    /// The new token generation: tokens carrying an older one are refused.
    pub generation: u32,
    /// Why.
    pub reason: RevocationReason,
    /// When.
    pub at: DateTime<Utc>,
}

/// Payload of [`UserEvent::ProfileUpdated`]: the profile after the change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProfileUpdated {
    /// E-mail address.
    pub email: Option<String>,
    /// Phone number (E.164).
    pub phone_number: Option<String>,
    /// Display name.
    pub display_name: Option<String>,
    /// Given name (Okta's `profile.firstName`); since version 2.0.
    pub first_name: Option<String>,
    /// Family name (Okta's `profile.lastName`); since version 2.0.
    pub last_name: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// Payload of [`UserEvent::Deactivated`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserDeactivated {
    /// When.
    pub at: DateTime<Utc>,
}

/// Payload of [`UserEvent::Reactivated`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserReactivated {
    /// When.
    pub at: DateTime<Utc>,
}

/// Payload of [`UserEvent::RecoveryCodesGenerated`].
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct RecoveryCodesGenerated {
    /// 1 for the first set, then counting.
    pub generation: u32,
    /// argon2id PHC strings of the codes, in the order shown.
    pub hashes: Vec<String>,
    /// When.
    pub at: DateTime<Utc>,
}

impl std::fmt::Debug for RecoveryCodesGenerated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecoveryCodesGenerated")
            .field("generation", &self.generation)
            .field("codes", &self.hashes.len())
            .field("at", &self.at)
            .finish()
    }
}

/// Payload of [`UserEvent::RecoveryUsed`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecoveryUsed {
    /// The set the code belonged to.
    pub generation: u32,
    /// Its index in the set.
    pub index: u32,
    /// Unused codes left in the set.
    pub remaining: u32,
    /// When.
    pub at: DateTime<Utc>,
}

/// What a user's failed proof was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UserFailureReason {
    /// A wrong or superseded recovery code: a guess, counted towards the hard lock.
    WrongRecoveryCode,
    /// A code of the current set that an earlier answer already spent (most often the loser
    /// of a race between two answers with one code): on record, but no guess, so not counted,
    /// as a replayed TOTP code is not.
    RecoveryCodeUsed,
    /// A factor check failed (the factor's own `FailedAttempt` says how).
    FactorCheckFailed,
    /// Refused unchecked: the user's second factor is locked.
    Locked,
}

/// Payload of [`UserEvent::FailedAttempt`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserFailedAttempt {
    /// Why.
    pub reason: UserFailureReason,
    /// The factor involved, if any.
    pub factor_id: Option<FactorId>,
    /// Consecutive failures of the user after this one.
    pub consecutive_failures: u32,
    /// When.
    pub at: DateTime<Utc>,
}

/// Payload of [`UserEvent::FailuresReset`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailuresReset {
    /// When.
    pub at: DateTime<Utc>,
}

/// Payload of [`UserEvent::LockedOut`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserLockedOut {
    /// The failures that caused it.
    pub consecutive_failures: u32,
    /// When.
    pub at: DateTime<Utc>,
}

/// Payload of [`UserEvent::Unlocked`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserUnlocked {
    /// When.
    pub at: DateTime<Utc>,
}

/// Payload of [`UserEvent::LoginFailed`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoginFailed {
    /// Why.
    pub reason: LoginFailureReason,
    /// Failed logins of this user so far, this one included.
    pub failed_logins: u32,
    /// When.
    pub at: DateTime<Utc>,
}

/// Payload of [`UserEvent::LoginThrottled`], written with the `LoginFailed` that completed
/// the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoginThrottled {
    /// Throttles since the last success, this one included.
    pub runs: u32,
    /// When passwords are checked again.
    pub until: DateTime<Utc>,
    /// When.
    pub at: DateTime<Utc>,
}

/// Payload of [`UserEvent::LoginFailuresReset`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoginFailuresReset {
    /// When.
    pub at: DateTime<Utc>,
}

/// Payload of [`UserEvent::DeviceTrusted`].
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceTrusted {
    /// The device's id (the first part of its token).
    pub device_id: Uuid,
    /// Keyed hash of the token's secret part; the token itself is shown once, never stored.
    pub token_hash: String,
    /// A label from the user agent that asked.
    pub label: Option<String>,
    /// When the trust ends.
    pub expires_at: DateTime<Utc>,
    /// When.
    pub at: DateTime<Utc>,
}

impl std::fmt::Debug for DeviceTrusted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceTrusted")
            .field("device_id", &self.device_id)
            .field("label", &self.label)
            .field("expires_at", &self.expires_at)
            .field("at", &self.at)
            .finish_non_exhaustive()
    }
}

/// Payload of [`UserEvent::TrustedDeviceUsed`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrustedDeviceUsed {
    /// The device.
    pub device_id: Uuid,
    /// When.
    pub at: DateTime<Utc>,
}

/// Why a device is trusted no more.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeviceRevocationReason {
    /// The user (or an administrator) revoked it.
    Revoked,
    /// The password changed.
    PasswordChanged,
    /// A factor was removed.
    FactorRemoved,
    /// A recovery code was used.
    RecoveryCodeUsed,
    /// The second factor was hard-locked.
    HardLocked,
}

/// Payload of [`UserEvent::DeviceRevoked`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceRevoked {
    /// The device.
    pub device_id: Uuid,
    /// Why.
    pub reason: DeviceRevocationReason,
    /// When.
    pub at: DateTime<Utc>,
}

/// Payload of [`UserEvent::Registered`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Registered {
    /// Normalised login.
    pub login: String,
    /// E-mail address, if given.
    pub email: Option<String>,
    /// Phone number (E.164), if given.
    pub phone_number: Option<String>,
    /// Display name, if given.
    pub display_name: Option<String>,
    /// Given name, if given; since version 2.0.
    pub first_name: Option<String>,
    /// Family name, if given; since version 2.0.
    pub last_name: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// Payload of [`UserEvent::PasswordSet`].
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct PasswordSet {
    /// argon2id PHC string.
    pub password_hash: String,
    /// When.
    pub at: DateTime<Utc>,
}

impl std::fmt::Debug for PasswordSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordSet")
            .field("at", &self.at)
            .finish_non_exhaustive()
    }
}

impl DomainEvent for UserEvent {
    fn event_type(&self) -> String {
        match self {
            Self::Registered(_) => "Registered",
            Self::PasswordSet(_) => "PasswordSet",
            Self::LoginFailed(_) => "LoginFailed",
            Self::LoginThrottled(_) => "LoginThrottled",
            Self::LoginFailuresReset(_) => "LoginFailuresReset",
            Self::DeviceTrusted(_) => "DeviceTrusted",
            Self::TrustedDeviceUsed(_) => "TrustedDeviceUsed",
            Self::DeviceRevoked(_) => "DeviceRevoked",
            Self::RecoveryCodesGenerated(_) => "RecoveryCodesGenerated",
            Self::RecoveryUsed(_) => "RecoveryUsed",
            Self::FailedAttempt(_) => "FailedAttempt",
            Self::FailuresReset(_) => "FailuresReset",
            Self::LockedOut(_) => "LockedOut",
            Self::Unlocked(_) => "Unlocked",
            Self::ProfileUpdated(_) => "ProfileUpdated",
            Self::Deactivated(_) => "Deactivated",
            Self::Reactivated(_) => "Reactivated",
            Self::Deleted(_) => "Deleted",
            Self::SessionsRevoked(_) => "SessionsRevoked",
            Self::CodeRefused(_) => "CodeRefused",
            Self::SmsBudgetThresholdCrossed(_) => "SmsBudgetThresholdCrossed",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        <Self as Versioned>::current_version(&self.event_type())
            .unwrap_or("1.0")
            .to_string()
    }
}

impl Versioned for UserEvent {
    fn current_version(event_type: &str) -> Option<&'static str> {
        // 2.0: the profile gained first and last names.
        if matches!(event_type, "Registered" | "ProfileUpdated") {
            return Some("2.0");
        }
        matches!(
            event_type,
            "PasswordSet"
                | "LoginFailed"
                | "LoginThrottled"
                | "LoginFailuresReset"
                | "DeviceTrusted"
                | "TrustedDeviceUsed"
                | "DeviceRevoked"
                | "RecoveryCodesGenerated"
                | "Deactivated"
                | "Reactivated"
                | "Deleted"
                | "RecoveryUsed"
                | "FailedAttempt"
                | "FailuresReset"
                | "LockedOut"
                | "Unlocked"
                | "SessionsRevoked"
                | "CodeRefused"
                | "SmsBudgetThresholdCrossed"
        )
        .then_some("1.0")
    }

    fn upcast(event_type: &str, event_version: &str, mut payload: Value) -> Value {
        // 1.0 → 2.0: a profile without names has none.
        if event_version == "1.0"
            && let Some(body) = payload.get_mut(event_type).and_then(Value::as_object_mut)
            && matches!(event_type, "Registered" | "ProfileUpdated")
        {
            body.entry("first_name").or_insert(Value::Null);
            body.entry("last_name").or_insert(Value::Null);
        }
        payload
    }
}
