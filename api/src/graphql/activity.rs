//! `User.activity` (and so `me { activity }`): a user's security activity, over
//! `app::activity`. A user token reads its own user's; admins and `read:audit` keys any
//! user's (`user(id) { activity }`); an API key's `me` is `null`, so it has none there.

use async_graphql::{Context, Enum, ID, SimpleObject};
use chrono::{DateTime, Utc};
use tessera_domain::ids::UserId;
use tessera_projections::activity::Outcome;
use tessera_store::Cursor;

use crate::{
    app::{self, AppError, AppResult, activity::Item},
    graphql::{
        ContextExt,
        page::{self, Connection, PageSize, Source},
    },
};

/// Default and largest page of `activity`.
const PAGE: PageSize = PageSize {
    default: 20,
    max: 100,
};

/// How an activity entry went.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[graphql(name = "ActivityResult")]
pub enum ActivityResult {
    /// A proof, a sign-in or a remembered device worked.
    Success,
    /// A proof or a sign-in failed, or something locked.
    Failure,
    /// The account's ways to prove itself changed.
    Change,
    /// Tessera raised a security alert.
    Alert,
}

impl From<Outcome> for ActivityResult {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Success => Self::Success,
            Outcome::Failure => Self::Failure,
            Outcome::Change => Self::Change,
            Outcome::Alert => Self::Alert,
        }
    }
}

/// One entry of a user's security activity, from one event of the log (redacted).
#[derive(SimpleObject, Clone, Debug)]
pub struct ActivityEntry {
    /// The event's `position` in the log (`events` finds it there).
    pub position: String,
    /// When the store recorded it.
    pub at: DateTime<Utc>,
    /// The event's type (`FailedAttempt`, `Activated`, `SecurityAlertRaised`, …).
    pub event_type: String,
    /// The stream's type (`User`, `Factor`, `Challenge`, `Alert`).
    pub aggregate_type: String,
    /// What happened, in plain words (`Failed verification`, `Factor added`).
    pub kind: String,
    /// How it went.
    pub result: ActivityResult,
    /// Why a failure failed (`INVALID_CODE`, `REPLAYED`), why a device was forgotten, an
    /// alert's kind, a code's channel.
    pub reason: Option<String>,
    /// More: an alert's sentence, a code's masked destination, a remembered device's label.
    pub detail: Option<String>,
    /// The factor involved, if any.
    pub factor_id: Option<ID>,
    /// Its type (`TOTP`, `SMS`, `EMAIL`, `WEBAUTHN`).
    pub factor_type: Option<String>,
    /// Its label.
    pub factor_label: Option<String>,
    /// The client IP of the request that caused it (none for Tessera's own, such as alerts).
    pub ip_address: Option<String>,
    /// The user agent of that request.
    pub user_agent: Option<String>,
}

impl From<Item> for ActivityEntry {
    fn from(i: Item) -> Self {
        Self {
            position: i.cursor.encode(),
            at: i.at,
            event_type: i.event_type,
            aggregate_type: i.aggregate_type,
            kind: i.entry.text.to_string(),
            result: i.entry.outcome.into(),
            reason: i.entry.reason,
            detail: i.entry.detail,
            factor_id: i.entry.factor_id.map(ID),
            factor_type: i.factor_type,
            factor_label: i.factor_label,
            ip_address: i.entry.client_ip,
            user_agent: i.entry.user_agent,
        }
    }
}

fn parse_cursor(s: &str) -> AppResult<Cursor> {
    Cursor::decode(s)
        .filter(|c| c.tx >= 0 && c.pos >= 0)
        .ok_or_else(|| {
            AppError::bad_input("INVALID_CURSOR", "after is not a cursor of this connection")
        })
}

/// The connection behind `User.activity`, for the user with id `user`, up to `as_of`.
pub(crate) async fn connection(
    ctx: &Context<'_>,
    user: &str,
    as_of: Option<DateTime<Utc>>,
    (after, first): (Option<String>, Option<i32>),
) -> async_graphql::Result<Connection<ActivityEntry>> {
    let state = ctx.state()?;
    let call = ctx.call();
    let prepared = (|| {
        let user = UserId::parse(user).ok_or_else(|| AppError::internal("malformed user id"))?;
        app::activity::authorize(&call, user)?;
        let from = after.as_deref().map(parse_cursor).transpose()?;
        Ok::<_, AppError>((user, from))
    })();
    let (user, from) = prepared.map_err(AppError::into_gql)?;
    let call = &call;
    page::connection(
        ctx,
        (after, first),
        PAGE,
        Source {
            fetch: |_, n| app::activity::page(state, call, user, from, as_of, n),
            count: || app::activity::count(state, call, user, as_of),
            cursor: |i: &Item| i.cursor.encode(),
            node: |i| Ok(ActivityEntry::from(i)),
        },
    )
    .await
}
