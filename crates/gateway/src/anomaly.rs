//! Spike detection: per tenant and per principal, a rolling baseline of requests and spend per minute (an
//! exponentially weighted moving average of past minutes); a minute that passes a multiple of its baseline,
//! and a floor, is an anomaly. Per replica, in memory: a baseline is cheap to relearn after a restart.

use ragvault_core::{Principal, TenantId};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// A tenant's anomaly policy (`policy.anomaly`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnomalyPolicy {
    /// A minute counts as a spike past `multiple` times its baseline...
    pub multiple: f64,
    /// ...and past this many requests (so a quiet key's first burst is not a spike).
    pub requests_floor_per_minute: u64,
    /// ...or, for spend, past this many micro-USD in the minute.
    pub spend_floor_micro_usd_per_minute: u64,
    /// `"audit"` (record it) or `"suspend"` (also suspend the API key or widget subject until an operator
    /// lifts it).
    pub action: AnomalyAction,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyAction {
    Audit,
    Suspend,
}

impl Default for AnomalyPolicy {
    fn default() -> Self {
        AnomalyPolicy {
            multiple: 10.0,
            requests_floor_per_minute: 600,
            spend_floor_micro_usd_per_minute: 1_000_000,
            action: AnomalyAction::Audit,
        }
    }
}

/// Weight of the newest minute in the baseline.
const ALPHA: f64 = 0.2;

/// What spiked.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Anomaly {
    pub tenant_id: TenantId,
    /// `tenant`, or the principal (`api_key:<id>`, `subject:<subject>`, `widget:<token id>`).
    pub scope: String,
    /// `requests` or `spend_micro_usd`.
    pub measure: &'static str,
    pub observed: u64,
    pub baseline: f64,
}

#[derive(Default)]
struct Series {
    minute: u64,
    current: u64,
    baseline: f64,
    flagged_minute: Option<u64>,
}

impl Series {
    /// Adds `amount` to the current minute; `Some(observed, baseline)` the first time in a minute it spikes.
    fn add(&mut self, minute: u64, amount: u64, multiple: f64, floor: u64) -> Option<(u64, f64)> {
        if minute != self.minute {
            // Fold the finished minute in, then every idle minute since as zero.
            let idle = minute
                .saturating_sub(self.minute)
                .saturating_sub(1)
                .min(120);
            self.baseline = ALPHA * self.current as f64 + (1.0 - ALPHA) * self.baseline;
            for _ in 0..idle {
                self.baseline *= 1.0 - ALPHA;
            }
            self.minute = minute;
            self.current = 0;
        }
        self.current = self.current.saturating_add(amount);
        let limit = (self.baseline * multiple).max(floor as f64);
        if self.current as f64 > limit && self.flagged_minute != Some(minute) {
            self.flagged_minute = Some(minute);
            return Some((self.current, self.baseline));
        }
        None
    }
}

pub struct AnomalyDetector {
    started: Instant,
    series: Mutex<HashMap<(String, &'static str), Series>>,
    detected: std::sync::atomic::AtomicU64,
}

impl Default for AnomalyDetector {
    fn default() -> Self {
        AnomalyDetector::new()
    }
}

/// The per-principal scope name: the API key, the widget subject (all its tokens), or the token.
pub fn principal_scope(principal: &Principal) -> Option<String> {
    match principal {
        Principal::Tenant { key_id, .. } => Some(format!("api_key:{key_id}")),
        Principal::Widget {
            subject: Some(subject),
            ..
        } => Some(format!("subject:{subject}")),
        Principal::Widget { token_id, .. } => Some(format!("widget:{token_id}")),
        Principal::Operator { .. } => None,
    }
}

impl AnomalyDetector {
    pub fn new() -> AnomalyDetector {
        AnomalyDetector {
            started: Instant::now(),
            series: Mutex::new(HashMap::new()),
            detected: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Anomalies detected since start (for `/metrics`).
    pub fn detected(&self) -> u64 {
        self.detected.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn minute(&self) -> u64 {
        self.started.elapsed().as_secs() / 60
    }

    fn observe(
        &self,
        principal: &Principal,
        policy: &AnomalyPolicy,
        measure: &'static str,
        amount: u64,
        floor: u64,
    ) -> Vec<Anomaly> {
        let Some(tenant) = principal.tenant_id() else {
            return Vec::new();
        };
        let minute = self.minute();
        let mut scopes = vec![format!("tenant:{tenant}")];
        scopes.extend(principal_scope(principal).map(|p| format!("{tenant}:{p}")));
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let mut found = Vec::new();
        for key in scopes {
            let spiked = series.entry((key.clone(), measure)).or_default().add(
                minute,
                amount,
                policy.multiple,
                floor,
            );
            if let Some((observed, baseline)) = spiked {
                let scope = match key.split_once(':') {
                    Some(("tenant", _)) => "tenant".to_owned(),
                    Some((_, principal)) => principal.to_owned(),
                    None => key.clone(),
                };
                found.push(Anomaly {
                    tenant_id: tenant,
                    scope,
                    measure,
                    observed,
                    baseline,
                });
            }
        }
        self.detected
            .fetch_add(found.len() as u64, std::sync::atomic::Ordering::Relaxed);
        found
    }

    /// Counts one request; returns the spikes it completes.
    pub fn observe_request(&self, principal: &Principal, policy: &AnomalyPolicy) -> Vec<Anomaly> {
        self.observe(
            principal,
            policy,
            "requests",
            1,
            policy.requests_floor_per_minute,
        )
    }

    /// Counts spend; returns the spikes it completes.
    pub fn observe_spend(
        &self,
        principal: &Principal,
        policy: &AnomalyPolicy,
        micro_usd: u64,
    ) -> Vec<Anomaly> {
        self.observe(
            principal,
            policy,
            "spend_micro_usd",
            micro_usd,
            policy.spend_floor_micro_usd_per_minute,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_over_baseline_and_floor_is_flagged_once_a_minute() {
        let mut series = Series::default();
        // A steady 10 a minute for a while: the baseline learns it, nothing spikes.
        for minute in 0..30 {
            for _ in 0..10 {
                assert!(series.add(minute, 1, 5.0, 20).is_none(), "minute {minute}");
            }
        }
        assert!((series.baseline - 10.0).abs() < 1.0, "{}", series.baseline);
        // Then 60 in one minute: flagged once, when it passes 5 x baseline.
        let flagged: Vec<_> = (0..60).filter_map(|_| series.add(30, 1, 5.0, 20)).collect();
        assert_eq!(flagged.len(), 1);
        assert!(flagged[0].0 > 45 && flagged[0].0 <= 52, "{flagged:?}");
    }

    #[test]
    fn the_floor_keeps_a_quiet_key_from_spiking() {
        let mut series = Series::default();
        assert!((0..20).all(|_| series.add(0, 1, 5.0, 20).is_none()));
        assert!(series.add(0, 1, 5.0, 20).is_some());
    }
}
