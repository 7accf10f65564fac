//! Capturing what the library logs through `tracing`, to assert on it.
//!
//! [`captured`] installs one global subscriber per test binary: the writer
//! and the supervisor log from threads of their own, so a thread-local
//! subscriber would miss them. A binary that uses it installs no other.

use std::io;
use std::sync::{Arc, Mutex, OnceLock};

/// A `tracing` writer that keeps every byte it is given.
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    /// A subscriber writing events at `level` and above, without colours,
    /// into this capture.
    pub fn subscriber(&self, level: tracing::Level) -> impl tracing::Subscriber + Send + Sync {
        let writer = self.clone();
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(level)
            .finish()
    }

    /// Everything captured so far.
    pub fn text(&self) -> String {
        let bytes = self.0.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Installs a subscriber capturing what is logged at INFO and above, once,
/// for every thread; shared by every test of the binary.
pub fn captured() -> &'static Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture = Capture::default();
        tracing::subscriber::set_global_default(capture.subscriber(tracing::Level::INFO))
            .expect("no other global subscriber in this test binary");
        capture
    })
}

/// Captured lines that contain every one of `parts`.
pub fn log_lines(parts: &[&str]) -> Vec<String> {
    captured()
        .text()
        .lines()
        .filter(|line| parts.iter().all(|p| line.contains(p)))
        .map(str::to_owned)
        .collect()
}
