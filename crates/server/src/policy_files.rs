//! Tenant policies as code: `<policies.dir>/<tenant-slug>.toml`, the same keys as the admin API's `policy`.
//! Loaded at start and on SIGHUP (or `POST /v1/admin/policies/reload`): every file is parsed and validated
//! first, and a single bad file applies nothing, with an error naming the file, the key and the reason. A
//! changed policy is written like an admin API change (audited); files for unknown tenants are reported.

use crate::policy::TenantPolicy;
use crate::state::AppState;
use ragvault_gateway::RequestContext;
use serde::Serialize;
use std::fmt;
use std::path::Path;

/// One thing wrong with one policy file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PolicyFileProblem {
    pub file: String,
    pub key: String,
    pub reason: String,
}

impl fmt::Display for PolicyFileProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.file, self.key, self.reason)
    }
}

/// What a reload did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReloadReport {
    pub applied: Vec<String>,
    pub unchanged: Vec<String>,
    pub unknown_tenants: Vec<String>,
}

/// Parses and validates every `*.toml` in `dir` into `(slug, policy)`, or every problem found.
fn read_dir(
    state: &AppState,
    dir: &Path,
) -> Result<Vec<(String, TenantPolicy)>, Vec<PolicyFileProblem>> {
    let mut problems = Vec::new();
    let mut policies = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            return Err(vec![PolicyFileProblem {
                file: dir.display().to_string(),
                key: "-".into(),
                reason: format!("cannot read the directory: {e}"),
            }])
        }
    };
    let mut paths: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    for path in paths {
        let file = path.display().to_string();
        let problem = |key: &str, reason: String| PolicyFileProblem {
            file: file.clone(),
            key: key.to_owned(),
            reason,
        };
        let slug = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Err(e) = ragvault_core::TenantSlug::parse(&slug) {
            problems.push(problem("(file name)", format!("not a tenant slug: {e}")));
            continue;
        }
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) => {
                problems.push(problem("-", format!("cannot read: {e}")));
                continue;
            }
        };
        match parse_policy(&text) {
            Ok(policy) => match policy.validate(&state.settings) {
                Ok(()) => policies.push((slug, policy)),
                Err(e) => {
                    let (key, reason) = e
                        .body
                        .message
                        .split_once(": ")
                        .map(|(k, r)| (k.trim_start_matches("policy.").to_owned(), r.to_owned()))
                        .unwrap_or(("-".to_owned(), e.body.message.clone()));
                    problems.push(problem(&key, reason));
                }
            },
            Err((key, reason)) => problems.push(problem(&key, reason)),
        }
    }
    if problems.is_empty() {
        Ok(policies)
    } else {
        Err(problems)
    }
}

/// A policy file's text as a policy (syntax, then keys; not yet validated against the configuration), or
/// the key at fault (`(syntax)` for TOML that does not parse, `-` for the whole file) and the reason.
pub(crate) fn parse_policy(text: &str) -> Result<TenantPolicy, (String, String)> {
    let value: toml::Value =
        toml::from_str(text).map_err(|e| ("(syntax)".to_owned(), e.message().to_owned()))?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let key = e.path().to_string();
        // The whole file (`.`), or a key with no name (`[""]`): named `-` rather than left blank.
        let key = if key == "." || key.is_empty() {
            "-".to_owned()
        } else {
            key
        };
        (key, e.into_inner().message().to_owned())
    })
}

/// Reads `policies.dir` and applies every changed policy; nothing is applied when any file is bad.
pub async fn reload(state: &AppState, ctx: &RequestContext) -> Result<ReloadReport, ReloadError> {
    let Some(dir) = state.settings.policies.dir.clone() else {
        return Ok(ReloadReport::default());
    };
    let policies = read_dir(state, &dir).map_err(ReloadError::Invalid)?;
    let mut report = ReloadReport::default();
    for (slug, policy) in policies {
        let tenant = match state.access.get_tenant_by_slug(&slug).await {
            Ok(tenant) => tenant,
            Err(ragvault_gateway::GatewayError::Store(ragvault_store::StoreError::NotFound(_))) => {
                report.unknown_tenants.push(slug);
                continue;
            }
            Err(e) => return Err(ReloadError::Apply(e.into())),
        };
        let wanted = serde_json::json!(policy);
        if tenant.policy == wanted {
            report.unchanged.push(slug);
            continue;
        }
        state.generator.forget(tenant.id);
        state
            .access
            .set_tenant_policy(tenant.id, wanted, ctx)
            .await
            .map_err(|e| ReloadError::Apply(e.into()))?;
        report.applied.push(slug);
    }
    Ok(report)
}

#[derive(Debug)]
pub enum ReloadError {
    /// Files that do not parse or validate; nothing was applied.
    Invalid(Vec<PolicyFileProblem>),
    /// Applying failed (the database, most likely).
    Apply(crate::error::ApiError),
}

impl fmt::Display for ReloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReloadError::Invalid(problems) => {
                let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
                f.write_str(&list.join("; "))
            }
            ReloadError::Apply(e) => write!(f, "{}", e.body.message),
        }
    }
}

/// Reloads on every SIGHUP; a bad set of files is logged and the policies in force stay.
#[cfg(unix)]
pub async fn reload_on_sighup(state: AppState) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP: policy files reload only through the admin API");
        return;
    };
    while hangups.recv().await.is_some() {
        let ctx = RequestContext::new("system:sighup", None);
        match reload(&state, &ctx).await {
            Ok(report) => {
                tracing::info!(applied = ?report.applied, unknown = ?report.unknown_tenants, "policy files reloaded")
            }
            Err(e) => {
                tracing::error!(error = %e, "policy files not reloaded; the policies in force stay")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_policy;

    fn refusal(text: &str) -> (String, String) {
        parse_policy(text).err().unwrap_or_default()
    }

    #[test]
    fn a_refused_file_names_the_key_at_fault() {
        assert!(parse_policy("max_top_k = 8\nchat_mode = \"plain\"\n").is_ok());
        assert_eq!(refusal("max_top_k = \"many\"").0, "max_top_k");
        assert_eq!(refusal("max_top_k = ").0, "(syntax)");
        // Found by the policy_file fuzz target: a table with an empty name was refused with a blank key.
        let (key, reason) = refusal("[\"\"]");
        assert_eq!(key, "-");
        assert!(reason.contains("unknown field"), "{reason}");
    }
}
