//! A user's security activity (`User.activity`, `me { activity }`): the events of the user's
//! own streams that tell what happened to the account, described in plain words, newest
//! first, redacted as every audit read is (`tessera_projections::activity`).
//!
//! Who may read it: the user's own token, admins (any user) and `read:audit` keys (any user;
//! it is a view of the log they may read whole). An enrolment-only token may not.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use tessera_domain::ids::UserId;
use tessera_projections::{
    activity::{self, Entry},
    audit::{self, Filter},
};
use tessera_store::{Cursor, parse_ts};

use crate::{
    app::{AppError, AppResult, Call},
    state::AppState,
};

/// One entry of a user's activity.
#[derive(Clone, Debug)]
pub struct Item {
    /// Its place in the log: the cursor to page on from.
    pub cursor: Cursor,
    /// When the store recorded it.
    pub at: DateTime<Utc>,
    /// `User`, `Factor`, `Challenge`, `Alert`.
    pub aggregate_type: String,
    /// `FailedAttempt`, `Activated`, …
    pub event_type: String,
    /// What it means.
    pub entry: Entry,
    /// The involved factor's type (`TOTP`, …), if a factor is involved.
    pub factor_type: Option<String>,
    /// The involved factor's label, if it has one.
    pub factor_label: Option<String>,
}

/// Which events a page reads.
fn filter(user: UserId, upto: Option<DateTime<Utc>>) -> Filter {
    Filter {
        activity_of: Some(user.to_string()),
        to: upto,
        ..Filter::default()
    }
}

/// Whether `call` may read `user`'s activity.
///
/// # Errors
/// `Unauthenticated` without a token; `Forbidden` for anyone else's user token and for
/// enrolment-only tokens.
pub fn authorize(call: &Call, user: UserId) -> AppResult<()> {
    let caller = call.caller()?;
    if caller.may_act_on(user) || caller.may_read_audit() {
        Ok(())
    } else {
        Err(AppError::Forbidden)
    }
}

/// Up to `limit` entries of `user`'s activity before the cursor `before` (from the newest
/// if `None`), newest first, recorded before `upto` if given.
///
/// # Errors
/// As [`authorize`]; store and decoding errors.
pub async fn page(
    state: &AppState,
    call: &Call,
    user: UserId,
    before: Option<Cursor>,
    upto: Option<DateTime<Utc>>,
    limit: i64,
) -> AppResult<Vec<Item>> {
    authorize(call, user)?;
    let events = {
        let mut conn = state.db.pool.acquire().await.map_err(AppError::internal)?;
        audit::read_newest_first(
            &mut conn,
            state.db.dialect,
            &filter(user, upto),
            before,
            limit,
        )
        .await?
    };
    let factors: HashMap<String, (String, Option<String>)> = state
        .queries
        .factors_of_user(&user.to_string())
        .await?
        .into_iter()
        .map(|f| (f.id, (f.factor_type, f.label)))
        .collect();
    events
        .into_iter()
        .filter_map(|event| {
            let entry = activity::describe(&event)?;
            Some((event, entry))
        })
        .map(|(event, entry)| {
            let at = parse_ts(&event.recorded_at).ok_or_else(|| {
                AppError::internal(format!("unparseable recorded_at {}", event.recorded_at))
            })?;
            let factor = entry.factor_id.as_ref().and_then(|id| factors.get(id));
            Ok(Item {
                cursor: event.cursor,
                at,
                aggregate_type: event.aggregate_type,
                event_type: event.event_type,
                factor_type: factor.map(|(t, _)| t.clone()),
                factor_label: factor.and_then(|(_, l)| l.clone()),
                entry,
            })
        })
        .collect()
}

/// How many entries `user`'s activity has (every page, from the start).
///
/// # Errors
/// As [`authorize`]; store errors.
pub async fn count(
    state: &AppState,
    call: &Call,
    user: UserId,
    upto: Option<DateTime<Utc>>,
) -> AppResult<i64> {
    authorize(call, user)?;
    let mut conn = state.db.pool.acquire().await.map_err(AppError::internal)?;
    Ok(audit::count(&mut conn, state.db.dialect, &filter(user, upto)).await?)
}
