use crate::config::Settings;
use ragvault_credentials::{KeySource, LeaseManager};
use ragvault_gateway::AccessControl;
use ragvault_store::Store;
use std::sync::Arc;

/// Shared by every handler. One `Arc` around the parts: axum clones the state for every extractor and
/// middleware of every request, and cloning the parts one by one (two dozen reference counts, several
/// nested) showed up at a few percent of a brokered call's CPU.
#[derive(Clone)]
pub struct AppState(Arc<AppParts>);

impl AppState {
    pub fn new(parts: AppParts) -> AppState {
        AppState(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppParts;

    fn deref(&self) -> &AppParts {
        &self.0
    }
}

/// What [`AppState`] holds.
pub struct AppParts {
    pub settings: Arc<Settings>,
    pub store: Store,
    /// Whether Postgres answers (requests that need it fail at once while it does not).
    pub database: Arc<ragvault_store::DatabaseWatch>,
    pub key_source: Arc<KeySource>,
    pub access: AccessControl,
    pub leases: Arc<LeaseManager>,
    /// Sealed document storage (the only path for document text).
    pub content: ragvault_ingest::sealed::SealedContent,
    pub pipeline: Arc<ragvault_ingest::pipeline::Pipeline>,
    /// Embeds, indexes and reconciles (the vector index behind it).
    pub indexer: ragvault_ingest::indexing::Indexer,
    pub retriever: crate::retrieval::Retriever,
    /// Providers, breakers and per-tenant failover chains for answers.
    pub generator: Arc<crate::answer::Generator>,
    /// This replica's slices of tenant budgets (reserved before every provider call).
    pub budgets: Arc<ragvault_gateway::BudgetGuard>,
    /// Spike detection (EWMA baselines per tenant and principal).
    pub anomalies: Arc<ragvault_gateway::AnomalyDetector>,
    /// Per-replica request and token rate limits (GCRA).
    pub limiter: Arc<ragvault_gateway::RateLimiter>,
    /// Usage rows and per-request audit events, group-committed.
    pub metering: ragvault_gateway::Metering,
    /// Request count and latency per route template, method and status.
    pub http_metrics: Arc<ragvault_metrics::HistogramVec>,
    /// Query latency per search mode.
    pub search_metrics: Arc<ragvault_metrics::HistogramVec>,
    /// Soft budget threshold webhook deliveries.
    pub webhook_stats: Arc<crate::webhook::WebhookStats>,
    /// Suspended keys and widget subjects, cached per tenant.
    pub suspensions: Arc<crate::suspensions::Suspensions>,
    /// Present when the database login is leased from Vault.
    pub db_login: Option<Arc<crate::db_login::DatabaseLogin>>,
}

impl AppState {
    /// Waits briefly until the usage and audit events this replica journaled so far are in Postgres, so a
    /// spend report or the audit log read right after an answer includes it. Past the wait (Postgres slow
    /// or away) the read goes ahead with what is committed.
    pub async fn settle_metering(&self) {
        if !self.metering.flush(std::time::Duration::from_secs(2)).await {
            tracing::warn!(
                "reading usage or audit before this replica's journaled events are committed"
            );
        }
    }

    /// Circuit-breaker state per provider (`closed`, `open`, `half_open`).
    pub fn generator_breakers(&self) -> std::collections::HashMap<String, String> {
        self.generator
            .breaker_states()
            .into_iter()
            .map(|(name, state)| {
                let state = serde_json::to_value(state)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                (name, state)
            })
            .collect()
    }
}
