//! The `Factor` aggregate: enrolment, activation, verification, lockout and removal of one
//! second factor of one user.

mod aggregate;
mod commands;
mod error;
mod events;
pub mod lockout;
#[cfg(test)]
mod tests;
pub mod totp;
pub mod webauthn;
#[cfg(test)]
mod webauthn_tests;

pub use aggregate::{
    Factor, FactorServices, FactorState, PendingAssertion, PendingRegistration, WebAuthnCredential,
};
pub use commands::{
    AssertionRequest, Enroll, FactorCommand, MAX_WEBAUTHN_RESPONSE, NewCode, OOB_CODE_DIGITS,
    OobSpec, TotpSpec, WebAuthnSpec,
};
pub use error::FactorError;
pub use events::{
    Activated, AssertionRequested, CodeIssued, CredentialRegistered, CredentialUsed, Enrolled,
    EnrollmentExpired, FactorEvent, FailedAttempt, FailureReason, LockedOut, OobEnrollment,
    RegistrationRequested, Removed, SecretResealed, TotpEnrollment, Unlocked, Verified,
};

use serde::{Deserialize, Serialize};

/// Kinds of second factor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FactorType {
    /// RFC 6238 time-based one-time passwords.
    Totp,
    /// One-time codes by SMS.
    Sms,
    /// One-time codes by e-mail.
    Email,
    /// WebAuthn credentials: passkeys and security keys.
    Webauthn,
}

impl FactorType {
    /// Whether codes are sent to this factor (SMS, e-mail).
    pub fn is_out_of_band(self) -> bool {
        matches!(self, Self::Sms | Self::Email)
    }

    /// The `amr` value (RFC 8176 where it has one) for a proof with this factor.
    pub fn amr(self) -> &'static str {
        match self {
            Self::Totp => "otp",
            Self::Sms => "sms",
            Self::Email => "email",
            Self::Webauthn => "hwk",
        }
    }

    /// The contract name (`TOTP`, `SMS`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Totp => "TOTP",
            Self::Sms => "SMS",
            Self::Email => "EMAIL",
            Self::Webauthn => "WEBAUTHN",
        }
    }
}

/// Lifecycle status as clients see it (the contract's `FactorStatus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FactorStatus {
    /// Enrolled, waiting for a correct code.
    PendingActivation,
    /// Usable.
    Active,
    /// Too many failures; usable again after the lockout or an admin unlock.
    LockedOut,
    /// The enrolment was not activated in time.
    Expired,
    /// Removed for good.
    Removed,
}

impl FactorStatus {
    /// The contract name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PendingActivation => "PENDING_ACTIVATION",
            Self::Active => "ACTIVE",
            Self::LockedOut => "LOCKED_OUT",
            Self::Expired => "EXPIRED",
            Self::Removed => "REMOVED",
        }
    }

    /// Parses the contract name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::PendingActivation,
            Self::Active,
            Self::LockedOut,
            Self::Expired,
            Self::Removed,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

/// The answer to a proof of possession (the contract's `FactorResult`). Not an error: a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FactorOutcome {
    /// The code was right.
    Success,
    /// The code was checked and wrong.
    Rejected,
    /// The code was right for a time step already used.
    PasscodeReplayed,
    /// The factor is locked; the code was not checked.
    LockedOut,
    /// The enrolment, the code or the challenge expired.
    Expired,
    /// No live code to check (SMS, e-mail): a code must be requested first.
    ChallengeRequired,
}

/// What the events written by one activate/verify command mean for the caller.
pub fn outcome_of(events: &[FactorEvent]) -> Option<FactorOutcome> {
    events.iter().find_map(|e| match e {
        FactorEvent::Activated(_) | FactorEvent::Verified(_) => Some(FactorOutcome::Success),
        FactorEvent::FailedAttempt(f) => Some(match f.reason {
            FailureReason::WrongCode => FactorOutcome::Rejected,
            FailureReason::Replayed => FactorOutcome::PasscodeReplayed,
            FailureReason::Locked => FactorOutcome::LockedOut,
            FailureReason::CodeExpired => FactorOutcome::Expired,
            FailureReason::NoActiveCode | FailureReason::AttemptsExhausted => {
                FactorOutcome::ChallengeRequired
            }
            FailureReason::BadSignature
            | FailureReason::ForeignOrigin
            | FailureReason::WrongRpId
            | FailureReason::UserNotVerified
            | FailureReason::UnknownCredential
            | FailureReason::WrongChallenge
            | FailureReason::CounterRegressed
            | FailureReason::RegistrationUsed => FactorOutcome::Rejected,
        }),
        FactorEvent::EnrollmentExpired(_) => Some(FactorOutcome::Expired),
        _ => None,
    })
}

/// The status a client sees at `now`, from the stored status and the two deadlines: a lock
/// whose time is up shows `ACTIVE`, a pending enrolment past its deadline shows `EXPIRED`,
/// even before the event that records it is written.
pub fn effective_status(
    stored: FactorStatus,
    locked_until: Option<chrono::DateTime<chrono::Utc>>,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
    now: chrono::DateTime<chrono::Utc>,
) -> FactorStatus {
    match stored {
        FactorStatus::PendingActivation if expires_at.is_some_and(|t| now >= t) => {
            FactorStatus::Expired
        }
        FactorStatus::Active | FactorStatus::LockedOut => match locked_until {
            Some(until) if now < until => FactorStatus::LockedOut,
            _ => FactorStatus::Active,
        },
        other => other,
    }
}
