//! `tessera rebuild-projections` on a large log: events per second. Prints figures; not a
//! test.
//!
//! ```sh
//! cargo bench -p tessera-tests --bench rebuild
//! TESSERA_BENCH_STORES=postgres TESSERA_BENCH_EVENTS=1000000 cargo bench -p tessera-tests --bench rebuild
//! ```
//!
//! The log: users with one TOTP factor each, 20 events per user (Registered, Enrolled,
//! Activated, then a mix of Verified, FailedAttempt, LockedOut and Unlocked), written in
//! transactions of 1,000 events with realistic metadata, then rebuilt twice through the same
//! function the CLI calls.

use std::time::Instant;

use tessera_api::cli;
use tessera_tests::{Store as Dialect, TestServer, synthetic::insert_users};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn run(dialect: Dialect, events: usize) {
    let mut s = TestServer::start(dialect).await;
    // Offline, as the CLI runs: no server tailing the log while it is written and rebuilt.
    let db = s.server().state.db.clone();
    s.stop().await;
    let started = Instant::now();
    let written = insert_users(&db, events.div_ceil(20), 1).await;
    println!(
        "{dialect:?}: wrote {written} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for attempt in 1..=2 {
        let rebuilt = cli::rebuild_projections(s.config.clone()).await.unwrap();
        assert_eq!(rebuilt.events, written);
        println!(
            "  rebuild {attempt}: {} events in {:.2} s = {:.0} events/s",
            rebuilt.events,
            rebuilt.seconds,
            rebuilt.rate()
        );
    }
    let (users, factors): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM users_v1), (SELECT COUNT(*) FROM factors_v1 WHERE status = 'ACTIVE' AND failed_attempts = 0)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(users as usize, events.div_ceil(20));
    assert_eq!(factors as usize, events.div_ceil(20));
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let events = env("TESSERA_BENCH_EVENTS", 1_000_000);
    let stores = std::env::var("TESSERA_BENCH_STORES").unwrap_or_else(|_| "postgres,sqlite".into());
    for name in stores.split(',') {
        let dialect = match name.trim() {
            "postgres" => Dialect::Postgres,
            "sqlite" => Dialect::Sqlite,
            other => panic!("unknown store {other}"),
        };
        run(dialect, events).await;
    }
}
