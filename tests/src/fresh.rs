//! A fresh, empty store and a [`Config`] pointing at it, without starting anything: for tests
//! of how the server starts (or refuses to), and for servers on the real clock.

use std::path::PathBuf;

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use tessera_api::Config;

use crate::{ADMIN_KEY, Store, server::pg_base};

/// An empty PostgreSQL database (created, no tables) or an empty directory for a SQLite file,
/// and the config of a server on it. Files are removed on drop.
pub struct FreshStore {
    /// Which store.
    pub store: Store,
    /// Listens on `127.0.0.1:0`, accepts [`ADMIN_KEY`], outbox in [`FreshStore::dir`]; the
    /// SQLite file (and its key file) would be created in `dir`.
    pub config: Config,
    /// The directory of the SQLite file, or of the outbox for PostgreSQL. Empty until a server
    /// writes something.
    pub dir: PathBuf,
    /// The outbox file.
    pub outbox: PathBuf,
    /// Whether the files outlive this value (see [`FreshStore::disown`]).
    kept: bool,
}

impl FreshStore {
    /// Creates the empty database or directory.
    pub async fn new(store: Store) -> Self {
        let name = format!("{}_{}", db_prefix(), uuid::Uuid::new_v4().simple());
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let outbox = dir.join("dev.outbox");
        let mut config = Config {
            listen: "127.0.0.1:0".parse().expect("literal address"),
            bootstrap_api_key: Some(ADMIN_KEY.into()),
            db_pool_size: 8,
            outbox_path: Some(outbox.clone()),
            webauthn_origins: vec![crate::passkeys::ORIGIN.into()],
            // Every PostgreSQL test shares one cluster, whose oldest open transaction holds back
            // every database's consumers (the tailer reads below the cluster's snapshot xmin):
            // under a loaded run another test's transaction can stay open for seconds. The
            // tests assert that a mutation's write is visible when it answers; this bound only
            // says how long that may take before the test fails.
            read_your_writes_ms: 30_000,
            ..Config::default()
        };
        match store {
            Store::Postgres => {
                let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&format!(
                    "{}/postgres",
                    pg_base()
                ))
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
                config.database_url = format!("sqlite://{}/tessera.db", dir.display());
            }
        }
        Self {
            store,
            config,
            dir,
            outbox,
            kept: false,
        }
    }

    /// The config, the directory and the outbox file, for an owner that removes the
    /// directory itself (a [`crate::TestServer`]).
    pub fn disown(mut self) -> (Config, PathBuf, PathBuf) {
        self.kept = true;
        (self.config.clone(), self.dir.clone(), self.outbox.clone())
    }

    /// Names of the files in [`FreshStore::dir`], sorted.
    pub fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Tables in the PostgreSQL database (empty for SQLite, whose tables live in its file).
    pub async fn pg_tables(&self) -> Vec<String> {
        if self.store != Store::Postgres {
            return Vec::new();
        }
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&self.config.database_url)
            .await
            .expect("connect");
        sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
        )
        .fetch_all(&mut conn)
        .await
        .expect("list tables")
    }
}

impl Drop for FreshStore {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The prefix of test database names: `TESSERA_TEST_DB_PREFIX` (letters and digits; `.ci/run`
/// sets one per run, so it drops only its own databases), else `t`.
fn db_prefix() -> String {
    std::env::var("TESSERA_TEST_DB_PREFIX")
        .ok()
        .filter(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        .unwrap_or_else(|| "t".into())
}
