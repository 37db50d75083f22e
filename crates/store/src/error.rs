#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid database URL: {0}")]
    InvalidUrl(#[source] sqlx::Error),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("tenant slug is already taken")]
    SlugTaken,
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A row holds a value the code does not know (for example a scope name): never guessed around.
    #[error("corrupt row in {table}: {reason}")]
    Corrupt { table: &'static str, reason: String },
}

impl StoreError {
    /// True when Postgres could not be reached or did not answer in time (as opposed to a query error):
    /// the caller should answer 503 and let the client retry.
    pub fn is_unavailable(&self) -> bool {
        let StoreError::Database(e) = self else {
            return false;
        };
        match e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(db) => {
                db.code().is_some_and(|code| is_unavailable_sqlstate(&code))
            }
            _ => false,
        }
    }
}

/// SQLSTATEs that mean "the database cannot serve you right now" rather than "your query is wrong":
/// connection exceptions (08xxx), server shutting down or starting (57P01-57P03), too many connections
/// (53300), and the database itself missing (3D000).
fn is_unavailable_sqlstate(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300" | "3D000")
}

/// Postgres error code for unique_violation.
pub(crate) const UNIQUE_VIOLATION: &str = "23505";

pub(crate) fn is_unique_violation(err: &sqlx::Error, constraint: &str) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            db.code().as_deref() == Some(UNIQUE_VIOLATION) && db.constraint() == Some(constraint)
        }
        _ => false,
    }
}
