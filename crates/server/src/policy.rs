//! A tenant's policy: the keys the admin API's `policy`, the policy files and the stored JSON share, validated
//! against the configuration when set, and enforced on every request by the parts they name.

use crate::config::{ProviderSettings, Settings};
use crate::error::ApiError;
use axum::http::StatusCode;
use ragvault_generation::{DataControls, PiiCategory};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The policy keys this build enforces; unknown keys are refused rather than silently ignored.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TenantPolicy {
    /// What ingest does with a document containing a credential: `reject` (default) or `redact`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_policy: Option<ragvault_ingest::secrets::SecretPolicy>,
    /// Providers `/v1/ask` tries in order (`local` and configured `[providers.NAME]` entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover_chain: Option<Vec<String>>,
    /// PII categories pseudonymized before text leaves for a provider (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pii_categories: Option<Vec<PiiCategory>>,
    /// Monthly budget (UTC calendar month) in micro-USD: no provider call whose worst case would pass it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_micro_usd: Option<u64>,
    /// Spend past this raises an audit event and a metric, once a month.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_soft_micro_usd: Option<u64>,
    /// Requests and provider tokens per minute, per tenant and per principal (per replica; 0 = unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limits: Option<ragvault_gateway::RateLimits>,
    /// Spike detection thresholds and response (`audit` or `suspend`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anomaly: Option<ragvault_gateway::AnomalyPolicy>,
    /// Providers the tenant's text may reach (`local` included); absent = every configured provider. Chain
    /// members outside the list are skipped on every request, even when the configuration changes later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_providers: Option<Vec<String>>,
    /// Chat models the tenant's requests may use (the `model` of `[providers.NAME]`); absent = any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_models: Option<Vec<String>>,
    /// Provider regions (the `region` of `[providers.NAME]`) the tenant's text may be processed in; a provider
    /// without a region is outside every list. `local` never leaves the process and is always inside.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_regions: Option<Vec<String>>,
    /// Per-request provider data controls (OpenAI `store`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_controls: Option<DataControls>,
    /// Most sources a request may ask for (at most `search.max_top_k`); a request without `top_k` gets
    /// `search.default_top_k` capped to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_top_k: Option<usize>,
    /// Largest document the tenant may upload, in bytes (at most `http.body_limit_bytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_document_bytes: Option<u64>,
    /// What `/v1/chat/completions` does: `grounded` (default: retrieval, sources, citations) or `plain` (a
    /// brokered call: the client's messages to the tenant's chain, with key lease, budget, metering and audit,
    /// and no retrieval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_mode: Option<ChatMode>,
    /// Documents older than this many days are deleted (their chunks, vectors and index points with them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatMode {
    Grounded,
    Plain,
}

/// A provider a request could reach, as the allow lists see it.
pub struct ProviderFacts<'a> {
    pub name: &'a str,
    pub model: Option<&'a str>,
    pub region: Option<&'a str>,
}

impl<'a> ProviderFacts<'a> {
    /// What the configuration says about `name` (`local` is the in-process answerer).
    pub fn of(
        providers: &'a BTreeMap<String, ProviderSettings>,
        name: &'a str,
    ) -> ProviderFacts<'a> {
        let provider = providers.get(name);
        ProviderFacts {
            name,
            model: provider.and_then(|p| p.model.as_deref()),
            region: provider.and_then(|p| p.region.as_deref()),
        }
    }
}

impl TenantPolicy {
    /// The policy as stored. It was validated when set, so a policy that no longer parses (written by a
    /// newer build, or edited by hand) is refused rather than read as "no restrictions".
    pub fn from_stored(stored: &serde_json::Value) -> Result<TenantPolicy, ApiError> {
        if stored.is_null() {
            return Ok(TenantPolicy::default());
        }
        serde_json::from_value(stored.clone()).map_err(|e| {
            tracing::error!(error = %e, "a stored tenant policy does not parse");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "policy_unreadable",
                "the tenant's policy cannot be read; an operator must set it again",
            )
        })
    }

    /// Why the policy keeps its text away from `provider`, if it does: the key that says so and the reason.
    pub fn refusal(&self, provider: &ProviderFacts<'_>) -> Option<(&'static str, String)> {
        let name = provider.name;
        if let Some(allowed) = &self.allowed_providers {
            if !allowed.iter().any(|a| a == name) {
                return Some((
                    "allowed_providers",
                    format!("`{name}` is not in allowed_providers"),
                ));
            }
        }
        if name == "local" {
            return None;
        }
        if let (Some(allowed), Some(model)) = (&self.allowed_models, provider.model) {
            if !allowed.iter().any(|a| a == model) {
                return Some((
                    "allowed_models",
                    format!("`{name}` uses model `{model}`, which is not in allowed_models"),
                ));
            }
        }
        if let Some(allowed) = &self.allowed_regions {
            match provider.region {
                Some(region) if allowed.iter().any(|a| a == region) => {}
                Some(region) => {
                    return Some((
                        "allowed_regions",
                        format!(
                            "`{name}` is in region `{region}`, which is not in allowed_regions"
                        ),
                    ))
                }
                None => {
                    return Some((
                        "allowed_regions",
                        format!("`{name}` declares no region ([providers.{name}] region)"),
                    ))
                }
            }
        }
        None
    }

    /// Checks the policy against the configuration; the error message starts with `policy.<key>: `.
    pub fn validate(&self, settings: &Settings) -> Result<(), ApiError> {
        let invalid = |code: &'static str, key: &str, reason: String| {
            Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                code,
                format!("policy.{key}: {reason}"),
            ))
        };
        match (self.budget_micro_usd, self.budget_soft_micro_usd) {
            (None, Some(_)) => {
                return invalid(
                    "invalid_policy",
                    "budget_soft_micro_usd",
                    "needs budget_micro_usd".into(),
                )
            }
            (Some(hard), Some(soft)) if soft > hard => {
                return invalid(
                    "invalid_policy",
                    "budget_soft_micro_usd",
                    "must not exceed budget_micro_usd".into(),
                )
            }
            (Some(hard), _) if hard > i64::MAX as u64 => {
                return invalid("invalid_policy", "budget_micro_usd", "too large".into())
            }
            _ => {}
        }
        for (key, list) in [
            ("allowed_providers", &self.allowed_providers),
            ("allowed_models", &self.allowed_models),
            ("allowed_regions", &self.allowed_regions),
        ] {
            if list
                .as_ref()
                .is_some_and(|l| l.is_empty() || l.iter().any(|x| x.trim().is_empty()))
            {
                return invalid(
                    "invalid_policy",
                    key,
                    "name at least one, and no empty names".into(),
                );
            }
        }
        if let Some(allowed) = &self.allowed_providers {
            if let Some(problem) = allowed
                .iter()
                .find_map(|name| settings.chain_member_problem(name))
            {
                return invalid("unknown_provider", "allowed_providers", problem);
            }
        }
        if let Some(chain) = &self.failover_chain {
            if chain.is_empty() {
                return invalid(
                    "invalid_policy",
                    "failover_chain",
                    "name at least one provider".into(),
                );
            }
            if let Some(problem) = chain
                .iter()
                .find_map(|name| settings.chain_member_problem(name))
            {
                return invalid("unknown_provider", "failover_chain", problem);
            }
            if let Some((_, reason)) = chain
                .iter()
                .find_map(|name| self.refusal(&ProviderFacts::of(&settings.providers, name)))
            {
                return invalid("invalid_policy", "failover_chain", reason);
            }
        } else if !settings.generation.chain.iter().any(|name| {
            self.refusal(&ProviderFacts::of(&settings.providers, name))
                .is_none()
        }) {
            let (key, reason) = settings
                .generation
                .chain
                .iter()
                .find_map(|name| self.refusal(&ProviderFacts::of(&settings.providers, name)))
                .unwrap_or(("failover_chain", String::new()));
            return invalid(
                "invalid_policy",
                key,
                format!(
                    "it allows no provider of the default chain ({reason}); set failover_chain"
                ),
            );
        }
        // The embedder is shared by every tenant (one vector space per index): a tenant whose policy keeps
        // its text from the embedding provider cannot be served at all, so say so now.
        let embedder = settings.embedding.provider.as_str();
        if embedder != "local" {
            let facts = ProviderFacts {
                model: None,
                ..ProviderFacts::of(&settings.providers, embedder)
            };
            if let Some((key, reason)) = self.refusal(&facts) {
                return invalid(
                    "invalid_policy",
                    key,
                    format!("every question and document is embedded by the embedding provider, and {reason}"),
                );
            }
        }
        if let Some(max) = self.max_top_k {
            if max == 0 || max > settings.search.max_top_k {
                return invalid(
                    "invalid_policy",
                    "max_top_k",
                    format!(
                        "must be between 1 and search.max_top_k ({})",
                        settings.search.max_top_k
                    ),
                );
            }
        }
        if let Some(max) = self.max_document_bytes {
            let limit = settings.http.body_limit_bytes as u64;
            if max == 0 || max > limit {
                return invalid(
                    "invalid_policy",
                    "max_document_bytes",
                    format!("must be between 1 and http.body_limit_bytes ({limit})"),
                );
            }
        }
        if self.retention_days == Some(0) {
            return invalid(
                "invalid_policy",
                "retention_days",
                "must be at least 1 (leave it out to keep documents until deleted)".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(name: &'a str, model: &'a str, region: Option<&'a str>) -> ProviderFacts<'a> {
        ProviderFacts {
            name,
            model: Some(model),
            region,
        }
    }

    #[test]
    fn allow_lists_refuse_with_the_key_that_says_so() {
        let open = TenantPolicy::default();
        assert!(open.refusal(&facts("openai", "m", None)).is_none());
        let policy = TenantPolicy {
            allowed_providers: Some(vec!["openai".into(), "local".into()]),
            allowed_models: Some(vec!["small".into()]),
            allowed_regions: Some(vec!["eu".into()]),
            ..TenantPolicy::default()
        };
        let key = |f: ProviderFacts<'_>| policy.refusal(&f).map(|(key, _)| key);
        assert_eq!(
            key(facts("mistral", "small", Some("eu"))),
            Some("allowed_providers")
        );
        assert_eq!(
            key(facts("openai", "large", Some("eu"))),
            Some("allowed_models")
        );
        assert_eq!(
            key(facts("openai", "small", Some("us"))),
            Some("allowed_regions")
        );
        assert_eq!(key(facts("openai", "small", None)), Some("allowed_regions"));
        assert_eq!(key(facts("openai", "small", Some("eu"))), None);
        // The in-process answerer has no model or region to check.
        assert_eq!(key(facts("local", "extractive", None)), None);
    }

    #[test]
    fn stored_policies_that_do_not_parse_are_refused_not_ignored() {
        assert_eq!(
            TenantPolicy::from_stored(&serde_json::Value::Null).ok(),
            Some(TenantPolicy::default())
        );
        let unknown = serde_json::json!({"allowed_regions": ["eu"], "future_key": 1});
        let err = TenantPolicy::from_stored(&unknown)
            .err()
            .map(|e| e.body.code);
        assert_eq!(err, Some("policy_unreadable"));
    }
}
