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
        trusted_device_days: None,
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
            trusted_device_days: None,
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
            trusted_device_days: None,
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
            trusted_device_days: None,
            at: t0(),
        })]);
}

#[test]
fn event_type_strings_are_frozen() {
    let e = MfaPolicyEvent::MfaPolicySet(MfaPolicySet {
        mode: MfaMode::Optional,
        allowed_factor_types: vec![],
        trusted_device_days: Some(7),
        at: t0(),
    });
    assert_eq!(e.event_type(), "MfaPolicySet");
    assert_eq!(e.event_version(), "1.1");
    assert!(
        serde_json::to_value(&e)
            .unwrap()
            .get("MfaPolicySet")
            .is_some()
    );
    assert_eq!(MfaPolicy::TYPE, "MfaPolicy");
}

#[tokio::test]
async fn the_policy_decides_how_long_devices_are_trusted_within_a_year() {
    let with_days = |days| MfaPolicyCommand::Set {
        mode: MfaMode::Optional,
        allowed_factor_types: vec![FactorType::Totp],
        trusted_device_days: days,
    };
    framework()
        .given_no_previous_events()
        .when_async(with_days(Some(0)))
        .await
        .then_expect_events(vec![MfaPolicyEvent::MfaPolicySet(MfaPolicySet {
            mode: MfaMode::Optional,
            allowed_factor_types: vec![FactorType::Totp],
            trusted_device_days: Some(0),
            at: t0(),
        })]);
    framework()
        .given_no_previous_events()
        .when_async(with_days(Some(MAX_TRUSTED_DEVICE_DAYS + 1)))
        .await
        .then_expect_error(MfaPolicyError::TrustedDeviceDaysOutOfRange);
    // The server's setting stands when the policy says nothing; 0 turns trust off.
    let mut p = MfaPolicy::default();
    assert_eq!(p.trusted_device_days(30), 30);
    assert_eq!(p.trust_period(30), Some(chrono::TimeDelta::days(30)));
    assert_eq!(p.trust_period(0), None);
    p.trusted_device_days = Some(0);
    assert_eq!(p.trust_period(30), None);
    p.trusted_device_days = Some(7);
    assert_eq!(p.trust_period(0), Some(chrono::TimeDelta::days(7)));
}

#[test]
fn a_policy_set_before_version_1_1_leaves_devices_to_the_server() {
    let stored = serde_json::json!({ "MfaPolicySet": {
        "mode": "REQUIRED",
        "allowed_factor_types": ["TOTP"],
        "at": "2023-11-14T22:13:20Z",
    }});
    let e: MfaPolicyEvent =
        crate::versioning::decode("MfaPolicySet", "1.0", stored.clone()).unwrap();
    let MfaPolicyEvent::MfaPolicySet(set) = e;
    assert_eq!(set.trusted_device_days, None);
    assert_eq!(set.mode, MfaMode::Required);
    let upcast =
        <MfaPolicyEvent as crate::versioning::Versioned>::upcast("MfaPolicySet", "1.0", stored);
    assert_eq!(
        upcast["MfaPolicySet"]["trusted_device_days"],
        serde_json::Value::Null
    );
}
