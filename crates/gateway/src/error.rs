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
    #[error("the widget token is not well formed")]
    MalformedWidgetToken,
    #[error("the widget token's signature does not match its contents")]
    WidgetTokenTampered,
    #[error("the widget token was signed with a key that no longer verifies")]
    WidgetKeyRetired,
    #[error("the widget token has expired")]
    WidgetTokenExpired,
    #[error("the widget token is bound to another origin")]
    WidgetOriginMismatch,
    #[error("the widget token belongs to another tenant")]
    WidgetWrongTenant,
    #[error("ttl_seconds must be between 1 and {max_seconds}")]
    InvalidTokenTtl { max_seconds: u64 },
    #[error("origin `{0}` is not in widget.allowed_origins")]
    OriginNotAllowed(String),
    #[error(
        "at most {max_groups} groups of 1 to {max_chars} letters, digits, '-', '_', '.' or ':'"
    )]
    InvalidGroups { max_groups: usize, max_chars: usize },
    #[error("subject must be 1 to {max_chars} printable characters")]
    InvalidSubject { max_chars: usize },
    #[error("the tenant's monthly budget cannot cover this request")]
    BudgetExceeded { retry_after_secs: u64 },
    #[error("rate limit reached; retry after {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("usage could not be recorded: {0}")]
    MeteringUnavailable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
}
