//! Sentences per second of the local embedder (candle, all-MiniLM-L6-v2) on generated manual sentences, the
//! same ones `benches/embedding/reference.py speed` gives Python sentence-transformers.
//!
//! `cargo run --release -p ragvault-benches --bin embed -- <n> <batch> [out.f32]`: with an output path, also
//! writes every vector (little-endian f32, row-major) for the ANN harness's MiniLM runs.
#![allow(clippy::expect_used, clippy::print_stdout)]

use ragvault_embedding::{model_dir_from_env, Embedder, LocalEmbedder};
use std::time::Instant;

fn manual_sentences(n: usize) -> Vec<String> {
    let parts = [
        "pump", "router", "heater", "valve", "filter", "fan", "display", "battery",
    ];
    let actions = [
        "clean",
        "replace",
        "inspect",
        "reset",
        "tighten",
        "calibrate",
        "update",
        "remove",
    ];
    (0..n)
        .map(|i| {
            format!(
                "Step {i}: {} the {} every {} months, and check that error code E-{} does not appear on the display afterwards.",
                actions[i % 8],
                parts[(i / 8) % 8],
                i % 12 + 1,
                1000 + i % 97
            )
        })
        .collect()
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let batch: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(32);
    let embedder =
        LocalEmbedder::load(&model_dir_from_env()).expect("model: run scripts/fetch-model.sh");
    let texts = manual_sentences(n);
    embedder
        .embed_batch(&texts[..batch])
        .await
        .expect("warm-up");
    let out_path = args.next();
    let mut out = Vec::new();
    let started = Instant::now();
    for chunk in texts.chunks(batch) {
        let vectors = embedder.embed_batch(chunk).await.expect("embed");
        if out_path.is_some() {
            out.extend(vectors.iter().flatten().flat_map(|x| x.to_le_bytes()));
        }
    }
    if let Some(path) = &out_path {
        std::fs::write(path, &out).expect("write vectors");
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    println!("ragvault candle: {rate:.1} sentences/s (batch {batch})");
}
