//! Step-up: `startStepUp` opens a challenge that carries the caller's `state`;
//! `completeStepUp` answers it once with one of the user's factors (or a recovery code) and
//! hands the state back.

use chrono::TimeDelta;
use serde_json::Value;
use tessera_domain::{
    challenge::{self, Challenge, ChallengeCommand, ChallengeError, ChallengePurpose, Issue},
    ids::{ChallengeId, UserId},
    proof,
};

use tessera_store::limits::{self, Window};

use crate::{
    app::{
        AppError, AppResult, Call,
        prove::{ChallengeProof, ProofAnswer, answer_challenge, load_challenge},
    },
    state::AppState,
};

/// Lifetime of a step-up challenge when the caller names none.
pub const DEFAULT_TTL_SECONDS: i32 = 300;

/// Step-up challenges one user may start per minute.
pub const STARTS_PER_MINUTE: i64 = 10;

/// `startStepUp`: opens a step-up challenge for a user with at least one factor that can
/// prove ([`proof::can_prove`]), at most [`STARTS_PER_MINUTE`] a minute per user.
///
/// # Errors
/// Not the caller's; unknown user; `NO_ACTIVE_FACTOR`; `STEP_UP_RATE_LIMITED`; the
/// challenge's checks (lifetime, state size); store errors.
pub async fn start(
    state: &AppState,
    call: &Call,
    user_id: UserId,
    caller_state: Option<Value>,
    ttl_seconds: Option<i32>,
) -> AppResult<(ChallengeId, Challenge)> {
    if !call.caller()?.may_act_on(user_id) {
        return Err(AppError::Forbidden);
    }
    let (user, _) = state.users.load(&user_id.to_string()).await?;
    if !user.exists() || user.is_deleted() {
        return Err(AppError::not_found("USER_NOT_FOUND", "user not found"));
    }
    crate::app::users::ensure_active(&user)?;
    let now = state.clock.now();
    let usable = state
        .queries
        .factors_of_user(&user_id.to_string())
        .await?
        .iter()
        .filter_map(|row| row.status_at(now))
        .any(proof::can_prove);
    if !usable {
        return Err(AppError::Rejected {
            kind: tessera_domain::ErrorKind::WrongState,
            reason: "NO_ACTIVE_FACTOR",
            message: "the user has no active factor to step up with".into(),
        });
    }
    // A start the challenge would refuse does not count against the limit.
    if caller_state
        .as_ref()
        .is_some_and(|s| !challenge::state_fits(s))
    {
        return Err(ChallengeError::StateTooLarge.into());
    }
    // Each start writes a challenge to the undeletable log: a user (or whoever holds their
    // token) may start only so many a minute. A refused start writes nothing to the log.
    let window = Window {
        length: TimeDelta::seconds(60),
    };
    let starts = limits::hit(&state.db, &format!("step-up:{user_id}"), window, now)
        .await
        .map_err(AppError::internal)?;
    if starts > STARTS_PER_MINUTE {
        return Err(AppError::RateLimited {
            reason: "STEP_UP_RATE_LIMITED",
            message: format!("at most {STARTS_PER_MINUTE} step-ups a minute per user"),
            retry_after_seconds: window.seconds_left(now),
        });
    }
    let challenge_id = ChallengeId::generate();
    let ttl = ttl_seconds.unwrap_or(DEFAULT_TTL_SECONDS);
    let command = ChallengeCommand::Issue(Issue {
        challenge_id,
        user_id,
        purpose: ChallengePurpose::StepUp,
        factor_id: None,
        state: caller_state,
        ttl: TimeDelta::seconds(i64::from(ttl)),
        code: None,
    });
    let committed = state
        .challenges
        .execute(&challenge_id.to_string(), command, &call.metadata())
        .await?;
    Ok((challenge_id, committed.state))
}

/// `completeStepUp`: answers a step-up challenge of a user the caller may act on. Succeeds
/// once; a completed challenge is `CONFLICT`, an expired one `EXPIRED`. A pending factor is
/// refused by the factor itself (`FACTOR_NOT_ACTIVE`).
///
/// # Errors
/// Not the caller's; as [`answer_challenge`].
pub async fn complete(
    state: &AppState,
    call: &Call,
    challenge_id: ChallengeId,
    answer: ProofAnswer,
) -> AppResult<ChallengeProof> {
    let caller = call.caller()?;
    let challenge = load_challenge(state, challenge_id).await?;
    if !challenge.user_id.is_some_and(|u| caller.may_act_on(u)) {
        return Err(AppError::Forbidden);
    }
    answer_challenge(
        state,
        call,
        (ChallengePurpose::StepUp, challenge_id),
        answer,
        |_| Ok(()),
    )
    .await
}
