//! The embedded default's provider key store: versioned provider keys in one file sealed with AES-256-GCM
//! under a key derived from the master key. Same paths and semantics as Vault KV v2 (versions, delete),
//! so leases behave the same on both backends.

use crate::error::RevokedState;
use crate::vault::KvRead;
use crate::{CredentialsError, LocalKeyring, Secret};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use time::OffsetDateTime;
use zeroize::Zeroize;

/// File header: format name and version, also bound into the AEAD so a header swap is detected.
const MAGIC: &[u8] = b"RVKEYRING\x01";

#[derive(Default, Serialize, Deserialize)]
struct Document {
    entries: BTreeMap<String, Vec<StoredVersion>>,
    /// Per-tenant key-encryption keys (the local stand-in for Vault transit keys), by tenant id.
    #[serde(default)]
    keks: BTreeMap<String, Vec<StoredKek>>,
}

#[derive(Serialize, Deserialize)]
struct StoredKek {
    version: u32,
    key_hex: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

#[derive(Serialize, Deserialize)]
struct StoredVersion {
    version: u64,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    api_key: String,
    base_url: Option<String>,
    organization: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    deleted_at: Option<OffsetDateTime>,
}

impl Drop for Document {
    fn drop(&mut self) {
        for versions in self.entries.values_mut() {
            for v in versions {
                v.api_key.zeroize();
            }
        }
        for versions in self.keks.values_mut() {
            for v in versions {
                v.key_hex.zeroize();
            }
        }
    }
}

fn random_key() -> Result<String, CredentialsError> {
    let mut key = [0u8; 32];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| CredentialsError::Random)?;
    let encoded = hex::encode(key);
    key.zeroize();
    Ok(encoded)
}

fn decode_key(hex_key: &str) -> Option<Secret<[u8; 32]>> {
    let mut bytes = hex::decode(hex_key).ok()?;
    let mut key = [0u8; 32];
    let ok = bytes.len() == 32;
    if ok {
        key.copy_from_slice(&bytes);
    }
    bytes.zeroize();
    ok.then(|| Secret::new(key))
}

/// A version as listed: never the key.
#[derive(Clone, Debug, Serialize)]
pub struct KeyVersionInfo {
    pub path: String,
    pub version: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub deleted: bool,
    pub current: bool,
}

pub struct SealedKeyring {
    path: PathBuf,
    key: LessSafeKey,
}

impl std::fmt::Debug for SealedKeyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedKeyring")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SealedKeyring {
    pub fn new(master: &LocalKeyring, path: &Path) -> Result<SealedKeyring, CredentialsError> {
        let derived = master.derive("provider-keyring-seal/v1");
        let unbound = UnboundKey::new(&AES_256_GCM, derived.expose_secret())
            .map_err(|_| CredentialsError::Random)?;
        Ok(SealedKeyring {
            path: path.to_owned(),
            key: LessSafeKey::new(unbound),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn load(&self) -> Result<Document, CredentialsError> {
        let mut bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Document::default()),
            Err(source) => {
                return Err(CredentialsError::KeyFileIo {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        let tampered = || CredentialsError::KeyringTampered {
            path: self.path.clone(),
        };
        if bytes.len() < MAGIC.len() + NONCE_LEN || !bytes.starts_with(MAGIC) {
            return Err(tampered());
        }
        let nonce_bytes: [u8; NONCE_LEN] = bytes[MAGIC.len()..MAGIC.len() + NONCE_LEN]
            .try_into()
            .map_err(|_| tampered())?;
        let mut sealed = bytes.split_off(MAGIC.len() + NONCE_LEN);
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(MAGIC),
                &mut sealed,
            )
            .map_err(|_| tampered())?;
        let parsed = serde_json::from_slice::<Document>(plain);
        sealed.zeroize();
        parsed.map_err(|_| tampered())
    }

    fn store(&self, doc: &Document) -> Result<(), CredentialsError> {
        let io = |source| CredentialsError::KeyFileIo {
            path: self.path.clone(),
            source,
        };
        let mut plain =
            serde_json::to_vec(doc).map_err(|e| io(std::io::Error::other(e.to_string())))?;
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| CredentialsError::Random)?;
        let sealed = self.key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(MAGIC),
            &mut plain,
        );
        if sealed.is_err() {
            plain.zeroize();
            return Err(CredentialsError::Random);
        }
        let mut file_bytes = Vec::with_capacity(MAGIC.len() + NONCE_LEN + plain.len());
        file_bytes.extend_from_slice(MAGIC);
        file_bytes.extend_from_slice(&nonce);
        file_bytes.extend_from_slice(&plain);
        // Write a private temporary file and rename it over the old one: readers see the old or the new
        // keyring, never half of one.
        let tmp = self
            .path
            .with_extension(format!("tmp.{}", std::process::id()));
        let written = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| {
                f.write_all(&file_bytes)?;
                f.sync_all()
            })
            .and_then(|()| fs::rename(&tmp, &self.path));
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written.map_err(io)
    }

    /// Stores a new version of the key at `path` and returns its version number.
    pub fn set(
        &self,
        path: &str,
        api_key: &Secret<String>,
        base_url: Option<String>,
        organization: Option<String>,
    ) -> Result<u64, CredentialsError> {
        let mut doc = self.load()?;
        let versions = doc.entries.entry(path.to_owned()).or_default();
        let version = versions.last().map_or(1, |v| v.version + 1);
        versions.push(StoredVersion {
            version,
            created_at: OffsetDateTime::now_utc(),
            api_key: api_key.expose_secret().clone(),
            base_url,
            organization,
            deleted_at: None,
        });
        self.store(&doc)?;
        Ok(version)
    }

    /// Marks the current version deleted (revocation). Returns the version, or None if nothing is stored.
    pub fn delete_current(&self, path: &str) -> Result<Option<u64>, CredentialsError> {
        let mut doc = self.load()?;
        let Some(current) = doc.entries.get_mut(path).and_then(|v| v.last_mut()) else {
            return Ok(None);
        };
        if current.deleted_at.is_none() {
            current.deleted_at = Some(OffsetDateTime::now_utc());
            // The key bytes of a revoked version are gone for good, not just hidden.
            current.api_key.zeroize();
            current.api_key.clear();
        }
        let version = current.version;
        self.store(&doc)?;
        Ok(Some(version))
    }

    pub fn list(&self) -> Result<Vec<KeyVersionInfo>, CredentialsError> {
        let doc = self.load()?;
        Ok(doc
            .entries
            .iter()
            .flat_map(|(path, versions)| {
                let current = versions.last().map(|v| v.version);
                versions.iter().map(move |v| KeyVersionInfo {
                    path: path.clone(),
                    version: v.version,
                    created_at: v.created_at,
                    deleted: v.deleted_at.is_some(),
                    current: Some(v.version) == current,
                })
            })
            .collect())
    }

    /// Creates the tenant's key-encryption key (version 1) unless it exists.
    pub(crate) fn create_kek(&self, tenant: &str) -> Result<(), CredentialsError> {
        let mut doc = self.load()?;
        if doc.keks.contains_key(tenant) {
            return Ok(());
        }
        doc.keks.insert(
            tenant.to_owned(),
            vec![StoredKek {
                version: 1,
                key_hex: random_key()?,
                created_at: OffsetDateTime::now_utc(),
            }],
        );
        self.store(&doc)
    }

    /// A version of the tenant's KEK (`None` = latest) and its version number.
    pub(crate) fn kek(
        &self,
        tenant: &str,
        version: Option<u32>,
    ) -> Result<(u32, Secret<[u8; 32]>), CredentialsError> {
        let doc = self.load()?;
        let missing = || CredentialsError::KekMissing {
            tenant: tenant.to_owned(),
        };
        let versions = doc.keks.get(tenant).ok_or_else(missing)?;
        let stored = match version {
            None => versions.last(),
            Some(v) => versions.iter().find(|k| k.version == v),
        }
        .ok_or_else(missing)?;
        let key = decode_key(&stored.key_hex).ok_or_else(|| CredentialsError::KeyringTampered {
            path: self.path.clone(),
        })?;
        Ok((stored.version, key))
    }

    /// Adds a new KEK version; returns it.
    pub(crate) fn rotate_kek(&self, tenant: &str) -> Result<u32, CredentialsError> {
        let mut doc = self.load()?;
        let versions = doc
            .keks
            .get_mut(tenant)
            .ok_or_else(|| CredentialsError::KekMissing {
                tenant: tenant.to_owned(),
            })?;
        let version = versions.last().map_or(1, |k| k.version + 1);
        versions.push(StoredKek {
            version,
            key_hex: random_key()?,
            created_at: OffsetDateTime::now_utc(),
        });
        self.store(&doc)?;
        Ok(version)
    }

    /// Destroys every version of the tenant's KEK (crypto-shredding). Returns false if there was none.
    pub(crate) fn destroy_kek(&self, tenant: &str) -> Result<bool, CredentialsError> {
        let mut doc = self.load()?;
        let removed = doc.keks.remove(tenant);
        let existed = removed.is_some();
        if let Some(mut versions) = removed {
            for v in &mut versions {
                v.key_hex.zeroize();
            }
        }
        self.store(&doc)?;
        Ok(existed)
    }

    pub(crate) fn read(&self, path: &str) -> Result<KvRead, CredentialsError> {
        let doc = self.load()?;
        let Some(current) = doc.entries.get(path).and_then(|v| v.last()) else {
            return Ok(KvRead::Revoked(RevokedState::Missing));
        };
        if current.deleted_at.is_some() {
            return Ok(KvRead::Revoked(RevokedState::Deleted {
                version: current.version,
            }));
        }
        let mut data = serde_json::Map::new();
        data.insert("api_key".into(), current.api_key.clone().into());
        if let Some(url) = &current.base_url {
            data.insert("base_url".into(), url.clone().into());
        }
        if let Some(org) = &current.organization {
            data.insert("organization".into(), org.clone().into());
        }
        Ok(KvRead::Found {
            data,
            version: current.version,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring(dir: &Path) -> SealedKeyring {
        let master = LocalKeyring::open_or_create(&dir.join("master.key")).unwrap();
        SealedKeyring::new(&master, &dir.join("providers.sealed")).unwrap()
    }

    fn read_key(ring: &SealedKeyring, path: &str) -> (String, u64) {
        match ring.read(path).unwrap() {
            KvRead::Found { data, version } => {
                (data["api_key"].as_str().unwrap().to_owned(), version)
            }
            KvRead::Revoked(state) => panic!("revoked: {state}"),
        }
    }

    #[test]
    fn round_trip_with_versions_and_deletion() {
        let dir = tempfile::tempdir().unwrap();
        let ring = keyring(dir.path());
        let path = "ragvault/providers/openai";
        assert!(matches!(
            ring.read(path).unwrap(),
            KvRead::Revoked(RevokedState::Missing)
        ));
        assert_eq!(
            ring.set(path, &Secret::new("sk-one".into()), None, None)
                .unwrap(),
            1
        );
        assert_eq!(
            ring.set(
                path,
                &Secret::new("sk-two".into()),
                None,
                Some("org".into())
            )
            .unwrap(),
            2
        );
        assert_eq!(read_key(&ring, path), ("sk-two".to_owned(), 2));
        // Another handle on the same files (another process) sees the same keys.
        assert_eq!(
            read_key(&keyring(dir.path()), path),
            ("sk-two".to_owned(), 2)
        );
        assert_eq!(ring.delete_current(path).unwrap(), Some(2));
        assert!(matches!(
            ring.read(path).unwrap(),
            KvRead::Revoked(RevokedState::Deleted { version: 2 })
        ));
        let listed = ring.list().unwrap();
        assert_eq!(listed.len(), 2);
        assert!(listed[1].deleted && listed[1].current);
        // The file holds no key in the clear, and is private.
        let bytes = fs::read(ring.path()).unwrap();
        assert!(!bytes.windows(6).any(|w| w == b"sk-one"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(ring.path()).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn tampering_and_a_foreign_master_key_are_detected() {
        let dir = tempfile::tempdir().unwrap();
        let ring = keyring(dir.path());
        ring.set(
            "ragvault/providers/openai",
            &Secret::new("sk-one".into()),
            None,
            None,
        )
        .unwrap();
        let mut bytes = fs::read(ring.path()).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(ring.path(), &bytes).unwrap();
        let err = ring.read("ragvault/providers/openai").err().unwrap();
        assert!(
            matches!(err, CredentialsError::KeyringTampered { .. }),
            "{err}"
        );

        let other = tempfile::tempdir().unwrap();
        let ring = keyring(dir.path());
        let foreign = keyring(other.path());
        fs::remove_file(ring.path()).unwrap();
        ring.set("p", &Secret::new("sk-x".into()), None, None)
            .unwrap();
        fs::copy(ring.path(), foreign.path()).unwrap();
        assert!(matches!(
            foreign.read("p").err().unwrap(),
            CredentialsError::KeyringTampered { .. }
        ));
    }

    #[test]
    fn an_unwritable_keyring_names_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let master = LocalKeyring::open_or_create(&dir.path().join("master.key")).unwrap();
        let ring =
            SealedKeyring::new(&master, Path::new("/nonexistent-dir/providers.sealed")).unwrap();
        let err = ring
            .set("p", &Secret::new("sk-x".into()), None, None)
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("/nonexistent-dir/providers.sealed"),
            "{err}"
        );
        assert!(!err.to_string().contains("sk-x"));
    }
}
