//! Signing keys for widget tokens.
//!
//! A widget token is signed with HMAC-SHA256 under a key derived from ragvault's root secret (the master
//! key file, or the internal key read from Vault) and a key id. Rotating means starting a new key id: the
//! derivation is a PRF, so keys of different ids are independent, a leaked key id reveals nothing, and
//! tokens signed under the previous id keep verifying for as long as the store says that id may verify.

use crate::Secret;
use ring::hmac;

/// One widget-token signing key. Signs and verifies; the key bytes never leave this crate.
pub struct WidgetTokenKey {
    key: hmac::Key,
}

impl std::fmt::Debug for WidgetTokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WidgetTokenKey([redacted])")
    }
}

impl WidgetTokenKey {
    pub(crate) fn new(material: Secret<[u8; 32]>) -> WidgetTokenKey {
        WidgetTokenKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, material.expose_secret()),
        }
    }

    /// The derivation label of a key id (ids are validated by the caller to be short and printable).
    pub(crate) fn purpose(kid: &str) -> String {
        format!("widget-token/v1/{kid}")
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 32] {
        let tag = hmac::sign(&self.key, message);
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Constant-time check of a tag.
    pub fn verify(&self, message: &[u8], tag: &[u8]) -> bool {
        hmac::verify(&self.key, message, tag).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_own_tags_only() {
        let a = WidgetTokenKey::new(Secret::new([1u8; 32]));
        let b = WidgetTokenKey::new(Secret::new([2u8; 32]));
        let tag = a.sign(b"payload");
        assert!(a.verify(b"payload", &tag));
        assert!(!a.verify(b"payload!", &tag));
        assert!(!b.verify(b"payload", &tag));
        assert!(!a.verify(b"payload", &tag[..31]));
    }
}
