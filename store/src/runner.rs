//! Applies the log to a projection: a batch of events and the consumer's checkpoint are written
//! in one transaction, so a crash can neither lose nor repeat an update.

use std::{future::Future, sync::Arc, time::Duration};

use sqlx::{AnyConnection, Row};
use tokio::{
    sync::{Notify, watch},
    task::JoinHandle,
};

use crate::{
    Db, Dialect, Error,
    log::{self, Cursor, StoredEvent},
    ts,
};

/// How often a reader waiting for an event hurries the loop again while nothing new is applied
/// (see [`Runner::wait_for`]): each hurry costs one read-only look at the log.
const REHURRY: Duration = Duration::from_millis(10);

/// Events per live batch: what one tick usually finds is far less.
const LIVE_BATCH: i64 = 500;

/// Events per batch once a batch came back full (the consumer is behind: catch-up after a
/// restart, a burst from another node): fewer, larger transactions drain the backlog faster.
const BACKLOG_BATCH: i64 = 2_000;

/// The default least time between the starts of two ticks of a runner's loop (see
/// [`crate::worker`]): under load a tick gathers every commit of the last few milliseconds into
/// one transaction; far inside a one-second lag budget.
pub const DEFAULT_PACE: Duration = Duration::from_millis(20);

/// Events per batch in a rebuild: large, since one transaction holds them all anyway and a
/// projection that writes in bulk ([`Projection::apply_batch`]) gains with every event.
const REBUILD_BATCH: i64 = 5_000;

/// A consumer of the log with a durable checkpoint.
pub trait Projection: Send + Sync + 'static {
    /// The checkpoint's name; bump its version suffix to rebuild after a schema change.
    fn name(&self) -> &'static str;

    /// Tables emptied by a rebuild.
    fn tables(&self) -> &'static [&'static str];

    /// Applies one event inside the batch's transaction. Must be deterministic and free of
    /// side effects outside the transaction, so that a rebuild gives the same tables.
    fn apply<'a>(
        &'a self,
        conn: &'a mut AnyConnection,
        dialect: Dialect,
        event: &'a StoredEvent,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'a;

    /// Applies a batch, in order, inside the batch's transaction. The default applies the
    /// events one by one; a projection may override it to write in bulk, with the same result.
    fn apply_batch<'a>(
        &'a self,
        conn: &'a mut AnyConnection,
        dialect: Dialect,
        events: &'a [StoredEvent],
    ) -> impl Future<Output = Result<(), Error>> + Send + 'a {
        async move {
            for event in events {
                self.apply(conn, dialect, event).await?;
            }
            Ok(())
        }
    }
}

/// Drives one projection: on a timer, when nudged after a local commit, and on demand.
pub struct Runner<P> {
    db: Db,
    projection: P,
    batch: i64,
    applied: watch::Sender<Cursor>,
    wake: Notify,
    hurry: Notify,
}

impl<P: Projection> Runner<P> {
    /// Prepares a runner, creating its checkpoint row if needed.
    ///
    /// # Errors
    /// Database errors.
    pub async fn new(db: Db, projection: P) -> Result<Arc<Self>, Error> {
        let turn = db.write_turn().await;
        sqlx::query(
            "INSERT INTO projection_checkpoints (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
        )
        .bind(projection.name())
        .execute(&db.pool)
        .await?;
        drop(turn);
        let row = sqlx::query("SELECT tx_id, position FROM projection_checkpoints WHERE name = $1")
            .bind(projection.name())
            .fetch_one(&db.pool)
            .await?;
        let cursor = Cursor {
            tx: row.try_get("tx_id")?,
            pos: row.try_get("position")?,
        };
        Ok(Arc::new(Self {
            db,
            projection,
            batch: LIVE_BATCH,
            applied: watch::channel(cursor).0,
            wake: Notify::new(),
            hurry: Notify::new(),
        }))
    }

    /// The projection.
    pub fn projection(&self) -> &P {
        &self.projection
    }

    /// The checkpoint as last seen by this process.
    pub fn checkpoint(&self) -> Cursor {
        *self.applied.borrow()
    }

    /// Locks the checkpoint row for this transaction and returns it. The first statement of
    /// the transaction is a write, so SQLite takes its write lock up front (a read-then-write
    /// transaction could fail to upgrade) and PostgreSQL makes other nodes wait their turn.
    async fn lock_checkpoint(&self, conn: &mut AnyConnection) -> Result<Cursor, Error> {
        let row = sqlx::query(
            "UPDATE projection_checkpoints SET updated_at = $1 WHERE name = $2 \
             RETURNING tx_id, position",
        )
        .bind(ts(chrono::Utc::now()))
        .bind(self.projection.name())
        .fetch_one(&mut *conn)
        .await?;
        Ok(Cursor {
            tx: row.try_get("tx_id")?,
            pos: row.try_get("position")?,
        })
    }

    async fn apply_batch(
        &self,
        conn: &mut AnyConnection,
        from: Cursor,
        size: i64,
    ) -> Result<(usize, Cursor), Error> {
        let events = log::read_after(conn, self.db.dialect, from, size).await?;
        self.apply_events(conn, from, &events).await
    }

    /// Applies `events` (read after `from`) and moves the checkpoint to the last of them.
    async fn apply_events(
        &self,
        conn: &mut AnyConnection,
        from: Cursor,
        events: &[StoredEvent],
    ) -> Result<(usize, Cursor), Error> {
        self.projection
            .apply_batch(conn, self.db.dialect, events)
            .await?;
        let last = events.last().map_or(from, |e| e.cursor);
        if last != from {
            sqlx::query(
                "UPDATE projection_checkpoints SET tx_id = $1, position = $2 WHERE name = $3",
            )
            .bind(last.tx)
            .bind(last.pos)
            .bind(self.projection.name())
            .execute(&mut *conn)
            .await?;
        }
        Ok((events.len(), last))
    }

    /// Locks the checkpoint and applies `events`, read after `seen`; if another node moved the
    /// checkpoint meanwhile, they are dropped and the batch is read again from where it stands.
    async fn lock_and_apply(
        &self,
        conn: &mut AnyConnection,
        seen: Cursor,
        events: Vec<StoredEvent>,
        size: i64,
    ) -> Result<(usize, Cursor), Error> {
        let from = self.lock_checkpoint(conn).await?;
        if from == seen {
            self.apply_events(conn, from, &events).await
        } else {
            drop(events);
            self.apply_batch(conn, from, size).await
        }
    }

    fn publish(&self, cursor: Cursor) {
        self.applied.send_if_modified(|seen| {
            let newer = cursor > *seen;
            if newer {
                *seen = cursor;
            }
            newer
        });
    }

    /// Applies one batch in one transaction; returns how many events it applied.
    ///
    /// # Errors
    /// Database or decoding errors; nothing of the batch is kept then.
    pub async fn run_batch(&self) -> Result<usize, Error> {
        self.run_batch_of(self.batch).await
    }

    async fn run_batch_of(&self, size: i64) -> Result<usize, Error> {
        let (tx, (n, last)) = match self.db.dialect {
            // Read first, lock after: a tick that finds nothing commits a read-only transaction
            // (no checkpoint write, no WAL flush), and one that finds events needs no separate
            // peek. The checkpoint in the database is never behind the one this process saw, so
            // nothing after `seen` means nothing to do; if another node moved it meanwhile,
            // the lock returns where it stands now and the batch is read again from there.
            Dialect::Postgres => {
                let mut tx = self.db.begin_write().await?;
                let seen = self.checkpoint();
                let events = log::read_after(&mut tx, self.db.dialect, seen, size).await?;
                if events.is_empty() {
                    tx.commit().await?;
                    return Ok(0);
                }
                let applied = self.lock_and_apply(&mut tx, seen, events, size).await?;
                (tx, applied)
            }
            // SQLite: the same order, but the page is read before the write turn, on a
            // connection of its own (a read is never blocked by the writer), so the process's
            // one write lock is held only for applying; a tick that finds nothing takes no
            // turn. The transaction is `BEGIN IMMEDIATE`, in the turn.
            Dialect::Sqlite => {
                let seen = self.checkpoint();
                let mut conn = self.db.pool.acquire().await?;
                let events = log::read_after(&mut conn, self.db.dialect, seen, size).await?;
                drop(conn);
                if events.is_empty() {
                    return Ok(0);
                }
                let mut tx = self.db.begin_write().await?;
                let applied = self.lock_and_apply(&mut tx, seen, events, size).await?;
                (tx, applied)
            }
        };
        tx.commit().await?;
        self.publish(last);
        Ok(n)
    }

    /// Applies batches until the log is drained; returns how many events were applied. After
    /// a full batch the next ones are larger ([`BACKLOG_BATCH`]): the consumer is behind.
    ///
    /// # Errors
    /// As [`Runner::run_batch`].
    pub async fn catch_up(&self) -> Result<usize, Error> {
        let mut total = 0;
        let mut size = self.batch;
        loop {
            let n = self.run_batch_of(size).await?;
            total += n;
            if i64::try_from(n).unwrap_or(i64::MAX) < size {
                return Ok(total);
            }
            // No pause between batches on SQLite either: each batch queues for its turn at
            // the write lock behind the writes already waiting (FIFO), so a backlog cannot
            // starve the commands.
            size = BACKLOG_BATCH.max(self.batch);
        }
    }

    /// Empties the projection's tables and replays the whole log into them, in one
    /// transaction: readers see the old tables until the new ones are complete.
    ///
    /// # Errors
    /// As [`Runner::run_batch`]; the old tables stay then.
    pub async fn rebuild(&self) -> Result<usize, Error> {
        let mut tx = self.db.begin_write().await?;
        self.lock_checkpoint(&mut tx).await?;
        for table in self.projection.tables() {
            sqlx::query(&format!("DELETE FROM {table}"))
                .execute(&mut *tx)
                .await?;
        }
        let mut cursor = Cursor::default();
        let mut total = 0;
        loop {
            let (n, last) = self.apply_batch(&mut tx, cursor, REBUILD_BATCH).await?;
            total += n;
            cursor = last;
            if i64::try_from(n).unwrap_or(i64::MAX) < REBUILD_BATCH {
                break;
            }
        }
        sqlx::query("UPDATE projection_checkpoints SET tx_id = $1, position = $2 WHERE name = $3")
            .bind(cursor.tx)
            .bind(cursor.pos)
            .bind(self.projection.name())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.publish(cursor);
        Ok(total)
    }

    /// Wakes the background loop (after a local commit); a paced loop may wait out its pace
    /// first, to gather more commits into the batch.
    pub fn nudge(&self) {
        self.wake.notify_one();
    }

    /// Wakes the background loop now, past its pace: someone waits for the result.
    pub fn hurry(&self) {
        self.wake.notify_one();
        self.hurry.notify_one();
    }

    /// Waits until the projection has applied the event at `target`, hurrying the loop.
    /// Returns `false` if `timeout` passed first.
    ///
    /// One hurry is not enough: on PostgreSQL a committed event is read only once every older
    /// transaction of the cluster has ended, so the tick the hurry starts may find nothing yet,
    /// and the paced loop would then sleep out its pace (or its poll). While nothing new is
    /// applied the wait hurries again, at most every [`REHURRY`].
    pub async fn wait_for(&self, target: Cursor, timeout: Duration) -> bool {
        let mut rx = self.applied.subscribe();
        let wait = async {
            loop {
                if *rx.borrow_and_update() >= target {
                    return;
                }
                self.hurry();
                // A timeout (nothing applied yet) loops to hurry again; a closed channel ends.
                if let Ok(Err(_)) = tokio::time::timeout(REHURRY, rx.changed()).await {
                    return;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }

    /// Waits until the projection has applied event `sequence` of an aggregate.
    ///
    /// # Errors
    /// Database errors while looking the event up.
    pub async fn wait_for_event(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        sequence: i64,
        timeout: Duration,
    ) -> Result<bool, Error> {
        let mut conn = self.db.pool.acquire().await?;
        let target = log::cursor_of(
            &mut conn,
            self.db.dialect,
            aggregate_type,
            aggregate_id,
            sequence,
        )
        .await?;
        drop(conn);
        Ok(match target {
            Some(target) => self.wait_for(target, timeout).await,
            None => false,
        })
    }

    /// Runs the loop until `shutdown` turns true: a cheap read-only look every `poll` (events
    /// from other nodes), a batch when something is there or when nudged, ticks at least
    /// `pace` apart unless hurried ([`crate::worker::spawn_paced`]).
    pub fn spawn(
        self: &Arc<Self>,
        poll: Duration,
        pace: Duration,
        shutdown: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        crate::worker::spawn_paced(
            Arc::clone(self),
            self.projection.name(),
            poll,
            crate::worker::Pace {
                every: pace,
                hurry: Some(|r: &Self| &r.hurry),
            },
            shutdown,
            |r| &r.wake,
            |r| async move { r.tick().await },
        )
    }

    async fn tick(&self) -> Result<(), Error> {
        // The batch's own read is the look (see `run_batch_of`).
        self.catch_up().await?;
        Ok(())
    }
}
