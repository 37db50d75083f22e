//! Per-tenant key-encryption keys (KEKs) and the data keys (DEKs) they wrap: Vault transit
//! (`ragvault-tenant-<id>`) or, on the embedded default, KEKs kept in the sealed local keyring.
//!
//! Wrapped DEK formats: `vault:v<N>:...` (transit's own ciphertext) and `local:v<N>:<hex nonce ‖ ciphertext>`
//! (AES-256-GCM under local KEK version N, with the tenant id as associated data).

use crate::envelope::DataKey;
use crate::vault::VaultBackend;
use crate::{CredentialsError, KeySource, Secret};
use base64::Engine;
use ragvault_core::TenantId;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use uuid::Uuid;
use zeroize::Zeroize;

/// A DEK encrypted under its tenant's KEK, as stored in Postgres. Not secret without the KEK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrappedKey(pub String);

/// The transit key name of a tenant.
pub fn kek_name(tenant: TenantId) -> String {
    format!("ragvault-tenant-{tenant}")
}

fn wrap_aad(tenant: TenantId) -> Vec<u8> {
    let mut aad = b"ragvault-dek-v1".to_vec();
    aad.extend_from_slice(tenant.0.as_bytes());
    aad
}

fn aes(key: &Secret<[u8; 32]>) -> Result<LessSafeKey, CredentialsError> {
    UnboundKey::new(&AES_256_GCM, key.expose_secret())
        .map(LessSafeKey::new)
        .map_err(|_| CredentialsError::Random)
}

fn random_dek() -> Result<Secret<[u8; 32]>, CredentialsError> {
    let mut key = [0u8; 32];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| CredentialsError::Random)?;
    Ok(Secret::new(key))
}

fn decode_dek(mut bytes: Vec<u8>, tenant: TenantId) -> Result<Secret<[u8; 32]>, CredentialsError> {
    let result = if bytes.len() == 32 {
        let mut key = [0u8; 32];
        key.copy_from_slice(&bytes);
        Ok(Secret::new(key))
    } else {
        Err(CredentialsError::DataKeyUnwrap {
            tenant: tenant.to_string(),
        })
    };
    bytes.zeroize();
    result
}

fn transit_error(
    vault: &VaultBackend,
    tenant: TenantId,
    err: vaultrs::error::ClientError,
) -> CredentialsError {
    let status = match &err {
        vaultrs::error::ClientError::APIError { code, .. } => Some(*code),
        vaultrs::error::ClientError::RestClientError {
            source: rustify::errors::ClientError::ServerResponseError { code, .. },
        } => Some(*code),
        _ => None,
    };
    match status {
        Some(400) => CredentialsError::DataKeyUnwrap {
            tenant: tenant.to_string(),
        },
        Some(404) => CredentialsError::KekMissing {
            tenant: tenant.to_string(),
        },
        Some(403) => CredentialsError::VaultDenied {
            path: format!("{}/keys/{}", vault.config().transit_mount, kek_name(tenant)),
        },
        Some(code) => CredentialsError::VaultUnavailable {
            addr: vault.config().addr.clone(),
            reason: format!("transit: HTTP {code}"),
        },
        None => CredentialsError::VaultUnavailable {
            addr: vault.config().addr.clone(),
            reason: "transit: no answer".to_owned(),
        },
    }
}

impl KeySource {
    /// Creates the tenant's KEK (idempotent).
    pub async fn create_tenant_kek(&self, tenant: TenantId) -> Result<(), CredentialsError> {
        match self {
            KeySource::Local { providers, .. } => providers.create_kek(&tenant.to_string()),
            KeySource::Vault { backend, .. } => {
                let client = backend.transit_client().await;
                let mut opts = vaultrs::api::transit::requests::CreateKeyRequest::builder();
                opts.key_type(vaultrs::api::transit::KeyType::Aes256Gcm96);
                vaultrs::transit::key::create(
                    &*client,
                    &backend.config().transit_mount,
                    &kek_name(tenant),
                    Some(&mut opts),
                )
                .await
                .map_err(|e| transit_error(backend, tenant, e))
            }
        }
    }

    /// A new DEK for the tenant: the plaintext (for immediate use) and its wrapped form (to store).
    pub async fn generate_data_key(
        &self,
        tenant: TenantId,
        id: Uuid,
    ) -> Result<(DataKey, WrappedKey), CredentialsError> {
        match self {
            KeySource::Local { providers, .. } => {
                let dek = random_dek()?;
                let wrapped = wrap_local(providers, tenant, dek.expose_secret())?;
                Ok((DataKey::new(id, tenant, dek), wrapped))
            }
            KeySource::Vault { backend, .. } => {
                let client = backend.transit_client().await;
                let mut opts = vaultrs::api::transit::requests::GenerateDataKeyRequest::builder();
                opts.bits(256u16);
                let response = vaultrs::transit::generate::data_key(
                    &*client,
                    &backend.config().transit_mount,
                    &kek_name(tenant),
                    vaultrs::api::transit::requests::DataKeyType::Plaintext,
                    Some(&mut opts),
                )
                .await
                .map_err(|e| transit_error(backend, tenant, e))?;
                let mut plaintext = response.plaintext.unwrap_or_default();
                let decoded =
                    base64::engine::general_purpose::STANDARD.decode(plaintext.as_bytes());
                plaintext.zeroize();
                let bytes = decoded.map_err(|_| CredentialsError::DataKeyUnwrap {
                    tenant: tenant.to_string(),
                })?;
                let dek = decode_dek(bytes, tenant)?;
                Ok((
                    DataKey::new(id, tenant, dek),
                    WrappedKey(response.ciphertext),
                ))
            }
        }
    }

    /// Unwraps a stored DEK. Fails with `KekMissing` once the tenant's KEK is destroyed.
    pub async fn unwrap_data_key(
        &self,
        tenant: TenantId,
        id: Uuid,
        wrapped: &WrappedKey,
    ) -> Result<DataKey, CredentialsError> {
        let unwrap_failed = || CredentialsError::DataKeyUnwrap {
            tenant: tenant.to_string(),
        };
        match self {
            KeySource::Local { providers, .. } => {
                let (version, blob) = parse_local(&wrapped.0).ok_or_else(unwrap_failed)?;
                let (_, kek) = providers.kek(&tenant.to_string(), Some(version))?;
                if blob.len() < NONCE_LEN {
                    return Err(unwrap_failed());
                }
                let (nonce, sealed) = blob.split_at(NONCE_LEN);
                let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| unwrap_failed())?;
                let mut buffer = sealed.to_vec();
                let plain = aes(&kek)?
                    .open_in_place(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(wrap_aad(tenant)),
                        &mut buffer,
                    )
                    .map_err(|_| unwrap_failed())?
                    .to_vec();
                buffer.zeroize();
                Ok(DataKey::new(id, tenant, decode_dek(plain, tenant)?))
            }
            KeySource::Vault { backend, .. } => {
                let client = backend.transit_client().await;
                let response = vaultrs::transit::data::decrypt(
                    &*client,
                    &backend.config().transit_mount,
                    &kek_name(tenant),
                    &wrapped.0,
                    None,
                )
                .await;
                let response = match response {
                    Ok(response) => response,
                    Err(e) => {
                        let err = transit_error(backend, tenant, e);
                        // Transit answers 400 both for a bad ciphertext and for a deleted key: tell them apart.
                        if matches!(err, CredentialsError::DataKeyUnwrap { .. }) {
                            let exists = vaultrs::transit::key::read(
                                &*client,
                                &backend.config().transit_mount,
                                &kek_name(tenant),
                            )
                            .await;
                            if let Err(e) = exists {
                                return Err(transit_error(backend, tenant, e));
                            }
                        }
                        return Err(err);
                    }
                };
                let mut plaintext = response.plaintext;
                let decoded =
                    base64::engine::general_purpose::STANDARD.decode(plaintext.as_bytes());
                plaintext.zeroize();
                let bytes = decoded.map_err(|_| unwrap_failed())?;
                Ok(DataKey::new(id, tenant, decode_dek(bytes, tenant)?))
            }
        }
    }

    /// Rotates the tenant's KEK; existing wrapped DEKs stay readable until rewrapped.
    pub async fn rotate_tenant_kek(&self, tenant: TenantId) -> Result<(), CredentialsError> {
        match self {
            KeySource::Local { providers, .. } => {
                providers.rotate_kek(&tenant.to_string()).map(|_| ())
            }
            KeySource::Vault { backend, .. } => {
                let client = backend.transit_client().await;
                vaultrs::transit::key::rotate(
                    &*client,
                    &backend.config().transit_mount,
                    &kek_name(tenant),
                )
                .await
                .map_err(|e| transit_error(backend, tenant, e))
            }
        }
    }

    /// Re-encrypts a wrapped DEK under the latest KEK version (the DEK itself is unchanged).
    pub async fn rewrap_data_key(
        &self,
        tenant: TenantId,
        wrapped: &WrappedKey,
    ) -> Result<WrappedKey, CredentialsError> {
        match self {
            KeySource::Local { providers, .. } => {
                let dek = self.unwrap_data_key(tenant, Uuid::nil(), wrapped).await?;
                wrap_local(providers, tenant, dek.expose_bytes())
            }
            KeySource::Vault { backend, .. } => {
                let client = backend.transit_client().await;
                let response = vaultrs::transit::data::rewrap(
                    &*client,
                    &backend.config().transit_mount,
                    &kek_name(tenant),
                    &wrapped.0,
                    None,
                )
                .await
                .map_err(|e| transit_error(backend, tenant, e))?;
                Ok(WrappedKey(response.ciphertext))
            }
        }
    }

    /// Destroys the tenant's KEK: every DEK wrapped under it, and so every sealed value, becomes
    /// unreadable, including copies in backups.
    pub async fn destroy_tenant_kek(&self, tenant: TenantId) -> Result<(), CredentialsError> {
        match self {
            KeySource::Local { providers, .. } => {
                providers.destroy_kek(&tenant.to_string()).map(|_| ())
            }
            KeySource::Vault { backend, .. } => {
                let client = backend.transit_client().await;
                let mount = &backend.config().transit_mount;
                let name = kek_name(tenant);
                if let Err(e) = vaultrs::transit::key::read(&*client, mount, &name).await {
                    return match transit_error(backend, tenant, e) {
                        // Already gone: destroying twice is not an error.
                        CredentialsError::KekMissing { .. } => Ok(()),
                        other => Err(other),
                    };
                }
                let mut opts =
                    vaultrs::api::transit::requests::UpdateKeyConfigurationRequest::builder();
                opts.deletion_allowed(true);
                vaultrs::transit::key::update(&*client, mount, &name, Some(&mut opts))
                    .await
                    .map_err(|e| transit_error(backend, tenant, e))?;
                vaultrs::transit::key::delete(&*client, mount, &name)
                    .await
                    .map_err(|e| transit_error(backend, tenant, e))
            }
        }
    }
}

/// Wraps DEK bytes under the tenant's latest local KEK: `local:v<N>:<hex nonce ‖ ciphertext>`.
fn wrap_local(
    keyring: &crate::SealedKeyring,
    tenant: TenantId,
    dek: &[u8; 32],
) -> Result<WrappedKey, CredentialsError> {
    let (version, kek) = keyring.kek(&tenant.to_string(), None)?;
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| CredentialsError::Random)?;
    // Sealed in place: the plaintext copy is overwritten by the ciphertext.
    let mut buffer = dek.to_vec();
    aes(&kek)?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(wrap_aad(tenant)),
            &mut buffer,
        )
        .map_err(|_| CredentialsError::Random)?;
    let mut blob = nonce.to_vec();
    blob.extend_from_slice(&buffer);
    Ok(WrappedKey(format!(
        "local:v{version}:{}",
        hex::encode(blob)
    )))
}

fn parse_local(wrapped: &str) -> Option<(u32, Vec<u8>)> {
    let rest = wrapped.strip_prefix("local:v")?;
    let (version, blob) = rest.split_once(':')?;
    Some((version.parse().ok()?, hex::decode(blob).ok()?))
}
