//! The local all-MiniLM-L6-v2 embedder on the real weights (fetched by `scripts/fetch-model.sh`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ragvault_embedding::{model_dir_from_env, Embedder, LocalEmbedder, LocalRuntime};

/// Both engines, each loaded as asked (not silently the other): ONNX Runtime needs the library that
/// `scripts/fetch-model.sh` puts beside the weights.
fn engines() -> Vec<LocalEmbedder> {
    [LocalRuntime::Onnxruntime, LocalRuntime::Candle]
        .into_iter()
        .map(|runtime| {
            LocalEmbedder::shared_with(&model_dir_from_env(), runtime)
                .unwrap_or_else(|e| panic!("{runtime:?}: {e} (run scripts/fetch-model.sh)"))
        })
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[tokio::test]
async fn embeds_unit_vectors_that_rank_related_text_first() {
    for embedder in engines() {
        unit_vectors_that_rank_related_text_first(&embedder).await;
    }
}

async fn unit_vectors_that_rank_related_text_first(embedder: &LocalEmbedder) {
    assert_eq!(embedder.dimension(), 384);
    let texts: Vec<String> = [
        "How do I reset my router?",
        "To restore factory settings, hold the reset button on the router for ten seconds.",
        "The cafeteria serves lunch between noon and two.",
    ]
    .map(str::to_owned)
    .to_vec();
    let vectors = embedder.embed_batch(&texts).await.unwrap();
    assert_eq!(vectors.len(), 3);
    for v in &vectors {
        assert_eq!(v.len(), 384);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    }
    let related = cosine(&vectors[0], &vectors[1]);
    let unrelated = cosine(&vectors[0], &vectors[2]);
    assert!(
        related > unrelated + 0.2,
        "related {related}, unrelated {unrelated}"
    );

    // Padding in a batch does not change an embedding, and the same text always gives the same vector.
    let alone = embedder.embed_batch(&texts[..1]).await.unwrap();
    let drift: f32 = alone[0]
        .iter()
        .zip(&vectors[0])
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(drift < 1e-4, "batching changed the embedding by {drift}");
    assert_eq!(alone, embedder.embed_batch(&texts[..1]).await.unwrap());
}

#[tokio::test]
async fn a_missing_model_is_a_clear_error() {
    let err = LocalEmbedder::load(std::path::Path::new("/nonexistent-model")).unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent-model/config.json"),
        "{err}"
    );
}

/// Vectors match Python sentence-transformers for the same sentences (fixture written by
/// `benches/embedding/reference.py`): cosine > 0.999 each, including an input past the 256-token truncation,
/// a one-letter input and a German sentence.
#[tokio::test]
async fn matches_sentence_transformers_reference_vectors() {
    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/reference_vectors.json")).unwrap();
    let sentences: Vec<String> = serde_json::from_value(fixture["sentences"].clone()).unwrap();
    let expected: Vec<Vec<f32>> = serde_json::from_value(fixture["vectors"].clone()).unwrap();
    for embedder in engines() {
        let engine = embedder.engine_name();
        // A document batch, and each sentence alone as a question is embedded (another code path on ONNX
        // Runtime: its own session).
        let mut runs = vec![embedder.embed_batch(&sentences).await.unwrap()];
        let mut alone = Vec::new();
        for sentence in &sentences {
            alone.extend(
                embedder
                    .embed_batch(std::slice::from_ref(sentence))
                    .await
                    .unwrap(),
            );
        }
        runs.push(alone);
        let mut lowest = f32::MAX;
        for vectors in runs {
            for ((sentence, got), want) in sentences.iter().zip(&vectors).zip(&expected) {
                let similarity = cosine(got, want);
                assert!(
                    similarity > 0.999,
                    "{engine}: cosine {similarity} for {sentence:?}"
                );
                lowest = lowest.min(similarity);
            }
        }
        eprintln!("{engine}: lowest cosine against sentence-transformers: {lowest}");
    }
}

/// Asking for ONNX Runtime where its library is not is an error naming what is missing, not a silent
/// fallback to the slower engine.
#[tokio::test]
async fn onnxruntime_without_its_library_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    for file in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::os::unix::fs::symlink(model_dir_from_env().join(file), dir.path().join(file)).unwrap();
    }
    if std::env::var_os("ORT_DYLIB_PATH").is_none() {
        let err = LocalEmbedder::load_with(dir.path(), LocalRuntime::Onnxruntime).unwrap_err();
        assert!(err.to_string().contains("libonnxruntime.so"), "{err}");
        let fallback = LocalEmbedder::load_with(dir.path(), LocalRuntime::Auto).unwrap();
        assert_eq!(fallback.engine_name(), "candle");
    }
}
