//! The signer policy: which authenticated callers may ask the signer for
//! credentials of which identities and categories. Default deny.
//!
//! ```toml
//! # Optional; the only version is 1.
//! version = 1
//!
//! [[allow]]
//! caller = "agent-*"              # the caller's ALTS identity (pattern)
//! identities = ["*-prod"]          # identities it may request (patterns)
//! categories = ["workload"]        # person | machine | workload
//! max_validity = "30d"             # optional cap below --max-principal-validity
//! ```
//!
//! Patterns use the issuance policy's grammar: an exact name, `*`,
//! `prefix*` or `*suffix` ([`alts_core::policy::Pattern`]); anything else,
//! unknown keys and empty lists are refused when the file is loaded.
//!
//! A rule covers `IssuePrincipal` for its identities and categories,
//! `GetKeyRing` for its identities (any category), and
//! `AllocateRevocationIds` for its callers. Passing the signer policy is not
//! enough to get a certificate: the fleet's issuance policy must also accept
//! the certificate with the caller as its issuer.

use std::path::Path;
use std::time::Duration;

use alts_core::cert::Category;
use alts_core::policy::Pattern;
use serde::Deserialize;

/// Largest signer policy file read.
pub const MAX_SIGNER_POLICY_LEN: usize = 1024 * 1024;
/// Most `[[allow]]` rules in one file.
pub const MAX_SIGNER_POLICY_RULES: usize = 10_000;

/// The signer policy file could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignerPolicyError {
    /// Reading failed.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is too large or has too many rules.
    #[error(
        "signer policy too large (at most {MAX_SIGNER_POLICY_LEN} bytes, {MAX_SIGNER_POLICY_RULES} rules)"
    )]
    TooLarge,
    /// The TOML does not parse or has unknown or mistyped keys.
    #[error("invalid signer policy: {0}")]
    Toml(String),
    /// Unsupported `version`.
    #[error("unsupported signer policy version {0}")]
    UnsupportedVersion(u32),
    /// A rule is invalid.
    #[error("allow rule #{index}: {what}")]
    BadRule {
        /// Zero-based rule index.
        index: usize,
        /// What is wrong.
        what: String,
    },
}

/// One allow rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowRule {
    /// Which callers it covers.
    pub caller: Pattern,
    /// Identities they may request.
    pub identities: Vec<Pattern>,
    /// Categories they may request.
    pub categories: Vec<Category>,
    /// Optional validity cap for this rule.
    pub max_validity: Option<Duration>,
}

/// A loaded signer policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SignerPolicy {
    rules: Vec<AllowRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    version: Option<u32>,
    #[serde(default)]
    allow: Vec<RuleFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    caller: String,
    identities: Vec<String>,
    categories: Vec<Category>,
    #[serde(default)]
    max_validity: Option<String>,
}

/// Why the signer policy refused a request (logged, never sent).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignerDenied {
    /// No rule names the caller.
    #[error("signer policy: no rule for caller {0:?}")]
    UnknownCaller(String),
    /// The caller may not request this identity and category.
    #[error("signer policy: caller {caller:?} may not request {category} credentials for {identity:?}")]
    NotAllowed {
        /// The caller.
        caller: String,
        /// The identity asked for.
        identity: String,
        /// The category asked for.
        category: Category,
    },
    /// The caller may not request anything for this identity.
    #[error("signer policy: caller {caller:?} may not request credentials for {identity:?}")]
    IdentityNotAllowed {
        /// The caller.
        caller: String,
        /// The identity asked for.
        identity: String,
    },
}

impl SignerPolicy {
    /// Reads and parses a policy file.
    pub fn load(path: &Path) -> Result<Self, SignerPolicyError> {
        let read_err = |source| SignerPolicyError::Read {
            path: path.display().to_string(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read_err)?;
        if meta.len() > MAX_SIGNER_POLICY_LEN as u64 {
            return Err(SignerPolicyError::TooLarge);
        }
        let text = std::fs::read_to_string(path).map_err(read_err)?;
        Self::from_toml(&text)
    }

    /// Parses the TOML form.
    pub fn from_toml(text: &str) -> Result<Self, SignerPolicyError> {
        if text.len() > MAX_SIGNER_POLICY_LEN {
            return Err(SignerPolicyError::TooLarge);
        }
        let file: File = toml::from_str(text).map_err(|e| SignerPolicyError::Toml(e.message().to_owned()))?;
        if let Some(v) = file.version
            && v != 1
        {
            return Err(SignerPolicyError::UnsupportedVersion(v));
        }
        if file.allow.len() > MAX_SIGNER_POLICY_RULES {
            return Err(SignerPolicyError::TooLarge);
        }
        let mut rules = Vec::with_capacity(file.allow.len());
        for (index, r) in file.allow.into_iter().enumerate() {
            let bad = |what: String| SignerPolicyError::BadRule { index, what };
            if r.identities.is_empty() {
                return Err(bad("`identities` must not be empty".into()));
            }
            if r.categories.is_empty() {
                return Err(bad("`categories` must not be empty".into()));
            }
            let caller = Pattern::parse(&r.caller).map_err(|e| bad(e.to_string()))?;
            let identities = r
                .identities
                .iter()
                .map(|p| Pattern::parse(p))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(e.to_string()))?;
            let max_validity = match r.max_validity {
                Some(s) => {
                    let d = humantime::parse_duration(&s).map_err(|e| bad(format!("max_validity: {e}")))?;
                    if d.is_zero() {
                        return Err(bad("max_validity must be positive".into()));
                    }
                    Some(d)
                }
                None => None,
            };
            rules.push(AllowRule {
                caller,
                identities,
                categories: r.categories,
                max_validity,
            });
        }
        Ok(Self { rules })
    }

    /// The rules.
    pub fn rules(&self) -> &[AllowRule] {
        &self.rules
    }

    /// May `caller` request a `category` principal for `identity`? Returns
    /// the first matching rule.
    pub fn check_issue(
        &self,
        caller: &str,
        identity: &str,
        category: Category,
    ) -> Result<&AllowRule, SignerDenied> {
        let mut known = false;
        for r in &self.rules {
            if !r.caller.matches(caller) {
                continue;
            }
            known = true;
            if r.categories.contains(&category) && r.identities.iter().any(|p| p.matches(identity)) {
                return Ok(r);
            }
        }
        Err(if known {
            SignerDenied::NotAllowed {
                caller: caller.to_owned(),
                identity: identity.to_owned(),
                category,
            }
        } else {
            SignerDenied::UnknownCaller(caller.to_owned())
        })
    }

    /// May `caller` request anything for `identity` (key rings)?
    pub fn check_identity(&self, caller: &str, identity: &str) -> Result<(), SignerDenied> {
        let mut known = false;
        for r in &self.rules {
            if !r.caller.matches(caller) {
                continue;
            }
            known = true;
            if r.identities.iter().any(|p| p.matches(identity)) {
                return Ok(());
            }
        }
        Err(if known {
            SignerDenied::IdentityNotAllowed {
                caller: caller.to_owned(),
                identity: identity.to_owned(),
            }
        } else {
            SignerDenied::UnknownCaller(caller.to_owned())
        })
    }

    /// Is `caller` named by any rule (revocation-ID ranges)?
    pub fn check_caller(&self, caller: &str) -> Result<(), SignerDenied> {
        if self.rules.iter().any(|r| r.caller.matches(caller)) {
            Ok(())
        } else {
            Err(SignerDenied::UnknownCaller(caller.to_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
[[allow]]
caller = "agent-*"
identities = ["*-prod"]
categories = ["workload"]
max_validity = "30d"
"#;

    #[test]
    fn rules() {
        let p = SignerPolicy::from_toml(POLICY).unwrap();
        let r = p
            .check_issue("agent-a", "greeter-prod", Category::Workload)
            .unwrap();
        assert_eq!(r.max_validity, Some(Duration::from_secs(30 * 86400)));
        assert!(matches!(
            p.check_issue("agent-a", "greeter-dev", Category::Workload),
            Err(SignerDenied::NotAllowed { .. })
        ));
        assert!(matches!(
            p.check_issue("agent-a", "greeter-prod", Category::Person),
            Err(SignerDenied::NotAllowed { .. })
        ));
        assert!(matches!(
            p.check_issue("mallory", "greeter-prod", Category::Workload),
            Err(SignerDenied::UnknownCaller(_))
        ));
        assert!(p.check_identity("agent-b", "db-prod").is_ok());
        assert!(p.check_identity("agent-b", "db-dev").is_err());
        assert!(p.check_caller("agent-x").is_ok());
        assert!(p.check_caller("x-agent").is_err());
    }

    #[test]
    fn bad_files() {
        assert!(
            SignerPolicy::from_toml("[[allow]]\ncaller='a'\nidentities=[]\ncategories=['workload']").is_err()
        );
        assert!(
            SignerPolicy::from_toml("[[allow]]\ncaller='a*b'\nidentities=['x']\ncategories=['workload']")
                .is_err()
        );
        assert!(
            SignerPolicy::from_toml("[[allow]]\ncaller='a'\nidentities=['x']\ncategories=['robot']").is_err()
        );
        assert!(
            SignerPolicy::from_toml(
                "[[allow]]\ncaller='a'\nidentities=['x']\ncategories=['workload']\nextra=1"
            )
            .is_err()
        );
        assert!(SignerPolicy::from_toml("version = 2").is_err());
        assert!(SignerPolicy::from_toml("").unwrap().check_caller("a").is_err());
    }
}
