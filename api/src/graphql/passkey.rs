//! Passkeys: the WebAuthn options type handed to browsers, and the passwordless login
//! (`startPasskeyLogin`, `completePasskeyLogin`).

use async_graphql::{Context, ID, InputObject, Json, Object, SimpleObject};
use serde_json::Value;

use crate::{
    app,
    graphql::{
        ContextExt,
        challenge::parse_challenge_id,
        login::LoginPayload,
        types::{Challenge, FactorResult},
    },
};

/// WebAuthn options in the Level 3 JSON form: pass `publicKey` to
/// `PublicKeyCredential.parseCreationOptionsFromJSON` (enrolment) or
/// `parseRequestOptionsFromJSON` (an assertion), and send back `credential.toJSON()`.
#[derive(SimpleObject)]
#[graphql(name = "WebAuthnOptions")]
pub struct WebAuthnOptions {
    /// The `publicKey` options; binary members are base64url.
    pub public_key: Json<Value>,
}

impl From<Value> for WebAuthnOptions {
    fn from(public_key: Value) -> Self {
        Self {
            public_key: Json(public_key),
        }
    }
}

/// Input of `startPasskeyLogin`.
#[derive(InputObject, Default)]
pub struct StartPasskeyLoginInput {
    /// The login, if the page knows it: the options then name the user's passkeys. Without
    /// it they name none, and a discoverable credential answers (conditional UI, autofill).
    #[graphql(validator(max_length = 254))]
    pub login: Option<String>,
}

/// Result of `startPasskeyLogin`.
#[derive(SimpleObject)]
pub struct PasskeyLoginPayload {
    /// The login challenge; `completePasskeyLogin` answers it, once.
    pub challenge: Challenge,
    /// The request options for `navigator.credentials.get`.
    pub webauthn: WebAuthnOptions,
}

/// Input of `completePasskeyLogin`.
#[derive(InputObject)]
pub struct CompletePasskeyLoginInput {
    /// The challenge `startPasskeyLogin` returned.
    pub challenge_id: ID,
    /// The assertion: `credential.toJSON()` of `navigator.credentials.get`.
    pub webauthn: Json<Value>,
    /// Remember this device, as on `completeLogin`: a `SUCCESS` also returns `deviceToken`
    /// (null when the MFA policy trusts no device). A passkey needs no second factor, so the
    /// token matters only to a later password `login` from this device.
    #[graphql(default)]
    pub remember_device: bool,
}

#[derive(Default)]
pub struct PasskeyMutation;

#[Object]
impl PasskeyMutation {
    /// Starts a passwordless login with a passkey. Needs no token.
    async fn start_passkey_login(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Optionally the login, to name that user's passkeys.")] input: Option<
            StartPasskeyLoginInput,
        >,
    ) -> async_graphql::Result<PasskeyLoginPayload> {
        let state = ctx.state()?;
        let input = input.unwrap_or_default();
        let started =
            app::passkeys::start_login(state, &ctx.call(), input.login.as_deref()).await?;
        Ok(PasskeyLoginPayload {
            challenge: Challenge::from_aggregate(
                started.challenge_id,
                &started.challenge,
                state.clock.now(),
            ),
            webauthn: started.public_key.into(),
        })
    }

    /// Completes a passwordless login with a passkey's assertion: `SUCCESS` brings an access
    /// token whose `amr` is `["hwk"]`. Needs no token. A wrong or forged assertion is
    /// `REJECTED`, a second answer `PASSCODE_REPLAYED`, a late one `EXPIRED`.
    async fn complete_passkey_login(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The passkey-login challenge and the assertion.")]
        input: CompletePasskeyLoginInput,
    ) -> async_graphql::Result<LoginPayload> {
        let state = ctx.state()?;
        let challenge_id = parse_challenge_id(&input.challenge_id)?;
        let response = app::passkeys::response(input.webauthn.0)?;
        let login = app::passkeys::complete_login(
            state,
            &ctx.call(),
            challenge_id,
            response,
            input.remember_device,
        )
        .await?;
        let challenge = Some(Challenge::from_aggregate(
            challenge_id,
            &login.challenge,
            state.clock.now(),
        ));
        let factor_result = Some(FactorResult::from(login.outcome));
        Ok(match login.token {
            Some(token) => LoginPayload {
                challenge,
                factor_result,
                device_token: login.device_token,
                ..LoginPayload::with_token(token)
            },
            None => LoginPayload {
                challenge,
                factor_result,
                ..LoginPayload::default()
            },
        })
    }
}
