//! Failed authentications reach the audit log aggregated: one `auth.failed` event per (reason, presented key id)
//! per flush interval, with a count and the first and last time seen. An event per refused request would let
//! anyone with a bad key grow the audit log (and its hash chain) without bound; aggregated, a credential-stuffing
//! burst is one row per key id per interval. Never the credential: only its public part (the `rvk_` key's public
//! id, or a widget token's signing key id), which identifies it without granting anything.

use crate::GatewayError;
use ragvault_store::{AuditEntry, Store};
use std::collections::HashMap;
use std::sync::Mutex;
use time::OffsetDateTime;

/// Distinct (reason, key id) pairs held between flushes; past it, failures count under "many keys".
const MAX_PENDING: usize = 4096;

struct Pending {
    count: u64,
    first: OffsetDateTime,
    last: OffsetDateTime,
}

#[derive(Default)]
pub struct AuthFailures {
    pending: Mutex<HashMap<(&'static str, String), Pending>>,
}

/// The public part of a presented credential: `api_key:<public id>`, `widget_kid:<kid>`, or `unparsed`.
pub fn presented_key_id(authorization: &str) -> String {
    let token = authorization
        .strip_prefix("Bearer ")
        .unwrap_or_default()
        .trim();
    if let Ok(key) = ragvault_credentials::PresentedKey::parse(token) {
        return format!("api_key:{}", key.public_id());
    }
    let kid = token
        .strip_prefix("rvw1.")
        .and_then(|rest| rest.split('.').next())
        .filter(|kid| {
            !kid.is_empty() && kid.len() <= 64 && kid.bytes().all(|b| b.is_ascii_alphanumeric())
        });
    match kid {
        Some(kid) => format!("widget_kid:{kid}"),
        None => "unparsed".to_owned(),
    }
}

/// The stable code of an authentication failure, or none when `err` is not one (an absent header is not an
/// attempt; a store outage is not the caller's failure).
pub fn failure_code(err: &GatewayError) -> Option<&'static str> {
    Some(match err {
        GatewayError::MalformedCredentials => "malformed_credentials",
        GatewayError::InvalidCredentials => "invalid_api_key",
        GatewayError::KeyRevoked => "api_key_revoked",
        GatewayError::KeyExpired => "api_key_expired",
        GatewayError::TenantSuspended => "tenant_suspended",
        GatewayError::MalformedWidgetToken => "widget_token_malformed",
        GatewayError::WidgetTokenTampered => "widget_token_invalid_signature",
        GatewayError::WidgetKeyRetired => "widget_token_key_retired",
        GatewayError::WidgetTokenExpired => "widget_token_expired",
        GatewayError::WidgetOriginMismatch => "widget_token_origin_mismatch",
        GatewayError::WidgetWrongTenant => "widget_token_wrong_tenant",
        _ => return None,
    })
}

impl AuthFailures {
    pub fn record(&self, code: &'static str, key_id: String) {
        let now = OffsetDateTime::now_utc();
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let key_id =
            if pending.len() >= MAX_PENDING && !pending.contains_key(&(code, key_id.clone())) {
                "many_keys".to_owned()
            } else {
                key_id
            };
        let entry = pending.entry((code, key_id)).or_insert(Pending {
            count: 0,
            first: now,
            last: now,
        });
        entry.count += 1;
        entry.last = now;
    }

    /// Writes one `auth.failed` event per pending (reason, key id); returns how many. Events that cannot be
    /// written are put back for the next flush.
    pub async fn flush(&self, store: &Store) -> Result<usize, GatewayError> {
        let taken: Vec<((&'static str, String), Pending)> = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            pending.drain().collect()
        };
        let mut written = 0;
        let mut iter = taken.into_iter();
        while let Some(((code, key_id), failures)) = iter.next() {
            let entry = AuditEntry::new("system:auth", "auth.failed")
                .target(key_id.clone())
                .details(serde_json::json!({
                    "code": code,
                    "count": failures.count,
                    "first_at": failures.first.to_string(),
                    "last_at": failures.last.to_string(),
                }));
            if let Err(e) = store.append_audit(&entry).await {
                let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                for ((code, key_id), failures) in
                    std::iter::once(((code, key_id), failures)).chain(iter)
                {
                    let slot = pending.entry((code, key_id)).or_insert(Pending {
                        count: 0,
                        first: failures.first,
                        last: failures.last,
                    });
                    slot.count += failures.count;
                    slot.first = slot.first.min(failures.first);
                    slot.last = slot.last.max(failures.last);
                }
                return Err(e.into());
            }
            written += 1;
        }
        Ok(written)
    }

    /// Flushes every `every` until the process ends.
    pub async fn run(self: std::sync::Arc<Self>, store: Store, every: std::time::Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.flush(&store).await {
                tracing::warn!(error = %e, "could not audit failed authentications; retrying");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_public_part_of_a_credential_is_kept() {
        assert_eq!(presented_key_id("Basic abc"), "unparsed");
        assert_eq!(
            presented_key_id("Bearer rvw1.k7.claims.tag"),
            "widget_kid:k7"
        );
        assert_eq!(presented_key_id("Bearer rvw1..x.y"), "unparsed");
        assert_eq!(presented_key_id("Bearer sk-whatever"), "unparsed");
    }

    #[test]
    fn failures_aggregate_per_reason_and_key() {
        let failures = AuthFailures::default();
        for _ in 0..5 {
            failures.record("invalid_api_key", "api_key:abc".into());
        }
        failures.record("api_key_revoked", "api_key:abc".into());
        let pending = failures.pending.lock().unwrap_or_else(|p| p.into_inner());
        assert_eq!(pending.len(), 2);
        assert_eq!(
            pending
                .get(&("invalid_api_key", "api_key:abc".to_owned()))
                .map(|p| p.count),
            Some(5)
        );
    }
}
