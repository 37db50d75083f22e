//! One process-wide log capture at debug level, so tests can assert that no key material was logged.

use ragvault_server::config::{LogFormat, LogSettings};
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

static BUFFER: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

fn buffer() -> Arc<Mutex<Vec<u8>>> {
    BUFFER
        .get_or_init(|| Arc::new(Mutex::new(Vec::new())))
        .clone()
}

/// A `Write` into shared memory: a log writer whose output a test reads back.
#[derive(Clone, Default)]
pub struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl SharedBuffer {
    /// Everything written so far.
    pub fn contents(&self) -> Vec<u8> {
        self.0.lock().expect("log buffer").clone()
    }
}

impl Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

static INSTALLED: OnceLock<()> = OnceLock::new();

pub(crate) fn install() {
    INSTALLED.get_or_init(|| {
        let capture = SharedBuffer(buffer());
        let settings = LogSettings {
            format: LogFormat::Json,
            level: "debug".to_owned(),
        };
        let _ = ragvault_server::telemetry::init(&settings, &Default::default(), move || {
            capture.clone()
        });
    });
}

/// Everything logged so far by every test in this process.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&buffer().lock().expect("log buffer")).into_owned()
}

/// For benchmark binaries: log as a deployed service does (JSON to stderr at `level`) instead of capturing
/// everything at debug level in memory, which would be part of what is measured. Call before spawning the app;
/// afterwards [`captured_logs`] stays empty.
pub fn log_to_stderr(level: &str) {
    INSTALLED.get_or_init(|| {
        let settings = LogSettings {
            format: LogFormat::Json,
            level: level.to_owned(),
        };
        let _ = ragvault_server::telemetry::init(&settings, &Default::default(), std::io::stderr);
    });
}
