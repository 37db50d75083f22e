//! Circuit breaker per provider: after `failure_threshold` failures in a row (5xx, timeouts, refused keys,
//! network errors) the provider is skipped for `cool_down`; then one probe request is let through
//! (half-open): success closes the breaker, failure opens it again.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Clone, Copy, Debug)]
pub struct BreakerSettings {
    pub failure_threshold: u32,
    pub cool_down: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            failure_threshold: 5,
            cool_down: Duration::from_secs(30),
        }
    }
}

#[derive(Debug)]
struct Inner {
    consecutive_failures: u32,
    opened_at: Option<Instant>,
    /// A half-open probe is in flight: other requests keep skipping the provider until it reports.
    probing: bool,
}

#[derive(Debug)]
pub struct CircuitBreaker {
    settings: BreakerSettings,
    inner: Mutex<Inner>,
}

/// Permission to call the provider; report the outcome with [`CircuitBreaker::record`].
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    /// This request is the half-open probe.
    Probe,
    Rejected,
}

impl CircuitBreaker {
    pub fn new(settings: BreakerSettings) -> CircuitBreaker {
        CircuitBreaker {
            settings,
            inner: Mutex::new(Inner {
                consecutive_failures: 0,
                opened_at: None,
                probing: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn state(&self) -> BreakerState {
        self.state_at(Instant::now())
    }

    fn state_at(&self, now: Instant) -> BreakerState {
        let inner = self.lock();
        match inner.opened_at {
            None => BreakerState::Closed,
            Some(at) if inner.probing || now.duration_since(at) >= self.settings.cool_down => {
                BreakerState::HalfOpen
            }
            Some(_) => BreakerState::Open,
        }
    }

    pub fn admit(&self) -> Admission {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Admission {
        let mut inner = self.lock();
        match inner.opened_at {
            None => Admission::Allowed,
            Some(at) if !inner.probing && now.duration_since(at) >= self.settings.cool_down => {
                inner.probing = true;
                Admission::Probe
            }
            Some(_) => Admission::Rejected,
        }
    }

    /// Reports the outcome of an admitted call.
    pub fn record(&self, success: bool) {
        self.record_at(success, Instant::now());
    }

    fn record_at(&self, success: bool, now: Instant) {
        let mut inner = self.lock();
        inner.probing = false;
        if success {
            inner.consecutive_failures = 0;
            inner.opened_at = None;
            return;
        }
        inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
        if inner.opened_at.is_some()
            || inner.consecutive_failures >= self.settings.failure_threshold
        {
            inner.opened_at = Some(now);
        }
    }

    /// A call that was admitted and then abandoned without an outcome (the client went away): frees the
    /// probe slot without counting a failure.
    pub fn release(&self) {
        self.lock().probing = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_half_opens_after_cool_down_and_closes_on_success() {
        let breaker = CircuitBreaker::new(BreakerSettings {
            failure_threshold: 3,
            cool_down: Duration::from_secs(10),
        });
        let t0 = Instant::now();
        for _ in 0..2 {
            assert_eq!(breaker.admit_at(t0), Admission::Allowed);
            breaker.record_at(false, t0);
        }
        assert_eq!(breaker.state_at(t0), BreakerState::Closed);
        breaker.record_at(false, t0);
        assert_eq!(breaker.state_at(t0), BreakerState::Open);
        assert_eq!(
            breaker.admit_at(t0 + Duration::from_secs(5)),
            Admission::Rejected
        );

        let later = t0 + Duration::from_secs(11);
        assert_eq!(breaker.state_at(later), BreakerState::HalfOpen);
        assert_eq!(breaker.admit_at(later), Admission::Probe);
        assert_eq!(
            breaker.admit_at(later),
            Admission::Rejected,
            "one probe at a time"
        );
        // The probe fails: open again for a full cool-down.
        breaker.record_at(false, later);
        assert_eq!(
            breaker.state_at(later + Duration::from_secs(5)),
            BreakerState::Open
        );
        let again = later + Duration::from_secs(10);
        assert_eq!(breaker.admit_at(again), Admission::Probe);
        breaker.record_at(true, again);
        assert_eq!(breaker.state_at(again), BreakerState::Closed);
        assert_eq!(breaker.admit_at(again), Admission::Allowed);
    }

    #[test]
    fn a_success_resets_the_count() {
        let breaker = CircuitBreaker::new(BreakerSettings {
            failure_threshold: 2,
            cool_down: Duration::from_secs(10),
        });
        breaker.record(false);
        breaker.record(true);
        breaker.record(false);
        assert_eq!(breaker.state(), BreakerState::Closed);
    }
}
