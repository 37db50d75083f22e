//! Retrieval quality and ingest throughput on real documentation: the Debian manual pages named in
//! `benches/retrieval/questions.tsv`, rendered to text by `benches/retrieval/run.sh`, are ingested through the
//! HTTP API of a real service (testkit: fresh database, local model); then every question is asked in vector,
//! keyword and hybrid mode. Prints a Markdown table of recall@5 and MRR@10 per mode and question kind, and the
//! ingest figures (chunks/s, MB/s, share of parse / embed / store / index).
//!
//! `cargo run --release -p ragvault-benches --bin retrieval -- <pages dir> <questions.tsv>`
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stdout)]

use ragvault_testkit::http::call;
use reqwest::Method;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::Instant;

struct Question {
    page: String,
    kind: String,
    text: String,
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let pages_dir = std::path::PathBuf::from(args.next().expect("pages dir"));
    let questions: Vec<Question> = std::fs::read_to_string(args.next().expect("questions.tsv"))
        .expect("questions")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Question {
                page: f[0].to_owned(),
                kind: f[1].to_owned(),
                text: f[2].to_owned(),
            }
        })
        .collect();
    ragvault_testkit::log_to_stderr("warn");
    let app = ragvault_testkit::spawn_app_with(&[
        ("ingest.workers", "2"),
        ("ingest.queue_capacity", "256"),
    ])
    .await;
    let tenant = app.create_tenant("retrieval-bench").await;
    let key = tenant.api_key.clone();
    // curl's page has an example public-key hash that the secret scanner (rightly) cannot tell from a key:
    // redact instead of refusing the page.
    let r = call(
        &app,
        Method::PATCH,
        &format!("/v1/admin/tenants/{}", tenant.id),
        Some(&app.operator_key),
        Some(json!({"policy": {"secret_policy": "redact"}})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);

    let mut pages: Vec<_> = std::fs::read_dir(&pages_dir)
        .expect("pages")
        .flatten()
        .map(|e| e.path())
        .collect();
    pages.sort();
    let started = Instant::now();
    let mut jobs = Vec::new();
    for page in &pages {
        let name = page.file_name().unwrap().to_string_lossy().into_owned();
        let content = std::fs::read_to_string(page).expect("page text");
        let r = call(
            &app,
            Method::POST,
            "/v1/documents",
            Some(&key),
            Some(json!({"name": name, "content": content, "content_type": "text/plain"})),
        )
        .await;
        assert_eq!(r.status, 202, "{}", r.body);
        jobs.push(r.body["job_id"].as_str().unwrap().to_owned());
    }
    // Jobs embed on the CPU: a long page takes a while, so poll without testkit's per-job deadline.
    for job in &jobs {
        loop {
            let r = call(
                &app,
                Method::GET,
                &format!("/v1/jobs/{job}"),
                Some(&key),
                None,
            )
            .await;
            if r.body["status"] == "done" {
                break;
            }
            assert_ne!(r.body["status"], "failed", "{}", r.body);
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let stats = app.state.pipeline.stats();
    let chunks = stats.chunks.load(Ordering::Relaxed) as f64;
    let bytes = stats.text_bytes.load(Ordering::Relaxed) as f64;
    let phases = [
        (
            "parse+chunk+scan",
            stats.parse_nanos.load(Ordering::Relaxed),
        ),
        ("embed", stats.embed_nanos.load(Ordering::Relaxed)),
        ("seal+store", stats.store_nanos.load(Ordering::Relaxed)),
        ("index", stats.index_nanos.load(Ordering::Relaxed)),
    ];
    let total: u64 = phases.iter().map(|(_, n)| n).sum();
    println!("## Ingest\n");
    println!(
        "{} pages, {:.2} MB of text, {} chunks in {wall:.1} s wall: {:.1} chunks/s, {:.3} MB/s\n",
        pages.len(),
        bytes / 1e6,
        chunks,
        chunks / wall,
        bytes / 1e6 / wall
    );
    println!("| phase | share of worker time |\n| --- | --- |");
    for (name, nanos) in phases {
        println!(
            "| {name} | {:.1}% |",
            100.0 * nanos as f64 / total.max(1) as f64
        );
    }

    println!("\n## Retrieval ({} questions)\n", questions.len());
    println!("| mode | kind | questions | recall@5 | MRR@10 | mean latency ms |\n| --- | --- | --- | --- | --- | --- |");
    for mode in ["vector", "keyword", "hybrid"] {
        for row in evaluate(&app, &key, mode, &questions).await {
            println!(
                "| {mode} | {} | {} | {:.3} | {:.3} | {:.1} |",
                row.kind, row.questions, row.recall_at_5, row.mrr, row.latency_ms
            );
        }
    }

    // Hybrid fusion settings, each on a restarted service over the same stored documents and index.
    println!("\n## Hybrid fusion settings\n");
    println!("| vector weight | keyword weight | rrf_k | recall@5 paraphrase / exact / all | MRR@10 paraphrase / exact / all |\n| --- | --- | --- | --- | --- |");
    let mut app = app;
    for (vector_weight, keyword_weight, rrf_k) in [
        (1.0, 1.0, 60.0),
        (1.5, 1.0, 60.0),
        (2.0, 1.0, 60.0),
        (3.0, 1.0, 60.0),
        (1.0, 1.5, 60.0),
        (1.0, 1.0, 10.0),
        (2.0, 1.0, 10.0),
        (1.0, 1.0, 120.0),
    ] {
        app.settings.search.vector_weight = vector_weight;
        app.settings.search.keyword_weight = keyword_weight;
        app.settings.search.rrf_k = rrf_k;
        app.restart(false).await;
        let rows = evaluate(&app, &key, "hybrid", &questions).await;
        let recall: Vec<String> = rows
            .iter()
            .map(|r| format!("{:.3}", r.recall_at_5))
            .collect();
        let mrr: Vec<String> = rows.iter().map(|r| format!("{:.3}", r.mrr)).collect();
        println!(
            "| {vector_weight} | {keyword_weight} | {rrf_k} | {} | {} |",
            recall.join(" / "),
            mrr.join(" / ")
        );
    }
}

struct ModeRow {
    kind: &'static str,
    questions: usize,
    recall_at_5: f64,
    mrr: f64,
    latency_ms: f64,
}

/// Asks every question in one mode; one row per question kind (paraphrase, exact, all).
async fn evaluate(
    app: &ragvault_testkit::TestApp,
    key: &str,
    mode: &str,
    questions: &[Question],
) -> Vec<ModeRow> {
    let mut rows = Vec::new();
    for kind in ["paraphrase", "exact", "all"] {
        let selected: Vec<&Question> = questions
            .iter()
            .filter(|q| kind == "all" || q.kind == kind)
            .collect();
        let (mut hits5, mut rr, mut latency) = (0usize, 0f64, 0f64);
        for q in &selected {
            let t = Instant::now();
            let r = call(
                app,
                Method::POST,
                "/v1/search",
                Some(key),
                Some(json!({"query": q.text, "mode": mode, "top_k": 10})),
            )
            .await;
            latency += t.elapsed().as_secs_f64() * 1e3;
            assert_eq!(r.status, 200, "{}", r.body);
            let expected = format!("{}.txt", q.page);
            let rank = r.body["results"]
                .as_array()
                .unwrap()
                .iter()
                .position(|h| h["name"] == expected.as_str());
            if rank.is_some_and(|r| r < 5) {
                hits5 += 1;
            }
            if let Some(r) = rank {
                rr += 1.0 / (r as f64 + 1.0);
            }
        }
        let n = selected.len().max(1) as f64;
        rows.push(ModeRow {
            kind,
            questions: selected.len(),
            recall_at_5: hits5 as f64 / n,
            mrr: rr / n,
            latency_ms: latency / n,
        });
    }
    rows
}
