//! Monthly budgets that cannot be overshot, kept off the per-request database path.
//!
//! Each replica leases a slice of a tenant's remaining monthly budget from Postgres (an atomic, row-locked
//! update of `budget_months.committed`) and spends it in memory: a request reserves its worst-case cost
//! (counted input tokens plus `max_tokens` at the output price) from the slice before any provider call,
//! and settles to the actual cost when the answer ends. `committed` never passes the limit, and every
//! replica spends only what it leased, so all replicas together cannot spend past the limit. A slice that
//! falls below half its size is topped up in the background (lease-ahead), so requests rarely wait for a
//! lease. The slices of tenants that reserved nothing for a while go back periodically (a busy tenant keeps
//! its own, so its requests do not wait for a fresh lease), and all of them at shutdown; a crash loses at
//! most the unspent slice (counted as committed until the month ends), never spend beyond the limit.

use crate::access::RequestContext;
use crate::GatewayError;
use ragvault_core::TenantId;
use ragvault_store::{month_of, Store};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use time::{Date, OffsetDateTime};

/// A tenant's monthly budget, from its policy (sandbox tenants get a default one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantBudget {
    /// Hard stop: no provider call whose worst case would pass it.
    pub hard_micro_usd: u64,
    /// Spend past this raises one audit event per month (and a metric).
    pub soft_micro_usd: Option<u64>,
}

#[derive(Default)]
struct Slice {
    month: Option<Date>,
    /// Leased and not reserved. Negative when settled costs ran past their reservations (provider token
    /// counts above ours): a debt the next lease covers first.
    available: i64,
    soft_micro_usd: Option<u64>,
    soft_reported: Option<Date>,
    /// Set when Postgres had nothing left to lease under this hard limit: until it expires, requests are
    /// refused from memory (an over-budget tenant's flood costs no retrieval and no database round trip).
    /// A replica returning its unused slice frees budget again, which the next lease after expiry finds.
    exhausted: Option<Exhausted>,
    /// The hard limit under which a lease last came back short (the month's budget is nearly all leased):
    /// no leasing ahead under it, or every request near the end would cost a database round trip.
    drained: Option<u64>,
    /// A reservation was taken from the slice since the last periodic return: the tenant is busy here and
    /// keeps its slice (see [`BudgetGuard::return_idle`]).
    used: bool,
}

/// What a lease that came back short showed: the budget was spent up to a remainder too small for a call.
#[derive(Clone, Copy, Debug)]
struct Exhausted {
    hard_micro_usd: u64,
    until: std::time::Instant,
    /// The smallest reservation the slice and Postgres together could not cover. What stays in the slice
    /// (a lease can grant a last few micro-USD) is below it, so the tenant is out of budget for any call
    /// like the ones refused, although the slice is not empty.
    could_not_cover: u64,
}

/// How long "nothing left to lease" is believed before Postgres is asked again.
const EXHAUSTED_RECHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// A tenant's spend passed its soft threshold (reported once per month, by the replica that marked it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SoftThresholdCrossing {
    pub tenant_id: TenantId,
    /// First day of the month (UTC).
    pub month: String,
    pub spent_micro_usd: i64,
    pub soft_micro_usd: u64,
}

/// Budget slices of this replica.
pub struct BudgetGuard {
    store: Store,
    /// How much to lease at once (capped by a twentieth of the budget, so one replica cannot sit on all of it).
    slice_micro_usd: u64,
    slices: Mutex<HashMap<TenantId, Slice>>,
    /// One lease at a time per tenant: requests that find the slice short while a lease is under way wait
    /// for it and take from what it brought, instead of queueing on the budget row's lock in Postgres.
    leasing: Mutex<HashMap<TenantId, Arc<tokio::sync::Mutex<()>>>>,
    soft_crossings: std::sync::atomic::AtomicU64,
    crossing_listener: Mutex<Option<tokio::sync::mpsc::UnboundedSender<SoftThresholdCrossing>>>,
}

/// Budget held for one provider call. Dropped without [`Reservation::settle`] (the call failed before it
/// cost anything), it goes back whole.
pub struct Reservation {
    held: Option<(Arc<BudgetGuard>, TenantId, Date, u64)>,
}

impl Reservation {
    /// A reservation for a call that needs none (no budget, or a free provider).
    pub fn none() -> Reservation {
        Reservation { held: None }
    }

    pub fn amount(&self) -> u64 {
        self.held.as_ref().map_or(0, |h| h.3)
    }

    /// The call ended and cost `actual`: the rest of the reservation returns to the slice.
    pub fn settle(mut self, actual: u64) {
        if let Some((guard, tenant, month, amount)) = self.held.take() {
            guard.give_back(tenant, month, to_i64(amount) - to_i64(actual));
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some((guard, tenant, month, amount)) = self.held.take() {
            guard.give_back(tenant, month, to_i64(amount));
        }
    }
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Seconds until the next calendar month (UTC), when a spent budget renews: the `retry-after` of a refusal.
pub fn seconds_until_next_month(now: OffsetDateTime) -> u64 {
    let date = now.date();
    let (year, month) = match date.month() {
        time::Month::December => (date.year() + 1, time::Month::January),
        m => (date.year(), m.next()),
    };
    let next = Date::from_calendar_date(year, month, 1)
        .map(|d| d.midnight().assume_utc())
        .unwrap_or(now);
    u64::try_from((next - now).whole_seconds())
        .unwrap_or(0)
        .max(1)
}

impl BudgetGuard {
    pub fn new(store: Store, slice_micro_usd: u64) -> BudgetGuard {
        BudgetGuard {
            store,
            slice_micro_usd: slice_micro_usd.max(1),
            slices: Mutex::new(HashMap::new()),
            leasing: Mutex::new(HashMap::new()),
            soft_crossings: std::sync::atomic::AtomicU64::new(0),
            crossing_listener: Mutex::new(None),
        }
    }

    /// Every soft threshold crossing from now on (for the webhook sender).
    pub fn listen_for_crossings(
        &self,
    ) -> tokio::sync::mpsc::UnboundedReceiver<SoftThresholdCrossing> {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        *self
            .crossing_listener
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(sender);
        receiver
    }

    fn slices(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, Slice>> {
        self.slices.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Soft thresholds crossed since start (for `/metrics`).
    pub fn soft_crossings(&self) -> u64 {
        self.soft_crossings
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn give_back(&self, tenant: TenantId, month: Date, amount: i64) {
        let mut slices = self.slices();
        if let Some(slice) = slices.get_mut(&tenant) {
            if slice.month == Some(month) {
                slice.available += amount;
            }
        }
        // A slice of a month that has ended is gone with its month: nothing to give back to.
    }

    /// Takes `amount` from the slice if it holds that much; otherwise says how much is missing.
    fn take(
        &self,
        tenant: TenantId,
        month: Date,
        amount: u64,
        soft: Option<u64>,
    ) -> Result<i64, u64> {
        let mut slices = self.slices();
        let slice = slices.entry(tenant).or_default();
        if slice.month != Some(month) {
            *slice = Slice {
                month: Some(month),
                ..Slice::default()
            };
        }
        slice.soft_micro_usd = soft;
        let wanted = to_i64(amount);
        if slice.available >= wanted {
            slice.available -= wanted;
            slice.used = true;
            Ok(slice.available)
        } else {
            Err(u64::try_from(wanted - slice.available).unwrap_or(u64::MAX))
        }
    }

    /// Reserves `amount` of `tenant`'s budget, leasing more from Postgres when this replica's slice is
    /// short. `BudgetExceeded` when the month's budget cannot cover it: no provider may be called.
    pub async fn reserve(
        self: &Arc<Self>,
        tenant: TenantId,
        budget: Option<TenantBudget>,
        amount: u64,
    ) -> Result<Reservation, GatewayError> {
        let Some(budget) = budget else {
            return Ok(Reservation::none());
        };
        if amount == 0 {
            return Ok(Reservation::none());
        }
        let now = OffsetDateTime::now_utc();
        let month = month_of(now);
        let held = |guard: &Arc<BudgetGuard>| Reservation {
            held: Some((guard.clone(), tenant, month, amount)),
        };
        if let Ok(left) = self.take(tenant, month, amount, budget.soft_micro_usd) {
            self.lease_ahead(tenant, month, budget, left);
            return Ok(held(self));
        }
        let refused = || GatewayError::BudgetExceeded {
            retry_after_secs: seconds_until_next_month(now),
        };
        if self.cannot_cover(tenant, Some(budget), Some(amount)) {
            return Err(refused());
        }
        let lease_lock = self.lease_lock(tenant);
        let _one_lease_at_a_time = lease_lock.lock().await;
        // The lease this request waited for may have brought enough, or found the budget spent.
        let missing = match self.take(tenant, month, amount, budget.soft_micro_usd) {
            Ok(_) => return Ok(held(self)),
            Err(missing) => missing,
        };
        if self.cannot_cover(tenant, Some(budget), Some(amount)) {
            return Err(refused());
        }
        let slice = self.slice_size(budget).max(missing);
        let granted = self
            .store
            .lease_budget(tenant, month, slice, budget.hard_micro_usd)
            .await?;
        self.add_lease(tenant, month, budget, slice, granted);
        match self.take(tenant, month, amount, budget.soft_micro_usd) {
            Ok(_) => Ok(held(self)),
            Err(_) => {
                // Postgres granted less than asked only when it had no more: the budget is spent down to
                // what the slice holds, which does not cover this call.
                if granted < slice {
                    self.mark_exhausted(tenant, month, budget.hard_micro_usd, amount);
                }
                Err(refused())
            }
        }
    }

    /// What one lease asks for: the configured slice, at most a twentieth of the budget.
    fn slice_size(&self, budget: TenantBudget) -> u64 {
        self.slice_micro_usd.min(budget.hard_micro_usd / 20).max(1)
    }

    /// Puts what a lease granted into the slice; a lease granted less than asked marks the budget drained.
    fn add_lease(
        &self,
        tenant: TenantId,
        month: Date,
        budget: TenantBudget,
        asked: u64,
        granted: u64,
    ) {
        self.give_back(tenant, month, to_i64(granted));
        if granted < asked {
            if let Some(slice) = self
                .slices()
                .get_mut(&tenant)
                .filter(|s| s.month == Some(month))
            {
                slice.drained = Some(budget.hard_micro_usd);
            }
        }
    }

    /// Tops the slice up in the background once a reservation leaves it below half a slice. A lease is a
    /// row-locked transaction (a few ms), and every request that found the slice empty queued behind it:
    /// the slowest calls of a brokered-call benchmark were these waits. Skipped while a lease is under way
    /// for the tenant or the budget is drained; the request path still leases itself when the slice cannot
    /// cover a call.
    fn lease_ahead(
        self: &Arc<Self>,
        tenant: TenantId,
        month: Date,
        budget: TenantBudget,
        left: i64,
    ) {
        let size = self.slice_size(budget);
        let low = to_i64(size / 2);
        if left >= low
            || self
                .slices()
                .get(&tenant)
                .is_some_and(|s| s.drained == Some(budget.hard_micro_usd))
        {
            return;
        }
        let Ok(leasing) = self.lease_lock(tenant).try_lock_owned() else {
            return;
        };
        let guard = self.clone();
        tokio::spawn(async move {
            let _one_lease_at_a_time = leasing;
            let available = guard
                .slices()
                .get(&tenant)
                .filter(|s| s.month == Some(month))
                .map_or(0, |s| s.available);
            if available >= low {
                return;
            }
            match guard
                .store
                .lease_budget(tenant, month, size, budget.hard_micro_usd)
                .await
            {
                Ok(granted) => guard.add_lease(tenant, month, budget, size, granted),
                Err(e) => {
                    tracing::debug!(error = %e, "could not lease budget ahead; a request short of it will")
                }
            }
        });
    }

    fn lease_lock(&self, tenant: TenantId) -> Arc<tokio::sync::Mutex<()>> {
        self.leasing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(tenant)
            .or_default()
            .clone()
    }

    fn mark_exhausted(&self, tenant: TenantId, month: Date, hard_micro_usd: u64, amount: u64) {
        let mut slices = self.slices();
        let Some(slice) = slices.get_mut(&tenant).filter(|s| s.month == Some(month)) else {
            return;
        };
        let now = std::time::Instant::now();
        // Within one window the smallest refused call counts: a smaller call than that might still fit.
        let could_not_cover = slice
            .exhausted
            .filter(|e| e.hard_micro_usd == hard_micro_usd && now < e.until)
            .map_or(amount, |e| e.could_not_cover.min(amount));
        slice.exhausted = Some(Exhausted {
            hard_micro_usd,
            until: now + EXHAUSTED_RECHECK,
            could_not_cover,
        });
    }

    /// True while Postgres recently had nothing left to lease for `tenant` under this budget's hard limit
    /// and this replica's slice holds less than the smallest call it then refused: a request can be refused
    /// before any work is done for it. Budget given back since (a call settled below its reservation) lets
    /// requests try again.
    pub fn is_exhausted(&self, tenant: TenantId, budget: Option<TenantBudget>) -> bool {
        self.cannot_cover(tenant, budget, None)
    }

    /// [`BudgetGuard::is_exhausted`] for a call whose reservation is known: one smaller than every call
    /// refused lately may still fit in what Postgres has left, and is let through to ask.
    fn cannot_cover(
        &self,
        tenant: TenantId,
        budget: Option<TenantBudget>,
        amount: Option<u64>,
    ) -> bool {
        let Some(budget) = budget else {
            return false;
        };
        let month = month_of(OffsetDateTime::now_utc());
        self.slices().get(&tenant).is_some_and(|slice| {
            slice.month == Some(month)
                && slice.exhausted.is_some_and(|e| {
                    let needed = match amount {
                        Some(smaller) if smaller < e.could_not_cover => return false,
                        Some(amount) => amount,
                        None => e.could_not_cover,
                    };
                    e.hard_micro_usd == budget.hard_micro_usd
                        && std::time::Instant::now() < e.until
                        && slice.available < to_i64(needed)
                })
        })
    }

    /// Returns every unspent slice to Postgres (at shutdown).
    pub async fn return_unused(&self) -> Result<(), GatewayError> {
        let tenants: Vec<TenantId> = self.slices().keys().copied().collect();
        self.return_slices(tenants).await
    }

    /// Returns the unspent slices of tenants that reserved nothing here since the last call, so other
    /// replicas can lease that budget. A busy tenant keeps its slice: emptied every few seconds, it made the
    /// next of its requests wait for a lease (several Postgres round trips) in the middle of its traffic.
    /// What a busy replica holds is at most one slice (a twentieth of the budget at most), which it spends.
    pub async fn return_idle(&self) -> Result<(), GatewayError> {
        let idle: Vec<TenantId> = self
            .slices()
            .iter_mut()
            .filter_map(|(tenant, slice)| {
                let busy = std::mem::take(&mut slice.used);
                (!busy).then_some(*tenant)
            })
            .collect();
        self.return_slices(idle).await
    }

    async fn return_slices(&self, tenants: Vec<TenantId>) -> Result<(), GatewayError> {
        // No lease may land after a slice is emptied: it would sit unspent, counted as committed.
        let locks: Vec<_> = {
            let leasing = self.leasing.lock().unwrap_or_else(|p| p.into_inner());
            tenants
                .iter()
                .filter_map(|tenant| leasing.get(tenant).cloned())
                .collect()
        };
        let mut _no_leases_meanwhile = Vec::with_capacity(locks.len());
        for lock in locks {
            _no_leases_meanwhile.push(lock.lock_owned().await);
        }
        let unused: Vec<(TenantId, Date, u64)> = {
            let mut slices = self.slices();
            tenants
                .iter()
                .filter_map(|tenant| {
                    let slice = slices.get_mut(tenant)?;
                    let month = slice.month?;
                    let amount = u64::try_from(slice.available).ok().filter(|a| *a > 0)?;
                    slice.available = 0;
                    Some((*tenant, month, amount))
                })
                .collect()
        };
        for (tenant, month, amount) in unused {
            if let Err(e) = self.store.return_budget(tenant, month, amount).await {
                // Keep it rather than lose it: it goes back next time.
                self.give_back(tenant, month, to_i64(amount));
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Called with a tenant's month spend after usage was recorded: the first time it passes the soft
    /// threshold, an audit event (one per month across replicas) and a metric.
    pub async fn observe_spend(
        &self,
        tenant: TenantId,
        month: Date,
        spent_micro_usd: i64,
    ) -> Result<(), GatewayError> {
        let soft = {
            let slices = self.slices();
            match slices.get(&tenant) {
                Some(slice) if slice.soft_reported != Some(month) => slice.soft_micro_usd,
                _ => None,
            }
        };
        let Some(soft) = soft else {
            return Ok(());
        };
        if spent_micro_usd < to_i64(soft) {
            return Ok(());
        }
        if let Some(slice) = self.slices().get_mut(&tenant) {
            slice.soft_reported = Some(month);
        }
        let audit = RequestContext::new("system:budget", None)
            .audit("budget.soft_threshold_crossed")
            .tenant(tenant)
            .details(serde_json::json!({
                "month": month.to_string(),
                "spent_micro_usd": spent_micro_usd,
                "soft_micro_usd": soft,
            }));
        if self.store.mark_soft_alerted(tenant, month, &audit).await? {
            self.soft_crossings
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(tenant = %tenant, spent_micro_usd, soft_micro_usd = soft, "tenant passed its soft budget threshold");
            let listener = self
                .crossing_listener
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if let Some(listener) = listener {
                let _ = listener.send(SoftThresholdCrossing {
                    tenant_id: tenant,
                    month: month.to_string(),
                    spent_micro_usd,
                    soft_micro_usd: soft,
                });
            }
        }
        Ok(())
    }

    /// Runs [`BudgetGuard::return_idle`] every `every` until the process ends.
    pub async fn run_returns(self: Arc<Self>, every: std::time::Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.return_idle().await {
                tracing::warn!(error = %e, "could not return unused budget slices");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_runs_to_the_next_month() {
        let now = time::macros::datetime!(2026-11-30 23:59:30 UTC);
        assert_eq!(seconds_until_next_month(now), 30);
        let december = time::macros::datetime!(2026-12-31 23:00:00 UTC);
        assert_eq!(seconds_until_next_month(december), 3600);
    }
}
