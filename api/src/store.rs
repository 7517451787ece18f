//! The write side: one event store over PostgreSQL or SQLite, chosen at runtime, and an
//! executor that returns what it committed and retries optimistic-concurrency conflicts.

use std::{collections::HashMap, str::FromStr, time::Duration};

use cqrs_es::{
    Aggregate, AggregateError, EventEnvelope, EventStore,
    event_sink::EventSink,
    persist::{
        EventStoreAggregateContext, PersistedEventRepository, PersistedEventStore,
        PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
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
            Self::Pg(p) => AnyRepo::Pg(PostgresEventRepository::new(p.clone())),
            Self::Lite(p) => AnyRepo::Lite(SqliteEventRepository::new(p.clone())),
        }
    }
}

/// Either crate's repository behind one type: the repository traits are not dyn-compatible.
pub enum AnyRepo {
    /// postgres-es.
    Pg(PostgresEventRepository),
    /// sqlite-es.
    Lite(SqliteEventRepository),
}

impl PersistedEventRepository for AnyRepo {
    async fn get_events<A: Aggregate>(
        &self,
        id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        match self {
            Self::Pg(r) => r.get_events::<A>(id).await,
            Self::Lite(r) => r.get_events::<A>(id).await,
        }
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        match self {
            Self::Pg(r) => r.get_last_events::<A>(id, last_sequence).await,
            Self::Lite(r) => r.get_last_events::<A>(id, last_sequence).await,
        }
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        match self {
            Self::Pg(r) => r.get_snapshot::<A>(id).await,
            Self::Lite(r) => r.get_snapshot::<A>(id).await,
        }
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        match self {
            Self::Pg(r) => r.persist::<A>(events, snapshot_update).await,
            Self::Lite(r) => r.persist::<A>(events, snapshot_update).await,
        }
    }

    async fn stream_events<A: Aggregate>(
        &self,
        id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        match self {
            Self::Pg(r) => r.stream_events::<A>(id).await,
            Self::Lite(r) => r.stream_events::<A>(id).await,
        }
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        match self {
            Self::Pg(r) => r.stream_all_events::<A>().await,
            Self::Lite(r) => r.stream_all_events::<A>().await,
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
    events: PersistedEventStore<AnyRepo, A>,
    services: A::Services,
    max_attempts: u32,
}

/// How often a command is retried after losing an optimistic-concurrency race before the
/// caller sees `CONFLICT`. Each retry reloads and re-decides, so it sees the winner's events.
const MAX_ATTEMPTS: u32 = 64;

impl<A> Store<A>
where
    A: Aggregate + Clone,
    A::Command: Clone,
{
    /// A store on `pool`. Pure event sourcing: snapshots stay off (cqrs-es 0.5.0 applies
    /// events twice in snapshot mode, STACK-NOTES §6.1).
    pub fn new(pool: &Pool, services: A::Services) -> Self {
        Self {
            events: PersistedEventStore::new_event_store(pool.repo()),
            services,
            max_attempts: MAX_ATTEMPTS,
        }
    }

    /// The services handed to every command.
    pub fn services(&self) -> &A::Services {
        &self.services
    }

    /// The aggregate folded from its stream, and the stream's length (0: no such aggregate).
    ///
    /// # Errors
    /// Store errors.
    pub async fn load(&self, id: &str) -> Result<(A, usize), AggregateError<A::Error>> {
        let ctx = self.events.load_aggregate(id).await?;
        Ok((ctx.aggregate, ctx.current_sequence))
    }

    /// Loads, handles and commits `command`, retrying lost races; returns what it committed.
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
        let mut attempt = 1;
        let mut loaded = loaded;
        loop {
            let mut ctx = match loaded.take() {
                Some((aggregate, current_sequence)) => EventStoreAggregateContext {
                    aggregate_id: id.to_string(),
                    aggregate,
                    current_sequence,
                    current_snapshot: None,
                },
                None => self.events.load_aggregate(id).await?,
            };
            let before = ctx.aggregate.clone();
            let sink = EventSink::default();
            ctx.aggregate
                .handle(command.clone(), &self.services, &sink)
                .await
                .map_err(AggregateError::UserError)?;
            let events = sink.collect().await;
            // The sink applied the events already; hand the store the aggregate as loaded so a
            // snapshot (if ever enabled) is not built from events applied twice.
            let state = std::mem::replace(&mut ctx.aggregate, before);
            if events.is_empty() {
                return Ok(Committed {
                    events: Vec::new(),
                    state,
                });
            }
            match self.events.commit(events, ctx, metadata.clone()).await {
                Ok(events) => return Ok(Committed { events, state }),
                Err(AggregateError::AggregateConflict) if attempt < self.max_attempts => {
                    attempt += 1;
                    let jitter = rand::thread_rng().gen_range(0..=attempt.min(8));
                    tokio::time::sleep(Duration::from_millis(u64::from(jitter))).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}
