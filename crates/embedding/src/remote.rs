//! Remote embedders over HTTP with keys leased through the credentials crate: any OpenAI-compatible
//! `/v1/embeddings` endpoint (OpenAI, Mistral, vLLM, llama.cpp, Ollama's OpenAI mode) and Google Gemini's
//! `batchEmbedContents`.
//!
//! The key is lent to the request builder only (`Lease::with_key`); a refused key triggers one re-read and
//! one retry (`LeaseManager::call_with_lease`); 429 and 5xx are retried with exponential backoff (honouring
//! `retry-after`), since an embedding request has no side effects.

use crate::{check_output, Embedder, EmbeddingCall, EmbeddingError, MeteredBatch};
use async_trait::async_trait;
use ragvault_credentials::{LeaseManager, LeasedCallError, ProviderCallError, ProviderKeyRef};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// A provider's wire format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemoteApi {
    /// `POST {base}/embeddings` with a bearer key.
    #[default]
    Openai,
    /// `POST {base}/models/{model}:batchEmbedContents` with `x-goog-api-key`.
    Gemini,
}

/// What a remote embedder talks to and how.
#[derive(Clone, Debug)]
pub struct RemoteEmbedderConfig {
    /// Provider name: the key is leased as `providers/<provider>`.
    pub provider: String,
    pub api: RemoteApi,
    /// Base URL: `https://api.openai.com/v1`, `https://api.mistral.ai/v1`,
    /// `https://generativelanguage.googleapis.com/v1beta`, ...
    pub base_url: String,
    pub model: String,
    pub dimension: usize,
    pub max_batch: usize,
    /// Attempts for 429/5xx/network errors (the first included).
    pub attempts: u32,
    pub timeout: Duration,
}

pub struct RemoteEmbedder {
    config: RemoteEmbedderConfig,
    model_id: String,
    client: reqwest::Client,
    leases: Arc<LeaseManager>,
    key_ref: ProviderKeyRef,
}

/// One failed attempt: whether trying again can help, and a message without the key.
#[derive(Debug)]
struct AttemptError {
    retryable: bool,
    retry_after: Option<Duration>,
    message: String,
    key_version: u64,
    bytes_received: u64,
}

/// One answered attempt.
struct Attempted {
    vectors: Vec<Vec<f32>>,
    /// What the provider reported, if it did.
    input_tokens: Option<u64>,
    key_version: u64,
    bytes_received: u64,
}

impl RemoteEmbedder {
    pub fn new(
        config: RemoteEmbedderConfig,
        leases: Arc<LeaseManager>,
    ) -> Result<Self, EmbeddingError> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| EmbeddingError::Model(format!("http client: {e}")))?;
        Ok(RemoteEmbedder {
            // The provider is part of the id: the same model name at two providers may differ.
            model_id: format!("{}/{}", config.provider, config.model),
            key_ref: ProviderKeyRef::operator(&config.provider),
            config,
            client,
            leases,
        })
    }

    async fn attempt(
        &self,
        texts: &[String],
        bytes_sent: &mut u64,
    ) -> Result<Attempted, LeasedCallError<AttemptError>> {
        let base = self.config.base_url.trim_end_matches('/');
        let api = self.config.api;
        let (url, body) = match api {
            RemoteApi::Openai => (
                format!("{base}/embeddings"),
                json!({ "model": self.config.model, "input": texts }),
            ),
            RemoteApi::Gemini => (
                format!("{base}/models/{}:batchEmbedContents", self.config.model),
                json!({ "requests": texts.iter().map(|t| json!({
                    "model": format!("models/{}", self.config.model),
                    "content": { "parts": [{ "text": t }] },
                })).collect::<Vec<_>>() }),
            ),
        };
        *bytes_sent = serde_json::to_vec(&body).map_or(0, |b| b.len() as u64);
        self.leases
            .call_with_lease(&self.key_ref, |lease| {
                let key_version = lease.version;
                let request = lease.with_key(|key| {
                    let request = self
                        .client
                        .post(&url)
                        .headers(ragvault_telemetry::outgoing_headers())
                        .json(&body);
                    match api {
                        RemoteApi::Openai => request.bearer_auth(key),
                        RemoteApi::Gemini => request.header("x-goog-api-key", key),
                    }
                });
                async move {
                    let response = request.send().await.map_err(|e| {
                        ProviderCallError::Other(AttemptError {
                            retryable: true,
                            retry_after: None,
                            // reqwest errors name the URL, never headers.
                            message: format!("request failed: {}", e.without_url()),
                            key_version,
                            bytes_received: 0,
                        })
                    })?;
                    let status = response.status();
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .map(Duration::from_secs);
                    // Gemini answers a bad key with 400 API_KEY_INVALID rather than 401.
                    let text = response.text().await.unwrap_or_default();
                    let bytes_received = text.len() as u64;
                    let key_refused = status.as_u16() == 401
                        || status.as_u16() == 403
                        || (status.as_u16() == 400 && text.contains("API_KEY_INVALID"));
                    if key_refused {
                        return Err(ProviderCallError::Unauthorized(AttemptError {
                            retryable: false,
                            retry_after: None,
                            message: format!("provider refused the key ({status})"),
                            key_version,
                            bytes_received,
                        }));
                    }
                    if !status.is_success() {
                        return Err(ProviderCallError::Other(AttemptError {
                            retryable: status.as_u16() == 429 || status.is_server_error(),
                            retry_after,
                            message: format!("provider answered {status}"),
                            key_version,
                            bytes_received,
                        }));
                    }
                    let body: Value = serde_json::from_str(&text).map_err(|e| {
                        ProviderCallError::Other(AttemptError {
                            retryable: false,
                            retry_after: None,
                            message: format!("unreadable response: {e}"),
                            key_version,
                            bytes_received,
                        })
                    })?;
                    let vectors = match api {
                        RemoteApi::Openai => parse_openai_embeddings(&body),
                        RemoteApi::Gemini => parse_gemini_embeddings(&body),
                    }
                    .map_err(|message| {
                        ProviderCallError::Other(AttemptError {
                            retryable: false,
                            retry_after: None,
                            message,
                            key_version,
                            bytes_received,
                        })
                    })?;
                    Ok(Attempted {
                        vectors,
                        input_tokens: body["usage"]["prompt_tokens"].as_u64(),
                        key_version,
                        bytes_received,
                    })
                }
            })
            .await
    }
}

/// `{"embeddings": [{"values": [...]}, ...]}`, in request order.
fn parse_gemini_embeddings(body: &Value) -> Result<Vec<Vec<f32>>, String> {
    body["embeddings"]
        .as_array()
        .ok_or_else(|| "response has no `embeddings` array".to_owned())?
        .iter()
        .map(|item| {
            item["values"]
                .as_array()
                .ok_or_else(|| "an item has no `values` array".to_owned())?
                .iter()
                .map(|x| x.as_f64().map(|x| x as f32))
                .collect::<Option<Vec<f32>>>()
                .ok_or_else(|| "an embedding holds a non-number".to_owned())
        })
        .collect()
}

/// `{"data": [{"index": i, "embedding": [...]}, ...]}` in index order.
fn parse_openai_embeddings(body: &Value) -> Result<Vec<Vec<f32>>, String> {
    let data = body["data"]
        .as_array()
        .ok_or_else(|| "response has no `data` array".to_owned())?;
    let mut out: Vec<(u64, Vec<f32>)> = Vec::with_capacity(data.len());
    for (position, item) in data.iter().enumerate() {
        let index = item["index"].as_u64().unwrap_or(position as u64);
        let vector = item["embedding"]
            .as_array()
            .ok_or_else(|| "an item has no `embedding` array".to_owned())?
            .iter()
            .map(|x| x.as_f64().map(|x| x as f32))
            .collect::<Option<Vec<f32>>>()
            .ok_or_else(|| "an embedding holds a non-number".to_owned())?;
        out.push((index, vector));
    }
    out.sort_by_key(|(index, _)| *index);
    Ok(out.into_iter().map(|(_, v)| v).collect())
}

#[async_trait]
impl Embedder for RemoteEmbedder {
    fn model_id(&self) -> &str {
        &self.model_id
    }

    fn dimension(&self) -> usize {
        self.config.dimension
    }

    fn max_batch(&self) -> usize {
        self.config.max_batch
    }

    async fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbeddingError> {
        self.embed_batch_metered(texts).await.vectors
    }

    fn billing(&self) -> Option<(&str, &str)> {
        Some((&self.config.provider, &self.config.model))
    }

    async fn embed_batch_metered(&self, texts: &[String]) -> MeteredBatch {
        let mut calls = Vec::new();
        let vectors = self.embed_with_retries(texts, &mut calls).await;
        MeteredBatch { vectors, calls }
    }
}

impl RemoteEmbedder {
    async fn embed_with_retries(
        &self,
        texts: &[String],
        calls: &mut Vec<EmbeddingCall>,
    ) -> Result<Vec<Vec<f32>>, EmbeddingError> {
        if texts.len() > self.config.max_batch {
            return Err(EmbeddingError::BatchTooLarge {
                got: texts.len(),
                limit: self.config.max_batch,
            });
        }
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        // Gemini reports no token counts: about four bytes per token, rounded up.
        let estimated_tokens = texts
            .iter()
            .map(|t| t.len().div_ceil(4) as u64)
            .sum::<u64>();
        let mut delay = Duration::from_millis(200);
        let mut attempt = 1;
        loop {
            let started = std::time::Instant::now();
            let mut bytes_sent = 0;
            let outcome = self.attempt(texts, &mut bytes_sent).await;
            let mut call = EmbeddingCall {
                provider: self.config.provider.clone(),
                model: self.config.model.clone(),
                key_version: None,
                input_tokens: 0,
                latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                bytes_sent,
                bytes_received: 0,
                ok: false,
            };
            match outcome {
                Ok(attempted) => {
                    call.key_version = Some(attempted.key_version);
                    call.bytes_received = attempted.bytes_received;
                    call.input_tokens = attempted.input_tokens.unwrap_or(estimated_tokens);
                    call.ok = true;
                    calls.push(call);
                    let mut vectors = attempted.vectors;
                    check_output(self, texts.len(), &vectors)?;
                    // Providers normalise differently; the index expects unit vectors either way.
                    for v in &mut vectors {
                        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                        if norm > 0.0 {
                            v.iter_mut().for_each(|x| *x /= norm);
                        }
                    }
                    return Ok(vectors);
                }
                Err(LeasedCallError::Credentials(e)) => {
                    return Err(EmbeddingError::Model(format!(
                        "no usable key for provider {}: {e}",
                        self.config.provider
                    )))
                }
                Err(LeasedCallError::Provider(e)) => {
                    call.key_version = Some(e.key_version);
                    call.bytes_received = e.bytes_received;
                    calls.push(call);
                    if e.retryable && attempt < self.config.attempts {
                        tokio::time::sleep(
                            e.retry_after.unwrap_or(delay).min(Duration::from_secs(30)),
                        )
                        .await;
                        delay *= 2;
                        attempt += 1;
                        continue;
                    }
                    return Err(EmbeddingError::Model(format!(
                        "{} embeddings: {} (after {attempt} attempt(s))",
                        self.config.provider, e.message
                    )));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_read_in_index_order() {
        let body = json!({"data": [
            {"index": 1, "embedding": [0.0, 1.0]},
            {"index": 0, "embedding": [1.0, 0.0]}
        ]});
        assert_eq!(
            parse_openai_embeddings(&body).unwrap_or_default(),
            vec![vec![1.0, 0.0], vec![0.0, 1.0]]
        );
        assert!(parse_openai_embeddings(&json!({"error": "x"})).is_err());
        assert!(parse_openai_embeddings(&json!({"data": [{"embedding": ["a"]}]})).is_err());
        let gemini = json!({"embeddings": [{"values": [0.5, 0.5]}, {"values": [1.0, 0.0]}]});
        assert_eq!(
            parse_gemini_embeddings(&gemini).unwrap_or_default(),
            vec![vec![0.5, 0.5], vec![1.0, 0.0]]
        );
        assert!(parse_gemini_embeddings(&json!({"error": {"code": 400}})).is_err());
    }
}
