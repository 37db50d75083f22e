//! Answer generation: one [`ChatProvider`] trait over every AI provider, plus the local extractive answerer.

use async_trait::async_trait;
use ragvault_core::Usage;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum GenerationError {
    #[error("provider {provider} refused the credential")]
    Unauthorized { provider: String },
    #[error("provider {provider} is rate limiting")]
    RateLimited { provider: String },
    #[error("provider {provider} timed out")]
    Timeout { provider: String },
    #[error("provider {provider} failed: {message}")]
    Upstream { provider: String, message: String },
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

#[derive(Clone, Debug, PartialEq)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    pub max_output_tokens: u32,
    pub temperature: f32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ChatResponse {
    pub text: String,
    /// Usage as reported by the provider itself, never estimated.
    pub usage: Usage,
}

/// One AI provider's chat API.
#[async_trait]
pub trait ChatProvider: Send + Sync {
    /// Provider name as used in config, metering and responses (`openai`, `anthropic`, `local`, ...).
    fn name(&self) -> &str;
    async fn complete(&self, request: ChatRequest) -> Result<ChatResponse, GenerationError>;
}
