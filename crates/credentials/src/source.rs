use crate::provider::{
    is_missing, operator_path, parse_read, sandbox_path, tenant_path, FetchedKey, ProviderKeyRef,
};
use crate::provider_keyring::SealedKeyring;
use crate::vault::{KvRead, VaultBackend, VaultConfig};
use crate::{ApiKeyHasher, CredentialsError, LocalKeyring, Secret};
use std::path::Path;
use std::sync::Arc;

/// KV path of ragvault's own API-key hashing key (written once by `scripts/vault-bootstrap.sh`).
pub const API_KEY_HASH_PATH: &str = "ragvault/internal/api-key-hash";

/// Where ragvault's keys come from. A closed set: each backend is a variant, so adding one forces every
/// use to decide what it means there.
#[derive(Debug)]
pub enum KeySource {
    /// The embedded default: a master key file, and provider keys in a keyring sealed under it.
    Local {
        master: LocalKeyring,
        // Boxed: the sealing key makes it far larger than the Vault variant.
        providers: Box<SealedKeyring>,
    },
    /// Vault / OpenBao: AppRole login, KV v2 for provider keys and the API-key hashing key.
    Vault {
        backend: Arc<VaultBackend>,
        api_key_hash: Secret<[u8; 32]>,
    },
}

impl KeySource {
    /// Opens (creating on first run) the master key file and the sealed provider keyring.
    pub fn local(
        master_key_file: &Path,
        keyring_file: &Path,
    ) -> Result<KeySource, CredentialsError> {
        let master = LocalKeyring::open_or_create(master_key_file)?;
        let providers = Box::new(SealedKeyring::new(&master, keyring_file)?);
        Ok(KeySource::Local { master, providers })
    }

    /// Logs in to Vault and reads the API-key hashing key.
    pub async fn vault(config: VaultConfig) -> Result<KeySource, CredentialsError> {
        let backend = VaultBackend::connect(config).await?;
        let display = format!("{}/{API_KEY_HASH_PATH}", backend.config().kv_mount);
        let hash_key = match backend.read_kv(API_KEY_HASH_PATH).await? {
            KvRead::Found { mut data, .. } => {
                let value = data.remove("key");
                let decoded = value
                    .as_ref()
                    .and_then(|v| v.as_str())
                    .and_then(|hex_key| hex::decode(hex_key).ok())
                    .filter(|bytes| bytes.len() == 32);
                let mut key = [0u8; 32];
                match decoded {
                    Some(bytes) => key.copy_from_slice(&bytes),
                    None => {
                        return Err(CredentialsError::MalformedSecret {
                            path: display,
                            reason: "field `key` must be 64 hexadecimal characters (256 bits)"
                                .to_owned(),
                        })
                    }
                }
                Secret::new(key)
            }
            KvRead::Revoked(state) => {
                return Err(CredentialsError::SecretRevoked {
                    path: display,
                    state,
                });
            }
        };
        Ok(KeySource::Vault {
            backend: Arc::new(backend),
            api_key_hash: hash_key,
        })
    }

    /// Short name for readiness output and logs.
    pub fn name(&self) -> &'static str {
        match self {
            KeySource::Local { .. } => "local",
            KeySource::Vault { .. } => "vault",
        }
    }

    /// The hasher for tenant and operator API keys.
    pub fn api_key_hasher(&self) -> ApiKeyHasher {
        match self {
            KeySource::Local { master, .. } => ApiKeyHasher::new(&master.derive("api-key-hash/v1")),
            KeySource::Vault { api_key_hash, .. } => ApiKeyHasher::new(api_key_hash),
        }
    }

    /// The key that seals tenant slugs and hashes them for lookup.
    pub fn directory_key(&self) -> crate::DirectoryKey {
        crate::DirectoryKey::new(self.derive("tenant-directory/v1"))
    }

    /// The widget-token signing key with this id (see [`crate::WidgetTokenKey`]).
    pub fn widget_token_key(&self, kid: &str) -> crate::WidgetTokenKey {
        crate::WidgetTokenKey::new(self.derive(&crate::WidgetTokenKey::purpose(kid)))
    }

    /// A key for one purpose, derived from the root secret, so Vault holds one internal key for all uses.
    fn derive(&self, purpose: &str) -> Secret<[u8; 32]> {
        match self {
            KeySource::Local { master, .. } => master.derive(purpose),
            KeySource::Vault { api_key_hash, .. } => {
                let mac =
                    ring::hmac::Key::new(ring::hmac::HMAC_SHA256, api_key_hash.expose_secret());
                let tag = ring::hmac::sign(&mac, format!("ragvault/{purpose}").as_bytes());
                let mut key = [0u8; 32];
                key.copy_from_slice(tag.as_ref());
                Secret::new(key)
            }
        }
    }

    /// Whether the source can be used right now.
    pub async fn check(&self) -> Result<(), CredentialsError> {
        match self {
            KeySource::Local { master, .. } => master.check(),
            KeySource::Vault { backend, .. } => backend.check().await,
        }
    }

    pub fn vault_backend(&self) -> Option<&Arc<VaultBackend>> {
        match self {
            KeySource::Vault { backend, .. } => Some(backend),
            KeySource::Local { .. } => None,
        }
    }

    pub fn sealed_keyring(&self) -> Option<&SealedKeyring> {
        match self {
            KeySource::Local { providers, .. } => Some(providers.as_ref()),
            KeySource::Vault { .. } => None,
        }
    }

    /// Reads the current version of a provider key. A tenant's own key wins; a tenant path that was never
    /// written falls back to the operator-wide key, but a tenant key that was deleted does not (the tenant
    /// revoked it; silently billing the operator's key instead would be a surprise).
    pub(crate) async fn fetch_provider_key(
        &self,
        key_ref: &ProviderKeyRef,
    ) -> Result<FetchedKey, CredentialsError> {
        if key_ref.sandbox {
            // No fallback: an experiment must never spend on the production key.
            let path = sandbox_path(&key_ref.provider);
            let read = self.read(&path).await?;
            return self.parse(read, &path);
        }
        if let Some(tenant) = key_ref.tenant {
            let path = tenant_path(tenant, &key_ref.provider);
            let read = self.read(&path).await?;
            if !is_missing(&read) {
                return self.parse(read, &path);
            }
        }
        let path = operator_path(&key_ref.provider);
        let read = self.read(&path).await?;
        self.parse(read, &path)
    }

    async fn read(&self, path: &str) -> Result<KvRead, CredentialsError> {
        match self {
            KeySource::Local { providers, .. } => providers.read(path),
            KeySource::Vault { backend, .. } => backend.read_kv(path).await,
        }
    }

    fn parse(&self, read: KvRead, path: &str) -> Result<FetchedKey, CredentialsError> {
        let display = match self {
            KeySource::Local { providers, .. } => {
                format!("local:{}#{path}", providers.path().display())
            }
            KeySource::Vault { backend, .. } => {
                format!("vault:{}/{path}", backend.config().kv_mount)
            }
        };
        parse_read(read, &display, display.clone())
    }
}
