//! Widget tokens: short-lived, signed, scope `ask` only, bound to a tenant and optionally to a browser
//! origin and an end-user subject.
//!
//! Format: `rvw1.<kid>.<claims>.<tag>`, claims and tag base64url without padding, the tag an HMAC-SHA256 of
//! `rvw1.<kid>.<claims>` under the signing key `kid` (derived by the credentials crate; ids live in
//! Postgres). Stateless to verify: no database row per token, so a widget burst costs no writes.

use crate::access::RequestContext;
use crate::GatewayError;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ragvault_core::{Principal, TenantId, TenantStatus, WidgetTokenId};
use ragvault_credentials::{KeySource, Secret, WidgetTokenKey};
use ragvault_store::{AccessChanges, GuardedCache, Store, StoreError, WidgetSigningKeyRecord};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// The longest a tenant's state is trusted from memory without an announced change.
const TENANT_STATE_TTL: Duration = Duration::from_secs(60);
const TENANT_STATE_CAPACITY: usize = 10_000;

pub const WIDGET_TOKEN_PREFIX: &str = "rvw1";
/// Access groups a token or document may carry, and how long a name may be.
pub const MAX_GROUPS: usize = 16;
pub const MAX_GROUP_CHARS: usize = 64;

/// Group names are short labels (`support`, `partners:emea`), compared without case.
pub fn valid_group_names(groups: &[String]) -> bool {
    groups.len() <= MAX_GROUPS
        && groups.iter().all(|g| {
            (1..=MAX_GROUP_CHARS).contains(&g.len())
                && g.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
}
/// Longest accepted token text: a bound on work done for garbage input.
const MAX_TOKEN_CHARS: usize = 2048;
const MAX_SUBJECT_CHARS: usize = 128;
/// Unknown key ids reload the key list at most this often, so forged ids cannot flood Postgres.
const RELOAD_AT_MOST_EVERY: Duration = Duration::from_secs(1);
/// Key ids are re-read this often anyway, so a rotation on another replica is seen promptly.
const REFRESH_EVERY: Duration = Duration::from_secs(30);

/// Lifetimes and where browsers may use tokens from.
#[derive(Clone, Debug)]
pub struct WidgetTokenSettings {
    pub default_ttl: Duration,
    pub max_ttl: Duration,
    /// Browser origins (`https://shop.example`) that may call ragvault with a widget token; the only
    /// origins CORS answers for, and the only ones a token may be bound to.
    pub allowed_origins: Vec<String>,
}

impl Default for WidgetTokenSettings {
    fn default() -> Self {
        WidgetTokenSettings {
            default_ttl: Duration::from_secs(600),
            max_ttl: Duration::from_secs(3600),
            allowed_origins: Vec::new(),
        }
    }
}

/// A widget subject (an end-user id the tenant's backend chose): 1 to 128 printable characters.
pub fn check_subject(subject: &str) -> Result<(), GatewayError> {
    let printable = subject.chars().all(|c| !c.is_control());
    if subject.is_empty() || subject.chars().count() > MAX_SUBJECT_CHARS || !printable {
        return Err(GatewayError::InvalidSubject {
            max_chars: MAX_SUBJECT_CHARS,
        });
    }
    Ok(())
}

/// What a tenant asks for when minting.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MintRequest {
    pub ttl_seconds: Option<u64>,
    pub origin: Option<String>,
    pub subject: Option<String>,
    /// Access groups the visitor may read (documents without groups are readable by every token).
    #[serde(default)]
    pub groups: Vec<String>,
}

/// A minted token, shown once to the tenant's backend, which hands it to the browser.
#[derive(Debug)]
pub struct MintedToken {
    pub token: Secret<String>,
    pub token_id: WidgetTokenId,
    pub expires_at: OffsetDateTime,
}

/// What a token says, after its signature checked out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Claims {
    #[serde(rename = "t")]
    tenant: TenantId,
    #[serde(rename = "j")]
    token_id: WidgetTokenId,
    #[serde(rename = "iat")]
    issued_at: i64,
    #[serde(rename = "exp")]
    expires_at: i64,
    #[serde(rename = "o", default, skip_serializing_if = "Option::is_none")]
    origin: Option<String>,
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    #[serde(rename = "g", default, skip_serializing_if = "Vec::is_empty")]
    groups: Vec<String>,
}

struct CachedKey {
    key: WidgetTokenKey,
    verify_until: Option<OffsetDateTime>,
}

#[derive(Default)]
struct KeyCache {
    keys: HashMap<String, Arc<CachedKey>>,
    /// The newest active key id: the one that signs.
    signing: Option<String>,
    loaded_at: Option<Instant>,
}

/// Mints and verifies widget tokens.
pub struct WidgetTokens {
    store: Store,
    source: Arc<KeySource>,
    settings: WidgetTokenSettings,
    cache: Mutex<KeyCache>,
    /// Each token's tenant state (`None`: deleted), so a widget request costs no round trip; voided by any
    /// announced change to tenants.
    tenant_states: GuardedCache<TenantId, Option<TenantStatus>>,
    // Serialises reloads so a burst of unknown ids makes one query, not one each.
    reload: tokio::sync::Mutex<()>,
}

impl WidgetTokens {
    pub fn new(
        store: Store,
        source: Arc<KeySource>,
        settings: WidgetTokenSettings,
        changes: Arc<AccessChanges>,
    ) -> Self {
        WidgetTokens {
            store,
            source,
            settings,
            cache: Mutex::new(KeyCache::default()),
            tenant_states: GuardedCache::new(changes, TENANT_STATE_TTL, TENANT_STATE_CAPACITY),
            reload: tokio::sync::Mutex::new(()),
        }
    }

    pub fn settings(&self) -> &WidgetTokenSettings {
        &self.settings
    }

    /// Whether browsers on `origin` may call ragvault (CORS) and have tokens bound to them.
    pub fn origin_allowed(&self, origin: &str) -> bool {
        self.settings.allowed_origins.iter().any(|o| o == origin)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, KeyCache> {
        // A panic while holding this lock cannot leave the map half-updated (updates are single swaps).
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Re-reads key ids unless another caller did so within `at_most_every`.
    async fn reload(&self, at_most_every: Duration) -> Result<(), GatewayError> {
        let _one_at_a_time = self.reload.lock().await;
        if self
            .cache()
            .loaded_at
            .is_some_and(|at| at.elapsed() < at_most_every)
        {
            return Ok(());
        }
        let mut records = self.store.widget_signing_keys().await?;
        if !records.iter().any(|r| r.retired_at.is_none()) {
            self.store.ensure_widget_signing_key(&new_kid()).await?;
            records = self.store.widget_signing_keys().await?;
        }
        self.install(records);
        Ok(())
    }

    fn install(&self, records: Vec<WidgetSigningKeyRecord>) {
        let mut cache = self.cache();
        let old = std::mem::take(&mut cache.keys);
        cache.signing = records
            .iter()
            .find(|r| r.retired_at.is_none())
            .map(|r| r.kid.clone());
        cache.keys = records
            .into_iter()
            .map(|r| {
                // Keep the derived key object when the id is already known: derivation is cheap, but
                // there is no reason to redo it.
                let key = match old.get(&r.kid) {
                    Some(known) if known.verify_until == r.verify_until => known.clone(),
                    _ => Arc::new(CachedKey {
                        key: self.source.widget_token_key(&r.kid),
                        verify_until: r.verify_until,
                    }),
                };
                (r.kid, key)
            })
            .collect();
        cache.loaded_at = Some(Instant::now());
    }

    fn stale(&self) -> bool {
        self.cache()
            .loaded_at
            .is_none_or(|at| at.elapsed() >= REFRESH_EVERY)
    }

    /// Mints a token for `tenant`.
    pub async fn mint(
        &self,
        tenant: TenantId,
        request: &MintRequest,
        now: OffsetDateTime,
    ) -> Result<MintedToken, GatewayError> {
        let ttl = match request.ttl_seconds {
            None => self.settings.default_ttl,
            Some(s) if s >= 1 && s <= self.settings.max_ttl.as_secs() => Duration::from_secs(s),
            Some(_) => {
                return Err(GatewayError::InvalidTokenTtl {
                    max_seconds: self.settings.max_ttl.as_secs(),
                })
            }
        };
        if let Some(origin) = &request.origin {
            if !self.origin_allowed(origin) {
                return Err(GatewayError::OriginNotAllowed(origin.clone()));
            }
        }
        if let Some(subject) = &request.subject {
            check_subject(subject)?;
        }
        if !valid_group_names(&request.groups) {
            return Err(GatewayError::InvalidGroups {
                max_groups: MAX_GROUPS,
                max_chars: MAX_GROUP_CHARS,
            });
        }
        if self.stale() {
            self.reload(Duration::ZERO).await?;
        }
        let (kid, key) = {
            let cache = self.cache();
            let kid = cache.signing.clone();
            let key = kid.as_ref().and_then(|k| cache.keys.get(k).cloned());
            match (kid, key) {
                (Some(kid), Some(key)) => (kid, key),
                _ => {
                    return Err(GatewayError::Store(StoreError::Corrupt {
                        table: "widget_signing_keys",
                        reason: "no active signing key after creating one".to_owned(),
                    }))
                }
            }
        };
        let expires_at = now + ttl;
        let claims = Claims {
            tenant,
            token_id: WidgetTokenId::new(),
            issued_at: now.unix_timestamp(),
            expires_at: expires_at.unix_timestamp(),
            origin: request.origin.clone(),
            subject: request.subject.clone(),
            groups: request.groups.iter().map(|g| g.to_lowercase()).collect(),
        };
        let payload = serde_json::to_vec(&claims).map_err(|e| {
            GatewayError::Store(StoreError::Corrupt {
                table: "widget_signing_keys",
                reason: format!("claims do not serialise: {e}"),
            })
        })?;
        let signed = format!(
            "{WIDGET_TOKEN_PREFIX}.{kid}.{}",
            URL_SAFE_NO_PAD.encode(payload)
        );
        let tag = key.key.sign(signed.as_bytes());
        Ok(MintedToken {
            token: Secret::new(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag))),
            token_id: claims.token_id,
            // Whole seconds, as the token says.
            expires_at: OffsetDateTime::from_unix_timestamp(claims.expires_at)
                .unwrap_or(expires_at),
        })
    }

    /// Checks a presented token: signature, key, expiry, then the request's origin and tenant hint.
    /// `tenant_hint` is the tenant the calling page says it belongs to (`x-ragvault-tenant`), if any.
    pub async fn verify(
        &self,
        token: &str,
        origin: Option<&str>,
        tenant_hint: Option<TenantId>,
        now: OffsetDateTime,
    ) -> Result<Principal, GatewayError> {
        let presented = UnverifiedWidgetToken::parse(token)?;
        let kid = presented.kid();
        if self.stale() {
            // Picks up rotations and retirements made by other replicas (one query per interval).
            self.reload(REFRESH_EVERY).await?;
        }
        let key = match self.key(kid) {
            Some(key) => key,
            None => {
                self.reload(RELOAD_AT_MOST_EVERY).await?;
                self.key(kid).ok_or(GatewayError::WidgetKeyRetired)?
            }
        };
        if !key.key.verify(presented.signed.as_bytes(), &presented.tag) {
            return Err(GatewayError::WidgetTokenTampered);
        }
        if key.verify_until.is_some_and(|until| until <= now) {
            return Err(GatewayError::WidgetKeyRetired);
        }
        let claims = presented.decoded_claims()?;
        if claims.expires_at <= now.unix_timestamp() {
            return Err(GatewayError::WidgetTokenExpired);
        }
        if let Some(bound) = &claims.origin {
            if origin != Some(bound.as_str()) {
                return Err(GatewayError::WidgetOriginMismatch);
            }
        }
        if tenant_hint.is_some_and(|hint| hint != claims.tenant) {
            return Err(GatewayError::WidgetWrongTenant);
        }
        match self.tenant_state(claims.tenant).await? {
            Some(TenantStatus::Active) => {}
            Some(_) => return Err(GatewayError::TenantSuspended),
            // Signed by us for a tenant that has since been deleted.
            None => return Err(GatewayError::WidgetWrongTenant),
        }
        Ok(Principal::Widget {
            tenant_id: claims.tenant,
            token_id: claims.token_id,
            subject: claims.subject,
            groups: claims.groups,
        })
    }

    async fn tenant_state(&self, tenant: TenantId) -> Result<Option<TenantStatus>, GatewayError> {
        if let Some(state) = self.tenant_states.get(&tenant) {
            return Ok(state);
        }
        let ticket = self.tenant_states.ticket();
        let state = match self.store.get_tenant(tenant).await {
            Ok(record) => Some(record.status),
            Err(StoreError::NotFound(_)) => None,
            Err(e) => return Err(e.into()),
        };
        self.tenant_states.put(ticket, tenant, state);
        Ok(state)
    }

    fn key(&self, kid: &str) -> Option<Arc<CachedKey>> {
        self.cache().keys.get(kid).cloned()
    }

    /// Starts a new signing key; the previous one verifies tokens for one more maximum token lifetime.
    pub async fn rotate(&self, ctx: &RequestContext) -> Result<String, GatewayError> {
        let kid = new_kid();
        let grace = time::Duration::try_from(self.settings.max_ttl).unwrap_or(time::Duration::HOUR);
        let audit = ctx
            .audit("widget_signing_key.rotated")
            .target(format!("widget_signing_key:{kid}"));
        self.store
            .rotate_widget_signing_key(&kid, grace, &audit)
            .await?;
        self.reload(Duration::ZERO).await?;
        Ok(kid)
    }

    /// Every key id that still verifies, newest first (for operators; never key material).
    pub async fn list_keys(&self) -> Result<Vec<WidgetSigningKeyRecord>, GatewayError> {
        Ok(self.store.widget_signing_keys().await?)
    }
}

/// Whether an `Authorization` bearer value is a widget token (rather than an API key).
pub fn is_widget_token(token: &str) -> bool {
    token
        .strip_prefix(WIDGET_TOKEN_PREFIX)
        .is_some_and(|rest| rest.starts_with('.'))
}

/// A presented token taken apart, before any key is looked up or the tag checked: everything in it is
/// still the caller's say-so.
#[derive(Debug)]
pub struct UnverifiedWidgetToken<'a> {
    signed: &'a str,
    kid: &'a str,
    claims: &'a str,
    tag: Vec<u8>,
}

impl<'a> UnverifiedWidgetToken<'a> {
    /// Splits `rvw1.<kid>.<claims>.<tag>` and decodes the tag; `MalformedWidgetToken` for anything else.
    pub fn parse(token: &'a str) -> Result<UnverifiedWidgetToken<'a>, GatewayError> {
        if token.len() > MAX_TOKEN_CHARS {
            return Err(GatewayError::MalformedWidgetToken);
        }
        let (signed, tag) = token
            .rsplit_once('.')
            .ok_or(GatewayError::MalformedWidgetToken)?;
        let mut parts = signed.split('.');
        let (Some(WIDGET_TOKEN_PREFIX), Some(kid), Some(claims), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(GatewayError::MalformedWidgetToken);
        };
        let kid_ok = (1..=32).contains(&kid.len())
            && kid
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !kid_ok || claims.is_empty() || tag.is_empty() {
            return Err(GatewayError::MalformedWidgetToken);
        }
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| GatewayError::MalformedWidgetToken)?;
        Ok(UnverifiedWidgetToken {
            signed,
            kid,
            claims,
            tag,
        })
    }

    /// The signing key id the token names.
    pub fn kid(&self) -> &'a str {
        self.kid
    }

    /// Decodes the claims; only meaningful once the tag has been verified (`WidgetTokens::verify`).
    pub fn claims(&self) -> Result<(), GatewayError> {
        self.decoded_claims().map(|_| ())
    }

    fn decoded_claims(&self) -> Result<Claims, GatewayError> {
        URL_SAFE_NO_PAD
            .decode(self.claims)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or(GatewayError::MalformedWidgetToken)
    }
}

/// A fresh key id: 16 hex characters, random.
fn new_kid() -> String {
    let id = uuid::Uuid::new_v4();
    hex_prefix(id.as_bytes())
}

fn hex_prefix(bytes: &[u8]) -> String {
    bytes[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_only_well_formed_tokens() {
        assert!(UnverifiedWidgetToken::parse("rvw1.abc.e30.AAAA").is_ok());
        for bad in [
            "",
            "rvw1",
            "rvw1.abc.e30",
            "rvw2.abc.e30.AAAA",
            "rvw1.ABC.e30.AAAA",
            "rvw1.abc..AAAA",
            "rvw1.abc.e30.",
            "rvw1.abc.e30.x.AAAA",
            "rvw1..e30.AAAA",
        ] {
            assert!(
                matches!(
                    UnverifiedWidgetToken::parse(bad),
                    Err(GatewayError::MalformedWidgetToken)
                ),
                "{bad}"
            );
        }
        assert!(
            UnverifiedWidgetToken::parse(&format!("rvw1.abc.{}.AAAA", "e".repeat(3000))).is_err()
        );
    }

    #[test]
    fn recognises_widget_tokens() {
        assert!(is_widget_token("rvw1.abc.e30.AAAA"));
        assert!(!is_widget_token("rvk_abc_def"));
        assert!(!is_widget_token("rvw1abc"));
    }

    #[test]
    fn key_ids_are_short_hex() {
        let kid = new_kid();
        assert_eq!(kid.len(), 16);
        assert!(kid.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(kid, new_kid());
    }
}
