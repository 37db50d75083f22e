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
use std::time::Duration;

/// How a fake stream misbehaves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StreamFault {
    #[default]
    None,
    /// The connection ends after this many answer pieces, without the end-of-stream marker.
    CutAfter(usize),
    /// The connection ends in the middle of an event after this many pieces.
    CutMidEvent(usize),
}

#[derive(Default)]
struct Shared {
    valid_keys: Mutex<HashSet<String>>,
    requests: AtomicU64,
    rejected: AtomicU64,
    /// The next this-many requests fail with `failure_status` (after the key check).
    failures_left: AtomicU64,
    failure_status: std::sync::atomic::AtomicU16,
    /// The next this-many chat requests get a 200 whose body is not JSON.
    malformed_left: AtomicU64,
    /// Wait before answering a chat request (before headers: the first-token latency).
    latency: Mutex<Duration>,
    /// Pause between stream pieces.
    piece_delay: Mutex<Duration>,
    stream_fault: Mutex<StreamFault>,
    /// Scripted answer text; `None` answers [`DEFAULT_REPLY`].
    reply: Mutex<Option<String>>,
    /// Every chat request body received, in order.
    chat_bodies: Mutex<Vec<Value>>,
    /// The `traceparent` header of every chat request ("" when absent), in order.
    chat_traceparents: Mutex<Vec<String>>,
    streams_completed: AtomicU64,
    streams_abandoned: AtomicU64,
}

/// What the fake answers unless told otherwise: a grounded-looking sentence citing source 1.
pub const DEFAULT_REPLY: &str =
    "According to the documentation, follow the steps described there [1].";

/// Width of the fake embeddings.
pub const FAKE_EMBEDDING_DIMENSION: usize = 64;

/// One fake provider server speaking OpenAI (`/v1/chat/completions`, `/v1/embeddings`,
/// `/v1/audio/transcriptions`), Anthropic (`/v1/messages`) and Gemini (`/v1beta/models/...:generateContent`,
/// `:streamGenerateContent`, `:batchEmbedContents`), including each one's SSE framing and bad-key answer.
pub struct FakeProvider {
    pub base_url: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeProvider {
    /// Gemini's base URL on the same fake (`.../v1beta`).
    pub fn gemini_base_url(&self) -> String {
        self.base_url.replace("/v1", "/v1beta")
    }

    pub async fn start() -> FakeProvider {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/v1/chat/completions", post(chat_completions))
            .route("/v1/messages", post(anthropic_messages))
            .route("/v1/embeddings", post(embeddings))
            .route("/v1/audio/transcriptions", post(transcriptions))
            .route("/v1beta/models/{action}", post(gemini))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeProvider {
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

    /// Makes the next `count` chat requests answer 200 with a body that is not JSON.
    pub fn malformed_next(&self, count: u64) {
        self.shared.malformed_left.store(count, Ordering::SeqCst);
    }

    /// Waits this long before answering each chat request.
    pub fn set_latency(&self, latency: Duration) {
        *lock(&self.shared.latency) = latency;
    }

    /// Pause between the pieces of a streamed answer.
    pub fn set_piece_delay(&self, delay: Duration) {
        *lock(&self.shared.piece_delay) = delay;
    }

    pub fn set_stream_fault(&self, fault: StreamFault) {
        *lock(&self.shared.stream_fault) = fault;
    }

    /// The answer text of every following chat request (`None`: [`DEFAULT_REPLY`]).
    pub fn set_reply(&self, reply: Option<&str>) {
        *lock(&self.shared.reply) = reply.map(str::to_owned);
    }

    /// Every chat request body received so far.
    pub fn chat_bodies(&self) -> Vec<Value> {
        lock(&self.shared.chat_bodies).clone()
    }

    /// The `traceparent` header of every chat request so far ("" when it had none).
    pub fn chat_traceparents(&self) -> Vec<String> {
        lock(&self.shared.chat_traceparents).clone()
    }

    /// Streams sent to the end / dropped by the client before the end.
    pub fn streams(&self) -> (u64, u64) {
        (
            self.shared.streams_completed.load(Ordering::SeqCst),
            self.shared.streams_abandoned.load(Ordering::SeqCst),
        )
    }

    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    pub fn rejected(&self) -> u64 {
        self.shared.rejected.load(Ordering::Relaxed)
    }
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Checks the key (bearer, `x-api-key` or `x-goog-api-key`) and any injected failure; `Some(response)` when
/// the request must be refused.
fn refuse(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    shared.requests.fetch_add(1, Ordering::Relaxed);
    let gemini = headers.contains_key("x-goog-api-key");
    let anthropic = headers.contains_key("x-api-key");
    let key = headers
        .get("x-goog-api-key")
        .or_else(|| headers.get("x-api-key"))
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
        if anthropic {
            return Some(
                (
                    StatusCode::UNAUTHORIZED,
                    Json(json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}})),
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

/// Which wire format a chat request used.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Openai,
    Anthropic,
    Gemini,
}

/// All text of a chat request body (system, messages, contents), whatever the format.
fn prompt_text(body: &Value) -> String {
    let mut text = String::new();
    let mut collect = |v: &Value| {
        if let Some(s) = v.as_str() {
            text.push_str(s);
            text.push('\n');
        }
    };
    collect(&body["system"]);
    for m in body["messages"].as_array().into_iter().flatten() {
        collect(&m["content"]);
    }
    for p in body["systemInstruction"]["parts"]
        .as_array()
        .into_iter()
        .flatten()
    {
        collect(&p["text"]);
    }
    for c in body["contents"].as_array().into_iter().flatten() {
        for p in c["parts"].as_array().into_iter().flatten() {
            collect(&p["text"]);
        }
    }
    text
}

/// Handles a chat request in any format: key check, injected failures, latency, then the answer whole or
/// as that format's SSE stream.
async fn chat(
    shared: Arc<Shared>,
    format: Format,
    headers: HeaderMap,
    body: Value,
    stream: bool,
) -> Response {
    if let Some(refused) = refuse(&shared, &headers) {
        return refused;
    }
    lock(&shared.chat_bodies).push(body.clone());
    lock(&shared.chat_traceparents).push(
        headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
    );
    let latency = *lock(&shared.latency);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let malformed = shared
        .malformed_left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if malformed {
        return (
            StatusCode::OK,
            [("content-type", "application/json")],
            "{\"choices\": [ oops",
        )
            .into_response();
    }
    let reply = lock(&shared.reply)
        .clone()
        .unwrap_or_else(|| DEFAULT_REPLY.to_owned());
    let input_tokens = (prompt_text(&body).len() / 4 + 1) as u64;
    let output_tokens = reply.split_whitespace().count() as u64;
    let model = body["model"].as_str().unwrap_or("fake-model").to_owned();
    if !stream {
        let json = match format {
            Format::Openai => json!({
                "id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": input_tokens, "completion_tokens": output_tokens,
                          "total_tokens": input_tokens + output_tokens}
            }),
            Format::Anthropic => json!({
                "id": "msg_fake", "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": reply}],
                "stop_reason": "end_turn", "stop_sequence": null,
                "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens}
            }),
            Format::Gemini => json!({
                "candidates": [{"content": {"role": "model", "parts": [{"text": reply}]}, "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": input_tokens, "candidatesTokenCount": output_tokens,
                                  "totalTokenCount": input_tokens + output_tokens},
                "modelVersion": model
            }),
        };
        return Json(json).into_response();
    }
    // Small pieces, so placeholders and citation markers arrive split across events.
    let chars: Vec<char> = reply.chars().collect();
    let pieces: Vec<String> = chars.chunks(3).map(|c| c.iter().collect()).collect();
    let mut events: Vec<String> = Vec::new();
    let event = |name: Option<&str>, data: Value| match name {
        Some(name) => format!("event: {name}\ndata: {data}\n\n"),
        None => format!("data: {data}\n\n"),
    };
    match format {
        Format::Openai => {
            events.push(event(None, json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": model,
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]})));
            for p in &pieces {
                events.push(event(
                    None,
                    json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": model,
                    "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": null}]}),
                ));
            }
            let usage = json!({"prompt_tokens": input_tokens, "completion_tokens": output_tokens,
                "total_tokens": input_tokens + output_tokens});
            let mut last = json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": model,
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
            if body.get("stream_options").is_none() {
                // Mistral's habit: usage rides on the final chunk without being asked for. (OpenAI sends
                // none without stream_options; ragvault always asks OpenAI for it.)
                last["usage"] = usage.clone();
            }
            events.push(event(None, last));
            if body["stream_options"]["include_usage"] == true {
                events.push(event(
                    None,
                    json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk",
                    "model": model, "choices": [], "usage": usage}),
                ));
            }
            events.push("data: [DONE]\n\n".to_owned());
        }
        Format::Anthropic => {
            events.push(event(Some("message_start"), json!({"type": "message_start", "message": {
                "id": "msg_fake", "type": "message", "role": "assistant", "model": model, "content": [],
                "usage": {"input_tokens": input_tokens, "output_tokens": 1}}})));
            events.push(event(
                Some("content_block_start"),
                json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}}),
            ));
            events.push(event(Some("ping"), json!({"type": "ping"})));
            for p in &pieces {
                events.push(event(
                    Some("content_block_delta"),
                    json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": p}}),
                ));
            }
            events.push(event(
                Some("content_block_stop"),
                json!({"type": "content_block_stop", "index": 0}),
            ));
            events.push(event(Some("message_delta"), json!({"type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": output_tokens}})));
            events.push(event(Some("message_stop"), json!({"type": "message_stop"})));
        }
        Format::Gemini => {
            let last = pieces.len().saturating_sub(1);
            for (i, p) in pieces.iter().enumerate() {
                let mut chunk = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": p}]}, "index": 0}],
                    "usageMetadata": {"promptTokenCount": input_tokens, "totalTokenCount": input_tokens}});
                if i == last {
                    chunk["candidates"][0]["finishReason"] = json!("STOP");
                    chunk["usageMetadata"] = json!({"promptTokenCount": input_tokens,
                        "candidatesTokenCount": output_tokens, "totalTokenCount": input_tokens + output_tokens});
                }
                events.push(event(None, chunk));
            }
        }
    }
    // Pieces start after the opening events of each format (OpenAI and Anthropic send one or two first).
    let fault = *lock(&shared.stream_fault);
    let opening = match format {
        Format::Openai => 1,
        Format::Anthropic => 3,
        Format::Gemini => 0,
    };
    match fault {
        StreamFault::None => {}
        StreamFault::CutAfter(n) => events.truncate(opening + n),
        StreamFault::CutMidEvent(n) => {
            events.truncate(opening + n + 1);
            if let Some(last) = events.last_mut() {
                let half = last.len() / 2;
                last.truncate(half);
            }
        }
    }
    let delay = *lock(&shared.piece_delay);
    let guard = StreamGuard {
        shared: shared.clone(),
        complete: false,
    };
    // The opening events and the first answer piece go out at once; the pause comes between later pieces,
    // so a slow stream has already started (no failover possible) when it stalls.
    let undelayed = opening + 1;
    let body = futures_util::stream::unfold(
        (events.into_iter(), guard, delay, 0usize),
        move |(mut events, mut guard, delay, sent)| async move {
            match events.next() {
                Some(e) => {
                    if sent >= undelayed && !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    Some((
                        Ok::<_, std::convert::Infallible>(e),
                        (events, guard, delay, sent + 1),
                    ))
                }
                None => {
                    guard.complete = true;
                    drop(guard);
                    None
                }
            }
        },
    );
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(axum::body::Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Counts a stream as completed when its last event went out, abandoned when it is dropped before.
struct StreamGuard {
    shared: Arc<Shared>,
    complete: bool,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let counter = if self.complete {
            &self.shared.streams_completed
        } else {
            &self.shared.streams_abandoned
        };
        counter.fetch_add(1, Ordering::SeqCst);
    }
}

async fn chat_completions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let stream = body["stream"] == true;
    chat(shared, Format::Openai, headers, body, stream).await
}

async fn anthropic_messages(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if headers.get("anthropic-version").is_none() {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"type": "error", "error": {"type": "invalid_request_error", "message": "anthropic-version header is required"}})),
        )
            .into_response();
    }
    let stream = body["stream"] == true;
    chat(shared, Format::Anthropic, headers, body, stream).await
}

/// Gemini's `models/{model}:{method}`: generateContent, streamGenerateContent (`?alt=sse`), batchEmbedContents.
async fn gemini(
    State(shared): State<Arc<Shared>>,
    axum::extract::Path(action): axum::extract::Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if action.ends_with(":batchEmbedContents") {
        return gemini_embeddings(shared, headers, body).await;
    }
    let model = action.split(':').next().unwrap_or_default().to_owned();
    let mut body = body;
    body["model"] = json!(model);
    if action.ends_with(":generateContent") {
        return chat(shared, Format::Gemini, headers, body, false).await;
    }
    if action.ends_with(":streamGenerateContent") {
        return chat(shared, Format::Gemini, headers, body, true).await;
    }
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": {"code": 404, "status": "NOT_FOUND"}})),
    )
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
async fn gemini_embeddings(shared: Arc<Shared>, headers: HeaderMap, body: Value) -> Response {
    if let Some(refused) = refuse(&shared, &headers) {
        return refused;
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
