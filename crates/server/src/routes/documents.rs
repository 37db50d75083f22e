//! `/v1/documents` and `/v1/jobs`: uploads become queued ingest jobs; documents are listed by their
//! unsealed names, never their text.

use super::admin::content_error;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, Caller};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use ragvault_core::{DocumentId, JobId, Scope};
use ragvault_gateway::require_tenant_scope;
use ragvault_ingest::pipeline::{SubmitError, Submitted, Upload};
use ragvault_store::AuditEntry;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

const MAX_NAME_CHARS: usize = 255;
const MAX_TAGS: usize = 32;
const MAX_TAG_CHARS: usize = 64;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadRequest {
    name: String,
    content: String,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    /// Access groups: only principals holding one of them retrieve this document (none = the whole tenant).
    #[serde(default)]
    groups: Vec<String>,
    /// Free-form JSON kept (sealed) with the document.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
}

fn invalid(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
}

/// `POST /v1/documents`: a JSON body `{name, content, ...}`, or `multipart/form-data` with a `file` part (its
/// file name is the document name unless a `name` field is given; optional `content_type`, `tags` (comma
/// separated) and `metadata` (JSON) fields).
#[utoipa::path(
    post,
    path = "/v1/documents",
    tag = "documents",
    summary = "Upload a document (scope `ingest`): JSON, or multipart with a `file` part",
    request_body(content((UploadRequest = "application/json"), (crate::openapi::UploadForm = "multipart/form-data"))),
    responses(
        (status = 202, description = "Queued: poll the job", body = crate::openapi::DocumentAccepted),
        (status = "default", description = "Error envelope with a stable `code`", body = crate::openapi::ErrorEnvelope),
    ),
    security(("bearer" = [])),
)]
pub async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    request: axum::extract::Request,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let tenant = require_tenant_scope(&caller.principal, Scope::Ingest)?;
    let is_multipart = request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("multipart/form-data"));
    let request = if is_multipart {
        let multipart = <axum::extract::Multipart as axum::extract::FromRequest<()>>::from_request(
            request,
            &(),
        )
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_multipart", e.body_text()))?;
        multipart_request(multipart).await?
    } else {
        let ApiJson(body) =
            <ApiJson<UploadRequest> as axum::extract::FromRequest<()>>::from_request(request, &())
                .await?;
        UploadBody::from(body)
    };
    accept(&state, &caller, tenant, request).await
}

/// An upload from either encoding, before validation.
struct UploadBody {
    name: String,
    content: Vec<u8>,
    content_type: Option<String>,
    tags: Vec<String>,
    groups: Vec<String>,
    metadata: Option<Value>,
}

impl From<UploadRequest> for UploadBody {
    fn from(r: UploadRequest) -> UploadBody {
        UploadBody {
            name: r.name,
            content: r.content.into_bytes(),
            content_type: r.content_type,
            tags: r.tags,
            groups: r.groups,
            metadata: r.metadata,
        }
    }
}

async fn multipart_request(
    mut multipart: axum::extract::Multipart,
) -> Result<UploadBody, ApiError> {
    let bad =
        |message: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_multipart", message);
    let mut body = UploadBody {
        name: String::new(),
        content: Vec::new(),
        content_type: None,
        tags: Vec::new(),
        groups: Vec::new(),
        metadata: None,
    };
    let mut file_name = None;
    let mut has_file = false;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| bad(e.body_text()))?
    {
        let field_name = field.name().unwrap_or_default().to_owned();
        match field_name.as_str() {
            "file" => {
                file_name = field.file_name().map(str::to_owned);
                if body.content_type.is_none() {
                    body.content_type = field.content_type().map(str::to_owned);
                }
                body.content = field
                    .bytes()
                    .await
                    .map_err(|e| bad(e.body_text()))?
                    .to_vec();
                has_file = true;
            }
            "name" => body.name = field.text().await.map_err(|e| bad(e.body_text()))?,
            "content_type" => {
                body.content_type = Some(field.text().await.map_err(|e| bad(e.body_text()))?)
            }
            "tags" | "groups" => {
                let text = field.text().await.map_err(|e| bad(e.body_text()))?;
                let list: Vec<String> = text
                    .split(',')
                    .map(|t| t.trim().to_owned())
                    .filter(|t| !t.is_empty())
                    .collect();
                if field_name == "tags" {
                    body.tags = list;
                } else {
                    body.groups = list;
                }
            }
            "metadata" => {
                let text = field.text().await.map_err(|e| bad(e.body_text()))?;
                body.metadata =
                    Some(serde_json::from_str(&text).map_err(|_| {
                        invalid("invalid_metadata", "metadata must be a JSON object")
                    })?);
            }
            other => return Err(bad(format!("unknown form field `{other}`"))),
        }
    }
    if !has_file {
        return Err(bad("a `file` part is required".to_owned()));
    }
    if body.name.trim().is_empty() {
        body.name = file_name.unwrap_or_default();
    }
    Ok(body)
}

async fn accept(
    state: &AppState,
    caller: &Caller,
    tenant: ragvault_core::TenantId,
    request: UploadBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let name = request.name.trim();
    if name.is_empty()
        || name.chars().count() > MAX_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(invalid(
            "invalid_name",
            format!("name must be 1 to {MAX_NAME_CHARS} printable characters"),
        ));
    }
    if request.tags.len() > MAX_TAGS
        || request.tags.iter().any(|t| {
            t.is_empty() || t.chars().count() > MAX_TAG_CHARS || t.chars().any(char::is_control)
        })
    {
        return Err(invalid(
            "invalid_tags",
            format!("at most {MAX_TAGS} tags of 1 to {MAX_TAG_CHARS} printable characters"),
        ));
    }
    if !ragvault_gateway::valid_group_names(&request.groups) {
        return Err(invalid(
            "invalid_groups",
            format!(
                "at most {} groups of 1 to {} letters, digits, '-', '_', '.' or ':'",
                ragvault_gateway::MAX_GROUPS,
                ragvault_gateway::MAX_GROUP_CHARS
            ),
        ));
    }
    let policy = &state.generator.for_tenant(tenant).await?.policy;
    if let Some(max) = policy.max_document_bytes {
        if request.content.len() as u64 > max {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "document_too_large",
                format!("the tenant's policy allows documents of at most {max} bytes"),
            ));
        }
    }
    if request.metadata.as_ref().is_some_and(|m| !m.is_object()) {
        return Err(invalid(
            "invalid_metadata",
            "metadata must be a JSON object",
        ));
    }
    // Tags travel with the metadata, sealed; keyed tag hashes for filtering arrive with search.
    // Groups travel the same way; their keyed hashes decide retrieval.
    let metadata = match (
        request.metadata,
        request.tags.is_empty() && request.groups.is_empty(),
    ) {
        (None, true) => None,
        (metadata, _) => {
            let mut object = metadata.unwrap_or_else(|| json!({}));
            if !request.tags.is_empty() {
                object["tags"] = json!(request.tags);
            }
            if !request.groups.is_empty() {
                let mut groups: Vec<String> =
                    request.groups.iter().map(|g| g.to_lowercase()).collect();
                groups.sort();
                groups.dedup();
                object["groups"] = json!(groups);
            }
            Some(object)
        }
    };
    let upload = Upload {
        name: name.to_owned(),
        content_type: request.content_type,
        content: request.content,
        metadata,
    };
    // On a task of its own: a client that hangs up mid-request must not cancel the submission between the
    // job row's insert and its place in the queue (the job would wait for the next start).
    let pipeline = state.pipeline.clone();
    let actor = caller.principal.actor();
    let submitted = tokio::spawn(async move { pipeline.submit(tenant, upload, &actor).await })
        .await
        .map_err(|e| ApiError::internal(&e))?
        .map_err(submit_error)?;
    let (status, unchanged) = match submitted {
        Submitted::Queued { .. } | Submitted::AlreadyQueued { .. } => ("queued", false),
        Submitted::Unchanged { .. } => ("done", true),
    };
    let mut body = json!({
        "document_id": submitted.document(),
        "job_id": submitted.job(),
        "status": status,
        "unchanged": unchanged,
    });
    if let Submitted::Unchanged { chunks, .. } = submitted {
        body["chunks"] = json!(chunks);
    }
    Ok((StatusCode::ACCEPTED, Json(body)))
}

fn submit_error(err: SubmitError) -> ApiError {
    match err {
        SubmitError::UnsupportedMediaType(_) | SubmitError::NoTranscriber => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            err.to_string(),
        ),
        SubmitError::InvalidUtf8(_) => invalid("invalid_utf8", err.to_string()),
        SubmitError::Empty => invalid("no_text", err.to_string()),
        SubmitError::QueueFull | SubmitError::TenantQueueFull(_) => {
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "queue_full", err.to_string())
                .retry_after(1)
        }
        SubmitError::Content(e) => content_error(e),
    }
}

#[utoipa::path(
    get,
    path = "/v1/jobs/{job_id}",
    tag = "documents",
    summary = "An ingest job's status",
    params(("job_id" = Uuid, Path, description = "Job id")),
    responses(
        (status = 200, body = crate::openapi::Job),
        (status = "default", description = "Error envelope with a stable `code`", body = crate::openapi::ErrorEnvelope),
    ),
    security(("bearer" = [])),
)]
pub async fn job(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(job_id): ApiPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    let tenant = require_tenant_scope(&caller.principal, Scope::Ingest)?;
    let job = state.store.get_job(tenant, JobId(job_id)).await?;
    let mut body = json!({
        "id": job.id,
        "document_id": job.document_id,
        // `indexing` (stored, points on their way into the index) is still running to a client: `done`
        // promises the document is searchable.
        "status": if job.status == "indexing" { "running" } else { job.status.as_str() },
        "attempts": job.attempts,
    });
    if let Some(chunks) = job.chunks {
        body["chunks"] = json!(chunks);
    }
    if let (Some(code), Some(message)) = (job.error_code, job.error_message) {
        body["error"] = json!({ "code": code, "message": message });
    }
    Ok(Json(body))
}

#[utoipa::path(
    get,
    path = "/v1/documents",
    tag = "documents",
    summary = "The tenant's documents (names, sizes; never text)",
    responses(
        (status = 200, body = crate::openapi::DocumentList),
        (status = "default", description = "Error envelope with a stable `code`", body = crate::openapi::ErrorEnvelope),
    ),
    security(("bearer" = [])),
)]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let tenant = require_tenant_scope(&caller.principal, Scope::Ingest)?;
    let documents = state
        .content
        .list_documents(tenant)
        .await
        .map_err(content_error)?;
    Ok(Json(json!({ "documents": documents })))
}

#[utoipa::path(
    get,
    path = "/v1/documents/{document_id}",
    tag = "documents",
    summary = "One document",
    params(("document_id" = Uuid, Path, description = "Document id")),
    responses(
        (status = 200, body = crate::openapi::Document),
        (status = "default", description = "Error envelope with a stable `code`", body = crate::openapi::ErrorEnvelope),
    ),
    security(("bearer" = [])),
)]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    let tenant = require_tenant_scope(&caller.principal, Scope::Ingest)?;
    let document = state
        .content
        .document_summary(tenant, DocumentId(id))
        .await
        .map_err(content_error)?;
    Ok(Json(json!(document)))
}

#[utoipa::path(
    delete,
    path = "/v1/documents/{document_id}",
    tag = "documents",
    summary = "Delete a document with its chunks, vectors and index points",
    params(("document_id" = Uuid, Path, description = "Document id")),
    responses(
        (status = 200, body = crate::openapi::DocumentDeleted),
        (status = "default", description = "Error envelope with a stable `code`", body = crate::openapi::ErrorEnvelope),
    ),
    security(("bearer" = [])),
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    let tenant = require_tenant_scope(&caller.principal, Scope::Ingest)?;
    let audit = AuditEntry::new(caller.principal.actor(), "document.deleted")
        .tenant(tenant)
        .target(format!("document:{id}"))
        .request_id(Some(caller.request_id.clone()));
    let chunks = delete_document(&state, tenant, DocumentId(id), &audit).await?;
    Ok(Json(json!({ "id": id, "deleted": true, "chunks": chunks })))
}

/// Deletes a document (chunks, vectors, sealed text) and its index points; returns how many chunks it had.
pub(crate) async fn delete_document(
    state: &AppState,
    tenant: ragvault_core::TenantId,
    id: DocumentId,
    audit: &AuditEntry,
) -> Result<usize, ApiError> {
    let points = state.store.delete_document(tenant, id, audit).await?;
    // Committed in Postgres first: a failure here leaves points without chunks, which retrieval skips and
    // the next reconciliation drops.
    if let Err(e) = state.indexer.remove_points(tenant, &points).await {
        tracing::error!(document = %id, error = %e, "document deleted but its index points remain until reconciliation");
    }
    Ok(points.len())
}
