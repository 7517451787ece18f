//! The development outbox: messages appended as JSON lines to a file only the owner can
//! read (mode 0600). Used for any channel without a real transport; the server says so at
//! start. It holds codes in the clear, so it is for development machines only.

use std::{
    fs::{self, OpenOptions},
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use serde_json::json;
use tokio::sync::Mutex;

use crate::delivery::{DeliveryError, Message};

/// An append-only file of messages.
#[derive(Debug)]
pub struct Outbox {
    path: PathBuf,
    lock: Mutex<()>,
}

impl Outbox {
    /// An outbox at `path` (created on first message).
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            lock: Mutex::new(()),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `message` as one JSON line.
    ///
    /// # Errors
    /// The file could not be written (transient: the disk may come back).
    pub async fn append(&self, message: &Message) -> Result<(), DeliveryError> {
        let line = json!({
            "at": chrono::Utc::now().to_rfc3339(),
            "channel": message.channel.as_str(),
            "to": message.to,
            "subject": message.subject,
            "body": message.body.expose(),
        })
        .to_string();
        let _guard = self.lock.lock().await;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || write_line(&path, &line))
            .await
            .map_err(|_| DeliveryError::transient("outbox writer stopped"))?
            .map_err(|e| DeliveryError::transient(format!("outbox: {}", e.kind())))
    }
}

fn write_line(path: &Path, line: &str) -> std::io::Result<()> {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    // A file created before (or by hand) with a wider mode is narrowed: it holds codes.
    let mode = file.metadata()?.permissions().mode();
    if mode & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(line.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_data()
}
