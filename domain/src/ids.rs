//! Identifiers of aggregates. Users are keyed by their enforced login
//! ([`crate::user::login`]), so uniqueness of logins rests on the event table's primary key,
//! not on a racy read model lookup.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::user::login::{enforce_login, legacy_login};

/// Namespace for the name-based user ids (UUIDv5 of the enforced login).
const USER_NAMESPACE: Uuid = Uuid::from_u128(0x7e55_e7a0_5eed_4d1a_9c3b_71a3_0000_0001);

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// Parses the canonical hyphenated form.
            pub fn parse(s: &str) -> Option<Self> {
                Uuid::parse_str(s).ok().map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }
    };
}

id_type!(
    /// A user: UUIDv5 of the enforced login.
    UserId
);
id_type!(
    /// A factor: a random, time-ordered UUIDv7.
    FactorId
);
id_type!(
    /// A challenge (step-up or login): a random UUIDv7.
    ChallengeId
);

impl UserId {
    /// The id a user with this login has (or would have): of its enforced form
    /// ([`enforce_login`]), so `alice`, `ALICE` and `ａｌｉｃｅ` are one id. A login the rules
    /// refuse gets the id of its [`legacy_login`] form, which only a user registered before
    /// the rules can have.
    pub fn for_login(login: &str) -> Self {
        let key = enforce_login(login).unwrap_or_else(|_| legacy_login(login));
        Self::from_key(&key)
    }

    /// The id a user registered with this login before [`enforce_login`] has: of the trimmed,
    /// lower-cased form. The same as [`UserId::for_login`] for every login already in its
    /// enforced form (all-ASCII logins among them).
    pub fn legacy_for_login(login: &str) -> Self {
        Self::from_key(&legacy_login(login))
    }

    fn from_key(key: &str) -> Self {
        Self(Uuid::new_v5(&USER_NAMESPACE, key.as_bytes()))
    }
}

impl FactorId {
    /// A fresh id.
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }
}

impl ChallengeId {
    /// A fresh id.
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }
}
