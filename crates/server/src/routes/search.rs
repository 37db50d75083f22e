//! `POST /v1/search`: retrieval without generation, for tools and for checking what `/v1/ask` would cite.

use super::admin::content_error;
use crate::config::SearchMode;
use crate::error::ApiError;
use crate::extract::{ApiJson, Caller};
use crate::retrieval::RetrievalQuery;
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use ragvault_core::{DocumentId, Scope};
use ragvault_gateway::require_tenant_scope;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

const MAX_QUERY_CHARS: usize = 4096;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    query: String,
    #[serde(default)]
    top_k: Option<usize>,
    #[serde(default)]
    mode: Option<SearchMode>,
    #[serde(default)]
    document_ids: Option<Vec<Uuid>>,
    #[serde(default)]
    tags: Vec<String>,
}

#[utoipa::path(
    post,
    path = "/v1/search",
    tag = "retrieval",
    summary = "Retrieval without generation (scope `ask`)",
    request_body = SearchRequest,
    responses(
        (status = 200, body = crate::openapi::SearchResponse),
        (status = "default", description = "Error envelope with a stable `code`", body = crate::openapi::ErrorEnvelope),
    ),
    security(("bearer" = [])),
)]
pub async fn search(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<SearchRequest>,
) -> Result<Json<Value>, ApiError> {
    let tenant = require_tenant_scope(&caller.principal, Scope::Ask)?;
    let generation = crate::answer::admit(&state, &caller, tenant).await?;
    let settings = &state.settings.search;
    let query = request.query.trim();
    if query.is_empty() || query.chars().count() > MAX_QUERY_CHARS {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_query",
            format!("query must be 1 to {MAX_QUERY_CHARS} characters"),
        ));
    }
    let top_k = super::ask::checked_top_k(&state, &generation.policy, request.top_k)?;
    let mode = request.mode.unwrap_or(settings.mode);
    let retrieval = RetrievalQuery {
        text: query.to_owned(),
        top_k,
        mode,
        documents: request
            .document_ids
            .map(|ids| ids.into_iter().map(DocumentId).collect()),
        tags: request.tags,
        groups: caller.principal.access_groups().map(<[String]>::to_vec),
        who: crate::answer::embedding_for(&caller, tenant),
    };
    let results = state
        .retriever
        .retrieve(tenant, &retrieval)
        .await
        .map_err(content_error)?;
    Ok(Json(json!({
        "mode": mode,
        "model": state.retriever.indexer.embedder().model_id(),
        "results": results,
    })))
}
