//! Client commands: they talk to a running ragvault over HTTP with `RAGVAULT_URL` and `RAGVAULT_API_KEY`.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::time::Duration;

const DEFAULT_URL: &str = "http://127.0.0.1:8080";

pub(crate) struct Client {
    pub(crate) http: reqwest::Client,
    pub(crate) base: String,
    pub(crate) key: String,
}

impl Client {
    pub(crate) fn from_env() -> Result<Client> {
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

    pub(crate) async fn get(&self, path: &str) -> Result<(u16, Value)> {
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
pub(crate) fn describe(body: &Value) -> String {
    format!(
        "{}: {}",
        body["error"]["code"].as_str().unwrap_or("error"),
        body["error"]["message"].as_str().unwrap_or("no message")
    )
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
