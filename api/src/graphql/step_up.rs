//! Step-up: `startStepUp` opens a challenge that carries the caller's `state`;
//! `completeStepUp` answers it once with one of the user's factors and hands the state back.

use async_graphql::{Context, ID, InputObject, Json, Object, SimpleObject};
use chrono::TimeDelta;
use cqrs_es::AggregateError;
use serde_json::Value;
use tessera_domain::{
    challenge::{
        ChallengeCommand, ChallengeError, ChallengeEvent, ChallengePurpose, ChallengeStatus, Issue,
        Method,
    },
    factor::{FactorCommand, FactorError, FactorOutcome, outcome_of},
    ids::ChallengeId,
    user::{UserCommand, recovery_outcome},
};

use crate::{
    graphql::{
        ContextExt,
        challenge::{
            Answer, ChallengePayload, load_challenge, load_factor, parse_challenge_id,
            record_answer,
        },
        error::{ApiError, ApiResult, IntoGraphql},
        factor::{check_and_count, parse_factor_id, pass_code},
        types::{Challenge, Factor, FactorResult},
        user::parse_user_id,
    },
    state::AppState,
};

/// Lifetime of a step-up challenge when the caller names none.
const DEFAULT_TTL_SECONDS: i32 = 300;

/// Input of `startStepUp`.
#[derive(InputObject)]
pub struct StartStepUpInput {
    /// The user who must prove possession.
    pub user_id: ID,
    /// Anything the caller wants back on completion (at most 16 KiB as JSON), e.g. the
    /// transfer being confirmed. Stored in the event log as given: not for secrets.
    pub state: Option<Json<Value>>,
    /// Lifetime in seconds, 30 to 3600 (default 300).
    pub ttl_seconds: Option<i32>,
}

/// Input of `completeStepUp`.
#[derive(InputObject)]
pub struct CompleteStepUpInput {
    /// The step-up challenge.
    pub challenge_id: ID,
    /// One of the user's active factors (or give `recoveryCode` instead).
    pub factor_id: Option<ID>,
    /// Its code (TOTP, or the SMS/e-mail code sent for this challenge by `challengeFactor`).
    pub pass_code: Option<String>,
    /// One of the user's recovery codes, instead of a factor and its code.
    pub recovery_code: Option<String>,
}

/// Result of `completeStepUp`.
#[derive(SimpleObject)]
pub struct StepUpPayload {
    /// `SUCCESS` (the state is handed back), or why not: `REJECTED`, `PASSCODE_REPLAYED`,
    /// `LOCKED_OUT`, `EXPIRED` (the challenge's time or attempts ran out),
    /// `CHALLENGE_REQUIRED` (no code was sent for this challenge).
    pub factor_result: FactorResult,
    /// The caller's state, on `SUCCESS` only.
    pub state: Option<Json<Value>>,
    /// The challenge after the attempt.
    pub challenge: Challenge,
    /// The factor after the attempt.
    pub factor: Option<Factor>,
}

/// What one proof against a step-up or login challenge came to.
pub(crate) struct ChallengeProof {
    /// The answer.
    pub result: FactorResult,
    /// The challenge after it.
    pub challenge: tessera_domain::challenge::Challenge,
    /// The factor after it.
    pub factor: Option<Factor>,
    /// How the challenge was answered, when it was.
    pub method: Option<Method>,
}

/// A recovery code answers a challenge: it is spent on the user's stream (single use, hard
/// lock and failure budget included, as `useRecoveryCode`), and a success completes the
/// challenge. A wrong code is counted on the user, whose budget bounds guessing; 50-bit codes
/// leave nothing to gain from the challenge's own five tries.
async fn prove_recovery_for_challenge(
    state: &AppState,
    metadata: &std::collections::HashMap<String, String>,
    challenge: tessera_domain::challenge::Challenge,
    challenge_id: ChallengeId,
    purpose: ChallengePurpose,
    code: tessera_domain::secret::Secret<String>,
) -> ApiResult<ChallengeProof> {
    let owner = challenge.user_id.ok_or(ChallengeError::NotFound)?;
    let key = owner.to_string();
    let spent = state
        .users
        .execute(&key, UserCommand::UseRecoveryCode { code }, metadata)
        .await?;
    state.settle(&key, &spent).await;
    let outcome = recovery_outcome(&spent.payloads())
        .ok_or_else(|| ApiError::internal("recovery command wrote no outcome"))?;
    if outcome != FactorOutcome::Success {
        return Ok(ChallengeProof {
            result: outcome.into(),
            challenge,
            factor: None,
            method: None,
        });
    }
    let command = ChallengeCommand::Complete {
        purpose,
        user_id: owner,
        factor_id: None,
        method: Method::RecoveryCode,
    };
    let completed = state
        .challenges
        .execute(&challenge_id.to_string(), command, metadata)
        .await?;
    Ok(ChallengeProof {
        result: FactorResult::Success,
        challenge: completed.state,
        factor: None,
        method: Some(Method::RecoveryCode),
    })
}

/// A code given to answer a step-up or login challenge.
pub(crate) struct ProofRequest {
    /// Who is asking (for event metadata).
    pub actor: String,
    /// What the caller completes.
    pub purpose: ChallengePurpose,
    /// The challenge.
    pub challenge_id: ChallengeId,
    /// What answers it.
    pub answer: ProofAnswer,
}

/// What answers a challenge: a factor's code, or one of the user's recovery codes.
pub(crate) enum ProofAnswer {
    /// A factor and its code.
    Factor {
        /// The factor.
        factor_id: tessera_domain::ids::FactorId,
        /// Its code.
        pass_code: tessera_domain::secret::PassCode,
    },
    /// A recovery code.
    RecoveryCode(tessera_domain::secret::Secret<String>),
}

impl ProofAnswer {
    /// From the input fields: `factorId` with `passCode`, or `recoveryCode`, not both.
    pub(crate) fn from_input(
        factor_id: Option<ID>,
        pass_code_input: Option<String>,
        recovery_code: Option<String>,
    ) -> ApiResult<Self> {
        match (factor_id, pass_code_input, recovery_code) {
            (Some(f), Some(p), None) => Ok(Self::Factor {
                factor_id: parse_factor_id(&f)?,
                pass_code: pass_code(p)?,
            }),
            (None, None, Some(code)) if code.len() <= 64 => Ok(Self::RecoveryCode(
                tessera_domain::secret::Secret::new(code),
            )),
            _ => Err(ApiError::bad_input(
                "ANSWER_REQUIRED",
                "give factorId with passCode, or recoveryCode",
            )),
        }
    }
}

/// Checks the code with the factor, for the challenge, and records the answer on the
/// challenge. The challenge is checked first, so a completed or expired one consumes no code;
/// `allowed` may refuse the factor before its code is looked at.
pub(crate) async fn prove_for_challenge(
    ctx: &Context<'_>,
    state: &AppState,
    request: ProofRequest,
    allowed: impl Fn(&tessera_domain::factor::Factor) -> ApiResult<()>,
) -> ApiResult<ChallengeProof> {
    let ProofRequest {
        actor,
        purpose,
        challenge_id,
        answer,
    } = request;
    let metadata = ctx.meta().metadata(&actor);
    let now = state.clock.now();
    let challenge = load_challenge(state, challenge_id).await?;
    if challenge.purpose != Some(purpose) {
        return Err(ChallengeError::WrongPurpose.into());
    }
    match challenge.status_at(now) {
        ChallengeStatus::Completed => return Err(ChallengeError::AlreadyCompleted.into()),
        ChallengeStatus::Expired => {
            let committed = state
                .challenges
                .execute(
                    &challenge_id.to_string(),
                    ChallengeCommand::Expire,
                    &metadata,
                )
                .await?;
            return Ok(ChallengeProof {
                result: FactorResult::Expired,
                challenge: committed.state,
                factor: None,
                method: None,
            });
        }
        _ => {}
    }
    let (factor_id, pass_code) = match answer {
        ProofAnswer::Factor {
            factor_id,
            pass_code,
        } => (factor_id, pass_code),
        ProofAnswer::RecoveryCode(code) => {
            return prove_recovery_for_challenge(
                state,
                &metadata,
                challenge,
                challenge_id,
                purpose,
                code,
            )
            .await;
        }
    };
    let factor = load_factor(state, factor_id).await?;
    let owner = factor.user_id.ok_or(FactorError::NotFound)?;
    if challenge.user_id != Some(owner) {
        return Err(ChallengeError::FactorOfAnotherUser.into());
    }
    allowed(&factor)?;
    let factor_type = factor.factor_type.ok_or(FactorError::NotFound)?;
    let command = FactorCommand::Verify {
        pass_code,
        challenge_id: Some(challenge_id),
    };
    let Some(committed) =
        check_and_count(state, &metadata, (factor_id, None), command, owner).await?
    else {
        return Ok(ChallengeProof {
            result: FactorResult::LockedOut,
            challenge,
            factor: Some(Factor::from_aggregate(factor_id, &factor, now)),
            method: None,
        });
    };
    state.settle(&factor_id.to_string(), &committed).await;
    let events = committed.payloads();
    let outcome =
        outcome_of(&events).ok_or_else(|| ApiError::internal("proof command wrote no outcome"))?;
    let answer = Answer {
        challenge_id,
        purpose,
        owner,
        factor_id,
        factor_type,
        outcome,
        events: &events,
    };
    let recorded = record_answer(state, &metadata, answer)
        .await
        .map_err(|e| match e {
            // Another request completed it between our check and now.
            AggregateError::UserError(ChallengeError::AlreadyCompleted) => {
                ApiError::from(ChallengeError::AlreadyCompleted)
            }
            e => e.into(),
        })?;
    let timed_out = recorded
        .payloads()
        .iter()
        .any(|e| matches!(e, ChallengeEvent::Expired(_)) && outcome == FactorOutcome::Success);
    let result = if timed_out {
        FactorResult::Expired
    } else {
        outcome.into()
    };
    Ok(ChallengeProof {
        result,
        challenge: recorded.state,
        factor: Some(Factor::from_aggregate(factor_id, &committed.state, now)),
        method: Method::of_factor(factor_type),
    })
}

#[derive(Default)]
pub struct StepUpMutation;

#[Object]
impl StepUpMutation {
    /// Opens a step-up challenge for a user with at least one active factor. The caller's
    /// `state` comes back from `completeStepUp` on success. SMS and e-mail factors need a
    /// code sent first: `challengeFactor(input: {factorId, challengeId})`.
    async fn start_step_up(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The user and the state to hand back on success.")]
        input: StartStepUpInput,
    ) -> async_graphql::Result<ChallengePayload> {
        async {
            let state = ctx.state()?;
            let caller = ctx.caller()?;
            let user_id = parse_user_id(&input.user_id)?;
            if !caller.may_act_on(user_id) {
                return Err(ApiError::Forbidden);
            }
            let (user, _) = state.users.load(&user_id.to_string()).await?;
            if !user.exists() {
                return Err(ApiError::not_found("USER_NOT_FOUND", "user not found"));
            }
            let now = state.clock.now();
            let usable = state
                .queries
                .factors_of_user(&user_id.to_string())
                .await?
                .into_iter()
                .filter_map(|row| Factor::from_row(row, now).ok())
                .any(|f| {
                    matches!(
                        f.status,
                        crate::graphql::types::FactorStatus::Active
                            | crate::graphql::types::FactorStatus::LockedOut
                    )
                });
            if !usable {
                return Err(ApiError::Rejected {
                    kind: tessera_domain::ErrorKind::WrongState,
                    reason: "NO_ACTIVE_FACTOR",
                    message: "the user has no active factor to step up with".into(),
                });
            }
            let challenge_id = ChallengeId::generate();
            let ttl = input.ttl_seconds.unwrap_or(DEFAULT_TTL_SECONDS);
            let command = ChallengeCommand::Issue(Issue {
                challenge_id,
                user_id,
                purpose: ChallengePurpose::StepUp,
                factor_id: None,
                state: input.state.map(|s| s.0),
                ttl: TimeDelta::seconds(i64::from(ttl)),
                code: None,
            });
            let committed = state
                .challenges
                .execute(
                    &challenge_id.to_string(),
                    command,
                    &ctx.meta().metadata(&caller.actor()),
                )
                .await?;
            Ok(ChallengePayload {
                challenge: Challenge::from_aggregate(challenge_id, &committed.state, now),
            })
        }
        .await
        .gql(ctx)
    }

    /// Answers a step-up challenge with a code of one of the user's active factors. Succeeds
    /// once; a completed challenge answers `CONFLICT`, an expired one `EXPIRED`.
    async fn complete_step_up(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The step-up challenge, the factor used and its code.")]
        input: CompleteStepUpInput,
    ) -> async_graphql::Result<StepUpPayload> {
        async {
            let state = ctx.state()?;
            let caller = ctx.caller()?;
            let challenge_id = parse_challenge_id(&input.challenge_id)?;
            let answer =
                ProofAnswer::from_input(input.factor_id, input.pass_code, input.recovery_code)?;
            let challenge = load_challenge(state, challenge_id).await?;
            if !challenge.user_id.is_some_and(|u| caller.may_act_on(u)) {
                return Err(ApiError::Forbidden);
            }
            let request = ProofRequest {
                actor: caller.actor(),
                purpose: ChallengePurpose::StepUp,
                challenge_id,
                answer,
            };
            // A pending factor is refused by the factor itself (FACTOR_NOT_ACTIVE).
            let proof = prove_for_challenge(ctx, state, request, |_| Ok(())).await?;
            let now = state.clock.now();
            Ok(StepUpPayload {
                factor_result: proof.result,
                state: (proof.result == FactorResult::Success)
                    .then(|| proof.challenge.state.clone().map(Json))
                    .flatten(),
                challenge: Challenge::from_aggregate(challenge_id, &proof.challenge, now),
                factor: proof.factor,
            })
        }
        .await
        .gql(ctx)
    }
}
