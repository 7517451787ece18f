//! Verification latency against the length of a factor's history: verify at 10 events vs at
//! 100,000 events (a brute-forced factor), with Factor snapshots on (every
//! `TESSERA_FACTOR_SNAPSHOT_EVERY` events, or `TESSERA_BENCH_SNAPSHOT_EVERY`), on PostgreSQL
//! and SQLite. Prints figures; not a test.
//!
//! ```sh
//! cargo bench -p tessera-tests --bench verify_latency
//! TESSERA_BENCH_STORES=postgres TESSERA_BENCH_EVENTS=100000 TESSERA_BENCH_ROUNDS=300 cargo bench -p tessera-tests --bench verify_latency
//! ```
//!
//! Each factor's history is written straight into the event table (Enrolled through the API,
//! so its secret is really sealed; then Activated and a brute-force pattern of four
//! `FailedAttempt`s and one `Verified`), one event short of a snapshot boundary: the first,
//! unmeasured verification replays it all and the store writes the snapshot, as it would have
//! while the history grew. Then each round verifies a fresh 10-event factor and the long one,
//! alternately, in process (`Store::execute`: load, decide, commit, snapshot when due), with
//! the clock moved one TOTP step per round so every code is new.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use chrono::TimeDelta;
use serde_json::json;
use tessera_domain::{
    factor::{Factor, FactorCommand, FactorOutcome, outcome_of},
    secret::PassCode,
};
use tessera_store::Store;
use tessera_tests::{Store as Dialect, TestServer};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Enrols a factor through the API and appends events up to `total` straight into the table.
/// Returns (factor id, secret).
async fn seed(s: &TestServer, login: &str, total: usize) -> (String, String) {
    let user = s.create_user(login).await;
    let (factor, secret) = s.enroll_totp(&user).await;
    let now = s.clock_unix();
    let step0 = now / 30 - i64::try_from(total).unwrap() - 10;
    let at = "2026-01-01T00:00:00Z";
    let meta =
        json!({ "actor": "api-key:bootstrap", "request_id": "seed", "correlation_id": "seed",
                       "causation_id": "cmd-seed", "command": "Verify", "client_ip": "127.0.0.1",
                       "user_agent": "bench/1.0" })
        .to_string();
    let mut rows = Vec::with_capacity(total);
    for seq in 2..=total {
        let (event_type, version, payload) = if seq == 2 {
            (
                "Activated",
                "1.0",
                json!({ "Activated": { "step": step0, "at": at } }),
            )
        } else if (seq - 2) % 5 == 0 {
            let step = step0 + i64::try_from(seq).unwrap();
            (
                "Verified",
                "1.0",
                json!({ "Verified": { "step": step, "at": at } }),
            )
        } else {
            let n = (seq - 2) % 5;
            (
                "FailedAttempt",
                "2.0",
                json!({ "FailedAttempt": { "reason": "WRONG_CODE", "counted": true,
                                           "consecutive_failures": n, "at": at } }),
            )
        };
        rows.push((seq, event_type, version, payload.to_string()));
    }
    let db = &s.server().state.db;
    for chunk in rows.chunks(1000) {
        let events: Vec<tessera_store::NewEvent<'_>> = chunk
            .iter()
            .map(|(seq, t, v, p)| tessera_store::NewEvent {
                aggregate_type: "Factor",
                aggregate_id: &factor,
                sequence: i64::try_from(*seq).unwrap(),
                event_type: t,
                event_version: v,
                payload: p.clone(),
                metadata: meta.to_string(),
            })
            .collect();
        tessera_store::append(&db.pool, db.dialect, &events, tessera_store::Conflict::Fail)
            .await
            .unwrap();
    }
    (factor, secret)
}

async fn verify(store: &Store<Factor>, s: &TestServer, factor: &str, secret: &str) -> Duration {
    let command = FactorCommand::Verify {
        pass_code: PassCode::new(s.code(secret, 0)),
        challenge_id: None,
    };
    let metadata = HashMap::from([("actor".to_string(), "bench".to_string())]);
    let started = Instant::now();
    let committed = store.execute(factor, command, &metadata).await.unwrap();
    let took = started.elapsed();
    assert_eq!(
        outcome_of(&committed.payloads()),
        Some(FactorOutcome::Success)
    );
    took
}

struct Stats {
    median: f64,
    p90: f64,
    mean: f64,
}

fn stats(samples: &[Duration]) -> Stats {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    Stats {
        median: at(0.5),
        p90: at(0.9),
        mean: ms.iter().sum::<f64>() / ms.len() as f64,
    }
}

async fn settle(s: &TestServer) {
    let state = &s.server().state;
    for _ in 0..3 {
        state.read_models.catch_up().await.unwrap();
        state.sealer.catch_up().await.unwrap();
    }
}

async fn run(dialect: Dialect, long: usize, rounds: usize, every: usize) {
    let s = TestServer::start_with(dialect, |c| {
        c.factor_snapshot_every = every;
        c.lockout_threshold = 1_000_000;
    })
    .await;
    let seeding = Instant::now();
    let mut small = Vec::with_capacity(rounds);
    for i in 0..rounds {
        small.push(seed(&s, &format!("small{i}"), 10).await);
    }
    // One short of a boundary, so the first (unmeasured) verify writes the snapshot.
    let long = long.div_ceil(every) * every;
    let (big, big_secret) = seed(&s, "big", long - 1).await;
    settle(&s).await;
    let state = &s.server().state;
    let factors = &state.factors;
    s.clock.advance(TimeDelta::seconds(30));
    let first = verify(factors, &s, &big, &big_secret).await;
    let seeded = seeding.elapsed();
    let (_, length) = factors.load(&big).await.unwrap();
    // The same pool without snapshots, for reference.
    let plain: Store<Factor> = Store::new(&state.db, factors.services().clone());

    let mut at_small = Vec::with_capacity(rounds);
    let mut at_long = Vec::with_capacity(rounds);
    for (factor, secret) in &small {
        s.clock.advance(TimeDelta::seconds(30));
        at_small.push(verify(factors, &s, factor, secret).await);
        at_long.push(verify(factors, &s, &big, &big_secret).await);
    }
    let mut unsnapshotted = Vec::new();
    for _ in 0..5 {
        s.clock.advance(TimeDelta::seconds(30));
        unsnapshotted.push(verify(&plain, &s, &big, &big_secret).await);
    }
    let (a, b, c) = (stats(&at_small), stats(&at_long), stats(&unsnapshotted));
    println!(
        "{dialect:?}, snapshot every {every}: seeded {rounds} factors of 10 events and one of \
         {length} in {:.1} s; first verify of the long one (full replay, writes the snapshot) \
         {:.1} ms",
        seeded.as_secs_f64(),
        first.as_secs_f64() * 1e3
    );
    println!("  verify, {rounds} rounds     median ms   p90 ms   mean ms");
    println!(
        "  at 10 events              {:>8.3} {:>8.3} {:>9.3}",
        a.median, a.p90, a.mean
    );
    println!(
        "  at {length:>6} events (snap) {:>8.3} {:>8.3} {:>9.3}",
        b.median, b.p90, b.mean
    );
    println!(
        "  ratio long/short          {:>8.2} {:>8.2} {:>9.2}",
        b.median / a.median,
        b.p90 / a.p90,
        b.mean / a.mean
    );
    println!(
        "  at {length:>6} events, no snapshots (5 runs): median {:.1} ms",
        c.median
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; this target takes no arguments of its own.
    let long = env("TESSERA_BENCH_EVENTS", 100_000);
    let rounds = env("TESSERA_BENCH_ROUNDS", 200);
    let every = env(
        "TESSERA_BENCH_SNAPSHOT_EVERY",
        tessera_api::Config::default().factor_snapshot_every,
    );
    let stores = std::env::var("TESSERA_BENCH_STORES").unwrap_or_else(|_| "postgres,sqlite".into());
    for name in stores.split(',') {
        let dialect = match name.trim() {
            "postgres" => Dialect::Postgres,
            "sqlite" => Dialect::Sqlite,
            other => panic!("unknown store {other}"),
        };
        run(dialect, long, rounds, every).await;
    }
}
