//! Fake AI providers that speak the real wire format and accept only the API keys currently valid, so
//! tests see exactly what a provider would do with a rotated or revoked key.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Shared {
    valid_keys: Mutex<HashSet<String>>,
    requests: AtomicU64,
    rejected: AtomicU64,
    /// The next this-many requests fail with `failure_status` (after the key check).
    failures_left: AtomicU64,
    failure_status: std::sync::atomic::AtomicU16,
}

/// Width of the fake embeddings.
pub const FAKE_EMBEDDING_DIMENSION: usize = 64;

/// An OpenAI-compatible `/v1/chat/completions` and `/v1/embeddings` endpoint.
pub struct FakeOpenAi {
    pub base_url: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeOpenAi {
    /// Gemini's base URL on the same fake (`.../v1beta`).
    pub fn gemini_base_url(&self) -> String {
        self.base_url.replace("/v1", "/v1beta")
    }

    pub async fn start() -> FakeOpenAi {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/v1/chat/completions", post(chat_completions))
            .route("/v1/embeddings", post(embeddings))
            .route("/v1/audio/transcriptions", post(transcriptions))
            .route("/v1beta/models/{action}", post(gemini_embeddings))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeOpenAi {
            base_url: format!("http://{addr}/v1"),
            shared,
            server,
        }
    }

    /// Starts accepting a key (the provider issued it).
    pub fn accept(&self, key: &str) {
        self.shared
            .valid_keys
            .lock()
            .expect("keys")
            .insert(key.to_owned());
    }

    /// Stops accepting a key (the provider revoked it).
    pub fn revoke(&self, key: &str) {
        self.shared.valid_keys.lock().expect("keys").remove(key);
    }

    /// Makes the next `count` requests fail with `status` (429, 500, 503...), as an overloaded provider does.
    pub fn fail_next(&self, count: u64, status: u16) {
        self.shared.failure_status.store(status, Ordering::SeqCst);
        self.shared.failures_left.store(count, Ordering::SeqCst);
    }

    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    pub fn rejected(&self) -> u64 {
        self.shared.rejected.load(Ordering::Relaxed)
    }
}

impl Drop for FakeOpenAi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Checks the bearer key and any injected failure; `Some(response)` when the request must be refused.
fn refuse(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    shared.requests.fetch_add(1, Ordering::Relaxed);
    let gemini = headers.contains_key("x-goog-api-key");
    let key = headers
        .get("x-goog-api-key")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
        })
        .unwrap_or_default()
        .to_owned();
    if !shared.valid_keys.lock().expect("keys").contains(&key) {
        shared.rejected.fetch_add(1, Ordering::Relaxed);
        if gemini {
            // Gemini's shape for a bad key: 400, not 401.
            return Some(
                (
                    StatusCode::BAD_REQUEST,
                    Json(json!({"error": {
                        "code": 400,
                        "message": "API key not valid. Please pass a valid API key.",
                        "status": "INVALID_ARGUMENT",
                        "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]
                    }})),
                )
                    .into_response(),
            );
        }
        // OpenAI's shape for a bad key; like the real API it never echoes the key back in full.
        return Some(
            (
                StatusCode::UNAUTHORIZED,
                Json(json!({"error": {
                    "message": "Incorrect API key provided.",
                    "type": "invalid_request_error",
                    "param": null,
                    "code": "invalid_api_key"
                }})),
            )
                .into_response(),
        );
    }
    let failing = shared
        .failures_left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        let status = StatusCode::from_u16(shared.failure_status.load(Ordering::SeqCst))
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return Some(
            (
                status,
                Json(json!({"error": {"message": "The server is overloaded.", "type": "server_error"}})),
            )
                .into_response(),
        );
    }
    None
}

async fn chat_completions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Some(refused) = refuse(&shared, &headers) {
        return refused;
    }
    let model = body["model"].as_str().unwrap_or("gpt-4o-mini").to_owned();
    let prompt_chars: usize = body["messages"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|m| m["content"].as_str())
                .map(str::len)
                .sum()
        })
        .unwrap_or(0);
    Json(json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": "ok"},
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": prompt_chars / 4 + 1, "completion_tokens": 1, "total_tokens": prompt_chars / 4 + 2}
    }))
    .into_response()
}

/// OpenAI's embeddings shape. Vectors are deterministic bags of hashed words, so texts sharing words are
/// close, which is all retrieval tests need from a remote model.
async fn embeddings(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Some(refused) = refuse(&shared, &headers) {
        return refused;
    }
    let inputs: Vec<String> = match &body["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| json!({"object": "embedding", "index": index, "embedding": fake_embedding(text)}))
        .collect();
    let tokens: usize = inputs.iter().map(|t| t.split_whitespace().count()).sum();
    Json(json!({
        "object": "list",
        "data": data,
        "model": body["model"],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}
    }))
    .into_response()
}

/// The fake provider's embedding of a text (public so tests can predict it).
pub fn fake_embedding(text: &str) -> Vec<f32> {
    let mut v = vec![0f32; FAKE_EMBEDDING_DIMENSION];
    for word in text
        .to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let mut hash: u64 = 0xcbf29ce484222325;
        for b in word.bytes() {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x100000001b3);
        }
        v[(hash % FAKE_EMBEDDING_DIMENSION as u64) as usize] += 1.0;
    }
    v
}

/// Whisper's shape (`multipart/form-data` with `file` and `model`, answer `{"text": ...}`). The fake "hears"
/// whatever follows the marker `TRANSCRIPT:` inside the audio bytes, so tests can script what was said.
async fn transcriptions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    mut form: axum::extract::Multipart,
) -> Response {
    if let Some(refused) = refuse(&shared, &headers) {
        return refused;
    }
    let mut audio = Vec::new();
    let mut model = String::new();
    while let Ok(Some(field)) = form.next_field().await {
        match field.name() {
            Some("file") => audio = field.bytes().await.map(|b| b.to_vec()).unwrap_or_default(),
            Some("model") => model = field.text().await.unwrap_or_default(),
            _ => {}
        }
    }
    if audio.is_empty() || model.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": {"message": "file and model are required", "type": "invalid_request_error"}})),
        )
            .into_response();
    }
    let marker = b"TRANSCRIPT:";
    let text = audio
        .windows(marker.len())
        .position(|w| w == marker)
        .map(|at| {
            String::from_utf8_lossy(&audio[at + marker.len()..])
                .trim()
                .to_owned()
        })
        .unwrap_or_default();
    Json(json!({ "text": text })).into_response()
}

/// Gemini's `models/{model}:batchEmbedContents`.
async fn gemini_embeddings(
    State(shared): State<Arc<Shared>>,
    axum::extract::Path(action): axum::extract::Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Some(refused) = refuse(&shared, &headers) {
        return refused;
    }
    if !action.ends_with(":batchEmbedContents") {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"code": 404, "status": "NOT_FOUND"}})),
        )
            .into_response();
    }
    let embeddings: Vec<Value> = body["requests"]
        .as_array()
        .map(|requests| {
            requests
                .iter()
                .map(|r| {
                    let text: String = r["content"]["parts"]
                        .as_array()
                        .map(|parts| {
                            parts
                                .iter()
                                .filter_map(|p| p["text"].as_str())
                                .collect::<Vec<_>>()
                                .join(" ")
                        })
                        .unwrap_or_default();
                    json!({"values": fake_embedding(&text)})
                })
                .collect()
        })
        .unwrap_or_default();
    Json(json!({ "embeddings": embeddings })).into_response()
}
