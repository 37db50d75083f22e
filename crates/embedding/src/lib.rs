//! Turning text into vectors.
//!
//! The local all-MiniLM-L6-v2 model (candle) and remote embedders implement [`Embedder`]; callers see only
//! the trait, the model id and the dimension, so an index built with one model is never queried with another.

use async_trait::async_trait;

mod local;
mod remote;
mod tokenizer;

pub use local::{LocalEmbedder, LOCAL_MODEL_ID};
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
