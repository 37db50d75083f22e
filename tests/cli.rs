//! Tests of the `ragvault` binary itself: operator commands, configuration errors, and SIGTERM handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ragvault_testkit::{unique_slug, TestDatabase};
use serde_json::Value;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ragvault");

/// A `ragvault` command against one test database and data directory, with nothing inherited from the
/// developer's own configuration.
fn ragvault(db: &TestDatabase, data_dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars() {
        if key.starts_with("RAGVAULT") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    if let Ok(model_dir) = std::env::var("RAGVAULT_MODEL_DIR") {
        cmd.env("RAGVAULT__EMBEDDING__MODEL_DIR", model_dir);
    }
    cmd.env("DATABASE_URL", &db.url)
        .env("RAGVAULT__DATA_DIR", data_dir)
        .env("RAGVAULT__LOG__FORMAT", "json")
        .env("RAGVAULT__LOG__LEVEL", "debug");
    cmd
}

/// `key: value` lines printed by the operator commands.
fn fields(output: &Output) -> HashMap<String, String> {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_until_serving(port: u16, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("server exited early with {status}");
        }
        if http(port, "GET", "/healthz", None, None).starts_with("HTTP/1.1 200") {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("server did not come up");
}

/// A minimal blocking HTTP/1.1 client, so the test controls exactly when each byte is sent.
fn http(port: u16, method: &str, path: &str, key: Option<&str>, body: Option<&str>) -> String {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    // A server that stops answering fails the test rather than hanging it.
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let auth = key
        .map(|k| format!("authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n{auth}\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

fn json_body(response: &str) -> Value {
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or("");
    serde_json::from_str(body).unwrap_or(Value::Null)
}

#[tokio::test]
async fn operator_commands_create_what_the_server_accepts() {
    let db = TestDatabase::create().await;
    let data = tempfile::tempdir().unwrap();

    let migrated = ragvault(&db, data.path()).arg("migrate").output().unwrap();
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );

    let slug = unique_slug("cli");
    let tenant = fields(
        &ragvault(&db, data.path())
            .args(["tenant", "create", &slug, "--sandbox"])
            .output()
            .unwrap(),
    );
    assert_eq!(tenant["slug"], slug);
    assert_eq!(tenant["environment"], "sandbox");
    let tenant_key = tenant["api_key"].clone();
    assert!(tenant_key.starts_with("rvk_"));

    // The same slug again, and an invalid slug, fail with a message and a non-zero exit, writing nothing.
    let dup = ragvault(&db, data.path())
        .args(["tenant", "create", &slug])
        .output()
        .unwrap();
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already taken"));
    let bad = ragvault(&db, data.path())
        .args(["tenant", "create", "Not_A_Slug"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid tenant slug"));

    let operator = fields(
        &ragvault(&db, data.path())
            .args(["admin-key", "create", "--name", "ops"])
            .output()
            .unwrap(),
    );
    let operator_key = operator["api_key"].clone();

    let ask = fields(
        &ragvault(&db, data.path())
            .args(["api-key", "create", "--tenant", &slug, "--scope", "ask"])
            .output()
            .unwrap(),
    );
    assert_eq!(ask["scopes"], "ask");
    let listed = ragvault(&db, data.path())
        .args(["api-key", "list", "--tenant", &slug])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert_eq!(listing.lines().count(), 2);
    assert!(!listing.contains(&tenant_key) && !listing.contains(&ask["api_key"]));

    // The server, started on the same database and data directory, accepts what the CLI created.
    let port = free_port();
    let mut server = ragvault(&db, data.path())
        .env("RAGVAULT__LISTEN", format!("127.0.0.1:{port}"))
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until_serving(port, &mut server);
    let me = http(port, "GET", "/v1/whoami", Some(&tenant_key), None);
    assert!(me.starts_with("HTTP/1.1 200"), "{me}");
    let tenants = http(port, "GET", "/v1/admin/tenants", Some(&operator_key), None);
    assert!(tenants.contains(&slug), "{tenants}");
    let me = http(port, "GET", "/v1/whoami", Some(&ask["api_key"]), None);
    assert_eq!(json_body(&me)["scopes"], serde_json::json!(["ask"]));

    // Revoking through the CLI reaches the running server once Postgres' notification does (another
    // process, so not synchronously: docs/security.md promises milliseconds, the bound here is generous
    // for a loaded CI machine).
    let revoked = ragvault(&db, data.path())
        .args(["api-key", "revoke", "--tenant", &slug, &ask["api_key_id"]])
        .output()
        .unwrap();
    assert!(revoked.status.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let me = http(port, "GET", "/v1/whoami", Some(&ask["api_key"]), None);
        if json_body(&me)["error"]["code"] == "api_key_revoked" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the revoked key still works: {me}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // SIGTERM while a request is in flight: that request completes, then the process exits cleanly.
    let body = format!(r#"{{"slug":"{}"}}"#, unique_slug("sig"));
    let (head, tail) = body.split_at(body.len() / 2);
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "POST /v1/admin/tenants HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {operator_key}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{head}",
        body.len()
    )
    .unwrap();
    stream.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let killed = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    std::thread::sleep(Duration::from_millis(300));
    stream.write_all(tail.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    let output = server.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "server exited with {}",
        output.status
    );

    // The audit chain of everything above is intact; an edited event is named by its sequence number.
    let verified = ragvault(&db, data.path())
        .args(["audit", "verify"])
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    assert!(String::from_utf8_lossy(&verified.stdout).contains("audit chain intact"));
    {
        use sqlx::{Connection, Executor};
        let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
        conn.execute(
            "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_or_delete;
             UPDATE audit_log SET actor = 'someone-else' WHERE seq = 2;",
        )
        .await
        .unwrap();
    }
    let broken = ragvault(&db, data.path())
        .args(["audit", "verify"])
        .output()
        .unwrap();
    assert!(!broken.status.success());
    assert!(
        String::from_utf8_lossy(&broken.stderr).contains("sequence number 2 (Edited)"),
        "{}",
        String::from_utf8_lossy(&broken.stderr)
    );

    // Nothing the server or the CLI logged contains a key.
    let logs = String::from_utf8_lossy(&output.stderr);
    assert!(logs.contains("request finished"), "{logs}");
    assert!(logs.contains("shutting down"), "{logs}");
    for key in [&tenant_key, &operator_key, &ask["api_key"]] {
        let secret = key.rsplit('_').next().unwrap();
        assert!(!logs.contains(secret));
    }
}

#[test]
fn configuration_errors_name_the_bad_key() {
    let cases = [
        (
            "RAGVAULT__HTTP__REQUEST_TIMEOUT_SECS",
            "0",
            "http.request_timeout_secs",
        ),
        ("RAGVAULT__HTTP__NO_SUCH_SETTING", "1", "no_such_setting"),
        ("RAGVAULT__LISTEN", "not-an-address", "listen"),
        ("RAGVAULT__CREDENTIALS__BACKEND", "floppy-disk", "backend"),
        ("DATABASE_URL", "mysql://localhost/x", "database.url"),
    ];
    for (var, value, named) in cases {
        let output = Command::new(BIN)
            .env_remove("RAGVAULT_CONFIG")
            .env(var, value)
            .arg("migrate")
            .output()
            .unwrap();
        assert!(!output.status.success(), "{var}={value} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr).to_lowercase();
        assert!(stderr.contains(named), "{var}={value}: {stderr}");
    }
    let missing = Command::new(BIN)
        .env("RAGVAULT_CONFIG", "/nonexistent/ragvault.toml")
        .arg("migrate")
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/ragvault.toml"));
}

#[test]
fn a_world_readable_master_key_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let data = tempfile::tempdir().unwrap();
    let key = data.path().join("master.key");
    std::fs::write(&key, format!("{}\n", "ab".repeat(32))).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = Command::new(BIN)
        .env_remove("RAGVAULT_CONFIG")
        .env("RAGVAULT__DATA_DIR", data.path())
        .args(["admin-key", "create"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("chmod 600"), "{stderr}");
    assert!(!stderr.contains(&"ab".repeat(32)));
}

/// The local backend end to end: a provider key set through stdin, leased by the server, revoked by
/// `keys delete`, with the key never on a command line, in a listing, or in an API response.
#[tokio::test]
async fn local_provider_keys_are_set_from_stdin_and_leased() {
    let db = TestDatabase::create().await;
    let data = tempfile::tempdir().unwrap();
    // Assembled at run time: no credential-shaped literal in the repository (CI scans it).
    let key = &format!("sk-{}-{}", "local-cli", "0123456789");
    let mut set = ragvault(&db, data.path())
        .args(["keys", "set", "openai"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    set.stdin
        .take()
        .unwrap()
        .write_all(format!("{key}\n").as_bytes())
        .unwrap();
    let set = set.wait_with_output().unwrap();
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    assert!(String::from_utf8_lossy(&set.stdout).contains("version 1 stored"));

    let empty = ragvault(&db, data.path())
        .args(["keys", "set", "openai"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!empty.status.success());
    assert!(String::from_utf8_lossy(&empty.stderr).contains("no key on standard input"));

    let listed = ragvault(&db, data.path())
        .args(["keys", "list"])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listing.contains("ragvault/providers/openai\tv1"),
        "{listing}"
    );
    assert!(!listing.contains(key));
    let on_disk = std::fs::read(data.path().join("providers.sealed")).unwrap();
    assert!(
        !on_disk.windows(key.len()).any(|w| w == key.as_bytes()),
        "key stored in the clear"
    );

    let operator = fields(
        &ragvault(&db, data.path())
            .args(["admin-key", "create"])
            .output()
            .unwrap(),
    );
    let port = free_port();
    let mut server = ragvault(&db, data.path())
        .env("RAGVAULT__LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "RAGVAULT__PROVIDERS__OPENAI__BASE_URL",
            "https://api.openai.example/v1",
        )
        .env("RAGVAULT__CREDENTIALS__LEASE_SOFT_TTL_SECS", "1")
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until_serving(port, &mut server);
    let provider_state = |body: &Value| {
        body["providers"][0]["state"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    let mut creds = Value::Null;
    for _ in 0..50 {
        creds = json_body(&http(
            port,
            "GET",
            "/v1/admin/credentials",
            Some(&operator["api_key"]),
            None,
        ));
        if provider_state(&creds) == "active" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(creds["source"], "local", "{creds}");
    assert_eq!(creds["providers"][0]["key_version"], 1, "{creds}");
    assert!(!creds.to_string().contains(key));

    let deleted = ragvault(&db, data.path())
        .args(["keys", "delete", "openai"])
        .output()
        .unwrap();
    assert!(deleted.status.success());
    let mut state = String::new();
    for _ in 0..40 {
        creds = json_body(&http(
            port,
            "GET",
            "/v1/admin/credentials",
            Some(&operator["api_key"]),
            None,
        ));
        state = provider_state(&creds);
        if state == "unavailable" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(state, "unavailable", "{creds}");
    assert!(creds["providers"][0]["last_error"]
        .as_str()
        .unwrap()
        .contains("deleted"));

    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let output = server.wait_with_output().unwrap();
    assert!(!String::from_utf8_lossy(&output.stderr).contains(key));
}

/// `ragvault ingest` against a running test service, with nothing inherited from the developer's setup.
fn ingest_command(
    app: &ragvault_testkit::TestApp,
    key: &str,
    args: &[&std::ffi::OsStr],
) -> Command {
    let mut cmd = Command::new(BIN);
    for (var, _) in std::env::vars() {
        if var.starts_with("RAGVAULT") {
            cmd.env_remove(var);
        }
    }
    cmd.env("RAGVAULT_URL", &app.base_url)
        .env("RAGVAULT_API_KEY", key)
        .arg("ingest")
        .args(args);
    cmd
}

/// Runs `ragvault ingest` to its end on another thread (the server runs on this test's runtime).
async fn run_ingest(
    app: &ragvault_testkit::TestApp,
    key: &str,
    args: Vec<std::ffi::OsString>,
) -> (Output, String, String) {
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let mut cmd = ingest_command(app, key, &args);
    let output = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stdout, stderr)
}

async fn document_names(app: &ragvault_testkit::TestApp, key: &str) -> Vec<String> {
    let listed: Value = app
        .client
        .get(app.url("/v1/documents"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut names: Vec<String> = listed["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

fn os_args(args: &[&str]) -> Vec<std::ffi::OsString> {
    args.iter().map(std::ffi::OsString::from).collect()
}

/// `ragvault ingest` walks folders, names documents by their path under the folder, reports each refused
/// file with its reason (and fails), leaves out what is not a document, recognises unchanged files on the
/// next run, replaces changed ones and, with `--prune`, deletes documents whose files are gone. It checks
/// the key belongs to the tenant named.
#[tokio::test]
async fn ingest_command_keeps_a_tenant_in_step_with_a_folder() {
    let app = ragvault_testkit::spawn_app().await;
    let slug = unique_slug("cli-ingest");
    let tenant = app.create_tenant(&slug).await;
    let folder = tempfile::tempdir().unwrap();
    let root = folder.path();
    std::fs::write(root.join("a.md"), "# Setup\n\nPlug in the router.").unwrap();
    std::fs::create_dir(root.join("sub")).unwrap();
    std::fs::write(root.join("sub/b.txt"), "Reset with the WPS button.").unwrap();
    std::fs::write(root.join("sub/c.png"), b"\x89PNG\r\n\x1a\n....").unwrap();
    std::fs::write(root.join("sub/d.txt"), b"\x89PNG\r\n\x1a\n....").unwrap();
    std::fs::write(root.join("empty.txt"), "  \n").unwrap();
    std::fs::write(root.join(".hidden.txt"), "skip me").unwrap();
    std::os::unix::fs::symlink(root.join("gone.md"), root.join("broken.md")).unwrap();
    std::os::unix::fs::symlink(root, root.join("sub/loop")).unwrap();
    let folder_arg = || root.as_os_str().to_owned();

    let (wrong, _, stderr) = run_ingest(
        &app,
        &tenant.api_key,
        vec![folder_arg(), "--tenant".into(), "someone-else".into()],
    )
    .await;
    assert!(!wrong.status.success());
    assert!(stderr.contains("belongs to tenant"), "{stderr}");

    let args = |extra: &[&str]| {
        let mut args = vec![folder_arg(), "--tenant".into(), slug.clone().into()];
        args.extend(os_args(extra));
        args
    };
    let (output, stdout, stderr) = run_ingest(&app, &tenant.api_key, args(&[])).await;
    assert!(
        stdout.contains("ingested 2, unchanged 0, failed 4, skipped 1 of 7 files"),
        "{stdout} {stderr}"
    );
    assert!(
        stdout.contains("skipped: 1 not a document type (.png)"),
        "{stdout}"
    );
    assert!(
        stderr.contains("sub/d.txt: unsupported_media_type"),
        "{stderr}"
    );
    assert!(stderr.contains("empty.txt: no_text"), "{stderr}");
    assert!(
        stderr.contains("broken.md: not found (or a broken symlink)"),
        "{stderr}"
    );
    assert!(stderr.contains("sub/loop: symlink loop"), "{stderr}");
    assert!(
        !output.status.success(),
        "a refused file must make the command fail"
    );
    assert_eq!(
        document_names(&app, &tenant.api_key).await,
        ["a.md", "sub/b.txt"]
    );

    // Nothing changed but the refused files are gone: nothing is uploaded for embedding again.
    for gone in ["sub/d.txt", "empty.txt", "broken.md", "sub/loop"] {
        std::fs::remove_file(root.join(gone)).unwrap();
    }
    let (output, stdout, stderr) = run_ingest(&app, &tenant.api_key, args(&["--quiet"])).await;
    assert!(output.status.success(), "{stdout} {stderr}");
    assert!(stdout.is_empty(), "--quiet prints nothing: {stdout}");
    let (output, stdout, _) = run_ingest(&app, &tenant.api_key, args(&[])).await;
    assert!(output.status.success());
    assert!(
        stdout.contains("ingested 0, unchanged 2, failed 0, skipped 1 of 3 files"),
        "{stdout}"
    );

    // A changed file is replaced; with --prune a deleted one goes from the tenant.
    std::fs::write(root.join("a.md"), "# Setup\n\nPlug in the new router.").unwrap();
    std::fs::remove_file(root.join("sub/b.txt")).unwrap();
    let (output, stdout, stderr) = run_ingest(&app, &tenant.api_key, args(&["--prune"])).await;
    assert!(output.status.success(), "{stdout} {stderr}");
    assert!(
        stdout.contains("ingested 1, unchanged 0, failed 0, skipped 1 of 2 files"),
        "{stdout}"
    );
    assert!(stdout.contains("pruned 1 documents"), "{stdout}");
    assert_eq!(document_names(&app, &tenant.api_key).await, ["a.md"]);
    // --prune with a prefix touches only names under it.
    let (output, stdout, stderr) = run_ingest(
        &app,
        &tenant.api_key,
        args(&["--prefix", "manual/", "--prune"]),
    )
    .await;
    assert!(output.status.success(), "{stdout} {stderr}");
    assert!(stdout.contains("pruned 0 documents"), "{stdout}");
    assert_eq!(
        document_names(&app, &tenant.api_key).await,
        ["a.md", "manual/a.md"]
    );
}

/// A run killed halfway and started again ingests every file once: uploads the service accepted are kept
/// and not queued twice, finished ones are recognised as unchanged. The queue here holds two uploads, so
/// the command also has to wait out `429 queue_full` again and again without counting it as a failure.
#[tokio::test]
async fn an_interrupted_ingest_run_again_leaves_no_duplicates_and_loses_nothing() {
    const FILES: usize = 12;
    let app = ragvault_testkit::spawn_app_with(&[
        ("ingest.workers", "1"),
        ("ingest.queue_capacity", "2"),
    ])
    .await;
    let slug = unique_slug("cli-resume");
    let tenant = app.create_tenant(&slug).await;
    let tenant_id: uuid::Uuid = tenant.id.parse().unwrap();
    let folder = tempfile::tempdir().unwrap();
    for i in 0..FILES {
        std::fs::write(
            folder.path().join(format!("page-{i:02}.md")),
            format!("# Page {i}\n\nWhat page {i} of the manual says about part {i}."),
        )
        .unwrap();
    }
    let args = vec![
        folder.path().as_os_str().to_owned(),
        "--tenant".into(),
        slug.clone().into(),
    ];
    let jobs = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM ingest_jobs WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_one(app.store.pool())
            .await
            .unwrap()
    };
    let arg_refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let mut first = ingest_command(&app, &tenant.api_key, &arg_refs)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while jobs().await < 4 {
        assert!(
            Instant::now() < deadline,
            "the first run accepted too little"
        );
        assert!(
            first.try_wait().unwrap().is_none(),
            "the first run ended before it was killed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill().unwrap();
    first.wait().unwrap();
    let accepted_before = jobs().await;
    assert!(
        (accepted_before as usize) < FILES,
        "killed after everything was queued"
    );

    let (output, stdout, stderr) = run_ingest(&app, &tenant.api_key, args.clone()).await;
    assert!(output.status.success(), "{stdout} {stderr}");
    assert!(
        stdout.contains("failed 0, skipped 0 of 12 files"),
        "{stdout}"
    );
    let names = document_names(&app, &tenant.api_key).await;
    assert_eq!(names.len(), FILES, "{names:?}");
    // Every document was stored once: none replaced by a second copy of itself.
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM documents WHERE tenant_id = $1")
        .bind(tenant_id)
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(stored as usize, FILES);
    let embedded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ingest_jobs WHERE tenant_id = $1 AND data_key_id IS NOT NULL",
    )
    .bind(tenant_id)
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!(embedded as usize, FILES, "an upload was queued twice");

    let (output, stdout, _) = run_ingest(&app, &tenant.api_key, args).await;
    assert!(output.status.success());
    assert!(
        stdout.contains("ingested 0, unchanged 12, failed 0, skipped 0 of 12 files"),
        "{stdout}"
    );
}

/// `ragvault ask` prints the answer and its sources, whole or streamed.
#[tokio::test]
async fn ask_command_prints_the_answer_and_its_sources() {
    let app = ragvault_testkit::spawn_app().await;
    let tenant = app.create_tenant(&unique_slug("cli-ask")).await;
    ragvault_testkit::http::ingest_text(
        &app,
        &tenant.api_key,
        "router.md",
        "# Router\n\nTo reset the router, hold the recessed button for ten seconds.",
        &[],
    )
    .await;
    for stream in [false, true] {
        let (base, key) = (app.base_url.clone(), tenant.api_key.clone());
        let output = tokio::task::spawn_blocking(move || {
            let mut cmd = Command::new(BIN);
            cmd.env("RAGVAULT_URL", base)
                .env("RAGVAULT_API_KEY", key)
                .args(["ask", "How do I reset the router?"]);
            if stream {
                cmd.arg("--stream");
            }
            cmd.output().unwrap()
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stdout} {stderr}");
        assert!(
            stdout.contains("hold the recessed button for ten seconds. [1]"),
            "{stdout}"
        );
        assert!(stdout.contains("[1] router.md (chunk 0)"), "{stdout}");
        assert!(stderr.contains("answered by local/extractive"), "{stderr}");
    }
}

/// Policy files are re-read on SIGHUP, without a restart; a bad file keeps the policies in force.
#[tokio::test]
async fn sighup_reloads_policy_files() {
    let db = TestDatabase::create().await;
    let data = tempfile::tempdir().unwrap();
    let policies = tempfile::tempdir().unwrap();
    let slug = unique_slug("hup");
    let created = ragvault(&db, data.path())
        .args(["tenant", "create", &slug])
        .output()
        .unwrap();
    assert!(created.status.success());
    let tenant_id = fields(&created)["tenant_id"].clone();
    let operator_key = fields(
        &ragvault(&db, data.path())
            .args(["admin-key", "create"])
            .output()
            .unwrap(),
    )["api_key"]
        .clone();
    let policy_file = policies.path().join(format!("{slug}.toml"));
    std::fs::write(&policy_file, "budget_micro_usd = 1000\n").unwrap();
    // Logs go to a file, read at the end.
    let log_path = data.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let port = free_port();
    let mut server = ragvault(&db, data.path())
        .env("RAGVAULT__LISTEN", format!("127.0.0.1:{port}"))
        .env("RAGVAULT__POLICIES__DIR", policies.path())
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    wait_until_serving(port, &mut server);
    let path = format!("/v1/admin/tenants/{tenant_id}/budget");
    let budget = || {
        json_body(&http(port, "GET", &path, Some(&operator_key), None))["budget_micro_usd"].clone()
    };
    assert_eq!(budget(), 1000, "the file was applied at start");
    let hup = || {
        assert!(Command::new("kill")
            .args(["-HUP", &server.id().to_string()])
            .status()
            .unwrap()
            .success());
    };
    std::fs::write(&policy_file, "budget_micro_usd = 2000\n").unwrap();
    hup();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while budget() != 2000 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(budget(), 2000, "SIGHUP did not reload the policy file");
    std::fs::write(&policy_file, "budget_micro_usd = \"lots\"\n").unwrap();
    hup();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(budget(), 2000);
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let _ = server.wait();
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(logs.contains("policy files not reloaded"), "{logs}");
}

/// Log lines are written by a thread of their own: with stderr a pipe nobody reads (a log shipper that stopped),
/// the service keeps answering long after the pipe is full, reports dropped lines in `/metrics`, and still
/// stops on SIGTERM.
#[tokio::test]
async fn a_service_whose_logs_nobody_reads_keeps_answering() {
    let db = TestDatabase::create().await;
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = ragvault(&db, data.path())
        .env("RAGVAULT__LISTEN", format!("127.0.0.1:{port}"))
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Held open and never read: once its 64 KiB are full, a write to it blocks.
    let _unread_logs = server.stderr.take().unwrap();
    wait_until_serving(port, &mut server);
    // Each request logs at least its access line (at debug level, more): hundreds of KiB in all.
    for n in 0..2000 {
        let response = http(port, "GET", "/healthz", None, None);
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "request {n} got {response:?}"
        );
    }
    let metrics = http(port, "GET", "/metrics", None, None);
    let dropped = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ragvault_log_lines_dropped_total "))
        .unwrap_or_else(|| panic!("no dropped-lines counter in {metrics}"));
    assert!(dropped.parse::<u64>().is_ok(), "{dropped}");
    let stopping = Instant::now();
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let status = server.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(stopping.elapsed() < Duration::from_secs(15));
}

/// `ragvault scan`: names file, line and kind of each credential (never the value), fails unless every finding
/// is allow-listed, and finds keys inside binaries too.
#[test]
fn scan_reports_credentials_without_printing_them() {
    let dir = tempfile::tempdir().unwrap();
    // Assembled at run time: no credential-shaped literal in the repository (CI scans it).
    let key = format!("sk-{}", "Zq7".repeat(12));
    std::fs::create_dir(dir.path().join("fixtures")).unwrap();
    std::fs::write(dir.path().join("notes.md"), "Reset the pump.\n").unwrap();
    std::fs::write(
        dir.path().join("fixtures/keys.txt"),
        format!("line one\nOPENAI_API_KEY={key}\n"),
    )
    .unwrap();
    let mut binary = vec![0u8, 1, 2, 200];
    binary.extend_from_slice(format!("embedded {key} here").as_bytes());
    binary.push(0);
    std::fs::write(dir.path().join("app.bin"), binary).unwrap();
    let scan = |allow: Option<&str>| {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(dir.path()).arg("scan").arg(".");
        if let Some(list) = allow {
            std::fs::write(dir.path().join("allow"), list).unwrap();
            cmd.args(["--allow", "allow"]);
        }
        cmd.output().unwrap()
    };

    let found = scan(None);
    assert!(!found.status.success());
    let report = String::from_utf8_lossy(&found.stdout).to_string();
    assert!(
        report.contains("fixtures/keys.txt:2: openai_key"),
        "{report}"
    );
    assert!(report.contains("app.bin:1: openai_key"), "{report}");
    assert!(report.contains("2 findings, 0 allow-listed"), "{report}");
    let everything = format!("{report}{}", String::from_utf8_lossy(&found.stderr));
    assert!(!everything.contains(&key), "{everything}");

    let partly = scan(Some("fixtures/ *\n"));
    assert!(!partly.status.success());
    let allowed = scan(Some("# test fixtures\nfixtures/ openai_key\napp.bin *\n"));
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stdout)
    );
    let bad_list = scan(Some("just-a-path\n"));
    assert!(String::from_utf8_lossy(&bad_list.stderr).contains("expected `<path> <kind>`"));
}
