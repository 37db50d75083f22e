//! Cross-cutting request handling: request ids, the error envelope, access logging and timeouts.

use crate::error::{code_for_status, ErrorBody};
use crate::extract::RequestId;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ragvault_metrics::HistogramVec;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Assigns the request id (propagating a well-formed incoming one), logs the request once, and renders
/// every error response as the JSON envelope. It sits outermost, so errors produced by inner layers (body
/// limit, timeout, unknown route) are covered too.
pub async fn request_envelope(
    State(http_metrics): State<Arc<HistogramVec>>,
    mut req: Request,
    next: Next,
) -> Response {
    let method = req.method().clone();
    let request_id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|id| is_acceptable_request_id(id))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    req.extensions_mut().insert(RequestId(request_id.clone()));

    // Only method and path are logged: headers carry credentials and query strings may carry user text.
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %req.method(),
        path = %req.uri().path(),
        actor = tracing::field::Empty,
        otel.kind = "server",
        http.route = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
    );
    // A caller's `traceparent` makes this request part of its trace (when traces are exported at all).
    ragvault_telemetry::continue_trace(&span, req.headers());
    let started = Instant::now();
    let response = next.run(req).instrument(span.clone()).await;
    // The route template, never the raw path: ids in paths would make a series per document.
    let route = response
        .extensions()
        .get::<RouteTemplate>()
        .map_or("unmatched", |r| r.0.as_str())
        .to_owned();
    let mut response = render_error(response, &request_id);
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    let status = response.status().as_u16();
    span.record("http.route", route.as_str());
    span.record("http.response.status_code", status);
    if let Some(traceparent) = ragvault_telemetry::traceparent_of(&span) {
        response
            .headers_mut()
            .insert(ragvault_telemetry::TRACEPARENT, traceparent);
    }
    let elapsed = started.elapsed();
    append_server_stage(&mut response, elapsed);
    http_metrics.observe(&[&route, method.as_str(), &status.to_string()], elapsed);
    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    span.in_scope(|| {
        if status >= 500 {
            tracing::warn!(status, latency_ms, "request failed");
        } else {
            tracing::info!(status, latency_ms, "request finished");
        }
    });
    response
}

/// A handler's stage times become the `server-timing` header here, with one more entry, `server`: the whole
/// time the request spent inside the service's router (middleware and extractors, authentication included,
/// around the handler's `total`), so a client can tell time spent in ragvault from time on the wire or
/// waiting to be read.
fn append_server_stage(response: &mut Response, elapsed: Duration) {
    if let Some(timing) = response
        .extensions_mut()
        .remove::<crate::routes::ask::ServerTiming>()
    {
        let value = timing.header(elapsed);
        response.headers_mut().insert("server-timing", value);
    }
}

/// While Postgres does not answer, API requests (all of which need it) fail at once with `503
/// database_unavailable` instead of each waiting out the pool's acquire timeout and holding a connection
/// slot, a task and the caller meanwhile. Health, metrics and the dashboard's static files pass.
pub async fn database_gate(
    State(database): State<Arc<ragvault_store::DatabaseWatch>>,
    req: Request,
    next: Next,
) -> Response {
    if !database.is_available() && req.uri().path().starts_with("/v1/") {
        let mut response = crate::error::ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the database is unavailable; retry shortly",
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    }
    next.run(req).await
}

/// The matched route's template (`/v1/documents/{id}`), handed from the routing layer out to
/// [`request_envelope`] in the response's extensions.
#[derive(Clone, Debug)]
pub struct RouteTemplate(pub String);

/// Runs inside routing, where the matched route is known, and tags the response with its template.
pub async fn tag_route(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned());
    // The handler's span, named by method and route template (`POST /v1/ask`) as trace viewers list
    // operations: an OpenTelemetry span cannot be renamed once it has children, and the outer request span
    // starts before routing.
    let handler = tracing::info_span!(
        "handler",
        otel.name = format!(
            "{} {}",
            req.method(),
            route.as_deref().unwrap_or("unmatched")
        ),
    );
    let mut response = next.run(req).instrument(handler).await;
    if let Some(route) = route {
        response.extensions_mut().insert(RouteTemplate(route));
    }
    response
}

/// Ids we echo back and write to logs: short, printable, no spaces, so they cannot forge log lines.
fn is_acceptable_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

fn render_error(response: Response, request_id: &str) -> Response {
    let (mut parts, body) = response.into_parts();
    if parts.extensions.get::<crate::routes::HtmlPage>().is_some() {
        return Response::from_parts(parts, body);
    }
    let error = match parts.extensions.remove::<ErrorBody>() {
        Some(error) => error,
        None => {
            let is_json = parts
                .headers
                .get(header::CONTENT_TYPE)
                .is_some_and(|ct| ct.as_bytes().starts_with(b"application/json"));
            if !(parts.status.is_client_error() || parts.status.is_server_error()) || is_json {
                return Response::from_parts(parts, body);
            }
            let (code, message) = code_for_status(parts.status);
            ErrorBody {
                code,
                message: message.to_owned(),
                extra: None,
            }
        }
    };
    let mut envelope = serde_json::json!({
        "error": {"code": error.code, "message": error.message, "request_id": request_id}
    });
    if let (Some(serde_json::Value::Object(extra)), Some(map)) =
        (error.extra, envelope.as_object_mut())
    {
        map.extend(extra);
    }
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(envelope.to_string()))
}

/// Bounds the time to produce a response head. Streaming bodies (SSE) are not cut off once they started.
pub async fn timeout(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(timeout_secs = limit.as_secs(), "request timed out");
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
    }
}

/// Turns a panicking handler into a plain 500 (rendered as the envelope by [`request_envelope`]). The
/// panic payload is neither logged nor returned: it may hold request data.
pub fn panic_response(_payload: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("handler panicked");
    StatusCode::INTERNAL_SERVER_ERROR.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    /// The same layer order as the real router, around test handlers.
    fn wrapped(router: Router) -> Router {
        router
            .layer(tower_http::catch_panic::CatchPanicLayer::custom(
                panic_response,
            ))
            .layer(axum::middleware::from_fn_with_state(
                Duration::from_millis(50),
                timeout,
            ))
            .layer(axum::middleware::from_fn_with_state(
                Arc::new(HistogramVec::new(&["route", "method", "status"], &[1.0])),
                request_envelope,
            ))
    }

    async fn call(router: Router, path: &str) -> (StatusCode, serde_json::Value) {
        let request = Request::builder().uri(path).body(Body::empty()).unwrap();
        let response = router.oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn slow_handlers_time_out_with_the_envelope() {
        let router = wrapped(Router::new().route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        ));
        let (status, body) = call(router, "/slow").await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(body["error"]["code"], "timeout");
        assert!(body["error"]["request_id"].is_string());
    }

    #[tokio::test]
    async fn panics_become_500_without_the_panic_message() {
        let router = wrapped(Router::new().route(
            "/boom",
            get(|| async {
                if true {
                    panic!("secret-ish detail rvk_abc");
                }
                "unreachable"
            }),
        ));
        let (status, body) = call(router, "/boom").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["error"]["code"], "internal_error");
        assert!(!body.to_string().contains("secret-ish"));
    }

    #[test]
    fn request_id_filter() {
        assert!(is_acceptable_request_id("abc-123_x.y:z"));
        assert!(!is_acceptable_request_id(""));
        assert!(!is_acceptable_request_id("has space"));
        assert!(!is_acceptable_request_id("line\nbreak"));
        assert!(!is_acceptable_request_id(&"a".repeat(129)));
    }
}
