//! One-time codes for SMS and e-mail factors: drawing one, recording it on the factor (as a
//! keyed hash) and on its challenge, and handing the message to delivery. `challengeFactor`
//! is [`challenge_factor`].

use rand::Rng;
use tessera_domain::error::Classify;
use tessera_domain::{
    challenge::{
        Challenge, ChallengeCommand, ChallengeError, ChallengePurpose, Channel, Issue, SentCode,
        mask_destination,
    },
    factor::{Factor, FactorCommand, FactorError, FactorEvent, FactorStatus, FactorType, NewCode},
    ids::{ChallengeId, FactorId, UserId},
    policy::POLICY_ID,
    secret::PassCode,
    user::{
        CodeRefusal, UserCommand,
        code_limits::{self, CodeRefusalReason},
    },
};
use tessera_store::Committed;

use crate::{
    app::{
        AppError, AppResult, Call,
        prove::{load_challenge, load_factor},
    },
    delivery::queue::Queued,
    state::AppState,
};

/// Six digits drawn uniformly from the operating system's CSPRNG.
pub fn draw_code() -> PassCode {
    let n: u32 = rand::rngs::OsRng.gen_range(0..1_000_000);
    PassCode::new(format!("{n:06}"))
}

/// The policy does not allow this factor type.
pub fn factor_type_not_allowed() -> AppError {
    AppError::bad_input(
        "FACTOR_TYPE_NOT_ALLOWED",
        "the MFA policy does not allow this factor type",
    )
}

/// Hash domain of code destinations in the limit counters' keys.
const DESTINATION_DOMAIN: &str = "code-destination";

fn refused(reason: CodeRefusalReason, retry_after_seconds: i64) -> AppError {
    let message = match reason {
        CodeRefusalReason::CountryNotAllowed => "text messages are not sent to this country",
        CodeRefusalReason::DestinationResendTooSoon => {
            "a code was sent to this destination moments ago"
        }
        CodeRefusalReason::DestinationLimitReached => {
            "too many codes to this destination this hour"
        }
        CodeRefusalReason::UserDailyLimit => "too many text messages for this user today",
        CodeRefusalReason::BudgetExhausted => "the hourly budget of text messages is spent",
    };
    AppError::RateLimited {
        reason: reason.as_str(),
        message: message.into(),
        retry_after_seconds,
    }
}

/// What the limits say about one code.
enum Admission {
    /// Send it; `Some` when this SMS crossed 80% of the hourly budget (once per window).
    Admitted(Option<BudgetMark>),
    /// Refused, and when to try again.
    Refused(CodeRefusalReason, i64),
}

/// The hourly SMS window at the moment its count crossed 80% of the budget.
struct BudgetMark {
    sent: i64,
    budget: i64,
    window_ends_at: chrono::DateTime<chrono::Utc>,
}

/// Admits one code to `destination` for `owner`, or refuses it before anything is written to
/// a factor or sent (SMS pumping, toll fraud): an SMS number must be in an allowed country;
/// one number or address gets at most one code per `TESSERA_OOB_RESEND_SECONDS` and
/// `TESSERA_OOB_MAX_PER_HOUR` an hour, whichever factor or user asks; SMS count against a
/// budget per user per day and one for every node per hour. The counters are shared by every
/// node (`tessera_store::limits`) and keyed by a keyed hash of the destination.
///
/// Every refusal is a `CodeRefused` event on the owner's stream (the user is the one thing
/// that exists before an enrolment's factor does, and only a caller acting for that user can
/// add to it, one event per refused request, as refused-while-locked attempts are); the SMS
/// that crosses 80% of the hourly budget records `SmsBudgetThresholdCrossed`, from which the
/// alert reactor raises `SMS_BUDGET_WARNING`.
///
/// # Errors
/// `RATE_LIMITED` with the reason; store errors.
pub(crate) async fn admit_code(
    state: &AppState,
    call: &Call,
    owner: UserId,
    channel: Channel,
    destination: &str,
    factor_id: Option<FactorId>,
) -> AppResult<()> {
    let country_code = (channel == Channel::Sms)
        .then(|| phonenumber::parse(None, destination).ok())
        .flatten()
        .map(|n| n.code().value());
    let key = owner.to_string();
    match limits(state, owner, channel, destination, country_code).await? {
        Admission::Admitted(None) => Ok(()),
        Admission::Admitted(Some(mark)) => {
            tracing::warn!(
                sent = mark.sent,
                budget = mark.budget,
                "80% of the hourly SMS budget is spent"
            );
            let command = UserCommand::RecordSmsBudgetWarning {
                sent: mark.sent,
                budget: mark.budget,
                window_ends_at: mark.window_ends_at,
            };
            state.users.execute(&key, command, &call.metadata()).await?;
            state.nudge();
            Ok(())
        }
        Admission::Refused(reason, retry_after_seconds) => {
            tracing::warn!(user = %owner, reason = reason.as_str(), "refused a one-time code");
            state
                .metrics
                .code_refused(&channel.as_str().to_lowercase(), reason.as_str());
            let command = UserCommand::RecordCodeRefusal(CodeRefusal {
                channel,
                reason,
                destination: mask_destination(destination),
                country_code,
                factor_id,
                retry_after_seconds,
            });
            state.users.execute(&key, command, &call.metadata()).await?;
            Err(refused(reason, retry_after_seconds))
        }
    }
}

/// The limits of [`admit_code`], counted in the store's fixed windows.
async fn limits(
    state: &AppState,
    owner: UserId,
    channel: Channel,
    destination: &str,
    country_code: Option<u16>,
) -> AppResult<Admission> {
    use tessera_store::limits::{Window, hit};
    let config = &state.config;
    let now = state.clock.now();
    if channel == Channel::Sms
        && !config.sms_allowed_countries.is_empty()
        && !country_code.is_some_and(|c| config.sms_allowed_countries.contains(&c))
    {
        return Ok(Admission::Refused(
            CodeRefusalReason::CountryNotAllowed,
            86_400,
        ));
    }
    let key = state
        .keyed_hasher
        .hash(DESTINATION_DOMAIN, &destination.trim().to_lowercase());
    let db = &state.db;
    let count = |key: String, seconds: i64| async move {
        let window = Window {
            length: chrono::TimeDelta::seconds(seconds.max(1)),
        };
        let n = hit(db, &key, window, now)
            .await
            .map_err(AppError::internal)?;
        Ok::<_, AppError>((n, window.seconds_left(now)))
    };
    if config.oob_resend_seconds > 0 {
        let (n, left) = count(format!("dest:resend:{key}"), config.oob_resend_seconds).await?;
        if n > 1 {
            return Ok(Admission::Refused(
                CodeRefusalReason::DestinationResendTooSoon,
                left,
            ));
        }
    }
    let (n, left) = count(format!("dest:hour:{key}"), 3600).await?;
    if n > i64::from(config.oob_max_per_hour) {
        return Ok(Admission::Refused(
            CodeRefusalReason::DestinationLimitReached,
            left,
        ));
    }
    if channel != Channel::Sms {
        return Ok(Admission::Admitted(None));
    }
    let (n, left) = count(format!("sms:user:{owner}"), 86_400).await?;
    if n > i64::from(config.sms_max_per_user_per_day) {
        return Ok(Admission::Refused(CodeRefusalReason::UserDailyLimit, left));
    }
    let (n, left) = count("sms:global".into(), 3600).await?;
    let budget = i64::from(config.sms_max_per_hour);
    if n > budget {
        return Ok(Admission::Refused(CodeRefusalReason::BudgetExhausted, left));
    }
    let mark = code_limits::crosses_budget_warning(n, budget).then(|| BudgetMark {
        sent: n,
        budget,
        window_ends_at: now + chrono::TimeDelta::seconds(left),
    });
    Ok(Admission::Admitted(mark))
}

/// Refuses a challenge that cannot take an answer or a code now, the way the aggregate would.
fn require_open(c: &Challenge, state: &AppState) -> AppResult<()> {
    match c.status_at(state.clock.now()) {
        tessera_domain::challenge::ChallengeStatus::Issued => Ok(()),
        tessera_domain::challenge::ChallengeStatus::Completed => {
            Err(ChallengeError::AlreadyCompleted.into())
        }
        _ => Err(ChallengeError::Expired.into()),
    }
}

fn channel_of(t: Option<FactorType>) -> AppResult<Channel> {
    match t {
        Some(FactorType::Sms) => Ok(Channel::Sms),
        Some(FactorType::Email) => Ok(Channel::Email),
        _ => Err(FactorError::CodesNotSupported.into()),
    }
}

/// `challengeFactor`: sends a fresh code to an SMS or e-mail factor, for a new `FACTOR`
/// challenge (the code answers `verifyFactor`/`activateFactor`), or for the open step-up or
/// login challenge `within`. The second step of a login may call this without a token: the
/// login challenge's id stands for the password just checked.
///
/// # Errors
/// Not the caller's; a pending factor for a step-up or login; a closed challenge; a factor
/// type the policy does not allow for logins; the factor's rate limits; store errors.
pub async fn challenge_factor(
    state: &AppState,
    call: &Call,
    factor_id: FactorId,
    within: Option<ChallengeId>,
) -> AppResult<(ChallengeId, Challenge, Option<serde_json::Value>)> {
    let now = state.clock.now();
    let factor = load_factor(state, factor_id).await?;
    let owner = factor.user_id.ok_or(FactorError::NotFound)?;
    let challenge = match within {
        Some(id) => Some(load_challenge(state, id).await?),
        None => None,
    };
    let login_step = challenge
        .as_ref()
        .is_some_and(|c| c.purpose == Some(ChallengePurpose::Login));
    let pending = factor.status_at(now) == FactorStatus::PendingActivation;
    let allowed = match &call.caller {
        Some(c) => c.may_act_on(owner) || (c.may_enroll_for(owner) && within.is_none() && pending),
        None => login_step,
    };
    if !allowed {
        return Err(if call.caller.is_none() {
            AppError::Unauthenticated
        } else {
            AppError::Forbidden
        });
    }
    crate::app::users::ensure_active_id(state, owner).await?;
    if let Some(c) = &challenge {
        if c.user_id != Some(owner) {
            return Err(ChallengeError::FactorOfAnotherUser.into());
        }
        if c.purpose == Some(ChallengePurpose::Factor) {
            return Err(ChallengeError::WrongPurpose.into());
        }
        require_open(c, state)?;
        // A code for a step-up or login is only of use from an active factor.
        if pending {
            return Err(FactorError::NotActive.into());
        }
        if login_step {
            let (policy, _) = state.policy.load(POLICY_ID).await?;
            let types = crate::app::login::provable_types(state, owner).await?;
            if factor
                .factor_type
                .is_some_and(|t| !tessera_domain::proof::finishes_login(&policy, t, &types))
            {
                return Err(factor_type_not_allowed());
            }
        }
    }
    if factor.factor_type == Some(FactorType::Webauthn) {
        let (id, c, options) =
            crate::app::passkeys::request_assertion(state, call, factor_id, &factor, within)
                .await?;
        return Ok((id, c, Some(options)));
    }
    let (id, c) = send_code(state, call, factor_id, &factor, within).await?;
    Ok((id, c, None))
}

/// Sends a fresh code to an SMS or e-mail factor: for a new `FACTOR` challenge, or for the
/// open step-up or login challenge `within`.
async fn send_code(
    state: &AppState,
    call: &Call,
    factor_id: FactorId,
    factor: &Factor,
    within: Option<ChallengeId>,
) -> AppResult<(ChallengeId, Challenge)> {
    let channel = channel_of(factor.factor_type)?;
    // The factor's own limits first (their reasons and times are the precise ones), then the
    // limits across factors and users.
    factor.check_send(&state.factors.services().policy, state.clock.now())?;
    if let (Some(owner), Some(oob)) = (factor.user_id, &factor.oob) {
        admit_code(
            state,
            call,
            owner,
            channel,
            &oob.destination,
            Some(factor_id),
        )
        .await?;
    }
    let challenge_id = within.unwrap_or_else(ChallengeId::generate);
    let code = draw_code();
    let issued = state
        .factors
        .execute(
            &factor_id.to_string(),
            FactorCommand::SendCode(NewCode {
                challenge_id,
                standalone: within.is_none(),
                code: code.clone(),
            }),
            &call.metadata(),
        )
        .await
        .inspect_err(|e| {
            if let cqrs_es::AggregateError::UserError(refusal) = e
                && refusal.kind() == tessera_domain::error::ErrorKind::RateLimited
            {
                let channel = factor.factor_type.map_or("", |t| t.as_str());
                state
                    .metrics
                    .code_refused(&channel.to_lowercase(), refusal.reason());
            }
        })?;
    let challenge = record_and_deliver(
        state,
        call,
        IssuedCode {
            factor_id,
            issued: &issued,
            challenge_id,
            code: &code,
            new_challenge: within.is_none(),
        },
    )
    .await?;
    Ok((challenge_id, challenge))
}

/// A code a factor just committed (its hash) and is about to be sent.
pub(crate) struct IssuedCode<'a> {
    /// The factor.
    pub factor_id: FactorId,
    /// The factor's command result (its state and the `CodeIssued` event).
    pub issued: &'a Committed<Factor>,
    /// The challenge the code answers.
    pub challenge_id: ChallengeId,
    /// The code, to send.
    pub code: &'a PassCode,
    /// Open a new `FACTOR` challenge for it (else it belongs to an open step-up or login
    /// challenge).
    pub new_challenge: bool,
}

/// Queues the code's message (durably, before the caller is answered) and records the code on
/// its challenge.
pub(crate) async fn record_and_deliver(
    state: &AppState,
    call: &Call,
    code: IssuedCode<'_>,
) -> AppResult<Challenge> {
    let IssuedCode {
        factor_id,
        issued,
        challenge_id,
        code,
        new_challenge,
    } = code;
    let factor = &issued.state;
    let channel = channel_of(factor.factor_type)?;
    let owner = factor.user_id.ok_or(FactorError::NotFound)?;
    let destination = factor
        .oob
        .as_ref()
        .map(|o| o.destination.clone())
        .ok_or(FactorError::CodesNotSupported)?;
    let code_expires_at = issued
        .payloads()
        .iter()
        .find_map(|e| match e {
            FactorEvent::CodeIssued(c) => Some(c.expires_at),
            _ => None,
        })
        .ok_or_else(|| AppError::internal("code command wrote no CodeIssued"))?;
    let sent = SentCode {
        factor_id,
        channel,
        destination: mask_destination(&destination),
        code_expires_at,
    };
    let command = if new_challenge {
        ChallengeCommand::Issue(Issue {
            challenge_id,
            user_id: owner,
            purpose: ChallengePurpose::Factor,
            factor_id: Some(factor_id),
            state: None,
            ttl: state.factors.services().policy.code_ttl,
            code: Some(sent),
        })
    } else {
        ChallengeCommand::RecordCodeSent(sent)
    };
    let committed = state
        .challenges
        .execute(&challenge_id.to_string(), command, &call.metadata())
        .await?;
    let minutes = (state.factors.services().policy.code_ttl.num_seconds() + 59) / 60;
    let message = state
        .delivery
        .code_message(channel, destination, code.expose(), minutes);
    state
        .messages
        .enqueue(Queued {
            message,
            challenge_id,
            factor_id,
            metadata: call.meta.metadata("system:delivery"),
        })
        .await
        .map_err(AppError::internal)?;
    Ok(committed.state)
}

/// The `challenge` query: a challenge by id, if the caller may read its user.
///
/// # Errors
/// `Unauthenticated`, `Forbidden`; store errors.
pub async fn challenge(
    state: &AppState,
    call: &Call,
    id: ChallengeId,
) -> AppResult<Option<Challenge>> {
    let (c, _) = state.challenges.load(&id.to_string()).await?;
    let Some(owner) = c.user_id.filter(|_| c.exists()) else {
        return Ok(None);
    };
    if !call.caller()?.may_enroll_for(owner) {
        return Err(AppError::Forbidden);
    }
    Ok(Some(c))
}
