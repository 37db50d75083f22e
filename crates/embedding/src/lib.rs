//! Turning text into vectors.
//!
//! The local all-MiniLM-L6-v2 model (candle) and remote embedders implement [`Embedder`]; callers see only
//! the trait, the model id and the dimension, so an index built with one model is never queried with another.

use async_trait::async_trait;

mod local;
mod onnx;
mod onnx_graph;
mod remote;
mod tokenizer;

pub use local::{LocalEmbedder, LocalRuntime, LOCAL_MODEL_ID};
pub use remote::{RemoteApi, RemoteEmbedder, RemoteEmbedderConfig};
pub use tokenizer::{ModelTokenizer, TokenCount};

/// Where `scripts/fetch-model.sh` puts the local model unless `RAGVAULT_MODEL_DIR` says otherwise (the
/// service itself reads `embedding.model_dir` from its configuration).
pub fn model_dir_from_env() -> std::path::PathBuf {
    std::env::var_os("RAGVAULT_MODEL_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from("/var/tmp/ragvault-models/all-MiniLM-L6-v2"))
}

/// The local model's tokenizer from [`model_dir_from_env`], for tests and tools.
pub fn tokenizer_from_env() -> Result<ModelTokenizer, EmbeddingError> {
    ModelTokenizer::from_file(&model_dir_from_env().join("tokenizer.json"))
}

#[derive(Debug, thiserror::Error)]
pub enum EmbeddingError {
    #[error("embedding model {model} returned {got} dimensions, expected {expected}")]
    DimensionMismatch {
        model: String,
        expected: usize,
        got: usize,
    },
    #[error("embedding batch of {got} texts is over the limit of {limit}")]
    BatchTooLarge { got: usize, limit: usize },
    #[error("embedding model failed: {0}")]
    Model(String),
}

/// One request to a remote embedding provider, for metering: never the key, never the texts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmbeddingCall {
    pub provider: String,
    pub model: String,
    /// Version of the leased key that made the request.
    pub key_version: Option<u64>,
    /// As the provider reported them (OpenAI `usage.prompt_tokens`); estimated at one per four bytes for
    /// providers that report none (Gemini).
    pub input_tokens: u64,
    pub latency_ms: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub ok: bool,
}

/// What [`Embedder::embed_batch_metered`] returns: the vectors (or why not) and every request made.
#[derive(Debug)]
pub struct MeteredBatch {
    pub vectors: Result<Vec<Vec<f32>>, EmbeddingError>,
    pub calls: Vec<EmbeddingCall>,
}

/// A model that maps texts to fixed-length vectors.
#[async_trait]
pub trait Embedder: Send + Sync {
    /// Stable model identifier stored next to every vector (for example `all-MiniLM-L6-v2`).
    fn model_id(&self) -> &str;

    /// Length of every vector this model returns.
    fn dimension(&self) -> usize;

    /// Largest batch one call accepts.
    fn max_batch(&self) -> usize;

    /// True when texts never leave the process (no PII pseudonymization needed before embedding).
    fn runs_locally(&self) -> bool {
        false
    }

    /// Embeds a batch; the result has one vector per input, in order.
    async fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbeddingError>;

    /// `(provider, model)` a remote embedder's requests are billed under; none for a model in the process.
    fn billing(&self) -> Option<(&str, &str)> {
        None
    }

    /// [`Embedder::embed_batch`], reporting every provider request it made (retries included) so each can
    /// be metered. Models in the process make none.
    async fn embed_batch_metered(&self, texts: &[String]) -> MeteredBatch {
        MeteredBatch {
            vectors: self.embed_batch(texts).await,
            calls: Vec::new(),
        }
    }
}

/// Checks that a model's output has the declared shape before anything is stored.
pub fn check_output(
    embedder: &dyn Embedder,
    inputs: usize,
    vectors: &[Vec<f32>],
) -> Result<(), EmbeddingError> {
    if vectors.len() != inputs {
        return Err(EmbeddingError::Model(format!(
            "returned {} vectors for {inputs} inputs",
            vectors.len()
        )));
    }
    match vectors.iter().find(|v| v.len() != embedder.dimension()) {
        Some(bad) => Err(EmbeddingError::DimensionMismatch {
            model: embedder.model_id().to_owned(),
            expected: embedder.dimension(),
            got: bad.len(),
        }),
        None => Ok(()),
    }
}
