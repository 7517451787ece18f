//! Users: `createUser`, `user`, `userByLogin`, `users`, `me`.

use async_graphql::{
    Context, ID, InputObject, Object,
    connection::{Connection, Edge, query},
};
use chrono::{DateTime, Utc};
use tessera_domain::{
    ids::UserId,
    secret::Secret,
    user::{Register, SetPassword, UserCommand, UserEvent},
};

use crate::{
    auth::Caller,
    graphql::{
        ContextExt,
        error::{ApiError, ApiResult, IntoGraphql},
        history,
        types::User,
    },
};

/// Input of `createUser`.
#[derive(InputObject)]
pub struct CreateUserInput {
    /// Unique login (case-insensitive).
    pub login: String,
    /// E-mail address.
    pub email: Option<String>,
    /// Phone number in E.164 form.
    pub phone_number: Option<String>,
    /// Display name.
    pub display_name: Option<String>,
    /// First-factor password (8 to 256 characters); stored only as an argon2id hash.
    pub password: Option<String>,
}

/// Input of `setPassword`.
#[derive(InputObject)]
pub struct SetPasswordInput {
    /// The user.
    pub user_id: ID,
    /// The new password, 8 to 256 characters; stored only as an argon2id hash.
    #[graphql(validator(max_length = 1024))]
    pub password: String,
    /// The current password: required when users change their own with a user token.
    #[graphql(validator(max_length = 1024))]
    pub current_password: Option<String>,
}

#[derive(Default)]
pub struct UserQuery;

/// Parses a user id argument; a malformed id is bad input.
pub(crate) fn parse_user_id(id: &str) -> ApiResult<UserId> {
    UserId::parse(id).ok_or_else(|| ApiError::bad_input("INVALID_ID", "userId is not a valid id"))
}

async fn user_by_id(ctx: &Context<'_>, id: UserId) -> ApiResult<Option<User>> {
    let state = ctx.state()?;
    match state.queries.user(&id.to_string()).await? {
        Some(row) => Ok(Some(User::from_row(row)?)),
        None => Ok(None),
    }
}

#[Object]
impl UserQuery {
    /// A user by id (`null` if there is none). With `asOf`, the user and their factors as
    /// they were at that moment, folded from the log (`null` if not registered by then).
    async fn user(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The user.")] id: ID,
        #[graphql(
            desc = "Show the user as they were at this time, rebuilt from the events (now if null)."
        )]
        as_of: Option<DateTime<Utc>>,
    ) -> async_graphql::Result<Option<User>> {
        async {
            let id = parse_user_id(&id)?;
            if !ctx.caller()?.may_act_on(id) {
                return Err(ApiError::Forbidden);
            }
            match as_of {
                Some(at) => history::user(ctx.state()?, id, at).await,
                None => user_by_id(ctx, id).await,
            }
        }
        .await
        .gql(ctx)
    }

    /// A user by login (`null` if there is none).
    async fn user_by_login(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "The login name (case-insensitive).",
            validator(max_length = 256)
        )]
        login: String,
    ) -> async_graphql::Result<Option<User>> {
        async {
            let id = UserId::for_login(&login);
            if !ctx.caller()?.may_act_on(id) {
                return Err(ApiError::Forbidden);
            }
            user_by_id(ctx, id).await
        }
        .await
        .gql(ctx)
    }

    /// The calling user (`null` for API keys).
    async fn me(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<User>> {
        async {
            match ctx.caller()? {
                Caller::User { user_id } | Caller::Enrollment { user_id } => {
                    user_by_id(ctx, *user_id).await
                }
                Caller::Admin { .. } => Ok(None),
            }
        }
        .await
        .gql(ctx)
    }

    /// All users, by id (admins only).
    async fn users(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Cursor: the `endCursor` of the previous page.")] after: Option<String>,
        #[graphql(desc = "Page size (default 50, at most 200).")] first: Option<i32>,
    ) -> async_graphql::Result<Connection<String, User>> {
        if let Err(e) = ctx.admin() {
            return Err(e.into_graphql(ctx));
        }
        query(
            after,
            None,
            first,
            None,
            |after: Option<String>, _, first, _| async move {
                let limit = first.unwrap_or(50).clamp(0, 200);
                let result: ApiResult<_> = async {
                    let state = ctx.state()?;
                    let limit = i64::try_from(limit).unwrap_or(200);
                    let mut rows = state
                        .queries
                        .users_after(after.as_deref(), limit + 1)
                        .await?;
                    let has_next = i64::try_from(rows.len()).unwrap_or(0) > limit;
                    rows.truncate(usize::try_from(limit).unwrap_or(0));
                    let mut connection = Connection::new(after.is_some(), has_next);
                    for row in rows {
                        let cursor = row.id.clone();
                        connection
                            .edges
                            .push(Edge::new(cursor, User::from_row(row)?));
                    }
                    Ok(connection)
                }
                .await;
                result.gql(ctx)
            },
        )
        .await
    }
}

#[derive(Default)]
pub struct UserMutation;

#[Object]
impl UserMutation {
    /// Creates a user (admins only). A taken login answers `CONFLICT`.
    async fn create_user(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Login, contact details, display name and an optional password.")]
        input: CreateUserInput,
    ) -> async_graphql::Result<User> {
        async {
            let caller = ctx.admin()?;
            let state = ctx.state()?;
            let id = UserId::for_login(&input.login).to_string();
            let command = UserCommand::Register(Register {
                login: input.login,
                email: input.email,
                phone_number: input.phone_number,
                display_name: input.display_name,
                password: input.password.map(Secret::new),
            });
            let committed = state
                .users
                .execute(&id, command, &ctx.meta().metadata(&caller.actor()))
                .await?;
            state.settle(&id, &committed).await;
            Ok(User::from_aggregate(id, &committed.state))
        }
        .await
        .gql(ctx)
    }

    /// Sets a user's password. Admins set any user's; a user token changes its own and must
    /// give `currentPassword` (a wrong one is a counted failure and changes nothing).
    async fn set_password(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The user and the new password.")] input: SetPasswordInput,
    ) -> async_graphql::Result<User> {
        async {
            let caller = ctx.caller()?;
            let state = ctx.state()?;
            let user_id = parse_user_id(&input.user_id)?;
            if !caller.may_act_on(user_id) {
                return Err(ApiError::Forbidden);
            }
            let current_password = match caller {
                Caller::Admin { .. } => input.current_password,
                _ => Some(input.current_password.ok_or_else(|| {
                    ApiError::bad_input(
                        "CURRENT_PASSWORD_REQUIRED",
                        "currentPassword is required to change your own password",
                    )
                })?),
            };
            let id = user_id.to_string();
            let command = UserCommand::SetPassword(SetPassword {
                password: Secret::new(input.password),
                current_password: current_password.map(Secret::new),
            });
            let committed = state
                .users
                .execute(&id, command, &ctx.meta().metadata(&caller.actor()))
                .await?;
            if committed
                .payloads()
                .iter()
                .any(|e| matches!(e, UserEvent::LoginFailed(_)))
            {
                return Err(ApiError::bad_input(
                    "WRONG_CURRENT_PASSWORD",
                    "currentPassword is wrong",
                ));
            }
            state.settle(&id, &committed).await;
            Ok(User::from_aggregate(id, &committed.state))
        }
        .await
        .gql(ctx)
    }
}
