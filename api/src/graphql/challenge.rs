//! Challenges and sent codes: `challengeFactor` and `challenge`.

use async_graphql::{Context, ID, InputObject, Object, SimpleObject};
use tessera_domain::ids::ChallengeId;

use crate::{
    app::{self, AppError, AppResult},
    graphql::{ContextExt, factor::parse_factor_id, passkey::WebAuthnOptions, types::Challenge},
};

/// Input of `challengeFactor`.
#[derive(InputObject)]
pub struct ChallengeFactorInput {
    /// An SMS or e-mail factor, pending activation or active; or an active WebAuthn factor.
    pub factor_id: ID,
    /// A step-up or login challenge the code is for; without it the code answers
    /// `verifyFactor`/`activateFactor` of this factor (a new challenge of purpose `FACTOR`).
    pub challenge_id: Option<ID>,
}

/// Result of `challengeFactor` and `startStepUp`.
#[derive(SimpleObject)]
pub struct ChallengePayload {
    /// The challenge the code (if any) belongs to.
    pub challenge: Challenge,
    /// For a WebAuthn factor: the request options naming its credential.
    pub webauthn: Option<WebAuthnOptions>,
}

/// Parses a challenge id argument; a malformed id is bad input.
pub(crate) fn parse_challenge_id(id: &str) -> AppResult<ChallengeId> {
    ChallengeId::parse(id)
        .ok_or_else(|| AppError::bad_input("INVALID_ID", "challengeId is not a valid id"))
}

#[derive(Default)]
pub struct ChallengeQuery;

#[Object]
impl ChallengeQuery {
    /// A challenge by id (`null` if there is none).
    async fn challenge(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The challenge.")] id: ID,
    ) -> async_graphql::Result<Option<Challenge>> {
        let state = ctx.state()?;
        let id = parse_challenge_id(&id)?;
        let challenge = app::codes::challenge(state, &ctx.call(), id).await?;
        Ok(challenge.map(|c| Challenge::from_aggregate(id, &c, state.clock.now())))
    }
}

#[derive(Default)]
pub struct ChallengeMutation;

#[Object]
impl ChallengeMutation {
    /// Sends a fresh code to an SMS or e-mail factor, or starts a WebAuthn assertion for a
    /// WebAuthn factor (`webauthn` holds the request options) (at most one per 30 s and ten an hour
    /// per factor: `RATE_LIMITED`). Without `challengeId` the code answers `verifyFactor` or
    /// `activateFactor`; with the id of an open step-up or login challenge it answers only
    /// that challenge. The second step of a login may call this without a token, with the
    /// login's challenge id.
    async fn challenge_factor(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The factor to send a code to, and optionally the challenge it answers.")]
        input: ChallengeFactorInput,
    ) -> async_graphql::Result<ChallengePayload> {
        let state = ctx.state()?;
        let factor_id = parse_factor_id(&input.factor_id)?;
        let within = input
            .challenge_id
            .as_ref()
            .map(|id| parse_challenge_id(id))
            .transpose()?;
        let (id, c, options) =
            app::codes::challenge_factor(state, &ctx.call(), factor_id, within).await?;
        Ok(ChallengePayload {
            challenge: Challenge::from_aggregate(id, &c, state.clock.now()),
            webauthn: options.map(Into::into),
        })
    }
}
