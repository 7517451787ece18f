//! Factors: `enrollFactor`, `activateFactor`, `verifyFactor`, `removeFactor`, `factor`.

use async_graphql::{Context, ID, InputObject, Json, Object, SimpleObject};
use chrono::{DateTime, Utc};
use serde_json::Value;
use tessera_domain::factor::totp::Provisioning;

use crate::{
    app::{
        self, AppResult,
        enrol::{Enrolled, Enrolment},
        factors::FactorView,
    },
    graphql::{
        ContextExt,
        passkey::WebAuthnOptions,
        types::{Challenge, Factor, FactorResult, FactorType},
        user::parse_user_id,
    },
};

/// Input of `enrollFactor`.
#[derive(InputObject)]
pub struct EnrollFactorInput {
    /// The owner.
    pub user_id: ID,
    /// `TOTP`, `SMS`, `EMAIL` or `WEBAUTHN`.
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
    /// A step-up challenge of the user, completed within `TESSERA_REAUTH_SECONDS`: the fresh
    /// proof a user token needs for this change (`FORBIDDEN`, reason
    /// `REAUTHENTICATION_REQUIRED`, without it), unless its login used a second factor that
    /// recently. Admin keys need none.
    /// The user's first factor needs none.
    pub step_up_challenge_id: Option<ID>,
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
    /// For WEBAUTHN: the creation options for `navigator.credentials.create`.
    pub webauthn: Option<WebAuthnOptions>,
}

/// Input of `activateFactor`.
#[derive(InputObject)]
pub struct ActivateFactorInput {
    /// The pending factor.
    pub factor_id: ID,
    /// The code from the authenticator (TOTP, SMS, e-mail).
    pub pass_code: Option<String>,
    /// For WEBAUTHN, instead of `passCode`: the registration response
    /// (`credential.toJSON()` of `navigator.credentials.create`).
    pub webauthn: Option<Json<Value>>,
    /// A step-up challenge of the user, completed within `TESSERA_REAUTH_SECONDS`: the fresh
    /// proof a user token needs for this change (`FORBIDDEN`, reason
    /// `REAUTHENTICATION_REQUIRED`, without it), unless its login used a second factor that
    /// recently. Admin keys need none.
    /// The user's first factor needs none.
    pub step_up_challenge_id: Option<ID>,
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
    /// The code from the authenticator (TOTP, SMS, e-mail).
    pub pass_code: Option<String>,
    /// For WEBAUTHN, instead of `passCode`: the assertion (`credential.toJSON()` of
    /// `navigator.credentials.get`) answering the options of `challengeFactor`.
    pub webauthn: Option<Json<Value>>,
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
    /// A step-up challenge of the user, completed within `TESSERA_REAUTH_SECONDS`: the fresh
    /// proof a user token needs for this change (`FORBIDDEN`, reason
    /// `REAUTHENTICATION_REQUIRED`, without it), unless its login used a second factor that
    /// recently. Admin keys need none.
    pub step_up_challenge_id: Option<ID>,
}

#[derive(Default)]
pub struct FactorQuery;

/// Parses a `stepUpChallengeId` argument; a malformed id is bad input.
pub(crate) fn step_up(id: Option<&ID>) -> AppResult<Option<tessera_domain::ids::ChallengeId>> {
    id.map(|id| super::challenge::parse_challenge_id(id))
        .transpose()
}

/// What answers `activateFactor` or `verifyFactor`: a code, or a WebAuthn response.
enum Answer {
    Code(tessera_domain::secret::PassCode),
    WebAuthn(Value),
}

/// Exactly one of `passCode` and `webauthn`.
fn answer(pass_code: Option<String>, webauthn: Option<Json<Value>>) -> AppResult<Answer> {
    match (pass_code, webauthn) {
        (Some(code), None) => Ok(Answer::Code(app::prove::pass_code(code)?)),
        (None, Some(Json(json))) => Ok(Answer::WebAuthn(json)),
        _ => Err(app::AppError::bad_input(
            "ANSWER_REQUIRED",
            "give passCode, or webauthn for a WEBAUTHN factor",
        )),
    }
}

/// Parses a factor id argument; a malformed id is bad input.
pub(crate) fn parse_factor_id(id: &str) -> AppResult<tessera_domain::ids::FactorId> {
    tessera_domain::ids::FactorId::parse(id)
        .ok_or_else(|| app::AppError::bad_input("INVALID_ID", "factorId is not a valid id"))
}

impl From<Provisioning> for TotpActivation {
    fn from(p: Provisioning) -> Self {
        Self {
            secret_base32: p.secret_base32,
            otpauth_uri: p.otpauth_uri,
            qr_code_png: format!("data:image/png;base64,{}", p.qr_png_base64),
        }
    }
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
        let state = ctx.state()?;
        let id = parse_factor_id(&id)?;
        Ok(
            match app::factors::get(state, &ctx.call(), id, as_of).await? {
                None => None,
                Some(FactorView::Current(row)) => Some(Factor::from_row(row, state.clock.now())?),
                Some(FactorView::AsOf(f, at)) => Some(Factor::from_aggregate(id, &f, at)),
            },
        )
    }
}

#[derive(Default)]
pub struct FactorMutation;

#[Object]
impl FactorMutation {
    /// Enrols a factor, pending activation. For TOTP, returns the secret, otpauth URI and QR
    /// code once; they are never shown again. SMS and e-mail factors are sent their first code.
    async fn enroll_factor(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The user, the factor type and its destination or label.")]
        input: EnrollFactorInput,
    ) -> async_graphql::Result<EnrollFactorPayload> {
        let state = ctx.state()?;
        let enrolment = Enrolment {
            user_id: parse_user_id(&input.user_id)?,
            factor_type: input.factor_type.into(),
            phone_number: input.phone_number,
            email: input.email,
            label: input.label,
            step_up: step_up(input.step_up_challenge_id.as_ref())?,
        };
        let Enrolled {
            factor_id,
            factor,
            totp,
            challenge,
            webauthn,
        } = app::enrol::enroll(state, &ctx.call(), enrolment).await?;
        let now = state.clock.now();
        Ok(EnrollFactorPayload {
            factor: Factor::from_aggregate(factor_id, &factor, now),
            totp: totp.map(Into::into),
            challenge: challenge.map(|(id, c)| Challenge::from_aggregate(id, &c, now)),
            webauthn: webauthn.map(Into::into),
        })
    }

    /// Activates a pending factor with a code from it.
    async fn activate_factor(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The pending factor and the code that proves it.")]
        input: ActivateFactorInput,
    ) -> async_graphql::Result<ActivateFactorPayload> {
        let state = ctx.state()?;
        let id = parse_factor_id(&input.factor_id)?;
        let step_up = step_up(input.step_up_challenge_id.as_ref())?;
        let activation = match answer(input.pass_code, input.webauthn)? {
            Answer::Code(code) => {
                app::enrol::activate(state, &ctx.call(), id, code, step_up).await?
            }
            Answer::WebAuthn(json) => {
                let response = app::passkeys::response(json)?;
                app::passkeys::activate(state, &ctx.call(), id, response, step_up).await?
            }
        };
        Ok(ActivateFactorPayload {
            factor_result: activation.proved.outcome.into(),
            factor: Factor::from_aggregate(id, &activation.proved.factor, state.clock.now()),
            recovery_codes: activation.recovery_codes,
        })
    }

    /// Checks a code from an active factor. A wrong code is `REJECTED`, not an error.
    async fn verify_factor(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The factor and the code to check.")] input: VerifyFactorInput,
    ) -> async_graphql::Result<VerifyFactorPayload> {
        let state = ctx.state()?;
        let id = parse_factor_id(&input.factor_id)?;
        let proved = match answer(input.pass_code, input.webauthn)? {
            Answer::Code(code) => app::prove::verify(state, &ctx.call(), id, code).await?,
            Answer::WebAuthn(json) => {
                let response = app::passkeys::response(json)?;
                app::passkeys::verify(state, &ctx.call(), id, response).await?
            }
        };
        Ok(VerifyFactorPayload {
            factor_result: proved.outcome.into(),
            factor: Some(Factor::from_aggregate(
                id,
                &proved.factor,
                state.clock.now(),
            )),
        })
    }

    /// Removes a factor for good.
    async fn remove_factor_v2(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The factor to remove.")] input: RemoveFactorInput,
    ) -> async_graphql::Result<RemoveFactorPayload> {
        Ok(RemoveFactorPayload {
            factor: remove(ctx, input).await?,
        })
    }

    /// Removes a factor for good, answering the bare factor (see `removeFactorV2`).
    #[graphql(
        deprecation = "Use `removeFactorV2`: the same input, the factor in `RemoveFactorPayload.factor`. Kept for at least one release."
    )]
    async fn remove_factor(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The factor to remove.")] input: RemoveFactorInput,
    ) -> async_graphql::Result<Factor> {
        Ok(remove(ctx, input).await?)
    }
}

/// What `removeFactorV2` answers.
#[derive(SimpleObject)]
pub struct RemoveFactorPayload {
    /// The factor, now `REMOVED`.
    pub factor: Factor,
}

async fn remove(ctx: &Context<'_>, input: RemoveFactorInput) -> AppResult<Factor> {
    let state = ctx.state()?;
    let id = parse_factor_id(&input.factor_id)?;
    let step_up = step_up(input.step_up_challenge_id.as_ref())?;
    let factor = app::factors::remove(state, &ctx.call(), id, step_up).await?;
    Ok(Factor::from_aggregate(id, &factor, state.clock.now()))
}
