//! What a proof of possession means beyond the factor that checked it: the rules that span the
//! `Factor`, `User` and `Challenge` aggregates, as pure functions. The application layer's
//! `prove` use case calls them and commits what they decide; nothing else decides these.
//!
//! - [`admits`]: a hard-locked user's factors are not checked at all.
//! - [`count_on_user`]: a checked wrong code counts towards the user's hard lock, a success
//!   resets the count.
//! - [`answer_challenge`]: a factor's outcome completes the challenge it was given for, or is a
//!   failure recorded on it.
//! - [`can_prove`]: which factors stand between a password and a token.

use crate::{
    challenge::{ChallengeCommand, ChallengePurpose, Method},
    factor::{FactorEvent, FactorOutcome, FactorStatus, FactorType, FailureReason},
    ids::{FactorId, UserId},
    user::{User, UserCommand},
};

/// Whether the user's factors may be checked at all. After the hard-lock threshold of
/// consecutive failures across every factor, recovery code and lockout cycle, none is, until
/// an administrator unlocks the user (NIST SP 800-63B: lockouts must not reset an attacker's
/// budget for ever). A refused proof is still recorded, as `RefuseWhileLocked`.
pub fn admits(user: &User) -> bool {
    !user.second_factor_locked
}

/// What a factor's outcome (`None`: the command decided nothing) does to its owner's failure
/// count: a checked wrong code counts, a success resets a count above zero; a replay, a
/// lockout, an expiry or a missing code counts nothing (nothing was guessed).
pub fn count_on_user(
    outcome: Option<FactorOutcome>,
    user: &User,
    factor_id: FactorId,
) -> Option<UserCommand> {
    match outcome? {
        FactorOutcome::Rejected => Some(UserCommand::RecordFactorFailure { factor_id }),
        FactorOutcome::Success if user.consecutive_failures > 0 => Some(UserCommand::ResetFailures),
        _ => None,
    }
}

/// A factor's answer to a challenge, as the factor decided it.
#[derive(Clone, Copy, Debug)]
pub struct ChallengeAnswer<'a> {
    /// What the caller completes.
    pub purpose: ChallengePurpose,
    /// The factor's owner.
    pub owner: UserId,
    /// The factor.
    pub factor_id: FactorId,
    /// Its type.
    pub factor_type: FactorType,
    /// What the factor decided.
    pub outcome: FactorOutcome,
    /// The events the factor wrote.
    pub events: &'a [FactorEvent],
}

/// The command that records `answer` on its challenge: `Complete` (with the method the factor
/// proves) on success, `RecordFailure` with the factor's reason otherwise. `None` for a factor
/// type that proves no method the challenge knows.
pub fn answer_challenge(answer: &ChallengeAnswer<'_>) -> Option<ChallengeCommand> {
    if answer.outcome == FactorOutcome::Success {
        return Some(ChallengeCommand::Complete {
            purpose: answer.purpose,
            user_id: answer.owner,
            factor_id: Some(answer.factor_id),
            method: Method::of_factor(answer.factor_type)?,
        });
    }
    let reason = answer
        .events
        .iter()
        .find_map(|e| match e {
            FactorEvent::FailedAttempt(f) => Some(f.reason),
            _ => None,
        })
        .unwrap_or(FailureReason::WrongCode);
    Some(ChallengeCommand::RecordFailure {
        factor_id: answer.factor_id,
        reason,
    })
}

/// Whether a factor in `status` can answer a step-up or finish a login: an active one, or a
/// locked one (its lock answers `LOCKED_OUT`; it still stands between a password and a token,
/// so a lockout never turns MFA off).
pub fn can_prove(status: FactorStatus) -> bool {
    matches!(status, FactorStatus::Active | FactorStatus::LockedOut)
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::factor::FailedAttempt;

    fn user(consecutive_failures: u32, locked: bool) -> User {
        User {
            consecutive_failures,
            second_factor_locked: locked,
            ..User::default()
        }
    }

    fn factor() -> FactorId {
        FactorId::generate()
    }

    #[test]
    fn a_hard_locked_user_admits_no_proof() {
        assert!(admits(&user(0, false)));
        assert!(admits(&user(99, false)));
        assert!(!admits(&user(100, true)));
    }

    #[test]
    fn only_a_checked_wrong_code_counts_and_only_a_success_resets() {
        let f = factor();
        let given = user(3, false);
        assert!(matches!(
            count_on_user(Some(FactorOutcome::Rejected), &given, f),
            Some(UserCommand::RecordFactorFailure { factor_id }) if factor_id == f
        ));
        assert!(matches!(
            count_on_user(Some(FactorOutcome::Success), &given, f),
            Some(UserCommand::ResetFailures)
        ));
        for nothing_guessed in [
            FactorOutcome::PasscodeReplayed,
            FactorOutcome::LockedOut,
            FactorOutcome::Expired,
            FactorOutcome::ChallengeRequired,
        ] {
            assert!(count_on_user(Some(nothing_guessed), &given, f).is_none());
        }
        assert!(count_on_user(None, &given, f).is_none());
    }

    #[test]
    fn a_success_with_no_failures_to_reset_writes_nothing_on_the_user() {
        assert!(count_on_user(Some(FactorOutcome::Success), &user(0, false), factor()).is_none());
    }

    #[test]
    fn a_success_completes_the_challenge_with_the_factors_method() {
        let (owner, f) = (UserId::for_login("alice"), factor());
        let answer = ChallengeAnswer {
            purpose: ChallengePurpose::Login,
            owner,
            factor_id: f,
            factor_type: FactorType::Sms,
            outcome: FactorOutcome::Success,
            events: &[],
        };
        assert!(matches!(
            answer_challenge(&answer),
            Some(ChallengeCommand::Complete {
                purpose: ChallengePurpose::Login,
                user_id,
                factor_id: Some(factor_id),
                method: Method::Sms,
            }) if user_id == owner && factor_id == f
        ));
    }

    #[test]
    fn a_failure_is_recorded_with_the_factors_reason() {
        let f = factor();
        let at = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let events = [FactorEvent::FailedAttempt(FailedAttempt {
            reason: FailureReason::Replayed,
            counted: false,
            consecutive_failures: 0,
            challenge_id: None,
            at,
        })];
        let answer = ChallengeAnswer {
            purpose: ChallengePurpose::StepUp,
            owner: UserId::for_login("alice"),
            factor_id: f,
            factor_type: FactorType::Totp,
            outcome: FactorOutcome::PasscodeReplayed,
            events: &events,
        };
        assert!(matches!(
            answer_challenge(&answer),
            Some(ChallengeCommand::RecordFailure {
                factor_id,
                reason: FailureReason::Replayed,
            }) if factor_id == f
        ));
    }

    #[test]
    fn active_and_locked_factors_can_prove_others_cannot() {
        assert!(can_prove(FactorStatus::Active));
        assert!(can_prove(FactorStatus::LockedOut));
        assert!(!can_prove(FactorStatus::PendingActivation));
        assert!(!can_prove(FactorStatus::Expired));
        assert!(!can_prove(FactorStatus::Removed));
    }
}
