use crate::widget::{is_widget_token, WidgetTokenSettings, WidgetTokens};
use crate::GatewayError;
use ragvault_core::{
    ApiKeyId, Environment, OperatorKeyId, Principal, Scope, Scopes, TenantId, TenantSlug,
    TenantStatus,
};
use ragvault_credentials::{ApiKeyHasher, DirectoryKey, KeySource, PresentedKey, Secret};
use ragvault_store::{
    AccessChanges, ApiKeyRecord, AuditEntry, CredentialKind, CredentialRow, DataKeyPurpose,
    GuardedCache, NewApiKey, NewDataKey, NewOperatorKey, NewTenant, Store, TenantRecord,
};
use serde_json::json;
use std::sync::Arc;
use time::{Duration, OffsetDateTime};

/// Keys may live at most this long; longer-lived credentials should be re-issued, not stretched.
const MAX_KEY_LIFETIME_DAYS: i64 = 3650;

/// Who asked for a change and under which request id, for the audit log.
#[derive(Clone, Debug)]
pub struct RequestContext {
    pub actor: String,
    pub request_id: Option<String>,
}

impl RequestContext {
    pub fn new(actor: impl Into<String>, request_id: Option<String>) -> RequestContext {
        RequestContext {
            actor: actor.into(),
            request_id,
        }
    }

    /// An audit entry by this actor under this request id.
    pub fn audit_entry(&self, action: &'static str) -> AuditEntry {
        self.audit(action)
    }

    pub(crate) fn audit(&self, action: &'static str) -> AuditEntry {
        AuditEntry::new(self.actor.clone(), action).request_id(self.request_id.clone())
    }
}

/// A tenant as shown to operators, with its slug unsealed.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TenantView {
    pub id: TenantId,
    pub slug: String,
    pub status: TenantStatus,
    pub environment: Environment,
    pub policy: serde_json::Value,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A new tenant and its first key, shown once.
#[derive(Debug)]
pub struct CreatedTenant {
    pub tenant: TenantView,
    pub key: ApiKeyRecord,
    pub api_key: Secret<String>,
}

#[derive(Debug)]
pub struct IssuedApiKey {
    pub key: ApiKeyRecord,
    pub api_key: Secret<String>,
}

#[derive(Debug)]
pub struct IssuedOperatorKey {
    pub id: OperatorKeyId,
    pub api_key: Secret<String>,
}

/// Authentication and key management over the store.
#[derive(Clone)]
pub struct AccessControl {
    store: Store,
    hasher: Arc<ApiKeyHasher>,
    directory: Arc<DirectoryKey>,
    keys: Arc<KeySource>,
    widgets: Arc<WidgetTokens>,
    failures: Arc<crate::auth_failures::AuthFailures>,
    /// Key rows by public id, so a request authenticates without a round trip; voided by any announced
    /// change to keys or tenants (see `ragvault_store::AccessChanges`). The hash is still checked on every
    /// request: only what Postgres said is kept, never a verdict.
    credentials: Arc<GuardedCache<String, Arc<Vec<CredentialRow>>>>,
    /// Told of changes made here at once: the notification from Postgres could arrive after the caller's
    /// next request.
    changes: Arc<AccessChanges>,
    /// When this replica last wrote each key's `last_used_at`: the column has minute resolution, so a busy
    /// key costs one write a minute rather than one statement per request.
    last_touched: Arc<std::sync::Mutex<std::collections::HashMap<uuid::Uuid, std::time::Instant>>>,
}

/// The longest a key row is trusted from memory even if no change was announced (a bound, should an
/// announcement ever be missed without the listener noticing).
const CREDENTIAL_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// Distinct keys kept in memory per replica.
const CREDENTIAL_CACHE_CAPACITY: usize = 50_000;

/// How often one replica records a key's use.
const TOUCH_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// A new dashboard session.
pub struct StartedAdminSession {
    pub token: ragvault_credentials::Secret<String>,
    pub csrf: String,
    pub expires_at: time::OffsetDateTime,
}

/// A live dashboard session, as a request sees it.
#[derive(Clone, Debug)]
pub struct AdminSessionView {
    pub id: uuid::Uuid,
    pub principal: Principal,
    pub csrf: String,
}

/// What a browser request says about where it comes from; widget tokens are checked against it.
#[derive(Clone, Debug, Default)]
pub struct BrowserContext<'a> {
    /// The `Origin` header.
    pub origin: Option<&'a str>,
    /// The `x-ragvault-tenant` header: the tenant (id or slug) the calling page belongs to.
    pub tenant_hint: Option<&'a str>,
}

/// What a key rotation did.
#[derive(Debug, serde::Serialize)]
pub struct KeyRotation {
    pub rewrapped: usize,
    pub content_key_id: uuid::Uuid,
}

impl AccessControl {
    /// Access control that reads Postgres on every authentication (tools that run once).
    pub fn new(store: Store, keys: Arc<KeySource>) -> AccessControl {
        AccessControl::with_widget_settings(
            store,
            keys,
            WidgetTokenSettings::default(),
            AccessChanges::never(),
        )
    }

    /// `changes` decides what may be authenticated from memory: with a feed that listens, key rows and
    /// tenant states are kept until a change is announced.
    pub fn with_widget_settings(
        store: Store,
        keys: Arc<KeySource>,
        widget: WidgetTokenSettings,
        changes: Arc<AccessChanges>,
    ) -> AccessControl {
        AccessControl {
            widgets: Arc::new(WidgetTokens::new(
                store.clone(),
                keys.clone(),
                widget,
                changes.clone(),
            )),
            credentials: Arc::new(GuardedCache::new(
                changes.clone(),
                CREDENTIAL_CACHE_TTL,
                CREDENTIAL_CACHE_CAPACITY,
            )),
            hasher: Arc::new(keys.api_key_hasher()),
            directory: Arc::new(keys.directory_key()),
            store,
            keys,
            failures: Arc::default(),
            last_touched: Arc::default(),
            changes,
        }
    }

    /// The feed of announced access changes its caches are guarded by.
    pub fn changes(&self) -> &Arc<AccessChanges> {
        &self.changes
    }

    /// Failed authentications waiting to be audited (flushed by [`AuthFailures::run`]).
    ///
    /// [`AuthFailures::run`]: crate::auth_failures::AuthFailures::run
    pub fn auth_failures(&self) -> &Arc<crate::auth_failures::AuthFailures> {
        &self.failures
    }

    /// A dashboard login: `operator_key` must authenticate as an operator key. Returns the session token
    /// (for the cookie, shown nowhere else) and its CSRF token.
    pub async fn start_admin_session(
        &self,
        operator_key: &str,
        ttl: std::time::Duration,
    ) -> Result<StartedAdminSession, GatewayError> {
        let principal = self
            .authenticate(
                Some(&format!("Bearer {}", operator_key.trim())),
                &BrowserContext::default(),
            )
            .await?;
        let Principal::Operator { key_id } = principal else {
            return Err(GatewayError::OperatorOnly);
        };
        let (token, hash) = self.hasher.issue_session_token();
        let expires_at = time::OffsetDateTime::now_utc()
            + time::Duration::seconds(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2));
        let audit = RequestContext::new(principal.actor(), None).audit("admin_session.started");
        self.store
            .insert_admin_session(&hash, key_id, expires_at, &audit)
            .await?;
        let csrf = self.hasher.csrf_token(token.expose_secret());
        Ok(StartedAdminSession {
            token,
            csrf,
            expires_at,
        })
    }

    /// The live session a cookie's token names, if any.
    pub async fn admin_session(
        &self,
        token: &str,
    ) -> Result<Option<AdminSessionView>, GatewayError> {
        if !token.starts_with("rvs_") || token.len() > 64 {
            return Ok(None);
        }
        let hash = self.hasher.session_token_hash(token);
        Ok(self
            .store
            .live_admin_session(&hash)
            .await?
            .map(|s| AdminSessionView {
                id: s.id,
                principal: Principal::Operator {
                    key_id: s.operator_key_id,
                },
                csrf: self.hasher.csrf_token(token),
            }))
    }

    /// Whether `presented` is the CSRF token of the session `token` names (constant time).
    pub fn csrf_matches(&self, token: &str, presented: &str) -> bool {
        self.hasher.verify_csrf(token, presented)
    }

    /// Logout.
    pub async fn end_admin_session(&self, session: &AdminSessionView) -> Result<(), GatewayError> {
        let audit =
            RequestContext::new(session.principal.actor(), None).audit("admin_session.ended");
        self.store.end_admin_session(session.id, &audit).await?;
        Ok(())
    }

    /// Widget-token minting, verification and signing-key rotation.
    pub fn widget_tokens(&self) -> &WidgetTokens {
        &self.widgets
    }

    fn view(&self, record: TenantRecord) -> Result<TenantView, GatewayError> {
        let slug = match (&record.slug_sealed, record.legacy_slug) {
            (Some(sealed), _) => self.directory.open_slug(record.id, sealed)?,
            (None, Some(slug)) => slug,
            (None, None) => {
                return Err(ragvault_store::StoreError::Corrupt {
                    table: "tenants",
                    reason: "row without a slug".to_owned(),
                }
                .into())
            }
        };
        Ok(TenantView {
            id: record.id,
            slug,
            status: record.status,
            environment: record.environment,
            policy: record.policy,
            created_at: record.created_at,
        })
    }

    pub async fn list_tenants(&self) -> Result<Vec<TenantView>, GatewayError> {
        self.store
            .list_tenants()
            .await?
            .into_iter()
            .map(|r| self.view(r))
            .collect()
    }

    pub async fn get_tenant(&self, id: TenantId) -> Result<TenantView, GatewayError> {
        self.view(self.store.get_tenant(id).await?)
    }

    pub async fn get_tenant_by_slug(&self, slug: &str) -> Result<TenantView, GatewayError> {
        let hash = self.directory.slug_hash(slug);
        self.view(self.store.get_tenant_by_slug(&hash, slug).await?)
    }

    /// Seals slugs still stored in the clear (rows from before sealed slugs). Idempotent; run at start.
    pub async fn seal_clear_slugs(&self) -> Result<usize, GatewayError> {
        let clear = self.store.tenants_with_clear_slugs().await?;
        for (id, slug) in &clear {
            let sealed = self.directory.seal_slug(*id, slug)?;
            self.store
                .seal_clear_slug(*id, &self.directory.slug_hash(slug), &sealed)
                .await?;
        }
        Ok(clear.len())
    }

    /// Resolves an `Authorization` header value into a principal.
    ///
    /// Every refusal before the hash check says only "invalid", so a caller cannot probe which public ids
    /// exist; revoked/expired/suspended are told apart only to someone who holds the real key.
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
        browser: &BrowserContext<'_>,
    ) -> Result<Principal, GatewayError> {
        let result = self.check_credentials(authorization, browser).await;
        if let (Err(e), Some(header)) = (&result, authorization) {
            if let Some(code) = crate::auth_failures::failure_code(e) {
                self.failures
                    .record(code, crate::auth_failures::presented_key_id(header));
            }
        }
        result
    }

    async fn check_credentials(
        &self,
        authorization: Option<&str>,
        browser: &BrowserContext<'_>,
    ) -> Result<Principal, GatewayError> {
        let header = authorization.ok_or(GatewayError::MissingCredentials)?;
        let (scheme, token) = header
            .trim()
            .split_once(' ')
            .ok_or(GatewayError::MalformedCredentials)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(GatewayError::MalformedCredentials);
        }
        if is_widget_token(token.trim()) {
            let tenant_hint = match browser.tenant_hint {
                None => None,
                Some(hint) => Some(self.resolve_tenant_hint(hint).await?),
            };
            return self
                .widgets
                .verify(
                    token.trim(),
                    browser.origin,
                    tenant_hint,
                    OffsetDateTime::now_utc(),
                )
                .await;
        }
        let presented =
            PresentedKey::parse(token.trim()).map_err(|_| GatewayError::InvalidCredentials)?;
        let candidates = self.credentials_for(presented.public_id()).await?;
        let Some(row) = candidates
            .iter()
            .find(|row| self.hasher.verify(&presented, &row.key_hash))
        else {
            self.hasher.verify_against_nothing(&presented);
            return Err(GatewayError::InvalidCredentials);
        };
        let principal = check_usable(row, OffsetDateTime::now_utc())?;
        self.record_use(row.kind, row.id);
        Ok(principal)
    }

    /// The key rows with this public id, from memory while no change was announced since they were read.
    /// Only rows that exist are kept: unknown ids (guesses) cannot fill the cache.
    async fn credentials_for(
        &self,
        public_id: &str,
    ) -> Result<Arc<Vec<CredentialRow>>, GatewayError> {
        if let Some(rows) = self.credentials.get(public_id) {
            return Ok(rows);
        }
        let ticket = self.credentials.ticket();
        let rows = Arc::new(self.store.find_credentials(public_id).await?);
        if !rows.is_empty() {
            self.credentials
                .put(ticket, public_id.to_owned(), rows.clone());
        }
        Ok(rows)
    }

    /// The tenant a page names, by id or slug; an unknown one is a wrong tenant for any token.
    async fn resolve_tenant_hint(&self, hint: &str) -> Result<TenantId, GatewayError> {
        if let Ok(id) = hint.parse::<TenantId>() {
            return Ok(id);
        }
        match self.get_tenant_by_slug(hint).await {
            Ok(tenant) => Ok(tenant.id),
            Err(GatewayError::Store(ragvault_store::StoreError::NotFound(_))) => {
                Err(GatewayError::WidgetWrongTenant)
            }
            Err(e) => Err(e),
        }
    }

    fn record_use(&self, kind: CredentialKind, id: uuid::Uuid) {
        {
            let mut touched = self
                .last_touched
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = std::time::Instant::now();
            if touched
                .get(&id)
                .is_some_and(|at| now.duration_since(*at) < TOUCH_EVERY)
            {
                return;
            }
            // Entries older than the interval are of no use: dropped so the map holds active keys only.
            if touched.len() > 10_000 {
                touched.retain(|_, at| now.duration_since(*at) < TOUCH_EVERY);
            }
            touched.insert(id, now);
        }
        let store = self.store.clone();
        // Off the request path: a slow or failing last-used update must not slow or fail the request.
        tokio::spawn(async move {
            if let Err(e) = store.touch_last_used(kind, id).await {
                tracing::warn!(error = %e, "could not record key use");
            }
        });
    }

    /// Creates a tenant with a first key carrying the default tenant scopes.
    pub async fn create_tenant(
        &self,
        slug: TenantSlug,
        environment: Environment,
        ctx: &RequestContext,
    ) -> Result<CreatedTenant, GatewayError> {
        let id = TenantId::new();
        let tenant = NewTenant {
            id,
            slug_hash: self.directory.slug_hash(slug.as_str()),
            slug_sealed: self.directory.seal_slug(id, slug.as_str())?,
            environment,
        };
        let issued = self.hasher.issue()?;
        let key = NewApiKey {
            id: ApiKeyId::new(),
            tenant_id: tenant.id,
            public_id: issued.public_id,
            key_hash: issued.hash,
            name: Some("initial".to_owned()),
            scopes: Scopes::tenant_default(),
            expires_at: None,
            groups: None,
        };
        let audit = [
            ctx.audit("tenant.created")
                .tenant(tenant.id)
                .target(format!("tenant:{}", tenant.id))
                .details(json!({ "environment": environment.as_str() })),
            ctx.audit("api_key.issued")
                .tenant(tenant.id)
                .target(format!("api_key:{}", key.id))
                .details(json!({"scopes": key.scopes.names(), "public_id": key.public_id})),
        ];
        // The tenant's KEK and first data keys exist before the tenant row does; if the row cannot be
        // written, the KEK is destroyed again so nothing is left behind.
        let tenant_id = tenant.id;
        self.keys.create_tenant_kek(tenant_id).await?;
        let data_keys = match self.new_data_keys(tenant_id).await {
            Ok(keys) => keys,
            Err(e) => {
                self.destroy_kek_after_failure(tenant_id).await;
                return Err(e);
            }
        };
        match self
            .store
            .create_tenant(&tenant, &key, &data_keys, &audit)
            .await
        {
            Ok((tenant, key)) => Ok(CreatedTenant {
                tenant: self.view(tenant)?,
                key,
                api_key: issued.key,
            }),
            Err(e) => {
                self.destroy_kek_after_failure(tenant_id).await;
                Err(e.into())
            }
        }
    }

    async fn new_data_keys(&self, tenant: TenantId) -> Result<Vec<NewDataKey>, GatewayError> {
        let mut keys = Vec::new();
        for purpose in [DataKeyPurpose::Content, DataKeyPurpose::Index] {
            let id = uuid::Uuid::new_v4();
            let (_, wrapped) = self.keys.generate_data_key(tenant, id).await?;
            keys.push(NewDataKey {
                id,
                purpose,
                wrapped_key: wrapped.0,
            });
        }
        Ok(keys)
    }

    async fn destroy_kek_after_failure(&self, tenant: TenantId) {
        if let Err(e) = self.keys.destroy_tenant_kek(tenant).await {
            tracing::warn!(%tenant, error = %e, "could not destroy the KEK of a tenant that was not created");
        }
    }

    /// Rotates the tenant's KEK, rewraps every data key under the new version (content untouched), and
    /// starts a new content key for new writes.
    pub async fn rotate_tenant_keys(
        &self,
        tenant: TenantId,
        ctx: &RequestContext,
    ) -> Result<KeyRotation, GatewayError> {
        self.store.get_tenant(tenant).await?;
        self.keys.rotate_tenant_kek(tenant).await?;
        let mut rewrapped = Vec::new();
        for record in self.store.list_data_keys(tenant).await? {
            let wrapped = ragvault_credentials::WrappedKey(record.wrapped_key);
            let new = self.keys.rewrap_data_key(tenant, &wrapped).await?;
            rewrapped.push((record.id, new.0));
        }
        let content_id = uuid::Uuid::new_v4();
        let (_, content_wrapped) = self.keys.generate_data_key(tenant, content_id).await?;
        let new_content = NewDataKey {
            id: content_id,
            purpose: DataKeyPurpose::Content,
            wrapped_key: content_wrapped.0,
        };
        let audit = ctx
            .audit("tenant.keys_rotated")
            .tenant(tenant)
            .target(format!("tenant:{tenant}"))
            .details(json!({ "rewrapped": rewrapped.len(), "content_key_id": content_id }));
        self.store
            .apply_key_rotation(tenant, &rewrapped, &new_content, &audit)
            .await?;
        Ok(KeyRotation {
            rewrapped: rewrapped.len(),
            content_key_id: content_id,
        })
    }

    /// Deletes a tenant and crypto-shreds it: the KEK is destroyed first (so even backups of its rows
    /// become unreadable), then the rows go, with an audit row that outlives them.
    pub async fn delete_tenant(
        &self,
        tenant: TenantId,
        ctx: &RequestContext,
    ) -> Result<(), GatewayError> {
        self.store.get_tenant(tenant).await?;
        self.keys.destroy_tenant_kek(tenant).await?;
        let audit = ctx
            .audit("tenant.deleted")
            .tenant(tenant)
            .target(format!("tenant:{tenant}"))
            .details(json!({ "kek_destroyed": true }));
        let deleted = self.store.delete_tenant(tenant, &audit).await?;
        self.changes.announce();
        if !deleted {
            return Err(ragvault_store::StoreError::NotFound("tenant").into());
        }
        Ok(())
    }

    /// Issues another key for a tenant with exactly the scopes asked for.
    pub async fn issue_api_key(
        &self,
        tenant_id: TenantId,
        scopes: Scopes,
        name: Option<String>,
        expires_at: Option<OffsetDateTime>,
        groups: Option<Vec<String>>,
        ctx: &RequestContext,
    ) -> Result<IssuedApiKey, GatewayError> {
        if scopes.is_empty() {
            return Err(GatewayError::NoScopes);
        }
        if !groups.as_deref().is_none_or(crate::valid_group_names) {
            return Err(GatewayError::InvalidGroups {
                max_groups: crate::MAX_GROUPS,
                max_chars: crate::MAX_GROUP_CHARS,
            });
        }
        let groups = groups.map(|g| g.iter().map(|n| n.to_lowercase()).collect::<Vec<_>>());
        check_expiry(expires_at, OffsetDateTime::now_utc())?;
        let issued = self.hasher.issue()?;
        let key = NewApiKey {
            id: ApiKeyId::new(),
            tenant_id,
            public_id: issued.public_id,
            key_hash: issued.hash,
            name,
            scopes,
            expires_at,
            groups: groups.clone(),
        };
        let audit = ctx
            .audit("api_key.issued")
            .tenant(tenant_id)
            .target(format!("api_key:{}", key.id))
            .details(
                json!({"scopes": scopes.names(), "public_id": key.public_id, "groups": groups}),
            );
        let record = self.store.insert_api_key(&key, &audit).await?;
        Ok(IssuedApiKey {
            key: record,
            api_key: issued.key,
        })
    }

    /// Revokes a key; it stops working on this replica's next request, on others' as soon as Postgres
    /// notifies them.
    pub async fn revoke_api_key(
        &self,
        tenant_id: TenantId,
        key_id: ApiKeyId,
        ctx: &RequestContext,
    ) -> Result<ApiKeyRecord, GatewayError> {
        let audit = ctx
            .audit("api_key.revoked")
            .tenant(tenant_id)
            .target(format!("api_key:{key_id}"));
        let revoked = self.store.revoke_api_key(tenant_id, key_id, &audit).await?;
        self.changes.announce();
        Ok(revoked)
    }

    pub async fn set_tenant_status(
        &self,
        tenant_id: TenantId,
        status: TenantStatus,
        ctx: &RequestContext,
    ) -> Result<TenantView, GatewayError> {
        let action = match status {
            TenantStatus::Active => "tenant.resumed",
            TenantStatus::Suspended => "tenant.suspended",
        };
        let audit = ctx
            .audit(action)
            .tenant(tenant_id)
            .target(format!("tenant:{tenant_id}"));
        let record = self
            .store
            .set_tenant_status(tenant_id, status, &audit)
            .await?;
        self.changes.announce();
        self.view(record)
    }

    /// Replaces the tenant's policy (validated by the caller), audited with the new policy.
    pub async fn set_tenant_policy(
        &self,
        tenant_id: TenantId,
        policy: serde_json::Value,
        ctx: &RequestContext,
    ) -> Result<TenantView, GatewayError> {
        let audit = ctx
            .audit("tenant.policy_changed")
            .tenant(tenant_id)
            .target(format!("tenant:{tenant_id}"))
            .details(json!({ "policy": policy }));
        let record = self
            .store
            .set_tenant_policy(tenant_id, &policy, &audit)
            .await?;
        self.view(record)
    }

    pub async fn create_operator_key(
        &self,
        name: Option<String>,
        expires_at: Option<OffsetDateTime>,
        ctx: &RequestContext,
    ) -> Result<IssuedOperatorKey, GatewayError> {
        check_expiry(expires_at, OffsetDateTime::now_utc())?;
        let issued = self.hasher.issue()?;
        let key = NewOperatorKey {
            id: OperatorKeyId::new(),
            public_id: issued.public_id,
            key_hash: issued.hash,
            name,
            expires_at,
        };
        let audit = ctx
            .audit("operator_key.created")
            .target(format!("operator_key:{}", key.id))
            .details(json!({"public_id": key.public_id}));
        self.store.insert_operator_key(&key, &audit).await?;
        Ok(IssuedOperatorKey {
            id: key.id,
            api_key: issued.key,
        })
    }

    pub async fn revoke_operator_key(
        &self,
        key_id: OperatorKeyId,
        ctx: &RequestContext,
    ) -> Result<bool, GatewayError> {
        let audit = ctx
            .audit("operator_key.revoked")
            .target(format!("operator_key:{key_id}"));
        let revoked = self.store.revoke_operator_key(key_id, &audit).await?;
        self.changes.announce();
        Ok(revoked)
    }
}

/// The principal a verified row stands for, unless the row may no longer be used.
fn check_usable(row: &CredentialRow, now: OffsetDateTime) -> Result<Principal, GatewayError> {
    if row.revoked_at.is_some() {
        return Err(GatewayError::KeyRevoked);
    }
    if row.expires_at.is_some_and(|at| at <= now) {
        return Err(GatewayError::KeyExpired);
    }
    match (row.kind, row.tenant_id) {
        (CredentialKind::Operator, _) => Ok(Principal::Operator {
            key_id: OperatorKeyId(row.id),
        }),
        (CredentialKind::Tenant, Some(tenant_id)) => {
            if row.tenant_status != Some(TenantStatus::Active) {
                return Err(GatewayError::TenantSuspended);
            }
            Ok(Principal::Tenant {
                tenant_id,
                key_id: ApiKeyId(row.id),
                scopes: row.scopes,
                groups: row.groups.clone(),
            })
        }
        (CredentialKind::Tenant, None) => Err(GatewayError::InvalidCredentials),
    }
}

fn check_expiry(
    expires_at: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Result<(), GatewayError> {
    match expires_at {
        Some(at) if at <= now || at > now + Duration::days(MAX_KEY_LIFETIME_DAYS) => {
            Err(GatewayError::InvalidExpiry {
                max_days: MAX_KEY_LIFETIME_DAYS,
            })
        }
        _ => Ok(()),
    }
}

/// Requires a tenant principal with the given scope; returns its tenant id.
pub fn require_tenant_scope(principal: &Principal, scope: Scope) -> Result<TenantId, GatewayError> {
    match principal {
        Principal::Operator { .. } => Err(GatewayError::TenantOnly),
        Principal::Tenant { tenant_id, .. } | Principal::Widget { tenant_id, .. } => {
            if principal.has_scope(scope) {
                Ok(*tenant_id)
            } else {
                Err(GatewayError::InsufficientScope(scope))
            }
        }
    }
}

/// Requires an operator principal.
pub fn require_operator(principal: &Principal) -> Result<OperatorKeyId, GatewayError> {
    match principal {
        Principal::Operator { key_id } => Ok(*key_id),
        Principal::Tenant { .. } | Principal::Widget { .. } => Err(GatewayError::OperatorOnly),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(kind: CredentialKind) -> CredentialRow {
        CredentialRow {
            kind,
            id: Default::default(),
            tenant_id: Some(TenantId::new()),
            key_hash: vec![0; 32],
            scopes: Scopes::tenant_default(),
            expires_at: None,
            revoked_at: None,
            tenant_status: Some(TenantStatus::Active),
            groups: None,
        }
    }

    #[test]
    fn usable_rows_become_principals() {
        let now = OffsetDateTime::now_utc();
        assert!(matches!(
            check_usable(&row(CredentialKind::Tenant), now),
            Ok(Principal::Tenant { .. })
        ));
        assert!(matches!(
            check_usable(&row(CredentialKind::Operator), now),
            Ok(Principal::Operator { .. })
        ));
    }

    #[test]
    fn revoked_expired_and_suspended_are_refused() {
        let now = OffsetDateTime::now_utc();
        let mut revoked = row(CredentialKind::Tenant);
        revoked.revoked_at = Some(now);
        assert!(matches!(
            check_usable(&revoked, now),
            Err(GatewayError::KeyRevoked)
        ));
        let mut expired = row(CredentialKind::Tenant);
        expired.expires_at = Some(now);
        assert!(matches!(
            check_usable(&expired, now),
            Err(GatewayError::KeyExpired)
        ));
        let mut suspended = row(CredentialKind::Tenant);
        suspended.tenant_status = Some(TenantStatus::Suspended);
        assert!(matches!(
            check_usable(&suspended, now),
            Err(GatewayError::TenantSuspended)
        ));
    }

    #[test]
    fn expiry_must_be_future_and_bounded() {
        let now = OffsetDateTime::now_utc();
        assert!(check_expiry(None, now).is_ok());
        assert!(check_expiry(Some(now + Duration::hours(1)), now).is_ok());
        assert!(check_expiry(Some(now - Duration::seconds(1)), now).is_err());
        assert!(check_expiry(Some(now + Duration::days(MAX_KEY_LIFETIME_DAYS + 1)), now).is_err());
    }

    #[test]
    fn scope_checks() {
        let ask_only = Principal::Tenant {
            tenant_id: TenantId::new(),
            key_id: ApiKeyId::new(),
            scopes: [Scope::Ask].into_iter().collect(),
            groups: None,
        };
        assert!(require_tenant_scope(&ask_only, Scope::Ask).is_ok());
        assert!(matches!(
            require_tenant_scope(&ask_only, Scope::Ingest),
            Err(GatewayError::InsufficientScope(Scope::Ingest))
        ));
        assert!(matches!(
            require_operator(&ask_only),
            Err(GatewayError::OperatorOnly)
        ));
        let operator = Principal::Operator {
            key_id: OperatorKeyId::new(),
        };
        assert!(matches!(
            require_tenant_scope(&operator, Scope::Ask),
            Err(GatewayError::TenantOnly)
        ));
    }
}
