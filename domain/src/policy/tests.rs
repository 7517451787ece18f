use std::sync::Arc;

use chrono::{DateTime, Utc};
use cqrs_es::{Aggregate, DomainEvent, test::TestFramework};

use super::*;
use crate::{factor::FactorType, services::FixedClock};

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000, 0).unwrap()
}

fn framework() -> TestFramework<MfaPolicy> {
    TestFramework::with(MfaPolicyServices {
        clock: Arc::new(FixedClock::at(t0())),
    })
}

fn set(mode: MfaMode, allowed: &[FactorType]) -> MfaPolicyCommand {
    MfaPolicyCommand::Set {
        mode,
        allowed_factor_types: allowed.to_vec(),
    }
}

#[test]
fn the_default_is_optional_with_every_supported_type() {
    let p = MfaPolicy::default();
    assert_eq!(p.mode, MfaMode::Optional);
    assert!(p.allows(FactorType::Totp) && p.allows(FactorType::Sms) && p.allows(FactorType::Email));
    assert!(p.allows(FactorType::Webauthn));
}

#[tokio::test]
async fn set_orders_and_deduplicates_the_types() {
    framework()
        .given_no_previous_events()
        .when_async(set(
            MfaMode::Required,
            &[FactorType::Email, FactorType::Totp, FactorType::Email],
        ))
        .await
        .then_expect_events(vec![MfaPolicyEvent::MfaPolicySet(MfaPolicySet {
            mode: MfaMode::Required,
            allowed_factor_types: vec![FactorType::Totp, FactorType::Email],
            at: t0(),
        })]);
}

#[tokio::test]
async fn optional_or_required_without_a_type_is_rejected() {
    for mode in [MfaMode::Optional, MfaMode::Required] {
        framework()
            .given_no_previous_events()
            .when_async(set(mode, &[]))
            .await
            .then_expect_error(MfaPolicyError::NoFactorTypeAllowed);
    }
    framework()
        .given_no_previous_events()
        .when_async(set(MfaMode::Disabled, &[]))
        .await
        .then_expect_events(vec![MfaPolicyEvent::MfaPolicySet(MfaPolicySet {
            mode: MfaMode::Disabled,
            allowed_factor_types: vec![],
            at: t0(),
        })]);
}

#[tokio::test]
async fn webauthn_can_be_the_only_type_allowed() {
    framework()
        .given_no_previous_events()
        .when_async(set(MfaMode::Required, &[FactorType::Webauthn]))
        .await
        .then_expect_events(vec![MfaPolicyEvent::MfaPolicySet(MfaPolicySet {
            mode: MfaMode::Required,
            allowed_factor_types: vec![FactorType::Webauthn],
            at: t0(),
        })]);
}

#[test]
fn event_type_strings_are_frozen() {
    let e = MfaPolicyEvent::MfaPolicySet(MfaPolicySet {
        mode: MfaMode::Optional,
        allowed_factor_types: vec![],
        at: t0(),
    });
    assert_eq!(e.event_type(), "MfaPolicySet");
    assert_eq!(e.event_version(), "1.0");
    assert!(
        serde_json::to_value(&e)
            .unwrap()
            .get("MfaPolicySet")
            .is_some()
    );
    assert_eq!(MfaPolicy::TYPE, "MfaPolicy");
}
