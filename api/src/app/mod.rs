//! The application layer: one module per use case, under every transport (GraphQL today; the
//! Okta-compatible REST API and the hosted pages next). A use case takes plain inputs, the
//! [`Call`] (who is asking, and the request's metadata) and returns domain values or an
//! [`AppError`]; it imports no transport type. It authorises against the data it loads (a
//! factor's owner, a challenge's user), runs commands through the store and decides what no
//! single aggregate can by asking the pure functions of `tessera_domain::proof`.
//!
//! | module | use cases |
//! |---|---|
//! | [`activity`] | a user's security activity, read from the log and redacted |
//! | [`alerts`] | acknowledge a security alert (the security team), mark it seen (its user) |
//! | [`api_keys`] | create (scope, expiry), list and revoke API keys |
//! | [`prove`] | verify, activate, answer a step-up or login challenge, the hard-lock policy |
//! | [`codes`] | draw, record and send SMS/e-mail codes (`challengeFactor`) |
//! | [`devices`] | trusted devices: trust after a login, recognise at the next, revoke |
//! | [`enrol`] | enrol TOTP, SMS and e-mail factors; activate (first recovery codes) |
//! | [`factors`] | read, remove and unlock factors |
//! | [`hashing`] | the bounded pool every argon2 hash and check runs on |
//! | [`history`] | users and factors as they were at a moment, folded from the log |
//! | [`qr_link`] | the capability link to a pending TOTP factor's QR code (Okta's `qrcode`) |
//! | [`reauth`] | the fresh proof a user token needs to change how its user authenticates |
//! | [`recovery`] | issue, regenerate and spend recovery codes; unlock a user |
//! | [`step_up`] | start and complete step-up challenges |
//! | [`login`] | password login, completing it with a second factor, access tokens, the MFA policy |
//! | [`throttle`] | the password throttle around every password check |
//! | [`trace`] | one event of the log with its causes, siblings and effects |
//! | [`users`] | create, read, list, update, deactivate, reactivate and delete users; set passwords |

pub mod activity;
pub mod alerts;
pub mod api_keys;
pub mod codes;
pub mod devices;
pub mod enrol;
mod error;
pub mod factors;
pub mod hashing;
pub mod history;
pub mod login;
pub mod passkeys;
pub mod prove;
pub mod qr_link;
pub mod reauth;
pub mod recovery;
pub mod step_up;
pub mod throttle;
pub mod trace;
pub mod users;

use std::collections::HashMap;

pub use error::{AppError, AppResult};

use crate::{auth::Caller, state::RequestMeta};

/// A moment a client names (`asOf`, a filter's `from`/`to`), if both stores can compare with
/// it: years 1 to 9999 (PostgreSQL's `timestamptz` and the log's text timestamps agree there).
///
/// # Errors
/// `DATE_OUT_OF_RANGE` otherwise.
pub fn moment(at: chrono::DateTime<chrono::Utc>) -> AppResult<chrono::DateTime<chrono::Utc>> {
    use chrono::Datelike;
    if (1..=9999).contains(&at.year()) {
        Ok(at)
    } else {
        Err(AppError::bad_input(
            "DATE_OUT_OF_RANGE",
            "dates must be between the years 1 and 9999",
        ))
    }
}

/// Actor recorded for calls without a token (the second step of a login).
pub const ANONYMOUS: &str = "anonymous";

/// Who is asking, and the context every event they cause records (request id, client IP, user
/// agent): built once per request by the transport.
#[derive(Clone, Debug)]
pub struct Call {
    /// The authenticated caller, if the request carried a valid token.
    pub caller: Option<Caller>,
    /// The request's context.
    pub meta: RequestMeta,
}

impl Call {
    /// The caller.
    ///
    /// # Errors
    /// [`AppError::Unauthenticated`] without a valid token.
    pub fn caller(&self) -> AppResult<&Caller> {
        self.caller.as_ref().ok_or(AppError::Unauthenticated)
    }

    /// The caller, if it holds an admin key.
    ///
    /// # Errors
    /// `Unauthenticated` without a token, `Forbidden` for user tokens.
    pub fn admin(&self) -> AppResult<&Caller> {
        match self.caller()? {
            c if c.is_admin() => Ok(c),
            _ => Err(AppError::Forbidden),
        }
    }

    /// The caller, if it may read the event log (admins and `read:audit` keys).
    ///
    /// # Errors
    /// `Unauthenticated` without a token, `Forbidden` for anyone else.
    pub fn auditor(&self) -> AppResult<&Caller> {
        match self.caller()? {
            c if c.may_read_audit() => Ok(c),
            _ => Err(AppError::Forbidden),
        }
    }

    /// The call of a `tessera` subcommand run by an operator.
    pub fn operator() -> Self {
        Self {
            caller: Some(Caller::Operator),
            meta: RequestMeta::internal(),
        }
    }

    /// The actor recorded in event metadata ([`ANONYMOUS`] without a token).
    pub fn actor(&self) -> String {
        self.caller
            .as_ref()
            .map_or_else(|| ANONYMOUS.to_string(), Caller::actor)
    }

    /// Event metadata for this call.
    pub fn metadata(&self) -> HashMap<String, String> {
        self.meta.metadata(&self.actor())
    }
}
