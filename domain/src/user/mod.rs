//! The `User` aggregate: registration and profile. Recovery codes and passwords live here too.

mod aggregate;
pub mod code_limits;
mod commands;
mod error;
mod events;
pub mod login;
pub mod recovery;
#[cfg(test)]
mod tests;
pub mod throttle;

pub use aggregate::{TrustedDevice, User, UserServices, UserStatus};
pub use commands::{
    CodeRefusal, LoginFailureReason, Register, SetPassword, TrustDevice, UpdateProfile,
    UserCommand, validate_email, validate_password, validate_phone_number,
};
pub use error::UserError;
pub use events::{
    CodeRefused, DeviceRevocationReason, DeviceRevoked, DeviceTrusted, FailuresReset, LoginFailed,
    LoginFailuresReset, LoginThrottled, PasswordSet, ProfileUpdated, RecoveryCodesGenerated,
    RecoveryUsed, Registered, RevocationReason, SessionsRevoked, SmsBudgetThresholdCrossed,
    TrustedDeviceUsed, UserDeactivated, UserDeleted, UserEvent, UserFailedAttempt,
    UserFailureReason, UserLockedOut, UserReactivated, UserUnlocked,
};

use crate::factor::FactorOutcome;

/// What the events written by a `UseRecoveryCode` command mean for the caller.
pub fn recovery_outcome(events: &[UserEvent]) -> Option<FactorOutcome> {
    events.iter().find_map(|e| match e {
        UserEvent::RecoveryUsed(_) => Some(FactorOutcome::Success),
        UserEvent::FailedAttempt(f) => Some(match f.reason {
            UserFailureReason::Locked => FactorOutcome::LockedOut,
            UserFailureReason::WrongRecoveryCode
            | UserFailureReason::RecoveryCodeUsed
            | UserFailureReason::FactorCheckFailed => FactorOutcome::Rejected,
        }),
        _ => None,
    })
}
