use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use cqrs_es::{Aggregate, DomainEvent, test::TestFramework};
use uuid::Uuid;

use super::*;
use crate::{
    crypto::{CipherError, KeyedHasher, SecretCipher},
    factor::totp::{TotpAlgorithm, TotpParams, code_at_step, step_at},
    ids::{ChallengeId, FactorId, UserId},
    secret::{PassCode, SecretBytes},
    services::{FactorPolicy, FixedClock},
};

/// RFC 6238's SHA1 test key: 20 bytes, the minimum.
const SECRET: &[u8] = b"12345678901234567890";
/// `SECRET` in unpadded base32, as an authenticator app would show it.
const SECRET_BASE32: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
/// `SECRET` in standard base64.
const SECRET_BASE64: &str = "MTIzNDU2Nzg5MDEyMzQ1Njc4OTA";

// ----- fixtures -------------------------------------------------------------------------

/// Enrolment time (20 s into a 30 s step).
fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000, 0).unwrap()
}

/// The time of the commands on an active factor: four steps after enrolment.
fn now() -> DateTime<Utc> {
    t0() + TimeDelta::seconds(120)
}

fn secs(n: i64) -> TimeDelta {
    TimeDelta::seconds(n)
}

fn params() -> TotpParams {
    TotpParams::default()
}

fn step_of(t: DateTime<Utc>) -> u64 {
    step_at(params(), u64::try_from(t.timestamp()).unwrap())
}

fn fid() -> FactorId {
    FactorId(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001))
}

fn other_fid() -> FactorId {
    FactorId(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0002))
}

fn uid() -> UserId {
    UserId::for_login("alice")
}

fn cipher() -> SecretCipher {
    SecretCipher::new([7u8; 32])
}

fn hasher() -> KeyedHasher {
    KeyedHasher::new([9u8; 32])
}

fn policy() -> FactorPolicy {
    FactorPolicy {
        totp_skew_steps: 1,
        lockout_threshold: 5,
        lockout_duration: secs(900),
        enrollment_ttl: TimeDelta::minutes(15),
        ..FactorPolicy::default()
    }
}

fn framework_with(at: DateTime<Utc>, policy: FactorPolicy) -> TestFramework<Factor> {
    TestFramework::with(FactorServices {
        clock: Arc::new(FixedClock::at(at)),
        cipher: cipher(),
        hasher: hasher(),
        policy,
        relying_party: relying_party(),
    })
}

/// The relying party of the WebAuthn tests: `localhost`, one origin.
pub(super) fn relying_party() -> webauthn::RelyingParty {
    webauthn::RelyingParty::new(
        "localhost",
        "Tessera",
        &[webauthn_rs::prelude::Url::parse(ORIGIN).unwrap()],
        std::time::Duration::from_secs(300),
    )
    .unwrap()
}

/// The origin the soft authenticators speak from.
pub(super) const ORIGIN: &str = "http://localhost:8443";

fn framework_at(at: DateTime<Utc>) -> TestFramework<Factor> {
    framework_with(at, policy())
}

/// The code an authenticator shows for `step`.
fn code(step: u64) -> PassCode {
    PassCode::new(code_at_step(params(), SECRET, step))
}

/// A well-formed code that matches no step within three of `around`.
fn wrong_code(around: u64) -> PassCode {
    let near: Vec<String> = (around - 3..=around + 3)
        .map(|s| code_at_step(params(), SECRET, s))
        .collect();
    let wrong = (0..1_000_000)
        .map(|n| format!("{n:06}"))
        .find(|c| !near.contains(c))
        .unwrap();
    PassCode::new(wrong)
}

fn pass(s: &str) -> PassCode {
    PassCode::new(s.to_string())
}

fn enroll_cmd() -> Enroll {
    Enroll {
        webauthn: None,
        factor_id: fid(),
        user_id: uid(),
        factor_type: FactorType::Totp,
        label: Some("Work phone".into()),
        totp: Some(TotpSpec {
            secret: SecretBytes::new(SECRET.to_vec()),
            params: params(),
        }),
        oob: None,
    }
}

/// The `Enrolled` event of `SECRET` under `fid()` at `t0()`, sealed with the test cipher.
fn enrolled_payload() -> Enrolled {
    Enrolled {
        factor_id: fid(),
        user_id: uid(),
        factor_type: FactorType::Totp,
        label: Some("Work phone".into()),
        totp: Some(TotpEnrollment {
            secret: cipher().seal(&SecretBytes::new(SECRET.to_vec()), &fid().to_string()),
            params: params(),
        }),
        oob: None,
        expires_at: t0() + TimeDelta::minutes(15),
        at: t0(),
    }
}

fn enrolled() -> FactorEvent {
    FactorEvent::Enrolled(enrolled_payload())
}

fn activated() -> FactorEvent {
    FactorEvent::Activated(Activated {
        step: Some(step_of(t0())),
        challenge_id: None,
        at: t0(),
    })
}

/// An enrolled and activated factor (activated at `t0()` with the code of its step).
fn active() -> Vec<FactorEvent> {
    vec![enrolled(), activated()]
}

fn verified(step: u64, at: DateTime<Utc>) -> FactorEvent {
    FactorEvent::Verified(Verified {
        step: Some(step),
        challenge_id: None,
        at,
    })
}

fn failed(reason: FailureReason, consecutive_failures: u32, at: DateTime<Utc>) -> FactorEvent {
    FactorEvent::FailedAttempt(FailedAttempt {
        reason,
        counted: reason == FailureReason::WrongCode,
        consecutive_failures,
        challenge_id: None,
        at,
    })
}

fn locked_out(until: DateTime<Utc>, consecutive_failures: u32, at: DateTime<Utc>) -> FactorEvent {
    FactorEvent::LockedOut(LockedOut {
        until,
        consecutive_failures,
        at,
    })
}

fn unlocked(automatic: bool, at: DateTime<Utc>) -> FactorEvent {
    FactorEvent::Unlocked(Unlocked { automatic, at })
}

/// `n` wrong guesses, counted 1..=n, each a second apart, ending before `now()`.
fn wrong_guesses(n: u32) -> Vec<FactorEvent> {
    (1..=n)
        .map(|i| {
            failed(
                FailureReason::WrongCode,
                i,
                now() - secs(60) + secs(i64::from(i)),
            )
        })
        .collect()
}

/// An active factor locked by five wrong guesses until `until`.
fn locked_until(until: DateTime<Utc>) -> Vec<FactorEvent> {
    let locked_at = now() - secs(50);
    let mut events = active();
    events.extend(wrong_guesses(5));
    events.push(locked_out(until, 5, locked_at));
    events
}

fn verify(pass_code: PassCode) -> FactorCommand {
    FactorCommand::Verify {
        pass_code,
        challenge_id: None,
    }
}

fn activate(pass_code: PassCode) -> FactorCommand {
    FactorCommand::Activate { pass_code }
}

// ----- enrolment ------------------------------------------------------------------------

#[tokio::test]
async fn enrol_totp_seals_the_secret_bound_to_the_factor_id_and_sets_the_deadline() {
    let events = framework_at(t0())
        .given_no_previous_events()
        .when_async(FactorCommand::Enroll(enroll_cmd()))
        .await
        .inspect_result()
        .unwrap();
    let [FactorEvent::Enrolled(got)] = events.as_slice() else {
        panic!("expected one Enrolled, got {events:?}");
    };
    let sealed = &got.totp.as_ref().expect("TOTP enrolment").secret;

    // Everything but the random nonce is as expected; the deadline is now + enrollment_ttl.
    let mut expected = enrolled_payload();
    expected.totp.as_mut().unwrap().secret = sealed.clone();
    assert_eq!(*got, expected);
    assert_eq!(got.expires_at, t0() + policy().enrollment_ttl);

    // The secret is never in the event in any readable form.
    let json = serde_json::to_string(&events).unwrap();
    for leak in [
        std::str::from_utf8(SECRET).unwrap(),
        SECRET_BASE32,
        SECRET_BASE64,
    ] {
        assert!(!sealed.ciphertext.contains(leak), "ciphertext holds {leak}");
        assert!(!json.contains(leak), "event JSON holds {leak}");
    }
    assert_eq!(sealed.key_id, cipher().key_id());

    // It opens with the factor id as associated data, and only with it.
    let opened = cipher().open(sealed, &fid().to_string()).unwrap();
    assert_eq!(opened.expose().as_slice(), SECRET);
    assert_eq!(
        cipher().open(sealed, &other_fid().to_string()),
        Err(CipherError::Corrupt)
    );
}

#[tokio::test]
async fn enrolment_deadline_follows_the_configured_ttl() {
    let policy = FactorPolicy {
        enrollment_ttl: TimeDelta::minutes(3),
        ..policy()
    };
    let events = framework_with(t0(), policy)
        .given_no_previous_events()
        .when_async(FactorCommand::Enroll(enroll_cmd()))
        .await
        .inspect_result()
        .unwrap();
    let [FactorEvent::Enrolled(got)] = events.as_slice() else {
        panic!("expected one Enrolled, got {events:?}");
    };
    assert_eq!(got.at, t0());
    assert_eq!(got.expires_at, t0() + TimeDelta::minutes(3));
}

#[tokio::test]
async fn enrolling_twice_is_rejected() {
    framework_at(t0())
        .given(vec![enrolled()])
        .when_async(FactorCommand::Enroll(enroll_cmd()))
        .await
        .then_expect_error(FactorError::AlreadyEnrolled);
    // Also once active or removed: a factor id is never reused.
    let mut removed = active();
    removed.push(FactorEvent::Removed(Removed { at: t0() }));
    for given in [active(), removed] {
        framework_at(now())
            .given(given)
            .when_async(FactorCommand::Enroll(enroll_cmd()))
            .await
            .then_expect_error(FactorError::AlreadyEnrolled);
    }
}

#[tokio::test]
async fn totp_secret_shorter_than_160_bits_is_rejected() {
    let mut cmd = enroll_cmd();
    cmd.totp.as_mut().unwrap().secret = SecretBytes::new(vec![0x42; 19]);
    framework_at(t0())
        .given_no_previous_events()
        .when_async(FactorCommand::Enroll(cmd))
        .await
        .then_expect_error(FactorError::InvalidTotpSpec);

    let mut missing = enroll_cmd();
    missing.totp = None;
    framework_at(t0())
        .given_no_previous_events()
        .when_async(FactorCommand::Enroll(missing))
        .await
        .then_expect_error(FactorError::InvalidTotpSpec);
}

#[tokio::test]
async fn totp_digits_outside_6_to_8_or_period_outside_15_to_120_are_rejected() {
    let with = |digits: u8, period: u32| {
        let mut cmd = enroll_cmd();
        cmd.totp.as_mut().unwrap().params = TotpParams {
            algorithm: TotpAlgorithm::Sha1,
            digits,
            period,
        };
        FactorCommand::Enroll(cmd)
    };
    for (digits, period) in [(5, 30), (9, 30), (0, 30), (6, 14), (6, 121), (6, 0)] {
        framework_at(t0())
            .given_no_previous_events()
            .when_async(with(digits, period))
            .await
            .then_expect_error(FactorError::InvalidTotpSpec);
    }
    // The bounds themselves are accepted.
    for (digits, period) in [(6, 15), (8, 120), (7, 60)] {
        let events = framework_at(t0())
            .given_no_previous_events()
            .when_async(with(digits, period))
            .await
            .inspect_result()
            .unwrap_or_else(|e| panic!("{digits} digits / {period} s rejected: {e:?}"));
        assert!(matches!(events.as_slice(), [FactorEvent::Enrolled(_)]));
    }
}

#[tokio::test]
async fn label_longer_than_128_characters_is_rejected() {
    let with_label = |label: String| {
        let mut cmd = enroll_cmd();
        cmd.label = Some(label);
        FactorCommand::Enroll(cmd)
    };
    for bad in ["x".repeat(129), "é".repeat(129), "Work\nphone".to_string()] {
        framework_at(t0())
            .given_no_previous_events()
            .when_async(with_label(bad))
            .await
            .then_expect_error(FactorError::InvalidLabel);
    }
    // 128 characters are fine, however many bytes they take.
    let events = framework_at(t0())
        .given_no_previous_events()
        .when_async(with_label("é".repeat(128)))
        .await
        .inspect_result()
        .unwrap();
    let [FactorEvent::Enrolled(got)] = events.as_slice() else {
        panic!("expected one Enrolled, got {events:?}");
    };
    assert_eq!(got.label.as_deref(), Some("é".repeat(128).as_str()));
}

#[tokio::test]
async fn webauthn_enrolment_needs_a_registration_ceremony() {
    for with_totp in [false, true] {
        let mut cmd = enroll_cmd();
        cmd.factor_type = FactorType::Webauthn;
        if !with_totp {
            cmd.totp = None;
        }
        framework_at(t0())
            .given_no_previous_events()
            .when_async(FactorCommand::Enroll(cmd))
            .await
            .then_expect_error(FactorError::UnsupportedType);
    }
}

// ----- activation -----------------------------------------------------------------------

#[tokio::test]
async fn activate_with_the_right_code_writes_activated_with_its_step() {
    let at = t0() + secs(60);
    let step = step_of(at);
    framework_at(at)
        .given(vec![enrolled()])
        .when_async(activate(code(step)))
        .await
        .then_expect_events(vec![FactorEvent::Activated(Activated {
            step: Some(step),
            challenge_id: None,
            at,
        })]);
}

#[tokio::test]
async fn activate_with_a_wrong_code_is_a_failed_attempt_not_an_error() {
    let at = t0() + secs(60);
    framework_at(at)
        .given(vec![enrolled()])
        .when_async(activate(wrong_code(step_of(at))))
        .await
        .then_expect_events(vec![failed(FailureReason::WrongCode, 1, at)]);
}

#[tokio::test]
async fn activate_after_the_deadline_expires_the_enrolment() {
    let deadline = t0() + policy().enrollment_ttl;
    // One second before the deadline the right code still activates.
    let before = deadline - secs(1);
    framework_at(before)
        .given(vec![enrolled()])
        .when_async(activate(code(step_of(before))))
        .await
        .then_expect_events(vec![FactorEvent::Activated(Activated {
            step: Some(step_of(before)),
            challenge_id: None,
            at: before,
        })]);
    // After it, even the right code only records the expiry.
    let after = deadline + secs(1);
    let events = framework_at(after)
        .given(vec![enrolled()])
        .when_async(activate(code(step_of(after))))
        .await
        .inspect_result()
        .unwrap();
    assert_eq!(
        events,
        vec![FactorEvent::EnrollmentExpired(EnrollmentExpired {
            at: after
        })]
    );
    assert_eq!(outcome_of(&events), Some(FactorOutcome::Expired));
}

#[tokio::test]
async fn activate_an_expired_factor_is_rejected() {
    let after = t0() + policy().enrollment_ttl + secs(60);
    framework_at(after)
        .given(vec![
            enrolled(),
            FactorEvent::EnrollmentExpired(EnrollmentExpired {
                at: after - secs(30),
            }),
        ])
        .when_async(activate(code(step_of(after))))
        .await
        .then_expect_error(FactorError::EnrollmentExpired);
}

#[tokio::test]
async fn activate_an_active_factor_is_rejected() {
    framework_at(now())
        .given(active())
        .when_async(activate(code(step_of(now()))))
        .await
        .then_expect_error(FactorError::AlreadyActive);
}

#[tokio::test]
async fn activate_an_unknown_factor_is_not_found() {
    framework_at(now())
        .given_no_previous_events()
        .when_async(activate(code(step_of(now()))))
        .await
        .then_expect_error(FactorError::NotFound);
}

#[tokio::test]
async fn activate_a_removed_factor_is_rejected() {
    framework_at(now())
        .given(vec![enrolled(), FactorEvent::Removed(Removed { at: t0() })])
        .when_async(activate(code(step_of(now()))))
        .await
        .then_expect_error(FactorError::Removed);
}

#[tokio::test]
async fn malformed_codes_are_rejected_and_write_nothing() {
    let at = t0() + secs(60);
    for bad in ["12a456", "12345", "1234567", "", " 12345", "１２３４５６"] {
        framework_at(at)
            .given(vec![enrolled()])
            .when_async(activate(pass(bad)))
            .await
            .then_expect_error(FactorError::MalformedPassCode);
        framework_at(now())
            .given(active())
            .when_async(verify(pass(bad)))
            .await
            .then_expect_error(FactorError::MalformedPassCode);
    }
}

/// `code` split in two halves by `separator`, as apps and messages show it.
fn grouped(code: &PassCode, separator: &str) -> PassCode {
    let digits = code.expose();
    let half = digits.len() / 2;
    pass(&format!(
        "{}{separator}{}",
        &digits[..half],
        &digits[half..]
    ))
}

#[tokio::test]
async fn a_totp_code_typed_with_a_space_or_a_dash_is_the_code() {
    let at = t0() + secs(60);
    let step = step_of(at);
    for separator in [" ", "-", "\u{a0}", " - "] {
        framework_at(at)
            .given(vec![enrolled()])
            .when_async(activate(grouped(&code(step), separator)))
            .await
            .then_expect_events(vec![FactorEvent::Activated(Activated {
                step: Some(step),
                challenge_id: None,
                at,
            })]);
        framework_at(now())
            .given(active())
            .when_async(verify(grouped(&code(step_of(now())), separator)))
            .await
            .then_expect_events(vec![verified(step_of(now()), now())]);
    }
}

#[tokio::test]
async fn a_wrong_code_typed_with_a_separator_is_a_counted_guess() {
    let at = t0() + secs(60);
    framework_at(at)
        .given(vec![enrolled()])
        .when_async(activate(grouped(&wrong_code(step_of(at)), " ")))
        .await
        .then_expect_events(vec![failed(FailureReason::WrongCode, 1, at)]);
    // Separators do not make a short or lettered code well-formed.
    for bad in ["123 45", "12a-456", "123_456", "123 4567"] {
        framework_at(now())
            .given(active())
            .when_async(verify(pass(bad)))
            .await
            .then_expect_error(FactorError::MalformedPassCode);
    }
}

#[tokio::test]
async fn an_eight_digit_sha256_factor_takes_eight_digit_codes() {
    let p = TotpParams {
        algorithm: TotpAlgorithm::Sha256,
        digits: 8,
        period: 60,
    };
    let mut payload = enrolled_payload();
    payload.totp.as_mut().unwrap().params = p;
    let at = t0() + secs(60);
    let step = step_at(p, u64::try_from(at.timestamp()).unwrap());
    let right = code_at_step(p, SECRET, step);
    assert_eq!(right.len(), 8);
    framework_at(at)
        .given(vec![FactorEvent::Enrolled(payload.clone())])
        .when_async(activate(pass(&right)))
        .await
        .then_expect_events(vec![FactorEvent::Activated(Activated {
            step: Some(step),
            challenge_id: None,
            at,
        })]);
    // A six-digit code is the wrong shape for it.
    framework_at(at)
        .given(vec![FactorEvent::Enrolled(payload)])
        .when_async(activate(pass(&right[..6])))
        .await
        .then_expect_error(FactorError::MalformedPassCode);
}

// ----- verification ---------------------------------------------------------------------

#[tokio::test]
async fn verify_with_the_right_code_writes_verified_with_its_step() {
    let step = step_of(now());
    framework_at(now())
        .given(active())
        .when_async(verify(code(step)))
        .await
        .then_expect_events(vec![verified(step, now())]);
}

#[tokio::test]
async fn verify_with_a_wrong_code_is_a_failed_attempt() {
    framework_at(now())
        .given(active())
        .when_async(verify(wrong_code(step_of(now()))))
        .await
        .then_expect_events(vec![failed(FailureReason::WrongCode, 1, now())]);
}

#[tokio::test]
async fn the_same_code_twice_is_replayed_and_does_not_count_towards_lockout() {
    let step = step_of(now());
    let mut given = active();
    given.push(verified(step, now() - secs(5)));
    given.push(failed(FailureReason::WrongCode, 1, now() - secs(3)));
    let events = framework_at(now())
        .given(given)
        .when_async(verify(code(step)))
        .await
        .inspect_result()
        .unwrap();
    assert_eq!(events, vec![failed(FailureReason::Replayed, 1, now())]);
    assert_eq!(outcome_of(&events), Some(FactorOutcome::PasscodeReplayed));
}

#[tokio::test]
async fn the_activation_code_cannot_be_replayed_to_verify() {
    framework_at(t0() + secs(5))
        .given(active())
        .when_async(verify(code(step_of(t0()))))
        .await
        .then_expect_events(vec![failed(FailureReason::Replayed, 0, t0() + secs(5))]);
}

#[tokio::test]
async fn a_step_earlier_than_the_last_used_is_replayed() {
    let step = step_of(now());
    let mut given = active();
    // The last success used the next step (the client's clock ran a step ahead).
    given.push(verified(step + 1, now() - secs(2)));
    framework_at(now())
        .given(given.clone())
        .when_async(verify(code(step)))
        .await
        .then_expect_events(vec![failed(FailureReason::Replayed, 0, now())]);
    framework_at(now())
        .given(given)
        .when_async(verify(code(step - 1)))
        .await
        .then_expect_events(vec![failed(FailureReason::Replayed, 0, now())]);
}

#[tokio::test]
async fn default_skew_accepts_one_step_either_side_and_rejects_two() {
    let step = step_of(now());
    for accepted in [step - 1, step + 1] {
        framework_at(now())
            .given(active())
            .when_async(verify(code(accepted)))
            .await
            .then_expect_events(vec![verified(accepted, now())]);
    }
    for rejected in [step - 2, step + 2] {
        framework_at(now())
            .given(active())
            .when_async(verify(code(rejected)))
            .await
            .then_expect_events(vec![failed(FailureReason::WrongCode, 1, now())]);
    }
}

#[tokio::test]
async fn zero_skew_accepts_only_the_current_step() {
    let zero = || FactorPolicy {
        totp_skew_steps: 0,
        ..policy()
    };
    let step = step_of(now());
    framework_with(now(), zero())
        .given(active())
        .when_async(verify(code(step)))
        .await
        .then_expect_events(vec![verified(step, now())]);
    for rejected in [step - 1, step + 1] {
        framework_with(now(), zero())
            .given(active())
            .when_async(verify(code(rejected)))
            .await
            .then_expect_events(vec![failed(FailureReason::WrongCode, 1, now())]);
    }
}

#[tokio::test]
async fn verify_a_pending_or_expired_factor_is_not_active() {
    framework_at(t0() + secs(60))
        .given(vec![enrolled()])
        .when_async(verify(code(step_of(t0() + secs(60)))))
        .await
        .then_expect_error(FactorError::NotActive);
    let after = t0() + TimeDelta::minutes(20);
    framework_at(after)
        .given(vec![
            enrolled(),
            FactorEvent::EnrollmentExpired(EnrollmentExpired { at: after }),
        ])
        .when_async(verify(code(step_of(after))))
        .await
        .then_expect_error(FactorError::NotActive);
}

#[tokio::test]
async fn verify_a_removed_factor_is_rejected() {
    let mut given = active();
    given.push(FactorEvent::Removed(Removed {
        at: now() - secs(1),
    }));
    framework_at(now())
        .given(given)
        .when_async(verify(code(step_of(now()))))
        .await
        .then_expect_error(FactorError::Removed);
}

#[tokio::test]
async fn verify_an_unknown_factor_is_not_found() {
    framework_at(now())
        .given_no_previous_events()
        .when_async(verify(code(step_of(now()))))
        .await
        .then_expect_error(FactorError::NotFound);
}

#[tokio::test]
async fn a_secret_sealed_for_another_factor_cannot_be_opened() {
    let mut payload = enrolled_payload();
    payload.totp.as_mut().unwrap().secret =
        cipher().seal(&SecretBytes::new(SECRET.to_vec()), &other_fid().to_string());
    framework_at(now())
        .given(vec![FactorEvent::Enrolled(payload), activated()])
        .when_async(verify(code(step_of(now()))))
        .await
        .then_expect_error(FactorError::SecretUnavailable);
}

// ----- lockout --------------------------------------------------------------------------

#[tokio::test]
async fn the_wrong_code_that_reaches_the_threshold_locks_the_factor() {
    let mut given = active();
    given.extend(wrong_guesses(4));
    let events = framework_at(now())
        .given(given)
        .when_async(verify(wrong_code(step_of(now()))))
        .await
        .inspect_result()
        .unwrap();
    assert_eq!(
        events,
        vec![
            failed(FailureReason::WrongCode, 5, now()),
            locked_out(now() + policy().lockout_duration, 5, now()),
        ]
    );
    assert_eq!(outcome_of(&events), Some(FactorOutcome::Rejected));
}

#[tokio::test]
async fn threshold_and_lockout_duration_come_from_the_policy() {
    let policy = FactorPolicy {
        lockout_threshold: 3,
        lockout_duration: secs(60),
        ..policy()
    };
    let mut given = active();
    given.extend(wrong_guesses(2));
    framework_with(now(), policy)
        .given(given)
        .when_async(verify(wrong_code(step_of(now()))))
        .await
        .then_expect_events(vec![
            failed(FailureReason::WrongCode, 3, now()),
            locked_out(now() + secs(60), 3, now()),
        ]);
}

#[tokio::test]
async fn fewer_failures_than_the_threshold_do_not_lock() {
    let mut given = active();
    given.extend(wrong_guesses(3));
    framework_at(now())
        .given(given)
        .when_async(verify(wrong_code(step_of(now()))))
        .await
        .then_expect_events(vec![failed(FailureReason::WrongCode, 4, now())]);
}

#[tokio::test]
async fn while_locked_even_the_right_code_is_refused_unchecked() {
    let events = framework_at(now())
        .given(locked_until(now() + secs(60)))
        .when_async(verify(code(step_of(now()))))
        .await
        .inspect_result()
        .unwrap();
    assert_eq!(events, vec![failed(FailureReason::Locked, 5, now())]);
    assert_eq!(outcome_of(&events), Some(FactorOutcome::LockedOut));

    // A wrong code while locked is not counted either.
    framework_at(now())
        .given(locked_until(now() + secs(60)))
        .when_async(verify(wrong_code(step_of(now()))))
        .await
        .then_expect_events(vec![failed(FailureReason::Locked, 5, now())]);
}

#[tokio::test]
async fn when_the_lockout_runs_out_verify_unlocks_then_checks_the_code() {
    let step = step_of(now());
    framework_at(now())
        .given(locked_until(now() - secs(1)))
        .when_async(verify(code(step)))
        .await
        .then_expect_events(vec![unlocked(true, now()), verified(step, now())]);
    // The count starts again after the automatic unlock.
    framework_at(now())
        .given(locked_until(now() - secs(1)))
        .when_async(verify(wrong_code(step)))
        .await
        .then_expect_events(vec![
            unlocked(true, now()),
            failed(FailureReason::WrongCode, 1, now()),
        ]);
}

#[tokio::test]
async fn a_success_resets_the_consecutive_failure_count() {
    let mut given = active();
    given.extend(wrong_guesses(4));
    given.push(verified(step_of(now()) - 1, now() - secs(10)));
    framework_at(now())
        .given(given)
        .when_async(verify(wrong_code(step_of(now()))))
        .await
        .then_expect_events(vec![failed(FailureReason::WrongCode, 1, now())]);
}

#[tokio::test]
async fn admin_unlock_lifts_a_lockout_and_resets_the_count() {
    framework_at(now())
        .given(locked_until(now() + secs(60)))
        .when_async(FactorCommand::Unlock)
        .await
        .then_expect_events(vec![unlocked(false, now())]);

    let mut given = locked_until(now() + secs(60));
    given.push(unlocked(false, now() - secs(1)));
    framework_at(now())
        .given(given.clone())
        .when_async(verify(wrong_code(step_of(now()))))
        .await
        .then_expect_events(vec![failed(FailureReason::WrongCode, 1, now())]);
    framework_at(now())
        .given(given)
        .when_async(verify(code(step_of(now()))))
        .await
        .then_expect_events(vec![verified(step_of(now()), now())]);
}

#[tokio::test]
async fn admin_unlock_of_an_unlocked_factor_is_rejected() {
    framework_at(now())
        .given(active())
        .when_async(FactorCommand::Unlock)
        .await
        .then_expect_error(FactorError::NotLocked);
    let mut given = locked_until(now() + secs(60));
    given.push(unlocked(false, now() - secs(1)));
    framework_at(now())
        .given(given)
        .when_async(FactorCommand::Unlock)
        .await
        .then_expect_error(FactorError::NotLocked);
}

// ----- removal --------------------------------------------------------------------------

#[tokio::test]
async fn remove_writes_removed() {
    framework_at(now())
        .given(active())
        .when_async(FactorCommand::Remove)
        .await
        .then_expect_events(vec![FactorEvent::Removed(Removed { at: now() })]);
    // A pending, a locked or an expired factor can be removed too.
    let mut expired = vec![enrolled()];
    expired.push(FactorEvent::EnrollmentExpired(EnrollmentExpired {
        at: now(),
    }));
    for given in [vec![enrolled()], locked_until(now() + secs(60)), expired] {
        framework_at(now())
            .given(given)
            .when_async(FactorCommand::Remove)
            .await
            .then_expect_events(vec![FactorEvent::Removed(Removed { at: now() })]);
    }
}

#[tokio::test]
async fn remove_twice_is_rejected() {
    let mut given = active();
    given.push(FactorEvent::Removed(Removed {
        at: now() - secs(1),
    }));
    framework_at(now())
        .given(given.clone())
        .when_async(FactorCommand::Remove)
        .await
        .then_expect_error(FactorError::Removed);
    framework_at(now())
        .given(given)
        .when_async(FactorCommand::Unlock)
        .await
        .then_expect_error(FactorError::Removed);
}

#[tokio::test]
async fn remove_or_unlock_an_unknown_factor_is_not_found() {
    for cmd in [FactorCommand::Remove, FactorCommand::Unlock] {
        framework_at(now())
            .given_no_previous_events()
            .when_async(cmd)
            .await
            .then_expect_error(FactorError::NotFound);
    }
}

// ----- outcome and status ---------------------------------------------------------------

#[test]
fn outcome_of_maps_each_event_list() {
    let at = now();
    let cases = [
        (
            vec![FactorEvent::Activated(Activated {
                step: Some(1),
                challenge_id: None,
                at,
            })],
            Some(FactorOutcome::Success),
        ),
        (vec![verified(1, at)], Some(FactorOutcome::Success)),
        (
            vec![unlocked(true, at), verified(1, at)],
            Some(FactorOutcome::Success),
        ),
        (
            vec![failed(FailureReason::WrongCode, 1, at)],
            Some(FactorOutcome::Rejected),
        ),
        (
            vec![
                failed(FailureReason::WrongCode, 5, at),
                locked_out(at + secs(900), 5, at),
            ],
            Some(FactorOutcome::Rejected),
        ),
        (
            vec![unlocked(true, at), failed(FailureReason::WrongCode, 1, at)],
            Some(FactorOutcome::Rejected),
        ),
        (
            vec![failed(FailureReason::Replayed, 0, at)],
            Some(FactorOutcome::PasscodeReplayed),
        ),
        (
            vec![failed(FailureReason::Locked, 5, at)],
            Some(FactorOutcome::LockedOut),
        ),
        (
            vec![FactorEvent::EnrollmentExpired(EnrollmentExpired { at })],
            Some(FactorOutcome::Expired),
        ),
        (
            vec![failed(FailureReason::CodeExpired, 0, at)],
            Some(FactorOutcome::Expired),
        ),
        (
            vec![failed(FailureReason::NoActiveCode, 0, at)],
            Some(FactorOutcome::ChallengeRequired),
        ),
        (
            vec![failed(FailureReason::AttemptsExhausted, 0, at)],
            Some(FactorOutcome::ChallengeRequired),
        ),
        (vec![], None),
        (vec![FactorEvent::Removed(Removed { at })], None),
        (vec![unlocked(false, at)], None),
        (vec![enrolled()], None),
    ];
    for (events, expected) in cases {
        assert_eq!(outcome_of(&events), expected, "{events:?}");
    }
}

#[test]
fn effective_status_reads_the_deadlines_at_now() {
    use FactorStatus as S;
    let n = now();
    let cases = [
        // Locked with time left.
        (S::Active, Some(n + secs(1)), None, S::LockedOut),
        (S::LockedOut, Some(n + secs(1)), None, S::LockedOut),
        // The lock's time is up (or there is none).
        (S::Active, Some(n), None, S::Active),
        (S::Active, Some(n - secs(1)), None, S::Active),
        (S::LockedOut, Some(n - secs(1)), None, S::Active),
        (S::LockedOut, None, None, S::Active),
        (S::Active, None, None, S::Active),
        // Pending past its deadline shows expired; before it, pending.
        (S::PendingActivation, None, Some(n - secs(1)), S::Expired),
        (S::PendingActivation, None, Some(n), S::Expired),
        (
            S::PendingActivation,
            None,
            Some(n + secs(1)),
            S::PendingActivation,
        ),
        (S::PendingActivation, None, None, S::PendingActivation),
        // Terminal states stay as stored.
        (S::Expired, None, Some(n + secs(1)), S::Expired),
        (S::Removed, Some(n + secs(1)), None, S::Removed),
    ];
    for (stored, locked, expires, expected) in cases {
        assert_eq!(
            effective_status(stored, locked, expires, n),
            expected,
            "{stored:?} locked {locked:?} expires {expires:?}"
        );
    }
}

#[test]
fn status_at_folds_the_events_and_the_clock() {
    let fold = |events: Vec<FactorEvent>| {
        let mut factor = Factor::default();
        for e in events {
            factor.apply(e);
        }
        factor
    };
    let pending = fold(vec![enrolled()]);
    assert_eq!(pending.status_at(t0()), FactorStatus::PendingActivation);
    assert_eq!(
        pending.status_at(t0() + TimeDelta::minutes(15)),
        FactorStatus::Expired
    );
    assert_eq!(fold(active()).status_at(now()), FactorStatus::Active);
    let locked = fold(locked_until(now() + secs(60)));
    assert_eq!(locked.status_at(now()), FactorStatus::LockedOut);
    assert_eq!(locked.status_at(now() + secs(60)), FactorStatus::Active);
    let mut removed = active();
    removed.push(FactorEvent::Removed(Removed { at: now() }));
    assert_eq!(fold(removed).status_at(now()), FactorStatus::Removed);
}

// ----- frozen names ---------------------------------------------------------------------

#[test]
fn event_type_strings_are_frozen() {
    let at = t0();
    let all = [
        (enrolled(), "Enrolled", "1.0"),
        (activated(), "Activated", "1.0"),
        (verified(1, at), "Verified", "1.0"),
        (
            failed(FailureReason::WrongCode, 1, at),
            "FailedAttempt",
            "2.0",
        ),
        (locked_out(at, 5, at), "LockedOut", "1.0"),
        (unlocked(true, at), "Unlocked", "1.0"),
        (FactorEvent::Removed(Removed { at }), "Removed", "1.0"),
        (
            FactorEvent::EnrollmentExpired(EnrollmentExpired { at }),
            "EnrollmentExpired",
            "1.0",
        ),
        (
            FactorEvent::CodeIssued(CodeIssued {
                challenge_id: ChallengeId(Uuid::nil()),
                standalone: true,
                code_hash: String::new(),
                expires_at: at,
                at,
            }),
            "CodeIssued",
            "1.0",
        ),
    ];
    for (event, name, version) in all {
        assert_eq!(event.event_type(), name);
        assert_eq!(event.event_version(), version);
        // The variant name is also the serde tag, so the stored payload agrees.
        let json = serde_json::to_value(&event).unwrap();
        assert!(json.get(name).is_some(), "{json}");
    }
    assert_eq!(Factor::TYPE, "Factor");
}

// ----- versions ---------------------------------------------------------------------------

#[test]
fn failed_attempt_1_0_upcasts_to_2_0_on_both_paths() {
    use cqrs_es::persist::SerializedEvent;

    use crate::versioning::{decode, upcasters};

    let v1 = |reason: &str| {
        serde_json::json!({ "FailedAttempt": {
            "reason": reason, "consecutive_failures": 2, "at": "2026-01-01T00:00:00Z" } })
    };
    // Without the upcaster, 1.0 does not decode as the current shape.
    assert!(serde_json::from_value::<FactorEvent>(v1("WRONG_CODE")).is_err());
    let at: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
    for (reason, kind, counted) in [
        ("WRONG_CODE", FailureReason::WrongCode, true),
        ("REPLAYED", FailureReason::Replayed, false),
        ("LOCKED", FailureReason::Locked, false),
    ] {
        let expected = FactorEvent::FailedAttempt(FailedAttempt {
            reason: kind,
            counted,
            consecutive_failures: 2,
            challenge_id: None,
            at,
        });
        // The read side's path.
        let read: FactorEvent = decode("FailedAttempt", "1.0", v1(reason)).unwrap();
        assert_eq!(read, expected);
        // The write side's path (cqrs-es upcaster).
        let stored = SerializedEvent::new(
            "f".into(),
            3,
            "Factor".into(),
            "FailedAttempt".into(),
            "1.0".into(),
            v1(reason),
            serde_json::json!({}),
        );
        let ups = upcasters::<FactorEvent>();
        assert!(ups[0].can_upcast("FailedAttempt", "1.0"));
        assert!(!ups[0].can_upcast("FailedAttempt", "2.0"));
        assert!(!ups[0].can_upcast("Verified", "1.0"));
        let upcast = ups[0].upcast(stored);
        assert_eq!(upcast.event_version, "2.0");
        assert_eq!(
            serde_json::from_value::<FactorEvent>(upcast.payload).unwrap(),
            expected
        );
    }
    // The current version decodes untouched.
    let current = serde_json::to_value(failed(FailureReason::Replayed, 0, at)).unwrap();
    assert_eq!(
        decode::<FactorEvent>("FailedAttempt", "2.0", current).unwrap(),
        failed(FailureReason::Replayed, 0, at)
    );
}

// ----- SMS and e-mail codes -------------------------------------------------------------

const CODE: &str = "123456";
const PHONE: &str = "+14155550100";

fn chal(n: u128) -> ChallengeId {
    ChallengeId(Uuid::from_u128(
        0x0190_0000_0000_7000_9000_0000_0000_0000 + n,
    ))
}

fn new_code(challenge: ChallengeId, standalone: bool, code: &str) -> NewCode {
    NewCode {
        challenge_id: challenge,
        standalone,
        code: pass(code),
    }
}

fn sms_enroll_cmd(destination: &str) -> Enroll {
    Enroll {
        webauthn: None,
        factor_id: fid(),
        user_id: uid(),
        factor_type: FactorType::Sms,
        label: None,
        totp: None,
        oob: Some(OobSpec {
            destination: destination.into(),
            first_code: new_code(chal(1), true, CODE),
        }),
    }
}

/// The hash the aggregate stores for `code` of `challenge` on `fid()`.
fn code_hash(challenge: ChallengeId, code: &str) -> String {
    hasher().hash("oob-code", &format!("{}/{challenge}/{code}", fid()))
}

fn code_issued(
    challenge: ChallengeId,
    standalone: bool,
    code: &str,
    at: DateTime<Utc>,
) -> FactorEvent {
    FactorEvent::CodeIssued(CodeIssued {
        challenge_id: challenge,
        standalone,
        code_hash: code_hash(challenge, code),
        expires_at: at + TimeDelta::minutes(5),
        at,
    })
}

fn sms_enrolled() -> FactorEvent {
    FactorEvent::Enrolled(Enrolled {
        factor_id: fid(),
        user_id: uid(),
        factor_type: FactorType::Sms,
        label: None,
        totp: None,
        oob: Some(OobEnrollment {
            destination: PHONE.into(),
        }),
        expires_at: t0() + TimeDelta::minutes(15),
        at: t0(),
    })
}

/// An SMS factor enrolled at `t0()` with the activation code `CODE` for `chal(1)`.
fn sms_pending() -> Vec<FactorEvent> {
    vec![sms_enrolled(), code_issued(chal(1), true, CODE, t0())]
}

/// An SMS factor activated at `t0() + 10 s` with `chal(1)`'s code.
fn sms_active() -> Vec<FactorEvent> {
    let mut events = sms_pending();
    events.push(FactorEvent::Activated(Activated {
        step: None,
        challenge_id: Some(chal(1)),
        at: t0() + secs(10),
    }));
    events
}

fn oob_failed(
    reason: FailureReason,
    n: u32,
    challenge: ChallengeId,
    at: DateTime<Utc>,
) -> FactorEvent {
    FactorEvent::FailedAttempt(FailedAttempt {
        reason,
        counted: reason == FailureReason::WrongCode,
        consecutive_failures: n,
        challenge_id: Some(challenge),
        at,
    })
}

fn oob_verified(challenge: ChallengeId, at: DateTime<Utc>) -> FactorEvent {
    FactorEvent::Verified(Verified {
        step: None,
        challenge_id: Some(challenge),
        at,
    })
}

fn verify_for(code: &str, challenge: Option<ChallengeId>) -> FactorCommand {
    FactorCommand::Verify {
        pass_code: pass(code),
        challenge_id: challenge,
    }
}

#[tokio::test]
async fn enrol_sms_stores_the_number_and_only_a_keyed_hash_of_the_activation_code() {
    let events = framework_at(t0())
        .given_no_previous_events()
        .when_async(FactorCommand::Enroll(sms_enroll_cmd(" +14155550100 ")))
        .await
        .inspect_result()
        .unwrap();
    assert_eq!(events, sms_pending());
    let json = serde_json::to_string(&events).unwrap();
    assert!(!json.contains(CODE), "{json}");
    assert!(!format!("{events:?}").contains(&code_hash(chal(1), CODE)));
    // The hash is bound to the factor and the challenge: the same code elsewhere differs.
    assert_ne!(code_hash(chal(1), CODE), code_hash(chal(2), CODE));
    assert_ne!(
        code_hash(chal(1), CODE),
        hasher().hash("oob-code", &format!("{}/{}/{CODE}", other_fid(), chal(1)))
    );
}

#[tokio::test]
async fn enrol_email_takes_a_valid_address() {
    let mut cmd = sms_enroll_cmd("alice@example.com");
    cmd.factor_type = FactorType::Email;
    let events = framework_at(t0())
        .given_no_previous_events()
        .when_async(FactorCommand::Enroll(cmd))
        .await
        .inspect_result()
        .unwrap();
    let FactorEvent::Enrolled(e) = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!(e.factor_type, FactorType::Email);
    assert_eq!(e.oob.as_ref().unwrap().destination, "alice@example.com");
    assert!(matches!(events[1], FactorEvent::CodeIssued(_)));
}

#[tokio::test]
async fn enrol_sms_or_email_with_a_bad_destination_or_code_is_rejected() {
    let cases: Vec<(FactorType, Option<&str>, &str, FactorError)> = vec![
        (
            FactorType::Sms,
            Some("4155550100"),
            CODE,
            FactorError::InvalidPhoneNumber,
        ),
        (
            FactorType::Sms,
            Some("+1 415 555 0100"),
            CODE,
            FactorError::InvalidPhoneNumber,
        ),
        (
            FactorType::Sms,
            Some("alice@example.com"),
            CODE,
            FactorError::InvalidPhoneNumber,
        ),
        (FactorType::Sms, None, CODE, FactorError::InvalidPhoneNumber),
        (
            FactorType::Email,
            Some("+14155550100"),
            CODE,
            FactorError::InvalidEmail,
        ),
        (
            FactorType::Email,
            Some("alice@nodot"),
            CODE,
            FactorError::InvalidEmail,
        ),
        (FactorType::Email, None, CODE, FactorError::InvalidEmail),
        (
            FactorType::Sms,
            Some(PHONE),
            "12345",
            FactorError::MalformedPassCode,
        ),
        (
            FactorType::Sms,
            Some(PHONE),
            "12345a",
            FactorError::MalformedPassCode,
        ),
    ];
    for (factor_type, destination, code, expected) in cases {
        let mut cmd = sms_enroll_cmd(destination.unwrap_or(""));
        cmd.factor_type = factor_type;
        if destination.is_none() {
            cmd.oob = None;
        } else if let Some(oob) = &mut cmd.oob {
            oob.first_code.code = pass(code);
        }
        framework_at(t0())
            .given_no_previous_events()
            .when_async(FactorCommand::Enroll(cmd))
            .await
            .then_expect_error(expected);
    }
}

#[tokio::test]
async fn activate_sms_with_the_sent_code() {
    let at = t0() + secs(10);
    framework_at(at)
        .given(sms_pending())
        .when_async(activate(pass(CODE)))
        .await
        .then_expect_events(vec![FactorEvent::Activated(Activated {
            step: None,
            challenge_id: Some(chal(1)),
            at,
        })]);
}

#[tokio::test]
async fn an_sms_code_typed_with_a_space_or_a_dash_is_the_code() {
    let at = t0() + secs(10);
    for typed in ["123 456", "123-456", " 12 34 56 "] {
        framework_at(at)
            .given(sms_pending())
            .when_async(activate(pass(typed)))
            .await
            .then_expect_events(vec![FactorEvent::Activated(Activated {
                step: None,
                challenge_id: Some(chal(1)),
                at,
            })]);
    }
    let mut given = sms_active();
    let sent = t0() + secs(60);
    given.push(code_issued(chal(2), true, "222222", sent));
    framework_at(sent + secs(5))
        .given(given)
        .when_async(verify_for("222-222", None))
        .await
        .then_expect_events(vec![oob_verified(chal(2), sent + secs(5))]);
}

#[tokio::test]
async fn a_wrong_sms_code_is_a_counted_failure_bound_to_its_challenge() {
    let at = t0() + secs(10);
    framework_at(at)
        .given(sms_pending())
        .when_async(activate(pass("654321")))
        .await
        .then_expect_events(vec![oob_failed(FailureReason::WrongCode, 1, chal(1), at)]);
}

#[tokio::test]
async fn a_used_code_is_replayed_and_a_wrong_one_after_use_checks_nothing() {
    let at = t0() + secs(20);
    framework_at(at)
        .given(sms_active())
        .when_async(verify_for(CODE, None))
        .await
        .then_expect_events(vec![oob_failed(FailureReason::Replayed, 0, chal(1), at)]);
    framework_at(at)
        .given(sms_active())
        .when_async(verify_for("654321", None))
        .await
        .then_expect_events(vec![oob_failed(
            FailureReason::NoActiveCode,
            0,
            chal(1),
            at,
        )]);
}

#[tokio::test]
async fn a_code_expires_after_five_minutes_unchecked_and_uncounted() {
    let mut given = sms_active();
    let sent = t0() + secs(60);
    given.push(code_issued(chal(2), true, "222222", sent));
    // One second before the end the code works.
    let before = sent + TimeDelta::minutes(5) - secs(1);
    framework_at(before)
        .given(given.clone())
        .when_async(verify_for("222222", None))
        .await
        .then_expect_events(vec![oob_verified(chal(2), before)]);
    // At the end even the right code is refused, and not counted as a guess.
    let at = sent + TimeDelta::minutes(5);
    framework_at(at)
        .given(given)
        .when_async(verify_for("222222", None))
        .await
        .then_expect_events(vec![oob_failed(FailureReason::CodeExpired, 0, chal(2), at)]);
}

#[tokio::test]
async fn five_wrong_tries_kill_a_code_the_sixth_is_not_checked() {
    // A lockout threshold above the per-code limit, so the code's own limit shows.
    let policy = FactorPolicy {
        lockout_threshold: 10,
        ..policy()
    };
    let mut given = sms_active();
    given.push(code_issued(chal(2), true, "222222", t0() + secs(60)));
    for n in 1..=5 {
        given.push(oob_failed(
            FailureReason::WrongCode,
            n,
            chal(2),
            t0() + secs(60 + i64::from(n)),
        ));
    }
    let at = t0() + secs(90);
    framework_with(at, policy)
        .given(given)
        .when_async(verify_for("222222", None))
        .await
        .then_expect_events(vec![oob_failed(
            FailureReason::AttemptsExhausted,
            5,
            chal(2),
            at,
        )]);
}

#[tokio::test]
async fn the_fifth_wrong_sms_code_locks_the_factor_like_a_totp_guess() {
    let mut given = sms_active();
    given.push(code_issued(chal(2), true, "222222", t0() + secs(60)));
    for n in 1..=4 {
        given.push(oob_failed(
            FailureReason::WrongCode,
            n,
            chal(2),
            t0() + secs(60 + i64::from(n)),
        ));
    }
    let at = t0() + secs(90);
    framework_at(at)
        .given(given.clone())
        .when_async(verify_for("999999", None))
        .await
        .then_expect_events(vec![
            oob_failed(FailureReason::WrongCode, 5, chal(2), at),
            locked_out(at + secs(900), 5, at),
        ]);
    // Locked: the right code is not even looked at.
    given.push(oob_failed(FailureReason::WrongCode, 5, chal(2), at));
    given.push(locked_out(at + secs(900), 5, at));
    framework_at(at + secs(1))
        .given(given)
        .when_async(verify_for("222222", None))
        .await
        .then_expect_events(vec![FactorEvent::FailedAttempt(FailedAttempt {
            reason: FailureReason::Locked,
            counted: false,
            consecutive_failures: 5,
            challenge_id: None,
            at: at + secs(1),
        })]);
}

#[tokio::test]
async fn a_code_answers_only_its_own_challenge() {
    let mut given = sms_active();
    // Sent for a step-up challenge: not usable by factor id alone, nor for another challenge.
    given.push(code_issued(chal(7), false, "777777", t0() + secs(60)));
    let at = t0() + secs(70);
    framework_at(at)
        .given(given.clone())
        .when_async(verify_for("777777", None))
        .await
        .then_expect_events(vec![FactorEvent::FailedAttempt(FailedAttempt {
            reason: FailureReason::NoActiveCode,
            counted: false,
            consecutive_failures: 0,
            challenge_id: None,
            at,
        })]);
    framework_at(at)
        .given(given.clone())
        .when_async(verify_for("777777", Some(chal(8))))
        .await
        .then_expect_events(vec![oob_failed(
            FailureReason::NoActiveCode,
            0,
            chal(8),
            at,
        )]);
    framework_at(at)
        .given(given)
        .when_async(verify_for("777777", Some(chal(7))))
        .await
        .then_expect_events(vec![oob_verified(chal(7), at)]);
}

#[tokio::test]
async fn a_new_code_replaces_the_previous_one() {
    let mut given = sms_active();
    given.push(code_issued(chal(2), true, "222222", t0() + secs(60)));
    given.push(code_issued(chal(3), true, "333333", t0() + secs(100)));
    let at = t0() + secs(110);
    framework_at(at)
        .given(given.clone())
        .when_async(verify_for("222222", None))
        .await
        .then_expect_events(vec![oob_failed(FailureReason::WrongCode, 1, chal(3), at)]);
    framework_at(at)
        .given(given)
        .when_async(verify_for("333333", None))
        .await
        .then_expect_events(vec![oob_verified(chal(3), at)]);
}

#[tokio::test]
async fn verifying_an_sms_factor_before_any_code_asks_for_a_challenge() {
    let at = t0() + secs(20);
    framework_at(at)
        .given(vec![
            sms_enrolled(),
            FactorEvent::Activated(Activated {
                step: None,
                challenge_id: Some(chal(1)),
                at: t0() + secs(10),
            }),
        ])
        .when_async(verify_for(CODE, None))
        .await
        .then_expect_events(vec![FactorEvent::FailedAttempt(FailedAttempt {
            reason: FailureReason::NoActiveCode,
            counted: false,
            consecutive_failures: 0,
            challenge_id: None,
            at,
        })]);
}

#[tokio::test]
async fn send_code_writes_a_fresh_hash_and_is_limited_per_factor() {
    let at = t0() + secs(40);
    framework_at(at)
        .given(sms_active())
        .when_async(FactorCommand::SendCode(new_code(chal(2), true, "222222")))
        .await
        .then_expect_events(vec![code_issued(chal(2), true, "222222", at)]);
    // The activation code went out at t0: 29 s later is too soon, 30 s is fine.
    framework_at(t0() + secs(29))
        .given(sms_active())
        .when_async(FactorCommand::SendCode(new_code(chal(2), true, "222222")))
        .await
        .then_expect_error(FactorError::ResendTooSoon {
            retry_after_seconds: 1,
        });
    // Ten codes in the last hour (t0 and nine more, a minute apart): the eleventh waits
    // until the first is an hour old.
    let mut given = sms_active();
    for n in 1..=9u128 {
        given.push(code_issued(
            chal(10 + n),
            true,
            "222222",
            t0() + secs(60 * n as i64),
        ));
    }
    framework_at(t0() + TimeDelta::minutes(59))
        .given(given.clone())
        .when_async(FactorCommand::SendCode(new_code(chal(30), true, "333333")))
        .await
        .then_expect_error(FactorError::TooManyCodes {
            retry_after_seconds: 60,
        });
    let later = t0() + TimeDelta::minutes(60) + secs(1);
    framework_at(later)
        .given(given)
        .when_async(FactorCommand::SendCode(new_code(chal(30), true, "333333")))
        .await
        .then_expect_events(vec![code_issued(chal(30), true, "333333", later)]);
}

#[tokio::test]
async fn send_code_is_refused_in_the_wrong_state_or_type() {
    let at = t0() + secs(60);
    let cmd = || FactorCommand::SendCode(new_code(chal(2), true, "222222"));
    let mut removed = sms_active();
    removed.push(FactorEvent::Removed(Removed {
        at: t0() + secs(20),
    }));
    let mut locked = sms_active();
    locked.push(locked_out(at + secs(100), 5, t0() + secs(30)));
    let cases: Vec<(Vec<FactorEvent>, DateTime<Utc>, FactorError)> = vec![
        (vec![], at, FactorError::NotFound),
        (active(), at, FactorError::CodesNotSupported),
        (removed, at, FactorError::Removed),
        (locked, at, FactorError::LockedOut),
        (
            sms_pending(),
            t0() + TimeDelta::minutes(15),
            FactorError::EnrollmentExpired,
        ),
    ];
    for (given, when, expected) in cases {
        framework_at(when)
            .given(given)
            .when_async(cmd())
            .await
            .then_expect_error(expected);
    }
    framework_at(at)
        .given(sms_active())
        .when_async(FactorCommand::SendCode(new_code(chal(2), true, "22222")))
        .await
        .then_expect_error(FactorError::MalformedPassCode);
}

#[tokio::test]
async fn a_pending_sms_factor_can_be_sent_a_new_activation_code() {
    let at = t0() + secs(60);
    framework_at(at)
        .given(sms_pending())
        .when_async(FactorCommand::SendCode(new_code(chal(2), true, "222222")))
        .await
        .then_expect_events(vec![code_issued(chal(2), true, "222222", at)]);
}

#[tokio::test]
async fn a_totp_proof_for_a_challenge_names_it() {
    let step = step_of(now());
    framework_at(now())
        .given(active())
        .when_async(FactorCommand::Verify {
            pass_code: code(step),
            challenge_id: Some(chal(5)),
        })
        .await
        .then_expect_events(vec![FactorEvent::Verified(Verified {
            step: Some(step),
            challenge_id: Some(chal(5)),
            at: now(),
        })]);
}

#[test]
fn events_written_before_challenge_ids_existed_still_load() {
    let old = serde_json::json!({"Verified": {"step": 3, "at": "2023-11-14T22:13:20Z"}});
    let event: FactorEvent = serde_json::from_value(old).unwrap();
    assert_eq!(event.challenge_id(), None);
    // A FailedAttempt of that time is version 1.0 (no `counted` either): it loads through
    // the upcaster, as every stored event does.
    let old = serde_json::json!({"FailedAttempt": {"reason": "WRONG_CODE", "consecutive_failures": 1, "at": "2023-11-14T22:13:20Z"}});
    let event: FactorEvent = crate::versioning::decode("FailedAttempt", "1.0", old).unwrap();
    assert_eq!(event.challenge_id(), None);
}

// ----- key rotation ---------------------------------------------------------------------

/// Services whose cipher is a ring: a new active key, the test cipher's key as the old one.
fn rotated_framework() -> TestFramework<Factor> {
    TestFramework::with(FactorServices {
        clock: Arc::new(FixedClock::at(now())),
        cipher: rotated_cipher(),
        hasher: hasher(),
        policy: policy(),
        relying_party: relying_party(),
    })
}

fn rotated_cipher() -> SecretCipher {
    SecretCipher::new([8u8; 32]).with_previous([[7u8; 32]])
}

#[tokio::test]
async fn a_verification_after_rotation_reseals_the_secret_under_the_active_key() {
    let events = rotated_framework()
        .given(active())
        .when_async(verify(code(step_of(now()))))
        .await
        .inspect_result()
        .unwrap();
    let [
        FactorEvent::Verified(_),
        FactorEvent::SecretResealed(resealed),
    ] = events.as_slice()
    else {
        panic!("expected Verified then SecretResealed, got {events:?}");
    };
    assert_eq!(resealed.previous_key_id, cipher().key_id());
    assert_eq!(resealed.secret.key_id, rotated_cipher().key_id());
    assert_ne!(resealed.secret.key_id, cipher().key_id());
    // The same secret, bound to the same factor, opened by the new key alone.
    let opened = SecretCipher::new([8u8; 32])
        .open(&resealed.secret, &fid().to_string())
        .unwrap();
    assert_eq!(opened.expose().as_slice(), SECRET);
    let json = serde_json::to_string(&events).unwrap();
    assert!(!json.contains(SECRET_BASE32) && !json.contains(SECRET_BASE64));

    // Once resealed, a further verification writes no second re-seal; the old key is not needed.
    let mut given = active();
    given.extend(events.clone());
    let later = TestFramework::<Factor>::with(FactorServices {
        clock: Arc::new(FixedClock::at(now() + secs(60))),
        cipher: SecretCipher::new([8u8; 32]),
        hasher: hasher(),
        policy: policy(),
        relying_party: relying_party(),
    })
    .given(given)
    .when_async(verify(code(step_of(now() + secs(60)))))
    .await
    .inspect_result()
    .unwrap();
    assert!(
        matches!(later.as_slice(), [FactorEvent::Verified(_)]),
        "{later:?}"
    );
}

#[tokio::test]
async fn a_wrong_code_after_rotation_reseals_nothing() {
    let events = rotated_framework()
        .given(active())
        .when_async(verify(wrong_code(step_of(now()))))
        .await
        .inspect_result()
        .unwrap();
    assert!(
        events
            .iter()
            .all(|e| !matches!(e, FactorEvent::SecretResealed(_))),
        "{events:?}"
    );
}

#[tokio::test]
async fn reseal_secret_seals_a_stale_secret_once_and_refuses_an_unknown_factor() {
    let events = rotated_framework()
        .given(active())
        .when_async(FactorCommand::ResealSecret)
        .await
        .inspect_result()
        .unwrap();
    assert!(
        matches!(events.as_slice(), [FactorEvent::SecretResealed(r)] if r.secret.key_id == rotated_cipher().key_id()),
        "{events:?}"
    );
    let mut given = active();
    given.extend(events);
    rotated_framework()
        .given(given)
        .when_async(FactorCommand::ResealSecret)
        .await
        .then_expect_events(vec![]);
    rotated_framework()
        .given_no_previous_events()
        .when_async(FactorCommand::ResealSecret)
        .await
        .then_expect_error(FactorError::NotFound);
}

#[tokio::test]
async fn a_secret_whose_key_left_the_ring_is_unavailable_not_garbage() {
    TestFramework::<Factor>::with(FactorServices {
        clock: Arc::new(FixedClock::at(now())),
        cipher: SecretCipher::new([8u8; 32]),
        hasher: hasher(),
        policy: policy(),
        relying_party: relying_party(),
    })
    .given(active())
    .when_async(verify(code(step_of(now()))))
    .await
    .then_expect_error(FactorError::SecretUnavailable);
}
