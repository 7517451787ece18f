//! One event of the log with its causation chain, for an auditor following an incident: what
//! caused it (back to the command a request ran), what else that command wrote, and what it
//! caused in turn (the alerts the reactor raised because of it).
//!
//! Every event's metadata carries a `causation_id`: `cmd-<uuid>` for the events one command
//! wrote (all of them share it), or `Type/id/sequence` naming the event that tipped an alert
//! rule for the reactor's `SecurityAlertRaised`. Both directions are index probes.

use tessera_projections::audit;
use tessera_store::StoredEvent;

use crate::{
    app::{AppError, AppResult, Call},
    state::AppState,
};

/// Longest aggregate type or id accepted.
const MAX_KEY_TEXT: usize = 256;
/// Most events of each list (a command writes a handful; a deletion one per factor).
const MAX_RELATED: i64 = 200;
/// Most steps followed back (a chain is two or three long: alert, trigger, command).
const MAX_DEPTH: usize = 16;

/// Which event: its stream and its place in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventKey {
    /// `User`, `Factor`, …
    pub aggregate_type: String,
    /// The stream.
    pub aggregate_id: String,
    /// From 1.
    pub sequence: i64,
}

impl EventKey {
    /// The reference the reactor writes as the `causation_id` of what this event caused.
    fn reference(&self) -> String {
        format!(
            "{}/{}/{}",
            self.aggregate_type, self.aggregate_id, self.sequence
        )
    }

    /// The event a `causation_id` names, if it names one (`cmd-…` names a command).
    pub fn parse_reference(causation: &str) -> Option<Self> {
        let (rest, sequence) = causation.rsplit_once('/')?;
        let (aggregate_type, aggregate_id) = rest.split_once('/')?;
        let sequence = sequence.parse().ok().filter(|s| *s >= 1)?;
        (!aggregate_type.is_empty() && !aggregate_id.is_empty()).then(|| Self {
            aggregate_type: aggregate_type.into(),
            aggregate_id: aggregate_id.into(),
            sequence,
        })
    }

    fn of(event: &StoredEvent) -> Self {
        Self {
            aggregate_type: event.aggregate_type.clone(),
            aggregate_id: event.aggregate_id.clone(),
            sequence: event.sequence,
        }
    }
}

/// An event and its neighbours in the causation graph.
#[derive(Clone, Debug)]
pub struct Trace {
    /// The event asked for.
    pub event: StoredEvent,
    /// What caused it, nearest first: the event its `causation_id` names, that one's cause,
    /// and so on (empty when a command wrote it directly).
    pub causes: Vec<StoredEvent>,
    /// The other events with the same `causation_id` (written by the same command, or raised
    /// by the same trigger), in log order.
    pub siblings: Vec<StoredEvent>,
    /// The events whose `causation_id` names this one, in log order.
    pub effects: Vec<StoredEvent>,
}

fn causation(event: &StoredEvent) -> Option<&str> {
    event
        .metadata
        .get("causation_id")
        .and_then(|c| c.as_str())
        .filter(|c| !c.is_empty())
}

async fn one(
    conn: &mut sqlx::AnyConnection,
    state: &AppState,
    k: &EventKey,
) -> AppResult<Option<StoredEvent>> {
    Ok(audit::one(
        conn,
        state.db.dialect,
        &k.aggregate_type,
        &k.aggregate_id,
        k.sequence,
    )
    .await?)
}

/// The event at `key` with its causes, siblings and effects, or `None` if there is none (or
/// not yet readable). Admins and `read:audit` keys.
///
/// # Errors
/// `Unauthenticated` / `Forbidden` for other callers; `INVALID_EVENT_KEY` for an empty or
/// overlong type or id or a sequence below 1; store errors.
pub async fn trace(state: &AppState, call: &Call, key: EventKey) -> AppResult<Option<Trace>> {
    call.auditor()?;
    let text_ok = |s: &str| !s.is_empty() && s.len() <= MAX_KEY_TEXT;
    if !text_ok(&key.aggregate_type) || !text_ok(&key.aggregate_id) || key.sequence < 1 {
        return Err(AppError::bad_input(
            "INVALID_EVENT_KEY",
            "an event is named by a non-empty aggregate type and id and a sequence from 1",
        ));
    }
    let mut conn = state.db.pool.acquire().await.map_err(AppError::internal)?;
    let dialect = state.db.dialect;
    let Some(event) = one(&mut conn, state, &key).await? else {
        return Ok(None);
    };
    let mut causes: Vec<StoredEvent> = Vec::new();
    let mut next = causation(&event).and_then(EventKey::parse_reference);
    while let Some(k) = next.take() {
        let seen = k == key || causes.iter().any(|c| EventKey::of(c) == k);
        if seen || causes.len() >= MAX_DEPTH {
            break;
        }
        if let Some(cause) = one(&mut conn, state, &k).await? {
            next = causation(&cause).and_then(EventKey::parse_reference);
            causes.push(cause);
        }
    }
    let siblings = match causation(&event) {
        Some(c) => audit::with_causation(&mut conn, dialect, c, MAX_RELATED + 1)
            .await?
            .into_iter()
            .filter(|e| EventKey::of(e) != key)
            .take(usize::try_from(MAX_RELATED).unwrap_or(usize::MAX))
            .collect(),
        None => Vec::new(),
    };
    let effects = audit::with_causation(&mut conn, dialect, &key.reference(), MAX_RELATED).await?;
    Ok(Some(Trace {
        event,
        causes,
        siblings,
        effects,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reactor_causation_names_an_event_and_a_command_names_none() {
        assert_eq!(
            EventKey::parse_reference("Factor/0190-ab/7"),
            Some(EventKey {
                aggregate_type: "Factor".into(),
                aggregate_id: "0190-ab".into(),
                sequence: 7,
            })
        );
        for not_an_event in [
            "cmd-01931a2b-0000-7000-8000-000000000000",
            "Factor/x/0",
            "Factor/x/-1",
            "Factor//3",
            "/x/3",
            "Factor/x/seven",
            "",
        ] {
            assert_eq!(
                EventKey::parse_reference(not_an_event),
                None,
                "{not_an_event}"
            );
        }
    }
}
