//! The one place argon2 runs: a bounded pool under every password and recovery-code hash and
//! check (login, the dummy check of unknown logins, `setPassword` and its `currentPassword`,
//! a new user's password, recovery codes drawn and spent).
//!
//! argon2 takes tens of milliseconds and 19 MiB per password job. Run unbounded on tokio's
//! blocking threads (up to 512), a flood of anonymous logins takes memory and both cores and
//! every other request waits behind it. Here at most `TESSERA_HASH_CONCURRENCY` jobs run at
//! once (one per core by default), at most `TESSERA_HASH_QUEUE` more wait for a slot, and a
//! job that finds the queue full is refused at once, before the use case writes anything:
//! `RATE_LIMITED` (`HASHING_BUSY`) with `retryAfter`. Aggregates receive the hashes and
//! verdicts the pool computed in their commands, as they receive randomness, so no `handle`
//! hashes.

use std::sync::{
    Arc,
    atomic::{AtomicI64, Ordering},
};

use tokio::sync::Semaphore;

use crate::{
    app::{AppError, AppResult},
    metrics::Metrics,
};

/// Seconds a refused caller is told to wait: the queue holds well under a second of work at
/// its defaults, and a retry that finds it full again is refused as cheaply.
const RETRY_AFTER_SECONDS: i64 = 1;

/// The bounded argon2 pool.
pub struct HashPool {
    slots: usize,
    /// Permits to run: one per slot.
    running: Arc<Semaphore>,
    /// Permits to be admitted at all: slots plus queue.
    admitted: Arc<Semaphore>,
    in_flight: Arc<AtomicI64>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for HashPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashPool")
            .field("slots", &self.slots)
            .finish_non_exhaustive()
    }
}

/// Decrements the in-flight count when a job ends, however it ends.
struct Running {
    in_flight: Arc<AtomicI64>,
    metrics: Arc<Metrics>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let now = self.in_flight.fetch_sub(1, Ordering::SeqCst) - 1;
        self.metrics.hash_jobs_in_flight(now);
    }
}

/// Counts a job waiting for a slot, until it gets one or its caller goes away.
struct Waiting(Arc<Metrics>);

impl Waiting {
    fn new(metrics: Arc<Metrics>) -> Self {
        metrics.hash_jobs_waiting(1);
        Self(metrics)
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.hash_jobs_waiting(-1);
    }
}

impl HashPool {
    /// A pool running `concurrency` jobs at once (0: one per available core) with `queue`
    /// more waiting, reporting to `metrics`.
    pub fn new(concurrency: usize, queue: usize, metrics: Arc<Metrics>) -> Self {
        let slots = if concurrency == 0 {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        } else {
            concurrency
        };
        Self {
            slots,
            running: Arc::new(Semaphore::new(slots)),
            admitted: Arc::new(Semaphore::new(slots.saturating_add(queue))),
            in_flight: Arc::default(),
            metrics,
        }
    }

    /// How many jobs run at once.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Runs `job` on a blocking thread once a slot is free.
    ///
    /// The slot is held by the job itself, so a caller that goes away (a client hanging up)
    /// does not free it before the work is done.
    ///
    /// # Errors
    /// `RATE_LIMITED` (`HASHING_BUSY`) when the queue is full (nothing ran);
    /// `INTERNAL` when the job panicked.
    pub async fn run<T, F>(&self, job: F) -> AppResult<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let Ok(ticket) = Arc::clone(&self.admitted).try_acquire_owned() else {
            self.metrics.hash_job_refused();
            return Err(AppError::RateLimited {
                reason: "HASHING_BUSY",
                message: "too many password checks at once; try again shortly".into(),
                retry_after_seconds: RETRY_AFTER_SECONDS,
            });
        };
        let waiting = Waiting::new(Arc::clone(&self.metrics));
        let permit = Arc::clone(&self.running).acquire_owned().await;
        drop(waiting);
        let permit = permit.map_err(AppError::internal)?;
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.metrics.hash_jobs_in_flight(now);
        let running = Running {
            in_flight: Arc::clone(&self.in_flight),
            metrics: Arc::clone(&self.metrics),
        };
        tokio::task::spawn_blocking(move || {
            let out = job();
            // The count drops before the slot is given back, so it never reads above the slots.
            drop(running);
            drop(permit);
            drop(ticket);
            out
        })
        .await
        .map_err(AppError::internal)
    }
}
