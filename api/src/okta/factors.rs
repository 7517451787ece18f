//! The Factors API: enrol, list, read, delete, activate, verify, resend, the catalog,
//! `reset_factors`, and the QR-code link. Okta factor types Tessera does not have
//! (`question`, `push`, `token` from RSA or Symantec, `token:hardware`, and `webauthn` for now)
//! answer Okta's 400 for an unsupported factor.

use axum::{
    body::Bytes,
    extract::Path,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use tessera_domain::{
    factor::{FactorOutcome, FactorStatus, FactorType},
    ids::{FactorId, UserId},
};
use tessera_projections::read_model::{FactorRow, UserRow};

use crate::{
    app::{
        self, AppError,
        enrol::{Enrolled, Enrolment},
        factors::FactorView,
    },
    okta::{
        Anonymous, Okta, OktaError, json,
        shapes::{self, FactorFacts, GOOGLE_LABEL, OKTA_VERIFY_LABEL},
        users::{existing_user, user_ref},
    },
};

/// Okta's answer for a factor type or provider Tessera does not have.
fn unsupported(factor_type: &str, provider: Option<&str>) -> OktaError {
    let what = match provider {
        Some(p) => format!("{factor_type} from provider {p}"),
        None => factor_type.to_string(),
    };
    AppError::bad_input(
        "UNSUPPORTED_FACTOR_TYPE",
        format!("factorType: the factor type {what} is not supported"),
    )
    .into()
}

fn factor_not_found(segment: &str) -> OktaError {
    AppError::not_found("FACTOR_NOT_FOUND", format!("{segment} (UserFactor)")).into()
}

/// A proof that did not succeed, as Okta answers it.
fn proof_failure(outcome: FactorOutcome) -> Option<OktaError> {
    Some(match outcome {
        FactorOutcome::Success => return None,
        FactorOutcome::Rejected => OktaError::wrong_passcode(),
        FactorOutcome::PasscodeReplayed => OktaError::replayed_passcode(),
        FactorOutcome::LockedOut => OktaError::locked(),
        FactorOutcome::Expired => {
            AppError::bad_input("ENROLLMENT_EXPIRED", "the factor's activation expired").into()
        }
        FactorOutcome::ChallengeRequired => AppError::bad_input(
            "CHALLENGE_REQUIRED",
            "passCode: no code was sent; verify with an empty body to send one",
        )
        .into(),
    })
}

/// The user and the factor a path names: the factor must be the user's and not deleted.
async fn owned_factor(
    ctx: &Okta,
    user: &str,
    factor: &str,
) -> Result<(UserRow, FactorId, FactorFacts), OktaError> {
    let user = existing_user(ctx, user).await?;
    let id = FactorId::parse(factor).ok_or_else(|| factor_not_found(factor))?;
    let state = &ctx.app.state;
    let facts = match app::factors::get(state, &ctx.call, id, None).await? {
        Some(FactorView::Current(row)) => FactorFacts::from_row(&row, state.clock.now())?,
        _ => return Err(factor_not_found(factor)),
    };
    if facts.user_id() != user.id || facts.is_removed() {
        return Err(factor_not_found(factor));
    }
    Ok((user, id, facts))
}

fn pass_code_of(body: Option<&Value>) -> Option<String> {
    body.and_then(|b| b.get("passCode"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// As Okta: enrolling a factor type and provider again while one is still pending activation
/// replaces the pending one (this is also how `updatePhone=true` gives an SMS factor a new
/// number), so scripts that retry an enrolment do not pile up pending factors.
async fn replace_pending(
    ctx: &Okta,
    user_id: UserId,
    kind: FactorType,
    label: &str,
) -> Result<(), OktaError> {
    let state = &ctx.app.state;
    let now = state.clock.now();
    for row in app::factors::of_user(state, &ctx.call, user_id).await? {
        let pending = row.status_at(now) == Some(FactorStatus::PendingActivation);
        if pending && row.factor_type() == Some(kind) && row.label.as_deref() == Some(label) {
            let id = FactorId::parse(&row.id)
                .ok_or_else(|| AppError::internal("malformed factor id in factors_v1"))?;
            app::factors::remove(state, &ctx.call, id, None).await?;
        }
    }
    Ok(())
}

/// `POST /api/v1/users/{userId}/factors`.
pub(crate) async fn enroll(ctx: Okta, Path(user): Path<String>, body: Bytes) -> Response {
    let result = async {
        let user = existing_user(&ctx, &user).await?;
        let body = Okta::body(&body)?.unwrap_or(Value::Null);
        let factor_type = body
            .get("factorType")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                OktaError::from(AppError::bad_input(
                    "FACTOR_TYPE_REQUIRED",
                    "factorType: The field cannot be left blank",
                ))
            })?;
        let provider = body.get("provider").and_then(Value::as_str);
        let profile = |key: &str| {
            body.pointer(&format!("/profile/{key}"))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let (kind, label) = match (factor_type, provider) {
            ("token:software:totp", None | Some("GOOGLE")) => (FactorType::Totp, GOOGLE_LABEL),
            ("token:software:totp", Some("OKTA")) => (FactorType::Totp, OKTA_VERIFY_LABEL),
            ("sms", None | Some("OKTA")) => (FactorType::Sms, "SMS"),
            ("email", None | Some("OKTA")) => (FactorType::Email, "Email"),
            (t, p) => return Err(unsupported(t, p)),
        };
        let user_id = user_ref(&user.id);
        replace_pending(&ctx, user_id, kind, label).await?;
        let enrolment = Enrolment {
            user_id,
            factor_type: kind,
            phone_number: profile("phoneNumber").map(|p| shapes::e164(&p)),
            email: profile("email"),
            label: Some(label.to_string()),
            // Admin keys only: an administrator needs no fresh proof.
            step_up: None,
        };
        let state = &ctx.app.state;
        let Enrolled {
            factor_id,
            factor,
            totp,
            ..
        } = app::enrol::enroll(state, &ctx.call, enrolment).await?;
        let now = state.clock.now();
        let mut answer = FactorFacts::from_aggregate(&factor_id.to_string(), &factor, now)?
            .to_json(&ctx.base, &user.login);
        if let (Some(totp), Some(enrolled)) = (totp, factor.totp.as_ref()) {
            let token = app::qr_link::issue(state, factor_id, &totp.secret_base32, now)?;
            let qr = format!(
                "{}/api/v1/users/{}/factors/{factor_id}/qr/{token}",
                ctx.base, user.id
            );
            answer["_embedded"] = json!({ "activation": {
                "timeStep": enrolled.params.period,
                "sharedSecret": totp.secret_base32,
                "encoding": "base32",
                "keyLength": totp.secret_base32.len(),
                "_links": { "qrcode": { "href": qr, "type": "image/png" } },
            }});
        }
        Ok(json(answer))
    }
    .await;
    ctx.answer(result)
}

async fn live_factors(ctx: &Okta, user: &UserRow) -> Result<Vec<FactorRow>, OktaError> {
    Ok(
        app::factors::of_user(&ctx.app.state, &ctx.call, user_ref(&user.id))
            .await?
            .into_iter()
            .filter(|row| row.status != "REMOVED")
            .collect(),
    )
}

/// `GET /api/v1/users/{userId}/factors`: the enrolled factors (deleted ones are gone).
pub(crate) async fn list(ctx: Okta, Path(user): Path<String>) -> Response {
    let result = async {
        let user = existing_user(&ctx, &user).await?;
        let now = ctx.app.state.clock.now();
        let factors = live_factors(&ctx, &user)
            .await?
            .iter()
            .map(|row| Ok(FactorFacts::from_row(row, now)?.to_json(&ctx.base, &user.login)))
            .collect::<Result<Vec<_>, OktaError>>()?;
        Ok(json(Value::Array(factors)))
    }
    .await;
    ctx.answer(result)
}

/// `GET /api/v1/users/{userId}/factors/catalog`: what can be enrolled, and whether it is.
pub(crate) async fn catalog(ctx: Okta, Path(user): Path<String>) -> Response {
    let result = async {
        let user = existing_user(&ctx, &user).await?;
        let now = ctx.app.state.clock.now();
        let mut enrolled = Vec::new();
        for row in live_factors(&ctx, &user).await? {
            let facts = FactorFacts::from_row(&row, now)?;
            if !facts.is_pending() {
                enrolled.push((facts.factor_type(), facts.provider()));
            }
        }
        let href = format!("{}/api/v1/users/{}/factors", ctx.base, user.id);
        let entries = [
            (FactorType::Totp, "GOOGLE"),
            (FactorType::Totp, "OKTA"),
            (FactorType::Sms, "OKTA"),
            (FactorType::Email, "OKTA"),
        ]
        .iter()
        .map(|&(t, provider)| {
            json!({
                "factorType": shapes::factor_type_name(t),
                "provider": provider,
                "vendorName": provider,
                "status": if enrolled.contains(&(t, provider)) { "ACTIVE" } else { "NOT_SETUP" },
                "enrollment": "OPTIONAL",
                "_links": { "enroll": { "href": href, "hints": { "allow": ["POST"] } } },
            })
        })
        .collect();
        Ok(json(Value::Array(entries)))
    }
    .await;
    ctx.answer(result)
}

/// `GET /api/v1/users/{userId}/factors/questions`: security questions are not a factor here.
pub(crate) async fn questions(ctx: Okta, Path(user): Path<String>) -> Response {
    let result = async {
        existing_user(&ctx, &user).await?;
        Err(unsupported("question", None))
    }
    .await;
    ctx.answer(result)
}

/// `GET /api/v1/users/{userId}/factors/{factorId}`.
pub(crate) async fn get(ctx: Okta, Path((user, factor)): Path<(String, String)>) -> Response {
    let result = async {
        let (user, _, facts) = owned_factor(&ctx, &user, &factor).await?;
        Ok(json(facts.to_json(&ctx.base, &user.login)))
    }
    .await;
    ctx.answer(result)
}

/// `DELETE /api/v1/users/{userId}/factors/{factorId}`: 204.
pub(crate) async fn remove(ctx: Okta, Path((user, factor)): Path<(String, String)>) -> Response {
    let result = async {
        let (_, id, _) = owned_factor(&ctx, &user, &factor).await?;
        app::factors::remove(&ctx.app.state, &ctx.call, id, None).await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    }
    .await;
    ctx.answer(result)
}

/// `POST /api/v1/users/{userId}/lifecycle/reset_factors`: every factor removed; 200, no body.
pub(crate) async fn reset(ctx: Okta, Path(user): Path<String>) -> Response {
    let result = async {
        let user = existing_user(&ctx, &user).await?;
        app::factors::reset(&ctx.app.state, &ctx.call, user_ref(&user.id)).await?;
        Ok(StatusCode::OK.into_response())
    }
    .await;
    ctx.answer(result)
}

/// `POST …/factors/{factorId}/lifecycle/activate` with `{"passCode"}`: the factor, `ACTIVE`.
pub(crate) async fn activate(
    ctx: Okta,
    Path((user, factor)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let result = async {
        let (user, id, _) = owned_factor(&ctx, &user, &factor).await?;
        let body = Okta::body(&body)?;
        let code = pass_code_of(body.as_ref()).ok_or_else(|| {
            OktaError::from(AppError::bad_input(
                "PASS_CODE_REQUIRED",
                "passCode: The field cannot be left blank",
            ))
        })?;
        let state = &ctx.app.state;
        let activation =
            app::enrol::activate(state, &ctx.call, id, app::prove::pass_code(code)?, None).await?;
        if let Some(failure) = proof_failure(activation.proved.outcome) {
            return Err(failure);
        }
        let facts = FactorFacts::from_aggregate(
            &id.to_string(),
            &activation.proved.factor,
            state.clock.now(),
        )?;
        Ok(json(facts.to_json(&ctx.base, &user.login)))
    }
    .await;
    ctx.answer(result)
}

/// `POST …/factors/{factorId}/verify`: `{"passCode"}` checks a code (`SUCCESS`, or Okta's
/// 403s); for SMS and e-mail an empty body sends a code (`CHALLENGE`).
pub(crate) async fn verify(
    ctx: Okta,
    Path((user, factor)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let result = async {
        let (user, id, facts) = owned_factor(&ctx, &user, &factor).await?;
        let body = Okta::body(&body)?;
        let state = &ctx.app.state;
        if let Some(code) = pass_code_of(body.as_ref()) {
            let proved =
                app::prove::verify(state, &ctx.call, id, app::prove::pass_code(code)?).await?;
            if let Some(failure) = proof_failure(proved.outcome) {
                return Err(failure);
            }
            return Ok(json(json!({ "factorResult": "SUCCESS" })));
        }
        if body.as_ref().and_then(|b| b.get("answer")).is_some() {
            return Err(unsupported("question", None));
        }
        match facts.factor_type() {
            FactorType::Sms | FactorType::Email => {
                app::codes::challenge_factor(state, &ctx.call, id, None).await?;
                let href = format!("{}/api/v1/users/{}/factors/{id}", ctx.base, user.id);
                let shown = facts.to_json(&ctx.base, &user.login);
                Ok(json(json!({
                    "factorResult": "CHALLENGE",
                    "profile": shown["profile"],
                    "_links": {
                        "verify": { "href": format!("{href}/verify"), "hints": { "allow": ["POST"] } },
                        "factor": { "href": href, "hints": { "allow": ["GET", "DELETE"] } },
                    },
                })))
            }
            _ => Err(AppError::bad_input(
                "PASS_CODE_REQUIRED",
                "passCode: The field cannot be left blank",
            )
            .into()),
        }
    }
    .await;
    ctx.answer(result)
}

/// `POST …/factors/{factorId}/resend`: a new activation code for a pending SMS or e-mail factor.
pub(crate) async fn resend(ctx: Okta, Path((user, factor)): Path<(String, String)>) -> Response {
    let result = async {
        let (user, id, facts) = owned_factor(&ctx, &user, &factor).await?;
        if !matches!(facts.factor_type(), FactorType::Sms | FactorType::Email) {
            return Err(AppError::bad_input(
                "CODES_NOT_SUPPORTED",
                "only SMS and e-mail factors are sent codes",
            )
            .into());
        }
        app::codes::challenge_factor(&ctx.app.state, &ctx.call, id, None).await?;
        Ok(json(facts.to_json(&ctx.base, &user.login)))
    }
    .await;
    ctx.answer(result)
}

/// `GET …/factors/{factorId}/transactions/{transactionId}/verify`: push transactions, which
/// Tessera does not have.
pub(crate) async fn push_transaction(ctx: Okta) -> Response {
    ctx.answer(Err(unsupported("push", Some("OKTA"))))
}

/// `GET …/factors/{factorId}/qr/{token}`: the QR code of a TOTP factor pending activation,
/// without a key (the token is the capability); 404 once dead.
pub(crate) async fn qr_code(
    Anonymous(ctx): Anonymous,
    Path((user, factor, token)): Path<(String, String, String)>,
) -> Response {
    let result = async {
        let factor_id = FactorId::parse(&factor).ok_or_else(|| factor_not_found(&factor))?;
        let png = app::qr_link::open(&ctx.app.state, user_ref(&user), factor_id, &token).await?;
        let mut response = png.into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
        // It shows a secret: no cache may keep it.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(response)
    }
    .await;
    ctx.answer(result)
}
