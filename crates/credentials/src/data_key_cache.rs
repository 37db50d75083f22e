//! Plaintext data keys cached in memory for a bounded time, so reads need no key-source round trip and
//! keep working while Vault is briefly unreachable. Evicted keys are zeroized (they live in `Secret`).

use crate::envelope::DataKey;
use crate::kek::WrappedKey;
use crate::{CredentialsError, KeySource};
use ragvault_core::TenantId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

pub struct DataKeyCache {
    source: Arc<KeySource>,
    ttl: Duration,
    entries: Mutex<HashMap<Uuid, (Arc<DataKey>, Instant)>>,
}

impl DataKeyCache {
    pub fn new(source: Arc<KeySource>, ttl: Duration) -> DataKeyCache {
        DataKeyCache {
            source,
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub fn source(&self) -> &Arc<KeySource> {
        &self.source
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, (Arc<DataKey>, Instant)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The plaintext key for a stored wrapped DEK: from the cache while fresh, else unwrapped.
    pub async fn get(
        &self,
        tenant: TenantId,
        id: Uuid,
        wrapped: &WrappedKey,
    ) -> Result<Arc<DataKey>, CredentialsError> {
        let now = Instant::now();
        if let Some((key, expires)) = self.entries().get(&id) {
            if *expires > now && key.tenant() == tenant {
                return Ok(key.clone());
            }
        }
        let key = Arc::new(self.source.unwrap_data_key(tenant, id, wrapped).await?);
        self.entries().insert(id, (key.clone(), now + self.ttl));
        Ok(key)
    }

    /// The plaintext key if it is cached and fresh, without touching the key source or the wrapped form:
    /// a data key's id names one key for its whole life (rewrapping changes the wrapping, not the key).
    pub fn cached(&self, tenant: TenantId, id: Uuid) -> Option<Arc<DataKey>> {
        let now = Instant::now();
        self.entries()
            .get(&id)
            .filter(|(key, expires)| *expires > now && key.tenant() == tenant)
            .map(|(key, _)| key.clone())
    }

    /// Caches a key generated just now.
    pub fn insert(&self, key: DataKey) -> Arc<DataKey> {
        let key = Arc::new(key);
        self.entries()
            .insert(key.id(), (key.clone(), Instant::now() + self.ttl));
        key
    }

    /// Drops every cached key of a tenant (after rotation or deletion).
    pub fn evict_tenant(&self, tenant: TenantId) {
        self.entries().retain(|_, (key, _)| key.tenant() != tenant);
    }

    /// Drops expired keys; call periodically.
    pub fn evict_expired(&self) {
        let now = Instant::now();
        self.entries().retain(|_, (_, expires)| *expires > now);
    }

    pub fn len(&self) -> usize {
        self.entries().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{SealContext, SealPurpose};
    use ragvault_core::DocumentId;

    fn local(dir: &std::path::Path) -> Arc<KeySource> {
        Arc::new(KeySource::local(&dir.join("master.key"), &dir.join("providers.sealed")).unwrap())
    }

    #[tokio::test]
    async fn local_kek_lifecycle_wrap_rotate_rewrap_destroy() {
        let dir = tempfile::tempdir().unwrap();
        let source = local(dir.path());
        let (tenant, other) = (TenantId::new(), TenantId::new());
        source.create_tenant_kek(tenant).await.unwrap();
        source.create_tenant_kek(other).await.unwrap();
        let id = Uuid::new_v4();
        let (dek, wrapped) = source.generate_data_key(tenant, id).await.unwrap();
        assert!(wrapped.0.starts_with("local:v1:"));
        let ctx = SealContext {
            purpose: SealPurpose::ChunkText,
            tenant,
            document: DocumentId::new(),
            chunk: None,
            ordinal: 0,
        };
        let sealed = dek.seal(&ctx, b"firmware update steps").unwrap();

        // Unwrapping gives the same key; another tenant's KEK cannot unwrap it.
        let again = source.unwrap_data_key(tenant, id, &wrapped).await.unwrap();
        assert_eq!(again.open(&ctx, &sealed).unwrap(), b"firmware update steps");
        assert!(source.unwrap_data_key(other, id, &wrapped).await.is_err());

        // Rotation: the old wrapping still opens; rewrapping moves it to v2 without changing the DEK.
        source.rotate_tenant_kek(tenant).await.unwrap();
        assert!(source.unwrap_data_key(tenant, id, &wrapped).await.is_ok());
        let rewrapped = source.rewrap_data_key(tenant, &wrapped).await.unwrap();
        assert!(rewrapped.0.starts_with("local:v2:"));
        let after = source
            .unwrap_data_key(tenant, id, &rewrapped)
            .await
            .unwrap();
        assert_eq!(after.open(&ctx, &sealed).unwrap(), b"firmware update steps");

        // Crypto-shredding: nothing of the tenant unwraps any more; the other tenant is untouched.
        let (other_dek, other_wrapped) = source
            .generate_data_key(other, Uuid::new_v4())
            .await
            .unwrap();
        source.destroy_tenant_kek(tenant).await.unwrap();
        for w in [&wrapped, &rewrapped] {
            let err = source.unwrap_data_key(tenant, id, w).await.unwrap_err();
            assert!(matches!(err, CredentialsError::KekMissing { .. }), "{err}");
        }
        let reopened = source
            .unwrap_data_key(other, other_dek.id(), &other_wrapped)
            .await
            .unwrap();
        assert_eq!(reopened.id(), other_dek.id());
    }

    #[tokio::test]
    async fn cache_serves_hits_and_evicts() {
        let dir = tempfile::tempdir().unwrap();
        let source = local(dir.path());
        let tenant = TenantId::new();
        source.create_tenant_kek(tenant).await.unwrap();
        let (dek, wrapped) = source
            .generate_data_key(tenant, Uuid::new_v4())
            .await
            .unwrap();
        let id = dek.id();
        let cache = DataKeyCache::new(source.clone(), Duration::from_secs(60));
        assert!(cache.cached(tenant, id).is_none());
        cache.get(tenant, id, &wrapped).await.unwrap();
        assert!(cache.cached(tenant, id).is_some());
        assert!(
            cache.cached(TenantId::new(), id).is_none(),
            "another tenant's id"
        );
        // With the KEK gone, a cached key still serves reads until it expires or is evicted.
        source.destroy_tenant_kek(tenant).await.unwrap();
        assert!(cache.get(tenant, id, &wrapped).await.is_ok());
        cache.evict_tenant(tenant);
        assert!(cache.is_empty());
        assert!(cache.cached(tenant, id).is_none());
        assert!(cache.get(tenant, id, &wrapped).await.is_err());
    }
}
