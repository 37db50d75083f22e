//! The local all-MiniLM-L6-v2 embedder on the real weights (fetched by `scripts/fetch-model.sh`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ragvault_embedding::{model_dir_from_env, Embedder, LocalEmbedder};

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[tokio::test]
async fn embeds_unit_vectors_that_rank_related_text_first() {
    let embedder =
        LocalEmbedder::load(&model_dir_from_env()).expect("model: run scripts/fetch-model.sh");
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
    let embedder =
        LocalEmbedder::shared(&model_dir_from_env()).expect("model: run scripts/fetch-model.sh");
    let vectors = embedder.embed_batch(&sentences).await.unwrap();
    let mut lowest = f32::MAX;
    for ((sentence, got), want) in sentences.iter().zip(&vectors).zip(&expected) {
        let similarity = cosine(got, want);
        assert!(similarity > 0.999, "cosine {similarity} for {sentence:?}");
        lowest = lowest.min(similarity);
    }
    eprintln!("lowest cosine against sentence-transformers: {lowest}");
}
