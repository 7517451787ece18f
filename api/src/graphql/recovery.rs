//! Recovery codes and administrative unlocks: `regenerateRecoveryCodes`, `useRecoveryCode`,
//! `unlockFactor`, `unlockUser`.

use async_graphql::{Context, ID, InputObject, Object, SimpleObject};
use tessera_domain::{
    factor::FactorCommand,
    ids::UserId,
    secret::Secret,
    user::{UserCommand, recovery, recovery_outcome},
};

use crate::{
    graphql::{
        ContextExt,
        error::{ApiError, ApiResult, IntoGraphql},
        factor::{VerifyFactorPayload, parse_factor_id, run_on_factor},
        types::{Factor, User},
        user::parse_user_id,
    },
    state::AppState,
};

/// A reference to a user.
#[derive(InputObject)]
pub struct UserRefInput {
    /// The user.
    pub user_id: ID,
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

/// Draws a set of codes and stores their hashes. With `only_if_none`, returns `None` if the
/// user already had a set (the first activation of a factor generates one, later ones do not).
pub(crate) async fn issue_recovery_codes(
    ctx: &Context<'_>,
    state: &AppState,
    user: UserId,
    only_if_none: bool,
) -> ApiResult<Option<Vec<String>>> {
    let caller = ctx.caller()?;
    let mut rng = rand::rngs::OsRng;
    let codes: Vec<String> = (0..recovery::CODES_PER_SET)
        .map(|_| recovery::new_code(&mut rng))
        .collect();
    let command = UserCommand::GenerateRecoveryCodes {
        codes: codes.iter().cloned().map(Secret::new).collect(),
        only_if_none,
    };
    let key = user.to_string();
    let committed = state
        .users
        .execute(&key, command, &ctx.meta().metadata(&caller.actor()))
        .await?;
    state.settle(&key, &committed).await;
    Ok((!committed.events.is_empty()).then_some(codes))
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
        async {
            let state = ctx.state()?;
            let user = parse_user_id(&input.user_id)?;
            if !ctx.caller()?.may_act_on(user) {
                return Err(ApiError::Forbidden);
            }
            let recovery_codes = issue_recovery_codes(ctx, state, user, false)
                .await?
                .ok_or_else(|| ApiError::internal("regeneration wrote nothing"))?;
            Ok(RecoveryCodesPayload { recovery_codes })
        }
        .await
        .gql(ctx)
    }

    /// Spends a recovery code: `SUCCESS` once per code, `REJECTED` after.
    async fn use_recovery_code(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The user and one of their recovery codes.")] input: UseRecoveryCodeInput,
    ) -> async_graphql::Result<VerifyFactorPayload> {
        async {
            let state = ctx.state()?;
            let caller = ctx.caller()?;
            let user = parse_user_id(&input.user_id)?;
            if !caller.may_act_on(user) {
                return Err(ApiError::Forbidden);
            }
            let key = user.to_string();
            let command = UserCommand::UseRecoveryCode {
                code: Secret::new(input.code),
            };
            let committed = state
                .users
                .execute(&key, command, &ctx.meta().metadata(&caller.actor()))
                .await?;
            state.settle(&key, &committed).await;
            let outcome = recovery_outcome(&committed.payloads())
                .ok_or_else(|| ApiError::internal("recovery command wrote no outcome"))?;
            Ok(VerifyFactorPayload {
                factor_result: outcome.into(),
                factor: None,
            })
        }
        .await
        .gql(ctx)
    }

    /// Lifts a factor's lockout before its time (admins only).
    async fn unlock_factor(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The locked factor.")] input: UnlockFactorInput,
    ) -> async_graphql::Result<Factor> {
        async {
            ctx.admin()?;
            let id = parse_factor_id(&input.factor_id)?;
            run_on_factor(ctx, id, FactorCommand::Unlock).await
        }
        .await
        .gql(ctx)
    }

    /// Lifts the hard lock on a user's second factor (admins only).
    async fn unlock_user(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The user whose second factor is hard-locked.")] input: UserRefInput,
    ) -> async_graphql::Result<User> {
        async {
            let state = ctx.state()?;
            let caller = ctx.admin()?;
            let user = parse_user_id(&input.user_id)?;
            let key = user.to_string();
            let committed = state
                .users
                .execute(
                    &key,
                    UserCommand::Unlock,
                    &ctx.meta().metadata(&caller.actor()),
                )
                .await?;
            state.settle(&key, &committed).await;
            Ok(User::from_aggregate(key, &committed.state))
        }
        .await
        .gql(ctx)
    }
}
