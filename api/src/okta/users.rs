//! `POST /users`, `GET /users`, `GET /users/{id or login}`.

use std::collections::HashMap;

use axum::{
    body::Bytes,
    extract::{Path, Query},
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde_json::Value;
use tessera_domain::ids::UserId;

use crate::{
    app::{self, AppError, users::NewUser},
    okta::{Okta, OktaError, json, shapes},
};

/// Okta's largest page of users.
const MAX_LIMIT: i64 = 200;

fn text(value: &Value, key: &str) -> Result<Option<String>, OktaError> {
    match value.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => {
            Err(AppError::bad_input("INVALID_PROFILE", format!("{key}: must be a string")).into())
        }
    }
}

/// The user a path segment names: its id, or else its login (Okta accepts both), without a
/// lookup: for ids, and for logins already in their enforced form.
pub(crate) fn user_ref(segment: &str) -> UserId {
    UserId::parse(segment).unwrap_or_else(|| UserId::for_login(segment))
}

/// The user a path segment names: its id, or else its login in any form that enforces to
/// the same one ([`app::users::resolve_login`]).
async fn find_user(ctx: &Okta, segment: &str) -> Result<UserId, OktaError> {
    Ok(match UserId::parse(segment) {
        Some(id) => id,
        None => app::users::resolve_login(&ctx.app.state, segment).await?,
    })
}

fn user_not_found(segment: &str) -> OktaError {
    AppError::not_found("USER_NOT_FOUND", format!("{segment} (User)")).into()
}

/// `POST /api/v1/users?activate=false`: `{"profile": {firstName, lastName, email, login,
/// mobilePhone}, "credentials": {"password": {"value"}}}`. Tessera's users are active at once,
/// so `activate` changes nothing.
pub(crate) async fn create(ctx: Okta, body: Bytes) -> Response {
    let result = async {
        let body = Okta::body(&body)?.unwrap_or(Value::Null);
        let profile = body.get("profile").cloned().unwrap_or(Value::Null);
        let login = text(&profile, "login")?.ok_or_else(|| {
            OktaError::from(AppError::bad_input(
                "LOGIN_REQUIRED",
                "login: The field cannot be left blank",
            ))
        })?;
        let password = body
            .pointer("/credentials/password/value")
            .and_then(Value::as_str)
            .map(str::to_string);
        let new = NewUser {
            login,
            email: text(&profile, "email")?,
            phone_number: text(&profile, "mobilePhone")?.map(|p| shapes::e164(&p)),
            display_name: text(&profile, "displayName")?,
            first_name: text(&profile, "firstName")?,
            last_name: text(&profile, "lastName")?,
            password,
        };
        let state = &ctx.app.state;
        let (id, _) = app::users::create(state, &ctx.call, new).await?;
        let row = app::users::get(state, &ctx.call, id)
            .await?
            .ok_or_else(|| AppError::internal("a created user is not in the read model"))?;
        Ok(json(shapes::user(&ctx.base, &row)?))
    }
    .await;
    ctx.answer(result)
}

/// `GET /api/v1/users?limit=N&after=CURSOR`: an array, oldest first, and the next page in a
/// `Link: <…>; rel="next"` header, as Okta pages.
pub(crate) async fn list(ctx: Okta, Query(query): Query<HashMap<String, String>>) -> Response {
    let result = async {
        let limit = match query.get("limit") {
            Some(l) => l
                .parse::<i64>()
                .ok()
                .filter(|l| *l > 0)
                .ok_or_else(|| {
                    OktaError::from(AppError::bad_input(
                        "INVALID_LIMIT",
                        "limit: must be a positive number",
                    ))
                })?
                .min(MAX_LIMIT),
            None => MAX_LIMIT,
        };
        let cursor = match query.get("after") {
            Some(after) => Some(
                URL_SAFE_NO_PAD
                    .decode(after)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .filter(|c| c.contains('|'))
                    .ok_or_else(|| {
                        OktaError::from(AppError::bad_input(
                            "INVALID_CURSOR",
                            "after: not a cursor of this list",
                        ))
                    })?,
            ),
            None => None,
        };
        let state = &ctx.app.state;
        let rows = app::users::list(
            state,
            &ctx.call,
            cursor.as_deref().and_then(|c| c.split_once('|')),
            limit,
        )
        .await?;
        let users = rows
            .iter()
            .map(|row| shapes::user(&ctx.base, row))
            .collect::<Result<Vec<_>, _>>()?;
        let mut response = json(Value::Array(users));
        let next = (i64::try_from(rows.len()).unwrap_or(0) == limit)
            .then(|| rows.last())
            .flatten();
        let mut links = vec![format!(
            "<{}/api/v1/users?limit={limit}>; rel=\"self\"",
            ctx.base
        )];
        if let Some(last) = next {
            let after = URL_SAFE_NO_PAD.encode(format!("{}|{}", last.created_at, last.id));
            links.push(format!(
                "<{}/api/v1/users?after={after}&limit={limit}>; rel=\"next\"",
                ctx.base
            ));
        }
        for value in links {
            if let Ok(value) = HeaderValue::from_str(&value) {
                response.headers_mut().append(header::LINK, value);
            }
        }
        Ok(response)
    }
    .await;
    ctx.answer(result)
}

/// `GET /api/v1/users/{id or login}`.
pub(crate) async fn get(ctx: Okta, Path(segment): Path<String>) -> Response {
    let result = async {
        let row = app::users::get(&ctx.app.state, &ctx.call, find_user(&ctx, &segment).await?)
            .await?
            .ok_or_else(|| user_not_found(&segment))?;
        Ok(json(shapes::user(&ctx.base, &row)?))
    }
    .await;
    ctx.answer(result)
}

/// `DELETE /api/v1/users/{id or login}`: 204. Okta deletes in two calls (the first
/// deactivates); Tessera deletes in one, as `deleteUser` does.
pub(crate) async fn delete(ctx: Okta, Path(segment): Path<String>) -> Response {
    let result = async {
        let user = existing_user(&ctx, &segment).await?;
        app::users::delete(&ctx.app.state, &ctx.call, user_ref(&user.id)).await?;
        Ok(axum::http::StatusCode::NO_CONTENT.into_response())
    }
    .await;
    ctx.answer(result)
}

/// The user a path names, which must exist.
///
/// # Errors
/// `E0000007` when there is none; the caller's rights.
pub(crate) async fn existing_user(
    ctx: &Okta,
    segment: &str,
) -> Result<tessera_projections::read_model::UserRow, OktaError> {
    app::users::get(&ctx.app.state, &ctx.call, find_user(ctx, segment).await?)
        .await?
        .ok_or_else(|| user_not_found(segment))
}
