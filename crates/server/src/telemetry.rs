//! Logging and trace export setup. Log lines carry ids, never keys: secrets are `Secret` values that format as
//! `[redacted]`, and the request logger records only method, path, status and latency. Spans go to an OTLP
//! collector only when `tracing.otlp_endpoint` is set; they carry the same kind of fields as log lines.

use crate::config::{LogFormat, LogSettings, TracingSettings};
use ragvault_telemetry::{TelemetryError, TraceExport};
use std::sync::OnceLock;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// How many log lines may wait for the log thread; past it new lines are dropped (and counted) rather than
/// making a request wait for its log line.
const LOG_LINES_WAITING: usize = 64 * 1024;

/// Lines dropped because the log thread could not keep up (`ragvault_log_lines_dropped_total`).
static LOG_LINES_DROPPED: OnceLock<tracing_appender::non_blocking::ErrorCounter> = OnceLock::new();

/// Keeps the log thread running; dropping it writes out the lines still waiting (for at most a second,
/// so a reader that stopped reading cannot hold up the exit).
pub struct LogThread {
    _flush_on_drop: tracing_appender::non_blocking::WorkerGuard,
}

/// A log writer whose lines go to `output` from a thread of its own. Every request writes an access line: a
/// slow reader of the service's stderr (a log shipper falling behind, a pipe nobody drains) would otherwise
/// stall the worker thread that wrote it, and with it every request on that thread.
pub fn off_thread<W: std::io::Write + Send + 'static>(
    output: W,
) -> (tracing_appender::non_blocking::NonBlocking, LogThread) {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(LOG_LINES_WAITING)
        .lossy(true)
        .thread_name("ragvault-log")
        .finish(output);
    let _ = LOG_LINES_DROPPED.set(writer.error_counter());
    (
        writer,
        LogThread {
            _flush_on_drop: guard,
        },
    )
}

/// Log lines dropped so far because too many were waiting for the log thread.
pub fn log_lines_dropped() -> u64 {
    LOG_LINES_DROPPED
        .get()
        .map_or(0, |counter| counter.dropped_lines() as u64)
}

/// Installs the global subscriber, writing logs to `writer` and exporting spans when configured. Keep the
/// returned exporter alive for the life of the process: dropping it flushes and stops export. `RUST_LOG`, when
/// set, overrides `log.level`.
pub fn init<W>(
    log: &LogSettings,
    tracing: &TracingSettings,
    writer: W,
) -> Result<Option<TraceExport>, TelemetryError>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let (subscriber, export) = subscriber(log, tracing, writer)?;
    // A second call (tests) keeps the first subscriber instead of panicking.
    let _ = tracing::subscriber::set_global_default(subscriber);
    Ok(export)
}

/// The subscriber [`init`] installs, for callers that scope it themselves (a test's own trace export).
pub fn subscriber<W>(
    log: &LogSettings,
    tracing: &TracingSettings,
    writer: W,
) -> Result<(impl tracing::Subscriber + Send + Sync, Option<TraceExport>), TelemetryError>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let logs: Box<dyn Layer<Registry> + Send + Sync> = match log.format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
    };
    let export = tracing
        .otlp_export()
        .map(|o| TraceExport::start(&o))
        .transpose()?;
    // Only ragvault's own spans and events are exported, whatever the log level: libraries' spans (sqlx,
    // hyper) would carry statement text and connection details into a system outside the boundary.
    let traces = export.as_ref().map(|e| {
        e.layer()
            .with_filter(Targets::new().with_target("ragvault", tracing::Level::INFO))
    });
    Ok((Registry::default().with(logs).with(traces), export))
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
