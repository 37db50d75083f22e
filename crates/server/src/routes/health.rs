use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use std::time::Duration;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    summary = "Liveness: the process is up",
    responses(
        (status = 200, body = crate::openapi::Health),
        (status = "default", description = "Error envelope with a stable `code`", body = crate::openapi::ErrorEnvelope),
    ),
)]
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when every dependency answers: Postgres and the key source (the index joins when it exists).
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    summary = "Readiness: Postgres, the key source and the index are usable",
    responses(
        (status = 200, body = crate::openapi::Readiness),
        (status = 503, description = "Not ready: `not_ready` with `checks`", body = crate::openapi::ErrorEnvelope),
        (status = "default", description = "Error envelope with a stable `code`", body = crate::openapi::ErrorEnvelope),
    ),
)]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let postgres = match tokio::time::timeout(CHECK_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("postgres: {}", short(&e.to_string()))),
        Err(_) => Err("postgres: no answer within 2s".to_owned()),
    };
    // An unreachable Vault degrades the service but does not stop it: valid leases keep serving until
    // their hard expiry. Any other key source failure (a missing or exposed key file) is fatal.
    let (key_source_state, key_source) =
        match tokio::time::timeout(CHECK_TIMEOUT, state.key_source.check()).await {
            Ok(Ok(())) => ("ok", Ok(())),
            Ok(Err(e)) if e.is_outage() => ("degraded", Ok(())),
            Ok(Err(e)) => (
                "failing",
                Err(format!("key_source ({}): {e}", state.key_source.name())),
            ),
            Err(_) => ("degraded", Ok(())),
        };
    let index = match tokio::time::timeout(CHECK_TIMEOUT, state.indexer.index().check()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("index: {}", short(&e.to_string()))),
        Err(_) => Err("index: no answer within 2s".to_owned()),
    };
    let checks = json!({
        "postgres": if postgres.is_ok() { "ok" } else { "failing" },
        "key_source": key_source_state,
        "key_source_kind": state.key_source.name(),
        "index": if index.is_ok() { "ok" } else { "failing" },
    });
    let failures: Vec<String> = [postgres.err(), key_source.err(), index.err()]
        .into_iter()
        .flatten()
        .collect();
    if failures.is_empty() {
        Ok(Json(json!({"status": "ready", "checks": checks})))
    } else {
        tracing::warn!(failures = ?failures, "not ready");
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            failures.join("; "),
        )
        .with_extra(json!({"checks": checks})))
    }
}

/// The first line of an error, bounded, so a readiness body stays small.
fn short(message: &str) -> String {
    message
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect()
}
