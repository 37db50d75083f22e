use std::fmt;
use std::path::PathBuf;

/// Why a provider key at a path cannot be used any more (revocation, as opposed to an outage).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevokedState {
    /// The path was never written (or all its metadata was deleted).
    Missing,
    /// The current version was soft-deleted.
    Deleted { version: u64 },
    /// The current version was destroyed.
    Destroyed { version: u64 },
}

impl fmt::Display for RevokedState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RevokedState::Missing => f.write_str("no secret is stored there"),
            RevokedState::Deleted { version } => write!(f, "version {version} was deleted"),
            RevokedState::Destroyed { version } => write!(f, "version {version} was destroyed"),
        }
    }
}

/// Errors name paths and providers, never values: no variant holds key material.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read or create key file {path}: {source}")]
    KeyFileIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "key file {path} is readable by group or others (mode {mode:o}); run `chmod 600 {path}`"
    )]
    InsecurePermissions { path: PathBuf, mode: u32 },
    #[error("key file {path} is malformed: {reason}")]
    MalformedKeyFile { path: PathBuf, reason: &'static str },
    #[error(
        "keyring {path} could not be opened: it was modified or sealed under another master key"
    )]
    KeyringTampered { path: PathBuf },
    #[error("the operating system's random number generator failed")]
    Random,
    #[error("Vault configuration: {0}")]
    VaultConfig(String),
    #[error("cannot read the AppRole secret_id file {path}: {source}")]
    SecretIdFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("AppRole login at {addr} was refused{}: check vault.role_id and the secret_id in {secret_id_file}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
    LoginRefused {
        addr: String,
        status: Option<u16>,
        secret_id_file: PathBuf,
    },
    #[error("Vault at {addr} is unavailable: {reason}")]
    VaultUnavailable { addr: String, reason: String },
    #[error("Vault denied access to {path} (is it outside the ragvault policy?)")]
    VaultDenied { path: String },
    #[error("the secret at {path} cannot be used: {state}")]
    SecretRevoked { path: String, state: RevokedState },
    #[error("the secret at {path} is malformed: {reason}")]
    MalformedSecret { path: String, reason: String },
    #[error("provider `{provider}` is unavailable: {reason}")]
    ProviderUnavailable { provider: String, reason: String },
    #[error("provider `{provider}` rejected key version {version} and no newer version exists")]
    KeyRejected { provider: String, version: u64 },
    /// Decryption failed: the ciphertext was altered, truncated, moved to another row or tenant, or
    /// opened with the wrong key. Never returns partial plaintext.
    #[error("sealed data failed authentication (tampered, moved, or the wrong key)")]
    SealTampered,
    #[error("sealed data uses format version {0}, which this build cannot open")]
    UnsupportedSealFormat(u8),
    #[error("tenant {tenant} has no key-encryption key (never created, or destroyed)")]
    KekMissing { tenant: String },
    #[error("a data key of tenant {tenant} could not be unwrapped")]
    DataKeyUnwrap { tenant: String },
    #[error("the key source failed: {0}")]
    Transit(String),
}

impl CredentialsError {
    /// True when the failure is the key source being unreachable (keep serving leases), rather than the
    /// secret being gone or malformed (stop serving it).
    pub fn is_outage(&self) -> bool {
        matches!(
            self,
            CredentialsError::VaultUnavailable { .. } | CredentialsError::LoginRefused { .. }
        )
    }

    /// True for integrity failures of sealed data: these are audited, never retried.
    pub fn is_integrity_failure(&self) -> bool {
        matches!(
            self,
            CredentialsError::SealTampered
                | CredentialsError::UnsupportedSealFormat(_)
                | CredentialsError::DataKeyUnwrap { .. }
        )
    }
}
