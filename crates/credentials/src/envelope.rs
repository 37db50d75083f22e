//! Sealing content with per-tenant data keys (AES-256-GCM, ring).
//!
//! Sealed format, version 1: `0x01 ‖ nonce (12 bytes, random) ‖ ciphertext ‖ tag (16 bytes)`. The
//! associated data binds the format version, what the bytes are (chunk text, heading path, document name,
//! metadata), the tenant, the document, the chunk and its ordinal, so a ciphertext moved to another row,
//! document or tenant fails to open.

use crate::{CredentialsError, Secret};
use ragvault_core::{ChunkId, DocumentId, TenantId};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use uuid::Uuid;

pub const SEAL_FORMAT_V1: u8 = 1;
const TAG_LEN: usize = 16;
/// Bytes a sealed value adds to its plaintext.
pub const SEAL_OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;

/// What a sealed value is; part of the associated data, so a heading cannot be opened as chunk text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum SealPurpose {
    ChunkText = 1,
    HeadingPath = 2,
    DocumentName = 3,
    DocumentMetadata = 4,
    /// An upload waiting in the ingest queue (ordinal 0: the bytes; 1: name, type and metadata).
    Upload = 5,
    /// A chunk's embedding (f32 little-endian): embeddings can be inverted into text, so they are content.
    ChunkVector = 6,
}

/// Where a sealed value lives. Values that belong to a document rather than a chunk use `chunk: None`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SealContext {
    pub purpose: SealPurpose,
    pub tenant: TenantId,
    pub document: DocumentId,
    pub chunk: Option<ChunkId>,
    pub ordinal: u32,
}

impl SealContext {
    fn aad(&self) -> [u8; 2 + 16 * 3 + 4] {
        let mut aad = [0u8; 2 + 16 * 3 + 4];
        aad[0] = SEAL_FORMAT_V1;
        aad[1] = self.purpose as u8;
        aad[2..18].copy_from_slice(self.tenant.0.as_bytes());
        aad[18..34].copy_from_slice(self.document.0.as_bytes());
        aad[34..50].copy_from_slice(self.chunk.map(|c| c.0).unwrap_or(Uuid::nil()).as_bytes());
        aad[50..54].copy_from_slice(&self.ordinal.to_be_bytes());
        aad
    }
}

/// A tenant's plaintext data key (DEK), held only in memory and zeroized when dropped.
pub struct DataKey {
    id: Uuid,
    tenant: TenantId,
    key: Secret<[u8; 32]>,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey")
            .field("id", &self.id)
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

impl DataKey {
    pub(crate) fn new(id: Uuid, tenant: TenantId, key: Secret<[u8; 32]>) -> DataKey {
        DataKey { id, tenant, key }
    }

    /// The `data_keys` row this key was unwrapped from.
    pub fn id(&self) -> Uuid {
        self.id
    }

    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// The raw key, for rewrapping and keyed hashing inside this crate only.
    pub(crate) fn expose_bytes(&self) -> &[u8; 32] {
        self.key.expose_secret()
    }

    fn aead(&self) -> Result<LessSafeKey, CredentialsError> {
        // The key schedule is built per call and dropped at once; only the zeroizing Secret is cached.
        UnboundKey::new(&AES_256_GCM, self.key.expose_secret())
            .map(LessSafeKey::new)
            .map_err(|_| CredentialsError::SealTampered)
    }

    /// Seals `plaintext` for the place described by `context`.
    pub fn seal(
        &self,
        context: &SealContext,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CredentialsError> {
        if context.tenant != self.tenant {
            return Err(CredentialsError::SealTampered);
        }
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| CredentialsError::Random)?;
        let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
        out.push(SEAL_FORMAT_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = self
            .aead()?
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.aad()),
                &mut out[1 + NONCE_LEN..],
            )
            .map_err(|_| CredentialsError::Random)?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Opens a sealed value; fails (never returns garbage) if anything about it is not exactly as sealed.
    pub fn open(&self, context: &SealContext, sealed: &[u8]) -> Result<Vec<u8>, CredentialsError> {
        let Some((&version, rest)) = sealed.split_first() else {
            return Err(CredentialsError::SealTampered);
        };
        if version != SEAL_FORMAT_V1 {
            return Err(CredentialsError::UnsupportedSealFormat(version));
        }
        if rest.len() < NONCE_LEN + TAG_LEN || context.tenant != self.tenant {
            return Err(CredentialsError::SealTampered);
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce
            .try_into()
            .map_err(|_| CredentialsError::SealTampered)?;
        let mut buffer = body.to_vec();
        let plain_len = self
            .aead()?
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.aad()),
                &mut buffer,
            )
            .map_err(|_| CredentialsError::SealTampered)?
            .len();
        buffer.truncate(plain_len);
        Ok(buffer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8, tenant: TenantId) -> DataKey {
        DataKey::new(Uuid::new_v4(), tenant, Secret::new([byte; 32]))
    }

    fn context(tenant: TenantId) -> SealContext {
        SealContext {
            purpose: SealPurpose::ChunkText,
            tenant,
            document: DocumentId::new(),
            chunk: Some(ChunkId::new()),
            ordinal: 7,
        }
    }

    #[test]
    fn round_trip_and_random_nonces() {
        let tenant = TenantId::new();
        let dek = key(1, tenant);
        let ctx = context(tenant);
        let a = dek
            .seal(&ctx, b"reset the router by holding the button")
            .unwrap();
        let b = dek
            .seal(&ctx, b"reset the router by holding the button")
            .unwrap();
        assert_ne!(a, b, "nonces must differ");
        assert_eq!(a.len(), 38 + SEAL_OVERHEAD);
        assert_eq!(
            dek.open(&ctx, &a).unwrap(),
            b"reset the router by holding the button"
        );
        assert_eq!(dek.open(&ctx, &dek.seal(&ctx, b"").unwrap()).unwrap(), b"");
    }

    #[test]
    fn moving_a_ciphertext_anywhere_else_fails() {
        let tenant = TenantId::new();
        let dek = key(1, tenant);
        let ctx = context(tenant);
        let sealed = dek.seal(&ctx, b"secret manual text").unwrap();
        let elsewhere = [
            SealContext { ordinal: 8, ..ctx },
            SealContext {
                chunk: Some(ChunkId::new()),
                ..ctx
            },
            SealContext {
                document: DocumentId::new(),
                ..ctx
            },
            SealContext {
                purpose: SealPurpose::HeadingPath,
                ..ctx
            },
            SealContext { chunk: None, ..ctx },
        ];
        for other in elsewhere {
            assert!(matches!(
                dek.open(&other, &sealed),
                Err(CredentialsError::SealTampered)
            ));
        }
        // Another tenant's context, even with the same key bytes, is refused.
        let other_tenant = TenantId::new();
        let same_bytes = key(1, other_tenant);
        assert!(same_bytes
            .open(
                &SealContext {
                    tenant: other_tenant,
                    ..ctx
                },
                &sealed
            )
            .is_err());
        // The wrong key.
        assert!(matches!(
            key(2, tenant).open(&ctx, &sealed),
            Err(CredentialsError::SealTampered)
        ));
    }

    #[test]
    fn any_bit_flip_or_truncation_fails() {
        let tenant = TenantId::new();
        let dek = key(3, tenant);
        let ctx = context(tenant);
        let sealed = dek.seal(&ctx, b"0123456789abcdef").unwrap();
        for i in 1..sealed.len() {
            for bit in [0x01u8, 0x80] {
                let mut flipped = sealed.clone();
                flipped[i] ^= bit;
                assert!(
                    dek.open(&ctx, &flipped).is_err(),
                    "flip at byte {i} went unnoticed"
                );
            }
        }
        for len in 0..sealed.len() {
            assert!(
                dek.open(&ctx, &sealed[..len]).is_err(),
                "truncation to {len} went unnoticed"
            );
        }
        let mut future = sealed.clone();
        future[0] = 2;
        assert!(matches!(
            dek.open(&ctx, &future),
            Err(CredentialsError::UnsupportedSealFormat(2))
        ));
    }

    #[test]
    fn debug_hides_the_key() {
        let dek = key(0xAB, TenantId::new());
        assert!(!format!("{dek:?}").to_lowercase().contains("abab"));
    }
}
