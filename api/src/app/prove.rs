//! Proving possession: `verifyFactor`, `activateFactor`, and answering a step-up or login
//! challenge with a factor's code or a recovery code.
//!
//! Around the factor's own rules (codes, replay, lockout) sits the user's hard lock: a locked
//! user's factors are not checked at all, every checked wrong code counts towards the user's
//! budget across factors, recovery codes and lockout cycles, and a success resets it
//! (`tessera_domain::proof`). The factor's events and the user's count are one commit.

use cqrs_es::{AggregateError, EventEnvelope};
use tessera_domain::{
    challenge::{
        Challenge, ChallengeCommand, ChallengeError, ChallengeEvent, ChallengePurpose,
        ChallengeStatus, Method,
    },
    factor::{
        Factor, FactorCommand, FactorError, FactorEvent, FactorOutcome, FactorType, outcome_of,
    },
    ids::{ChallengeId, FactorId, UserId},
    proof::{self, ChallengeAnswer},
    secret::{PassCode, Secret},
    user::{User, UserCommand, UserError, recovery_outcome},
};
use tessera_store::{Committed, Joint, Then, execute_with, unexpected};

use crate::{
    app::{AppError, AppResult, Call},
    state::AppState,
};

/// Longest pass code accepted before it is even looked at.
const MAX_PASS_CODE: usize = 64;

/// Longest recovery code accepted before it is even looked at.
const MAX_RECOVERY_CODE: usize = 64;

/// A pass code as typed, bounded in length.
///
/// # Errors
/// `MALFORMED_PASS_CODE` when it is too long to be one.
pub fn pass_code(code: String) -> AppResult<PassCode> {
    if code.len() > MAX_PASS_CODE {
        return Err(AppError::bad_input(
            "MALFORMED_PASS_CODE",
            "passCode is too long",
        ));
    }
    Ok(PassCode::new(code))
}

/// What one proof came to: the outcome and the factor after it.
#[derive(Debug)]
pub struct Proved {
    /// The answer.
    pub outcome: FactorOutcome,
    /// The factor after the attempt.
    pub factor: Factor,
}

/// Loads a factor that exists, and checks that the caller may act on its owner (`enrolling`:
/// may enrol for the owner, which enrolment-only tokens may).
///
/// # Errors
/// `FACTOR_NOT_FOUND`; `Forbidden`; store errors.
pub async fn authorized_factor(
    state: &AppState,
    call: &Call,
    id: FactorId,
    enrolling: bool,
) -> AppResult<(Factor, usize)> {
    let caller = call.caller()?;
    let (f, seq) = state.factors.load(&id.to_string()).await?;
    match f.user_id {
        Some(owner) if f.exists() => {
            let allowed = if enrolling {
                caller.may_enroll_for(owner)
            } else {
                caller.may_act_on(owner)
            };
            if allowed {
                Ok((f, seq))
            } else {
                Err(AppError::Forbidden)
            }
        }
        _ => Err(FactorError::NotFound.into()),
    }
}

/// [`authorized_factor`] on the factor as kept in memory, without a read, when it passes
/// there: its owner never changes, and the proof decided on it is judged by its append (a
/// factor changed meanwhile loses the append and the proof is decided again on a fresh
/// read; a rejection is confirmed by a read, `execute_with`). One that does not pass is read
/// before the refusal is answered.
///
/// # Errors
/// As [`authorized_factor`].
async fn authorized_kept_factor(
    state: &AppState,
    call: &Call,
    id: FactorId,
) -> AppResult<(Factor, usize)> {
    let caller = call.caller()?;
    if let Some((f, seq)) = state.factors.kept(&id.to_string())
        && f.exists()
        && f.user_id.is_some_and(|owner| caller.may_act_on(owner))
    {
        return Ok((f, seq));
    }
    authorized_factor(state, call, id, false).await
}

/// `verifyFactor`: checks a code of an active factor.
///
/// # Errors
/// Not found, not the caller's, not active; store errors.
pub async fn verify(
    state: &AppState,
    call: &Call,
    factor_id: FactorId,
    pass_code: PassCode,
) -> AppResult<Proved> {
    let loaded = authorized_kept_factor(state, call, factor_id).await?;
    let command = FactorCommand::Verify {
        pass_code,
        challenge_id: None,
    };
    let proved = prove(state, call, factor_id, loaded, command).await?;
    state
        .metrics
        .proof(proved.factor.factor_type, proved.outcome);
    Ok(proved)
}

/// Runs a proof command on a loaded factor (verify or activate) and turns its events into an
/// outcome. An enrolment that already expired answers `EXPIRED`, as the activation that found
/// it expired did.
///
/// # Errors
/// The factor's refusal (not active, …); store errors.
pub(crate) async fn prove(
    state: &AppState,
    call: &Call,
    id: FactorId,
    loaded: (Factor, usize),
    command: FactorCommand,
) -> AppResult<Proved> {
    let owner = loaded.0.user_id.ok_or(FactorError::NotFound)?;
    let metadata = call.metadata();
    let key = id.to_string();
    // A deactivated (or deleted) owner is refused inside the proof's commit, on a user state
    // the database confirmed, like the hard lock.
    let committed = match checked(state, &metadata, (id, Some(loaded)), command, owner, true).await
    {
        Ok(Checked::Inactive(user)) => {
            crate::app::users::ensure_active(&user)?;
            return Err(AppError::internal("an active user refused as inactive"));
        }
        Ok(Checked::Done(committed)) => *committed,
        Ok(Checked::Locked) => {
            let (factor, _) = state.factors.load(&key).await?;
            return Ok(Proved {
                outcome: FactorOutcome::LockedOut,
                factor,
            });
        }
        Err(AggregateError::UserError(FactorError::EnrollmentExpired)) => {
            let (factor, _) = state.factors.load(&key).await?;
            return Ok(Proved {
                outcome: FactorOutcome::Expired,
                factor,
            });
        }
        Err(e) => return Err(e.into()),
    };
    // The answer is built from the aggregate, so a plain verification does not wait for the
    // read models (that would put a second commit on the hot path); a change of status must
    // show in the very next query, so those wait.
    if committed.payloads().iter().any(changes_status) {
        state.settle(&key, &committed).await;
    } else {
        state.nudge();
    }
    let events = committed.payloads();
    let outcome =
        outcome_of(&events).ok_or_else(|| AppError::internal("proof command wrote no outcome"))?;
    mirror_on_code_challenge(state, &metadata, id, &committed.state, outcome, &events).await;
    Ok(Proved {
        outcome,
        factor: committed.state,
    })
}

fn changes_status(event: &FactorEvent) -> bool {
    matches!(
        event,
        FactorEvent::Activated(_)
            | FactorEvent::LockedOut(_)
            | FactorEvent::Unlocked(_)
            | FactorEvent::Removed(_)
            | FactorEvent::EnrollmentExpired(_)
    )
}

/// Runs a proof command on the factor and counts its outcome on the user in the same commit
/// ([`proof::count_on_user`]). A user whose second factor is hard-locked ([`proof::admits`])
/// gets no check at all, only a recorded refusal: `None`. The lock is checked on the user as
/// loaded for this commit, so a race lost to the failure that locked it is refused too.
pub(crate) async fn check_and_count(
    state: &AppState,
    metadata: &std::collections::HashMap<String, String>,
    factor: (FactorId, Option<(Factor, usize)>),
    command: FactorCommand,
    owner: UserId,
) -> Result<Option<Committed<Factor>>, AggregateError<FactorError>> {
    Ok(
        match checked(state, metadata, factor, command, owner, false).await? {
            Checked::Done(committed) => Some(*committed),
            Checked::Locked | Checked::Inactive(_) => None,
        },
    )
}

/// What [`checked`] came to.
pub(crate) enum Checked {
    /// The proof ran and committed (with its count on the user).
    Done(Box<Committed<Factor>>),
    /// The user is hard-locked: a refusal recorded, no check.
    Locked,
    /// The user is deactivated or deleted (only when asked to require an active one): nothing
    /// written. The user as read.
    Inactive(Box<User>),
}

/// [`check_and_count`], refusing also (with `require_active`) a deactivated or deleted owner,
/// on the user as confirmed for the commit.
async fn checked(
    state: &AppState,
    metadata: &std::collections::HashMap<String, String>,
    (factor_id, factor): (FactorId, Option<(Factor, usize)>),
    command: FactorCommand,
    owner: UserId,
    require_active: bool,
) -> Result<Checked, AggregateError<FactorError>> {
    let factor_key = factor_id.to_string();
    let user_key = owner.to_string();
    let active = |user: &User| crate::app::users::ensure_active(user).is_ok();
    let then = Then {
        admit: |user: &User| (!require_active || active(user)) && proof::admits(user),
        follow: |events: &[EventEnvelope<Factor>], user: &User| {
            let payloads: Vec<FactorEvent> = events.iter().map(|e| e.payload.clone()).collect();
            proof::count_on_user(outcome_of(&payloads), user, factor_id)
        },
    };
    let joint = execute_with(
        (&state.factors, &factor_key, factor),
        command,
        (&state.users, &user_key, None),
        then,
        metadata,
    )
    .await?;
    let (committed, counted) = match joint {
        Joint::Committed(committed, counted) => (committed, counted),
        Joint::Refused(user, _) if require_active && !active(&user) => {
            return Ok(Checked::Inactive(Box::new(user)));
        }
        Joint::Refused(user, seq) => {
            let refused = state
                .users
                .execute_from(
                    &user_key,
                    Some((user, seq)),
                    UserCommand::RefuseWhileLocked { factor_id },
                    metadata,
                )
                .await
                .map_err(unexpected)?;
            state.settle(&user_key, &refused).await;
            return Ok(Checked::Locked);
        }
    };
    if counted
        .payloads()
        .iter()
        .any(|e| matches!(e, tessera_domain::user::UserEvent::LockedOut(_)))
    {
        state.settle(&user_key, &counted).await;
    } else if !counted.events.is_empty() {
        state.nudge();
    }
    Ok(Checked::Done(Box::new(committed)))
}

/// Records a factor's answer on the challenge it was given for
/// ([`proof::answer_challenge`]).
///
/// # Errors
/// The challenge's refusal (completed meanwhile, expired, other purpose or user).
async fn record_answer(
    state: &AppState,
    metadata: &std::collections::HashMap<String, String>,
    challenge_id: ChallengeId,
    answer: &ChallengeAnswer<'_>,
) -> AppResult<Committed<Challenge>> {
    let command = proof::answer_challenge(answer)
        .ok_or_else(|| AppError::internal("this factor type proves no challenge method"))?;
    state
        .challenges
        .execute(&challenge_id.to_string(), command, metadata)
        .await
        // Completed by another request between our check and now: CONFLICT, like any other
        // refusal of the challenge.
        .map_err(Into::into)
}

/// After `verifyFactor`/`activateFactor` of an SMS or e-mail factor: the code's own `FACTOR`
/// challenge records the answer too. Its refusal (expired meanwhile) changes nothing for the
/// caller, whose answer the factor gave.
async fn mirror_on_code_challenge(
    state: &AppState,
    metadata: &std::collections::HashMap<String, String>,
    factor_id: FactorId,
    factor: &Factor,
    outcome: FactorOutcome,
    events: &[FactorEvent],
) {
    let Some(challenge_id) = events.iter().find_map(FactorEvent::challenge_id) else {
        return;
    };
    let (Some(owner), Some(factor_type)) = (factor.user_id, factor.factor_type) else {
        return;
    };
    if !factor_type.is_out_of_band() && factor_type != FactorType::Webauthn {
        return;
    }
    let answer = ChallengeAnswer {
        purpose: ChallengePurpose::Factor,
        owner,
        factor_id,
        factor_type,
        outcome,
        events,
    };
    if let Err(e) = record_answer(state, metadata, challenge_id, &answer).await {
        tracing::debug!(challenge = %challenge_id, error = %e, "code challenge did not take the answer");
    }
}

/// What answers a challenge: a factor's code, or one of the user's recovery codes.
pub enum ProofAnswer {
    /// A factor and its code.
    Factor {
        /// The factor.
        factor_id: FactorId,
        /// Its code.
        pass_code: PassCode,
    },
    /// A recovery code.
    RecoveryCode(Secret<String>),
    /// A WebAuthn factor and its assertion.
    WebAuthn {
        /// The factor.
        factor_id: FactorId,
        /// `credential.toJSON()` of `navigator.credentials.get`.
        response: Box<webauthn_rs::prelude::PublicKeyCredential>,
    },
}

impl ProofAnswer {
    /// A WebAuthn factor's assertion, as a transport received it.
    ///
    /// # Errors
    /// An oversized or malformed assertion.
    pub fn webauthn(factor_id: FactorId, json: serde_json::Value) -> AppResult<Self> {
        Ok(Self::WebAuthn {
            factor_id,
            response: Box::new(crate::app::passkeys::response(json)?),
        })
    }

    /// From a transport's fields: a factor with its code, or a recovery code, not both.
    ///
    /// # Errors
    /// `ANSWER_REQUIRED` for any other combination; a code too long to be one.
    pub fn from_parts(
        factor: Option<(FactorId, String)>,
        recovery_code: Option<String>,
    ) -> AppResult<Self> {
        match (factor, recovery_code) {
            (Some((factor_id, code)), None) => Ok(Self::Factor {
                factor_id,
                pass_code: pass_code(code)?,
            }),
            (None, Some(code)) if code.len() <= MAX_RECOVERY_CODE => {
                Ok(Self::RecoveryCode(Secret::new(code)))
            }
            _ => Err(AppError::bad_input(
                "ANSWER_REQUIRED",
                "give factorId with passCode, or recoveryCode",
            )),
        }
    }
}

/// What one proof against a step-up or login challenge came to.
#[derive(Debug)]
pub struct ChallengeProof {
    /// The answer (`EXPIRED` also when the challenge's time or attempts ran out).
    pub outcome: FactorOutcome,
    /// The challenge after it.
    pub challenge: Challenge,
    /// The factor after it, with its id (none for a recovery code).
    pub factor: Option<(FactorId, Factor)>,
    /// How the challenge was answered, when it was.
    pub method: Option<Method>,
}

/// Answers a step-up or login challenge: checks the code with the factor, for the challenge,
/// and records the answer on the challenge. The challenge is checked first, so a completed or
/// expired one consumes no code; `allowed` may refuse the factor before its code is looked at.
///
/// # Errors
/// Wrong purpose, completed, a factor of another user, `allowed`'s refusal; store errors.
pub(crate) async fn answer_challenge(
    state: &AppState,
    call: &Call,
    challenge: (ChallengePurpose, ChallengeId),
    answer: ProofAnswer,
    allowed: impl Fn(&Factor) -> AppResult<()>,
) -> AppResult<ChallengeProof> {
    let proof = check_challenge_answer(state, call, challenge, answer, allowed).await?;
    let factor_type = proof.factor.as_ref().and_then(|(_, f)| f.factor_type);
    state.metrics.proof(factor_type, proof.outcome);
    Ok(proof)
}

async fn check_challenge_answer(
    state: &AppState,
    call: &Call,
    (purpose, challenge_id): (ChallengePurpose, ChallengeId),
    answer: ProofAnswer,
    allowed: impl Fn(&Factor) -> AppResult<()>,
) -> AppResult<ChallengeProof> {
    let metadata = call.metadata();
    let now = state.clock.now();
    let challenge = load_challenge(state, challenge_id).await?;
    if challenge.purpose != Some(purpose) {
        return Err(ChallengeError::WrongPurpose.into());
    }
    if let Some(owner) = challenge.user_id {
        crate::app::users::ensure_active_id(state, owner).await?;
    }
    match challenge.status_at(now) {
        ChallengeStatus::Completed => return Err(ChallengeError::AlreadyCompleted.into()),
        ChallengeStatus::Expired => {
            let committed = state
                .challenges
                .execute(
                    &challenge_id.to_string(),
                    ChallengeCommand::Expire,
                    &metadata,
                )
                .await?;
            return Ok(ChallengeProof {
                outcome: FactorOutcome::Expired,
                challenge: committed.state,
                factor: None,
                method: None,
            });
        }
        _ => {}
    }
    let (factor_id, command) = match answer {
        ProofAnswer::Factor {
            factor_id,
            pass_code,
        } => (
            factor_id,
            FactorCommand::Verify {
                pass_code,
                challenge_id: Some(challenge_id),
            },
        ),
        ProofAnswer::WebAuthn {
            factor_id,
            response,
        } => (
            factor_id,
            FactorCommand::VerifyWebAuthn {
                response,
                challenge_id: Some(challenge_id),
            },
        ),
        ProofAnswer::RecoveryCode(code) => {
            return answer_with_recovery_code(state, &metadata, challenge, challenge_id, code)
                .await;
        }
    };
    let factor = load_factor(state, factor_id).await?;
    let owner = factor.user_id.ok_or(FactorError::NotFound)?;
    if challenge.user_id != Some(owner) {
        return Err(ChallengeError::FactorOfAnotherUser.into());
    }
    allowed(&factor)?;
    let factor_type = factor.factor_type.ok_or(FactorError::NotFound)?;
    let Some(committed) =
        check_and_count(state, &metadata, (factor_id, None), command, owner).await?
    else {
        return Ok(ChallengeProof {
            outcome: FactorOutcome::LockedOut,
            challenge,
            factor: Some((factor_id, factor)),
            method: None,
        });
    };
    state.settle(&factor_id.to_string(), &committed).await;
    let events = committed.payloads();
    let outcome =
        outcome_of(&events).ok_or_else(|| AppError::internal("proof command wrote no outcome"))?;
    let answer = ChallengeAnswer {
        purpose,
        owner,
        factor_id,
        factor_type,
        outcome,
        events: &events,
    };
    let recorded = record_answer(state, &metadata, challenge_id, &answer).await?;
    // A right code that reached the challenge after its time is no success.
    let timed_out = recorded
        .payloads()
        .iter()
        .any(|e| matches!(e, ChallengeEvent::Expired(_)) && outcome == FactorOutcome::Success);
    Ok(ChallengeProof {
        outcome: if timed_out {
            FactorOutcome::Expired
        } else {
            outcome
        },
        challenge: recorded.state,
        factor: Some((factor_id, committed.state)),
        method: Method::of_factor(factor_type),
    })
}

/// A recovery code answers a challenge: the code is checked on the user's stream (single use,
/// hard lock and failure budget included, as `useRecoveryCode`) and the answer is recorded on
/// the challenge in the same commit, while the challenge is still open: a right code spent
/// and the challenge completed, a wrong one counted on the user and as one of the challenge's
/// five tries, a spent one recorded on both and counted on neither. So of many answers racing
/// for one challenge exactly one spends its code; the others find the challenge completed,
/// write nothing and count no guess; and one challenge takes at most five wrong answers of any
/// kind, recovery codes included.
async fn answer_with_recovery_code(
    state: &AppState,
    metadata: &std::collections::HashMap<String, String>,
    challenge: Challenge,
    challenge_id: ChallengeId,
    code: Secret<String>,
) -> AppResult<ChallengeProof> {
    let owner = challenge.user_id.ok_or(ChallengeError::NotFound)?;
    let purpose = challenge.purpose.ok_or(ChallengeError::NotFound)?;
    let canonical = crate::app::recovery::canonical(&code)?;
    let now = state.clock.now();
    let (user_key, challenge_key) = (owner.to_string(), challenge_id.to_string());
    let mut joint = None;
    // The code is checked on the hashing pool against the user as loaded; a check the user's
    // stream outdated meanwhile (a regenerated set, an unlock) is made again.
    for _ in 0..crate::app::recovery::CHECK_ATTEMPTS {
        let loaded = state.users.load(&user_key).await?;
        let check = crate::app::recovery::check_code(state, &loaded.0, &canonical).await?;
        let then = Then {
            admit: |c: &Challenge| c.status_at(now) == ChallengeStatus::Issued,
            follow: |events: &[EventEnvelope<User>], _: &Challenge| {
                let payloads: Vec<_> = events.iter().map(|e| e.payload.clone()).collect();
                proof::answer_with_recovery_code(purpose, owner, &payloads)
            },
        };
        match execute_with(
            (&state.users, &user_key, Some(loaded)),
            UserCommand::UseRecoveryCode { check },
            (&state.challenges, &challenge_key, None),
            then,
            metadata,
        )
        .await
        {
            Err(AggregateError::UserError(UserError::CheckOutdated)) => {}
            outcome => {
                joint = Some(outcome?);
                break;
            }
        }
    }
    let (spent, answered) = match joint.ok_or(AppError::Conflict)? {
        Joint::Committed(spent, answered) => (spent, answered),
        // Completed or ended by another answer meanwhile: nothing was written. An ended one
        // answers as one found ended on arrival does.
        Joint::Refused(c, _) => {
            if c.status_at(now) == ChallengeStatus::Completed {
                return Err(ChallengeError::AlreadyCompleted.into());
            }
            return Ok(ChallengeProof {
                outcome: FactorOutcome::Expired,
                challenge: c,
                factor: None,
                method: None,
            });
        }
    };
    state.settle(&user_key, &spent).await;
    let outcome = recovery_outcome(&spent.payloads())
        .ok_or_else(|| AppError::internal("recovery command wrote no outcome"))?;
    let success = outcome == FactorOutcome::Success;
    Ok(ChallengeProof {
        outcome,
        challenge: answered.state,
        factor: None,
        method: success.then_some(Method::RecoveryCode),
    })
}

/// A challenge that exists.
///
/// # Errors
/// `CHALLENGE_NOT_FOUND`; store errors.
pub async fn load_challenge(state: &AppState, id: ChallengeId) -> AppResult<Challenge> {
    let (c, _) = state.challenges.load(&id.to_string()).await?;
    if c.exists() {
        Ok(c)
    } else {
        Err(ChallengeError::NotFound.into())
    }
}

/// A factor that exists.
///
/// # Errors
/// `FACTOR_NOT_FOUND`; store errors.
pub async fn load_factor(state: &AppState, id: FactorId) -> AppResult<Factor> {
    let (f, _) = state.factors.load(&id.to_string()).await?;
    if f.exists() {
        Ok(f)
    } else {
        Err(FactorError::NotFound.into())
    }
}
