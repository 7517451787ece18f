//! Users: `createUserV2`, `setPasswordV2` (and their deprecated bare forms), `updateUser`,
//! `deactivateUser`, `reactivateUser`, `user`, `userByLogin`, `users`, `me`.

use async_graphql::{Context, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};
use tessera_domain::ids::UserId;
use tessera_projections::read_model::UserRow;

use crate::{
    app::{self, AppError, AppResult, users::NewUser},
    auth::Caller,
    graphql::{
        ContextExt,
        page::{self, Connection, PageSize, Source},
        recovery::UserRefInput,
        types::User,
    },
};

/// Input of `createUser`.
#[derive(InputObject)]
pub struct CreateUserInput {
    /// Unique login, in any width, case or Unicode composition (stored in its enforced form).
    pub login: String,
    /// E-mail address.
    pub email: Option<String>,
    /// Phone number in E.164 form.
    pub phone_number: Option<String>,
    /// Display name.
    pub display_name: Option<String>,
    /// Given name.
    pub first_name: Option<String>,
    /// Family name.
    pub last_name: Option<String>,
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
    /// A step-up challenge of the user, completed within `TESSERA_REAUTH_SECONDS`: the fresh
    /// proof a user token needs for this change (`FORBIDDEN`, reason
    /// `REAUTHENTICATION_REQUIRED`, without it), unless its login used a second factor that
    /// recently. Admin keys need none.
    /// A user with no factor needs none (the current password is the proof).
    pub step_up_challenge_id: Option<ID>,
}

/// Input of `updateUser`: each field given replaces the user's; omitted fields stay.
#[derive(InputObject)]
pub struct UpdateUserInput {
    /// The user.
    pub user_id: ID,
    /// New e-mail address. An e-mail factor keeps the address it was enrolled with.
    pub email: Option<String>,
    /// New phone number in E.164 form. An SMS factor keeps the number it was enrolled with.
    pub phone_number: Option<String>,
    /// New display name.
    pub display_name: Option<String>,
    /// New given name.
    pub first_name: Option<String>,
    /// New family name.
    pub last_name: Option<String>,
}

#[derive(Default)]
pub struct UserQuery;

/// Parses a user id argument; a malformed id is bad input.
pub(crate) fn parse_user_id(id: &str) -> AppResult<UserId> {
    UserId::parse(id).ok_or_else(|| AppError::bad_input("INVALID_ID", "userId is not a valid id"))
}

async fn user_by_id(ctx: &Context<'_>, id: UserId) -> AppResult<Option<User>> {
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
        let id = parse_user_id(&id)?;
        if !ctx.caller()?.may_act_on(id) {
            return Err(AppError::Forbidden.into());
        }
        Ok(match as_of {
            Some(at) => app::history::user(ctx.state()?, id, at)
                .await?
                .map(|u| User::from_aggregate(id.to_string(), &u).seen_at(at)),
            None => user_by_id(ctx, id).await?,
        })
    }

    /// A user by login (`null` if there is none).
    async fn user_by_login(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "The login name, in any width, case or Unicode composition.",
            validator(max_length = 256)
        )]
        login: String,
    ) -> async_graphql::Result<Option<User>> {
        let id = app::users::resolve_login(ctx.state()?, &login).await?;
        if !ctx.caller()?.may_act_on(id) {
            return Err(AppError::Forbidden.into());
        }
        Ok(user_by_id(ctx, id).await?)
    }

    /// The calling user (`null` for API keys).
    async fn me(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<User>> {
        Ok(match ctx.caller()? {
            Caller::User { user_id, .. } | Caller::Enrollment { user_id } => {
                user_by_id(ctx, *user_id).await?
            }
            Caller::Admin { .. } | Caller::Auditor { .. } | Caller::Operator => None,
        })
    }

    /// All users in creation order, oldest first (admins only): a user created while a client
    /// pages with `after` shows up on its last page, and no cursor handed out ever moves.
    async fn users(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Cursor: the `endCursor` of the previous page.")] after: Option<String>,
        #[graphql(desc = "Page size (default 50, at most 200).")] first: Option<i32>,
    ) -> async_graphql::Result<Connection<User>> {
        ctx.admin()?;
        if after.as_deref().is_some_and(|a| !a.contains('|')) {
            return Err(AppError::bad_input(
                "INVALID_CURSOR",
                "after is not a cursor of this connection",
            )
            .into());
        }
        let state = ctx.state()?;
        page::connection(
            ctx,
            (after, first),
            PageSize::STANDARD,
            Source {
                fetch: |after: Option<String>, n| async move {
                    let cursor = after.as_deref().and_then(|a| a.split_once('|'));
                    Ok(state.queries.users_after(cursor, n).await?)
                },
                count: || async { Ok(state.queries.user_count().await?) },
                // Creation time first: the order; the id: ties and stability.
                cursor: |row: &UserRow| format!("{}|{}", row.created_at, row.id),
                node: User::from_row,
            },
        )
        .await
    }
}

/// What `createUserV2` answers.
/// Result of `updateUser`, `deactivateUser`, `reactivateUser` and `revokeSessions`.
#[derive(SimpleObject)]
pub struct UserPayload {
    /// The user after the change.
    pub user: User,
}

impl UserPayload {
    fn of(id: UserId, user: &tessera_domain::user::User) -> Self {
        Self {
            user: User::from_aggregate(id.to_string(), user),
        }
    }
}

/// What `deleteUser` answers.
#[derive(SimpleObject)]
pub struct DeleteUserPayload {
    /// The id of the user deleted.
    pub deleted_user_id: ID,
}

#[derive(SimpleObject)]
pub struct CreateUserPayload {
    /// The new user.
    pub user: User,
}

/// What `setPasswordV2` answers.
#[derive(SimpleObject)]
pub struct SetPasswordPayload {
    /// The user, with the new password set.
    pub user: User,
}

async fn create(ctx: &Context<'_>, input: CreateUserInput) -> AppResult<User> {
    let new = NewUser {
        login: input.login,
        email: input.email,
        phone_number: input.phone_number,
        display_name: input.display_name,
        first_name: input.first_name,
        last_name: input.last_name,
        password: input.password,
    };
    let (id, user) = app::users::create(ctx.state()?, &ctx.call(), new).await?;
    Ok(User::from_aggregate(id.to_string(), &user))
}

async fn set_password(ctx: &Context<'_>, input: SetPasswordInput) -> AppResult<User> {
    let call = ctx.call();
    call.caller()?;
    let id = parse_user_id(&input.user_id)?;
    let user = app::users::set_password(
        ctx.state()?,
        &call,
        id,
        input.password,
        input.current_password,
        super::factor::step_up(input.step_up_challenge_id.as_ref())?,
    )
    .await?;
    Ok(User::from_aggregate(id.to_string(), &user))
}

#[derive(Default)]
pub struct UserMutation;

#[Object]
impl UserMutation {
    /// Creates a user (admins only). A taken login answers `CONFLICT`.
    async fn create_user_v2(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Login, contact details, display name and an optional password.")]
        input: CreateUserInput,
    ) -> async_graphql::Result<CreateUserPayload> {
        Ok(CreateUserPayload {
            user: create(ctx, input).await?,
        })
    }

    /// Creates a user (admins only), answering the bare user. A taken login answers `CONFLICT`.
    #[graphql(
        deprecation = "Use `createUserV2`: the same input, the user in `CreateUserPayload.user`. Kept for at least one release."
    )]
    async fn create_user(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Login, contact details, display name and an optional password.")]
        input: CreateUserInput,
    ) -> async_graphql::Result<User> {
        Ok(create(ctx, input).await?)
    }

    /// Changes a user's e-mail address, phone number, display name or names (admins only). Factors
    /// keep the destinations they were enrolled with: enrol a new SMS or e-mail factor to
    /// send codes elsewhere. Recorded as `ProfileUpdated`.
    async fn update_user(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The user and the fields to change.")] input: UpdateUserInput,
    ) -> async_graphql::Result<UserPayload> {
        let id = parse_user_id(&input.user_id)?;
        let profile = tessera_domain::user::UpdateProfile {
            email: input.email,
            phone_number: input.phone_number,
            display_name: input.display_name,
            first_name: input.first_name,
            last_name: input.last_name,
        };
        let user = app::users::update(ctx.state()?, &ctx.call(), id, profile).await?;
        Ok(UserPayload::of(id, &user))
    }

    /// Deactivates a user (admins only): `login` then answers as for a wrong password, and
    /// proofs and step-ups of the user are `USER_DEACTIVATED`, until `reactivateUser`.
    /// Recorded as `Deactivated`.
    async fn deactivate_user(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The user.")] input: UserRefInput,
    ) -> async_graphql::Result<UserPayload> {
        let id = parse_user_id(&input.user_id)?;
        let user = app::users::deactivate(ctx.state()?, &ctx.call(), id).await?;
        Ok(UserPayload::of(id, &user))
    }

    /// Deletes a user (admins only): every factor still enrolled is removed (`Removed`), then
    /// the user is `Deleted`. No query shows the user afterwards, a login answers as a wrong
    /// password, and the login stays taken. The events stay in the log (it is the record, and
    /// sealed); erasing personal data from them is not part of this.
    async fn delete_user(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The user.")] input: UserRefInput,
    ) -> async_graphql::Result<DeleteUserPayload> {
        let id = parse_user_id(&input.user_id)?;
        app::users::delete(ctx.state()?, &ctx.call(), id).await?;
        Ok(DeleteUserPayload {
            deleted_user_id: ID(id.to_string()),
        })
    }

    /// Ends every access token of the user issued so far (a logout everywhere): admins, or
    /// the user's own token (which ends with the rest). Recorded as `SessionsRevoked`; a
    /// password change, a hard lock and a deactivation do the same by themselves.
    async fn revoke_sessions(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The user.")] input: UserRefInput,
    ) -> async_graphql::Result<UserPayload> {
        let id = parse_user_id(&input.user_id)?;
        let user = app::users::revoke_sessions(ctx.state()?, &ctx.call(), id).await?;
        Ok(UserPayload::of(id, &user))
    }

    /// Reactivates a deactivated user (admins only). Recorded as `Reactivated`.
    async fn reactivate_user(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The user.")] input: UserRefInput,
    ) -> async_graphql::Result<UserPayload> {
        let id = parse_user_id(&input.user_id)?;
        let user = app::users::reactivate(ctx.state()?, &ctx.call(), id).await?;
        Ok(UserPayload::of(id, &user))
    }

    /// Sets a user's password. Admins set any user's; a user token changes its own and must
    /// give `currentPassword` (a wrong one is a counted failure and changes nothing).
    async fn set_password_v2(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The user and the new password.")] input: SetPasswordInput,
    ) -> async_graphql::Result<SetPasswordPayload> {
        Ok(SetPasswordPayload {
            user: set_password(ctx, input).await?,
        })
    }

    /// Sets a user's password, answering the bare user (see `setPasswordV2`).
    #[graphql(
        deprecation = "Use `setPasswordV2`: the same input, the user in `SetPasswordPayload.user`. Kept for at least one release."
    )]
    async fn set_password(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The user and the new password.")] input: SetPasswordInput,
    ) -> async_graphql::Result<User> {
        Ok(set_password(ctx, input).await?)
    }
}
