//! HTTP helpers for tests: call the service, read the reply, check the error envelope, wait for jobs.

use crate::TestApp;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::time::Duration;

/// A response read whole: status, headers and the JSON body (`Null` when the body is not JSON).
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

pub async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> Reply {
    let mut request = app.client.request(method, app.url(path));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    reply(request.send().await.expect("test request")).await
}

pub async fn reply(response: reqwest::Response) -> Reply {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("test request");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        body,
    }
}

/// Asserts the error envelope: status, code, a message, and the request id matching the header.
pub fn assert_error(reply: &Reply, status: StatusCode, code: &str) {
    assert_eq!(reply.status, status, "body: {}", reply.body);
    assert_eq!(reply.body["error"]["code"], code, "body: {}", reply.body);
    assert!(reply.body["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    let header_id = reply.headers["x-request-id"]
        .to_str()
        .expect("test request");
    assert_eq!(reply.body["error"]["request_id"], header_id);
}

/// Polls `GET /v1/jobs/{id}` until the job is done or failed (60 s at most: jobs embed on the CPU).
pub async fn wait_for_job(app: &TestApp, key: &str, job_id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        let job = call(
            app,
            Method::GET,
            &format!("/v1/jobs/{job_id}"),
            Some(key),
            None,
        )
        .await;
        assert_eq!(job.status, 200, "{}", job.body);
        if job.body["status"] == "done" || job.body["status"] == "failed" {
            return job.body;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("job {job_id} did not finish");
}

/// Uploads a text document through `POST /v1/documents` and waits until it is indexed; returns its id.
pub async fn ingest_text(
    app: &TestApp,
    key: &str,
    name: &str,
    content: &str,
    tags: &[&str],
) -> String {
    let r = call(
        app,
        Method::POST,
        "/v1/documents",
        Some(key),
        Some(serde_json::json!({"name": name, "content": content, "content_type": "text/markdown", "tags": tags})),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let job = wait_for_job(app, key, r.body["job_id"].as_str().expect("job id")).await;
    assert_eq!(job["status"], "done", "{job}");
    r.body["document_id"]
        .as_str()
        .expect("document id")
        .to_owned()
}

/// `GET /metrics` as text (no credentials: scrapers have none).
pub async fn metrics_text(app: &TestApp) -> String {
    app.client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics request")
        .text()
        .await
        .expect("metrics body")
}

/// Server-Sent Events read whole: `(event name, data)` in order (`message` for unnamed events; data parsed
/// as JSON when it is JSON, else kept as a string).
pub async fn sse_events(response: reqwest::Response) -> Vec<(String, Value)> {
    let text = response.text().await.expect("stream");
    parse_sse(&text)
}

pub fn parse_sse(text: &str) -> Vec<(String, Value)> {
    let mut events = Vec::new();
    for block in text.split("\n\n") {
        let mut name = String::from("message");
        let mut data = Vec::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                name = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push(v.strip_prefix(' ').unwrap_or(v).to_owned());
            }
        }
        if data.is_empty() {
            continue;
        }
        let data = data.join("\n");
        let value = serde_json::from_str(&data).unwrap_or(Value::String(data));
        events.push((name, value));
    }
    events
}
