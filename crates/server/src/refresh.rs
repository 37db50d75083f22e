//! Refresh-ahead for the per-tenant caches read on every request (policy, suspensions): in the last part of
//! an entry's life, one request starts a reload in the background and every request, that one included,
//! goes on using the entry, so a busy tenant never waits for Postgres on these reads and never sends a burst
//! of identical queries when an entry runs out. Staleness stays bounded by the entry's lifetime, as before.

use ragvault_core::TenantId;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A per-tenant cache (entries with the time they were loaded) whose `forget` also voids loads under way: a
/// load that read Postgres before a change and lands after the change's `forget` would otherwise put the old
/// value back for a whole lifetime (a suspension made here not applied here for up to its TTL).
pub struct TenantCache<T> {
    /// One lock over both, so a forget and a `put` are ordered.
    entries: Mutex<Entries<T>>,
    /// Which tenants' entries are being reloaded ahead of expiry.
    refreshing: RefreshClaims,
}

struct Entries<T> {
    /// The number of `forget`s so far.
    forgets: u64,
    loaded: HashMap<TenantId, (Instant, T)>,
}

/// Taken before a load reads; its result is kept only if nothing was forgotten since.
#[derive(Clone, Copy, Debug)]
pub struct LoadTicket(u64);

impl<T> Default for TenantCache<T> {
    fn default() -> Self {
        TenantCache {
            entries: Mutex::new(Entries {
                forgets: 0,
                loaded: HashMap::new(),
            }),
            refreshing: RefreshClaims::default(),
        }
    }
}

impl<T: Clone + Send + 'static> TenantCache<T> {
    /// The tenant's entry, refreshed ahead of expiry (see [`RefreshClaims::serve`]): `load` reads it and
    /// stores it with [`TenantCache::ticket`] and [`TenantCache::put`].
    pub async fn serve<E, Load>(
        &self,
        tenant: TenantId,
        ttl: Duration,
        load: impl FnOnce() -> Load,
        reload_failed: impl FnOnce(&E) + Send + 'static,
    ) -> Result<T, E>
    where
        Load: std::future::Future<Output = Result<T, E>> + Send + 'static,
    {
        let cached = self.get(tenant);
        self.refreshing
            .serve(tenant, cached, ttl, load, reload_failed)
            .await
    }

    /// The tenant's entry with its age.
    pub fn get(&self, tenant: TenantId) -> Option<(Duration, T)> {
        self.lock()
            .loaded
            .get(&tenant)
            .map(|(at, value)| (at.elapsed(), value.clone()))
    }

    /// Take before reading what [`TenantCache::put`] will store.
    pub fn ticket(&self) -> LoadTicket {
        LoadTicket(self.lock().forgets)
    }

    /// Stores `value` as loaded now, unless an entry (any tenant's: forgets are rare) was forgotten since
    /// `ticket` was taken; whether it was stored.
    pub fn put(&self, ticket: LoadTicket, tenant: TenantId, value: T) -> bool {
        let mut entries = self.lock();
        if entries.forgets != ticket.0 {
            return false;
        }
        entries.loaded.insert(tenant, (Instant::now(), value));
        true
    }

    /// Drops the tenant's entry (after a change) and voids every load under way.
    pub fn forget(&self, tenant: TenantId) {
        let mut entries = self.lock();
        entries.forgets += 1;
        entries.loaded.remove(&tenant);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries<T>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a cached entry of age `age` is good for, under a lifetime of `ttl`.
#[derive(Debug, PartialEq, Eq)]
enum Freshness {
    /// Use it.
    Fresh,
    /// Use it, and reload it if no other request is doing so.
    RefreshDue,
    /// Too old to use.
    Expired,
}

impl Freshness {
    /// Reloading starts in the last fifth of the lifetime.
    fn of(age: Duration, ttl: Duration) -> Freshness {
        if age >= ttl {
            Freshness::Expired
        } else if age >= ttl - ttl / 5 {
            Freshness::RefreshDue
        } else {
            Freshness::Fresh
        }
    }
}

/// Which tenants' entries are being reloaded now.
#[derive(Default)]
pub struct RefreshClaims(Arc<Mutex<HashSet<TenantId>>>);

/// Held by the one reload of a tenant's entry; released when dropped, whatever the reload did.
pub struct RefreshClaim {
    claims: Arc<Mutex<HashSet<TenantId>>>,
    tenant: TenantId,
}

impl RefreshClaims {
    /// `tenant`'s entry, given the cached one (`(age, entry)`, if any) and its lifetime: a fresh entry as it
    /// is; one due for refresh as it is, with a reload (`load`) started in the background unless one is under
    /// way (`reload_failed` hears why it failed; the entry stays until it expires); an expired or missing one
    /// from `load`, awaited here, whose error is the caller's.
    ///
    /// The reload of a due entry does not run in the request: its Postgres round trips (a pool checkout, a
    /// ping, the query) would land in that one request's latency, every few seconds per tenant and cache.
    pub async fn serve<T, E, Load>(
        &self,
        tenant: TenantId,
        cached: Option<(Duration, T)>,
        ttl: Duration,
        load: impl FnOnce() -> Load,
        reload_failed: impl FnOnce(&E) + Send + 'static,
    ) -> Result<T, E>
    where
        Load: std::future::Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
    {
        match cached.map(|(age, entry)| (Freshness::of(age, ttl), entry)) {
            Some((Freshness::Fresh, entry)) => Ok(entry),
            Some((Freshness::RefreshDue, entry)) => {
                if let Some(reloading) = self.claim(tenant) {
                    let reload = load();
                    tokio::spawn(async move {
                        if let Err(e) = reload.await {
                            reload_failed(&e);
                        }
                        drop(reloading);
                    });
                }
                Ok(entry)
            }
            Some((Freshness::Expired, _)) | None => load().await,
        }
    }

    /// The claim to reload `tenant`'s entry, unless a reload holds it.
    pub fn claim(&self, tenant: TenantId) -> Option<RefreshClaim> {
        // Not `then_some`: it would build (and drop, releasing another reload's claim) a claim on refusal.
        let claimed = lock(&self.0).insert(tenant);
        claimed.then(|| RefreshClaim {
            claims: self.0.clone(),
            tenant,
        })
    }
}

fn lock(claims: &Mutex<HashSet<TenantId>>) -> std::sync::MutexGuard<'_, HashSet<TenantId>> {
    claims.lock().unwrap_or_else(|p| p.into_inner())
}

impl Drop for RefreshClaim {
    fn drop(&mut self) {
        lock(&self.claims).remove(&self.tenant);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reloading_starts_in_the_last_fifth_of_the_lifetime() {
        let ttl = Duration::from_secs(5);
        assert_eq!(Freshness::of(Duration::from_secs(3), ttl), Freshness::Fresh);
        assert_eq!(
            Freshness::of(Duration::from_millis(4_100), ttl),
            Freshness::RefreshDue
        );
        assert_eq!(Freshness::of(ttl, ttl), Freshness::Expired);
    }

    #[test]
    fn a_load_that_read_before_a_forget_does_not_put_back_what_was_forgotten() {
        let cache = TenantCache::default();
        let tenant = TenantId::new();
        assert!(cache.put(cache.ticket(), tenant, "before the change"));
        // A reload reads Postgres, then the change commits and forgets the entry, then the reload lands.
        let reload = cache.ticket();
        cache.forget(tenant);
        assert!(!cache.put(reload, tenant, "read before the change"));
        assert!(cache.get(tenant).is_none(), "the next request loads anew");
        assert!(cache.put(cache.ticket(), tenant, "after the change"));
        assert_eq!(cache.get(tenant).map(|(_, v)| v), Some("after the change"));
    }

    #[test]
    fn one_request_at_a_time_holds_a_tenants_claim() {
        let claims = RefreshClaims::default();
        let tenant = TenantId::new();
        let first = claims.claim(tenant).expect("the first claim");
        assert!(claims.claim(tenant).is_none());
        assert!(claims.claim(TenantId::new()).is_some());
        drop(first);
        assert!(claims.claim(tenant).is_some());
    }

    #[tokio::test]
    async fn serve_reloads_what_is_due_in_the_background_and_keeps_an_entry_a_reload_failed_on() {
        let claims = RefreshClaims::default();
        let tenant = TenantId::new();
        let ttl = Duration::from_secs(5);
        let (fresh, due, expired) = (
            Duration::from_secs(1),
            Duration::from_millis(4_500),
            Duration::from_secs(6),
        );
        let loads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let failures = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        // What `serve` returned, the loads and failed reloads seen once the background reload (if any) ended.
        let serve = |cached: Option<(Duration, &'static str)>,
                     reload: Result<&'static str, &'static str>| {
            let claims = &claims;
            let (loads, failures) = (loads.clone(), failures.clone());
            async move {
                let (counted, failed) = (loads.clone(), failures.clone());
                let served = claims
                    .serve(
                        tenant,
                        cached,
                        ttl,
                        move || async move {
                            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            reload
                        },
                        move |_| {
                            failed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        },
                    )
                    .await;
                // A background reload releases its claim when it ends.
                while claims.claim(tenant).is_none() {
                    tokio::task::yield_now().await;
                }
                let counts = (
                    loads.swap(0, std::sync::atomic::Ordering::SeqCst),
                    failures.swap(0, std::sync::atomic::Ordering::SeqCst),
                );
                (served, counts)
            }
        };
        assert_eq!(
            serve(Some((fresh, "old")), Ok("new")).await,
            (Ok("old"), (0, 0))
        );
        // Due: the request is served the cached entry at once; the reload runs beside it.
        assert_eq!(
            serve(Some((due, "old")), Ok("new")).await,
            (Ok("old"), (1, 0))
        );
        assert_eq!(
            serve(Some((due, "old")), Err("down")).await,
            (Ok("old"), (1, 1))
        );
        assert_eq!(
            serve(Some((expired, "old")), Err("down")).await,
            (Err("down"), (1, 0))
        );
        assert_eq!(serve(None, Ok("new")).await, (Ok("new"), (1, 0)));
        // While a reload holds the claim, a due entry is served as it is and no second reload starts.
        let elsewhere = claims.claim(tenant).expect("claim");
        let served = claims
            .serve(
                tenant,
                Some((due, "old")),
                ttl,
                || async { Ok::<_, &str>("new") },
                |_| {},
            )
            .await;
        assert_eq!(served, Ok("old"));
        assert!(claims.claim(tenant).is_none(), "the claim is still held");
        drop(elsewhere);
    }
}
