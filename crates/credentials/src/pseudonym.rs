//! Keyed pseudonyms: what the vector and keyword indexes see instead of ids, names and words.
//!
//! A tenant's index key is a data key of its own (wrapped under the tenant's KEK like any DEK), so
//! destroying the KEK also makes the pseudonyms unlinkable.

use crate::envelope::DataKey;
use ragvault_core::{ChunkId, PointId};
use ring::hmac;

/// A tenant's key for pseudonyms. Deliberately a different type from a content key.
#[derive(Clone, Debug)]
pub struct IndexKey(std::sync::Arc<DataKey>);

impl IndexKey {
    pub fn new(key: std::sync::Arc<DataKey>) -> IndexKey {
        IndexKey(key)
    }

    pub fn data_key_id(&self) -> uuid::Uuid {
        self.0.id()
    }

    fn mac(&self, label: &[u8], data: &[u8]) -> hmac::Tag {
        let key = hmac::Key::new(hmac::HMAC_SHA256, self.0.expose_bytes());
        let mut context = hmac::Context::with_key(&key);
        // A label per use, so a point id can never equal a content hash or a partition name.
        context.update(label);
        context.update(&[0]);
        context.update(data);
        context.sign()
    }

    /// The index point id of a chunk: HMAC-SHA256(index key, chunk id) truncated to 64 bits.
    pub fn point_id(&self, chunk: ChunkId) -> PointId {
        let tag = self.mac(b"point", chunk.0.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&tag.as_ref()[..8]);
        PointId(u64::from_be_bytes(first))
    }

    /// The tenant's index partition (and file) name for vectors of one embedding model: no tenant id, slug
    /// or model name in it. Another model gets another partition, so vectors never mix.
    pub fn partition_name(&self, model_id: &str) -> String {
        format!(
            "p{}",
            hex::encode(&self.mac(b"partition", model_id.as_bytes()).as_ref()[..16])
        )
    }

    /// A keyed content hash for de-duplicating re-uploads: equal documents match, but a guessed document
    /// cannot be confirmed from a database dump without the key.
    pub fn content_hash(&self, content: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.mac(b"content", content).as_ref());
        out
    }

    /// A keyed hash of a normalised term or tag, for the blind keyword index and tag filters.
    pub fn term_hash(&self, term: &str) -> [u8; 16] {
        let mut out = [0u8; 16];
        out.copy_from_slice(&self.mac(b"term", term.as_bytes()).as_ref()[..16]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Secret;
    use ragvault_core::TenantId;

    fn index_key(byte: u8) -> IndexKey {
        IndexKey::new(std::sync::Arc::new(DataKey::new(
            uuid::Uuid::new_v4(),
            TenantId::new(),
            Secret::new([byte; 32]),
        )))
    }

    #[test]
    fn pseudonyms_are_stable_keyed_and_separated_by_use() {
        let (a, b) = (index_key(1), index_key(2));
        let chunk = ChunkId::new();
        assert_eq!(a.point_id(chunk), a.point_id(chunk));
        assert_ne!(a.point_id(chunk), b.point_id(chunk));
        assert_ne!(a.point_id(chunk), a.point_id(ChunkId::new()));
        assert_eq!(a.partition_name("m"), a.partition_name("m"));
        assert_ne!(a.partition_name("m"), b.partition_name("m"));
        assert_ne!(a.partition_name("m"), a.partition_name("other-model"));
        assert!(a.partition_name("m").starts_with('p') && a.partition_name("m").len() == 33);
        assert_ne!(a.content_hash(b"manual"), b.content_hash(b"manual"));
        assert_ne!(a.term_hash("e42"), a.term_hash("e43"));
        assert_ne!(&a.content_hash(b"x")[..16], &a.term_hash("x")[..]);
    }
}
