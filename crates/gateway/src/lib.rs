//! Access control for ragvault: authenticating bearer keys into a [`Principal`], checking scopes, and
//! issuing and revoking keys. Key material itself stays in `credentials`; this crate sees only parsed keys
//! behind `Secret` and the keyed hashes stored by `store`.

mod access;
mod anomaly;
pub mod auth_failures;
mod budget;
mod error;
mod journal;
mod limits;
mod metering;
pub mod pricing;
mod widget;

pub use access::{
    require_operator, require_tenant_scope, AccessControl, AdminSessionView, BrowserContext,
    CreatedTenant, IssuedApiKey, IssuedOperatorKey, KeyRotation, RequestContext,
    StartedAdminSession, TenantView,
};
pub use anomaly::{principal_scope, Anomaly, AnomalyAction, AnomalyDetector, AnomalyPolicy};
pub use budget::{
    seconds_until_next_month, BudgetGuard, Reservation, SoftThresholdCrossing, TenantBudget,
};
pub use error::GatewayError;
pub use limits::{RateLimiter, RateLimits};
pub use metering::{Metering, UsageMetrics, WriterPace};
pub use pricing::{ModelPrice, PriceTable};
pub use ragvault_core::Principal;
pub use widget::{
    check_subject, is_widget_token, valid_group_names, MintRequest, MintedToken,
    UnverifiedWidgetToken, WidgetTokenSettings, WidgetTokens, MAX_GROUPS, MAX_GROUP_CHARS,
    WIDGET_TOKEN_PREFIX,
};
