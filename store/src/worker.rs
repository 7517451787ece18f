//! The one loop every background consumer runs: work now, then whenever woken (after a local
//! commit) or every `poll` (for what other nodes wrote), until the server stops.

use std::{fmt::Display, future::Future, sync::Arc, time::Duration};

use tokio::{
    sync::{Notify, watch},
    task::JoinHandle,
};

/// Spawns the loop: `tick(worker)` runs at once, then after each wake-up from `wake(worker)`,
/// each `poll` and each change of `shutdown`, until `shutdown` is true. A failed tick is
/// logged as `what` and followed by a pause of `poll`, so a broken database is not hammered.
pub fn spawn<T, F, Fut, E>(
    worker: Arc<T>,
    what: &'static str,
    poll: Duration,
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
        }
    })
}
