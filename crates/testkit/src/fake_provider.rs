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
}

/// An OpenAI-compatible `/v1/chat/completions` endpoint.
pub struct FakeOpenAi {
    pub base_url: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeOpenAi {
    pub async fn start() -> FakeOpenAi {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/v1/chat/completions", post(chat_completions))
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

async fn chat_completions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    shared.requests.fetch_add(1, Ordering::Relaxed);
    let key = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    if !shared.valid_keys.lock().expect("keys").contains(&key) {
        shared.rejected.fetch_add(1, Ordering::Relaxed);
        // OpenAI's shape for a bad key; like the real API it never echoes the key back in full.
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {
                "message": "Incorrect API key provided.",
                "type": "invalid_request_error",
                "param": null,
                "code": "invalid_api_key"
            }})),
        )
            .into_response();
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
