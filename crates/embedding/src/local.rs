//! all-MiniLM-L6-v2 on the CPU: BERT forward pass, mean pooling over the attention mask, L2 normalisation,
//! as sentence-transformers does for this model. No network: the weights (and ONNX Runtime's library, when
//! present) come from the model directory filled by `scripts/fetch-model.sh`.
//!
//! Two engines run the same weights: ONNX Runtime (the graph built from the safetensors by
//! [`crate::onnx_graph`]; several times faster on CPUs with AVX-512) when its library is found, candle
//! (pure Rust) otherwise or when asked for. Both match sentence-transformers' vectors.

use crate::onnx::OrtEncoder;
use crate::onnx_graph::BertShape;
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
/// A single text is a question (or a one-chunk document): it skips the one-at-a-time gate and, on ONNX
/// Runtime, runs on a session of its own.
const INTERACTIVE_TEXTS: usize = 1;
/// Rows per ONNX Runtime forward pass. Measured on 2,000 chunks of the PostgreSQL manual (2 cores, AVX-512):
/// 54 chunks/s at 1, 53 at 4, 48 at 8, 40 at 16, 36 at 32 — its attention kernel slows with the batch, and
/// fewer rows share less padding. Longer calls are cut into runs of this many texts of similar length.
const ORT_ROWS: usize = 4;

/// Which engine runs the local model (`embedding.runtime`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocalRuntime {
    /// ONNX Runtime when its library is in the model directory (or `ORT_DYLIB_PATH`), else candle.
    #[default]
    Auto,
    /// ONNX Runtime, or an error when its library cannot be loaded.
    Onnxruntime,
    Candle,
}

enum Engine {
    Candle { model: BertModel, device: Device },
    OnnxRuntime(OrtEncoder),
}

struct Inner {
    engine: Engine,
    tokenizer: tokenizers::Tokenizer,
    /// One forward pass at a time: each already uses every core, so two at once (two ingest workers, or a
    /// question beside an ingest) only make the threads wait on each other (`perf`: ~12 % in candle's
    /// barrier, ~5 % in the scheduler with two workers on two cores).
    running: tokio::sync::Semaphore,
}

/// The embedded default embedder.
#[derive(Clone)]
pub struct LocalEmbedder {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LocalEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "LocalEmbedder(all-MiniLM-L6-v2 on {})",
            self.engine_name()
        )
    }
}

fn model_error(what: &str, e: impl std::fmt::Display) -> EmbeddingError {
    EmbeddingError::Model(format!("{what}: {e}"))
}

impl LocalEmbedder {
    /// The model in `dir`, loaded once per process and runtime: every service instance in a process (tests
    /// start dozens) shares one copy of the weights.
    pub fn shared(dir: &Path) -> Result<LocalEmbedder, EmbeddingError> {
        Self::shared_with(dir, LocalRuntime::Auto)
    }

    pub fn shared_with(dir: &Path, runtime: LocalRuntime) -> Result<LocalEmbedder, EmbeddingError> {
        type Loaded = std::collections::HashMap<(std::path::PathBuf, LocalRuntime), LocalEmbedder>;
        static LOADED: std::sync::OnceLock<std::sync::Mutex<Loaded>> = std::sync::OnceLock::new();
        let loaded = LOADED.get_or_init(Default::default);
        let mut loaded = loaded
            .lock()
            .map_err(|_| EmbeddingError::Model("model cache lock poisoned".into()))?;
        if let Some(model) = loaded.get(&(dir.to_owned(), runtime)) {
            return Ok(model.clone());
        }
        let model = LocalEmbedder::load_with(dir, runtime)?;
        loaded.insert((dir.to_owned(), runtime), model.clone());
        Ok(model)
    }

    /// Loads `config.json`, `tokenizer.json` and `model.safetensors` from `dir`, on the fastest engine found.
    pub fn load(dir: &Path) -> Result<LocalEmbedder, EmbeddingError> {
        Self::load_with(dir, LocalRuntime::Auto)
    }

    pub fn load_with(dir: &Path, runtime: LocalRuntime) -> Result<LocalEmbedder, EmbeddingError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path)
                .map_err(|e| model_error(&format!("cannot read {}", path.display()), e))
        };
        let config: Config = serde_json::from_slice(&read("config.json")?)
            .map_err(|e| model_error("config.json", e))?;
        let shape: BertShape = serde_json::from_slice::<ShapeConfig>(&read("config.json")?)
            .map_err(|e| model_error("config.json", e))?
            .into();
        let mut tokenizer = tokenizers::Tokenizer::from_bytes(read("tokenizer.json")?)
            .map_err(|e| model_error("tokenizer.json", e))?;
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: MAX_SEQUENCE,
                ..Default::default()
            }))
            .map_err(|e| model_error("tokenizer truncation", e))?;
        tokenizer.with_padding(Some(tokenizers::PaddingParams::default()));
        let weights = read("model.safetensors")?;
        let library = crate::onnx::library_path(dir);
        let engine = match (runtime, library) {
            (LocalRuntime::Candle, _) | (LocalRuntime::Auto, None) => {
                let device = Device::Cpu;
                // Buffered rather than memory-mapped: mapping a file is `unsafe`, which this workspace forbids.
                let weights = VarBuilder::from_buffered_safetensors(weights, DTYPE, &device)
                    .map_err(|e| model_error("model.safetensors", e))?;
                let model = BertModel::load(weights, &config)
                    .map_err(|e| model_error("loading the model", e))?;
                Engine::Candle { model, device }
            }
            (LocalRuntime::Onnxruntime, None) => {
                return Err(EmbeddingError::Model(format!(
                    "onnxruntime: no {} in {} and ORT_DYLIB_PATH is not set (scripts/fetch-model.sh puts it there)",
                    crate::onnx::LIBRARY_FILE,
                    dir.display()
                )))
            }
            (LocalRuntime::Auto | LocalRuntime::Onnxruntime, Some(library)) => {
                Engine::OnnxRuntime(OrtEncoder::load(&library, &weights, shape)?)
            }
        };
        Ok(LocalEmbedder {
            inner: Arc::new(Inner {
                engine,
                tokenizer,
                running: tokio::sync::Semaphore::new(1),
            }),
        })
    }

    /// `onnxruntime` or `candle`: which engine this embedder runs on.
    pub fn engine_name(&self) -> &'static str {
        match self.inner.engine {
            Engine::Candle { .. } => "candle",
            Engine::OnnxRuntime(_) => "onnxruntime",
        }
    }
}

/// The parts of `config.json` the ONNX graph needs.
#[derive(serde::Deserialize)]
struct ShapeConfig {
    hidden_size: usize,
    num_attention_heads: usize,
    num_hidden_layers: usize,
    #[serde(default = "default_layer_norm_eps")]
    layer_norm_eps: f64,
}

fn default_layer_norm_eps() -> f64 {
    1e-12
}

impl From<ShapeConfig> for BertShape {
    fn from(c: ShapeConfig) -> BertShape {
        BertShape {
            hidden: c.hidden_size,
            heads: c.num_attention_heads,
            layers: c.num_hidden_layers,
            layer_norm_eps: c.layer_norm_eps as f32,
        }
    }
}

/// Mean of each row's hidden states over its real tokens (padding must not change an embedding), scaled to
/// unit length. `hidden` is `[rows, sequence, dim]`, `mask` `[rows, sequence]`.
fn mean_pool_normalized(
    hidden: &[f32],
    mask: &[u32],
    sequence: usize,
    dim: usize,
) -> Vec<Vec<f32>> {
    hidden
        .chunks_exact(sequence * dim)
        .zip(mask.chunks_exact(sequence))
        .map(|(states, mask)| {
            let mut sum = vec![0.0f32; dim];
            let mut count = 0.0f32;
            for (state, &m) in states.chunks_exact(dim).zip(mask) {
                if m != 0 {
                    count += 1.0;
                    for (s, x) in sum.iter_mut().zip(state) {
                        *s += x;
                    }
                }
            }
            let count = count.max(1.0);
            sum.iter_mut().for_each(|s| *s /= count);
            let norm = sum.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            sum.iter_mut().for_each(|s| *s /= norm);
            sum
        })
        .collect()
}

impl Inner {
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbeddingError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        if let Engine::OnnxRuntime(encoder) = &self.engine {
            let question = texts.len() <= INTERACTIVE_TEXTS;
            // Similar lengths share a run, so little of it is padding; vectors go back in input order.
            let mut order: Vec<usize> = (0..texts.len()).collect();
            order.sort_by_key(|&i| texts[i].len());
            let mut vectors = vec![Vec::new(); texts.len()];
            for run in order.chunks(ORT_ROWS) {
                let batch: Vec<String> = run.iter().map(|&i| texts[i].clone()).collect();
                let (ids, mask, sequence) = self.tokenize(&batch)?;
                let hidden = encoder.forward(question, &ids, &mask, batch.len(), sequence)?;
                let pooled = mean_pool_normalized(&hidden, &mask, sequence, DIMENSION);
                for (&i, vector) in run.iter().zip(pooled) {
                    vectors[i] = vector;
                }
            }
            return Ok(vectors);
        }
        let (ids, mask, sequence) = self.tokenize(texts)?;
        let rows = texts.len();
        let Engine::Candle { model, device } = &self.engine else {
            return Err(EmbeddingError::Model("no engine".into()));
        };
        let run = || -> candle_core::Result<Vec<Vec<f32>>> {
            let input_ids = Tensor::from_vec(ids, (rows, sequence), device)?;
            let attention = Tensor::from_vec(mask, (rows, sequence), device)?;
            let token_types = input_ids.zeros_like()?;
            let hidden = model.forward(&input_ids, &token_types, Some(&attention))?;
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

    /// Token ids and attention mask of `texts`, row-major, padded to the longest; and that length.
    fn tokenize(&self, texts: &[String]) -> Result<(Vec<u32>, Vec<u32>, usize), EmbeddingError> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| model_error("tokenizing", e))?;
        let sequence = encodings.first().map_or(0, |e| e.get_ids().len());
        let ids: Vec<u32> = encodings
            .iter()
            .flat_map(|e| e.get_ids().to_vec())
            .collect();
        let mask: Vec<u32> = encodings
            .iter()
            .flat_map(|e| e.get_attention_mask().to_vec())
            .collect();
        Ok((ids, mask, sequence))
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
        // A question's embedding (a text or two) does not queue behind an ingest batch: it is over in
        // milliseconds, and a person waits for it.
        let _turn = if texts.len() > INTERACTIVE_TEXTS {
            Some(
                self.inner
                    .running
                    .acquire()
                    .await
                    .map_err(|e| model_error("inference gate", e))?,
            )
        } else {
            None
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_averages_real_tokens_only_and_normalises() {
        // Two rows of three tokens, dimension 2; the second row's last token is padding.
        let hidden = [
            1.0, 0.0, 3.0, 0.0, 5.0, 0.0, 0.0, 2.0, 0.0, 4.0, 100.0, 100.0,
        ];
        let mask = [1, 1, 1, 1, 1, 0];
        let pooled = mean_pool_normalized(&hidden, &mask, 3, 2);
        assert_eq!(pooled, vec![vec![1.0, 0.0], vec![0.0, 1.0]]);
    }
}
