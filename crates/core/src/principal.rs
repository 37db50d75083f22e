use crate::{ApiKeyId, OperatorKeyId, Scope, Scopes, TenantId, WidgetTokenId};
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
        /// Access groups; `None` = the whole tenant.
        groups: Option<Vec<String>>,
    },
    /// A widget token: a browser asking on a tenant's behalf, scope `ask` only.
    Widget {
        tenant_id: TenantId,
        token_id: WidgetTokenId,
        /// The end user the tenant minted the token for, as the tenant names them (opaque to ragvault).
        subject: Option<String>,
        /// Access groups: the token reads documents without groups and documents sharing one of these.
        groups: Vec<String>,
    },
    /// An operator key: may manage every tenant through `/v1/admin/*`, but reads no tenant content.
    Operator { key_id: OperatorKeyId },
}

impl Principal {
    pub fn tenant_id(&self) -> Option<TenantId> {
        match self {
            Principal::Tenant { tenant_id, .. } | Principal::Widget { tenant_id, .. } => {
                Some(*tenant_id)
            }
            Principal::Operator { .. } => None,
        }
    }

    pub fn has_scope(&self, scope: Scope) -> bool {
        match self {
            Principal::Tenant { scopes, .. } => scopes.contains(scope),
            Principal::Widget { .. } => scope == Scope::Ask,
            Principal::Operator { .. } => false,
        }
    }

    /// The access groups limiting what this principal may retrieve, or `None` for the whole tenant (tenant API
    /// keys; operators read no content at all).
    pub fn access_groups(&self) -> Option<&[String]> {
        match self {
            Principal::Widget { groups, .. } => Some(groups),
            Principal::Tenant { groups, .. } => groups.as_deref(),
            Principal::Operator { .. } => None,
        }
    }

    /// A short, non-secret description for audit rows and logs (`api_key:<id>`, `widget:<token id>`,
    /// `operator:<id>`).
    pub fn actor(&self) -> String {
        match self {
            Principal::Tenant { key_id, .. } => format!("api_key:{key_id}"),
            Principal::Widget { token_id, .. } => format!("widget:{token_id}"),
            Principal::Operator { key_id } => format!("operator:{key_id}"),
        }
    }
}
