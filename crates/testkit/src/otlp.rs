//! A local OTLP/HTTP trace receiver that keeps every export body, for tests of trace export.

use axum::body::Bytes;
use axum::routing::post;
use std::sync::{Arc, Mutex};

pub struct OtlpReceiver {
    /// Base URL to configure as `tracing.otlp_endpoint`.
    pub url: String,
    bodies: Arc<Mutex<Vec<Bytes>>>,
}

impl OtlpReceiver {
    /// Runs on its own thread and runtime: a test's runtime is often single-threaded, and a trace flush blocks
    /// it until the receiver answers.
    pub fn start() -> OtlpReceiver {
        let bodies: Arc<Mutex<Vec<Bytes>>> = Arc::default();
        let kept = bodies.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            post(move |body: Bytes| {
                let kept = kept.clone();
                async move {
                    kept.lock().expect("receiver").push(body);
                    // An empty ExportTraceServiceResponse: full success.
                    (
                        [("content-type", "application/x-protobuf")],
                        Vec::<u8>::new(),
                    )
                }
            }),
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("receiver runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let _ = axum::serve(listener, app).await;
            });
        });
        OtlpReceiver { url, bodies }
    }

    /// Every export request body (protobuf `ExportTraceServiceRequest`) received so far.
    pub fn bodies(&self) -> Vec<Bytes> {
        self.bodies.lock().expect("receiver").clone()
    }
}
