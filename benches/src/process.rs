//! The processes a scenario runs and breaks: the real `ragvault` binary (started, killed with SIGKILL,
//! started again on the same data), a private Postgres cluster that can be stopped and started without
//! touching the machine's own, and the CPU time and peak memory the server used, read from `/proc`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Configuration as dotted keys with TOML values (`("listen", "\"127.0.0.1:8080\"")`), written as one file.
pub type ConfigPairs = Vec<(String, String)>;

/// A quoted TOML string.
pub fn toml_string(value: &str) -> String {
    serde_json::to_string(value).expect("string serialises")
}

/// A port free right now on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// CPU time and peak resident memory of a process over its lives.
#[derive(Clone, Copy, Debug, Default)]
pub struct ResourceUse {
    pub cpu_seconds: f64,
    pub peak_rss_mib: f64,
}

/// CPU seconds (user + system) and peak RSS of a live process, from `/proc/PID/stat` and `/proc/PID/status`.
pub fn resource_use(pid: u32) -> Option<ResourceUse> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces: state is the first, utime
    // the 12th and stime the 13th (fields 14 and 15 of proc(5)).
    let after_name = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let peak_kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(ResourceUse {
        // USER_HZ is 100 on every Linux this runs on.
        cpu_seconds: ticks / 100.0,
        peak_rss_mib: peak_kib / 1024.0,
    })
}

/// A `ragvault serve` process on its own port, configuration file and data directory.
pub struct ServerProcess {
    binary: PathBuf,
    config_file: PathBuf,
    log_file: PathBuf,
    pub base_url: String,
    child: Child,
    /// CPU time of lives that ended (a killed process's counters go with it).
    earlier_cpu_seconds: f64,
    earlier_peak_rss_mib: f64,
    pub restarts: u32,
}

impl ServerProcess {
    /// Writes the configuration (with `listen` on a free port) into `dir` and starts the server; returns once
    /// `/readyz` answers 200.
    pub async fn start(binary: &Path, dir: &Path, config: &ConfigPairs) -> ServerProcess {
        let port = free_port();
        let mut text = format!("listen = {}\n", toml_string(&format!("127.0.0.1:{port}")));
        for (key, value) in config {
            text.push_str(&format!("{key} = {value}\n"));
        }
        let config_file = dir.join("ragvault.toml");
        std::fs::write(&config_file, text).expect("write the server configuration");
        let log_file = dir.join("ragvault.log");
        let child = spawn(binary, &config_file, &log_file, &["serve"]);
        let mut server = ServerProcess {
            binary: binary.to_owned(),
            config_file,
            log_file,
            base_url: format!("http://127.0.0.1:{port}"),
            child,
            earlier_cpu_seconds: 0.0,
            earlier_peak_rss_mib: 0.0,
            restarts: 0,
        };
        server.wait_until_ready(Duration::from_secs(120)).await;
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs an operator command (`admin-key create`, `audit verify`) against the same configuration.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        command(&self.binary, &self.config_file)
            .args(args)
            .output()
            .expect("run the ragvault CLI")
    }

    /// CPU time over every life of the server, and the highest peak RSS of any of them.
    pub fn resource_use(&self) -> ResourceUse {
        let now = resource_use(self.pid()).unwrap_or_default();
        ResourceUse {
            cpu_seconds: self.earlier_cpu_seconds + now.cpu_seconds,
            peak_rss_mib: self.earlier_peak_rss_mib.max(now.peak_rss_mib),
        }
    }

    /// SIGKILL: no shutdown hook, no flush, exactly as a crashed host.
    pub fn kill(&mut self) {
        let now = resource_use(self.pid()).unwrap_or_default();
        self.earlier_cpu_seconds += now.cpu_seconds;
        self.earlier_peak_rss_mib = self.earlier_peak_rss_mib.max(now.peak_rss_mib);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the killed server again on the same port, configuration and data.
    pub async fn restart(&mut self) {
        self.child = spawn(&self.binary, &self.config_file, &self.log_file, &["serve"]);
        self.restarts += 1;
        self.wait_until_ready(Duration::from_secs(120)).await;
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The server's log so far (stderr, JSON lines).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_default()
    }

    async fn wait_until_ready(&mut self, patience: Duration) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            if !self.is_running() {
                panic!("ragvault exited at start:\n{}", tail(&self.log(), 40));
            }
            let ready = client.get(self.url("/readyz")).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "ragvault was not ready within {patience:?}:\n{}",
            tail(&self.log(), 40)
        );
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn command(binary: &Path, config_file: &Path) -> Command {
    let mut command = Command::new(binary);
    command.env("RAGVAULT_CONFIG", config_file);
    // The file is the whole configuration: nothing from the harness's own environment may override it.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("RAGVAULT__")
            || name == "DATABASE_URL"
            || name == "VAULT_ADDR"
            || name == "VAULT_TOKEN"
        {
            command.env_remove(name.as_ref());
        }
    }
    command
}

fn spawn(binary: &Path, config_file: &Path, log_file: &Path, args: &[&str]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_file)
        .expect("server log file");
    command(binary, config_file)
        .args(args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()))
}

/// Runs SQL against a database URL with `psql` and returns its unaligned output (the scenarios count rows
/// this way, beside the server rather than through it).
pub fn psql(url: &str, sql: &str) -> String {
    let output = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
        .output()
        .expect("run psql");
    assert!(
        output.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// The last `lines` lines of a text.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A Postgres cluster of the scenario's own (initdb in a temporary directory, its own port), so it can be
/// stopped and started mid-run without disturbing the machine's server or other tests.
pub struct PrivatePostgres {
    bin_dir: PathBuf,
    data_dir: PathBuf,
    log_file: PathBuf,
    pub port: u16,
    /// `postgres` when the harness runs as root (initdb refuses root), else nobody.
    run_as: Option<&'static str>,
    _dir: tempfile::TempDir,
}

impl PrivatePostgres {
    pub fn start() -> PrivatePostgres {
        let bin_dir = postgres_bin_dir();
        let dir = tempfile::tempdir().expect("temporary directory");
        let run_as = is_root().then_some("postgres");
        if let Some(user) = run_as {
            run(Command::new("chown").arg(user).arg(dir.path()));
        }
        let data_dir = dir.path().join("data");
        let postgres = PrivatePostgres {
            log_file: dir.path().join("postgres.log"),
            bin_dir,
            data_dir,
            port: free_port(),
            run_as,
            _dir: dir,
        };
        run(postgres
            .tool("initdb")
            .args(["--auth=trust", "--username=postgres", "--no-sync", "-D"])
            .arg(&postgres.data_dir));
        postgres.pg_ctl_start();
        run(postgres.tool("createdb").args([
            "-h",
            "127.0.0.1",
            "-p",
            &postgres.port.to_string(),
            "-U",
            "postgres",
            "ragvault",
        ]));
        postgres
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/ragvault", self.port)
    }

    /// Fast shutdown: connected sessions are ended, as in a restart of the database host's service.
    pub fn stop(&self) {
        run(self
            .tool("pg_ctl")
            .args(["-D"])
            .arg(&self.data_dir)
            .args(["-m", "fast", "-w", "stop"]));
    }

    pub fn pg_ctl_start(&self) {
        run(self
            .tool("pg_ctl")
            .args(["-D"])
            .arg(&self.data_dir)
            .arg("-l")
            .arg(&self.log_file)
            .arg("-o")
            .arg(format!(
                "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c max_connections=200 -c fsync=off",
                self.port
            ))
            .args(["-w", "start"]));
    }

    fn tool(&self, name: &str) -> Command {
        let path = self.bin_dir.join(name);
        match self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(path);
                command
            }
            None => Command::new(path),
        }
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self
            .tool("pg_ctl")
            .args(["-D"])
            .arg(&self.data_dir)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

fn postgres_bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("Postgres server binaries under /usr/lib/postgresql")
        .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("initdb under /usr/lib/postgresql/*/bin")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn run(command: &mut Command) {
    let output = command.output().expect("run a Postgres tool");
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
