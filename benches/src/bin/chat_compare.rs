//! Side by side with LiteLLM: the same fake OpenAI upstream at a fixed latency, the same load generator and
//! concurrency, against (a) the upstream itself, (b) ragvault's `/v1/chat/completions` for a tenant whose policy
//! sets `chat_mode = "plain"` (a brokered call: API key authentication, key lease from OpenBao, budget
//! reservation, metering and audit, no retrieval), and (c) the LiteLLM proxy. Added latency is each proxy's
//! percentile minus the upstream's at the same concurrency; the highest rate is the best throughput with < 1%
//! errors over the concurrency levels. Prints one Markdown report.
//!
//! `chat_compare --litellm PATH [--latency-ms 50] [--seconds 20] [--levels 8,32,128] [--litellm-workers 2]
//!  [--out FILE] [--binary PATH]`
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

use ragvault_benches::load::{self, Traffic, TrafficReport};
use ragvault_benches::process::{free_port, resource_use, tail};
use ragvault_benches::stack::{Stack, StackOptions};
use serde_json::json;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Options {
    litellm: PathBuf,
    latency: Duration,
    seconds: u64,
    levels: Vec<usize>,
    litellm_workers: usize,
    /// Only the upstream and ragvault (profiling ragvault, or where LiteLLM is not installed).
    without_litellm: bool,
    out: Option<PathBuf>,
    binary: PathBuf,
}

fn options() -> Options {
    let mut options = Options {
        litellm: PathBuf::from("litellm"),
        latency: Duration::from_millis(50),
        seconds: 20,
        levels: vec![8, 32, 128],
        litellm_workers: 2,
        without_litellm: false,
        out: None,
        binary: std::env::current_exe()
            .expect("own path")
            .with_file_name("ragvault"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--litellm" => options.litellm = value().into(),
            "--latency-ms" => options.latency = Duration::from_millis(value().parse().expect("ms")),
            "--seconds" => options.seconds = value().parse().expect("seconds"),
            "--levels" => {
                options.levels = value()
                    .split(',')
                    .map(|l| l.trim().parse().expect("a concurrency"))
                    .collect()
            }
            "--litellm-workers" => options.litellm_workers = value().parse().expect("workers"),
            "--without-litellm" => options.without_litellm = true,
            "--out" => options.out = Some(value().into()),
            "--binary" => options.binary = value().into(),
            other => panic!("unknown argument {other}"),
        }
    }
    options
}

/// The LiteLLM proxy in its own process, configured for the fake upstream. Keys go by environment variable
/// (`os.environ/...` in its configuration), never on its command line.
struct LiteLlm {
    child: Child,
    base_url: String,
    master_key: String,
    log: PathBuf,
}

impl LiteLlm {
    async fn start(options: &Options, stack: &Stack) -> LiteLlm {
        let port = free_port();
        let config = stack.dir.path().join("litellm.yaml");
        std::fs::write(
            &config,
            format!(
                "model_list:\n  - model_name: gpt-4o-mini\n    litellm_params:\n      model: openai/gpt-4o-mini\n      \
                 api_base: {}\n      api_key: os.environ/FAKE_OPENAI_KEY\n\
                 general_settings:\n  master_key: os.environ/LITELLM_MASTER_KEY\n\
                 litellm_settings:\n  drop_params: true\n",
                stack.fake.base_url
            ),
        )
        .expect("LiteLLM configuration");
        let master_key = format!("sk-{}", uuid::Uuid::new_v4().simple());
        let log = stack.dir.path().join("litellm.log");
        let child = Command::new(&options.litellm)
            .arg("--config")
            .arg(&config)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--num_workers", &options.litellm_workers.to_string()])
            .env("FAKE_OPENAI_KEY", &stack.provider_key)
            .env("LITELLM_MASTER_KEY", &master_key)
            .env("LITELLM_LOG", "ERROR")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("LiteLLM log"))
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", options.litellm.display()));
        let mut proxy = LiteLlm {
            child,
            base_url: format!("http://127.0.0.1:{port}"),
            master_key,
            log,
        };
        proxy.wait_until_up().await;
        proxy
    }

    async fn wait_until_up(&mut self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(180);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("LiteLLM exited ({status}):\n{}", self.log_tail());
            }
            let up = client
                .get(format!("{}/health/liveliness", self.base_url))
                .send()
                .await;
            if up.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("LiteLLM did not start:\n{}", self.log_tail());
    }

    fn log_tail(&self) -> String {
        tail(&std::fs::read_to_string(&self.log).unwrap_or_default(), 30)
    }

    /// CPU seconds of the proxy and its worker processes.
    fn cpu_seconds(&self) -> f64 {
        let mut pids = vec![self.child.id()];
        pids.extend(children_of(self.child.id()));
        pids.iter()
            .filter_map(|pid| resource_use(*pid))
            .map(|r| r.cpu_seconds)
            .sum()
    }
}

impl Drop for LiteLlm {
    fn drop(&mut self) {
        for pid in children_of(self.child.id()) {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Direct children of a process (uvicorn's workers), from `/proc`.
fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

struct Measured {
    target: &'static str,
    concurrency: usize,
    report: TrafficReport,
    /// Cores the proxy used on average (none for the upstream itself).
    proxy_cores: Option<f64>,
}

fn chat(url: String, bearer: &str, concurrency: usize) -> Traffic {
    Traffic::new("chat", url, bearer, concurrency, |n| {
        json!({
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": format!("Say hello to visitor {n}")}],
        })
    })
}

#[tokio::main]
async fn main() {
    let options = options();
    let stack = Stack::start(
        &options.binary,
        &StackOptions {
            provider_latency: options.latency,
            persistent_openbao: false,
            private_postgres: false,
        },
    )
    .await;
    // A budget is set so the reservation runs on every call, as it does in production.
    let tenant = stack
        .tenant(
            "brokered",
            Some(json!({"chat_mode": "plain", "budget_micro_usd": 1_000_000_000_000u64})),
            false,
        )
        .await;
    let litellm = if options.without_litellm {
        None
    } else {
        let proxy = LiteLlm::start(&options, &stack).await;
        eprintln!("LiteLLM up at {}", proxy.base_url);
        Some(proxy)
    };
    let upstream_url = format!("{}/chat/completions", stack.fake.base_url);
    let ragvault_url = stack.url("/v1/chat/completions");
    let mut targets: Vec<(&'static str, String, &str)> = vec![
        ("upstream", upstream_url, &stack.provider_key),
        ("ragvault", ragvault_url, &tenant.api_key),
    ];
    if let Some(proxy) = &litellm {
        targets.push((
            "LiteLLM",
            format!("{}/v1/chat/completions", proxy.base_url),
            &proxy.master_key,
        ));
    }
    // Warm-up: connections, leases, LiteLLM's first-request imports.
    for (_, url, key) in &targets {
        load::run(
            &stack.client,
            &[chat(url.clone(), key, 4)],
            Duration::from_secs(3),
        )
        .await;
    }
    let mut measured = Vec::new();
    for &level in &options.levels {
        for (target, url, key) in &targets {
            let cpu_before = match *target {
                "ragvault" => Some(stack.server.resource_use().cpu_seconds),
                "LiteLLM" => litellm.as_ref().map(LiteLlm::cpu_seconds),
                _ => None,
            };
            let started = Instant::now();
            let report = load::run(
                &stack.client,
                &[chat(url.clone(), key, level)],
                Duration::from_secs(options.seconds),
            )
            .await
            .remove(0);
            let wall = started.elapsed().as_secs_f64();
            let proxy_cores = cpu_before.map(|before| {
                let after = match &litellm {
                    Some(proxy) if *target == "LiteLLM" => proxy.cpu_seconds(),
                    _ => stack.server.resource_use().cpu_seconds,
                };
                (after - before) / wall
            });
            eprintln!(
                "  {target} at {level}: {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, errors {}",
                report.throughput(),
                report.ok_latency().p50,
                report.ok_latency().p99,
                report.errors_text()
            );
            measured.push(Measured {
                target,
                concurrency: level,
                report,
                proxy_cores,
            });
        }
    }
    let report = render(&options, &measured);
    match &options.out {
        Some(path) => std::fs::write(path, &report).expect("write the report"),
        None => print!("{report}"),
    }
}

fn render(options: &Options, measured: &[Measured]) -> String {
    let upstream_at = |level: usize| {
        measured
            .iter()
            .find(|m| m.target == "upstream" && m.concurrency == level)
            .map(|m| m.report.ok_latency())
            .unwrap_or_default()
    };
    let mut out = format!(
        "Fake OpenAI upstream at {} ms; {} s per step; LiteLLM with {} workers.\n\n\
         | concurrency | target | ok/s | latency ms p50 / p99 / max | added over upstream ms p50 / p99 | errors | proxy CPU (cores) |\n\
         | --- | --- | --- | --- | --- | --- | --- |\n",
        options.latency.as_millis(),
        options.seconds,
        options.litellm_workers
    );
    for m in measured {
        let l = m.report.ok_latency();
        let upstream = upstream_at(m.concurrency);
        let added = if m.target == "upstream" {
            "".to_owned()
        } else {
            format!("{:.2} / {:.2}", l.p50 - upstream.p50, l.p99 - upstream.p99)
        };
        out.push_str(&format!(
            "| {} | {} | {:.0} | {:.2} / {:.2} / {:.2} | {added} | {} | {} |\n",
            m.concurrency,
            m.target,
            m.report.throughput(),
            l.p50,
            l.p99,
            l.max,
            m.report.errors_text(),
            m.proxy_cores
                .map_or_else(String::new, |c| format!("{c:.2}")),
        ));
    }
    let best = |target: &str| {
        measured
            .iter()
            .filter(|m| m.target == target && m.report.error_rate() < 0.01)
            .map(|m| (m.report.throughput(), m.concurrency))
            .fold((0.0, 0), |a, b| if b.0 > a.0 { b } else { a })
    };
    let (ragvault, litellm) = (best("ragvault"), best("LiteLLM"));
    out.push_str(&format!(
        "\nHighest rate with < 1% errors: ragvault {:.0}/s (concurrency {}), LiteLLM {:.0}/s (concurrency {}): {:.1}x.\n",
        ragvault.0,
        ragvault.1,
        litellm.0,
        litellm.1,
        ragvault.0 / litellm.0.max(f64::EPSILON)
    ));
    for &level in &options.levels {
        let added = |target: &str| {
            measured
                .iter()
                .find(|m| m.target == target && m.concurrency == level)
                .map(|m| {
                    let (l, u) = (m.report.ok_latency(), upstream_at(level));
                    (l.p50 - u.p50, l.p99 - u.p99)
                })
                .unwrap_or((f64::NAN, f64::NAN))
        };
        let (r, l) = (added("ragvault"), added("LiteLLM"));
        // The handler's own time without the provider call, as the server measured it: what the added
        // latency is made of besides HTTP on both sides and waiting for a core.
        let ragvault = measured
            .iter()
            .find(|m| m.target == "ragvault" && m.concurrency == level);
        let of = |part: fn(&load::Sample) -> Option<Duration>| {
            ragvault
                .map(|m| load::Percentiles::of(m.report.samples.iter().filter_map(part)))
                .unwrap_or_default()
        };
        let own = of(|s| Some(s.stage("total")?.saturating_sub(s.stage("provider")?)));
        let provider = of(|s| s.stage("provider"));
        let outside = of(|s| Some(s.latency.saturating_sub(s.stage("total")?)));
        let (admit, reserve, meter) = (
            of(|s| s.stage("admit")),
            of(|s| s.stage("reserve")),
            of(|s| s.stage("meter")),
        );
        out.push_str(&format!(
            "At concurrency {level}: added p50 {:.2} ms (ragvault) vs {:.2} ms (LiteLLM), p99 {:.2} ms vs {:.2} ms. \
             ragvault by its server-timing, p50 / p99: handler without the provider call {:.3} / {:.3} ms \
             (admit {:.3} / {:.3}, reserve {:.3} / {:.3}, meter {:.3} / {:.3}), \
             provider call {:.2} / {:.2} ms, outside the handler (client's latency minus the handler's) {:.2} / {:.2} ms.\n",
            r.0, l.0, r.1, l.1, own.p50, own.p99, admit.p50, admit.p99, reserve.p50, reserve.p99,
            meter.p50, meter.p99, provider.p50, provider.p99, outside.p50, outside.p99
        ));
    }
    out
}
