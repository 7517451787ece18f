//! Real WebAuthn ceremonies against the `Factor` aggregate, with webauthn-authenticator-rs's
//! soft passkey as the authenticator (no hardware).

use chrono::{DateTime, TimeDelta, Utc};
use cqrs_es::test::TestFramework;
use webauthn_authenticator_rs::{WebauthnAuthenticator, softpasskey::SoftPasskey};
use webauthn_rs::prelude::{Passkey, PublicKeyCredential, Url, Uuid};

use super::{
    tests::{ORIGIN, relying_party},
    *,
};
use crate::{
    crypto::{KeyedHasher, SecretCipher},
    ids::{ChallengeId, FactorId, UserId},
    services::{FactorPolicy, FixedClock},
};

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000, 0).unwrap()
}

fn framework(at: DateTime<Utc>) -> TestFramework<Factor> {
    TestFramework::with(FactorServices {
        clock: std::sync::Arc::new(FixedClock::at(at)),
        cipher: SecretCipher::new([7u8; 32]),
        hasher: KeyedHasher::new([9u8; 32]),
        policy: FactorPolicy::default(),
        relying_party: relying_party(),
    })
}

fn origin() -> Url {
    Url::parse(ORIGIN).unwrap()
}

/// Runs `command` on a factor with `given` events at `at`; the events it writes.
async fn run(given: &[FactorEvent], command: FactorCommand, at: DateTime<Utc>) -> Vec<FactorEvent> {
    framework(at)
        .given(given.to_vec())
        .when_async(command)
        .await
        .inspect_result()
        .unwrap()
}

/// An enrolled and activated WebAuthn factor, and the authenticator holding its key.
async fn registered() -> (SoftPasskey, Vec<FactorEvent>) {
    let rp = relying_party();
    let (options, state) = rp
        .webauthn()
        .start_passkey_registration(Uuid::new_v4(), "alice", "Alice", None)
        .unwrap();
    let enroll = Enroll {
        factor_id: FactorId::generate(),
        user_id: UserId::for_login("alice"),
        factor_type: FactorType::Webauthn,
        label: Some("YubiKey".into()),
        totp: None,
        oob: None,
        webauthn: Some(WebAuthnSpec {
            registration: serde_json::to_value(&state).unwrap(),
        }),
    };
    let mut events = run(&[], FactorCommand::Enroll(enroll), t0()).await;
    let mut authenticator = SoftPasskey::new(true);
    let response = authenticator.do_registration(origin(), options).unwrap();
    let activate = FactorCommand::ActivateWebAuthn {
        response: Box::new(response),
    };
    let activated = run(&events, activate, t0() + TimeDelta::seconds(5)).await;
    events.extend(activated);
    (authenticator, events)
}

fn passkey_of(events: &[FactorEvent]) -> Passkey {
    events
        .iter()
        .find_map(|e| match e {
            FactorEvent::CredentialRegistered(r) => Some(serde_json::from_value(r.passkey.clone())),
            _ => None,
        })
        .unwrap()
        .unwrap()
}

/// Starts an assertion ceremony for `challenge_id` at `at`; its events and the options a
/// browser would get.
async fn requested(
    events: &[FactorEvent],
    challenge_id: ChallengeId,
    standalone: bool,
    at: DateTime<Utc>,
) -> (
    Vec<FactorEvent>,
    webauthn_rs::prelude::RequestChallengeResponse,
) {
    let (options, state) = relying_party()
        .webauthn()
        .start_passkey_authentication(&[passkey_of(events)])
        .unwrap();
    let request = FactorCommand::RequestAssertion(AssertionRequest {
        challenge_id,
        standalone,
        state: serde_json::to_value(&state).unwrap(),
        discoverable: false,
    });
    (run(events, request, at).await, options)
}

fn verify(response: &PublicKeyCredential, challenge_id: Option<ChallengeId>) -> FactorCommand {
    FactorCommand::VerifyWebAuthn {
        response: Box::new(response.clone()),
        challenge_id,
    }
}

fn reason(events: &[FactorEvent]) -> Option<(FailureReason, bool)> {
    events.iter().find_map(|e| match e {
        FactorEvent::FailedAttempt(f) => Some((f.reason, f.counted)),
        _ => None,
    })
}

#[tokio::test]
async fn a_registration_activates_the_factor_and_keeps_the_public_credential() {
    let (_, events) = registered().await;
    let kinds: Vec<String> = events
        .iter()
        .map(cqrs_es::DomainEvent::event_type)
        .collect();
    assert_eq!(
        kinds,
        [
            "Enrolled",
            "RegistrationRequested",
            "Activated",
            "CredentialRegistered"
        ]
    );
    let FactorEvent::CredentialRegistered(r) = &events[3] else {
        unreachable!()
    };
    assert_eq!(
        r.credential_id,
        webauthn::credential_id_text(passkey_of(&events).cred_id())
    );
}

#[tokio::test]
async fn a_second_registration_answer_is_rejected_and_writes_no_credential() {
    let (mut authenticator, events) = registered().await;
    let (options, _) = relying_party()
        .webauthn()
        .start_passkey_registration(Uuid::new_v4(), "alice", "Alice", None)
        .unwrap();
    let again = authenticator.do_registration(origin(), options).unwrap();
    let written = run(
        &events,
        FactorCommand::ActivateWebAuthn {
            response: Box::new(again),
        },
        t0() + TimeDelta::seconds(9),
    )
    .await;
    assert_eq!(
        reason(&written),
        Some((FailureReason::RegistrationUsed, false))
    );
    assert_eq!(outcome_of(&written), Some(FactorOutcome::Rejected));
}

#[tokio::test]
async fn an_assertion_verifies_once_and_a_second_use_is_a_replay() {
    let (mut authenticator, mut events) = registered().await;
    let challenge = ChallengeId(Uuid::now_v7());
    let at = t0() + TimeDelta::seconds(60);
    let (asked, options) = requested(&events, challenge, true, at).await;
    events.extend(asked);
    let assertion = authenticator.do_authentication(origin(), options).unwrap();
    let first = run(&events, verify(&assertion, None), at).await;
    assert_eq!(outcome_of(&first), Some(FactorOutcome::Success));
    assert!(
        matches!(&first[1], FactorEvent::CredentialUsed(u) if u.counter == 1),
        "{first:?}"
    );
    events.extend(first);
    let second = run(&events, verify(&assertion, None), at).await;
    assert_eq!(reason(&second), Some((FailureReason::Replayed, false)));
    assert_eq!(outcome_of(&second), Some(FactorOutcome::PasscodeReplayed));
}

#[tokio::test]
async fn an_assertion_after_the_ceremonys_lifetime_is_expired() {
    let (mut authenticator, mut events) = registered().await;
    let at = t0() + TimeDelta::seconds(60);
    let (asked, options) = requested(&events, ChallengeId(Uuid::now_v7()), true, at).await;
    events.extend(asked);
    let assertion = authenticator.do_authentication(origin(), options).unwrap();
    let late = at + FactorPolicy::default().webauthn_timeout;
    let written = run(&events, verify(&assertion, None), late).await;
    assert_eq!(outcome_of(&written), Some(FactorOutcome::Expired));
}

#[tokio::test]
async fn a_foreign_origin_and_a_tampered_signature_are_counted_failures() {
    let (mut authenticator, mut events) = registered().await;
    let at = t0() + TimeDelta::seconds(60);
    let (asked, options) = requested(&events, ChallengeId(Uuid::now_v7()), true, at).await;
    events.extend(asked);
    let foreign = authenticator
        .do_authentication(
            Url::parse("http://localhost:9999").unwrap(),
            options.clone(),
        )
        .unwrap();
    let written = run(&events, verify(&foreign, None), at).await;
    assert_eq!(reason(&written), Some((FailureReason::ForeignOrigin, true)));
    assert_eq!(outcome_of(&written), Some(FactorOutcome::Rejected));

    let mut tampered = authenticator.do_authentication(origin(), options).unwrap();
    let signature: &mut Vec<u8> = tampered.response.signature.as_mut();
    let last = signature.len() - 2;
    signature[last] ^= 0x01;
    let written = run(&events, verify(&tampered, None), at).await;
    assert_eq!(reason(&written), Some((FailureReason::BadSignature, true)));
}

#[tokio::test]
async fn a_counter_that_does_not_grow_is_rejected_with_its_own_reason() {
    let (mut authenticator, mut events) = registered().await;
    let at = t0() + TimeDelta::seconds(60);
    let (standalone, bound) = (ChallengeId(Uuid::now_v7()), ChallengeId(Uuid::now_v7()));
    let (asked, first_options) = requested(&events, standalone, true, at).await;
    events.extend(asked);
    let (asked, second_options) = requested(&events, bound, false, at).await;
    events.extend(asked);
    // Signed first (counter 1) but answered last, after the counter reached 2: what a cloned
    // authenticator's answer looks like.
    let older = authenticator
        .do_authentication(origin(), first_options)
        .unwrap();
    let newer = authenticator
        .do_authentication(origin(), second_options)
        .unwrap();
    let written = run(&events, verify(&newer, Some(bound)), at).await;
    assert_eq!(outcome_of(&written), Some(FactorOutcome::Success));
    events.extend(written);
    let written = run(&events, verify(&older, None), at).await;
    assert_eq!(
        reason(&written),
        Some((FailureReason::CounterRegressed, true))
    );
    assert_eq!(outcome_of(&written), Some(FactorOutcome::Rejected));
}

#[tokio::test]
async fn a_pass_code_is_the_wrong_answer_for_a_webauthn_factor() {
    let (_, events) = registered().await;
    framework(t0() + TimeDelta::seconds(60))
        .given(events)
        .when_async(FactorCommand::Verify {
            pass_code: crate::secret::PassCode::new("123456".into()),
            challenge_id: None,
        })
        .await
        .then_expect_error(FactorError::WrongAnswerKind);
}
