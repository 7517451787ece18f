//! Step-up: `startStepUp` opens a challenge that carries the caller's `state`;
//! `completeStepUp` answers it once with one of the user's factors and hands the state back.

use async_graphql::{Context, ID, InputObject, Json, Object, SimpleObject};
use serde_json::Value;
use tessera_domain::factor::FactorOutcome;

use crate::{
    app::{
        self, AppResult,
        prove::{ChallengeProof, ProofAnswer},
    },
    graphql::{
        ContextExt,
        challenge::{ChallengePayload, parse_challenge_id},
        factor::parse_factor_id,
        types::{Challenge, Factor, FactorResult},
        user::parse_user_id,
    },
};

/// Input of `startStepUp`.
#[derive(InputObject)]
pub struct StartStepUpInput {
    /// The user who must prove possession.
    pub user_id: ID,
    /// Anything the caller wants back on completion (at most 4 KiB as JSON), e.g. the
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
    /// For a WebAuthn factor, instead of `passCode`: the assertion (`credential.toJSON()`)
    /// answering the options `challengeFactor` gave for this challenge.
    pub webauthn: Option<Json<Value>>,
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

/// The answer of `completeStepUp` or `completeLogin`: `factorId` with `passCode` or
/// `webauthn`, or `recoveryCode`.
pub(crate) fn proof_answer(
    factor_id: Option<ID>,
    pass_code: Option<String>,
    recovery_code: Option<String>,
    webauthn: Option<Json<Value>>,
) -> AppResult<ProofAnswer> {
    if let Some(Json(assertion)) = webauthn {
        return match (factor_id, pass_code, recovery_code) {
            (Some(f), None, None) => ProofAnswer::webauthn(parse_factor_id(&f)?, assertion),
            _ => ProofAnswer::from_parts(None, None),
        };
    }
    match (factor_id, pass_code, recovery_code) {
        (Some(f), Some(p), None) => ProofAnswer::from_parts(Some((parse_factor_id(&f)?, p)), None),
        (None, None, code) => ProofAnswer::from_parts(None, code),
        // Any other mix is refused as a whole.
        _ => ProofAnswer::from_parts(None, None),
    }
}

/// The factor a challenge proof left, as GraphQL shows it.
pub(crate) fn proof_factor(
    proof: &ChallengeProof,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<Factor> {
    proof
        .factor
        .as_ref()
        .map(|(id, f)| Factor::from_aggregate(*id, f, now))
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
        let state = ctx.state()?;
        let user_id = parse_user_id(&input.user_id)?;
        let (id, c) = app::step_up::start(
            state,
            &ctx.call(),
            user_id,
            input.state.map(|s| s.0),
            input.ttl_seconds,
        )
        .await?;
        Ok(ChallengePayload {
            webauthn: None,
            challenge: Challenge::from_aggregate(id, &c, state.clock.now()),
        })
    }

    /// Answers a step-up challenge with a code of one of the user's active factors. Succeeds
    /// once; a completed challenge answers `CONFLICT`, an expired one `EXPIRED`.
    async fn complete_step_up(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The step-up challenge, the factor used and its code.")]
        input: CompleteStepUpInput,
    ) -> async_graphql::Result<StepUpPayload> {
        let state = ctx.state()?;
        let call = ctx.call();
        call.caller()?;
        let challenge_id = parse_challenge_id(&input.challenge_id)?;
        let answer = proof_answer(
            input.factor_id,
            input.pass_code,
            input.recovery_code,
            input.webauthn,
        )?;
        let proof = app::step_up::complete(state, &call, challenge_id, answer).await?;
        let now = state.clock.now();
        let succeeded = proof.outcome == FactorOutcome::Success;
        Ok(StepUpPayload {
            factor_result: proof.outcome.into(),
            state: succeeded
                .then(|| proof.challenge.state.clone().map(Json))
                .flatten(),
            challenge: Challenge::from_aggregate(challenge_id, &proof.challenge, now),
            factor: proof_factor(&proof, now),
        })
    }
}
