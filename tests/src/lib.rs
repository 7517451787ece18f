//! Harness for end-to-end tests: the real server on `127.0.0.1:0` over a fresh PostgreSQL
//! database or SQLite file, GraphQL over real HTTP, TOTP codes from the returned secret.
//!
//! Every test runs on both stores through [`both_stores!`]. [`smtp_sink`] and [`webhook_sink`]
//! are real SMTP and HTTP receivers on loopback: the "phones" codes are sent to.

pub mod fresh;
pub mod log_capture;
pub mod smtp_sink;
pub mod webhook_sink;

pub mod sinks;

use std::{path::PathBuf, sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use chrono::Utc;
use serde_json::{Value, json};
use tessera_api::{Config, Server, start_with_clock, store::Pool};
use tessera_domain::services::FixedClock;
use totp_rs::{Algorithm, Secret, TOTP};

use crate::{smtp_sink::SmtpSink, webhook_sink::HttpSink};

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
    /// The development outbox file (in a fresh temporary directory).
    pub outbox: PathBuf,
    scratch: PathBuf,
}

/// Where codes go in a test: a real SMTP server and a real HTTP "SMS gateway" on loopback.
pub struct Phones {
    /// The mailbox.
    pub smtp: SmtpSink,
    /// The SMS gateway.
    pub sms: HttpSink,
}

/// How long a test waits for a message to arrive.
pub const DELIVERY_WAIT: Duration = Duration::from_secs(10);

impl Phones {
    /// Starts both receivers.
    pub async fn start() -> Self {
        Self {
            smtp: SmtpSink::start().await,
            sms: HttpSink::start().await,
        }
    }

    /// Points `config` at them, with quick retries (3 attempts, 20 ms apart).
    pub fn configure(&self, config: &mut Config) {
        config.smtp_url = Some(self.smtp.url());
        config.mail_from = "Tessera <no-reply@tessera.test>".into();
        config.sms_webhook_url = Some(self.sms.url("/sms"));
        config.delivery_attempts = 3;
        config.delivery_backoff_ms = 20;
    }

    /// The code in the `n`-th (1-based) text message to `phone`, waiting for it.
    pub async fn sms_code(&self, phone: &str, n: usize) -> String {
        let messages = self.sms.wait_for("to", phone, n, DELIVERY_WAIT).await;
        extract_code(messages[n - 1].json()["body"].as_str().expect("body"))
    }

    /// The code in the `n`-th (1-based) e-mail to `address`, waiting for it.
    pub async fn email_code(&self, address: &str, n: usize) -> String {
        let mails = self.smtp.wait_for(address, n, DELIVERY_WAIT).await;
        extract_code(mails[n - 1].body())
    }
}

/// The first run of exactly six digits in `text` (the code in a message).
pub fn extract_code(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if i - start == 6 {
                return text[start..i].to_string();
            }
        } else {
            i += 1;
        }
    }
    panic!("no six-digit code in {text:?}")
}

/// Whether `code` occurs in `haystack` as a run of six digits of its own, other than as the
/// fraction of a timestamp (`.123456`): how a code would show if it leaked.
pub fn contains_code(haystack: &str, code: &str) -> bool {
    haystack.match_indices(code).any(|(at, _)| {
        let before = haystack[..at].chars().next_back();
        let after = haystack[at + code.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_digit() || c == '.')
            && !after.is_some_and(|c| c.is_ascii_digit())
    })
}

impl TestServer {
    /// A fresh database and a server on it, with the clock at the real current time.
    pub async fn start(store: Store) -> Self {
        Self::start_with(store, |_| {}).await
    }

    /// A fresh database and a server on it whose codes go to `phones`.
    pub async fn start_with_phones(store: Store, phones: &Phones) -> Self {
        Self::start_with(store, |c| phones.configure(c)).await
    }

    /// Like [`TestServer::start`], with the config adjusted first.
    pub async fn start_with(store: Store, adjust: impl FnOnce(&mut Config)) -> Self {
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let scratch = std::env::temp_dir().join(format!("{name}_files"));
        std::fs::create_dir_all(&scratch).expect("scratch dir");
        let outbox = scratch.join("tessera.outbox");
        let mut config = Config {
            listen: "127.0.0.1:0".parse().expect("literal address"),
            bootstrap_api_key: Some(ADMIN_KEY.into()),
            db_pool_size: 8,
            outbox_path: Some(outbox.clone()),
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
            outbox,
            scratch,
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
            outbox: self.outbox.clone(),
            // Its own (empty) scratch directory: dropping this node must not remove the
            // first node's files.
            scratch: std::env::temp_dir().join(format!("node_{}", uuid::Uuid::new_v4().simple())),
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
        self.gql_with(token, &[], query, variables).await
    }

    /// POSTs a GraphQL request with `token` (or none) and extra headers.
    pub async fn gql_with(
        &self,
        token: Option<&str>,
        headers: &[(&str, &str)],
        query: &str,
        variables: Value,
    ) -> Value {
        let mut request = self
            .http
            .post(format!("{}/graphql", self.base))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("HTTP request");
        response.json().await.expect("JSON response")
    }

    /// Every page of `events(filter)` with `first` per page, concatenated; also checks that
    /// each edge's cursor is its node's position and that the last page says so.
    pub async fn all_events(&self, filter: Value, first: i64) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after = Value::Null;
        loop {
            let data = self
                .ok(
                    "query($f: EventFilter, $n: Int, $a: String) { events(filter: $f, first: $n, after: $a) {
                        edges { cursor node { position aggregateType aggregateId sequence eventType
                                              eventVersion payload metadata recordedAt } }
                        pageInfo { hasNextPage endCursor } } }",
                    json!({ "f": filter, "n": first, "a": after }),
                )
                .await;
            let page = &data["events"];
            let edges = page["edges"].as_array().expect("edges");
            assert!(edges.len() as i64 <= first, "page larger than first");
            for edge in edges {
                assert_eq!(edge["cursor"], edge["node"]["position"]);
                out.push(edge["node"].clone());
            }
            if page["pageInfo"]["hasNextPage"] != true {
                return out;
            }
            assert_eq!(edges.len() as i64, first, "a page before the last is full");
            after = page["pageInfo"]["endCursor"].clone();
        }
    }

    /// `(aggregate type, aggregate id, sequence)` of every stored event in the tailing order,
    /// read straight from the table: the oracle for the audit API.
    pub async fn log_identities(&self) -> Vec<(String, String, i64)> {
        match &self.server().state.pool {
            Pool::Pg(pg) => sqlx::query_as(
                "SELECT aggregate_type, aggregate_id, sequence FROM events ORDER BY tx_id, global_position",
            )
            .fetch_all(pg)
            .await
            .expect("read events"),
            Pool::Lite(lite) => sqlx::query_as(
                "SELECT aggregate_type, aggregate_id, sequence FROM events ORDER BY global_seq",
            )
            .fetch_all(lite)
            .await
            .expect("read events"),
        }
    }

    /// Every event through `events(first: 500)` once it shows all `log_identities` (a
    /// transaction elsewhere on the PostgreSQL cluster can hold the tail back briefly).
    pub async fn settled_events(&self) -> Vec<Value> {
        for _ in 0..100 {
            // The table is read first: the log may grow meanwhile (the alert reactor writes),
            // so retry until the API shows exactly what the table held just before.
            let want = self.log_identities().await;
            let all = self.all_events(Value::Null, 500).await;
            if all.iter().map(identity).collect::<Vec<_>>() == want {
                return all;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the events query never showed the whole log");
    }

    /// Waits until the log stops growing: the alert reactor has looked at every event and
    /// raised whatever it raises. Returns the log as the events API shows it then.
    pub async fn quiesce(&self) -> Vec<Value> {
        let state = &self.server().state;
        let mut last = usize::MAX;
        for _ in 0..100 {
            state.reactor.catch_up().await.expect("reactor");
            let log = self.settled_events().await;
            state.reactor.catch_up().await.expect("reactor");
            if log.len() == last && self.log_identities().await.len() == log.len() {
                return log;
            }
            last = log.len();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the log never stopped growing");
    }

    /// A 6-digit code that is wrong for `secret` anywhere near the server's clock.
    pub fn wrong_code(&self, secret: &str) -> String {
        let near: Vec<String> = (-3..=3).map(|d| self.code(secret, d)).collect();
        (0..1000)
            .map(|n| format!("{:06}", 999_999 - n))
            .find(|c| !near.contains(c))
            .expect("a wrong code exists")
    }

    /// The websocket URL of the running server.
    pub fn ws_url(&self) -> String {
        format!("{}/graphql/ws", self.base.replacen("http", "ws", 1))
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

    /// Creates a user with a phone number, an e-mail address and a password; returns its id.
    pub async fn create_full_user(&self, login: &str, password: &str) -> String {
        let data = self
            .ok(
                "mutation($l: String!, $p: String!) { createUser(input: {login: $l, \
                 email: \"x@example.com\", phoneNumber: \"+14155550100\", password: $p}) { id } }",
                json!({ "l": login, "p": password }),
            )
            .await;
        data["createUser"]["id"]
            .as_str()
            .expect("user id")
            .to_string()
    }

    /// Enrols an SMS (`type` = `SMS`) or e-mail (`EMAIL`) factor sending to `destination`;
    /// returns the `enrollFactor` payload.
    pub async fn enroll_oob(&self, user: &str, factor_type: &str, destination: &str) -> Value {
        let field = if factor_type == "SMS" {
            "phoneNumber"
        } else {
            "email"
        };
        let query = format!(
            "mutation($u: ID!, $d: String!) {{ enrollFactor(input: {{userId: $u, type: {factor_type}, {field}: $d}}) {{ \
             factor {{ id type status phoneNumber email }} totp {{ secretBase32 }} \
             challenge {{ id userId status purpose factorId expiresAt delivery }} }} }}"
        );
        self.ok(&query, json!({ "u": user, "d": destination }))
            .await["enrollFactor"]
            .clone()
    }

    /// `challengeFactor`; returns the whole response.
    pub async fn challenge_factor(&self, factor: &str, challenge: Option<&str>) -> Value {
        self.gql(
            "mutation($f: ID!, $c: ID) { challengeFactor(input: {factorId: $f, challengeId: $c}) { challenge { id userId status purpose factorId expiresAt delivery failedAttempts } } }",
            json!({ "f": factor, "c": challenge }),
        )
        .await
    }

    /// `challenge(id)` as the admin.
    pub async fn challenge(&self, id: &str) -> Value {
        self.ok(
            "query($c: ID!) { challenge(id: $c) { id status purpose delivery failedAttempts expiresAt } }",
            json!({ "c": id }),
        )
        .await["challenge"]
            .clone()
    }

    /// Runs one statement on the server's database, as an operator would.
    pub async fn execute_sql(&self, sql: &str) {
        match &self.server().state.pool {
            Pool::Pg(pg) => sqlx::raw_sql(sql).execute(pg).await.map(|_| ()),
            Pool::Lite(lite) => sqlx::raw_sql(sql).execute(lite).await.map(|_| ()),
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Event types of one aggregate, in order, read straight from the event table.
    pub async fn event_types(&self, aggregate_type: &str, aggregate_id: &str) -> Vec<String> {
        self.events(aggregate_type, aggregate_id)
            .await
            .into_iter()
            .map(|(t, _)| t)
            .collect()
    }

    /// `(event_type, payload)` of one aggregate, in order, straight from the event table.
    pub async fn events(&self, aggregate_type: &str, aggregate_id: &str) -> Vec<(String, Value)> {
        use sqlx::Row;
        let sql = match self.store {
            Store::Postgres => {
                "SELECT event_type, payload::text AS payload FROM events \
                 WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence"
            }
            Store::Sqlite => {
                "SELECT event_type, payload FROM events \
                 WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence"
            }
        };
        let rows = match &self.server().state.pool {
            tessera_api::store::Pool::Pg(p) => sqlx::query(sql)
                .bind(aggregate_type)
                .bind(aggregate_id)
                .fetch_all(p)
                .await
                .expect("read events")
                .iter()
                .map(|r| (r.get::<String, _>(0), r.get::<String, _>(1)))
                .collect::<Vec<_>>(),
            tessera_api::store::Pool::Lite(p) => sqlx::query(sql)
                .bind(aggregate_type)
                .bind(aggregate_id)
                .fetch_all(p)
                .await
                .expect("read events")
                .iter()
                .map(|r| (r.get::<String, _>(0), r.get::<String, _>(1)))
                .collect::<Vec<_>>(),
        };
        rows.into_iter()
            .map(|(t, p)| (t, serde_json::from_str(&p).expect("payload JSON")))
            .collect()
    }

    /// Waits (bounded) until the aggregate has an event of `event_type`; returns its payload.
    pub async fn wait_for_event(&self, aggregate_type: &str, id: &str, event_type: &str) -> Value {
        for _ in 0..200 {
            if let Some((_, payload)) = self
                .events(aggregate_type, id)
                .await
                .into_iter()
                .find(|(t, _)| t == event_type)
            {
                return payload[event_type].clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "no {event_type} on {aggregate_type}/{id}: {:?}",
            self.event_types(aggregate_type, id).await
        )
    }

    /// `login`; returns the whole response.
    pub async fn login(&self, login: &str, password: &str) -> Value {
        self.gql_as(
            None,
            "mutation($l: String!, $p: String!) { login(input: {login: $l, password: $p}) { \
             accessToken expiresAt mfaRequired enrollmentRequired challenge { id userId status purpose expiresAt } \
             factors { id type status } factorResult } }",
            json!({ "l": login, "p": password }),
        )
        .await
    }

    /// `completeLogin` without a token; returns the whole response.
    pub async fn complete_login(&self, challenge: &str, factor: &str, code: &str) -> Value {
        self.gql_as(
            None,
            "mutation($c: ID!, $f: ID!, $p: String!) { completeLogin(input: {challengeId: $c, factorId: $f, passCode: $p}) { \
             accessToken expiresAt mfaRequired challenge { id status failedAttempts } factorResult } }",
            json!({ "c": challenge, "f": factor, "p": code }),
        )
        .await
    }

    /// A user token for `login`, whose password is `password` and who has no factor.
    pub async fn password_token(&self, login: &str, password: &str) -> String {
        let r = self.login(login, password).await;
        r["data"]["login"]["accessToken"]
            .as_str()
            .unwrap_or_else(|| panic!("no token: {r}"))
            .to_string()
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
        let _ = std::fs::remove_dir_all(&self.scratch);
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

/// `(aggregateType, aggregateId, sequence)` of an `AuditEvent` node.
pub fn identity(node: &Value) -> (String, String, i64) {
    (
        node["aggregateType"]
            .as_str()
            .expect("aggregateType")
            .to_string(),
        node["aggregateId"]
            .as_str()
            .expect("aggregateId")
            .to_string(),
        node["sequence"].as_i64().expect("sequence"),
    )
}

/// The claims of a JWT (its middle part), unverified.
pub fn jwt_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT has three parts");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
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

/// A graphql-transport-ws client over a real websocket.
pub struct WsClient {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

/// A message a [`WsClient`] received.
#[derive(Clone, Debug, PartialEq)]
pub enum WsMessage {
    /// `next`: a result of subscription `id`.
    Next {
        /// Subscription id.
        id: String,
        /// `{"data": …}` (or `errors`).
        payload: Value,
    },
    /// `error` for subscription `id`.
    Error {
        /// Subscription id.
        id: String,
        /// The errors.
        payload: Value,
    },
    /// `complete` of subscription `id`.
    Complete {
        /// Subscription id.
        id: String,
    },
    /// The server closed the connection (close code, if any).
    Closed(Option<u16>),
}

impl WsClient {
    /// Connects to `url` with the graphql-transport-ws subprotocol and sends
    /// `connection_init` with `{"Authorization": "Bearer <token>"}` (or an empty payload).
    /// Returns the client once acknowledged, or how the server refused.
    pub async fn connect(url: &str, token: Option<&str>) -> Result<Self, WsMessage> {
        use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue};
        let mut request = url.into_client_request().expect("ws request");
        request.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_static("graphql-transport-ws"),
        );
        let (ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("websocket handshake");
        let mut client = Self { ws };
        let payload = match token {
            Some(t) => json!({ "Authorization": format!("Bearer {t}") }),
            None => json!({}),
        };
        client
            .send(json!({ "type": "connection_init", "payload": payload }))
            .await;
        loop {
            match client.raw(Duration::from_secs(10)).await {
                Some(Ok(m)) if m["type"] == "connection_ack" => return Ok(client),
                Some(Ok(_)) => continue,
                Some(Err(closed)) => return Err(closed),
                None => return Err(WsMessage::Closed(None)),
            }
        }
    }

    async fn send(&mut self, message: Value) {
        use futures::SinkExt;
        self.ws
            .send(tokio_tungstenite::tungstenite::Message::Text(
                message.to_string().into(),
            ))
            .await
            .expect("ws send");
    }

    /// Starts subscription `id`.
    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        self.send(json!({ "type": "subscribe", "id": id,
                          "payload": { "query": query, "variables": variables } }))
            .await;
    }

    /// The next protocol message (pings answered on the way), `Err` if the connection
    /// closed, `None` on timeout.
    async fn raw(&mut self, timeout: Duration) -> Option<Result<Value, WsMessage>> {
        use futures::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()?;
            match next {
                Some(Ok(Message::Text(text))) => {
                    let value: Value = serde_json::from_str(&text).expect("JSON message");
                    if value["type"] == "ping" {
                        self.send(json!({ "type": "pong" })).await;
                        continue;
                    }
                    return Some(Ok(value));
                }
                Some(Ok(Message::Close(frame))) => {
                    return Some(Err(WsMessage::Closed(frame.map(|f| f.code.into()))));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Some(Err(WsMessage::Closed(None))),
            }
        }
    }

    /// The next message, or `None` if nothing came within `timeout`.
    pub async fn recv(&mut self, timeout: Duration) -> Option<WsMessage> {
        let value = match self.raw(timeout).await? {
            Ok(v) => v,
            Err(closed) => return Some(closed),
        };
        let id = value["id"].as_str().unwrap_or_default().to_string();
        Some(match value["type"].as_str() {
            Some("next") => WsMessage::Next {
                id,
                payload: value["payload"].clone(),
            },
            Some("error") => WsMessage::Error {
                id,
                payload: value["payload"].clone(),
            },
            Some("complete") => WsMessage::Complete { id },
            other => panic!("unexpected message type {other:?}: {value}"),
        })
    }

    /// Collects `n` `next` payloads' `data.<field>` of subscription `id`, failing on anything
    /// else or if `timeout` passes between two messages.
    pub async fn take(&mut self, id: &str, field: &str, n: usize, timeout: Duration) -> Vec<Value> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            match self.recv(timeout).await {
                Some(WsMessage::Next { id: got, payload }) if got == id => {
                    assert!(
                        payload.get("errors").is_none(),
                        "subscription error: {payload}"
                    );
                    out.push(payload["data"][field].clone());
                }
                other => panic!(
                    "expected {n} results on {id}, got {} then {other:?}",
                    out.len()
                ),
            }
        }
        out
    }
}

/// Synthetic event logs for rebuild tests and benchmarks.
pub mod synthetic {
    use serde_json::json;
    use tessera_api::store::Pool;

    /// The 20 events of synthetic user `u` and their TOTP factor, as the server would have
    /// written them: (aggregate type, aggregate id, sequence, event type, version, payload).
    fn user_events(
        u: usize,
    ) -> Vec<(
        &'static str,
        String,
        i64,
        &'static str,
        &'static str,
        String,
    )> {
        let user = format!("00000000-0000-4000-8000-{u:012}");
        let factor = format!("00000000-0000-7000-8000-{u:012}");
        let at = "2026-01-01T00:00:00Z";
        let mut out = vec![(
            "User",
            user.clone(),
            1,
            "Registered",
            "1.0",
            json!({ "Registered": { "login": format!("user{u}"), "email": format!("user{u}@example.com"),
                                    "phone_number": null, "display_name": format!("User {u}"), "at": at } })
            .to_string(),
        )];
        let mut f = |seq: i64, t: &'static str, v: &'static str, p: serde_json::Value| {
            out.push(("Factor", factor.clone(), seq, t, v, p.to_string()));
        };
        f(
            1,
            "Enrolled",
            "1.0",
            json!({ "Enrolled": { "factor_id": factor, "user_id": user, "factor_type": "TOTP",
                "label": "phone", "totp": { "secret": { "key_id": "0123456789abcdef",
                "nonce": "q83vEjRWeJCrze8S", "ciphertext": "3q2+7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" },
                "params": { "algorithm": "SHA1", "digits": 6, "period": 30 } },
                "expires_at": "2026-01-01T00:15:00Z", "at": at } }),
        );
        f(
            2,
            "Activated",
            "1.0",
            json!({ "Activated": { "step": 100, "at": at } }),
        );
        let mut seq = 3;
        let mut step = 101;
        // 17 more: three rounds of (wrong, wrong, verified), then a lockout cycle, then successes.
        for _ in 0..3 {
            for n in 1..=2 {
                f(
                    seq,
                    "FailedAttempt",
                    "2.0",
                    json!({ "FailedAttempt": { "reason": "WRONG_CODE",
                    "counted": true, "consecutive_failures": n, "at": at } }),
                );
                seq += 1;
            }
            f(
                seq,
                "Verified",
                "1.0",
                json!({ "Verified": { "step": step, "at": at } }),
            );
            seq += 1;
            step += 1;
        }
        for n in 1..=5 {
            f(
                seq,
                "FailedAttempt",
                "2.0",
                json!({ "FailedAttempt": { "reason": "WRONG_CODE",
                "counted": true, "consecutive_failures": n, "at": at } }),
            );
            seq += 1;
        }
        f(
            seq,
            "LockedOut",
            "1.0",
            json!({ "LockedOut": { "until": "2026-01-01T00:15:00Z",
            "consecutive_failures": 5, "at": at } }),
        );
        seq += 1;
        f(
            seq,
            "Unlocked",
            "1.0",
            json!({ "Unlocked": { "automatic": true, "at": at } }),
        );
        seq += 1;
        while seq <= 19 {
            f(
                seq,
                "Verified",
                "1.0",
                json!({ "Verified": { "step": step, "at": at } }),
            );
            seq += 1;
            step += 1;
        }
        out
    }

    /// Writes the events of users `0..users` straight into the table, 1,000 per transaction;
    /// the streams of each `interleave` consecutive users are interleaved event by event (1:
    /// one user after another), so a stream can span many batches of a reader. Returns how
    /// many events.
    pub async fn insert_users(pool: &Pool, users: usize, interleave: usize) -> usize {
        let meta = json!({ "actor": "api-key:0123456789abcdef", "request_id": "4f1c0d7e-8d2a-4f7e-9a51-0c2b7e1d9f00",
                           "correlation_id": "4f1c0d7e-8d2a-4f7e-9a51-0c2b7e1d9f00",
                           "causation_id": "cmd-0192f0a4-7b7e-7c3d-9a51-0c2b7e1d9f00", "command": "Verify",
                           "client_ip": "203.0.113.7", "user_agent": "Mozilla/5.0 (X11; Linux x86_64)" })
        .to_string();
        let cast = matches!(pool, Pool::Pg(_));
        let mut written = 0;
        let mut batch = Vec::with_capacity(1000);
        let flush = async |batch: &mut Vec<_>| {
            if batch.is_empty() {
                return;
            }
            let mut sql = String::from(
                "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) VALUES ",
            );
            for i in 0..batch.len() {
                let b = i * 6;
                if i > 0 {
                    sql.push(',');
                }
                let (p, m) = if cast { ("::json", "::json") } else { ("", "") };
                sql.push_str(&format!(
                    "(${}, ${}, ${}, ${}, ${}, ${}{p}, '{meta}'{m})",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5,
                    b + 6
                ));
            }
            macro_rules! run {
                ($pool:expr) => {{
                    let mut q = sqlx::query(&sql);
                    for (t, id, seq, et, v, p) in batch.iter() {
                        q = q.bind(*t).bind(id).bind(*seq).bind(*et).bind(*v).bind(p);
                    }
                    q.execute($pool).await.unwrap();
                }};
            }
            match pool {
                Pool::Pg(pg) => run!(pg),
                Pool::Lite(lite) => run!(lite),
            }
            batch.clear();
        };
        let all: Vec<usize> = (0..users).collect();
        let mut ordered = Vec::with_capacity(users * 20);
        for group in all.chunks(interleave.max(1)) {
            let mut streams: Vec<_> = group.iter().map(|&u| user_events(u).into_iter()).collect();
            loop {
                let before = ordered.len();
                for stream in &mut streams {
                    ordered.extend(stream.next());
                }
                if ordered.len() == before {
                    break;
                }
            }
        }
        {
            for e in ordered {
                batch.push(e);
                written += 1;
                if batch.len() == 1000 {
                    flush(&mut batch).await;
                }
            }
        }
        flush(&mut batch).await;
        written
    }
}
