//! Leak audit: a full scenario with known provider keys, API keys and document text (ingest, search, ask whole
//! and streamed, chat, refused requests, a graceful restart), then every place ragvault writes outside sealed
//! storage is searched for those bytes: logs (debug level), exported traces, `/metrics`, error bodies, a
//! `pg_dump` of its database, and every file in its data directory (index dumps, write-ahead records, keyring).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ragvault_server::config::{LogFormat, LogSettings, TracingSettings};
use ragvault_testkit::http::{call, ingest_text};
use ragvault_testkit::otlp::OtlpReceiver;
use ragvault_testkit::{
    app_with_providers, captured_logs, provider_key_for, unique_slug, FakeProvider, SharedBuffer,
};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::path::Path;
use std::time::Duration;

const MANUAL: &str = "# Zephyrine Z4 espresso machine\n\n## Descaling\n\nRun the quindlewort descaling \
cycle: fill the tank with citric solution and hold the steam dial for twelve seconds.\n\n## Error codes\n\n\
Code Q-7781 means the grouphead thermistor drifted.\n";
const DOCUMENT_WORDS: [&str; 3] = ["quindlewort", "grouphead thermistor", "Zephyrine"];
const QUESTION: &str = "How do I run the quindlewort descaling cycle on the Zephyrine?";

fn files_under(dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn known_keys_and_text_appear_nowhere_outside_sealed_storage() {
    let receiver = OtlpReceiver::start();
    let logs = SharedBuffer::default();
    let writer = logs.clone();
    let (subscriber, export) = ragvault_server::telemetry::subscriber(
        &LogSettings {
            format: LogFormat::Json,
            level: "debug".into(),
        },
        &TracingSettings {
            otlp_endpoint: Some(receiver.url.clone()),
            export_delay_ms: 50,
            ..TracingSettings::default()
        },
        move || writer.clone(),
    )
    .unwrap();
    let export = export.unwrap();
    // Single-threaded test runtime: the server's tasks log and trace into this subscriber.
    let _scoped = tracing::subscriber::set_default(subscriber);

    let fake = FakeProvider::start().await;
    let mut app = app_with_providers(&fake, &[("openai", "openai")], &[]).await;
    let tenant = app.create_tenant(&unique_slug("leak")).await;
    app.set_policy(&tenant.id, json!({"failover_chain": ["openai"]}))
        .await;
    ingest_text(&app, &tenant.api_key, "zephyrine.md", MANUAL, &["manual"]).await;

    let mut responses: Vec<(String, String)> = Vec::new();
    let key = tenant.api_key.as_str();
    for (method, path, body) in [
        (Method::POST, "/v1/search", json!({"query": QUESTION})),
        (Method::POST, "/v1/ask", json!({"query": QUESTION})),
        (
            Method::POST,
            "/v1/ask",
            json!({"query": QUESTION, "stream": true}),
        ),
        (
            Method::POST,
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": QUESTION}]}),
        ),
    ] {
        let r = app
            .client
            .request(method, app.url(path))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let _ = r.text().await.unwrap();
    }
    // Refusals: a forged key built on the real key's public id, a key the provider refuses, bad input.
    let public = key.split('_').nth(1).unwrap();
    let forged = format!("rvk_{public}_{}", "Q".repeat(40));
    let r = call(&app, Method::GET, "/v1/whoami", Some(&forged), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    responses.push(("401 forged key".into(), r.body.to_string()));
    fake.revoke(&provider_key_for("openai"));
    let r = call(
        &app,
        Method::POST,
        "/v1/ask",
        Some(key),
        Some(json!({"query": QUESTION})),
    )
    .await;
    assert!(!r.status.is_success(), "{}", r.body);
    responses.push(("refused provider key".into(), r.body.to_string()));
    let r = call(
        &app,
        Method::POST,
        "/v1/ask",
        Some(key),
        Some(json!({"query": QUESTION, "top_k": 0})),
    )
    .await;
    responses.push(("422 top_k".into(), r.body.to_string()));
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    responses.push(("/metrics".into(), metrics));

    // A graceful restart writes the index dumps; then the database and the data directory are read whole.
    app.restart(false).await;
    for _ in 0..20 {
        export.flush();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dump = app.database.dump();
    let mut places: Vec<(String, Vec<u8>)> = vec![
        ("logs (this test's subscriber)".into(), logs.contents()),
        (
            "logs (process capture)".into(),
            captured_logs().into_bytes(),
        ),
        ("pg_dump".into(), dump.into_bytes()),
    ];
    for (i, body) in receiver.bodies().into_iter().enumerate() {
        places.push((format!("trace export {i}"), body.to_vec()));
    }
    for (name, body) in responses {
        places.push((name, body.into_bytes()));
    }
    files_under(app.data_dir.path(), &mut places);
    assert!(
        places
            .iter()
            .any(|(name, _)| name.starts_with("trace export")),
        "no trace was exported"
    );
    assert!(
        places.iter().any(|(name, _)| name.contains("index")),
        "no index file in the data directory: {:?}",
        places.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );

    // The places hold the scenario (so an empty file cannot pass for a clean one).
    let find = |name: &str| &places.iter().find(|(n, _)| n == name).unwrap().1;
    assert!(contains(find("pg_dump"), &tenant.id));
    assert!(contains(
        find("logs (this test's subscriber)"),
        "request finished"
    ));

    let mut secrets = vec![
        provider_key_for("openai"),
        tenant.api_key.clone(),
        app.operator_key.clone(),
        forged.clone(),
        QUESTION.to_owned(),
    ];
    secrets.extend(DOCUMENT_WORDS.iter().map(|w| (*w).to_owned()));
    let mut leaks = Vec::new();
    for (place, bytes) in &places {
        for secret in &secrets {
            if contains(bytes, secret) {
                leaks.push(format!("{place}: {:?}", &secret[..secret.len().min(12)]));
            }
        }
    }
    assert!(leaks.is_empty(), "found outside sealed storage: {leaks:#?}");
}
