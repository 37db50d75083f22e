//! `ragvault ingest PATH...`: keeps a tenant's documents in step with files on disk, through the running
//! service (`RAGVAULT_URL`, `RAGVAULT_API_KEY`).
//!
//! Files are uploaded a few at a time. Back-pressure is not failure: a `429` (queue full, rate limited) waits
//! for its `retry-after` and tries again, and a service that is briefly away is retried with backoff. Only a
//! refusal of the file itself (unsupported type, empty, too large, a credential inside, ...) fails that
//! file; the rest go on. Each document is named by its path under the folder given, so an unchanged file
//! is recognised by the service (keyed hashes of name and content) and costs no embedding; running the
//! command again after an interruption picks up where it stopped without duplicates. `--prune` deletes the
//! tenant's documents whose files are gone.

use crate::client::{describe, Client};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::StatusCode;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Semaphore};

/// File extensions uploaded when a folder is walked; files named on the command line are always uploaded.
/// Files without an extension are uploaded unless they look binary.
const DOCUMENT_EXTENSIONS: &[&str] = &[
    "txt", "text", "md", "markdown", "rst", "html", "htm", "xhtml", "pdf", "wav", "mp3", "m4a",
];
/// How long an upload keeps retrying a service that does not answer (or answers 502/503/504) before that
/// file is given up.
const UNAVAILABLE_FOR: Duration = Duration::from_secs(120);
/// How long job polling may go without one answer before the command stops (accepted uploads stay queued).
const LOST_CONTACT_AFTER: Duration = Duration::from_secs(120);
const POLL_EVERY: Duration = Duration::from_millis(300);
/// Jobs still running that one polling round looks at before it stops: jobs finish roughly in the order
/// they were queued, so looking further only costs requests.
const POLL_RUNNING: usize = 8;
const PLAIN_PROGRESS_EVERY: Duration = Duration::from_secs(10);

pub struct Options {
    pub paths: Vec<PathBuf>,
    pub tenant: String,
    pub prune: bool,
    pub quiet: bool,
    pub concurrency: usize,
    /// Prepended to every document name (and the only names `--prune` may delete).
    pub prefix: String,
}

/// A file to upload and the document name it is stored under.
#[derive(Clone, Debug)]
struct Candidate {
    path: PathBuf,
    name: String,
    /// Found by walking a folder (not named on the command line): extension-less binaries are skipped.
    walked: bool,
}

#[derive(Default)]
struct Collected {
    files: Vec<Candidate>,
    /// Files left out on purpose, with why (not counted as failures).
    skipped: Vec<(PathBuf, String)>,
    /// Paths that could not be read while walking (failures).
    unreadable: Vec<(PathBuf, String)>,
}

fn is_hidden(name: &std::ffi::OsStr) -> bool {
    name.to_str().is_some_and(|n| n.starts_with('.'))
}

/// Walks the paths in a stable order. Hidden files and folders are left out; symlinks are followed, and a
/// symlink loop, an unreadable folder or a broken link is reported for its path while the walk goes on.
fn collect(paths: &[PathBuf], prefix: &str) -> Collected {
    let mut out = Collected::default();
    let mut names: HashMap<String, PathBuf> = HashMap::new();
    for root in paths {
        let root_is_dir = std::fs::metadata(root).map(|m| m.is_dir()).unwrap_or(false);
        let walker = walkdir::WalkDir::new(root)
            .follow_links(true)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| e.depth() == 0 || !is_hidden(e.file_name()));
        for entry in walker {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    let path = e.path().unwrap_or(root).to_owned();
                    let why = if e.loop_ancestor().is_some() {
                        "symlink loop".to_owned()
                    } else {
                        match e.io_error() {
                            Some(io) if io.kind() == std::io::ErrorKind::NotFound => {
                                "not found (or a broken symlink)".to_owned()
                            }
                            Some(io) => format!("cannot read: {io}"),
                            None => e.to_string(),
                        }
                    };
                    out.unreadable.push((path, why));
                    continue;
                }
            };
            let file_type = entry.file_type();
            if file_type.is_dir() {
                continue;
            }
            let path = entry.path().to_owned();
            if !file_type.is_file() {
                out.skipped.push((path, "not a regular file".to_owned()));
                continue;
            }
            let relative = if root_is_dir {
                path.strip_prefix(root).unwrap_or(&path).to_owned()
            } else {
                PathBuf::from(path.file_name().unwrap_or(path.as_os_str()))
            };
            let walked = entry.depth() > 0;
            if walked {
                let extension = path
                    .extension()
                    .and_then(|e| e.to_str())
                    .map(str::to_ascii_lowercase);
                if let Some(ext) = extension.filter(|e| !DOCUMENT_EXTENSIONS.contains(&e.as_str()))
                {
                    out.skipped
                        .push((path, format!("not a document type (.{ext})")));
                    continue;
                }
            }
            let name = format!("{prefix}{}", document_name(&relative));
            if let Some(first) = names.get(&name) {
                out.unreadable.push((
                    path,
                    format!("same document name `{name}` as {}", first.display()),
                ));
                continue;
            }
            names.insert(name.clone(), path.clone());
            out.files.push(Candidate { path, name, walked });
        }
    }
    out
}

/// A relative path as a document name: `/` between components whatever the platform.
fn document_name(relative: &Path) -> String {
    relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// What became of one file.
#[derive(Clone, Debug)]
enum Outcome {
    Ingested { chunks: u64 },
    Unchanged,
    Skipped(String),
    Failed(String),
}

enum Event {
    /// Queued as this job.
    Accepted(String),
    Finished(Outcome),
    /// The run cannot go on (the key was refused, the service is gone).
    Fatal(anyhow::Error),
}

/// Uploads one file, waiting out back-pressure and short outages.
async fn upload(client: &Client, file: &Candidate) -> Result<Event> {
    let bytes = match tokio::fs::read(&file.path).await {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(finished(Outcome::Failed(
                "deleted before it was read".into(),
            )))
        }
        Err(e) => return Ok(finished(Outcome::Failed(format!("cannot read: {e}")))),
    };
    if file.walked && file.path.extension().is_none() && bytes[..bytes.len().min(8192)].contains(&0)
    {
        return Ok(finished(Outcome::Skipped("binary file".into())));
    }
    let file_name = file
        .path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("document")
        .to_owned();
    let mut unavailable_since: Option<Instant> = None;
    let mut backoff = Duration::from_millis(250);
    loop {
        let form = reqwest::multipart::Form::new()
            .text("name", file.name.clone())
            .part(
                "file",
                reqwest::multipart::Part::bytes(bytes.clone()).file_name(file_name.clone()),
            );
        let sent = client
            .http
            .post(format!("{}/v1/documents", client.base))
            .bearer_auth(&client.key)
            .multipart(form)
            .send()
            .await;
        let unavailable = match sent {
            Err(e) => format!("cannot reach ragvault at {}: {e}", client.base),
            Ok(response) => {
                let status = response.status();
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                let body: Value = response.json().await.unwrap_or(Value::Null);
                match status {
                    StatusCode::ACCEPTED => {
                        if body["unchanged"].as_bool() == Some(true) {
                            return Ok(finished(Outcome::Unchanged));
                        }
                        let Some(job) = body["job_id"].as_str() else {
                            return Ok(finished(Outcome::Failed(
                                "the service accepted the file but named no job".into(),
                            )));
                        };
                        return Ok(Event::Accepted(job.to_owned()));
                    }
                    StatusCode::TOO_MANY_REQUESTS => {
                        // Back-pressure: the queue drains as the workers go, so this always ends.
                        let wait = Duration::from_secs(retry_after.unwrap_or(1).clamp(1, 60));
                        tokio::time::sleep(wait + jitter()).await;
                        unavailable_since = None;
                        continue;
                    }
                    StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                        return Ok(Event::Fatal(anyhow::anyhow!(
                            "the API key was refused ({})",
                            describe(&body)
                        )))
                    }
                    StatusCode::BAD_GATEWAY
                    | StatusCode::SERVICE_UNAVAILABLE
                    | StatusCode::GATEWAY_TIMEOUT => {
                        format!("ragvault is unavailable ({})", describe(&body))
                    }
                    _ => return Ok(finished(Outcome::Failed(describe(&body)))),
                }
            }
        };
        let since = *unavailable_since.get_or_insert_with(Instant::now);
        if since.elapsed() > UNAVAILABLE_FOR {
            return Ok(finished(Outcome::Failed(unavailable)));
        }
        tokio::time::sleep(backoff + jitter()).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

fn finished(outcome: Outcome) -> Event {
    Event::Finished(outcome)
}

/// Up to 250 ms, so clients told to come back in a second do not all come back in the same millisecond.
fn jitter() -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    Duration::from_millis(u64::from(nanos % 250))
}

/// Counts shown while running and in the summary.
#[derive(Default)]
struct Tally {
    ingested: usize,
    unchanged: usize,
    skipped: usize,
    failed: usize,
    chunks: u64,
}

impl Tally {
    fn resolved(&self) -> usize {
        self.ingested + self.unchanged + self.skipped + self.failed
    }
}

struct Progress {
    bar: ProgressBar,
    plain: bool,
    quiet: bool,
    started: Instant,
    last_plain: Instant,
    total: usize,
}

impl Progress {
    fn new(total: usize, quiet: bool) -> Progress {
        let tty = std::io::stderr().is_terminal();
        let bar = if quiet || !tty {
            ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::hidden())
        } else {
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} files  {msg}  {elapsed_precise} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.enable_steady_tick(Duration::from_millis(500));
            bar
        };
        Progress {
            bar,
            plain: !quiet && !tty,
            quiet,
            started: Instant::now(),
            last_plain: Instant::now(),
            total,
        }
    }

    fn rate(&self, tally: &Tally) -> f64 {
        tally.chunks as f64 / self.started.elapsed().as_secs_f64().max(1e-3)
    }

    fn show(&mut self, tally: &Tally, waiting: usize) {
        let rate = self.rate(tally);
        self.bar.set_position(tally.resolved() as u64);
        self.bar.set_message(format!(
            "{} chunks, {rate:.1} chunks/s, {waiting} queued",
            tally.chunks
        ));
        if self.plain && self.last_plain.elapsed() >= PLAIN_PROGRESS_EVERY {
            self.last_plain = Instant::now();
            let done = tally.resolved();
            let eta = if done == 0 {
                "unknown".to_owned()
            } else {
                let per_file = self.started.elapsed().as_secs_f64() / done as f64;
                format!("{:.0}s", per_file * (self.total - done) as f64)
            };
            eprintln!(
                "ingest: {done}/{} files (ingested {}, unchanged {}, failed {}), {} chunks, {rate:.1} chunks/s, eta {eta}",
                self.total, tally.ingested, tally.unchanged, tally.failed, tally.chunks
            );
        }
    }

    /// Prints a line without tearing the bar.
    fn println(&self, line: String) {
        if self.quiet || self.plain {
            eprintln!("{line}");
        } else {
            self.bar.suspend(|| eprintln!("{line}"));
        }
    }
}

pub async fn run(options: Options) -> Result<()> {
    let client = Arc::new(Client::from_env()?);
    let (status, me) = client.get("/v1/whoami").await?;
    if status != 200 {
        bail!("the API key was refused ({})", describe(&me));
    }
    if me["tenant_slug"].as_str() != Some(options.tenant.as_str()) {
        bail!(
            "the API key belongs to tenant `{}`, not `{}`",
            me["tenant_slug"].as_str().unwrap_or("?"),
            options.tenant
        );
    }
    let collected = collect(&options.paths, &options.prefix);
    let files = Arc::new(collected.files);
    if files.is_empty() && collected.unreadable.is_empty() {
        bail!("no documents found under the given paths");
    }
    let mut tally = Tally {
        skipped: collected.skipped.len(),
        failed: collected.unreadable.len(),
        ..Tally::default()
    };
    let total = files.len() + tally.skipped + tally.failed;
    let mut progress = Progress::new(total, options.quiet);
    let mut failures: Vec<(PathBuf, String)> = collected.unreadable.clone();
    for (path, why) in &failures {
        progress.println(format!("{}: {why}", path.display()));
    }
    let mut skipped_reasons: BTreeMap<String, usize> = BTreeMap::new();
    for (_, why) in &collected.skipped {
        *skipped_reasons.entry(why.clone()).or_default() += 1;
    }

    // Uploads: a few at a time, each reporting back here.
    let (events, mut inbox) = mpsc::unbounded_channel::<(usize, Event)>();
    let uploader = {
        let (client, files) = (client.clone(), files.clone());
        let permits = Arc::new(Semaphore::new(options.concurrency.max(1)));
        tokio::spawn(async move {
            for index in 0..files.len() {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let (client, files, events) = (client.clone(), files.clone(), events.clone());
                tokio::spawn(async move {
                    let event = upload(&client, &files[index])
                        .await
                        .unwrap_or_else(Event::Fatal);
                    drop(permit);
                    let _ = events.send((index, event));
                });
            }
        })
    };

    let mut pending: VecDeque<(usize, String)> = VecDeque::new();
    let mut accepted = 0usize;
    let mut last_contact = Instant::now();
    let resolve = |index: usize,
                   outcome: Outcome,
                   tally: &mut Tally,
                   failures: &mut Vec<(PathBuf, String)>,
                   skipped_reasons: &mut BTreeMap<String, usize>,
                   progress: &Progress| {
        match outcome {
            Outcome::Ingested { chunks } => {
                tally.ingested += 1;
                tally.chunks += chunks;
            }
            Outcome::Unchanged => tally.unchanged += 1,
            Outcome::Skipped(why) => {
                tally.skipped += 1;
                *skipped_reasons.entry(why).or_default() += 1;
            }
            Outcome::Failed(why) => {
                tally.failed += 1;
                progress.println(format!("{}: {why}", files[index].path.display()));
                failures.push((files[index].path.clone(), why));
            }
        }
    };
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    // Every upload reports once; after the last, only the jobs still pending are left to wait for.
    let mut uploading = true;
    while tally.resolved() < total && (uploading || !pending.is_empty()) {
        tokio::select! {
            event = inbox.recv(), if uploading => {
                let Some((index, event)) = event else {
                    uploading = false;
                    continue;
                };
                match event {
                    Event::Accepted(job) => {
                        accepted += 1;
                        pending.push_back((index, job));
                    }
                    Event::Finished(outcome) => {
                        resolve(index, outcome, &mut tally, &mut failures, &mut skipped_reasons, &progress);
                    }
                    Event::Fatal(e) => {
                        uploader.abort();
                        progress.bar.abandon();
                        return Err(e.context(resume_hint(accepted)));
                    }
                }
            }
            _ = tokio::time::sleep(POLL_EVERY), if !pending.is_empty() => {
                let mut running = 0;
                let mut still = VecDeque::with_capacity(pending.len());
                while let Some((index, job)) = pending.pop_front() {
                    if running >= POLL_RUNNING {
                        still.push_back((index, job));
                        continue;
                    }
                    match client.get(&format!("/v1/jobs/{job}")).await {
                        Err(_) => {
                            if last_contact.elapsed() > LOST_CONTACT_AFTER {
                                uploader.abort();
                                progress.bar.abandon();
                                bail!("lost contact with ragvault at {}; {}", client.base, resume_hint(accepted));
                            }
                            still.push_back((index, job));
                            running = POLL_RUNNING;
                        }
                        Ok((status, body)) => {
                            last_contact = Instant::now();
                            match (status, body["status"].as_str()) {
                                (200, Some("done")) => resolve(
                                    index,
                                    Outcome::Ingested { chunks: body["chunks"].as_u64().unwrap_or(0) },
                                    &mut tally, &mut failures, &mut skipped_reasons, &progress,
                                ),
                                (200, Some("failed")) => resolve(
                                    index,
                                    Outcome::Failed(describe(&body)),
                                    &mut tally, &mut failures, &mut skipped_reasons, &progress,
                                ),
                                (200, _) | (429, _) | (500.., _) => {
                                    running += 1;
                                    still.push_back((index, job));
                                }
                                (401 | 403, _) => {
                                    uploader.abort();
                                    progress.bar.abandon();
                                    bail!("the API key was refused ({}); {}", describe(&body), resume_hint(accepted));
                                }
                                _ => resolve(
                                    index,
                                    Outcome::Failed(format!("its job could not be read ({})", describe(&body))),
                                    &mut tally, &mut failures, &mut skipped_reasons, &progress,
                                ),
                            }
                        }
                    }
                }
                pending = still;
            }
            _ = &mut interrupted => {
                uploader.abort();
                progress.bar.abandon();
                bail!("interrupted; {}", resume_hint(accepted));
            }
        }
        progress.show(&tally, pending.len());
    }
    progress.bar.finish_and_clear();
    let elapsed = progress.started.elapsed();

    let mut pruned = None;
    if options.prune {
        if collected.unreadable.is_empty() {
            let names: HashSet<&str> = files.iter().map(|f| f.name.as_str()).collect();
            pruned = Some(prune(&client, &names, &options.prefix).await?);
        } else {
            progress.println(
                "not pruning: some paths could not be read, so the folder's contents are not known"
                    .to_owned(),
            );
        }
    }
    if !options.quiet {
        let mut line = format!(
            "ingested {}, unchanged {}, failed {}, skipped {} of {total} files into {}: {} chunks in {:.1} s ({:.1} chunks/s)",
            tally.ingested,
            tally.unchanged,
            tally.failed,
            tally.skipped,
            options.tenant,
            tally.chunks,
            elapsed.as_secs_f64(),
            tally.chunks as f64 / elapsed.as_secs_f64().max(1e-3),
        );
        if let Some(n) = pruned {
            line.push_str(&format!("; pruned {n} documents whose files are gone"));
        }
        println!("{line}");
        if !skipped_reasons.is_empty() {
            let reasons: Vec<String> = skipped_reasons
                .iter()
                .map(|(why, n)| format!("{n} {why}"))
                .collect();
            println!("skipped: {}", reasons.join(", "));
        }
    }
    if !failures.is_empty() {
        bail!(
            "{} of {total} files were not ingested (each is listed above with its reason)",
            failures.len()
        );
    }
    Ok(())
}

fn resume_hint(accepted: usize) -> String {
    format!(
        "{accepted} uploads the service accepted are kept and processed; run the same command again to \
         finish (unchanged files are not sent twice)"
    )
}

/// Deletes the tenant's documents under `prefix` whose names are not among `present`.
async fn prune(client: &Client, present: &HashSet<&str>, prefix: &str) -> Result<usize> {
    let (status, body) = client.get("/v1/documents").await?;
    if status != 200 {
        bail!(
            "cannot list the tenant's documents to prune ({})",
            describe(&body)
        );
    }
    let mut pruned = 0;
    for document in body["documents"].as_array().into_iter().flatten() {
        let (Some(id), Some(name)) = (document["id"].as_str(), document["name"].as_str()) else {
            continue;
        };
        if !name.starts_with(prefix) || present.contains(name) {
            continue;
        }
        let response = client
            .http
            .delete(format!("{}/v1/documents/{id}", client.base))
            .bearer_auth(&client.key)
            .send()
            .await
            .with_context(|| format!("cannot reach ragvault at {}", client.base))?;
        match response.status().as_u16() {
            200 | 404 => pruned += 1,
            _ => {
                let body: Value = response.json().await.unwrap_or(Value::Null);
                bail!("could not delete `{name}` ({})", describe(&body));
            }
        }
    }
    Ok(pruned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_walk_names_documents_by_relative_path_and_reports_what_it_leaves_out() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("guide/install")).unwrap();
        std::fs::write(root.join("index.html"), "<p>home").unwrap();
        std::fs::write(root.join("guide/index.html"), "<p>guide").unwrap();
        std::fs::write(root.join("guide/install/README"), "plain").unwrap();
        std::fs::write(root.join("guide/logo.png"), b"\x89PNG").unwrap();
        std::fs::write(root.join(".secret.txt"), "hidden").unwrap();
        std::os::unix::fs::symlink(root.join("guide"), root.join("guide/install/up")).unwrap();
        let collected = collect(&[root.to_owned()], "manual/");
        let names: Vec<&str> = collected.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "manual/guide/index.html",
                "manual/guide/install/README",
                "manual/index.html"
            ]
        );
        assert_eq!(collected.skipped.len(), 1);
        assert!(collected.skipped[0].1.contains(".png"));
        assert_eq!(collected.unreadable.len(), 1, "{:?}", collected.unreadable);
        assert_eq!(collected.unreadable[0].1, "symlink loop");

        // A file named on the command line is uploaded whatever its extension, under its file name.
        let single = collect(&[root.join("guide/logo.png")], "");
        assert_eq!(single.files.len(), 1);
        assert_eq!(single.files[0].name, "logo.png");
        // Two roots holding the same relative name: the second is reported, not silently merged.
        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join("index.html"), "<p>other").unwrap();
        let twice = collect(&[root.join("guide"), other.path().to_owned()], "");
        assert_eq!(twice.files.len(), 2, "{:?}", twice.files);
        assert_eq!(twice.unreadable.len(), 2, "{:?}", twice.unreadable);
        assert!(twice.unreadable[1]
            .1
            .starts_with("same document name `index.html`"));
    }
}
