//! The `Alert` aggregate: security alerts raised by the reactor (`projections/src/alerts`)
//! and acknowledged by people. The reactor appends `SecurityAlertRaised` itself, inside the
//! transaction that advances its checkpoint, under a deterministic id: the event table's key
//! then makes a second raise of the same incident impossible, on any node, after any crash.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use cqrs_es::{Aggregate, DomainEvent, event_sink::EventSink};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    error::{Classify, ErrorKind},
    ids::UserId,
    services::Clock,
};

/// Namespace of the name-based alert ids.
const ALERT_NAMESPACE: Uuid = Uuid::from_u128(0x7e55_e7a0_a1e7_4d1a_9c3b_71a3_0000_0002);

/// What kind of incident an alert reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AlertKind {
    /// Several failed proofs of one user within the window.
    RepeatedFailures,
    /// A factor locked itself after consecutive failures.
    FactorLocked,
    /// The user's second factor is hard-locked until an administrator unlocks it.
    UserLocked,
    /// A recovery code was spent.
    RecoveryCodeUsed,
    /// A run of wrong passwords throttled the user's login (password guessing).
    LoginThrottled,
    /// A factor was activated: the account has a new way to prove it is its user's.
    FactorAdded,
    /// A factor was removed.
    FactorRemoved,
    /// The recovery codes were replaced by a new set.
    RecoveryCodesRegenerated,
    /// A WebAuthn credential answered with a signature counter that did not grow: two
    /// authenticators may hold its key.
    PossibleClonedAuthenticator,
    /// A device was trusted to stand in for the second factor ("remember this device").
    DeviceTrusted,
    /// 80% of the hourly SMS budget of all nodes is spent (SMS pumping?). Raised once per
    /// window, on the user whose text message crossed the mark, for the security team.
    SmsBudgetWarning,
}

impl AlertKind {
    /// The contract string (`REPEATED_FAILURES`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RepeatedFailures => "REPEATED_FAILURES",
            Self::FactorLocked => "FACTOR_LOCKED",
            Self::UserLocked => "USER_LOCKED",
            Self::RecoveryCodeUsed => "RECOVERY_CODE_USED",
            Self::LoginThrottled => "LOGIN_THROTTLED",
            Self::FactorAdded => "FACTOR_ADDED",
            Self::FactorRemoved => "FACTOR_REMOVED",
            Self::RecoveryCodesRegenerated => "RECOVERY_CODES_REGENERATED",
            Self::PossibleClonedAuthenticator => "POSSIBLE_CLONED_AUTHENTICATOR",
            Self::DeviceTrusted => "DEVICE_TRUSTED",
            Self::SmsBudgetWarning => "SMS_BUDGET_WARNING",
        }
    }

    /// Whether the user is told by e-mail. The SMS budget is everyone's: its warning goes to
    /// the security team (webhook, subscriptions), not to whoever happened to cross the mark.
    pub fn notifies_user(self) -> bool {
        match self {
            Self::SmsBudgetWarning => false,
            Self::RepeatedFailures
            | Self::FactorLocked
            | Self::UserLocked
            | Self::RecoveryCodeUsed
            | Self::LoginThrottled
            | Self::FactorAdded
            | Self::FactorRemoved
            | Self::RecoveryCodesRegenerated
            | Self::PossibleClonedAuthenticator
            | Self::DeviceTrusted => true,
        }
    }
}

/// A reference to the event that caused (part of) an alert.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRef {
    /// Aggregate type of the event.
    pub aggregate_type: String,
    /// Aggregate id of the event.
    pub aggregate_id: String,
    /// Its sequence in that stream.
    pub sequence: i64,
    /// Its event type.
    pub event_type: String,
}

/// The deterministic id of the alert that `trigger` raises as `kind`.
pub fn alert_id(kind: AlertKind, trigger: &EventRef) -> Uuid {
    let name = format!(
        "{}:{}:{}:{}",
        kind.as_str(),
        trigger.aggregate_type,
        trigger.aggregate_id,
        trigger.sequence
    );
    Uuid::new_v5(&ALERT_NAMESPACE, name.as_bytes())
}

/// Events of an alert. The variant name is the stored `event_type` (frozen by the contract, docs/architecture.md).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AlertEvent {
    /// An incident was detected.
    SecurityAlertRaised(SecurityAlertRaised),
    /// The security team has seen it (an administrator).
    SecurityAlertAcknowledged(SecurityAlertAcknowledged),
    /// The alert's own user has seen it (for themselves: the security team's view, and
    /// `acknowledged_at`, do not change).
    SecurityAlertSeenByUser(SecurityAlertSeenByUser),
}

/// Payload of [`AlertEvent::SecurityAlertRaised`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SecurityAlertRaised {
    /// The alert (its stream id).
    pub alert_id: Uuid,
    /// Whose second factor.
    pub user_id: UserId,
    /// What happened.
    pub kind: AlertKind,
    /// A sentence for people.
    pub reason: String,
    /// The events that caused it, oldest first.
    pub caused_by: Vec<EventRef>,
    /// When the triggering event happened.
    pub at: DateTime<Utc>,
}

/// Payload of [`AlertEvent::SecurityAlertAcknowledged`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SecurityAlertAcknowledged {
    /// Who acknowledged it (the actor).
    pub by: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// Payload of [`AlertEvent::SecurityAlertSeenByUser`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SecurityAlertSeenByUser {
    /// Who marked it seen (the actor: the alert's user).
    pub by: String,
    /// When.
    pub at: DateTime<Utc>,
}

impl DomainEvent for AlertEvent {
    fn event_type(&self) -> String {
        match self {
            Self::SecurityAlertRaised(_) => "SecurityAlertRaised",
            Self::SecurityAlertAcknowledged(_) => "SecurityAlertAcknowledged",
            Self::SecurityAlertSeenByUser(_) => "SecurityAlertSeenByUser",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

impl crate::versioning::Versioned for AlertEvent {
    fn current_version(event_type: &str) -> Option<&'static str> {
        matches!(
            event_type,
            "SecurityAlertRaised" | "SecurityAlertAcknowledged" | "SecurityAlertSeenByUser"
        )
        .then_some("1.0")
    }

    fn upcast(
        _event_type: &str,
        _event_version: &str,
        payload: serde_json::Value,
    ) -> serde_json::Value {
        payload
    }
}

impl crate::versioning::CommandName for AlertCommand {
    fn name(&self) -> &'static str {
        match self {
            Self::Acknowledge { .. } => "Acknowledge",
            Self::MarkSeenByUser { .. } => "MarkSeenByUser",
        }
    }
}

/// Commands on an alert (raising is the reactor's, not a command).
#[derive(Clone, Debug)]
pub enum AlertCommand {
    /// Mark the alert as seen.
    Acknowledge {
        /// The actor.
        by: String,
    },
    /// The alert's own user has seen it. Another user's alert is [`AlertError::NotFound`]
    /// (its existence is not told); a second mark keeps the first time and writes nothing.
    MarkSeenByUser {
        /// The user marking it (from their token).
        user_id: UserId,
        /// The actor.
        by: String,
    },
}

/// Why an alert command was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AlertError {
    /// No such alert.
    #[error("security alert not found")]
    NotFound,
    /// Acknowledged before.
    #[error("security alert already acknowledged")]
    AlreadyAcknowledged,
}

impl Classify for AlertError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::NotFound => ErrorKind::NotFound,
            Self::AlreadyAcknowledged => ErrorKind::WrongState,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            Self::NotFound => "ALERT_NOT_FOUND",
            Self::AlreadyAcknowledged => "ALERT_ALREADY_ACKNOWLEDGED",
        }
    }
}

/// An alert, folded from its events.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// What was raised.
    pub raised: Option<SecurityAlertRaised>,
    /// When it was acknowledged.
    pub acknowledged_at: Option<DateTime<Utc>>,
    /// When its user first marked it seen.
    #[serde(default)]
    pub seen_by_user_at: Option<DateTime<Utc>>,
}

/// What an alert's commands need.
#[derive(Clone, Debug)]
pub struct AlertServices {
    /// The clock.
    pub clock: Arc<dyn Clock>,
}

impl Aggregate for Alert {
    const TYPE: &'static str = "Alert";
    type Command = AlertCommand;
    type Event = AlertEvent;
    type Error = AlertError;
    type Services = AlertServices;

    async fn handle(
        &mut self,
        command: AlertCommand,
        services: &AlertServices,
        sink: &EventSink<Self>,
    ) -> Result<(), AlertError> {
        let Some(raised) = &self.raised else {
            return Err(AlertError::NotFound);
        };
        let at = services.clock.now();
        match command {
            AlertCommand::Acknowledge { by } => {
                if self.acknowledged_at.is_some() {
                    return Err(AlertError::AlreadyAcknowledged);
                }
                sink.write(
                    AlertEvent::SecurityAlertAcknowledged(SecurityAlertAcknowledged { by, at }),
                    self,
                )
                .await;
            }
            AlertCommand::MarkSeenByUser { user_id, by } => {
                if raised.user_id != user_id {
                    return Err(AlertError::NotFound);
                }
                if self.seen_by_user_at.is_none() {
                    sink.write(
                        AlertEvent::SecurityAlertSeenByUser(SecurityAlertSeenByUser { by, at }),
                        self,
                    )
                    .await;
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: AlertEvent) {
        match event {
            AlertEvent::SecurityAlertRaised(e) => self.raised = Some(e),
            AlertEvent::SecurityAlertAcknowledged(e) => self.acknowledged_at = Some(e.at),
            AlertEvent::SecurityAlertSeenByUser(e) => self.seen_by_user_at = Some(e.at),
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;
    use crate::services::FixedClock;

    fn raised() -> SecurityAlertRaised {
        SecurityAlertRaised {
            alert_id: Uuid::nil(),
            user_id: UserId::for_login("alice"),
            kind: AlertKind::FactorLocked,
            reason: "locked".into(),
            caused_by: vec![],
            at: DateTime::from_timestamp(0, 0).unwrap(),
        }
    }

    fn framework() -> TestFramework<Alert> {
        TestFramework::with(AlertServices {
            clock: Arc::new(FixedClock::at_unix(60)),
        })
    }

    #[tokio::test]
    async fn acknowledge_once() {
        let ack = SecurityAlertAcknowledged {
            by: "api-key:x".into(),
            at: DateTime::from_timestamp(60, 0).unwrap(),
        };
        framework()
            .given(vec![AlertEvent::SecurityAlertRaised(raised())])
            .when_async(AlertCommand::Acknowledge {
                by: "api-key:x".into(),
            })
            .await
            .then_expect_events(vec![AlertEvent::SecurityAlertAcknowledged(ack.clone())]);
        framework()
            .given(vec![
                AlertEvent::SecurityAlertRaised(raised()),
                AlertEvent::SecurityAlertAcknowledged(ack),
            ])
            .when_async(AlertCommand::Acknowledge { by: "y".into() })
            .await
            .then_expect_error(AlertError::AlreadyAcknowledged);
        framework()
            .given_no_previous_events()
            .when_async(AlertCommand::Acknowledge { by: "y".into() })
            .await
            .then_expect_error(AlertError::NotFound);
    }

    #[tokio::test]
    async fn only_the_alerts_user_marks_it_seen_once_and_it_stays_unacknowledged() {
        let alice = UserId::for_login("alice");
        let seen = SecurityAlertSeenByUser {
            by: "user:alice".into(),
            at: DateTime::from_timestamp(60, 0).unwrap(),
        };
        framework()
            .given(vec![AlertEvent::SecurityAlertRaised(raised())])
            .when_async(AlertCommand::MarkSeenByUser {
                user_id: alice,
                by: "user:alice".into(),
            })
            .await
            .then_expect_events(vec![AlertEvent::SecurityAlertSeenByUser(seen.clone())]);
        // Another user's alert is not found: its existence is not told.
        framework()
            .given(vec![AlertEvent::SecurityAlertRaised(raised())])
            .when_async(AlertCommand::MarkSeenByUser {
                user_id: UserId::for_login("mallory"),
                by: "user:mallory".into(),
            })
            .await
            .then_expect_error(AlertError::NotFound);
        framework()
            .given_no_previous_events()
            .when_async(AlertCommand::MarkSeenByUser {
                user_id: alice,
                by: "user:alice".into(),
            })
            .await
            .then_expect_error(AlertError::NotFound);
        // A second mark keeps the first time.
        framework()
            .given(vec![
                AlertEvent::SecurityAlertRaised(raised()),
                AlertEvent::SecurityAlertSeenByUser(seen.clone()),
            ])
            .when_async(AlertCommand::MarkSeenByUser {
                user_id: alice,
                by: "user:alice".into(),
            })
            .await
            .then_expect_events(vec![]);
        // Seen by the user, the alert is still the security team's to acknowledge.
        let mut alert = Alert::default();
        alert.apply(AlertEvent::SecurityAlertRaised(raised()));
        alert.apply(AlertEvent::SecurityAlertSeenByUser(seen));
        assert_eq!(alert.acknowledged_at, None);
        assert!(alert.seen_by_user_at.is_some());
    }

    #[test]
    fn ids_are_deterministic_per_kind_and_trigger() {
        let trigger = EventRef {
            aggregate_type: "Factor".into(),
            aggregate_id: "f".into(),
            sequence: 7,
            event_type: "LockedOut".into(),
        };
        assert_eq!(
            alert_id(AlertKind::FactorLocked, &trigger),
            alert_id(AlertKind::FactorLocked, &trigger)
        );
        assert_ne!(
            alert_id(AlertKind::FactorLocked, &trigger),
            alert_id(AlertKind::UserLocked, &trigger)
        );
        let mut later = trigger.clone();
        later.sequence = 8;
        assert_ne!(
            alert_id(AlertKind::FactorLocked, &trigger),
            alert_id(AlertKind::FactorLocked, &later)
        );
    }

    #[test]
    fn event_type_strings_are_frozen() {
        assert_eq!(
            AlertEvent::SecurityAlertRaised(raised()).event_type(),
            "SecurityAlertRaised"
        );
        assert_eq!(
            AlertEvent::SecurityAlertSeenByUser(SecurityAlertSeenByUser {
                by: "user:x".into(),
                at: DateTime::from_timestamp(0, 0).unwrap(),
            })
            .event_type(),
            "SecurityAlertSeenByUser"
        );
        assert_eq!(<Alert as Aggregate>::TYPE, "Alert");
        assert_eq!(
            serde_json::to_value(AlertKind::RecoveryCodeUsed).unwrap(),
            serde_json::json!("RECOVERY_CODE_USED")
        );
        assert_eq!(
            serde_json::to_value(AlertKind::DeviceTrusted).unwrap(),
            serde_json::json!(AlertKind::DeviceTrusted.as_str())
        );
    }
}
