//! Users: `createUser`, `setPassword`, `updateUser`, `deactivateUser`, `reactivateUser`,
//! `revokeSessions`.
//!
//! Deleting a user (`deleteUser`, Okta's `DELETE /api/v1/users/{id}`): events are never
//! deleted (the log is the record, and its hash chain is sealed), so a deletion is events
//! too: every factor still enrolled is removed (`Removed`), then the user is `Deleted`. From
//! then on no query shows the user (the `users_v1` row keeps only the login), no command is
//! taken (`USER_NOT_FOUND`), a login answers as a wrong password, and the login stays taken
//! (a user's id is derived from the login and its stream keeps the history, so a new account
//! needs a new login). What the earlier events hold (contact data, sealed TOTP secrets,
//! argon2id hashes) stays in the log until the privacy erasure planned separately, which
//! needs per-user keys to crypto-shred it.

use cqrs_es::AggregateError;
use tessera_domain::{
    crypto::{HashedPassword, verify_password},
    ids::{ChallengeId, UserId},
    proof::AccountChange,
    secret::Secret,
    user::{
        LoginFailureReason, Register, SetPassword, UpdateProfile, User, UserCommand, UserError,
        login::enforce_login, validate_password,
    },
};

use tessera_projections::read_model::UserRow;

use crate::{
    app::{
        AppError, AppResult, Call, reauth::require_fresh_proof, recovery::CHECK_ATTEMPTS, throttle,
    },
    auth::Caller,
    state::AppState,
};

/// What `createUser` asks for.
#[derive(Debug)]
pub struct NewUser {
    /// Unique login, in its enforced form ([`enforce_login`]).
    pub login: String,
    /// E-mail address.
    pub email: Option<String>,
    /// Phone number in E.164 form.
    pub phone_number: Option<String>,
    /// Display name.
    pub display_name: Option<String>,
    /// Given name.
    pub first_name: Option<String>,
    /// Family name.
    pub last_name: Option<String>,
    /// First-factor password; stored only as an argon2id hash.
    pub password: Option<String>,
}

/// `createUser` (admins only). A taken login (in any form enforcing to the same one) is
/// `LOGIN_TAKEN`; a login the rules refuse is `INVALID_LOGIN` or `MIXED_SCRIPT_LOGIN`.
///
/// # Errors
/// Not an admin; the user's checks; store errors.
pub async fn create(state: &AppState, call: &Call, input: NewUser) -> AppResult<(UserId, User)> {
    call.admin()?;
    let id = UserId::for_login(&input.login);
    let key = id.to_string();
    let mut register = Register {
        login: input.login,
        email: input.email,
        phone_number: input.phone_number,
        display_name: input.display_name,
        first_name: input.first_name,
        last_name: input.last_name,
        password_hash: None,
    };
    // Bad input is refused before any argon2 work.
    register.validate()?;
    // A user registered before the login rules has the id of its old form; its row holds
    // the enforced form, which stays taken (the aggregate answers for every other case).
    if let Ok(login_key) = enforce_login(&register.login)
        && let Some(holder) = state.queries.user_id_by_login_key(&login_key).await?
        && holder != key
    {
        return Err(cqrs_es::AggregateError::UserError(UserError::AlreadyRegistered).into());
    }
    if let Some(password) = input.password.map(Secret::new) {
        validate_password(&password)?;
        register.password_hash = Some(hash(state, password).await?);
    }
    let command = UserCommand::Register(register);
    let committed = state.users.execute(&key, command, &call.metadata()).await?;
    state.settle(&key, &committed).await;
    Ok((id, committed.state))
}

/// The argon2id hash of `password`, made on the hashing pool.
///
/// # Errors
/// `HASHING_BUSY`.
async fn hash(state: &AppState, password: Secret<String>) -> AppResult<HashedPassword> {
    state
        .hashing
        .run(move || HashedPassword::of(password.expose()))
        .await
}

/// The user `login` names, typed in any form that enforces to the same login
/// ([`enforce_login`]: width, case, composition), or the id such a user would have.
///
/// In order: the user registered before the login rules with exactly this login (trimmed and
/// lower-cased, as logins were then), the user with the enforced login's id, the oldest user
/// whose read-model row holds the enforced form (a user registered before the rules, found by
/// a variant). The same work is done whether or not a user exists (one load of the enforced
/// id, one indexed query of the key, one more load when the input is not in enforced form),
/// so the time taken does not say which logins exist.
///
/// # Errors
/// Store errors.
pub async fn resolve_login(state: &AppState, login: &str) -> AppResult<UserId> {
    let id = UserId::for_login(login);
    let legacy = UserId::legacy_for_login(login);
    let legacy_exists = legacy != id && registered(state, legacy).await?;
    let id_exists = registered(state, id).await?;
    let holder = match enforce_login(login) {
        Ok(key) => state.queries.user_id_by_login_key(&key).await?,
        Err(_) => None,
    };
    Ok(if legacy_exists {
        legacy
    } else if id_exists {
        id
    } else {
        holder.as_deref().and_then(UserId::parse).unwrap_or(id)
    })
}

async fn registered(state: &AppState, id: UserId) -> AppResult<bool> {
    Ok(state.users.load(&id.to_string()).await?.0.exists())
}

/// `setPassword`. Admins set any user's; a user token changes its own and must give the
/// current password (a wrong one is a counted failure and changes nothing) and, when the
/// user has a factor, a fresh proof (`step_up`, [`crate::app::reauth`]).
///
/// # Errors
/// Not the caller's; `REAUTHENTICATION_REQUIRED`, `USER_HARD_LOCKED`;
/// `CURRENT_PASSWORD_REQUIRED`, `WRONG_CURRENT_PASSWORD`; the password's checks; store errors.
pub async fn set_password(
    state: &AppState,
    call: &Call,
    user_id: UserId,
    password: String,
    current_password: Option<String>,
    step_up: Option<ChallengeId>,
) -> AppResult<User> {
    let caller = call.caller()?;
    if !caller.may_act_on(user_id) {
        return Err(AppError::Forbidden);
    }
    require_fresh_proof(state, call, user_id, AccountChange::ChangePassword, step_up).await?;
    let current_password = match caller {
        Caller::Admin { .. } | Caller::Operator => current_password,
        _ => Some(current_password.ok_or_else(|| {
            AppError::bad_input(
                "CURRENT_PASSWORD_REQUIRED",
                "currentPassword is required to change your own password",
            )
        })?),
    };
    let password = Secret::new(password);
    validate_password(&password)?;
    let key = user_id.to_string();
    let metadata = call.metadata();
    let Some(current) = current_password.map(Secret::new) else {
        let command = UserCommand::SetPassword(SetPassword {
            password_hash: hash(state, password).await?,
            current_matched: None,
        });
        let committed = state.users.execute(&key, command, &metadata).await?;
        state.settle(&key, &committed).await;
        return Ok(committed.state);
    };
    // A current password is a password guess: it takes its turn with the user's logins, is
    // refused unchecked while they are throttled, and a wrong one is counted like a login's.
    let _turn = state.login_throttles.turn(user_id).await;
    for _ in 0..CHECK_ATTEMPTS {
        let (user, sequence) = state.users.load(&key).await?;
        if !user.exists() || user.is_deleted() {
            return Err(UserError::NotFound.into());
        }
        throttle::ensure_not_throttled(state, user_id, &user).await?;
        let stored = user.password_hash.clone();
        let (checked, current, new) = (stored.clone(), current.clone(), password.clone());
        // One job: the check, and the new hash only when the check passed.
        let (matched, password_hash) = state
            .hashing
            .run(move || {
                let matched = checked
                    .as_deref()
                    .is_some_and(|phc| verify_password(current.expose(), phc));
                (matched, matched.then(|| HashedPassword::of(new.expose())))
            })
            .await?;
        let (Some(password_hash), Some(stored)) = (password_hash.filter(|_| matched), stored)
        else {
            let reason = if user.password_hash.is_some() {
                LoginFailureReason::WrongPassword
            } else {
                LoginFailureReason::NoPassword
            };
            let loaded = Some((user, sequence));
            throttle::count_failure(state, user_id, loaded, None, reason, &metadata).await?;
            return Err(AppError::bad_input(
                "WRONG_CURRENT_PASSWORD",
                "currentPassword is wrong",
            ));
        };
        let command = UserCommand::SetPassword(SetPassword {
            password_hash,
            current_matched: Some(stored),
        });
        match state
            .users
            .execute_from(&key, Some((user, sequence)), command, &metadata)
            .await
        {
            // The password changed while it was checked (on another node): check again.
            Err(AggregateError::UserError(UserError::CheckOutdated)) => {}
            committed => {
                let committed = committed?;
                state.settle(&key, &committed).await;
                return Ok(committed.state);
            }
        }
    }
    Err(AppError::Conflict)
}

/// Refuses a deleted user (`USER_NOT_FOUND`) and a deactivated one with a typed error
/// (`USER_DEACTIVATED`): for authenticated
/// callers' proofs and step-ups. Anonymous logins answer as a wrong password instead.
///
/// # Errors
/// `USER_DEACTIVATED`.
pub fn ensure_active(user: &User) -> AppResult<()> {
    if user.is_deleted() {
        return Err(AppError::not_found("USER_NOT_FOUND", "user not found"));
    }
    if user.is_deactivated() {
        return Err(cqrs_es::AggregateError::UserError(UserError::Deactivated).into());
    }
    Ok(())
}

/// Loads a user and refuses a deactivated one ([`ensure_active`]).
///
/// # Errors
/// `USER_DEACTIVATED`; store errors.
pub async fn ensure_active_id(state: &AppState, user_id: UserId) -> AppResult<()> {
    let (user, _) = state.users.load(&user_id.to_string()).await?;
    ensure_active(&user)
}

/// `updateUser` (admins only): replaces the fields given. Factors keep the destinations they
/// were enrolled with: a new phone number does not redirect an SMS factor's codes.
///
/// # Errors
/// Not an admin; `USER_NOT_FOUND`; the fields' checks; store errors.
pub async fn update(
    state: &AppState,
    call: &Call,
    user_id: UserId,
    profile: UpdateProfile,
) -> AppResult<User> {
    call.admin()?;
    run_admin(state, call, user_id, UserCommand::UpdateProfile(profile)).await
}

/// `deactivateUser` (admins only): no login (answered as a wrong password), no proof
/// (`USER_DEACTIVATED`) until reactivated.
///
/// # Errors
/// Not an admin; `USER_NOT_FOUND`, `USER_DEACTIVATED` (already); store errors.
pub async fn deactivate(state: &AppState, call: &Call, user_id: UserId) -> AppResult<User> {
    call.admin()?;
    run_admin(state, call, user_id, UserCommand::Deactivate).await
}

/// `revokeSessions`: every access token of the user issued so far stops working (a new token
/// generation, `SessionsRevoked`). Admins, or the user's own token: a logout everywhere.
///
/// # Errors
/// Not the caller's; `USER_NOT_FOUND`; store errors.
pub async fn revoke_sessions(state: &AppState, call: &Call, user_id: UserId) -> AppResult<User> {
    if !call.caller()?.may_act_on(user_id) {
        return Err(AppError::Forbidden);
    }
    run_admin(state, call, user_id, UserCommand::RevokeSessions).await
}

/// `reactivateUser` (admins only).
///
/// # Errors
/// Not an admin; `USER_NOT_FOUND`, `USER_NOT_DEACTIVATED`; store errors.
pub async fn reactivate(state: &AppState, call: &Call, user_id: UserId) -> AppResult<User> {
    call.admin()?;
    run_admin(state, call, user_id, UserCommand::Reactivate).await
}

async fn run_admin(
    state: &AppState,
    call: &Call,
    user_id: UserId,
    command: UserCommand,
) -> AppResult<User> {
    let key = user_id.to_string();
    let committed = state.users.execute(&key, command, &call.metadata()).await?;
    state.settle(&key, &committed).await;
    Ok(committed.state)
}

/// A user as the read model shows it, if the caller may read that user.
///
/// # Errors
/// `Unauthenticated`, `Forbidden`; store errors.
pub async fn get(state: &AppState, call: &Call, user_id: UserId) -> AppResult<Option<UserRow>> {
    if !call.caller()?.may_act_on(user_id) {
        return Err(AppError::Forbidden);
    }
    Ok(state.queries.user(&user_id.to_string()).await?)
}

/// Up to `limit` users in creation order after the `(created_at, id)` cursor (admins only).
///
/// # Errors
/// Not an admin; store errors.
pub async fn list(
    state: &AppState,
    call: &Call,
    after: Option<(&str, &str)>,
    limit: i64,
) -> AppResult<Vec<UserRow>> {
    call.admin()?;
    Ok(state.queries.users_after(after, limit).await?)
}

/// `deleteUser` (admins only): removes the user's factors, then deletes the user (see the
/// module's notes for what that means).
///
/// # Errors
/// Not an admin; `USER_NOT_FOUND` (also for a user deleted before); store errors.
pub async fn delete(state: &AppState, call: &Call, user_id: UserId) -> AppResult<()> {
    call.admin()?;
    // Factors first: a failure in between leaves a user that exists, and the retry
    // finishes the job.
    crate::app::factors::reset(state, call, user_id).await?;
    run_admin(state, call, user_id, UserCommand::Delete).await?;
    Ok(())
}
