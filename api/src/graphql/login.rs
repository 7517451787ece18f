//! Login with a second factor: `login` checks the password and, when the MFA policy and the
//! user's factors ask for it, opens a login challenge; `completeLogin` answers it with a factor
//! and returns an access token. `setMfaPolicy` and `mfaPolicy` manage the policy.
//!
//! `login` and `completeLogin` need no token: they are how a login page gets one. The login
//! challenge's id stands for the password just checked; a code of one of the user's factors
//! is still needed to complete it, and five failed attempts end it.

use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};
use tessera_domain::{
    challenge::{ChallengeCommand, ChallengePurpose, Issue, Method},
    crypto::{dummy_password_hash, verify_password},
    ids::{ChallengeId, UserId},
    policy::{self, MfaPolicyCommand, POLICY_ID},
    secret::Secret,
    user::{LoginFailureReason, UserCommand},
};

use crate::{
    auth::Caller,
    graphql::{
        ContextExt,
        challenge::{ANONYMOUS, factor_type_not_allowed, parse_challenge_id},
        error::{ApiError, ApiResult, IntoGraphql},
        step_up::{ProofAnswer, ProofRequest, prove_for_challenge},
        types::{Challenge, Factor, FactorResult, FactorStatus, FactorType},
    },
    state::AppState,
    tokens::Scope,
};

/// Input of `login`.
#[derive(InputObject)]
pub struct LoginInput {
    /// The login name (case-insensitive).
    #[graphql(validator(max_length = 256))]
    pub login: String,
    /// The password.
    #[graphql(validator(max_length = 256))]
    pub password: String,
}

/// Input of `completeLogin`.
#[derive(InputObject)]
pub struct CompleteLoginInput {
    /// The challenge `login` returned.
    pub challenge_id: ID,
    /// One of the factors `login` listed (or give `recoveryCode` instead).
    pub factor_id: Option<ID>,
    /// Its code (TOTP, or the SMS/e-mail code `challengeFactor` sent for this challenge).
    pub pass_code: Option<String>,
    /// One of the user's recovery codes, instead of a factor and its code.
    pub recovery_code: Option<String>,
}

/// Result of `login` and `completeLogin`.
#[derive(SimpleObject, Default)]
pub struct LoginPayload {
    /// A bearer token for this user (a JWT), when the login is complete.
    pub access_token: Option<String>,
    /// When `accessToken` expires.
    pub expires_at: Option<DateTime<Utc>>,
    /// Whether a second factor must be proven with `completeLogin` first.
    pub mfa_required: bool,
    /// Whether `accessToken` is enrolment-only: the policy requires a second factor and the
    /// user has none yet; the token can only enrol and activate one (then log in again).
    pub enrollment_required: bool,
    /// The login challenge to complete.
    pub challenge: Option<Challenge>,
    /// The factors that can complete it.
    pub factors: Option<Vec<Factor>>,
    /// `completeLogin`: the factor's answer.
    pub factor_result: Option<FactorResult>,
}

/// Whether a login asks for a second factor.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MfaMode {
    /// Never.
    Disabled,
    /// When the user has an active factor of an allowed type.
    Optional,
    /// Always; a user without factors gets an enrolment-only token.
    Required,
}

impl From<MfaMode> for policy::MfaMode {
    fn from(m: MfaMode) -> Self {
        match m {
            MfaMode::Disabled => Self::Disabled,
            MfaMode::Optional => Self::Optional,
            MfaMode::Required => Self::Required,
        }
    }
}

impl From<policy::MfaMode> for MfaMode {
    fn from(m: policy::MfaMode) -> Self {
        match m {
            policy::MfaMode::Disabled => Self::Disabled,
            policy::MfaMode::Optional => Self::Optional,
            policy::MfaMode::Required => Self::Required,
        }
    }
}

/// The MFA policy.
#[derive(SimpleObject)]
pub struct MfaPolicy {
    /// Whether a login asks for a second factor.
    pub mode: MfaMode,
    /// Factor types that may be enrolled and used to log in.
    pub allowed_factor_types: Vec<FactorType>,
}

impl From<&policy::MfaPolicy> for MfaPolicy {
    fn from(p: &policy::MfaPolicy) -> Self {
        Self {
            mode: p.mode.into(),
            allowed_factor_types: p.allowed_factor_types.iter().map(|t| (*t).into()).collect(),
        }
    }
}

/// Input of `setMfaPolicy`.
#[derive(InputObject)]
pub struct SetMfaPolicyInput {
    /// Whether a login asks for a second factor.
    pub mode: MfaMode,
    /// Factor types that may be enrolled and used to log in (at least one unless DISABLED).
    pub allowed_factor_types: Vec<FactorType>,
}

fn actor(ctx: &Context<'_>) -> String {
    ctx.data_opt::<Caller>()
        .map_or_else(|| ANONYMOUS.to_string(), Caller::actor)
}

/// An access token for `user`.
fn token(
    state: &AppState,
    user: UserId,
    amr: &[&str],
    scope: Scope,
) -> ApiResult<(String, DateTime<Utc>)> {
    let (token, claims) = state
        .tokens
        .issue(user, amr, scope, state.clock.now())
        .map_err(ApiError::internal)?;
    let expires_at = DateTime::from_timestamp(claims.exp, 0)
        .ok_or_else(|| ApiError::internal("token expiry out of range"))?;
    Ok((token, expires_at))
}

/// The factors that can complete a login: active or locked (a locked factor still stands
/// between a password and a token), of a type the policy allows.
async fn login_factors(
    state: &AppState,
    user: UserId,
    policy: &policy::MfaPolicy,
) -> ApiResult<Vec<Factor>> {
    let now = state.clock.now();
    let mut factors = Vec::new();
    for row in state.queries.factors_of_user(&user.to_string()).await? {
        let mut factor = Factor::from_row(row, now)?;
        // Only a password was proven so far: a login answer shows where codes go, masked.
        factor.phone_number = factor.phone_number.as_deref().map(crate::mask::phone);
        factor.email = factor.email.as_deref().map(crate::mask::email);
        if matches!(
            factor.status,
            FactorStatus::Active | FactorStatus::LockedOut
        ) && policy.allows(factor.factor_type.into())
        {
            factors.push(factor);
        }
    }
    Ok(factors)
}

#[derive(Default)]
pub struct LoginQuery;

#[Object]
impl LoginQuery {
    /// The MFA policy (any authenticated caller).
    async fn mfa_policy(&self, ctx: &Context<'_>) -> async_graphql::Result<MfaPolicy> {
        async {
            let state = ctx.state()?;
            ctx.caller()?;
            let (p, _) = state.policy.load(POLICY_ID).await?;
            Ok(MfaPolicy::from(&p))
        }
        .await
        .gql(ctx)
    }
}

#[derive(Default)]
pub struct LoginMutation;

#[Object]
impl LoginMutation {
    /// Checks a password (no token needed). A wrong password or unknown login answers
    /// `UNAUTHENTICATED` (`INVALID_CREDENTIALS`) after the same argon2 work either way, and a
    /// known user's failure is recorded (`LoginFailed`, written just after the answer). Then, by the MFA policy: a token, or
    /// `mfaRequired` with a challenge and the factors that can complete it, or (policy
    /// REQUIRED, no factor yet) an enrolment-only token.
    async fn login(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Login name and password.")] input: LoginInput,
    ) -> async_graphql::Result<LoginPayload> {
        async {
            let state = ctx.state()?;
            let actor = actor(ctx);
            let metadata = ctx.meta().metadata(&actor);
            let user_id = UserId::for_login(&input.login);
            let (user, _) = state.users.load(&user_id.to_string()).await?;
            let stored = user.password_hash.clone().filter(|_| user.exists());
            let password = Secret::new(input.password);
            let checked = stored.clone();
            // argon2 takes tens of milliseconds: off the async workers. Unknown users and
            // users without a password are checked against a dummy hash, so the time taken
            // does not say which logins exist.
            let matches = tokio::task::spawn_blocking(move || {
                let phc = checked.as_deref().unwrap_or_else(|| dummy_password_hash());
                verify_password(password.expose(), phc) && checked.is_some()
            })
            .await
            .map_err(ApiError::internal)?;
            if !matches {
                if user.exists() {
                    let reason = if stored.is_some() {
                        LoginFailureReason::WrongPassword
                    } else {
                        LoginFailureReason::NoPassword
                    };
                    // Recorded after answering: an fsync'd write before the answer would
                    // make a known login measurably slower than an unknown one.
                    let users = std::sync::Arc::clone(&state.users);
                    tokio::spawn(async move {
                        let command = UserCommand::RecordLoginFailure { reason };
                        if let Err(e) = users
                            .execute(&user_id.to_string(), command, &metadata)
                            .await
                        {
                            tracing::error!(user = %user_id, error = %e, "could not record a failed login");
                        }
                    });
                }
                return Err(ApiError::InvalidCredentials);
            }
            let (policy, _) = state.policy.load(POLICY_ID).await?;
            let factors = if policy.mode == policy::MfaMode::Disabled {
                Vec::new()
            } else {
                login_factors(state, user_id, &policy).await?
            };
            let challenge_id = ChallengeId::generate();
            let key = challenge_id.to_string();
            let issue = ChallengeCommand::Issue(Issue {
                challenge_id,
                user_id,
                purpose: ChallengePurpose::Login,
                factor_id: None,
                state: None,
                ttl: chrono::TimeDelta::seconds(state.config.login_challenge_ttl_seconds),
                code: None,
            });
            let issued = state.challenges.execute(&key, issue, &metadata).await?;
            if !factors.is_empty() {
                return Ok(LoginPayload {
                    mfa_required: true,
                    challenge: Some(Challenge::from_aggregate(
                        challenge_id,
                        &issued.state,
                        state.clock.now(),
                    )),
                    factors: Some(factors),
                    ..LoginPayload::default()
                });
            }
            // No second factor to ask for: the login challenge is completed by the password,
            // so every login leaves the same record.
            let complete = ChallengeCommand::Complete {
                purpose: ChallengePurpose::Login,
                user_id,
                factor_id: None,
                method: Method::Password,
            };
            state.challenges.execute(&key, complete, &metadata).await?;
            let enroll_only = policy.mode == policy::MfaMode::Required;
            let scope = if enroll_only {
                Scope::Enroll
            } else {
                Scope::User
            };
            let (access_token, expires_at) = token(state, user_id, &["pwd"], scope)?;
            Ok(LoginPayload {
                access_token: Some(access_token),
                expires_at: Some(expires_at),
                enrollment_required: enroll_only,
                ..LoginPayload::default()
            })
        }
        .await
        .gql(ctx)
    }

    /// Completes a login with a code of one of the factors `login` listed (no token needed).
    /// `SUCCESS` gives the access token (`amr` = `pwd` and the factor's method, `acr` =
    /// `mfa`); any other `factorResult` gives none. A completed challenge answers `CONFLICT`,
    /// an expired one `EXPIRED`. (Recovery codes come with the recovery-code feature.)
    async fn complete_login(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "The login challenge, the factor used and its code (or a recovery code)."
        )]
        input: CompleteLoginInput,
    ) -> async_graphql::Result<LoginPayload> {
        async {
            let state = ctx.state()?;
            let challenge_id = parse_challenge_id(&input.challenge_id)?;
            let answer =
                ProofAnswer::from_input(input.factor_id, input.pass_code, input.recovery_code)?;
            let (policy, _) = state.policy.load(POLICY_ID).await?;
            let request = ProofRequest {
                actor: actor(ctx),
                purpose: ChallengePurpose::Login,
                challenge_id,
                answer,
            };
            let proof = prove_for_challenge(ctx, state, request, |f| match f.factor_type {
                Some(t) if policy.allows(t) => Ok(()),
                _ => Err(factor_type_not_allowed()),
            })
            .await?;
            let now = state.clock.now();
            let challenge = Some(Challenge::from_aggregate(
                challenge_id,
                &proof.challenge,
                now,
            ));
            let user_id = proof.challenge.user_id;
            let method = proof.method;
            match (proof.result, user_id, method) {
                (FactorResult::Success, Some(user_id), Some(method)) => {
                    let (access_token, expires_at) =
                        token(state, user_id, &["pwd", method.amr()], Scope::User)?;
                    Ok(LoginPayload {
                        access_token: Some(access_token),
                        expires_at: Some(expires_at),
                        challenge,
                        factor_result: Some(FactorResult::Success),
                        ..LoginPayload::default()
                    })
                }
                (result, ..) => Ok(LoginPayload {
                    mfa_required: true,
                    challenge,
                    factor_result: Some(result),
                    ..LoginPayload::default()
                }),
            }
        }
        .await
        .gql(ctx)
    }

    /// Replaces the MFA policy (admins only).
    async fn set_mfa_policy(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The new policy.")] input: SetMfaPolicyInput,
    ) -> async_graphql::Result<MfaPolicy> {
        async {
            let caller = ctx.admin()?;
            let state = ctx.state()?;
            let command = MfaPolicyCommand::Set {
                mode: input.mode.into(),
                allowed_factor_types: input
                    .allowed_factor_types
                    .into_iter()
                    .map(Into::into)
                    .collect(),
            };
            let committed = state
                .policy
                .execute(POLICY_ID, command, &ctx.meta().metadata(&caller.actor()))
                .await?;
            Ok(MfaPolicy::from(&committed.state))
        }
        .await
        .gql(ctx)
    }
}
