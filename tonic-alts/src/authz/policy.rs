//! The RPC authorization policy: its two file formats, their validation and
//! the decision for one call.
// Without `authz-json`, the A43 file types are parsed by nothing.
#![cfg_attr(not(feature = "authz-json"), allow(dead_code))]

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use alts_core::cert::Category;
use alts_core::policy::Pattern;
use serde::Deserialize;
use toml::Spanned;

use crate::AltsPeer;

/// Maximum size in bytes of an RPC authorization policy document.
pub const MAX_AUTHZ_POLICY_LEN: usize = 1024 * 1024;
/// Maximum number of rules in an RPC authorization policy (TOML `[[rule]]`
/// entries, or A43 `deny_rules` plus `allow_rules`).
pub const MAX_AUTHZ_RULES: usize = 10_000;
/// Maximum number of patterns (methods, identities, principals, paths,
/// header values) in an RPC authorization policy, over all rules.
pub const MAX_AUTHZ_PATTERNS: usize = 100_000;

/// Longest policy string echoed in an error message.
const ECHO_LEN: usize = 200;

fn echo(s: &str) -> String {
    s.chars().take(ECHO_LEN).collect()
}

/// The peer's certificate category, when the handshake established one.
fn peer_category(peer: &AltsPeer) -> Option<Category> {
    peer.category
}

/// An A43 matcher: `*` matches any non-empty value; exact, prefix and
/// suffix patterns as usual. An empty value (an absent identity or header)
/// never matches.
fn matches_present(pattern: &Pattern, value: &str) -> bool {
    !value.is_empty() && pattern.matches(value)
}

/// The format of an RPC authorization policy document.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthzPolicyFormat {
    /// This crate's TOML format (`[[rule]]` entries, first match wins).
    Toml,
    /// The gRPC authorization policy JSON of gRFC A43 (`allow_rules`,
    /// `deny_rules`), as read by grpc-go's `authz` package and gRPC C++'s
    /// `AuthorizationPolicyProvider`.
    A43Json,
}

impl AuthzPolicyFormat {
    /// The format named by a file's extension: `.toml` or `.json`.
    pub fn from_path(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?;
        if ext.eq_ignore_ascii_case("toml") {
            Some(Self::Toml)
        } else if ext.eq_ignore_ascii_case("json") {
            Some(Self::A43Json)
        } else {
            None
        }
    }
}

impl fmt::Display for AuthzPolicyFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Toml => "TOML",
            Self::A43Json => "A43 JSON",
        })
    }
}

/// Why an RPC authorization policy was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthzPolicyErrorKind {
    /// The file could not be read.
    #[error("cannot read the file: {message}")]
    Io {
        /// The I/O error kind.
        kind: std::io::ErrorKind,
        /// The I/O error message.
        message: String,
    },
    /// The file name has no `.toml` or `.json` extension and no format was named.
    #[error("cannot tell the policy format from the file name (use `.toml` or `.json`, or name the format)")]
    UnknownFormat,
    /// The format's cargo feature (`authz-json`) is not enabled.
    #[error("the {0} policy format needs the `authz-json` cargo feature of tonic-alts")]
    FormatDisabled(&'static str),
    /// The document is larger than [`MAX_AUTHZ_POLICY_LEN`].
    #[error("policy too large: more than {max} bytes")]
    TooLarge {
        /// The limit.
        max: usize,
    },
    /// Too many rules or patterns.
    #[error("too many {what}: {count} > {max}")]
    TooMany {
        /// `rules` or `patterns`.
        what: &'static str,
        /// How many the document has (at least).
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The document does not parse, or a value has the wrong type.
    #[error("{message}")]
    Syntax {
        /// The parser's message.
        message: String,
    },
    /// A key the format does not have.
    #[error("unknown key `{key}`")]
    UnknownKey {
        /// The key.
        key: String,
    },
    /// A required key is absent.
    #[error("missing key `{key}`")]
    MissingKey {
        /// The key.
        key: String,
    },
    /// A list that must not be empty is empty, or a name is empty.
    #[error("`{field}` must not be empty")]
    Empty {
        /// The key.
        field: &'static str,
    },
    /// A pattern is not an exact name, `*`, `prefix*` or `*suffix`.
    #[error("invalid pattern {pattern:?} (use a name, `*`, `prefix*` or `*suffix`)")]
    BadPattern {
        /// The pattern (truncated).
        pattern: String,
    },
    /// A method pattern is not `*`, `/pkg.Service/Method`, `/pkg.Service/*`
    /// or `*/Method`.
    #[error("invalid method pattern {method:?}: {why}")]
    BadMethod {
        /// The method pattern (truncated).
        method: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A header key that cannot be matched.
    #[error("unsupported header key {key:?}: {why}")]
    BadHeader {
        /// The key (truncated).
        key: String,
        /// Why it is refused.
        why: &'static str,
    },
}

impl AuthzPolicyErrorKind {
    fn io(e: &std::io::Error) -> Self {
        Self::Io {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

/// An RPC authorization policy could not be loaded: where (file and 1-based
/// line, when known) and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}{kind}", location(.path, .line))]
#[non_exhaustive]
pub struct AuthzPolicyError {
    /// The policy file, when loaded from one.
    pub path: Option<PathBuf>,
    /// The 1-based line of the offending text, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub kind: AuthzPolicyErrorKind,
}

fn location(path: &Option<PathBuf>, line: &Option<usize>) -> String {
    match (path, line) {
        (Some(p), Some(l)) => format!("{}:{l}: ", p.display()),
        (Some(p), None) => format!("{}: ", p.display()),
        (None, Some(l)) => format!("line {l}: "),
        (None, None) => String::new(),
    }
}

impl AuthzPolicyError {
    fn new(kind: AuthzPolicyErrorKind) -> Self {
        Self {
            path: None,
            line: None,
            kind,
        }
    }

    fn at(kind: AuthzPolicyErrorKind, line: Option<usize>) -> Self {
        Self {
            path: None,
            line,
            kind,
        }
    }

    fn in_file(mut self, path: &Path) -> Self {
        self.path = Some(path.to_owned());
        self
    }
}

impl From<AuthzPolicyErrorKind> for AuthzPolicyError {
    fn from(kind: AuthzPolicyErrorKind) -> Self {
        Self::new(kind)
    }
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()
        .get(..end)
        .map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
        + 1
}

/// Parses an identity (or header value) pattern.
fn parse_pattern(s: &str) -> Result<Pattern, AuthzPolicyErrorKind> {
    Pattern::parse(s).map_err(|_| AuthzPolicyErrorKind::BadPattern { pattern: echo(s) })
}

/// A validated gRPC method pattern: `*`, `/pkg.Service/Method`,
/// `/pkg.Service/*` or `*/Method`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MethodPattern(Pattern);

impl MethodPattern {
    pub(crate) fn parse(s: &str) -> Result<Self, AuthzPolicyErrorKind> {
        let pattern = parse_pattern(s)?;
        let bad = |why| AuthzPolicyErrorKind::BadMethod { method: echo(s), why };
        let segment_ok = |seg: &str| !seg.is_empty() && !seg.contains('/');
        match &pattern {
            Pattern::Any => {}
            Pattern::Exact(m) => {
                let rest = m.strip_prefix('/').ok_or(bad("must start with `/`"))?;
                let (service, method) = rest.split_once('/').ok_or(bad("use `/pkg.Service/Method`"))?;
                if !segment_ok(service) || !segment_ok(method) {
                    return Err(bad("use `/pkg.Service/Method`"));
                }
            }
            Pattern::Prefix(p) => {
                let rest = p.strip_prefix('/').ok_or(bad("must start with `/`"))?;
                let service = rest
                    .strip_suffix('/')
                    .ok_or(bad("a prefix must be a whole service: `/pkg.Service/*`"))?;
                if !segment_ok(service) {
                    return Err(bad("a prefix must be a whole service: `/pkg.Service/*`"));
                }
            }
            Pattern::Suffix(p) => {
                let method = p
                    .strip_prefix('/')
                    .ok_or(bad("a suffix must be a whole method: `*/Method`"))?;
                if !segment_ok(method) {
                    return Err(bad("a suffix must be a whole method: `*/Method`"));
                }
            }
        }
        Ok(Self(pattern))
    }

    pub(crate) fn matches(&self, method: &str) -> bool {
        self.0.matches(method)
    }

    fn is_any(&self) -> bool {
        self.0 == Pattern::Any
    }
}

impl fmt::Display for MethodPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What to do when no rule matches.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Refuse (the default).
    #[default]
    Deny,
    /// Let the call through.
    Allow,
}

/// One rule of the TOML format, as written (unvalidated). Build a policy
/// from rules with [`RpcAuthzPolicy::from_rules`], which validates them.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthzRule {
    /// Method patterns this rule covers (non-empty).
    pub methods: Vec<String>,
    /// Identity patterns allowed.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Identity patterns refused (checked before `allow`).
    #[serde(default)]
    pub deny: Vec<String>,
    /// Allowed categories (empty: any, including unknown).
    #[serde(default)]
    pub categories: Vec<Category>,
}

#[derive(Clone, Debug)]
struct TomlRule {
    /// 1-based line of the rule, when parsed from text.
    line: Option<usize>,
    methods: Vec<MethodPattern>,
    allow: Vec<Pattern>,
    deny: Vec<Pattern>,
    categories: Vec<Category>,
}

#[derive(Clone, Debug)]
struct TomlPolicy {
    default: Decision,
    rules: Vec<TomlRule>,
}

#[derive(Clone, Debug)]
struct HeaderMatch {
    key: http::HeaderName,
    values: Vec<Pattern>,
}

#[derive(Clone, Debug)]
struct A43Rule {
    name: String,
    principals: Vec<Pattern>,
    paths: Vec<MethodPattern>,
    headers: Vec<HeaderMatch>,
}

#[derive(Clone, Debug)]
struct A43Policy {
    name: String,
    deny: Vec<A43Rule>,
    allow: Vec<A43Rule>,
}

#[derive(Clone, Debug)]
enum Rules {
    Toml(TomlPolicy),
    A43(A43Policy),
}

/// An RPC authorization policy: which authenticated peers may call which
/// methods. Holds either this crate's TOML format or a gRFC A43 JSON policy;
/// see the [module docs](crate::authz) for both.
///
/// Not to be confused with the *issuance policy*
/// ([`alts_core::policy::IssuancePolicy`]), which decides at the handshake
/// which certificates are acceptable at all.
#[derive(Clone, Debug)]
pub struct RpcAuthzPolicy {
    rules: Rules,
}

/// The old name of [`RpcAuthzPolicy`].
#[deprecated(
    note = "renamed to `RpcAuthzPolicy` (the RPC authorization policy, as opposed to the issuance policy)"
)]
pub type AuthzPolicy = RpcAuthzPolicy;

impl Default for RpcAuthzPolicy {
    /// A TOML policy without rules: denies every call.
    fn default() -> Self {
        Self {
            rules: Rules::Toml(TomlPolicy {
                default: Decision::Deny,
                rules: Vec::new(),
            }),
        }
    }
}

// ---- TOML -----------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlFile {
    #[serde(default)]
    default: Decision,
    #[serde(default)]
    rule: Vec<Spanned<TomlRuleFile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlRuleFile {
    methods: Vec<Spanned<String>>,
    #[serde(default)]
    allow: Vec<Spanned<String>>,
    #[serde(default)]
    deny: Vec<Spanned<String>>,
    #[serde(default)]
    categories: Vec<Category>,
}

/// The key named in a serde "unknown field" or "missing field" message.
fn quoted_key(message: &str, prefix: &str) -> Option<String> {
    let rest = message.strip_prefix(prefix)?;
    let rest = rest.strip_prefix('`')?;
    let end = rest.find('`')?;
    rest.get(..end).map(echo)
}

fn classify(message: &str) -> AuthzPolicyErrorKind {
    if let Some(key) = quoted_key(message, "unknown field ") {
        AuthzPolicyErrorKind::UnknownKey { key }
    } else if let Some(key) = quoted_key(message, "missing field ") {
        AuthzPolicyErrorKind::MissingKey { key }
    } else {
        AuthzPolicyErrorKind::Syntax {
            message: message.trim().to_owned(),
        }
    }
}

/// Counts patterns against [`MAX_AUTHZ_PATTERNS`].
struct Budget(usize);

impl Budget {
    fn take(&mut self, n: usize) -> Result<(), AuthzPolicyErrorKind> {
        self.0 = self.0.saturating_add(n);
        if self.0 > MAX_AUTHZ_PATTERNS {
            return Err(AuthzPolicyErrorKind::TooMany {
                what: "patterns",
                count: self.0,
                max: MAX_AUTHZ_PATTERNS,
            });
        }
        Ok(())
    }
}

fn check_rule_count(count: usize) -> Result<(), AuthzPolicyErrorKind> {
    if count > MAX_AUTHZ_RULES {
        return Err(AuthzPolicyErrorKind::TooMany {
            what: "rules",
            count,
            max: MAX_AUTHZ_RULES,
        });
    }
    Ok(())
}

fn check_len(len: usize) -> Result<(), AuthzPolicyErrorKind> {
    if len > MAX_AUTHZ_POLICY_LEN {
        return Err(AuthzPolicyErrorKind::TooLarge {
            max: MAX_AUTHZ_POLICY_LEN,
        });
    }
    Ok(())
}

fn parse_toml(text: &str) -> Result<TomlPolicy, AuthzPolicyError> {
    check_len(text.len())?;
    let file: TomlFile = toml::from_str(text)
        .map_err(|e| AuthzPolicyError::at(classify(e.message()), e.span().map(|s| line_of(text, s.start))))?;
    check_rule_count(file.rule.len())?;
    let mut budget = Budget(0);
    let mut rules = Vec::with_capacity(file.rule.len());
    for rule in &file.rule {
        let rule_line = line_of(text, rule.span().start);
        let r = rule.get_ref();
        let at_rule = |kind| AuthzPolicyError::at(kind, Some(rule_line));
        budget
            .take(r.methods.len() + r.allow.len() + r.deny.len())
            .map_err(at_rule)?;
        if r.methods.is_empty() {
            return Err(at_rule(AuthzPolicyErrorKind::Empty { field: "methods" }));
        }
        let methods = r
            .methods
            .iter()
            .map(|m| {
                MethodPattern::parse(m.get_ref())
                    .map_err(|kind| AuthzPolicyError::at(kind, Some(line_of(text, m.span().start))))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let identities = |list: &[Spanned<String>]| {
            list.iter()
                .map(|p| {
                    parse_pattern(p.get_ref())
                        .map_err(|kind| AuthzPolicyError::at(kind, Some(line_of(text, p.span().start))))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        rules.push(TomlRule {
            line: Some(rule_line),
            methods,
            allow: identities(&r.allow)?,
            deny: identities(&r.deny)?,
            categories: r.categories.clone(),
        });
    }
    Ok(TomlPolicy {
        default: file.default,
        rules,
    })
}

// ---- A43 JSON ---------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct A43File {
    name: String,
    #[serde(default)]
    deny_rules: Vec<A43RuleFile>,
    allow_rules: Vec<A43RuleFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct A43RuleFile {
    name: String,
    #[serde(default)]
    source: Option<A43Source>,
    #[serde(default)]
    request: Option<A43Request>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct A43Source {
    #[serde(default)]
    principals: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct A43Request {
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    headers: Vec<A43Header>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct A43Header {
    key: String,
    values: Vec<String>,
}

/// Header keys A43 does not allow matching on: hop-by-hop headers and
/// `host` (pseudo headers and `grpc-` headers are refused by prefix).
const UNSUPPORTED_HEADERS: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn parse_header_key(key: &str) -> Result<http::HeaderName, AuthzPolicyErrorKind> {
    let bad = |why| AuthzPolicyErrorKind::BadHeader { key: echo(key), why };
    if key.starts_with(':') {
        return Err(bad("HTTP/2 pseudo headers cannot be matched"));
    }
    let name = http::HeaderName::from_bytes(key.as_bytes()).map_err(|_| bad("not a valid header name"))?;
    if name.as_str().starts_with("grpc-") {
        return Err(bad("`grpc-` headers cannot be matched"));
    }
    if UNSUPPORTED_HEADERS.contains(&name.as_str()) {
        return Err(bad("`host` and hop-by-hop headers cannot be matched"));
    }
    Ok(name)
}

/// The 1-based line of the first JSON string literal equal to `s`.
#[cfg(feature = "authz-json")]
fn json_line_of(text: &str, s: &str) -> Option<usize> {
    let literal = serde_json::to_string(s).ok()?;
    text.find(&literal).map(|at| line_of(text, at))
}

#[cfg(not(feature = "authz-json"))]
fn parse_a43(_text: &str) -> Result<A43Policy, AuthzPolicyError> {
    Err(AuthzPolicyError::new(AuthzPolicyErrorKind::FormatDisabled(
        "gRFC A43 JSON",
    )))
}

#[cfg(feature = "authz-json")]
fn parse_a43(text: &str) -> Result<A43Policy, AuthzPolicyError> {
    check_len(text.len())?;
    let file: A43File = serde_json::from_str(text).map_err(|e| {
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        let full = e.to_string();
        let message = full.strip_suffix(&suffix).unwrap_or(&full);
        AuthzPolicyError::at(classify(message), (e.line() > 0).then_some(e.line()))
    })?;
    check_rule_count(file.deny_rules.len().saturating_add(file.allow_rules.len()))?;
    if file.name.is_empty() {
        return Err(AuthzPolicyError::at(
            AuthzPolicyErrorKind::Empty { field: "name" },
            json_line_of(text, ""),
        ));
    }
    if file.allow_rules.is_empty() {
        return Err(AuthzPolicyError::at(
            AuthzPolicyErrorKind::Empty { field: "allow_rules" },
            json_line_of(text, "allow_rules"),
        ));
    }
    let mut budget = Budget(0);
    let mut rules = |list: &[A43RuleFile]| -> Result<Vec<A43Rule>, AuthzPolicyError> {
        list.iter()
            .map(|r| compile_a43_rule(text, r, &mut budget))
            .collect()
    };
    let deny = rules(&file.deny_rules)?;
    let allow = rules(&file.allow_rules)?;
    Ok(A43Policy {
        name: file.name,
        deny,
        allow,
    })
}

#[cfg(feature = "authz-json")]
fn compile_a43_rule(text: &str, r: &A43RuleFile, budget: &mut Budget) -> Result<A43Rule, AuthzPolicyError> {
    let located = |kind: AuthzPolicyErrorKind, s: &str| AuthzPolicyError::at(kind, json_line_of(text, s));
    if r.name.is_empty() {
        return Err(located(AuthzPolicyErrorKind::Empty { field: "name" }, ""));
    }
    let principals = r.source.as_ref().map_or(&[][..], |s| &s.principals[..]);
    let (paths, headers) = r
        .request
        .as_ref()
        .map_or((&[][..], &[][..]), |q| (&q.paths[..], &q.headers[..]));
    let values: usize = headers.iter().map(|h| h.values.len()).sum();
    budget
        .take(principals.len() + paths.len() + values)
        .map_err(|kind| located(kind, &r.name))?;
    let principals = principals
        .iter()
        .map(|p| parse_pattern(p).map_err(|k| located(k, p)))
        .collect::<Result<Vec<_>, _>>()?;
    let paths = paths
        .iter()
        .map(|p| MethodPattern::parse(p).map_err(|k| located(k, p)))
        .collect::<Result<Vec<_>, _>>()?;
    let headers = headers
        .iter()
        .map(|h| {
            let key = parse_header_key(&h.key).map_err(|k| located(k, &h.key))?;
            if h.values.is_empty() {
                return Err(located(AuthzPolicyErrorKind::Empty { field: "values" }, &h.key));
            }
            let values = h
                .values
                .iter()
                .map(|v| parse_pattern(v).map_err(|k| located(k, v)))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(HeaderMatch { key, values })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(A43Rule {
        name: r.name.clone(),
        principals,
        paths,
        headers,
    })
}

// ---- evaluation ---------------------------------------------------------------

/// The method of a call, as far as the caller of the decision knows it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Method<'a> {
    /// The gRPC path, `/pkg.Service/Method`.
    Known(&'a str),
    /// Unknown (a tonic interceptor does not see it).
    Unknown,
}

impl Method<'_> {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Method::Known(m) => m,
            Method::Unknown => "<unknown method>",
        }
    }
}

impl A43Rule {
    fn matches(&self, identity: &str, method: &str, headers: &http::HeaderMap) -> bool {
        (self.principals.is_empty() || self.principals.iter().any(|p| matches_present(p, identity)))
            && (self.paths.is_empty() || self.paths.iter().any(|p| !method.is_empty() && p.matches(method)))
            && self.headers.iter().all(|h| {
                let mut joined = String::new();
                for (i, v) in headers.get_all(&h.key).iter().enumerate() {
                    let Ok(v) = v.to_str() else { return false };
                    if i > 0 {
                        joined.push(',');
                    }
                    joined.push_str(v);
                }
                h.values.iter().any(|p| matches_present(p, &joined))
            })
    }
}

impl RpcAuthzPolicy {
    /// Parses the TOML format.
    pub fn from_toml_str(s: &str) -> Result<Self, AuthzPolicyError> {
        Ok(Self {
            rules: Rules::Toml(parse_toml(s)?),
        })
    }

    /// Parses the TOML format (the old name of [`Self::from_toml_str`]).
    pub fn from_toml(s: &str) -> Result<Self, AuthzPolicyError> {
        Self::from_toml_str(s)
    }

    /// Parses a gRFC A43 JSON authorization policy.
    pub fn from_json_str(s: &str) -> Result<Self, AuthzPolicyError> {
        Ok(Self {
            rules: Rules::A43(parse_a43(s)?),
        })
    }

    /// Parses `s` in `format`.
    pub fn from_str_format(s: &str, format: AuthzPolicyFormat) -> Result<Self, AuthzPolicyError> {
        match format {
            AuthzPolicyFormat::Toml => Self::from_toml_str(s),
            AuthzPolicyFormat::A43Json => Self::from_json_str(s),
        }
    }

    /// Loads a policy file, in the format its extension names: `.json` is
    /// gRFC A43 JSON, `.toml` this crate's TOML.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, AuthzPolicyError> {
        let path = path.as_ref();
        let format = AuthzPolicyFormat::from_path(path)
            .ok_or_else(|| AuthzPolicyError::new(AuthzPolicyErrorKind::UnknownFormat).in_file(path))?;
        Self::from_file_format(path, format)
    }

    /// Loads a policy file in `format`, whatever its extension.
    pub fn from_file_format(
        path: impl AsRef<Path>,
        format: AuthzPolicyFormat,
    ) -> Result<Self, AuthzPolicyError> {
        let path = path.as_ref();
        let text = read_policy_file(path)?;
        Self::from_file_format_text(path, &text, format)
    }

    /// Parses `text`, read from `path`.
    pub(crate) fn from_file_format_text(
        path: &Path,
        text: &str,
        format: AuthzPolicyFormat,
    ) -> Result<Self, AuthzPolicyError> {
        Self::from_str_format(text, format).map_err(|e| e.in_file(path))
    }

    /// A TOML-format policy from rules built in code, validated as if read
    /// from a file.
    pub fn from_rules(default: Decision, rules: Vec<AuthzRule>) -> Result<Self, AuthzPolicyError> {
        check_rule_count(rules.len())?;
        let mut budget = Budget(0);
        let mut compiled = Vec::with_capacity(rules.len());
        for r in rules {
            budget.take(r.methods.len() + r.allow.len() + r.deny.len())?;
            if r.methods.is_empty() {
                return Err(AuthzPolicyErrorKind::Empty { field: "methods" }.into());
            }
            let ids = |l: &[String]| l.iter().map(|s| parse_pattern(s)).collect::<Result<Vec<_>, _>>();
            compiled.push(TomlRule {
                line: None,
                methods: r
                    .methods
                    .iter()
                    .map(|m| MethodPattern::parse(m))
                    .collect::<Result<_, _>>()?,
                allow: ids(&r.allow)?,
                deny: ids(&r.deny)?,
                categories: r.categories,
            });
        }
        Ok(Self {
            rules: Rules::Toml(TomlPolicy {
                default,
                rules: compiled,
            }),
        })
    }

    /// The format this policy was written in.
    pub fn format(&self) -> AuthzPolicyFormat {
        match self.rules {
            Rules::Toml(_) => AuthzPolicyFormat::Toml,
            Rules::A43(_) => AuthzPolicyFormat::A43Json,
        }
    }

    /// Whether a decision may depend on the method: some TOML rule has
    /// `methods` other than `["*"]`, or some A43 rule has `request.paths`.
    /// A tonic interceptor cannot see the method, so it refuses such a
    /// policy (see [`AuthzInterceptor`](crate::authz::AuthzInterceptor)).
    pub fn is_method_scoped(&self) -> bool {
        match &self.rules {
            Rules::Toml(p) => p
                .rules
                .iter()
                .any(|r| !r.methods.iter().all(MethodPattern::is_any)),
            Rules::A43(p) => p.deny.iter().chain(&p.allow).any(|r| !r.paths.is_empty()),
        }
    }

    /// Whether some rule looks at request headers.
    pub(crate) fn uses_headers(&self) -> bool {
        match &self.rules {
            Rules::Toml(_) => false,
            Rules::A43(p) => p.deny.iter().chain(&p.allow).any(|r| !r.headers.is_empty()),
        }
    }

    /// Decides one call without request headers (TOML policies never look
    /// at headers; A43 rules with `headers` do not match). `Err` carries the
    /// reason, for logs only: never send it to the caller.
    pub fn check(&self, peer: &AltsPeer, method: &str) -> Result<(), String> {
        self.decide(peer, method, &http::HeaderMap::new())
    }

    /// Decides one call to `method` (`/pkg.Service/Method`) with request
    /// `headers`. `Err` carries the reason, for logs only: never send it to
    /// the caller.
    pub fn decide(&self, peer: &AltsPeer, method: &str, headers: &http::HeaderMap) -> Result<(), String> {
        self.evaluate(peer, Method::Known(method), headers)
    }

    pub(crate) fn evaluate(
        &self,
        peer: &AltsPeer,
        method: Method<'_>,
        headers: &http::HeaderMap,
    ) -> Result<(), String> {
        let m = match method {
            Method::Known(m) => m,
            Method::Unknown if self.is_method_scoped() => {
                return Err("the policy has method-scoped rules but the method is unknown \
                            (a tonic interceptor cannot see it)"
                    .into());
            }
            // No rule looks at the method.
            Method::Unknown => "",
        };
        let identity = peer.identity.as_str();
        match &self.rules {
            Rules::Toml(p) => p.evaluate(peer_category(peer), identity, m),
            Rules::A43(p) => p.evaluate(identity, m, headers),
        }
    }
}

fn rule_label(index: usize, line: Option<usize>) -> String {
    match line {
        Some(l) => format!("rule #{} (line {l})", index + 1),
        None => format!("rule #{}", index + 1),
    }
}

impl TomlPolicy {
    fn evaluate(&self, category: Option<Category>, identity: &str, method: &str) -> Result<(), String> {
        let Some((i, rule)) = self
            .rules
            .iter()
            .enumerate()
            .find(|(_, r)| r.methods.iter().any(|m| m.matches(method)))
        else {
            return match self.default {
                Decision::Allow => Ok(()),
                Decision::Deny => Err(format!("no rule covers {method}; default deny")),
            };
        };
        let label = rule_label(i, rule.line);
        if let Some(p) = rule.deny.iter().find(|p| matches_present(p, identity)) {
            return Err(format!(
                "{label}: identity {identity:?} matches denied pattern {p}"
            ));
        }
        if !rule.categories.is_empty() {
            match category {
                Some(c) if rule.categories.contains(&c) => {}
                Some(c) => return Err(format!("{label}: category {c} is not allowed")),
                None => return Err(format!("{label}: the peer's category is unknown")),
            }
        }
        if rule.allow.iter().any(|p| matches_present(p, identity)) {
            Ok(())
        } else {
            Err(format!("{label}: identity {identity:?} is not allowed"))
        }
    }
}

impl A43Policy {
    fn evaluate(&self, identity: &str, method: &str, headers: &http::HeaderMap) -> Result<(), String> {
        if let Some(r) = self.deny.iter().find(|r| r.matches(identity, method, headers)) {
            return Err(format!("policy {:?}: deny rule {:?} matches", self.name, r.name));
        }
        if self.allow.iter().any(|r| r.matches(identity, method, headers)) {
            return Ok(());
        }
        Err(format!("policy {:?}: no allow rule matches", self.name))
    }
}

/// Reads a policy file, refusing one larger than [`MAX_AUTHZ_POLICY_LEN`].
pub(crate) fn read_policy_file(path: &Path) -> Result<String, AuthzPolicyError> {
    let io = |e: std::io::Error| AuthzPolicyError::new(AuthzPolicyErrorKind::io(&e)).in_file(path);
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(MAX_AUTHZ_POLICY_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    check_len(bytes.len()).map_err(|k| AuthzPolicyError::new(k).in_file(path))?;
    String::from_utf8(bytes).map_err(|e| {
        AuthzPolicyError::new(AuthzPolicyErrorKind::Syntax {
            message: format!("not UTF-8: {e}"),
        })
        .in_file(path)
    })
}

/// Parses validated method patterns (for exemptions such as health checks).
pub(crate) fn method_patterns<I, S>(methods: I) -> Result<Vec<MethodPattern>, AuthzPolicyError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    methods
        .into_iter()
        .map(|m| MethodPattern::parse(m.as_ref()).map_err(AuthzPolicyError::new))
        .collect()
}

/// Parses validated identity patterns.
pub(crate) fn identity_patterns<I, S>(identities: I) -> Result<Vec<Pattern>, AuthzPolicyError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let list = identities
        .into_iter()
        .map(|m| parse_pattern(m.as_ref()).map_err(AuthzPolicyError::new))
        .collect::<Result<Vec<_>, _>>()?;
    if list.is_empty() {
        return Err(AuthzPolicyErrorKind::Empty { field: "identities" }.into());
    }
    Ok(list)
}

/// Whether `identity` matches one of `patterns` (`*` needs a non-empty identity).
pub(crate) fn identity_allowed(patterns: &[Pattern], identity: &str) -> bool {
    patterns.iter().any(|p| matches_present(p, identity))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_patterns() {
        for ok in ["*", "/a.B/C", "/a.B/*", "*/C"] {
            assert!(MethodPattern::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "a.B/C", "/a.B", "/a.B/C/D", "//C", "/a.B/", "/a.*", "a.B/*", "*C", "*/", "*-dev*", "",
        ] {
            assert!(MethodPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn category_rules_refuse_unknown_categories() {
        let Rules::Toml(p) = RpcAuthzPolicy::from_toml_str(
            "[[rule]]\nmethods = [\"*\"]\nallow = [\"*\"]\ncategories = [\"workload\"]\n\
             [[rule]]\nmethods = [\"*\"]\nallow = [\"*\"]\n",
        )
        .unwrap()
        .rules
        else {
            unreachable!()
        };
        assert!(p.evaluate(Some(Category::Workload), "a", "/a.B/C").is_ok());
        assert!(p.evaluate(Some(Category::Person), "a", "/a.B/C").is_err());
        let why = p.evaluate(None, "a", "/a.B/C").unwrap_err();
        assert!(why.contains("unknown"), "{why}");
        // Without `categories`, an unknown category is no obstacle.
        let Rules::Toml(open) =
            RpcAuthzPolicy::from_toml_str("[[rule]]\nmethods = [\"*\"]\nallow = [\"*\"]\n")
                .unwrap()
                .rules
        else {
            unreachable!()
        };
        assert!(open.evaluate(None, "a", "/a.B/C").is_ok());
        // An empty identity matches no identity pattern, not even `*`.
        assert!(open.evaluate(None, "", "/a.B/C").is_err());
    }

    #[test]
    fn lines() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 99), 3);
    }

    #[test]
    fn header_keys() {
        assert!(parse_header_key("x-team").is_ok());
        assert_eq!(parse_header_key("X-Team").unwrap().as_str(), "x-team");
        for bad in [":path", "grpc-timeout", "host", "Connection", "te", "bad key"] {
            assert!(parse_header_key(bad).is_err(), "{bad}");
        }
    }
}
