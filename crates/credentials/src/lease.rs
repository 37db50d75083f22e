//! Leases on provider keys: cached, refreshed ahead of expiry in the background, coalesced on misses, and
//! dropped when the secret is revoked. Requests never wait on the key source while a valid lease exists.

use crate::provider::{validate_provider_name, FetchedKey, ProviderKeyRef};
use crate::{CredentialsError, KeySource, Secret};
use rand::Rng;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// How long leases live. `soft_ttl` is the refresh interval; `hard_ttl` bounds how long a lease may keep
/// serving while the key source is unreachable.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub soft_ttl: Duration,
    pub hard_ttl: Duration,
    /// Fraction of `soft_ttl` (0 to 0.5) taken off at random, so leases fetched together refresh apart.
    pub jitter: f64,
    /// How often the background task looks for leases due for refresh.
    pub tick: Duration,
}

impl Default for LeaseSettings {
    fn default() -> Self {
        LeaseSettings {
            soft_ttl: Duration::from_secs(300),
            hard_ttl: Duration::from_secs(3600),
            jitter: 0.1,
            tick: Duration::from_secs(1),
        }
    }
}

/// A provider key held for use. The key is reachable only inside [`Lease::with_key`].
pub struct Lease {
    pub key_ref: ProviderKeyRef,
    pub version: u64,
    pub base_url: Option<String>,
    pub organization: Option<String>,
    pub source: String,
    pub fetched_at: OffsetDateTime,
    fetched: Instant,
    soft_expiry: Instant,
    hard_expiry: Instant,
    key: Secret<String>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("key_ref", &self.key_ref)
            .field("version", &self.version)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// Lends the key to the closure that builds the outgoing request. Nothing else can read it.
    pub fn with_key<R>(&self, build: impl FnOnce(&str) -> R) -> R {
        build(self.key.expose_secret())
    }

    pub fn age(&self) -> Duration {
        self.fetched.elapsed()
    }

    /// HMAC-SHA256 of `message` under the leased secret, hex: for signing outgoing webhooks with a secret
    /// the receiver shares, without the secret leaving this crate.
    pub fn sign_hex(&self, message: &[u8]) -> String {
        let key =
            ring::hmac::Key::new(ring::hmac::HMAC_SHA256, self.key.expose_secret().as_bytes());
        hex::encode(ring::hmac::sign(&key, message).as_ref())
    }

    fn is_usable(&self, now: Instant) -> bool {
        now < self.hard_expiry
    }
}

/// Consecutive provider refusals of a key after which the provider is taken out of service.
pub const AUTH_FAILURE_LIMIT: u32 = 3;

/// How a provider call made with a leased key failed.
#[derive(Debug)]
pub enum ProviderCallError<E> {
    /// The provider refused the key (HTTP 401 or 403).
    Unauthorized(E),
    /// Any other failure; the lease is not touched.
    Other(E),
}

/// Why [`LeaseManager::call_with_lease`] failed.
#[derive(Debug)]
pub enum LeasedCallError<E> {
    /// No usable key (revoked, unavailable, key source down past hard expiry).
    Credentials(CredentialsError),
    /// The provider call failed (after the one retry, for a refused key).
    Provider(E),
}

impl<E: std::fmt::Display> std::fmt::Display for LeasedCallError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeasedCallError::Credentials(e) => e.fmt(f),
            LeasedCallError::Provider(e) => e.fmt(f),
        }
    }
}

/// What happened to a lease, for the audit log and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialEvent {
    Leased {
        key_ref: ProviderKeyRef,
        version: u64,
    },
    /// Re-read on schedule or on request; the version did not change.
    Refreshed {
        key_ref: ProviderKeyRef,
        version: u64,
    },
    Rotated {
        key_ref: ProviderKeyRef,
        from: u64,
        to: u64,
    },
    Revoked {
        key_ref: ProviderKeyRef,
        reason: String,
    },
    RefreshFailed {
        key_ref: ProviderKeyRef,
        error: String,
    },
}

/// Receives lease events (the server writes them to the audit log). Must not block.
pub trait CredentialEventSink: Send + Sync {
    fn record(&self, event: CredentialEvent);
}

/// One lease as shown to operators: versions, ages and reasons, never the key.
#[derive(Clone, Debug, Serialize)]
pub struct LeaseStatus {
    pub provider: String,
    pub tenant_id: Option<ragvault_core::TenantId>,
    /// `active`, `stale` (past refresh time, still valid), `expired`, `unavailable` (revoked) or `pending`.
    pub state: &'static str,
    pub source: Option<String>,
    pub key_version: Option<u64>,
    pub lease_age_secs: Option<u64>,
    pub refresh_in_secs: Option<u64>,
    pub expires_in_secs: Option<u64>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_refresh: Option<OffsetDateTime>,
    pub last_error: Option<String>,
    pub refreshes_ok: u64,
    pub refreshes_failed: u64,
    pub refreshes_revoked: u64,
    /// Consecutive calls the provider refused with this key.
    pub auth_failures: u32,
}

#[derive(Default)]
struct SlotState {
    lease: Option<Arc<Lease>>,
    /// Set when the secret is gone (revoked/malformed/denied): the reason operators see.
    unavailable: Option<String>,
    last_refresh: Option<OffsetDateTime>,
    last_error: Option<String>,
    next_retry: Option<Instant>,
    failures: u32,
    refreshes_ok: u64,
    refreshes_failed: u64,
    refreshes_revoked: u64,
    auth_failures: u32,
    /// A version the provider refused repeatedly: not served again until a different version appears.
    rejected_version: Option<u64>,
}

struct Slot {
    /// Held while reading the key source for this key: concurrent misses wait here and then find the
    /// lease the first one fetched (single flight).
    fetch_lock: tokio::sync::Mutex<()>,
    state: Mutex<SlotState>,
}

impl Slot {
    fn state(&self) -> MutexGuard<'_, SlotState> {
        // A panic while holding this lock cannot leave the state inconsistent (every write is a single
        // assignment), so a poisoned lock is still safe to use.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Hands out leases on provider keys.
pub struct LeaseManager {
    source: Arc<KeySource>,
    settings: LeaseSettings,
    slots: Mutex<HashMap<ProviderKeyRef, Arc<Slot>>>,
    sink: Option<Arc<dyn CredentialEventSink>>,
}

impl LeaseManager {
    pub fn new(
        source: Arc<KeySource>,
        settings: LeaseSettings,
        sink: Option<Arc<dyn CredentialEventSink>>,
    ) -> LeaseManager {
        LeaseManager {
            source,
            settings,
            slots: Mutex::new(HashMap::new()),
            sink,
        }
    }

    pub fn source(&self) -> &Arc<KeySource> {
        &self.source
    }

    fn slot(&self, key_ref: &ProviderKeyRef) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        // Look up before inserting: the hit path should not allocate a key clone.
        if let Some(slot) = slots.get(key_ref) {
            return slot.clone();
        }
        slots
            .entry(key_ref.clone())
            .or_insert_with(|| {
                Arc::new(Slot {
                    fetch_lock: tokio::sync::Mutex::new(()),
                    state: Mutex::new(SlotState::default()),
                })
            })
            .clone()
    }

    fn slots(&self) -> Vec<(ProviderKeyRef, Arc<Slot>)> {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// The answer the cache can give without the key source: a usable lease, or a known reason there is
    /// none (revoked, or the source failed recently and its retry time has not come).
    fn cached(
        &self,
        key_ref: &ProviderKeyRef,
        slot: &Slot,
    ) -> Option<Result<Arc<Lease>, CredentialsError>> {
        let now = Instant::now();
        let state = slot.state();
        if let Some(lease) = state.lease.as_ref().filter(|l| l.is_usable(now)) {
            return Some(Ok(lease.clone()));
        }
        let unavailable = |reason: &str| CredentialsError::ProviderUnavailable {
            provider: key_ref.provider.clone(),
            reason: reason.to_owned(),
        };
        if let Some(reason) = &state.unavailable {
            return Some(Err(unavailable(reason)));
        }
        match (&state.last_error, state.next_retry) {
            (Some(error), Some(retry)) if now < retry => Some(Err(unavailable(error))),
            _ => None,
        }
    }

    /// A lease on the key, from the cache when valid; on a miss, one read of the key source however many
    /// requests miss at once.
    pub async fn lease(&self, key_ref: &ProviderKeyRef) -> Result<Arc<Lease>, CredentialsError> {
        validate_provider_name(&key_ref.provider)?;
        let slot = self.slot(key_ref);
        if let Some(answer) = self.cached(key_ref, &slot) {
            return answer;
        }
        let _fetching = slot.fetch_lock.lock().await;
        if let Some(answer) = self.cached(key_ref, &slot) {
            return answer;
        }
        self.fetch_into(key_ref, &slot).await
    }

    /// Re-reads the key now (operator request, or a rotation announced out of band).
    pub async fn force_refresh(
        &self,
        key_ref: &ProviderKeyRef,
    ) -> Result<Arc<Lease>, CredentialsError> {
        validate_provider_name(&key_ref.provider)?;
        let slot = self.slot(key_ref);
        let _fetching = slot.fetch_lock.lock().await;
        self.fetch_into(key_ref, &slot).await
    }

    /// The provider refused this lease's key (401/403). Re-reads the key once, however many requests
    /// report the same version, and returns the newer lease to retry with; if the key source still has
    /// the refused version, the key is bad and `KeyRejected` says so.
    pub async fn report_rejected(&self, rejected: &Lease) -> Result<Arc<Lease>, CredentialsError> {
        let key_ref = &rejected.key_ref;
        let slot = self.slot(key_ref);
        let _fetching = slot.fetch_lock.lock().await;
        let current = slot.state().lease.clone();
        if let Some(current) = current.filter(|l| l.version != rejected.version) {
            return Ok(current);
        }
        let fresh = self.fetch_into(key_ref, &slot).await?;
        if fresh.version == rejected.version {
            let err = CredentialsError::KeyRejected {
                provider: key_ref.provider.clone(),
                version: rejected.version,
            };
            slot.state().last_error = Some(err.to_string());
            return Err(err);
        }
        Ok(fresh)
    }

    /// Runs one provider call with a leased key. If the provider refuses the key (401/403), the key is
    /// re-read once (shared with every other request that saw the same version) and the call is retried
    /// once with the new version. After [`AUTH_FAILURE_LIMIT`] refusals in a row the provider is marked
    /// unavailable until a different key version is written, so the failover chain moves on.
    pub async fn call_with_lease<T, E, F, Fut>(
        &self,
        key_ref: &ProviderKeyRef,
        mut call: F,
    ) -> Result<T, LeasedCallError<E>>
    where
        F: FnMut(Arc<Lease>) -> Fut,
        Fut: std::future::Future<Output = Result<T, ProviderCallError<E>>>,
    {
        let lease = self
            .lease(key_ref)
            .await
            .map_err(LeasedCallError::Credentials)?;
        let rejection = match call(lease.clone()).await {
            Ok(value) => {
                self.record_auth_success(key_ref);
                return Ok(value);
            }
            Err(ProviderCallError::Other(e)) => return Err(LeasedCallError::Provider(e)),
            Err(ProviderCallError::Unauthorized(e)) => e,
        };
        let fresh = match self.report_rejected(&lease).await {
            Ok(fresh) => fresh,
            Err(_) => {
                self.record_auth_failure(key_ref, lease.version);
                return Err(LeasedCallError::Provider(rejection));
            }
        };
        match call(fresh.clone()).await {
            Ok(value) => {
                self.record_auth_success(key_ref);
                Ok(value)
            }
            Err(ProviderCallError::Unauthorized(e)) => {
                self.record_auth_failure(key_ref, fresh.version);
                Err(LeasedCallError::Provider(e))
            }
            Err(ProviderCallError::Other(e)) => Err(LeasedCallError::Provider(e)),
        }
    }

    fn record_auth_success(&self, key_ref: &ProviderKeyRef) {
        self.slot(key_ref).state().auth_failures = 0;
    }

    fn record_auth_failure(&self, key_ref: &ProviderKeyRef, version: u64) {
        let slot = self.slot(key_ref);
        let event = {
            let mut state = slot.state();
            state.auth_failures = state.auth_failures.saturating_add(1);
            if state.auth_failures < AUTH_FAILURE_LIMIT {
                return;
            }
            let reason = format!(
                "the provider refused key version {version} {} times in a row; write a new version to restore it",
                state.auth_failures
            );
            state.lease = None;
            state.rejected_version = Some(version);
            state.unavailable = Some(reason.clone());
            state.next_retry = Some(Instant::now() + self.settings.soft_ttl);
            CredentialEvent::Revoked {
                key_ref: key_ref.clone(),
                reason,
            }
        };
        log_event(&event);
        if let Some(sink) = &self.sink {
            sink.record(event);
        }
    }

    async fn fetch_into(
        &self,
        key_ref: &ProviderKeyRef,
        slot: &Slot,
    ) -> Result<Arc<Lease>, CredentialsError> {
        let result = self.source.fetch_provider_key(key_ref).await;
        let now = Instant::now();
        let mut events = Vec::new();
        let outcome = {
            let mut state = slot.state();
            match result {
                Ok(fetched) if state.rejected_version == Some(fetched.version) => {
                    // Still the key the provider refused: stay unavailable until a new version is written.
                    state.refreshes_ok += 1;
                    state.last_refresh = Some(OffsetDateTime::now_utc());
                    state.next_retry = Some(now + self.settings.soft_ttl);
                    Err(CredentialsError::KeyRejected {
                        provider: key_ref.provider.clone(),
                        version: fetched.version,
                    })
                }
                Ok(fetched) => {
                    state.rejected_version = None;
                    // Refusals count against a version: a new version starts with a clean record.
                    if state
                        .lease
                        .as_ref()
                        .is_none_or(|old| old.version != fetched.version)
                    {
                        state.auth_failures = 0;
                    }
                    let lease = Arc::new(self.new_lease(key_ref, fetched, now));
                    match &state.lease {
                        Some(old) if old.version != lease.version => {
                            events.push(CredentialEvent::Rotated {
                                key_ref: key_ref.clone(),
                                from: old.version,
                                to: lease.version,
                            })
                        }
                        Some(old) => events.push(CredentialEvent::Refreshed {
                            key_ref: key_ref.clone(),
                            version: old.version,
                        }),
                        None => events.push(CredentialEvent::Leased {
                            key_ref: key_ref.clone(),
                            version: lease.version,
                        }),
                    }
                    state.lease = Some(lease.clone());
                    state.unavailable = None;
                    state.last_error = None;
                    state.next_retry = None;
                    state.failures = 0;
                    state.last_refresh = Some(OffsetDateTime::now_utc());
                    state.refreshes_ok += 1;
                    Ok(lease)
                }
                Err(e) if e.is_outage() => {
                    // Keep serving the lease we have until its hard expiry; retry with backoff.
                    state.failures = state.failures.saturating_add(1);
                    state.refreshes_failed += 1;
                    let backoff = Duration::from_secs(1u64 << state.failures.min(6))
                        .min(self.settings.soft_ttl);
                    state.next_retry = Some(now + backoff);
                    state.last_error = Some(e.to_string());
                    events.push(CredentialEvent::RefreshFailed {
                        key_ref: key_ref.clone(),
                        error: e.to_string(),
                    });
                    match state.lease.as_ref().filter(|l| l.is_usable(now)) {
                        Some(lease) => Ok(lease.clone()),
                        None => Err(CredentialsError::ProviderUnavailable {
                            provider: key_ref.provider.clone(),
                            reason: e.to_string(),
                        }),
                    }
                }
                Err(e) => {
                    // The secret is gone or unusable: revoke the lease at once and say why.
                    let reason = e.to_string();
                    if state.unavailable.as_deref() != Some(reason.as_str()) {
                        events.push(CredentialEvent::Revoked {
                            key_ref: key_ref.clone(),
                            reason: reason.clone(),
                        });
                    }
                    state.lease = None;
                    state.unavailable = Some(reason);
                    state.last_error = None;
                    state.refreshes_revoked += 1;
                    state.next_retry = Some(now + self.settings.soft_ttl);
                    state.last_refresh = Some(OffsetDateTime::now_utc());
                    Err(e)
                }
            }
        };
        for event in events {
            log_event(&event);
            if let Some(sink) = &self.sink {
                sink.record(event);
            }
        }
        outcome
    }

    fn new_lease(&self, key_ref: &ProviderKeyRef, fetched: FetchedKey, now: Instant) -> Lease {
        let jitter = self.settings.jitter.clamp(0.0, 0.5);
        let cut = if jitter > 0.0 {
            rand::thread_rng().gen_range(0.0..jitter)
        } else {
            0.0
        };
        let soft = self.settings.soft_ttl.mul_f64(1.0 - cut);
        Lease {
            key_ref: key_ref.clone(),
            version: fetched.version,
            base_url: fetched.base_url,
            organization: fetched.organization,
            source: fetched.source,
            fetched_at: OffsetDateTime::now_utc(),
            fetched: now,
            soft_expiry: now + soft,
            hard_expiry: now + self.settings.hard_ttl.max(soft),
            key: fetched.key,
        }
    }

    /// Refreshes every lease that is past its refresh time, and re-checks revoked or failing keys whose
    /// retry time has come. Called by the background task; safe to call at any time.
    pub async fn refresh_due(&self) {
        let now = Instant::now();
        for (key_ref, slot) in self.slots() {
            let due = {
                let state = slot.state();
                let retry_ok = state.next_retry.is_none_or(|t| now >= t);
                match &state.lease {
                    Some(lease) => now >= lease.soft_expiry && retry_ok,
                    None => (state.unavailable.is_some() || state.last_error.is_some()) && retry_ok,
                }
            };
            if !due {
                continue;
            }
            // A request already fetching this key will do the refresh.
            let Ok(_fetching) = slot.fetch_lock.try_lock() else {
                continue;
            };
            let _ = self.fetch_into(&key_ref, &slot).await;
        }
    }

    /// Runs [`LeaseManager::refresh_due`] every tick until the task is dropped.
    pub async fn run_refresher(self: Arc<Self>) {
        loop {
            tokio::time::sleep(self.settings.tick).await;
            self.refresh_due().await;
        }
    }

    /// Every lease the manager knows of, sorted by provider then tenant.
    pub fn status(&self) -> Vec<LeaseStatus> {
        let now = Instant::now();
        let mut out: Vec<LeaseStatus> = self
            .slots()
            .into_iter()
            .map(|(key_ref, slot)| {
                let state = slot.state();
                let lease = state.lease.as_ref();
                let state_name = match lease {
                    _ if state.unavailable.is_some() => "unavailable",
                    Some(l) if !l.is_usable(now) => "expired",
                    Some(l) if now >= l.soft_expiry => "stale",
                    Some(_) => "active",
                    None if state.last_error.is_some() => "expired",
                    None => "pending",
                };
                LeaseStatus {
                    provider: key_ref.provider.clone(),
                    tenant_id: key_ref.tenant,
                    state: state_name,
                    source: lease.map(|l| l.source.clone()),
                    key_version: lease.map(|l| l.version),
                    lease_age_secs: lease.map(|l| l.age().as_secs()),
                    refresh_in_secs: lease
                        .map(|l| l.soft_expiry.saturating_duration_since(now).as_secs()),
                    expires_in_secs: lease
                        .map(|l| l.hard_expiry.saturating_duration_since(now).as_secs()),
                    last_refresh: state.last_refresh,
                    last_error: state
                        .unavailable
                        .clone()
                        .or_else(|| state.last_error.clone()),
                    refreshes_ok: state.refreshes_ok,
                    refreshes_failed: state.refreshes_failed,
                    refreshes_revoked: state.refreshes_revoked,
                    auth_failures: state.auth_failures,
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.provider, a.tenant_id).cmp(&(&b.provider, b.tenant_id)));
        out
    }
}

fn log_event(event: &CredentialEvent) {
    match event {
        CredentialEvent::Leased { key_ref, version } => {
            tracing::info!(provider = %key_ref, version, "provider key leased")
        }
        CredentialEvent::Refreshed { key_ref, version } => {
            tracing::debug!(provider = %key_ref, version, "provider key refreshed")
        }
        CredentialEvent::Rotated { key_ref, from, to } => {
            tracing::info!(provider = %key_ref, from, to, "provider key rotated")
        }
        CredentialEvent::Revoked { key_ref, reason } => {
            tracing::warn!(provider = %key_ref, %reason, "provider key revoked; provider unavailable")
        }
        CredentialEvent::RefreshFailed { key_ref, error } => {
            tracing::warn!(provider = %key_ref, %error, "provider key refresh failed; serving the current lease")
        }
    }
}
