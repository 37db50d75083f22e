//! all-MiniLM-L6-v2 on the CPU with candle: BERT forward pass, mean pooling over the attention mask, L2
//! normalisation, as sentence-transformers does for this model. No network: the weights come from the
//! model directory filled by `scripts/fetch-model.sh`.

use crate::{check_output, Embedder, EmbeddingError};
use async_trait::async_trait;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config, DTYPE};
use std::path::Path;
use std::sync::Arc;

pub const LOCAL_MODEL_ID: &str = "all-MiniLM-L6-v2";
const DIMENSION: usize = 384;
/// sentence-transformers truncates this model's inputs at 256 word pieces.
const MAX_SEQUENCE: usize = 256;
const MAX_BATCH: usize = 64;

struct Inner {
    model: BertModel,
    tokenizer: tokenizers::Tokenizer,
    device: Device,
}

/// The embedded default embedder.
#[derive(Clone)]
pub struct LocalEmbedder {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LocalEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalEmbedder(all-MiniLM-L6-v2)")
    }
}

fn model_error(what: &str, e: impl std::fmt::Display) -> EmbeddingError {
    EmbeddingError::Model(format!("{what}: {e}"))
}

impl LocalEmbedder {
    /// The model in `dir`, loaded once per process: every service instance in a process (tests start
    /// dozens) shares one copy of the weights.
    pub fn shared(dir: &Path) -> Result<LocalEmbedder, EmbeddingError> {
        static LOADED: std::sync::OnceLock<
            std::sync::Mutex<std::collections::HashMap<std::path::PathBuf, LocalEmbedder>>,
        > = std::sync::OnceLock::new();
        let loaded = LOADED.get_or_init(Default::default);
        let mut loaded = loaded
            .lock()
            .map_err(|_| EmbeddingError::Model("model cache lock poisoned".into()))?;
        if let Some(model) = loaded.get(dir) {
            return Ok(model.clone());
        }
        let model = LocalEmbedder::load(dir)?;
        loaded.insert(dir.to_owned(), model.clone());
        Ok(model)
    }

    /// Loads `config.json`, `tokenizer.json` and `model.safetensors` from `dir`.
    pub fn load(dir: &Path) -> Result<LocalEmbedder, EmbeddingError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path)
                .map_err(|e| model_error(&format!("cannot read {}", path.display()), e))
        };
        let config: Config = serde_json::from_slice(&read("config.json")?)
            .map_err(|e| model_error("config.json", e))?;
        let mut tokenizer = tokenizers::Tokenizer::from_bytes(read("tokenizer.json")?)
            .map_err(|e| model_error("tokenizer.json", e))?;
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: MAX_SEQUENCE,
                ..Default::default()
            }))
            .map_err(|e| model_error("tokenizer truncation", e))?;
        tokenizer.with_padding(Some(tokenizers::PaddingParams::default()));
        let device = Device::Cpu;
        // Buffered rather than memory-mapped: mapping a file is `unsafe`, which this workspace forbids.
        let weights =
            VarBuilder::from_buffered_safetensors(read("model.safetensors")?, DTYPE, &device)
                .map_err(|e| model_error("model.safetensors", e))?;
        let model =
            BertModel::load(weights, &config).map_err(|e| model_error("loading the model", e))?;
        Ok(LocalEmbedder {
            inner: Arc::new(Inner {
                model,
                tokenizer,
                device,
            }),
        })
    }
}

impl Inner {
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbeddingError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| model_error("tokenizing", e))?;
        let ids: Vec<Vec<u32>> = encodings.iter().map(|e| e.get_ids().to_vec()).collect();
        let mask: Vec<Vec<u32>> = encodings
            .iter()
            .map(|e| e.get_attention_mask().to_vec())
            .collect();
        let tensor = |rows: Vec<Vec<u32>>| Tensor::new(rows, &self.device);
        let run = || -> candle_core::Result<Vec<Vec<f32>>> {
            let input_ids = tensor(ids)?;
            let attention = tensor(mask)?;
            let token_types = input_ids.zeros_like()?;
            let hidden = self
                .model
                .forward(&input_ids, &token_types, Some(&attention))?;
            // Mean over real tokens only: padding must not change an embedding.
            let mask = attention.to_dtype(DType::F32)?.unsqueeze(2)?;
            let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
            let counts = mask.sum(1)?;
            let mean = summed.broadcast_div(&counts)?;
            let norms = mean.sqr()?.sum_keepdim(1)?.sqrt()?;
            mean.broadcast_div(&norms)?.to_vec2::<f32>()
        };
        run().map_err(|e| model_error("inference", e))
    }
}

#[async_trait]
impl Embedder for LocalEmbedder {
    fn model_id(&self) -> &str {
        LOCAL_MODEL_ID
    }

    fn runs_locally(&self) -> bool {
        true
    }

    fn dimension(&self) -> usize {
        DIMENSION
    }

    fn max_batch(&self) -> usize {
        MAX_BATCH
    }

    async fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbeddingError> {
        if texts.len() > MAX_BATCH {
            return Err(EmbeddingError::BatchTooLarge {
                got: texts.len(),
                limit: MAX_BATCH,
            });
        }
        let inner = self.inner.clone();
        let owned = texts.to_vec();
        // Inference is CPU-bound: keep it off the async workers.
        let vectors = tokio::task::spawn_blocking(move || inner.embed(&owned))
            .await
            .map_err(|e| model_error("inference task", e))??;
        check_output(self, texts.len(), &vectors)?;
        Ok(vectors)
    }
}
