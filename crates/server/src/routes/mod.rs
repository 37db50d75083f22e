pub(crate) mod admin;
pub(crate) mod ask;
pub(crate) mod chat;
pub(crate) mod credentials;
mod dashboard;
pub(crate) mod documents;
pub(crate) mod health;
pub(crate) mod keys;
pub(crate) mod metrics;
pub(crate) mod search;
pub(crate) mod tenant;

pub(crate) use admin::content_error;
pub use credentials::credential_error;
pub(crate) use dashboard::HtmlPage;
pub(crate) use documents::delete_document;

use crate::middleware;
use crate::state::AppState;
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::routing::{delete, get, post};
use axum::Router;
use std::time::Duration;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;

/// CORS for routes a widget calls from a browser: only `widget.allowed_origins`, only what a widget sends.
fn widget_cors(state: &AppState) -> CorsLayer {
    let origins: Vec<HeaderValue> = state
        .settings
        .widget
        .allowed_origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static(crate::extract::TENANT_HINT_HEADER),
        ])
        .expose_headers([
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static("server-timing"),
            header::RETRY_AFTER,
        ])
        .max_age(Duration::from_secs(600))
}

/// The whole HTTP surface. Kept as a function of the state so tests can drive it without a socket.
pub fn app(state: AppState) -> Router {
    let body_limit = state.settings.http.body_limit_bytes;
    let timeout = state.settings.request_timeout();
    let http_metrics = state.http_metrics.clone();
    let database = state.database.clone();
    Router::new()
        .route("/admin", get(dashboard::overview))
        .route("/admin/", get(dashboard::overview))
        .route(
            "/admin/login",
            get(dashboard::login_form).post(dashboard::login),
        )
        .route("/admin/logout", post(dashboard::logout))
        .route("/admin/static/dashboard.css", get(dashboard::stylesheet))
        .route("/admin/tenants/{tenant_id}", get(dashboard::tenant))
        .route(
            "/admin/tenants/{tenant_id}/usage.csv",
            get(dashboard::usage_csv),
        )
        .route(
            "/admin/tenants/{tenant_id}/keys/{key_id}/revoke",
            post(dashboard::revoke_key),
        )
        .route(
            "/admin/tenants/{tenant_id}/subjects/suspend",
            post(dashboard::suspend_subject),
        )
        .route(
            "/admin/tenants/{tenant_id}/suspensions/{suspension_id}/lift",
            post(dashboard::lift_suspension),
        )
        .route("/admin/credentials", get(dashboard::credentials))
        .route("/admin/audit", get(dashboard::audit))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/openapi.json", get(openapi_json))
        .route("/v1/whoami", get(tenant::whoami))
        .route(
            "/v1/api-keys",
            get(tenant::list_keys).post(tenant::issue_key),
        )
        .route("/v1/api-keys/{key_id}", delete(tenant::revoke_key))
        .route(
            "/v1/documents",
            get(documents::list).post(documents::upload),
        )
        .route(
            "/v1/documents/{document_id}",
            get(documents::show).delete(documents::delete),
        )
        .route("/v1/jobs/{job_id}", get(documents::job))
        .route("/v1/search", post(search::search))
        .route("/v1/ask", post(ask::ask).layer(widget_cors(&state)))
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/widget-tokens", post(tenant::mint_widget_token))
        .route(
            "/v1/admin/tenants",
            get(admin::list_tenants).post(admin::create_tenant),
        )
        .route(
            "/v1/admin/tenants/{tenant_id}",
            get(admin::get_tenant)
                .patch(admin::update_tenant)
                .delete(admin::delete_tenant),
        )
        .route(
            "/v1/admin/tenants/{tenant_id}/rotate-keys",
            post(admin::rotate_keys),
        )
        .route(
            "/v1/admin/tenants/{tenant_id}/reencryption",
            get(admin::reencryption),
        )
        .route(
            "/v1/admin/tenants/{tenant_id}/api-keys",
            get(admin::list_keys).post(admin::issue_key),
        )
        .route(
            "/v1/admin/tenants/{tenant_id}/api-keys/{key_id}",
            delete(admin::revoke_key),
        )
        .route("/v1/admin/audit", get(admin::list_audit))
        .route("/v1/admin/usage", get(admin::usage))
        .route("/v1/admin/policies/reload", post(admin::reload_policies))
        .route(
            "/v1/admin/tenants/{tenant_id}/suspensions",
            get(admin::list_suspensions).post(admin::suspend),
        )
        .route(
            "/v1/admin/tenants/{tenant_id}/suspensions/{suspension_id}/lift",
            post(admin::lift_suspension),
        )
        .route("/v1/admin/tenants/{tenant_id}/budget", get(admin::budget))
        .route("/v1/admin/audit/verify", get(admin::verify_audit))
        .route("/v1/admin/index/verify", get(admin::verify_index))
        .route(
            "/v1/admin/widget-signing-keys",
            get(admin::list_widget_signing_keys),
        )
        .route(
            "/v1/admin/widget-signing-keys/rotate",
            post(admin::rotate_widget_signing_key),
        )
        .route("/v1/admin/credentials", get(credentials::list))
        .route(
            "/v1/admin/credentials/{provider}/refresh",
            post(credentials::refresh),
        )
        .route_layer(axum::middleware::from_fn(middleware::tag_route))
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(
            database,
            middleware::database_gate,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(RequestBodyLimitLayer::new(body_limit))
        .layer(CatchPanicLayer::custom(middleware::panic_response))
        .layer(axum::middleware::from_fn_with_state(
            timeout,
            middleware::timeout,
        ))
        .layer(axum::middleware::from_fn_with_state(
            http_metrics,
            middleware::request_envelope,
        ))
}

/// The API description (`docs/openapi.json` is the same document, checked in).
async fn openapi_json() -> axum::response::Response {
    use axum::response::IntoResponse;
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let text = DOCUMENT.get_or_init(crate::openapi::document_text).clone();
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        text,
    )
        .into_response()
}
