//! Short-lived Postgres logins from Vault's database secrets engine: the pool is built from a leased
//! login, the lease is renewed, and before it runs out a new login is leased, the pool switches to it for
//! new connections, old connections retire (pool `max_lifetime`), and the old lease is revoked.

use ragvault_credentials::{DatabaseLease, VaultBackend};
use ragvault_store::{AuditEntry, Store};
use serde::Serialize;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What operators see in `/v1/admin/credentials`: the login name and lease timing, never the password.
#[derive(Clone, Debug, Serialize)]
pub struct DatabaseLoginStatus {
    pub source: &'static str,
    pub username: String,
    pub lease_expires_in_secs: u64,
    pub renewals: u64,
    pub rollovers: u64,
    pub last_error: Option<String>,
}

struct Current {
    username: String,
    lease_id: String,
    renewable: bool,
    obtained: Instant,
    ttl: Duration,
}

struct Counters {
    current: Current,
    renewals: u64,
    rollovers: u64,
    last_error: Option<String>,
}

pub struct DatabaseLogin {
    backend: Arc<VaultBackend>,
    store: Store,
    mount: String,
    role: String,
    /// The TTL Vault grants a fresh lease: renewals granting less mean the lease nears its max TTL.
    base_ttl: Duration,
    /// How long connections under an old login may live after a switch (the pool's `max_lifetime`).
    retire_after: Duration,
    state: Mutex<Counters>,
}

/// Pool connection lifetime for a lease TTL: short enough that every connection made under a login is
/// retired well before that login's lease ends.
pub fn connection_lifetime(ttl: Duration) -> Duration {
    (ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(30 * 60))
}

impl DatabaseLogin {
    pub fn new(
        backend: Arc<VaultBackend>,
        store: Store,
        mount: &str,
        role: &str,
        first: &DatabaseLease,
    ) -> DatabaseLogin {
        DatabaseLogin {
            backend,
            store,
            mount: mount.to_owned(),
            role: role.to_owned(),
            base_ttl: first.ttl,
            retire_after: connection_lifetime(first.ttl),
            state: Mutex::new(Counters {
                current: Current {
                    username: first.username.clone(),
                    lease_id: first.lease_id.clone(),
                    renewable: first.renewable,
                    obtained: first.obtained,
                    ttl: first.ttl,
                },
                renewals: 0,
                rollovers: 0,
                last_error: None,
            }),
        }
    }

    /// Writes an audit event off the maintenance path: a slow database must not delay a rollover.
    fn audit(&self, action: &'static str, details: serde_json::Value) {
        let store = self.store.clone();
        let entry = AuditEntry::new("system:credentials", action)
            .target("database_login")
            .details(details);
        tokio::spawn(async move {
            if let Err(e) = store.append_audit(&entry).await {
                tracing::warn!(error = %e, action = entry.action, "could not write database login audit event");
            }
        });
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn status(&self) -> DatabaseLoginStatus {
        let state = self.state();
        let ends = state.current.obtained + state.current.ttl;
        DatabaseLoginStatus {
            source: "vault",
            username: state.current.username.clone(),
            lease_expires_in_secs: ends.saturating_duration_since(Instant::now()).as_secs(),
            renewals: state.renewals,
            rollovers: state.rollovers,
            last_error: state.last_error.clone(),
        }
    }

    /// Renews at half the lease's life; rolls over to a new login when renewal fails or Vault grants
    /// less than a fresh lease would (the max TTL is near). Runs until the task is dropped.
    pub async fn maintain(self: Arc<Self>) {
        loop {
            let (wake_at, lease_id, renewable) = {
                let state = self.state();
                let c = &state.current;
                (c.obtained + c.ttl / 2, c.lease_id.clone(), c.renewable)
            };
            tokio::time::sleep_until(wake_at.into()).await;
            if renewable {
                match self.backend.renew_lease(&lease_id, self.base_ttl).await {
                    Ok(granted) if granted >= self.base_ttl => {
                        let username = {
                            let mut state = self.state();
                            state.current.obtained = Instant::now();
                            state.current.ttl = granted;
                            state.renewals += 1;
                            state.last_error = None;
                            state.current.username.clone()
                        };
                        self.audit(
                            "database_login.renewed",
                            json!({ "username": username, "ttl_secs": granted.as_secs() }),
                        );
                        continue;
                    }
                    Ok(granted) => {
                        let mut state = self.state();
                        state.current.obtained = Instant::now();
                        state.current.ttl = granted;
                        state.renewals += 1;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "database lease renewal failed; leasing a new login");
                        self.state().last_error = Some(e.to_string());
                        self.audit(
                            "database_login.renewal_failed",
                            json!({ "error": e.to_string() }),
                        );
                    }
                }
            }
            self.roll_over().await;
        }
    }

    /// Leases a new login and switches the pool to it, retrying with backoff while the old lease lasts.
    async fn roll_over(&self) {
        let mut backoff = Duration::from_millis(250);
        loop {
            match self
                .backend
                .lease_database_credentials(&self.mount, &self.role)
                .await
            {
                Ok(lease) => {
                    lease.with_password(|password| {
                        self.store.switch_login(&lease.username, password)
                    });
                    let old = {
                        let mut state = self.state();
                        let old = std::mem::replace(
                            &mut state.current,
                            Current {
                                username: lease.username.clone(),
                                lease_id: lease.lease_id.clone(),
                                renewable: lease.renewable,
                                obtained: lease.obtained,
                                ttl: lease.ttl,
                            },
                        );
                        state.rollovers += 1;
                        state.last_error = None;
                        old
                    };
                    tracing::info!(from = %old.username, to = %lease.username, "switched to a new database login");
                    self.audit(
                        "database_login.rolled_over",
                        json!({ "from": old.username, "to": lease.username, "ttl_secs": lease.ttl.as_secs() }),
                    );
                    // Revoke the old login once every connection made under it has been retired.
                    let backend = self.backend.clone();
                    let grace = self.retire_after + Duration::from_secs(1);
                    tokio::spawn(async move {
                        tokio::time::sleep(grace).await;
                        match backend.revoke_lease(&old.lease_id).await {
                            Ok(()) => {
                                tracing::info!(username = %old.username, "revoked the old database login")
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, username = %old.username, "could not revoke the old database login")
                            }
                        }
                    });
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "could not lease a new database login");
                    self.state().last_error = Some(e.to_string());
                    let ends = {
                        let state = self.state();
                        state.current.obtained + state.current.ttl
                    };
                    if Instant::now() >= ends {
                        // The old login is gone: keep trying, requests fail with 503 meanwhile.
                        backoff = backoff.min(Duration::from_secs(5));
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}
