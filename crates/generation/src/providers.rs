//! Remote chat providers over `reqwest`, one struct for every wire format: OpenAI chat completions (also
//! Mistral and any OpenAI-compatible server), Anthropic messages and Gemini generateContent, streaming and
//! not. Keys are leased through the credentials crate and lent to the request builder only.
//!
//! Retries: only before any answer text exists (connection errors, 429, 500/502/503/504), with exponential
//! backoff honouring `retry-after`, inside the total deadline. A refused key is re-read once by the lease
//! manager; after that the failover chain moves on.

use crate::sse::{SseDecoder, SseEvent};
use crate::{
    ChatProvider, ChatRequest, ChatResponse, ChatStream, GenerationError, Role, StreamItem,
    TokenUsage,
};
use async_trait::async_trait;
use futures::StreamExt;
use ragvault_credentials::{LeaseManager, LeasedCallError, ProviderCallError, ProviderKeyRef};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// A provider's wire format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderApi {
    /// OpenAI itself: `max_completion_tokens`, usage in streams via `stream_options`.
    #[default]
    Openai,
    /// vLLM, llama.cpp, Ollama, LiteLLM...: OpenAI's format with `max_tokens`.
    OpenaiCompatible,
    /// Mistral's OpenAI-like API (usage arrives in the last stream chunk without asking).
    Mistral,
    Anthropic,
    Gemini,
}

#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub connect: Duration,
    /// From sending the request to the first piece of answer (headers for non-streaming calls).
    pub first_token: Duration,
    /// The whole call, retries included.
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            first_token: Duration::from_secs(20),
            total: Duration::from_secs(60),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ProviderSettings {
    /// Name in config; the key is leased as `providers/<name>`.
    pub name: String,
    pub api: ProviderApi,
    pub base_url: String,
    pub model: String,
    pub context_tokens: usize,
    pub timeouts: Timeouts,
    /// Attempts for retryable failures (the first included).
    pub attempts: u32,
    /// Lease the sandbox key (`sandbox/providers/<name>`) instead of the production one.
    pub sandbox: bool,
}

pub struct HttpProvider {
    settings: ProviderSettings,
    client: reqwest::Client,
    leases: Arc<LeaseManager>,
    key_ref: ProviderKeyRef,
}

const ANTHROPIC_VERSION: &str = "2023-06-01";
/// Longest wait for a `retry-after` we honour; beyond it the chain's next provider is faster.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(2);
/// Largest non-streamed response body read.
const MAX_RESPONSE_BYTES: usize = 8 << 20;

/// One failed attempt before any answer text: whether another attempt may help.
struct Attempt {
    error: GenerationError,
    retryable: bool,
    retry_after: Option<Duration>,
}

impl HttpProvider {
    pub fn new(
        settings: ProviderSettings,
        leases: Arc<LeaseManager>,
    ) -> Result<HttpProvider, GenerationError> {
        let client = reqwest::Client::builder()
            .connect_timeout(settings.timeouts.connect)
            .build()
            .map_err(|e| GenerationError::Config(format!("http client: {e}")))?;
        Ok(HttpProvider {
            key_ref: if settings.sandbox {
                ProviderKeyRef::sandbox(&settings.name)
            } else {
                ProviderKeyRef::operator(&settings.name)
            },
            settings,
            client,
            leases,
        })
    }

    fn err_upstream(&self, message: impl Into<String>) -> GenerationError {
        GenerationError::Upstream {
            provider: self.settings.name.clone(),
            message: message.into(),
        }
    }

    fn err_malformed(&self, message: impl Into<String>) -> GenerationError {
        GenerationError::Malformed {
            provider: self.settings.name.clone(),
            message: message.into(),
        }
    }

    fn err_timeout(&self, stage: &'static str) -> GenerationError {
        GenerationError::Timeout {
            provider: self.settings.name.clone(),
            stage,
        }
    }

    fn url(&self, stream: bool) -> String {
        let base = self.settings.base_url.trim_end_matches('/');
        let model = &self.settings.model;
        match self.settings.api {
            ProviderApi::Openai | ProviderApi::OpenaiCompatible | ProviderApi::Mistral => {
                format!("{base}/chat/completions")
            }
            ProviderApi::Anthropic => format!("{base}/messages"),
            ProviderApi::Gemini if stream => {
                format!("{base}/models/{model}:streamGenerateContent?alt=sse")
            }
            ProviderApi::Gemini => format!("{base}/models/{model}:generateContent"),
        }
    }

    fn body(&self, request: &ChatRequest, stream: bool) -> Value {
        let model = &self.settings.model;
        let role = |r: Role| match r {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        };
        match self.settings.api {
            ProviderApi::Openai | ProviderApi::OpenaiCompatible | ProviderApi::Mistral => {
                let mut messages = vec![json!({"role": "system", "content": request.system})];
                messages.extend(
                    request
                        .messages
                        .iter()
                        .map(|m| json!({"role": role(m.role), "content": m.content})),
                );
                let mut body = json!({
                    "model": model,
                    "messages": messages,
                    "temperature": request.temperature,
                    "stream": stream,
                });
                let limit_key = if self.settings.api == ProviderApi::Openai {
                    "max_completion_tokens"
                } else {
                    "max_tokens"
                };
                body[limit_key] = json!(request.max_output_tokens);
                if self.settings.api == ProviderApi::Openai {
                    // Other OpenAI-compatible servers may refuse a field they do not know.
                    body["store"] = json!(request.data_controls.store);
                }
                if stream && self.settings.api != ProviderApi::Mistral {
                    body["stream_options"] = json!({"include_usage": true});
                }
                body
            }
            ProviderApi::Anthropic => json!({
                "model": model,
                "system": request.system,
                "max_tokens": request.max_output_tokens,
                "temperature": request.temperature,
                "stream": stream,
                "messages": request.messages.iter()
                    .filter(|m| m.role != Role::System)
                    .map(|m| json!({"role": role(m.role), "content": m.content}))
                    .collect::<Vec<_>>(),
            }),
            ProviderApi::Gemini => json!({
                "systemInstruction": {"parts": [{"text": request.system}]},
                "contents": request.messages.iter()
                    .filter(|m| m.role != Role::System)
                    .map(|m| json!({
                        "role": if m.role == Role::Assistant { "model" } else { "user" },
                        "parts": [{"text": m.content}],
                    }))
                    .collect::<Vec<_>>(),
                "generationConfig": {
                    "maxOutputTokens": request.max_output_tokens,
                    "temperature": request.temperature,
                },
            }),
        }
    }

    /// Sends one request with a leased key and returns the successful response (headers read) and the key
    /// version. Retries retryable failures within the deadline.
    async fn send(
        &self,
        request: &ChatRequest,
        stream: bool,
        deadline: Instant,
    ) -> Result<(reqwest::Response, u64), GenerationError> {
        let url = self.url(stream);
        let body = self.body(request, stream);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let first_token_deadline =
                (Instant::now() + self.settings.timeouts.first_token).min(deadline);
            let outcome =
                tokio::time::timeout_at(first_token_deadline, self.send_once(&url, &body))
                    .await
                    .unwrap_or_else(|_| {
                        Err(Attempt {
                            error: self.err_timeout("first token"),
                            retryable: false,
                            retry_after: None,
                        })
                    });
            let failure = match outcome {
                Ok(ok) => return Ok(ok),
                Err(failure) => failure,
            };
            if !failure.retryable || attempt >= self.settings.attempts.max(1) {
                return Err(failure.error);
            }
            let backoff = failure
                .retry_after
                .unwrap_or(Duration::from_millis(250 * (1 << (attempt - 1).min(4))))
                .min(MAX_RETRY_AFTER);
            if Instant::now() + backoff >= deadline {
                return Err(failure.error);
            }
            tokio::time::sleep(backoff).await;
        }
    }

    async fn send_once(
        &self,
        url: &str,
        body: &Value,
    ) -> Result<(reqwest::Response, u64), Attempt> {
        let api = self.settings.api;
        let provider = self.settings.name.clone();
        let result = self
            .leases
            .call_with_lease(&self.key_ref, |lease| {
                let version = lease.version;
                let builder = lease.with_key(|key| {
                    // `traceparent` of the generate span: the provider call joins the caller's trace.
                    let builder = self
                        .client
                        .post(url)
                        .headers(ragvault_telemetry::outgoing_headers())
                        .json(body);
                    match api {
                        ProviderApi::Anthropic => builder
                            .header("x-api-key", key)
                            .header("anthropic-version", ANTHROPIC_VERSION),
                        ProviderApi::Gemini => builder.header("x-goog-api-key", key),
                        _ => builder.bearer_auth(key),
                    }
                });
                let provider = provider.clone();
                async move {
                    let response = builder.send().await.map_err(|e| {
                        ProviderCallError::Other(Attempt {
                            retryable: e.is_connect(),
                            retry_after: None,
                            error: if e.is_timeout() {
                                GenerationError::Timeout {
                                    provider: provider.clone(),
                                    stage: "connect",
                                }
                            } else {
                                // reqwest's message without the URL; headers (the key) are never in it.
                                GenerationError::Upstream {
                                    provider: provider.clone(),
                                    message: format!("request failed: {}", e.without_url()),
                                }
                            },
                        })
                    })?;
                    let status = response.status();
                    if status.is_success() {
                        return Ok((response, version));
                    }
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let text = read_limited(response, 64 << 10).await.unwrap_or_default();
                    // Gemini answers a bad key with 400 API_KEY_INVALID rather than 401.
                    let key_refused = status.as_u16() == 401
                        || status.as_u16() == 403
                        || (status.as_u16() == 400 && text.contains("API_KEY_INVALID"));
                    if key_refused {
                        return Err(ProviderCallError::Unauthorized(Attempt {
                            retryable: false,
                            retry_after: None,
                            error: GenerationError::Unauthorized {
                                provider: provider.clone(),
                            },
                        }));
                    }
                    let error = if status.as_u16() == 429 {
                        GenerationError::RateLimited {
                            provider: provider.clone(),
                            retry_after,
                        }
                    } else {
                        GenerationError::Upstream {
                            provider: provider.clone(),
                            message: format!("answered {status}{}", error_detail(&text)),
                        }
                    };
                    Err(ProviderCallError::Other(Attempt {
                        retryable: matches!(status.as_u16(), 429 | 500 | 502 | 503 | 504),
                        retry_after,
                        error,
                    }))
                }
            })
            .await;
        result.map_err(|e| match e {
            LeasedCallError::Provider(attempt) => attempt,
            LeasedCallError::Credentials(e) => Attempt {
                retryable: false,
                retry_after: None,
                error: GenerationError::Credentials {
                    provider: self.settings.name.clone(),
                    message: e.to_string(),
                },
            },
        })
    }

    fn parse_complete(&self, body: &Value) -> Result<(String, TokenUsage), GenerationError> {
        let text = match self.settings.api {
            ProviderApi::Openai | ProviderApi::OpenaiCompatible | ProviderApi::Mistral => body
                ["choices"][0]["message"]["content"]
                .as_str()
                .map(str::to_owned),
            ProviderApi::Anthropic => body["content"].as_array().map(|blocks| {
                blocks
                    .iter()
                    .filter(|b| b["type"] == "text")
                    .filter_map(|b| b["text"].as_str())
                    .collect::<String>()
            }),
            ProviderApi::Gemini => gemini_text(body),
        }
        .ok_or_else(|| self.err_malformed("no answer text in the response"))?;
        let usage = usage_of(self.settings.api, body).unwrap_or_default();
        Ok((text, usage))
    }
}

/// A short, key-free detail from a provider's error body (`error.message` of every format).
fn error_detail(text: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(text).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| v["error"]["message"].as_str())
        .unwrap_or_default();
    if message.is_empty() {
        return String::new();
    }
    let short: String = message.chars().take(200).collect();
    format!(": {short}")
}

async fn read_limited(response: reqwest::Response, limit: usize) -> Result<String, String> {
    let mut body = Vec::new();
    let mut chunks = response.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| e.without_url().to_string())?;
        if body.len() + chunk.len() > limit {
            return Err(format!("response larger than {limit} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| "response is not UTF-8".to_owned())
}

fn gemini_text(body: &Value) -> Option<String> {
    body["candidates"][0]["content"]["parts"]
        .as_array()
        .map(|parts| {
            parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<String>()
        })
}

/// Usage from a whole response (or a stream chunk that carries it), in each provider's own field names.
fn usage_of(api: ProviderApi, body: &Value) -> Option<TokenUsage> {
    let (input, output) = match api {
        ProviderApi::Openai | ProviderApi::OpenaiCompatible | ProviderApi::Mistral => (
            &body["usage"]["prompt_tokens"],
            &body["usage"]["completion_tokens"],
        ),
        ProviderApi::Anthropic => (
            &body["usage"]["input_tokens"],
            &body["usage"]["output_tokens"],
        ),
        ProviderApi::Gemini => (
            &body["usageMetadata"]["promptTokenCount"],
            &body["usageMetadata"]["candidatesTokenCount"],
        ),
    };
    if input.is_null() && output.is_null() {
        return None;
    }
    Some(TokenUsage {
        input_tokens: input.as_u64().unwrap_or(0),
        output_tokens: output.as_u64().unwrap_or(0),
    })
}

#[async_trait]
impl ChatProvider for HttpProvider {
    fn name(&self) -> &str {
        &self.settings.name
    }

    fn model(&self) -> &str {
        &self.settings.model
    }

    fn context_tokens(&self) -> usize {
        self.settings.context_tokens
    }

    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, GenerationError> {
        let deadline = Instant::now() + self.settings.timeouts.total;
        let (response, key_version) = self.send(request, false, deadline).await?;
        let text = tokio::time::timeout_at(deadline, read_limited(response, MAX_RESPONSE_BYTES))
            .await
            .map_err(|_| self.err_timeout("total"))?
            .map_err(|e| self.err_upstream(e))?;
        let body: Value = serde_json::from_str(&text)
            .map_err(|e| self.err_malformed(format!("not JSON ({e})")))?;
        let (text, usage) = self.parse_complete(&body)?;
        Ok(ChatResponse {
            text,
            usage,
            key_version: Some(key_version),
        })
    }

    async fn stream(&self, request: &ChatRequest) -> Result<ChatStream, GenerationError> {
        let started = Instant::now();
        let deadline = started + self.settings.timeouts.total;
        let (response, key_version) = self.send(request, true, deadline).await?;
        let state = StreamState {
            provider: self.settings.name.clone(),
            api: self.settings.api,
            body: response.bytes_stream().boxed(),
            decoder: SseDecoder::default(),
            ready: VecDeque::new(),
            finished: false,
            failed: false,
            saw_text: false,
            usage: TokenUsage::default(),
            usage_seen: false,
            first_token_deadline: (started + self.settings.timeouts.first_token).min(deadline),
            deadline,
        };
        // Dropping this stream drops the response body, which closes the upstream connection: a client that
        // goes away cancels the provider call.
        let items = futures::stream::unfold(state, |mut state| async move {
            let item = state.next_item().await?;
            Some((item, state))
        })
        .boxed();
        Ok(ChatStream {
            key_version: Some(key_version),
            items,
        })
    }
}

struct StreamState {
    provider: String,
    api: ProviderApi,
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    decoder: SseDecoder,
    ready: VecDeque<StreamItem>,
    finished: bool,
    failed: bool,
    saw_text: bool,
    usage: TokenUsage,
    usage_seen: bool,
    first_token_deadline: Instant,
    deadline: Instant,
}

impl StreamState {
    fn fail(&mut self, error: GenerationError) -> Option<Result<StreamItem, GenerationError>> {
        self.failed = true;
        Some(Err(error))
    }

    async fn next_item(&mut self) -> Option<Result<StreamItem, GenerationError>> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Some(Ok(item));
            }
            if self.failed {
                return None;
            }
            if self.finished {
                if self.usage_seen {
                    self.usage_seen = false;
                    return Some(Ok(StreamItem::Usage(self.usage)));
                }
                return None;
            }
            let wait_until = if self.saw_text {
                self.deadline
            } else {
                self.first_token_deadline
            };
            let chunk = match tokio::time::timeout_at(wait_until, self.body.next()).await {
                Err(_) => {
                    let stage = if self.saw_text {
                        "total"
                    } else {
                        "first token"
                    };
                    let provider = self.provider.clone();
                    return self.fail(GenerationError::Timeout { provider, stage });
                }
                Ok(None) => {
                    // Gemini has no end marker: a finish reason in the last chunk ends it.
                    if !self.finished {
                        let provider = self.provider.clone();
                        return self.fail(GenerationError::StreamCut { provider });
                    }
                    continue;
                }
                Ok(Some(Err(_))) => {
                    // The connection broke mid-answer.
                    let provider = self.provider.clone();
                    return self.fail(GenerationError::StreamCut { provider });
                }
                Ok(Some(Ok(chunk))) => chunk,
            };
            let events = match self.decoder.push(&chunk) {
                Ok(events) => events,
                Err(e) => {
                    let provider = self.provider.clone();
                    return self.fail(GenerationError::Malformed {
                        provider,
                        message: format!("stream framing: {e:?}"),
                    });
                }
            };
            for event in events {
                if let Err(e) = self.handle(event) {
                    return self.fail(e);
                }
            }
        }
    }

    fn malformed(&self, message: impl Into<String>) -> GenerationError {
        GenerationError::Malformed {
            provider: self.provider.clone(),
            message: message.into(),
        }
    }

    fn push_text(&mut self, text: &str) {
        if !text.is_empty() {
            self.saw_text = true;
            self.ready.push_back(StreamItem::Delta(text.to_owned()));
        }
    }

    fn handle(&mut self, event: SseEvent) -> Result<(), GenerationError> {
        if self.finished {
            return Ok(());
        }
        if event.data == "[DONE]" {
            self.finished = true;
            return Ok(());
        }
        if event.data.is_empty() {
            return Ok(());
        }
        let data: Value = serde_json::from_str(&event.data)
            .map_err(|e| self.malformed(format!("stream event is not JSON ({e})")))?;
        if let Some(message) = data["error"]["message"].as_str() {
            return Err(GenerationError::Upstream {
                provider: self.provider.clone(),
                message: format!(
                    "error in stream: {}",
                    message.chars().take(200).collect::<String>()
                ),
            });
        }
        match self.api {
            ProviderApi::Openai | ProviderApi::OpenaiCompatible | ProviderApi::Mistral => {
                if let Some(text) = data["choices"][0]["delta"]["content"].as_str() {
                    self.push_text(text);
                }
                if let Some(usage) = usage_of(self.api, &data) {
                    self.usage = usage;
                    self.usage_seen = true;
                }
            }
            ProviderApi::Anthropic => {
                let kind = if event.event.is_empty() {
                    data["type"].as_str().unwrap_or_default().to_owned()
                } else {
                    event.event.clone()
                };
                match kind.as_str() {
                    "message_start" => {
                        self.usage.input_tokens = data["message"]["usage"]["input_tokens"]
                            .as_u64()
                            .unwrap_or(0);
                        self.usage_seen = true;
                    }
                    "content_block_delta" if data["delta"]["type"] == "text_delta" => {
                        let text = data["delta"]["text"].as_str().unwrap_or_default();
                        self.push_text(text);
                    }
                    "message_delta" => {
                        if let Some(out) = data["usage"]["output_tokens"].as_u64() {
                            self.usage.output_tokens = out;
                            self.usage_seen = true;
                        }
                    }
                    "message_stop" => self.finished = true,
                    "error" => {
                        return Err(GenerationError::Upstream {
                            provider: self.provider.clone(),
                            message: "error event in stream".into(),
                        })
                    }
                    _ => {}
                }
            }
            ProviderApi::Gemini => {
                if let Some(text) = gemini_text(&data) {
                    self.push_text(&text);
                }
                if let Some(usage) = usage_of(self.api, &data) {
                    self.usage = usage;
                    self.usage_seen = true;
                }
                if data["candidates"][0]["finishReason"].is_string() {
                    self.finished = true;
                }
            }
        }
        Ok(())
    }
}
