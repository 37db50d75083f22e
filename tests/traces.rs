//! Trace export: an answered question's spans reach a local OTLP/HTTP receiver (protobuf, as a collector or
//! Jaeger receives them) as one trace under the caller's `traceparent`, the provider call carries the trace on,
//! and nothing exported holds a key, the question or document text.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use ragvault_server::config::{LogFormat, LogSettings, TracingSettings};
use ragvault_testkit::http::ingest_text;
use ragvault_testkit::{app_with_providers, provider_key_for, unique_slug, FakeProvider};
use reqwest::StatusCode;
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const MANUAL: &str =
    "# Quasar Q9 kettle\n\n## Descaling\n\nTo descale the Quasar kettle, fill it with \
vinegar-marmalade solution and wait forty minutes.\n";
const QUESTION: &str = "How do I descale the Quasar kettle?";

struct ExportedSpan {
    name: String,
    trace_id: String,
    attributes: HashMap<String, String>,
}

fn exported_spans(bodies: &[Bytes]) -> Vec<ExportedSpan> {
    let mut spans = Vec::new();
    for body in bodies {
        let request = ExportTraceServiceRequest::decode(body.as_ref()).unwrap();
        for resource in request.resource_spans {
            for scope in resource.scope_spans {
                for span in scope.spans {
                    let attributes = span
                        .attributes
                        .iter()
                        .map(|kv| {
                            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                                Some(AnyValue::StringValue(s)) => s.clone(),
                                Some(AnyValue::IntValue(i)) => i.to_string(),
                                Some(AnyValue::BoolValue(b)) => b.to_string(),
                                Some(AnyValue::DoubleValue(d)) => d.to_string(),
                                other => format!("{other:?}"),
                            };
                            (kv.key.clone(), value)
                        })
                        .collect();
                    spans.push(ExportedSpan {
                        name: span.name,
                        trace_id: hex::encode(&span.trace_id),
                        attributes,
                    });
                }
            }
        }
    }
    spans
}

/// Runs one traced question against an app with `overrides` and returns what the receiver got, raw and
/// decoded, with the secrets that must not be in it.
async fn traced_question(
    overrides: &[(&str, &str)],
) -> (Vec<Bytes>, Vec<ExportedSpan>, Vec<String>) {
    let receiver = ragvault_testkit::otlp::OtlpReceiver::start();
    let log = LogSettings {
        format: LogFormat::Json,
        level: "info".into(),
    };
    let settings = TracingSettings {
        otlp_endpoint: Some(receiver.url.clone()),
        export_delay_ms: 50,
        ..TracingSettings::default()
    };
    let (subscriber, export) =
        ragvault_server::telemetry::subscriber(&log, &settings, std::io::sink).unwrap();
    let export = export.expect("export configured");
    // The test runtime is single-threaded: the server's tasks run on this thread, under this subscriber.
    let _scoped = tracing::subscriber::set_default(subscriber);

    let fake = FakeProvider::start().await;
    let app = app_with_providers(&fake, &[("openai", "openai")], overrides).await;
    let tenant = app.create_tenant(&unique_slug("trace")).await;
    app.set_policy(&tenant.id, json!({"failover_chain": ["openai"]}))
        .await;
    ingest_text(&app, &tenant.api_key, "kettle.md", MANUAL, &[]).await;

    let response = app
        .client
        .post(app.url("/v1/ask"))
        .bearer_auth(&tenant.api_key)
        .header("traceparent", format!("00-{TRACE_ID}-00f067aa0ba902b7-01"))
        .json(&json!({"query": QUESTION}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // Out to the caller: the response names the request's span in the caller's trace.
    let returned = response.headers()["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        returned.starts_with(&format!("00-{TRACE_ID}-")),
        "{returned}"
    );
    let answer: serde_json::Value = response.json().await.unwrap();
    assert!(answer["answer"].as_str().unwrap().len() > 10, "{answer}");
    // Out to the provider: the generation call carries the same trace.
    let sent = fake.chat_traceparents();
    assert!(
        sent.last().unwrap().starts_with(&format!("00-{TRACE_ID}-")),
        "{sent:?}"
    );

    let mut bodies = Vec::new();
    for _ in 0..100 {
        export.flush();
        bodies = receiver.bodies();
        let spans = exported_spans(&bodies);
        if spans.iter().any(|s| s.name == "generate")
            && spans.iter().any(|s| s.name == "POST /v1/ask")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secrets = vec![
        provider_key_for("openai"),
        tenant.api_key.clone(),
        app.operator_key.clone(),
        "vinegar-marmalade".to_owned(),
    ];
    (bodies.clone(), exported_spans(&bodies), secrets)
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn an_answered_question_exports_one_trace_with_its_stages_and_no_secret() {
    let (bodies, spans, secrets) = traced_question(&[]).await;
    let of_request: Vec<&ExportedSpan> = spans.iter().filter(|s| s.trace_id == TRACE_ID).collect();
    let named = |name: &str| {
        of_request
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| {
                panic!(
                    "no {name} span in the caller's trace; got {:?}",
                    spans
                        .iter()
                        .map(|s| (&s.name, &s.trace_id))
                        .collect::<Vec<_>>()
                )
            })
    };
    named("POST /v1/ask");
    let request = named("request");
    assert_eq!(request.attributes["http.route"], "/v1/ask");
    assert_eq!(request.attributes["http.response.status_code"], "200");
    let auth = named("auth");
    assert_eq!(auth.attributes["outcome"], "ok");
    assert!(
        auth.attributes["actor"].starts_with("api_key:"),
        "{:?}",
        auth.attributes
    );
    let embed = named("embed");
    assert_eq!(embed.attributes["model"], "all-MiniLM-L6-v2");
    let search = named("search");
    assert_eq!(search.attributes["mode"], "hybrid");
    assert!(search.attributes["chunks"].parse::<u64>().unwrap() >= 1);
    let unseal = named("unseal");
    assert!(unseal.attributes["chunks"].parse::<u64>().unwrap() >= 1);
    let generate = named("generate");
    assert_eq!(generate.attributes["provider"], "openai");
    assert_eq!(generate.attributes["model"], "openai-model");
    assert_eq!(generate.attributes["key_version"], "1");
    assert_eq!(generate.attributes["outcome"], "ok");
    assert!(generate.attributes["input_tokens"].parse::<u64>().unwrap() > 10);
    assert!(generate.attributes["output_tokens"].parse::<u64>().unwrap() > 0);
    assert!(
        !spans.iter().any(|s| s.name == "prompt"),
        "prompts are off by default"
    );

    for body in &bodies {
        for secret in secrets
            .iter()
            .map(String::as_str)
            .chain([QUESTION, "descale"])
        {
            assert!(
                !contains(body, secret),
                "exported trace contains {secret:?}"
            );
        }
    }
}

#[tokio::test]
async fn prompts_enter_traces_only_when_the_debug_setting_says_so() {
    let (bodies, spans, secrets) =
        traced_question(&[("tracing.debug_record_prompts", "true")]).await;
    let prompt = spans
        .iter()
        .find(|s| s.name == "prompt" && s.trace_id == TRACE_ID)
        .expect("a prompt span");
    assert_eq!(prompt.attributes["text"], QUESTION);
    // Keys and document text stay out even then.
    for body in &bodies {
        for secret in &secrets {
            assert!(
                !contains(body, secret),
                "exported trace contains {secret:?}"
            );
        }
    }
}
