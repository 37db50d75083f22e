//! Rate limits: requests and tokens per minute, per tenant and per principal, by GCRA (the generic cell rate
//! algorithm: one timestamp per bucket, no background refill).
//!
//! Limits are per replica: with N replicas behind a balancer a tenant gets up to N times its limit. Budgets
//! (see `budget`) are the cross-replica guarantee on spend; rate limits bound bursts and load.

use crate::GatewayError;
use ragvault_core::{Principal, TenantId};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A tenant's limits, from its policy (`rate_limits`); 0 or absent = unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimits {
    /// Requests per minute for the whole tenant.
    #[serde(default)]
    pub tenant_requests_per_minute: u32,
    /// Provider tokens (input + output) per minute for the whole tenant.
    #[serde(default)]
    pub tenant_tokens_per_minute: u32,
    /// Requests per minute for one API key or one widget subject (or token, without a subject).
    #[serde(default)]
    pub principal_requests_per_minute: u32,
    /// Provider tokens per minute for one API key or widget subject.
    #[serde(default)]
    pub principal_tokens_per_minute: u32,
}

impl RateLimits {
    pub fn is_unlimited(&self) -> bool {
        *self == RateLimits::default()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum BucketKey {
    TenantRequests(TenantId),
    TenantTokens(TenantId),
    PrincipalRequests(String),
    PrincipalTokens(String),
}

/// One GCRA cell: the theoretical arrival time of the next unit.
#[derive(Clone, Copy, Debug)]
struct Cell {
    tat: Instant,
}

/// Buckets not touched for this long are dropped (they are full again anyway).
const IDLE: Duration = Duration::from_secs(120);

pub struct RateLimiter {
    cells: Mutex<HashMap<BucketKey, Cell>>,
    sweeps: Mutex<Instant>,
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter::new()
    }
}

/// Who a per-principal bucket belongs to: the API key, the widget subject, or the widget token.
fn principal_key(principal: &Principal) -> Option<String> {
    match principal {
        Principal::Tenant { key_id, .. } => Some(format!("api_key:{key_id}")),
        Principal::Widget {
            tenant_id,
            subject: Some(subject),
            ..
        } => Some(format!("subject:{tenant_id}:{subject}")),
        Principal::Widget { token_id, .. } => Some(format!("widget:{token_id}")),
        Principal::Operator { .. } => None,
    }
}

/// Per-minute rate as an emission interval; a burst of a tenth of the minute's allowance (at least one) is
/// allowed at once.
fn interval_and_tolerance(per_minute: u32) -> (Duration, Duration) {
    let interval = Duration::from_secs(60) / per_minute.max(1);
    let burst = (per_minute / 10).max(1);
    (interval, interval * (burst - 1))
}

impl RateLimiter {
    pub fn new() -> RateLimiter {
        RateLimiter {
            cells: Mutex::new(HashMap::new()),
            sweeps: Mutex::new(Instant::now()),
        }
    }

    fn cells(&self) -> std::sync::MutexGuard<'_, HashMap<BucketKey, Cell>> {
        self.cells.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long until `key` (at `per_minute`) has room, or `None` when it has room now.
    fn wait(
        cells: &HashMap<BucketKey, Cell>,
        key: &BucketKey,
        per_minute: u32,
        now: Instant,
    ) -> Option<Duration> {
        let (_, tolerance) = interval_and_tolerance(per_minute);
        let tat = cells.get(key).map_or(now, |c| c.tat.max(now));
        let ahead = tat.saturating_duration_since(now);
        (ahead > tolerance).then(|| ahead - tolerance)
    }

    fn charge(
        cells: &mut HashMap<BucketKey, Cell>,
        key: BucketKey,
        per_minute: u32,
        units: u64,
        now: Instant,
    ) {
        let (interval, _) = interval_and_tolerance(per_minute);
        let cell = cells.entry(key).or_insert(Cell { tat: now });
        let units = u32::try_from(units).unwrap_or(u32::MAX);
        cell.tat = cell.tat.max(now) + interval.saturating_mul(units);
    }

    /// Admits one request, or refuses with how long to wait. Checks request buckets and whether token
    /// buckets are already over (tokens are charged after the call, by [`RateLimiter::charge_tokens`]).
    pub fn admit(&self, principal: &Principal, limits: &RateLimits) -> Result<(), GatewayError> {
        if limits.is_unlimited() {
            return Ok(());
        }
        let Some(tenant) = principal.tenant_id() else {
            return Ok(());
        };
        let who = principal_key(principal);
        let now = Instant::now();
        self.sweep(now);
        let mut checks: Vec<(BucketKey, u32, bool)> = Vec::new();
        if limits.tenant_requests_per_minute > 0 {
            checks.push((
                BucketKey::TenantRequests(tenant),
                limits.tenant_requests_per_minute,
                true,
            ));
        }
        if limits.tenant_tokens_per_minute > 0 {
            checks.push((
                BucketKey::TenantTokens(tenant),
                limits.tenant_tokens_per_minute,
                false,
            ));
        }
        if let Some(who) = &who {
            if limits.principal_requests_per_minute > 0 {
                checks.push((
                    BucketKey::PrincipalRequests(who.clone()),
                    limits.principal_requests_per_minute,
                    true,
                ));
            }
            if limits.principal_tokens_per_minute > 0 {
                checks.push((
                    BucketKey::PrincipalTokens(who.clone()),
                    limits.principal_tokens_per_minute,
                    false,
                ));
            }
        }
        let mut cells = self.cells();
        // Check every bucket before charging any, so a refused request costs nothing.
        let longest = checks
            .iter()
            .filter_map(|(key, rate, _)| Self::wait(&cells, key, *rate, now))
            .max();
        if let Some(wait) = longest {
            return Err(GatewayError::RateLimited {
                retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            });
        }
        for (key, rate, counts_requests) in checks {
            if counts_requests {
                Self::charge(&mut cells, key, rate, 1, now);
            }
        }
        Ok(())
    }

    /// Charges provider tokens an answer used to the tenant's and the principal's token buckets.
    pub fn charge_tokens(&self, principal: &Principal, limits: &RateLimits, tokens: u64) {
        let Some(tenant) = principal.tenant_id() else {
            return;
        };
        let now = Instant::now();
        let mut cells = self.cells();
        if limits.tenant_tokens_per_minute > 0 {
            Self::charge(
                &mut cells,
                BucketKey::TenantTokens(tenant),
                limits.tenant_tokens_per_minute,
                tokens,
                now,
            );
        }
        if let (Some(who), true) = (
            principal_key(principal),
            limits.principal_tokens_per_minute > 0,
        ) {
            Self::charge(
                &mut cells,
                BucketKey::PrincipalTokens(who),
                limits.principal_tokens_per_minute,
                tokens,
                now,
            );
        }
    }

    /// Drops idle buckets now and then, so one-off widget subjects do not accumulate.
    fn sweep(&self, now: Instant) {
        let mut last = self.sweeps.lock().unwrap_or_else(|p| p.into_inner());
        if now.duration_since(*last) < IDLE {
            return;
        }
        *last = now;
        drop(last);
        self.cells().retain(|_, cell| cell.tat + IDLE > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ragvault_core::{ApiKeyId, Scopes};

    fn key() -> Principal {
        Principal::Tenant {
            tenant_id: TenantId::new(),
            key_id: ApiKeyId::new(),
            scopes: Scopes::tenant_default(),
            groups: None,
        }
    }

    #[test]
    fn requests_past_the_burst_are_refused_with_a_wait() {
        let limiter = RateLimiter::new();
        let limits = RateLimits {
            principal_requests_per_minute: 60,
            ..RateLimits::default()
        };
        let principal = key();
        // 60/min: interval 1 s, burst 6.
        for i in 0..6 {
            assert!(limiter.admit(&principal, &limits).is_ok(), "request {i}");
        }
        match limiter.admit(&principal, &limits) {
            Err(GatewayError::RateLimited { retry_after_secs }) => assert_eq!(retry_after_secs, 1),
            other => panic!("{other:?}"),
        }
        // Another principal of another tenant is unaffected.
        assert!(limiter.admit(&key(), &limits).is_ok());
    }

    #[test]
    fn token_buckets_refuse_once_spent() {
        let limiter = RateLimiter::new();
        let limits = RateLimits {
            tenant_tokens_per_minute: 1000,
            ..RateLimits::default()
        };
        let principal = key();
        assert!(limiter.admit(&principal, &limits).is_ok());
        limiter.charge_tokens(&principal, &limits, 500);
        match limiter.admit(&principal, &limits) {
            Err(GatewayError::RateLimited { retry_after_secs }) => {
                // 500 tokens at 1000/min, less the burst of 100: about 24 s.
                assert!((20..=30).contains(&retry_after_secs), "{retry_after_secs}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unlimited_is_free() {
        let limiter = RateLimiter::new();
        for _ in 0..1000 {
            assert!(limiter.admit(&key(), &RateLimits::default()).is_ok());
        }
        assert!(limiter.cells().is_empty());
    }
}
