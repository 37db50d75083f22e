use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A tenant's human-chosen name: lowercase letters, digits and single hyphens, 3 to 63 characters,
/// starting with a letter. Safe in URLs, logs and file names without escaping.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct TenantSlug(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid tenant slug: {reason}")]
pub struct InvalidSlug {
    pub reason: &'static str,
}

impl TenantSlug {
    pub fn parse(raw: &str) -> Result<TenantSlug, InvalidSlug> {
        let fail = |reason| Err(InvalidSlug { reason });
        if raw.len() < 3 || raw.len() > 63 {
            return fail("must be 3 to 63 characters long");
        }
        if !raw.starts_with(|c: char| c.is_ascii_lowercase()) {
            return fail("must start with a lowercase letter");
        }
        if raw.ends_with('-') {
            return fail("must not end with a hyphen");
        }
        if raw.contains("--") {
            return fail("must not contain two hyphens in a row");
        }
        if !raw
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return fail("may contain only lowercase letters, digits and hyphens");
        }
        Ok(TenantSlug(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantSlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TenantSlug {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        TenantSlug::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{value}`")]
pub struct UnknownVariant {
    pub kind: &'static str,
    pub value: String,
}

/// Whether a tenant serves real traffic or is a sandbox for integration work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Environment {
    #[default]
    Production,
    Sandbox,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Production => "production",
            Environment::Sandbox => "sandbox",
        }
    }
}

impl FromStr for Environment {
    type Err = UnknownVariant;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "production" => Ok(Environment::Production),
            "sandbox" => Ok(Environment::Sandbox),
            other => Err(UnknownVariant {
                kind: "environment",
                value: other.to_owned(),
            }),
        }
    }
}

/// Whether a tenant's credentials work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    #[default]
    Active,
    /// Every credential of the tenant is refused until an operator resumes it.
    Suspended,
}

impl TenantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Active => "active",
            TenantStatus::Suspended => "suspended",
        }
    }
}

impl FromStr for TenantStatus {
    type Err = UnknownVariant;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(TenantStatus::Active),
            "suspended" => Ok(TenantStatus::Suspended),
            other => Err(UnknownVariant {
                kind: "tenant status",
                value: other.to_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slug_rules() {
        for good in ["acme", "acme-support", "a1b", "x2-y3-z4"] {
            assert!(TenantSlug::parse(good).is_ok(), "{good} should be valid");
        }
        for bad in [
            "",
            "ab",
            "Acme",
            "1acme",
            "acme-",
            "ac--me",
            "acme_support",
            "acme support",
            "ácme",
        ] {
            assert!(TenantSlug::parse(bad).is_err(), "{bad:?} should be invalid");
        }
        assert!(TenantSlug::parse(&"a".repeat(64)).is_err());
        assert!(TenantSlug::parse(&"a".repeat(63)).is_ok());
    }

    #[test]
    fn environment_parses_only_known_names() {
        assert_eq!("sandbox".parse::<Environment>(), Ok(Environment::Sandbox));
        assert!("staging".parse::<Environment>().is_err());
    }
}
