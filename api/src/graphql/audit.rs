//! The audit log: `events` (a Relay connection over the log) and `subscription events`
//! (history from a position, then live). Admins only. Payloads and metadata are redacted
//! (`tessera_projections::audit::redact`) before they leave.
//!
//! Both read in the tailer's order and only where nothing can commit behind the reader, so a
//! position handed out (as a cursor or an event's `position`) is a safe place to resume from:
//! no event is skipped or repeated, across pages, reconnects and server restarts.

use std::{collections::VecDeque, time::Duration};

use async_graphql::{Context, ID, InputObject, Json, Object, SimpleObject, Subscription};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use tessera_projections::audit::{self, Filter};
use tessera_store::{Cursor, StoredEvent, parse_ts};
use tokio::sync::watch;

use crate::{
    app::{self, AppError, AppResult},
    graphql::{
        ContextExt,
        page::{self, Connection, PageSize, Source},
    },
    state::AppState,
};

/// Default and largest page of `events`.
const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 500;
/// Events a subscription reads per query.
const STREAM_PAGE: i64 = 200;
/// Longest text accepted in a filter field, and most event types.
const MAX_FILTER_TEXT: usize = 256;
const MAX_EVENT_TYPES: usize = 64;

/// Exact filters on the log; all given ones must hold.
#[derive(InputObject, Clone, Debug, Default)]
#[graphql(name = "EventFilter")]
pub struct EventFilterInput {
    /// `User`, `Factor`, …
    pub aggregate_type: Option<String>,
    /// One stream.
    pub aggregate_id: Option<ID>,
    /// A user's own events and those of the user's factors.
    pub user_id: Option<ID>,
    /// Any of these event types (`FailedAttempt`, `LockedOut`, …).
    pub event_types: Option<Vec<String>>,
    /// Recorded at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Recorded before this time.
    pub to: Option<DateTime<Utc>>,
}

impl EventFilterInput {
    fn into_filter(self) -> AppResult<Filter> {
        let too_long = |s: &str| s.len() > MAX_FILTER_TEXT;
        let types = self.event_types.as_deref().unwrap_or_default();
        if [
            &self.aggregate_type,
            &self.aggregate_id.as_ref().map(|i| i.0.clone()),
        ]
        .into_iter()
        .chain([&self.user_id.as_ref().map(|i| i.0.clone())])
        .flatten()
        .any(|s| too_long(s))
            || types.len() > MAX_EVENT_TYPES
            || types.iter().any(|t| too_long(t))
        {
            return Err(AppError::bad_input(
                "INVALID_FILTER",
                "a filter value is too long or names too many event types",
            ));
        }
        for at in [self.from, self.to].into_iter().flatten() {
            app::moment(at)?;
        }
        if let (Some(from), Some(to)) = (self.from, self.to)
            && from > to
        {
            return Err(AppError::bad_input(
                "INVALID_TIME_RANGE",
                "filter.from is after filter.to",
            ));
        }
        Ok(Filter {
            aggregate_type: self.aggregate_type,
            aggregate_id: self.aggregate_id.map(|i| i.0),
            user_id: self.user_id.map(|i| i.0),
            activity_of: None,
            event_types: self.event_types,
            from: self.from,
            to: self.to,
        })
    }
}

/// One event of the log, redacted.
#[derive(SimpleObject, Clone, Debug)]
pub struct AuditEvent {
    /// Where it is in the log: a cursor to resume after (`tx.pos`; compare as parsed numbers).
    pub position: String,
    /// `User`, `Factor`, …
    pub aggregate_type: String,
    /// The stream.
    pub aggregate_id: ID,
    /// Position within the stream, from 1.
    pub sequence: i32,
    /// `Enrolled`, `FailedAttempt`, …
    pub event_type: String,
    /// Payload schema version, as stored.
    pub event_version: String,
    /// The payload as stored, with secrets, hashes, ciphertexts and nonces redacted.
    pub payload: Json<serde_json::Value>,
    /// Actor, request and correlation ids, causation (command) id, client IP, user agent.
    pub metadata: Json<serde_json::Value>,
    /// When the store recorded it.
    pub recorded_at: DateTime<Utc>,
}

impl AuditEvent {
    fn from_stored(e: StoredEvent) -> AppResult<Self> {
        let recorded_at = parse_ts(&e.recorded_at).ok_or_else(|| {
            AppError::internal(format!("unparseable recorded_at {}", e.recorded_at))
        })?;
        Ok(Self {
            position: e.cursor.encode(),
            aggregate_type: e.aggregate_type,
            aggregate_id: ID(e.aggregate_id),
            sequence: i32::try_from(e.sequence).unwrap_or(i32::MAX),
            event_type: e.event_type,
            event_version: e.event_version,
            payload: Json(audit::redact_payload(&e.payload)),
            metadata: Json(audit::redact(&e.metadata)),
            recorded_at,
        })
    }
}

/// One event with its neighbours in the causation graph (`metadata.causation_id`).
#[derive(SimpleObject, Clone, Debug)]
pub struct AuditEventTrace {
    /// The event.
    pub event: AuditEvent,
    /// What caused it, nearest first: the event its `causation_id` names (for an alert, the
    /// event that tipped the rule), then that one's cause, and so on; empty when a command
    /// wrote it.
    pub causes: Vec<AuditEvent>,
    /// The other events with the same `causation_id`: written by the same command (or raised
    /// by the same trigger), in log order.
    pub siblings: Vec<AuditEvent>,
    /// The events it caused (alerts raised because of it), in log order.
    pub effects: Vec<AuditEvent>,
}

impl AuditEventTrace {
    fn from_trace(t: app::trace::Trace) -> AppResult<Self> {
        let all = |events: Vec<StoredEvent>| {
            events
                .into_iter()
                .map(AuditEvent::from_stored)
                .collect::<AppResult<Vec<_>>>()
        };
        Ok(Self {
            event: AuditEvent::from_stored(t.event)?,
            causes: all(t.causes)?,
            siblings: all(t.siblings)?,
            effects: all(t.effects)?,
        })
    }
}

/// Parses a position handed out earlier.
fn parse_position(s: &str) -> AppResult<Cursor> {
    Cursor::decode(s)
        .filter(|c| c.tx >= 0 && c.pos >= 0)
        .ok_or_else(|| AppError::bad_input("INVALID_CURSOR", "not a position from this log"))
}

#[derive(Default)]
pub struct AuditQuery;

#[Object]
impl AuditQuery {
    /// The event log, oldest first, filtered exactly (admins and `read:audit` keys).
    async fn events(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Exact-match filter (all events if null).")] filter: Option<
            EventFilterInput,
        >,
        #[graphql(desc = "Cursor: the `position` of the last event of the previous page.")]
        after: Option<String>,
        #[graphql(desc = "Page size (default 50, at most 500).")] first: Option<i32>,
    ) -> async_graphql::Result<Connection<AuditEvent>> {
        let prepared = (|| {
            ctx.auditor()?;
            let filter = filter.unwrap_or_default().into_filter()?;
            let after = after.as_deref().map(parse_position).transpose()?;
            Ok::<_, AppError>((filter, after))
        })();
        let (filter, from) = prepared.map_err(AppError::into_gql)?;
        let state = ctx.state()?;
        let filter = &filter;
        page::connection(
            ctx,
            (after, first),
            PageSize {
                default: DEFAULT_PAGE,
                max: MAX_PAGE,
            },
            Source {
                fetch: |_, n| async move {
                    let mut conn = state.db.pool.acquire().await.map_err(AppError::internal)?;
                    Ok(audit::read(
                        &mut conn,
                        state.db.dialect,
                        filter,
                        from.unwrap_or_default(),
                        None,
                        n,
                    )
                    .await?)
                },
                count: || async move {
                    let mut conn = state.db.pool.acquire().await.map_err(AppError::internal)?;
                    Ok(audit::count(&mut conn, state.db.dialect, filter).await?)
                },
                cursor: |event: &StoredEvent| event.cursor.encode(),
                node: AuditEvent::from_stored,
            },
        )
        .await
    }

    /// One event of the log by its stream and sequence, with what caused it, what the same
    /// command wrote and what it caused (admins and `read:audit` keys; `null` if there is
    /// none).
    async fn audit_event(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The event's `aggregateType`.")] aggregate_type: String,
        #[graphql(desc = "The event's `aggregateId`.")] aggregate_id: ID,
        #[graphql(desc = "The event's `sequence`.")] sequence: i32,
    ) -> async_graphql::Result<Option<AuditEventTrace>> {
        let run = async {
            let key = app::trace::EventKey {
                aggregate_type,
                aggregate_id: aggregate_id.0,
                sequence: i64::from(sequence),
            };
            app::trace::trace(ctx.state()?, &ctx.call(), key)
                .await?
                .map(AuditEventTrace::from_trace)
                .transpose()
        };
        run.await.map_err(AppError::into_gql)
    }
}

#[derive(Default)]
pub struct AuditSubscription;

#[Subscription]
impl AuditSubscription {
    /// Every event after `fromPosition` (from the start if null) that matches `filter`: the
    /// history first, then live events as any node writes them (admins and `read:audit` keys). To resume after
    /// a disconnect, pass the `position` of the last event received.
    async fn events(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Exact-match filter (all events if null).")] filter: Option<
            EventFilterInput,
        >,
        #[graphql(desc = "Resume after this `position` (from the start of the log if null).")]
        from_position: Option<String>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<AuditEvent>> + use<>> {
        let prepared = (|| {
            ctx.auditor()?;
            let filter = filter.unwrap_or_default().into_filter()?;
            let after = from_position
                .as_deref()
                .map(parse_position)
                .transpose()?
                .unwrap_or_default();
            Ok::<_, AppError>((ctx.state()?.clone(), filter, after))
        })();
        let (state, filter, after) = prepared.map_err(AppError::into_gql)?;
        Ok(tail(state, filter, after))
    }
}

/// How long a subscription waits for the head to move before looking anyway.
const IDLE_RECHECK: Duration = Duration::from_secs(2);

struct Tail {
    state: AppState,
    filter: Filter,
    cursor: Cursor,
    buffer: VecDeque<StoredEvent>,
    head: watch::Receiver<Cursor>,
    stop: watch::Receiver<bool>,
    done: bool,
}

fn tail(
    state: AppState,
    filter: Filter,
    after: Cursor,
) -> impl Stream<Item = async_graphql::Result<AuditEvent>> {
    tail_stored(state, filter, after).map(|item| {
        item.and_then(|event| {
            AuditEvent::from_stored(event).map_err(|e| async_graphql::Error::new(e.to_string()))
        })
    })
}

/// The events matching `filter` after `after`: history first, then live as the log's head
/// moves (any node's writes), until the server stops. Each subscription reads the store
/// itself, so a slow subscriber is never dropped events, only served later.
pub(crate) fn tail_stored(
    state: AppState,
    filter: Filter,
    after: Cursor,
) -> impl Stream<Item = async_graphql::Result<StoredEvent>> {
    let tail = Tail {
        head: state.log_head.subscribe(),
        stop: state.shutdown.subscribe(),
        state,
        filter,
        cursor: after,
        buffer: VecDeque::new(),
        done: false,
    };
    futures::stream::unfold(tail, |mut t| async move {
        loop {
            if t.done || *t.stop.borrow() {
                return None;
            }
            if let Some(event) = t.buffer.pop_front() {
                return Some((Ok(event), t));
            }
            match t.fill().await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(error = %e, "event subscription failed");
                    t.done = true;
                    return Some((Err(async_graphql::Error::new("internal error")), t));
                }
            }
            tokio::select! {
                changed = t.head.changed() => if changed.is_err() { return None },
                _ = t.stop.changed() => {}
                () = tokio::time::sleep(IDLE_RECHECK) => {}
            }
        }
    })
}

impl Tail {
    /// Reads the next matching events up to the head seen now; returns whether any came.
    /// When the page is not full, everything up to that head has been looked at, so the
    /// cursor moves there even if nothing matched: the next read starts after it.
    async fn fill(&mut self) -> Result<bool, tessera_store::Error> {
        let head = *self.head.borrow_and_update();
        if head <= self.cursor {
            return Ok(false);
        }
        let mut conn = self.state.db.pool.acquire().await?;
        let events = audit::read(
            &mut conn,
            self.state.db.dialect,
            &self.filter,
            self.cursor,
            Some(head),
            STREAM_PAGE,
        )
        .await?;
        let full = i64::try_from(events.len()).unwrap_or(i64::MAX) >= STREAM_PAGE;
        self.cursor = match (full, events.last()) {
            (true, Some(last)) => last.cursor,
            _ => head,
        };
        let any = !events.is_empty();
        self.buffer.extend(events);
        Ok(any)
    }
}
