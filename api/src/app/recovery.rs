//! Recovery codes and the administrator's unlock of a hard-locked user:
//! `regenerateRecoveryCodes`, `useRecoveryCode`, `unlockUser`.

use cqrs_es::AggregateError;
use tessera_domain::{
    factor::FactorOutcome,
    ids::{ChallengeId, UserId},
    proof::AccountChange,
    secret::Secret,
    user::{
        User, UserCommand, UserError,
        recovery::{self, CodeCheck},
        recovery_outcome,
    },
};

use crate::{
    app::{AppError, AppResult, Call, reauth::require_fresh_proof},
    state::AppState,
};

/// How often a check is made again when the user changed while it ran (a regenerated set, a
/// spent code, an unlock) before the answer is `CONFLICT`.
pub(crate) const CHECK_ATTEMPTS: usize = 4;

/// Draws a set of codes and stores their hashes (made on the hashing pool). With
/// `only_if_none`, returns `None` if the user already had a set (the first activation of a
/// factor generates one, later ones do not), without hashing anything when the stream already
/// shows one.
pub(crate) async fn issue_recovery_codes(
    state: &AppState,
    call: &Call,
    user: UserId,
    only_if_none: bool,
) -> AppResult<Option<Vec<String>>> {
    let key = user.to_string();
    if only_if_none && state.users.load(&key).await?.0.recovery_generation > 0 {
        return Ok(None);
    }
    let mut rng = rand::rngs::OsRng;
    let codes: Vec<String> = (0..recovery::CODES_PER_SET)
        .map(|_| recovery::new_code(&mut rng))
        .collect();
    let secrets: Vec<Secret<String>> = codes.iter().cloned().map(Secret::new).collect();
    let hashes = state
        .hashing
        .run(move || recovery::hash_set(&secrets))
        .await??;
    let command = UserCommand::GenerateRecoveryCodes {
        hashes,
        only_if_none,
    };
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
    let canonical = canonical(&Secret::new(code))?;
    let key = user.to_string();
    let metadata = call.metadata();
    for _ in 0..CHECK_ATTEMPTS {
        let loaded = state.users.load(&key).await?;
        let check = check_code(state, &loaded.0, &canonical).await?;
        let command = UserCommand::UseRecoveryCode { check };
        match state
            .users
            .execute_from(&key, Some(loaded), command, &metadata)
            .await
        {
            Err(AggregateError::UserError(UserError::CheckOutdated)) => {}
            committed => {
                let committed = committed?;
                state.settle(&key, &committed).await;
                return recovery_outcome(&committed.payloads())
                    .ok_or_else(|| AppError::internal("recovery command wrote no outcome"));
            }
        }
    }
    Err(AppError::Conflict)
}

/// What the user typed, in canonical form.
///
/// # Errors
/// `MALFORMED_RECOVERY_CODE` (nothing checked, nothing written).
pub(crate) fn canonical(code: &Secret<String>) -> AppResult<Secret<String>> {
    recovery::normalize(code.expose())
        .map(Secret::new)
        .ok_or_else(|| AggregateError::UserError(UserError::MalformedRecoveryCode).into())
}

/// Checks a canonical code against `user`'s current set on the hashing pool; a locked user's
/// codes are not looked at (the aggregate refuses them unchecked).
///
/// # Errors
/// `HASHING_BUSY`.
pub(crate) async fn check_code(
    state: &AppState,
    user: &User,
    canonical: &Secret<String>,
) -> AppResult<CodeCheck> {
    if user.second_factor_locked {
        return Ok(CodeCheck::Skipped);
    }
    let (code, generation) = (canonical.clone(), user.recovery_generation);
    let hashes = user.recovery_hashes.clone();
    state
        .hashing
        .run(move || recovery::check(code.expose(), generation, &hashes))
        .await
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
