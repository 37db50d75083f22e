use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh random id.
            pub fn new() -> Self {
                Self(Uuid::new_v4())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }
    };
}

uuid_id!(
    /// A tenant: one customer of the service.
    TenantId
);
uuid_id!(
    /// One minted widget token (its `jti`), for audit rows; tokens themselves are not stored.
    WidgetTokenId
);
uuid_id!(
    /// An uploaded document (all versions of one name share nothing: a re-upload is a new id).
    DocumentId
);
uuid_id!(
    /// One sealed chunk of a document.
    ChunkId
);
uuid_id!(
    /// An ingest job.
    JobId
);
uuid_id!(
    /// A tenant API key (the row id, never the key itself).
    ApiKeyId
);
uuid_id!(
    /// An operator key (the row id, never the key itself).
    OperatorKeyId
);

/// A vector index point id: a keyed pseudonym of a chunk id, so the index never learns chunk ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PointId(pub u64);

impl fmt::Display for PointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
