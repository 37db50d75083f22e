//! `/metrics` in the Prometheus text format: requests (per route template, method, status), provider calls
//! (calls, tokens and micro-USD per tenant, provider, model, kind, outcome; latency), search latency and index
//! size, ingest queue and jobs, credentials and leases, governance. Labels never carry text, keys or raw paths;
//! tenants appear as their UUIDs.

use crate::state::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use std::fmt::Write;

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    summary = "Prometheus metrics (text exposition format)",
    responses(
        (status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain"),
        (status = "default", description = "Error envelope with a stable `code`", body = crate::openapi::ErrorEnvelope),
    ),
)]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut out = String::new();
    state.http_metrics.render(
        &mut out,
        "ragvault_http_request_duration_seconds",
        "HTTP requests by route template, method and status; latency to the response head (streams end later).",
    );
    state.metering.metrics().render(&mut out);
    render_search(&state, &mut out);
    render_ingest(&state, &mut out);
    render_credentials(&state, &mut out);
    render_governance(&state, &mut out);
    family(
        &mut out,
        "ragvault_log_lines_dropped_total",
        "counter",
        "Log lines dropped because too many were waiting for the log thread (stderr read too slowly).",
    );
    let _ = writeln!(
        out,
        "ragvault_log_lines_dropped_total {}",
        crate::telemetry::log_lines_dropped()
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
}

use ragvault_metrics::family;

fn render_search(state: &AppState, out: &mut String) {
    state.search_metrics.render(
        out,
        "ragvault_search_duration_seconds",
        "Retrieval time without the query embedding (index and keyword search, opening chunks), per mode.",
    );
    let Some((partitions, points)) = state.indexer.index().loaded_size() else {
        return;
    };
    family(
        out,
        "ragvault_index_partitions_loaded",
        "gauge",
        "Tenant partitions of the embedded index held in memory by this replica.",
    );
    let _ = writeln!(out, "ragvault_index_partitions_loaded {partitions}");
    family(
        out,
        "ragvault_index_points",
        "gauge",
        "Live points (chunk vectors) in the embedded index partitions this replica holds in memory.",
    );
    let _ = writeln!(out, "ragvault_index_points {points}");
}

fn render_ingest(state: &AppState, out: &mut String) {
    use std::sync::atomic::Ordering::Relaxed;
    let stats = state.pipeline.stats();
    family(
        out,
        "ragvault_ingest_queue_depth",
        "gauge",
        "Ingest jobs queued in this replica, not yet taken by a worker.",
    );
    let _ = writeln!(
        out,
        "ragvault_ingest_queue_depth {}",
        state.pipeline.queue_depth()
    );
    family(
        out,
        "ragvault_ingest_jobs_total",
        "counter",
        "Ingest jobs finished by this replica, by outcome.",
    );
    let _ = writeln!(
        out,
        "ragvault_ingest_jobs_total{{outcome=\"done\"}} {}",
        stats.jobs_done.load(Relaxed)
    );
    let _ = writeln!(
        out,
        "ragvault_ingest_jobs_total{{outcome=\"failed\"}} {}",
        stats.jobs_failed.load(Relaxed)
    );
    family(
        out,
        "ragvault_ingest_chunks_total",
        "counter",
        "Chunks stored by this replica's ingest workers.",
    );
    let _ = writeln!(
        out,
        "ragvault_ingest_chunks_total {}",
        stats.chunks.load(Relaxed)
    );
    family(
        out,
        "ragvault_ingest_stage_seconds_total",
        "counter",
        "Time ingest workers spent per stage.",
    );
    for (stage, nanos) in [
        ("parse", &stats.parse_nanos),
        ("embed", &stats.embed_nanos),
        ("store", &stats.store_nanos),
        ("index", &stats.index_nanos),
    ] {
        let _ = writeln!(
            out,
            "ragvault_ingest_stage_seconds_total{{stage=\"{stage}\"}} {}",
            nanos.load(Relaxed) as f64 / 1e9
        );
    }
}

fn render_governance(state: &AppState, out: &mut String) {
    family(
        out,
        "ragvault_anomalies_detected_total",
        "counter",
        "Request or spend spikes past a tenant's or principal's baseline (this replica).",
    );
    let _ = writeln!(
        out,
        "ragvault_anomalies_detected_total {}",
        state.anomalies.detected()
    );
    family(
        out,
        "ragvault_budget_soft_threshold_crossings_total",
        "counter",
        "Tenants whose month spend passed their soft budget threshold (reported by this replica).",
    );
    let _ = writeln!(
        out,
        "ragvault_budget_soft_threshold_crossings_total {}",
        state.budgets.soft_crossings()
    );
    family(
        out,
        "ragvault_budget_webhook_deliveries_total",
        "counter",
        "Soft threshold webhook deliveries, by outcome (failed = every attempt failed).",
    );
    for (outcome, count) in [
        ("delivered", &state.webhook_stats.delivered),
        ("failed", &state.webhook_stats.failed),
    ] {
        let _ = writeln!(
            out,
            "ragvault_budget_webhook_deliveries_total{{outcome=\"{outcome}\"}} {}",
            count.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
}

fn render_credentials(state: &AppState, out: &mut String) {
    // Label values are provider names (validated: [a-z0-9_-]) and tenant UUIDs: nothing to escape.
    let leases = state.leases.status();
    let labels = |provider: &str, tenant: Option<ragvault_core::TenantId>| {
        format!(
            "provider=\"{provider}\",tenant=\"{}\"",
            tenant.map(|t| t.to_string()).unwrap_or_default()
        )
    };
    family(
        out,
        "ragvault_credential_refresh_total",
        "counter",
        "Reads of provider keys from the key source, by outcome.",
    );
    for l in &leases {
        let base = labels(&l.provider, l.tenant_id);
        for (outcome, n) in [
            ("ok", l.refreshes_ok),
            ("error", l.refreshes_failed),
            ("revoked", l.refreshes_revoked),
        ] {
            let _ = writeln!(
                out,
                "ragvault_credential_refresh_total{{{base},outcome=\"{outcome}\"}} {n}"
            );
        }
    }
    family(
        out,
        "ragvault_credential_lease_age_seconds",
        "gauge",
        "Age of the provider key lease being served.",
    );
    for l in leases.iter().filter(|l| l.lease_age_secs.is_some()) {
        let _ = writeln!(
            out,
            "ragvault_credential_lease_age_seconds{{{}}} {}",
            labels(&l.provider, l.tenant_id),
            l.lease_age_secs.unwrap_or_default()
        );
    }
    family(
        out,
        "ragvault_credential_lease_state",
        "gauge",
        "1 for the current state of each provider key lease.",
    );
    for l in &leases {
        let _ = writeln!(
            out,
            "ragvault_credential_lease_state{{{},state=\"{}\"}} 1",
            labels(&l.provider, l.tenant_id),
            l.state
        );
    }
    family(
        out,
        "ragvault_credential_key_version",
        "gauge",
        "Version of the provider key being served.",
    );
    for l in leases.iter().filter(|l| l.key_version.is_some()) {
        let _ = writeln!(
            out,
            "ragvault_credential_key_version{{{}}} {}",
            labels(&l.provider, l.tenant_id),
            l.key_version.unwrap_or_default()
        );
    }
    if let Some(vault) = state.key_source.vault_backend() {
        family(
            out,
            "ragvault_vault_logins_total",
            "counter",
            "AppRole logins.",
        );
        let _ = writeln!(out, "ragvault_vault_logins_total {}", vault.logins());
        family(
            out,
            "ragvault_vault_kv_reads_total",
            "counter",
            "KV v2 reads.",
        );
        let _ = writeln!(out, "ragvault_vault_kv_reads_total {}", vault.kv_reads());
    }
    if let Some(login) = &state.db_login {
        let status = login.status();
        family(
            out,
            "ragvault_database_login_renewals_total",
            "counter",
            "Renewals of the leased database login.",
        );
        let _ = writeln!(
            out,
            "ragvault_database_login_renewals_total {}",
            status.renewals
        );
        family(
            out,
            "ragvault_database_login_rollovers_total",
            "counter",
            "Switches to a newly leased database login.",
        );
        let _ = writeln!(
            out,
            "ragvault_database_login_rollovers_total {}",
            status.rollovers
        );
        family(
            out,
            "ragvault_database_login_expires_in_seconds",
            "gauge",
            "Time left on the current database login lease.",
        );
        let _ = writeln!(
            out,
            "ragvault_database_login_expires_in_seconds {}",
            status.lease_expires_in_secs
        );
    }
}
