//! API keys look like `rvk_<public-id>_<secret>`. The public id finds the row; the whole key is checked
//! against a keyed hash (HMAC-SHA256 under a key from the key source), so a database dump yields neither
//! keys nor hashes that can be brute-forced offline without the key source.

use crate::{CredentialsError, Secret};
use rand::rngs::OsRng;
use rand::Rng;
use ring::hmac;

pub const API_KEY_PREFIX: &str = "rvk_";
const PUBLIC_ID_LEN: usize = 12;
const SECRET_LEN: usize = 40;
const PUBLIC_ID_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const SECRET_ALPHABET: &[u8] = concat!(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "abcdefghijklmnopqrstuvwxyz",
    "0123456789"
)
.as_bytes();

/// Why a presented credential could not even be parsed. Deliberately says nothing about the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed API key: expected rvk_<public-id>_<secret>")]
pub struct MalformedKey;

/// A key as presented by a client, parsed but not yet verified.
#[derive(Debug)]
pub struct PresentedKey {
    public_id: String,
    whole: Secret<String>,
}

impl PresentedKey {
    pub fn parse(raw: &str) -> Result<PresentedKey, MalformedKey> {
        let rest = raw.strip_prefix(API_KEY_PREFIX).ok_or(MalformedKey)?;
        let (public_id, secret) = rest.split_once('_').ok_or(MalformedKey)?;
        // Byte-class checks equal to the alphabets above, without scanning them per byte.
        let public_ok = public_id.len() == PUBLIC_ID_LEN
            && public_id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let secret_ok =
            secret.len() == SECRET_LEN && secret.bytes().all(|b| b.is_ascii_alphanumeric());
        if !public_ok || !secret_ok {
            return Err(MalformedKey);
        }
        Ok(PresentedKey {
            public_id: public_id.to_owned(),
            whole: Secret::new(raw.to_owned()),
        })
    }

    /// The lookup handle; not secret (it is shown in listings and logs).
    pub fn public_id(&self) -> &str {
        &self.public_id
    }
}

/// A freshly generated key: the whole key is shown to the user once, only the hash is stored.
#[derive(Debug)]
pub struct IssuedKey {
    pub public_id: String,
    pub key: Secret<String>,
    pub hash: Vec<u8>,
}

/// Computes and checks keyed hashes of API keys.
pub struct ApiKeyHasher {
    key: hmac::Key,
}

impl std::fmt::Debug for ApiKeyHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKeyHasher([redacted])")
    }
}

impl ApiKeyHasher {
    pub(crate) fn new(key: &Secret<[u8; 32]>) -> ApiKeyHasher {
        ApiKeyHasher {
            key: hmac::Key::new(hmac::HMAC_SHA256, key.expose_secret()),
        }
    }

    /// Generates a new random key and its hash.
    pub fn issue(&self) -> Result<IssuedKey, CredentialsError> {
        let public_id = random_string(PUBLIC_ID_ALPHABET, PUBLIC_ID_LEN);
        let secret = Secret::new(random_string(SECRET_ALPHABET, SECRET_LEN));
        let key = Secret::new(format!(
            "{API_KEY_PREFIX}{public_id}_{}",
            secret.expose_secret()
        ));
        let hash = self.hash_whole(key.expose_secret());
        Ok(IssuedKey {
            public_id,
            key,
            hash,
        })
    }

    fn hash_whole(&self, whole: &str) -> Vec<u8> {
        hmac::sign(&self.key, whole.as_bytes()).as_ref().to_vec()
    }

    /// Checks a presented key against a stored hash in constant time.
    pub fn verify(&self, presented: &PresentedKey, stored_hash: &[u8]) -> bool {
        hmac::verify(
            &self.key,
            presented.whole.expose_secret().as_bytes(),
            stored_hash,
        )
        .is_ok()
    }

    /// A new dashboard session token (`rvs_` + 40 random characters) and the keyed hash it is stored and
    /// looked up by (the token itself is only ever in the operator's cookie).
    pub fn issue_session_token(&self) -> (Secret<String>, Vec<u8>) {
        let token = Secret::new(format!(
            "rvs_{}",
            random_string(SECRET_ALPHABET, SECRET_LEN)
        ));
        let hash = self.session_token_hash(token.expose_secret());
        (token, hash)
    }

    /// The keyed hash of a presented session token.
    pub fn session_token_hash(&self, token: &str) -> Vec<u8> {
        self.hash_whole(&format!("session:{token}"))
    }

    /// The CSRF token of a session: derived from the session token under the hashing key, so it is
    /// unguessable without the cookie and nothing needs storing.
    pub fn csrf_token(&self, session_token: &str) -> String {
        hex::encode(self.hash_whole(&format!("csrf:{session_token}")))
    }

    /// Whether `presented` is the session's CSRF token (constant time).
    pub fn verify_csrf(&self, session_token: &str, presented: &str) -> bool {
        let Ok(tag) = hex::decode(presented) else {
            return false;
        };
        hmac::verify(&self.key, format!("csrf:{session_token}").as_bytes(), &tag).is_ok()
    }

    /// Spends the same work as [`ApiKeyHasher::verify`] when no row matched, so response time does not
    /// reveal whether a public id exists.
    pub fn verify_against_nothing(&self, presented: &PresentedKey) {
        let _ = hmac::verify(
            &self.key,
            presented.whole.expose_secret().as_bytes(),
            &[0u8; 32],
        );
    }
}

fn random_string(alphabet: &[u8], len: usize) -> String {
    let mut rng = OsRng;
    (0..len)
        .map(|_| char::from(alphabet[rng.gen_range(0..alphabet.len())]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher(byte: u8) -> ApiKeyHasher {
        ApiKeyHasher::new(&Secret::new([byte; 32]))
    }

    #[test]
    fn issued_keys_parse_and_verify() {
        let hasher = hasher(7);
        let issued = hasher.issue().unwrap();
        let presented = PresentedKey::parse(issued.key.expose_secret()).unwrap();
        assert_eq!(presented.public_id(), issued.public_id);
        assert!(hasher.verify(&presented, &issued.hash));
    }

    #[test]
    fn hash_depends_on_the_hashing_key() {
        let issued = hasher(1).issue().unwrap();
        let presented = PresentedKey::parse(issued.key.expose_secret()).unwrap();
        assert!(!hasher(2).verify(&presented, &issued.hash));
    }

    #[test]
    fn altered_secret_fails_verification() {
        let hasher = hasher(3);
        let issued = hasher.issue().unwrap();
        let whole = issued.key.expose_secret();
        let last = whole.chars().last().unwrap();
        let altered = format!(
            "{}{}",
            &whole[..whole.len() - 1],
            if last == 'A' { 'B' } else { 'A' }
        );
        let presented = PresentedKey::parse(&altered).unwrap();
        assert!(!hasher.verify(&presented, &issued.hash));
    }

    #[test]
    fn malformed_keys_are_rejected() {
        let good_secret = "A".repeat(SECRET_LEN);
        for bad in [
            String::new(),
            "rvk_".to_owned(),
            format!("rvk_abcdefghijkl{good_secret}"),
            format!("rvx_abcdefghijkl_{good_secret}"),
            format!("rvk_ABCDEFGHIJKL_{good_secret}"),
            format!("rvk_abcdefghijk_{good_secret}"),
            format!("rvk_abcdefghijkl_{}", "A".repeat(SECRET_LEN - 1)),
            format!("rvk_abcdefghijkl_{}!", "A".repeat(SECRET_LEN - 1)),
        ] {
            assert_eq!(PresentedKey::parse(&bad).err(), Some(MalformedKey), "{bad}");
        }
    }

    #[test]
    fn debug_output_hides_the_key() {
        let issued = hasher(4).issue().unwrap();
        let presented = PresentedKey::parse(issued.key.expose_secret()).unwrap();
        let secret_part = issued
            .key
            .expose_secret()
            .rsplit('_')
            .next()
            .unwrap()
            .to_owned();
        assert!(!format!("{issued:?}").contains(&secret_part));
        assert!(!format!("{presented:?}").contains(&secret_part));
    }
}
