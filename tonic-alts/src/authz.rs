//! Per-RPC authorization by authenticated peer identity.
//!
//! Rules come from code (a closure) or from TOML:
//!
//! ```toml
//! default = "deny"            # or "allow" when no rule matches the method
//!
//! [[rule]]
//! methods = ["/helloworld.Greeter/*"]   # "/pkg.Service/Method", "/pkg.Service/*" or "*"
//! allow = ["*-prod", "oncall-*"]         # identity patterns: exact, "*-suffix", "prefix-*", "*"
//! deny = ["*-dev"]                       # checked first
//! categories = ["workload", "person"]    # optional: allowed categories
//! ```
//!
//! The first rule whose `methods` match decides. A denied call gets
//! `PERMISSION_DENIED` with a message naming the identity and the method.

use std::sync::Arc;
use std::task::{Context, Poll};

use alts_core::cert::Category;
use serde::Deserialize;
use tonic::Status;

use crate::AltsPeer;
use crate::connect_info::{AltsRequestExt, enrich};

/// An identity or method pattern: exact, `*`, `prefix*` or `*suffix`.
fn matches(pattern: &str, name: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    if let Some(suffix) = pattern.strip_prefix('*') {
        return name.ends_with(suffix);
    }
    if let Some(prefix) = pattern.strip_suffix('*') {
        return name.starts_with(prefix);
    }
    pattern == name
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

/// One authorization rule.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthzRule {
    /// gRPC paths this rule covers.
    pub methods: Vec<String>,
    /// Identities allowed.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Identities refused (checked before `allow`).
    #[serde(default)]
    pub deny: Vec<String>,
    /// Allowed categories (empty: any).
    #[serde(default)]
    pub categories: Vec<Category>,
}

/// A set of rules.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthzPolicy {
    /// Decision when no rule matches the method.
    #[serde(default)]
    pub default: Decision,
    /// Rules, first match wins.
    #[serde(default, rename = "rule")]
    pub rules: Vec<AuthzRule>,
}

impl AuthzPolicy {
    /// Parses the TOML form.
    pub fn from_toml(s: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(s)
    }

    /// Decides one call.
    pub fn check(&self, peer: &AltsPeer, method: &str) -> Result<(), String> {
        let Some(rule) = self
            .rules
            .iter()
            .find(|r| r.methods.iter().any(|m| matches(m, method)))
        else {
            return match self.default {
                Decision::Allow => Ok(()),
                Decision::Deny => Err(format!("no authorization rule covers {method}")),
            };
        };
        if let Some(p) = rule.deny.iter().find(|p| matches(p, &peer.identity)) {
            return Err(format!(
                "identity {:?} matches denied pattern {p:?} for {method}",
                peer.identity
            ));
        }
        if !rule.categories.is_empty() && !peer.category.is_some_and(|c| rule.categories.contains(&c)) {
            return Err(format!("category {:?} may not call {method}", peer.category));
        }
        if rule.allow.iter().any(|p| matches(p, &peer.identity)) {
            Ok(())
        } else {
            Err(format!(
                "identity {:?} is not allowed to call {method}",
                peer.identity
            ))
        }
    }
}

type RuleFn = dyn Fn(&AltsPeer, &str) -> Result<(), String> + Send + Sync;

/// An authorization decision procedure.
#[derive(Clone)]
pub struct Authorizer(Arc<RuleFn>);

impl Authorizer {
    /// From a closure `(peer, "/pkg.Service/Method") -> Ok or reason`.
    pub fn from_fn(f: impl Fn(&AltsPeer, &str) -> Result<(), String> + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// From a rule set.
    pub fn from_policy(policy: AuthzPolicy) -> Self {
        Self::from_fn(move |peer, method| policy.check(peer, method))
    }

    fn decide(&self, peer: Option<&AltsPeer>, method: &str) -> Result<(), Status> {
        let Some(peer) = peer else {
            return Err(Status::permission_denied(format!(
                "{method}: no ALTS peer on this connection"
            )));
        };
        (self.0)(peer, method).map_err(|reason| {
            tracing::info!(peer = %peer.identity, method, %reason, "RPC denied");
            Status::permission_denied(reason)
        })
    }
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authorizer")
    }
}

/// A tower layer that authorizes every RPC by the ALTS peer identity and
/// exposes the peer (and `remote_addr()`) to handlers.
#[derive(Clone, Debug)]
pub struct AltsAuthzLayer {
    authz: Option<Authorizer>,
}

impl AltsAuthzLayer {
    /// Authorizes with `authorizer`.
    pub fn new(authorizer: Authorizer) -> Self {
        Self {
            authz: Some(authorizer),
        }
    }

    /// Authorizes with a rule set.
    pub fn from_policy(policy: AuthzPolicy) -> Self {
        Self::new(Authorizer::from_policy(policy))
    }

    /// Lets every call through, only exposing the peer and `remote_addr()`.
    pub fn peer_info_only() -> Self {
        Self { authz: None }
    }
}

impl<S> tower_layer::Layer<S> for AltsAuthzLayer {
    type Service = AltsAuthz<S>;

    fn layer(&self, inner: S) -> AltsAuthz<S> {
        AltsAuthz {
            inner,
            authz: self.authz.clone(),
        }
    }
}

/// The service made by [`AltsAuthzLayer`].
#[derive(Clone, Debug)]
pub struct AltsAuthz<S> {
    inner: S,
    authz: Option<Authorizer>,
}

impl<S, B, R> tower_service::Service<http::Request<B>> for AltsAuthz<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = futures_util::future::Either<
        S::Future,
        futures_util::future::Ready<Result<http::Response<R>, S::Error>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        enrich(req.extensions_mut());
        if let Some(authz) = &self.authz {
            let peer = req.alts_peer();
            if let Err(status) = authz.decide(peer.as_deref(), req.uri().path()) {
                let (parts, ()) = status.into_http::<()>().into_parts();
                return futures_util::future::Either::Right(futures_util::future::ready(Ok(
                    http::Response::from_parts(parts, R::default()),
                )));
            }
        }
        // Clone-and-swap so the service we polled ready is the one called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        futures_util::future::Either::Left(inner.call(req))
    }
}

/// A tonic interceptor authorizing with `authorizer`. Interceptors do not see
/// the method path, so the rule receives the empty string for it: use it for
/// service-wide rules (wrap each service with its own interceptor).
pub fn authz_interceptor(
    authorizer: Authorizer,
) -> impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, Status> + Clone {
    move |req: tonic::Request<()>| {
        let peer = req.alts_peer();
        authorizer.decide(peer.as_deref(), "")?;
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rule set shown in the README parses and decides as described.
    #[test]
    fn readme_rules_parse() {
        let p = AuthzPolicy::from_toml("[[rule]]\nmethods = [\"*\"]\ndeny = [\"*-dev\"]\nallow = [\"*\"]")
            .unwrap();
        assert_eq!(p.rules.len(), 1);
        assert_eq!(p.default, Decision::Deny);
        assert!(matches("*-dev", "frontend-dev") && !matches("*-dev", "frontend-prod"));
    }
}
