//! Tessera's domain: the `User`, `Factor`, `Challenge` and `MfaPolicy` aggregates and every
//! rule about second factors.
//!
//! Nothing here does I/O. Time comes from an injected [`services::Clock`], key material from an
//! injected [`crypto::SecretCipher`]; randomness that shapes a command (a TOTP secret, a code) is
//! drawn by the caller and passed in, so every rule is testable with given/when/then.
//! A failed proof of possession is not an error: it is `Ok(())` plus a `FailedAttempt` event.
#![forbid(unsafe_code)]
#![deny(clippy::all)]

pub mod alert;
pub mod api_key;
pub mod challenge;
pub mod credential;
pub mod crypto;
pub mod error;
pub mod factor;
pub mod ids;
pub mod policy;
pub mod proof;
pub mod secret;
pub mod services;
pub mod user;
pub mod versioning;

pub use error::{Classify, ErrorKind};
