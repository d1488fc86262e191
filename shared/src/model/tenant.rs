//! Tenant ids and the per-tenant schema name derived from them.

use std::fmt;

/// A company id taken from the last subject token, checked once.
///
/// Valid ids match `^[A-Za-z0-9_-]{1,57}$`, so `daisi_<id>` always fits Postgres's 63-byte
/// identifier limit and never needs anything but plain quoting.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(String);

/// Why a tenant id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid tenant id {0:?}: must match ^[A-Za-z0-9_-]{{1,57}}$")]
pub struct InvalidTenant(pub String);

impl TenantId {
    pub const MAX_LEN: usize = 57;

    pub fn parse(raw: &str) -> Result<Self, InvalidTenant> {
        let ok = !raw.is_empty()
            && raw.len() <= Self::MAX_LEN
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidTenant(raw.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The tenant's schema: `daisi_` + the lower-cased id (unquoted name).
    pub fn schema_name(&self) -> String {
        format!("daisi_{}", self.0.to_ascii_lowercase())
    }

    /// The schema name quoted as an SQL identifier.
    pub fn schema_ident(&self) -> String {
        quote_ident(&self.schema_name())
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Quotes an SQL identifier (doubling embedded quotes), the one way names reach SQL text.
pub fn quote_ident(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        for ok in ["CMP001", "a", "a_b-C9", &"x".repeat(57)] {
            assert!(TenantId::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_everything_else() {
        for bad in [
            "",
            "a.b",
            "a\"b",
            "a b",
            "a'b",
            "*",
            ">",
            &"x".repeat(58),
            "é",
        ] {
            assert!(TenantId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn schema_is_lower_cased_and_quoted() {
        let t = TenantId::parse("CMP_001").unwrap();
        assert_eq!(t.schema_name(), "daisi_cmp_001");
        assert_eq!(t.schema_ident(), "\"daisi_cmp_001\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
