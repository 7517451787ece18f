//! Enrolment: `enrollFactor` (TOTP: a fresh secret, shown once; SMS and e-mail: the first code
//! sent at once) and `activateFactor` (the first correct code makes the factor `ACTIVE`; the
//! user's first active factor brings the first recovery codes).

use rand::RngCore;
use tessera_domain::{
    challenge::Challenge,
    factor::{
        Enroll, Factor, FactorCommand, FactorError, FactorOutcome, FactorType, NewCode, OobSpec,
        TotpSpec,
        totp::{self, Provisioning, TotpParams},
    },
    ids::{ChallengeId, FactorId, UserId},
    policy::POLICY_ID,
    secret::{PassCode, SecretBytes},
    user::User,
};

use crate::{
    app::{
        AppError, AppResult, Call,
        codes::{IssuedCode, draw_code, factor_type_not_allowed, record_and_deliver},
        prove::{Proved, authorized_factor, prove},
        recovery::issue_recovery_codes,
    },
    state::AppState,
};

/// What `enrollFactor` asks for.
#[derive(Debug)]
pub struct Enrolment {
    /// The owner.
    pub user_id: UserId,
    /// The kind of factor.
    pub factor_type: FactorType,
    /// For SMS factors (else the user's phone number).
    pub phone_number: Option<String>,
    /// For e-mail factors (else the user's address).
    pub email: Option<String>,
    /// A label.
    pub label: Option<String>,
}

/// A new factor, pending activation (no `Debug`: it holds the TOTP secret).
pub struct Enrolled {
    /// Its id.
    pub factor_id: FactorId,
    /// The factor.
    pub factor: Factor,
    /// TOTP: what an authenticator app needs, shown this once.
    pub totp: Option<Provisioning>,
    /// SMS and e-mail: the challenge of the activation code just sent.
    pub challenge: Option<(ChallengeId, Challenge)>,
    /// WebAuthn: the creation options (`publicKey`) for the browser.
    pub webauthn: Option<serde_json::Value>,
}

/// `enrollFactor`.
///
/// # Errors
/// Not the caller's; unknown user; a type the policy does not allow or Tessera does not have;
/// the factor's own checks (destination, label); store errors.
pub async fn enroll(state: &AppState, call: &Call, input: Enrolment) -> AppResult<Enrolled> {
    let caller = call.caller()?;
    if !caller.may_enroll_for(input.user_id) {
        return Err(AppError::Forbidden);
    }
    let (user, _) = state.users.load(&input.user_id.to_string()).await?;
    if !user.exists() {
        return Err(AppError::not_found("USER_NOT_FOUND", "user not found"));
    }
    let (policy, _) = state.policy.load(POLICY_ID).await?;
    if !policy.allows(input.factor_type) {
        return Err(factor_type_not_allowed());
    }
    match input.factor_type {
        FactorType::Totp => enroll_totp(state, call, &user, input).await,
        FactorType::Sms | FactorType::Email => enroll_out_of_band(state, call, &user, input).await,
        FactorType::Webauthn => crate::app::passkeys::enroll(state, call, &user, input).await,
    }
}

async fn enroll_totp(
    state: &AppState,
    call: &Call,
    user: &User,
    input: Enrolment,
) -> AppResult<Enrolled> {
    let mut secret = vec![0u8; totp::MIN_SECRET_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let secret = SecretBytes::new(secret);
    let params = TotpParams::default();
    let factor_id = FactorId::generate();
    let key = factor_id.to_string();
    let command = FactorCommand::Enroll(Enroll {
        factor_id,
        user_id: input.user_id,
        factor_type: input.factor_type,
        label: input.label,
        totp: Some(TotpSpec {
            secret: secret.clone(),
            params,
        }),
        oob: None,
        webauthn: None,
    });
    let committed = state
        .factors
        .execute(&key, command, &call.metadata())
        .await?;
    state.settle(&key, &committed).await;
    let provisioning = totp::provisioning(
        params,
        secret.expose(),
        &state.config.totp_issuer,
        &user.login,
    )
    .map_err(AppError::internal)?;
    Ok(Enrolled {
        factor_id,
        factor: committed.state,
        totp: Some(provisioning),
        challenge: None,
        webauthn: None,
    })
}

/// Enrols an SMS or e-mail factor and sends its activation code.
async fn enroll_out_of_band(
    state: &AppState,
    call: &Call,
    user: &User,
    input: Enrolment,
) -> AppResult<Enrolled> {
    let destination = match input.factor_type {
        FactorType::Sms => input.phone_number.or_else(|| user.phone_number.clone()),
        _ => input.email.or_else(|| user.email.clone()),
    };
    let factor_id = FactorId::generate();
    let challenge_id = ChallengeId::generate();
    let code = draw_code();
    let command = FactorCommand::Enroll(Enroll {
        factor_id,
        user_id: input.user_id,
        factor_type: input.factor_type,
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
        webauthn: None,
    });
    let key = factor_id.to_string();
    let committed = state
        .factors
        .execute(&key, command, &call.metadata())
        .await?;
    state.settle(&key, &committed).await;
    let challenge = record_and_deliver(
        state,
        call,
        IssuedCode {
            factor_id,
            issued: &committed,
            challenge_id,
            code: &code,
            new_challenge: true,
        },
    )
    .await?;
    Ok(Enrolled {
        factor_id,
        factor: committed.state,
        totp: None,
        challenge: Some((challenge_id, challenge)),
        webauthn: None,
    })
}

/// What `activateFactor` came to.
#[derive(Debug)]
pub struct Activation {
    /// The proof.
    pub proved: Proved,
    /// Ten recovery codes when this was the user's first activated factor; shown once.
    pub recovery_codes: Option<Vec<String>>,
}

/// `activateFactor`: a correct code from a pending factor makes it active.
///
/// # Errors
/// Not found, not the caller's; store errors.
pub async fn activate(
    state: &AppState,
    call: &Call,
    factor_id: FactorId,
    pass_code: PassCode,
) -> AppResult<Activation> {
    let loaded = authorized_factor(state, call, factor_id, true).await?;
    let owner = loaded.0.user_id.ok_or(FactorError::NotFound)?;
    let proved = prove(
        state,
        call,
        factor_id,
        loaded,
        FactorCommand::Activate { pass_code },
    )
    .await?;
    let recovery_codes = if proved.outcome == FactorOutcome::Success {
        issue_recovery_codes(state, call, owner, true).await?
    } else {
        None
    };
    Ok(Activation {
        proved,
        recovery_codes,
    })
}
