//! Provider keys: where they live and how one is read, for either backend.

use crate::error::RevokedState;
use crate::vault::KvRead;
use crate::{CredentialsError, Secret};
use ragvault_core::TenantId;
use std::fmt;

/// Which provider key: an operator-wide key, or a tenant's own key for that provider.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProviderKeyRef {
    pub provider: String,
    pub tenant: Option<TenantId>,
    /// The sandbox key (`ragvault/sandbox/providers/<name>`), used for sandbox tenants only and never
    /// replaced by a production key.
    pub sandbox: bool,
}

impl ProviderKeyRef {
    pub fn operator(provider: &str) -> ProviderKeyRef {
        ProviderKeyRef {
            provider: provider.to_owned(),
            tenant: None,
            sandbox: false,
        }
    }

    pub fn sandbox(provider: &str) -> ProviderKeyRef {
        ProviderKeyRef {
            provider: provider.to_owned(),
            tenant: None,
            sandbox: true,
        }
    }

    pub fn tenant(provider: &str, tenant: TenantId) -> ProviderKeyRef {
        ProviderKeyRef {
            provider: provider.to_owned(),
            tenant: Some(tenant),
            sandbox: false,
        }
    }
}

impl fmt::Display for ProviderKeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.tenant, self.sandbox) {
            (Some(t), _) => write!(f, "{} (tenant {t})", self.provider),
            (None, true) => write!(f, "{} (sandbox)", self.provider),
            (None, false) => f.write_str(&self.provider),
        }
    }
}

/// Provider names are path segments in Vault and keys in the keyring: keep them boring.
pub fn validate_provider_name(name: &str) -> Result<(), CredentialsError> {
    let ok = (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(CredentialsError::VaultConfig(format!(
            "invalid provider name `{name}`: use 1-32 lowercase letters, digits, - or _"
        )))
    }
}

/// KV path (below the mount) of the operator-wide key.
pub fn operator_path(provider: &str) -> String {
    format!("ragvault/providers/{provider}")
}

/// KV path (below the mount) of the key sandbox tenants use.
pub fn sandbox_path(provider: &str) -> String {
    format!("ragvault/sandbox/providers/{provider}")
}

/// KV path (below the mount) of a tenant's own key.
pub fn tenant_path(tenant: TenantId, provider: &str) -> String {
    format!("ragvault/tenants/{tenant}/providers/{provider}")
}

/// A provider key as read from the key source.
pub struct FetchedKey {
    pub key: Secret<String>,
    pub version: u64,
    pub base_url: Option<String>,
    pub organization: Option<String>,
    /// Where it came from, for status output (`vault:secret/ragvault/providers/openai`, `local:...`).
    pub source: String,
}

impl fmt::Debug for FetchedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FetchedKey")
            .field("version", &self.version)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Turns a KV read into a key, checking the fields. `display_path` is what errors name.
pub(crate) fn parse_read(
    read: KvRead,
    display_path: &str,
    source: String,
) -> Result<FetchedKey, CredentialsError> {
    let (mut data, version) = match read {
        KvRead::Found { data, version } => (data, version),
        KvRead::Revoked(state) => {
            return Err(CredentialsError::SecretRevoked {
                path: display_path.to_owned(),
                state,
            })
        }
    };
    let malformed = |reason: &str| CredentialsError::MalformedSecret {
        path: display_path.to_owned(),
        reason: reason.to_owned(),
    };
    let key = match data.remove("api_key") {
        Some(serde_json::Value::String(key)) if !key.trim().is_empty() => Secret::new(key),
        Some(serde_json::Value::String(_)) => return Err(malformed("field `api_key` is empty")),
        Some(_) => return Err(malformed("field `api_key` is not a string")),
        None => return Err(malformed("required field `api_key` is missing")),
    };
    let optional = |data: &mut serde_json::Map<String, serde_json::Value>, field: &str| match data
        .remove(field)
    {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(malformed(&format!("field `{field}` is not a string"))),
    };
    let base_url = optional(&mut data, "base_url")?;
    if let Some(url) = &base_url {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(malformed("field `base_url` is not an http(s) URL"));
        }
    }
    let organization = optional(&mut data, "organization")?;
    Ok(FetchedKey {
        key,
        version,
        base_url,
        organization,
        source,
    })
}

/// Is this read a path that was never written (so a tenant lookup may fall back to the operator key)?
pub(crate) fn is_missing(read: &KvRead) -> bool {
    matches!(read, KvRead::Revoked(RevokedState::Missing))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn found(value: serde_json::Value) -> KvRead {
        KvRead::Found {
            data: value.as_object().unwrap().clone(),
            version: 3,
        }
    }

    #[test]
    fn parses_fields_and_rejects_bad_ones_without_echoing_values() {
        let ok = parse_read(
            found(
                json!({"api_key": "sk-test-123", "base_url": "https://x", "organization": "org"}),
            ),
            "p",
            "s".into(),
        )
        .unwrap();
        assert_eq!(ok.version, 3);
        assert_eq!(ok.key.expose_secret(), "sk-test-123");
        assert_eq!(ok.organization.as_deref(), Some("org"));

        for (bad, needle) in [
            (json!({}), "missing"),
            (json!({"api_key": ""}), "empty"),
            (json!({"api_key": 42}), "not a string"),
            (
                json!({"api_key": "sk-x", "base_url": "ftp://nope"}),
                "base_url",
            ),
            (
                json!({"api_key": "sk-x", "organization": 7}),
                "organization",
            ),
        ] {
            let err =
                parse_read(found(bad), "secret/ragvault/providers/openai", "s".into()).unwrap_err();
            let message = err.to_string();
            assert!(message.contains(needle), "{message}");
            assert!(
                message.contains("secret/ragvault/providers/openai"),
                "{message}"
            );
            assert!(!message.contains("sk-x"), "{message}");
        }
    }

    #[test]
    fn provider_names() {
        assert!(validate_provider_name("openai").is_ok());
        assert!(validate_provider_name("azure-openai_2").is_ok());
        for bad in ["", "OpenAI", "a/b", "..", &"x".repeat(33)] {
            assert!(validate_provider_name(bad).is_err(), "{bad}");
        }
    }
}
