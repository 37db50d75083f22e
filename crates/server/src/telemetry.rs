//! Logging setup. Log lines carry ids, never keys: secrets are `Secret` values that format as `[redacted]`,
//! and the request logger records only method, path, status and latency.

use crate::config::{LogFormat, LogSettings};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber, writing to `writer`. `RUST_LOG`, when set, overrides `log.level`.
pub fn init<W>(settings: &LogSettings, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    // try_init: a second call (tests) keeps the first subscriber instead of panicking.
    let _ = match settings.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Replaces the default panic hook, which prints the panic message to stderr: a message may contain request
/// data or key material. The replacement logs where the panic happened, never what it said.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!(%location, "panic (message withheld: it may contain sensitive data)");
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_panic_hook_reports_where_but_never_what() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .finish();
        let previous = std::panic::take_hook();
        install_panic_hook();
        tracing::subscriber::with_default(subscriber, || {
            let result = std::panic::catch_unwind(|| {
                panic!("leaked rvk_abcdefghijkl_SECRETSECRETSECRET and sk-live-123");
            });
            assert!(result.is_err());
        });
        std::panic::set_hook(previous);
        let logged = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert!(logged.contains("message withheld"), "{logged}");
        assert!(logged.contains("telemetry.rs"), "{logged}");
        assert!(
            !logged.contains("SECRET") && !logged.contains("sk-live"),
            "{logged}"
        );
    }
}
