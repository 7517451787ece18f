//! Login with a second factor: [`login`] checks the password and, when the MFA policy and the
//! user's factors ask for it, opens a login challenge; [`complete`] answers it with a factor or
//! a recovery code and issues an access token. The MFA policy is read and set here too.
//!
//! Neither needs a token: they are how a login page gets one. The login challenge's id stands
//! for the password just checked; a proof of one of the user's factors is still needed to
//! complete it, and five failed attempts end it.

use chrono::{DateTime, Utc};
use tessera_domain::{
    challenge::{Challenge, ChallengeCommand, ChallengePurpose, Issue, Method},
    crypto::{dummy_password_hash, verify_password},
    factor::{FactorOutcome, FactorType},
    ids::{ChallengeId, UserId},
    policy::{self, MfaMode, MfaPolicy, MfaPolicyCommand, POLICY_ID},
    proof,
    secret::Secret,
    user::{LoginFailureReason, UserCommand},
};
use tessera_projections::read_model::FactorRow;

use crate::{
    app::{
        AppError, AppResult, Call,
        codes::factor_type_not_allowed,
        prove::{ChallengeProof, ProofAnswer, answer_challenge},
    },
    state::AppState,
    tokens::Scope,
};

/// An access token just issued.
#[derive(Debug)]
pub struct IssuedToken {
    /// The bearer token (a JWT).
    pub access_token: String,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
}

/// What a correct password leads to.
#[derive(Debug)]
pub enum LoginOutcome {
    /// A second factor must be proven: the login challenge, and the factors that can.
    MfaRequired {
        /// The challenge's id.
        challenge_id: ChallengeId,
        /// The challenge.
        challenge: Challenge,
        /// The factors that can complete it.
        factors: Vec<FactorRow>,
    },
    /// Done: a token (enrolment-only when the policy requires a factor the user lacks).
    Token {
        /// The token.
        token: IssuedToken,
        /// Whether it may only enrol and activate a first factor.
        enrollment_required: bool,
    },
}

/// An access token for `user`.
pub(crate) fn token(
    state: &AppState,
    user: UserId,
    amr: &[&str],
    scope: Scope,
) -> AppResult<IssuedToken> {
    let (access_token, claims) = state
        .tokens
        .issue(user, amr, scope, state.clock.now())
        .map_err(AppError::internal)?;
    let expires_at = DateTime::from_timestamp(claims.exp, 0)
        .ok_or_else(|| AppError::internal("token expiry out of range"))?;
    Ok(IssuedToken {
        access_token,
        expires_at,
    })
}

/// The factors that can complete a login: those that can prove ([`proof::can_prove`]), of a
/// type the policy allows.
async fn login_factors(
    state: &AppState,
    user: UserId,
    policy: &MfaPolicy,
) -> AppResult<Vec<FactorRow>> {
    let now = state.clock.now();
    let rows = state.queries.factors_of_user(&user.to_string()).await?;
    let mut factors = Vec::with_capacity(rows.len());
    for row in rows {
        let (Some(status), Some(factor_type)) = (row.status_at(now), row.factor_type()) else {
            return Err(AppError::internal(format!(
                "malformed factors_v1 row {}",
                row.id
            )));
        };
        if proof::can_prove(status) && policy.allows(factor_type) {
            factors.push(row);
        }
    }
    Ok(factors)
}

/// `login`: checks a password. A wrong password or unknown login is `INVALID_CREDENTIALS`
/// after the same argon2 work either way, and a known user's failure is recorded
/// (`LoginFailed`, written just after the answer). Then, by the MFA policy: a token, or a
/// login challenge with the factors that can complete it, or (policy `REQUIRED`, no factor
/// yet) an enrolment-only token.
///
/// # Errors
/// `InvalidCredentials`; store errors.
pub async fn login(
    state: &AppState,
    call: &Call,
    login: &str,
    password: String,
) -> AppResult<LoginOutcome> {
    let metadata = call.metadata();
    let user_id = UserId::for_login(login);
    let (user, _) = state.users.load(&user_id.to_string()).await?;
    let stored = user.password_hash.clone().filter(|_| user.exists());
    let password = Secret::new(password);
    let checked = stored.clone();
    // argon2 takes tens of milliseconds: off the async workers. Unknown users and users
    // without a password are checked against a dummy hash, so the time taken does not say
    // which logins exist.
    let matches = tokio::task::spawn_blocking(move || {
        let phc = checked.as_deref().unwrap_or_else(|| dummy_password_hash());
        verify_password(password.expose(), phc) && checked.is_some()
    })
    .await
    .map_err(AppError::internal)?;
    if !matches {
        if user.exists() {
            let reason = if stored.is_some() {
                LoginFailureReason::WrongPassword
            } else {
                LoginFailureReason::NoPassword
            };
            // Recorded after answering: an fsync'd write before the answer would make a known
            // login measurably slower than an unknown one. Under a password attack many such
            // writes race on one stream; a lost race is retried until it is written, so every
            // answered failure reaches the audit log.
            let users = std::sync::Arc::clone(&state.users);
            tokio::spawn(async move {
                let key = user_id.to_string();
                loop {
                    let command = UserCommand::RecordLoginFailure { reason };
                    match users.execute(&key, command, &metadata).await {
                        Ok(_) => return,
                        Err(cqrs_es::AggregateError::AggregateConflict) => {
                            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                        }
                        Err(e) => {
                            tracing::error!(user = %user_id, error = %e, "could not record a failed login");
                            return;
                        }
                    }
                }
            });
        }
        return Err(AppError::InvalidCredentials);
    }
    // A deactivated user's right password answers exactly as a wrong one (after the same
    // argon2 work), so anonymous callers cannot tell the state.
    if user.is_deactivated() {
        return Err(AppError::InvalidCredentials);
    }
    let (policy, _) = state.policy.load(POLICY_ID).await?;
    let factors = if policy.mode == MfaMode::Disabled {
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
        return Ok(LoginOutcome::MfaRequired {
            challenge_id,
            challenge: issued.state,
            factors,
        });
    }
    // No second factor to ask for: the login challenge is completed by the password, so every
    // login leaves the same record.
    let complete = ChallengeCommand::Complete {
        purpose: ChallengePurpose::Login,
        user_id,
        factor_id: None,
        method: Method::Password,
    };
    state.challenges.execute(&key, complete, &metadata).await?;
    let enrollment_required = policy.mode == MfaMode::Required;
    let scope = if enrollment_required {
        Scope::Enroll
    } else {
        Scope::User
    };
    Ok(LoginOutcome::Token {
        token: token(state, user_id, &["pwd"], scope)?,
        enrollment_required,
    })
}

/// `completeLogin`: answers a login challenge with one of the factors `login` listed (of a
/// type the policy allows) or a recovery code. `SUCCESS` brings the access token (`amr` =
/// `pwd` and the method, `acr` = `mfa`); any other outcome none.
///
/// # Errors
/// As [`answer_challenge`]; `FACTOR_TYPE_NOT_ALLOWED`.
pub async fn complete(
    state: &AppState,
    call: &Call,
    challenge_id: ChallengeId,
    answer: ProofAnswer,
) -> AppResult<(ChallengeProof, Option<IssuedToken>)> {
    let (policy, _) = state.policy.load(POLICY_ID).await?;
    let proof = answer_challenge(
        state,
        call,
        (ChallengePurpose::Login, challenge_id),
        answer,
        |f| match f.factor_type {
            Some(t) if policy.allows(t) => Ok(()),
            _ => Err(factor_type_not_allowed()),
        },
    )
    .await?;
    let token = match (proof.outcome, proof.challenge.user_id, proof.method) {
        (FactorOutcome::Success, Some(user_id), Some(method)) => {
            Some(token(state, user_id, &["pwd", method.amr()], Scope::User)?)
        }
        _ => None,
    };
    Ok((proof, token))
}

/// The MFA policy (any authenticated caller).
///
/// # Errors
/// `Unauthenticated`; store errors.
pub async fn policy(state: &AppState, call: &Call) -> AppResult<MfaPolicy> {
    call.caller()?;
    let (p, _) = state.policy.load(POLICY_ID).await?;
    Ok(p)
}

/// `setMfaPolicy`: replaces the MFA policy (admins only).
///
/// # Errors
/// Not an admin; the policy's checks; store errors.
pub async fn set_policy(
    state: &AppState,
    call: &Call,
    mode: policy::MfaMode,
    allowed_factor_types: Vec<FactorType>,
) -> AppResult<MfaPolicy> {
    call.admin()?;
    let command = MfaPolicyCommand::Set {
        mode,
        allowed_factor_types,
    };
    let committed = state
        .policy
        .execute(POLICY_ID, command, &call.metadata())
        .await?;
    Ok(committed.state)
}
