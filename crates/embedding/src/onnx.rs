//! The encoder on ONNX Runtime: the graph from [`crate::onnx_graph`], run by `libonnxruntime.so` loaded at
//! start (from PyPI's `onnxruntime` wheel, fetched by `scripts/fetch-model.sh` beside the weights; nothing is
//! downloaded at build time). Its fused kernels use AVX-512 where the CPU has it, which candle's matrix
//! products (AVX2 on stable Rust) do not.

use crate::onnx_graph::{self, BertShape};
use crate::EmbeddingError;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::TensorRef;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// The library's file name beside the model's weights.
pub(crate) const LIBRARY_FILE: &str = "libonnxruntime.so";

fn runtime_error(what: &str, e: impl std::fmt::Display) -> EmbeddingError {
    EmbeddingError::Model(format!("onnxruntime: {what}: {e}"))
}

/// Where ONNX Runtime is looked for: `ORT_DYLIB_PATH` (ort's own variable), then the model directory.
pub(crate) fn library_path(model_dir: &Path) -> Option<PathBuf> {
    std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .or_else(|| Some(model_dir.join(LIBRARY_FILE)))
        .filter(|p| p.is_file())
}

/// The process's ONNX Runtime environment: the library can be loaded once per process.
fn environment(library: &Path) -> Result<&'static ort::environment::Environment, EmbeddingError> {
    static ENVIRONMENT: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();
    ENVIRONMENT
        .get_or_init(|| {
            ort::init_from(library)
                .map_err(|e| format!("cannot load {}: {e}", library.display()))?
                .with_name("ragvault")
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| EmbeddingError::Model(format!("onnxruntime: {e}")))
}

pub(crate) struct OrtEncoder {
    /// Document batches, on every core (`Session::run` takes `&mut`; these come one at a time anyway, see
    /// `LocalEmbedder`).
    batches: Mutex<Session>,
    /// Questions, on one thread: a question must not wait for a document batch to finish.
    questions: Mutex<Session>,
    hidden: usize,
}

fn session(
    environment: &ort::environment::Environment,
    model: &[u8],
    threads: usize,
) -> Result<Session, EmbeddingError> {
    Session::builder(environment)
        .map_err(|e| runtime_error("session options", e))?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(|e| runtime_error("optimisation level", e))?
        .with_intra_threads(threads)
        .map_err(|e| runtime_error("threads", e))?
        // Subnormal floats (tiny activations) take a slow path in the CPU: flushed to zero, the encoder ran
        // 38 -> 43 chunks/s on the PostgreSQL manual's chunks; the cosine to the reference stays 0.9999997.
        .with_config_entry("session.set_denormal_as_zero", "1")
        .map_err(|e| runtime_error("denormals", e))?
        .commit_from_memory(model)
        .map_err(|e| runtime_error("loading the encoder graph", e))
}

impl OrtEncoder {
    pub(crate) fn load(
        library: &Path,
        weights: &[u8],
        shape: BertShape,
    ) -> Result<OrtEncoder, EmbeddingError> {
        let environment = environment(library)?;
        let model = onnx_graph::bert_encoder(weights, shape)?;
        let threads = std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1);
        Ok(OrtEncoder {
            batches: Mutex::new(session(environment, &model, threads)?),
            questions: Mutex::new(session(environment, &model, 1)?),
            hidden: shape.hidden,
        })
    }

    /// The last hidden state, `[rows, sequence, hidden]` row-major, for token ids and attention mask given
    /// row by row (all rows `sequence` long).
    pub(crate) fn forward(
        &self,
        question: bool,
        ids: &[u32],
        mask: &[u32],
        rows: usize,
        sequence: usize,
    ) -> Result<Vec<f32>, EmbeddingError> {
        let as_i32 = |v: &[u32]| -> Vec<i32> {
            v.iter()
                .map(|&x| i32::try_from(x).unwrap_or(i32::MAX))
                .collect()
        };
        let (ids, mask) = (as_i32(ids), as_i32(mask));
        let shape = [rows, sequence];
        let ids = TensorRef::from_array_view((shape, ids.as_slice()))
            .map_err(|e| runtime_error("input ids", e))?;
        let mask = TensorRef::from_array_view((shape, mask.as_slice()))
            .map_err(|e| runtime_error("attention mask", e))?;
        let mut session = if question {
            &self.questions
        } else {
            &self.batches
        }
        .lock()
        .map_err(|_| EmbeddingError::Model("onnxruntime session lock poisoned".into()))?;
        let outputs = session
            .run(ort::inputs![
                onnx_graph::INPUT_IDS => ids,
                onnx_graph::ATTENTION_MASK => mask,
            ])
            .map_err(|e| runtime_error("inference", e))?;
        let (out_shape, hidden) = outputs[onnx_graph::HIDDEN]
            .try_extract_tensor::<f32>()
            .map_err(|e| runtime_error("reading the output", e))?;
        if hidden.len() != rows * sequence * self.hidden {
            return Err(runtime_error(
                "output shape",
                format!("{out_shape:?} for {rows} x {sequence}"),
            ));
        }
        Ok(hidden.to_vec())
    }
}
