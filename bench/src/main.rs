//! `tessera-bench`: how fast is `verifyFactor`, and how close to the database's own floor?
//!
//! ```text
//! cargo build --release --bin tessera --bin tessera-bench
//! ./target/release/tessera-bench --store both
//! ```
//!
//! Starts the release `tessera` binary as a child process on a fresh database, seeds users
//! with active TOTP factors (and passkeys, `--factor`) through GraphQL, then drives
//! `verifyFactor` with C keep-alive clients for T seconds per scenario and prints requests/s,
//! p50/p90/p99, results by `factorResult`, the server's RSS; the work per verification counted
//! by PostgreSQL itself (`pg_stat_database.xact_commit`, `pg_stat_wal.wal_sync`); the lag from
//! a probe event's commit to each consumer's checkpoint during scenario 1; the consumers' live
//! catch-up rate; statements the server logged as slow (over 100 ms); and the PostgreSQL floor
//! measured in the same run: a one-row durable insert per transaction, and a read-then-insert,
//! at the same concurrency.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use clap::Parser;
use serde_json::{Value, json};
use totp_rs::{Algorithm, Secret, TOTP};
use webauthn_authenticator_rs::{WebauthnAuthenticator, softpasskey::SoftPasskey};
use webauthn_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse, Url};

const KEY: &str = "bench-admin-key";

/// The origin the soft passkeys speak from (the bench server lists it); nothing listens there.
const ORIGIN: &str = "http://localhost:8443";

/// PostgreSQL flushes a backend's statistics at most once a second while it is busy, and an
/// idle backend's within ten seconds: counters are read this long after a scenario.
const STATS_SETTLE: Duration = Duration::from_secs(11);

#[derive(Parser, Clone)]
#[command(about = "Load benchmark for verifyFactor")]
struct Args {
    /// `postgres`, `sqlite` or `both`.
    #[arg(long, default_value = "both")]
    store: String,
    /// `totp`, `webauthn` or `both`: the factors scenarios 1 and 2 verify (`both` prints a
    /// passkey verification's cost next to a TOTP one's).
    #[arg(long, default_value = "both")]
    factor: String,
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
    /// Users with an active passkey (`--factor webauthn` or `both`).
    #[arg(long, default_value_t = 1_000)]
    passkey_users: usize,
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
    /// The server's `TESSERA_LOG` filter (its log lines are passed through to stderr, slow
    /// statements counted): e.g. `warn,tessera::access=info,sqlx::query=debug` to see each
    /// request's and each statement's duration.
    #[arg(long, default_value = "warn")]
    server_log: String,
    /// Instead of the verifyFactor scenarios: a cheap query's latency idle and during a flood
    /// of anonymous logins by `--clients` clients, and the server's RSS (the argon2 pool).
    #[arg(long)]
    login_flood: bool,
    /// The server's `TESSERA_HASH_CONCURRENCY` for `--login-flood` (unset: its default, one per
    /// core; 512 with a huge `--hash-queue` is tokio's unbounded blocking pool of before).
    #[arg(long)]
    hash_concurrency: Option<usize>,
    /// The server's `TESSERA_HASH_QUEUE` for `--login-flood` (unset: its default).
    #[arg(long)]
    hash_queue: Option<usize>,
}

struct Server {
    child: Child,
    base: String,
    http: reqwest::Client,
    /// Statements the server logged as slow, and the first few of them.
    slow: Arc<Mutex<(usize, Vec<String>)>>,
    /// SQLite write turns the server logged as having waited over 100 ms for the write lock.
    slow_turns: Arc<Mutex<usize>>,
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
            .env("TESSERA_LOG", &args.server_log)
            .env("TESSERA_LOG_FORMAT", "text")
            .env("TESSERA_WEBAUTHN_RP_ID", "localhost")
            .env("TESSERA_WEBAUTHN_ORIGINS", ORIGIN)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .expect("start the server (build it with cargo build --release --bin tessera)");
        // The server's log: slow statements are counted, everything else passed through.
        let slow = Arc::new(Mutex::new((0usize, Vec::new())));
        let slow_turns = Arc::new(Mutex::new(0usize));
        if let Some(stderr) = child.stderr.take() {
            let slow = Arc::clone(&slow);
            let slow_turns = Arc::clone(&slow_turns);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if line.contains("slow write turn") {
                        *slow_turns.lock().expect("slow turns") += 1;
                    } else if line.contains("slow statement") {
                        let mut slow = slow.lock().expect("slow log");
                        slow.0 += 1;
                        if slow.1.len() < 5 {
                            slow.1.push(line.chars().take(300).collect());
                        }
                    } else {
                        eprintln!("  server: {line}");
                    }
                }
            });
        }
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
                return Self {
                    child,
                    base,
                    http,
                    slow,
                    slow_turns,
                };
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

    /// Slow statements logged so far.
    fn slow_statements(&self) -> (usize, Vec<String>) {
        self.slow.lock().expect("slow log").clone()
    }

    /// Write turns logged as slow so far (SQLite).
    fn slow_turns(&self) -> usize {
        *self.slow_turns.lock().expect("slow turns")
    }
}

/// What a client proves possession of.
enum Proof {
    Totp(Vec<u8>),
    /// A soft passkey holding the factor's credential (used by one client at a time).
    Passkey(Mutex<SoftPasskey>),
}

struct Factor {
    id: String,
    secret: Proof,
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

/// The soft passkey's answer to `navigator.credentials.create({publicKey})` from [`ORIGIN`].
fn passkey_create(passkey: &mut SoftPasskey, public_key: &Value) -> Value {
    let options: CreationChallengeResponse =
        serde_json::from_value(json!({ "publicKey": public_key })).expect("creation options");
    let response = passkey
        .do_registration(Url::parse(ORIGIN).expect("origin"), options)
        .expect("the soft passkey registers");
    serde_json::to_value(response).expect("registration JSON")
}

/// The soft passkey's assertion for `public_key`; `tamper` flips a bit of the signature (a
/// wrong proof that goes all the way to the signature check).
fn passkey_get(passkey: &mut SoftPasskey, public_key: &Value, tamper: bool) -> Value {
    let options: RequestChallengeResponse =
        serde_json::from_value(json!({ "publicKey": public_key })).expect("request options");
    let response = passkey
        .do_authentication(Url::parse(ORIGIN).expect("origin"), options)
        .expect("the soft passkey signs");
    let mut value = serde_json::to_value(response).expect("assertion JSON");
    if tamper
        && let Some(sig) = value["response"]["signature"].as_str()
        && let Ok(mut bytes) = B64.decode(sig)
        && let Some(last) = bytes.last_mut()
    {
        *last ^= 1;
        value["response"]["signature"] = Value::String(B64.encode(bytes));
    }
    value
}

async fn seed_one(server: &Server, login: &str, passkey: bool) -> Factor {
    let user = server
        .gql(
            "mutation($l: String!) { createUser(input: {login: $l}) { id } }",
            json!({ "l": login }),
        )
        .await;
    let user = user["data"]["createUser"]["id"]
        .as_str()
        .expect("user")
        .to_string();
    if passkey {
        let f = server
            .gql(
                "mutation($u: ID!) { enrollFactor(input: {userId: $u, type: WEBAUTHN, label: \"Key\"}) \
                 { factor { id } webauthn { publicKey } } }",
                json!({ "u": user }),
            )
            .await;
        let id = f["data"]["enrollFactor"]["factor"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("passkey factor: {f}"))
            .to_string();
        let mut key = SoftPasskey::new(true);
        let response = passkey_create(
            &mut key,
            &f["data"]["enrollFactor"]["webauthn"]["publicKey"],
        );
        let a = server
            .gql(
                "mutation($f: ID!, $w: JSON!) { activateFactor(input: {factorId: $f, webauthn: $w}) { factorResult } }",
                json!({ "f": id, "w": response }),
            )
            .await;
        assert_eq!(
            a["data"]["activateFactor"]["factorResult"], "SUCCESS",
            "passkey activation: {a}"
        );
        return Factor {
            id,
            secret: Proof::Passkey(Mutex::new(key)),
        };
    }
    let f = server
        .gql(
            "mutation($u: ID!) { enrollFactor(input: {userId: $u, type: TOTP}) { factor { id } totp { secretBase32 } } }",
            json!({ "u": user }),
        )
        .await;
    let id = f["data"]["enrollFactor"]["factor"]["id"]
        .as_str()
        .expect("factor")
        .to_string();
    let secret = Secret::Encoded(
        f["data"]["enrollFactor"]["totp"]["secretBase32"]
            .as_str()
            .expect("secret")
            .into(),
    )
    .to_bytes()
    .expect("base32");
    // Activate with the previous step's code, so the current step stays fresh; if a step
    // boundary passed in between, that code is now out of the window.
    for offset in [30, 0] {
        let a = server
            .gql(
                "mutation($f: ID!, $c: String!) { activateFactor(input: {factorId: $f, passCode: $c}) { factorResult } }",
                json!({ "f": id, "c": code(&secret, now() - offset) }),
            )
            .await;
        if a["data"]["activateFactor"]["factorResult"] == "SUCCESS" {
            return Factor {
                id,
                secret: Proof::Totp(secret),
            };
        }
    }
    panic!("activation failed");
}

async fn seed(server: &Arc<Server>, n: usize, prefix: &str, passkey: bool) -> Vec<Factor> {
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
                out.push(seed_one(&server, &format!("{prefix}{i}"), passkey).await);
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
        "  seeded {} users with active {} factors in {:.1} s",
        factors.len(),
        if passkey { "passkey" } else { "TOTP" },
        started.elapsed().as_secs_f64()
    );
    factors
}

#[derive(Default)]
struct Outcome {
    /// One whole verification (a passkey's: its challenge and its verify).
    latencies: Vec<Duration>,
    /// A passkey's `verifyFactor` request alone.
    verify_latencies: Vec<Duration>,
    results: BTreeMap<String, usize>,
}

/// One verification of `f`: a code (the current one if `valid`, a wrong one otherwise), or a
/// passkey's challenge and assertion (tampered unless `valid`). The result, and the time the
/// `verifyFactor` request took alone if it was not the whole.
async fn verify_once(server: &Server, f: &Factor, valid: bool) -> (String, Option<Duration>) {
    let result = |r: &Value| {
        r["data"]["verifyFactor"]["factorResult"]
            .as_str()
            .map_or_else(
                || format!("ERROR {}", r["errors"][0]["extensions"]["code"]),
                str::to_string,
            )
    };
    match &f.secret {
        Proof::Totp(secret) => {
            let pass = if valid {
                code(secret, now())
            } else {
                "000000".to_string()
            };
            let pass = if !valid && pass == code(secret, now()) {
                "111111".to_string()
            } else {
                pass
            };
            let r = server
                .gql(
                    "mutation($f: ID!, $c: String!) { verifyFactor(input: {factorId: $f, passCode: $c}) { factorResult } }",
                    json!({ "f": f.id, "c": pass }),
                )
                .await;
            (result(&r), None)
        }
        Proof::Passkey(key) => {
            let c = server
                .gql(
                    "mutation($f: ID!) { challengeFactor(input: {factorId: $f}) { webauthn { publicKey } } }",
                    json!({ "f": f.id }),
                )
                .await;
            let options = &c["data"]["challengeFactor"]["webauthn"]["publicKey"];
            if options.is_null() {
                return (
                    format!("ERROR {}", c["errors"][0]["extensions"]["code"]),
                    None,
                );
            }
            let assertion = passkey_get(&mut key.lock().expect("passkey"), options, !valid);
            let t = Instant::now();
            let r = server
                .gql(
                    "mutation($f: ID!, $w: JSON!) { verifyFactor(input: {factorId: $f, webauthn: $w}) { factorResult } }",
                    json!({ "f": f.id, "w": assertion }),
                )
                .await;
            (result(&r), Some(t.elapsed()))
        }
    }
}

/// Drives verifications with `clients` clients for `seconds`; `valid` sends correct proofs.
/// Client `c` uses factors `c, c + clients, …`, so no factor has two clients at once.
async fn drive(
    server: &Arc<Server>,
    factors: &Arc<Vec<Factor>>,
    clients: usize,
    seconds: u64,
    valid: bool,
) -> (f64, Outcome) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks = (0..clients.min(factors.len())).map(|c| {
        let server = Arc::clone(server);
        let factors = Arc::clone(factors);
        tokio::spawn(async move {
            let mut out = Outcome::default();
            let mut i = c;
            while Instant::now() < deadline {
                let f = &factors[i % factors.len()];
                i += clients;
                if i >= factors.len() {
                    i = c;
                }
                let t = Instant::now();
                let (result, verify) = verify_once(&server, f, valid).await;
                out.latencies.push(t.elapsed());
                out.verify_latencies.extend(verify);
                *out.results.entry(result).or_default() += 1;
            }
            out
        })
    });
    let mut all = Outcome::default();
    for part in futures::future::join_all(tasks).await {
        let part = part.expect("client task");
        all.latencies.extend(part.latencies);
        all.verify_latencies.extend(part.verify_latencies);
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

/// Prints a scenario's line; returns its (p50, p99) in ms.
fn report(name: &str, rps: f64, mut outcome: Outcome, server: &Server) -> (f64, f64) {
    outcome.latencies.sort_unstable();
    let (rss, peak) = server.rss();
    let p50 = percentile(&outcome.latencies, 0.5);
    let p99 = percentile(&outcome.latencies, 0.99);
    println!(
        "  {name:<34} {rps:>8.0} req/s   p50 {p50:>6.2} ms   p90 {:>6.2} ms   p99 {p99:>6.2} ms   RSS {rss:.0} MiB (peak {peak:.0})   {:?}",
        percentile(&outcome.latencies, 0.9),
        outcome.results
    );
    if !outcome.verify_latencies.is_empty() {
        outcome.verify_latencies.sort_unstable();
        println!(
            "  {:<34} {:>14}   p50 {:>6.2} ms   p90 {:>6.2} ms   p99 {:>6.2} ms   (the verifyFactor request alone; the line above is challenge + verify)",
            "",
            "",
            percentile(&outcome.verify_latencies, 0.5),
            percentile(&outcome.verify_latencies, 0.9),
            percentile(&outcome.verify_latencies, 0.99),
        );
    }
    (p50, p99)
}

/// PostgreSQL's own counters: transactions committed in the bench database, and (for the whole
/// cluster: other databases' commits count too) WAL syncs and WAL records.
#[derive(Clone, Copy, Default)]
struct PgStats {
    xact_commit: i64,
    wal_sync: i64,
    wal_records: i64,
}

async fn pg_stats(pool: &sqlx::PgPool) -> PgStats {
    let (xact_commit,): (i64,) = sqlx::query_as(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(pool)
    .await
    .expect("pg_stat_database");
    let (wal_sync, wal_records): (i64, i64) =
        sqlx::query_as("SELECT wal_sync, wal_records FROM pg_stat_wal")
            .fetch_one(pool)
            .await
            .expect("pg_stat_wal");
    PgStats {
        xact_commit,
        wal_sync,
        wal_records,
    }
}

/// Runs a scenario and, on PostgreSQL, prints the work per verification PostgreSQL counted
/// (read [`STATS_SETTLE`] after the scenario, so the consumers' work on it is in).
/// The idle server's own rate of transactions, WAL syncs and WAL records per second (its
/// consumers' polls), measured over one [`STATS_SETTLE`] with nothing driven.
async fn idle_rates(stats: Option<&sqlx::PgPool>) -> Option<(f64, f64, f64)> {
    let pool = stats?;
    tokio::time::sleep(STATS_SETTLE).await;
    let a = pg_stats(pool).await;
    let started = Instant::now();
    tokio::time::sleep(STATS_SETTLE).await;
    let b = pg_stats(pool).await;
    let s = started.elapsed().as_secs_f64();
    let rates = (
        (b.xact_commit - a.xact_commit) as f64 / s,
        (b.wal_sync - a.wal_sync) as f64 / s,
        (b.wal_records - a.wal_records) as f64 / s,
    );
    println!(
        "  idle server: {:.1} transactions/s, {:.1} WAL syncs/s, {:.0} WAL records/s (subtracted below over each measured window)",
        rates.0, rates.1, rates.2
    );
    Some(rates)
}

/// One statement's counters in `pg_stat_statements` (this database, summed over users and
/// nesting levels): normalised text, calls, total execution time (ms), WAL records.
type StatementCounters = BTreeMap<i64, (String, i64, f64, i64)>;

/// The `pg_stat_statements` counters of the bench database, if the extension is loaded in the
/// cluster (`shared_preload_libraries`); `None` otherwise (the bench then prints n/a).
async fn statement_counters(pool: &sqlx::PgPool) -> Option<StatementCounters> {
    type Row = (i64, String, i64, f64, i64);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT queryid, min(query), sum(calls)::int8, sum(total_exec_time)::float8, \
                sum(wal_records)::int8 \
         FROM pg_stat_statements \
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
           AND queryid IS NOT NULL \
         GROUP BY queryid",
    )
    .fetch_all(pool)
    .await
    .ok()?;
    Some(
        rows.into_iter()
            .map(|(id, query, calls, ms, wal)| (id, (query, calls, ms, wal)))
            .collect(),
    )
}

/// Statements per verification over a scenario: `(text, calls, mean ms, WAL records)` per
/// verification, most calls first; the bench's own statistics queries left out.
type StatementWork = Vec<(String, f64, f64, f64)>;

fn statement_work(before: &StatementCounters, after: &StatementCounters, n: f64) -> StatementWork {
    let mut work: StatementWork = after
        .iter()
        .filter_map(|(id, (query, calls, ms, wal))| {
            let (_, calls0, ms0, wal0) = before.get(id).cloned().unwrap_or_default();
            let calls = calls - calls0;
            if calls <= 0 || query.contains("pg_stat") {
                return None;
            }
            let text: String = query.split_whitespace().collect::<Vec<_>>().join(" ");
            let text = if text.chars().count() > 100 {
                format!("{}…", text.chars().take(99).collect::<String>())
            } else {
                text
            };
            Some((
                text,
                calls as f64 / n,
                (ms - ms0) / calls as f64,
                (wal - wal0) as f64 / n,
            ))
        })
        .collect();
    work.sort_by(|a, b| b.1.total_cmp(&a.1));
    work
}

fn print_statements(statements: Option<&Option<StatementWork>>) {
    let Some(statements) = statements else {
        return;
    };
    let Some(statements) = statements else {
        println!(
            "  {:<34} statements per verification: n/a (pg_stat_statements is not loaded in this cluster)",
            ""
        );
        return;
    };
    println!(
        "  {:<34} statements per verification (pg_stat_statements; calls, mean time, WAL records):",
        ""
    );
    for (text, calls, mean, wal) in statements.iter().take(STATEMENTS_SHOWN) {
        println!("    {calls:>7.3}  {mean:>7.3} ms  {wal:>6.2} WAL  {text}");
    }
    let rest: f64 = statements.iter().skip(STATEMENTS_SHOWN).map(|s| s.1).sum();
    if rest > 0.0 {
        println!(
            "    {rest:>7.3}  (the other {} statements together)",
            statements.len().saturating_sub(STATEMENTS_SHOWN)
        );
    }
}

/// How many statements the breakdown prints per scenario.
const STATEMENTS_SHOWN: usize = 14;

/// What [`measured`] counted on PostgreSQL: transactions, WAL syncs and WAL records per
/// verification, and the statement breakdown (`None` inside: no `pg_stat_statements`).
type Work = ((f64, f64, f64), Option<StatementWork>);

async fn measured<F: Future<Output = (f64, Outcome)>>(
    stats: Option<&sqlx::PgPool>,
    idle: Option<(f64, f64, f64)>,
    run: F,
) -> (f64, Outcome, Option<Work>) {
    let Some(pool) = stats else {
        let (rps, out) = run.await;
        return (rps, out, None);
    };
    tokio::time::sleep(STATS_SETTLE).await;
    let before = pg_stats(pool).await;
    let statements_before = statement_counters(pool).await;
    let started = Instant::now();
    let (rps, out) = run.await;
    tokio::time::sleep(STATS_SETTLE).await;
    let after = pg_stats(pool).await;
    let statements_after = statement_counters(pool).await;
    let window = started.elapsed().as_secs_f64();
    let (idle_x, idle_s, idle_r) = idle.unwrap_or_default();
    let n = out.latencies.len().max(1) as f64;
    let per = |a: i64, b: i64, idle: f64| ((a - b) as f64 - idle * window).max(0.0) / n;
    let work = (
        per(after.xact_commit, before.xact_commit, idle_x),
        per(after.wal_sync, before.wal_sync, idle_s),
        per(after.wal_records, before.wal_records, idle_r),
    );
    let statements = match (statements_before, statements_after) {
        (Some(a), Some(b)) => Some(statement_work(&a, &b, n)),
        _ => None,
    };
    (rps, out, Some((work, statements)))
}

fn print_work(work: Option<&Work>) {
    match work.map(|w| w.0) {
        Some((xact, sync, records)) => println!(
            "  {:<34} per verification: {xact:.3} transactions (xact_commit), {sync:.3} WAL syncs, {records:.1} WAL records (all consumers on, the idle rate subtracted; WAL figures cluster-wide)",
            ""
        ),
        None => println!(
            "  {:<34} per verification: n/a on SQLite (no statistics views; each write transaction is one fsync of the WAL under synchronous=FULL)",
            ""
        ),
    }
    print_statements(work.map(|w| &w.1));
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

/// A pool of the bench's own on the server's database (SQLite: a reader beside it).
async fn bench_pool(url: &str) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::any::AnyPoolOptions::new()
        .max_connections(2)
        .connect(url)
        .await
        .expect("bench pool")
}

/// The log position of an aggregate's newest event, comparable with the checkpoints
/// (PostgreSQL orders the log by transaction, then position; SQLite's transaction ids are 0).
async fn cursor_of_newest(pool: &sqlx::AnyPool, pg: bool, factor: &str) -> Option<(i64, i64)> {
    let sql = if pg {
        "SELECT tx_id::text::bigint, global_position FROM events \
         WHERE aggregate_type = 'Factor' AND aggregate_id = $1 ORDER BY sequence DESC LIMIT 1"
    } else {
        "SELECT 0, global_seq FROM events \
         WHERE aggregate_type = 'Factor' AND aggregate_id = $1 ORDER BY sequence DESC LIMIT 1"
    };
    sqlx::query_as(sql)
        .bind(factor)
        .fetch_optional(pool)
        .await
        .ok()
        .flatten()
}

async fn checkpoints(pool: &sqlx::AnyPool) -> Vec<(String, (i64, i64))> {
    let rows: Vec<(String, i64, i64)> =
        sqlx::query_as("SELECT name, tx_id, position FROM projection_checkpoints ORDER BY name")
            .fetch_all(pool)
            .await
            .unwrap_or_default();
    rows.into_iter().map(|(n, t, p)| (n, (t, p))).collect()
}

/// During a scenario: every 250 ms a wrong code on the probe factor; from its answer (the
/// commit is acknowledged) until each consumer's checkpoint has passed the event it wrote.
/// Returns the lags per consumer.
async fn probe_lag(
    server: Arc<Server>,
    pool: sqlx::AnyPool,
    pg: bool,
    probe: Arc<Factor>,
    seconds: u64,
) -> BTreeMap<String, Vec<Duration>> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut lags: BTreeMap<String, Vec<Duration>> = BTreeMap::new();
    while Instant::now() + Duration::from_millis(250) < deadline {
        let tick = Instant::now();
        let _ = verify_once(&server, &probe, false).await;
        let committed = Instant::now();
        let Some(target) = cursor_of_newest(&pool, pg, &probe.id).await else {
            continue;
        };
        let mut pending: Vec<String> = checkpoints(&pool).await.into_iter().map(|c| c.0).collect();
        while !pending.is_empty() && committed.elapsed() < Duration::from_secs(60) {
            let now = checkpoints(&pool).await;
            pending.retain(|name| {
                let reached = now.iter().any(|(n, c)| n == name && *c >= target);
                if reached {
                    lags.entry(name.clone())
                        .or_default()
                        .push(committed.elapsed());
                }
                !reached
            });
            if !pending.is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        for name in pending {
            lags.entry(name).or_default().push(committed.elapsed());
        }
        let spent = tick.elapsed();
        if spent < Duration::from_millis(250) {
            tokio::time::sleep(Duration::from_millis(250) - spent).await;
        }
    }
    lags
}

fn print_lags(lags: &mut BTreeMap<String, Vec<Duration>>) -> f64 {
    let mut worst = 0.0f64;
    for (name, l) in lags.iter_mut() {
        l.sort_unstable();
        let p99 = percentile(l, 0.99);
        worst = worst.max(p99);
        println!(
            "  {:<34} lag commit -> {name:<20} p50 {:>7.1} ms   p99 {p99:>7.1} ms   max {:>7.1} ms   ({} probes)",
            "",
            percentile(l, 0.5),
            l.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
            l.len()
        );
    }
    worst
}

/// Waits until every consumer's checkpoint has reached the end of the log; returns the time
/// since `started`.
async fn consumers_caught_up(url: &str, started: Instant) -> Option<f64> {
    let head = if url.starts_with("postgres") {
        "SELECT tx_id::text::bigint, global_position FROM events \
         ORDER BY tx_id DESC, global_position DESC LIMIT 1"
    } else {
        "SELECT 0, global_seq FROM events ORDER BY global_seq DESC LIMIT 1"
    };
    let pool = bench_pool(url).await;
    let head: (i64, i64) = sqlx::query_as(head).fetch_one(&pool).await.expect("head");
    while started.elapsed() < Duration::from_secs(600) {
        if checkpoints(&pool).await.iter().all(|(_, c)| *c >= head) {
            return Some(started.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// What one store's run measured, for the summary.
#[derive(Default)]
struct Figures {
    wrong_rps: f64,
    wrong_p99: f64,
    one_client_p50: f64,
    work: Option<(f64, f64, f64)>,
    lag_p99: f64,
    /// Events per second the consumers applied the hot factor's history at.
    catch_up: Option<f64>,
    hot_ratio: f64,
    peak_rss: f64,
    slow: usize,
    slow_turns: usize,
    read_insert_floor: Option<f64>,
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

#[allow(clippy::too_many_lines)]
async fn bench_store(args: &Args, store: &str, pg_floor_seen: Option<f64>) -> Figures {
    let pg = store == "postgres";
    let (url, dir) = if pg {
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
    let pool_size = args.pool_size.to_string();
    let env = [
        ("TESSERA_LOCKOUT_THRESHOLD", "1000000000"),
        ("TESSERA_HARD_LOCK_THRESHOLD", "1000000000"),
        ("TESSERA_DB_POOL_SIZE", pool_size.as_str()),
    ];
    let server = Arc::new(Server::start(args, &url, &env).await);
    let stats_pool = if pg {
        Some(
            sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(&url)
                .await
                .expect("stats pool"),
        )
    } else {
        None
    };
    if let Some(pool) = &stats_pool {
        // The statement breakdown, where the cluster loads the extension (not required: the
        // bench prints n/a without it, and the view errors until it is preloaded).
        let _ = sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .execute(pool)
            .await;
    }
    let reader = bench_pool(&url).await;
    let totp = args.factor != "webauthn";
    let passkeys = args.factor != "totp";
    let mut figures = Figures::default();
    let probe = Arc::new(seed(&server, 1, "probe", false).await.remove(0));
    let idle = idle_rates(stats_pool.as_ref()).await;
    let mut base_p50 = 0.0;
    if totp {
        let factors = Arc::new(seed(&server, args.users, "u", false).await);
        let lag = tokio::spawn(probe_lag(
            Arc::clone(&server),
            reader.clone(),
            pg,
            Arc::clone(&probe),
            args.seconds,
        ));
        let (rps, out, work) = measured(
            stats_pool.as_ref(),
            idle,
            drive(&server, &factors, args.clients, args.seconds, false),
        )
        .await;
        let (_, p99) = report("1. wrong codes", rps, out, &server);
        print_work(work.as_ref());
        figures.lag_p99 = print_lags(&mut lag.await.expect("probe"));
        figures.wrong_rps = rps;
        figures.wrong_p99 = p99;
        figures.work = work.map(|w| w.0);
        let (rps, out, work) = measured(
            stats_pool.as_ref(),
            idle,
            drive(&server, &factors, args.clients, args.seconds, true),
        )
        .await;
        report("2. valid codes", rps, out, &server);
        print_work(work.as_ref());
        let (rps, out) = drive(&server, &factors, 1, args.seconds.min(5), false).await;
        let (p50, _) = report("1. wrong codes, 1 client", rps, out, &server);
        base_p50 = p50;
        figures.one_client_p50 = p50;
        transport_floor(&server, args.seconds.min(2)).await;
    }
    if passkeys {
        let factors = Arc::new(seed(&server, args.passkey_users, "pk", true).await);
        let (rps, out, work) = measured(
            stats_pool.as_ref(),
            idle,
            drive(&server, &factors, args.clients, args.seconds, false),
        )
        .await;
        report("1p. wrong passkey signatures", rps, out, &server);
        print_work(work.as_ref());
        let (rps, out, work) = measured(
            stats_pool.as_ref(),
            idle,
            drive(&server, &factors, args.clients, args.seconds, true),
        )
        .await;
        report("2p. valid passkeys", rps, out, &server);
        print_work(work.as_ref());
        let (rps, out) = drive(&server, &factors, 1, args.seconds.min(5), true).await;
        report("2p. valid passkeys, 1 client", rps, out, &server);
    }
    if totp {
        let hot = seed(&server, 1, "hot", false).await;
        let started = Instant::now();
        add_history(&url, &hot[0].id, args.hot_events).await;
        // A real history accrues over months; measure the factor, not the consumers catching
        // up on 100k events at once.
        let caught_up = consumers_caught_up(&url, started).await;
        figures.catch_up = caught_up.map(|s| args.hot_events as f64 / s.max(1e-9));
        match caught_up {
            Some(s) => println!(
                "  consumers (read models, alert reactor, log seal) applied the {} events in {s:.1} s from the first append: {:.0} events/s live catch-up",
                args.hot_events,
                args.hot_events as f64 / s.max(1e-9)
            ),
            None => println!("  consumers did NOT catch up with the history within 600 s"),
        }
        let hot = Arc::new(hot);
        let (rps3, out3) = drive(&server, &hot, 1, args.seconds.min(5), false).await;
        let (hot_p50, _) = report(
            &format!("3. hot factor, {} events", args.hot_events),
            rps3,
            out3,
            &server,
        );
        figures.hot_ratio = hot_p50 / base_p50.max(1e-9);
        println!(
            "  scenario 3 / scenario 1 per-request latency (p50, 1 client): {:.2}x",
            figures.hot_ratio
        );
    }
    figures.peak_rss = server.rss().1;
    let (slow, examples) = server.slow_statements();
    figures.slow = slow;
    figures.slow_turns = server.slow_turns();
    println!("  statements over 100 ms logged by the server: {slow}");
    if !pg {
        println!(
            "  SQLite write turns that waited over 100 ms for the write lock: {}",
            figures.slow_turns
        );
    }
    for line in examples {
        println!("    {line}");
    }
    // The floor runs with the server stopped, so both get the same connections and cores.
    drop(server);
    drop(stats_pool);
    reader.close().await;
    if pg {
        let (insert, read_insert) = pg_floor(&url, args.clients, args.seconds.min(5)).await;
        println!(
            "  PostgreSQL floor at {} clients: insert {insert:.0} tx/s, read-then-insert {read_insert:.0} tx/s",
            args.clients
        );
        if totp {
            println!(
                "  scenario 1 / read-then-insert floor: {:.2}x",
                figures.wrong_rps / read_insert.max(1e-9)
            );
        }
        figures.read_insert_floor = Some(read_insert);
    } else if let Some(floor) = pg_floor_seen
        && totp
    {
        println!(
            "  scenario 1 / PostgreSQL read-then-insert floor of this run: {:.2}x",
            figures.wrong_rps / floor.max(1e-9)
        );
    }
    if totp {
        summary(pg, &figures, pg_floor_seen);
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
    figures
}

/// The targets, each with its measured figure.
fn summary(pg: bool, f: &Figures, pg_floor_seen: Option<f64>) {
    println!("  targets:");
    let floor = if pg {
        f.read_insert_floor
    } else {
        pg_floor_seen
    };
    match floor {
        Some(floor) => println!(
            "    scenario 1 >= 1.0x the PostgreSQL read-then-insert floor: {:.2}x, {}",
            f.wrong_rps / floor.max(1e-9),
            verdict(f.wrong_rps >= floor)
        ),
        None => println!("    scenario 1 vs the PostgreSQL floor: n/a (run --store both)"),
    }
    println!(
        "    scenario 1 p99 <= 15 ms: {:.1} ms, {}",
        f.wrong_p99,
        verdict(f.wrong_p99 <= 15.0)
    );
    println!(
        "    one client p50 <= 1 ms: {:.2} ms, {}",
        f.one_client_p50,
        verdict(f.one_client_p50 <= 1.0)
    );
    println!(
        "    consumer lag p99 <= 1 s: {:.0} ms, {}",
        f.lag_p99,
        verdict(f.lag_p99 <= 1000.0)
    );
    if let Some(rate) = f.catch_up {
        println!(
            "    live catch-up >= 20,000 events/s: {rate:.0} events/s, {}",
            verdict(rate >= 20_000.0)
        );
    }
    if let Some((xact, sync, _)) = f.work {
        println!(
            "    <= 0.5 transactions and <= 0.25 WAL syncs per verification: {xact:.3} and {sync:.3}, {}",
            verdict(xact <= 0.5 && sync <= 0.25)
        );
    }
    println!(
        "    scenario 3 within 1.2x of scenario 1: {:.2}x, {}",
        f.hot_ratio,
        verdict(f.hot_ratio <= 1.2)
    );
    println!(
        "    RSS <= 100 MB: peak {:.0} MiB, {}",
        f.peak_rss,
        verdict(f.peak_rss * 1.048_576 <= 100.0)
    );
    if !pg {
        println!(
            "    no statement over 100 ms: {} logged, {} write turns waited longer, {}",
            f.slow,
            f.slow_turns,
            verdict(f.slow == 0 && f.slow_turns == 0)
        );
    }
}

/// One client asking a cheap query (`mfaPolicy`, no argon2) back to back until `deadline`.
async fn probe(server: &Server, deadline: Instant) -> Vec<Duration> {
    let mut latencies = Vec::new();
    while Instant::now() < deadline {
        let t = Instant::now();
        let r = server.gql("{ mfaPolicy { mode } }", Value::Null).await;
        assert!(r["data"]["mfaPolicy"]["mode"].is_string(), "{r}");
        latencies.push(t.elapsed());
    }
    latencies.sort_unstable();
    latencies
}

/// What one client's request costs without the verification: `GET /healthz` (HTTP and the
/// middleware), and `{ __typename }` over GraphQL with the admin key (adding the body, the
/// authentication, the document and the response), each for `seconds` on one keep-alive
/// connection; printed as p50/p99 beside the one-client scenario.
async fn transport_floor(server: &Server, seconds: u64) {
    let mut health = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        let t = Instant::now();
        let r = server
            .http
            .get(format!("{}/healthz", server.base))
            .send()
            .await
            .expect("healthz");
        assert!(r.status().is_success());
        r.bytes().await.expect("healthz body");
        health.push(t.elapsed());
    }
    let mut typename = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        let t = Instant::now();
        let r = server.gql("{ __typename }", Value::Null).await;
        assert_eq!(r["data"]["__typename"], "Query", "{r}");
        typename.push(t.elapsed());
    }
    for (name, mut latencies) in [
        ("floor: GET /healthz, 1 client", health),
        ("floor: { __typename }, 1 client", typename),
    ] {
        latencies.sort_unstable();
        println!(
            "  {name:<34} {:>8.0} req/s   p50 {:>6.2} ms   p99 {:>6.2} ms",
            latencies.len() as f64 / seconds.max(1) as f64,
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
        );
    }
}

/// `--login-flood`: a cheap query's p50/p99 idle and while `--clients` clients log in as
/// unknown users with wrong passwords (each a dummy argon2 check), the ratio of the p99s, the
/// logins answered and refused (`HASHING_BUSY`), and the server's RSS before and at its peak.
async fn login_flood(args: &Args, store: &str) {
    let pg = store == "postgres";
    let url = if pg {
        fresh_pg(&args.pg, &args.pg_params).await
    } else {
        let dir =
            std::env::temp_dir().join(format!("tessera-bench-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        format!("sqlite://{}/tessera.db", dir.display())
    };
    let (concurrency, queue) = (
        args.hash_concurrency.map(|n| n.to_string()),
        args.hash_queue.map(|n| n.to_string()),
    );
    let mut env = vec![("TESSERA_LOGIN_LOCKOUT_THRESHOLD", "0")];
    if let Some(n) = &concurrency {
        env.push(("TESSERA_HASH_CONCURRENCY", n));
    }
    if let Some(n) = &queue {
        env.push(("TESSERA_HASH_QUEUE", n));
    }
    let server = Arc::new(Server::start(args, &url, &env).await);
    println!(
        "\n== {store}: login flood ({} clients, {} s; TESSERA_HASH_CONCURRENCY {}, TESSERA_HASH_QUEUE {}) ==",
        args.clients,
        args.seconds,
        concurrency.as_deref().unwrap_or("default"),
        queue.as_deref().unwrap_or("default"),
    );
    let seconds = Duration::from_secs(args.seconds);
    let (rss_idle, _) = server.rss();
    let idle = probe(&server, Instant::now() + seconds).await;
    let deadline = Instant::now() + seconds;
    let flood = (0..args.clients).map(|c| {
        let server = Arc::clone(&server);
        tokio::spawn(async move {
            let mut results: BTreeMap<String, usize> = BTreeMap::new();
            let mut i = 0usize;
            while Instant::now() < deadline {
                let r = server
                    .gql(
                        "mutation($l: String!) { login(input: {login: $l, password: \"a wrong guess\"}) { accessToken } }",
                        json!({ "l": format!("flood-{c}-{i}") }),
                    )
                    .await;
                let reason = r["errors"][0]["extensions"]["reason"]
                    .as_str()
                    .unwrap_or("TOKEN")
                    .to_string();
                *results.entry(reason).or_default() += 1;
                i += 1;
            }
            results
        })
    });
    let (during, parts) = tokio::join!(probe(&server, deadline), futures::future::join_all(flood));
    let mut results: BTreeMap<String, usize> = BTreeMap::new();
    for part in parts {
        for (k, v) in part.expect("flood client") {
            *results.entry(k).or_default() += v;
        }
    }
    let (_, rss_peak) = server.rss();
    let (idle_p50, idle_p99) = (percentile(&idle, 0.5), percentile(&idle, 0.99));
    let (flood_p50, flood_p99) = (percentile(&during, 0.5), percentile(&during, 0.99));
    println!(
        "  cheap query idle                   p50 {idle_p50:>7.2} ms   p99 {idle_p99:>7.2} ms   ({} queries)",
        idle.len()
    );
    println!(
        "  cheap query during the flood       p50 {flood_p50:>7.2} ms   p99 {flood_p99:>7.2} ms   ({} queries)",
        during.len()
    );
    println!(
        "  p99 during / idle                  {:.2}x (target <= 2x: {})",
        flood_p99 / idle_p99.max(f64::EPSILON),
        verdict(flood_p99 <= 2.0 * idle_p99)
    );
    println!(
        "  logins answered                    {:.0}/s   {results:?}",
        results.values().sum::<usize>() as f64 / args.seconds as f64
    );
    println!("  server RSS                         {rss_idle:.0} MiB idle, peak {rss_peak:.0} MiB");
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if args.login_flood {
        for store in match args.store.as_str() {
            "postgres" => &["postgres"][..],
            "sqlite" => &["sqlite"][..],
            _ => &["postgres", "sqlite"][..],
        } {
            login_flood(&args, store).await;
        }
        return;
    }
    let stores: &[&str] = match args.store.as_str() {
        "postgres" => &["postgres"],
        "sqlite" => &["sqlite"],
        _ => &["postgres", "sqlite"],
    };
    println!(
        "tessera-bench: {} users, {} clients, {} cores, factors: {}",
        args.users,
        args.clients,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        args.factor
    );
    let mut floor = None;
    for store in stores {
        let figures = bench_store(&args, store, floor).await;
        floor = floor.or(figures.read_insert_floor);
    }
}
