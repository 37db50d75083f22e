//! Usage and per-request audit events, written in batches by one task (group commit).
//!
//! A request hands its events to the writer and waits until the transaction holding them commits, so no
//! response ends before its usage row and audit event are durable, yet concurrent requests share one
//! transaction instead of each paying for its own.

use crate::budget::BudgetGuard;
use crate::GatewayError;
use ragvault_store::{AuditEntry, NewUsageEvent, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Events gathered into one transaction at most.
const MAX_BATCH: usize = 512;
/// Waiting requests beyond this are refused rather than queued without bound.
const QUEUE: usize = 8192;
/// A failing batch is retried this many times (Postgres restarting) before its requests get the error.
const ATTEMPTS: u32 = 3;

struct Pending {
    usage: Vec<NewUsageEvent>,
    audits: Vec<AuditEntry>,
    done: oneshot::Sender<Result<(), String>>,
}

/// The handle requests use; cheap to clone.
#[derive(Clone)]
pub struct Metering {
    queue: mpsc::Sender<Pending>,
    metrics: Arc<UsageMetrics>,
}

/// Committed usage as Prometheus series: calls, tokens and micro-USD per tenant, provider, model, kind
/// and outcome, and provider latency per provider and kind. Counted after the commit, so the metrics
/// never show spend the usage table does not hold.
#[derive(Debug)]
pub struct UsageMetrics {
    /// `[calls, input tokens, output tokens, micro-USD]`.
    totals: ragvault_metrics::CounterVec<4>,
    latency: ragvault_metrics::HistogramVec,
}

impl Default for UsageMetrics {
    fn default() -> Self {
        UsageMetrics {
            totals: ragvault_metrics::CounterVec::new(&[
                "tenant", "provider", "model", "kind", "outcome",
            ]),
            latency: ragvault_metrics::HistogramVec::new(
                &["provider", "kind"],
                &ragvault_metrics::LATENCY_BUCKETS,
            ),
        }
    }
}

impl UsageMetrics {
    fn count(&self, event: &NewUsageEvent) {
        let tenant = event.tenant_id.to_string();
        self.totals.add(
            &[
                &tenant,
                &event.provider,
                &event.model,
                event.kind,
                event.outcome,
            ],
            [
                1,
                event.input_tokens,
                event.output_tokens,
                event.cost_micro_usd,
            ],
        );
        self.latency.observe(
            &[&event.provider, event.kind],
            Duration::from_millis(event.latency_ms),
        );
    }

    pub fn render(&self, out: &mut String) {
        let help = [
            (
                "ragvault_provider_calls_total",
                "Provider calls (generation and embedding), committed to the usage table.",
            ),
            (
                "ragvault_provider_input_tokens_total",
                "Input tokens of provider calls, as the provider reported them.",
            ),
            (
                "ragvault_provider_output_tokens_total",
                "Output tokens of provider calls.",
            ),
            (
                "ragvault_provider_cost_micro_usd_total",
                "Cost of provider calls in micro-USD, from the price table.",
            ),
        ];
        for (index, (name, text)) in help.iter().enumerate() {
            self.totals.render(out, index, name, text);
        }
        self.latency.render(
            out,
            "ragvault_provider_call_duration_seconds",
            "Provider call latency (whole answer, or one embedding request).",
        );
    }
}

impl Metering {
    /// Starts the writer. `budgets` hears each tenant's month spend after every batch (soft thresholds).
    pub fn start(store: Store, budgets: Arc<BudgetGuard>) -> Metering {
        let (queue, receiver) = mpsc::channel(QUEUE);
        let metrics = Arc::new(UsageMetrics::default());
        tokio::spawn(write_batches(store, budgets, metrics.clone(), receiver));
        Metering { queue, metrics }
    }

    pub fn metrics(&self) -> &UsageMetrics {
        &self.metrics
    }

    /// Records usage and audit events; returns once they are committed.
    pub async fn record(
        &self,
        usage: Vec<NewUsageEvent>,
        audits: Vec<AuditEntry>,
    ) -> Result<(), GatewayError> {
        if usage.is_empty() && audits.is_empty() {
            return Ok(());
        }
        let (done, committed) = oneshot::channel();
        self.queue
            .send(Pending {
                usage,
                audits,
                done,
            })
            .await
            .map_err(|_| {
                GatewayError::MeteringUnavailable("the usage writer has stopped".into())
            })?;
        match committed.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(GatewayError::MeteringUnavailable(reason)),
            Err(_) => Err(GatewayError::MeteringUnavailable(
                "the usage writer stopped before committing".into(),
            )),
        }
    }
}

async fn write_batches(
    store: Store,
    budgets: Arc<BudgetGuard>,
    metrics: Arc<UsageMetrics>,
    mut receiver: mpsc::Receiver<Pending>,
) {
    while let Some(first) = receiver.recv().await {
        // Whatever queued up while the previous batch was committing goes into this one.
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let usage: Vec<NewUsageEvent> = batch.iter().flat_map(|p| p.usage.clone()).collect();
        let audits: Vec<AuditEntry> = batch.iter().flat_map(|p| p.audits.clone()).collect();
        let mut outcome = Err(String::new());
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            match store.record_usage_batch(&usage, &audits).await {
                Ok(spent) => {
                    outcome = Ok(spent);
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, events = usage.len(), "could not write usage batch");
                    outcome = Err(e.to_string());
                }
            }
        }
        let result = outcome.as_ref().map(|_| ()).map_err(Clone::clone);
        for pending in batch {
            let _ = pending.done.send(result.clone());
        }
        if let Ok(spent) = outcome {
            usage.iter().for_each(|event| metrics.count(event));
            for (tenant, month, spent) in spent {
                if let Err(e) = budgets.observe_spend(tenant, month, spent).await {
                    tracing::warn!(error = %e, "could not check the soft budget threshold");
                }
            }
        }
    }
}
