//! Key material for ragvault.
//!
//! Architecture invariant: this is the only crate that holds key material, reads key files, talks to a
//! key source (Vault/OpenBao or the local keyring), or uses `ring`. Everything it hands out is wrapped in
//! [`Secret`], lent inside a closure ([`Lease::with_key`]), or is a one-way value (a keyed hash).

mod api_key;
mod data_key_cache;
mod directory;
mod envelope;
mod error;
mod kek;
mod keyring;
mod lease;
mod provider;
mod provider_keyring;
mod pseudonym;
mod secret;
mod source;
mod vault;
mod widget_key;

pub use api_key::{ApiKeyHasher, IssuedKey, MalformedKey, PresentedKey, API_KEY_PREFIX};
pub use data_key_cache::DataKeyCache;
pub use directory::DirectoryKey;
pub use envelope::{DataKey, SealContext, SealPurpose, SEAL_FORMAT_V1, SEAL_OVERHEAD};
pub use error::{CredentialsError, RevokedState};
pub use kek::{kek_name, WrappedKey};
pub use keyring::LocalKeyring;
pub use lease::{
    CredentialEvent, CredentialEventSink, Lease, LeaseManager, LeaseSettings, LeaseStatus,
    LeasedCallError, ProviderCallError, AUTH_FAILURE_LIMIT,
};
pub use provider::{
    operator_path, sandbox_path, tenant_path, validate_provider_name, FetchedKey, ProviderKeyRef,
};
pub use provider_keyring::{KeyVersionInfo, SealedKeyring};
pub use pseudonym::IndexKey;
pub use secret::Secret;
pub use source::{KeySource, API_KEY_HASH_PATH};
pub use vault::{DatabaseLease, VaultBackend, VaultConfig};
pub use widget_key::WidgetTokenKey;
