//! Distributed traces: OpenTelemetry span export over OTLP/HTTP (protobuf) and W3C `traceparent` propagation.
//!
//! ragvault's spans are ordinary `tracing` spans (`request`, `auth`, `embed`, `search`, `unseal`, `generate`);
//! [`TraceExport::layer`] turns them into OpenTelemetry spans when an endpoint is configured. What a span
//! carries is decided where it is created, and those fields are ids, counts, names of providers and models and
//! key versions: never prompt text, document text or keys. Log events inside a span become span events, and
//! log lines are already free of secrets (tested in the server). Export runs on the SDK's own thread with a
//! blocking client, so a slow or absent collector never holds up a request: spans beyond the queue are dropped.

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use opentelemetry_sdk::Resource;
use std::time::Duration;
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::registry::LookupSpan;

/// The W3C trace-context header, read from requests and written to provider calls and responses.
pub const TRACEPARENT: &str = "traceparent";

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("trace export endpoint {endpoint:?} is not an http(s) URL")]
    InvalidEndpoint { endpoint: String },
    #[error("trace exporter could not be built: {0}")]
    Exporter(String),
}

/// Where and how spans are exported.
#[derive(Clone, Debug)]
pub struct OtlpExport {
    /// The collector's OTLP/HTTP base URL (`http://jaeger:4318`); `/v1/traces` is appended unless the URL
    /// already names a path.
    pub endpoint: String,
    pub service_name: String,
    /// Fraction of new traces sampled (0..=1); a caller's sampled `traceparent` is always followed.
    pub sample_ratio: f64,
    /// How long finished spans wait to be batched before export.
    pub export_delay: Duration,
    pub export_timeout: Duration,
}

/// A running exporter. Dropping it flushes what is queued and stops the export thread.
pub struct TraceExport {
    provider: SdkTracerProvider,
}

/// Set once any exporter has started in this process. Until then no span has a trace context, so the
/// per-request propagation below returns at once instead of asking every span for one.
static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn exporting() -> bool {
    EXPORTING.load(std::sync::atomic::Ordering::Relaxed)
}

impl TraceExport {
    pub fn start(export: &OtlpExport) -> Result<TraceExport, TelemetryError> {
        let endpoint = traces_url(&export.endpoint)?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint)
            .with_timeout(export.export_timeout)
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        let batches = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_scheduled_delay(export.export_delay)
                    .build(),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(batches)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                export.sample_ratio.clamp(0.0, 1.0),
            ))))
            .with_resource(
                Resource::builder()
                    .with_service_name(export.service_name.clone())
                    .build(),
            )
            .build();
        EXPORTING.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(TraceExport { provider })
    }

    /// The `tracing` layer that records spans into this exporter.
    pub fn layer<S>(&self) -> impl tracing_subscriber::Layer<S>
    where
        S: Subscriber + for<'span> LookupSpan<'span>,
    {
        tracing_opentelemetry::layer().with_tracer(self.provider.tracer("ragvault"))
    }

    /// Exports everything finished so far (tests; shutdown).
    pub fn flush(&self) {
        let _ = self.provider.force_flush();
    }
}

impl Drop for TraceExport {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

fn traces_url(endpoint: &str) -> Result<String, TelemetryError> {
    let invalid = || TelemetryError::InvalidEndpoint {
        endpoint: endpoint.to_owned(),
    };
    let uri: http::Uri = endpoint.parse().map_err(|_| invalid())?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(invalid());
    }
    Ok(match uri.path() {
        "" | "/" => format!("{}/v1/traces", endpoint.trim_end_matches('/')),
        _ => endpoint.to_owned(),
    })
}

/// Makes `span` a child of the caller's trace when the request carries a valid `traceparent`. Without trace
/// export (no OpenTelemetry layer), this does nothing.
pub fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    if !exporting() {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// `traceparent` (and `tracestate`) for an outgoing call made inside the current span; empty without export.
pub fn outgoing_headers() -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    if !exporting() {
        return headers;
    }
    let context = tracing::Span::current().context();
    if context.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(&mut headers));
    }
    headers
}

/// The `traceparent` of `span`, for the response (so a caller can find its request's trace).
pub fn traceparent_of(span: &tracing::Span) -> Option<http::HeaderValue> {
    if !exporting() {
        return None;
    }
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut headers = http::HeaderMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(&mut headers));
    headers.remove(TRACEPARENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_get_the_traces_path_unless_they_name_one() {
        assert_eq!(
            traces_url("http://jaeger:4318").unwrap(),
            "http://jaeger:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://jaeger:4318/").unwrap(),
            "http://jaeger:4318/v1/traces"
        );
        assert_eq!(
            traces_url("https://otel.example/custom/traces").unwrap(),
            "https://otel.example/custom/traces"
        );
        for bad in ["jaeger:4318", "ftp://x/", "not a url", ""] {
            assert!(traces_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn without_export_nothing_is_propagated() {
        let mut incoming = http::HeaderMap::new();
        incoming.insert(
            TRACEPARENT,
            http::HeaderValue::from_static(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        );
        let span = tracing::info_span!("request");
        continue_trace(&span, &incoming);
        let _entered = span.enter();
        assert!(outgoing_headers().is_empty());
        assert!(traceparent_of(&span).is_none());
    }
}
