use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What a tenant credential may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Upload, list and delete documents.
    Ingest,
    /// Ask questions (`/v1/ask`).
    Ask,
    /// Mint widget tokens.
    Tokens,
    /// Manage the tenant's own API keys.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Ingest, Scope::Ask, Scope::Tokens, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Ask => "ask",
            Scope::Tokens => "tokens",
            Scope::Admin => "admin",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Scope::Ingest => 1,
            Scope::Ask => 2,
            Scope::Tokens => 4,
            Scope::Admin => 8,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope `{0}` (expected one of: ingest, ask, tokens, admin)")]
pub struct UnknownScope(pub String);

impl FromStr for Scope {
    type Err = UnknownScope;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| UnknownScope(s.to_owned()))
    }
}

/// A set of scopes.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Scopes(u8);

impl Scopes {
    pub const NONE: Scopes = Scopes(0);

    /// The scopes a new tenant's first key carries: everything a tenant does day to day, but not key management.
    pub fn tenant_default() -> Scopes {
        [Scope::Ingest, Scope::Ask, Scope::Tokens]
            .into_iter()
            .collect()
    }

    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    pub fn insert(&mut self, scope: Scope) {
        self.0 |= scope.bit();
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }

    /// Names in a fixed order, as stored in the database and shown in the API.
    pub fn names(self) -> Vec<String> {
        self.iter().map(|s| s.as_str().to_owned()).collect()
    }

    /// Parses stored or requested names; any unknown name is an error rather than silently dropped.
    pub fn parse<I, S>(names: I) -> Result<Scopes, UnknownScope>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        names
            .into_iter()
            .map(|n| n.as_ref().parse::<Scope>())
            .collect()
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<T: IntoIterator<Item = Scope>>(iter: T) -> Self {
        let mut scopes = Scopes::NONE;
        for scope in iter {
            scopes.insert(scope);
        }
        scopes
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl Serialize for Scopes {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Scopes {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let scopes = Vec::<Scope>::deserialize(deserializer)?;
        Ok(scopes.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_tenant_scopes_exclude_admin() {
        let scopes = Scopes::tenant_default();
        assert!(scopes.contains(Scope::Ingest));
        assert!(scopes.contains(Scope::Ask));
        assert!(scopes.contains(Scope::Tokens));
        assert!(!scopes.contains(Scope::Admin));
        assert_eq!(scopes.names(), vec!["ingest", "ask", "tokens"]);
    }

    #[test]
    fn parse_rejects_unknown_names() {
        assert_eq!(
            Scopes::parse(["ask", "root"]),
            Err(UnknownScope("root".to_owned()))
        );
        assert_eq!(
            Scopes::parse(["ask"]).map(|s| s.names()),
            Ok(vec!["ask".to_owned()])
        );
    }

    #[test]
    fn serde_round_trip() {
        let scopes: Scopes = serde_json::from_str(r#"["tokens","ask"]"#).unwrap();
        assert_eq!(
            serde_json::to_string(&scopes).unwrap(),
            r#"["ask","tokens"]"#
        );
        assert!(serde_json::from_str::<Scopes>(r#"["everything"]"#).is_err());
    }
}
