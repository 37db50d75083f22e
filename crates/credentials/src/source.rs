use crate::{ApiKeyHasher, CredentialsError, LocalKeyring};

/// Where ragvault's own keys come from. A closed set: each backend is a variant, so adding one forces
/// every use to decide what it means there. Vault/OpenBao joins as a second variant.
#[derive(Debug)]
pub enum KeySource {
    /// The embedded default: a master key file in the data directory.
    Local(LocalKeyring),
}

impl KeySource {
    /// Short name for readiness output and logs.
    pub fn name(&self) -> &'static str {
        match self {
            KeySource::Local(_) => "local",
        }
    }

    /// The hasher for tenant and operator API keys.
    pub fn api_key_hasher(&self) -> ApiKeyHasher {
        match self {
            KeySource::Local(keyring) => ApiKeyHasher::new(&keyring.derive("api-key-hash/v1")),
        }
    }

    /// Whether the source can still be used.
    pub async fn check(&self) -> Result<(), CredentialsError> {
        match self {
            KeySource::Local(keyring) => keyring.check(),
        }
    }
}
