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
use tessera_domain::crypto::{EncryptedSecret, KeyCheck, KeyRing, MasterKey};
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
    /// The store's root key (which its keyed hashes and signing keys come from) is neither in
    /// the ring nor sealed under a key of it.
    #[error(
        "the store was created with master key {root}, which is not configured, and it is not sealed under any configured key: put {root} back (as TESSERA_PREVIOUS_MASTER_KEYS or a line of the key file) and start once"
    )]
    RootUnavailable {
        /// The id of the store's first key.
        root: String,
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
    /// `TESSERA_PREVIOUS_MASTER_KEYS`.
    Previous,
    /// The key file beside a SQLite database.
    File(PathBuf),
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Variable => f.write_str("TESSERA_MASTER_KEY"),
            Self::Previous => f.write_str("TESSERA_PREVIOUS_MASTER_KEYS"),
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

/// The first line of a key file written by `tessera key rotate`.
const KEY_FILE_HEADER: &str = "# Tessera master keys, base64. The last line seals new secrets; the lines above only open\n# what they sealed. Remove a line only when `tessera key check` says no secret needs it.\n";

/// The keys of a key file: one base64 key per line (`#` lines are comments), the last one
/// active. A file of one line (as every file before rotation was) is a ring of one.
///
/// # Errors
/// [`KeyError::Malformed`] for a bad line or a file without a key.
pub fn parse_key_file(text: &str, source: &KeySource) -> Result<KeyRing, KeyError> {
    let mut keys = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| parse_master_key(l, source.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    let active = keys
        .pop()
        .ok_or_else(|| KeyError::Malformed(source.clone()))?;
    keys.reverse();
    Ok(KeyRing::new(active, keys))
}

/// The configured keys, without touching the store: `TESSERA_MASTER_KEY` (active) and
/// `TESSERA_PREVIOUS_MASTER_KEYS`, else (SQLite) the key file; `None` if the key file does
/// not exist yet.
///
/// # Errors
/// A malformed key; PostgreSQL without a key; an unreadable key file.
pub fn configured_ring(config: &Config) -> Result<Option<(KeyRing, KeySource)>, KeyError> {
    if let Some(b64) = &config.master_key {
        let active = parse_master_key(b64, KeySource::Variable)?;
        let previous = config
            .previous_master_keys
            .iter()
            .filter(|k| !k.trim().is_empty())
            .map(|k| parse_master_key(k, KeySource::Previous))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Some((KeyRing::new(active, previous), KeySource::Variable)));
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
            Ok(Some((parse_key_file(&text, &source)?, source)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(e)),
    }
}

/// The configured active key (see [`configured_ring`]).
///
/// # Errors
/// As [`configured_ring`].
pub fn configured_key(config: &Config) -> Result<Option<(MasterKey, KeySource)>, KeyError> {
    Ok(configured_ring(config)?.map(|(ring, source)| (ring.active().clone(), source)))
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

/// Every key record of a store, oldest first (the first is the key it was created with).
///
/// # Errors
/// Database errors.
pub async fn recorded_checks(db: &Db) -> Result<Vec<KeyCheck>, sqlx::Error> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT key_id, mac FROM master_key_check ORDER BY recorded_at, key_id")
            .fetch_all(&db.pool)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(key_id, mac)| KeyCheck { key_id, mac })
        .collect())
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

/// The keys a node works with: the ring (the active key seals secrets at rest, every key opens
/// what it sealed) and the store's root key, the one it was created with, which the keyed
/// hashes (API keys, codes, device tokens) and the token-signing keys are derived from: those
/// cannot be re-derived after a rotation (only their hashes are stored), so the root outlives
/// the key itself, kept sealed under each later key (table `master_key_roots`).
#[derive(Clone, Debug)]
pub struct Keys {
    /// The configured ring.
    pub ring: KeyRing,
    /// The store's root key.
    pub root: MasterKey,
}

/// The keys for the (migrated) store `db`, checked against the store's key records.
/// On SQLite without `TESSERA_MASTER_KEY`, the key file is generated (mode 0600) only when the
/// store holds nothing yet. A store without a record gets one for the active key (first start,
/// or a store from before records were kept). After a rotation, the ring is accepted if one of
/// its keys is recorded; the new active key is recorded then, and the root key sealed under it.
///
/// # Errors
/// See [`KeyError`].
pub async fn load_keys(config: &Config, db: &Db) -> Result<Keys, KeyError> {
    let (ring, source) = match configured_ring(config)? {
        Some(found) => found,
        None => {
            let database = sqlite_file(config).ok_or(KeyError::Required)?;
            let key_file = key_file_for(&database);
            if holds_data(db).await? {
                return Err(KeyError::Missing { database, key_file });
            }
            let key = generate_key_file(&key_file)?;
            (KeyRing::new(key, Vec::new()), KeySource::File(key_file))
        }
    };
    let mut records = recorded_checks(db).await?;
    for key in ring.keys() {
        let mine = key.check();
        if records
            .iter()
            .any(|r| r.key_id == mine.key_id && r.mac != mine.mac)
        {
            return Err(KeyError::Forged {
                from: source,
                key_id: mine.key_id,
            });
        }
    }
    let known = |records: &[KeyCheck], key: &MasterKey| {
        let id = key.check().key_id;
        records.iter().any(|r| r.key_id == id)
    };
    if !records.is_empty() && !ring.keys().any(|k| known(&records, k)) {
        return Err(KeyError::Mismatch {
            from: source,
            expected: records
                .iter()
                .map(|r| r.key_id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            found: ring.active().check().key_id,
        });
    }
    if !known(&records, ring.active()) {
        let mine = ring.active().check();
        let turn = db.write_turn().await;
        sqlx::query(
            "INSERT INTO master_key_check (key_id, mac, recorded_at) VALUES ($1, $2, $3) \
             ON CONFLICT (key_id) DO NOTHING",
        )
        .bind(&mine.key_id)
        .bind(&mine.mac)
        .bind(Utc::now().to_rfc3339())
        .execute(&db.pool)
        .await?;
        drop(turn);
        let first = records.is_empty();
        records = recorded_checks(db).await?;
        // Two nodes may race on a first start: whichever record won is the store's key.
        if first && !ring.keys().any(|k| known(&records, k)) {
            return Err(KeyError::Mismatch {
                from: source,
                expected: records
                    .first()
                    .map(|r| r.key_id.clone())
                    .unwrap_or_default(),
                found: mine.key_id,
            });
        }
        tracing::info!(key_id = %mine.key_id, "recorded the store's master key");
    }
    let root_id = records
        .first()
        .map(|r| r.key_id.clone())
        .unwrap_or_default();
    let root = match ring.keys().find(|k| k.check().key_id == root_id) {
        Some(root) => root.clone(),
        None => sealed_root(db, &ring, &root_id)
            .await?
            .ok_or(KeyError::RootUnavailable { root: root_id })?,
    };
    if root.check().key_id != ring.active().check().key_id {
        let sealed = serde_json::to_string(&root.seal_under(ring.active()))
            .expect("a sealed key serialises");
        let _turn = db.write_turn().await;
        sqlx::query(
            "INSERT INTO master_key_roots (key_id, sealed, recorded_at) VALUES ($1, $2, $3) \
             ON CONFLICT (key_id) DO NOTHING",
        )
        .bind(ring.active().check().key_id)
        .bind(sealed)
        .bind(Utc::now().to_rfc3339())
        .execute(&db.pool)
        .await?;
    }
    Ok(Keys { ring, root })
}

/// The root key `root_id`, sealed under a key of `ring`, if the store keeps it so.
async fn sealed_root(
    db: &Db,
    ring: &KeyRing,
    root_id: &str,
) -> Result<Option<MasterKey>, KeyError> {
    let rows: Vec<(String,)> = sqlx::query_as("SELECT sealed FROM master_key_roots")
        .fetch_all(&db.pool)
        .await?;
    Ok(rows
        .iter()
        .filter_map(|(json,)| serde_json::from_str::<EncryptedSecret>(json).ok())
        .filter_map(|sealed| MasterKey::unseal(&sealed, ring).ok())
        .find(|k| k.check().key_id == root_id))
}

/// The active master key for `db` (see [`load_keys`]).
///
/// # Errors
/// See [`KeyError`].
pub async fn load_master_key(config: &Config, db: &Db) -> Result<MasterKey, KeyError> {
    Ok(load_keys(config, db).await?.ring.active().clone())
}

/// `tessera key rotate` on SQLite: a new key, appended to the key file as the active one
/// (the file is rewritten through a 0600 temporary file and a rename). Returns the new ring.
///
/// # Errors
/// No key file; an unreadable key file; I/O.
pub fn rotate_key_file(config: &Config) -> Result<KeyRing, KeyError> {
    let database = sqlite_file(config).ok_or(KeyError::Required)?;
    let path = key_file_for(&database);
    let io = |source| KeyError::File {
        path: path.clone(),
        source,
    };
    let text = fs::read_to_string(&path).map_err(io)?;
    let source = KeySource::File(path.clone());
    let old = parse_key_file(&text, &source)?;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let mut keys: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let new = B64.encode(bytes);
    keys.push(&new);
    let body = format!("{KEY_FILE_HEADER}{}\n", keys.join("\n"));
    let mut tmp = path.clone().into_os_string();
    tmp.push(".new");
    let tmp = PathBuf::from(tmp);
    let _ = fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(body.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    fs::rename(&tmp, &path).map_err(io)?;
    let previous = std::iter::once(old.active().clone())
        .chain(old.keys().skip(1).cloned())
        .collect();
    Ok(KeyRing::new(MasterKey::new(bytes), previous))
}

/// A new random key, base64 (`tessera key rotate --print`).
pub fn new_key_b64() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    B64.encode(bytes)
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
