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

fn with_password() -> Vec<UserEvent> {
    vec![
        UserEvent::Registered(registered()),
        UserEvent::PasswordSet(PasswordSet {
            password_hash: crate::crypto::hash_password("correct horse battery"),
            at: t0(),
        }),
    ]
}

fn set_password(new: &str, current: Option<&str>) -> UserCommand {
    UserCommand::SetPassword(SetPassword {
        password: Secret::new(new.into()),
        current_password: current.map(|c| Secret::new(c.into())),
    })
}

#[tokio::test]
async fn set_password_stores_a_new_argon2id_hash() {
    let events = framework()
        .given(vec![UserEvent::Registered(registered())])
        .when_async(set_password("a new passphrase", None))
        .await
        .inspect_result()
        .unwrap();
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
async fn changing_ones_own_password_needs_the_current_one() {
    let events = framework()
        .given(with_password())
        .when_async(set_password(
            "a new passphrase",
            Some("correct horse battery"),
        ))
        .await
        .inspect_result()
        .unwrap();
    assert!(matches!(events[..], [UserEvent::PasswordSet(_)]));
    // A wrong current password changes nothing and is a counted failure.
    framework()
        .given(with_password())
        .when_async(set_password("a new passphrase", Some("wrong horse")))
        .await
        .then_expect_events(vec![UserEvent::LoginFailed(LoginFailed {
            reason: LoginFailureReason::WrongPassword,
            failed_logins: 1,
            at: t0(),
        })]);
    framework()
        .given(vec![UserEvent::Registered(registered())])
        .when_async(set_password("a new passphrase", Some("anything at all")))
        .await
        .then_expect_events(vec![UserEvent::LoginFailed(LoginFailed {
            reason: LoginFailureReason::NoPassword,
            failed_logins: 1,
            at: t0(),
        })]);
}

#[tokio::test]
async fn set_password_rejects_bad_lengths_and_unknown_users() {
    framework()
        .given(with_password())
        .when_async(set_password("short", None))
        .await
        .then_expect_error(UserError::InvalidPassword);
    framework()
        .given(with_password())
        .when_async(set_password(&"x".repeat(257), None))
        .await
        .then_expect_error(UserError::InvalidPassword);
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
