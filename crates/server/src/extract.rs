//! Extractors whose rejections are [`ApiError`]s, so malformed input gets the JSON envelope and a stable
//! code instead of axum's plain-text rejection.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use ragvault_gateway::{BrowserContext, Principal, RequestContext};
use tracing::Instrument;

/// The tenant (id or slug) a widget page says it belongs to; a widget token for another tenant is refused.
pub const TENANT_HINT_HEADER: &str = "x-ragvault-tenant";
use serde::de::DeserializeOwned;

/// JSON body.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected `Content-Type: application/json`",
        ),
        JsonRejection::JsonSyntaxError(e) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("request body is not valid JSON: {}", e.body_text()),
        ),
        JsonRejection::JsonDataError(e) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            e.body_text(),
        ),
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "request body is too large",
            )
        }
        other => ApiError::new(StatusCode::BAD_REQUEST, "bad_request", other.body_text()),
    }
}

/// Path parameters.
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| ApiPath(value))
            .map_err(|e: PathRejection| {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_path", e.body_text())
            })
    }
}

/// Query string.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| ApiQuery(value))
            .map_err(|e: QueryRejection| {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text())
            })
    }
}

/// The request id assigned by the middleware.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// An authenticated caller plus the request id, for handlers and audit rows.
pub struct Caller {
    pub principal: Principal,
    pub request_id: String,
}

impl Caller {
    pub fn context(&self) -> RequestContext {
        RequestContext::new(self.principal.actor(), Some(self.request_id.clone()))
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = match parts.headers.get(header::AUTHORIZATION) {
            None => None,
            Some(value) => Some(value.to_str().map_err(|_| {
                ApiError::from(ragvault_gateway::GatewayError::MalformedCredentials)
            })?),
        };
        let browser = BrowserContext {
            origin: parts
                .headers
                .get(header::ORIGIN)
                .and_then(|v| v.to_str().ok()),
            tenant_hint: parts
                .headers
                .get(TENANT_HINT_HEADER)
                .and_then(|v| v.to_str().ok()),
        };
        let auth = tracing::info_span!(
            "auth",
            actor = tracing::field::Empty,
            outcome = tracing::field::Empty
        );
        let authenticated = state
            .access
            .authenticate(header, &browser)
            .instrument(auth.clone())
            .await;
        // The actor is a key id or widget subject, never the presented secret.
        match &authenticated {
            Ok(principal) => {
                auth.record("actor", principal.actor());
                auth.record("outcome", "ok");
            }
            Err(_) => {
                auth.record("outcome", "refused");
            }
        }
        let principal = authenticated?;
        let request_id = parts
            .extensions
            .get::<RequestId>()
            .map(|id| id.0.clone())
            .unwrap_or_default();
        tracing::Span::current().record("actor", principal.actor());
        Ok(Caller {
            principal,
            request_id,
        })
    }
}
