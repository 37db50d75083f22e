//! Real headless Chromium driven over WebDriver (Debian's `chromium` + `chromium-driver`, installed by
//! `scripts/ensure-chromium.sh`): one ChromeDriver process and one browser session per test, both gone when the
//! `Browser` is dropped. Screenshots land in CI's output folder (`CI_OUTPUT_DIR`, default `ci-output/` under the
//! workspace) so a failed or passed run can be looked at.

use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

pub use fantoccini::Locator;

/// A ChromeDriver process and a session on a fresh headless Chromium profile.
pub struct Browser {
    pub client: Client,
    _driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts ChromeDriver on a free port and opens a headless Chromium session with a window of the given size.
    /// Panics with the install hint when the driver is missing: the tests need the real browser, not a skip.
    pub async fn start(width: u32, height: u32) -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver not found: run scripts/ensure-chromium.sh (Debian chromium + chromium-driver)");
        let driver_url = format!("http://127.0.0.1:{port}");
        wait_until_ready(&driver_url).await;

        let profile = tempfile::tempdir().expect("browser profile directory");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), "chrome".into());
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chromium_binary(),
                "args": [
                    "--headless=new",
                    // Tests run as root in CI containers, where Chromium's sandbox cannot start.
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&driver_url)
            .await
            .expect("a WebDriver session on headless Chromium");
        // Finding an element waits up to 10 s for it: after a click that posts a form, the next page may not
        // be there yet on a loaded CI machine.
        client
            .update_timeouts(fantoccini::wd::TimeoutConfiguration::new(
                None,
                None,
                Some(Duration::from_secs(10)),
            ))
            .await
            .expect("WebDriver timeouts");
        Browser {
            client,
            _driver: driver,
            _profile: profile,
        }
    }

    /// Saves a PNG of what the browser shows now as `<CI_OUTPUT_DIR>/screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = output_dir().join("screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot directory");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// The text of the first element matching a CSS selector.
    pub async fn text_of(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
            .text()
            .await
            .expect("element text")
    }

    /// The path (and query) of the page the browser is on.
    pub async fn path(&self) -> String {
        let url = self.client.current_url().await.expect("current url");
        match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        }
    }

    /// Waits (up to 10 s) until the browser is on `path` (path and query), after a click that navigates;
    /// returns the path it ended on, so an assertion can show where it went instead.
    pub async fn wait_for_path(&self, path: &str) -> String {
        self.wait_until_path(|now| now == path).await
    }

    /// Waits (up to 10 s) until the path (and query) satisfies `wanted`; returns the last one seen.
    pub async fn wait_until_path(&self, wanted: impl Fn(&str) -> bool) -> String {
        let mut now = String::new();
        for _ in 0..100 {
            now = self.path().await;
            if wanted(&now) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        now
    }

    /// Waits (up to 10 s) until the first element matching `css` contains `needle`, across page loads (a
    /// form that posts and redirects back to the same page); returns the element's last text.
    pub async fn wait_for_text(&self, css: &str, needle: &str) -> String {
        let mut text = String::new();
        for _ in 0..100 {
            if let Ok(element) = self.client.find(Locator::Css(css)).await {
                // A page being replaced turns the element stale: read again.
                text = element.text().await.unwrap_or_default();
                if text.contains(needle) {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        text
    }

    /// Ends the WebDriver session (the browser process exits with it).
    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}

/// CI's output folder: `CI_OUTPUT_DIR` when set (`.ci/run` sets it), else `ci-output/` at the workspace root.
pub fn output_dir() -> PathBuf {
    match std::env::var_os("CI_OUTPUT_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../ci-output"),
    }
}

fn chromium_binary() -> String {
    std::env::var("CHROMIUM_BINARY").unwrap_or_else(|_| "/usr/bin/chromium".to_owned())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

async fn wait_until_ready(driver_url: &str) {
    let status = format!("{driver_url}/status");
    for _ in 0..100 {
        if let Ok(response) = reqwest::get(&status).await {
            if response.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not answer on {status} within 10 s");
}
