//! Client commands: they talk to a running ragvault over HTTP with `RAGVAULT_URL` and `RAGVAULT_API_KEY`.

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

const DEFAULT_URL: &str = "http://127.0.0.1:8080";

struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Client {
    fn from_env() -> Result<Client> {
        let base = std::env::var("RAGVAULT_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
        let key = std::env::var("RAGVAULT_API_KEY").context(
            "RAGVAULT_API_KEY is not set: export a tenant API key with the `ingest` scope",
        )?;
        Ok(Client {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .context("building the HTTP client")?,
            base: base.trim_end_matches('/').to_owned(),
            key,
        })
    }

    async fn get(&self, path: &str) -> Result<(u16, Value)> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .with_context(|| format!("cannot reach ragvault at {}", self.base))?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }
}

/// `code: message` of an error envelope.
fn describe(body: &Value) -> String {
    format!(
        "{}: {}",
        body["error"]["code"].as_str().unwrap_or("error"),
        body["error"]["message"].as_str().unwrap_or("no message")
    )
}

/// Files under the given paths, in a stable order, skipping hidden files and folders.
fn collect(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    fn hidden(path: &Path) -> bool {
        path.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'))
    }
    fn walk(path: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        let meta =
            std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
        if meta.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("cannot list {}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| !hidden(p))
                .collect();
            entries.sort();
            for entry in entries {
                walk(&entry, out)?;
            }
        } else if meta.is_file() {
            out.push(path.to_owned());
        }
        Ok(())
    }
    let mut files = Vec::new();
    for path in paths {
        walk(path, &mut files)?;
    }
    Ok(files)
}

pub async fn ingest(paths: &[PathBuf], tenant: &str) -> Result<()> {
    let client = Client::from_env()?;
    let (status, me) = client.get("/v1/whoami").await?;
    if status != 200 {
        bail!("the API key was refused ({})", describe(&me));
    }
    if me["tenant_slug"].as_str() != Some(tenant) {
        bail!(
            "the API key belongs to tenant `{}`, not `{tenant}`",
            me["tenant_slug"].as_str().unwrap_or("?")
        );
    }
    let files = collect(paths)?;
    if files.is_empty() {
        bail!("no files found under the given paths");
    }
    let bar = ProgressBar::new(files.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut pending = Vec::new();
    let mut problems = Vec::new();
    for file in &files {
        bar.set_message(format!("uploading {}", file.display()));
        let bytes =
            std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("document")
            .to_owned();
        let form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(bytes).file_name(name),
        );
        let response = client
            .http
            .post(format!("{}/v1/documents", client.base))
            .bearer_auth(&client.key)
            .multipart(form)
            .send()
            .await
            .with_context(|| format!("cannot reach ragvault at {}", client.base))?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        match (status, body["job_id"].as_str()) {
            (202, Some(job)) => pending.push((file.clone(), job.to_owned())),
            _ => {
                problems.push(format!("{}: refused ({})", file.display(), describe(&body)));
                bar.inc(1);
            }
        }
    }
    let mut done = 0;
    while !pending.is_empty() {
        bar.set_message(format!("{} processing", pending.len()));
        let mut still = Vec::new();
        for (file, job) in pending {
            let (_, body) = client.get(&format!("/v1/jobs/{job}")).await?;
            match body["status"].as_str() {
                Some("done") => {
                    done += 1;
                    bar.inc(1);
                }
                Some("failed") => {
                    problems.push(format!(
                        "{}: failed ({}: {})",
                        file.display(),
                        body["error"]["code"].as_str().unwrap_or("error"),
                        body["error"]["message"].as_str().unwrap_or("")
                    ));
                    bar.inc(1);
                }
                _ => still.push((file, job)),
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    bar.finish_and_clear();
    println!("ingested {done} of {} files into {tenant}", files.len());
    for problem in &problems {
        eprintln!("{problem}");
    }
    if !problems.is_empty() {
        bail!("{} files were not ingested", problems.len());
    }
    Ok(())
}

/// `ragvault ask`: prints the answer, then the numbered sources it cites and which provider answered.
pub async fn ask(question: &str, stream: bool, top_k: Option<usize>) -> Result<()> {
    use std::io::Write;
    let client = Client::from_env()?;
    let mut body = serde_json::json!({"query": question, "stream": stream});
    if let Some(k) = top_k {
        body["top_k"] = k.into();
    }
    let mut response = client
        .http
        .post(format!("{}/v1/ask", client.base))
        .bearer_auth(&client.key)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("cannot reach ragvault at {}", client.base))?;
    if !response.status().is_success() {
        let body: Value = response.json().await.unwrap_or(Value::Null);
        bail!("the question was refused ({})", describe(&body));
    }
    let print_sources = |citations: &Value| {
        for c in citations.as_array().into_iter().flatten() {
            println!(
                "[{}] {} (chunk {})",
                c["n"],
                c["name"].as_str().unwrap_or("?"),
                c["chunk"]
            );
        }
    };
    if !stream {
        let body: Value = response.json().await.context("reading the answer")?;
        println!("{}", body["answer"].as_str().unwrap_or_default());
        println!();
        print_sources(&body["citations"]);
        eprintln!(
            "answered by {}/{}",
            body["usage"]["provider"].as_str().unwrap_or("?"),
            body["usage"]["model"].as_str().unwrap_or("?")
        );
        return Ok(());
    }
    let mut decoder = ragvault_generation::sse::SseDecoder::default();
    let mut sources = Value::Null;
    let mut stdout = std::io::stdout();
    while let Some(chunk) = response.chunk().await.context("reading the answer")? {
        let events = decoder
            .push(&chunk)
            .map_err(|e| anyhow::anyhow!("unreadable event stream: {e:?}"))?;
        for event in events {
            let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
            match event.event.as_str() {
                "citations" => sources = data["citations"].clone(),
                "delta" => {
                    print!("{}", data["text"].as_str().unwrap_or_default());
                    stdout.flush().ok();
                }
                "usage" => eprintln!(
                    "\nanswered by {}/{}",
                    data["provider"].as_str().unwrap_or("?"),
                    data["model"].as_str().unwrap_or("?")
                ),
                "error" => bail!("the answer broke off ({})", describe(&data)),
                "done" => {
                    println!();
                    let cited: Vec<u64> = data["cited"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_u64)
                        .collect();
                    let shown: Vec<Value> = sources
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|c| {
                            cited.is_empty() || c["n"].as_u64().is_some_and(|n| cited.contains(&n))
                        })
                        .cloned()
                        .collect();
                    print_sources(&Value::Array(shown));
                }
                _ => {}
            }
        }
    }
    Ok(())
}
