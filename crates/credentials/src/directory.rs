//! The tenant directory key: tenant slugs are stored sealed, and found by a keyed hash, so a database dump
//! does not name the customers.

use crate::{CredentialsError, Secret};
use ragvault_core::TenantId;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

const SLUG_AAD: &[u8] = b"ragvault-slug-v1";

pub struct DirectoryKey {
    key: Secret<[u8; 32]>,
}

impl std::fmt::Debug for DirectoryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DirectoryKey([redacted])")
    }
}

impl DirectoryKey {
    pub(crate) fn new(key: Secret<[u8; 32]>) -> DirectoryKey {
        DirectoryKey { key }
    }

    fn aad(tenant: TenantId) -> Vec<u8> {
        let mut aad = SLUG_AAD.to_vec();
        aad.extend_from_slice(tenant.0.as_bytes());
        aad
    }

    fn aead(&self) -> Result<LessSafeKey, CredentialsError> {
        UnboundKey::new(&AES_256_GCM, self.key.expose_secret())
            .map(LessSafeKey::new)
            .map_err(|_| CredentialsError::Random)
    }

    /// The lookup handle of a slug: equal slugs give equal hashes, without revealing the slug.
    pub fn slug_hash(&self, slug: &str) -> Vec<u8> {
        let key = hmac::Key::new(hmac::HMAC_SHA256, self.key.expose_secret());
        hmac::sign(&key, format!("slug\0{slug}").as_bytes())
            .as_ref()
            .to_vec()
    }

    /// Seals a slug to its tenant row.
    pub fn seal_slug(&self, tenant: TenantId, slug: &str) -> Result<Vec<u8>, CredentialsError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| CredentialsError::Random)?;
        let mut buffer = slug.as_bytes().to_vec();
        self.aead()?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(Self::aad(tenant)),
                &mut buffer,
            )
            .map_err(|_| CredentialsError::Random)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buffer);
        Ok(out)
    }

    pub fn open_slug(&self, tenant: TenantId, sealed: &[u8]) -> Result<String, CredentialsError> {
        if sealed.len() < NONCE_LEN {
            return Err(CredentialsError::SealTampered);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce
            .try_into()
            .map_err(|_| CredentialsError::SealTampered)?;
        let mut buffer = body.to_vec();
        let plain = self
            .aead()?
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(Self::aad(tenant)),
                &mut buffer,
            )
            .map_err(|_| CredentialsError::SealTampered)?;
        String::from_utf8(plain.to_vec()).map_err(|_| CredentialsError::SealTampered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_round_trip_hash_stably_and_stay_with_their_tenant() {
        let key = DirectoryKey::new(Secret::new([9; 32]));
        let (t1, t2) = (TenantId::new(), TenantId::new());
        let sealed = key.seal_slug(t1, "acme-support").unwrap();
        assert!(!sealed.windows(4).any(|w| w == b"acme"));
        assert_eq!(key.open_slug(t1, &sealed).unwrap(), "acme-support");
        assert!(key.open_slug(t2, &sealed).is_err());
        assert_eq!(key.slug_hash("acme-support"), key.slug_hash("acme-support"));
        assert_ne!(key.slug_hash("acme-support"), key.slug_hash("acme-sales"));
        let other = DirectoryKey::new(Secret::new([8; 32]));
        assert_ne!(
            key.slug_hash("acme-support"),
            other.slug_hash("acme-support")
        );
    }
}
