//! Side by side with LiteLLM: the same fake OpenAI upstream at a fixed latency, the same load generator and
//! load, against (a) the upstream itself, (b) ragvault's `/v1/chat/completions` for a tenant whose policy
//! sets `chat_mode = "plain"` (a brokered call: API key authentication, key lease from OpenBao, budget
//! reservation, metering and audit, no retrieval), (c) the LiteLLM proxy, and (d) a do-nothing proxy on
//! ragvault's HTTP stack (`passthrough`): what one more HTTP hop costs on this machine whatever the proxy does. Added latency is each proxy's
//! percentile minus the upstream's at the same load; the highest rate is the best throughput with < 1%
//! errors over the load levels. Prints one Markdown report.
//!
//! A load level is either a number of concurrent callers sending back to back (`--levels`, closed loop) or a
//! rate offered whatever the answers do (`--rates`, open loop: each call's latency counts from when it was due,
//! so a proxy that falls behind is charged its queueing). LiteLLM runs at the closed-loop levels only: the
//! offered rates are many times its top rate.
//!
//! Added latency is reported two ways. Over the upstream: a proxy's percentile minus the upstream's, from
//! separate runs (what a client sees, but the fake upstream's own spread, ~1 ms from tokio's timer, is in
//! it). Per call: each call's latency minus the time the proxy itself waited for the upstream on that call
//! (its `server-timing` `provider` stage), whose percentiles have no upstream in them at all. ragvault and
//! the do-nothing proxy report that stage; LiteLLM does not.
//!
//! `--pin` puts the harness (load generator and fake upstream) on the first core and the proxies on the
//! second, so the proxy under test is not descheduled by the load it is measured with (Postgres and
//! OpenBao stay where the kernel puts them).
//!
//! `chat_compare --litellm PATH [--latency-ms 50] [--seconds 20] [--levels 8,32,128] [--rates 500,1000]
//!  [--litellm-workers 2] [--without-litellm] [--pin] [--samples CSV] [--out FILE] [--binary PATH]`
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
    levels: Vec<Level>,
    litellm_workers: usize,
    /// Only the upstream and ragvault (profiling ragvault, or where LiteLLM is not installed).
    without_litellm: bool,
    /// The harness on core 0, the proxies on core 1 (`taskset`).
    pin: bool,
    /// Every call as a CSV row (target, level, when sent, latency, server-timing stages) for analysis.
    samples: Option<PathBuf>,
    out: Option<PathBuf>,
    binary: PathBuf,
}

fn options() -> Options {
    let mut options = Options {
        litellm: PathBuf::from("litellm"),
        latency: Duration::from_millis(50),
        seconds: 20,
        levels: Vec::new(),
        litellm_workers: 2,
        without_litellm: false,
        pin: false,
        samples: None,
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
            "--levels" => options.levels.extend(
                value()
                    .split(',')
                    .map(|l| Level::Concurrent(l.trim().parse().expect("a concurrency"))),
            ),
            "--rates" => options.levels.extend(
                value()
                    .split(',')
                    .map(|r| Level::Rate(r.trim().parse().expect("calls a second"))),
            ),
            "--litellm-workers" => options.litellm_workers = value().parse().expect("workers"),
            "--without-litellm" => options.without_litellm = true,
            "--pin" => options.pin = true,
            "--samples" => options.samples = Some(value().into()),
            "--out" => options.out = Some(value().into()),
            "--binary" => options.binary = value().into(),
            other => panic!("unknown argument {other}"),
        }
    }
    if options.levels.is_empty() {
        options.levels = [8, 32, 128].map(Level::Concurrent).to_vec();
    }
    options
}

/// One step of load.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Level {
    /// This many callers, each sending when its last call ended.
    Concurrent(usize),
    /// This many calls a second, each sent when due.
    Rate(f64),
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Level::Concurrent(n) => write!(f, "{n} concurrent"),
            Level::Rate(r) => write!(f, "{r:.0}/s offered"),
        }
    }
}

impl Level {
    /// The traffic for this level. An open-loop level gets enough workers for three times the calls the
    /// upstream's latency keeps in flight, so a late answer does not hold back the next call.
    fn traffic(self, url: String, bearer: &str, upstream_latency: Duration) -> Traffic {
        match self {
            Level::Concurrent(n) => chat(url, bearer, n),
            Level::Rate(rate) => {
                let in_flight = rate * upstream_latency.as_secs_f64();
                let workers = (in_flight * 3.0).ceil() as usize + 8;
                let mut traffic = chat(url, bearer, workers);
                traffic.rate_per_second = Some(rate);
                traffic
            }
        }
    }
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

/// The do-nothing proxy (`benches/src/bin/passthrough.rs`) in its own process, as ragvault is.
struct Passthrough {
    child: Child,
    base_url: String,
}

impl Passthrough {
    async fn start(binary: &std::path::Path, upstream_url: &str) -> Passthrough {
        let port = free_port();
        let child = Command::new(binary)
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--upstream",
                upstream_url,
            ])
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "passthrough did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Passthrough {
            child,
            base_url: format!("http://127.0.0.1:{port}"),
        }
    }

    fn cpu_seconds(&self) -> f64 {
        resource_use(self.child.id()).map_or(0.0, |r| r.cpu_seconds)
    }
}

/// Binds every thread of a process (and the threads it starts later) to one core.
fn pin(pid: u32, core: usize) {
    let status = Command::new("taskset")
        .args(["--all-tasks", "--cpu-list", "--pid", &core.to_string()])
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .status()
        .expect("run taskset (util-linux)");
    assert!(status.success(), "taskset could not pin process {pid}");
}

impl Drop for Passthrough {
    fn drop(&mut self) {
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
    level: Level,
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
    let passthrough =
        Passthrough::start(&options.binary.with_file_name("passthrough"), &upstream_url).await;
    let ragvault_url = stack.url("/v1/chat/completions");
    if options.pin {
        pin(std::process::id(), 0);
        pin(stack.server.pid(), 1);
        pin(passthrough.child.id(), 1);
        if let Some(proxy) = &litellm {
            pin(proxy.child.id(), 1);
            children_of(proxy.child.id())
                .into_iter()
                .for_each(|worker| pin(worker, 1));
        }
    }
    let mut targets: Vec<(&'static str, String, &str)> = vec![
        ("upstream", upstream_url, &stack.provider_key),
        (
            "passthrough",
            format!("{}/chat/completions", passthrough.base_url),
            &stack.provider_key,
        ),
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
            // LiteLLM's top rate is a small fraction of the offered rates: there it would only time out.
            if *target == "LiteLLM" && matches!(level, Level::Rate(_)) {
                continue;
            }
            let cpu_seconds = || match *target {
                "ragvault" => Some(stack.server.resource_use().cpu_seconds),
                "passthrough" => Some(passthrough.cpu_seconds()),
                "LiteLLM" => litellm.as_ref().map(LiteLlm::cpu_seconds),
                _ => None,
            };
            let cpu_before = cpu_seconds();
            let started = Instant::now();
            let report = load::run(
                &stack.client,
                &[level.traffic(url.clone(), key, options.latency)],
                Duration::from_secs(options.seconds),
            )
            .await
            .remove(0);
            let wall = started.elapsed().as_secs_f64();
            let proxy_cores = cpu_before
                .zip(cpu_seconds())
                .map(|(before, after)| (after - before) / wall);
            eprintln!(
                "  {target} at {level}: {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, errors {}",
                report.throughput(),
                report.ok_latency().p50,
                report.ok_latency().p99,
                report.errors_text()
            );
            measured.push(Measured {
                target,
                level,
                report,
                proxy_cores,
            });
        }
    }
    if let Some(path) = &options.samples {
        std::fs::write(path, samples_csv(&measured)).expect("write the samples");
    }
    let report = render(&options, &measured);
    match &options.out {
        Some(path) => std::fs::write(path, &report).expect("write the report"),
        None => print!("{report}"),
    }
}

fn render(options: &Options, measured: &[Measured]) -> String {
    let upstream_at = |level: Level| {
        measured
            .iter()
            .find(|m| m.target == "upstream" && m.level == level)
            .map(|m| m.report.ok_latency())
            .unwrap_or_default()
    };
    let mut out = format!(
        "Fake OpenAI upstream at {} ms; {} s per step; LiteLLM with {} workers.\n\n\
         | load | target | ok/s | latency ms p50 / p99 / max | added over upstream ms p50 / p99 | added per call ms p50 / p99 | errors | proxy CPU (cores) |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        options.latency.as_millis(),
        options.seconds,
        options.litellm_workers
    );
    if options.pin {
        out.insert_str(
            0,
            "Pinned: load generator and fake upstream on core 0, the proxy under test on core 1.\n",
        );
    }
    for m in measured {
        let l = m.report.ok_latency();
        let upstream = upstream_at(m.level);
        let added = if m.target == "upstream" {
            "".to_owned()
        } else {
            format!("{:.2} / {:.2}", l.p50 - upstream.p50, l.p99 - upstream.p99)
        };
        let per_call = per_call_added(&m.report)
            .map_or_else(String::new, |a| format!("{:.2} / {:.2}", a.p50, a.p99));
        out.push_str(&format!(
            "| {} | {} | {:.0} | {:.2} / {:.2} / {:.2} | {added} | {per_call} | {} | {} |\n",
            m.level,
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
            .map(|m| (m.report.throughput(), Some(m.level)))
            .fold((0.0, None), |a, b| if b.0 > a.0 { b } else { a })
    };
    let (ragvault, litellm) = (best("ragvault"), best("LiteLLM"));
    let at = |best: (f64, Option<Level>)| {
        format!(
            "{:.0}/s ({})",
            best.0,
            best.1.map_or_else(|| "-".to_owned(), |l| l.to_string())
        )
    };
    out.push_str(&format!(
        "\nHighest rate with < 1% errors: ragvault {}, LiteLLM {}",
        at(ragvault),
        if litellm.1.is_some() {
            at(litellm)
        } else {
            "not measured".to_owned()
        }
    ));
    if litellm.0 > 0.0 {
        out.push_str(&format!(": {:.1}x", ragvault.0 / litellm.0));
    }
    out.push_str(".\n");
    for &level in &options.levels {
        let added = |target: &str| {
            measured
                .iter()
                .find(|m| m.target == target && m.level == level)
                .map(|m| {
                    let (l, u) = (m.report.ok_latency(), upstream_at(level));
                    (l.p50 - u.p50, l.p99 - u.p99)
                })
                .unwrap_or((f64::NAN, f64::NAN))
        };
        let (r, l, hop) = (added("ragvault"), added("LiteLLM"), added("passthrough"));
        // The handler's own time without the provider call, as the server measured it: what the added
        // latency is made of besides HTTP on both sides and waiting for a core.
        let ragvault = measured
            .iter()
            .find(|m| m.target == "ragvault" && m.level == level);
        let of = |part: fn(&load::Sample) -> Option<Duration>| {
            ragvault
                .map(|m| load::Percentiles::of(m.report.samples.iter().filter_map(part)))
                .unwrap_or_default()
        };
        let own = of(|s| Some(s.stage("total")?.saturating_sub(s.stage("provider")?)));
        let provider = of(|s| s.stage("provider"));
        let inside = of(|s| Some(s.stage("server")?.saturating_sub(s.stage("provider")?)));
        let around = of(|s| Some(s.stage("server")?.saturating_sub(s.stage("total")?)));
        let outside = of(|s| Some(s.latency.saturating_sub(s.stage("server")?)));
        let (admit, reserve, meter) = (
            of(|s| s.stage("admit")),
            of(|s| s.stage("reserve")),
            of(|s| s.stage("meter")),
        );
        let per_call = |target: &str| {
            measured
                .iter()
                .find(|m| m.target == target && m.level == level)
                .and_then(|m| per_call_added(&m.report))
                .unwrap_or_default()
        };
        let (r_call, hop_call) = (per_call("ragvault"), per_call("passthrough"));
        // LiteLLM runs at the closed-loop levels only.
        let litellm = |value: f64| {
            if value.is_nan() {
                String::new()
            } else {
                format!(", {value:.2} ms (LiteLLM)")
            }
        };
        out.push_str(&format!(
            "At {level}: added over the upstream p50 {:.2} ms (ragvault), {:.2} ms (do-nothing proxy){}, \
             p99 {:.2} ms, {:.2} ms{}; ragvault over the do-nothing proxy p50 {:.2} ms, p99 {:.2} ms. \
             Added per call p50 {:.2} ms (ragvault), {:.2} ms (do-nothing proxy), p99 {:.2} ms, {:.2} ms. \
             ragvault by its server-timing, p50 / p99: in ragvault's router but not waiting for the provider \
             {:.3} / {:.3} ms; handler without the provider call {:.3} / {:.3} ms \
             (admit {:.3} / {:.3}, reserve {:.3} / {:.3}, meter {:.3} / {:.3}), \
             provider call {:.2} / {:.2} ms, around the handler (middleware and extractors) {:.3} / {:.3} ms, \
             outside ragvault (client's latency minus the time in ragvault's router) {:.2} / {:.2} ms.\n",
            r.0, hop.0, litellm(l.0), r.1, hop.1, litellm(l.1), r.0 - hop.0, r.1 - hop.1,
            r_call.p50, hop_call.p50, r_call.p99, hop_call.p99,
            inside.p50, inside.p99, own.p50, own.p99, admit.p50, admit.p99, reserve.p50, reserve.p99,
            meter.p50, meter.p99, provider.p50, provider.p99, around.p50, around.p99, outside.p50, outside.p99
        ));
        if let Some(m) = ragvault {
            out.push_str(&tail_breakdown(level, &m.report));
        }
    }
    out
}

/// One row per call: target, load level, when it was sent and its latency (ms from the start of its step),
/// outcome, and the stages its `server-timing` named (empty where it named none).
fn samples_csv(measured: &[Measured]) -> String {
    const STAGES: [&str; 6] = ["admit", "reserve", "provider", "meter", "total", "server"];
    let mut csv = format!("target,level,sent_ms,latency_ms,ok,{}\n", STAGES.join(","));
    for m in measured {
        for s in &m.report.samples {
            let stages: Vec<String> = STAGES
                .iter()
                .map(|stage| {
                    s.stage(stage)
                        .map_or_else(String::new, |d| format!("{:.3}", d.as_secs_f64() * 1000.0))
                })
                .collect();
            csv.push_str(&format!(
                "{},{},{:.3},{:.3},{},{}\n",
                m.target,
                m.level,
                s.sent_at.as_secs_f64() * 1000.0,
                s.latency.as_secs_f64() * 1000.0,
                s.outcome == load::Outcome::Ok,
                stages.join(",")
            ));
        }
    }
    csv
}

/// Each successful call's latency minus the time the proxy waited for the upstream on it (`server-timing`
/// `provider`); `None` when the target does not report that stage (the upstream itself, LiteLLM).
fn per_call_added(report: &TrafficReport) -> Option<load::Percentiles> {
    let added: Vec<Duration> = report
        .samples
        .iter()
        .filter(|s| s.outcome == load::Outcome::Ok)
        .filter_map(|s| Some(s.latency.saturating_sub(s.stage("provider")?)))
        .collect();
    (!added.is_empty()).then(|| load::Percentiles::of(added.into_iter()))
}

/// What the slowest 1 % of ragvault's calls spent their time on (the median of each part over them): the
/// per-stage p99s above come from different calls, this says which part makes the slow calls slow.
fn tail_breakdown(level: Level, report: &TrafficReport) -> String {
    let cutoff = report.ok_latency().p99;
    let slow: Vec<&load::Sample> = report
        .samples
        .iter()
        .filter(|s| s.outcome == load::Outcome::Ok && s.latency.as_secs_f64() * 1000.0 >= cutoff)
        .collect();
    let median = |part: &dyn Fn(&load::Sample) -> Option<Duration>| {
        load::Percentiles::of(slow.iter().filter_map(|s| part(s))).p50
    };
    format!(
        "At {level}, the {} slowest calls (latency >= {cutoff:.2} ms), medians: handler without the \
         provider call {:.3} ms (admit {:.3}, reserve {:.3}, meter {:.3}), provider call {:.2} ms, around the \
         handler {:.3} ms, outside ragvault {:.2} ms.\n",
        slow.len(),
        median(&|s| Some(s.stage("total")?.saturating_sub(s.stage("provider")?))),
        median(&|s| s.stage("admit")),
        median(&|s| s.stage("reserve")),
        median(&|s| s.stage("meter")),
        median(&|s| s.stage("provider")),
        median(&|s| Some(s.stage("server")?.saturating_sub(s.stage("total")?))),
        median(&|s| Some(s.latency.saturating_sub(s.stage("server")?))),
    )
}
