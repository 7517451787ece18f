//! Reading and changing factors outside a proof: `factor`, `removeFactor`, `unlockFactor`.

use chrono::{DateTime, Utc};
use tessera_domain::{
    ErrorKind,
    factor::FactorType,
    factor::{Factor, FactorCommand, FactorError},
    ids::{ChallengeId, FactorId, UserId},
    policy::POLICY_ID,
    proof::{self, AccountChange, RemovalRefusal},
    user::DeviceRevocationReason,
};
use tessera_projections::read_model::FactorRow;

use crate::{
    app::{
        AppError, AppResult, Call, history, prove::authorized_factor, reauth::require_fresh_proof,
    },
    state::AppState,
};

/// `removeFactor`: removes a factor of a user the caller may act on; a user token needs a
/// fresh proof (`step_up`, [`crate::app::reauth`]).
///
/// # Errors
/// Not found, not the caller's, already removed; `REAUTHENTICATION_REQUIRED`,
/// `USER_HARD_LOCKED`; store errors.
pub async fn remove(
    state: &AppState,
    call: &Call,
    id: FactorId,
    step_up: Option<ChallengeId>,
) -> AppResult<Factor> {
    let (loaded, seq) = authorized_factor(state, call, id, false).await?;
    let owner = loaded.user_id.ok_or(FactorError::NotFound)?;
    require_fresh_proof(state, call, owner, AccountChange::RemoveFactor, step_up).await?;
    if !call.caller()?.is_admin() {
        keeps_a_required_factor(state, owner, id).await?;
    }
    // A passkey's removal releases its credential id in the same commit.
    let removed = if loaded.webauthn.is_some() {
        crate::app::passkeys::remove(state, call, id, (loaded, seq)).await?
    } else {
        run(state, call, id, (loaded, seq), FactorCommand::Remove).await?
    };
    // A removed factor may be the one a device was trusted with: no device stands in for the
    // second factor any more.
    let reason = DeviceRevocationReason::FactorRemoved;
    crate::app::devices::revoke_all(state, call, owner, reason).await?;
    Ok(removed)
}

/// Refuses a user's removal of their last factor that can prove under a `REQUIRED` policy
/// ([`proof::removal`]).
///
/// # Errors
/// `LAST_REQUIRED_FACTOR` (`CONFLICT`); store errors.
async fn keeps_a_required_factor(state: &AppState, owner: UserId, id: FactorId) -> AppResult<()> {
    let now = state.clock.now();
    let (policy, _) = state.policy.load(POLICY_ID).await?;
    let rows = state.queries.factors_of_user(&owner.to_string()).await?;
    let id = id.to_string();
    let Some(removing) = rows.iter().find(|r| r.id == id) else {
        return Ok(());
    };
    let (Some(removing_type), Some(status)) = (removing.factor_type(), removing.status_at(now))
    else {
        return Ok(());
    };
    let others: Vec<FactorType> = rows
        .iter()
        .filter(|r| r.id != id && r.status_at(now).is_some_and(proof::can_prove))
        .filter_map(FactorRow::factor_type)
        .collect();
    proof::removal(&policy, removing_type, status, &others).map_err(|refusal| match refusal {
        RemovalRefusal::LastRequiredFactor => AppError::Rejected {
            kind: ErrorKind::WrongState,
            reason: "LAST_REQUIRED_FACTOR",
            message: "this is your last way to confirm it is you, and sign-in requires one: \
                      add another before removing it"
                .into(),
        },
    })
}

/// `unlockFactor`: lifts a factor's lockout before its time (admins only).
///
/// # Errors
/// Not an admin; not found; not locked; store errors.
pub async fn unlock(state: &AppState, call: &Call, id: FactorId) -> AppResult<Factor> {
    call.admin()?;
    change_status(state, call, id, FactorCommand::Unlock).await
}

/// Runs a command that changes a factor's status for a caller allowed to act on its owner,
/// and answers with the factor as the command left it (the read models include it).
async fn change_status(
    state: &AppState,
    call: &Call,
    id: FactorId,
    command: FactorCommand,
) -> AppResult<Factor> {
    let loaded = authorized_factor(state, call, id, false).await?;
    run(state, call, id, loaded, command).await
}

async fn run(
    state: &AppState,
    call: &Call,
    id: FactorId,
    (loaded, seq): (Factor, usize),
    command: FactorCommand,
) -> AppResult<Factor> {
    let key = id.to_string();
    let committed = state
        .factors
        .execute_from(&key, Some((loaded, seq)), command, &call.metadata())
        .await?;
    state.settle(&key, &committed).await;
    Ok(committed.state)
}

/// A factor as the `factor` query shows it.
#[derive(Debug)]
pub enum FactorView {
    /// Now, from the read model.
    Current(FactorRow),
    /// As at a moment, folded from the log.
    AsOf(Factor, DateTime<Utc>),
}

/// The `factor` query: a factor by id (`None` if there is none, or none by `as_of`), if the
/// caller may act on its owner.
///
/// # Errors
/// `Unauthenticated`, `Forbidden`; a malformed row; store errors.
pub async fn get(
    state: &AppState,
    call: &Call,
    id: FactorId,
    as_of: Option<DateTime<Utc>>,
) -> AppResult<Option<FactorView>> {
    let (owner, view) = match as_of.map(super::moment).transpose()? {
        Some(at) => match history::factor(state, id, at).await? {
            Some((owner, factor)) => (owner, FactorView::AsOf(factor, at)),
            None => return Ok(None),
        },
        None => match state.queries.factor(&id.to_string()).await? {
            Some(row) => {
                let owner = UserId::parse(&row.user_id)
                    .ok_or_else(|| AppError::internal("malformed user id in factors_v1"))?;
                (owner, FactorView::Current(row))
            }
            None => return Ok(None),
        },
    };
    if !call.caller()?.may_act_on(owner) {
        return Err(AppError::Forbidden);
    }
    Ok(Some(view))
}

/// A user's factors as the read model shows them, removed ones included, oldest first, if
/// the caller may act on the user.
///
/// # Errors
/// `Unauthenticated`, `Forbidden`; store errors.
pub async fn of_user(state: &AppState, call: &Call, user_id: UserId) -> AppResult<Vec<FactorRow>> {
    if !call.caller()?.may_act_on(user_id) {
        return Err(AppError::Forbidden);
    }
    Ok(state.queries.factors_of_user(&user_id.to_string()).await?)
}

/// Removes every factor of a user that is not removed yet (admins only; Okta's
/// `reset_factors`). Each removal is its own `Removed` event, as `removeFactor` writes.
///
/// # Errors
/// Not an admin; `USER_NOT_FOUND`; store errors.
pub async fn reset(state: &AppState, call: &Call, user_id: UserId) -> AppResult<Vec<FactorId>> {
    call.admin()?;
    let (user, _) = state.users.load(&user_id.to_string()).await?;
    if !user.exists() || user.is_deleted() {
        return Err(AppError::not_found("USER_NOT_FOUND", "user not found"));
    }
    let mut removed = Vec::new();
    for row in state.queries.factors_of_user(&user_id.to_string()).await? {
        if row.status == "REMOVED" {
            continue;
        }
        let id = FactorId::parse(&row.id)
            .ok_or_else(|| AppError::internal("malformed factor id in factors_v1"))?;
        remove(state, call, id, None).await?;
        removed.push(id);
    }
    Ok(removed)
}
