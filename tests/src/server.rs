//! The server under test: a fresh PostgreSQL database or SQLite file, the real server on
//! `127.0.0.1:0`, restarts on the same data, a second node on the same database.

use std::{path::PathBuf, sync::Arc};

use chrono::Utc;
use tessera_api::{Config, Server, start_with_clock};
use tessera_domain::services::FixedClock;

use crate::{fresh::FreshStore, phones::Phones};

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

pub(crate) fn pg_base() -> String {
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
        // One directory holds the SQLite file (and its key file) and the outbox; removed on
        // drop.
        let (mut config, scratch, outbox) = FreshStore::new(store).await.disown();
        let dir = (store == Store::Sqlite).then(|| scratch.clone());
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

    /// The websocket URL of the running server.
    pub fn ws_url(&self) -> String {
        format!("{}/graphql/ws", self.base.replacen("http", "ws", 1))
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
