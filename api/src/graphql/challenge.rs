//! Challenges and sent codes: `challengeFactor`, `challenge`, and the helpers step-up, login
//! and factor activation share (drawing and sending a code, recording a factor's answer on the
//! challenge it was given for).

use std::collections::HashMap;

use async_graphql::{Context, ID, InputObject, Object, SimpleObject};
use cqrs_es::AggregateError;
use rand::Rng;
use tessera_domain::{
    challenge::{
        Challenge as ChallengeAgg, ChallengeCommand, ChallengeError, ChallengePurpose, Channel,
        Issue, Method, SentCode, mask_destination,
    },
    factor::{
        Factor as FactorAgg, FactorCommand, FactorError, FactorEvent, FactorOutcome, FactorType,
        FailureReason, NewCode,
    },
    ids::{ChallengeId, FactorId, UserId},
    secret::PassCode,
};

use crate::{
    auth::Caller,
    delivery::{Message, code_text},
    graphql::{
        ContextExt,
        error::{ApiError, ApiResult, IntoGraphql},
        types::Challenge,
    },
    state::{AppState, RequestMeta},
    store::Committed,
};

/// Actor recorded for calls without a token (the second step of a login).
pub(crate) const ANONYMOUS: &str = "anonymous";

/// Input of `challengeFactor`.
#[derive(InputObject)]
pub struct ChallengeFactorInput {
    /// An SMS or e-mail factor, pending activation or active.
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
}

/// Six digits drawn uniformly from the operating system's CSPRNG.
pub(crate) fn draw_code() -> PassCode {
    let n: u32 = rand::rngs::OsRng.gen_range(0..1_000_000);
    PassCode::new(format!("{n:06}"))
}

pub(crate) fn parse_challenge_id(id: &str) -> ApiResult<ChallengeId> {
    ChallengeId::parse(id)
        .ok_or_else(|| ApiError::bad_input("INVALID_ID", "challengeId is not a valid id"))
}

impl From<ChallengeError> for ApiError {
    fn from(e: ChallengeError) -> Self {
        AggregateError::UserError(e).into()
    }
}

/// A challenge that exists.
pub(crate) async fn load_challenge(state: &AppState, id: ChallengeId) -> ApiResult<ChallengeAgg> {
    let (c, _) = state.challenges.load(&id.to_string()).await?;
    if c.exists() {
        Ok(c)
    } else {
        Err(ChallengeError::NotFound.into())
    }
}

/// A factor that exists.
pub(crate) async fn load_factor(state: &AppState, id: FactorId) -> ApiResult<FactorAgg> {
    let (f, _) = state.factors.load(&id.to_string()).await?;
    if f.exists() {
        Ok(f)
    } else {
        Err(FactorError::NotFound.into())
    }
}

/// Refuses a challenge that cannot take an answer or a code now, the way the aggregate would.
pub(crate) fn require_open(c: &ChallengeAgg, state: &AppState) -> ApiResult<()> {
    match c.status_at(state.clock.now()) {
        tessera_domain::challenge::ChallengeStatus::Issued => Ok(()),
        tessera_domain::challenge::ChallengeStatus::Completed => {
            Err(ChallengeError::AlreadyCompleted.into())
        }
        _ => Err(ChallengeError::Expired.into()),
    }
}

fn channel_of(t: Option<FactorType>) -> ApiResult<Channel> {
    match t {
        Some(FactorType::Sms) => Ok(Channel::Sms),
        Some(FactorType::Email) => Ok(Channel::Email),
        _ => Err(FactorError::CodesNotSupported.into()),
    }
}

/// A code a factor just committed (its hash) and is about to be sent.
pub(crate) struct IssuedCode<'a> {
    /// The factor.
    pub factor_id: FactorId,
    /// The factor's command result (its state and the `CodeIssued` event).
    pub issued: &'a Committed<FactorAgg>,
    /// The challenge the code answers.
    pub challenge_id: ChallengeId,
    /// The code, to send.
    pub code: &'a PassCode,
    /// Open a new `FACTOR` challenge for it (else it belongs to an open step-up or login
    /// challenge).
    pub new_challenge: bool,
}

/// Records a code on its challenge and hands the message to delivery.
pub(crate) async fn record_and_deliver(
    state: &AppState,
    meta: &RequestMeta,
    actor: &str,
    code: IssuedCode<'_>,
) -> ApiResult<ChallengeAgg> {
    let IssuedCode {
        factor_id,
        issued,
        challenge_id,
        code,
        new_challenge,
    } = code;
    let factor = &issued.state;
    let channel = channel_of(factor.factor_type)?;
    let owner = factor.user_id.ok_or(FactorError::NotFound)?;
    let destination = factor
        .oob
        .as_ref()
        .map(|o| o.destination.clone())
        .ok_or(FactorError::CodesNotSupported)?;
    let code_expires_at = issued
        .payloads()
        .iter()
        .find_map(|e| match e {
            FactorEvent::CodeIssued(c) => Some(c.expires_at),
            _ => None,
        })
        .ok_or_else(|| ApiError::internal("code command wrote no CodeIssued"))?;
    let sent = SentCode {
        factor_id,
        channel,
        destination: mask_destination(&destination),
        code_expires_at,
    };
    let command = if new_challenge {
        ChallengeCommand::Issue(Issue {
            challenge_id,
            user_id: owner,
            purpose: ChallengePurpose::Factor,
            factor_id: Some(factor_id),
            state: None,
            ttl: state.factors.services().policy.code_ttl,
            code: Some(sent),
        })
    } else {
        ChallengeCommand::RecordCodeSent(sent)
    };
    let committed = state
        .challenges
        .execute(&challenge_id.to_string(), command, &meta.metadata(actor))
        .await?;
    let minutes = (state.factors.services().policy.code_ttl.num_seconds() + 59) / 60;
    let message = Message {
        channel,
        to: destination,
        subject: "Your Tessera code".into(),
        body: tessera_domain::secret::Secret::new(code_text(code.expose(), minutes)),
    };
    spawn_delivery(
        state,
        challenge_id,
        factor_id,
        message,
        meta.metadata("system:delivery"),
    );
    Ok(committed.state)
}

/// Sends the message in the background with retries, then records `Delivered` or
/// `DeliveryFailed` on the challenge.
fn spawn_delivery(
    state: &AppState,
    challenge_id: ChallengeId,
    factor_id: FactorId,
    message: Message,
    metadata: HashMap<String, String>,
) {
    let in_flight = state.delivery.track();
    let delivery = std::sync::Arc::clone(&state.delivery);
    let challenges = std::sync::Arc::clone(&state.challenges);
    tokio::spawn(async move {
        let _in_flight = in_flight;
        let report = delivery.send(&message).await;
        let outcome = match report.result {
            Ok(()) => tessera_domain::challenge::DeliveryOutcome::Delivered {
                attempts: report.attempts,
            },
            Err(e) => {
                tracing::error!(challenge = %challenge_id, channel = message.channel.as_str(), attempts = report.attempts, error = %e, "code delivery failed");
                tessera_domain::challenge::DeliveryOutcome::Failed {
                    attempts: report.attempts,
                    error: e.summary,
                }
            }
        };
        let command = ChallengeCommand::RecordDelivery {
            factor_id,
            channel: message.channel,
            outcome,
        };
        if let Err(e) = challenges
            .execute(&challenge_id.to_string(), command, &metadata)
            .await
        {
            tracing::error!(challenge = %challenge_id, error = %e, "could not record a delivery result");
        }
    });
}

/// Sends a fresh code to an SMS or e-mail factor: for a new `FACTOR` challenge, or for the
/// open step-up or login challenge `within`.
pub(crate) async fn send_code(
    state: &AppState,
    meta: &RequestMeta,
    actor: &str,
    factor_id: FactorId,
    factor: &FactorAgg,
    within: Option<ChallengeId>,
) -> ApiResult<(ChallengeId, ChallengeAgg)> {
    channel_of(factor.factor_type)?;
    let challenge_id = within.unwrap_or_else(ChallengeId::generate);
    let code = draw_code();
    let issued = state
        .factors
        .execute(
            &factor_id.to_string(),
            FactorCommand::SendCode(NewCode {
                challenge_id,
                standalone: within.is_none(),
                code: code.clone(),
            }),
            &meta.metadata(actor),
        )
        .await?;
    let challenge = record_and_deliver(
        state,
        meta,
        actor,
        IssuedCode {
            factor_id,
            issued: &issued,
            challenge_id,
            code: &code,
            new_challenge: within.is_none(),
        },
    )
    .await?;
    Ok((challenge_id, challenge))
}

/// A factor's answer to a challenge.
pub(crate) struct Answer<'a> {
    /// The challenge.
    pub challenge_id: ChallengeId,
    /// What the caller completes.
    pub purpose: ChallengePurpose,
    /// The factor's owner.
    pub owner: UserId,
    /// The factor.
    pub factor_id: FactorId,
    /// Its type.
    pub factor_type: FactorType,
    /// What the factor decided.
    pub outcome: FactorOutcome,
    /// The events the factor wrote.
    pub events: &'a [FactorEvent],
}

/// Records a factor's answer on the challenge it was given for: `Completed` on success,
/// `FailedAttempt` otherwise.
///
/// # Errors
/// The challenge's refusal (completed meanwhile, expired, other purpose or user).
pub(crate) async fn record_answer(
    state: &AppState,
    metadata: &HashMap<String, String>,
    answer: Answer<'_>,
) -> Result<Committed<ChallengeAgg>, AggregateError<ChallengeError>> {
    let Answer {
        challenge_id,
        purpose,
        owner,
        factor_id,
        factor_type,
        outcome,
        events,
    } = answer;
    let command = if outcome == FactorOutcome::Success {
        ChallengeCommand::Complete {
            purpose,
            user_id: owner,
            factor_id: Some(factor_id),
            method: Method::of_factor(factor_type).unwrap_or(Method::Totp),
        }
    } else {
        let reason = events
            .iter()
            .find_map(|e| match e {
                FactorEvent::FailedAttempt(f) => Some(f.reason),
                _ => None,
            })
            .unwrap_or(FailureReason::WrongCode);
        ChallengeCommand::RecordFailure { factor_id, reason }
    };
    state
        .challenges
        .execute(&challenge_id.to_string(), command, metadata)
        .await
}

/// After `verifyFactor`/`activateFactor` of an SMS or e-mail factor: the code's own `FACTOR`
/// challenge records the answer too. Its refusal (expired meanwhile) changes nothing for the
/// caller, whose answer the factor gave.
pub(crate) async fn mirror_on_code_challenge(
    state: &AppState,
    metadata: &HashMap<String, String>,
    factor_id: FactorId,
    factor: &FactorAgg,
    outcome: FactorOutcome,
    events: &[FactorEvent],
) {
    let Some(challenge_id) = events.iter().find_map(FactorEvent::challenge_id) else {
        return;
    };
    let (Some(owner), Some(factor_type)) = (factor.user_id, factor.factor_type) else {
        return;
    };
    if !factor_type.is_out_of_band() {
        return;
    }
    let answer = Answer {
        challenge_id,
        purpose: ChallengePurpose::Factor,
        owner,
        factor_id,
        factor_type,
        outcome,
        events,
    };
    if let Err(e) = record_answer(state, metadata, answer).await {
        tracing::debug!(challenge = %challenge_id, error = %e, "code challenge did not take the answer");
    }
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
        async {
            let state = ctx.state()?;
            let id = parse_challenge_id(&id)?;
            let (c, _) = state.challenges.load(&id.to_string()).await?;
            let Some(owner) = c.user_id.filter(|_| c.exists()) else {
                return Ok(None);
            };
            if !ctx.caller()?.may_enroll_for(owner) {
                return Err(ApiError::Forbidden);
            }
            Ok(Some(Challenge::from_aggregate(id, &c, state.clock.now())))
        }
        .await
        .gql(ctx)
    }
}

#[derive(Default)]
pub struct ChallengeMutation;

#[Object]
impl ChallengeMutation {
    /// Sends a fresh code to an SMS or e-mail factor (at most one per 30 s and ten an hour
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
        async {
            let state = ctx.state()?;
            let factor_id = crate::graphql::factor::parse_factor_id(&input.factor_id)?;
            let within = input
                .challenge_id
                .as_ref()
                .map(|id| parse_challenge_id(id))
                .transpose()?;
            let caller = ctx.data_opt::<Caller>();
            let factor = load_factor(state, factor_id).await?;
            let owner = factor.user_id.ok_or(FactorError::NotFound)?;
            let challenge = match within {
                Some(id) => Some(load_challenge(state, id).await?),
                None => None,
            };
            let login_step = challenge
                .as_ref()
                .is_some_and(|c| c.purpose == Some(ChallengePurpose::Login));
            let allowed = match caller {
                Some(c) => {
                    c.may_act_on(owner)
                        || (c.may_enroll_for(owner)
                            && within.is_none()
                            && factor.status_at(state.clock.now())
                                == tessera_domain::factor::FactorStatus::PendingActivation)
                }
                // The challenge id of a login stands for the password just checked.
                None => login_step,
            };
            if !allowed {
                return Err(if caller.is_none() {
                    ApiError::Unauthenticated
                } else {
                    ApiError::Forbidden
                });
            }
            if let Some(c) = &challenge {
                if c.user_id != Some(owner) {
                    return Err(ChallengeError::FactorOfAnotherUser.into());
                }
                if c.purpose == Some(ChallengePurpose::Factor) {
                    return Err(ChallengeError::WrongPurpose.into());
                }
                require_open(c, state)?;
                // A code for a step-up or login is only of use from an active factor.
                if factor.status_at(state.clock.now())
                    == tessera_domain::factor::FactorStatus::PendingActivation
                {
                    return Err(FactorError::NotActive.into());
                }
                if login_step {
                    let (policy, _) = state.policy.load(tessera_domain::policy::POLICY_ID).await?;
                    if factor.factor_type.is_some_and(|t| !policy.allows(t)) {
                        return Err(factor_type_not_allowed());
                    }
                }
            }
            let actor = caller.map_or_else(|| ANONYMOUS.to_string(), Caller::actor);
            let (id, c) = send_code(state, &ctx.meta(), &actor, factor_id, &factor, within).await?;
            Ok(ChallengePayload {
                challenge: Challenge::from_aggregate(id, &c, state.clock.now()),
            })
        }
        .await
        .gql(ctx)
    }
}

/// The policy does not allow this factor type.
pub(crate) fn factor_type_not_allowed() -> ApiError {
    ApiError::bad_input(
        "FACTOR_TYPE_NOT_ALLOWED",
        "the MFA policy does not allow this factor type",
    )
}
