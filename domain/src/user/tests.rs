use std::sync::Arc;

use chrono::{DateTime, Utc};
use cqrs_es::test::TestFramework;

use super::*;
use crate::{
    crypto::{HashedPassword, hash_recovery_code, verify_password, verify_recovery_code},
    ids::FactorId,
    secret::Secret,
    services::FixedClock,
};

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000, 0).unwrap()
}

fn framework() -> TestFramework<User> {
    TestFramework::with(UserServices {
        clock: Arc::new(FixedClock::at(t0())),
        hard_lock_threshold: 100,
        login_throttle: throttle::ThrottlePolicy::new(3, 300),
    })
}

fn register(login: &str) -> Register {
    Register {
        login: login.into(),
        email: Some("alice@example.com".into()),
        phone_number: Some("+14155550100".into()),
        display_name: Some("Alice".into()),
        first_name: None,
        last_name: None,
        password_hash: None,
    }
}

fn registered() -> Registered {
    Registered {
        login: "alice".into(),
        email: Some("alice@example.com".into()),
        phone_number: Some("+14155550100".into()),
        display_name: Some("Alice".into()),
        first_name: None,
        last_name: None,
        at: t0(),
    }
}

#[tokio::test]
async fn register_normalises_the_login() {
    framework()
        .given_no_previous_events()
        .when_async(UserCommand::Register(register("  Alice ")))
        .await
        .then_expect_events(vec![UserEvent::Registered(registered())]);
}

#[tokio::test]
async fn register_twice_is_rejected() {
    framework()
        .given(vec![UserEvent::Registered(registered())])
        .when_async(UserCommand::Register(register("alice")))
        .await
        .then_expect_error(UserError::AlreadyRegistered);
}

#[tokio::test]
async fn password_is_stored_only_as_argon2id() {
    let mut cmd = register("alice");
    cmd.password_hash = Some(HashedPassword::of("correct horse battery"));
    let events = framework()
        .given_no_previous_events()
        .when_async(UserCommand::Register(cmd))
        .await
        .inspect_result()
        .unwrap();
    let UserEvent::PasswordSet(set) = &events[1] else {
        panic!("expected PasswordSet, got {events:?}");
    };
    assert!(set.password_hash.starts_with("$argon2id$"));
    assert!(!set.password_hash.contains("correct horse"));
    assert!(verify_password("correct horse battery", &set.password_hash));
    assert!(!format!("{events:?}").contains("argon2id"));
}

#[test]
fn email_addresses_are_parsed_and_only_those_delivered_as_written_pass() {
    for good in [
        "alice@example.com",
        "a.b+tag@sub.example.co",
        "o'neil@example.org",
    ] {
        assert_eq!(validate_email(good), Ok(()), "{good}");
    }
    for bad in [
        "a,victim@example.com",
        "\"evil\"@x",
        "\"evil\"@example.com",
        "\"a b\"@example.com",
        "Alice <alice@example.com>",
        "mailto:alice@example.com",
        "alice@[127.0.0.1]",
        "alice@localhost",
        "a..b@example.com",
        ".a@example.com",
        "a@example..com",
        "a(comment)@example.com",
        "a@exa mple.com",
        "a\u{0}@example.com",
    ] {
        assert_eq!(validate_email(bad), Err(UserError::InvalidEmail), "{bad}");
    }
}

#[tokio::test]
async fn invalid_fields_are_rejected_and_write_nothing() {
    type Case = (fn(&mut Register), UserError);
    let cases: Vec<Case> = vec![
        (|c| c.login = " ".into(), UserError::InvalidLogin),
        (|c| c.login = "a b".into(), UserError::InvalidLogin),
        (|c| c.login = "x".repeat(257), UserError::InvalidLogin),
        (
            |c| c.email = Some("no-at-sign".into()),
            UserError::InvalidEmail,
        ),
        (
            |c| c.email = Some("a@nodot".into()),
            UserError::InvalidEmail,
        ),
        (
            |c| c.email = Some("a@-bad.com".into()),
            UserError::InvalidEmail,
        ),
        (
            |c| c.phone_number = Some("4155550100".into()),
            UserError::InvalidPhoneNumber,
        ),
        (
            |c| c.phone_number = Some("+0155550100".into()),
            UserError::InvalidPhoneNumber,
        ),
        (
            |c| c.phone_number = Some("+1415555010012345".into()),
            UserError::InvalidPhoneNumber,
        ),
        (
            |c| c.display_name = Some("x\u{0}".into()),
            UserError::InvalidDisplayName,
        ),
    ];
    for (mutate, expected) in cases {
        let mut cmd = register("alice");
        mutate(&mut cmd);
        framework()
            .given_no_previous_events()
            .when_async(UserCommand::Register(cmd))
            .await
            .then_expect_error(expected);
    }
}

/// The stored hash of "correct horse battery" (one, so a check can name it).
fn stored_hash() -> String {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| crate::crypto::hash_password("correct horse battery"))
        .clone()
}

fn with_password() -> Vec<UserEvent> {
    vec![
        UserEvent::Registered(registered()),
        UserEvent::PasswordSet(PasswordSet {
            password_hash: stored_hash(),
            at: t0(),
        }),
    ]
}

/// `SetPassword` of `new`, naming the stored hash the current password matched (self-service).
fn set_password(new: &str, current_matched: Option<String>) -> UserCommand {
    UserCommand::SetPassword(SetPassword {
        password_hash: HashedPassword::of(new),
        current_matched,
    })
}

fn revoked_sessions(generation: u32, reason: RevocationReason) -> UserEvent {
    UserEvent::SessionsRevoked(SessionsRevoked {
        generation,
        reason,
        at: t0(),
    })
}

#[tokio::test]
async fn revoking_sessions_moves_the_token_generation_on() {
    framework()
        .given(vec![
            UserEvent::Registered(registered()),
            revoked_sessions(1, RevocationReason::PasswordChanged),
        ])
        .when_async(UserCommand::RevokeSessions)
        .await
        .then_expect_events(vec![revoked_sessions(2, RevocationReason::Requested)]);
    framework()
        .given(vec![UserEvent::Registered(registered())])
        .when_async(UserCommand::EndEnrollment)
        .await
        .then_expect_events(vec![revoked_sessions(
            1,
            RevocationReason::EnrollmentCompleted,
        )]);
    use cqrs_es::{Aggregate, DomainEvent};
    let mut user = User::default();
    user.apply(UserEvent::Registered(registered()));
    assert_eq!(user.token_generation, 0);
    user.apply(revoked_sessions(3, RevocationReason::Requested));
    assert_eq!(user.token_generation, 3);
    let event = revoked_sessions(1, RevocationReason::HardLocked);
    assert_eq!(event.event_type(), "SessionsRevoked");
    assert_eq!(event.event_version(), "1.0");
    assert_eq!(
        serde_json::to_value(&event).unwrap()["SessionsRevoked"]["reason"],
        "HARD_LOCKED"
    );
}

#[tokio::test]
async fn set_password_stores_a_new_argon2id_hash() {
    let events = framework()
        .given(vec![UserEvent::Registered(registered())])
        .when_async(set_password("a new passphrase", None))
        .await
        .inspect_result()
        .unwrap();
    // A first password: there was no session to end.
    let [UserEvent::PasswordSet(set)] = &events[..] else {
        panic!("{events:?}")
    };
    assert!(verify_password("a new passphrase", &set.password_hash));
    assert!(
        !serde_json::to_string(&events)
            .unwrap()
            .contains("a new passphrase")
    );
}

#[tokio::test]
async fn changing_ones_own_password_needs_a_match_of_the_current_one() {
    let events = framework()
        .given(with_password())
        .when_async(set_password("a new passphrase", Some(stored_hash())))
        .await
        .inspect_result()
        .unwrap();
    assert!(matches!(
        events[..],
        [
            UserEvent::PasswordSet(_),
            UserEvent::SessionsRevoked(SessionsRevoked {
                generation: 1,
                reason: RevocationReason::PasswordChanged,
                ..
            })
        ]
    ));
    // A match of a password that is no longer the user's (changed meanwhile, or never set)
    // changes nothing: the caller checks again. A wrong one never gets here: the caller
    // records it with `RecordLoginFailure` (`failed_logins_are_counted`).
    let mut changed = with_password();
    changed.push(UserEvent::PasswordSet(PasswordSet {
        password_hash: crate::crypto::hash_password("another passphrase"),
        at: t0(),
    }));
    for given in [changed, vec![UserEvent::Registered(registered())]] {
        framework()
            .given(given)
            .when_async(set_password("a new passphrase", Some(stored_hash())))
            .await
            .then_expect_error(UserError::CheckOutdated);
    }
}

#[tokio::test]
async fn passwords_of_bad_lengths_are_refused_before_hashing_and_unknown_users_rejected() {
    for bad in ["short".to_string(), "x".repeat(257)] {
        assert_eq!(
            validate_password(&Secret::new(bad)),
            Err(UserError::InvalidPassword)
        );
    }
    for good in ["8 chars!".to_string(), "x".repeat(256)] {
        assert_eq!(validate_password(&Secret::new(good)), Ok(()));
    }
    framework()
        .given_no_previous_events()
        .when_async(set_password("long enough", None))
        .await
        .then_expect_error(UserError::NotFound);
}

#[tokio::test]
async fn failed_logins_are_counted() {
    let mut given = with_password();
    given.push(UserEvent::LoginFailed(LoginFailed {
        reason: LoginFailureReason::WrongPassword,
        failed_logins: 1,
        at: t0(),
    }));
    framework()
        .given(given)
        .when_async(UserCommand::RecordLoginFailure {
            reason: LoginFailureReason::WrongPassword,
        })
        .await
        .then_expect_events(vec![UserEvent::LoginFailed(LoginFailed {
            reason: LoginFailureReason::WrongPassword,
            failed_logins: 2,
            at: t0(),
        })]);
    framework()
        .given_no_previous_events()
        .when_async(UserCommand::RecordLoginFailure {
            reason: LoginFailureReason::WrongPassword,
        })
        .await
        .then_expect_error(UserError::NotFound);
}

fn login_failed(n: u32) -> UserEvent {
    UserEvent::LoginFailed(LoginFailed {
        reason: LoginFailureReason::WrongPassword,
        failed_logins: n,
        at: t0(),
    })
}

#[tokio::test]
async fn the_failure_completing_a_run_throttles_the_login() {
    // The test policy throttles after 3 wrong passwords, for 300 s.
    let mut given = with_password();
    given.extend([login_failed(1), login_failed(2)]);
    framework()
        .given(given)
        .when_async(UserCommand::RecordLoginFailure {
            reason: LoginFailureReason::WrongPassword,
        })
        .await
        .then_expect_events(vec![
            login_failed(3),
            UserEvent::LoginThrottled(LoginThrottled {
                runs: 1,
                until: t0() + chrono::TimeDelta::seconds(300),
                at: t0(),
            }),
        ]);
}

#[tokio::test]
async fn a_second_run_throttles_twice_as_long() {
    let mut given = with_password();
    given.extend([
        login_failed(1),
        login_failed(2),
        login_failed(3),
        UserEvent::LoginThrottled(LoginThrottled {
            runs: 1,
            until: t0(),
            at: t0(),
        }),
        login_failed(4),
        login_failed(5),
    ]);
    framework()
        .given(given)
        .when_async(UserCommand::RecordLoginFailure {
            reason: LoginFailureReason::WrongPassword,
        })
        .await
        .then_expect_events(vec![
            login_failed(6),
            UserEvent::LoginThrottled(LoginThrottled {
                runs: 2,
                until: t0() + chrono::TimeDelta::seconds(600),
                at: t0(),
            }),
        ]);
}

#[tokio::test]
async fn a_correct_password_resets_the_throttle_and_writes_nothing_when_clear() {
    let mut given = with_password();
    given.push(login_failed(1));
    framework()
        .given(given)
        .when_async(UserCommand::ResetLoginFailures)
        .await
        .then_expect_events(vec![UserEvent::LoginFailuresReset(LoginFailuresReset {
            at: t0(),
        })]);
    framework()
        .given(with_password())
        .when_async(UserCommand::ResetLoginFailures)
        .await
        .then_expect_events(vec![]);
    // After a reset the count starts again: two more failures throttle nothing.
    let mut given = with_password();
    given.extend([
        login_failed(1),
        login_failed(2),
        UserEvent::LoginFailuresReset(LoginFailuresReset { at: t0() }),
        login_failed(3),
    ]);
    framework()
        .given(given)
        .when_async(UserCommand::RecordLoginFailure {
            reason: LoginFailureReason::WrongPassword,
        })
        .await
        .then_expect_events(vec![login_failed(4)]);
}

#[tokio::test]
async fn while_throttled_a_current_password_is_refused_unchecked() {
    let mut given = with_password();
    given.push(UserEvent::LoginThrottled(LoginThrottled {
        runs: 1,
        until: t0() + chrono::TimeDelta::seconds(42),
        at: t0(),
    }));
    framework()
        .given(given)
        .when_async(set_password("a new passphrase", Some(stored_hash())))
        .await
        .then_expect_error(UserError::LoginThrottled {
            retry_after_seconds: 42,
        });
}

#[test]
fn event_type_strings_are_frozen() {
    use cqrs_es::DomainEvent;
    assert_eq!(
        UserEvent::Registered(registered()).event_type(),
        "Registered"
    );
    let set = UserEvent::PasswordSet(PasswordSet {
        password_hash: String::new(),
        at: t0(),
    });
    assert_eq!(set.event_type(), "PasswordSet");
    assert_eq!(set.event_version(), "1.0");
    let failed = UserEvent::LoginFailed(LoginFailed {
        reason: LoginFailureReason::WrongPassword,
        failed_logins: 1,
        at: t0(),
    });
    assert_eq!(failed.event_type(), "LoginFailed");
    assert!(
        serde_json::to_value(&failed)
            .unwrap()
            .get("LoginFailed")
            .is_some()
    );
    assert_eq!(<User as cqrs_es::Aggregate>::TYPE, "User");
}

fn codes(prefix: char) -> Vec<String> {
    (0..10).map(|i| format!("{prefix}{i}AAA-BBBBB")).collect()
}

fn generated(generation: u32, codes: &[String]) -> UserEvent {
    UserEvent::RecoveryCodesGenerated(RecoveryCodesGenerated {
        generation,
        hashes: codes
            .iter()
            .map(|c| hash_recovery_code(&c.replace('-', "")))
            .collect(),
        at: t0(),
    })
}

fn hashed(codes: &[String]) -> recovery::HashedCodeSet {
    let secrets: Vec<Secret<String>> = codes.iter().cloned().map(Secret::new).collect();
    recovery::hash_set(&secrets).unwrap()
}

/// `UseRecoveryCode` with a check of set `generation` that found code `matched`.
fn use_code(generation: u32, matched: Option<u32>) -> UserCommand {
    UserCommand::UseRecoveryCode {
        check: recovery::CodeCheck::Checked {
            generation,
            matched,
        },
    }
}

fn failed(reason: UserFailureReason, factor_id: Option<FactorId>, n: u32) -> UserEvent {
    UserEvent::FailedAttempt(UserFailedAttempt {
        reason,
        factor_id,
        consecutive_failures: n,
        at: t0(),
    })
}

#[tokio::test]
async fn recovery_codes_are_stored_only_as_argon2id_hashes() {
    let plain = codes('A');
    let events = framework()
        .given(vec![UserEvent::Registered(registered())])
        .when_async(UserCommand::GenerateRecoveryCodes {
            hashes: hashed(&plain),
            only_if_none: false,
        })
        .await
        .inspect_result()
        .unwrap();
    let [UserEvent::RecoveryCodesGenerated(set)] = events.as_slice() else {
        panic!("expected one RecoveryCodesGenerated, got {events:?}");
    };
    assert_eq!(set.generation, 1);
    assert_eq!(set.hashes.len(), 10);
    let json = serde_json::to_string(&events).unwrap();
    for (code, hash) in plain.iter().zip(&set.hashes) {
        assert!(hash.starts_with("$argon2id$"));
        assert!(!json.contains(code.as_str()) && !json.contains(&code.replace('-', "")));
        assert!(verify_recovery_code(&code.replace('-', ""), hash));
    }
    assert!(
        !format!("{events:?}").contains("argon2id"),
        "Debug hides the hashes"
    );
}

#[tokio::test]
async fn first_activation_generates_codes_only_if_the_user_has_none() {
    framework()
        .given(vec![
            UserEvent::Registered(registered()),
            generated(1, &codes('A')),
        ])
        .when_async(UserCommand::GenerateRecoveryCodes {
            hashes: hashed(&codes('B')),
            only_if_none: true,
        })
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn a_recovery_code_works_once() {
    let plain = codes('A');
    let given = vec![UserEvent::Registered(registered()), generated(1, &plain)];
    framework()
        .given(given.clone())
        .when_async(use_code(1, Some(3)))
        .await
        .then_expect_events(vec![UserEvent::RecoveryUsed(RecoveryUsed {
            generation: 1,
            index: 3,
            remaining: 9,
            at: t0(),
        })]);
    let mut spent = given;
    spent.push(UserEvent::RecoveryUsed(RecoveryUsed {
        generation: 1,
        index: 3,
        remaining: 9,
        at: t0(),
    }));
    // Using it again (the loser of a race with the answer that spent it, or a late repeat) is
    // on record but is no guess: the failure count stays where it was.
    framework()
        .given(spent)
        .when_async(use_code(1, Some(3)))
        .await
        .then_expect_events(vec![failed(UserFailureReason::RecoveryCodeUsed, None, 0)]);
}

#[tokio::test]
async fn regenerating_invalidates_the_old_set() {
    framework()
        .given(vec![
            UserEvent::Registered(registered()),
            generated(1, &codes('A')),
            generated(2, &codes('B')),
        ])
        .when_async(use_code(2, None))
        .await
        .then_expect_events(vec![failed(UserFailureReason::WrongRecoveryCode, None, 1)]);
}

#[tokio::test]
async fn a_check_of_another_set_or_none_is_outdated_and_writes_nothing() {
    let given = vec![
        UserEvent::Registered(registered()),
        generated(1, &codes('A')),
        generated(2, &codes('B')),
    ];
    for check in [
        use_code(1, Some(0)),
        use_code(1, None),
        use_code(2, Some(10)),
        UserCommand::UseRecoveryCode {
            check: recovery::CodeCheck::Skipped,
        },
    ] {
        framework()
            .given(given.clone())
            .when_async(check)
            .await
            .then_expect_error(UserError::CheckOutdated);
    }
}

#[tokio::test]
async fn the_hundredth_consecutive_failure_locks_the_second_factor() {
    let factor = FactorId::generate();
    let mut given = vec![UserEvent::Registered(registered())];
    given.push(failed(
        UserFailureReason::FactorCheckFailed,
        Some(factor),
        99,
    ));
    framework()
        .given(given)
        .when_async(UserCommand::RecordFactorFailure { factor_id: factor })
        .await
        .then_expect_events(vec![
            failed(UserFailureReason::FactorCheckFailed, Some(factor), 100),
            UserEvent::LockedOut(UserLockedOut {
                consecutive_failures: 100,
                at: t0(),
            }),
            revoked_sessions(1, RevocationReason::HardLocked),
        ]);
}

#[tokio::test]
async fn recovery_failures_and_factor_failures_share_one_budget() {
    let factor = FactorId::generate();
    framework()
        .given(vec![
            UserEvent::Registered(registered()),
            generated(1, &codes('A')),
            failed(UserFailureReason::FactorCheckFailed, Some(factor), 99),
        ])
        .when_async(use_code(1, None))
        .await
        .then_expect_events(vec![
            failed(UserFailureReason::WrongRecoveryCode, None, 100),
            UserEvent::LockedOut(UserLockedOut {
                consecutive_failures: 100,
                at: t0(),
            }),
            revoked_sessions(1, RevocationReason::HardLocked),
        ]);
}

#[tokio::test]
async fn while_hard_locked_even_a_valid_recovery_code_is_refused_unchecked() {
    let plain = codes('A');
    let locked = vec![
        UserEvent::Registered(registered()),
        generated(1, &plain),
        failed(UserFailureReason::FactorCheckFailed, None, 100),
        UserEvent::LockedOut(UserLockedOut {
            consecutive_failures: 100,
            at: t0(),
        }),
    ];
    for check in [
        use_code(1, Some(0)),
        UserCommand::UseRecoveryCode {
            check: recovery::CodeCheck::Skipped,
        },
    ] {
        framework()
            .given(locked.clone())
            .when_async(check)
            .await
            .then_expect_events(vec![failed(UserFailureReason::Locked, None, 100)]);
    }
    let factor = FactorId::generate();
    framework()
        .given(locked.clone())
        .when_async(UserCommand::RefuseWhileLocked { factor_id: factor })
        .await
        .then_expect_events(vec![failed(UserFailureReason::Locked, Some(factor), 100)]);
    framework()
        .given(locked)
        .when_async(UserCommand::Unlock)
        .await
        .then_expect_events(vec![UserEvent::Unlocked(UserUnlocked { at: t0() })]);
}

#[tokio::test]
async fn a_success_resets_the_count_and_unlock_needs_a_lock() {
    framework()
        .given(vec![UserEvent::Registered(registered())])
        .when_async(UserCommand::ResetFailures)
        .await
        .then_expect_events(vec![]);
    framework()
        .given(vec![
            UserEvent::Registered(registered()),
            failed(UserFailureReason::FactorCheckFailed, None, 4),
        ])
        .when_async(UserCommand::ResetFailures)
        .await
        .then_expect_events(vec![UserEvent::FailuresReset(FailuresReset { at: t0() })]);
    framework()
        .given(vec![UserEvent::Registered(registered())])
        .when_async(UserCommand::Unlock)
        .await
        .then_expect_error(UserError::NotLocked);
}

#[tokio::test]
async fn commands_on_an_unregistered_user_are_not_found() {
    framework()
        .given_no_previous_events()
        .when_async(UserCommand::ResetFailures)
        .await
        .then_expect_error(UserError::NotFound);
}

#[test]
fn every_user_event_type_string_is_frozen() {
    use cqrs_es::DomainEvent;
    let cases = [
        (generated(1, &codes('A')), "RecoveryCodesGenerated"),
        (
            UserEvent::RecoveryUsed(RecoveryUsed {
                generation: 1,
                index: 0,
                remaining: 9,
                at: t0(),
            }),
            "RecoveryUsed",
        ),
        (failed(UserFailureReason::Locked, None, 0), "FailedAttempt"),
        (
            UserEvent::FailuresReset(FailuresReset { at: t0() }),
            "FailuresReset",
        ),
        (
            UserEvent::LockedOut(UserLockedOut {
                consecutive_failures: 1,
                at: t0(),
            }),
            "LockedOut",
        ),
        (UserEvent::Unlocked(UserUnlocked { at: t0() }), "Unlocked"),
        (
            UserEvent::LoginThrottled(LoginThrottled {
                runs: 1,
                until: t0(),
                at: t0(),
            }),
            "LoginThrottled",
        ),
        (
            UserEvent::LoginFailuresReset(LoginFailuresReset { at: t0() }),
            "LoginFailuresReset",
        ),
    ];
    for (event, name) in cases {
        assert_eq!(event.event_type(), name);
        assert!(serde_json::to_value(&event).unwrap().get(name).is_some());
    }
}

#[tokio::test]
async fn update_profile_replaces_the_given_fields_only() {
    framework()
        .given(vec![UserEvent::Registered(registered())])
        .when_async(UserCommand::UpdateProfile(UpdateProfile {
            phone_number: Some("+14155550199".into()),
            ..UpdateProfile::default()
        }))
        .await
        .then_expect_events(vec![UserEvent::ProfileUpdated(ProfileUpdated {
            email: Some("alice@example.com".into()),
            phone_number: Some("+14155550199".into()),
            display_name: Some("Alice".into()),
            first_name: None,
            last_name: None,
            at: t0(),
        })]);
    // Nothing changes: nothing is written.
    framework()
        .given(vec![UserEvent::Registered(registered())])
        .when_async(UserCommand::UpdateProfile(UpdateProfile {
            email: Some("alice@example.com".into()),
            ..UpdateProfile::default()
        }))
        .await
        .then_expect_events(vec![]);
    framework()
        .given(vec![UserEvent::Registered(registered())])
        .when_async(UserCommand::UpdateProfile(UpdateProfile {
            email: Some("not an address".into()),
            ..UpdateProfile::default()
        }))
        .await
        .then_expect_error(UserError::InvalidEmail);
    framework()
        .given_no_previous_events()
        .when_async(UserCommand::UpdateProfile(UpdateProfile::default()))
        .await
        .then_expect_error(UserError::NotFound);
}

#[tokio::test]
async fn deactivate_and_reactivate_alternate() {
    let deactivated = UserEvent::Deactivated(UserDeactivated { at: t0() });
    framework()
        .given(vec![UserEvent::Registered(registered())])
        .when_async(UserCommand::Deactivate)
        .await
        .then_expect_events(vec![
            deactivated.clone(),
            revoked_sessions(1, RevocationReason::Deactivated),
        ]);
    framework()
        .given(vec![
            UserEvent::Registered(registered()),
            deactivated.clone(),
        ])
        .when_async(UserCommand::Deactivate)
        .await
        .then_expect_error(UserError::Deactivated);
    framework()
        .given(vec![
            UserEvent::Registered(registered()),
            deactivated.clone(),
        ])
        .when_async(UserCommand::Reactivate)
        .await
        .then_expect_events(vec![UserEvent::Reactivated(UserReactivated { at: t0() })]);
    framework()
        .given(vec![UserEvent::Registered(registered())])
        .when_async(UserCommand::Reactivate)
        .await
        .then_expect_error(UserError::NotDeactivated);
    use cqrs_es::Aggregate;
    let mut user = User::default();
    user.apply(UserEvent::Registered(registered()));
    user.apply(deactivated);
    assert!(user.is_deactivated());
    user.apply(UserEvent::Reactivated(UserReactivated { at: t0() }));
    assert!(!user.is_deactivated());
}

#[test]
fn lifecycle_event_type_strings_are_frozen() {
    use cqrs_es::DomainEvent;
    let at = t0();
    assert_eq!(
        UserEvent::Deactivated(UserDeactivated { at }).event_type(),
        "Deactivated"
    );
    assert_eq!(
        UserEvent::Reactivated(UserReactivated { at }).event_type(),
        "Reactivated"
    );
    let updated = UserEvent::ProfileUpdated(ProfileUpdated {
        email: None,
        phone_number: None,
        display_name: None,
        first_name: None,
        last_name: None,
        at,
    });
    assert_eq!(updated.event_type(), "ProfileUpdated");
    assert_eq!(updated.event_version(), "2.0");
}

#[tokio::test]
async fn first_and_last_names_are_registered_and_updated() {
    let mut with_names = register("alice");
    with_names.first_name = Some("Alice".into());
    with_names.last_name = Some("Liddell".into());
    framework()
        .given_no_previous_events()
        .when_async(UserCommand::Register(with_names))
        .await
        .then_expect_events(vec![UserEvent::Registered(Registered {
            first_name: Some("Alice".into()),
            last_name: Some("Liddell".into()),
            ..registered()
        })]);
    framework()
        .given(vec![UserEvent::Registered(registered())])
        .when_async(UserCommand::UpdateProfile(UpdateProfile {
            last_name: Some("Hargreaves".into()),
            ..UpdateProfile::default()
        }))
        .await
        .then_expect_events(vec![UserEvent::ProfileUpdated(ProfileUpdated {
            email: Some("alice@example.com".into()),
            phone_number: Some("+14155550100".into()),
            display_name: Some("Alice".into()),
            first_name: None,
            last_name: Some("Hargreaves".into()),
            at: t0(),
        })]);
    let mut control = register("alice");
    control.first_name = Some("A\u{7}".into());
    framework()
        .given_no_previous_events()
        .when_async(UserCommand::Register(control))
        .await
        .then_expect_error(UserError::InvalidDisplayName);
}

#[test]
fn profile_events_of_version_1_read_as_without_names() {
    use cqrs_es::DomainEvent;

    use crate::versioning::decode;
    let stored = serde_json::json!({ "Registered": {
        "login": "alice", "email": null, "phone_number": null, "display_name": "Alice",
        "at": "2026-01-01T00:00:00Z" } });
    let event: UserEvent = decode("Registered", "1.0", stored).expect("upcast");
    let UserEvent::Registered(r) = event else {
        panic!("not Registered: {event:?}")
    };
    assert_eq!((r.first_name, r.last_name), (None, None));
    assert_eq!(r.display_name.as_deref(), Some("Alice"));
    let stored = serde_json::json!({ "ProfileUpdated": {
        "email": "a@example.com", "phone_number": null, "display_name": null,
        "at": "2026-01-01T00:00:00Z" } });
    let event: UserEvent = decode("ProfileUpdated", "1.0", stored).expect("upcast");
    assert!(matches!(
        event,
        UserEvent::ProfileUpdated(ProfileUpdated {
            first_name: None,
            ..
        })
    ));
    assert_eq!(UserEvent::Registered(registered()).event_version(), "2.0");
}

fn device(n: u128) -> uuid::Uuid {
    uuid::Uuid::from_u128(n)
}

fn trusted(n: u128) -> UserEvent {
    UserEvent::DeviceTrusted(DeviceTrusted {
        device_id: device(n),
        token_hash: format!("hash-{n}"),
        label: Some("Firefox".into()),
        expires_at: t0() + chrono::TimeDelta::days(30),
        at: t0(),
    })
}

fn revoked(n: u128, reason: DeviceRevocationReason) -> UserEvent {
    UserEvent::DeviceRevoked(DeviceRevoked {
        device_id: device(n),
        reason,
        at: t0(),
    })
}

#[tokio::test]
async fn a_trusted_device_is_used_until_revoked() {
    let mut given = with_password();
    given.push(trusted(1));
    framework()
        .given(given.clone())
        .when_async(UserCommand::UseTrustedDevice {
            device_id: device(1),
        })
        .await
        .then_expect_events(vec![UserEvent::TrustedDeviceUsed(TrustedDeviceUsed {
            device_id: device(1),
            at: t0(),
        })]);
    framework()
        .given(given.clone())
        .when_async(UserCommand::RevokeDevice {
            device_id: device(1),
        })
        .await
        .then_expect_events(vec![revoked(1, DeviceRevocationReason::Revoked)]);
    given.push(revoked(1, DeviceRevocationReason::Revoked));
    for command in [
        UserCommand::UseTrustedDevice {
            device_id: device(1),
        },
        UserCommand::RevokeDevice {
            device_id: device(1),
        },
    ] {
        framework()
            .given(given.clone())
            .when_async(command)
            .await
            .then_expect_error(UserError::DeviceNotFound);
    }
}

#[tokio::test]
async fn an_expired_device_stands_in_for_nothing() {
    let mut given = with_password();
    given.push(UserEvent::DeviceTrusted(DeviceTrusted {
        device_id: device(1),
        token_hash: "h".into(),
        label: None,
        expires_at: t0(),
        at: t0() - chrono::TimeDelta::days(30),
    }));
    framework()
        .given(given)
        .when_async(UserCommand::UseTrustedDevice {
            device_id: device(1),
        })
        .await
        .then_expect_error(UserError::DeviceNotFound);
}

#[tokio::test]
async fn a_password_change_revokes_every_device() {
    let mut given = with_password();
    given.extend([trusted(1), trusted(2)]);
    let events = framework()
        .given(given)
        .when_async(set_password("a new passphrase", None))
        .await
        .inspect_result()
        .unwrap();
    assert!(matches!(events[0], UserEvent::PasswordSet(_)));
    assert_eq!(
        events[1..3],
        [
            revoked(1, DeviceRevocationReason::PasswordChanged),
            revoked(2, DeviceRevocationReason::PasswordChanged)
        ]
    );
    // The sessions end with the trust (token generations).
    assert!(
        matches!(&events[3..], [UserEvent::SessionsRevoked(s)] if s.reason == RevocationReason::PasswordChanged),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_recovery_code_use_and_a_hard_lock_revoke_every_device() {
    let codes = codes('A');
    let mut given = with_password();
    given.extend([generated(1, &codes), trusted(1)]);
    let events = framework()
        .given(given)
        .when_async(use_code(1, Some(0)))
        .await
        .inspect_result()
        .unwrap();
    assert!(matches!(events[0], UserEvent::RecoveryUsed(_)));
    assert_eq!(
        events[1],
        revoked(1, DeviceRevocationReason::RecoveryCodeUsed)
    );

    let mut given = with_password();
    given.extend([
        trusted(1),
        failed(UserFailureReason::FactorCheckFailed, None, 99),
    ]);
    let events = framework()
        .given(given)
        .when_async(UserCommand::RecordFactorFailure {
            factor_id: FactorId::generate(),
        })
        .await
        .inspect_result()
        .unwrap();
    assert!(matches!(events[1], UserEvent::LockedOut(_)), "{events:?}");
    assert!(
        matches!(&events[2], UserEvent::SessionsRevoked(s) if s.reason == RevocationReason::HardLocked),
        "{events:?}"
    );
    assert_eq!(events[3], revoked(1, DeviceRevocationReason::HardLocked));
    assert_eq!(events.len(), 4, "{events:?}");
}

#[tokio::test]
async fn a_deleted_user_takes_no_command_and_keeps_its_login_taken() {
    framework()
        .given(vec![UserEvent::Registered(registered())])
        .when_async(UserCommand::Delete)
        .await
        .then_expect_events(vec![UserEvent::Deleted(UserDeleted { at: t0() })]);
    let deleted = || {
        vec![
            UserEvent::Registered(registered()),
            UserEvent::Deleted(UserDeleted { at: t0() }),
        ]
    };
    for command in [
        UserCommand::Delete,
        UserCommand::Reactivate,
        UserCommand::UpdateProfile(UpdateProfile {
            email: Some("new@example.com".into()),
            ..UpdateProfile::default()
        }),
    ] {
        framework()
            .given(deleted())
            .when_async(command)
            .await
            .then_expect_error(UserError::NotFound);
    }
    framework()
        .given(deleted())
        .when_async(UserCommand::Register(register("alice")))
        .await
        .then_expect_error(UserError::AlreadyRegistered);
    use cqrs_es::Aggregate;
    let mut user = User::default();
    for e in deleted() {
        user.apply(e);
    }
    assert!(user.is_deleted() && user.exists());
    assert_eq!(user.login, "alice");
    assert_eq!((user.email, user.phone_number), (None, None));
}

#[tokio::test]
async fn a_refused_code_and_the_budget_warning_are_on_the_users_record() {
    use crate::{challenge::Channel, user::code_limits::CodeRefusalReason};
    use cqrs_es::DomainEvent;
    let refusal = CodeRefusal {
        channel: Channel::Sms,
        reason: CodeRefusalReason::BudgetExhausted,
        destination: "+1 ••• ••• 0100".into(),
        country_code: Some(1),
        factor_id: None,
        retry_after_seconds: 60,
    };
    let refused = CodeRefused {
        channel: Channel::Sms,
        reason: CodeRefusalReason::BudgetExhausted,
        destination: "+1 ••• ••• 0100".into(),
        country_code: Some(1),
        factor_id: None,
        retry_after_seconds: 60,
        at: t0(),
    };
    framework()
        .given(vec![UserEvent::Registered(registered())])
        .when_async(UserCommand::RecordCodeRefusal(refusal.clone()))
        .await
        .then_expect_events(vec![UserEvent::CodeRefused(refused.clone())]);
    let event = UserEvent::CodeRefused(refused);
    assert_eq!(event.event_type(), "CodeRefused");
    assert_eq!(
        serde_json::to_value(&event).unwrap()["CodeRefused"]["reason"],
        "SMS_BUDGET_EXHAUSTED"
    );
    framework()
        .given(vec![UserEvent::Registered(registered())])
        .when_async(UserCommand::RecordSmsBudgetWarning {
            sent: 4,
            budget: 5,
            window_ends_at: t0(),
        })
        .await
        .then_expect_events(vec![UserEvent::SmsBudgetThresholdCrossed(
            SmsBudgetThresholdCrossed {
                sent: 4,
                budget: 5,
                window_ends_at: t0(),
                at: t0(),
            },
        )]);
    // Nobody to record it for: an unknown user's refusal writes nothing.
    framework()
        .given_no_previous_events()
        .when_async(UserCommand::RecordCodeRefusal(refusal))
        .await
        .then_expect_error(UserError::NotFound);
}
