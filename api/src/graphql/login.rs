//! Login with a second factor (`login`, `completeLogin`) and the MFA policy (`mfaPolicy`,
//! `setMfaPolicy`), over `app::login`. Neither login step needs a token: they are how a login
//! page gets one.

use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};
use tessera_domain::policy;

use crate::{
    app::{
        self, AppResult,
        login::{IssuedToken, LoginOutcome},
    },
    graphql::{
        ContextExt,
        challenge::parse_challenge_id,
        step_up::proof_answer,
        types::{Challenge, Factor, FactorResult, FactorType},
    },
};

/// Input of `login`.
#[derive(InputObject)]
pub struct LoginInput {
    /// The login name, in any width, case or Unicode composition.
    #[graphql(validator(max_length = 256))]
    pub login: String,
    /// The password.
    #[graphql(validator(max_length = 256))]
    pub password: String,
    /// A device token from an earlier `completeLogin(rememberDevice: true)` of this user:
    /// with the right password, the second factor is skipped.
    #[graphql(validator(max_length = 128))]
    pub device_token: Option<String>,
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
    /// Remember this device: a `SUCCESS` also returns `deviceToken` (when trusted devices
    /// are on, `TESSERA_TRUSTED_DEVICE_DAYS` > 0).
    #[graphql(default)]
    pub remember_device: bool,
    /// For a WebAuthn factor, instead of `passCode`: the assertion (`credential.toJSON()`).
    pub webauthn: Option<async_graphql::Json<serde_json::Value>>,
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
    /// `completeLogin` with `rememberDevice`: the device token for later logins (shown once;
    /// keep it like a password, e.g. in an HttpOnly cookie). Null when trusted devices are off.
    pub device_token: Option<String>,
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
    /// Days a remembered device stays trusted, as the policy sets it (0: no device is
    /// trusted); null: the server's `TESSERA_TRUSTED_DEVICE_DAYS` applies.
    pub trusted_device_days: Option<i32>,
    /// The days in force: `trustedDeviceDays`, else the server's setting. 0: `rememberDevice`
    /// gives no `deviceToken`, and device tokens given earlier skip no factor.
    pub effective_trusted_device_days: i32,
}

impl MfaPolicy {
    /// The policy as shown, with the server's `TESSERA_TRUSTED_DEVICE_DAYS`.
    pub(crate) fn new(p: &policy::MfaPolicy, server_days: u32) -> Self {
        let days = |d: u32| i32::try_from(d).unwrap_or(i32::MAX);
        Self {
            mode: p.mode.into(),
            allowed_factor_types: p.allowed_factor_types.iter().map(|t| (*t).into()).collect(),
            trusted_device_days: p.trusted_device_days.map(days),
            effective_trusted_device_days: days(p.trusted_device_days(server_days)),
        }
    }
}

/// Input of `setMfaPolicy`. The policy is replaced whole: a field left out takes its default.
#[derive(InputObject)]
pub struct SetMfaPolicyInput {
    /// Whether a login asks for a second factor.
    pub mode: MfaMode,
    /// Factor types that may be enrolled and used to log in (at least one unless DISABLED).
    pub allowed_factor_types: Vec<FactorType>,
    /// Days a remembered device stays trusted, 0 to 365 (0: trust no device, and end the
    /// trust of those remembered before); null or left out: the server's
    /// `TESSERA_TRUSTED_DEVICE_DAYS`.
    #[graphql(validator(minimum = 0, maximum = 365))]
    pub trusted_device_days: Option<i32>,
}

impl LoginPayload {
    pub(crate) fn with_token(token: IssuedToken) -> Self {
        Self {
            access_token: Some(token.access_token),
            expires_at: Some(token.expires_at),
            ..Self::default()
        }
    }
}

#[derive(Default)]
pub struct LoginQuery;

#[Object]
impl LoginQuery {
    /// The MFA policy (any authenticated caller).
    async fn mfa_policy(&self, ctx: &Context<'_>) -> async_graphql::Result<MfaPolicy> {
        let state = ctx.state()?;
        let policy = app::login::policy(state, &ctx.call()).await?;
        Ok(MfaPolicy::new(&policy, state.config.trusted_device_days))
    }
}

#[derive(Default)]
pub struct LoginMutation;

#[Object]
impl LoginMutation {
    /// Checks a password (no token needed). A wrong password or unknown login answers
    /// `UNAUTHENTICATED` (`INVALID_CREDENTIALS`) after the same argon2 work either way, and the
    /// failure is counted before the answer (a known user's `LoginFailed`). After
    /// `TESSERA_LOGIN_LOCKOUT_THRESHOLD` consecutive wrong passwords the login (known or not)
    /// is throttled: `RATE_LIMITED` (`LOGIN_THROTTLED`) with `retryAfter`, no password checked. Then,
    /// by the MFA policy: a token, or `mfaRequired` with a challenge and the factors that can
    /// complete it, or (policy REQUIRED, no factor yet) an enrolment-only token.
    async fn login(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Login name and password.")] input: LoginInput,
    ) -> async_graphql::Result<LoginPayload> {
        let state = ctx.state()?;
        let now = state.clock.now();
        Ok(
            match app::login::login(
                state,
                &ctx.call(),
                &input.login,
                input.password,
                input.device_token.as_deref(),
            )
            .await?
            {
                LoginOutcome::MfaRequired {
                    challenge_id,
                    challenge,
                    factors,
                } => LoginPayload {
                    mfa_required: true,
                    challenge: Some(Challenge::from_aggregate(challenge_id, &challenge, now)),
                    // Only a password was proven so far: the factors show where codes go,
                    // masked.
                    factors: Some(
                        factors
                            .into_iter()
                            .map(|row| Factor::from_row(row, now).map(Factor::masked))
                            .collect::<Result<_, _>>()?,
                    ),
                    ..LoginPayload::default()
                },
                LoginOutcome::Token {
                    token,
                    enrollment_required,
                } => LoginPayload {
                    enrollment_required,
                    ..LoginPayload::with_token(token)
                },
            },
        )
    }

    /// Completes a login with a code of one of the factors `login` listed, or a recovery code
    /// (no token needed). `SUCCESS` gives the access token (`amr` = `pwd` and the method,
    /// `acr` = `mfa`); any other `factorResult` gives none. A completed challenge answers
    /// `CONFLICT`, an expired one `EXPIRED`.
    async fn complete_login(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "The login challenge, the factor used and its code (or a recovery code)."
        )]
        input: CompleteLoginInput,
    ) -> async_graphql::Result<LoginPayload> {
        let state = ctx.state()?;
        let challenge_id = parse_challenge_id(&input.challenge_id)?;
        let answer = proof_answer(
            input.factor_id,
            input.pass_code,
            input.recovery_code,
            input.webauthn,
        )?;
        let remember = input.remember_device;
        let (proof, token, device_token) =
            app::login::complete(state, &ctx.call(), challenge_id, answer, remember).await?;
        let now = state.clock.now();
        let challenge = Some(Challenge::from_aggregate(
            challenge_id,
            &proof.challenge,
            now,
        ));
        let factor_result = Some(FactorResult::from(proof.outcome));
        Ok(match token {
            Some(token) => LoginPayload {
                challenge,
                factor_result,
                device_token,
                ..LoginPayload::with_token(token)
            },
            None => LoginPayload {
                mfa_required: true,
                challenge,
                factor_result,
                ..LoginPayload::default()
            },
        })
    }

    /// Replaces the MFA policy (admins only).
    async fn set_mfa_policy_v2(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The new policy.")] input: SetMfaPolicyInput,
    ) -> async_graphql::Result<SetMfaPolicyPayload> {
        Ok(SetMfaPolicyPayload {
            policy: set_policy(ctx, input).await?,
        })
    }

    /// Replaces the MFA policy (admins only), answering the bare policy.
    #[graphql(
        deprecation = "Use `setMfaPolicyV2`: the same input, the policy in `SetMfaPolicyPayload.policy`. Kept for at least one release."
    )]
    async fn set_mfa_policy(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The new policy.")] input: SetMfaPolicyInput,
    ) -> async_graphql::Result<MfaPolicy> {
        Ok(set_policy(ctx, input).await?)
    }
}

/// What `setMfaPolicyV2` answers.
#[derive(SimpleObject)]
pub struct SetMfaPolicyPayload {
    /// The policy now in force.
    pub policy: MfaPolicy,
}

async fn set_policy(ctx: &Context<'_>, input: SetMfaPolicyInput) -> AppResult<MfaPolicy> {
    let state = ctx.state()?;
    // The validator keeps it within 0..=365; a negative number cannot get here.
    let days = input
        .trusted_device_days
        .map(|d| u32::try_from(d).unwrap_or(u32::MAX));
    let policy = app::login::set_policy(
        state,
        &ctx.call(),
        input.mode.into(),
        input
            .allowed_factor_types
            .into_iter()
            .map(Into::into)
            .collect(),
        days,
    )
    .await?;
    Ok(MfaPolicy::new(&policy, state.config.trusted_device_days))
}
