//! The `WebAuthnCredential` aggregate: one stream per WebAuthn credential id (keyed by the id's
//! SHA-256, [`crate::factor::webauthn::credential_key`]), claimed by the factor that
//! registered it. A credential id is unique across users because two claims of one id are two
//! first events of one stream: the event table's unique key lets one in, and the other, on
//! retry, finds the id taken. A passkey login finds its factor here from the id alone. A
//! removed factor releases its id in the commit that removes it, so the same authenticator
//! can register it again (for that user or another).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use cqrs_es::{Aggregate, DomainEvent, event_sink::EventSink};
use serde::{Deserialize, Serialize};

use crate::{
    error::{Classify, ErrorKind},
    ids::{FactorId, UserId},
    services::Clock,
};

/// A credential id's owner, folded from its events.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WebAuthnCredential {
    /// The factor that registered it.
    pub factor_id: Option<FactorId>,
    /// That factor's user.
    pub user_id: Option<UserId>,
    /// When.
    pub claimed_at: Option<DateTime<Utc>>,
}

impl WebAuthnCredential {
    /// Whether a factor registered this id.
    pub fn is_claimed(&self) -> bool {
        self.factor_id.is_some()
    }
}

/// Commands on a credential id.
#[derive(Clone, Debug)]
pub enum CredentialCommand {
    /// The factor registered this id.
    Claim {
        /// The factor.
        factor_id: FactorId,
        /// Its user.
        user_id: UserId,
    },
    /// The factor that holds the id was removed: the id is free again.
    Release {
        /// The removed factor.
        factor_id: FactorId,
    },
}

impl crate::versioning::CommandName for CredentialCommand {
    fn name(&self) -> &'static str {
        match self {
            Self::Claim { .. } => "Claim",
            Self::Release { .. } => "Release",
        }
    }
}

/// Events of a credential id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CredentialEvent {
    /// A factor registered the id.
    CredentialClaimed(CredentialClaimed),
    /// The factor that registered it was removed; the id may be registered again.
    CredentialReleased(CredentialReleased),
}

/// Payload of [`CredentialEvent::CredentialReleased`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CredentialReleased {
    /// The removed factor.
    pub factor_id: FactorId,
    /// When.
    pub at: DateTime<Utc>,
}

/// Payload of [`CredentialEvent::CredentialClaimed`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CredentialClaimed {
    /// The factor.
    pub factor_id: FactorId,
    /// Its user.
    pub user_id: UserId,
    /// When.
    pub at: DateTime<Utc>,
}

impl DomainEvent for CredentialEvent {
    fn event_type(&self) -> String {
        match self {
            Self::CredentialClaimed(_) => "CredentialClaimed",
            Self::CredentialReleased(_) => "CredentialReleased",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

impl crate::versioning::Versioned for CredentialEvent {
    fn current_version(event_type: &str) -> Option<&'static str> {
        matches!(event_type, "CredentialClaimed" | "CredentialReleased").then_some("1.0")
    }

    fn upcast(
        _event_type: &str,
        _event_version: &str,
        payload: serde_json::Value,
    ) -> serde_json::Value {
        payload
    }
}

/// Why a command on a credential id was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// Another factor registered this credential id.
    #[error("this credential is already registered")]
    AlreadyRegistered,
    /// The factor does not hold this credential id.
    #[error("the factor does not hold this credential")]
    NotHeld,
}

impl Classify for CredentialError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::AlreadyRegistered | Self::NotHeld => ErrorKind::WrongState,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            Self::AlreadyRegistered => "CREDENTIAL_ALREADY_REGISTERED",
            Self::NotHeld => "CREDENTIAL_NOT_HELD",
        }
    }
}

/// What a credential id's commands need from outside.
#[derive(Clone, Debug)]
pub struct CredentialServices {
    /// The clock.
    pub clock: Arc<dyn Clock>,
}

impl Aggregate for WebAuthnCredential {
    const TYPE: &'static str = "WebAuthnCredential";
    type Command = CredentialCommand;
    type Event = CredentialEvent;
    type Error = CredentialError;
    type Services = CredentialServices;

    async fn handle(
        &mut self,
        command: CredentialCommand,
        services: &CredentialServices,
        sink: &EventSink<Self>,
    ) -> Result<(), CredentialError> {
        match command {
            CredentialCommand::Claim { factor_id, user_id } => {
                if self.is_claimed() {
                    return Err(CredentialError::AlreadyRegistered);
                }
                let claimed = CredentialClaimed {
                    factor_id,
                    user_id,
                    at: services.clock.now(),
                };
                sink.write(CredentialEvent::CredentialClaimed(claimed), self)
                    .await;
                Ok(())
            }
            CredentialCommand::Release { factor_id } => {
                if self.factor_id != Some(factor_id) {
                    return Err(CredentialError::NotHeld);
                }
                let released = CredentialReleased {
                    factor_id,
                    at: services.clock.now(),
                };
                sink.write(CredentialEvent::CredentialReleased(released), self)
                    .await;
                Ok(())
            }
        }
    }

    fn apply(&mut self, event: CredentialEvent) {
        match event {
            CredentialEvent::CredentialClaimed(e) => {
                self.factor_id = Some(e.factor_id);
                self.user_id = Some(e.user_id);
                self.claimed_at = Some(e.at);
            }
            CredentialEvent::CredentialReleased(_) => *self = Self::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;
    use crate::services::FixedClock;

    fn framework() -> TestFramework<WebAuthnCredential> {
        TestFramework::with(CredentialServices {
            clock: Arc::new(FixedClock::at_unix(1_700_000_000)),
        })
    }

    #[tokio::test]
    async fn a_second_claim_of_one_id_is_refused() {
        let first = CredentialClaimed {
            factor_id: FactorId::generate(),
            user_id: UserId::for_login("alice"),
            at: DateTime::from_timestamp(1_600_000_000, 0).unwrap(),
        };
        framework()
            .given(vec![CredentialEvent::CredentialClaimed(first)])
            .when_async(CredentialCommand::Claim {
                factor_id: FactorId::generate(),
                user_id: UserId::for_login("mallory"),
            })
            .await
            .then_expect_error(CredentialError::AlreadyRegistered);
    }

    #[tokio::test]
    async fn a_first_claim_names_the_factor_and_its_user() {
        let (factor_id, user_id) = (FactorId::generate(), UserId::for_login("alice"));
        framework()
            .given_no_previous_events()
            .when_async(CredentialCommand::Claim { factor_id, user_id })
            .await
            .then_expect_events(vec![CredentialEvent::CredentialClaimed(
                CredentialClaimed {
                    factor_id,
                    user_id,
                    at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
                },
            )]);
    }

    #[tokio::test]
    async fn a_removed_factor_releases_its_id_for_a_new_claim() {
        let (factor_id, user_id) = (FactorId::generate(), UserId::for_login("alice"));
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let claimed = CredentialEvent::CredentialClaimed(CredentialClaimed {
            factor_id,
            user_id,
            at,
        });
        framework()
            .given(vec![claimed.clone()])
            .when_async(CredentialCommand::Release {
                factor_id: FactorId::generate(),
            })
            .await
            .then_expect_error(CredentialError::NotHeld);
        framework()
            .given(vec![claimed.clone()])
            .when_async(CredentialCommand::Release { factor_id })
            .await
            .then_expect_events(vec![CredentialEvent::CredentialReleased(
                CredentialReleased { factor_id, at },
            )]);
        let released = CredentialEvent::CredentialReleased(CredentialReleased { factor_id, at });
        assert_eq!(released.event_type(), "CredentialReleased");
        let again = FactorId::generate();
        framework()
            .given(vec![claimed, released])
            .when_async(CredentialCommand::Claim {
                factor_id: again,
                user_id: UserId::for_login("bob"),
            })
            .await
            .then_expect_events(vec![CredentialEvent::CredentialClaimed(
                CredentialClaimed {
                    factor_id: again,
                    user_id: UserId::for_login("bob"),
                    at,
                },
            )]);
    }

    #[test]
    fn event_type_strings_are_frozen() {
        assert_eq!(WebAuthnCredential::TYPE, "WebAuthnCredential");
        let e = CredentialEvent::CredentialClaimed(CredentialClaimed {
            factor_id: FactorId::generate(),
            user_id: UserId::for_login("alice"),
            at: DateTime::from_timestamp(0, 0).unwrap(),
        });
        assert_eq!(e.event_type(), "CredentialClaimed");
        assert_eq!(e.event_version(), "1.0");
    }
}
