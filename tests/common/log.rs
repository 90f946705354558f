//! A log sink tests can read back, for tests that install the process-wide tracing subscriber.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

#[derive(Clone, Default)]
pub struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// The lines holding every one of `parts`.
    pub fn lines_with(&self, parts: &[&str]) -> Vec<String> {
        self.text().lines().filter(|l| parts.iter().all(|p| l.contains(p))).map(str::to_owned).collect()
    }
}

/// The warnings and errors switchhook (and sqlx, under it) logs, from every test of this binary
/// (they share the process-wide subscriber), so a test looks for lines holding its own names.
pub fn warnings() -> LogBuffer {
    static LOG: OnceLock<LogBuffer> = OnceLock::new();
    LOG.get_or_init(|| {
        let buffer = LogBuffer::default();
        let writer = buffer.clone();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_env_filter(tracing_subscriber::EnvFilter::new("switchhook=warn,sqlx=warn"))
            .with_writer(move || writer.clone())
            .init();
        buffer
    })
    .clone()
}
