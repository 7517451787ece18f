//! What a proof of possession means beyond the factor that checked it: the rules that span the
//! `Factor`, `User` and `Challenge` aggregates, as pure functions. The application layer's
//! `prove` use case calls them and commits what they decide; nothing else decides these.
//!
//! - [`admits`]: a hard-locked user's factors are not checked at all.
//! - [`count_on_user`]: a checked wrong code counts towards the user's hard lock, a success
//!   resets the count.
//! - [`answer_challenge`]: a factor's outcome completes the challenge it was given for, or is a
//!   failure recorded on it; [`answer_with_recovery_code`] the same for a recovery code.
//! - [`can_prove`]: which factors stand between a password and a token, and
//!   [`finishes_login`]: of which types, under the MFA policy.
//! - [`reauthentication`]: whether a user token may change the account's authenticators now
//!   (NIST SP 800-63B §6.1.2.1: adding or removing one needs a fresh proof).

use chrono::{DateTime, TimeDelta, Utc};

use crate::{
    challenge::{Challenge, ChallengeCommand, ChallengePurpose, ChallengeStatus, Method},
    factor::{FactorEvent, FactorOutcome, FactorStatus, FactorType, FailureReason},
    ids::{FactorId, UserId},
    policy::{MfaMode, MfaPolicy},
    user::{User, UserCommand, UserEvent, UserFailureReason},
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

/// The command that records a recovery-code answer (the user's events for it) on the
/// challenge it was given for: `Complete` when the code was spent; a wrong code is a guess and
/// takes one of the challenge's tries (so one login challenge bounds recovery-code guessing as
/// it bounds TOTP guessing); a code already spent is recorded as a replay, which takes none.
/// `None` when the user was hard-locked and nothing was checked.
pub fn answer_with_recovery_code(
    purpose: ChallengePurpose,
    owner: UserId,
    events: &[UserEvent],
) -> Option<ChallengeCommand> {
    let failure = |reason| Some(ChallengeCommand::RecordRecoveryCodeFailure { reason });
    events.iter().find_map(|e| match e {
        UserEvent::RecoveryUsed(_) => Some(ChallengeCommand::Complete {
            purpose,
            user_id: owner,
            factor_id: None,
            method: Method::RecoveryCode,
        }),
        UserEvent::FailedAttempt(f) => match f.reason {
            UserFailureReason::WrongRecoveryCode => failure(FailureReason::WrongCode),
            UserFailureReason::RecoveryCodeUsed => failure(FailureReason::Replayed),
            UserFailureReason::Locked | UserFailureReason::FactorCheckFailed => None,
        },
        _ => None,
    })
}

/// Whether a factor of `factor_type` may finish a login under `policy`, given the types of
/// the user's factors that can prove ([`can_prove`]). A type the policy allows may; so may any
/// type of a user none of whose factors is of an allowed type: narrowing the policy
/// (`setMfaPolicy` dropping a type) must not downgrade that user to a password-only login
/// (`OPTIONAL`) or an enrolment-only token (`REQUIRED`), so they still prove a factor they
/// have, until they have one of an allowed type (then only those count).
pub fn finishes_login(
    policy: &MfaPolicy,
    factor_type: FactorType,
    provable_types: &[FactorType],
) -> bool {
    policy.allows(factor_type) || !provable_types.iter().any(|t| policy.allows(*t))
}

/// Whether a factor in `status` can answer a step-up or finish a login: an active one, or a
/// locked one (its lock answers `LOCKED_OUT`; it still stands between a password and a token,
/// so a lockout never turns MFA off).
pub fn can_prove(status: FactorStatus) -> bool {
    matches!(status, FactorStatus::Active | FactorStatus::LockedOut)
}

/// A change to how a user authenticates, which a stolen user token must not make on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccountChange {
    /// Enrol or activate a factor.
    AddFactor,
    /// Remove a factor.
    RemoveFactor,
    /// Replace the recovery codes.
    RegenerateRecoveryCodes,
    /// Change the password (the current password is asked for as well).
    ChangePassword,
    /// Remember a device, so that its logins skip the second factor.
    TrustDevice,
}

/// What the caller shows for an [`AccountChange`] made with a user token.
#[derive(Clone, Copy, Debug)]
pub struct Freshness<'a> {
    /// The token's `acr` is `mfa`.
    pub token_mfa: bool,
    /// The token's `auth_time`: when its user last proved who they are.
    pub auth_time: DateTime<Utc>,
    /// A step-up challenge the caller names as its proof.
    pub step_up: Option<&'a Challenge>,
    /// How old a proof may be (`TESSERA_REAUTH_SECONDS`).
    pub max_age: TimeDelta,
    /// Now.
    pub now: DateTime<Utc>,
}

/// Why an [`AccountChange`] with a user token is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReauthRefusal {
    /// No fresh proof: complete a step-up of the user (or log in again with a factor).
    ReauthenticationRequired,
    /// The user's second factor is hard-locked: only an administrator changes anything.
    HardLocked,
}

/// Whether a user token may make `change` to `user` (whose factors that can prove, active or
/// locked, number `provable_factors`) given `fresh`. Admin keys never ask.
///
/// - While the user is hard-locked, nothing changes but through an administrator: a stolen
///   session must not replace or strip the factors an attacker just failed to guess.
/// - A user with no factor that can prove may add one, and change the password with the
///   current one, on a password-only or enrolment-only token: settings pages enrol the first
///   factor that way, and there is nothing stronger to ask for.
/// - Otherwise the proof must be fresh: a step-up challenge of this user completed within
///   `max_age`, or a token whose `acr` is `mfa` and whose `auth_time` is within `max_age`.
///
/// # Errors
/// The [`ReauthRefusal`].
pub fn reauthentication(
    change: AccountChange,
    user_id: UserId,
    user: &User,
    provable_factors: usize,
    fresh: &Freshness<'_>,
) -> Result<(), ReauthRefusal> {
    if user.second_factor_locked {
        return Err(ReauthRefusal::HardLocked);
    }
    let first_factor = provable_factors == 0
        && matches!(
            change,
            AccountChange::AddFactor | AccountChange::ChangePassword | AccountChange::RemoveFactor
        );
    if first_factor {
        return Ok(());
    }
    let recent = |at: DateTime<Utc>| at <= fresh.now && fresh.now - at <= fresh.max_age;
    let by_token = fresh.token_mfa && recent(fresh.auth_time);
    let by_step_up = fresh.step_up.is_some_and(|c| {
        c.purpose == Some(ChallengePurpose::StepUp)
            && c.user_id == Some(user_id)
            && c.status == ChallengeStatus::Completed
            && c.completed_at.is_some_and(recent)
    });
    if by_token || by_step_up {
        Ok(())
    } else {
        Err(ReauthRefusal::ReauthenticationRequired)
    }
}

/// Why a user may not remove a factor themselves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemovalRefusal {
    /// The policy is `REQUIRED` and this is the user's last factor that can prove (of an
    /// allowed type): without it, every login would end in an enrolment-only token.
    LastRequiredFactor,
}

/// Whether a user may remove their factor of type `removing` (in `status`) when their other
/// factors that can prove are of the types `others`. Under a `REQUIRED` policy the last
/// factor of an allowed type that can prove stays: a user replaces it by adding another first.
/// Removing a pending, expired or disallowed factor is always fine. Administrators are not
/// asked.
///
/// # Errors
/// [`RemovalRefusal::LastRequiredFactor`].
pub fn removal(
    policy: &MfaPolicy,
    removing: FactorType,
    status: FactorStatus,
    others: &[FactorType],
) -> Result<(), RemovalRefusal> {
    let counts = |t: FactorType| policy.allows(t);
    if policy.mode != MfaMode::Required || !can_prove(status) || !counts(removing) {
        return Ok(());
    }
    if others.iter().any(|t| counts(*t)) {
        Ok(())
    } else {
        Err(RemovalRefusal::LastRequiredFactor)
    }
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

    fn policy(mode: MfaMode, allowed: &[FactorType]) -> MfaPolicy {
        MfaPolicy {
            mode,
            allowed_factor_types: allowed.to_vec(),
            trusted_device_days: None,
        }
    }

    #[test]
    fn under_required_the_last_factor_that_can_prove_stays() {
        use FactorType::{Sms, Totp, Webauthn};
        let required = policy(MfaMode::Required, &[Totp, Webauthn]);
        let active = FactorStatus::Active;
        assert_eq!(
            removal(&required, Totp, active, &[]),
            Err(RemovalRefusal::LastRequiredFactor)
        );
        // A locked factor still proves once its lock ends.
        assert_eq!(
            removal(&required, Totp, FactorStatus::LockedOut, &[]),
            Err(RemovalRefusal::LastRequiredFactor)
        );
        // Another factor of a type that counts: fine.
        assert_eq!(removal(&required, Totp, active, &[Webauthn]), Ok(()));
        // Another factor the policy does not allow does not count.
        assert_eq!(
            removal(&required, Totp, active, &[Sms]),
            Err(RemovalRefusal::LastRequiredFactor)
        );
        // A pending factor, or one of a type that does not count, can always go.
        assert_eq!(
            removal(&required, Totp, FactorStatus::PendingActivation, &[]),
            Ok(())
        );
        assert_eq!(removal(&required, Sms, active, &[]), Ok(()));
        // Under OPTIONAL or DISABLED the user may remove every factor.
        for mode in [MfaMode::Optional, MfaMode::Disabled] {
            assert_eq!(removal(&policy(mode, &[Totp]), Totp, active, &[]), Ok(()));
        }
    }

    #[test]
    fn each_recovery_code_answer_is_recorded_on_its_challenge() {
        use crate::user::{RecoveryUsed, UserFailedAttempt};
        let at = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let owner = UserId::for_login("ann");
        let failed = |reason| {
            vec![UserEvent::FailedAttempt(UserFailedAttempt {
                reason,
                factor_id: None,
                consecutive_failures: 1,
                at,
            })]
        };
        let answer = |events: &[UserEvent]| {
            answer_with_recovery_code(ChallengePurpose::Login, owner, events)
        };
        let spent = vec![UserEvent::RecoveryUsed(RecoveryUsed {
            generation: 1,
            index: 0,
            remaining: 9,
            at,
        })];
        assert!(matches!(
            answer(&spent),
            Some(ChallengeCommand::Complete { method: Method::RecoveryCode, factor_id: None, user_id, .. })
                if user_id == owner
        ));
        assert!(matches!(
            answer(&failed(UserFailureReason::WrongRecoveryCode)),
            Some(ChallengeCommand::RecordRecoveryCodeFailure {
                reason: FailureReason::WrongCode
            })
        ));
        assert!(matches!(
            answer(&failed(UserFailureReason::RecoveryCodeUsed)),
            Some(ChallengeCommand::RecordRecoveryCodeFailure {
                reason: FailureReason::Replayed
            })
        ));
        assert!(answer(&failed(UserFailureReason::Locked)).is_none());
        assert!(answer(&[]).is_none());
    }

    #[test]
    fn a_narrower_policy_never_turns_a_users_second_factor_off() {
        use crate::policy::MfaMode;
        for mode in [MfaMode::Optional, MfaMode::Required] {
            let policy = MfaPolicy {
                mode,
                allowed_factor_types: vec![FactorType::Sms],
                trusted_device_days: None,
            };
            // Only TOTP factors, TOTP dropped: the TOTP factor still stands.
            assert!(finishes_login(
                &policy,
                FactorType::Totp,
                &[FactorType::Totp]
            ));
            // An allowed factor as well: only the allowed type finishes a login.
            let both = [FactorType::Totp, FactorType::Sms];
            assert!(finishes_login(&policy, FactorType::Sms, &both));
            assert!(!finishes_login(&policy, FactorType::Totp, &both));
            // A locked-out SMS factor still counts as one the user has (its lock answers).
            assert!(finishes_login(&policy, FactorType::Sms, &[FactorType::Sms]));
        }
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

    mod reauthentication {
        use super::*;

        fn now() -> DateTime<Utc> {
            Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
        }

        fn fresh(token_mfa: bool, age: i64, step_up: Option<&Challenge>) -> Freshness<'_> {
            Freshness {
                token_mfa,
                auth_time: now() - TimeDelta::seconds(age),
                step_up,
                max_age: TimeDelta::seconds(600),
                now: now(),
            }
        }

        fn step_up(user: UserId, purpose: ChallengePurpose, age: Option<i64>) -> Challenge {
            Challenge {
                status: if age.is_some() {
                    ChallengeStatus::Completed
                } else {
                    ChallengeStatus::Issued
                },
                user_id: Some(user),
                purpose: Some(purpose),
                completed_at: age.map(|a| now() - TimeDelta::seconds(a)),
                ..Challenge::default()
            }
        }

        const ALL: [AccountChange; 5] = [
            AccountChange::AddFactor,
            AccountChange::RemoveFactor,
            AccountChange::RegenerateRecoveryCodes,
            AccountChange::ChangePassword,
            AccountChange::TrustDevice,
        ];

        #[test]
        fn a_password_only_token_changes_nothing_of_a_user_with_a_factor() {
            let alice = UserId::for_login("alice");
            for change in ALL {
                assert_eq!(
                    reauthentication(change, alice, &user(0, false), 1, &fresh(false, 0, None)),
                    Err(ReauthRefusal::ReauthenticationRequired),
                    "{change:?}"
                );
            }
        }

        #[test]
        fn an_mfa_token_is_fresh_for_the_reauthentication_window_only() {
            let alice = UserId::for_login("alice");
            for change in ALL {
                assert!(
                    reauthentication(change, alice, &user(0, false), 1, &fresh(true, 600, None))
                        .is_ok()
                );
                assert_eq!(
                    reauthentication(change, alice, &user(0, false), 1, &fresh(true, 601, None)),
                    Err(ReauthRefusal::ReauthenticationRequired)
                );
            }
        }

        #[test]
        fn only_a_recently_completed_step_up_of_the_same_user_counts() {
            let (alice, bob) = (UserId::for_login("alice"), UserId::for_login("bob"));
            let change = AccountChange::RemoveFactor;
            let ok = |c: &Challenge| {
                reauthentication(change, alice, &user(0, false), 2, &fresh(false, 0, Some(c)))
                    .is_ok()
            };
            assert!(ok(&step_up(alice, ChallengePurpose::StepUp, Some(30))));
            assert!(!ok(&step_up(alice, ChallengePurpose::StepUp, Some(601))));
            assert!(!ok(&step_up(alice, ChallengePurpose::StepUp, None)));
            assert!(!ok(&step_up(bob, ChallengePurpose::StepUp, Some(30))));
            assert!(!ok(&step_up(alice, ChallengePurpose::Login, Some(30))));
        }

        #[test]
        fn the_first_factor_needs_no_second_one() {
            let alice = UserId::for_login("alice");
            let none = fresh(false, 0, None);
            for change in [
                AccountChange::AddFactor,
                AccountChange::RemoveFactor,
                AccountChange::ChangePassword,
            ] {
                assert!(reauthentication(change, alice, &user(0, false), 0, &none).is_ok());
            }
            for change in [
                AccountChange::RegenerateRecoveryCodes,
                AccountChange::TrustDevice,
            ] {
                assert!(reauthentication(change, alice, &user(0, false), 0, &none).is_err());
            }
        }

        #[test]
        fn nothing_changes_while_hard_locked_however_fresh_the_proof() {
            let alice = UserId::for_login("alice");
            let completed = step_up(alice, ChallengePurpose::StepUp, Some(1));
            for change in ALL {
                for provable in [0, 1] {
                    assert_eq!(
                        reauthentication(
                            change,
                            alice,
                            &user(100, true),
                            provable,
                            &fresh(true, 0, Some(&completed))
                        ),
                        Err(ReauthRefusal::HardLocked)
                    );
                }
            }
        }
    }
}
