//! A live feed of the log for subscriptions: follows the log from where it was when the
//! process started, in the same never-skipping order as the checkpointed runners, and
//! broadcasts every event. It reads the store, not this process's commits, so subscribers see
//! events written by every node on the same database.

use std::{sync::Arc, time::Duration};

use sqlx::Row;
use tokio::{
    sync::{Notify, broadcast, watch},
    task::JoinHandle,
};

use crate::{Backend, Db, Error, StoredEvent, log};

/// The broadcaster.
pub struct LiveTail {
    db: Db,
    sender: broadcast::Sender<Arc<StoredEvent>>,
    wake: Notify,
}

impl LiveTail {
    /// A tail over `db`; nothing is read until [`LiveTail::spawn`].
    pub fn new(db: Db) -> Arc<Self> {
        Arc::new(Self {
            db,
            sender: broadcast::channel(4096).0,
            wake: Notify::new(),
        })
    }

    /// A receiver of every event read from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StoredEvent>> {
        self.sender.subscribe()
    }

    /// Reads sooner than the next poll (after a local commit).
    pub fn nudge(&self) {
        self.wake.notify_one();
    }

    async fn end_of_log(&self) -> Result<log::Cursor, Error> {
        let sql = match self.db.backend {
            Backend::Postgres => {
                "SELECT tx_id::text::bigint AS tx, global_position AS pos FROM events \
                 WHERE tx_id < pg_snapshot_xmin(pg_current_snapshot()) \
                 ORDER BY tx_id DESC, global_position DESC LIMIT 1"
            }
            Backend::Sqlite => {
                "SELECT 0 AS tx, global_seq AS pos FROM events ORDER BY global_seq DESC LIMIT 1"
            }
        };
        let row = sqlx::query(sql).fetch_optional(&self.db.pool).await?;
        Ok(match row {
            Some(r) => log::Cursor {
                tx: r.try_get("tx")?,
                pos: r.try_get("pos")?,
            },
            None => log::Cursor::default(),
        })
    }

    /// Follows the log until `shutdown` turns true.
    pub fn spawn(
        self: &Arc<Self>,
        poll: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut cursor = loop {
                match this.end_of_log().await {
                    Ok(c) => break c,
                    Err(e) => {
                        tracing::error!(error = %e, "live tail cannot find the end of the log");
                        tokio::time::sleep(poll).await;
                    }
                }
            };
            loop {
                loop {
                    let batch = async {
                        let mut conn = this.db.pool.acquire().await?;
                        log::read_after(&mut conn, this.db.backend, cursor, 500).await
                    }
                    .await;
                    match batch {
                        Ok(events) => {
                            let n = events.len();
                            for event in events {
                                cursor = event.cursor;
                                // No receivers is not an error: nobody is subscribed.
                                let _ = this.sender.send(Arc::new(event));
                            }
                            if n < 500 {
                                break;
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "live tail read failed; retrying");
                            break;
                        }
                    }
                }
                tokio::select! {
                    () = this.wake.notified() => {}
                    () = tokio::time::sleep(poll) => {}
                    _ = shutdown.changed() => {}
                }
                if *shutdown.borrow() {
                    return;
                }
            }
        })
    }
}
