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
    proof::AccountChange,
    user::User,
};
use tessera_store::{Joint, Then, execute_with};
use webauthn_rs::prelude::{Passkey, PublicKeyCredential, RegisterPublicKeyCredential};

use crate::{
    app::{
        AppError, AppResult, Call,
        enrol::{Activation, Enrolled, Enrolment},
        prove::{self, Proved, authorized_factor},
        reauth::require_fresh_proof,
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
    step_up: Option<ChallengeId>,
) -> AppResult<Activation> {
    let loaded = authorized_factor(state, call, factor_id, true).await?;
    let owner = loaded.0.user_id.ok_or(FactorError::NotFound)?;
    require_fresh_proof(state, call, owner, AccountChange::AddFactor, step_up).await?;
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
    crate::app::enrol::end_enrollment_token(state, call, owner, outcome).await?;
    Ok(Activation {
        proved: Proved {
            outcome,
            factor: committed.state,
        },
        recovery_codes,
    })
}

/// `removeFactor` of an active WebAuthn factor: the removal and the release of its credential
/// id in one commit, so the id is free again (the same authenticator may register it anew)
/// and a passkey login with it finds no factor. The caller has authorised the removal.
///
/// # Errors
/// The factor's own (already removed); store errors.
pub(crate) async fn remove(
    state: &AppState,
    call: &Call,
    factor_id: FactorId,
    loaded: (Factor, usize),
) -> AppResult<Factor> {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let raw_id = loaded
        .0
        .webauthn
        .as_ref()
        .and_then(|c| URL_SAFE_NO_PAD.decode(&c.credential_id).ok())
        .ok_or_else(|| AppError::internal("a registered passkey without its credential id"))?;
    let (factor_key, credential) = (factor_id.to_string(), credential_key(&raw_id));
    let then = Then {
        admit: |_: &WebAuthnCredential| true,
        // Only the holder releases: an id that was never claimed (or is another factor's)
        // is left alone.
        follow: |events: &[EventEnvelope<Factor>], c: &WebAuthnCredential| {
            (c.factor_id == Some(factor_id)
                && events
                    .iter()
                    .any(|e| matches!(e.payload, FactorEvent::Removed(_))))
            .then_some(CredentialCommand::Release { factor_id })
        },
    };
    let joint = execute_with(
        (&state.factors, &factor_key, Some(loaded)),
        FactorCommand::Remove,
        (&state.credentials, &credential, None),
        then,
        &call.metadata(),
    )
    .await?;
    let committed = match joint {
        Joint::Committed(committed, _) => committed,
        Joint::Refused(..) => return Err(AppError::internal("a removal was not admitted")),
    };
    state.settle(&factor_key, &committed).await;
    Ok(committed.state)
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
        discoverable: false,
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

/// A passwordless login's ceremony, just started.
#[derive(Debug)]
pub struct PasskeyLoginStarted {
    /// The challenge's id.
    pub challenge_id: ChallengeId,
    /// The challenge.
    pub challenge: Challenge,
    /// The request options (`publicKey`) for `navigator.credentials.get`.
    pub public_key: Value,
}

/// Hash domain of client addresses in the passkey-login budget's keys.
const START_DOMAIN: &str = "passkey-login-start";

/// Counts a `startPasskeyLogin` against the caller's address's budget
/// (`TESSERA_PASSKEY_LOGIN_STARTS_PER_MINUTE`, a fixed window shared by every node): each
/// start writes a challenge stream, and nobody has to show anything to ask for one.
///
/// # Errors
/// `RATE_LIMITED` (`PASSKEY_LOGIN_RATE_LIMITED`) with the seconds left; store errors.
async fn ensure_start_budget(state: &AppState, call: &Call) -> AppResult<()> {
    use tessera_store::limits::{Window, hit};
    let budget = state.config.passkey_login_starts_per_minute;
    let Some(ip) = call.meta.client_ip.as_deref().filter(|_| budget > 0) else {
        return Ok(());
    };
    let now = state.clock.now();
    let window = Window {
        length: chrono::TimeDelta::minutes(1),
    };
    let key = format!(
        "passkey-login:ip:{}",
        state.keyed_hasher.hash(START_DOMAIN, ip)
    );
    let n = hit(&state.db, &key, window, now)
        .await
        .map_err(AppError::internal)?;
    if n > i64::from(budget) {
        return Err(AppError::RateLimited {
            reason: "PASSKEY_LOGIN_RATE_LIMITED",
            message: "too many passkey logins started from this address; try again later".into(),
            retry_after_seconds: window.seconds_left(now),
        });
    }
    Ok(())
}

/// `startPasskeyLogin`: a login challenge with a WebAuthn ceremony and no user yet. Without a
/// login the options name no credential (a discoverable credential answers; with
/// `mediation: "conditional"` the browser offers its passkeys in autofill). With the login of
/// a user who has passkeys the options name them; an unknown login, or one without passkeys,
/// gets the discoverable ceremony, so the answer does not tell who exists.
///
/// # Errors
/// `PASSKEY_LOGIN_RATE_LIMITED`; store errors.
pub async fn start_login(
    state: &AppState,
    call: &Call,
    login: Option<&str>,
) -> AppResult<PasskeyLoginStarted> {
    ensure_start_budget(state, call).await?;
    let webauthn = state.factors.services().relying_party.webauthn();
    let mut passkeys = Vec::new();
    if let Some(login) = login {
        let user_id = crate::app::users::resolve_login(state, login).await?;
        for row in state
            .queries
            .factors_of_user(&user_id.to_string())
            .await
            .map_err(AppError::internal)?
        {
            if row.factor_type() != Some(FactorType::Webauthn)
                || !row
                    .status_at(state.clock.now())
                    .is_some_and(tessera_domain::proof::can_prove)
            {
                continue;
            }
            let (factor, _) = state.factors.load(&row.id).await?;
            if let Ok(passkey) = passkey_of(&factor) {
                passkeys.push(passkey);
            }
        }
    }
    let (options, ceremony, discoverable) = if passkeys.is_empty() {
        let (options, ceremony) = webauthn
            .start_discoverable_authentication()
            .map_err(AppError::internal)?;
        let ceremony = serde_json::to_value(&ceremony).map_err(AppError::internal)?;
        (public_key(&options)?, ceremony, true)
    } else {
        let (options, ceremony) = webauthn
            .start_passkey_authentication(&passkeys)
            .map_err(AppError::internal)?;
        let ceremony = serde_json::to_value(&ceremony).map_err(AppError::internal)?;
        (public_key(&options)?, ceremony, false)
    };
    let challenge_id = ChallengeId::generate();
    let issue = ChallengeCommand::IssuePasskeyLogin(tessera_domain::challenge::PasskeyLoginIssue {
        challenge_id,
        ceremony,
        discoverable,
        ttl: state.factors.services().policy.webauthn_timeout,
    });
    let committed = state
        .challenges
        .execute(&challenge_id.to_string(), issue, &call.metadata())
        .await?;
    state.nudge();
    Ok(PasskeyLoginStarted {
        challenge_id,
        challenge: committed.state,
        public_key: options,
    })
}

/// What `completePasskeyLogin` came to.
#[derive(Debug)]
pub struct PasskeyLogin {
    /// The answer.
    pub outcome: FactorOutcome,
    /// The challenge after it.
    pub challenge: Challenge,
    /// On `SUCCESS`: the access token (`amr` = `hwk`).
    pub token: Option<crate::app::login::IssuedToken>,
    /// On `SUCCESS` with `rememberDevice`, when the policy trusts devices: the device token.
    pub device_token: Option<String>,
}

/// `completePasskeyLogin`: the credential the assertion names leads to its factor and user;
/// the factor takes the challenge's ceremony (once: an answered one is never taken again) and
/// checks the assertion under the same lockout, hard lock and MFA policy as every proof; the
/// challenge completes once. A removed or locked passkey logs nobody in.
///
/// # Errors
/// Not a passkey-login challenge; completed by another answer meanwhile (`CONFLICT`); a policy
/// that does not allow WebAuthn; store errors.
pub async fn complete_login(
    state: &AppState,
    call: &Call,
    challenge_id: ChallengeId,
    response: PublicKeyCredential,
    remember_device: bool,
) -> AppResult<PasskeyLogin> {
    use tessera_domain::{
        challenge::{ChallengeError, ChallengeStatus, Method},
        policy::POLICY_ID,
        proof::{self as rules, ChallengeAnswer},
    };
    let metadata = call.metadata();
    let challenge_key = challenge_id.to_string();
    let challenge = prove::load_challenge(state, challenge_id).await?;
    if challenge.purpose != Some(ChallengePurpose::PasskeyLogin) {
        return Err(ChallengeError::WrongPurpose.into());
    }
    let answered = |outcome, challenge| {
        Ok(PasskeyLogin {
            outcome,
            challenge,
            token: None,
            device_token: None,
        })
    };
    match challenge.status_at(state.clock.now()) {
        ChallengeStatus::Completed => return answered(FactorOutcome::PasscodeReplayed, challenge),
        ChallengeStatus::Expired => {
            let expired = state
                .challenges
                .execute(&challenge_key, ChallengeCommand::Expire, &metadata)
                .await?;
            return answered(FactorOutcome::Expired, expired.state);
        }
        _ => {}
    }
    let (credential, _) = state
        .credentials
        .load(&credential_key(&response.raw_id))
        .await?;
    let (Some(factor_id), Some(owner)) = (credential.factor_id, credential.user_id) else {
        // No factor has this credential: nobody to count a failure against, so it is recorded
        // on the challenge, which exists already (its start is rate limited) and ends after
        // five failures. Keying a record by the credential id instead would let an attacker
        // create a stream per made-up id.
        let recorded = state
            .challenges
            .execute(
                &challenge_key,
                ChallengeCommand::RecordUnknownCredential,
                &metadata,
            )
            .await?;
        return answered(FactorOutcome::Rejected, recorded.state);
    };
    crate::app::users::ensure_active_id(state, owner).await?;
    let (policy, _) = state.policy.load(POLICY_ID).await?;
    if !policy.allows(FactorType::Webauthn) {
        return Err(crate::app::codes::factor_type_not_allowed());
    }
    let ceremony = challenge
        .ceremony
        .as_deref()
        .cloned()
        .ok_or_else(|| AppError::internal("passkey login challenge without a ceremony"))?;
    let request = FactorCommand::RequestAssertion(AssertionRequest {
        challenge_id,
        standalone: false,
        state: ceremony,
        discoverable: challenge.discoverable,
    });
    let factor_key = factor_id.to_string();
    match state.factors.execute(&factor_key, request, &metadata).await {
        // Taken by an earlier answer of this challenge: the factor answers it as a replay.
        Ok(_) | Err(AggregateError::UserError(FactorError::CeremonyAnswered)) => {}
        Err(AggregateError::UserError(FactorError::LockedOut)) => {
            return answered(FactorOutcome::LockedOut, challenge);
        }
        Err(AggregateError::UserError(
            FactorError::Removed | FactorError::NotActive | FactorError::NotFound,
        )) => return answered(FactorOutcome::Rejected, challenge),
        Err(e) => return Err(e.into()),
    }
    let command = FactorCommand::VerifyWebAuthn {
        response: Box::new(response),
        challenge_id: Some(challenge_id),
    };
    let Some(committed) =
        prove::check_and_count(state, &metadata, (factor_id, None), command, owner).await?
    else {
        return answered(FactorOutcome::LockedOut, challenge);
    };
    state.settle(&factor_key, &committed).await;
    let events = committed.payloads();
    let outcome =
        outcome_of(&events).ok_or_else(|| AppError::internal("proof command wrote no outcome"))?;
    let answer = ChallengeAnswer {
        purpose: ChallengePurpose::PasskeyLogin,
        owner,
        factor_id,
        factor_type: FactorType::Webauthn,
        outcome,
        events: &events,
    };
    let command = rules::answer_challenge(&answer)
        .ok_or_else(|| AppError::internal("a passkey proves no challenge method"))?;
    let recorded = state
        .challenges
        .execute(&challenge_key, command, &metadata)
        .await?;
    let completed = recorded
        .payloads()
        .iter()
        .any(|e| matches!(e, tessera_domain::challenge::ChallengeEvent::Completed(_)));
    let (token, device_token) = if outcome == FactorOutcome::Success && completed {
        let device_token = if remember_device {
            crate::app::devices::trust(state, call, owner, &policy).await?
        } else {
            None
        };
        let (user, _) = state.users.load(&owner.to_string()).await?;
        let token = crate::app::login::token(
            state,
            owner,
            &[Method::Webauthn.amr()],
            crate::tokens::Scope::User,
            user.token_generation,
        )?;
        (Some(token), device_token)
    } else {
        (None, None)
    };
    Ok(PasskeyLogin {
        device_token,
        outcome: match (outcome, completed) {
            // A right answer that reached the challenge after its time is no success.
            (FactorOutcome::Success, false) => FactorOutcome::Expired,
            (o, _) => o,
        },
        challenge: recorded.state,
        token,
    })
}
