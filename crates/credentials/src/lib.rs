//! Key material for ragvault.
//!
//! Architecture invariant: this is the only crate that holds key material, reads key files, talks to a
//! key source, or uses `ring`. Everything it hands out is wrapped in [`Secret`] or is a one-way value
//! (a keyed hash) that reveals nothing about the key.

mod api_key;
mod error;
mod keyring;
mod secret;
mod source;

pub use api_key::{ApiKeyHasher, IssuedKey, MalformedKey, PresentedKey, API_KEY_PREFIX};
pub use error::CredentialsError;
pub use keyring::LocalKeyring;
pub use secret::Secret;
pub use source::KeySource;
