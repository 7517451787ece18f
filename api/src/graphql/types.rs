//! Object types shared by several features.

use async_graphql::{ComplexObject, Context, Enum, ID, SimpleObject};
use chrono::{DateTime, Utc};
use tessera_domain::{
    challenge::{Challenge as ChallengeAgg, DeliveryOutcome},
    factor::{self, Factor as FactorAgg, FactorOutcome},
    ids::{ChallengeId, FactorId},
    user::User as UserAgg,
};
use tessera_projections::read_model::{FactorRow, UserRow};
use tessera_store::parse_ts;

use crate::{
    app::{self, AppError, AppResult},
    graphql::ContextExt,
};

/// Kinds of factor.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FactorType {
    /// RFC 6238 authenticator apps.
    Totp,
    /// One-time codes by SMS.
    Sms,
    /// One-time codes by e-mail.
    Email,
    /// WebAuthn (not yet).
    Webauthn,
}

impl From<factor::FactorType> for FactorType {
    fn from(t: factor::FactorType) -> Self {
        match t {
            factor::FactorType::Totp => Self::Totp,
            factor::FactorType::Sms => Self::Sms,
            factor::FactorType::Email => Self::Email,
            factor::FactorType::Webauthn => Self::Webauthn,
        }
    }
}

impl From<FactorType> for factor::FactorType {
    fn from(t: FactorType) -> Self {
        match t {
            FactorType::Totp => Self::Totp,
            FactorType::Sms => Self::Sms,
            FactorType::Email => Self::Email,
            FactorType::Webauthn => Self::Webauthn,
        }
    }
}

/// Lifecycle status.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FactorStatus {
    /// Waiting for a correct code.
    PendingActivation,
    /// Usable.
    Active,
    /// Too many failures.
    LockedOut,
    /// Not activated in time.
    Expired,
    /// Removed.
    Removed,
}

impl From<factor::FactorStatus> for FactorStatus {
    fn from(s: factor::FactorStatus) -> Self {
        match s {
            factor::FactorStatus::PendingActivation => Self::PendingActivation,
            factor::FactorStatus::Active => Self::Active,
            factor::FactorStatus::LockedOut => Self::LockedOut,
            factor::FactorStatus::Expired => Self::Expired,
            factor::FactorStatus::Removed => Self::Removed,
        }
    }
}

/// The answer to a proof of possession: a value, never an error.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FactorResult {
    /// Correct.
    Success,
    /// Checked and wrong.
    Rejected,
    /// Correct for a time step already used.
    PasscodeReplayed,
    /// Locked; not checked.
    LockedOut,
    /// Enrolment or challenge expired.
    Expired,
    /// A challenge must be answered first.
    ChallengeRequired,
}

impl From<FactorOutcome> for FactorResult {
    fn from(o: FactorOutcome) -> Self {
        match o {
            FactorOutcome::Success => Self::Success,
            FactorOutcome::Rejected => Self::Rejected,
            FactorOutcome::PasscodeReplayed => Self::PasscodeReplayed,
            FactorOutcome::LockedOut => Self::LockedOut,
            FactorOutcome::Expired => Self::Expired,
            FactorOutcome::ChallengeRequired => Self::ChallengeRequired,
        }
    }
}

/// A second factor of a user.
#[derive(SimpleObject, Clone, Debug)]
pub struct Factor {
    /// Id.
    pub id: ID,
    /// Owner.
    pub user_id: ID,
    /// Kind.
    #[graphql(name = "type")]
    pub factor_type: FactorType,
    /// Status now (a lock whose time is up shows `ACTIVE`).
    pub status: FactorStatus,
    /// The user's label.
    pub label: Option<String>,
    /// Enrolment time.
    pub created_at: DateTime<Utc>,
    /// Last successful verification.
    pub last_verified_at: Option<DateTime<Utc>>,
    /// Consecutive failed guesses.
    pub failed_attempts: i32,
    /// While locked: until when.
    pub locked_until: Option<DateTime<Utc>>,
    /// While pending: the activation deadline.
    pub activation_expires_at: Option<DateTime<Utc>>,
    /// SMS: the phone number codes go to.
    pub phone_number: Option<String>,
    /// EMAIL: the address codes go to.
    pub email: Option<String>,
    /// WEBAUTHN: the credential id (base64url), once registered.
    pub credential_id: Option<String>,
    /// WEBAUTHN: the authenticator model's AAGUID, when its attestation named one (no
    /// attestation is asked for, so usually `null`).
    pub aaguid: Option<String>,
    /// WEBAUTHN: whether the key is synced or backed up (a multi-device passkey), as the
    /// authenticator last reported.
    pub backed_up: Option<bool>,
}

impl Factor {
    /// From the read model, with the status at `now`.
    pub fn from_row(row: FactorRow, now: DateTime<Utc>) -> AppResult<Self> {
        let bad = || AppError::internal(format!("malformed factors_v1 row {}", row.id));
        let status = row.status_at(now).ok_or_else(bad)?;
        let factor_type: FactorType = row.factor_type().ok_or_else(bad)?.into();
        let locked_until = row.locked_until.as_deref().and_then(parse_ts);
        let expires_at = row.expires_at.as_deref().and_then(parse_ts);
        let (phone_number, email) = destination_fields(factor_type, row.destination.clone());
        Ok(Self {
            id: ID(row.id.clone()),
            user_id: ID(row.user_id),
            factor_type,
            status: status.into(),
            label: row.label,
            created_at: parse_ts(&row.created_at).ok_or_else(bad)?,
            last_verified_at: row.last_verified_at.as_deref().and_then(parse_ts),
            failed_attempts: i32::try_from(row.failed_attempts).unwrap_or(i32::MAX),
            locked_until: locked_until.filter(|t| *t > now),
            activation_expires_at: (status == factor::FactorStatus::PendingActivation)
                .then_some(expires_at)
                .flatten(),
            phone_number,
            email,
            credential_id: row.credential_id,
            aaguid: row.aaguid,
            backed_up: row.backed_up.map(|b| b != 0),
        })
    }

    /// With its phone number and address masked (`+1 ••• ••• 0123`), for callers who have
    /// proven no second factor yet.
    pub fn masked(self) -> Self {
        Self {
            phone_number: self.phone_number.as_deref().map(crate::mask::phone),
            email: self.email.as_deref().map(crate::mask::email),
            ..self
        }
    }

    /// From the aggregate as a command left it.
    pub fn from_aggregate(id: FactorId, f: &FactorAgg, now: DateTime<Utc>) -> Self {
        let status = f.status_at(now);
        let factor_type: FactorType = f.factor_type.unwrap_or(factor::FactorType::Totp).into();
        let (phone_number, email) =
            destination_fields(factor_type, f.oob.as_ref().map(|o| o.destination.clone()));
        Self {
            id: ID(id.to_string()),
            user_id: ID(f.user_id.map(|u| u.to_string()).unwrap_or_default()),
            factor_type,
            phone_number,
            email,
            status: status.into(),
            label: f.label.clone(),
            created_at: f.created_at.unwrap_or(now),
            last_verified_at: f.last_verified_at,
            failed_attempts: i32::try_from(f.consecutive_failures).unwrap_or(i32::MAX),
            locked_until: f.locked_until.filter(|t| *t > now),
            activation_expires_at: (status == factor::FactorStatus::PendingActivation)
                .then_some(f.expires_at)
                .flatten(),
            credential_id: f.webauthn.as_ref().map(|c| c.credential_id.clone()),
            aaguid: f
                .webauthn
                .as_ref()
                .and_then(|c| c.aaguid)
                .map(|a| a.to_string()),
            backed_up: f.webauthn.as_ref().map(|c| c.backup_state),
        }
    }
}

fn destination_fields(
    factor_type: FactorType,
    destination: Option<String>,
) -> (Option<String>, Option<String>) {
    match factor_type {
        FactorType::Sms => (destination, None),
        FactorType::Email => (None, destination),
        FactorType::Totp | FactorType::Webauthn => (None, None),
    }
}

/// A request for a proof of possession: a step-up, the second step of a login, or one code
/// sent to an SMS or e-mail factor.
#[derive(SimpleObject, Clone, Debug)]
pub struct Challenge {
    /// Id.
    pub id: ID,
    /// Whose proof it asks for.
    pub user_id: ID,
    /// `ISSUED`, `COMPLETED` or `EXPIRED` (an open challenge past its deadline reads
    /// `EXPIRED`).
    pub status: String,
    /// No answer is accepted from then on.
    pub expires_at: DateTime<Utc>,
    /// `STEP_UP`, `LOGIN` or `FACTOR` (one sent code).
    pub purpose: String,
    /// For `FACTOR` challenges: the factor.
    pub factor_id: Option<ID>,
    /// Failed attempts so far (five end it).
    pub failed_attempts: i32,
    /// What came of sending its latest code: `PENDING`, `DELIVERED` or `FAILED`; `null`
    /// when no code was sent for it.
    pub delivery: Option<String>,
    /// When it was issued.
    pub created_at: DateTime<Utc>,
    /// For a step-up: what the user is asked to confirm, the `display` string of its
    /// `state` (trimmed, at most 280 characters), as the hosted step-up page shows it.
    pub display: Option<String>,
}

impl Challenge {
    /// From the aggregate as a command left it.
    pub fn from_aggregate(id: ChallengeId, c: &ChallengeAgg, now: DateTime<Utc>) -> Self {
        let delivery = match &c.delivery {
            _ if c.codes_sent == 0 => None,
            None => Some("PENDING"),
            Some(DeliveryOutcome::Delivered { .. }) => Some("DELIVERED"),
            Some(DeliveryOutcome::Failed { .. }) => Some("FAILED"),
        };
        Self {
            id: ID(id.to_string()),
            user_id: ID(c.user_id.map(|u| u.to_string()).unwrap_or_default()),
            status: c.status_at(now).as_str().into(),
            expires_at: c.expires_at.unwrap_or(now),
            purpose: c.purpose.map(|p| p.as_str()).unwrap_or_default().into(),
            factor_id: c.factor_id.map(|f| ID(f.to_string())),
            failed_attempts: i32::try_from(c.failed_attempts).unwrap_or(i32::MAX),
            delivery: delivery.map(str::to_string),
            created_at: c.created_at.unwrap_or(now),
            display: c.display(),
        }
    }
}

/// A user.
#[derive(SimpleObject, Clone, Debug)]
#[graphql(complex)]
pub struct User {
    /// Id.
    pub id: ID,
    /// Login in its enforced form (PRECIS UsernameCaseMapped; as registered for users from before those rules).
    pub login: String,
    /// E-mail address.
    pub email: Option<String>,
    /// Phone number (E.164).
    pub phone_number: Option<String>,
    /// Display name.
    pub display_name: Option<String>,
    /// Given name.
    pub first_name: Option<String>,
    /// Family name.
    pub last_name: Option<String>,
    /// `ACTIVE` or `DEACTIVATED` (`deactivateUser`: no login, no proof until
    /// `reactivateUser`).
    pub status: String,
    /// Registration time.
    pub created_at: DateTime<Utc>,
    /// Unused recovery codes.
    pub recovery_codes_remaining: i32,
    /// Whether too many consecutive failures locked the user's second factor until an
    /// administrator unlocks it (`unlockUser`).
    pub second_factor_locked: bool,
    /// Set when this is the user as at a past moment: the factors are then as at it too.
    #[graphql(skip)]
    pub as_of: Option<DateTime<Utc>>,
}

#[ComplexObject]
impl User {
    /// Devices that stand in for the second factor at login (`completeLogin` with
    /// `rememberDevice`), oldest first; ended ones are not shown. As at a past moment: as
    /// then.
    async fn trusted_devices(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Vec<crate::graphql::devices::TrustedDevice>> {
        let state = ctx.state()?;
        let Some(id) = tessera_domain::ids::UserId::parse(&self.id) else {
            return Ok(Vec::new());
        };
        let user = match self.as_of {
            Some(at) => app::history::user(state, id, at).await?,
            None => Some(state.users.load(&self.id).await.map_err(AppError::from)?.0),
        };
        Ok(user
            .map(|u| app::devices::of_user(state, id, &u))
            .unwrap_or_default()
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// The user's security activity, newest first (`after` pages back in time):
    /// proofs that worked or failed, lockouts, factors added and removed, recovery codes,
    /// remembered devices, codes sent and alerts, with the time, IP address and user agent
    /// of each; redacted like `events`. The user's own token, admins and `read:audit` keys
    /// may read it. As at a past moment: what was recorded before it.
    async fn activity(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Cursor: the `endCursor` of the previous page.")] after: Option<String>,
        #[graphql(desc = "Page size (default 20, at most 100).")] first: Option<i32>,
    ) -> async_graphql::Result<
        crate::graphql::page::Connection<crate::graphql::activity::ActivityEntry>,
    > {
        crate::graphql::activity::connection(ctx, &self.id, self.as_of, (after, first)).await
    }

    /// The user's factors, removed ones included, oldest first.
    async fn factors(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Factor>> {
        let state = ctx.state()?;
        if let Some(at) = self.as_of {
            return Ok(app::history::factors_of_user(state, &self.id, at)
                .await?
                .iter()
                .map(|(id, f)| Factor::from_aggregate(*id, f, at))
                .collect());
        }
        let now = state.clock.now();
        Ok(state
            .queries
            .factors_of_user(&self.id)
            .await
            .map_err(AppError::from)?
            .into_iter()
            .map(|row| Factor::from_row(row, now))
            .collect::<AppResult<Vec<_>>>()?)
    }
}

impl User {
    /// From the read model.
    pub fn from_row(row: UserRow) -> AppResult<Self> {
        Ok(Self {
            created_at: parse_ts(&row.created_at)
                .ok_or_else(|| AppError::internal(format!("malformed users_v1 row {}", row.id)))?,
            id: ID(row.id),
            login: row.login,
            email: row.email,
            phone_number: row.phone_number,
            display_name: row.display_name,
            first_name: row.first_name,
            last_name: row.last_name,
            status: row.status,
            recovery_codes_remaining: i32::try_from(row.recovery_codes_remaining).unwrap_or(0),
            second_factor_locked: row.second_factor_locked != 0,
            as_of: None,
        })
    }

    /// From the aggregate as a command left it.
    pub fn from_aggregate(id: String, u: &UserAgg) -> Self {
        Self {
            id: ID(id),
            login: u.login.clone(),
            email: u.email.clone(),
            phone_number: u.phone_number.clone(),
            display_name: u.display_name.clone(),
            first_name: u.first_name.clone(),
            last_name: u.last_name.clone(),
            status: if u.is_deactivated() {
                "DEACTIVATED"
            } else {
                "ACTIVE"
            }
            .into(),
            created_at: u.created_at.unwrap_or_default(),
            recovery_codes_remaining: i32::try_from(u.recovery_codes_remaining()).unwrap_or(0),
            second_factor_locked: u.second_factor_locked,
            as_of: None,
        }
    }

    /// This user as at `at` (its factors are then read as at `at` too).
    pub fn seen_at(self, at: DateTime<Utc>) -> Self {
        Self {
            as_of: Some(at),
            ..self
        }
    }
}
