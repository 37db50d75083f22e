use sqlx::{Connection, Executor, PgConnection};

/// The server that test databases are created on. Override with `RAGVAULT_TEST_DATABASE_URL` (a URL to
/// an existing database on that server, used only to create and drop the test databases).
fn admin_url() -> String {
    std::env::var("RAGVAULT_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database that exists for one test and is dropped (forcibly, closing connections) when dropped.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
    admin_url: String,
}

impl TestDatabase {
    pub async fn create() -> TestDatabase {
        let admin_url = admin_url();
        let name = format!("ragvault_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&admin_url)
            .await
            .expect("connect to the test Postgres server (is Postgres running on 127.0.0.1:5432?)");
        conn.execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
            .await
            .expect("create test database");
        conn.close().await.ok();
        let base = admin_url
            .rsplit_once('/')
            .map(|(base, _)| base.to_owned())
            .expect("database URL has a path");
        TestDatabase {
            url: format!("{base}/{name}"),
            name,
            admin_url,
        }
    }

    /// `pg_dump` of the whole database (schema and rows) as SQL text, for tests that look for bytes in it.
    pub fn dump(&self) -> String {
        let dump = std::process::Command::new("pg_dump")
            .args(["--no-owner", "-d", &self.url])
            .output()
            .expect("pg_dump (Debian's postgresql-client)");
        assert!(
            dump.status.success(),
            "pg_dump: {}",
            String::from_utf8_lossy(&dump.stderr)
        );
        String::from_utf8_lossy(&dump.stdout).into_owned()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime, which cannot be blocked on; use a fresh one on a thread.
        let dropper = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&admin_url).await {
                    let _ = conn
                        .execute(
                            format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#).as_str(),
                        )
                        .await;
                    let _ = conn.close().await;
                }
            });
        });
        let _ = dropper.join();
    }
}
