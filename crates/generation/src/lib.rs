//! Answer generation: one [`ChatProvider`] trait over every AI provider (OpenAI, Anthropic, Gemini, Mistral
//! and OpenAI-compatible servers, all over `reqwest` with keys leased through the credentials crate), the
//! local extractive answerer, the prompt, citations, PII pseudonymization and the failover chain.

pub mod breaker;
pub mod chain;
pub mod citations;
pub mod local;
pub mod pii;
pub mod prompt;
pub mod providers;
pub mod sse;
pub mod tokens;

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use std::time::Duration;

pub use breaker::{BreakerSettings, BreakerState, CircuitBreaker};
pub use chain::{Answer, AnswerInput, AnswerStream, ChainEvent, ChainLink, ProviderChain};
pub use citations::{filter_markers, MarkerFilter};
pub use local::ExtractiveAnswerer;
pub use pii::{PiiCategory, PiiRules, Pseudonymizer, StreamRestorer};
pub use prompt::{build_prompt, plain_messages, Prompt, PromptBudget, SourceText};
pub use providers::{HttpProvider, ProviderApi, ProviderSettings, Timeouts};

/// Compiles a pattern written in this crate's source. The unit tests exercise every one, so a typo fails
/// the tests, never a request.
#[allow(clippy::expect_used)]
pub(crate) fn literal_regex(pattern: &str) -> regex::Regex {
    regex::Regex::new(pattern).expect("built-in pattern compiles")
}

#[derive(Debug, thiserror::Error)]
pub enum GenerationError {
    #[error("provider {provider} refused the credential")]
    Unauthorized { provider: String },
    #[error("no usable key for provider {provider}: {message}")]
    Credentials { provider: String, message: String },
    #[error("provider {provider} is rate limiting")]
    RateLimited {
        provider: String,
        retry_after: Option<Duration>,
    },
    #[error("provider {provider} timed out ({stage})")]
    Timeout {
        provider: String,
        stage: &'static str,
    },
    #[error("provider {provider} failed: {message}")]
    Upstream { provider: String, message: String },
    #[error("provider {provider} sent an unreadable response: {message}")]
    Malformed { provider: String, message: String },
    #[error("provider {provider} ended the stream before it was complete")]
    StreamCut { provider: String },
    #[error("provider {provider} is skipped: its circuit breaker is open")]
    BreakerOpen { provider: String },
    #[error("no provider could answer ({0})")]
    Exhausted(String),
    #[error("generation configuration: {0}")]
    Config(String),
}

impl GenerationError {
    /// Whether this failure says something about the provider's health (counts towards its breaker).
    pub fn is_provider_fault(&self) -> bool {
        matches!(
            self,
            GenerationError::Unauthorized { .. }
                | GenerationError::Credentials { .. }
                | GenerationError::Timeout { .. }
                | GenerationError::Upstream { .. }
                | GenerationError::Malformed { .. }
                | GenerationError::StreamCut { .. }
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    System,
    User,
    Assistant,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

/// What a provider is asked: the prompt for remote models, plus the question and the sources that fitted,
/// which the local extractive answerer reads directly.
#[derive(Clone, Debug)]
pub struct ChatRequest {
    pub system: String,
    pub messages: Vec<ChatMessage>,
    pub max_output_tokens: u32,
    pub temperature: f32,
    pub question: String,
    pub sources: Vec<SourceText>,
    pub data_controls: DataControls,
}

/// What the tenant's policy tells providers about their handling of a request, on every outgoing call.
/// Only fields a provider's API actually has are sent (Anthropic and Gemini have no per-request retention
/// switch: their retention is an account setting).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct DataControls {
    /// OpenAI's `store`: whether OpenAI may keep the completion for its dashboard, evals and distillation.
    /// Sent explicitly on every OpenAI request; `false` unless the policy opts in.
    #[serde(default)]
    pub store: bool,
}

/// Token usage as the provider itself reported it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ChatResponse {
    pub text: String,
    pub usage: TokenUsage,
    /// Version of the key that made the call (never the key), for metering.
    pub key_version: Option<u64>,
}

/// One piece of a streamed answer.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamItem {
    Delta(String),
    Usage(TokenUsage),
}

/// A started stream: the key version that opened it and the items. The stream ends after the provider's
/// end-of-stream marker; ending without one is [`GenerationError::StreamCut`].
pub struct ChatStream {
    pub key_version: Option<u64>,
    pub items: BoxStream<'static, Result<StreamItem, GenerationError>>,
}

/// One AI provider's chat API.
#[async_trait]
pub trait ChatProvider: Send + Sync {
    /// Name as used in config, metering and responses (`openai`, `anthropic`, `local`, ...).
    fn name(&self) -> &str;
    fn model(&self) -> &str;
    /// Tokens the model accepts in total (prompt and answer).
    fn context_tokens(&self) -> usize;
    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, GenerationError>;
    async fn stream(&self, request: &ChatRequest) -> Result<ChatStream, GenerationError>;
}
