//! Domain types shared by all ragvault crates.
//!
//! Invariant: this crate holds no I/O and no key material; it only names things.

mod ids;
mod money;
mod principal;
mod scope;
mod tenant;

pub use ids::{
    ApiKeyId, ChunkId, DocumentId, JobId, OperatorKeyId, PointId, TenantId, WidgetTokenId,
};
pub use money::{Money, Usage};
pub use principal::Principal;
pub use scope::{Scope, Scopes, UnknownScope};
pub use tenant::{Environment, InvalidSlug, TenantSlug, TenantStatus, UnknownVariant};
