use crate::{ApiKeyId, OperatorKeyId, Scope, Scopes, TenantId};
use serde::Serialize;

/// Who is making a request, after authentication.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Principal {
    /// A tenant API key.
    Tenant {
        tenant_id: TenantId,
        key_id: ApiKeyId,
        scopes: Scopes,
    },
    /// An operator key: may manage every tenant through `/v1/admin/*`, but reads no tenant content.
    Operator { key_id: OperatorKeyId },
}

impl Principal {
    pub fn tenant_id(&self) -> Option<TenantId> {
        match self {
            Principal::Tenant { tenant_id, .. } => Some(*tenant_id),
            Principal::Operator { .. } => None,
        }
    }

    pub fn has_scope(&self, scope: Scope) -> bool {
        match self {
            Principal::Tenant { scopes, .. } => scopes.contains(scope),
            Principal::Operator { .. } => false,
        }
    }

    /// A short, non-secret description for audit rows and logs (`api_key:<id>`, `operator:<id>`).
    pub fn actor(&self) -> String {
        match self {
            Principal::Tenant { key_id, .. } => format!("api_key:{key_id}"),
            Principal::Operator { key_id } => format!("operator:{key_id}"),
        }
    }
}
