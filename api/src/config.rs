//! Configuration from `TESSERA_*` environment variables or flags.

use std::{fmt, net::SocketAddr, path::PathBuf, str::FromStr};

use chrono::TimeDelta;
use tessera_domain::{factor::webauthn::RelyingParty, services::FactorPolicy};

/// Default store: an embedded SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://tessera.db";

/// Everything the server reads at start.
#[derive(Clone, Debug, clap::Args)]
pub struct Config {
    /// `postgres://…` (PostgreSQL) or `sqlite://PATH` (embedded).
    #[arg(long, env = "TESSERA_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// Address to listen on: `HOST:PORT`, the host an IP address (`[::1]` for IPv6) or a
    /// name (`localhost:8080`).
    #[arg(long, env = "TESSERA_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: ListenAddr,
    /// Base64 of 32 bytes; on SQLite, generated into a key file beside the database if unset.
    #[arg(long, env = "TESSERA_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<String>,
    /// Older master keys (base64, comma-separated) after a rotation: they open the secrets
    /// they sealed until those are re-sealed under `TESSERA_MASTER_KEY`; they seal nothing.
    #[arg(
        long,
        env = "TESSERA_PREVIOUS_MASTER_KEYS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub previous_master_keys: Vec<String>,
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
    /// Consecutive wrong passwords for one login (known or not) that throttle it; 0 turns the
    /// throttle off.
    #[arg(long, env = "TESSERA_LOGIN_LOCKOUT_THRESHOLD", default_value_t = 10)]
    pub login_lockout_threshold: u32,
    /// Length of the first throttle of a login in seconds, doubled for each further run of
    /// wrong passwords up to 24 hours (1 to 86400).
    #[arg(long, env = "TESSERA_LOGIN_LOCKOUT_SECONDS", default_value_t = 300,
          value_parser = clap::value_parser!(i64).range(1..=86400))]
    pub login_lockout_seconds: i64,
    /// Password checks (`login`) one client address may ask for in a minute, all nodes
    /// together, known logins or not; over it the answer is `RATE_LIMITED`
    /// (`CLIENT_IP_THROTTLED`) and no password is checked. 0 (the default) turns it off.
    #[arg(long, env = "TESSERA_LOGIN_MAX_PER_IP_PER_MINUTE", default_value_t = 0)]
    pub login_max_per_ip_per_minute: u32,
    /// argon2 jobs (password and recovery-code hashing and checks) run at once; 0 (the
    /// default) means one per available core.
    #[arg(long, env = "TESSERA_HASH_CONCURRENCY", default_value_t = 0)]
    pub hash_concurrency: usize,
    /// argon2 jobs that may wait for a free slot; a request whose job finds the queue full is
    /// answered `RATE_LIMITED` (`HASHING_BUSY`) and writes nothing.
    #[arg(long, env = "TESSERA_HASH_QUEUE", default_value_t = 64)]
    pub hash_queue: usize,
    /// `startPasskeyLogin` calls one client address may make in a minute, all nodes together
    /// (each writes a challenge; nobody needs a token to ask); 0 turns the limit off.
    #[arg(
        long,
        env = "TESSERA_PASSKEY_LOGIN_STARTS_PER_MINUTE",
        default_value_t = 60
    )]
    pub passkey_login_starts_per_minute: u32,
    /// Addresses or CIDR networks of the proxies in front of Tessera, comma-separated: only a
    /// request from one of them has its `X-Forwarded-For` believed. Default: none (the socket
    /// peer is the client).
    #[arg(long, env = "TESSERA_TRUSTED_PROXIES", value_delimiter = ',',
          value_parser = crate::client_ip::parse_proxy)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Days a device stays trusted after `completeLogin(rememberDevice: true)` (0 to 365);
    /// 0 turns trusted devices off.
    #[arg(long, env = "TESSERA_TRUSTED_DEVICE_DAYS", default_value_t = 30,
          value_parser = clap::value_parser!(u32).range(0..=365))]
    pub trusted_device_days: u32,
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
    #[arg(long, env = "TESSERA_ALERT_WEBHOOK_URL", value_parser = parse_http_url)]
    pub alert_webhook_url: Option<String>,
    /// `whsec_` + base64 key signing alert webhooks.
    #[arg(long, env = "TESSERA_ALERT_WEBHOOK_SECRET", hide_env_values = true)]
    pub alert_webhook_secret: Option<String>,
    /// On stop, how long in-flight HTTP requests may take to finish before the server stops
    /// anyway; websockets get their close frame (1001) within the same period.
    #[arg(long, env = "TESSERA_SHUTDOWN_GRACE_SECONDS", default_value_t = 10)]
    pub shutdown_grace_seconds: u64,
    /// Seconds a client has to send a complete request head (1 to 3600), counted from the
    /// connection's opening for its first request and from the first byte of each later one; a
    /// slower head (slow-loris) has its connection closed.
    #[arg(long, env = "TESSERA_HTTP_HEADER_TIMEOUT_SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub http_header_timeout_seconds: u64,
    /// Seconds a kept-alive HTTP connection may sit with no request and no traffic before it is
    /// closed (1 to 3600); a client that stops reading a response is closed after as long.
    /// Websockets are not HTTP connections any more once upgraded: they keep their own rules.
    #[arg(long, env = "TESSERA_HTTP_IDLE_TIMEOUT_SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub http_idle_timeout_seconds: u64,
    /// Most connections open at once (HTTP and websockets, 1 to 1000000); one more is answered
    /// `503` with `Connection: close` at once. Lowered to what the open-file limit allows.
    #[arg(long, env = "TESSERA_MAX_CONNECTIONS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,
    /// Size of the database pools.
    #[arg(long, env = "TESSERA_DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: u32,
    /// A factor's (and a user's) state is snapshotted every this many events, so verification
    /// reads at most this many events however long the history grows. Reading an event costs a few
    /// microseconds, a snapshot write one small transaction: 25 keeps verification of a long
    /// history within a few percent of a new factor's on both stores (tests/benches).
    #[arg(long, env = "TESSERA_FACTOR_SNAPSHOT_EVERY", default_value_t = 25)]
    pub factor_snapshot_every: usize,
    /// Users, and factors, kept in memory (each kind; 0 turns it off): a load of a kept one
    /// reads only the events written after it was kept, instead of its snapshot and the events
    /// after that. Every load still asks the database, so nodes never act on a stale state.
    #[arg(long, env = "TESSERA_AGGREGATE_CACHE", default_value_t = 16_384)]
    pub aggregate_cache: usize,
    /// Least milliseconds between two batches of a consumer (read models, alert reactor, log
    /// seal, log head) woken by commits: under load one batch, one transaction, gathers every
    /// commit of that time instead of one each. An idle consumer answers a wake-up at once, and
    /// a request waiting for the read models skips the pause. 0 turns pacing off.
    #[arg(long, env = "TESSERA_CONSUMER_PACE_MS", default_value_t = 20)]
    pub consumer_pace_ms: u64,
    /// Most milliseconds a mutation waits for the read models (and, after an alert's change,
    /// the alert reactor) to show what it wrote before it answers anyway. On PostgreSQL the
    /// consumers read only what every older transaction of the cluster has finished with, so a
    /// long transaction elsewhere on the cluster can hold them back for as long as it runs.
    #[arg(long, env = "TESSERA_READ_YOUR_WRITES_MS", default_value_t = 5_000)]
    pub read_your_writes_ms: u64,
    /// SMTP relay for e-mail codes: `smtp://host:port` (plain) or `smtps://user:pass@host:465`.
    /// Unset: e-mail goes to the development outbox file.
    #[arg(long, env = "TESSERA_SMTP_URL", hide_env_values = true, value_parser = parse_smtp_url)]
    pub smtp_url: Option<String>,
    /// Sender of e-mail.
    #[arg(
        long,
        env = "TESSERA_MAIL_FROM",
        default_value = "Tessera <tessera@localhost>"
    )]
    pub mail_from: String,
    /// SMS gateway: Tessera POSTs `{"to": "+E164", "body": "text"}` as JSON. Unset: text
    /// messages go to the development outbox file.
    #[arg(long, env = "TESSERA_SMS_WEBHOOK_URL", hide_env_values = true,
          value_parser = parse_http_url)]
    pub sms_webhook_url: Option<String>,
    /// `whsec_` + base64 key signing the SMS gateway's requests (Standard Webhooks headers).
    /// Unset: requests are unsigned.
    #[arg(long, env = "TESSERA_SMS_WEBHOOK_SECRET", hide_env_values = true)]
    pub sms_webhook_secret: Option<String>,
    /// Text of SMS code messages; placeholders `{code}` (required), `{minutes}`, `{issuer}`.
    #[arg(long, env = "TESSERA_SMS_TEMPLATE")]
    pub sms_template: Option<String>,
    /// Folder with `subject.txt` and `body.txt` for e-mail code messages (placeholders as for
    /// SMS; `{code}` is refused in the subject). A missing file keeps the built-in text.
    #[arg(long, env = "TESSERA_EMAIL_TEMPLATE_DIR")]
    pub email_template_dir: Option<PathBuf>,
    /// The development outbox file (default: `<database>.outbox` beside a SQLite database,
    /// `tessera.outbox` otherwise).
    #[arg(long, env = "TESSERA_OUTBOX_PATH")]
    pub outbox_path: Option<PathBuf>,
    /// Attempts to deliver one message before giving up.
    #[arg(long, env = "TESSERA_DELIVERY_ATTEMPTS", default_value_t = 4)]
    pub delivery_attempts: u32,
    /// Wait before the second delivery attempt, in milliseconds; doubled each time.
    #[arg(long, env = "TESSERA_DELIVERY_BACKOFF_MS", default_value_t = 500)]
    pub delivery_backoff_ms: u64,
    /// Lifetime of an SMS or e-mail code in seconds (30 to 3600).
    #[arg(long, env = "TESSERA_OOB_CODE_TTL_SECONDS", default_value_t = 300,
          value_parser = clap::value_parser!(i64).range(30..=3600))]
    pub oob_code_ttl_seconds: i64,
    /// Least seconds between two codes sent to one factor.
    #[arg(long, env = "TESSERA_OOB_RESEND_SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(i64).range(0..=3600))]
    pub oob_resend_seconds: i64,
    /// Most codes sent to one factor in any hour (at most 100).
    #[arg(long, env = "TESSERA_OOB_MAX_PER_HOUR", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub oob_max_per_hour: u32,
    /// Most factors a user may have (pending, active or locked; at most 3 of them pending).
    #[arg(long, env = "TESSERA_MAX_FACTORS_PER_USER", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_factors_per_user: u32,
    /// Country calling codes SMS may be sent to (`1,44,49`, comma-separated). Default: all.
    #[arg(long, env = "TESSERA_SMS_ALLOWED_COUNTRIES", value_delimiter = ',')]
    pub sms_allowed_countries: Vec<u16>,
    /// Most SMS sent in any hour, by every node together (toll-fraud budget).
    #[arg(long, env = "TESSERA_SMS_MAX_PER_HOUR", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub sms_max_per_hour: u32,
    /// Most SMS sent for one user in any day.
    #[arg(long, env = "TESSERA_SMS_MAX_PER_USER_PER_DAY", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub sms_max_per_user_per_day: u32,
    /// Lifetime of access tokens in seconds (60 to 86400).
    #[arg(long, env = "TESSERA_ACCESS_TOKEN_TTL_SECONDS", default_value_t = 900,
          value_parser = clap::value_parser!(i64).range(60..=86400))]
    pub access_token_ttl_seconds: i64,
    /// How long the second step of a login may take, in seconds (30 to 3600).
    #[arg(long, env = "TESSERA_LOGIN_CHALLENGE_TTL_SECONDS", default_value_t = 300,
          value_parser = clap::value_parser!(i64).range(30..=3600))]
    pub login_challenge_ttl_seconds: i64,
    /// How recent a proof must be for a user token to add or remove a factor, regenerate
    /// recovery codes or change the password, in seconds (30 to 86400): a step-up completed
    /// or a login with a second factor within this.
    #[arg(long, env = "TESSERA_REAUTH_SECONDS", default_value_t = 600,
          value_parser = clap::value_parser!(i64).range(30..=86400))]
    pub reauth_seconds: i64,
    /// Origins (`https://app.example.com`, comma-separated, exact) whose pages may call
    /// `/graphql` from a browser and open `/graphql/ws`. Default none.
    #[arg(long, env = "TESSERA_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Origins (`https://app.example.com`, comma-separated, exact) the hosted pages under
    /// `/ui/` may send their result to (`return_to`, by a form POST). Default none: the pages
    /// stay on Tessera.
    #[arg(long, env = "TESSERA_UI_RETURN_ORIGINS", value_delimiter = ',')]
    pub ui_return_origins: Vec<String>,
    /// Serve GraphiQL on `GET /graphql` (`false`: 404).
    #[arg(long, env = "TESSERA_GRAPHIQL", default_value_t = true, action = clap::ArgAction::Set)]
    pub graphiql: bool,
    /// The `iss` of access tokens (default `http://<TESSERA_LISTEN>`).
    #[arg(long, env = "TESSERA_ISSUER")]
    pub issuer: Option<String>,
    /// The WebAuthn relying party id: the domain passkeys are bound to (never change it once
    /// credentials exist).
    #[arg(long, env = "TESSERA_WEBAUTHN_RP_ID", default_value = "localhost")]
    pub webauthn_rp_id: String,
    /// The relying party's name, shown by authenticators.
    #[arg(long, env = "TESSERA_WEBAUTHN_RP_NAME", default_value = "Tessera")]
    pub webauthn_rp_name: String,
    /// Origins accepted in WebAuthn client data (comma-separated; default
    /// `http://localhost:<port of TESSERA_LISTEN>`).
    #[arg(long, env = "TESSERA_WEBAUTHN_ORIGINS", value_delimiter = ',')]
    pub webauthn_origins: Vec<String>,
    /// The browser's timeout and the lifetime of every WebAuthn ceremony, in seconds.
    #[arg(long, env = "TESSERA_WEBAUTHN_TIMEOUT_SECONDS", default_value_t = 300,
          value_parser = clap::value_parser!(i64).range(30..=3600))]
    pub webauthn_timeout_seconds: i64,
}

/// The settings of the commands that only read or migrate the log (`migrate`,
/// `export-events`, `verify-log`): where the store is.
#[derive(Clone, Debug, clap::Args)]
pub struct StoreArgs {
    /// `postgres://…` (PostgreSQL) or `sqlite://PATH` (embedded).
    #[arg(long, env = "TESSERA_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
}

impl StoreArgs {
    /// A [`Config`] with these settings and defaults for the rest.
    pub fn config(self) -> Config {
        Config {
            database_url: self.database_url,
            ..Config::default()
        }
    }
}

/// The settings of the commands that open the whole state (`rebuild-projections`,
/// `api-key create`): the store and its master key.
#[derive(Clone, Debug, clap::Args)]
pub struct KeyedStoreArgs {
    /// Where the store is.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Base64 of 32 bytes; on SQLite, read from (or generated into) the key file beside the
    /// database if unset.
    #[arg(long, env = "TESSERA_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<String>,
    /// Older master keys (base64, comma-separated) that open what they sealed.
    #[arg(
        long,
        env = "TESSERA_PREVIOUS_MASTER_KEYS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub previous_master_keys: Vec<String>,
}

impl KeyedStoreArgs {
    /// A [`Config`] with these settings and defaults for the rest.
    pub fn config(self) -> Config {
        Config {
            master_key: self.master_key,
            previous_master_keys: self.previous_master_keys,
            ..self.store.config()
        }
    }
}

/// Where the server listens: a host (IP address or name, resolved when the server binds)
/// and a port. `localhost:8080`, `127.0.0.1:0`, `[::1]:8080`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenAddr {
    host: String,
    port: u16,
}

impl ListenAddr {
    /// The host as given (an IPv6 address without its brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port (0: any free port).
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl From<SocketAddr> for ListenAddr {
    fn from(addr: SocketAddr) -> Self {
        Self {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }
}

impl FromStr for ListenAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let Some((host, port)) = s.rsplit_once(':') else {
            return Err(format!("{s:?} is not HOST:PORT (e.g. 127.0.0.1:8080)"));
        };
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("{s:?}: the port must be a number from 0 to 65535"))?;
        let host = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            v6.parse::<std::net::Ipv6Addr>()
                .map_err(|_| format!("{s:?}: {v6:?} is not an IPv6 address"))?;
            v6
        } else if host.contains(':') {
            return Err(format!(
                "{s:?}: an IPv6 address goes in brackets, e.g. [::1]:8080"
            ));
        } else if !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            host
        } else {
            return Err(format!(
                "{s:?}: the host must be an IP address or a host name"
            ));
        };
        Ok(Self {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: DEFAULT_DATABASE_URL.into(),
            listen: ListenAddr::from(SocketAddr::from(([127, 0, 0, 1], 8080))),
            master_key: None,
            previous_master_keys: Vec::new(),
            bootstrap_api_key: None,
            totp_skew_steps: 1,
            lockout_threshold: 5,
            lockout_seconds: 900,
            hard_lock_threshold: 100,
            login_lockout_threshold: 10,
            login_lockout_seconds: 300,
            trusted_device_days: 30,
            login_max_per_ip_per_minute: 0,
            passkey_login_starts_per_minute: 60,
            hash_concurrency: 0,
            hash_queue: 64,
            trusted_proxies: Vec::new(),
            alert_threshold: 3,
            alert_window_seconds: 600,
            alert_webhook_url: None,
            alert_webhook_secret: None,
            enrollment_ttl_seconds: 900,
            totp_issuer: "Tessera".into(),
            shutdown_grace_seconds: 10,
            http_header_timeout_seconds: 10,
            http_idle_timeout_seconds: 60,
            max_connections: 10_000,
            db_pool_size: 16,
            factor_snapshot_every: 25,
            aggregate_cache: 16_384,
            consumer_pace_ms: 20,
            read_your_writes_ms: 5_000,
            smtp_url: None,
            mail_from: "Tessera <tessera@localhost>".into(),
            sms_webhook_url: None,
            sms_webhook_secret: None,
            sms_template: None,
            email_template_dir: None,
            outbox_path: None,
            delivery_attempts: 4,
            delivery_backoff_ms: 500,
            oob_code_ttl_seconds: 300,
            oob_resend_seconds: 30,
            oob_max_per_hour: 10,
            max_factors_per_user: 10,
            sms_allowed_countries: Vec::new(),
            sms_max_per_hour: 1000,
            sms_max_per_user_per_day: 20,
            access_token_ttl_seconds: 900,
            login_challenge_ttl_seconds: 300,
            reauth_seconds: 600,
            cors_origins: Vec::new(),
            ui_return_origins: Vec::new(),
            graphiql: true,
            issuer: None,
            webauthn_rp_id: "localhost".into(),
            webauthn_rp_name: "Tessera".into(),
            webauthn_origins: Vec::new(),
            webauthn_timeout_seconds: 300,
        }
    }
}

impl Config {
    /// The password throttle these settings describe.
    pub fn login_throttle(&self) -> tessera_domain::user::throttle::ThrottlePolicy {
        tessera_domain::user::throttle::ThrottlePolicy::new(
            self.login_lockout_threshold,
            self.login_lockout_seconds,
        )
    }

    /// The factor policy these settings describe.
    pub fn factor_policy(&self) -> FactorPolicy {
        FactorPolicy {
            totp_skew_steps: self.totp_skew_steps,
            lockout_threshold: self.lockout_threshold,
            lockout_duration: TimeDelta::seconds(self.lockout_seconds),
            enrollment_ttl: TimeDelta::seconds(self.enrollment_ttl_seconds),
            code_ttl: TimeDelta::seconds(self.oob_code_ttl_seconds),
            code_max_attempts: FactorPolicy::default().code_max_attempts,
            resend_interval: TimeDelta::seconds(self.oob_resend_seconds),
            max_codes_per_hour: self.oob_max_per_hour,
            webauthn_timeout: TimeDelta::seconds(self.webauthn_timeout_seconds),
        }
    }

    /// The WebAuthn relying party these settings describe.
    ///
    /// # Errors
    /// An origin that is not a URL, or that the RP id does not cover.
    pub fn relying_party(&self) -> Result<RelyingParty, String> {
        let origins = if self.webauthn_origins.is_empty() {
            vec![format!("http://localhost:{}", self.listen.port())]
        } else {
            self.webauthn_origins.clone()
        };
        let origins = origins
            .iter()
            .map(|o| {
                webauthn_rs::prelude::Url::parse(o.trim())
                    .map_err(|e| format!("TESSERA_WEBAUTHN_ORIGINS: {o:?}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let timeout = u64::try_from(self.webauthn_timeout_seconds).unwrap_or(300);
        RelyingParty::new(
            &self.webauthn_rp_id,
            &self.webauthn_rp_name,
            &origins,
            std::time::Duration::from_secs(timeout),
        )
    }

    /// The `iss` of access tokens.
    pub fn token_issuer(&self) -> String {
        self.issuer
            .clone()
            .filter(|i| !i.is_empty())
            .unwrap_or_else(|| format!("http://{}", self.listen))
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

/// Refuses a `TESSERA_DATABASE_URL` of a kind Tessera cannot open, naming the two it can.
///
/// # Errors
/// What is wrong, for an operator.
pub fn check_database_url(url: &str) -> Result<(), String> {
    const SUPPORTED: &str =
        "use postgres://USER@HOST:PORT/DATABASE (PostgreSQL) or sqlite://PATH (embedded SQLite)";
    let scheme = url.split_once(':').map(|(s, _)| s);
    match scheme {
        Some("postgres" | "postgresql") => reqwest::Url::parse(url)
            .ok()
            .filter(|u| u.host_str().is_some_and(|h| !h.is_empty()))
            .map(|_| ())
            .ok_or_else(|| {
                format!("TESSERA_DATABASE_URL is not a valid PostgreSQL URL; {SUPPORTED}")
            }),
        Some("sqlite") => {
            let path = url
                .strip_prefix("sqlite://")
                .or_else(|| url.strip_prefix("sqlite:"))
                .unwrap_or_default();
            if path.split('?').next().unwrap_or_default().is_empty() {
                Err(format!(
                    "TESSERA_DATABASE_URL names no SQLite file; {SUPPORTED}"
                ))
            } else {
                Ok(())
            }
        }
        Some(other) if !other.is_empty() && !other.contains('/') => Err(format!(
            "TESSERA_DATABASE_URL: unsupported scheme {other:?}; {SUPPORTED}"
        )),
        _ => Err(format!(
            "TESSERA_DATABASE_URL {:?} is not a database URL; {SUPPORTED}",
            redacted_url(url)
        )),
    }
}

/// A database URL as logs and errors may show it: PostgreSQL as `HOST:PORT/DATABASE` with the
/// user and no password; anything else as given.
pub fn redacted_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "postgres" | "postgresql") => format!(
            "PostgreSQL at {}:{}{} as {}",
            u.host_str().unwrap_or("localhost"),
            u.port().unwrap_or(5432),
            u.path(),
            if u.username().is_empty() {
                "the default user"
            } else {
                u.username()
            },
        ),
        _ if url.contains('@') => "the configured URL".into(),
        _ => url.to_string(),
    }
}

/// A command-line error, with every value error of a setting read from its variable naming
/// the variable beside the flag, and what the setting accepts: clap alone says
/// `invalid value 'abc' for '--lockout-threshold <N>'`, which an operator who set
/// `TESSERA_LOCKOUT_THRESHOLD=abc` in a unit file does not recognise. `command` is the whole
/// command tree (`Cli::command()`); other errors (and `--help`) are clap's own text.
pub fn explain_parse_error(error: &clap::Error, command: &clap::Command) -> String {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let rendered = error.render().to_string();
    if !matches!(
        error.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue | ErrorKind::InvalidUtf8
    ) {
        return rendered;
    }
    let (Some(ContextValue::String(shown)), Some(ContextValue::String(value))) = (
        error.get(ContextKind::InvalidArg),
        error.get(ContextKind::InvalidValue),
    ) else {
        return rendered;
    };
    let Some(arg) = find_arg(command, shown) else {
        return rendered;
    };
    let Some(var) = arg.get_env() else {
        return rendered;
    };
    // Named only when the bad value is the variable's (a flag given on the command line wins).
    let from_variable = std::env::var_os(var).is_some_and(|v| {
        let v = v.to_string_lossy();
        v == value.as_str() || v.split(',').any(|part| part == value.as_str())
    });
    if !from_variable {
        return rendered;
    }
    let var = var.to_string_lossy();
    let mut text = rendered.replacen(&format!("'{shown}'"), &format!("{var} ({shown})"), 1);
    if arg.is_hide_env_values_set() {
        // A URL with a password in it, a secret: never echoed.
        text = text.replacen(&format!("'{value}'"), "'***'", 1);
    }
    if !text.contains("is not in") && !text.contains("possible values") {
        let accepts = accepted(arg);
        if let Some(accepts) = accepts {
            let at = text.find('\n').unwrap_or(text.len());
            text.insert_str(at, &format!("\n  {var} accepts {accepts}"));
        }
    }
    text
}

/// The argument clap shows as `shown` (`--name <VALUE>`), anywhere in the command tree.
fn find_arg<'a>(command: &'a clap::Command, shown: &str) -> Option<&'a clap::Arg> {
    let named = |arg: &&clap::Arg| {
        arg.get_long().is_some_and(|long| {
            shown
                .strip_prefix("--")
                .and_then(|s| s.strip_prefix(long))
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '=']))
        })
    };
    command
        .get_arguments()
        .find(named)
        .or_else(|| command.get_subcommands().find_map(|c| find_arg(c, shown)))
}

/// What `arg` accepts when clap's message does not say: its possible values, else the range
/// of a number (found by offering the parser the extreme values: a ranged parser answers
/// `N is not in A..=B`), else nothing.
fn accepted(arg: &clap::Arg) -> Option<String> {
    let values: Vec<String> = arg
        .get_possible_values()
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| v.get_name().to_string())
        .collect();
    if !values.is_empty() {
        return Some(format!("one of: {}", values.join(", ")));
    }
    let long = arg.get_long()?;
    for probe in [i64::MIN.to_string(), u64::MAX.to_string()] {
        let probe_arg = arg.clone().env(None).required(false).default_value(None);
        let outcome = clap::Command::new("probe")
            .no_binary_name(true)
            .arg(probe_arg)
            .try_get_matches_from([format!("--{long}={probe}")]);
        if let Err(e) = outcome {
            let message = e.render().to_string();
            if let Some((_, range)) = message.split_once("is not in ") {
                let range = range.lines().next().unwrap_or_default().trim();
                return Some(format!("a whole number in {range}"));
            }
        }
    }
    None
}

/// An `http://` or `https://` URL with a host. The message never repeats the value (it may
/// hold a credential).
fn parse_http_url(s: &str) -> Result<String, String> {
    parse_url(s, &["http", "https"], "https://hooks.example.com/tessera")
}

/// An `smtp://` or `smtps://` URL with a host; the message never repeats the value.
fn parse_smtp_url(s: &str) -> Result<String, String> {
    parse_url(
        s,
        &["smtp", "smtps"],
        "smtps://user:pass@mail.example.com:465",
    )
}

fn parse_url(s: &str, schemes: &[&str], example: &str) -> Result<String, String> {
    let wanted = || {
        let schemes: Vec<String> = schemes.iter().map(|s| format!("{s}://")).collect();
        format!(
            "not a URL: expected {} (e.g. {example})",
            schemes.join(" or ")
        )
    };
    let url = reqwest::Url::parse(s.trim()).map_err(|_| wanted())?;
    if !schemes.contains(&url.scheme()) || url.host_str().is_none_or(str::is_empty) {
        return Err(wanted());
    }
    Ok(s.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::ListenAddr;

    #[test]
    fn database_urls_of_unsupported_kinds_name_the_two_supported() {
        for url in [
            "garbage",
            "mysql://root@db/tessera",
            "postgres://",
            "sqlite://",
            "http://x",
        ] {
            let err = super::check_database_url(url).unwrap_err();
            assert!(err.contains("TESSERA_DATABASE_URL"), "{url}: {err}");
            assert!(
                err.contains("postgres://") && err.contains("sqlite://"),
                "{url}: {err}"
            );
        }
        assert!(
            super::check_database_url("mysql://a@b/c")
                .unwrap_err()
                .contains("\"mysql\"")
        );
        for url in [
            "postgres://u@h:5432/d",
            "postgresql://h/d",
            "sqlite://t.db",
            "sqlite:x.db?mode=rwc",
        ] {
            super::check_database_url(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        }
    }

    #[test]
    fn redacted_urls_keep_host_and_port_but_never_the_password() {
        let shown = super::redacted_url("postgres://app:hunter2@db.internal/tessera");
        assert_eq!(shown, "PostgreSQL at db.internal:5432/tessera as app");
        assert!(!super::redacted_url("mysql://a:hunter2@b/c").contains("hunter2"));
    }

    #[test]
    fn listen_addresses_take_ip_literals_and_host_names() {
        for (given, host, port, shown) in [
            ("127.0.0.1:8080", "127.0.0.1", 8080, "127.0.0.1:8080"),
            ("localhost:8080", "localhost", 8080, "localhost:8080"),
            (
                "tessera.internal:0",
                "tessera.internal",
                0,
                "tessera.internal:0",
            ),
            ("[::1]:9000", "::1", 9000, "[::1]:9000"),
            ("0.0.0.0:443", "0.0.0.0", 443, "0.0.0.0:443"),
        ] {
            let addr: ListenAddr = given.parse().unwrap_or_else(|e| panic!("{given}: {e}"));
            assert_eq!((addr.host(), addr.port()), (host, port), "{given}");
            assert_eq!(addr.to_string(), shown);
        }
    }

    #[test]
    fn malformed_listen_addresses_say_what_is_wrong() {
        for (given, says) in [
            ("localhost", "HOST:PORT"),
            ("localhost:http", "port must be a number"),
            ("localhost:65536", "port must be a number"),
            (":8080", "IP address or a host name"),
            ("::1:8080", "brackets"),
            ("[::g]:8080", "not an IPv6 address"),
            ("local host:8080", "IP address or a host name"),
        ] {
            let err = given.parse::<ListenAddr>().unwrap_err();
            assert!(err.contains(says), "{given}: {err}");
        }
    }
}
