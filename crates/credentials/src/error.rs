use std::path::PathBuf;

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
    #[error("the operating system's random number generator failed")]
    Random,
}
