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
        devices,
        prove::{ChallengeProof, ProofAnswer, answer_challenge, load_challenge},
        throttle,
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

/// An access token for `user`, under the user's token `generation`.
pub(crate) fn token(
    state: &AppState,
    user: UserId,
    amr: &[&str],
    scope: Scope,
    generation: u32,
) -> AppResult<IssuedToken> {
    let (access_token, claims) = state
        .tokens
        .issue(user, amr, scope, generation, state.clock.now())
        .map_err(AppError::internal)?;
    let expires_at = DateTime::from_timestamp(claims.exp, 0)
        .ok_or_else(|| AppError::internal("token expiry out of range"))?;
    Ok(IssuedToken {
        access_token,
        expires_at,
    })
}

/// The user's factors that can prove ([`proof::can_prove`]), with their types.
async fn provable_factors(
    state: &AppState,
    user: UserId,
) -> AppResult<Vec<(FactorRow, FactorType)>> {
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
        if proof::can_prove(status) {
            factors.push((row, factor_type));
        }
    }
    Ok(factors)
}

/// The types of `user`'s factors that can prove: what [`proof::finishes_login`] asks.
pub(crate) async fn provable_types(state: &AppState, user: UserId) -> AppResult<Vec<FactorType>> {
    Ok(provable_factors(state, user)
        .await?
        .into_iter()
        .map(|(_, t)| t)
        .collect())
}

/// The factors that can complete a login: those that can prove, of a type that finishes a
/// login under the policy ([`proof::finishes_login`]: a type the policy allows, or any type
/// of a user who has none of an allowed type, so a narrower policy downgrades nobody).
async fn login_factors(
    state: &AppState,
    user: UserId,
    policy: &MfaPolicy,
) -> AppResult<Vec<FactorRow>> {
    let factors = provable_factors(state, user).await?;
    let types: Vec<FactorType> = factors.iter().map(|(_, t)| *t).collect();
    Ok(factors
        .into_iter()
        .filter(|(_, t)| proof::finishes_login(policy, *t, &types))
        .map(|(row, _)| row)
        .collect())
}

/// `login`: checks a password, unless the login is throttled (`LOGIN_THROTTLED`, nothing
/// checked). A wrong password or unknown login is `INVALID_CREDENTIALS` after the same argon2
/// work either way, and the failure is counted before the answer (a known user's
/// `LoginFailed`, an unknown login's row of the throttle table), so both kinds of login are
/// throttled alike. Then, by the MFA policy: a token, or a login challenge with the factors
/// that can complete it, or (policy `REQUIRED`, no factor yet) an enrolment-only token.
///
/// # Errors
/// `InvalidCredentials`; `LOGIN_THROTTLED`; `CLIENT_IP_THROTTLED`; `HASHING_BUSY` (nothing
/// checked or counted); store errors.
pub async fn login(
    state: &AppState,
    call: &Call,
    login: &str,
    password: String,
    device_token: Option<&str>,
) -> AppResult<LoginOutcome> {
    let metadata = call.metadata();
    throttle::ensure_ip_budget(state, call).await?;
    let user_id = crate::app::users::resolve_login(state, login).await?;
    // One check of this login at a time on this node, each after the previous one's count.
    let turn = state.login_throttles.turn(user_id).await;
    let (user, sequence) = state.users.load(&user_id.to_string()).await?;
    let unregistered = throttle::ensure_not_throttled(state, user_id, &user).await?;
    let stored = user.password_hash.clone().filter(|_| user.exists());
    let password = Secret::new(password);
    let checked = stored.clone();
    // On the bounded pool (a full queue refuses here, before anything is counted). Unknown
    // users and users without a password are checked against a dummy hash, so the time taken
    // does not say which logins exist.
    let matches = state
        .hashing
        .run(move || {
            let phc = checked.as_deref().unwrap_or_else(|| dummy_password_hash());
            verify_password(password.expose(), phc) && checked.is_some()
        })
        .await?;
    // A deactivated user's right password answers exactly as a wrong one (after the same
    // argon2 work) and is counted as one, so anonymous callers can tell neither the state nor,
    // from when the throttle starts, which guess was right.
    if !matches || user.is_deactivated() || user.is_deleted() {
        let reason = match (matches, &stored) {
            (true, _) => LoginFailureReason::Deactivated,
            (false, Some(_)) => LoginFailureReason::WrongPassword,
            (false, None) => LoginFailureReason::NoPassword,
        };
        // Counted before answering, for known and unknown logins alike (each pays one write),
        // so the audit log holds every answered failure and the next guess sees this one.
        // A deleted user's stream takes no command: its login is counted as an unknown one.
        let exists = user.exists() && !user.is_deleted();
        throttle::count_failure(
            state,
            user_id,
            exists.then_some((user, sequence)),
            unregistered,
            reason,
            &metadata,
        )
        .await?;
        drop(turn);
        return Err(AppError::InvalidCredentials);
    }
    let generation = user.token_generation;
    let (policy, _) = state.policy.load(POLICY_ID).await?;
    // Only once the password is right: a device token never replaces it.
    let device = device_token.and_then(|t| devices::recognise(state, &policy, &user, t));
    throttle::reset(state, user_id, (user, sequence), &metadata).await?;
    drop(turn);
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
    let method = match device {
        _ if factors.is_empty() => Method::Password,
        // The device stands in for the factor; its use is on record in the user's stream and
        // as the method that completed the login challenge.
        Some(device_id) => {
            let used = UserCommand::UseTrustedDevice { device_id };
            state
                .users
                .execute(&user_id.to_string(), used, &metadata)
                .await?;
            Method::TrustedDevice
        }
        None => {
            return Ok(LoginOutcome::MfaRequired {
                challenge_id,
                challenge: issued.state,
                factors,
            });
        }
    };
    // No second factor to ask for: the login challenge is completed by the password (or the
    // trusted device), so every login leaves the same record.
    let complete = ChallengeCommand::Complete {
        purpose: ChallengePurpose::Login,
        user_id,
        factor_id: None,
        method,
    };
    state.challenges.execute(&key, complete, &metadata).await?;
    if method == Method::TrustedDevice {
        return Ok(LoginOutcome::Token {
            token: token(
                state,
                user_id,
                &["pwd", method.amr()],
                Scope::User,
                generation,
            )?,
            enrollment_required: false,
        });
    }
    let enrollment_required = policy.mode == MfaMode::Required;
    let scope = if enrollment_required {
        Scope::Enroll
    } else {
        Scope::User
    };
    Ok(LoginOutcome::Token {
        token: token(state, user_id, &["pwd"], scope, generation)?,
        enrollment_required,
    })
}

/// `completeLogin`: answers a login challenge with one of the factors `login` listed (of a
/// type that finishes a login under the policy: [`proof::finishes_login`]) or a recovery code. `SUCCESS` brings the access token (`amr` =
/// `pwd` and the method, `acr` = `mfa`); any other outcome none.
///
/// # Errors
/// As [`answer_challenge`]; `FACTOR_TYPE_NOT_ALLOWED`.
pub async fn complete(
    state: &AppState,
    call: &Call,
    challenge_id: ChallengeId,
    answer: ProofAnswer,
    remember_device: bool,
) -> AppResult<(ChallengeProof, Option<IssuedToken>, Option<String>)> {
    let (policy, _) = state.policy.load(POLICY_ID).await?;
    let owner = load_challenge(state, challenge_id).await?.user_id;
    let types = match owner {
        Some(user) => provable_types(state, user).await?,
        None => Vec::new(),
    };
    let proof = answer_challenge(
        state,
        call,
        (ChallengePurpose::Login, challenge_id),
        answer,
        |f| match f.factor_type {
            Some(t) if proof::finishes_login(&policy, t, &types) => Ok(()),
            _ => Err(factor_type_not_allowed()),
        },
    )
    .await?;
    let (token, device_token) = match (proof.outcome, proof.challenge.user_id, proof.method) {
        (FactorOutcome::Success, Some(user_id), Some(method)) => {
            let device_token = if remember_device {
                devices::trust(state, call, user_id, &policy).await?
            } else {
                None
            };
            let (user, _) = state.users.load(&user_id.to_string()).await?;
            let amr = ["pwd", method.amr()];
            let token = token(state, user_id, &amr, Scope::User, user.token_generation)?;
            (Some(token), device_token)
        }
        _ => (None, None),
    };
    Ok((proof, token, device_token))
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
    trusted_device_days: Option<u32>,
) -> AppResult<MfaPolicy> {
    call.admin()?;
    let command = MfaPolicyCommand::Set {
        mode,
        allowed_factor_types,
        trusted_device_days,
    };
    let committed = state
        .policy
        .execute(POLICY_ID, command, &call.metadata())
        .await?;
    Ok(committed.state)
}
