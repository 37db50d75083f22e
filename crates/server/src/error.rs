//! The one place where crate errors become HTTP statuses and stable error codes.
//!
//! Handlers return [`ApiError`]; the response carries an [`ErrorBody`] extension and the request-id
//! middleware renders the envelope `{"error": {"code", "message", "request_id"}}`, so every error, including
//! axum's own rejections and layer errors, has the same shape.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ragvault_gateway::GatewayError;
use ragvault_store::StoreError;

#[derive(Clone, Debug)]
pub struct ErrorBody {
    pub code: &'static str,
    pub message: String,
    /// Extra top-level fields for the envelope (for example readiness checks).
    pub extra: Option<serde_json::Value>,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
    /// Seconds for a `retry-after` header (429 and 503 that will pass).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: ErrorBody {
                code,
                message: message.into(),
                extra: None,
            },
            retry_after: None,
        }
    }

    pub fn retry_after(mut self, seconds: u64) -> ApiError {
        self.retry_after = Some(seconds.max(1));
        self
    }

    pub fn with_extra(mut self, extra: serde_json::Value) -> ApiError {
        self.body.extra = Some(extra);
        self
    }

    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    /// A failure whose cause must not reach the client: logged here, the client gets the request id.
    pub fn internal(cause: &dyn std::fmt::Display) -> ApiError {
        tracing::error!(error = %cause, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal error; quote the request id when reporting it",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response.extensions_mut().insert(self.body);
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> ApiError {
        match err {
            StoreError::SlugTaken => ApiError::new(
                StatusCode::CONFLICT,
                "slug_taken",
                "a tenant with this slug already exists",
            ),
            StoreError::NotFound(what) => ApiError::not_found(what),
            ref e if e.is_unavailable() => {
                tracing::warn!(error = %e, "database unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database_unavailable",
                    "the database is unavailable; retry shortly",
                )
            }
            StoreError::InvalidUrl(_)
            | StoreError::Database(_)
            | StoreError::Migrate(_)
            | StoreError::Corrupt { .. } => ApiError::internal(&err),
        }
    }
}

impl From<GatewayError> for ApiError {
    fn from(err: GatewayError) -> ApiError {
        use StatusCode as S;
        let message = err.to_string();
        match err {
            GatewayError::MissingCredentials => {
                ApiError::new(S::UNAUTHORIZED, "missing_credentials", message)
            }
            GatewayError::MalformedCredentials => {
                ApiError::new(S::UNAUTHORIZED, "malformed_credentials", message)
            }
            GatewayError::InvalidCredentials => {
                ApiError::new(S::UNAUTHORIZED, "invalid_api_key", message)
            }
            GatewayError::KeyRevoked => ApiError::new(S::UNAUTHORIZED, "api_key_revoked", message),
            GatewayError::KeyExpired => ApiError::new(S::UNAUTHORIZED, "api_key_expired", message),
            GatewayError::TenantSuspended => {
                ApiError::new(S::FORBIDDEN, "tenant_suspended", message)
            }
            GatewayError::InsufficientScope(_) => {
                ApiError::new(S::FORBIDDEN, "insufficient_scope", message)
            }
            GatewayError::OperatorOnly => {
                ApiError::new(S::FORBIDDEN, "operator_key_required", message)
            }
            GatewayError::TenantOnly => ApiError::new(S::FORBIDDEN, "tenant_key_required", message),
            GatewayError::NoScopes => {
                ApiError::new(S::UNPROCESSABLE_ENTITY, "invalid_scopes", message)
            }
            GatewayError::InvalidExpiry { .. } => {
                ApiError::new(S::UNPROCESSABLE_ENTITY, "invalid_expiry", message)
            }
            GatewayError::MalformedWidgetToken => {
                ApiError::new(S::UNAUTHORIZED, "widget_token_malformed", message)
            }
            GatewayError::WidgetTokenTampered => {
                ApiError::new(S::UNAUTHORIZED, "widget_token_invalid_signature", message)
            }
            GatewayError::WidgetKeyRetired => {
                ApiError::new(S::UNAUTHORIZED, "widget_token_key_retired", message)
            }
            GatewayError::WidgetTokenExpired => {
                ApiError::new(S::UNAUTHORIZED, "widget_token_expired", message)
            }
            GatewayError::WidgetOriginMismatch => {
                ApiError::new(S::FORBIDDEN, "widget_token_origin_mismatch", message)
            }
            GatewayError::WidgetWrongTenant => {
                ApiError::new(S::FORBIDDEN, "widget_token_wrong_tenant", message)
            }
            GatewayError::InvalidTokenTtl { .. } => {
                ApiError::new(S::UNPROCESSABLE_ENTITY, "invalid_ttl", message)
            }
            GatewayError::OriginNotAllowed(_) => {
                ApiError::new(S::UNPROCESSABLE_ENTITY, "origin_not_allowed", message)
            }
            GatewayError::InvalidGroups { .. } => {
                ApiError::new(S::UNPROCESSABLE_ENTITY, "invalid_groups", message)
            }
            GatewayError::InvalidSubject { .. } => {
                ApiError::new(S::UNPROCESSABLE_ENTITY, "invalid_subject", message)
            }
            GatewayError::BudgetExceeded { retry_after_secs } => {
                ApiError::new(S::TOO_MANY_REQUESTS, "budget_exceeded", message)
                    .retry_after(retry_after_secs)
            }
            GatewayError::RateLimited { retry_after_secs } => {
                ApiError::new(S::TOO_MANY_REQUESTS, "rate_limited", message)
                    .retry_after(retry_after_secs)
            }
            GatewayError::MeteringUnavailable(_) => ApiError::new(
                S::SERVICE_UNAVAILABLE,
                "metering_unavailable",
                "usage could not be recorded; try again",
            ),
            // Price problems are configuration faults, caught at start; at request time they are ours.
            GatewayError::InvalidPriceTable { .. } | GatewayError::Unpriced { .. } => {
                ApiError::internal(&message)
            }
            GatewayError::Store(e) => e.into(),
            GatewayError::Credentials(e) => crate::routes::credential_error(e),
        }
    }
}

/// The code for an error response that did not come from [`ApiError`] (axum fallbacks, layers).
pub fn code_for_status(status: StatusCode) -> (&'static str, &'static str) {
    match status {
        StatusCode::BAD_REQUEST => ("bad_request", "the request is malformed"),
        StatusCode::UNAUTHORIZED => ("unauthenticated", "authentication required"),
        StatusCode::FORBIDDEN => ("forbidden", "not allowed"),
        StatusCode::NOT_FOUND => ("not_found", "no such route or resource"),
        StatusCode::METHOD_NOT_ALLOWED => {
            ("method_not_allowed", "method not allowed on this route")
        }
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "request body is too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ("unsupported_media_type", "unsupported content type")
        }
        StatusCode::UNPROCESSABLE_ENTITY => ("unprocessable", "the request could not be processed"),
        StatusCode::TOO_MANY_REQUESTS => ("rate_limited", "too many requests"),
        StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => {
            ("timeout", "the request timed out")
        }
        StatusCode::SERVICE_UNAVAILABLE => ("unavailable", "the service is unavailable"),
        s if s.is_server_error() => ("internal_error", "internal error"),
        _ => ("error", "the request failed"),
    }
}
