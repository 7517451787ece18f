//! Configuration from `TESSERA_*` environment variables (SPEC §1, §4 Contract) or flags.

use std::{net::SocketAddr, path::PathBuf};

use chrono::TimeDelta;
use tessera_domain::services::FactorPolicy;

/// Default store: an embedded SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://tessera.db";

/// Everything the server reads at start.
#[derive(Clone, Debug, clap::Args)]
pub struct Config {
    /// `postgres://…` (PostgreSQL) or `sqlite://PATH` (embedded).
    #[arg(long, env = "TESSERA_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// Address to listen on.
    #[arg(long, env = "TESSERA_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Base64 of 32 bytes; on SQLite, generated into a key file beside the database if unset.
    #[arg(long, env = "TESSERA_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<String>,
    /// Accepted as an admin API key (first start, tests).
    #[arg(long, env = "TESSERA_BOOTSTRAP_API_KEY", hide_env_values = true)]
    pub bootstrap_api_key: Option<String>,
    /// TOTP steps of clock skew accepted on either side.
    #[arg(long, env = "TESSERA_TOTP_SKEW_STEPS", default_value_t = 1)]
    pub totp_skew_steps: u8,
    /// Consecutive failures that lock a factor.
    #[arg(long, env = "TESSERA_LOCKOUT_THRESHOLD", default_value_t = 5)]
    pub lockout_threshold: u32,
    /// Length of a lockout in seconds.
    #[arg(long, env = "TESSERA_LOCKOUT_SECONDS", default_value_t = 900)]
    pub lockout_seconds: i64,
    /// Consecutive failures of a user, across factors, recovery codes and lockouts, that lock
    /// the second factor until an administrator unlocks it.
    #[arg(long, env = "TESSERA_HARD_LOCK_THRESHOLD", default_value_t = 100)]
    pub hard_lock_threshold: u32,
    /// Seconds a pending enrolment waits for activation.
    #[arg(long, env = "TESSERA_ENROLLMENT_TTL_SECONDS", default_value_t = 900)]
    pub enrollment_ttl_seconds: i64,
    /// Issuer shown in authenticator apps.
    #[arg(long, env = "TESSERA_TOTP_ISSUER", default_value = "Tessera")]
    pub totp_issuer: String,
    /// Failures of one user within the window that raise a security alert.
    #[arg(long, env = "TESSERA_ALERT_THRESHOLD", default_value_t = 3)]
    pub alert_threshold: usize,
    /// The alert window in seconds.
    #[arg(long, env = "TESSERA_ALERT_WINDOW_SECONDS", default_value_t = 600)]
    pub alert_window_seconds: i64,
    /// Where security alerts are POSTed (Standard Webhooks).
    #[arg(long, env = "TESSERA_ALERT_WEBHOOK_URL")]
    pub alert_webhook_url: Option<String>,
    /// `whsec_` + base64 key signing alert webhooks.
    #[arg(long, env = "TESSERA_ALERT_WEBHOOK_SECRET", hide_env_values = true)]
    pub alert_webhook_secret: Option<String>,
    /// Size of the database pools.
    #[arg(long, env = "TESSERA_DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: u32,
    /// A factor's state is snapshotted every this many events, so verification reads at most
    /// this many events however long the factor's history grows. Reading an event costs a few
    /// microseconds, a snapshot write one small transaction: 25 keeps verification of a long
    /// history within a few percent of a new factor's on both stores (tests/benches).
    #[arg(long, env = "TESSERA_FACTOR_SNAPSHOT_EVERY", default_value_t = 25)]
    pub factor_snapshot_every: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: DEFAULT_DATABASE_URL.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            master_key: None,
            bootstrap_api_key: None,
            totp_skew_steps: 1,
            lockout_threshold: 5,
            lockout_seconds: 900,
            hard_lock_threshold: 100,
            alert_threshold: 3,
            alert_window_seconds: 600,
            alert_webhook_url: None,
            alert_webhook_secret: None,
            enrollment_ttl_seconds: 900,
            totp_issuer: "Tessera".into(),
            db_pool_size: 16,
            factor_snapshot_every: 25,
        }
    }
}

impl Config {
    /// The factor policy these settings describe.
    pub fn factor_policy(&self) -> FactorPolicy {
        FactorPolicy {
            totp_skew_steps: self.totp_skew_steps,
            lockout_threshold: self.lockout_threshold,
            lockout_duration: TimeDelta::seconds(self.lockout_seconds),
            enrollment_ttl: TimeDelta::seconds(self.enrollment_ttl_seconds),
        }
    }

    /// Whether the store is PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        self.database_url.starts_with("postgres://")
            || self.database_url.starts_with("postgresql://")
    }

    /// For SQLite, the database file's path; files that belong to it (key file, outbox) sit
    /// beside it.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        let rest = self
            .database_url
            .strip_prefix("sqlite://")
            .or_else(|| self.database_url.strip_prefix("sqlite:"))?;
        let path = rest.split('?').next().unwrap_or(rest);
        Some(PathBuf::from(path))
    }
}
