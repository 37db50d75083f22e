//! Texts per second of the local embedder (all-MiniLM-L6-v2) on ONNX Runtime and on candle, on generated manual
//! sentences (the ones `benches/embedding/reference.py speed` gives Python sentence-transformers) or on the
//! chunk texts of a real manual (`chunk_texts` writes them; `reference.py file` embeds the same file).
//!
//! `cargo run --release -p ragvault-benches --bin embed -- <n> <batch> [out.f32]`: generated sentences, each
//! engine; with an output path, also writes every vector of the default engine (little-endian f32,
//! row-major) for the ANN harness's MiniLM runs.
//! `cargo run --release -p ragvault-benches --bin embed -- --texts <file.jsonl> <batch> [engine...]`: the
//! texts of a JSON-lines file (a string, or an object with `text`, per line), sorted by length and batched
//! as ingest does.
#![allow(clippy::expect_used, clippy::print_stdout)]

use ragvault_embedding::{model_dir_from_env, Embedder, LocalEmbedder, LocalRuntime};
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

fn engine(name: &str) -> LocalRuntime {
    match name {
        "onnxruntime" => LocalRuntime::Onnxruntime,
        "candle" => LocalRuntime::Candle,
        other => panic!("unknown engine {other}: onnxruntime or candle"),
    }
}

/// Embeds `texts` in batches of `batch` after a warm-up batch; texts/s and the vectors in input order.
async fn run(embedder: &LocalEmbedder, texts: &[String], batch: usize) -> (f64, Vec<Vec<f32>>) {
    embedder
        .embed_batch(&texts[..batch.min(texts.len())])
        .await
        .expect("warm-up");
    let started = Instant::now();
    let mut vectors = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(batch) {
        vectors.extend(embedder.embed_batch(chunk).await.expect("embed"));
    }
    (
        texts.len() as f64 / started.elapsed().as_secs_f64(),
        vectors,
    )
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--texts") {
        let path = args
            .get(1)
            .expect("--texts <file.jsonl> <batch> [engine...]");
        let batch: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(32);
        let mut texts: Vec<String> = std::fs::read_to_string(path)
            .expect("texts file")
            .lines()
            .map(|l| {
                let line: serde_json::Value = serde_json::from_str(l).expect("JSON lines");
                match line {
                    serde_json::Value::String(text) => text,
                    object => object["text"]
                        .as_str()
                        .expect("a string or {text}")
                        .to_owned(),
                }
            })
            .collect();
        // As the ingest path and sentence-transformers both do: similar lengths share a batch.
        texts.sort_by_key(String::len);
        let engines: Vec<&str> = if args.len() > 3 {
            args[3..].iter().map(String::as_str).collect()
        } else {
            vec!["onnxruntime", "candle"]
        };
        for name in engines {
            let embedder = LocalEmbedder::load_with(&model_dir_from_env(), engine(name))
                .expect("model: run scripts/fetch-model.sh");
            let (rate, _) = run(&embedder, &texts, batch).await;
            println!(
                "ragvault {name}: {rate:.1} chunks/s ({} texts, batch {batch})",
                texts.len()
            );
        }
        return;
    }
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let batch: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(32);
    let out_path = args.get(2);
    let texts = manual_sentences(n);
    for name in ["onnxruntime", "candle"] {
        let embedder = LocalEmbedder::load_with(&model_dir_from_env(), engine(name))
            .expect("model: run scripts/fetch-model.sh");
        let (rate, vectors) = run(&embedder, &texts, batch).await;
        println!("ragvault {name}: {rate:.1} sentences/s (batch {batch})");
        if let (Some(path), "onnxruntime") = (out_path, name) {
            let bytes: Vec<u8> = vectors
                .iter()
                .flatten()
                .flat_map(|x| x.to_le_bytes())
                .collect();
            std::fs::write(path, &bytes).expect("write vectors");
        }
    }
}
