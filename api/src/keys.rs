//! Loading key material: the only place that reads `TESSERA_MASTER_KEY` or the key file, and
//! the only place that decides whether a key fits a store.
//!
//! Keys fail closed. A store records which master key it was created with (its id and an HMAC
//! of a fixed label, table `master_key_check`); every start compares its key with that record
//! and refuses a key that does not match. A key file is generated only for a store that holds
//! nothing yet: a missing key file beside a store with data is an error, never a new key.

use std::{
    fmt,
    fs::{self, OpenOptions},
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use chrono::Utc;
use rand::RngCore;
use tessera_domain::crypto::{KeyCheck, MasterKey};
use tessera_store::Db;

use crate::config::Config;

/// Why no usable master key could be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Not base64 of exactly 32 bytes.
    #[error("{0} must hold base64 of exactly 32 bytes")]
    Malformed(KeySource),
    /// PostgreSQL is shared by several nodes, so the key must come from configuration.
    #[error(
        "TESSERA_MASTER_KEY is required with PostgreSQL: base64 of 32 bytes (e.g. `openssl rand -base64 32`), the same on every node"
    )]
    Required,
    /// The key file could not be read or written.
    #[error("key file {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The store holds data but its key file is gone.
    #[error(
        "the database {database} holds data but its key file {key_file} is missing: put the key file back (or set TESSERA_MASTER_KEY to the key the store was created with). No new key is generated: every secret already sealed would stay unreadable under it"
    )]
    Missing {
        /// The database file.
        database: PathBuf,
        /// Where its key file should be.
        key_file: PathBuf,
    },
    /// The key is not the one the store's secrets are sealed under.
    #[error(
        "{from} holds master key {found}, but this store's secrets are sealed under master key {expected}: configure the key the store was created with (`tessera key check` shows which one it expects)"
    )]
    Mismatch {
        /// Where the wrong key came from.
        from: KeySource,
        /// The key id the store recorded.
        expected: String,
        /// The configured key's id.
        found: String,
    },
    /// A key with the recorded id whose MAC differs: a forged or corrupted record.
    #[error(
        "the store's key record for master key {key_id} does not verify under {from}: the table master_key_check was altered, or the key is not the original"
    )]
    Forged {
        /// Where the key came from.
        from: KeySource,
        /// The key id.
        key_id: String,
    },
    /// Reading or writing the key record.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// Where a master key came from, as an operator would look for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// `TESSERA_MASTER_KEY` (or `--master-key`).
    Variable,
    /// The key file beside a SQLite database.
    File(PathBuf),
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Variable => f.write_str("TESSERA_MASTER_KEY"),
            Self::File(path) => write!(f, "the key file {}", path.display()),
        }
    }
}

/// Parses base64 of 32 bytes.
///
/// # Errors
/// [`KeyError::Malformed`].
pub fn parse_master_key(b64: &str, source: KeySource) -> Result<MasterKey, KeyError> {
    let bytes = B64
        .decode(b64.trim())
        .map_err(|_| KeyError::Malformed(source.clone()))?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| KeyError::Malformed(source))?;
    Ok(MasterKey::new(bytes))
}

/// The key file that belongs to a SQLite database: `<db>.key`.
pub fn key_file_for(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".key");
    PathBuf::from(name)
}

/// The SQLite file of `config`, absolute (messages name the file an operator can find).
fn sqlite_file(config: &Config) -> Option<PathBuf> {
    config
        .sqlite_path()
        .map(|p| std::path::absolute(&p).unwrap_or(p))
}

/// The configured key, without touching the store: from `TESSERA_MASTER_KEY`, else (SQLite)
/// from the key file; `None` if the key file does not exist yet.
///
/// # Errors
/// A malformed key; PostgreSQL without a key; an unreadable key file.
pub fn configured_key(config: &Config) -> Result<Option<(MasterKey, KeySource)>, KeyError> {
    if let Some(b64) = &config.master_key {
        return Ok(Some((
            parse_master_key(b64, KeySource::Variable)?,
            KeySource::Variable,
        )));
    }
    let Some(db) = sqlite_file(config) else {
        return Err(KeyError::Required);
    };
    let path = key_file_for(&db);
    let io = |source| KeyError::File {
        path: path.clone(),
        source,
    };
    match fs::read_to_string(&path) {
        Ok(text) => {
            let mode = fs::metadata(&path).map_err(io)?.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "key file is readable by others; chmod 600 it");
            }
            let source = KeySource::File(path.clone());
            Ok(Some((parse_master_key(&text, source.clone())?, source)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(e)),
    }
}

/// The key record of a store, if it has one.
///
/// # Errors
/// Database errors.
pub async fn recorded_check(db: &Db) -> Result<Option<KeyCheck>, sqlx::Error> {
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT key_id, mac FROM master_key_check ORDER BY recorded_at LIMIT 1")
            .fetch_optional(&db.pool)
            .await?;
    Ok(row.map(|(key_id, mac)| KeyCheck { key_id, mac }))
}

/// Whether the (migrated) store holds anything sealed under a key: events or a key record.
async fn holds_data(db: &Db) -> Result<bool, sqlx::Error> {
    // Counts, not EXISTS: SQLite answers EXISTS with an integer, PostgreSQL with a boolean.
    let found: i64 = sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM (SELECT 1 FROM events LIMIT 1) AS e) \
              + (SELECT COUNT(*) FROM master_key_check)",
    )
    .fetch_one(&db.pool)
    .await?;
    Ok(found > 0)
}

/// The master key for the (migrated) store `db`, checked against the store's key record.
/// On SQLite without `TESSERA_MASTER_KEY`, the key file is generated (mode 0600) only when the
/// store holds nothing yet. A store without a record gets one for this key (first start, or a
/// store from before records were kept).
///
/// # Errors
/// See [`KeyError`].
pub async fn load_master_key(config: &Config, db: &Db) -> Result<MasterKey, KeyError> {
    let (key, source) = match configured_key(config)? {
        Some(found) => found,
        None => {
            let database = sqlite_file(config).ok_or(KeyError::Required)?;
            let key_file = key_file_for(&database);
            if holds_data(db).await? {
                return Err(KeyError::Missing { database, key_file });
            }
            let key = generate_key_file(&key_file)?;
            (key, KeySource::File(key_file))
        }
    };
    let mine = key.check();
    match recorded_check(db).await? {
        Some(recorded) if recorded.key_id != mine.key_id => Err(KeyError::Mismatch {
            from: source,
            expected: recorded.key_id,
            found: mine.key_id,
        }),
        Some(recorded) if recorded.mac != mine.mac => Err(KeyError::Forged {
            from: source,
            key_id: mine.key_id,
        }),
        Some(_) => Ok(key),
        None => {
            sqlx::query(
                "INSERT INTO master_key_check (key_id, mac, recorded_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (key_id) DO NOTHING",
            )
            .bind(&mine.key_id)
            .bind(&mine.mac)
            .bind(Utc::now().to_rfc3339())
            .execute(&db.pool)
            .await?;
            // Two nodes may race on a first start: whichever record won is the store's key.
            match recorded_check(db).await? {
                Some(recorded) if recorded.key_id != mine.key_id => Err(KeyError::Mismatch {
                    from: source,
                    expected: recorded.key_id,
                    found: mine.key_id,
                }),
                _ => {
                    tracing::info!(key_id = %mine.key_id, "recorded the store's master key");
                    Ok(key)
                }
            }
        }
    }
}

fn generate_key_file(path: &Path) -> Result<MasterKey, KeyError> {
    let io = |source| KeyError::File {
        path: path.to_path_buf(),
        source,
    };
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    file.write_all(B64.encode(bytes).as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    tracing::info!(path = %path.display(), "generated a new master key for a new store");
    Ok(MasterKey::new(bytes))
}
