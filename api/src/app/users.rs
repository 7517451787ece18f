//! Users: `createUser` and `setPassword`.

use tessera_domain::{
    ids::UserId,
    secret::Secret,
    user::{Register, SetPassword, User, UserCommand, UserEvent},
};

use crate::{
    app::{AppError, AppResult, Call},
    auth::Caller,
    state::AppState,
};

/// What `createUser` asks for.
#[derive(Debug)]
pub struct NewUser {
    /// Unique login (case-insensitive).
    pub login: String,
    /// E-mail address.
    pub email: Option<String>,
    /// Phone number in E.164 form.
    pub phone_number: Option<String>,
    /// Display name.
    pub display_name: Option<String>,
    /// First-factor password; stored only as an argon2id hash.
    pub password: Option<String>,
}

/// `createUser` (admins only). A taken login is `CONFLICT`.
///
/// # Errors
/// Not an admin; the user's checks; store errors.
pub async fn create(state: &AppState, call: &Call, input: NewUser) -> AppResult<(UserId, User)> {
    call.admin()?;
    let id = UserId::for_login(&input.login);
    let key = id.to_string();
    let command = UserCommand::Register(Register {
        login: input.login,
        email: input.email,
        phone_number: input.phone_number,
        display_name: input.display_name,
        password: input.password.map(Secret::new),
    });
    let committed = state.users.execute(&key, command, &call.metadata()).await?;
    state.settle(&key, &committed).await;
    Ok((id, committed.state))
}

/// `setPassword`. Admins set any user's; a user token changes its own and must give the
/// current password (a wrong one is a counted failure and changes nothing).
///
/// # Errors
/// Not the caller's; `CURRENT_PASSWORD_REQUIRED`, `WRONG_CURRENT_PASSWORD`; the password's
/// checks; store errors.
pub async fn set_password(
    state: &AppState,
    call: &Call,
    user_id: UserId,
    password: String,
    current_password: Option<String>,
) -> AppResult<User> {
    let caller = call.caller()?;
    if !caller.may_act_on(user_id) {
        return Err(AppError::Forbidden);
    }
    let current_password = match caller {
        Caller::Admin { .. } | Caller::Operator => current_password,
        _ => Some(current_password.ok_or_else(|| {
            AppError::bad_input(
                "CURRENT_PASSWORD_REQUIRED",
                "currentPassword is required to change your own password",
            )
        })?),
    };
    let key = user_id.to_string();
    let command = UserCommand::SetPassword(SetPassword {
        password: Secret::new(password),
        current_password: current_password.map(Secret::new),
    });
    let committed = state.users.execute(&key, command, &call.metadata()).await?;
    if committed
        .payloads()
        .iter()
        .any(|e| matches!(e, UserEvent::LoginFailed(_)))
    {
        return Err(AppError::bad_input(
            "WRONG_CURRENT_PASSWORD",
            "currentPassword is wrong",
        ));
    }
    state.settle(&key, &committed).await;
    Ok(committed.state)
}
