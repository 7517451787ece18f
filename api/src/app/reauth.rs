//! Fresh proof for changes to how a user authenticates (adding, activating or removing a
//! factor, regenerating recovery codes, changing the password, trusting a device) made with a
//! *user* token: a bearer token alone must not take over a user's MFA. The rule is
//! [`proof::reauthentication`]; this module gathers what it needs (the token's `acr` and
//! `auth_time`, the step-up the caller names, the user's factors) and maps its refusal.
//! Admin keys and the CLI are not asked.

use tessera_domain::{
    ids::{ChallengeId, UserId},
    proof::{self, AccountChange, Freshness, ReauthRefusal},
};

use crate::{
    app::{AppError, AppResult, Call},
    auth::Caller,
    state::AppState,
};

/// Refuses `change` to `user_id` by a user or enrolment token without a fresh proof:
/// `step_up` names a step-up challenge of the user the caller completed. Call it after the
/// caller is known to be allowed to act on the user.
///
/// # Errors
/// [`AppError::ReauthenticationRequired`], [`AppError::HardLocked`]; store errors.
pub async fn require_fresh_proof(
    state: &AppState,
    call: &Call,
    user_id: UserId,
    change: AccountChange,
    step_up: Option<ChallengeId>,
) -> AppResult<()> {
    let now = state.clock.now();
    let (token_mfa, auth_time) = match call.caller()? {
        Caller::User { mfa, auth_time, .. } => (*mfa, *auth_time),
        Caller::Enrollment { .. } => (false, now),
        Caller::Admin { .. } | Caller::Operator | Caller::Auditor { .. } => return Ok(()),
    };
    let (user, _) = state.users.load(&user_id.to_string()).await?;
    let provable = state
        .queries
        .factors_of_user(&user_id.to_string())
        .await?
        .iter()
        .filter_map(|row| row.status_at(now))
        .filter(|status| proof::can_prove(*status))
        .count();
    // A named challenge that does not exist is no proof, like someone else's: the answer does
    // not say which ids exist.
    let challenge = match step_up {
        Some(id) => Some(state.challenges.load(&id.to_string()).await?.0),
        None => None,
    };
    let fresh = Freshness {
        token_mfa,
        auth_time,
        step_up: challenge.as_ref(),
        max_age: chrono::TimeDelta::seconds(state.config.reauth_seconds),
        now,
    };
    proof::reauthentication(change, user_id, &user, provable, &fresh).map_err(|refusal| {
        match refusal {
            ReauthRefusal::ReauthenticationRequired => AppError::ReauthenticationRequired {
                user_id,
                max_age_seconds: state.config.reauth_seconds,
            },
            ReauthRefusal::HardLocked => AppError::HardLocked,
        }
    })
}
