//! Captures every log line the process writes, at TRACE level and from every crate (`log`
//! records included), for tests that check no secret reaches a log. The capture is global:
//! threads the server does not own (the SQLite driver's workers) log too, so once a test
//! installs it, everything else running in the test binary is captured as well, which only
//! widens what the secret checks cover.

use std::{
    io::Write,
    sync::{Arc, Mutex, OnceLock},
};

use tracing::Level;

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The process-wide TRACE log.
#[derive(Clone)]
pub struct LogCapture {
    buffer: Buffer,
}

impl LogCapture {
    /// Installs the capture (once per process) and returns it.
    ///
    /// # Panics
    /// If another global subscriber was installed first.
    pub fn global() -> Self {
        static CAPTURE: OnceLock<LogCapture> = OnceLock::new();
        CAPTURE
            .get_or_init(|| {
                let buffer = Buffer::default();
                let writer = buffer.clone();
                let subscriber = tracing_subscriber::fmt()
                    .with_max_level(Level::TRACE)
                    .with_ansi(false)
                    .with_writer(move || writer.clone())
                    .finish();
                tracing::subscriber::set_global_default(subscriber)
                    .expect("no other global subscriber");
                // `log` records (crates that use `log`, not `tracing`) into the same place.
                tracing_log::LogTracer::init().expect("no other logger");
                Self { buffer }
            })
            .clone()
    }

    /// Everything logged since the capture was installed.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buffer.0.lock().expect("lock")).into_owned()
    }
}
