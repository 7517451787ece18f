//! Recovery codes and administrative unlocks: `regenerateRecoveryCodes`, `useRecoveryCode`,
//! `unlockFactorV2`, `unlockUserV2` (and their deprecated bare forms).

use async_graphql::{Context, ID, InputObject, Object, SimpleObject};

use crate::{
    app::{self, AppResult},
    graphql::{
        ContextExt,
        factor::{VerifyFactorPayload, parse_factor_id},
        types::{Factor, User},
        user::parse_user_id,
    },
};

/// A reference to a user.
#[derive(InputObject)]
pub struct UserRefInput {
    /// The user.
    pub user_id: ID,
    /// `regenerateRecoveryCodes` only (others ignore it): a step-up challenge of the user,
    /// completed within `TESSERA_REAUTH_SECONDS`, the fresh proof a user token needs
    /// (`FORBIDDEN`, reason `REAUTHENTICATION_REQUIRED`, without it) unless its login used a
    /// second factor that recently. Admin keys need none.
    pub step_up_challenge_id: Option<ID>,
}

/// Input of `useRecoveryCode`.
#[derive(InputObject)]
pub struct UseRecoveryCodeInput {
    /// The user.
    pub user_id: ID,
    /// One of the user's recovery codes (`XXXXX-XXXXX`; case and dashes do not matter).
    #[graphql(validator(max_length = 64))]
    pub code: String,
}

/// Input of `unlockFactor`.
#[derive(InputObject)]
pub struct UnlockFactorInput {
    /// A locked factor.
    pub factor_id: ID,
}

/// Fresh recovery codes: shown exactly once.
#[derive(SimpleObject)]
pub struct RecoveryCodesPayload {
    /// Ten single-use codes.
    pub recovery_codes: Vec<String>,
}

#[derive(Default)]
pub struct RecoveryMutation;

#[Object]
impl RecoveryMutation {
    /// Replaces the user's recovery codes with ten new ones; the old ones stop working.
    async fn regenerate_recovery_codes(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The user whose recovery codes are replaced.")] input: UserRefInput,
    ) -> async_graphql::Result<RecoveryCodesPayload> {
        let user = parse_user_id(&input.user_id)?;
        let step_up = super::factor::step_up(input.step_up_challenge_id.as_ref())?;
        let recovery_codes =
            app::recovery::regenerate(ctx.state()?, &ctx.call(), user, step_up).await?;
        Ok(RecoveryCodesPayload { recovery_codes })
    }

    /// Spends a recovery code: `SUCCESS` once per code, `REJECTED` after.
    async fn use_recovery_code(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The user and one of their recovery codes.")] input: UseRecoveryCodeInput,
    ) -> async_graphql::Result<VerifyFactorPayload> {
        let user = parse_user_id(&input.user_id)?;
        let outcome = app::recovery::spend(ctx.state()?, &ctx.call(), user, input.code).await?;
        Ok(VerifyFactorPayload {
            factor_result: outcome.into(),
            factor: None,
        })
    }

    /// Lifts a factor's lockout before its time (admins only).
    async fn unlock_factor_v2(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The locked factor.")] input: UnlockFactorInput,
    ) -> async_graphql::Result<UnlockFactorPayload> {
        Ok(UnlockFactorPayload {
            factor: unlock_factor(ctx, input).await?,
        })
    }

    /// Lifts a factor's lockout before its time (admins only), answering the bare factor.
    #[graphql(
        deprecation = "Use `unlockFactorV2`: the same input, the factor in `UnlockFactorPayload.factor`. Kept for at least one release."
    )]
    async fn unlock_factor(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The locked factor.")] input: UnlockFactorInput,
    ) -> async_graphql::Result<Factor> {
        Ok(unlock_factor(ctx, input).await?)
    }

    /// Lifts the hard lock on a user's second factor (admins only).
    async fn unlock_user_v2(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The user whose second factor is hard-locked.")] input: UserRefInput,
    ) -> async_graphql::Result<UnlockUserPayload> {
        Ok(UnlockUserPayload {
            user: unlock_user(ctx, input).await?,
        })
    }

    /// Lifts the hard lock on a user's second factor (admins only), answering the bare user.
    #[graphql(
        deprecation = "Use `unlockUserV2`: the same input, the user in `UnlockUserPayload.user`. Kept for at least one release."
    )]
    async fn unlock_user(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The user whose second factor is hard-locked.")] input: UserRefInput,
    ) -> async_graphql::Result<User> {
        Ok(unlock_user(ctx, input).await?)
    }
}

/// What `unlockFactorV2` answers.
#[derive(SimpleObject)]
pub struct UnlockFactorPayload {
    /// The factor, active again.
    pub factor: Factor,
}

/// What `unlockUserV2` answers.
#[derive(SimpleObject)]
pub struct UnlockUserPayload {
    /// The user, no longer hard-locked.
    pub user: User,
}

async fn unlock_factor(ctx: &Context<'_>, input: UnlockFactorInput) -> AppResult<Factor> {
    let state = ctx.state()?;
    let call = ctx.call();
    call.admin()?;
    let id = parse_factor_id(&input.factor_id)?;
    let factor = app::factors::unlock(state, &call, id).await?;
    Ok(Factor::from_aggregate(id, &factor, state.clock.now()))
}

async fn unlock_user(ctx: &Context<'_>, input: UserRefInput) -> AppResult<User> {
    let state = ctx.state()?;
    let call = ctx.call();
    call.admin()?;
    let id = parse_user_id(&input.user_id)?;
    let user = app::recovery::unlock_user(state, &call, id).await?;
    Ok(User::from_aggregate(id.to_string(), &user))
}
