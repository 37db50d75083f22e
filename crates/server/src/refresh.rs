//! Refresh-ahead for the per-tenant caches read on every request (policy, suspensions): in the last part of
//! an entry's life, one request reloads it while the others go on using it, so a busy tenant never waits
//! for Postgres on these reads and never sends a burst of identical queries when an entry runs out.
//! Staleness stays bounded by the entry's lifetime, as before.

use ragvault_core::TenantId;
use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

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

/// Which tenants' entries some request is reloading now.
#[derive(Default)]
pub struct RefreshClaims(Mutex<HashSet<TenantId>>);

/// Held by the one request reloading a tenant's entry; released when dropped, whatever the reload did.
pub struct RefreshClaim<'a> {
    claims: &'a RefreshClaims,
    tenant: TenantId,
}

impl RefreshClaims {
    /// `tenant`'s entry, given the cached one (`(age, entry)`, if any) and its lifetime: a fresh entry as it
    /// is; one due for refresh as it is, after this request reloaded it (`load`) unless another request is
    /// doing so, and as it was when that reload fails (`reload_failed` hears why); an expired or missing one
    /// from `load`, whose error is the caller's.
    pub async fn serve<T, E, Load>(
        &self,
        tenant: TenantId,
        cached: Option<(Duration, T)>,
        ttl: Duration,
        load: impl FnOnce() -> Load,
        reload_failed: impl FnOnce(&E),
    ) -> Result<T, E>
    where
        Load: std::future::Future<Output = Result<T, E>>,
    {
        match cached.map(|(age, entry)| (Freshness::of(age, ttl), entry)) {
            Some((Freshness::Fresh, entry)) => Ok(entry),
            Some((Freshness::RefreshDue, entry)) => {
                let Some(_reloading) = self.claim(tenant) else {
                    // Another request is reloading it.
                    return Ok(entry);
                };
                // Still within its lifetime: a failed early reload does not fail the request.
                Ok(load().await.unwrap_or_else(|e| {
                    reload_failed(&e);
                    entry
                }))
            }
            Some((Freshness::Expired, _)) | None => load().await,
        }
    }

    /// The claim to reload `tenant`'s entry, unless another request holds it.
    pub fn claim(&self, tenant: TenantId) -> Option<RefreshClaim<'_>> {
        // Not `then_some`: it would build (and drop, releasing another request's claim) a claim on refusal.
        let claimed = self.lock().insert(tenant);
        claimed.then(|| RefreshClaim {
            claims: self,
            tenant,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<TenantId>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for RefreshClaim<'_> {
    fn drop(&mut self) {
        self.claims.lock().remove(&self.tenant);
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
    async fn serve_reloads_only_what_is_due_and_keeps_an_entry_a_reload_failed_on() {
        let claims = RefreshClaims::default();
        let tenant = TenantId::new();
        let ttl = Duration::from_secs(5);
        let (fresh, due, expired) = (
            Duration::from_secs(1),
            Duration::from_millis(4_500),
            Duration::from_secs(6),
        );
        let serve = |cached: Option<(Duration, &'static str)>,
                     reload: Result<&'static str, &'static str>| {
            let failures = std::cell::Cell::new(0);
            let claims = &claims;
            async move {
                let served = claims
                    .serve(
                        tenant,
                        cached,
                        ttl,
                        || async { reload },
                        |_| failures.set(failures.get() + 1),
                    )
                    .await;
                (served, failures.get())
            }
        };
        assert_eq!(serve(Some((fresh, "old")), Ok("new")).await, (Ok("old"), 0));
        assert_eq!(serve(Some((due, "old")), Ok("new")).await, (Ok("new"), 0));
        assert_eq!(serve(Some((due, "old")), Err("down")).await, (Ok("old"), 1));
        assert_eq!(
            serve(Some((expired, "old")), Err("down")).await,
            (Err("down"), 0)
        );
        assert_eq!(serve(None, Ok("new")).await, (Ok("new"), 0));
        // While another request holds the claim, a due entry is served as it is.
        let _elsewhere = claims.claim(tenant).expect("claim");
        assert_eq!(serve(Some((due, "old")), Ok("new")).await, (Ok("old"), 0));
    }
}
