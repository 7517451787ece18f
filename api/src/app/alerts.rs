//! Security alerts after they are raised: the security team acknowledges one, and the
//! alert's own user may mark it seen — which never acknowledges it, so a stolen user token
//! cannot hide an alert from the team.

use tessera_domain::alert::{Alert, AlertCommand};
use tessera_projections::alerts::AlertRow;
use uuid::Uuid;

use crate::{
    app::{AppError, AppResult, Call},
    auth::Caller,
    state::AppState,
};

/// `acknowledgeSecurityAlertV2` (admins only): the alert's row and its state after the
/// acknowledgement.
///
/// # Errors
/// Not an admin; `INVALID_ID`, `ALERT_NOT_FOUND`; store errors.
pub async fn acknowledge(state: &AppState, call: &Call, id: &str) -> AppResult<(AlertRow, Alert)> {
    let caller = call.admin()?;
    let alert_id = parse_alert_id(id)?;
    let row = state
        .queries
        .alert(&alert_id)
        .await?
        .ok_or_else(not_found)?;
    let command = AlertCommand::Acknowledge { by: caller.actor() };
    record(state, call, &alert_id, command)
        .await
        .map(|alert| (row, alert))
}

/// `markSecurityAlertSeen` (a user token, its own alerts): another user's alert answers as one
/// that does not exist; a second mark keeps the first time.
///
/// # Errors
/// Not a user token; `INVALID_ID`, `ALERT_NOT_FOUND`; store errors.
pub async fn mark_seen(state: &AppState, call: &Call, id: &str) -> AppResult<(AlertRow, Alert)> {
    // An administrator acknowledges instead.
    let Caller::User { user_id, .. } = call.caller()? else {
        return Err(AppError::Forbidden);
    };
    let user_id = *user_id;
    let alert_id = parse_alert_id(id)?;
    let row = state
        .queries
        .alert(&alert_id)
        .await?
        .filter(|row| row.user_id == user_id.to_string())
        .ok_or_else(not_found)?;
    let command = AlertCommand::MarkSeenByUser {
        user_id,
        by: call.actor(),
    };
    record(state, call, &alert_id, command)
        .await
        .map(|alert| (row, alert))
}

/// Runs `command` on the alert and waits (bounded) for the alert read model to show it.
async fn record(
    state: &AppState,
    call: &Call,
    alert_id: &str,
    command: AlertCommand,
) -> AppResult<Alert> {
    let committed = state
        .alerts
        .execute(alert_id, command, &call.metadata())
        .await?;
    state.settle_alert(alert_id, &committed).await;
    Ok(committed.state)
}

fn parse_alert_id(id: &str) -> AppResult<String> {
    Uuid::parse_str(id)
        .map(|id| id.to_string())
        .map_err(|_| AppError::bad_input("INVALID_ID", "id is not a valid alert id"))
}

fn not_found() -> AppError {
    AppError::not_found("ALERT_NOT_FOUND", "security alert not found")
}
