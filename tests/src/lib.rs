//! Harness for end-to-end tests: the real server on `127.0.0.1:0` over a fresh PostgreSQL
//! database or SQLite file, GraphQL over real HTTP, TOTP codes from the returned secret.
//!
//! Every test runs on both stores through [`both_stores!`].

pub mod sinks;

use std::{path::PathBuf, sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use chrono::Utc;
use serde_json::{Value, json};
use tessera_api::{Config, Server, start_with_clock};
use tessera_domain::services::FixedClock;
use totp_rs::{Algorithm, Secret, TOTP};

/// The bootstrap admin key every test server accepts.
pub const ADMIN_KEY: &str = "test-bootstrap-key-0123456789";

/// Which store a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    /// PostgreSQL at `TESSERA_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432`).
    Postgres,
    /// A SQLite file in a fresh temporary directory.
    Sqlite,
}

/// Runs each test body once per store: `both_stores!(name, |store| async move { .. })`.
#[macro_export]
macro_rules! both_stores {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                ($body)($crate::Store::Postgres).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                ($body)($crate::Store::Sqlite).await
            }
        }
    };
}

fn pg_base() -> String {
    std::env::var("TESSERA_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A server under test and what it needs to be restarted on the same data.
pub struct TestServer {
    /// The running server (None between stop and start).
    server: Option<Server>,
    /// Its config (same database and key across restarts).
    pub config: Config,
    /// The clock the server reads; tests move it.
    pub clock: FixedClock,
    /// HTTP client with keep-alive.
    pub http: reqwest::Client,
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub base: String,
    /// Which store.
    pub store: Store,
    /// For SQLite: the directory holding the database (removed on drop).
    pub dir: Option<PathBuf>,
}

impl TestServer {
    /// A fresh database and a server on it, with the clock at the real current time.
    pub async fn start(store: Store) -> Self {
        Self::start_with(store, |_| {}).await
    }

    /// Like [`TestServer::start`], with the config adjusted first.
    pub async fn start_with(store: Store, adjust: impl FnOnce(&mut Config)) -> Self {
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let mut config = Config {
            listen: "127.0.0.1:0".parse().expect("literal address"),
            bootstrap_api_key: Some(ADMIN_KEY.into()),
            db_pool_size: 8,
            ..Config::default()
        };
        let mut dir = None;
        match store {
            Store::Postgres => {
                let admin = format!("{}/postgres", pg_base());
                let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
                    .await
                    .expect("PostgreSQL must be running for the tests (see .ci/run)");
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                config.database_url = format!("{}/{name}", pg_base());
                let mut key = [0u8; 32];
                key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
                config.master_key = Some(B64.encode(key));
            }
            Store::Sqlite => {
                let path = std::env::temp_dir().join(name);
                std::fs::create_dir_all(&path).expect("temp dir");
                config.database_url = format!("sqlite://{}/tessera.db", path.display());
                dir = Some(path);
            }
        }
        adjust(&mut config);
        let clock = FixedClock::at(Utc::now());
        let mut this = Self {
            server: None,
            config,
            clock,
            http: reqwest::Client::new(),
            base: String::new(),
            store,
            dir,
        };
        this.boot().await;
        this
    }

    async fn boot(&mut self) {
        let server = start_with_clock(self.config.clone(), Arc::new(self.clock.clone()))
            .await
            .expect("server starts");
        self.base = format!("http://{}", server.addr);
        self.server = Some(server);
    }

    /// The running server.
    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("server is running")
    }

    /// Stops the server gracefully and starts a new one on the same database and key.
    pub async fn restart(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
        self.boot().await;
    }

    /// A second server process on the same database, key and clock (several nodes).
    pub async fn another_node(&self) -> TestServer {
        let mut other = Self {
            server: None,
            config: self.config.clone(),
            clock: self.clock.clone(),
            http: reqwest::Client::new(),
            base: String::new(),
            store: self.store,
            dir: None,
        };
        other.boot().await;
        other
    }

    /// Stops the server (it can be started again with [`TestServer::restart`]).
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
    }

    /// POSTs a GraphQL request with the admin key; returns the whole JSON response.
    pub async fn gql(&self, query: &str, variables: Value) -> Value {
        self.gql_as(Some(ADMIN_KEY), query, variables).await
    }

    /// POSTs a GraphQL request with `token` (or none).
    pub async fn gql_as(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let mut request = self
            .http
            .post(format!("{}/graphql", self.base))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("HTTP request");
        response.json().await.expect("JSON response")
    }

    /// Runs a query that must succeed; returns `data`.
    pub async fn ok(&self, query: &str, variables: Value) -> Value {
        let response = self.gql(query, variables).await;
        assert!(
            response.get("errors").is_none(),
            "unexpected errors: {response}"
        );
        response["data"].clone()
    }

    /// Creates a user; returns its id.
    pub async fn create_user(&self, login: &str) -> String {
        let data = self
            .ok(
                "mutation($l: String!) { createUser(input: {login: $l, email: \"x@example.com\"}) { id } }",
                json!({ "l": login }),
            )
            .await;
        data["createUser"]["id"]
            .as_str()
            .expect("user id")
            .to_string()
    }

    /// Enrols a TOTP factor for `user`; returns (factor id, base32 secret).
    pub async fn enroll_totp(&self, user: &str) -> (String, String) {
        let data = self
            .ok(
                "mutation($u: ID!) { enrollFactor(input: {userId: $u, type: TOTP}) { factor { id } totp { secretBase32 } } }",
                json!({ "u": user }),
            )
            .await;
        (
            data["enrollFactor"]["factor"]["id"]
                .as_str()
                .expect("factor id")
                .into(),
            data["enrollFactor"]["totp"]["secretBase32"]
                .as_str()
                .expect("secret")
                .into(),
        )
    }

    /// A user with an active TOTP factor; the clock is moved one step past activation, so
    /// the current code is fresh. Returns (user id, factor id, secret).
    pub async fn active_totp(&self, login: &str) -> (String, String, String) {
        let user = self.create_user(login).await;
        let (factor, secret) = self.enroll_totp(&user).await;
        let result = self.activate(&factor, &self.code(&secret, 0)).await;
        assert_eq!(result["factorResult"], "SUCCESS", "{result}");
        self.clock.advance(chrono::TimeDelta::seconds(30));
        (user, factor, secret)
    }

    /// `activateFactor`; returns the payload.
    pub async fn activate(&self, factor: &str, code: &str) -> Value {
        self.ok(
            "mutation($f: ID!, $c: String!) { activateFactor(input: {factorId: $f, passCode: $c}) { factorResult factor { status failedAttempts } recoveryCodes } }",
            json!({ "f": factor, "c": code }),
        )
        .await["activateFactor"]
            .clone()
    }

    /// `verifyFactor`; returns the whole response (it may carry errors).
    pub async fn verify_raw(&self, factor: &str, code: &str) -> Value {
        self.gql(
            "mutation($f: ID!, $c: String!) { verifyFactor(input: {factorId: $f, passCode: $c}) { factorResult factor { status failedAttempts } } }",
            json!({ "f": factor, "c": code }),
        )
        .await
    }

    /// `verifyFactor`; returns `factorResult`.
    pub async fn verify(&self, factor: &str, code: &str) -> String {
        let response = self.verify_raw(factor, code).await;
        response["data"]["verifyFactor"]["factorResult"]
            .as_str()
            .unwrap_or_else(|| panic!("no factorResult: {response}"))
            .to_string()
    }

    /// The code an authenticator app shows `steps_from_now` steps from the server's clock.
    pub fn code(&self, secret_base32: &str, steps_from_now: i64) -> String {
        code_at(secret_base32, self.clock_unix() + steps_from_now * 30)
    }

    /// The server clock, Unix seconds.
    pub fn clock_unix(&self) -> i64 {
        use tessera_domain::services::Clock;
        self.clock.now().timestamp()
    }

    /// Every text value stored anywhere in the database, for "no secret in a dump" checks.
    pub async fn dump_database(&self) -> String {
        match self.store {
            Store::Postgres => {
                let out = std::process::Command::new("pg_dump")
                    .arg("--data-only")
                    .arg(&self.config.database_url)
                    .output()
                    .expect("pg_dump runs");
                assert!(
                    out.status.success(),
                    "pg_dump: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8_lossy(&out.stdout).into_owned()
            }
            Store::Sqlite => {
                let dir = self.dir.as_ref().expect("sqlite dir");
                let mut all = Vec::new();
                for entry in std::fs::read_dir(dir).expect("read dir") {
                    let path = entry.expect("entry").path();
                    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                    // The key file is the master key, not the database.
                    if name.starts_with("tessera.db") && !name.ends_with(".key") {
                        all.extend(std::fs::read(&path).expect("read db file"));
                    }
                }
                String::from_utf8_lossy(&all).into_owned()
            }
        }
    }

    /// The events of one stream as `(event_type, payload)`, in order, read from the store.
    pub async fn events_of(&self, aggregate_id: &str) -> Vec<(String, Value)> {
        let sql = "SELECT event_type, CAST(payload AS TEXT) FROM events WHERE aggregate_id = $1 ORDER BY sequence";
        let rows: Vec<(String, String)> = match &self.server().state.pool {
            tessera_api::store::Pool::Pg(p) => {
                sqlx::query_as(sql).bind(aggregate_id).fetch_all(p).await
            }
            tessera_api::store::Pool::Lite(p) => {
                sqlx::query_as(sql).bind(aggregate_id).fetch_all(p).await
            }
        }
        .expect("read events");
        rows.into_iter()
            .map(|(t, p)| (t, serde_json::from_str(&p).expect("payload is JSON")))
            .collect()
    }

    /// How many `FailedAttempt` events of `aggregate_id` have `reason`.
    pub async fn failures(&self, aggregate_id: &str, reason: &str) -> usize {
        self.events_of(aggregate_id)
            .await
            .iter()
            .filter(|(t, p)| t == "FailedAttempt" && p["FailedAttempt"]["reason"] == reason)
            .count()
    }

    /// Waits briefly for something eventually true.
    pub async fn eventually<F, Fut>(&self, mut check: F) -> bool
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        for _ in 0..100 {
            if check().await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The 6-digit SHA1 code for `secret_base32` at Unix time `unix`, as an authenticator app
/// computes it (totp-rs, independent of the server's code path through the domain crate).
pub fn code_at(secret_base32: &str, unix: i64) -> String {
    let secret = Secret::Encoded(secret_base32.to_string())
        .to_bytes()
        .expect("valid base32");
    TOTP::new_unchecked(Algorithm::SHA1, 6, 0, 30, secret, None, String::new())
        .generate(u64::try_from(unix).expect("time after 1970"))
}

/// `extensions.code` of the first error.
pub fn error_code(response: &Value) -> &str {
    response["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {response}"))
}

/// `extensions.reason` of the first error.
pub fn error_reason(response: &Value) -> &str {
    response["errors"][0]["extensions"]["reason"]
        .as_str()
        .unwrap_or("")
}
