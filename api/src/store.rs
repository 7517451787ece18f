//! The write side: one event store over PostgreSQL or SQLite, chosen at runtime, and an
//! executor that returns what it committed and retries optimistic-concurrency conflicts.
//!
//! Loading goes through cqrs-es (`PersistedEventStore`, with the domain's upcasters, and in
//! snapshot mode for long streams). Committing does not: cqrs-es 0.5.0's snapshot commit
//! applies the new events a second time to the aggregate it serialises (STACK-NOTES §6.1), and
//! when a commit crosses a snapshot boundary with more than one event it snapshots only the
//! events up to the boundary while recording the last event's sequence, so the events after
//! the boundary would be lost on the next load (a `LockedOut` written together with the
//! `FailedAttempt` that reached the threshold, say). [`Store::execute`] therefore persists the
//! events itself and, when a commit crosses a boundary, writes a snapshot of the state after
//! *all* of them, in its own small transaction after the commit: a snapshot is a cache, so a
//! failure to write one costs speed, never a command. Snapshot rows are kept to one per
//! aggregate, and a row that no longer deserialises is deleted rather than duplicated
//! (STACK-NOTES §6.2).

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
use sqlx::Row;
use sqlx::{
    PgPool, SqlitePool,
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};
use tessera_domain::versioning::{CommandName, Versioned, upcasters};

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
                .max_connections(size)
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

macro_rules! snapshot_parts {
    ($row:expr) => {{
        let row = $row;
        (|| -> Result<(i64, i64, String), sqlx::Error> {
            Ok((
                row.try_get("last_sequence")?,
                row.try_get("current_snapshot")?,
                row.try_get("payload")?,
            ))
        })()
    }};
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

    /// The newest snapshot, if it still deserialises as `A`. The crates' own lookup has no
    /// ORDER BY; and after a failed deserialisation cqrs-es would INSERT a second row beside
    /// the unreadable one. Deleting the unreadable row here keeps one row per aggregate.
    async fn get_snapshot<A: Aggregate>(
        &self,
        id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        const PG: &str = "SELECT last_sequence, current_snapshot, payload::text AS payload \
            FROM snapshots WHERE aggregate_type = $1 AND aggregate_id = $2 \
            ORDER BY last_sequence DESC LIMIT 1";
        const LITE: &str = "SELECT last_sequence, current_snapshot, payload FROM snapshots \
            WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY last_sequence DESC LIMIT 1";
        let row = match self {
            Self::Pg(_, pool) => sqlx::query(PG)
                .bind(A::TYPE)
                .bind(id)
                .fetch_optional(pool)
                .await
                .map_err(unknown)?
                .map(|row| snapshot_parts!(row)),
            Self::Lite(_, pool) => sqlx::query(LITE)
                .bind(A::TYPE)
                .bind(id)
                .fetch_optional(pool)
                .await
                .map_err(unknown)?
                .map(|row| snapshot_parts!(row)),
        };
        let Some((last_sequence, current_snapshot, payload)) = row.transpose().map_err(unknown)?
        else {
            return Ok(None);
        };
        match serde_json::from_str::<A>(&payload) {
            Ok(_) => Ok(Some(SerializedSnapshot {
                aggregate_id: id.to_string(),
                aggregate: serde_json::from_str(&payload)?,
                current_sequence: usize::try_from(last_sequence).unwrap_or(0),
                current_snapshot: usize::try_from(current_snapshot).unwrap_or(0),
            })),
            Err(e) => {
                tracing::warn!(aggregate = A::TYPE, id, error = %e, "discarding an unreadable snapshot; replaying the stream");
                self.delete_snapshots(A::TYPE, id).await.map_err(unknown)?;
                Ok(None)
            }
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

fn unknown(e: impl std::error::Error + Send + Sync + 'static) -> PersistenceError {
    PersistenceError::UnknownError(Box::new(e))
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

/// The event store of one aggregate type with its services.
pub struct Store<A: Aggregate> {
    /// Loads (with upcasters; in snapshot mode when `snapshot_every` is set).
    events: PersistedEventStore<AnyRepo, A>,
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
            events: PersistedEventStore::new_event_store(pool.repo())
                .with_upcasters(upcasters::<A::Event>()),
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
        let every = every.max(1);
        Self {
            events: PersistedEventStore::new_snapshot_store(pool.repo(), every)
                .with_upcasters(upcasters::<A::Event>()),
            snapshot_every: Some(every),
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
        let ctx = self.events.load_aggregate(id).await?;
        self.heal_snapshot(
            id,
            &ctx.aggregate,
            ctx.current_sequence,
            ctx.current_snapshot,
        )
        .await;
        Ok((ctx.aggregate, ctx.current_sequence))
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
        let mut metadata = metadata.clone();
        metadata.insert("command".into(), command.name().into());
        metadata.insert(
            "causation_id".into(),
            format!("cmd-{}", uuid::Uuid::now_v7()),
        );
        let mut attempt = 1;
        let mut loaded = loaded;
        loop {
            let (mut state, loaded_sequence) = match loaded.take() {
                Some(preloaded) => preloaded,
                None => self.load(id).await?,
            };
            let sink = EventSink::default();
            // The sink applies each event to `state` as it is written, so `state` ends as the
            // aggregate after exactly these events: the state to snapshot.
            state
                .handle(command.clone(), &self.services, &sink)
                .await
                .map_err(AggregateError::UserError)?;
            let events = sink.collect().await;
            if events.is_empty() {
                return Ok(Committed {
                    events: Vec::new(),
                    state,
                });
            }
            let envelopes: Vec<EventEnvelope<A>> = events
                .into_iter()
                .zip(loaded_sequence + 1..)
                .map(|(payload, sequence)| EventEnvelope {
                    aggregate_id: id.to_string(),
                    sequence,
                    payload,
                    metadata: metadata.clone(),
                })
                .collect();
            let serialized = envelopes
                .iter()
                .map(SerializedEvent::try_from)
                .collect::<Result<Vec<_>, _>>()?;
            match self.repo.persist::<A>(&serialized, None).await {
                Ok(()) => {
                    let last = loaded_sequence + envelopes.len();
                    self.snapshot_if_due(id, loaded_sequence, last, &state)
                        .await;
                    return Ok(Committed {
                        events: envelopes,
                        state,
                    });
                }
                Err(PersistenceError::OptimisticLockError) if attempt < self.max_attempts => {
                    attempt += 1;
                    let jitter = rand::thread_rng().gen_range(0..=attempt.min(8));
                    tokio::time::sleep(Duration::from_millis(u64::from(jitter))).await;
                }
                Err(e) => return Err(e.into()),
            }
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
