//! The parsers of untrusted input that live in this crate, callable on bytes alone, for the fuzz targets
//! under `fuzz/`: request bodies (through the same extractor the routes use) and policy files.

use crate::extract::ApiJson;
use crate::routes::{admin, ask, chat, documents, keys, search};
use axum::extract::FromRequest;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

/// Request bodies the routes take, in a fixed order (a fuzz input's first byte picks one).
pub const JSON_BODIES: [&str; 9] = [
    "ask",
    "chat.completions",
    "search",
    "documents",
    "admin.tenants.create",
    "admin.tenants.update",
    "api_keys.issue",
    "admin.suspensions",
    "widget_tokens.mint",
];

/// Decodes `body` as the JSON body of `JSON_BODIES[which % len]` the way its route does. A refusal is
/// its status and stable code; it must be a 4xx, never a panic or a 5xx.
pub fn json_body(which: usize, body: &[u8]) -> Result<(), (StatusCode, String)> {
    match which % JSON_BODIES.len() {
        0 => decode::<ask::AskRequest>(body),
        1 => decode::<chat::ChatCompletionRequest>(body),
        2 => decode::<search::SearchRequest>(body),
        3 => decode::<documents::UploadRequest>(body),
        4 => decode::<admin::CreateTenantRequest>(body),
        5 => decode::<admin::UpdateTenantRequest>(body),
        6 => decode::<keys::IssueKeyRequest>(body),
        7 => decode::<admin::SuspendRequest>(body),
        _ => decode::<ragvault_gateway::MintRequest>(body),
    }
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<(), (StatusCode, String)> {
    let request = axum::http::Request::builder()
        .method("POST")
        .uri("/")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_vec()))
        .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
    // The body is in memory: the extractor's future completes without an I/O driver.
    futures::executor::block_on(ApiJson::<T>::from_request(request, &()))
        .map(|_| ())
        .map_err(|e| (e.status, e.body.code.to_string()))
}

/// Parses a policy file's text as `policies.dir` loading does (syntax, then keys), without validating it
/// against a configuration. A refusal names the key and the reason.
pub fn policy_file(text: &str) -> Result<(), (String, String)> {
    crate::policy_files::parse_policy(text).map(|_| ())
}
