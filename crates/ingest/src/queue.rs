//! The ingest queue: job ids waiting for a worker, taken one tenant at a time in turn, so a tenant that
//! queues a thousand files delays another tenant's upload by at most one job per worker, not by its backlog.
//!
//! Uploads are admitted against two bounds: what one tenant may have waiting (`per_tenant`) and what all
//! tenants together may (`total`). Admission is a [`Reservation`] taken before the upload is sealed and
//! written, so a full queue refuses at once (429) and a refused upload has cost nothing. Jobs put back by
//! the service itself (resumed at start, retried after an outage) skip the bounds: they were admitted once.

use ragvault_core::{JobId, TenantId};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

#[derive(Default)]
struct State {
    /// Waiting jobs per tenant, oldest first.
    waiting: HashMap<TenantId, VecDeque<JobId>>,
    /// Tenants with waiting jobs, in the order they are served next.
    turn: VecDeque<TenantId>,
    /// Admitted slots per tenant: reserved (upload being written) plus waiting.
    held: HashMap<TenantId, usize>,
    held_total: usize,
    closed: bool,
}

impl State {
    fn release(&mut self, tenant: TenantId) {
        self.held_total = self.held_total.saturating_sub(1);
        if let Some(n) = self.held.get_mut(&tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.held.remove(&tenant);
            }
        }
    }

    fn enqueue(&mut self, tenant: TenantId, job: JobId) {
        let jobs = self.waiting.entry(tenant).or_default();
        if jobs.is_empty() {
            self.turn.push_back(tenant);
        }
        jobs.push_back(job);
    }
}

struct Shared {
    state: Mutex<State>,
    ready: Notify,
    per_tenant: usize,
    total: usize,
}

/// A bounded queue served round-robin by tenant.
#[derive(Clone)]
pub struct FairQueue {
    shared: Arc<Shared>,
}

/// A slot admitted for one upload of `tenant`; dropping it unused gives the slot back.
pub struct Reservation {
    shared: Arc<Shared>,
    tenant: TenantId,
    used: bool,
}

impl FairQueue {
    pub fn new(per_tenant: usize, total: usize) -> FairQueue {
        FairQueue {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                ready: Notify::new(),
                per_tenant: per_tenant.max(1),
                total: total.max(1),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.shared)
    }

    /// A slot for one more upload of `tenant`, or `None` when the tenant's share or the whole queue is full.
    pub fn try_reserve(&self, tenant: TenantId) -> Option<Reservation> {
        let mut state = self.state();
        let held = state.held.get(&tenant).copied().unwrap_or(0);
        if state.closed || held >= self.shared.per_tenant || state.held_total >= self.shared.total {
            return None;
        }
        *state.held.entry(tenant).or_default() += 1;
        state.held_total += 1;
        Some(Reservation {
            shared: self.shared.clone(),
            tenant,
            used: false,
        })
    }

    /// Queues a job the service admitted before (resumed at start, or retried): no bound applies.
    pub fn push(&self, tenant: TenantId, job: JobId) {
        let mut state = self.state();
        if state.closed {
            return;
        }
        *state.held.entry(tenant).or_default() += 1;
        state.held_total += 1;
        state.enqueue(tenant, job);
        drop(state);
        self.shared.ready.notify_one();
    }

    /// The next job: the first waiting job of the tenant whose turn it is. Waits while the queue is empty;
    /// `None` once the queue is closed.
    pub async fn pop(&self) -> Option<(TenantId, JobId)> {
        loop {
            // Registered before looking, so a push between the look and the wait is not missed.
            let notified = self.shared.ready.notified();
            {
                let mut state = self.state();
                if state.closed {
                    return None;
                }
                if let Some(tenant) = state.turn.pop_front() {
                    let (job, more) = match state.waiting.get_mut(&tenant) {
                        Some(jobs) => (jobs.pop_front(), !jobs.is_empty()),
                        None => (None, false),
                    };
                    if more {
                        state.turn.push_back(tenant);
                    } else {
                        state.waiting.remove(&tenant);
                    }
                    if let Some(job) = job {
                        state.release(tenant);
                        // Another worker may be waiting and more jobs may be left.
                        if !state.turn.is_empty() {
                            self.shared.ready.notify_one();
                        }
                        return Some((tenant, job));
                    }
                    continue;
                }
            }
            notified.await;
        }
    }

    /// Jobs admitted and not yet taken by a worker (uploads being written included).
    pub fn depth(&self) -> usize {
        self.state().held_total
    }

    /// Wakes every waiting worker with `None`; later pushes are ignored.
    pub fn close(&self) {
        self.state().closed = true;
        self.shared.ready.notify_waiters();
    }
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    // The state holds plain counters and ids: a panic elsewhere cannot leave it half-changed.
    shared.state.lock().unwrap_or_else(|p| p.into_inner())
}

impl Reservation {
    /// Queues the job in the slot this reservation holds.
    pub fn send(mut self, job: JobId) {
        self.used = true;
        let mut state = lock(&self.shared);
        if state.closed {
            state.release(self.tenant);
            return;
        }
        state.enqueue(self.tenant, job);
        drop(state);
        self.shared.ready.notify_one();
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.used {
            lock(&self.shared).release(self.tenant);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn tenant() -> TenantId {
        TenantId(Uuid::new_v4())
    }

    #[tokio::test]
    async fn tenants_are_served_in_turn_whatever_their_backlog() {
        let queue = FairQueue::new(1000, 1000);
        let (a, b, c) = (tenant(), tenant(), tenant());
        let a_jobs: Vec<JobId> = (0..100).map(|_| JobId::new()).collect();
        for job in &a_jobs {
            queue.try_reserve(a).unwrap().send(*job);
        }
        let b_job = JobId::new();
        queue.try_reserve(b).unwrap().send(b_job);
        let c_job = JobId::new();
        queue.push(c, c_job);
        let order: Vec<(TenantId, JobId)> = {
            let mut out = Vec::new();
            for _ in 0..6 {
                out.push(queue.pop().await.unwrap());
            }
            out
        };
        assert_eq!(order[0], (a, a_jobs[0]));
        assert_eq!(order[1], (b, b_job));
        assert_eq!(order[2], (c, c_job));
        assert_eq!(order[3], (a, a_jobs[1]));
        assert_eq!(order[4], (a, a_jobs[2]));
        assert_eq!(queue.depth(), 96);
    }

    #[test]
    fn admission_is_bounded_per_tenant_and_in_total_and_given_back() {
        let queue = FairQueue::new(2, 3);
        let (a, b) = (tenant(), tenant());
        let first = queue.try_reserve(a).unwrap();
        let _second = queue.try_reserve(a).unwrap();
        assert!(queue.try_reserve(a).is_none(), "a's share is full");
        let _b1 = queue.try_reserve(b).unwrap();
        assert!(queue.try_reserve(b).is_none(), "the whole queue is full");
        drop(first);
        assert!(
            queue.try_reserve(b).is_some(),
            "an unused reservation gives its slot back"
        );
    }

    #[tokio::test]
    async fn a_waiting_worker_is_woken_by_a_push_and_by_close() {
        let queue = FairQueue::new(4, 4);
        let t = tenant();
        let waiter = tokio::spawn({
            let queue = queue.clone();
            async move { queue.pop().await }
        });
        tokio::task::yield_now().await;
        let job = JobId::new();
        queue.push(t, job);
        assert_eq!(waiter.await.unwrap(), Some((t, job)));
        let waiter = tokio::spawn({
            let queue = queue.clone();
            async move { queue.pop().await }
        });
        tokio::task::yield_now().await;
        queue.close();
        assert_eq!(waiter.await.unwrap(), None);
    }
}
