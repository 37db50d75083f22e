//! Request and response shapes for API keys, shared by the operator and tenant-admin routes.

use crate::error::ApiError;
use axum::http::StatusCode;
use ragvault_core::Scopes;
use ragvault_gateway::IssuedApiKey;
use serde::Deserialize;
use serde_json::{json, Value};
use time::{Duration, OffsetDateTime};

const MAX_NAME_LEN: usize = 100;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueKeyRequest {
    pub scopes: Vec<String>,
    #[serde(default)]
    pub name: Option<String>,
    /// RFC 3339 timestamp.
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub expires_in_seconds: Option<u64>,
    /// Access groups: the key then reads ungrouped documents and those of these groups only.
    #[serde(default)]
    pub groups: Option<Vec<String>>,
}

pub struct KeyRequest {
    pub scopes: Scopes,
    pub name: Option<String>,
    pub expires_at: Option<OffsetDateTime>,
    pub groups: Option<Vec<String>>,
}

impl IssueKeyRequest {
    pub fn validate(self) -> Result<KeyRequest, ApiError> {
        let invalid =
            |code, message: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message);
        let scopes =
            Scopes::parse(&self.scopes).map_err(|e| invalid("invalid_scopes", e.to_string()))?;
        if let Some(name) = &self.name {
            if name.chars().count() > MAX_NAME_LEN || name.chars().any(char::is_control) {
                return Err(invalid(
                    "invalid_name",
                    format!("name must be at most {MAX_NAME_LEN} printable characters"),
                ));
            }
        }
        let expires_at = match (self.expires_at, self.expires_in_seconds) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "invalid_expiry",
                    "give expires_at or expires_in_seconds, not both".to_owned(),
                ))
            }
            (Some(at), None) => Some(
                OffsetDateTime::parse(&at, &time::format_description::well_known::Rfc3339)
                    .map_err(|_| {
                        invalid(
                            "invalid_expiry",
                            "expires_at must be an RFC 3339 timestamp".to_owned(),
                        )
                    })?,
            ),
            (None, Some(secs)) => {
                let secs = i64::try_from(secs).map_err(|_| {
                    invalid(
                        "invalid_expiry",
                        "expires_in_seconds is too large".to_owned(),
                    )
                })?;
                OffsetDateTime::now_utc().checked_add(Duration::seconds(secs))
            }
            (None, None) => None,
        };
        Ok(KeyRequest {
            scopes,
            name: self.name,
            expires_at,
            groups: self.groups,
        })
    }
}

/// The one response that contains a key: shown once, never again retrievable.
pub fn issued_key_body(issued: &IssuedApiKey) -> Value {
    let mut body = json!(issued.key);
    if let Some(map) = body.as_object_mut() {
        map.insert(
            "api_key".to_owned(),
            Value::String(issued.api_key.expose_secret().clone()),
        );
    }
    body
}
