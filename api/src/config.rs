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
    /// Seconds a pending enrolment waits for activation.
    #[arg(long, env = "TESSERA_ENROLLMENT_TTL_SECONDS", default_value_t = 900)]
    pub enrollment_ttl_seconds: i64,
    /// Issuer shown in authenticator apps.
    #[arg(long, env = "TESSERA_TOTP_ISSUER", default_value = "Tessera")]
    pub totp_issuer: String,
    /// Size of the database pools.
    #[arg(long, env = "TESSERA_DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: u32,
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
            enrollment_ttl_seconds: 900,
            totp_issuer: "Tessera".into(),
            db_pool_size: 16,
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
            ..FactorPolicy::default()
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
