//! The one loop every background consumer runs: work now, then whenever woken (after a local
//! commit) or every `poll` (for what other nodes wrote), until the server stops.
//!
//! A paced loop ([`spawn_paced`]) starts a tick at most once every `every`: under load many
//! commits wake it while one tick runs, and the next tick gathers all of them into one batch
//! (one transaction) instead of one transaction per commit. An idle loop is not slowed: a
//! wake-up longer than `every` after the last tick began runs at once, and a `hurry` wake-up
//! (someone waits for the result) skips the pause.

use std::{fmt::Display, future::Future, sync::Arc, time::Duration};

use tokio::{
    sync::{Notify, watch},
    task::JoinHandle,
    time::Instant,
};

/// How a paced loop spaces its ticks.
pub struct Pace<T> {
    /// The least time from the start of one tick to the start of the next (zero: no pacing).
    pub every: Duration,
    /// A wake-up that skips the pause (a reader waits for this loop's progress).
    pub hurry: Option<fn(&T) -> &Notify>,
}

impl<T> Pace<T> {
    /// No pacing: every wake-up ticks at once.
    pub fn none() -> Self {
        Self {
            every: Duration::ZERO,
            hurry: None,
        }
    }
}

/// Spawns the loop: `tick(worker)` runs at once, then after each wake-up from `wake(worker)`,
/// each `poll` and each change of `shutdown`, until `shutdown` is true. A failed tick is
/// logged as `what` and followed by a pause of `poll`, so a broken database is not hammered.
pub fn spawn<T, F, Fut, E>(
    worker: Arc<T>,
    what: &'static str,
    poll: Duration,
    shutdown: watch::Receiver<bool>,
    wake: fn(&T) -> &Notify,
    tick: F,
) -> JoinHandle<()>
where
    T: Send + Sync + 'static,
    F: Fn(Arc<T>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
    E: Display + Send,
{
    spawn_paced(worker, what, poll, Pace::none(), shutdown, wake, tick)
}

/// [`spawn`], with ticks spaced by `pace` (see the module docs).
pub fn spawn_paced<T, F, Fut, E>(
    worker: Arc<T>,
    what: &'static str,
    poll: Duration,
    pace: Pace<T>,
    mut shutdown: watch::Receiver<bool>,
    wake: fn(&T) -> &Notify,
    tick: F,
) -> JoinHandle<()>
where
    T: Send + Sync + 'static,
    F: Fn(Arc<T>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
    E: Display + Send,
{
    tokio::spawn(async move {
        loop {
            let started = Instant::now();
            if let Err(e) = tick(Arc::clone(&worker)).await {
                tracing::error!(worker = what, error = %e, "background work failed; retrying");
                tokio::time::sleep(poll).await;
            }
            tokio::select! {
                () = wake(&worker).notified() => {}
                () = tokio::time::sleep(poll) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return;
            }
            let next = started + pace.every;
            if Instant::now() < next {
                let hurry = async {
                    match pace.hurry {
                        Some(hurry) => hurry(&worker).notified().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = tokio::time::sleep_until(next) => {}
                    () = hurry => {}
                    _ = shutdown.changed() => {}
                }
                if *shutdown.borrow() {
                    return;
                }
            }
        }
    })
}
