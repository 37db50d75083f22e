//! A do-nothing proxy built on the same HTTP stack as ragvault (axum and hyper on a multi-threaded tokio
//! runtime, `TCP_NODELAY` on accepted connections, a pooled reqwest client): each POST body and its
//! `authorization` header go to the upstream unchanged, and the upstream's answer comes back. `chat_compare`
//! measures it beside ragvault, so the cost of one more HTTP hop on the machine can be told from what
//! ragvault's own work adds. Like ragvault, it says in `server-timing` how long it waited for the upstream
//! (`provider;dur=…`), so the harness can take each call's own upstream time out of its latency.
//!
//! `passthrough --listen 127.0.0.1:PORT --upstream http://127.0.0.1:PORT/chat/completions`
#![allow(clippy::expect_used, clippy::print_stderr)]

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

struct Upstream {
    client: reqwest::Client,
    url: String,
}

#[tokio::main]
async fn main() {
    let mut listen = "127.0.0.1:0".to_owned();
    let mut url = String::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().expect("a value");
        match arg.as_str() {
            "--listen" => listen = value,
            "--upstream" => url = value,
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(!url.is_empty(), "--upstream is required");
    let upstream = Arc::new(Upstream {
        client: reqwest::Client::new(),
        url,
    });
    let router = axum::Router::new()
        .fallback(axum::routing::post(forward))
        .with_state(upstream);
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .expect("bind the listen address");
    let listener = axum::serve::ListenerExt::tap_io(listener, |stream| {
        let _ = stream.set_nodelay(true);
    });
    axum::serve(listener, router).await.expect("serve");
}

async fn forward(
    State(upstream): State<Arc<Upstream>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut request = upstream
        .client
        .post(&upstream.url)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body);
    if let Some(authorization) = headers.get(header::AUTHORIZATION) {
        request = request.header(header::AUTHORIZATION, authorization.clone());
    }
    let started = std::time::Instant::now();
    let answer = match request.send().await {
        Ok(answer) => answer,
        Err(e) => {
            eprintln!("upstream: {e}");
            return StatusCode::BAD_GATEWAY.into_response();
        }
    };
    let status = answer.status();
    match answer.bytes().await {
        Ok(bytes) => {
            let waited = format!(
                "provider;dur={:.3}",
                started.elapsed().as_secs_f64() * 1000.0
            );
            (
                status,
                [
                    (header::CONTENT_TYPE, "application/json".to_owned()),
                    (header::HeaderName::from_static("server-timing"), waited),
                ],
                bytes,
            )
                .into_response()
        }
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}
