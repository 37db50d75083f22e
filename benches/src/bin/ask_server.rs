//! The service side of the `/v1/ask` overhead benchmark: a real ragvault (testkit: fresh database, release
//! build) whose answers come from the testkit's fake OpenAI at a fixed latency and whose query embeddings come
//! from the same fake (so the local model's CPU time does not crowd the measurement). Ingests a few manuals,
//! prints `<base url> <tenant key>` on one line, and serves until killed.
//!
//! `cargo run --release -p ragvault-benches --bin ask_server -- [provider latency ms]`
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stdout)]

use ragvault_testkit::http::ingest_text;
use ragvault_testkit::{FakeProvider, FAKE_EMBEDDING_DIMENSION};
use std::io::Write;
use std::time::Duration;

#[tokio::main]
async fn main() {
    let latency_ms: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    // `ASK_BENCH_TRACES=1`: export every span to a local OTLP receiver, to measure trace export's cost.
    let receiver =
        std::env::var_os("ASK_BENCH_TRACES").map(|_| ragvault_testkit::otlp::OtlpReceiver::start());
    let _trace_export = receiver.as_ref().map(|receiver| {
        let log = ragvault_server::config::LogSettings {
            format: ragvault_server::config::LogFormat::Json,
            level: "warn".into(),
        };
        let tracing = ragvault_server::config::TracingSettings {
            otlp_endpoint: Some(receiver.url.clone()),
            ..Default::default()
        };
        ragvault_server::telemetry::init(&log, &tracing, std::io::stderr).expect("trace export")
    });
    ragvault_testkit::log_to_stderr("warn");
    let fake = FakeProvider::start().await;
    fake.set_latency(Duration::from_millis(latency_ms));
    let url = format!("\"{}\"", fake.base_url);
    let dimension = FAKE_EMBEDDING_DIMENSION.to_string();
    let app = ragvault_testkit::spawn_app_with(&[
        ("providers.openai.base_url", url.as_str()),
        ("providers.openai.model", "\"gpt-4o-mini\""),
        ("embedding.provider", "\"openai\""),
        ("embedding.model", "\"fake-embed\""),
        ("embedding.dimension", dimension.as_str()),
        ("generation.chain", "[\"openai\"]"),
        ("database.max_connections", "32"),
        ("http.request_timeout_secs", "120"),
        ("log.level", "\"warn\""),
    ])
    .await;
    let key = format!("bench-{}", "k".repeat(24));
    fake.accept(&key);
    app.set_provider_key("openai", &key).await;
    let tenant = app.create_tenant("ask-bench").await;
    let manuals = [
        ("pump.md", "# Pump\n\nTo reset the pump, hold the reset button for ten seconds until the green light blinks. Error E-1042 means the impeller is blocked by debris."),
        ("router.md", "# Router\n\nHold the recessed reset button of the router for ten seconds until the lights blink amber. Change the Wi-Fi name under Wireless, then Basic."),
        ("heater.md", "# Heater\n\nKeep the heater one metre away from curtains. Turn the dial clockwise to raise the target temperature."),
    ];
    for (name, text) in manuals {
        ingest_text(&app, &tenant.api_key, name, text, &[]).await;
    }
    println!("{} {}", app.base_url, tenant.api_key);
    std::io::stdout().flush().ok();
    // Serve until the harness kills this process.
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}
