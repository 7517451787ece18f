//! The write side: one event store over PostgreSQL or SQLite, chosen at runtime, and an
//! executor that returns what it committed and retries optimistic-concurrency conflicts.
//!
//! A load is one query: the newest snapshot and the events after it, decoded through the
//! domain's upcasters (a full replay, [`Store::load_by_replay`], still goes through cqrs-es).
//! A commit is one multi-row INSERT, so a command that writes to two streams (a checked code
//! and the user's failure count, [`execute_with`]) commits both or neither. cqrs-es's own
//! commit is not used: its 0.5.0 snapshot commit applies the new events a second time to the
//! aggregate it serialises (STACK-NOTES §6.1), and when a commit crosses a snapshot boundary
//! with more than one event it snapshots only the events up to the boundary while recording
//! the last event's sequence, so the events after the boundary would be lost on the next load
//! (a `LockedOut` written together with the `FailedAttempt` that reached the threshold, say).
//! [`Store::execute`] therefore writes, when a commit crosses a boundary (or a load finds a
//! boundary no snapshot covers), a snapshot of the state after *all* the events, in its own
//! small transaction: a snapshot is a cache, so a failure to write one costs speed, never a
//! command. Snapshot rows are kept to one per aggregate, and a row that no longer
//! deserialises is replaced rather than duplicated (STACK-NOTES §6.2).

use std::{collections::HashMap, str::FromStr, time::Duration};

use cqrs_es::{
    Aggregate, AggregateError, EventEnvelope, EventStore,
    event_sink::EventSink,
    persist::{
        PersistedEventRepository, PersistedEventStore, PersistenceError, ReplayStream,
        SerializedEvent, SerializedSnapshot,
    },
};
use postgres_es::PostgresEventRepository;
use rand::Rng;
use serde_json::Value;
use sqlite_es::SqliteEventRepository;
use sqlx::{
    PgPool, SqlitePool,
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};
use tessera_domain::versioning::{self, CommandName, Versioned, upcasters};

/// The embedded migrations of each store.
static PG_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// A typed pool on the write side.
#[derive(Clone, Debug)]
pub enum Pool {
    /// PostgreSQL.
    Pg(PgPool),
    /// SQLite.
    Lite(SqlitePool),
}

impl Pool {
    /// Connects. PostgreSQL gets `synchronous_commit = on`; SQLite gets WAL with
    /// `synchronous = FULL` (acknowledged means durable) and is created if missing.
    ///
    /// # Errors
    /// The connection error.
    pub async fn connect(url: &str, size: u32) -> Result<Self, sqlx::Error> {
        if url.starts_with("postgres") {
            let options = PgConnectOptions::from_str(url)?.options([("synchronous_commit", "on")]);
            let pool = PgPoolOptions::new()
                .max_connections(size)
                .acquire_timeout(Duration::from_secs(10))
                // sqlx pings every connection it hands out: a round trip before each query
                // of the hot path. A broken connection fails its query instead, and is dropped.
                .test_before_acquire(false)
                .connect_with(options)
                .await?;
            Ok(Self::Pg(pool))
        } else {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(10));
            let pool = SqlitePoolOptions::new()
                .max_connections(size.min(tessera_projections::db::SQLITE_MAX_CONNECTIONS))
                .test_before_acquire(false)
                .connect_with(options)
                .await?;
            Ok(Self::Lite(pool))
        }
    }

    /// Applies pending migrations (PostgreSQL takes an advisory lock, so nodes may race).
    ///
    /// # Errors
    /// The migration error.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        match self {
            Self::Pg(p) => PG_MIGRATIONS.run(p).await,
            Self::Lite(p) => SQLITE_MIGRATIONS.run(p).await,
        }
    }

    /// Whether the store answers.
    pub async fn ping(&self) -> bool {
        match self {
            Self::Pg(p) => sqlx::query("SELECT 1").execute(p).await.is_ok(),
            Self::Lite(p) => sqlx::query("SELECT 1").execute(p).await.is_ok(),
        }
    }

    fn repo(&self) -> AnyRepo {
        match self {
            Self::Pg(p) => AnyRepo::Pg(PostgresEventRepository::new(p.clone()), p.clone()),
            Self::Lite(p) => AnyRepo::Lite(SqliteEventRepository::new(p.clone()), p.clone()),
        }
    }
}

/// A stream as stored: `(last_sequence, number, payload)` of its newest snapshot, and
/// `(sequence, event_type, event_version, payload)` of each event after it.
#[derive(Default)]
struct StreamRows {
    snapshot: Option<(usize, usize, String)>,
    events: Vec<(usize, String, String, String)>,
}

/// Either crate's repository behind one type: the repository traits are not dyn-compatible.
pub enum AnyRepo {
    /// postgres-es, and its pool for the snapshot statements.
    Pg(PostgresEventRepository, PgPool),
    /// sqlite-es, and its pool for the snapshot statements.
    Lite(SqliteEventRepository, SqlitePool),
}

impl PersistedEventRepository for AnyRepo {
    async fn get_events<A: Aggregate>(
        &self,
        id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        match self {
            Self::Pg(r, _) => r.get_events::<A>(id).await,
            Self::Lite(r, _) => r.get_events::<A>(id).await,
        }
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        match self {
            Self::Pg(r, _) => r.get_last_events::<A>(id, last_sequence).await,
            Self::Lite(r, _) => r.get_last_events::<A>(id, last_sequence).await,
        }
    }

    /// Unused: no store here loads in cqrs-es's snapshot mode ([`Store::load`] reads the
    /// snapshot itself, with an ORDER BY the crates' lookup lacks).
    async fn get_snapshot<A: Aggregate>(
        &self,
        id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        match self {
            Self::Pg(r, _) => r.get_snapshot::<A>(id).await,
            Self::Lite(r, _) => r.get_snapshot::<A>(id).await,
        }
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        match self {
            Self::Pg(r, _) => r.persist::<A>(events, snapshot_update).await,
            Self::Lite(r, _) => r.persist::<A>(events, snapshot_update).await,
        }
    }

    async fn stream_events<A: Aggregate>(
        &self,
        id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        match self {
            Self::Pg(r, _) => r.stream_events::<A>(id).await,
            Self::Lite(r, _) => r.stream_events::<A>(id).await,
        }
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        match self {
            Self::Pg(r, _) => r.stream_all_events::<A>().await,
            Self::Lite(r, _) => r.stream_all_events::<A>().await,
        }
    }
}

impl AnyRepo {
    async fn delete_snapshots(&self, aggregate_type: &str, id: &str) -> Result<(), sqlx::Error> {
        const SQL: &str = "DELETE FROM snapshots WHERE aggregate_type = $1 AND aggregate_id = $2";
        match self {
            Self::Pg(_, pool) => {
                sqlx::query(SQL)
                    .bind(aggregate_type)
                    .bind(id)
                    .execute(pool)
                    .await?;
            }
            Self::Lite(_, pool) => {
                sqlx::query(SQL)
                    .bind(aggregate_type)
                    .bind(id)
                    .execute(pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// A stream as a load needs it, in one round trip: its newest snapshot (if `snapshots`)
    /// and the events after it, in order. Metadata is not read: folding does not need it.
    async fn load_stream(
        &self,
        aggregate_type: &str,
        id: &str,
        snapshots: bool,
    ) -> Result<StreamRows, sqlx::Error> {
        // Kind 0 is the snapshot, if there is one; kind 1 the events after it.
        const SQL: &str = "WITH s AS (SELECT last_sequence, current_snapshot, payload \
              FROM snapshots WHERE $3 AND aggregate_type = $1 AND aggregate_id = $2 \
              ORDER BY last_sequence DESC LIMIT 1) \
            SELECT 0 AS kind, last_sequence AS sequence, current_snapshot AS number, \
                   '' AS event_type, '' AS event_version, PAYLOAD AS payload FROM s \
            UNION ALL \
            SELECT 1, sequence, 0, event_type, event_version, PAYLOAD FROM events \
              WHERE aggregate_type = $1 AND aggregate_id = $2 \
                AND sequence > COALESCE((SELECT last_sequence FROM s), 0) \
            ORDER BY 1, 2";
        type Row = (i32, i64, i64, String, String, String);
        let rows: Vec<Row> = match self {
            Self::Pg(_, pool) => {
                sqlx::query_as(&SQL.replace("PAYLOAD", "payload::text"))
                    .bind(aggregate_type)
                    .bind(id)
                    .bind(snapshots)
                    .fetch_all(pool)
                    .await?
            }
            Self::Lite(_, pool) => {
                sqlx::query_as(&SQL.replace("PAYLOAD", "payload"))
                    .bind(aggregate_type)
                    .bind(id)
                    .bind(snapshots)
                    .fetch_all(pool)
                    .await?
            }
        };
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

    /// Appends `rows` (`(aggregate type, event)`, of any streams) in one statement: all of them
    /// or none, one round trip and one durable commit. A sequence already taken in any of the
    /// streams fails the whole append with `OptimisticLockError`.
    async fn append(&self, rows: &[(&str, &SerializedEvent)]) -> Result<(), PersistenceError> {
        const INSERT: &str = "INSERT INTO events \
            (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) ";
        let sequence = |e: &SerializedEvent| i64::try_from(e.sequence).unwrap_or(i64::MAX);
        // The same statement for either typed pool.
        macro_rules! insert {
            ($db:ty, $pool:expr) => {{
                let mut insert = sqlx::QueryBuilder::<$db>::new(INSERT);
                insert.push_values(rows, |mut row, (aggregate_type, e)| {
                    row.push_bind(*aggregate_type)
                        .push_bind(e.aggregate_id.as_str())
                        .push_bind(sequence(e))
                        .push_bind(e.event_type.as_str())
                        .push_bind(e.event_version.as_str())
                        .push_bind(&e.payload)
                        .push_bind(&e.metadata);
                });
                insert.build().execute($pool).await.map(|_| ())
            }};
        }
        let result = match self {
            Self::Pg(_, pool) => insert!(sqlx::Postgres, pool),
            Self::Lite(_, pool) => insert!(sqlx::Sqlite, pool),
        };
        match result {
            Ok(()) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(PersistenceError::OptimisticLockError)
            }
            Err(e) => Err(PersistenceError::ConnectionError(Box::new(e))),
        }
    }

    /// Makes `payload` (the state after event `last_sequence`) the aggregate's snapshot, unless
    /// a newer one is there already; older rows go.
    async fn save_snapshot(
        &self,
        aggregate_type: &str,
        id: &str,
        last_sequence: i64,
        ordinal: i64,
        payload: String,
    ) -> Result<(), sqlx::Error> {
        const DELETE: &str = "DELETE FROM snapshots \
            WHERE aggregate_type = $1 AND aggregate_id = $2 AND last_sequence < $3";
        const INSERT: &str = "INSERT INTO snapshots \
            (aggregate_type, aggregate_id, last_sequence, current_snapshot, payload) \
            SELECT $1, $2, $3, $4, PAYLOAD WHERE NOT EXISTS (SELECT 1 FROM snapshots \
            WHERE aggregate_type = $1 AND aggregate_id = $2 AND last_sequence >= $3)";
        match self {
            Self::Pg(_, pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query(DELETE)
                    .bind(aggregate_type)
                    .bind(id)
                    .bind(last_sequence)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(&INSERT.replace("PAYLOAD", "$5::text::json"))
                    .bind(aggregate_type)
                    .bind(id)
                    .bind(last_sequence)
                    .bind(ordinal)
                    .bind(payload)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await
            }
            Self::Lite(_, pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query(DELETE)
                    .bind(aggregate_type)
                    .bind(id)
                    .bind(last_sequence)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(&INSERT.replace("PAYLOAD", "$5"))
                    .bind(aggregate_type)
                    .bind(id)
                    .bind(last_sequence)
                    .bind(ordinal)
                    .bind(payload)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await
            }
        }
    }
}

/// What a command committed, and the aggregate after it.
#[derive(Debug)]
pub struct Committed<A: Aggregate> {
    /// The committed events (empty if the command decided nothing needed writing).
    pub events: Vec<EventEnvelope<A>>,
    /// The aggregate with those events applied.
    pub state: A,
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
        }
    }
}

/// `metadata` plus what every event of one command carries: the command's name and one
/// `causation_id` for all the events it wrote.
fn command_metadata(metadata: &HashMap<String, String>, name: &str) -> HashMap<String, String> {
    let mut metadata = metadata.clone();
    metadata.insert("command".into(), name.into());
    metadata.insert(
        "causation_id".into(),
        format!("cmd-{}", uuid::Uuid::now_v7()),
    );
    metadata
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
    loop {
        let (state, from) = match second_loaded.take() {
            Some(preloaded) => preloaded,
            None => second.load(second_id).await.map_err(unexpected)?,
        };
        if !(then.admit)(&state) {
            return Ok(Joint::Refused(state, from));
        }
        let a = first
            .decide(
                first_id,
                first_loaded.take(),
                command.clone(),
                &first_metadata,
            )
            .await?;
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
        let rows: Vec<_> = a.rows().into_iter().chain(b.rows()).collect();
        if rows.is_empty() {
            return Ok(Joint::Committed(a.into_committed(), b.into_committed()));
        }
        match first.repo.append(&rows).await {
            Ok(()) => {
                return Ok(Joint::Committed(
                    first.committed(a).await,
                    second.committed(b).await,
                ));
            }
            Err(PersistenceError::OptimisticLockError) if attempt < first.max_attempts => {
                attempt += 1;
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
    /// Loads by full replay, ignoring snapshots.
    replay: PersistedEventStore<AnyRepo, A>,
    /// Persists events and snapshots.
    repo: AnyRepo,
    snapshot_every: Option<usize>,
    services: A::Services,
    max_attempts: u32,
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
    /// A store on `pool`, pure event sourcing: every load replays the whole stream.
    pub fn new(pool: &Pool, services: A::Services) -> Self {
        Self {
            replay: PersistedEventStore::new_event_store(pool.repo())
                .with_upcasters(upcasters::<A::Event>()),
            repo: pool.repo(),
            snapshot_every: None,
            services,
            max_attempts: MAX_ATTEMPTS,
        }
    }

    /// A store that snapshots the aggregate whenever a commit crosses a multiple of `every`
    /// events, so a load reads the snapshot and fewer than `every` events after it however
    /// long the stream grows.
    pub fn with_snapshots(pool: &Pool, services: A::Services, every: usize) -> Self {
        Self {
            snapshot_every: Some(every.max(1)),
            ..Self::new(pool, services)
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
        let stream = self
            .repo
            .load_stream(A::TYPE, id, self.snapshot_every.is_some())
            .await
            .map_err(|e| AggregateError::DatabaseConnectionError(Box::new(e)))?;
        let (mut state, mut sequence, number) = match stream.snapshot {
            None => (A::default(), 0, None),
            Some((last_sequence, number, payload)) => match serde_json::from_str::<A>(&payload) {
                Ok(state) => (state, last_sequence, Some(number)),
                Err(error) => {
                    // The aggregate's shape changed (or the row was damaged): replay the
                    // stream, and replace the row rather than add one beside it.
                    tracing::warn!(aggregate = A::TYPE, id, %error, "discarding an unreadable snapshot; replaying the stream");
                    self.repo
                        .delete_snapshots(A::TYPE, id)
                        .await
                        .map_err(|e| AggregateError::DatabaseConnectionError(Box::new(e)))?;
                    let (state, sequence) = self.load_by_replay(id).await?;
                    self.heal_snapshot(id, &state, sequence, None).await;
                    return Ok((state, sequence));
                }
            },
        };
        for (event_sequence, event_type, event_version, payload) in stream.events {
            let payload: Value = serde_json::from_str(&payload)
                .map_err(|e| AggregateError::DeserializationError(Box::new(e)))?;
            let event = versioning::decode::<A::Event>(&event_type, &event_version, payload)
                .map_err(|e| AggregateError::DeserializationError(Box::new(e)))?;
            state.apply(event);
            sequence = event_sequence;
        }
        self.heal_snapshot(id, &state, sequence, number).await;
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
        let ctx = self.replay.load_aggregate(id).await?;
        Ok((ctx.aggregate, ctx.current_sequence))
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
            match self.repo.append(&decided.rows()).await {
                Ok(()) => return Ok(self.committed(decided).await),
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
    async fn committed(&self, decided: Decided<A>) -> Committed<A> {
        if let Some(to) = decided.events.last().map(|e| e.sequence) {
            let id = decided.events[0].aggregate_id.clone();
            self.snapshot_if_due(&id, decided.from, to, &decided.state)
                .await;
        }
        decided.into_committed()
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
            Ok(payload) => self
                .repo
                .save_snapshot(
                    A::TYPE,
                    id,
                    i64::try_from(sequence).unwrap_or(i64::MAX),
                    i64::try_from(number).unwrap_or(i64::MAX),
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
