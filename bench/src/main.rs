//! `tessera-bench`: how fast is `verifyFactor`, and how close to the database's own floor?
//!
//! ```text
//! cargo build --release --bin tessera && cargo run --release -p tessera-bench -- --store postgres
//! ```
//!
//! Starts the release `tessera` binary as a child process on a fresh database, seeds users
//! with active TOTP factors through GraphQL, then drives `verifyFactor` with C keep-alive
//! clients for T seconds per scenario and prints requests/s, p50/p90/p99, results by
//! `factorResult`, the server's RSS, and (PostgreSQL) the floor measured in the same run: a
//! one-row durable insert per transaction, and a read-then-insert, at the same concurrency.

use std::{
    collections::BTreeMap,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use clap::Parser;
use serde_json::{Value, json};
use totp_rs::{Algorithm, Secret, TOTP};

const KEY: &str = "bench-admin-key";

#[derive(Parser, Clone)]
#[command(about = "Load benchmark for verifyFactor")]
struct Args {
    /// `postgres`, `sqlite` or `both`.
    #[arg(long, default_value = "both")]
    store: String,
    /// PostgreSQL server (a fresh database is created on it).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    pg: String,
    /// Connection parameters for the bench database, the server's and the floor's alike
    /// (loopback: no TLS; use `sslmode=require` to measure with it).
    #[arg(long, default_value = "sslmode=disable")]
    pg_params: String,
    /// Users with an active TOTP factor.
    #[arg(long, default_value_t = 10_000)]
    users: usize,
    /// Concurrent keep-alive clients.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Seconds per scenario.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Events of history on the hot factor (scenario 3).
    #[arg(long, default_value_t = 100_000)]
    hot_events: usize,
    /// The server's `TESSERA_DB_POOL_SIZE` (connections per pool).
    #[arg(long, default_value_t = 24)]
    pool_size: u32,
    /// Path of the server binary.
    #[arg(long, default_value = "target/release/tessera")]
    server: String,
}

struct Server {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    async fn start(args: &Args, url: &str, env: &[(&str, &str)]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let mut cmd = Command::new(&args.server);
        cmd.arg("serve")
            .env("TESSERA_DATABASE_URL", url)
            .env("TESSERA_LISTEN", format!("127.0.0.1:{port}"))
            .env("TESSERA_BOOTSTRAP_API_KEY", KEY)
            .env(
                "TESSERA_MASTER_KEY",
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            )
            .env("TESSERA_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .expect("start the server (build it with cargo build --release --bin tessera)");
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1024)
            .build()
            .expect("client");
        let base = format!("http://127.0.0.1:{port}");
        for _ in 0..200 {
            if http
                .get(format!("{base}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Self { child, base, http };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("server did not become ready");
    }

    async fn gql(&self, query: &str, variables: Value) -> Value {
        self.http
            .post(format!("{}/graphql", self.base))
            .bearer_auth(KEY)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("json")
    }

    /// VmRSS and VmHWM (peak) of the server process, in MiB.
    fn rss(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
                .map_or(0.0, |kb| kb / 1024.0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

struct Factor {
    id: String,
    secret: Vec<u8>,
}

fn code(secret: &[u8], unix: u64) -> String {
    TOTP::new_unchecked(
        Algorithm::SHA1,
        6,
        0,
        30,
        secret.to_vec(),
        None,
        String::new(),
    )
    .generate(unix)
}

fn now() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0)
}

async fn seed(server: &Arc<Server>, n: usize, prefix: &str) -> Vec<Factor> {
    let started = Instant::now();
    let chunks: Vec<_> = (0..n)
        .collect::<Vec<_>>()
        .chunks(n.div_ceil(16).max(1))
        .map(<[usize]>::to_vec)
        .collect();
    let tasks = chunks.into_iter().map(|chunk| {
        let server = Arc::clone(server);
        let prefix = prefix.to_string();
        tokio::spawn(async move {
            let mut out = Vec::new();
            for i in chunk {
                let user = server
                    .gql("mutation($l: String!) { createUser(input: {login: $l}) { id } }", json!({ "l": format!("{prefix}{i}") }))
                    .await;
                let user = user["data"]["createUser"]["id"].as_str().expect("user").to_string();
                let f = server
                    .gql(
                        "mutation($u: ID!) { enrollFactor(input: {userId: $u, type: TOTP}) { factor { id } totp { secretBase32 } } }",
                        json!({ "u": user }),
                    )
                    .await;
                let id = f["data"]["enrollFactor"]["factor"]["id"].as_str().expect("factor").to_string();
                let secret = Secret::Encoded(f["data"]["enrollFactor"]["totp"]["secretBase32"].as_str().expect("secret").into())
                    .to_bytes()
                    .expect("base32");
                // Activate with the previous step's code, so the current step stays fresh; if a
                // step boundary passed in between, that code is now out of the window.
                let mut activated = false;
                for offset in [30, 0] {
                    let a = server
                        .gql(
                            "mutation($f: ID!, $c: String!) { activateFactor(input: {factorId: $f, passCode: $c}) { factorResult } }",
                            json!({ "f": id, "c": code(&secret, now() - offset) }),
                        )
                        .await;
                    if a["data"]["activateFactor"]["factorResult"] == "SUCCESS" {
                        activated = true;
                        break;
                    }
                }
                assert!(activated, "activation failed");
                out.push(Factor { id, secret });
            }
            out
        })
    });
    let factors: Vec<Factor> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .flat_map(|r| r.expect("seed task"))
        .collect();
    println!(
        "  seeded {} users with active TOTP factors in {:.1} s",
        factors.len(),
        started.elapsed().as_secs_f64()
    );
    factors
}

#[derive(Default)]
struct Outcome {
    latencies: Vec<Duration>,
    results: BTreeMap<String, usize>,
}

/// Drives verifyFactor with `clients` clients for `seconds`; `valid` sends the current code.
async fn drive(
    server: &Arc<Server>,
    factors: &Arc<Vec<Factor>>,
    clients: usize,
    seconds: u64,
    valid: bool,
) -> (f64, Outcome) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks = (0..clients).map(|c| {
        let server = Arc::clone(server);
        let factors = Arc::clone(factors);
        tokio::spawn(async move {
            let mut out = Outcome::default();
            let mut i = c;
            while Instant::now() < deadline {
                let f = &factors[i % factors.len()];
                i += clients;
                let pass = if valid { code(&f.secret, now()) } else { "000000".to_string() };
                let pass = if !valid && pass == code(&f.secret, now()) { "111111".to_string() } else { pass };
                let t = Instant::now();
                let r = server
                    .gql(
                        "mutation($f: ID!, $c: String!) { verifyFactor(input: {factorId: $f, passCode: $c}) { factorResult } }",
                        json!({ "f": f.id, "c": pass }),
                    )
                    .await;
                out.latencies.push(t.elapsed());
                let result = r["data"]["verifyFactor"]["factorResult"]
                    .as_str()
                    .map_or_else(|| format!("ERROR {}", r["errors"][0]["extensions"]["code"]), str::to_string);
                *out.results.entry(result).or_default() += 1;
            }
            out
        })
    });
    let mut all = Outcome::default();
    for part in futures::future::join_all(tasks).await {
        let part = part.expect("client task");
        all.latencies.extend(part.latencies);
        for (k, v) in part.results {
            *all.results.entry(k).or_default() += v;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    (all.latencies.len() as f64 / elapsed, all)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1000.0
}

fn report(name: &str, rps: f64, mut outcome: Outcome, server: &Server) -> f64 {
    outcome.latencies.sort_unstable();
    let (rss, peak) = server.rss();
    let p50 = percentile(&outcome.latencies, 0.5);
    println!(
        "  {name:<28} {rps:>8.0} req/s   p50 {p50:>6.2} ms   p90 {:>6.2} ms   p99 {:>6.2} ms   RSS {rss:.0} MiB (peak {peak:.0})   {:?}",
        percentile(&outcome.latencies, 0.9),
        percentile(&outcome.latencies, 0.99),
        outcome.results
    );
    p50
}

/// The PostgreSQL floor at `clients`: durable one-row inserts, and read-then-insert.
async fn pg_floor(url: &str, clients: usize, seconds: u64) -> (f64, f64) {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(u32::try_from(clients).unwrap_or(32))
        .test_before_acquire(false)
        .connect(url)
        .await
        .expect("floor pool");
    sqlx::query("CREATE TABLE IF NOT EXISTS floor_events (id bigserial PRIMARY KEY, k text NOT NULL, payload json NOT NULL)")
        .execute(&pool)
        .await
        .expect("floor table");
    sqlx::query("CREATE INDEX IF NOT EXISTS floor_events_k ON floor_events (k, id)")
        .execute(&pool)
        .await
        .expect("index");
    let run = |read_first: bool| {
        let pool = pool.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(seconds);
            let started = Instant::now();
            let tasks = (0..clients).map(|c| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        let k = format!("k{}", (c as u64 * 7919 + n) % 10_000);
                        let mut tx = pool.begin().await.expect("begin");
                        if read_first {
                            let _: Vec<(String,)> = sqlx::query_as("SELECT payload::text FROM floor_events WHERE k = $1 ORDER BY id DESC LIMIT 10")
                                .bind(&k)
                                .fetch_all(&mut *tx)
                                .await
                                .expect("read");
                        }
                        sqlx::query("INSERT INTO floor_events (k, payload) VALUES ($1, '{\"FailedAttempt\":{}}')")
                            .bind(&k)
                            .execute(&mut *tx)
                            .await
                            .expect("insert");
                        tx.commit().await.expect("commit");
                        n += 1;
                    }
                    n
                })
            });
            let total: u64 = futures::future::join_all(tasks)
                .await
                .into_iter()
                .map(|r| r.expect("floor task"))
                .sum();
            total as f64 / started.elapsed().as_secs_f64()
        }
    };
    let insert = run(false).await;
    let read_insert = run(true).await;
    (insert, read_insert)
}

async fn fresh_pg(base: &str, params: &str) -> String {
    let name = format!("bench_{}", uuid::Uuid::new_v4().simple());
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&format!("{base}/postgres"))
        .await
        .expect("PostgreSQL");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create database");
    format!("{base}/{name}?{params}")
}

/// Appends `n` FailedAttempt(REPLAYED) events to a factor, as a brute-forced factor collects.
async fn add_history(url: &str, factor: &str, n: usize) {
    let started = Instant::now();
    let payload = json!({ "FailedAttempt": { "reason": "REPLAYED", "consecutive_failures": 0, "at": chrono::Utc::now() } }).to_string();
    let db = tessera_store::Db::connect(url, 2).await.expect("pool");
    let (last,): (i64,) = sqlx::query_as(
        "SELECT max(sequence) FROM events WHERE aggregate_type = 'Factor' AND aggregate_id = $1",
    )
    .bind(factor)
    .fetch_one(&db.pool)
    .await
    .expect("last sequence");
    // Through the store's own append, in statements of 1,000 rows.
    let sequences: Vec<i64> = (1..=i64::try_from(n).unwrap_or(0))
        .map(|i| last + i)
        .collect();
    for chunk in sequences.chunks(1000) {
        let rows: Vec<tessera_store::NewEvent<'_>> = chunk
            .iter()
            .map(|&sequence| tessera_store::NewEvent {
                aggregate_type: "Factor",
                aggregate_id: factor,
                sequence,
                event_type: "FailedAttempt",
                event_version: "1.0",
                payload: payload.clone(),
                metadata: "{}".into(),
            })
            .collect();
        tessera_store::append(&db.pool, db.dialect, &rows, tessera_store::Conflict::Fail)
            .await
            .expect("history");
    }
    println!(
        "  appended {n} events of history to the hot factor in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// Waits until every consumer's checkpoint has reached the end of the log (PostgreSQL orders
/// the log by transaction, then position; SQLite's transaction ids are all 0).
async fn consumers_caught_up(url: &str) {
    let started = Instant::now();
    let head = if url.starts_with("postgres") {
        "SELECT tx_id::text::bigint, global_position FROM events \
         ORDER BY tx_id DESC, global_position DESC LIMIT 1"
    } else {
        "SELECT 0, global_seq FROM events ORDER BY global_seq DESC LIMIT 1"
    };
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.expect("pool");
    let head: (i64, i64) = sqlx::query_as(head).fetch_one(&pool).await.expect("head");
    let mut caught_up = false;
    while !caught_up && started.elapsed() < Duration::from_secs(600) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let checkpoints: Vec<(i64, i64)> =
            sqlx::query_as("SELECT tx_id, position FROM projection_checkpoints")
                .fetch_all(&pool)
                .await
                .expect("checkpoints");
        caught_up = checkpoints.iter().all(|c| *c >= head);
    }
    println!(
        "  consumers (read models, alert reactor, log seal) {} the history in {:.1} s",
        if caught_up {
            "caught up with"
        } else {
            "did NOT catch up with"
        },
        started.elapsed().as_secs_f64()
    );
}

async fn bench_store(args: &Args, store: &str) {
    let (url, dir) = if store == "postgres" {
        (fresh_pg(&args.pg, &args.pg_params).await, None)
    } else {
        let dir =
            std::env::temp_dir().join(format!("tessera-bench-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        (format!("sqlite://{}/tessera.db", dir.display()), Some(dir))
    };
    println!(
        "\n== {store} ({} clients, {} s per scenario) ==",
        args.clients, args.seconds
    );
    // Lockout thresholds raised out of reach, so wrong codes stay the attack path (load,
    // check, append FailedAttempt, count it on the user) rather than the cheaper locked path.
    let env = [
        ("TESSERA_LOCKOUT_THRESHOLD", "1000000000"),
        ("TESSERA_HARD_LOCK_THRESHOLD", "1000000000"),
    ];
    let pool_size = args.pool_size.to_string();
    let env = [
        env.as_slice(),
        &[("TESSERA_DB_POOL_SIZE", pool_size.as_str())],
    ]
    .concat();
    let server = Arc::new(Server::start(args, &url, &env).await);
    let factors = Arc::new(seed(&server, args.users, "u").await);
    let (wrong_rps, out) = drive(&server, &factors, args.clients, args.seconds, false).await;
    report("1. wrong codes", wrong_rps, out, &server);
    let (valid_rps, out) = drive(&server, &factors, args.clients, args.seconds, true).await;
    report("2. valid codes", valid_rps, out, &server);
    let (rps1, out1) = drive(&server, &factors, 1, args.seconds.min(5), false).await;
    let base_p50 = report("1. wrong codes, 1 client", rps1, out1, &server);
    let hot = seed(&server, 1, "hot").await;
    add_history(&url, &hot[0].id, args.hot_events).await;
    // A real history accrues over months; measure the factor, not the consumers catching up
    // on 100k events at once.
    consumers_caught_up(&url).await;
    let hot = Arc::new(hot);
    let (rps3, out3) = drive(&server, &hot, 1, args.seconds.min(5), false).await;
    let hot_p50 = report(
        &format!("3. hot factor, {} events", args.hot_events),
        rps3,
        out3,
        &server,
    );
    println!(
        "  scenario 3 / scenario 1 per-request latency (p50, 1 client): {:.2}x",
        hot_p50 / base_p50.max(1e-9)
    );
    // The floor runs with the server stopped, so both get the same connections and cores.
    drop(server);
    if store == "postgres" {
        let (insert, read_insert) = pg_floor(&url, args.clients, args.seconds.min(5)).await;
        println!(
            "  PostgreSQL floor at {} clients: insert {insert:.0} tx/s, read-then-insert {read_insert:.0} tx/s",
            args.clients
        );
        println!(
            "  scenario 1 / read-then-insert floor: {:.2}x",
            wrong_rps / read_insert.max(1e-9)
        );
    }
    if let Some(dir) = dir {
        let _ = std::fs::remove_dir_all(dir);
    } else if let Some(name) = url.rsplit('/').next().and_then(|n| n.split('?').next()) {
        let admin = format!("{}/postgres?{}", args.pg, args.pg_params);
        if let Ok(mut conn) = <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await;
        }
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let stores: &[&str] = match args.store.as_str() {
        "postgres" => &["postgres"],
        "sqlite" => &["sqlite"],
        _ => &["postgres", "sqlite"],
    };
    println!(
        "tessera-bench: {} users, {} clients, {} cores",
        args.users,
        args.clients,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for store in stores {
        bench_store(&args, store).await;
    }
}
