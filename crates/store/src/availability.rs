//! Whether Postgres answers, watched over a connection of its own.
//!
//! While Postgres is away, every request that needs it would wait out the pool's acquire timeout (sqlx
//! retries refused connections until then) before failing. The watch lets requests fail at once instead.
//! It probes outside the pool, so a pool busy with requests never reads as an outage.

use sqlx::{Connection, PgConnection, PgPool};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How long one probe (connect, or `SELECT 1`) may take before Postgres counts as away.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct DatabaseWatch {
    available: AtomicBool,
}

impl DatabaseWatch {
    /// False from the first failed probe until one succeeds again.
    pub fn is_available(&self) -> bool {
        self.available.load(Ordering::Relaxed)
    }

    /// Probes every `every` until the returned watch is dropped.
    pub(crate) fn start(pool: PgPool, every: Duration) -> Arc<DatabaseWatch> {
        let watch = Arc::new(DatabaseWatch {
            available: AtomicBool::new(true),
        });
        tokio::spawn(probe_until_dropped(Arc::downgrade(&watch), pool, every));
        watch
    }
}

async fn probe_until_dropped(watch: Weak<DatabaseWatch>, pool: PgPool, every: Duration) {
    let mut connection: Option<PgConnection> = None;
    loop {
        let answered = probe(&pool, &mut connection).await;
        let Some(watch) = watch.upgrade() else {
            return;
        };
        let was = watch.available.swap(answered, Ordering::Relaxed);
        if was != answered {
            if answered {
                tracing::info!("Postgres answers again");
            } else {
                tracing::warn!(
                    "Postgres does not answer: requests that need it fail at once until it does"
                );
            }
        }
        drop(watch);
        tokio::time::sleep(every).await;
    }
}

async fn probe(pool: &PgPool, connection: &mut Option<PgConnection>) -> bool {
    if connection.is_none() {
        // The pool's current options: with leased database logins, the login in use now.
        let options = (*pool.connect_options()).clone();
        match tokio::time::timeout(PROBE_TIMEOUT, PgConnection::connect_with(&options)).await {
            Ok(Ok(opened)) => *connection = Some(opened),
            _ => return false,
        }
    }
    let Some(open) = connection.as_mut() else {
        return false;
    };
    let answered = matches!(
        tokio::time::timeout(PROBE_TIMEOUT, open.ping()).await,
        Ok(Ok(()))
    );
    if !answered {
        *connection = None;
    }
    answered
}
