//! Loading key material: the only place that reads `TESSERA_MASTER_KEY` or the key file.

use std::{
    fs::{self, OpenOptions},
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use rand::RngCore;
use tessera_domain::crypto::MasterKey;

use crate::config::Config;

/// Why no master key could be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Not base64 of exactly 32 bytes.
    #[error("TESSERA_MASTER_KEY must be base64 of exactly 32 bytes")]
    Malformed,
    /// PostgreSQL is shared by several nodes, so the key must come from configuration.
    #[error("TESSERA_MASTER_KEY is required with PostgreSQL")]
    Required,
    /// The key file could not be read or written.
    #[error("key file {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Parses base64 of 32 bytes.
///
/// # Errors
/// [`KeyError::Malformed`].
pub fn parse_master_key(b64: &str) -> Result<MasterKey, KeyError> {
    let bytes = B64.decode(b64.trim()).map_err(|_| KeyError::Malformed)?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| KeyError::Malformed)?;
    Ok(MasterKey::new(bytes))
}

/// The key file that belongs to a SQLite database: `<db>.key`.
pub fn key_file_for(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".key");
    PathBuf::from(name)
}

/// The master key: from configuration if set; otherwise, on SQLite, from the key file beside
/// the database, generated (mode 0600) on first start.
///
/// # Errors
/// See [`KeyError`].
pub fn load_master_key(config: &Config) -> Result<MasterKey, KeyError> {
    if let Some(b64) = &config.master_key {
        return parse_master_key(b64);
    }
    let Some(db) = config.sqlite_path() else {
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
            parse_master_key(&text)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut bytes);
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(io)?;
            file.write_all(B64.encode(bytes).as_bytes()).map_err(io)?;
            file.sync_all().map_err(io)?;
            tracing::info!(path = %path.display(), "generated a new master key");
            Ok(MasterKey::new(bytes))
        }
        Err(e) => Err(io(e)),
    }
}
