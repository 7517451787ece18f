//! Passkeys and security keys (`WEBAUTHN` factors): starting the registration and assertion
//! ceremonies (webauthn-rs draws their challenges here, as codes are drawn for SMS), handing
//! the browser its options in the WebAuthn Level 3 JSON forms, and reading the answers back.
//!
//! The ceremony state goes into the factor's events, never into an answer; the factor checks
//! each answer against it, once, within its lifetime. A credential id is claimed in its own
//! stream in the commit that activates the factor, so two users can never register one id.

use cqrs_es::{AggregateError, EventEnvelope};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tessera_domain::{
    challenge::{Challenge, ChallengeCommand, ChallengePurpose, Issue},
    credential::{CredentialCommand, CredentialError, WebAuthnCredential},
    factor::{
        AssertionRequest, Enroll, Factor, FactorCommand, FactorError, FactorEvent, FactorOutcome,
        FactorStatus, FactorType, MAX_WEBAUTHN_RESPONSE, WebAuthnSpec, outcome_of,
        webauthn::credential_key,
    },
    ids::{ChallengeId, FactorId},
    user::User,
};
use tessera_store::{Joint, Then, execute_with};
use webauthn_rs::prelude::{Passkey, PublicKeyCredential, RegisterPublicKeyCredential};

use crate::{
    app::{
        AppError, AppResult, Call,
        enrol::{Activation, Enrolled, Enrolment},
        prove::{self, Proved, authorized_factor},
        recovery::issue_recovery_codes,
    },
    state::AppState,
};

/// Reads a WebAuthn answer (`credential.toJSON()`): at most [`MAX_WEBAUTHN_RESPONSE`] bytes
/// as JSON, of the right shape. Anything else is bad input and writes nothing.
///
/// # Errors
/// `WEBAUTHN_RESPONSE_TOO_LARGE`, `MALFORMED_WEBAUTHN_RESPONSE`.
pub fn response<T: DeserializeOwned>(json: Value) -> AppResult<T> {
    let size = serde_json::to_vec(&json)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_WEBAUTHN_RESPONSE {
        return Err(AppError::bad_input(
            "WEBAUTHN_RESPONSE_TOO_LARGE",
            format!("webauthn must be at most {MAX_WEBAUTHN_RESPONSE} bytes of JSON"),
        ));
    }
    serde_json::from_value(json).map_err(|_| FactorError::MalformedWebAuthnResponse.into())
}

/// The `publicKey` member of webauthn-rs's options, as JSON.
fn public_key(options: &impl serde::Serialize) -> AppResult<Value> {
    let mut json = serde_json::to_value(options).map_err(AppError::internal)?;
    json.get_mut("publicKey")
        .map(Value::take)
        .ok_or_else(|| AppError::internal("WebAuthn options without publicKey"))
}

fn passkey_of(factor: &Factor) -> AppResult<Passkey> {
    let credential = factor.webauthn.as_ref().ok_or(FactorError::NotActive)?;
    serde_json::from_value(credential.passkey.clone()).map_err(AppError::internal)
}

/// Enrols a WebAuthn factor: the creation options (user verification required, a
/// discoverable credential preferred, the user's other credentials excluded) and the
/// registration state, kept by the factor.
///
/// # Errors
/// Store errors; the factor's own checks (label).
pub(crate) async fn enroll(
    state: &AppState,
    call: &Call,
    user: &User,
    input: Enrolment,
) -> AppResult<Enrolled> {
    let mut exclude = Vec::new();
    for row in state
        .queries
        .factors_of_user(&input.user_id.to_string())
        .await
        .map_err(AppError::internal)?
    {
        if row.factor_type() != Some(FactorType::Webauthn) {
            continue;
        }
        let (factor, _) = state.factors.load(&row.id).await?;
        if factor.status_at(state.clock.now()) != FactorStatus::Removed
            && let Ok(passkey) = passkey_of(&factor)
        {
            exclude.push(passkey.cred_id().clone());
        }
    }
    let display_name = user
        .display_name
        .clone()
        .unwrap_or_else(|| user.login.clone());
    let (options, registration) = state
        .factors
        .services()
        .relying_party
        .webauthn()
        .start_passkey_registration(
            input.user_id.0,
            &user.login,
            &display_name,
            Some(exclude).filter(|e| !e.is_empty()),
        )
        .map_err(AppError::internal)?;
    let mut public_key = public_key(&options)?;
    // webauthn-rs asks for no resident key so that security keys with little storage work;
    // the contract prefers a discoverable credential (passwordless login), which such keys
    // may still decline.
    if let Some(selection) = public_key
        .get_mut("authenticatorSelection")
        .and_then(Value::as_object_mut)
    {
        selection.insert("residentKey".into(), "preferred".into());
        selection.insert("requireResidentKey".into(), false.into());
    }
    let factor_id = FactorId::generate();
    let key = factor_id.to_string();
    let command = FactorCommand::Enroll(Enroll {
        factor_id,
        user_id: input.user_id,
        factor_type: FactorType::Webauthn,
        label: input.label,
        totp: None,
        oob: None,
        webauthn: Some(WebAuthnSpec {
            registration: serde_json::to_value(&registration).map_err(AppError::internal)?,
        }),
    });
    let committed = state
        .factors
        .execute(&key, command, &call.metadata())
        .await?;
    state.settle(&key, &committed).await;
    Ok(Enrolled {
        factor_id,
        factor: committed.state,
        totp: None,
        challenge: None,
        webauthn: Some(public_key),
    })
}

/// `activateFactor` with a registration response: the factor checks it against its
/// registration ceremony and, if it holds, becomes `ACTIVE` in the same commit that claims the
/// credential id. An id another factor claimed is refused and nothing is written.
///
/// # Errors
/// Not found, not the caller's, `CREDENTIAL_ALREADY_REGISTERED`; store errors.
pub async fn activate(
    state: &AppState,
    call: &Call,
    factor_id: FactorId,
    response: RegisterPublicKeyCredential,
) -> AppResult<Activation> {
    let loaded = authorized_factor(state, call, factor_id, true).await?;
    let owner = loaded.0.user_id.ok_or(FactorError::NotFound)?;
    crate::app::users::ensure_active_id(state, owner).await?;
    let (factor_key, credential) = (factor_id.to_string(), credential_key(&response.raw_id));
    let then = Then {
        admit: |c: &WebAuthnCredential| !c.is_claimed(),
        follow: |events: &[EventEnvelope<Factor>], _: &WebAuthnCredential| {
            events
                .iter()
                .any(|e| matches!(e.payload, FactorEvent::Activated(_)))
                .then_some(CredentialCommand::Claim {
                    factor_id,
                    user_id: owner,
                })
        },
    };
    let command = FactorCommand::ActivateWebAuthn {
        response: Box::new(response),
    };
    let joint = execute_with(
        (&state.factors, &factor_key, Some(loaded)),
        command,
        (&state.credentials, &credential, None),
        then,
        &call.metadata(),
    )
    .await;
    let committed = match joint {
        Ok(Joint::Committed(committed, _)) => committed,
        Ok(Joint::Refused(..)) => return Err(CredentialError::AlreadyRegistered.into()),
        Err(AggregateError::UserError(FactorError::EnrollmentExpired)) => {
            let (factor, _) = state.factors.load(&factor_key).await?;
            let proved = Proved {
                outcome: FactorOutcome::Expired,
                factor,
            };
            return Ok(Activation {
                proved,
                recovery_codes: None,
            });
        }
        Err(e) => return Err(e.into()),
    };
    state.settle(&factor_key, &committed).await;
    let outcome = outcome_of(&committed.payloads())
        .ok_or_else(|| AppError::internal("activation wrote no outcome"))?;
    let recovery_codes = if outcome == FactorOutcome::Success {
        issue_recovery_codes(state, call, owner, true).await?
    } else {
        None
    };
    Ok(Activation {
        proved: Proved {
            outcome,
            factor: committed.state,
        },
        recovery_codes,
    })
}

/// `challengeFactor` of a WebAuthn factor: request options naming its credential, for a new
/// `FACTOR` challenge (answered by `verifyFactor`) or for the open step-up or login challenge
/// `within` (answered by `completeStepUp` / `completeLogin`). The caller has checked who may
/// ask and that `within` is open and the user's.
///
/// # Errors
/// A factor that is not active, or locked; store errors.
pub(crate) async fn request_assertion(
    state: &AppState,
    call: &Call,
    factor_id: FactorId,
    factor: &Factor,
    within: Option<ChallengeId>,
) -> AppResult<(ChallengeId, Challenge, Value)> {
    let owner = factor.user_id.ok_or(FactorError::NotFound)?;
    let passkey = passkey_of(factor)?;
    let (options, authentication) = state
        .factors
        .services()
        .relying_party
        .webauthn()
        .start_passkey_authentication(&[passkey])
        .map_err(AppError::internal)?;
    let challenge_id = within.unwrap_or_else(ChallengeId::generate);
    let metadata = call.metadata();
    let request = FactorCommand::RequestAssertion(AssertionRequest {
        challenge_id,
        standalone: within.is_none(),
        state: serde_json::to_value(&authentication).map_err(AppError::internal)?,
    });
    state
        .factors
        .execute(&factor_id.to_string(), request, &metadata)
        .await?;
    let challenge = match within {
        Some(id) => prove::load_challenge(state, id).await?,
        None => {
            let issue = ChallengeCommand::Issue(Issue {
                challenge_id,
                user_id: owner,
                purpose: ChallengePurpose::Factor,
                factor_id: Some(factor_id),
                state: None,
                ttl: state.factors.services().policy.webauthn_timeout,
                code: None,
            });
            state
                .challenges
                .execute(&challenge_id.to_string(), issue, &metadata)
                .await?
                .state
        }
    };
    state.nudge();
    Ok((challenge_id, challenge, public_key(&options)?))
}

/// `verifyFactor` with an assertion: answers the factor's standalone ceremony, under the same
/// lockout and hard lock as a code.
///
/// # Errors
/// Not found, not the caller's, not active; store errors.
pub async fn verify(
    state: &AppState,
    call: &Call,
    factor_id: FactorId,
    response: PublicKeyCredential,
) -> AppResult<Proved> {
    let loaded = authorized_factor(state, call, factor_id, false).await?;
    let command = FactorCommand::VerifyWebAuthn {
        response: Box::new(response),
        challenge_id: None,
    };
    prove::prove(state, call, factor_id, loaded, command).await
}
