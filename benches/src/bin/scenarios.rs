//! The scenario set of issue 10: each scenario starts its own stack (fake OpenAI at a fixed latency, a real
//! OpenBao, Postgres, the real `ragvault serve` binary in its own process), drives it with the load generator
//! while it breaks something, asserts what must hold, and adds rows to one Markdown report. Exits non-zero when
//! any check fails.
//!
//! `scenarios [--quick] [--only 1,3] [--out FILE] [--latency-ms 50] [--binary PATH]`
//!
//! `--quick` shortens every phase (CI runs it on the debug build); without it the durations are the issue's.
//! The server binary defaults to `ragvault` beside this one (same profile).
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

use ragvault_benches::load::{self, Outcome, Traffic, TrafficReport};
use ragvault_benches::process::{psql, ResourceUse};
use ragvault_benches::stack::{
    new_provider_key, Database, Stack, StackOptions, Tenant, PROVIDER_KEY_PATH, QUESTIONS,
};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Options {
    quick: bool,
    only: Option<Vec<u32>>,
    out: Option<PathBuf>,
    latency: Duration,
    binary: PathBuf,
}

impl Options {
    fn parse() -> Options {
        let mut options = Options {
            quick: false,
            only: None,
            out: None,
            latency: Duration::from_millis(50),
            binary: std::env::current_exe()
                .expect("own path")
                .with_file_name("ragvault"),
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--quick" => options.quick = true,
                "--only" => {
                    let list = args.next().expect("--only 1,2,...");
                    options.only = Some(
                        list.split(',')
                            .map(|n| n.trim().parse().expect("scenario number"))
                            .collect(),
                    );
                }
                "--out" => options.out = Some(args.next().expect("--out FILE").into()),
                "--latency-ms" => {
                    let ms = args
                        .next()
                        .expect("--latency-ms N")
                        .parse()
                        .expect("a number");
                    options.latency = Duration::from_millis(ms);
                }
                "--binary" => options.binary = args.next().expect("--binary PATH").into(),
                other => panic!("unknown argument {other}"),
            }
        }
        assert!(
            options.binary.exists(),
            "no server binary at {} (build the root package in the same profile)",
            options.binary.display()
        );
        options
    }

    /// A phase's length: the in a full run, a fraction of it with `--quick`.
    fn secs(&self, full: u64, quick: u64) -> Duration {
        Duration::from_secs(if self.quick { quick } else { full })
    }

    fn stack_options(&self) -> StackOptions {
        StackOptions {
            provider_latency: self.latency,
            persistent_openbao: false,
            private_postgres: false,
        }
    }
}

/// One row of the report.
struct Row {
    scenario: String,
    traffic: TrafficReport,
    server: ResourceUse,
    wall: Duration,
}

/// What a scenario found: rows for the table, and checks that must all hold.
#[derive(Default)]
struct Findings {
    rows: Vec<Row>,
    checks: Vec<(String, bool)>,
    notes: Vec<String>,
}

impl Findings {
    fn check(&mut self, what: impl Into<String>, holds: bool) {
        let what = what.into();
        eprintln!("  [{}] {what}", if holds { "ok" } else { "FAILED" });
        self.checks.push((what, holds));
    }

    fn row(&mut self, scenario: &str, traffic: TrafficReport, server: ResourceUse, wall: Duration) {
        eprintln!(
            "  {scenario} / {}: {} ok, {} failed ({}), p99 {:.1} ms",
            traffic.name,
            traffic.ok(),
            traffic.failed(),
            traffic.errors_text(),
            traffic.ok_latency().p99
        );
        self.rows.push(Row {
            scenario: scenario.to_owned(),
            traffic,
            server,
            wall,
        });
    }
}

fn ask_traffic(stack: &Stack, name: &str, bearer: &str, concurrency: usize) -> Traffic {
    Traffic::new(
        name,
        stack.url("/v1/ask"),
        bearer,
        concurrency,
        |n| json!({"query": QUESTIONS[n as usize % QUESTIONS.len()]}),
    )
}

fn chat_traffic(stack: &Stack, tenant: &Tenant, concurrency: usize) -> Traffic {
    Traffic::new(
        "chat",
        stack.url("/v1/chat/completions"),
        &tenant.api_key,
        concurrency,
        |n| {
            json!({
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": QUESTIONS[n as usize % QUESTIONS.len()]}],
            })
        },
    )
}

fn ingest_traffic(stack: &Stack, tenant: &Tenant, concurrency: usize) -> Traffic {
    Traffic::new(
        "ingest",
        stack.url("/v1/documents"),
        &tenant.api_key,
        concurrency,
        |n| {
            json!({
                "name": format!("note-{n}.md"),
                "content": format!("# Service note {n}\n\nThe filter of unit {n} is changed every {} months.", n % 12 + 1),
                "content_type": "text/markdown",
            })
        },
    )
}

/// The server's CPU time since `before`, and its peak RSS so far.
fn used_since(stack: &Stack, before: ResourceUse) -> ResourceUse {
    let now = stack.server.resource_use();
    ResourceUse {
        cpu_seconds: now.cpu_seconds - before.cpu_seconds,
        peak_rss_mib: now.peak_rss_mib,
    }
}

/// Runs traffic and measures the server's CPU time and peak RSS over the same span.
async fn measured(
    stack: &Stack,
    traffics: &[Traffic],
    duration: Duration,
) -> (Vec<TrafficReport>, ResourceUse, Duration) {
    let before = stack.server.resource_use();
    let started = Instant::now();
    let reports = load::run(&stack.client, traffics, duration).await;
    (reports, used_since(stack, before), started.elapsed())
}

/// 1. Steady `/v1/ask` at the highest rate this machine sustains with < 0.1% errors; then ask, chat and
///    ingest together.
async fn steady(options: &Options, findings: &mut Findings) -> usize {
    let stack = Stack::start(&options.binary, &options.stack_options()).await;
    let tenant = stack.tenant("steady", None, true).await;
    // Warm-up: connections, first leases and caches stay out of the figures.
    load::run(
        &stack.client,
        &[ask_traffic(&stack, "ask", &tenant.api_key, 8)],
        Duration::from_secs(2),
    )
    .await;
    let levels: &[usize] = if options.quick {
        &[32]
    } else {
        &[16, 32, 64, 128, 256]
    };
    let mut best = (levels[0], 0.0);
    for &level in levels {
        let (reports, server, wall) = measured(
            &stack,
            &[ask_traffic(&stack, "ask (ramp)", &tenant.api_key, level)],
            options.secs(15, 5),
        )
        .await;
        let report = &reports[0];
        let sustained = report.error_rate() < 0.001;
        if sustained && report.throughput() > best.1 * 1.03 {
            best = (level, report.throughput());
        }
        findings.row("1 steady ask: ramp", reports[0].clone(), server, wall);
    }
    let (reports, server, wall) = measured(
        &stack,
        &[ask_traffic(&stack, "ask", &tenant.api_key, best.0)],
        options.secs(240, 15),
    )
    .await;
    let report = reports[0].clone();
    findings.check(
        format!(
            "steady /v1/ask at concurrency {} ({:.0} answers/s): error rate {:.4}% < 0.1%",
            best.0,
            report.throughput(),
            report.error_rate() * 100.0
        ),
        report.error_rate() < 0.001 && report.ok() > 0,
    );
    findings.row("1 steady ask", report, server, wall);

    let (reports, server, wall) = measured(
        &stack,
        &[
            ask_traffic(&stack, "ask", &tenant.api_key, best.0 / 2),
            chat_traffic(&stack, &tenant, best.0 / 4),
            Traffic {
                // A steady trickle of uploads the ingest queue keeps up with (flat out, it answers
                // `429 queue_full`, by design).
                think_time: Duration::from_millis(500),
                ..ingest_traffic(&stack, &tenant, 2)
            },
        ],
        options.secs(60, 10),
    )
    .await;
    let failed: usize = reports.iter().map(TrafficReport::failed).sum();
    let total: usize = reports.iter().map(|r| r.samples.len()).sum();
    findings.check(
        format!("ask + chat + ingest together: {failed} of {total} requests failed (< 0.1%)"),
        total > 0 && (failed as f64) < 0.001 * total as f64,
    );
    for report in reports {
        findings.row("1 mixed", report, server, wall);
    }
    best.0
}

/// 2. The provider key rotates in OpenBao every 20 s and the provider refuses the previous key 5 s later:
///    zero failed requests.
async fn rotation(options: &Options, findings: &mut Findings, concurrency: usize) {
    let stack = Stack::start(&options.binary, &options.stack_options()).await;
    let tenant = stack.tenant("rotation", None, true).await;
    let duration = options.secs(130, 45);
    // Rotations made so far and when the last one was; the rotator stops between rotations when told, so
    // the count is exact (an abort could land between the write to OpenBao and the count).
    let rotations = Arc::new(Mutex::new((0u32, None::<Instant>)));
    let stop = Arc::new(tokio::sync::Notify::new());
    let rotator = {
        let (fake, vault) = (stack.fake.clone(), stack.bao.root());
        let (rotations, stop) = (rotations.clone(), stop.clone());
        let mut current = stack.provider_key.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(20)) => {}
                    _ = stop.notified() => return,
                }
                let next = new_provider_key();
                fake.accept(&next);
                vaultrs::kv2::set(
                    &vault,
                    "secret",
                    PROVIDER_KEY_PATH,
                    &json!({ "api_key": next }),
                )
                .await
                .expect("rotate the provider key in OpenBao");
                {
                    let mut made = rotations.lock().unwrap();
                    *made = (made.0 + 1, Some(Instant::now()));
                }
                let (fake, old) = (fake.clone(), std::mem::replace(&mut current, next));
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    fake.revoke(&old);
                });
            }
        })
    };
    let (reports, server, wall) = measured(
        &stack,
        &[ask_traffic(&stack, "ask", &tenant.api_key, concurrency)],
        duration,
    )
    .await;
    stop.notify_one();
    rotator.await.expect("the rotator stops");
    let (rotated, last_rotation) = *rotations.lock().unwrap();
    let report = reports[0].clone();
    findings.check(
        format!(
            "{rotated} rotations, old key refused 5 s after each: {} failed of {}",
            report.failed(),
            report.samples.len()
        ),
        rotated >= 2 && report.failed() == 0 && report.ok() > 0,
    );
    findings.check(
        format!(
            "the fake provider refused {} calls with a retired key (each retried with the new one)",
            stack.fake.rejected()
        ),
        stack.fake.rejected() > 0,
    );
    // The traffic may end before the provider refuses the key replaced by the last rotation (5 s after it),
    // so ragvault may not have needed the newest key yet: once that key is refused, one more answer must
    // come with the newest version.
    if let Some(at) = last_rotation {
        tokio::time::sleep((at + Duration::from_secs(6)).saturating_duration_since(Instant::now()))
            .await;
    }
    let answered = reqwest::Client::new()
        .post(stack.url("/v1/ask"))
        .bearer_auth(&tenant.api_key)
        .json(&json!({"query": QUESTIONS[0]}))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    let credentials = stack
        .admin(reqwest::Method::GET, "/v1/admin/credentials", None)
        .await;
    let version = credentials["providers"][0]["key_version"]
        .as_u64()
        .unwrap_or(0);
    findings.check(
        format!(
            "after the last rotation's old key is refused, an answer ({answered}) comes with key version \
             {version} after {rotated} rotations"
        ),
        answered == 200 && version == u64::from(rotated) + 1,
    );
    findings.row("2 key rotation every 20 s", report, server, wall);
}

/// `/readyz` as sampled: (seconds into the run, status, key_source state).
type ReadinessLog = Arc<Mutex<Vec<(f64, u16, String)>>>;

/// Samples `/readyz` every 250 ms until stopped: (seconds into the run, status, key_source state).
fn watch_readiness(stack: &Stack, started: Instant) -> (tokio::task::JoinHandle<()>, ReadinessLog) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (client, url, log) = (stack.client.clone(), stack.url("/readyz"), seen.clone());
    let handle = tokio::spawn(async move {
        loop {
            let (status, body) = match client
                .get(&url)
                .timeout(Duration::from_secs(5))
                .send()
                .await
            {
                Ok(r) => {
                    let status = r.status().as_u16();
                    (status, r.json::<Value>().await.unwrap_or(Value::Null))
                }
                Err(_) => (0, Value::Null),
            };
            let key_source = body["checks"]["key_source"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            log.lock()
                .unwrap()
                .push((started.elapsed().as_secs_f64(), status, key_source));
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    (handle, seen)
}

/// 3. OpenBao stopped for 2 minutes mid-run, then started: zero failures while leases are valid, `/readyz`
///    degraded then ready, no restart.
async fn openbao_outage(options: &Options, findings: &mut Findings, concurrency: usize) {
    let mut stack = Stack::start(
        &options.binary,
        &StackOptions {
            persistent_openbao: true,
            ..options.stack_options()
        },
    )
    .await;
    let tenant = stack.tenant("vault-outage", None, true).await;
    let (lead, outage, tail) = (
        options.secs(20, 8),
        options.secs(120, 20),
        options.secs(30, 10),
    );
    let pid = stack.server.pid();
    let started = Instant::now();
    let (watcher, readiness) = watch_readiness(&stack, started);
    let traffic = [ask_traffic(&stack, "ask", &tenant.api_key, concurrency)];
    let before = stack.server.resource_use();
    let load = {
        let (client, traffic) = (stack.client.clone(), traffic.clone());
        tokio::spawn(async move { load::run(&client, &traffic, lead + outage + tail).await })
    };
    tokio::time::sleep(lead).await;
    stack.bao.kill();
    let killed_at = started.elapsed().as_secs_f64();
    tokio::time::sleep(outage).await;
    // The outage ends when the restart begins: OpenBao can answer before `restart` returns.
    let restarting_at = started.elapsed().as_secs_f64();
    stack.bao.restart().await;
    let restarted_at = started.elapsed().as_secs_f64();
    let reports = load.await.expect("load");
    // Readiness after the outage: the key source check sees OpenBao again within a few probes.
    tokio::time::sleep(Duration::from_secs(3)).await;
    watcher.abort();
    let server = used_since(&stack, before);
    let report = reports[0].clone();
    findings.check(
        format!(
            "OpenBao down {:.0} s: {} failed of {} requests",
            restarted_at - killed_at,
            report.failed(),
            report.samples.len()
        ),
        report.failed() == 0 && report.ok() > 0,
    );
    let seen = readiness.lock().unwrap().clone();
    let during: Vec<&(f64, u16, String)> = seen
        .iter()
        .filter(|(t, _, _)| *t > killed_at + 2.0 && *t < restarting_at)
        .collect();
    let otherwise: Vec<String> = during
        .iter()
        .filter(|(_, status, state)| !(*status == 200 && state == "degraded"))
        .map(|(t, status, state)| {
            format!("{:.1} s after the stop: {status} {state}", t - killed_at)
        })
        .collect();
    findings.check(
        format!(
            "/readyz during the outage: 200 with key_source degraded ({} probes){}",
            during.len(),
            if otherwise.is_empty() {
                String::new()
            } else {
                format!("; not so: {}", otherwise.join(", "))
            }
        ),
        !during.is_empty() && otherwise.is_empty(),
    );
    let last = seen.last().cloned().unwrap_or_default();
    findings.check(
        format!(
            "/readyz after OpenBao is back: {} with key_source {}",
            last.1, last.2
        ),
        last.1 == 200 && last.2 == "ok",
    );
    findings.check(
        "the same server process throughout (no restart)",
        stack.server.pid() == pid && stack.server.is_running(),
    );
    findings.row("3 OpenBao down 2 min", report, server, started.elapsed());
}

/// Request ids of the successful samples.
fn succeeded_request_ids(report: &TrafficReport) -> Vec<String> {
    report
        .samples
        .iter()
        .filter(|s| s.outcome == Outcome::Ok)
        .filter_map(|s| s.request_id.clone())
        .collect()
}

/// The audit chain and the index, both checked through the operator API.
async fn check_audit_and_index(stack: &Stack, findings: &mut Findings) {
    let audit = stack
        .admin(reqwest::Method::GET, "/v1/admin/audit/verify", None)
        .await;
    findings.check(
        format!("audit chain intact ({} events checked)", audit["checked"]),
        audit["intact"] == true,
    );
    let index = stack
        .admin(reqwest::Method::GET, "/v1/admin/index/verify", None)
        .await;
    let points: u64 = index["tenants"]
        .as_array()
        .map(|tenants| {
            tenants
                .iter()
                .filter_map(|t| t["in_postgres"].as_u64())
                .sum()
        })
        .unwrap_or(0);
    findings.check(
        format!(
            "the index holds exactly the chunks in Postgres ({points} points): {}",
            index["tenants"]
        ),
        index["consistent"] == true,
    );
}

/// 4. Postgres stopped and started mid-run: requests fail fast with 503 while it is down, recover by
///    themselves, and no usage row, document or audit event is lost or duplicated.
async fn postgres_restart(options: &Options, findings: &mut Findings, concurrency: usize) {
    let stack = Stack::start(
        &options.binary,
        &StackOptions {
            private_postgres: true,
            ..options.stack_options()
        },
    )
    .await;
    let tenant = stack.tenant("postgres-restart", None, true).await;
    let Database::Private(postgres) = &stack.database else {
        unreachable!("asked for a private cluster")
    };
    let (lead, gap, tail) = (
        options.secs(30, 8),
        options.secs(15, 5),
        options.secs(45, 15),
    );
    let pid = stack.server.pid();
    let mut ingest = ingest_traffic(&stack, &tenant, 1);
    ingest.keep_bodies = true;
    ingest.think_time = Duration::from_millis(200);
    let traffic = [
        ask_traffic(&stack, "ask", &tenant.api_key, concurrency / 2),
        ingest,
    ];
    let before = stack.server.resource_use();
    let started = Instant::now();
    let load = {
        let (client, traffic) = (stack.client.clone(), traffic.clone());
        tokio::spawn(async move { load::run(&client, &traffic, lead + gap + tail).await })
    };
    tokio::time::sleep(lead).await;
    let stopping = started.elapsed();
    postgres.stop();
    tokio::time::sleep(gap).await;
    postgres.pg_ctl_start();
    let back = started.elapsed();
    let reports = load.await.expect("load");
    let wall = started.elapsed();
    let server = used_since(&stack, before);
    let (ask, ingest) = (&reports[0], &reports[1]);
    let failures: Vec<&load::Sample> = reports
        .iter()
        .flat_map(|r| r.samples.iter())
        .filter(|s| s.outcome != Outcome::Ok)
        .collect();
    let slowest_failure = failures.iter().map(|s| s.latency).max().unwrap_or_default();
    findings.check(
        format!(
            "Postgres down {:.1} s: {} requests failed, all with 503; the slowest after {:.0} ms (in flight at the stop: \
             at most the pool's 3 s acquire timeout)",
            (back - stopping).as_secs_f64(),
            failures.len(),
            slowest_failure.as_secs_f64() * 1000.0
        ),
        !failures.is_empty()
            && failures.iter().all(|s| matches!(&s.outcome, Outcome::Failed(code) if code.starts_with("503")))
            && slowest_failure < Duration::from_millis(3500),
    );
    // Once the outage is seen (the database watch probes every 250 ms), requests fail at once.
    let seen = stopping + Duration::from_secs(1);
    let later: Vec<&load::Sample> = failures
        .iter()
        .copied()
        .filter(|s| s.sent_at >= seen)
        .collect();
    let slowest_later = later.iter().map(|s| s.latency).max().unwrap_or_default();
    findings.check(
        format!(
            "fail fast: {} requests sent from 1 s into the outage failed, the slowest after {:.1} ms (< 100 ms)",
            later.len(),
            slowest_later.as_secs_f64() * 1000.0
        ),
        !later.is_empty() && slowest_later < Duration::from_millis(100),
    );
    // Recovery: nothing sent from 10 s after Postgres is back fails.
    let settled = back + Duration::from_secs(10);
    let late_failures = reports
        .iter()
        .flat_map(|r| r.window(settled, wall))
        .filter(|s| s.outcome != Outcome::Ok)
        .count();
    let late = reports.iter().flat_map(|r| r.window(settled, wall)).count();
    findings.check(
        format!("recovered by itself: {late_failures} of {late} requests sent from 10 s after the restart failed"),
        late > 0 && late_failures == 0,
    );
    findings.check(
        "the same server process throughout (no restart)",
        stack.server.pid() == pid,
    );

    // Every answer given is metered exactly once, every accepted document is stored exactly once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let answered = succeeded_request_ids(ask);
    let metered = psql(
        &stack.database.url(),
        "SELECT request_id FROM usage_events WHERE kind = 'generation' AND request_id IS NOT NULL",
    );
    let metered: Vec<&str> = metered.lines().collect();
    let metered_set: std::collections::HashSet<&str> = metered.iter().copied().collect();
    let unmetered = answered
        .iter()
        .filter(|id| !metered_set.contains(id.as_str()))
        .count();
    findings.check(
        format!(
            "{} answers given, {unmetered} without a usage row; {} generation rows, {} duplicated",
            answered.len(),
            metered.len(),
            metered.len() - metered_set.len()
        ),
        unmetered == 0 && metered.len() == metered_set.len(),
    );
    let accepted: Vec<(String, String)> = ingest
        .samples
        .iter()
        .filter_map(|s| {
            let body = s.body.as_ref()?;
            Some((
                body["document_id"].as_str()?.to_owned(),
                body["job_id"].as_str()?.to_owned(),
            ))
        })
        .collect();
    let mut unfinished = 0;
    for (_, job) in &accepted {
        if stack
            .wait_for_job(&tenant, job, Duration::from_secs(60))
            .await
            != "done"
        {
            unfinished += 1;
        }
    }
    let stored = psql(
        &stack.database.url(),
        &format!(
            "SELECT (SELECT count(*) FROM ingest_jobs WHERE tenant_id = '{0}'), \
             (SELECT count(*) FROM documents WHERE tenant_id = '{0}' AND status = 'active')",
            tenant.id
        ),
    );
    let expected = accepted.len() + MANUALS_PER_TENANT;
    findings.check(
        format!(
            "{} documents accepted during the run, {unfinished} not done; jobs and documents in Postgres: {stored}, expected {expected} of each",
            accepted.len()
        ),
        unfinished == 0 && stored == format!("{expected}|{expected}"),
    );
    check_audit_and_index(&stack, findings).await;
    findings.row("4 Postgres restarted", ask.clone(), server, wall);
    findings.row("4 Postgres restarted", ingest.clone(), server, wall);
}

const MANUALS_PER_TENANT: usize = ragvault_benches::stack::MANUALS.len();

/// A manual of many sections, the same length for every `n` (so every copy makes the same number of chunks).
fn large_manual(n: usize) -> String {
    let mut text = format!("# Appliance manual {n:06}\n\n");
    for section in 0..40 {
        text.push_str(&format!(
            "## Section {section:02}\n\nStep {section:02} of model {n:06}: open the service hatch, check the seal for wear, \
             clean the filter with warm water and refit it before closing the hatch. Record the date in the log book.\n\n"
        ));
    }
    text
}

/// 5. `kill -9` during a large ingest, then start again: every document is either fully present or
///    re-queued and finished, and the index matches Postgres exactly.
async fn crash_during_ingest(options: &Options, findings: &mut Findings) {
    let mut stack = Stack::start(&options.binary, &options.stack_options()).await;
    let tenant = stack.tenant("crash-ingest", None, false).await;
    // One copy first, to learn how many chunks a whole manual makes.
    let reference = stack
        .submit_document(&tenant, "reference.md", &large_manual(0))
        .await;
    assert_eq!(
        stack
            .wait_for_job(&tenant, &reference, Duration::from_secs(60))
            .await,
        "done"
    );
    let chunks_per_manual = psql(
        &stack.database.url(),
        &format!(
            "SELECT chunk_count FROM documents WHERE tenant_id = '{}'",
            tenant.id
        ),
    );
    let documents = if options.quick { 60 } else { 300 };
    let mut ingest = Traffic::new(
        "ingest (large)",
        stack.url("/v1/documents"),
        &tenant.api_key,
        4,
        |n| json!({"name": format!("manual-{n:06}.md"), "content": large_manual(n as usize + 1), "content_type": "text/markdown"}),
    );
    ingest.keep_bodies = true;
    let started = Instant::now();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (client, traffic, stop) = (stack.client.clone(), [ingest], stop.clone());
        tokio::spawn(async move {
            load::run_until(&client, &traffic, Duration::from_secs(600), stop).await
        })
    };
    // Kill once about half the documents are accepted and the pipeline is busy with them.
    let accepted_count = || {
        psql(
            &stack.database.url(),
            &format!(
                "SELECT count(*) FROM ingest_jobs WHERE tenant_id = '{}'",
                tenant.id
            ),
        )
        .parse::<usize>()
        .unwrap_or(0)
    };
    while accepted_count() < documents / 2 && started.elapsed() < Duration::from_secs(300) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let queued_at_kill = psql(
        &stack.database.url(),
        &format!("SELECT count(*) FROM ingest_jobs WHERE tenant_id = '{}' AND status IN ('queued', 'running', 'indexing')", tenant.id),
    );
    stack.server.kill();
    // The submitters stop with the server: what they sent is in Postgres or it is not, and the checks
    // below hold either way. Nothing more is sent to the restarted server.
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let submitted = load.await.expect("load").remove(0);
    stack.server.restart().await;
    let accepted = psql(
        &stack.database.url(),
        &format!(
            "SELECT id FROM ingest_jobs WHERE tenant_id = '{}'",
            tenant.id
        ),
    );
    let jobs: Vec<&str> = accepted.lines().collect();
    let mut not_done = 0;
    for job in &jobs {
        if stack
            .wait_for_job(&tenant, job, Duration::from_secs(120))
            .await
            != "done"
        {
            not_done += 1;
        }
    }
    findings.check(
        format!(
            "killed with {queued_at_kill} jobs queued or running; after restart {} of {} jobs done",
            jobs.len() - not_done,
            jobs.len()
        ),
        not_done == 0 && queued_at_kill.parse::<usize>().unwrap_or(0) > 0,
    );
    let partial = psql(
        &stack.database.url(),
        &format!(
            "SELECT count(*) FROM documents d WHERE d.tenant_id = '{}' AND \
             (d.chunk_count <> {chunks_per_manual} OR (SELECT count(*) FROM chunks c WHERE c.document_id = d.id) <> {chunks_per_manual})",
            tenant.id
        ),
    );
    let documents_stored = psql(
        &stack.database.url(),
        &format!(
            "SELECT count(*) FROM documents WHERE tenant_id = '{}' AND status = 'active'",
            tenant.id
        ),
    );
    findings.check(
        format!(
            "every document whole and stored once: {documents_stored} documents for {} jobs, {partial} with other than {chunks_per_manual} chunks",
            jobs.len()
        ),
        partial == "0" && documents_stored == jobs.len().to_string(),
    );
    // Every upload the service acknowledged (202) has its job.
    let acknowledged: Vec<String> = submitted
        .samples
        .iter()
        .filter_map(|s| s.body.as_ref()?["job_id"].as_str().map(str::to_owned))
        .collect();
    let lost = acknowledged
        .iter()
        .filter(|job| !jobs.contains(&job.as_str()))
        .count();
    findings.check(
        format!(
            "{} uploads acknowledged before the kill, {lost} of them without a job after it",
            acknowledged.len()
        ),
        lost == 0 && !acknowledged.is_empty(),
    );
    check_audit_and_index(&stack, findings).await;
    let wall = started.elapsed();
    let server = stack.server.resource_use();
    findings.row("5 kill -9 during ingest", submitted, server, wall);
    findings.notes.push(format!(
        "Scenario 5: {} documents stored before and after the kill, {chunks_per_manual} chunks each.",
        jobs.len()
    ));
}

/// 6. One tenant over its budget and one widget subject flooding while another tenant's traffic continues:
///    its p99 stays within 20% of its own steady run.
async fn noisy_neighbours(options: &Options, findings: &mut Findings, concurrency: usize) {
    let stack = Stack::start(&options.binary, &options.stack_options()).await;
    let victim = stack.tenant("victim", None, true).await;
    let broke = stack
        .tenant("over-budget", Some(json!({"budget_micro_usd": 1})), true)
        .await;
    let widgets = stack
        .tenant(
            "widgets",
            Some(json!({"rate_limits": {"principal_requests_per_minute": 60}})),
            true,
        )
        .await;
    let minted = stack
        .client
        .post(stack.url("/v1/widget-tokens"))
        .bearer_auth(&widgets.api_key)
        .json(&json!({"ttl_seconds": 3600, "subject": "flooder"}))
        .send()
        .await
        .expect("mint");
    let minted: Value = minted.json().await.expect("token");
    let token = minted["token"].as_str().expect("widget token").to_owned();
    let victim_concurrency = (concurrency / 2).max(4);
    let phase = options.secs(60, 10);
    // What the victim's traffic alone sustains flat out on this machine; the runs below offer half of it,
    // at fixed times (open loop), so the victim's latency is the server's and not a queue of its own
    // making, and the hostile classes are offered at fixed rates rather than as fast as the harness,
    // which shares the two cores, can send them.
    let capacity = load::run(
        &stack.client,
        &[ask_traffic(
            &stack,
            "victim ask",
            &victim.api_key,
            victim_concurrency,
        )],
        Duration::from_secs(5),
    )
    .await;
    let rate = (capacity[0].ok() as f64 / 5.0 / 2.0).max(5.0);
    let paced = |traffic: Traffic, per_second: f64| Traffic {
        rate_per_second: Some(per_second),
        ..traffic
    };
    let victim_traffic = |name: &str| {
        paced(
            ask_traffic(&stack, name, &victim.api_key, victim_concurrency),
            rate,
        )
    };
    let (baseline, server, wall) =
        measured(&stack, &[victim_traffic("victim ask (alone)")], phase).await;
    let baseline = baseline[0].clone();
    findings.row(
        "6 noisy neighbours: baseline",
        baseline.clone(),
        server,
        wall,
    );
    // Each hostile class at the victim's own rate: two thirds of all requests are refusals.
    let (reports, server, wall) = measured(
        &stack,
        &[
            victim_traffic("victim ask"),
            paced(
                ask_traffic(&stack, "over-budget tenant", &broke.api_key, 8),
                rate,
            ),
            paced(ask_traffic(&stack, "widget subject flood", &token, 8), rate),
        ],
        phase,
    )
    .await;
    findings.notes.push(format!(
        "Scenario 6, where the victim's time went by the server's own `server-timing` (p99 ms, alone / beside the others): {} / {}.",
        stage_p99s(&baseline),
        stage_p99s(&reports[0])
    ));
    findings.notes.push(format!(
        "Scenario 6 offered the victim {rate:.0} answers/s (half of the {:.0}/s it sustained alone, flat out), and each hostile class the same rate.",
        capacity[0].ok() as f64 / 5.0
    ));
    let (victim_run, broke_run, flood_run) = (&reports[0], &reports[1], &reports[2]);
    let (alone, crowded) = (baseline.ok_latency().p99, victim_run.ok_latency().p99);
    findings.check(
        format!(
            "the other tenant's requests all answered ({} alone, {} beside the others)",
            baseline.ok(),
            victim_run.ok()
        ),
        victim_run.failed() == 0 && baseline.failed() == 0,
    );
    let within = crowded <= alone * 1.2;
    if cfg!(debug_assertions) {
        // Unoptimized, the harness's own HTTP client and fake provider take most of the two cores, so the
        // ratio measures the harness; the optimized run (benches/scenarios/run.sh) asserts it.
        findings.notes.push(format!(
            "Scenario 6 (debug build, not asserted): the other tenant's p99 {crowded:.1} ms beside the flood vs {alone:.1} ms alone."
        ));
    } else {
        findings.check(
            format!(
                "the other tenant's p99 {crowded:.1} ms beside the flood vs {alone:.1} ms alone (within 20%)"
            ),
            within,
        );
    }
    findings.check(
        format!(
            "over-budget tenant: {} answered, refusals {}",
            broke_run.ok(),
            broke_run.errors_text()
        ),
        broke_run.ok() == 0
            && broke_run
                .errors()
                .keys()
                .all(|code| code == "429 budget_exceeded"),
    );
    let allowed = 60.0 * (phase.as_secs_f64() + 2.0) / 60.0 + 60.0;
    findings.check(
        format!("widget subject flood: {} answered (at most {allowed:.0}: the per-minute limit and its burst), refusals {}", flood_run.ok(), flood_run.errors_text()),
        (flood_run.ok() as f64) <= allowed && flood_run.errors().keys().all(|code| code == "429 rate_limited"),
    );
    for report in reports {
        findings.row("6 noisy neighbours", report, server, wall);
    }
}

/// p99 of each `server-timing` stage over a report's successes.
fn stage_p99s(report: &TrafficReport) -> String {
    [
        "embed", "retrieve", "index", "keyword", "unseal", "provider", "total",
    ]
    .iter()
    .map(|stage| {
        let p99 = load::Percentiles::of(
            report
                .samples
                .iter()
                .filter(|s| s.outcome == Outcome::Ok)
                .filter_map(|s| s.stage(stage)),
        )
        .p99;
        format!("{stage} {p99:.1}")
    })
    .collect::<Vec<_>>()
    .join(", ")
}

fn main() {
    let options = Options::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let wanted = |n: u32| options.only.as_ref().is_none_or(|only| only.contains(&n));
    let mut findings = Findings::default();
    runtime.block_on(async {
        let mut concurrency = if options.quick { 32 } else { 64 };
        if wanted(1) {
            eprintln!("scenario 1: steady");
            concurrency = steady(&options, &mut findings).await;
        }
        if wanted(2) {
            eprintln!("scenario 2: key rotation");
            rotation(&options, &mut findings, concurrency).await;
        }
        if wanted(3) {
            eprintln!("scenario 3: OpenBao outage");
            openbao_outage(&options, &mut findings, concurrency).await;
        }
        if wanted(4) {
            eprintln!("scenario 4: Postgres restart");
            postgres_restart(&options, &mut findings, concurrency).await;
        }
        if wanted(5) {
            eprintln!("scenario 5: kill -9 during a large ingest");
            crash_during_ingest(&options, &mut findings).await;
        }
        if wanted(6) {
            eprintln!("scenario 6: noisy neighbours");
            noisy_neighbours(&options, &mut findings, concurrency).await;
        }
    });
    let report = render(&options, &findings);
    match &options.out {
        Some(path) => std::fs::write(path, &report).expect("write the report"),
        None => print!("{report}"),
    }
    let failed = findings.checks.iter().filter(|(_, holds)| !holds).count();
    eprintln!(
        "scenario checks: {} passed, {failed} failed",
        findings.checks.len() - failed
    );
    if failed > 0 {
        eprintln!("{failed} check(s) failed");
        std::process::exit(1);
    }
}

fn render(options: &Options, findings: &Findings) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "Fake provider latency {} ms; {} run.\n\n",
        options.latency.as_millis(),
        if options.quick { "quick (CI)" } else { "full" }
    ));
    out.push_str("| scenario | traffic | concurrency | requests | ok/s | latency ms p50 / p90 / p99 / max | errors by code | server CPU (cores) | server peak RSS MiB |\n");
    out.push_str("| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for row in &findings.rows {
        let l = row.traffic.ok_latency();
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.0} | {:.1} / {:.1} / {:.1} / {:.1} | {} | {:.2} | {:.0} |\n",
            row.scenario,
            row.traffic.name,
            row.traffic.concurrency,
            row.traffic.samples.len(),
            row.traffic.throughput(),
            l.p50,
            l.p90,
            l.p99,
            l.max,
            row.traffic.errors_text(),
            row.server.cpu_seconds / row.wall.as_secs_f64().max(f64::EPSILON),
            row.server.peak_rss_mib,
        ));
    }
    out.push_str("\nChecks:\n\n");
    for (what, holds) in &findings.checks {
        out.push_str(&format!(
            "- {} {what}\n",
            if *holds { "pass:" } else { "**FAIL**:" }
        ));
    }
    for note in &findings.notes {
        out.push_str(&format!("\n{note}\n"));
    }
    out
}
