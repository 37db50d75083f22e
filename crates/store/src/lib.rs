//! Postgres persistence for ragvault.
//!
//! Architecture invariant: `store` never sees key material or plaintext content. It stores keyed hashes of
//! API keys (computed by `credentials`) and, later, sealed bytes. Every change that must be audited writes
//! its audit row in the same transaction, so a change and its audit record land together or not at all.

mod audit;
mod error;
mod keys;
mod tenants;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use std::str::FromStr;
use std::time::Duration;

pub use audit::{AuditEntry, AuditRecord};
pub use error::StoreError;
pub use keys::{ApiKeyRecord, CredentialKind, CredentialRow, NewApiKey, NewOperatorKey};
pub use tenants::{NewTenant, TenantRecord};

/// Connection settings for the pool.
#[derive(Clone, Debug)]
pub struct PoolSettings {
    pub max_connections: u32,
    /// How long a request waits for a free connection before failing (fail fast when Postgres is down).
    pub acquire_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(3),
        }
    }
}

/// The database handle: cheap to clone, shared by every request.
#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

impl Store {
    /// Builds the pool without connecting, so the service can start (and report not-ready) while
    /// Postgres is down.
    pub fn connect_lazy(url: &str, settings: &PoolSettings) -> Result<Store, StoreError> {
        let options = PgConnectOptions::from_str(url).map_err(StoreError::InvalidUrl)?;
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            .connect_lazy_with(options);
        Ok(Store { pool })
    }

    pub fn from_pool(pool: PgPool) -> Store {
        Store { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies pending migrations. Safe to run concurrently from several replicas (sqlx takes an advisory lock).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// A cheap round trip for readiness checks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}
