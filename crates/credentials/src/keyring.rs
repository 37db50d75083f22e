//! The embedded default key source: one 256-bit master key in a file only the service user can read.
//! Purpose-specific keys are derived from it with HMAC-SHA256, so one file backs every use and no two
//! uses share a key.

use crate::{CredentialsError, Secret};
use rand::rngs::OsRng;
use rand::RngCore;
use ring::hmac;
use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use zeroize::Zeroize;

const MASTER_KEY_LEN: usize = 32;

pub struct LocalKeyring {
    path: PathBuf,
    master: Secret<[u8; MASTER_KEY_LEN]>,
}

impl std::fmt::Debug for LocalKeyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKeyring")
            .field("path", &self.path)
            .field("master", &self.master)
            .finish()
    }
}

impl LocalKeyring {
    /// Opens the master key file, creating it (mode 0600, parent directories 0700) when it does not exist.
    /// A file that group or others can read is refused rather than silently fixed: someone may already
    /// have copied it.
    pub fn open_or_create(path: &Path) -> Result<LocalKeyring, CredentialsError> {
        let io_err = |source| CredentialsError::KeyFileIo {
            path: path.to_owned(),
            source,
        };
        match fs::metadata(path) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => create_key_file(path).map_err(io_err)?,
            Err(e) => return Err(io_err(e)),
        }
        let mode = fs::metadata(path).map_err(io_err)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(CredentialsError::InsecurePermissions {
                path: path.to_owned(),
                mode,
            });
        }
        let mut text = fs::read_to_string(path).map_err(io_err)?;
        let decoded = hex::decode(text.trim());
        text.zeroize();
        let mut bytes = decoded.map_err(|_| CredentialsError::MalformedKeyFile {
            path: path.to_owned(),
            reason: "expected 64 hexadecimal characters",
        })?;
        let mut master = [0u8; MASTER_KEY_LEN];
        if bytes.len() != MASTER_KEY_LEN {
            bytes.zeroize();
            return Err(CredentialsError::MalformedKeyFile {
                path: path.to_owned(),
                reason: "expected a 256-bit key (64 hexadecimal characters)",
            });
        }
        master.copy_from_slice(&bytes);
        bytes.zeroize();
        Ok(LocalKeyring {
            path: path.to_owned(),
            master: Secret::new(master),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A key for one purpose, derived from the master key. Different purposes give unrelated keys.
    pub(crate) fn derive(&self, purpose: &str) -> Secret<[u8; 32]> {
        let key = hmac::Key::new(hmac::HMAC_SHA256, self.master.expose_secret());
        let tag = hmac::sign(&key, format!("ragvault/{purpose}").as_bytes());
        let mut derived = [0u8; 32];
        derived.copy_from_slice(tag.as_ref());
        Secret::new(derived)
    }

    /// Checks that the key file is still there and still private (used by readiness checks).
    pub fn check(&self) -> Result<(), CredentialsError> {
        let meta = fs::metadata(&self.path).map_err(|source| CredentialsError::KeyFileIo {
            path: self.path.clone(),
            source,
        })?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(CredentialsError::InsecurePermissions {
                path: self.path.clone(),
                mode,
            });
        }
        Ok(())
    }
}

fn create_key_file(path: &Path) -> std::io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        // A directory we create for key material is private too; an existing one is left as it is.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
    }
    let mut key = [0u8; MASTER_KEY_LEN];
    OsRng.fill_bytes(&mut key);
    let mut encoded = hex::encode(key);
    key.zeroize();
    // create_new: if two processes race to create the key, exactly one wins and the other reads its key.
    let result = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut file| {
            file.write_all(encoded.as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()
        });
    encoded.zeroize();
    match result {
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_a_private_key_file_and_reopens_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/master.key");
        let first = LocalKeyring::open_or_create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
        let second = LocalKeyring::open_or_create(&path).unwrap();
        assert_eq!(
            first.derive("x").expose_secret(),
            second.derive("x").expose_secret()
        );
        assert_ne!(
            first.derive("x").expose_secret(),
            first.derive("y").expose_secret()
        );
    }

    #[test]
    fn refuses_a_key_file_others_can_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        LocalKeyring::open_or_create(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = LocalKeyring::open_or_create(&path).unwrap_err();
        assert!(matches!(err, CredentialsError::InsecurePermissions { .. }));
        assert!(err.to_string().contains("chmod 600"));
    }

    #[test]
    fn refuses_a_malformed_key_file_without_echoing_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap()
            .write_all(b"not-hex-secretish-value")
            .unwrap();
        let err = LocalKeyring::open_or_create(&path).unwrap_err();
        assert!(matches!(err, CredentialsError::MalformedKeyFile { .. }));
        assert!(!err.to_string().contains("secretish"));
    }

    #[test]
    fn debug_hides_the_master_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let ring = LocalKeyring::open_or_create(&path).unwrap();
        let on_disk = fs::read_to_string(&path).unwrap();
        assert!(!format!("{ring:?}").contains(on_disk.trim()));
    }
}
