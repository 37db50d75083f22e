//! Postgres persistence for ragvault.
//!
//! Architecture invariant: `store` never sees key material or plaintext content. It stores keyed hashes of
//! API keys (computed by `credentials`) and, later, sealed bytes. Every change that must be audited writes
//! its audit row in the same transaction, so a change and its audit record land together or not at all.

mod admin_sessions;
mod audit;
mod availability;
mod changes;
mod data_keys;
mod documents;
mod error;
mod jobs;
mod keys;
mod metering;
mod retrieval;
mod suspensions;
mod tenants;
mod widget_keys;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use std::str::FromStr;
use std::time::Duration;

pub use admin_sessions::AdminSession;
pub use audit::{AuditEntry, AuditProblem, AuditRecord, AuditVerification};
pub use availability::DatabaseWatch;
pub use changes::{AccessChanges, CacheTicket, GuardedCache};
pub use data_keys::{DataKeyPurpose, DataKeyRecord, NewDataKey};
pub use documents::{
    ChunkRecord, DocumentRecord, NewChunk, NewDocument, PutOutcome, ResealedChunk,
};
pub use error::StoreError;
pub use jobs::{JobRecord, NewJob, UploadMatch};
pub use keys::{ApiKeyRecord, CredentialKind, CredentialRow, NewApiKey, NewOperatorKey};
pub use metering::{month_of, BudgetMonth, NewUsageEvent, UsageGrouping, UsageTotals};
pub use retrieval::ChunkVector;
pub use suspensions::SuspensionRecord;
pub use tenants::{NewTenant, TenantRecord};
pub use widget_keys::WidgetSigningKeyRecord;

/// Connection settings for the pool.
#[derive(Clone, Debug)]
pub struct PoolSettings {
    pub max_connections: u32,
    /// How long a request waits for a free connection before failing (fail fast when Postgres is down).
    pub acquire_timeout: Duration,
    /// Connections older than this are closed and reopened; with leased database logins this retires
    /// connections made under a login that is about to be revoked.
    pub max_lifetime: Option<Duration>,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(3),
            max_lifetime: Some(Duration::from_secs(30 * 60)),
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
        Ok(Store::lazy_pool(options, settings))
    }

    /// Like [`Store::connect_lazy`], logging in as `username`/`password` instead of the URL's user (for
    /// leased, short-lived database logins).
    pub fn connect_lazy_as(
        url: &str,
        settings: &PoolSettings,
        username: &str,
        password: &str,
    ) -> Result<Store, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(StoreError::InvalidUrl)?
            .username(username)
            .password(password);
        Ok(Store::lazy_pool(options, settings))
    }

    fn lazy_pool(options: PgConnectOptions, settings: &PoolSettings) -> Store {
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            .max_lifetime(settings.max_lifetime)
            .connect_lazy_with(options);
        Store { pool }
    }

    /// Switches the login used for new connections. Open connections keep working under the old login
    /// until they are retired (`max_lifetime`), so no request fails during the switch.
    pub fn switch_login(&self, username: &str, password: &str) {
        let options = (*self.pool.connect_options())
            .clone()
            .username(username)
            .password(password);
        self.pool.set_connect_options(options);
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

    /// Starts watching whether Postgres answers (a connection of its own, probed every `every`).
    pub fn watch_availability(&self, every: std::time::Duration) -> std::sync::Arc<DatabaseWatch> {
        DatabaseWatch::start(self.pool.clone(), every)
    }

    /// Starts listening for changes to who may call (keys revoked, tenants suspended), on a connection of
    /// its own, until the returned feed is dropped.
    pub fn listen_for_access_changes(&self) -> std::sync::Arc<AccessChanges> {
        AccessChanges::start(self.pool.clone())
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
