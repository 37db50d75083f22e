//! The ragvault HTTP service.
//!
//! Architecture invariant: this is the only crate that knows HTTP (axum). Handlers parse a request into
//! domain types, call a crate, and map the crate's error to a status and a stable code in `error.rs`.

mod answer;
pub mod config;
mod db_login;
mod embedding_meter;
mod error;
mod extract;
mod middleware;
pub mod openapi;
mod policy;
pub mod policy_files;
mod refresh;
mod retention;
mod retrieval;
mod routes;
mod state;
pub mod suspensions;
pub mod telemetry;
pub mod untrusted;
mod webhook;

pub use config::{ConfigError, Settings};
pub use routes::app;
pub use state::AppState;

use config::CredentialsBackend;
use ragvault_credentials::{
    CredentialEvent, CredentialEventSink, CredentialsError, KeySource, LeaseManager, ProviderKeyRef,
};
use ragvault_gateway::AccessControl;
use ragvault_store::{PoolSettings, Store, StoreError};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("key source: {0}")]
    Credentials(#[from] CredentialsError),
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("startup: {0}")]
    Gateway(#[from] ragvault_gateway::GatewayError),
    #[error("embedding model: {0} (run scripts/fetch-model.sh, or set embedding.model_dir)")]
    Model(#[from] ragvault_embedding::EmbeddingError),
    #[error("vector index: {0}")]
    Index(#[from] ragvault_search::SearchError),
    #[error("generation: {0}")]
    Generation(#[from] ragvault_generation::GenerationError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// How often the database watch probes Postgres: the longest a request waits on an outage that began
/// since the last probe is the pool's acquire timeout, and later ones fail at once.
const DATABASE_PROBE_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Opens the key source named by the configuration (for Vault: logs in and reads ragvault's own key).
pub async fn open_key_source(settings: &Settings) -> Result<KeySource, ServerError> {
    Ok(match settings.credentials.backend {
        CredentialsBackend::Local => {
            KeySource::local(&settings.master_key_file(), &settings.keyring_file())?
        }
        CredentialsBackend::Vault => KeySource::vault(settings.vault_config()).await?,
    })
}

/// Writes lease events to the audit log from a background task, so the lease path never waits on Postgres.
struct AuditEvents(tokio::sync::mpsc::UnboundedSender<CredentialEvent>);

impl CredentialEventSink for AuditEvents {
    fn record(&self, event: CredentialEvent) {
        let _ = self.0.send(event);
    }
}

fn audit_entry(event: CredentialEvent) -> ragvault_store::AuditEntry {
    use ragvault_store::AuditEntry;
    use serde_json::json;
    let (action, key_ref, details) = match event {
        CredentialEvent::Leased { key_ref, version } => {
            ("credential.leased", key_ref, json!({ "version": version }))
        }
        CredentialEvent::Refreshed { key_ref, version } => (
            "credential.refreshed",
            key_ref,
            json!({ "version": version }),
        ),
        CredentialEvent::Rotated { key_ref, from, to } => (
            "credential.rotated",
            key_ref,
            json!({ "from": from, "to": to }),
        ),
        CredentialEvent::Revoked { key_ref, reason } => {
            ("credential.revoked", key_ref, json!({ "reason": reason }))
        }
        CredentialEvent::RefreshFailed { key_ref, error } => (
            "credential.refresh_failed",
            key_ref,
            json!({ "error": error }),
        ),
    };
    let mut entry = AuditEntry::new("system:credentials", action)
        .target(format!("provider:{}", key_ref.provider))
        .details(details);
    if let Some(tenant) = key_ref.tenant {
        entry = entry.tenant(tenant);
    }
    entry
}

async fn write_audit_events(
    store: Store,
    mut events: tokio::sync::mpsc::UnboundedReceiver<CredentialEvent>,
) {
    while let Some(event) = events.recv().await {
        let entry = audit_entry(event);
        if let Err(e) = store.append_audit(&entry).await {
            tracing::warn!(error = %e, action = entry.action, "could not write credential audit event");
        }
    }
}

fn pool_settings(settings: &Settings, max_lifetime: Option<std::time::Duration>) -> PoolSettings {
    PoolSettings {
        max_connections: settings.database.max_connections,
        acquire_timeout: settings.acquire_timeout(),
        max_lifetime: max_lifetime.or(PoolSettings::default().max_lifetime),
    }
}

/// Builds the database pool (lazily connected) with the static login from the configuration.
pub fn open_store(settings: &Settings) -> Result<Store, ServerError> {
    Ok(Store::connect_lazy(
        &settings.database.url,
        &pool_settings(settings, None),
    )?)
}

/// Builds the database pool with the login the configuration asks for: the static one, or a login leased
/// from Vault's database engine (returned too, so its lease can be maintained).
pub async fn open_store_with(
    settings: &Settings,
    key_source: &KeySource,
) -> Result<(Store, Option<ragvault_credentials::DatabaseLease>), ServerError> {
    match (settings.database.credentials, key_source.vault_backend()) {
        (config::DatabaseCredentials::Vault, Some(vault)) => {
            let lease = vault
                .lease_database_credentials(
                    &settings.vault.database_mount,
                    &settings.vault.database_role,
                )
                .await?;
            let pool = pool_settings(settings, Some(db_login::connection_lifetime(lease.ttl)));
            let store = lease.with_password(|password| {
                Store::connect_lazy_as(&settings.database.url, &pool, &lease.username, password)
            })?;
            Ok((store, Some(lease)))
        }
        _ => Ok((open_store(settings)?, None)),
    }
}

/// A configured service bound to its socket, ready to run.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    state: AppState,
    background: BackgroundTasks,
}

/// Tasks that live as long as the service: aborted when this is dropped, however the service ends.
struct BackgroundTasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for BackgroundTasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

impl Application {
    /// Opens the key source, connects to Postgres, applies migrations and binds the listener.
    pub async fn build(settings: Settings) -> Result<Application, ServerError> {
        let key_source = Arc::new(open_key_source(&settings).await?);
        let (store, db_lease) = open_store_with(&settings, &key_source).await?;
        store.migrate().await?;
        let db_login = match (db_lease, key_source.vault_backend()) {
            (Some(lease), Some(vault)) => Some(Arc::new(db_login::DatabaseLogin::new(
                vault.clone(),
                store.clone(),
                &settings.vault.database_mount,
                &settings.vault.database_role,
                &lease,
            ))),
            _ => None,
        };
        let access = AccessControl::with_widget_settings(
            store.clone(),
            key_source.clone(),
            settings.widget.token_settings(),
            // Authentication from memory, kept honest by Postgres notifications of every key or tenant change.
            store.listen_for_access_changes(),
        );
        let sealed = access.seal_clear_slugs().await?;
        if sealed > 0 {
            tracing::info!(tenants = sealed, "sealed tenant slugs stored in the clear");
        }
        let dek_cache = Arc::new(ragvault_credentials::DataKeyCache::new(
            key_source.clone(),
            std::time::Duration::from_secs(settings.credentials.dek_cache_ttl_secs),
        ));
        let content = ragvault_ingest::sealed::SealedContent::new(store.clone(), dek_cache.clone());
        let tokenizer = Arc::new(ragvault_embedding::ModelTokenizer::from_file(
            &settings.embedding.model_dir.join("tokenizer.json"),
        )?);
        let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
        let leases = Arc::new(LeaseManager::new(
            key_source.clone(),
            settings.lease_settings(),
            Some(Arc::new(AuditEvents(events_tx))),
        ));
        let generator = Arc::new(answer::Generator::new(&settings, &leases, store.clone())?);
        let budgets = Arc::new(ragvault_gateway::BudgetGuard::new(
            store.clone(),
            settings.budget.slice_micro_usd,
        ));
        // Usage and audit events are journaled under the data directory before a response, and committed
        // to Postgres behind it; a journal left by a crash is replayed here.
        let metering = ragvault_gateway::Metering::start(
            store.clone(),
            budgets.clone(),
            &settings.data_dir.join("metering-journal"),
        )?;
        let embedder = open_embedder(&settings, &leases)?;
        let billing = embedder
            .billing()
            .map(|(provider, model)| (provider.to_owned(), model.to_owned()));
        let index = open_index(&settings)?;
        let mut indexer = ragvault_ingest::indexing::Indexer::new(
            content.clone(),
            store.clone(),
            index.clone(),
            embedder,
        );
        if let Some(billing) = billing {
            indexer = indexer.with_meter(Arc::new(embedding_meter::BudgetedEmbeddingMeter {
                generator: generator.clone(),
                budgets: budgets.clone(),
                metering: metering.clone(),
                billing,
            }));
        }
        let transcriber = match &settings.ingest.transcription_provider {
            Some(provider) => Some(Arc::new(
                ragvault_ingest::transcribe::Transcriber::new(
                    ragvault_ingest::transcribe::TranscriberConfig {
                        provider: provider.clone(),
                        base_url: settings
                            .providers
                            .get(provider)
                            .map(|p| p.base_url.clone())
                            .unwrap_or_default(),
                        model: settings.ingest.transcription_model.clone(),
                        timeout: std::time::Duration::from_secs(300),
                    },
                    leases.clone(),
                )
                .map_err(|e| ServerError::Serve(std::io::Error::other(e.to_string())))?,
            )),
            None => None,
        };
        let (pipeline, ingest_workers) =
            ragvault_ingest::pipeline::Pipeline::start_with_transcriber(
                store.clone(),
                content.clone(),
                indexer.clone(),
                tokenizer,
                ragvault_ingest::pipeline::PipelineSettings {
                    workers: settings.ingest.workers,
                    queue_capacity: settings.ingest.queue_capacity,
                    total_queue_capacity: settings.ingest.total_queue_capacity,
                    chunking: ragvault_ingest::chunk::ChunkingConfig {
                        target_tokens: settings.ingest.chunk_target_tokens,
                        max_tokens: settings.ingest.chunk_max_tokens,
                        overlap_tokens: settings.ingest.chunk_overlap_tokens,
                    },
                    secret_policy: ragvault_ingest::secrets::SecretPolicy::Reject,
                    parse_timeout: std::time::Duration::from_secs(
                        settings.ingest.parse_timeout_secs,
                    ),
                },
                transcriber,
            );
        let mut background = vec![
            tokio::spawn(write_audit_events(store.clone(), events_rx)),
            tokio::spawn(leases.clone().run_refresher()),
        ];
        if let Some(vault) = key_source.vault_backend() {
            background.push(tokio::spawn(vault.clone().maintain_token()));
        }
        if let Some(login) = &db_login {
            background.push(tokio::spawn(login.clone().maintain()));
        }
        background.push(tokio::spawn(evict_expired_data_keys(dek_cache.clone())));
        background.extend(ingest_workers);
        let resume = pipeline.clone();
        background.push(tokio::spawn(async move {
            match resume.resume_unfinished().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(jobs = n, "resumed unfinished ingest jobs"),
                Err(e) => tracing::warn!(error = %e, "could not resume unfinished ingest jobs"),
            }
        }));
        // Bring every tenant's index partition in line with Postgres (after a crash, a restore or a
        // model switch), then keep dumping changed graphs.
        background.push(tokio::spawn(reconcile_index(
            store.clone(),
            indexer.clone(),
        )));
        background.push(tokio::spawn(dump_index_periodically(
            index.clone(),
            std::time::Duration::from_secs(settings.index.dump_interval_secs),
        )));
        // Resume any re-encryption a previous process did not finish.
        background.push(tokio::spawn(resume_reencryption(
            store.clone(),
            content.clone(),
        )));
        // Lease the configured providers' operator keys up front, so the first request finds them cached.
        let configured: Vec<String> = settings.providers.keys().cloned().collect();
        let warm = leases.clone();
        background.push(tokio::spawn(async move {
            for provider in configured {
                if let Err(e) = warm.lease(&ProviderKeyRef::operator(&provider)).await {
                    tracing::warn!(%provider, error = %e, "no key for configured provider yet");
                }
            }
        }));
        let listener =
            TcpListener::bind(settings.listen)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: settings.listen,
                    source,
                })?;
        let retriever = retrieval::Retriever {
            store: store.clone(),
            content: content.clone(),
            indexer: indexer.clone(),
            settings: settings.search.clone(),
            ef_search: settings.index.ef_search,
            metrics: Arc::new(ragvault_metrics::HistogramVec::new(
                &["mode"],
                &ragvault_metrics::LATENCY_BUCKETS,
            )),
        };
        background.push(tokio::spawn(budgets.clone().run_returns(
            std::time::Duration::from_secs(settings.budget.return_interval_secs.max(1)),
        )));
        background.push(tokio::spawn(
            access
                .auth_failures()
                .clone()
                .run(store.clone(), std::time::Duration::from_secs(10)),
        ));
        let webhook_stats = Arc::new(webhook::WebhookStats::default());
        if let Some(url) = settings.budget.soft_threshold_webhook_url.clone() {
            background.push(tokio::spawn(webhook::deliver_crossings(
                url,
                leases.clone(),
                budgets.listen_for_crossings(),
                webhook_stats.clone(),
            )));
        }
        let state = AppState::new(state::AppParts {
            http_metrics: Arc::new(ragvault_metrics::HistogramVec::new(
                &["route", "method", "status"],
                &ragvault_metrics::LATENCY_BUCKETS,
            )),
            search_metrics: retriever.metrics.clone(),
            webhook_stats,
            suspensions: Arc::new(suspensions::Suspensions::new(store.clone())),
            limiter: Arc::new(ragvault_gateway::RateLimiter::new()),
            anomalies: Arc::new(ragvault_gateway::AnomalyDetector::new()),
            budgets,
            metering,
            indexer,
            retriever,
            generator,
            settings: Arc::new(settings),
            database: store.watch_availability(DATABASE_PROBE_EVERY),
            store,
            key_source,
            access,
            leases,
            content,
            pipeline,
            db_login,
        });
        // Policy files: a bad one stops the start (as bad configuration does), naming file, key and reason.
        if state.settings.policies.dir.is_some() {
            let ctx = ragvault_gateway::RequestContext::new("system:policy_files", None);
            let report = policy_files::reload(&state, &ctx).await.map_err(|e| {
                ServerError::Config(ConfigError::Invalid(vec![format!("policies.dir: {e}")]))
            })?;
            if !report.unknown_tenants.is_empty() {
                tracing::warn!(slugs = ?report.unknown_tenants, "policy files for tenants that do not exist");
            }
            #[cfg(unix)]
            background.push(tokio::spawn(policy_files::reload_on_sighup(state.clone())));
        }
        background.push(tokio::spawn(retention::sweep_periodically(
            state.clone(),
            std::time::Duration::from_secs(state.settings.retention.sweep_interval_secs.max(1)),
        )));
        Ok(Application {
            listener,
            router: app(state.clone()),
            state,
            background: BackgroundTasks(background),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| self.state.settings.listen)
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, then stops accepting connections and lets in-flight requests
    /// finish, for at most `http.shutdown_grace_secs`.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let grace = self.state.settings.shutdown_grace();
        let _background = &self.background;
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
        let signal = async move {
            shutdown.await;
            tracing::info!(
                grace_secs = grace.as_secs(),
                "shutting down: finishing in-flight requests"
            );
            let _ = started_tx.send(());
        };
        // Without TCP_NODELAY a response written in two pieces waits for the client's delayed ACK of the
        // first; every hop of an answer would pay for it.
        let listener = axum::serve::ListenerExt::tap_io(self.listener, |stream| {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "could not set TCP_NODELAY on a connection");
            }
        });
        let server = axum::serve(listener, self.router).with_graceful_shutdown(signal);
        let server = tokio::spawn(async move { server.await });
        tokio::pin!(server);
        tokio::select! {
            result = &mut server => return finish(result),
            _ = started_rx => {}
        }
        let result = match tokio::time::timeout(grace, &mut server).await {
            Ok(result) => finish(result),
            Err(_) => {
                tracing::warn!("grace period over: dropping the remaining connections");
                server.abort();
                Ok(())
            }
        };
        drop(self.background);
        // Journaled usage and audit events go to Postgres before the pool closes (what cannot, stays in the
        // journal and is committed at the next start).
        if !self.state.metering.flush(grace).await {
            tracing::warn!(
                "metering journal not fully committed at shutdown; the next start commits the rest"
            );
        }
        // Budget leased but not spent goes back, so other replicas (or the next start) can use it.
        if let Err(e) = self.state.budgets.return_unused().await {
            tracing::warn!(error = %e, "could not return unused budget slices at shutdown");
        }
        // Write out changed graphs so the next start needs no WAL replay.
        if let Err(e) = self.state.indexer.index().flush().await {
            tracing::error!(error = %e, "could not write the index at shutdown; the WAL has every change");
        }
        self.state.store.close().await;
        tracing::info!("stopped");
        result
    }
}

fn finish(joined: Result<std::io::Result<()>, tokio::task::JoinError>) -> Result<(), ServerError> {
    match joined {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(ServerError::Serve(e)),
        Err(e) => Err(ServerError::Serve(std::io::Error::other(e.to_string()))),
    }
}

/// The embedder the configuration names: the local model, or an OpenAI-compatible provider.
fn open_embedder(
    settings: &Settings,
    leases: &Arc<LeaseManager>,
) -> Result<Arc<dyn ragvault_embedding::Embedder>, ServerError> {
    let embedding = &settings.embedding;
    if embedding.provider == "local" {
        let local = ragvault_embedding::LocalEmbedder::shared_with(
            &embedding.model_dir,
            embedding.runtime,
        )?;
        tracing::info!(engine = local.engine_name(), "local embedding model loaded");
        return Ok(Arc::new(local));
    }
    // `problems()` has checked that the provider, model and dimension are there.
    let (base_url, api) = settings
        .providers
        .get(&embedding.provider)
        .map(|p| (p.base_url.clone(), p.embedding_api().unwrap_or_default()))
        .unwrap_or_default();
    let config = ragvault_embedding::RemoteEmbedderConfig {
        provider: embedding.provider.clone(),
        api,
        base_url,
        model: embedding.model.clone().unwrap_or_default(),
        dimension: embedding.dimension.unwrap_or_default(),
        max_batch: embedding.max_batch,
        attempts: 4,
        timeout: std::time::Duration::from_secs(embedding.request_timeout_secs),
    };
    Ok(Arc::new(ragvault_embedding::RemoteEmbedder::new(
        config,
        leases.clone(),
    )?))
}

/// Opens the vector index the configuration names.
fn open_index(settings: &Settings) -> Result<Arc<dyn ragvault_search::VectorIndex>, ServerError> {
    match settings.index.backend {
        config::IndexBackend::Embedded => {
            let mut embedded = ragvault_search::EmbeddedSettings::new(settings.index_dir());
            embedded.max_connections = settings.index.max_connections;
            embedded.ef_construction = settings.index.ef_construction;
            embedded.extend_candidates = settings.index.extend_candidates;
            embedded.rebuild_tombstone_ratio = settings.index.rebuild_tombstone_ratio;
            std::fs::create_dir_all(&embedded.dir).map_err(ragvault_search::SearchError::Io)?;
            Ok(Arc::new(ragvault_search::EmbeddedIndex::new(embedded)))
        }
        config::IndexBackend::Qdrant => Ok(Arc::new(ragvault_search::QdrantIndex::connect(
            ragvault_search::QdrantSettings {
                url: settings.index.qdrant_url.clone().unwrap_or_default(),
                collection_prefix: settings.index.qdrant_collection_prefix.clone(),
                max_connections: settings.index.max_connections as u64,
                ef_construction: settings.index.ef_construction as u64,
            },
        )?)),
    }
}

/// Reconciles every tenant's partition with Postgres and removes partitions no tenant owns (a tenant
/// deleted while its partition could not be dropped).
async fn reconcile_index(store: Store, indexer: ragvault_ingest::indexing::Indexer) {
    // Partitions are listed before tenants: a partition on this list whose tenant exists was created after
    // its tenant, so the tenant is on the later list too, and only true orphans are removed.
    let on_disk = indexer.index().partitions().await;
    let tenants = match store.list_tenants().await {
        Ok(tenants) => tenants,
        Err(e) => {
            tracing::warn!(error = %e, "could not list tenants to reconcile the index");
            return;
        }
    };
    let mut owned = std::collections::HashSet::new();
    for tenant in &tenants {
        match indexer.partition(tenant.id).await {
            Ok(partition) => {
                owned.insert(partition.name);
            }
            Err(e) => {
                // Without every tenant's partition name, no partition can safely be called orphaned.
                tracing::warn!(tenant = %tenant.id, error = %e, "could not derive the index partition; skipping orphan removal");
                owned.clear();
                break;
            }
        }
    }
    for tenant in tenants {
        let reconciled = indexer.reconcile(tenant.id).await;
        if reconciled.is_ok() {
            // Jobs stored before a crash but never marked done: their points are in the index now.
            if let Err(e) = store.finish_indexing_jobs(tenant.id).await {
                tracing::warn!(tenant = %tenant.id, error = %e, "could not finish stored jobs; retried at next start");
            }
        }
        match reconciled {
            Ok(report) if report.inserted + report.removed > 0 => tracing::info!(
                tenant = %tenant.id,
                inserted = report.inserted,
                removed = report.removed,
                reembedded = report.reembedded,
                "index reconciled with Postgres"
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(tenant = %tenant.id, error = %e, "index reconciliation failed; retried at next start")
            }
        }
    }
    if owned.is_empty() {
        return;
    }
    match on_disk {
        Ok(partitions) => {
            for name in partitions.into_iter().filter(|p| !owned.contains(p)) {
                match indexer.index().drop_partition(&name).await {
                    Ok(()) => {
                        tracing::info!(partition = %name, "removed an index partition no tenant owns")
                    }
                    Err(e) => {
                        tracing::warn!(partition = %name, error = %e, "could not remove an orphaned index partition")
                    }
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not list index partitions"),
    }
}

async fn dump_index_periodically(
    index: Arc<dyn ragvault_search::VectorIndex>,
    every: std::time::Duration,
) {
    loop {
        tokio::time::sleep(every).await;
        if let Err(e) = index.flush().await {
            tracing::error!(error = %e, "index dump failed; changes stay in the write-ahead record");
        }
    }
}

async fn evict_expired_data_keys(cache: Arc<ragvault_credentials::DataKeyCache>) {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        cache.evict_expired();
    }
}

async fn resume_reencryption(store: Store, content: ragvault_ingest::sealed::SealedContent) {
    let tenants = match store.list_tenants().await {
        Ok(tenants) => tenants,
        Err(e) => {
            tracing::warn!(error = %e, "could not look for unfinished re-encryption");
            return;
        }
    };
    for tenant in tenants {
        run_reencryption(&content, tenant.id).await;
    }
}

/// Re-encrypts a tenant's old chunks under its current content key, logging the outcome.
pub(crate) async fn run_reencryption(
    content: &ragvault_ingest::sealed::SealedContent,
    tenant: ragvault_core::TenantId,
) {
    match content.reencrypt(tenant, 500, None).await {
        Ok(progress) if progress.total > 0 => {
            tracing::info!(%tenant, done = progress.done, total = progress.total, "re-encryption finished")
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(%tenant, error = %e, "re-encryption stopped; it resumes at the next start")
        }
    }
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
