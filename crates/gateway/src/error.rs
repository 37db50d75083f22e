use ragvault_core::Scope;
use ragvault_credentials::CredentialsError;
use ragvault_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("no credentials: send `Authorization: Bearer <key>`")]
    MissingCredentials,
    #[error("the Authorization header is not a bearer API key")]
    MalformedCredentials,
    #[error("the API key is not valid")]
    InvalidCredentials,
    #[error("the API key has been revoked")]
    KeyRevoked,
    #[error("the API key has expired")]
    KeyExpired,
    #[error("the tenant is suspended")]
    TenantSuspended,
    #[error("this key lacks the `{0}` scope")]
    InsufficientScope(Scope),
    #[error("this route needs an operator key")]
    OperatorOnly,
    #[error("this route needs a tenant key")]
    TenantOnly,
    #[error("a key needs at least one scope")]
    NoScopes,
    #[error("expiry must be in the future and at most {max_days} days ahead")]
    InvalidExpiry { max_days: i64 },
    #[error("{file}: {key}: {reason}")]
    InvalidPriceTable {
        file: String,
        key: String,
        reason: String,
    },
    #[error("no price for provider `{provider}` model `{model}` in the price table")]
    Unpriced { provider: String, model: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
}
