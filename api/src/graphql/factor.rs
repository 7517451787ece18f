//! Factors: `enrollFactor`, `activateFactor`, `verifyFactor`, `removeFactor`, `factor`.

use async_graphql::{Context, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};
use cqrs_es::AggregateError;
use rand::RngCore;
use tessera_domain::{
    factor::{
        self, Enroll, FactorCommand, FactorError, FactorEvent, FactorOutcome, NewCode, OobSpec,
        TotpSpec, outcome_of,
        totp::{self, TotpParams},
    },
    ids::{ChallengeId, FactorId, UserId},
    policy::POLICY_ID,
    secret::{PassCode, SecretBytes},
    user::{UserCommand, UserEvent},
};

use crate::{
    auth::Caller,
    graphql::{
        ContextExt,
        challenge::{
            IssuedCode, draw_code, factor_type_not_allowed, mirror_on_code_challenge,
            record_and_deliver,
        },
        error::{ApiError, ApiResult, IntoGraphql},
        history,
        recovery::issue_recovery_codes,
        types::{Challenge, Factor, FactorResult, FactorType},
        user::parse_user_id,
    },
    state::AppState,
    store::{Committed, Joint, Then, execute_with, unexpected},
};

/// Longest pass code accepted before it is even looked at.
const MAX_PASS_CODE: usize = 64;

/// Input of `enrollFactor`.
#[derive(InputObject)]
pub struct EnrollFactorInput {
    /// The owner.
    pub user_id: ID,
    /// `TOTP`, `SMS` or `EMAIL`.
    #[graphql(name = "type")]
    pub factor_type: FactorType,
    /// For SMS factors: E.164 (`+14155550100`); defaults to the user's phone number.
    #[graphql(validator(max_length = 32))]
    pub phone_number: Option<String>,
    /// For EMAIL factors; defaults to the user's e-mail address.
    #[graphql(validator(max_length = 254))]
    pub email: Option<String>,
    /// A label ("Work phone"), at most 128 characters.
    pub label: Option<String>,
}

/// What an authenticator app needs. Shown once, at enrolment.
#[derive(SimpleObject)]
pub struct TotpActivation {
    /// The secret, unpadded base32, for manual entry.
    pub secret_base32: String,
    /// `otpauth://totp/…`.
    pub otpauth_uri: String,
    /// The URI as a QR code: a `data:image/png;base64,…` URI.
    pub qr_code_png: String,
}

/// Result of `enrollFactor`.
#[derive(SimpleObject)]
pub struct EnrollFactorPayload {
    /// The new factor, pending activation.
    pub factor: Factor,
    /// For TOTP.
    pub totp: Option<TotpActivation>,
    /// For SMS and EMAIL: the challenge of the activation code just sent.
    pub challenge: Option<Challenge>,
}

/// Input of `activateFactor`.
#[derive(InputObject)]
pub struct ActivateFactorInput {
    /// The pending factor.
    pub factor_id: ID,
    /// The code from the authenticator.
    pub pass_code: String,
}

/// Result of `activateFactor`.
#[derive(SimpleObject)]
pub struct ActivateFactorPayload {
    /// `SUCCESS`, `REJECTED`, `LOCKED_OUT` or `EXPIRED`.
    pub factor_result: FactorResult,
    /// The factor after the attempt.
    pub factor: Factor,
    /// Ten recovery codes when this was the user's first activated factor; shown once.
    pub recovery_codes: Option<Vec<String>>,
}

/// Input of `verifyFactor`.
#[derive(InputObject)]
pub struct VerifyFactorInput {
    /// An active factor.
    pub factor_id: ID,
    /// The code from the authenticator.
    pub pass_code: String,
}

/// Result of `verifyFactor`.
#[derive(SimpleObject)]
pub struct VerifyFactorPayload {
    /// The answer.
    pub factor_result: FactorResult,
    /// The factor after the attempt.
    pub factor: Option<Factor>,
}

/// Input of `removeFactor`.
#[derive(InputObject)]
pub struct RemoveFactorInput {
    /// The factor.
    pub factor_id: ID,
}

#[derive(Default)]
pub struct FactorQuery;

pub(crate) fn parse_factor_id(id: &str) -> ApiResult<FactorId> {
    FactorId::parse(id)
        .ok_or_else(|| ApiError::bad_input("INVALID_ID", "factorId is not a valid id"))
}

pub(crate) fn pass_code(code: String) -> ApiResult<PassCode> {
    if code.len() > MAX_PASS_CODE {
        return Err(ApiError::bad_input(
            "MALFORMED_PASS_CODE",
            "passCode is too long",
        ));
    }
    Ok(PassCode::new(code))
}

/// Loads a factor (and its stream length) and checks that the caller may act on its owner
/// (`enrolling`: may enrol for the owner, which enrolment-only tokens may).
pub(crate) async fn authorized_factor(
    ctx: &Context<'_>,
    id: FactorId,
    enrolling: bool,
) -> ApiResult<(factor::Factor, usize)> {
    let state = ctx.state()?;
    let caller = ctx.caller()?;
    let (f, seq) = state.factors.load(&id.to_string()).await?;
    match f.user_id {
        Some(owner) if f.exists() => {
            let allowed = if enrolling {
                caller.may_enroll_for(owner)
            } else {
                caller.may_act_on(owner)
            };
            if allowed {
                Ok((f, seq))
            } else {
                Err(ApiError::Forbidden)
            }
        }
        _ => Err(FactorError::NotFound.into()),
    }
}

fn changes_status(event: &FactorEvent) -> bool {
    matches!(
        event,
        FactorEvent::Activated(_)
            | FactorEvent::LockedOut(_)
            | FactorEvent::Unlocked(_)
            | FactorEvent::Removed(_)
            | FactorEvent::EnrollmentExpired(_)
    )
}

fn owner_of(f: &factor::Factor) -> ApiResult<UserId> {
    f.user_id.ok_or_else(|| FactorError::NotFound.into())
}

impl From<FactorError> for ApiError {
    fn from(e: FactorError) -> Self {
        AggregateError::UserError(e).into()
    }
}

/// Runs a proof command on the factor and counts its outcome on the user in the same commit: a
/// checked wrong code towards the user's budget across factors, recovery codes and lockout
/// cycles, a success resets it. A user whose second factor is hard-locked (SPEC §2, NIST SP
/// 800-63B) gets no check at all, only a recorded refusal: `None`. The lock is checked on the
/// user as loaded for this commit, so a race lost to the failure that locked it is refused too.
pub(crate) async fn check_and_count(
    state: &AppState,
    metadata: &std::collections::HashMap<String, String>,
    (factor_id, factor): (FactorId, Option<(factor::Factor, usize)>),
    command: FactorCommand,
    owner: UserId,
) -> Result<Option<Committed<factor::Factor>>, AggregateError<FactorError>> {
    let factor_key = factor_id.to_string();
    let user_key = owner.to_string();
    let then = Then {
        admit: |user: &tessera_domain::user::User| !user.second_factor_locked,
        follow: |events: &[cqrs_es::EventEnvelope<factor::Factor>],
                 user: &tessera_domain::user::User| {
            let payloads: Vec<FactorEvent> = events.iter().map(|e| e.payload.clone()).collect();
            match outcome_of(&payloads)? {
                FactorOutcome::Rejected => Some(UserCommand::RecordFactorFailure { factor_id }),
                FactorOutcome::Success if user.consecutive_failures > 0 => {
                    Some(UserCommand::ResetFailures)
                }
                _ => None,
            }
        },
    };
    let joint = execute_with(
        (&state.factors, &factor_key, factor),
        command,
        (&state.users, &user_key, None),
        then,
        metadata,
    )
    .await?;
    let (committed, counted) = match joint {
        Joint::Committed(committed, counted) => (committed, counted),
        Joint::Refused(user, seq) => {
            let refused = state
                .users
                .execute_from(
                    &user_key,
                    Some((user, seq)),
                    UserCommand::RefuseWhileLocked { factor_id },
                    metadata,
                )
                .await
                .map_err(unexpected)?;
            state.settle(&user_key, &refused).await;
            return Ok(None);
        }
    };
    if counted
        .payloads()
        .iter()
        .any(|e| matches!(e, UserEvent::LockedOut(_)))
    {
        state.settle(&user_key, &counted).await;
    } else if !counted.events.is_empty() {
        state.nudge();
    }
    Ok(Some(committed))
}

/// Runs a command that changes a factor's status (remove, unlock) for a caller allowed to act
/// on its owner, and answers with the factor as the command left it.
pub(crate) async fn run_on_factor(
    ctx: &Context<'_>,
    id: FactorId,
    command: FactorCommand,
) -> ApiResult<Factor> {
    let state = ctx.state()?;
    let caller = ctx.caller()?;
    let (loaded, seq) = authorized_factor(ctx, id, false).await?;
    let key = id.to_string();
    let committed = state
        .factors
        .execute_from(
            &key,
            Some((loaded, seq)),
            command,
            &ctx.meta().metadata(&caller.actor()),
        )
        .await?;
    state.settle(&key, &committed).await;
    Ok(Factor::from_aggregate(
        id,
        &committed.state,
        state.clock.now(),
    ))
}

/// Runs a proof-of-possession command and turns its events into a `factorResult`.
///
/// Around the factor's own rules sits the user's hard lock (SPEC §2, NIST SP 800-63B): a
/// locked user's factors are not checked at all, every wrong code counts towards the user's
/// budget across factors, recovery codes and lockout cycles, and a success resets it.
async fn prove(
    ctx: &Context<'_>,
    state: &AppState,
    id: FactorId,
    loaded: (factor::Factor, usize),
    command: FactorCommand,
) -> ApiResult<(FactorResult, Factor)> {
    let owner = owner_of(&loaded.0)?;
    let caller = ctx.caller()?;
    let metadata = ctx.meta().metadata(&caller.actor());
    let key = id.to_string();
    let now = || state.clock.now();
    let committed =
        match check_and_count(state, &metadata, (id, Some(loaded)), command, owner).await {
            Ok(Some(committed)) => committed,
            Ok(None) => {
                let (f, _) = state.factors.load(&key).await?;
                return Ok((
                    FactorOutcome::LockedOut.into(),
                    Factor::from_aggregate(id, &f, now()),
                ));
            }
            // Activating an enrolment that already expired answers EXPIRED, as the activation
            // that found it expired did.
            Err(AggregateError::UserError(FactorError::EnrollmentExpired)) => {
                let (f, _) = state.factors.load(&key).await?;
                return Ok((
                    FactorOutcome::Expired.into(),
                    Factor::from_aggregate(id, &f, now()),
                ));
            }
            Err(e) => return Err(e.into()),
        };
    // The answer is built from the aggregate, so a plain verification does not wait for the
    // read models (that would put a second commit on the hot path); a change of status must
    // show in the very next query, so those wait.
    if committed.payloads().iter().any(changes_status) {
        state.settle(&key, &committed).await;
    } else {
        state.nudge();
    }
    let events = committed.payloads();
    let outcome =
        outcome_of(&events).ok_or_else(|| ApiError::internal("proof command wrote no outcome"))?;
    mirror_on_code_challenge(state, &metadata, id, &committed.state, outcome, &events).await;
    Ok((
        outcome.into(),
        Factor::from_aggregate(id, &committed.state, now()),
    ))
}

/// Enrols an SMS or e-mail factor and sends its activation code.
async fn enroll_out_of_band(
    ctx: &Context<'_>,
    state: &AppState,
    caller: &Caller,
    user_id: tessera_domain::ids::UserId,
    user: &tessera_domain::user::User,
    input: EnrollFactorInput,
) -> ApiResult<EnrollFactorPayload> {
    let destination = match input.factor_type {
        FactorType::Sms => input.phone_number.or_else(|| user.phone_number.clone()),
        _ => input.email.or_else(|| user.email.clone()),
    };
    let factor_id = FactorId::generate();
    let challenge_id = ChallengeId::generate();
    let code = draw_code();
    let command = FactorCommand::Enroll(Enroll {
        factor_id,
        user_id,
        factor_type: input.factor_type.into(),
        label: input.label,
        totp: None,
        oob: destination.map(|destination| OobSpec {
            destination,
            first_code: NewCode {
                challenge_id,
                standalone: true,
                code: code.clone(),
            },
        }),
    });
    let key = factor_id.to_string();
    let meta = ctx.meta();
    let actor = caller.actor();
    let committed = state
        .factors
        .execute(&key, command, &meta.metadata(&actor))
        .await?;
    state.settle(&key, &committed).await;
    let challenge = record_and_deliver(
        state,
        &meta,
        &actor,
        IssuedCode {
            factor_id,
            issued: &committed,
            challenge_id,
            code: &code,
            new_challenge: true,
        },
    )
    .await?;
    let now = state.clock.now();
    Ok(EnrollFactorPayload {
        factor: Factor::from_aggregate(factor_id, &committed.state, now),
        totp: None,
        challenge: Some(Challenge::from_aggregate(challenge_id, &challenge, now)),
    })
}

#[Object]
impl FactorQuery {
    /// A factor by id (`null` if there is none). With `asOf`, the factor as it was at that
    /// moment, folded from the log (`null` if not enrolled by then).
    async fn factor(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The factor.")] id: ID,
        #[graphql(
            desc = "Show the factor as it was at this time, rebuilt from its events (now if null)."
        )]
        as_of: Option<DateTime<Utc>>,
    ) -> async_graphql::Result<Option<Factor>> {
        async {
            let state = ctx.state()?;
            let id = parse_factor_id(&id)?;
            if let Some(at) = as_of {
                let Some((owner, factor)) = history::factor(state, id, at).await? else {
                    return Ok(None);
                };
                if !ctx.caller()?.may_act_on(owner) {
                    return Err(ApiError::Forbidden);
                }
                return Ok(Some(factor));
            }
            let Some(row) = state.queries.factor(&id.to_string()).await? else {
                return Ok(None);
            };
            let owner = parse_user_id(&row.user_id)?;
            if !ctx.caller()?.may_act_on(owner) {
                return Err(ApiError::Forbidden);
            }
            Factor::from_row(row, state.clock.now()).map(Some)
        }
        .await
        .gql(ctx)
    }
}

#[derive(Default)]
pub struct FactorMutation;

#[Object]
impl FactorMutation {
    /// Enrols a factor, pending activation. For TOTP, returns the secret, otpauth URI and QR
    /// code once; they are never shown again.
    async fn enroll_factor(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The user, the factor type and its destination or label.")]
        input: EnrollFactorInput,
    ) -> async_graphql::Result<EnrollFactorPayload> {
        async {
            let state = ctx.state()?;
            let caller = ctx.caller()?;
            let user_id = parse_user_id(&input.user_id)?;
            if !caller.may_enroll_for(user_id) {
                return Err(ApiError::Forbidden);
            }
            let (user, _) = state.users.load(&user_id.to_string()).await?;
            if !user.exists() {
                return Err(ApiError::not_found("USER_NOT_FOUND", "user not found"));
            }
            let (policy, _) = state.policy.load(POLICY_ID).await?;
            if input.factor_type != FactorType::Webauthn && !policy.allows(input.factor_type.into())
            {
                return Err(factor_type_not_allowed());
            }
            match input.factor_type {
                FactorType::Totp => {}
                FactorType::Sms | FactorType::Email => {
                    return enroll_out_of_band(ctx, state, caller, user_id, &user, input).await;
                }
                FactorType::Webauthn => return Err(FactorError::UnsupportedType.into()),
            }
            let mut secret = vec![0u8; totp::MIN_SECRET_BYTES];
            rand::rngs::OsRng.fill_bytes(&mut secret);
            let secret = SecretBytes::new(secret);
            let params = TotpParams::default();
            let factor_id = FactorId::generate();
            let key = factor_id.to_string();
            let command = FactorCommand::Enroll(Enroll {
                factor_id,
                user_id,
                factor_type: input.factor_type.into(),
                label: input.label,
                totp: Some(TotpSpec {
                    secret: secret.clone(),
                    params,
                }),
                oob: None,
            });
            let committed = state
                .factors
                .execute(&key, command, &ctx.meta().metadata(&caller.actor()))
                .await?;
            state.settle(&key, &committed).await;
            let p = totp::provisioning(
                params,
                secret.expose(),
                &state.config.totp_issuer,
                &user.login,
            )
            .map_err(ApiError::internal)?;
            Ok(EnrollFactorPayload {
                factor: Factor::from_aggregate(factor_id, &committed.state, state.clock.now()),
                totp: Some(TotpActivation {
                    secret_base32: p.secret_base32,
                    otpauth_uri: p.otpauth_uri,
                    qr_code_png: format!("data:image/png;base64,{}", p.qr_png_base64),
                }),
                challenge: None,
            })
        }
        .await
        .gql(ctx)
    }

    /// Activates a pending factor with a code from it.
    async fn activate_factor(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The pending factor and the code that proves it.")]
        input: ActivateFactorInput,
    ) -> async_graphql::Result<ActivateFactorPayload> {
        async {
            let state = ctx.state()?;
            let id = parse_factor_id(&input.factor_id)?;
            let pass_code = pass_code(input.pass_code)?;
            let loaded = authorized_factor(ctx, id, true).await?;
            let owner = owner_of(&loaded.0)?;
            let (factor_result, factor) = prove(
                ctx,
                state,
                id,
                loaded,
                FactorCommand::Activate { pass_code },
            )
            .await?;
            let recovery_codes = if factor_result == FactorResult::Success {
                issue_recovery_codes(ctx, state, owner, true).await?
            } else {
                None
            };
            Ok(ActivateFactorPayload {
                factor_result,
                factor,
                recovery_codes,
            })
        }
        .await
        .gql(ctx)
    }

    /// Checks a code from an active factor. A wrong code is `REJECTED`, not an error.
    async fn verify_factor(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The factor and the code to check.")] input: VerifyFactorInput,
    ) -> async_graphql::Result<VerifyFactorPayload> {
        async {
            let state = ctx.state()?;
            let id = parse_factor_id(&input.factor_id)?;
            let pass_code = pass_code(input.pass_code)?;
            let loaded = authorized_factor(ctx, id, false).await?;
            let (factor_result, factor) = prove(
                ctx,
                state,
                id,
                loaded,
                FactorCommand::Verify {
                    pass_code,
                    challenge_id: None,
                },
            )
            .await?;
            Ok(VerifyFactorPayload {
                factor_result,
                factor: Some(factor),
            })
        }
        .await
        .gql(ctx)
    }

    /// Removes a factor for good.
    async fn remove_factor(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The factor to remove.")] input: RemoveFactorInput,
    ) -> async_graphql::Result<Factor> {
        async {
            let id = parse_factor_id(&input.factor_id)?;
            run_on_factor(ctx, id, FactorCommand::Remove).await
        }
        .await
        .gql(ctx)
    }
}
