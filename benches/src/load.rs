//! A closed-loop HTTP load generator: each class of traffic has its own workers sending requests back to back
//! until the run stops, and every request is kept as a sample (when it was sent, how long it took, its outcome)
//! so a scenario can ask both for overall percentiles and for what happened inside a time window (during an
//! outage, after a restart).

use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One class of traffic: the same route, credentials and concurrency.
#[derive(Clone)]
pub struct Traffic {
    /// Shown in the report (`ask`, `chat`, `ingest`, `flood`...).
    pub name: String,
    pub url: String,
    pub bearer: String,
    pub concurrency: usize,
    /// The JSON body of the `n`th request of this traffic.
    pub body: Arc<dyn Fn(u64) -> Value + Send + Sync>,
    /// Pause between a worker's requests (zero: back to back).
    pub think_time: Duration,
    /// Keep the JSON body of every success (ingest: the ids to check afterwards).
    pub keep_bodies: bool,
    /// Open loop: this many requests a second over all workers, each sent at its scheduled time whatever
    /// the answers before it did, its latency counted from that time (a late send is the server's delay,
    /// not a request left out). `None`: closed loop, each worker sends when its last request ended.
    pub rate_per_second: Option<f64>,
}

impl Traffic {
    pub fn new(
        name: &str,
        url: String,
        bearer: &str,
        concurrency: usize,
        body: impl Fn(u64) -> Value + Send + Sync + 'static,
    ) -> Traffic {
        Traffic {
            name: name.to_owned(),
            url,
            bearer: bearer.to_owned(),
            concurrency,
            body: Arc::new(body),
            think_time: Duration::ZERO,
            keep_bodies: false,
            rate_per_second: None,
        }
    }
}

/// What became of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// `"<status> <error.code>"` from the error envelope, or `connection` / `timeout` when no response came.
    Failed(String),
}

#[derive(Clone, Debug)]
pub struct Sample {
    /// When the request was sent, from the start of the run.
    pub sent_at: Duration,
    pub latency: Duration,
    pub outcome: Outcome,
    /// The response's `x-request-id` (what usage rows and audit events are keyed by).
    pub request_id: Option<String>,
    /// The JSON body of a success, when the traffic keeps it (`Traffic::keep_bodies`).
    pub body: Option<Value>,
    /// The response's `server-timing` header (`embed;dur=…, retrieve;dur=…, provider;dur=…, total;dur=…`):
    /// where the server says the time went, to tell its latency from the harness's.
    pub server_timing: Option<String>,
}

impl Sample {
    /// One stage's duration from `server-timing`, if the response named it.
    pub fn stage(&self, name: &str) -> Option<Duration> {
        self.server_timing.as_deref()?.split(',').find_map(|entry| {
            let (stage, dur) = entry.trim().split_once(";dur=")?;
            (stage == name)
                .then(|| dur.parse::<f64>().ok())
                .flatten()
                .filter(|ms| ms.is_finite() && *ms >= 0.0)
                .map(|ms| Duration::from_secs_f64(ms / 1000.0))
        })
    }
}

/// Every sample of one traffic class over one run.
#[derive(Clone, Debug, Default)]
pub struct TrafficReport {
    pub name: String,
    pub concurrency: usize,
    pub elapsed: Duration,
    pub samples: Vec<Sample>,
}

impl TrafficReport {
    pub fn ok(&self) -> usize {
        self.samples
            .iter()
            .filter(|s| s.outcome == Outcome::Ok)
            .count()
    }

    pub fn failed(&self) -> usize {
        self.samples.len() - self.ok()
    }

    /// Failures by code, most frequent first in the Markdown rendering.
    pub fn errors(&self) -> BTreeMap<String, u64> {
        let mut errors = BTreeMap::new();
        for sample in &self.samples {
            if let Outcome::Failed(code) = &sample.outcome {
                *errors.entry(code.clone()).or_default() += 1;
            }
        }
        errors
    }

    pub fn error_rate(&self) -> f64 {
        if self.samples.is_empty() {
            return 0.0;
        }
        self.failed() as f64 / self.samples.len() as f64
    }

    /// Successful requests per second.
    pub fn throughput(&self) -> f64 {
        self.ok() as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// Latency percentiles of the successful requests.
    pub fn ok_latency(&self) -> Percentiles {
        Percentiles::of(
            self.samples
                .iter()
                .filter(|s| s.outcome == Outcome::Ok)
                .map(|s| s.latency),
        )
    }

    /// Latency percentiles of every request (refusals too): what a caller waits for either way.
    pub fn all_latency(&self) -> Percentiles {
        Percentiles::of(self.samples.iter().map(|s| s.latency))
    }

    /// The samples sent inside `[from, to)` of the run.
    pub fn window(&self, from: Duration, to: Duration) -> impl Iterator<Item = &Sample> {
        self.samples
            .iter()
            .filter(move |s| s.sent_at >= from && s.sent_at < to)
    }

    /// A one-line summary of the errors: `429 over_budget: 12, connection: 1`.
    pub fn errors_text(&self) -> String {
        let mut errors: Vec<(String, u64)> = self.errors().into_iter().collect();
        errors.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        if errors.is_empty() {
            return "none".to_owned();
        }
        errors
            .iter()
            .map(|(code, n)| format!("{code}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Percentiles {
    pub count: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(latencies: impl Iterator<Item = Duration>) -> Percentiles {
        let mut ms: Vec<f64> = latencies.map(|d| d.as_secs_f64() * 1000.0).collect();
        ms.sort_by(f64::total_cmp);
        Percentiles {
            count: ms.len(),
            p50: percentile(&ms, 50.0),
            p90: percentile(&ms, 90.0),
            p99: percentile(&ms, 99.0),
            max: ms.last().copied().unwrap_or(f64::NAN),
        }
    }
}

/// The nearest-rank percentile of sorted values (NaN for none).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// The HTTP client the harness uses: enough idle connections for every worker, and a timeout well past any
/// latency a passing scenario has, so a hung request is counted as one rather than stalling the run.
pub fn client(max_connections: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(max_connections)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client")
}

/// What one request came back with.
pub struct Response {
    pub outcome: Outcome,
    pub request_id: Option<String>,
    pub body: Option<Value>,
    pub server_timing: Option<String>,
}

/// Sends one request and classifies what came back. The body is read whole: a response that breaks off
/// midway is a failure, not a success.
pub async fn send(client: &reqwest::Client, traffic: &Traffic, n: u64) -> Response {
    let response = client
        .post(&traffic.url)
        .bearer_auth(&traffic.bearer)
        .json(&(traffic.body)(n))
        .send()
        .await;
    let header = |name: &str| {
        response.as_ref().ok().and_then(|r| {
            r.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
    };
    let request_id = header("x-request-id");
    let server_timing = header("server-timing");
    let (outcome, body) = match response {
        Ok(r) if r.status().is_success() => match r.bytes().await {
            Ok(bytes) => (
                Outcome::Ok,
                traffic
                    .keep_bodies
                    .then(|| serde_json::from_slice(&bytes).ok())
                    .flatten(),
            ),
            Err(_) => (Outcome::Failed("body cut off".to_owned()), None),
        },
        Ok(r) => {
            let status = r.status().as_u16();
            let code = r
                .json::<Value>()
                .await
                .ok()
                .and_then(|body| body["error"]["code"].as_str().map(str::to_owned))
                .unwrap_or_else(|| "no error envelope".to_owned());
            (Outcome::Failed(format!("{status} {code}")), None)
        }
        Err(e) if e.is_timeout() => (Outcome::Failed("timeout".to_owned()), None),
        Err(_) => (Outcome::Failed("connection".to_owned()), None),
    };
    Response {
        outcome,
        request_id,
        body,
        server_timing,
    }
}

/// Runs every traffic class at once for `duration` and returns one report per class, in the given order.
pub async fn run(
    client: &reqwest::Client,
    traffics: &[Traffic],
    duration: Duration,
) -> Vec<TrafficReport> {
    run_until(client, traffics, duration, Arc::new(AtomicBool::new(false))).await
}

/// Like [`run`], ending early once `stop` is set (each worker finishes the request it is sending).
pub async fn run_until(
    client: &reqwest::Client,
    traffics: &[Traffic],
    duration: Duration,
    stop: Arc<AtomicBool>,
) -> Vec<TrafficReport> {
    let started = Instant::now();
    let deadline = started + duration;
    let mut classes = Vec::new();
    for traffic in traffics {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let mut workers = Vec::new();
        for worker in 0..traffic.concurrency {
            let (client, traffic, samples) = (client.clone(), traffic.clone(), samples.clone());
            let stop = stop.clone();
            workers.push(tokio::spawn(async move {
                let mut n = worker as u64;
                let mut mine = Vec::new();
                // Paced: worker `w` of `c` sends at start + (w + k·c) / rate.
                let interval = traffic
                    .rate_per_second
                    .map(|rate| Duration::from_secs_f64(traffic.concurrency as f64 / rate));
                let mut scheduled = interval.map(|every| {
                    started + every.mul_f64(worker as f64 / traffic.concurrency as f64)
                });
                while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                    if let Some(at) = scheduled {
                        tokio::time::sleep_until(at.into()).await;
                        if at >= deadline {
                            break;
                        }
                    }
                    let sent = scheduled.unwrap_or_else(Instant::now);
                    if let (Some(at), Some(every)) = (scheduled.as_mut(), interval) {
                        *at += every;
                    }
                    let response = send(&client, &traffic, n).await;
                    mine.push(Sample {
                        sent_at: sent - started,
                        latency: sent.elapsed(),
                        outcome: response.outcome,
                        request_id: response.request_id,
                        body: response.body,
                        server_timing: response.server_timing,
                    });
                    n += traffic.concurrency as u64;
                    if !traffic.think_time.is_zero() {
                        tokio::time::sleep(traffic.think_time).await;
                    }
                }
                samples.lock().expect("samples").extend(mine);
            }));
        }
        classes.push((traffic, samples, workers));
    }
    let mut reports = Vec::new();
    for (traffic, samples, workers) in classes {
        for worker in workers {
            worker.await.expect("load worker");
        }
        let mut samples = std::mem::take(&mut *samples.lock().expect("samples"));
        samples.sort_by_key(|s| s.sent_at);
        reports.push(TrafficReport {
            name: traffic.name.clone(),
            concurrency: traffic.concurrency,
            elapsed: started.elapsed(),
            samples,
        });
    }
    reports
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ms: u64, latency_ms: u64, outcome: Outcome) -> Sample {
        Sample {
            sent_at: Duration::from_millis(at_ms),
            latency: Duration::from_millis(latency_ms),
            outcome,
            request_id: None,
            body: None,
            server_timing: None,
        }
    }

    #[test]
    fn server_timing_stages_are_read_by_name() {
        let mut s = sample(0, 60, Outcome::Ok);
        s.server_timing =
            Some("embed;dur=1.500, retrieve;dur=0.250, provider;dur=50.000, total;dur=52.1".into());
        assert_eq!(s.stage("embed"), Some(Duration::from_micros(1500)));
        assert_eq!(s.stage("total"), Some(Duration::from_micros(52_100)));
        assert_eq!(s.stage("queue"), None);
        s.server_timing = Some("total;dur=nope".into());
        assert_eq!(s.stage("total"), None);
    }

    #[test]
    fn reports_count_errors_by_code_and_take_percentiles_of_successes() {
        let mut samples: Vec<Sample> = (0..100)
            .map(|i| sample(i * 10, i + 1, Outcome::Ok))
            .collect();
        samples.push(sample(
            5,
            1,
            Outcome::Failed("503 database_unavailable".into()),
        ));
        samples.push(sample(
            6,
            1,
            Outcome::Failed("503 database_unavailable".into()),
        ));
        samples.push(sample(7, 9000, Outcome::Failed("timeout".into())));
        let report = TrafficReport {
            name: "ask".into(),
            concurrency: 4,
            elapsed: Duration::from_secs(2),
            samples,
        };
        assert_eq!(report.ok(), 100);
        assert_eq!(report.failed(), 3);
        assert_eq!(report.throughput(), 50.0);
        assert_eq!(
            report.errors_text(),
            "503 database_unavailable: 2, timeout: 1"
        );
        let ok = report.ok_latency();
        assert_eq!((ok.p50, ok.p99, ok.max), (51.0, 99.0, 100.0));
        assert_eq!(report.all_latency().max, 9000.0);
        assert_eq!(
            report
                .window(Duration::ZERO, Duration::from_millis(10))
                .count(),
            4
        );
    }

    #[test]
    fn percentiles_of_nothing_are_not_numbers() {
        let none = Percentiles::of(std::iter::empty());
        assert_eq!(none.count, 0);
        assert!(none.p99.is_nan());
    }
}
