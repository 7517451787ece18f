//! The write side: one event store over PostgreSQL or SQLite, chosen at runtime, and an
//! executor that returns what it committed and retries optimistic-concurrency conflicts.
//!
//! A load is one query: the newest snapshot and the events after it, decoded through the
//! domain's upcasters; a full replay ([`Store::load_by_replay`]) is the same query without the
//! snapshot.
//! A commit is one multi-row INSERT, so a command that writes to two streams (a checked code
//! and the user's failure count, [`execute_with`]) commits both or neither. cqrs-es's own
//! commit is not used: its 0.5.0 snapshot commit applies the new events a second time to the
//! aggregate it serialises (docs/architecture.md, "cqrs-es snapshot bugs"), and when a commit crosses a snapshot boundary
//! with more than one event it snapshots only the events up to the boundary while recording
//! the last event's sequence, so the events after the boundary would be lost on the next load
//! (a `LockedOut` written together with the `FailedAttempt` that reached the threshold, say).
//! [`Store::execute`] therefore writes, when a commit crosses a boundary (or a load finds a
//! boundary no snapshot covers), a snapshot of the state after *all* the events, in its own
//! small transaction: a snapshot is a cache, so a failure to write one costs speed, never a
//! command. Snapshot rows are kept to one per aggregate, and a row that no longer
//! deserialises is replaced rather than duplicated (docs/architecture.md, "cqrs-es snapshot bugs").

use std::{collections::HashMap, num::NonZeroUsize, sync::Mutex, time::Duration};

use cqrs_es::{
    Aggregate, AggregateError, EventEnvelope,
    event_sink::EventSink,
    persist::{PersistenceError, SerializedEvent},
};
use lru::LruCache;
use rand::Rng;
use serde_json::Value;
use tessera_domain::versioning::{self, CommandName, Versioned};

use crate::{
    Db,
    log::Cursor,
    writer::{Appended, Row},
};

/// A stream as stored: `(last_sequence, number, payload)` of its newest snapshot, and
/// `(sequence, event_type, event_version, payload)` of each event after it.
#[derive(Default)]
struct StreamRows {
    snapshot: Option<(usize, usize, String)>,
    events: Vec<(usize, String, String, String)>,
}

/// A stream as a load needs it, in one round trip: its newest snapshot (if `snapshots`) and
/// the events after it (without a snapshot: the events after sequence `after`), in order.
/// Metadata is not read: folding does not need it.
async fn load_stream(
    db: &Db,
    aggregate_type: &str,
    id: &str,
    snapshots: bool,
    after: usize,
) -> Result<StreamRows, sqlx::Error> {
    // Kind 0 is the snapshot, if there is one; kind 1 the events after it.
    let payload = db.dialect.json_text("payload");
    let sql = format!(
        "WITH s AS (SELECT last_sequence, current_snapshot, payload \
           FROM snapshots WHERE $3 AND aggregate_type = $1 AND aggregate_id = $2 \
           ORDER BY last_sequence DESC LIMIT 1) \
         SELECT 0 AS kind, last_sequence AS sequence, current_snapshot AS number, \
                '' AS event_type, '' AS event_version, {payload} AS payload FROM s \
         UNION ALL \
         SELECT 1, sequence, 0, event_type, event_version, {payload} FROM events \
           WHERE aggregate_type = $1 AND aggregate_id = $2 \
             AND sequence > COALESCE((SELECT last_sequence FROM s), $4) \
         ORDER BY 1, 2"
    );
    type Row = (i64, i64, i64, String, String, String);
    let rows: Vec<Row> = sqlx::query_as(&sql)
        .bind(aggregate_type)
        .bind(id)
        .bind(snapshots)
        .bind(i64::try_from(after).unwrap_or(i64::MAX))
        .fetch_all(&db.pool)
        .await?;
    let mut stream = StreamRows::default();
    for (kind, sequence, number, event_type, event_version, payload) in rows {
        let sequence = usize::try_from(sequence).unwrap_or(0);
        if kind == 0 {
            stream.snapshot = Some((sequence, usize::try_from(number).unwrap_or(0), payload));
        } else {
            stream
                .events
                .push((sequence, event_type, event_version, payload));
        }
    }
    Ok(stream)
}

async fn delete_snapshots(db: &Db, aggregate_type: &str, id: &str) -> Result<(), sqlx::Error> {
    let _turn = db.write_turn().await;
    sqlx::query("DELETE FROM snapshots WHERE aggregate_type = $1 AND aggregate_id = $2")
        .bind(aggregate_type)
        .bind(id)
        .execute(&db.pool)
        .await?;
    Ok(())
}

/// Makes `payload` (the state after event `last_sequence`) the aggregate's snapshot, unless a
/// newer one is there already; older rows go.
async fn save_snapshot(
    db: &Db,
    aggregate_type: &str,
    id: &str,
    (last_sequence, ordinal): (i64, i64),
    payload: String,
) -> Result<(), sqlx::Error> {
    let mut tx = db.begin_write().await?;
    if db.dialect == crate::Dialect::Postgres {
        // A snapshot is a cache: a crash that loses its commit costs a longer replay, never
        // an event, so its commit need not wait for its own WAL flush (the WAL writer flushes
        // it with others' soon after). Every command commit stays synchronous.
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(
        "DELETE FROM snapshots \
         WHERE aggregate_type = $1 AND aggregate_id = $2 AND last_sequence < $3",
    )
    .bind(aggregate_type)
    .bind(id)
    .bind(last_sequence)
    .execute(&mut *tx)
    .await?;
    let insert = format!(
        "INSERT INTO snapshots \
         (aggregate_type, aggregate_id, last_sequence, current_snapshot, payload) \
         SELECT $1, $2, $3, $4, CAST($5 AS {}) WHERE NOT EXISTS (SELECT 1 FROM snapshots \
         WHERE aggregate_type = $1 AND aggregate_id = $2 AND last_sequence >= $3)",
        db.dialect.json_type()
    );
    sqlx::query(&insert)
        .bind(aggregate_type)
        .bind(id)
        .bind(last_sequence)
        .bind(ordinal)
        .bind(payload)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// Appends the rows of decided commands (of any streams) through the store's writer, in the
/// next batch; returns where the last of them sits in the log, if the store says so in the
/// same statement (PostgreSQL).
async fn append_decided(
    db: &Db,
    rows: &[(&'static str, &SerializedEvent)],
) -> Result<Option<Cursor>, PersistenceError> {
    let rows: Vec<Row> = rows
        .iter()
        .map(|(aggregate_type, e)| Row {
            aggregate_type: (*aggregate_type).to_string(),
            aggregate_id: e.aggregate_id.clone(),
            sequence: i64::try_from(e.sequence).unwrap_or(i64::MAX),
            event_type: e.event_type.clone(),
            event_version: e.event_version.clone(),
            payload: e.payload.to_string(),
            metadata: e.metadata.to_string(),
        })
        .collect();
    match db.append_command(rows).await {
        Appended::Done(cursor) => Ok(cursor),
        Appended::Conflict => Err(PersistenceError::OptimisticLockError),
        Appended::Failed(e) => Err(PersistenceError::ConnectionError(Box::new(e))),
    }
}

/// What a command committed, and the aggregate after it.
#[derive(Debug)]
pub struct Committed<A: Aggregate> {
    /// The committed events (empty if the command decided nothing needed writing).
    pub events: Vec<EventEnvelope<A>>,
    /// The aggregate with those events applied.
    pub state: A,
    /// Where the last event of the commit sits in the log, when the append said so
    /// (PostgreSQL); a read-your-writes wait then needs no query to find it.
    pub cursor: Option<Cursor>,
}

impl<A: Aggregate> Committed<A> {
    /// The events' payloads.
    pub fn payloads(&self) -> Vec<A::Event> {
        self.events.iter().map(|e| e.payload.clone()).collect()
    }

    /// The sequence of the last event written, if any.
    pub fn last_sequence(&self) -> Option<usize> {
        self.events.last().map(|e| e.sequence)
    }
}

/// Events a command decided, serialised, not yet written, and the aggregate after them.
struct Decided<A: Aggregate> {
    /// The stream's length before them.
    from: usize,
    events: Vec<EventEnvelope<A>>,
    serialized: Vec<SerializedEvent>,
    state: A,
}

impl<A: Aggregate> Decided<A> {
    fn rows(&self) -> Vec<(&'static str, &SerializedEvent)> {
        self.serialized.iter().map(|e| (A::TYPE, e)).collect()
    }

    fn into_committed(self) -> Committed<A> {
        Committed {
            events: self.events,
            state: self.state,
            cursor: None,
        }
    }
}

/// `metadata` plus what every event of one command carries: the command's name and one
/// `causation_id` for all the events it wrote.
pub fn command_metadata(metadata: &HashMap<String, String>, name: &str) -> HashMap<String, String> {
    let mut metadata = metadata.clone();
    metadata.insert("command".into(), name.into());
    metadata.insert(
        "causation_id".into(),
        format!("cmd-{}", uuid::Uuid::now_v7()),
    );
    metadata
}

/// Applies `events` (as [`load_stream`] read them) to `state`, through the domain's upcasters;
/// returns the sequence of the last one (`sequence` if there were none).
fn fold<A: Aggregate>(
    state: &mut A,
    mut sequence: usize,
    events: Vec<(usize, String, String, String)>,
) -> Result<usize, AggregateError<A::Error>>
where
    A::Event: Versioned,
{
    for (event_sequence, event_type, event_version, payload) in events {
        let payload: Value = serde_json::from_str(&payload)
            .map_err(|e| AggregateError::DeserializationError(Box::new(e)))?;
        let event = versioning::decode::<A::Event>(&event_type, &event_version, payload)
            .map_err(|e| AggregateError::DeserializationError(Box::new(e)))?;
        state.apply(event);
        sequence = event_sequence;
    }
    Ok(sequence)
}

/// A short random pause before retrying a lost race, so the losers do not collide again.
async fn back_off(attempt: u32) {
    let jitter = rand::thread_rng().gen_range(0..=attempt.min(8));
    tokio::time::sleep(Duration::from_millis(u64::from(jitter))).await;
}

/// What [`execute_with`] did.
pub enum Joint<A: Aggregate, B: Aggregate> {
    /// Both commands ran; what each committed (either may be empty).
    Committed(Committed<A>, Committed<B>),
    /// `admit` refused: nothing ran. The second aggregate as loaded, and its length.
    Refused(B, usize),
}

/// How [`execute_with`] involves the second aggregate.
pub struct Then<Admit, Follow> {
    /// Whether the first command may run at all, given the second aggregate.
    pub admit: Admit,
    /// The command the first command's events call for on the second aggregate, if any.
    pub follow: Follow,
}

/// Runs `command` on `first`'s aggregate, if `then.admit` allows given `second`'s, then the
/// command `then.follow` derives from its events (if any) on `second`'s, and commits both
/// streams in one statement: both or neither. This is how a checked code and the user-wide
/// failure count it causes stay exact (a crash between two commits would lose the count) and
/// cost one durable commit instead of two. Lost races reload both, admit and decide again.
/// [`Joint::Refused`]: not admitted (nothing written), with the second aggregate as loaded.
///
/// Decided on the aggregates as kept in memory ([`Store::with_cache`]) or as the caller
/// loaded them, without reading the database first: the append's unique key
/// `(aggregate_type, aggregate_id, sequence)` judges every stream the commit writes to, so a
/// stale state (another node, another task appended meanwhile) loses the append, and the
/// retry reloads both from the database and decides again. A stream the outcome writes
/// nothing to is not judged by the append (a refusal by `admit`, a rejection of the command,
/// a success that leaves the user's count alone): before such an outcome is answered, that
/// stream is read again, and if it grew the whole decision is made again on what was read.
/// So every answer rests on states the database confirmed: on the append's key where the
/// commit writes, on a read where it does not.
///
/// # Errors
/// As [`Store::execute`]; a rejection of the second command is unexpected
/// (`UnexpectedError`), as `follow` chooses only commands the aggregate always accepts.
pub async fn execute_with<A, B, Admit, Follow>(
    (first, first_id, first_loaded): (&Store<A>, &str, Option<(A, usize)>),
    command: A::Command,
    (second, second_id, second_loaded): (&Store<B>, &str, Option<(B, usize)>),
    then: Then<Admit, Follow>,
    metadata: &HashMap<String, String>,
) -> Result<Joint<A, B>, AggregateError<A::Error>>
where
    A: Aggregate + Clone,
    A::Command: Clone + CommandName,
    A::Event: Versioned,
    B: Aggregate + Clone,
    B::Command: Clone + CommandName,
    B::Event: Versioned,
    B::Error: Send + Sync + 'static,
    Admit: Fn(&B) -> bool,
    Follow: Fn(&[EventEnvelope<A>], &B) -> Option<B::Command>,
{
    let first_metadata = command_metadata(metadata, command.name());
    let mut attempt = 1;
    let (mut first_loaded, mut second_loaded) = (first_loaded, second_loaded);
    // Whether this attempt reads both streams from the database (after a lost race or an
    // unconfirmed state), rather than starting from the kept or given states.
    let mut reload = false;
    loop {
        let start = if reload {
            None
        } else {
            second_loaded.take().or_else(|| second.kept(second_id))
        };
        let second_read = start.is_none();
        let (state, from) = match start {
            Some(start) => start,
            None => second.load(second_id).await.map_err(unexpected)?,
        };
        if !(then.admit)(&state) {
            if !second_read {
                // A refusal writes nothing: answer it only on a state read now.
                reload = true;
                continue;
            }
            return Ok(Joint::Refused(state, from));
        }
        let start = if reload {
            None
        } else {
            first_loaded.take().or_else(|| first.kept(first_id))
        };
        let first_read = start.is_none();
        let a = match first
            .decide(first_id, start, command.clone(), &first_metadata)
            .await
        {
            // A rejection writes nothing either.
            Err(AggregateError::UserError(_)) if !first_read => {
                reload = true;
                continue;
            }
            decided => decided?,
        };
        let b = match (then.follow)(&a.events, &state) {
            Some(then) => {
                let then_metadata = command_metadata(metadata, then.name());
                second
                    .decide(second_id, Some((state, from)), then, &then_metadata)
                    .await
                    .map_err(unexpected)?
            }
            None => Decided {
                from,
                events: Vec::new(),
                serialized: Vec::new(),
                state,
            },
        };
        // The streams this outcome writes nothing to: confirm them by a read (of the events
        // after the state's sequence: one query, usually returning nothing).
        let confirmed =
            (!a.serialized.is_empty() || first_read || first.unchanged(first_id, a.from).await?)
                && (!b.serialized.is_empty()
                    || second_read
                    || second
                        .unchanged(second_id, b.from)
                        .await
                        .map_err(unexpected)?);
        if !confirmed {
            reload = true;
            continue;
        }
        let rows: Vec<_> = a.rows().into_iter().chain(b.rows()).collect();
        if rows.is_empty() {
            return Ok(Joint::Committed(a.into_committed(), b.into_committed()));
        }
        match append_decided(&first.db, &rows).await {
            Ok(cursor) => {
                // One statement, one transaction: the last row's position is past both
                // streams' events.
                return Ok(Joint::Committed(
                    first.committed(a, cursor).await,
                    second.committed(b, cursor).await,
                ));
            }
            Err(PersistenceError::OptimisticLockError) if attempt < first.max_attempts => {
                attempt += 1;
                reload = true;
                back_off(attempt).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// An error of the second aggregate of [`execute_with`], as one of the first's.
pub fn unexpected<E, F>(e: AggregateError<F>) -> AggregateError<E>
where
    E: std::error::Error,
    F: std::error::Error + Send + Sync + 'static,
{
    match e {
        AggregateError::UserError(e) => AggregateError::UnexpectedError(Box::new(e)),
        AggregateError::AggregateConflict => AggregateError::AggregateConflict,
        AggregateError::DatabaseConnectionError(e) => AggregateError::DatabaseConnectionError(e),
        AggregateError::DeserializationError(e) => AggregateError::DeserializationError(e),
        AggregateError::UnexpectedError(e) => AggregateError::UnexpectedError(e),
    }
}

/// The event store of one aggregate type with its services.
pub struct Store<A: Aggregate> {
    /// The store's one pool.
    db: Db,
    snapshot_every: Option<usize>,
    services: A::Services,
    max_attempts: u32,
    /// Recently used aggregates, each with the sequence of the last event folded into it
    /// ([`Store::with_cache`]).
    cache: Option<Mutex<LruCache<String, (A, usize)>>>,
}

/// How often a command is retried after losing an optimistic-concurrency race before the
/// caller sees `CONFLICT`. Each retry reloads and re-decides, so it sees the winner's events.
const MAX_ATTEMPTS: u32 = 64;

impl<A> Store<A>
where
    A: Aggregate + Clone,
    A::Command: Clone + CommandName,
    A::Event: Versioned,
{
    /// A store on `db`, pure event sourcing: every load replays the whole stream.
    pub fn new(db: &Db, services: A::Services) -> Self {
        Self {
            db: db.clone(),
            snapshot_every: None,
            services,
            max_attempts: MAX_ATTEMPTS,
            cache: None,
        }
    }

    /// Keeps the `capacity` most recently used aggregates in memory (0: none), each with the
    /// sequence of its last event. A load then reads only the events after that sequence (in
    /// the same one round trip, usually returning nothing) instead of the snapshot and the
    /// events after it, and folds those into a copy of the kept state.
    ///
    /// Why this is exact on any number of nodes: a stream's events `1..=n` never change once
    /// committed (the append's unique key `(aggregate_type, aggregate_id, sequence)` admits
    /// one event per sequence, and nothing updates the log), so a kept `(state, n)` is the
    /// fold of those events for ever, and whatever any node or task appended after `n` is read
    /// from the database on every load. Loads therefore see exactly what they saw without the
    /// cache; only the decoding of old events is saved. [`execute_with`] (the proofs) decides
    /// on the kept states without that read, the append's unique key judging every stream it
    /// writes to and a read confirming those it does not ([`Store::kept`]).
    #[must_use]
    pub fn with_cache(mut self, capacity: usize) -> Self {
        self.cache = NonZeroUsize::new(capacity).map(|c| Mutex::new(LruCache::new(c)));
        self
    }

    /// The kept state of `id` and its sequence, if any.
    fn cached(&self, id: &str) -> Option<(A, usize)> {
        self.cache.as_ref()?.lock().ok()?.get(id).cloned()
    }

    /// The state of `id` as kept in memory, with its sequence, without asking the database:
    /// a prefix of the stream that may have grown since. Only for a decision the append will
    /// judge ([`execute_with`]), or an answer confirmed by a read before it is given.
    pub fn kept(&self, id: &str) -> Option<(A, usize)> {
        self.cached(id)
    }

    /// Whether `id`'s stream still ends at `sequence` (one query; a grown stream's new events
    /// are folded into the kept state on the way).
    async fn unchanged(&self, id: &str, sequence: usize) -> Result<bool, AggregateError<A::Error>> {
        Ok(self.load(id).await?.1 == sequence)
    }

    /// Keeps `state`, the fold of `id`'s events up to `sequence` (unless a later one is kept).
    fn remember(&self, id: &str, state: &A, sequence: usize) {
        let Some(cache) = &self.cache else {
            return;
        };
        if sequence == 0 {
            return;
        }
        if let Ok(mut cache) = cache.lock()
            && cache.peek(id).is_none_or(|(_, kept)| *kept < sequence)
        {
            cache.put(id.to_string(), (state.clone(), sequence));
        }
    }

    /// A store that snapshots the aggregate whenever a commit crosses a multiple of `every`
    /// events, so a load reads the snapshot and fewer than `every` events after it however
    /// long the stream grows.
    pub fn with_snapshots(db: &Db, services: A::Services, every: usize) -> Self {
        Self {
            snapshot_every: Some(every.max(1)),
            ..Self::new(db, services)
        }
    }

    /// The services handed to every command.
    pub fn services(&self) -> &A::Services {
        &self.services
    }

    /// The aggregate as commands see it (through the snapshot, if any), and the stream's
    /// length (0: no such aggregate).
    ///
    /// # Errors
    /// Store errors.
    pub async fn load(&self, id: &str) -> Result<(A, usize), AggregateError<A::Error>> {
        if let Some((mut state, kept)) = self.cached(id) {
            let stream = load_stream(&self.db, A::TYPE, id, false, kept)
                .await
                .map_err(|e| AggregateError::DatabaseConnectionError(Box::new(e)))?;
            if stream.events.is_empty() {
                return Ok((state, kept));
            }
            let sequence = fold(&mut state, kept, stream.events)?;
            self.remember(id, &state, sequence);
            return Ok((state, sequence));
        }
        let stream = load_stream(&self.db, A::TYPE, id, self.snapshot_every.is_some(), 0)
            .await
            .map_err(|e| AggregateError::DatabaseConnectionError(Box::new(e)))?;
        let (mut state, sequence, number) = match stream.snapshot {
            None => (A::default(), 0, None),
            Some((last_sequence, number, payload)) => match serde_json::from_str::<A>(&payload) {
                Ok(state) => (state, last_sequence, Some(number)),
                Err(error) => {
                    // The aggregate's shape changed (or the row was damaged): replay the
                    // stream, and replace the row rather than add one beside it.
                    tracing::warn!(aggregate = A::TYPE, id, %error, "discarding an unreadable snapshot; replaying the stream");
                    delete_snapshots(&self.db, A::TYPE, id)
                        .await
                        .map_err(|e| AggregateError::DatabaseConnectionError(Box::new(e)))?;
                    let (state, sequence) = self.load_by_replay(id).await?;
                    self.heal_snapshot(id, &state, sequence, None).await;
                    self.remember(id, &state, sequence);
                    return Ok((state, sequence));
                }
            },
        };
        let sequence = fold(&mut state, sequence, stream.events)?;
        self.heal_snapshot(id, &state, sequence, number).await;
        self.remember(id, &state, sequence);
        Ok((state, sequence))
    }

    /// After a load: if the stream has passed a snapshot boundary that no snapshot covers
    /// (events written before snapshots were on, by an import, or a snapshot write that
    /// failed), store the loaded state now, so the replay is paid once rather than by every
    /// load until a commit happens to cross the next boundary.
    async fn heal_snapshot(&self, id: &str, state: &A, sequence: usize, snapshot: Option<usize>) {
        if let Some(every) = self.snapshot_every
            && sequence / every > snapshot.unwrap_or(0)
        {
            self.write_snapshot(id, sequence, sequence / every, state)
                .await;
        }
    }

    /// The aggregate folded from every event of its stream, ignoring snapshots.
    ///
    /// # Errors
    /// Store errors.
    pub async fn load_by_replay(&self, id: &str) -> Result<(A, usize), AggregateError<A::Error>> {
        let stream = load_stream(&self.db, A::TYPE, id, false, 0)
            .await
            .map_err(|e| AggregateError::DatabaseConnectionError(Box::new(e)))?;
        let mut state = A::default();
        let sequence = fold(&mut state, 0, stream.events)?;
        Ok((state, sequence))
    }

    /// Loads, handles and commits `command`, retrying lost races; returns what it committed.
    /// Every event gets `metadata` plus `command` (its name) and `causation_id` (one id for
    /// this command, shared by all the events it wrote, such as a `FailedAttempt` and the
    /// `LockedOut` it caused).
    ///
    /// # Errors
    /// `UserError` when the aggregate rejects the command (nothing written);
    /// `AggregateConflict` only after every retry lost; store errors.
    pub async fn execute(
        &self,
        id: &str,
        command: A::Command,
        metadata: &HashMap<String, String>,
    ) -> Result<Committed<A>, AggregateError<A::Error>> {
        self.execute_from(id, None, command, metadata).await
    }

    /// Like [`Store::execute`], starting from an aggregate the caller already loaded with
    /// [`Store::load`] (saves a read on the hot path). A stale one is harmless: its commit
    /// loses the optimistic-concurrency race and the retry reloads.
    ///
    /// # Errors
    /// As [`Store::execute`].
    pub async fn execute_from(
        &self,
        id: &str,
        loaded: Option<(A, usize)>,
        command: A::Command,
        metadata: &HashMap<String, String>,
    ) -> Result<Committed<A>, AggregateError<A::Error>> {
        let metadata = command_metadata(metadata, command.name());
        let mut attempt = 1;
        let mut loaded = loaded;
        loop {
            let decided = self
                .decide(id, loaded.take(), command.clone(), &metadata)
                .await?;
            if decided.events.is_empty() {
                return Ok(decided.into_committed());
            }
            match append_decided(&self.db, &decided.rows()).await {
                Ok(cursor) => return Ok(self.committed(decided, cursor).await),
                Err(PersistenceError::OptimisticLockError) if attempt < self.max_attempts => {
                    attempt += 1;
                    back_off(attempt).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Runs `command` on the aggregate (`loaded`, or loaded now) and returns the events it
    /// decided, not yet written, with the aggregate after them.
    async fn decide(
        &self,
        id: &str,
        loaded: Option<(A, usize)>,
        command: A::Command,
        metadata: &HashMap<String, String>,
    ) -> Result<Decided<A>, AggregateError<A::Error>> {
        let (mut state, from) = match loaded {
            Some(preloaded) => preloaded,
            None => self.load(id).await?,
        };
        let sink = EventSink::default();
        // The sink applies each event to `state` as it is written, so `state` ends as the
        // aggregate after exactly these events: the state to snapshot.
        state
            .handle(command, &self.services, &sink)
            .await
            .map_err(AggregateError::UserError)?;
        let events: Vec<EventEnvelope<A>> = sink
            .collect()
            .await
            .into_iter()
            .zip(from + 1..)
            .map(|(payload, sequence)| EventEnvelope {
                aggregate_id: id.to_string(),
                sequence,
                payload,
                metadata: metadata.clone(),
            })
            .collect();
        let serialized = events
            .iter()
            .map(SerializedEvent::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Decided {
            from,
            events,
            serialized,
            state,
        })
    }

    /// After `decided` was written: its snapshot if due, and what the caller gets.
    async fn committed(&self, decided: Decided<A>, cursor: Option<Cursor>) -> Committed<A> {
        if let Some(to) = decided.events.last().map(|e| e.sequence) {
            let id = decided.events[0].aggregate_id.clone();
            // Durable now: the state after event `to`.
            self.remember(&id, &decided.state, to);
            self.snapshot_if_due(&id, decided.from, to, &decided.state)
                .await;
        }
        Committed {
            cursor: cursor.filter(|_| !decided.events.is_empty()),
            ..decided.into_committed()
        }
    }

    /// After a commit of events `from + 1 ..= to`: if that crossed a multiple of the snapshot
    /// size, store `state` (the aggregate after event `to`). Best effort.
    async fn snapshot_if_due(&self, id: &str, from: usize, to: usize, state: &A) {
        let Some(every) = self.snapshot_every else {
            return;
        };
        if from / every == to / every {
            return;
        }
        self.write_snapshot(id, to, to / every, state).await;
    }

    /// Stores `state`, the aggregate after event `sequence`, as snapshot number `number`.
    /// Best effort: a snapshot is a cache.
    async fn write_snapshot(&self, id: &str, sequence: usize, number: usize, state: &A) {
        let result = match serde_json::to_string(state) {
            Ok(payload) => save_snapshot(
                &self.db,
                A::TYPE,
                id,
                (
                    i64::try_from(sequence).unwrap_or(i64::MAX),
                    i64::try_from(number).unwrap_or(i64::MAX),
                ),
                payload,
            )
            .await
            .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(error) = result {
            tracing::warn!(aggregate = A::TYPE, id, %error, "snapshot not written; loads replay more events until the next one");
        }
    }
}
