//! Load generator for `/v1/ask` (a separate process from the server): `concurrency` workers send questions
//! back to back for `seconds`, then it prints one Markdown row: throughput, client latency percentiles, and the
//! server-side overhead per request, read from the `server-timing` header as total minus query embedding minus
//! provider time, and the same as the client sees it (its latency minus embedding and provider time).
//!
//! `cargo run --release -p ragvault-benches --bin ask_load -- <base url> <tenant key> <concurrency> <seconds>`
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Results {
    latencies_ms: Vec<f64>,
    overheads_ms: Vec<f64>,
    /// Client latency minus embedding and provider time: the server-side figure plus HTTP, middleware and
    /// queueing that the handler's own clock cannot see.
    client_overheads_ms: Vec<f64>,
    /// The retrieval part of the server overhead (index and keyword search, opening chunks in Postgres).
    retrieve_ms: Vec<f64>,
    errors: BTreeMap<String, u64>,
}

fn timing(header: &str, name: &str) -> Option<f64> {
    header.split(',').find_map(|part| {
        let part = part.trim();
        part.strip_prefix(name)?.strip_prefix(";dur=")?.parse().ok()
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let base = args.next().expect("base url");
    let key = args.next().expect("tenant key");
    let concurrency: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(50);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let questions = [
        "How do I reset the pump?",
        "What does error E-1042 mean?",
        "How do I change the Wi-Fi name?",
        "How far from curtains should the heater be?",
    ];
    let results = Arc::new(Mutex::new(Results::default()));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut workers = Vec::new();
    for worker in 0..concurrency {
        let (client, key, results) = (client.clone(), key.clone(), results.clone());
        let url = format!("{base}/v1/ask");
        workers.push(tokio::spawn(async move {
            let mut i = worker;
            while Instant::now() < deadline {
                let question = questions[i % questions.len()];
                i += 1;
                let sent = Instant::now();
                let response = client
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&serde_json::json!({"query": question}))
                    .send()
                    .await;
                let outcome = match response {
                    Ok(r) if r.status().is_success() => {
                        let header = r
                            .headers()
                            .get("server-timing")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        let body_ok = r.bytes().await.is_ok();
                        let overhead = match (
                            timing(&header, "total"),
                            timing(&header, "embed"),
                            timing(&header, "provider"),
                        ) {
                            (Some(t), Some(e), Some(p)) if body_ok => Some((
                                t - e - p,
                                e + p,
                                timing(&header, "retrieve").unwrap_or(f64::NAN),
                            )),
                            _ => None,
                        };
                        overhead.ok_or_else(|| "no server-timing".to_owned())
                    }
                    Ok(r) => Err(format!("http {}", r.status().as_u16())),
                    Err(e) if e.is_timeout() => Err("timeout".to_owned()),
                    Err(_) => Err("connection".to_owned()),
                };
                let latency = sent.elapsed().as_secs_f64() * 1000.0;
                let mut results = results.lock().unwrap();
                match outcome {
                    Ok((overhead, outside, retrieve)) => {
                        results.retrieve_ms.push(retrieve);
                        results.latencies_ms.push(latency);
                        results.overheads_ms.push(overhead);
                        results.client_overheads_ms.push(latency - outside);
                    }
                    Err(e) => *results.errors.entry(e).or_default() += 1,
                }
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut results = Arc::try_unwrap(results).ok().unwrap().into_inner().unwrap();
    results.latencies_ms.sort_by(f64::total_cmp);
    results.overheads_ms.sort_by(f64::total_cmp);
    results.client_overheads_ms.sort_by(f64::total_cmp);
    results.retrieve_ms.sort_by(f64::total_cmp);
    let ok = results.latencies_ms.len();
    let errors: u64 = results.errors.values().sum();
    let l = &results.latencies_ms;
    let o = &results.overheads_ms;
    let c = &results.client_overheads_ms;
    let r = &results.retrieve_ms;
    println!(
        "| {concurrency} | {ok} | {errors} | {:.0} | {:.1} / {:.1} / {:.1} / {:.1} | {:.3} / {:.3} / {:.3} / {:.3} | {:.3} / {:.3} | {:.2} / {:.2} / {:.2} / {:.2} |{}",
        ok as f64 / elapsed,
        percentile(l, 50.0),
        percentile(l, 90.0),
        percentile(l, 99.0),
        l.last().copied().unwrap_or(f64::NAN),
        percentile(o, 50.0),
        percentile(o, 90.0),
        percentile(o, 99.0),
        o.last().copied().unwrap_or(f64::NAN),
        percentile(r, 50.0),
        percentile(r, 99.0),
        percentile(c, 50.0),
        percentile(c, 90.0),
        percentile(c, 99.0),
        c.last().copied().unwrap_or(f64::NAN),
        if results.errors.is_empty() {
            String::new()
        } else {
            format!(" errors: {:?}", results.errors)
        }
    );
}
