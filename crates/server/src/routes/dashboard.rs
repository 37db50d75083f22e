//! `/admin`: the operator dashboard. Login with an operator key starts a session (HttpOnly, Secure,
//! SameSite=Strict cookie holding a random token; only its keyed hash is stored); every state-changing form
//! carries the session's CSRF token; pages are rendered by the `dashboard` crate from the same data the admin
//! API serves. Pages never show document text or keys.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use ragvault_core::{ApiKeyId, TenantId};
use ragvault_dashboard as view;
use ragvault_gateway::{AdminSessionView, RequestContext};
use ragvault_store::{UsageGrouping, UsageTotals};
use serde::Deserialize;
use std::collections::BTreeMap;
use time::{Date, OffsetDateTime};
use uuid::Uuid;

const COOKIE: &str = "rv_admin";
/// Sessions last a working day; logging out ends one at once.
const SESSION_SECS: u64 = 8 * 3600;
const AUDIT_PAGE: i64 = 100;

/// Marks an HTML error page the envelope middleware must leave as it is.
#[derive(Clone, Copy, Debug)]
pub struct HtmlPage;

/// An HTML response with the dashboard's security headers: nothing inline runs, nothing frames it,
/// nothing caches it.
fn html(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response.extensions_mut().insert(HtmlPage);
    response
}

fn session_cookie(token: &str, max_age: u64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{COOKIE}={token}; HttpOnly; Secure; SameSite=Strict; Path=/admin; Max-Age={max_age}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("rv_admin=; Path=/admin; Max-Age=0"))
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// The logged-in session, or the redirect to the login page.
async fn session(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<(AdminSessionView, String), Response> {
    let to_login = || Redirect::to("/admin/login").into_response();
    let Some(token) = cookie_token(headers) else {
        return Err(to_login());
    };
    match state.access.admin_session(&token).await {
        Ok(Some(session)) => Ok((session, token)),
        Ok(None) => Err(to_login()),
        Err(e) => Err(ApiError::from(e).into_response()),
    }
}

/// The session, and a CSRF token that matches it; a missing or wrong token is refused (`403 csrf_failed`).
async fn session_for_post(
    state: &AppState,
    headers: &HeaderMap,
    csrf: &str,
) -> Result<AdminSessionView, Response> {
    let (session, token) = session(state, headers).await?;
    if !state.access.csrf_matches(&token, csrf) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf_failed",
            "the form's CSRF token is missing or does not match the session",
        )
        .into_response());
    }
    Ok(session)
}

pub async fn stylesheet() -> Response {
    let mut response = view::STYLESHEET.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    response
}

pub async fn login_form() -> Response {
    html(StatusCode::OK, view::login_page(None))
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    operator_key: String,
}

pub async fn login(State(state): State<AppState>, Form(form): Form<LoginForm>) -> Response {
    let ttl = std::time::Duration::from_secs(SESSION_SECS);
    match state
        .access
        .start_admin_session(&form.operator_key, ttl)
        .await
    {
        Ok(started) => {
            let mut response = Redirect::to("/admin").into_response();
            response.headers_mut().insert(
                header::SET_COOKIE,
                session_cookie(started.token.expose_secret(), SESSION_SECS),
            );
            response
        }
        Err(e) if matches!(e, ragvault_gateway::GatewayError::Store(_)) => {
            ApiError::from(e).into_response()
        }
        Err(_) => html(
            StatusCode::UNAUTHORIZED,
            view::login_page(Some("That is not a valid operator key.")),
        ),
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Result<Response, Response> {
    let session = session_for_post(&state, &headers, &form.csrf).await?;
    if let Err(e) = state.access.end_admin_session(&session).await {
        return Err(ApiError::from(e).into_response());
    }
    let mut response = Redirect::to("/admin/login").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_cookie("", 0));
    Ok(response)
}

#[derive(Deserialize)]
pub struct RangeQuery {
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
}

/// `from..=to` from the query (`YYYY-MM-DD`), defaulting to this month so far; nonsense falls back to it.
fn range(query: &RangeQuery) -> (Date, Date) {
    let today = OffsetDateTime::now_utc().date();
    let month_start = ragvault_store::month_of(OffsetDateTime::now_utc());
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let parse = |s: &Option<String>| s.as_deref().and_then(|s| Date::parse(s, format).ok());
    let from = parse(&query.from).unwrap_or(month_start);
    let to = parse(&query.to).unwrap_or(today);
    if from > to || (to - from).whole_days() > 366 {
        (month_start, today)
    } else {
        (from, to)
    }
}

fn date_range(from: Date, to: Date) -> view::DateRange {
    view::DateRange {
        from: from.to_string(),
        to: to.to_string(),
    }
}

fn u(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// Spend of every tenant today, this month and in the range, from one rollup query.
async fn tenant_spend(
    state: &AppState,
    tenant: Option<TenantId>,
    from: Date,
    to: Date,
) -> Result<BTreeMap<TenantId, (u64, u64, u64, u64, u64)>, ApiError> {
    let today = OffsetDateTime::now_utc().date();
    let month_start = ragvault_store::month_of(OffsetDateTime::now_utc());
    let rows = state
        .store
        .usage_report(
            tenant,
            from.min(month_start),
            to.max(today),
            UsageGrouping::Day,
        )
        .await?;
    // (today, month, range, requests in range, errors in range)
    let mut spend: BTreeMap<TenantId, (u64, u64, u64, u64, u64)> = BTreeMap::new();
    for row in rows {
        let Some(day) = row.day.as_deref().and_then(|d| {
            Date::parse(d, time::macros::format_description!("[year]-[month]-[day]")).ok()
        }) else {
            continue;
        };
        let entry = spend.entry(row.tenant_id).or_default();
        let cost = u(row.cost_micro_usd);
        if day == today {
            entry.0 += cost;
        }
        if day >= month_start && day <= today {
            entry.1 += cost;
        }
        if day >= from && day <= to {
            entry.2 += cost;
            entry.3 += u(row.requests);
            entry.4 += u(row.errors);
        }
    }
    Ok(spend)
}

fn budget_of(state: &AppState, tenant: &ragvault_gateway::TenantView) -> Option<u64> {
    tenant
        .policy
        .get("budget_micro_usd")
        .and_then(serde_json::Value::as_u64)
        .or((tenant.environment == ragvault_core::Environment::Sandbox)
            .then_some(state.settings.budget.sandbox_monthly_micro_usd))
}

fn tenant_row(
    state: &AppState,
    tenant: &ragvault_gateway::TenantView,
    spend: (u64, u64, u64, u64, u64),
) -> view::TenantSpend {
    view::TenantSpend {
        id: tenant.id.to_string(),
        slug: tenant.slug.clone(),
        environment: tenant.environment.as_str().to_owned(),
        status: tenant.status.as_str().to_owned(),
        today_micro_usd: spend.0,
        month_micro_usd: spend.1,
        budget_micro_usd: budget_of(state, tenant),
        range_micro_usd: spend.2,
        requests: spend.3,
        errors: spend.4,
    }
}

pub async fn overview(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<RangeQuery>,
) -> Result<Response, Response> {
    let (session, _) = session(&state, &headers).await?;
    let (from, to) = range(&query);
    state.settle_metering().await;
    let result = async {
        let spend = tenant_spend(&state, None, from, to).await?;
        let tenants = state.access.list_tenants().await?;
        let mut models: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
        for row in state
            .store
            .usage_report(None, from, to, UsageGrouping::Model)
            .await?
        {
            let key = (
                row.provider.unwrap_or_default(),
                row.model.unwrap_or_default(),
            );
            let entry = models.entry(key).or_default();
            entry.0 += u(row.requests);
            entry.1 += u(row.cost_micro_usd);
        }
        let mut top_models: Vec<view::ModelSpend> = models
            .into_iter()
            .map(|((provider, model), (requests, cost))| view::ModelSpend {
                provider,
                model,
                requests,
                cost_micro_usd: cost,
            })
            .collect();
        top_models.sort_by_key(|m| std::cmp::Reverse(m.cost_micro_usd));
        top_models.truncate(10);
        let mut rows: Vec<view::TenantSpend> = tenants
            .iter()
            .map(|t| tenant_row(&state, t, spend.get(&t.id).copied().unwrap_or_default()))
            .collect();
        rows.sort_by(|a, b| {
            b.month_micro_usd
                .cmp(&a.month_micro_usd)
                .then(a.slug.cmp(&b.slug))
        });
        Ok::<_, ApiError>(view::Overview {
            range: date_range(from, to),
            tenants: rows,
            top_models,
        })
    }
    .await;
    match result {
        Ok(overview) => Ok(html(
            StatusCode::OK,
            view::overview_page(&overview, &session.csrf),
        )),
        Err(e) => Err(e.into_response()),
    }
}

fn day_spend(rows: &[UsageTotals]) -> Vec<view::DaySpend> {
    let mut days: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
    for row in rows {
        let label = row.model.clone().unwrap_or_default();
        days.entry(row.day.clone().unwrap_or_default())
            .or_default()
            .push((label, u(row.cost_micro_usd)));
    }
    days.into_iter()
        .map(|(day, parts)| view::DaySpend { day, parts })
        .collect()
}

fn format_time(at: OffsetDateTime) -> String {
    at.format(time::macros::format_description!(
        "[year]-[month]-[day] [hour]:[minute] UTC"
    ))
    .unwrap_or_default()
}

fn audit_row(record: &ragvault_store::AuditRecord) -> view::AuditRow {
    view::AuditRow {
        seq: record.seq,
        at: format_time(record.at),
        actor: record.actor.clone(),
        action: record.action.clone(),
        target: record.target.clone().unwrap_or_default(),
        tenant: record.tenant_id.map(|t| t.to_string()).unwrap_or_default(),
    }
}

pub async fn tenant(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(tenant_id): Path<Uuid>,
    Query(query): Query<RangeQuery>,
) -> Result<Response, Response> {
    let (session, _) = session(&state, &headers).await?;
    let tenant_id = TenantId(tenant_id);
    let (from, to) = range(&query);
    state.settle_metering().await;
    let result = async {
        let tenant = state.access.get_tenant(tenant_id).await?;
        let spend = tenant_spend(&state, Some(tenant_id), from, to).await?;
        let rows = state
            .store
            .usage_report(Some(tenant_id), from, to, UsageGrouping::DayModel)
            .await?;
        let usage = rows
            .iter()
            .map(|r| view::UsageRow {
                day: r.day.clone().unwrap_or_default(),
                provider: r.provider.clone().unwrap_or_default(),
                model: r.model.clone().unwrap_or_default(),
                requests: u(r.requests),
                errors: u(r.errors),
                input_tokens: u(r.input_tokens),
                output_tokens: u(r.output_tokens),
                cost_micro_usd: u(r.cost_micro_usd),
            })
            .collect();
        let keys = state
            .store
            .list_api_keys(tenant_id)
            .await?
            .into_iter()
            .map(|k| view::KeyRow {
                id: k.id.to_string(),
                name: k.name.unwrap_or_else(|| format!("rvk_{}", k.public_id)),
                scopes: k.scopes.names().join(" "),
                created_at: format_time(k.created_at),
                last_used_at: k.last_used_at.map(format_time),
                revoked: k.revoked_at.is_some(),
            })
            .collect();
        let suspensions = state
            .store
            .list_suspensions(tenant_id)
            .await?
            .into_iter()
            .filter(|s| s.lifted_at.is_none())
            .map(|s| view::SuspensionRow {
                id: s.id.to_string(),
                principal: s.principal,
                reason: s
                    .reason
                    .get("kind")
                    .and_then(|k| k.as_str())
                    .unwrap_or("anomaly")
                    .to_owned(),
                created_at: format_time(s.created_at),
            })
            .collect();
        let mut anomalies: Vec<view::AuditRow> = state
            .store
            .list_audit(Some(tenant_id), 0, 1000)
            .await?
            .iter()
            .filter(|e| e.action == "anomaly.detected")
            .map(audit_row)
            .collect();
        anomalies.reverse();
        anomalies.truncate(20);
        Ok::<_, ApiError>(view::TenantDetail {
            tenant: tenant_row(
                &state,
                &tenant,
                spend.get(&tenant_id).copied().unwrap_or_default(),
            ),
            range: date_range(from, to),
            days: day_spend(&rows),
            usage,
            keys,
            suspensions,
            anomalies,
        })
    }
    .await;
    match result {
        Ok(detail) => Ok(html(
            StatusCode::OK,
            view::tenant_page(&detail, &session.csrf),
        )),
        Err(e) => Err(e.into_response()),
    }
}

/// A CSV cell: quoted, and a leading `= + - @` defused so a spreadsheet does not run it as a formula.
fn csv_cell(value: &str) -> String {
    let defused = if value.starts_with(['=', '+', '-', '@']) {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    format!("\"{}\"", defused.replace('"', "\"\""))
}

pub async fn usage_csv(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(tenant_id): Path<Uuid>,
    Query(query): Query<RangeQuery>,
) -> Result<Response, Response> {
    session(&state, &headers).await?;
    let (from, to) = range(&query);
    let rows = match state
        .store
        .usage_report(Some(TenantId(tenant_id)), from, to, UsageGrouping::DayModel)
        .await
    {
        Ok(rows) => rows,
        Err(e) => return Err(ApiError::from(e).into_response()),
    };
    let mut csv = String::from(
        "day,provider,model,requests,errors,input_tokens,output_tokens,cost_micro_usd\n",
    );
    for r in rows {
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{}\n",
            csv_cell(r.day.as_deref().unwrap_or_default()),
            csv_cell(r.provider.as_deref().unwrap_or_default()),
            csv_cell(r.model.as_deref().unwrap_or_default()),
            r.requests,
            r.errors,
            r.input_tokens,
            r.output_tokens,
            r.cost_micro_usd
        ));
    }
    let mut response = csv.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Ok(value) = HeaderValue::from_str(&format!(
        "attachment; filename=\"usage-{tenant_id}-{from}-{to}.csv\""
    )) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

pub async fn revoke_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((tenant_id, key_id)): Path<(Uuid, Uuid)>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, Response> {
    let session = session_for_post(&state, &headers, &form.csrf).await?;
    let ctx = RequestContext::new(session.principal.actor(), None);
    if let Err(e) = state
        .access
        .revoke_api_key(TenantId(tenant_id), ApiKeyId(key_id), &ctx)
        .await
    {
        return Err(ApiError::from(e).into_response());
    }
    Ok(Redirect::to(&format!("/admin/tenants/{tenant_id}")).into_response())
}

#[derive(Deserialize)]
pub struct SuspendSubjectForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    subject: String,
}

/// Suspends a widget subject from the tenant page (every token minted for that end user is refused).
pub async fn suspend_subject(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(tenant_id): Path<Uuid>,
    Form(form): Form<SuspendSubjectForm>,
) -> Result<Response, Response> {
    let session = session_for_post(&state, &headers, &form.csrf).await?;
    let ctx = RequestContext::new(session.principal.actor(), None);
    crate::suspensions::suspend_by_operator(
        &state,
        TenantId(tenant_id),
        &format!("subject:{}", form.subject.trim()),
        Some("suspended from the dashboard"),
        &ctx,
    )
    .await
    .map_err(IntoResponse::into_response)?;
    Ok(Redirect::to(&format!("/admin/tenants/{tenant_id}")).into_response())
}

pub async fn lift_suspension(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((tenant_id, suspension_id)): Path<(Uuid, Uuid)>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, Response> {
    let session = session_for_post(&state, &headers, &form.csrf).await?;
    let tenant = TenantId(tenant_id);
    let audit = RequestContext::new(session.principal.actor(), None)
        .audit_entry("suspension.lifted")
        .tenant(tenant)
        .target(format!("suspension:{suspension_id}"));
    if let Err(e) = state
        .suspensions
        .lift(tenant, suspension_id, &session.principal.actor(), &audit)
        .await
    {
        return Err(ApiError::from(e).into_response());
    }
    Ok(Redirect::to(&format!("/admin/tenants/{tenant_id}")).into_response())
}

pub async fn credentials(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, Response> {
    let (session, _) = session(&state, &headers).await?;
    let rows: Vec<view::CredentialRow> = state
        .leases
        .status()
        .into_iter()
        .map(|l| view::CredentialRow {
            provider: match l.tenant_id {
                Some(tenant) => format!("{} (tenant {tenant})", l.provider),
                None => l.provider,
            },
            source: l.source.unwrap_or_default(),
            state: l.state.to_owned(),
            key_version: l.key_version,
            lease_age_secs: l.lease_age_secs,
            expires_in_secs: l.expires_in_secs,
            last_refresh: l.last_refresh.map(format_time),
            last_error: l.last_error,
        })
        .collect();
    Ok(html(
        StatusCode::OK,
        view::credentials_page(&rows, &session.csrf),
    ))
}

#[derive(Deserialize)]
pub struct AuditQuery {
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    after: Option<i64>,
}

pub async fn audit(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<AuditQuery>,
) -> Result<Response, Response> {
    let (session, _) = session(&state, &headers).await?;
    state.settle_metering().await;
    let tenant_filter = query.tenant.clone().unwrap_or_default();
    let action_filter = query.action.clone().unwrap_or_default();
    let tenant = tenant_filter.trim().parse::<Uuid>().ok().map(TenantId);
    let result = async {
        let verification = state.store.verify_audit_chain().await?;
        let records = state
            .store
            .list_audit(tenant, query.after.unwrap_or(0), AUDIT_PAGE)
            .await?;
        let next = (records.len() as i64 == AUDIT_PAGE)
            .then(|| records.last().map(|r| r.id))
            .flatten()
            .map(|after| {
                format!(
                    "tenant={}&action={}&after={after}",
                    tenant_filter.trim(),
                    action_filter.trim()
                )
            });
        let wanted = action_filter.trim();
        let rows = records
            .iter()
            .filter(|r| wanted.is_empty() || r.action.starts_with(wanted))
            .map(audit_row)
            .collect();
        Ok::<_, ApiError>(view::AuditView {
            rows,
            chain: view::ChainStatus {
                intact: verification.is_intact(),
                checked: verification.checked,
                first_bad_seq: verification.first_bad_seq,
            },
            tenant_filter: tenant_filter.clone(),
            action_filter: action_filter.clone(),
            next,
        })
    }
    .await;
    match result {
        Ok(audit) => Ok(html(
            StatusCode::OK,
            view::audit_page(&audit, &session.csrf),
        )),
        Err(e) => Err(e.into_response()),
    }
}
