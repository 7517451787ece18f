use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use cqrs_es::{Aggregate, DomainEvent, test::TestFramework};
use serde_json::json;
use uuid::Uuid;

use super::*;
use crate::{
    factor::{FactorType, FailureReason},
    ids::{ChallengeId, FactorId, UserId},
    services::FixedClock,
};

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000, 0).unwrap()
}

fn secs(n: i64) -> TimeDelta {
    TimeDelta::seconds(n)
}

fn cid() -> ChallengeId {
    ChallengeId(Uuid::from_u128(0x0190_0000_0000_7000_a000_0000_0000_0001))
}

fn fid() -> FactorId {
    FactorId(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001))
}

fn uid() -> UserId {
    UserId::for_login("alice")
}

fn framework_at(at: DateTime<Utc>) -> TestFramework<Challenge> {
    TestFramework::with(ChallengeServices {
        clock: Arc::new(FixedClock::at(at)),
        max_failed_attempts: 5,
    })
}

fn issue(purpose: ChallengePurpose, state: Option<serde_json::Value>, ttl: i64) -> Issue {
    Issue {
        challenge_id: cid(),
        user_id: uid(),
        purpose,
        factor_id: None,
        state,
        ttl: secs(ttl),
        code: None,
    }
}

fn state() -> serde_json::Value {
    json!({"transfer": {"to": "DE89 3704 0044 0532 0130 00", "cents": 125000}, "nonce": [1, 2.5, null, true]})
}

/// A step-up challenge issued at `t0()` for five minutes.
fn issued() -> ChallengeEvent {
    ChallengeEvent::Issued(Issued {
        challenge_id: cid(),
        user_id: uid(),
        purpose: ChallengePurpose::StepUp,
        factor_id: None,
        state: Some(state()),
        expires_at: t0() + secs(300),
        at: t0(),
    })
}

fn complete(method: Method) -> ChallengeCommand {
    ChallengeCommand::Complete {
        purpose: ChallengePurpose::StepUp,
        user_id: uid(),
        factor_id: Some(fid()),
        method,
    }
}

fn completed(at: DateTime<Utc>) -> ChallengeEvent {
    ChallengeEvent::Completed(Completed {
        factor_id: Some(fid()),
        method: Method::Totp,
        at,
    })
}

fn failure(reason: FailureReason) -> ChallengeCommand {
    ChallengeCommand::RecordFailure {
        factor_id: fid(),
        reason,
    }
}

fn failed(n: u32, at: DateTime<Utc>) -> ChallengeEvent {
    ChallengeEvent::FailedAttempt(FailedAttempt {
        factor_id: Some(fid()),
        reason: FailureReason::WrongCode,
        failed_attempts: n,
        at,
    })
}

fn expired(reason: ExpiryReason, at: DateTime<Utc>) -> ChallengeEvent {
    ChallengeEvent::Expired(Expired { reason, at })
}

fn sent_code() -> SentCode {
    SentCode {
        factor_id: fid(),
        channel: Channel::Sms,
        destination: mask_destination("+14155550100"),
        code_expires_at: t0() + secs(300),
    }
}

#[tokio::test]
async fn issue_keeps_the_callers_state_and_deadline() {
    framework_at(t0())
        .given_no_previous_events()
        .when_async(ChallengeCommand::Issue(issue(
            ChallengePurpose::StepUp,
            Some(state()),
            300,
        )))
        .await
        .then_expect_events(vec![issued()]);
}

#[tokio::test]
async fn issue_with_a_code_records_it_in_the_same_commit() {
    let mut cmd = issue(ChallengePurpose::Factor, None, 300);
    cmd.factor_id = Some(fid());
    cmd.code = Some(sent_code());
    let events = framework_at(t0())
        .given_no_previous_events()
        .when_async(ChallengeCommand::Issue(cmd))
        .await
        .inspect_result()
        .unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(
        events[1],
        ChallengeEvent::CodeSent(CodeSent {
            factor_id: fid(),
            channel: Channel::Sms,
            destination: "+1•••0100".into(),
            code_expires_at: t0() + secs(300),
            at: t0(),
        })
    );
}

#[tokio::test]
async fn issue_rejects_bad_lifetimes_large_state_and_reuse_of_an_id() {
    for ttl in [0, 29, 3601, -5] {
        framework_at(t0())
            .given_no_previous_events()
            .when_async(ChallengeCommand::Issue(issue(
                ChallengePurpose::StepUp,
                None,
                ttl,
            )))
            .await
            .then_expect_error(ChallengeError::InvalidTtl);
    }
    for ttl in [30, 3600] {
        let events = framework_at(t0())
            .given_no_previous_events()
            .when_async(ChallengeCommand::Issue(issue(
                ChallengePurpose::StepUp,
                None,
                ttl,
            )))
            .await
            .inspect_result()
            .unwrap();
        assert_eq!(events.len(), 1);
    }
    let big = json!({"blob": "x".repeat(MAX_STATE_BYTES)});
    framework_at(t0())
        .given_no_previous_events()
        .when_async(ChallengeCommand::Issue(issue(
            ChallengePurpose::StepUp,
            Some(big),
            300,
        )))
        .await
        .then_expect_error(ChallengeError::StateTooLarge);
    framework_at(t0())
        .given(vec![issued()])
        .when_async(ChallengeCommand::Issue(issue(
            ChallengePurpose::StepUp,
            None,
            300,
        )))
        .await
        .then_expect_error(ChallengeError::AlreadyIssued);
}

#[tokio::test]
async fn complete_once() {
    let at = t0() + secs(10);
    framework_at(at)
        .given(vec![issued()])
        .when_async(complete(Method::Totp))
        .await
        .then_expect_events(vec![completed(at)]);
    framework_at(at + secs(1))
        .given(vec![issued(), completed(at)])
        .when_async(complete(Method::Totp))
        .await
        .then_expect_error(ChallengeError::AlreadyCompleted);
}

#[tokio::test]
async fn complete_after_the_deadline_records_the_expiry_instead() {
    let deadline = t0() + secs(300);
    framework_at(deadline - secs(1))
        .given(vec![issued()])
        .when_async(complete(Method::Sms))
        .await
        .then_expect_events(vec![ChallengeEvent::Completed(Completed {
            factor_id: Some(fid()),
            method: Method::Sms,
            at: deadline - secs(1),
        })]);
    framework_at(deadline)
        .given(vec![issued()])
        .when_async(complete(Method::Totp))
        .await
        .then_expect_events(vec![expired(ExpiryReason::TimedOut, deadline)]);
    framework_at(deadline + secs(5))
        .given(vec![issued(), expired(ExpiryReason::TimedOut, deadline)])
        .when_async(complete(Method::Totp))
        .await
        .then_expect_error(ChallengeError::Expired);
}

#[tokio::test]
async fn complete_checks_purpose_and_user() {
    let at = t0() + secs(10);
    framework_at(at)
        .given(vec![issued()])
        .when_async(ChallengeCommand::Complete {
            purpose: ChallengePurpose::Login,
            user_id: uid(),
            factor_id: Some(fid()),
            method: Method::Totp,
        })
        .await
        .then_expect_error(ChallengeError::WrongPurpose);
    framework_at(at)
        .given(vec![issued()])
        .when_async(ChallengeCommand::Complete {
            purpose: ChallengePurpose::StepUp,
            user_id: UserId::for_login("mallory"),
            factor_id: Some(fid()),
            method: Method::Totp,
        })
        .await
        .then_expect_error(ChallengeError::FactorOfAnotherUser);
    framework_at(at)
        .given_no_previous_events()
        .when_async(complete(Method::Totp))
        .await
        .then_expect_error(ChallengeError::NotFound);
}

#[tokio::test]
async fn the_fifth_failed_attempt_ends_the_challenge() {
    let mut given = vec![issued()];
    for n in 1..=4 {
        given.push(failed(n, t0() + secs(i64::from(n))));
    }
    let at = t0() + secs(10);
    framework_at(at)
        .given(given.clone())
        .when_async(failure(FailureReason::WrongCode))
        .await
        .then_expect_events(vec![
            failed(5, at),
            expired(ExpiryReason::TooManyFailures, at),
        ]);
    given.push(failed(5, at));
    given.push(expired(ExpiryReason::TooManyFailures, at));
    framework_at(at + secs(1))
        .given(given.clone())
        .when_async(complete(Method::Totp))
        .await
        .then_expect_error(ChallengeError::Expired);
    framework_at(at + secs(1))
        .given(given)
        .when_async(failure(FailureReason::WrongCode))
        .await
        .then_expect_error(ChallengeError::Expired);
}

#[tokio::test]
async fn only_wrong_codes_count_towards_the_limit() {
    let mut given = vec![issued()];
    for n in 1..=4 {
        given.push(failed(n, t0() + secs(i64::from(n))));
    }
    let at = t0() + secs(10);
    for reason in [
        FailureReason::Replayed,
        FailureReason::Locked,
        FailureReason::NoActiveCode,
        FailureReason::CodeExpired,
        FailureReason::AttemptsExhausted,
    ] {
        framework_at(at)
            .given(given.clone())
            .when_async(failure(reason))
            .await
            .then_expect_events(vec![ChallengeEvent::FailedAttempt(FailedAttempt {
                factor_id: Some(fid()),
                reason,
                failed_attempts: 4,
                at,
            })]);
    }
}

#[tokio::test]
async fn wrong_recovery_codes_take_the_challenges_tries_like_wrong_codes() {
    // Four wrong TOTP codes, then a wrong recovery code: the fifth wrong answer of any kind
    // ends the challenge.
    let mut given = vec![issued()];
    for n in 1..=4 {
        given.push(failed(n, t0() + secs(i64::from(n))));
    }
    let at = t0() + secs(10);
    framework_at(at)
        .given(given)
        .when_async(ChallengeCommand::RecordRecoveryCodeFailure {
            reason: FailureReason::WrongCode,
        })
        .await
        .then_expect_events(vec![
            ChallengeEvent::FailedAttempt(FailedAttempt {
                factor_id: None,
                reason: FailureReason::WrongCode,
                failed_attempts: 5,
                at,
            }),
            expired(ExpiryReason::TooManyFailures, at),
        ]);
    // On an ended challenge it is refused and writes nothing.
    framework_at(at)
        .given(vec![issued(), expired(ExpiryReason::TooManyFailures, at)])
        .when_async(ChallengeCommand::RecordRecoveryCodeFailure {
            reason: FailureReason::WrongCode,
        })
        .await
        .then_expect_error(ChallengeError::Expired);
}

#[test]
fn failed_attempts_written_before_recovery_codes_counted_still_read() {
    let old = serde_json::json!({
        "factor_id": fid().to_string(),
        "reason": "WRONG_CODE",
        "failed_attempts": 2,
        "at": "2026-01-01T00:00:00Z",
    });
    let read: FailedAttempt = serde_json::from_value(old).expect("old payload reads");
    assert_eq!(read.factor_id, Some(fid()));
    let recovery = serde_json::json!({
        "factor_id": null,
        "reason": "WRONG_CODE",
        "failed_attempts": 3,
        "at": "2026-01-01T00:00:00Z",
    });
    let read: FailedAttempt = serde_json::from_value(recovery).expect("recovery payload reads");
    assert_eq!(read.factor_id, None);
}

#[tokio::test]
async fn expire_only_after_the_deadline_and_only_once() {
    framework_at(t0() + secs(299))
        .given(vec![issued()])
        .when_async(ChallengeCommand::Expire)
        .await
        .then_expect_error(ChallengeError::NotExpired);
    framework_at(t0() + secs(300))
        .given(vec![issued()])
        .when_async(ChallengeCommand::Expire)
        .await
        .then_expect_events(vec![expired(ExpiryReason::TimedOut, t0() + secs(300))]);
    framework_at(t0() + secs(400))
        .given(vec![
            issued(),
            expired(ExpiryReason::TimedOut, t0() + secs(300)),
        ])
        .when_async(ChallengeCommand::Expire)
        .await
        .then_expect_events(vec![]);
    framework_at(t0() + secs(400))
        .given(vec![issued(), completed(t0() + secs(5))])
        .when_async(ChallengeCommand::Expire)
        .await
        .then_expect_error(ChallengeError::AlreadyCompleted);
}

#[tokio::test]
async fn codes_are_recorded_only_while_open() {
    let at = t0() + secs(10);
    let events = framework_at(at)
        .given(vec![issued()])
        .when_async(ChallengeCommand::RecordCodeSent(sent_code()))
        .await
        .inspect_result()
        .unwrap();
    assert!(matches!(events[..], [ChallengeEvent::CodeSent(_)]));
    framework_at(at)
        .given(vec![issued(), completed(t0() + secs(5))])
        .when_async(ChallengeCommand::RecordCodeSent(sent_code()))
        .await
        .then_expect_error(ChallengeError::AlreadyCompleted);
    framework_at(t0() + secs(300))
        .given(vec![issued()])
        .when_async(ChallengeCommand::RecordCodeSent(sent_code()))
        .await
        .then_expect_error(ChallengeError::Expired);
}

#[tokio::test]
async fn delivery_results_are_recorded_in_any_state() {
    let at = t0() + secs(400);
    framework_at(at)
        .given(vec![
            issued(),
            expired(ExpiryReason::TimedOut, t0() + secs(300)),
        ])
        .when_async(ChallengeCommand::RecordDelivery {
            factor_id: fid(),
            channel: Channel::Email,
            outcome: DeliveryOutcome::Failed {
                attempts: 3,
                error: "SMTP 451".into(),
            },
        })
        .await
        .then_expect_events(vec![ChallengeEvent::DeliveryFailed(DeliveryFailed {
            factor_id: fid(),
            channel: Channel::Email,
            attempts: 3,
            error: "SMTP 451".into(),
            at,
        })]);
    framework_at(at)
        .given_no_previous_events()
        .when_async(ChallengeCommand::RecordDelivery {
            factor_id: fid(),
            channel: Channel::Sms,
            outcome: DeliveryOutcome::Delivered { attempts: 1 },
        })
        .await
        .then_expect_error(ChallengeError::NotFound);
}

#[test]
fn status_reads_the_deadline_at_now() {
    let mut c = Challenge::default();
    assert_eq!(c.status_at(t0()), ChallengeStatus::Unissued);
    c.apply(issued());
    assert_eq!(c.status_at(t0() + secs(299)), ChallengeStatus::Issued);
    assert!(c.is_open_at(t0() + secs(299)));
    assert_eq!(c.status_at(t0() + secs(300)), ChallengeStatus::Expired);
    assert!(!c.is_open_at(t0() + secs(300)));
    c.apply(completed(t0() + secs(5)));
    assert_eq!(c.status_at(t0() + secs(900)), ChallengeStatus::Completed);
    assert_eq!(c.state, Some(state()));
}

#[test]
fn destinations_are_masked() {
    assert_eq!(mask_destination("+14155550100"), "+1•••0100");
    assert_eq!(mask_destination("alice@example.com"), "a•••@example.com");
    assert_eq!(mask_destination("+1234"), "•••");
}

#[test]
fn methods_and_factor_types_name_their_amr() {
    assert_eq!(
        Method::of_factor(FactorType::Totp).map(Method::amr),
        Some("otp")
    );
    assert_eq!(
        Method::of_factor(FactorType::Sms).map(Method::amr),
        Some("sms")
    );
    assert_eq!(
        Method::of_factor(FactorType::Email).map(Method::amr),
        Some("email")
    );
    assert_eq!(
        Method::of_factor(FactorType::Webauthn),
        Some(Method::Webauthn)
    );
    assert_eq!(Method::Webauthn.amr(), "hwk");
    assert_eq!(Method::Password.amr(), "pwd");
}

#[test]
fn event_type_strings_are_frozen() {
    let at = t0();
    let all = [
        (issued(), "Issued"),
        (
            ChallengeEvent::CodeSent(CodeSent {
                factor_id: fid(),
                channel: Channel::Sms,
                destination: String::new(),
                code_expires_at: at,
                at,
            }),
            "CodeSent",
        ),
        (completed(at), "Completed"),
        (failed(1, at), "FailedAttempt"),
        (expired(ExpiryReason::TimedOut, at), "Expired"),
        (
            ChallengeEvent::Delivered(Delivered {
                factor_id: fid(),
                channel: Channel::Sms,
                attempts: 1,
                at,
            }),
            "Delivered",
        ),
        (
            ChallengeEvent::DeliveryFailed(DeliveryFailed {
                factor_id: fid(),
                channel: Channel::Sms,
                attempts: 1,
                error: String::new(),
                at,
            }),
            "DeliveryFailed",
        ),
    ];
    for (event, name) in all {
        assert_eq!(event.event_type(), name);
        // 1.1: a failed attempt may name no factor.
        let version = if name == "FailedAttempt" {
            "1.1"
        } else {
            "1.0"
        };
        assert_eq!(event.event_version(), version);
        let json = serde_json::to_value(&event).unwrap();
        assert!(json.get(name).is_some(), "{json}");
    }
    assert_eq!(Challenge::TYPE, "Challenge");
    assert_eq!(ChallengePurpose::StepUp.as_str(), "STEP_UP");
    assert_eq!(ChallengeStatus::Completed.as_str(), "COMPLETED");
}

fn passkey_login_issued() -> ChallengeEvent {
    ChallengeEvent::PasskeyLoginIssued(PasskeyLoginIssued {
        challenge_id: cid(),
        ceremony: json!({ "ast": {} }),
        discoverable: true,
        expires_at: t0() + secs(300),
        at: t0(),
    })
}

#[tokio::test]
async fn a_passkey_login_has_no_user_until_a_passkey_completes_it_once() {
    let complete = || ChallengeCommand::Complete {
        purpose: ChallengePurpose::PasskeyLogin,
        user_id: uid(),
        factor_id: Some(fid()),
        method: Method::Webauthn,
    };
    framework_at(t0() + secs(10))
        .given(vec![passkey_login_issued()])
        .when_async(complete())
        .await
        .then_expect_events(vec![ChallengeEvent::Completed(Completed {
            factor_id: Some(fid()),
            method: Method::Webauthn,
            at: t0() + secs(10),
        })]);
    let completed = ChallengeEvent::Completed(Completed {
        factor_id: Some(fid()),
        method: Method::Webauthn,
        at: t0() + secs(10),
    });
    framework_at(t0() + secs(20))
        .given(vec![passkey_login_issued(), completed])
        .when_async(complete())
        .await
        .then_expect_error(ChallengeError::AlreadyCompleted);
}

#[tokio::test]
async fn a_passkey_login_past_its_lifetime_expires_instead_of_completing() {
    framework_at(t0() + secs(300))
        .given(vec![passkey_login_issued()])
        .when_async(ChallengeCommand::Complete {
            purpose: ChallengePurpose::PasskeyLogin,
            user_id: uid(),
            factor_id: Some(fid()),
            method: Method::Webauthn,
        })
        .await
        .then_expect_events(vec![ChallengeEvent::Expired(Expired {
            reason: ExpiryReason::TimedOut,
            at: t0() + secs(300),
        })]);
}

#[test]
fn the_passkey_login_event_type_is_frozen() {
    assert_eq!(passkey_login_issued().event_type(), "PasskeyLoginIssued");
    assert_eq!(passkey_login_issued().event_version(), "1.0");
}

/// A challenge after `Issued` of this purpose and state.
fn folded(purpose: ChallengePurpose, state: Option<serde_json::Value>) -> Challenge {
    let mut c = Challenge::default();
    c.apply(ChallengeEvent::Issued(Issued {
        challenge_id: cid(),
        user_id: uid(),
        purpose,
        factor_id: None,
        state,
        expires_at: t0() + secs(300),
        at: t0(),
    }));
    c
}

#[test]
fn a_step_up_shows_the_display_text_of_its_state() {
    let c = folded(
        ChallengePurpose::StepUp,
        Some(json!({"display": "  Pay €1,250 to ACME  ", "cents": 125000})),
    );
    assert_eq!(c.display().as_deref(), Some("Pay €1,250 to ACME"));
}

#[test]
fn a_display_text_is_cut_to_its_limit() {
    let long = "é".repeat(MAX_DISPLAY_CHARS + 10);
    let c = folded(ChallengePurpose::StepUp, Some(json!({ "display": long })));
    assert_eq!(
        c.display().map(|d| d.chars().count()),
        Some(MAX_DISPLAY_CHARS)
    );
}

#[test]
fn no_display_without_a_display_string_or_outside_a_step_up() {
    for state in [
        None,
        Some(state()),
        Some(json!({"display": 42})),
        Some(json!({"display": "   "})),
        Some(json!(["display"])),
    ] {
        assert_eq!(folded(ChallengePurpose::StepUp, state).display(), None);
    }
    let login = folded(ChallengePurpose::Login, Some(json!({"display": "x"})));
    assert_eq!(login.display(), None);
}

#[tokio::test]
async fn an_unknown_credential_is_a_failed_attempt_of_no_factor_and_five_end_the_login() {
    let at = t0() + secs(10);
    let unknown = |n| {
        ChallengeEvent::FailedAttempt(FailedAttempt {
            factor_id: None,
            reason: FailureReason::UnknownCredential,
            failed_attempts: n,
            at,
        })
    };
    framework_at(at)
        .given(vec![passkey_login_issued()])
        .when_async(ChallengeCommand::RecordUnknownCredential)
        .await
        .then_expect_events(vec![unknown(1)]);
    let four: Vec<ChallengeEvent> = std::iter::once(passkey_login_issued())
        .chain((1..=4).map(unknown))
        .collect();
    framework_at(at)
        .given(four.clone())
        .when_async(ChallengeCommand::RecordUnknownCredential)
        .await
        .then_expect_events(vec![
            unknown(5),
            ChallengeEvent::Expired(Expired {
                reason: ExpiryReason::TooManyFailures,
                at,
            }),
        ]);
    // Ended: nothing more is written, however often an attacker answers.
    let mut ended = four;
    ended.push(unknown(5));
    ended.push(ChallengeEvent::Expired(Expired {
        reason: ExpiryReason::TooManyFailures,
        at,
    }));
    framework_at(at)
        .given(ended)
        .when_async(ChallengeCommand::RecordUnknownCredential)
        .await
        .then_expect_error(ChallengeError::Expired);
    // Only a passkey login takes it.
    framework_at(at)
        .given(vec![issued()])
        .when_async(ChallengeCommand::RecordUnknownCredential)
        .await
        .then_expect_error(ChallengeError::WrongPurpose);
    assert_eq!(unknown(1).event_version(), "1.1");
}
