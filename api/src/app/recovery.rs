//! Recovery codes and the administrator's unlock of a hard-locked user:
//! `regenerateRecoveryCodes`, `useRecoveryCode`, `unlockUser`.

use tessera_domain::{
    factor::FactorOutcome,
    ids::{ChallengeId, UserId},
    proof::AccountChange,
    secret::Secret,
    user::{User, UserCommand, recovery, recovery_outcome},
};

use crate::{
    app::{AppError, AppResult, Call, reauth::require_fresh_proof},
    state::AppState,
};

/// Draws a set of codes and stores their hashes. With `only_if_none`, returns `None` if the
/// user already had a set (the first activation of a factor generates one, later ones do not).
pub(crate) async fn issue_recovery_codes(
    state: &AppState,
    call: &Call,
    user: UserId,
    only_if_none: bool,
) -> AppResult<Option<Vec<String>>> {
    let mut rng = rand::rngs::OsRng;
    let codes: Vec<String> = (0..recovery::CODES_PER_SET)
        .map(|_| recovery::new_code(&mut rng))
        .collect();
    let command = UserCommand::GenerateRecoveryCodes {
        codes: codes.iter().cloned().map(Secret::new).collect(),
        only_if_none,
    };
    let key = user.to_string();
    let committed = state.users.execute(&key, command, &call.metadata()).await?;
    state.settle(&key, &committed).await;
    Ok((!committed.events.is_empty()).then_some(codes))
}

/// `regenerateRecoveryCodes`: ten new codes replace the user's set; the old ones stop working.
/// A user token needs a fresh proof (`step_up`, [`crate::app::reauth`]).
///
/// # Errors
/// Not the caller's; `REAUTHENTICATION_REQUIRED`, `USER_HARD_LOCKED`; store errors.
pub async fn regenerate(
    state: &AppState,
    call: &Call,
    user: UserId,
    step_up: Option<ChallengeId>,
) -> AppResult<Vec<String>> {
    if !call.caller()?.may_act_on(user) {
        return Err(AppError::Forbidden);
    }
    require_fresh_proof(
        state,
        call,
        user,
        AccountChange::RegenerateRecoveryCodes,
        step_up,
    )
    .await?;
    issue_recovery_codes(state, call, user, false)
        .await?
        .ok_or_else(|| AppError::internal("regeneration wrote nothing"))
}

/// `useRecoveryCode`: spends a code, `SUCCESS` once per code (`REJECTED` after, counted
/// towards the hard lock).
///
/// # Errors
/// Not the caller's; store errors.
pub async fn spend(
    state: &AppState,
    call: &Call,
    user: UserId,
    code: String,
) -> AppResult<FactorOutcome> {
    if !call.caller()?.may_act_on(user) {
        return Err(AppError::Forbidden);
    }
    let key = user.to_string();
    let command = UserCommand::UseRecoveryCode {
        code: Secret::new(code),
    };
    let committed = state.users.execute(&key, command, &call.metadata()).await?;
    state.settle(&key, &committed).await;
    recovery_outcome(&committed.payloads())
        .ok_or_else(|| AppError::internal("recovery command wrote no outcome"))
}

/// `unlockUser`: lifts the hard lock on a user's second factor (admins only).
///
/// # Errors
/// Not an admin; store errors.
pub async fn unlock_user(state: &AppState, call: &Call, user: UserId) -> AppResult<User> {
    call.admin()?;
    let key = user.to_string();
    let committed = state
        .users
        .execute(&key, UserCommand::Unlock, &call.metadata())
        .await?;
    state.settle(&key, &committed).await;
    Ok(committed.state)
}
