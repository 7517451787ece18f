//! Security alerts: `securityAlerts` (query and subscription), `acknowledgeSecurityAlertV2`
//! (and the deprecated `acknowledgeSecurityAlert`) for the security team, and
//! `markSecurityAlertSeen` for the alert's own user.

use async_graphql::{Context, ID, InputObject, Json, Object, SimpleObject, Subscription};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use tessera_domain::{
    alert::{Alert, AlertEvent},
    ids::UserId,
};
use tessera_projections::{alerts::AlertRow, audit::Filter};
use tessera_store::parse_ts;

use crate::{
    app::{self, AppError, AppResult},
    auth::Caller,
    graphql::{
        ContextExt,
        audit::tail_stored,
        page::{self, Connection, PageSize, Source},
        user::parse_user_id,
    },
};

/// A security incident: repeated failures, a lockout, a recovery-code use.
#[derive(SimpleObject, Clone, Debug)]
pub struct SecurityAlert {
    /// Stable id (also the webhook `webhook-id`): deliveries may repeat, the id does not.
    pub id: ID,
    /// Whose second factor.
    pub user_id: ID,
    /// `REPEATED_FAILURES`, `FACTOR_LOCKED`, `USER_LOCKED`, `RECOVERY_CODE_USED`,
    /// `LOGIN_THROTTLED`, `POSSIBLE_CLONED_AUTHENTICATOR`, `SMS_BUDGET_WARNING`; and the
    /// notices of account changes `FACTOR_ADDED`, `FACTOR_REMOVED`,
    /// `RECOVERY_CODES_REGENERATED`, `DEVICE_TRUSTED`.
    pub kind: String,
    /// What happened, for people.
    pub reason: String,
    /// When the triggering event happened.
    pub raised_at: DateTime<Utc>,
    /// When the security team (an administrator) acknowledged it.
    pub acknowledged_at: Option<DateTime<Utc>>,
    /// When its user marked it seen (`markSecurityAlertSeen`), for themselves: it does not
    /// acknowledge it.
    pub seen_by_user_at: Option<DateTime<Utc>>,
    /// The events that caused it (`aggregate_type`, `aggregate_id`, `sequence`, `event_type`).
    pub caused_by: Json<serde_json::Value>,
}

impl SecurityAlert {
    /// The alert as its row shows it, with the acknowledgement and the user's "seen" as the
    /// command that just ran left them (the row may not show them yet).
    fn after(row: AlertRow, alert: &Alert) -> AppResult<Self> {
        let mut shown = Self::from_row(row)?;
        shown.acknowledged_at = alert.acknowledged_at;
        shown.seen_by_user_at = alert.seen_by_user_at;
        Ok(shown)
    }

    fn from_row(row: AlertRow) -> AppResult<Self> {
        let bad = || AppError::internal(format!("malformed security_alerts_v1 row {}", row.id));
        Ok(Self {
            raised_at: parse_ts(&row.raised_at).ok_or_else(bad)?,
            acknowledged_at: row.acknowledged_at.as_deref().and_then(parse_ts),
            seen_by_user_at: row.seen_by_user_at.as_deref().and_then(parse_ts),
            caused_by: Json(serde_json::from_str(&row.caused_by).map_err(|_| bad())?),
            id: ID(row.id),
            user_id: ID(row.user_id),
            kind: row.kind,
            reason: row.reason,
        })
    }
}

/// Which user's alerts a caller may see: admins any (or all), users only their own.
fn alert_scope(caller: &Caller, user_id: Option<&ID>) -> AppResult<Option<UserId>> {
    let user = user_id.map(|id| parse_user_id(id)).transpose()?;
    match (caller, user) {
        (Caller::Admin { .. } | Caller::Operator, user) => Ok(user),
        (Caller::User { user_id, .. }, Some(u)) if *user_id == u => Ok(Some(u)),
        (Caller::User { user_id, .. }, None) => Ok(Some(*user_id)),
        (Caller::User { .. }, Some(_)) => Err(AppError::Forbidden),
        // An enrolment-only token may enrol and activate, nothing else.
        // A `read:audit` key reads the event log and nothing else.
        (Caller::Enrollment { .. } | Caller::Auditor { .. }, _) => Err(AppError::Forbidden),
    }
}

#[derive(Default)]
pub struct AlertQuery;

#[Object]
impl AlertQuery {
    /// Alerts, oldest first (one user's, or all for admins).
    async fn security_alerts(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only this user's alerts (all users if null).")] user_id: Option<ID>,
        #[graphql(desc = "Cursor: the `endCursor` of the previous page.")] after: Option<String>,
        #[graphql(desc = "Page size (default 50, at most 200).")] first: Option<i32>,
    ) -> async_graphql::Result<Connection<SecurityAlert>> {
        let scope = match ctx.caller().and_then(|c| alert_scope(c, user_id.as_ref())) {
            Ok(scope) => scope.map(|u| u.to_string()),
            Err(e) => return Err(e.into()),
        };
        if after.as_deref().is_some_and(|a| !a.contains('|')) {
            return Err(AppError::bad_input(
                "INVALID_CURSOR",
                "after is not a cursor of this connection",
            )
            .into());
        }
        let state = ctx.state()?;
        let scope = scope.as_deref();
        page::connection(
            ctx,
            (after, first),
            PageSize::STANDARD,
            Source {
                fetch: |after: Option<String>, n| async move {
                    let cursor = after.as_deref().and_then(|a| a.split_once('|'));
                    Ok(state.queries.alerts_after(scope, cursor, n).await?)
                },
                count: || async move { Ok(state.queries.alert_count(scope).await?) },
                cursor: |row: &AlertRow| format!("{}|{}", row.raised_at, row.id),
                node: SecurityAlert::from_row,
            },
        )
        .await
    }
}

/// Input of `acknowledgeSecurityAlertV2`.
#[derive(InputObject)]
pub struct AcknowledgeSecurityAlertInput {
    /// The alert.
    pub alert_id: ID,
}

/// What `acknowledgeSecurityAlertV2` answers.
#[derive(SimpleObject)]
pub struct AcknowledgeSecurityAlertPayload {
    /// The alert, with `acknowledgedAt` set.
    pub security_alert: SecurityAlert,
}

async fn acknowledge(ctx: &Context<'_>, id: &str) -> AppResult<SecurityAlert> {
    let (row, alert) = app::alerts::acknowledge(ctx.state()?, &ctx.call(), id).await?;
    SecurityAlert::after(row, &alert)
}

/// Input of `markSecurityAlertSeen`.
#[derive(InputObject)]
pub struct MarkSecurityAlertSeenInput {
    /// One of the caller's own alerts.
    pub alert_id: ID,
}

/// What `markSecurityAlertSeen` answers.
#[derive(SimpleObject)]
pub struct MarkSecurityAlertSeenPayload {
    /// The alert, with `seenByUserAt` set (`acknowledgedAt` as it was).
    pub security_alert: SecurityAlert,
}

async fn mark_seen(ctx: &Context<'_>, id: &str) -> AppResult<SecurityAlert> {
    let (row, alert) = app::alerts::mark_seen(ctx.state()?, &ctx.call(), id).await?;
    SecurityAlert::after(row, &alert)
}

#[derive(Default)]
pub struct AlertMutation;

#[Object]
impl AlertMutation {
    /// Marks an alert as seen by the security team (admins only: users may not acknowledge
    /// their own alerts).
    async fn acknowledge_security_alert_v2(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The alert.")] input: AcknowledgeSecurityAlertInput,
    ) -> async_graphql::Result<AcknowledgeSecurityAlertPayload> {
        let security_alert = acknowledge(ctx, &input.alert_id)
            .await
            .map_err(AppError::into_gql)?;
        Ok(AcknowledgeSecurityAlertPayload { security_alert })
    }

    /// Marks one of the caller's own alerts as seen by them (a user token; `seenByUserAt`). It
    /// stays unacknowledged for the security team. Another user's alert is `ALERT_NOT_FOUND`;
    /// a second mark keeps the first time.
    async fn mark_security_alert_seen(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The alert.")] input: MarkSecurityAlertSeenInput,
    ) -> async_graphql::Result<MarkSecurityAlertSeenPayload> {
        let security_alert = mark_seen(ctx, &input.alert_id)
            .await
            .map_err(AppError::into_gql)?;
        Ok(MarkSecurityAlertSeenPayload { security_alert })
    }

    /// Marks an alert as seen, answering the bare alert (see `acknowledgeSecurityAlertV2`).
    #[graphql(
        deprecation = "Use `acknowledgeSecurityAlertV2(input: {alertId})`: the alert in `AcknowledgeSecurityAlertPayload.securityAlert`. Kept for at least one release."
    )]
    async fn acknowledge_security_alert(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The alert.")] id: ID,
    ) -> async_graphql::Result<SecurityAlert> {
        acknowledge(ctx, &id).await.map_err(AppError::into_gql)
    }
}

#[derive(Default)]
pub struct AlertSubscription;

#[Subscription]
impl AlertSubscription {
    /// Alerts as they are raised, by any node on the same database.
    async fn security_alerts(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only this user's alerts (all users if null).")] user_id: Option<ID>,
    ) -> async_graphql::Result<impl Stream<Item = SecurityAlert>> {
        let prepared: AppResult<_> = async {
            let scope = alert_scope(ctx.caller()?, user_id.as_ref())?;
            let state = ctx.state()?.clone();
            // From the log's head now: alerts raised from here on, by any node.
            let mut conn = state.db.pool.acquire().await.map_err(AppError::internal)?;
            let head = tessera_store::log::head(&mut conn, state.db.dialect).await?;
            drop(conn);
            Ok((scope, state, head))
        }
        .await;
        let (scope, state, head) = prepared.map_err(AppError::into_gql)?;
        let filter = Filter {
            aggregate_type: Some("Alert".into()),
            event_types: Some(vec!["SecurityAlertRaised".into()]),
            ..Filter::default()
        };
        Ok(
            tail_stored(state, filter, head).filter_map(move |event| async move {
                let AlertEvent::SecurityAlertRaised(raised) =
                    event.ok()?.decode::<AlertEvent>().ok()?
                else {
                    return None;
                };
                if scope.is_some_and(|u| u != raised.user_id) {
                    return None;
                }
                Some(SecurityAlert {
                    id: ID(raised.alert_id.to_string()),
                    user_id: ID(raised.user_id.to_string()),
                    kind: raised.kind.as_str().to_string(),
                    reason: raised.reason,
                    raised_at: raised.at,
                    acknowledged_at: None,
                    seen_by_user_at: None,
                    caused_by: Json(serde_json::to_value(raised.caused_by).unwrap_or_default()),
                })
            }),
        )
    }
}
