//! Enrolment: `enrollFactor` (TOTP: a fresh secret, shown once; SMS and e-mail: the first code
//! sent at once) and `activateFactor` (the first correct code makes the factor `ACTIVE`; the
//! user's first active factor brings the first recovery codes).

use rand::RngCore;
use tessera_domain::{
    ErrorKind,
    challenge::{Challenge, Channel},
    factor::{
        Enroll, Factor, FactorCommand, FactorError, FactorOutcome, FactorStatus, FactorType,
        NewCode, OobSpec, TotpSpec,
        totp::{self, Provisioning, TotpParams},
    },
    ids::{ChallengeId, FactorId, UserId},
    policy::POLICY_ID,
    proof::AccountChange,
    secret::{PassCode, SecretBytes},
    user::{User, UserCommand},
};

use crate::{
    app::{
        AppError, AppResult, Call,
        codes::{IssuedCode, admit_code, draw_code, factor_type_not_allowed, record_and_deliver},
        prove::{Proved, authorized_factor, prove},
        reauth::require_fresh_proof,
        recovery::issue_recovery_codes,
    },
    auth::Caller,
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
    /// A step-up of the user the caller completed: the fresh proof a user token needs when
    /// the user already has a factor ([`crate::app::reauth`]).
    pub step_up: Option<ChallengeId>,
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
/// Not the caller's; `REAUTHENTICATION_REQUIRED`, `USER_HARD_LOCKED`; unknown user; a type the policy does not allow or Tessera does not have;
/// the factor's own checks (destination, label); store errors.
pub async fn enroll(state: &AppState, call: &Call, input: Enrolment) -> AppResult<Enrolled> {
    let caller = call.caller()?;
    if !caller.may_enroll_for(input.user_id) {
        return Err(AppError::Forbidden);
    }
    require_fresh_proof(
        state,
        call,
        input.user_id,
        AccountChange::AddFactor,
        input.step_up,
    )
    .await?;
    let (user, _) = state.users.load(&input.user_id.to_string()).await?;
    if !user.exists() || user.is_deleted() {
        return Err(AppError::not_found("USER_NOT_FOUND", "user not found"));
    }
    let (policy, _) = state.policy.load(POLICY_ID).await?;
    if !policy.allows(input.factor_type) {
        return Err(factor_type_not_allowed());
    }
    ensure_room_for_a_factor(state, input.user_id, caller).await?;
    match input.factor_type {
        FactorType::Totp => enroll_totp(state, call, &user, input).await,
        FactorType::Sms | FactorType::Email => enroll_out_of_band(state, call, &user, input).await,
        FactorType::Webauthn => crate::app::passkeys::enroll(state, call, &user, input).await,
    }
}

/// Pending enrolments a user may have at once.
const MAX_PENDING_ENROLMENTS: usize = 3;

/// Refuses an enrolment beyond `TESSERA_MAX_FACTORS_PER_USER` factors (pending, active or
/// locked) or [`MAX_PENDING_ENROLMENTS`] pending ones: an enrolment-only token could otherwise
/// enrol factor after factor, each sending codes. An enrolment-only token enrols one factor:
/// none while another is pending (`ENROLLMENT_PENDING`); its activation ends the token.
async fn ensure_room_for_a_factor(
    state: &AppState,
    user: UserId,
    caller: &Caller,
) -> AppResult<()> {
    let now = state.clock.now();
    let rows = state.queries.factors_of_user(&user.to_string()).await?;
    let statuses: Vec<FactorStatus> = rows.iter().filter_map(|r| r.status_at(now)).collect();
    let live = statuses
        .iter()
        .filter(|s| {
            matches!(
                s,
                FactorStatus::PendingActivation | FactorStatus::Active | FactorStatus::LockedOut
            )
        })
        .count();
    let pending = statuses
        .iter()
        .filter(|s| **s == FactorStatus::PendingActivation)
        .count();
    let limit = |reason, message: &str| AppError::RateLimited {
        reason,
        message: message.into(),
        retry_after_seconds: 3600,
    };
    if live >= state.config.max_factors_per_user as usize {
        return Err(limit(
            "TOO_MANY_FACTORS",
            "the user has as many factors as allowed; remove one first",
        ));
    }
    if matches!(caller, Caller::Enrollment { .. }) && pending > 0 {
        return Err(AppError::Rejected {
            kind: ErrorKind::WrongState,
            reason: "ENROLLMENT_PENDING",
            message: "an enrolment-only token enrols one factor: activate the pending one".into(),
        });
    }
    if pending >= MAX_PENDING_ENROLMENTS {
        return Err(limit(
            "TOO_MANY_PENDING_ENROLLMENTS",
            "activate or remove a pending factor first",
        ));
    }
    Ok(())
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
    if let Some(destination) = &destination {
        let channel = match input.factor_type {
            FactorType::Sms => Channel::Sms,
            _ => Channel::Email,
        };
        admit_code(state, call, input.user_id, channel, destination, None).await?;
    }
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

/// An enrolment-only token is for one factor: the activation it makes ends the token (and
/// every older one of the user, with `SessionsRevoked`), so what it could do stops with the
/// job it was issued for. The next login asks for the new factor.
///
/// # Errors
/// Store errors.
pub(crate) async fn end_enrollment_token(
    state: &AppState,
    call: &Call,
    owner: UserId,
    outcome: FactorOutcome,
) -> AppResult<()> {
    if outcome == FactorOutcome::Success && matches!(call.caller()?, Caller::Enrollment { .. }) {
        state
            .users
            .execute(
                &owner.to_string(),
                UserCommand::EndEnrollment,
                &call.metadata(),
            )
            .await?;
    }
    Ok(())
}

/// `activateFactor`: a correct code from a pending factor makes it active. A user token needs
/// a fresh proof (`step_up`) unless this is the user's first factor.
///
/// # Errors
/// Not found, not the caller's; `REAUTHENTICATION_REQUIRED`; store errors.
pub async fn activate(
    state: &AppState,
    call: &Call,
    factor_id: FactorId,
    pass_code: PassCode,
    step_up: Option<ChallengeId>,
) -> AppResult<Activation> {
    let loaded = authorized_factor(state, call, factor_id, true).await?;
    let owner = loaded.0.user_id.ok_or(FactorError::NotFound)?;
    require_fresh_proof(state, call, owner, AccountChange::AddFactor, step_up).await?;
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
    end_enrollment_token(state, call, owner, proved.outcome).await?;
    Ok(Activation {
        proved,
        recovery_codes,
    })
}
