//! The issuance policy: which **issuers** may issue which **categories** of
//! certificates for which **identities**. Enforced at verification time, so a
//! test cluster can run a laxer issuance policy than production.
//!
//! The issuance policy decides which certificates are acceptable during the
//! handshake. It is distinct from the RPC authorization policy of
//! `tonic-alts` (`RpcAuthzPolicy`), which decides which authenticated peers
//! may call which methods; both use the same [`Pattern`] grammar.
//!
//! # TOML format
//! ```toml
//! # Optional; the only version is 1.
//! version = 1
//!
//! # Allow rules. Default deny: a certificate passes only if some rule
//! # matches its issuer, its category and its identity.
//! [[rule]]
//! issuer = "corp-ca"                    # an issuer name or pattern
//! categories = ["person", "machine"]    # person | machine | workload (non-empty)
//! identities = ["*"]                    # identity names or patterns (non-empty)
//!
//! [[rule]]
//! issuer = "scheduler"
//! categories = ["workload"]
//! identities = ["*-prod"]
//!
//! # Reserved identities: an identity matching `identities` may only be
//! # issued by one of `issuers`, whatever the rules say (checked first).
//! [[reserved]]
//! identities = ["network-admin"]
//! issuers = ["netops-ca"]
//! ```
//!
//! A **pattern** is an exact name, `*` (anything), `prefix*` (e.g. `svc-*`)
//! or `*suffix` (e.g. `*-prod`). Any other use of `*` is rejected when the
//! policy is loaded, as are unknown keys.
//!
//! # Evaluation
//! 1. If the identity matches a `[[reserved]]` entry whose `issuers` do not
//!    match the issuer: [`PolicyDenied::Reserved`].
//! 2. No rule matches the issuer: [`PolicyDenied::UnknownIssuer`].
//! 3. No rule for that issuer lists the category: [`PolicyDenied::CategoryNotAllowed`].
//! 4. No such rule matches the identity: [`PolicyDenied::IdentityNotAllowed`].
//! 5. Otherwise [`PolicyAllowed`], naming the first matching rule.

use std::fmt;

use serde::Deserialize;

use crate::cert::{Category, MAX_NAME_LEN};

/// Maximum size of an issuance policy document.
pub const MAX_POLICY_LEN: usize = 1024 * 1024;
/// Maximum number of `[[rule]]` plus `[[reserved]]` entries.
pub const MAX_POLICY_ENTRIES: usize = 10_000;

/// An issuance policy document could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The document is larger than [`MAX_POLICY_LEN`].
    #[error("policy too large: {0} bytes > {MAX_POLICY_LEN}")]
    TooLarge(usize),
    /// The TOML does not parse or has unknown or mistyped keys.
    #[error("invalid policy TOML: {0}")]
    Toml(String),
    /// Unsupported `version`.
    #[error("unsupported policy version {0}")]
    UnsupportedVersion(u32),
    /// Too many entries.
    #[error("too many policy entries: {0} > {MAX_POLICY_ENTRIES}")]
    TooManyEntries(usize),
    /// A pattern is not an exact name, `*`, `prefix*` or `*suffix`.
    #[error("invalid pattern {0:?} (use a name, `*`, `prefix*` or `*suffix`)")]
    BadPattern(String),
    /// A rule or reserved entry has an empty list.
    #[error("entry #{index}: `{field}` must not be empty")]
    EmptyList {
        /// Zero-based index of the rule or reserved entry.
        index: usize,
        /// The empty field.
        field: &'static str,
    },
}

/// A name pattern: exact, `*`, `prefix*` or `*suffix`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// Matches everything.
    Any,
    /// Matches exactly this name.
    Exact(String),
    /// Matches names starting with this.
    Prefix(String),
    /// Matches names ending with this.
    Suffix(String),
}

impl Pattern {
    /// Parses a pattern.
    pub fn parse(s: &str) -> Result<Self, PolicyError> {
        let bad = || PolicyError::BadPattern(s.chars().take(MAX_NAME_LEN).collect());
        if s.is_empty() || s.len() > MAX_NAME_LEN {
            return Err(bad());
        }
        if s == "*" {
            return Ok(Pattern::Any);
        }
        let stars = s.matches('*').count();
        if stars == 0 {
            return Ok(Pattern::Exact(s.to_owned()));
        }
        if stars == 1 {
            if let Some(p) = s.strip_suffix('*') {
                return Ok(Pattern::Prefix(p.to_owned()));
            }
            if let Some(p) = s.strip_prefix('*') {
                return Ok(Pattern::Suffix(p.to_owned()));
            }
        }
        Err(bad())
    }

    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Exact(e) => name == e,
            Pattern::Prefix(p) => name.starts_with(p.as_str()),
            Pattern::Suffix(p) => name.ends_with(p.as_str()),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Any => f.write_str("*"),
            Pattern::Exact(e) => f.write_str(e),
            Pattern::Prefix(p) => write!(f, "{p}*"),
            Pattern::Suffix(p) => write!(f, "*{p}"),
        }
    }
}

/// One allow rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Which issuers it covers.
    pub issuer: Pattern,
    /// Which categories they may issue.
    pub categories: Vec<Category>,
    /// For which identities.
    pub identities: Vec<Pattern>,
}

/// A reserved identity set: only `issuers` may issue `identities`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reserved {
    /// The reserved identities.
    pub identities: Vec<Pattern>,
    /// The only issuers allowed to issue them.
    pub issuers: Vec<Pattern>,
}

/// A loaded issuance policy. Default deny.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct IssuancePolicy {
    rules: Vec<Rule>,
    reserved: Vec<Reserved>,
}

/// The old name of [`IssuancePolicy`].
#[deprecated(
    note = "renamed to `IssuancePolicy` (the issuance policy, as opposed to an RPC authorization policy)"
)]
pub type Policy = IssuancePolicy;

/// Proof that the issuance policy allowed a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyAllowed {
    rule: usize,
}

impl PolicyAllowed {
    /// Zero-based index of the first matching `[[rule]]`.
    pub fn rule_index(&self) -> usize {
        self.rule
    }
}

/// Why the issuance policy refused a certificate.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyDenied {
    /// The identity is reserved for other issuers.
    #[error("identity {identity:?} is reserved; issuer {issuer:?} may not issue it")]
    Reserved {
        /// The issuer.
        issuer: String,
        /// The identity.
        identity: String,
    },
    /// No rule mentions the issuer.
    #[error("unknown issuer {issuer:?}")]
    UnknownIssuer {
        /// The issuer.
        issuer: String,
    },
    /// The issuer may not issue this category.
    #[error("issuer {issuer:?} may not issue {category} certificates")]
    CategoryNotAllowed {
        /// The issuer.
        issuer: String,
        /// The category.
        category: Category,
    },
    /// The issuer may issue the category but not for this identity.
    #[error("issuer {issuer:?} may not issue {category} certificates for identity {identity:?}")]
    IdentityNotAllowed {
        /// The issuer.
        issuer: String,
        /// The category.
        category: Category,
        /// The identity.
        identity: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    version: Option<u32>,
    #[serde(default)]
    rule: Vec<RuleFile>,
    #[serde(default)]
    reserved: Vec<ReservedFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    issuer: String,
    categories: Vec<Category>,
    identities: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReservedFile {
    identities: Vec<String>,
    issuers: Vec<String>,
}

fn patterns(list: &[String], index: usize, field: &'static str) -> Result<Vec<Pattern>, PolicyError> {
    if list.is_empty() {
        return Err(PolicyError::EmptyList { index, field });
    }
    list.iter().map(|s| Pattern::parse(s)).collect()
}

impl IssuancePolicy {
    /// Parses the TOML format described in the module docs.
    pub fn from_toml(s: &str) -> Result<Self, PolicyError> {
        if s.len() > MAX_POLICY_LEN {
            return Err(PolicyError::TooLarge(s.len()));
        }
        let file: PolicyFile = toml::from_str(s).map_err(|e| PolicyError::Toml(e.to_string()))?;
        if let Some(v) = file.version
            && v != 1
        {
            return Err(PolicyError::UnsupportedVersion(v));
        }
        let entries = file.rule.len().saturating_add(file.reserved.len());
        if entries > MAX_POLICY_ENTRIES {
            return Err(PolicyError::TooManyEntries(entries));
        }
        let mut rules = Vec::with_capacity(file.rule.len());
        for (i, r) in file.rule.iter().enumerate() {
            if r.categories.is_empty() {
                return Err(PolicyError::EmptyList {
                    index: i,
                    field: "categories",
                });
            }
            rules.push(Rule {
                issuer: Pattern::parse(&r.issuer)?,
                categories: r.categories.clone(),
                identities: patterns(&r.identities, i, "identities")?,
            });
        }
        let mut reserved = Vec::with_capacity(file.reserved.len());
        for (i, r) in file.reserved.iter().enumerate() {
            reserved.push(Reserved {
                identities: patterns(&r.identities, i, "identities")?,
                issuers: patterns(&r.issuers, i, "issuers")?,
            });
        }
        Ok(Self { rules, reserved })
    }

    /// An issuance policy from rules and reserved entries built in code.
    pub fn from_rules(rules: Vec<Rule>, reserved: Vec<Reserved>) -> Self {
        Self { rules, reserved }
    }

    /// Accepts every issuer for every category and identity: the chain,
    /// validity and revocation checks still apply, the issuer check does not.
    ///
    /// This switches off the check that stops a rogue issuer from issuing a
    /// certificate for an identity it does not own (for example a
    /// `network-admin` certificate requested by an ordinary workload); use it
    /// only where every RPC is authorized by identity anyway and every
    /// principal under the root is trusted.
    pub fn accept_any_issuer() -> Self {
        Self::allow_all_for_tests()
    }

    /// Allows every issuer to issue every category for every identity.
    ///
    /// **Never use this in production**: it disables the issuance policy
    /// check that stops a rogue issuer from issuing certificates for
    /// identities it does not own. For tests only.
    pub fn allow_all_for_tests() -> Self {
        Self {
            rules: vec![Rule {
                issuer: Pattern::Any,
                categories: Category::ALL.to_vec(),
                identities: vec![Pattern::Any],
            }],
            reserved: Vec::new(),
        }
    }

    /// The allow rules.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The reserved entries.
    pub fn reserved(&self) -> &[Reserved] {
        &self.reserved
    }

    /// May `issuer` issue a `category` certificate for `identity`?
    pub fn check(
        &self,
        issuer: &str,
        category: Category,
        identity: &str,
    ) -> Result<PolicyAllowed, PolicyDenied> {
        for r in &self.reserved {
            if r.identities.iter().any(|p| p.matches(identity))
                && !r.issuers.iter().any(|p| p.matches(issuer))
            {
                return Err(PolicyDenied::Reserved {
                    issuer: issuer.to_owned(),
                    identity: identity.to_owned(),
                });
            }
        }
        let mut issuer_known = false;
        let mut category_allowed = false;
        for (i, rule) in self.rules.iter().enumerate() {
            if !rule.issuer.matches(issuer) {
                continue;
            }
            issuer_known = true;
            if !rule.categories.contains(&category) {
                continue;
            }
            category_allowed = true;
            if rule.identities.iter().any(|p| p.matches(identity)) {
                return Ok(PolicyAllowed { rule: i });
            }
        }
        Err(if !issuer_known {
            PolicyDenied::UnknownIssuer {
                issuer: issuer.to_owned(),
            }
        } else if !category_allowed {
            PolicyDenied::CategoryNotAllowed {
                issuer: issuer.to_owned(),
                category,
            }
        } else {
            PolicyDenied::IdentityNotAllowed {
                issuer: issuer.to_owned(),
                category,
                identity: identity.to_owned(),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(Pattern::parse("*-prod").unwrap().matches("db-prod"));
        assert!(!Pattern::parse("*-prod").unwrap().matches("db-dev"));
        assert!(Pattern::parse("svc-*").unwrap().matches("svc-a"));
        assert!(Pattern::parse("*").unwrap().matches(""));
        assert!(Pattern::parse("a*b").is_err());
        assert!(Pattern::parse("**").is_err());
        assert!(Pattern::parse("*a*").is_err());
        assert!(Pattern::parse("").is_err());
    }

    #[test]
    fn unknown_keys_rejected() {
        let e = IssuancePolicy::from_toml(
            "[[rule]]\nissuer='a'\ncategories=['person']\nidentities=['*']\nidentity='x'\n",
        );
        assert!(matches!(e, Err(PolicyError::Toml(_))));
        let e = IssuancePolicy::from_toml("[[rule]]\nissuer='a'\ncategories=['robot']\nidentities=['*']\n");
        assert!(matches!(e, Err(PolicyError::Toml(_))));
    }

    #[test]
    fn empty_policy_denies() {
        let p = IssuancePolicy::from_toml("").unwrap();
        assert!(matches!(
            p.check("ca", Category::Person, "alice"),
            Err(PolicyDenied::UnknownIssuer { .. })
        ));
    }
}
