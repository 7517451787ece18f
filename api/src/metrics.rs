//! `/metrics`: one Prometheus registry per server (no global recorder, so servers sharing a
//! process keep their own counts), in the OpenMetrics text format.
//!
//! Two kinds of series: what this process counts as it works ([`Metrics`]: proofs, command
//! latency, HTTP requests, refusals), and what is read from the store at scrape time, so it is
//! the same on every node ([`Metrics::render`]: consumer lag, outbox depth, alerts, the pool).
//!
//! To add a counter: a field here, registered in [`Metrics::default`], a method that
//! increments it, the call in the use case (`state.metrics.…`), and a line in the README's
//! table of series.

use std::sync::atomic::AtomicU64;

use chrono::Utc;
use prometheus_client::{
    encoding::text::encode,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use sqlx::Row;
use tessera_domain::factor::{FactorOutcome, FactorType};
use tessera_store::{Cursor, Db, Dialect, parse_ts};

/// Label pairs of a series.
type Labels = Vec<(&'static str, String)>;

/// Counters and histograms this process keeps.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    proofs: Family<Labels, Counter>,
    commands: Family<Labels, Histogram, fn() -> Histogram>,
    http: Family<Labels, Counter>,
    password_throttles: Counter,
    codes_refused: Family<Labels, Counter>,
    hash_in_flight: Gauge,
    hash_in_flight_max: Gauge,
    hash_waiting: Gauge,
    hash_refused: Counter,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to ~8 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 15))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let proofs = Family::<Labels, Counter>::default();
        registry.register(
            "tessera_proofs",
            "Codes checked (verifyFactor and challenge answers) by factor type and factorResult",
            proofs.clone(),
        );
        let commands =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register(
            "tessera_command_duration_seconds",
            "Time to run a GraphQL mutation (one command of the write side), by mutation",
            commands.clone(),
        );
        let http = Family::<Labels, Counter>::default();
        registry.register(
            "tessera_http_requests",
            "HTTP requests by route and status",
            http.clone(),
        );
        let password_throttles = Counter::default();
        registry.register(
            "tessera_password_throttles",
            "Password checks refused by the password throttle",
            password_throttles.clone(),
        );
        let codes_refused = Family::<Labels, Counter>::default();
        registry.register(
            "tessera_codes_refused",
            "SMS and e-mail codes not sent because of the resend limits, by channel and reason",
            codes_refused.clone(),
        );
        let hash_in_flight = Gauge::default();
        registry.register(
            "tessera_hash_jobs_in_flight",
            "argon2 jobs (password and recovery-code hashes and checks) running now",
            hash_in_flight.clone(),
        );
        let hash_in_flight_max = Gauge::default();
        registry.register(
            "tessera_hash_jobs_in_flight_max",
            "The most argon2 jobs that ran at once since the process started",
            hash_in_flight_max.clone(),
        );
        let hash_waiting = Gauge::default();
        registry.register(
            "tessera_hash_jobs_waiting",
            "argon2 jobs waiting for a free slot of the hashing pool",
            hash_waiting.clone(),
        );
        let hash_refused = Counter::default();
        registry.register(
            "tessera_hash_jobs_refused",
            "Requests refused (RATE_LIMITED, HASHING_BUSY) because the hashing queue was full",
            hash_refused.clone(),
        );
        Self {
            registry,
            proofs,
            commands,
            http,
            password_throttles,
            codes_refused,
            hash_in_flight,
            hash_in_flight_max,
            hash_waiting,
            hash_refused,
        }
    }
}

/// The contract name of an outcome (`factorResult`).
fn outcome_name(outcome: FactorOutcome) -> &'static str {
    match outcome {
        FactorOutcome::Success => "SUCCESS",
        FactorOutcome::Rejected => "REJECTED",
        FactorOutcome::PasscodeReplayed => "PASSCODE_REPLAYED",
        FactorOutcome::LockedOut => "LOCKED_OUT",
        FactorOutcome::Expired => "EXPIRED",
        FactorOutcome::ChallengeRequired => "CHALLENGE_REQUIRED",
    }
}

impl Metrics {
    /// One proof: the factor's type (`RECOVERY_CODE` for a recovery code) and its outcome.
    pub fn proof(&self, factor_type: Option<FactorType>, outcome: FactorOutcome) {
        let kind = factor_type.map_or("RECOVERY_CODE", FactorType::as_str);
        self.proofs
            .get_or_create(&vec![
                ("factor_type", kind.to_string()),
                ("result", outcome_name(outcome).to_string()),
            ])
            .inc();
    }

    /// One mutation and how long it took.
    pub fn command(&self, name: &str, seconds: f64) {
        self.commands
            .get_or_create(&vec![("command", name.to_string())])
            .observe(seconds);
    }

    /// One HTTP request: its route (the matched pattern, `unmatched` for none) and status.
    pub fn http_request(&self, route: &str, status: u16) {
        self.http
            .get_or_create(&vec![
                ("route", route.to_string()),
                ("status", status.to_string()),
            ])
            .inc();
    }

    /// A password check refused by the throttle.
    pub fn password_throttled(&self) {
        self.password_throttles.inc();
    }

    /// argon2 jobs running now (and the most ever).
    pub fn hash_jobs_in_flight(&self, now: i64) {
        self.hash_in_flight.set(now);
        self.hash_in_flight_max
            .inner()
            .fetch_max(now, std::sync::atomic::Ordering::SeqCst);
    }

    /// One more (`1`) or one fewer (`-1`) argon2 job waiting for a slot.
    pub fn hash_jobs_waiting(&self, change: i64) {
        self.hash_waiting.inc_by(change);
    }

    /// A request refused because the hashing queue was full.
    pub fn hash_job_refused(&self) {
        self.hash_refused.inc();
    }

    /// A code not sent on `channel` (`sms`, `email`) for `reason` (`RESEND_TOO_SOON`, …).
    pub fn code_refused(&self, channel: &str, reason: &str) {
        self.codes_refused
            .get_or_create(&vec![
                ("channel", channel.to_string()),
                ("reason", reason.to_string()),
            ])
            .inc();
    }

    /// Every series: this process's, the code deliveries' (`delivery`, in the 0.0.4 text the
    /// delivery counters render), and those read from the store now.
    ///
    /// # Errors
    /// Reading the store.
    pub async fn render(&self, db: &Db, delivery: &str) -> Result<String, sqlx::Error> {
        let mut out = String::new();
        let store = store_registry(db).await?;
        let _ = encode(&mut out, &self.registry);
        strip_eof(&mut out);
        let _ = encode(&mut out, &store);
        strip_eof(&mut out);
        out.push_str(delivery);
        out.push_str("# EOF\n");
        Ok(out)
    }
}

fn strip_eof(text: &mut String) {
    if text.ends_with("# EOF\n") {
        text.truncate(text.len() - "# EOF\n".len());
    }
}

/// Series read from the store at scrape time.
async fn store_registry(db: &Db) -> Result<Registry, sqlx::Error> {
    let mut registry = Registry::default();

    let pool = Family::<Labels, Gauge>::default();
    registry.register(
        "tessera_db_pool_connections",
        "Connections of this process's pool, in use or idle",
        pool.clone(),
    );
    let size = i64::from(db.pool.size());
    let idle = i64::try_from(db.pool.num_idle()).unwrap_or(i64::MAX);
    pool.get_or_create(&vec![("state", "in_use".into())])
        .set(size - idle);
    pool.get_or_create(&vec![("state", "idle".into())])
        .set(idle);

    let lag_events = Family::<Labels, Gauge>::default();
    registry.register(
        "tessera_consumer_lag_events",
        "Committed events a log consumer (read models, alert reactor, sealer, …) has not applied yet",
        lag_events.clone(),
    );
    let lag_seconds = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    registry.register(
        "tessera_consumer_lag_seconds",
        "Age of the oldest event a log consumer has not applied yet (0 when caught up)",
        lag_seconds.clone(),
    );
    let checkpoints = sqlx::query("SELECT name, tx_id, position FROM projection_checkpoints")
        .fetch_all(&db.pool)
        .await?;
    let now = Utc::now();
    for row in checkpoints {
        let name: String = row.try_get("name")?;
        let at = Cursor {
            tx: row.try_get("tx_id")?,
            pos: row.try_get("position")?,
        };
        let (behind, oldest) = behind(db, at).await?;
        let labels = vec![("consumer", name)];
        lag_events.get_or_create(&labels).set(behind);
        let age = oldest
            .as_deref()
            .and_then(parse_ts)
            .map_or(0.0, |t| (now - t).num_milliseconds().max(0) as f64 / 1000.0);
        lag_seconds.get_or_create(&labels).set(age);
    }

    let outbox = Family::<Labels, Gauge>::default();
    registry.register(
        "tessera_outbox_depth",
        "Code messages queued and not yet delivered or given up, by channel",
        outbox.clone(),
    );
    for channel in ["sms", "email"] {
        outbox
            .get_or_create(&vec![("channel", channel.into())])
            .set(0);
    }
    let rows = sqlx::query(
        "SELECT LOWER(channel) AS channel, COUNT(*) AS n FROM message_outbox \
         WHERE done_at IS NULL GROUP BY LOWER(channel)",
    )
    .fetch_all(&db.pool)
    .await?;
    for row in rows {
        outbox
            .get_or_create(&vec![("channel", row.try_get("channel")?)])
            .set(row.try_get("n")?);
    }

    let raised = Counter::<u64>::default();
    registry.register(
        "tessera_alerts_raised",
        "Security alerts raised (all nodes)",
        raised.clone(),
    );
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM security_alerts_v1")
        .fetch_one(&db.pool)
        .await?;
    raised.inc_by(u64::try_from(n).unwrap_or(0));
    let delivered = Family::<Labels, Counter>::default();
    registry.register(
        "tessera_alert_deliveries",
        "Alert deliveries by channel and result: delivered, failed (attempts that did not get through, retried), pending (all nodes)",
        delivered.clone(),
    );
    let rows = sqlx::query(
        // Sums cast: PostgreSQL sums bigints as numeric.
        "SELECT LOWER(channel) AS channel, \
         CAST(SUM(CASE WHEN delivered_at IS NULL THEN 0 ELSE 1 END) AS bigint) AS delivered, \
         CAST(SUM(CASE WHEN delivered_at IS NULL THEN 1 ELSE 0 END) AS bigint) AS pending, \
         CAST(SUM(attempts) AS bigint) AS attempts FROM alert_deliveries GROUP BY LOWER(channel)",
    )
    .fetch_all(&db.pool)
    .await?;
    for row in rows {
        let channel: String = row.try_get("channel")?;
        let count = |name: &str| -> Result<u64, sqlx::Error> {
            let v: i64 = row.try_get(name)?;
            Ok(u64::try_from(v).unwrap_or(0))
        };
        let (ok, pending, attempts) = (count("delivered")?, count("pending")?, count("attempts")?);
        for (result, value) in [
            ("delivered", ok),
            ("failed", attempts.saturating_sub(ok)),
            ("pending", pending),
        ] {
            delivered
                .get_or_create(&vec![
                    ("channel", channel.clone()),
                    ("result", result.into()),
                ])
                .inc_by(value);
        }
    }
    Ok(registry)
}

/// How many committed events come after `at`, and when the oldest of them was recorded.
async fn behind(db: &Db, at: Cursor) -> Result<(i64, Option<String>), sqlx::Error> {
    let row = match db.dialect {
        // `to_json` writes the time in ISO 8601, as SQLite stores it.
        Dialect::Postgres => sqlx::query(
            "SELECT COUNT(*) AS n, to_json(MIN(recorded_at)) #>> '{}' AS oldest FROM events \
             WHERE (tx_id, global_position) > ($1::bigint::text::xid8, $2) \
             AND tx_id < pg_snapshot_xmin(pg_current_snapshot())",
        )
        .bind(at.tx)
        .bind(at.pos),
        Dialect::Sqlite => sqlx::query(
            "SELECT COUNT(*) AS n, MIN(recorded_at) AS oldest FROM events WHERE global_seq > $1",
        )
        .bind(at.pos),
    }
    .fetch_one(&db.pool)
    .await?;
    Ok((row.try_get("n")?, row.try_get("oldest")?))
}
