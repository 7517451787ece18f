use std::sync::Arc;

use chrono::{DateTime, Utc};
use cqrs_es::test::TestFramework;

use super::*;
use crate::{crypto::verify_password, secret::Secret, services::FixedClock};

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000, 0).unwrap()
}

fn framework() -> TestFramework<User> {
    TestFramework::with(UserServices {
        clock: Arc::new(FixedClock::at(t0())),
    })
}

fn register(login: &str) -> Register {
    Register {
        login: login.into(),
        email: Some("alice@example.com".into()),
        phone_number: Some("+14155550100".into()),
        display_name: Some("Alice".into()),
        password: None,
    }
}

fn registered() -> Registered {
    Registered {
        login: "alice".into(),
        email: Some("alice@example.com".into()),
        phone_number: Some("+14155550100".into()),
        display_name: Some("Alice".into()),
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
    cmd.password = Some(Secret::new("correct horse battery".into()));
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
        (
            |c| c.password = Some(Secret::new("short".into())),
            UserError::InvalidPassword,
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
    assert_eq!(<User as cqrs_es::Aggregate>::TYPE, "User");
}
