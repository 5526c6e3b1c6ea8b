//! Per-RPC authorization by authenticated peer identity.
//!
//! The handshake proves *who* the peer is (and the issuance policy,
//! [`alts_core::policy::IssuancePolicy`], decides which certificates are
//! acceptable at all). This module decides *what* an authenticated peer may
//! call: the **RPC authorization policy**, [`RpcAuthzPolicy`], or code.
//!
//! Install it as a tower layer, [`AltsAuthzLayer`], which sees the method of
//! every call. A denied call gets `PERMISSION_DENIED` with the message
//! `unauthorized RPC`, nothing more: the reason (identity, method, rule) is
//! logged (`tracing`, target `tonic_alts::authz`), never sent to the caller. A
//! request without an ALTS peer is denied the same way.
//!
//! # Patterns
//!
//! Identities, principals and header values use one pattern grammar
//! ([`alts_core::policy::Pattern`], shared with the issuance policy): an exact
//! name, `*` (any non-empty value), `prefix*` or `*suffix`. Anything else
//! (e.g. `*-dev*`) is refused when the policy is loaded.
//!
//! Method patterns are `*`, `/pkg.Service/Method`, `/pkg.Service/*` (every
//! method of one service) or `*/Method` (that method of any service). A
//! method without the leading `/`, or a prefix that is not a whole service,
//! is refused when the policy is loaded.
//!
//! # TOML policy
//!
//! The first rule whose `methods` match decides: `deny` first, then
//! `categories`, then `allow`. Calls no rule covers get `default`.
//!
//! ```
//! use tonic_alts::authz::{AltsAuthzLayer, RpcAuthzPolicy};
//!
//! let policy = RpcAuthzPolicy::from_toml_str(r#"
//! default = "deny"                        # or "allow", for calls no rule covers
//!
//! [[rule]]
//! methods = ["/helloworld.Greeter/*"]    # see "Patterns"
//! allow = ["*-prod", "oncall-*"]          # identity patterns
//! deny = ["*-dev"]                        # checked first
//! categories = ["workload", "person"]     # optional: allowed categories
//! "#)?;
//! let layer = AltsAuthzLayer::from_policy(policy);
//! # Ok::<(), tonic_alts::authz::AuthzPolicyError>(())
//! ```
//!
//! A rule with `categories` refuses a peer whose category is unknown.
//!
//! # gRFC A43 JSON policy
//!
//! The gRPC authorization policy read by grpc-go's `authz` package and gRPC
//! C++'s `AuthorizationPolicyProvider`. A call is denied if any deny rule
//! matches; otherwise allowed if any allow rule matches; otherwise denied.
//! A rule matches when all its present fields match: `principals` (the ALTS
//! peer identity) and `paths` match if any entry matches, `headers` if
//! *every* header entry matches one of its `values` (a header sent several
//! times is matched as its values joined by `,`). An absent or empty
//! `source` or `request` matches every call.
//!
//! ```
//! use tonic_alts::authz::RpcAuthzPolicy;
//!
//! let policy = RpcAuthzPolicy::from_json_str(r#"{
//!   "name": "greeter",
//!   "deny_rules": [
//!     { "name": "no-dev", "source": { "principals": ["*-dev"] } }
//!   ],
//!   "allow_rules": [
//!     { "name": "frontends",
//!       "source": { "principals": ["frontend-prod"] },
//!       "request": { "paths": ["/helloworld.Greeter/*"],
//!                    "headers": [{ "key": "x-tenant", "values": ["acme", "acme-*"] }] } }
//!   ]
//! }"#)?;
//! assert!(policy.is_method_scoped());
//! # Ok::<(), tonic_alts::authz::AuthzPolicyError>(())
//! ```
//!
//! Header keys are matched exactly (case-insensitively, as HTTP header names);
//! HTTP/2 pseudo headers (`:path`...), `grpc-` headers, `host` and hop-by-hop
//! headers cannot be matched and are refused at load. `name` (of the policy
//! and of each rule) and a non-empty `allow_rules` are required, unknown keys
//! are refused, and `paths` use the method pattern grammar above.
//!
//! [`RpcAuthzPolicy::from_file`] picks the format from the extension (`.json`
//! or `.toml`); [`RpcAuthzPolicy::from_file_format`] names it. Errors
//! ([`AuthzPolicyError`]) carry the file, the line and a typed reason.
//! [`Authorizer::from_file_reloading`] re-reads the file while serving.
//!
//! # In code
//!
//! A closure sees the peer and the method:
//!
//! ```
//! use tonic_alts::authz::{AltsAuthzLayer, Authorizer};
//!
//! let authz = Authorizer::from_fn(|peer, method| {
//!     if method.starts_with("/admin.Admin/") && !peer.identity.starts_with("oncall-") {
//!         return Err(format!("{} is not on call", peer.identity)); // logged only
//!     }
//!     Ok(())
//! });
//! let layer = AltsAuthzLayer::new(authz);
//! ```
//!
//! Only some identities, whatever the method (like grpc-go's
//! `ClientAuthorizationCheck`); usable in an interceptor too:
//!
//! ```
//! use tonic_alts::authz::{AltsAuthzLayer, Authorizer, AuthzInterceptor, require_identity};
//!
//! let authz = require_identity(["greeter-prod", "oncall-*"])?;
//! let layer = AltsAuthzLayer::new(authz.clone());
//! let interceptor = AuthzInterceptor::new(authz)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! An asynchronous decision (say, a database look-up) chooses its own status:
//!
//! ```
//! use std::future::Future;
//! use std::pin::Pin;
//! use tonic::Status;
//! use tonic_alts::authz::{AltsAuthzLayer, AuthorizeRpc, RpcInfo};
//!
//! #[derive(Clone)]
//! struct Quota;
//!
//! impl AuthorizeRpc for Quota {
//!     type Future = Pin<Box<dyn Future<Output = Result<(), Status>> + Send>>;
//!
//!     fn authorize(&self, rpc: &RpcInfo<'_>) -> Self::Future {
//!         let identity = rpc.peer.identity.clone(); // copy what the future needs
//!         Box::pin(async move {
//!             // ... look `identity` up ...
//!             if identity.ends_with("-batch") {
//!                 return Err(Status::resource_exhausted("quota exceeded"));
//!             }
//!             Ok(())
//!         })
//!     }
//! }
//!
//! let layer = AltsAuthzLayer::async_authorizer(Quota);
//! ```
//!
//! The status an asynchronous authorizer returns is sent to the caller as it
//! is (an `OK` status counts as `PERMISSION_DENIED`): keep its message free
//! of anything the caller should not learn.
//!
//! # Interceptors
//!
//! A tonic server interceptor does not see the method. [`AuthzInterceptor`]
//! therefore accepts only service-wide authorizers ([`Authorizer::service_wide`],
//! [`require_identity`], a policy that is not
//! [method-scoped](RpcAuthzPolicy::is_method_scoped)); it refuses a
//! method-scoped one at construction, and denies every call if a reloaded
//! policy turns method-scoped.
//!
//! # Health checks
//!
//! The layer authorizes `/grpc.health.v1.Health/*` like any other method.
//! To let a load balancer probe without ALTS or without authorization:
//!
//! ```
//! use tonic_alts::authz::{AltsAuthzLayer, require_identity};
//!
//! let layer = AltsAuthzLayer::new(require_identity(["greeter-prod"])?)
//!     .allow_unauthenticated(["/grpc.health.v1.Health/Check"])?;
//! # Ok::<(), tonic_alts::authz::AuthzPolicyError>(())
//! ```
//!
//! Exempt methods skip the peer check and the authorizer entirely.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use alts_core::policy::Pattern;
use arc_swap::ArcSwap;
use futures_util::future::{BoxFuture, Either};
use tonic::Status;

use crate::AltsPeer;
use crate::connect_info::{AltsConnectInfo, AltsRequestExt, enrich};

mod policy;
mod reload;

#[allow(deprecated)]
pub use policy::AuthzPolicy;
pub use policy::{
    AuthzPolicyError, AuthzPolicyErrorKind, AuthzPolicyFormat, AuthzRule, Decision, MAX_AUTHZ_PATTERNS,
    MAX_AUTHZ_POLICY_LEN, MAX_AUTHZ_RULES, RpcAuthzPolicy,
};
use policy::{Method, MethodPattern, identity_allowed, identity_patterns, method_patterns};
pub use reload::AuthzReloadHandle;
use reload::Reloader;

/// The message of every denial this module sends.
pub const DENIED_MESSAGE: &str = "unauthorized RPC";

/// The status of every denial this module sends: `PERMISSION_DENIED`,
/// `unauthorized RPC`.
pub fn denied() -> Status {
    Status::permission_denied(DENIED_MESSAGE)
}

/// Building an authorization component failed.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthzError {
    /// The authorizer's decisions may depend on the method, which a tonic
    /// interceptor cannot see.
    #[error(
        "{what} may decide by method, but a tonic interceptor cannot see the method: \
         use AltsAuthzLayer, or a service-wide authorizer (Authorizer::service_wide, \
         require_identity, a policy without method-scoped rules)"
    )]
    MethodScoped {
        /// Which authorizer.
        what: String,
    },
    /// A policy or pattern is invalid.
    #[error(transparent)]
    Policy(#[from] AuthzPolicyError),
}

type RuleFn = dyn Fn(&AltsPeer, &str) -> Result<(), String> + Send + Sync;
type PeerFn = dyn Fn(&AltsPeer) -> Result<(), String> + Send + Sync;

#[derive(Clone)]
enum Kind {
    /// A closure that sees the method.
    Method(Arc<RuleFn>),
    /// A closure that does not.
    ServiceWide(Arc<PeerFn>),
    /// Only these identities.
    Identities(Arc<[Pattern]>),
    /// A fixed policy.
    Policy(Arc<RpcAuthzPolicy>),
    /// A policy re-read from a file.
    Reloading(Arc<ArcSwap<RpcAuthzPolicy>>),
}

/// A synchronous authorization decision procedure: a closure, a list of
/// identities or an [`RpcAuthzPolicy`].
#[derive(Clone)]
pub struct Authorizer(Kind);

impl Authorizer {
    /// From a closure `(peer, "/pkg.Service/Method") -> Ok or reason`. The
    /// reason is logged, never sent to the caller. Treated as method-scoped:
    /// an [`AuthzInterceptor`] refuses it (use [`Self::service_wide`]).
    pub fn from_fn(f: impl Fn(&AltsPeer, &str) -> Result<(), String> + Send + Sync + 'static) -> Self {
        Self(Kind::Method(Arc::new(f)))
    }

    /// From a closure that decides by the peer alone, whatever the method;
    /// usable in an [`AuthzInterceptor`].
    pub fn service_wide(f: impl Fn(&AltsPeer) -> Result<(), String> + Send + Sync + 'static) -> Self {
        Self(Kind::ServiceWide(Arc::new(f)))
    }

    /// Allows only peers whose identity matches one of `identities`
    /// (patterns: exact, `*`, `prefix*`, `*suffix`), whatever the method.
    pub fn require_identity<I, S>(identities: I) -> Result<Self, AuthzPolicyError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Ok(Self(Kind::Identities(identity_patterns(identities)?.into())))
    }

    /// From an RPC authorization policy.
    pub fn from_policy(policy: RpcAuthzPolicy) -> Self {
        Self(Kind::Policy(Arc::new(policy)))
    }

    /// From a policy file (format by extension, see
    /// [`RpcAuthzPolicy::from_file`]) re-read every `every` (at least 10 ms):
    /// a changed, valid file replaces the policy atomically; an unreadable or
    /// invalid one is logged and the previous policy stays in force.
    /// Reloading stops when the handle is dropped; the authorizer then keeps
    /// the policy last loaded.
    ///
    /// Fails if the file cannot be loaded now. Must be called within a Tokio
    /// runtime (it spawns the poller; panics otherwise, like `tokio::spawn`).
    pub fn from_file_reloading(
        path: impl AsRef<Path>,
        every: Duration,
    ) -> Result<(Self, AuthzReloadHandle), AuthzPolicyError> {
        let path = path.as_ref();
        let format = AuthzPolicyFormat::from_path(path).ok_or_else(|| AuthzPolicyError {
            path: Some(path.to_owned()),
            line: None,
            kind: AuthzPolicyErrorKind::UnknownFormat,
        })?;
        Self::from_file_reloading_format(path, format, every)
    }

    /// Like [`Self::from_file_reloading`], in `format` whatever the extension.
    pub fn from_file_reloading_format(
        path: impl AsRef<Path>,
        format: AuthzPolicyFormat,
        every: Duration,
    ) -> Result<(Self, AuthzReloadHandle), AuthzPolicyError> {
        let reloader = Arc::new(Reloader::load(path.as_ref(), format)?);
        let me = Self(Kind::Reloading(reloader.current.clone()));
        Ok((me, AuthzReloadHandle::spawn(reloader, every)))
    }

    /// Whether decisions may depend on the method: closures from
    /// [`Self::from_fn`] and [method-scoped](RpcAuthzPolicy::is_method_scoped)
    /// policies (for a reloading policy: the one in force now).
    pub fn is_method_scoped(&self) -> bool {
        match &self.0 {
            Kind::Method(_) => true,
            Kind::ServiceWide(_) | Kind::Identities(_) => false,
            Kind::Policy(p) => p.is_method_scoped(),
            Kind::Reloading(p) => p.load().is_method_scoped(),
        }
    }

    /// Whether decisions may depend on request headers (A43 `headers`).
    fn uses_headers(&self) -> bool {
        match &self.0 {
            Kind::Method(_) | Kind::ServiceWide(_) | Kind::Identities(_) => false,
            Kind::Policy(p) => p.uses_headers(),
            Kind::Reloading(p) => p.load().uses_headers(),
        }
    }

    fn describe(&self) -> &'static str {
        match &self.0 {
            Kind::Method(_) => "an Authorizer::from_fn closure",
            Kind::ServiceWide(_) => "an Authorizer::service_wide closure",
            Kind::Identities(_) => "require_identity",
            Kind::Policy(_) => "an RPC authorization policy",
            Kind::Reloading(_) => "a reloading RPC authorization policy",
        }
    }

    /// The decision, with the reason for the log.
    fn evaluate(&self, peer: &AltsPeer, method: Method<'_>, headers: &http::HeaderMap) -> Result<(), String> {
        match (&self.0, method) {
            (Kind::Method(_), Method::Unknown) => {
                Err("a method-scoped closure cannot decide without the method (interceptor)".into())
            }
            (Kind::Method(f), Method::Known(m)) => f(peer, m),
            (Kind::ServiceWide(f), _) => f(peer),
            (Kind::Identities(list), _) => {
                if identity_allowed(list, &peer.identity) {
                    Ok(())
                } else {
                    Err(format!("identity {:?} is not a required identity", peer.identity))
                }
            }
            (Kind::Policy(p), m) => p.evaluate(peer, m, headers),
            (Kind::Reloading(p), m) => p.load().evaluate(peer, m, headers),
        }
    }

    /// Decides one call; every denial is the generic [`denied`] status, its
    /// reason goes to the log.
    fn decide(
        &self,
        peer: Option<&AltsPeer>,
        method: Method<'_>,
        headers: &http::HeaderMap,
    ) -> Result<(), Status> {
        let Some(peer) = peer else {
            tracing::info!(
                method = method.as_str(),
                "RPC denied: no ALTS peer on this connection"
            );
            return Err(denied());
        };
        self.evaluate(peer, method, headers).map_err(|reason| {
            tracing::info!(peer = %peer.identity, method = method.as_str(), %reason, "RPC denied");
            denied()
        })
    }
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Authorizer({})", self.describe())
    }
}

/// Allows only peers whose identity matches one of `identities`; see
/// [`Authorizer::require_identity`].
pub fn require_identity<I, S>(identities: I) -> Result<Authorizer, AuthzPolicyError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    Authorizer::require_identity(identities)
}

/// What an [`AuthorizeRpc`] sees of a call.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct RpcInfo<'a> {
    /// The gRPC path, `/pkg.Service/Method`.
    pub method: &'a str,
    /// The authenticated peer (calls without one are denied before any
    /// authorizer runs).
    pub peer: &'a Arc<AltsPeer>,
    /// The request headers (gRPC metadata).
    pub headers: &'a http::HeaderMap,
    /// The request extensions.
    pub extensions: &'a http::Extensions,
}

impl<'a> RpcInfo<'a> {
    /// Describes a call (for calling an [`AuthorizeRpc`] directly, e.g. in tests).
    pub fn new(
        method: &'a str,
        peer: &'a Arc<AltsPeer>,
        headers: &'a http::HeaderMap,
        extensions: &'a http::Extensions,
    ) -> Self {
        Self {
            method,
            peer,
            headers,
            extensions,
        }
    }

    /// The client's address, when known.
    pub fn remote_addr(&self) -> Option<std::net::SocketAddr> {
        self.extensions
            .get::<AltsConnectInfo>()
            .and_then(|i| i.remote_addr)
    }
}

/// An asynchronous per-RPC authorizer, in the shape of tower-http's
/// `AsyncAuthorizeRequest`: it may call out (to a database, a quota service)
/// and chooses the status of a refusal (e.g. `UNAUTHENTICATED`,
/// `RESOURCE_EXHAUSTED`), which is sent to the caller as it is. An `OK`
/// status counts as `PERMISSION_DENIED`.
pub trait AuthorizeRpc: Clone + Send + Sync + 'static {
    /// The decision.
    type Future: Future<Output = Result<(), Status>> + Send + 'static;

    /// Starts deciding `rpc`; copy what the future needs out of it.
    fn authorize(&self, rpc: &RpcInfo<'_>) -> Self::Future;
}

impl AuthorizeRpc for Authorizer {
    type Future = std::future::Ready<Result<(), Status>>;

    fn authorize(&self, rpc: &RpcInfo<'_>) -> Self::Future {
        std::future::ready(self.decide(Some(rpc.peer), Method::Known(rpc.method), rpc.headers))
    }
}

/// An [`AuthorizeRpc`] from a closure returning a future; see [`authorize_fn`].
#[derive(Clone)]
pub struct AuthorizeFn<F>(F);

impl<F> std::fmt::Debug for AuthorizeFn<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthorizeFn")
    }
}

/// An [`AuthorizeRpc`] from `f(&RpcInfo) -> impl Future<Output = Result<(), Status>>`.
pub fn authorize_fn<F, Fut>(f: F) -> AuthorizeFn<F>
where
    F: Fn(&RpcInfo<'_>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Status>> + Send + 'static,
{
    AuthorizeFn(f)
}

impl<F, Fut> AuthorizeRpc for AuthorizeFn<F>
where
    F: Fn(&RpcInfo<'_>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Status>> + Send + 'static,
{
    type Future = Fut;

    fn authorize(&self, rpc: &RpcInfo<'_>) -> Fut {
        (self.0)(rpc)
    }
}

type DynAuthorize = dyn Fn(&RpcInfo<'_>) -> BoxFuture<'static, Result<(), Status>> + Send + Sync;

#[derive(Clone)]
enum LayerAuthz {
    PeerInfoOnly,
    Sync(Authorizer),
    Async(Arc<DynAuthorize>),
}

/// A tower layer that authorizes every RPC by the ALTS peer and exposes the
/// peer (and `remote_addr()`) to handlers; see the [module docs](self).
#[derive(Clone)]
pub struct AltsAuthzLayer {
    authz: LayerAuthz,
    unauthenticated: Arc<[MethodPattern]>,
}

impl AltsAuthzLayer {
    /// Authorizes with `authorizer`.
    pub fn new(authorizer: Authorizer) -> Self {
        Self {
            authz: LayerAuthz::Sync(authorizer),
            unauthenticated: Arc::new([]),
        }
    }

    /// Authorizes with an RPC authorization policy.
    pub fn from_policy(policy: RpcAuthzPolicy) -> Self {
        Self::new(Authorizer::from_policy(policy))
    }

    /// Authorizes with an asynchronous authorizer. Calls without an ALTS
    /// peer are denied before it runs.
    pub fn async_authorizer(authorizer: impl AuthorizeRpc) -> Self {
        let f = move |rpc: &RpcInfo<'_>| -> BoxFuture<'static, Result<(), Status>> {
            Box::pin(authorizer.authorize(rpc))
        };
        Self {
            authz: LayerAuthz::Async(Arc::new(f)),
            unauthenticated: Arc::new([]),
        }
    }

    /// Lets every call through, only exposing the peer and `remote_addr()`.
    pub fn peer_info_only() -> Self {
        Self {
            authz: LayerAuthz::PeerInfoOnly,
            unauthenticated: Arc::new([]),
        }
    }

    /// Lets calls to `methods` (method patterns, e.g.
    /// `/grpc.health.v1.Health/Check` or `/grpc.health.v1.Health/*`) through
    /// without an ALTS peer and without asking the authorizer. By default no
    /// method is exempt, health checks included.
    pub fn allow_unauthenticated<I, S>(mut self, methods: I) -> Result<Self, AuthzPolicyError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut list = self.unauthenticated.to_vec();
        list.extend(method_patterns(methods)?);
        self.unauthenticated = list.into();
        Ok(self)
    }
}

impl std::fmt::Debug for AltsAuthzLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("AltsAuthzLayer");
        match &self.authz {
            LayerAuthz::PeerInfoOnly => d.field("authz", &"peer info only"),
            LayerAuthz::Sync(a) => d.field("authz", a),
            LayerAuthz::Async(_) => d.field("authz", &"async authorizer"),
        };
        let exempt: Vec<String> = self.unauthenticated.iter().map(|m| m.to_string()).collect();
        d.field("unauthenticated", &exempt).finish()
    }
}

impl<S> tower_layer::Layer<S> for AltsAuthzLayer {
    type Service = AltsAuthz<S>;

    fn layer(&self, inner: S) -> AltsAuthz<S> {
        AltsAuthz {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service made by [`AltsAuthzLayer`].
#[derive(Clone, Debug)]
pub struct AltsAuthz<S> {
    inner: S,
    layer: AltsAuthzLayer,
}

fn denial<R: Default>(status: Status) -> http::Response<R> {
    let (parts, ()) = status.into_http::<()>().into_parts();
    http::Response::from_parts(parts, R::default())
}

impl<S, B, R> tower_service::Service<http::Request<B>> for AltsAuthz<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = Either<S::Future, BoxFuture<'static, Result<http::Response<R>, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        enrich(req.extensions_mut());
        // Clone-and-swap so the service we polled ready is the one called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let deny =
            |status| -> Self::Future { Either::Right(Box::pin(std::future::ready(Ok(denial(status))))) };
        let path = req.uri().path();
        match &self.layer.authz {
            LayerAuthz::PeerInfoOnly => Either::Left(inner.call(req)),
            _ if self.layer.unauthenticated.iter().any(|m| m.matches(path)) => {
                tracing::debug!(method = path, "exempt from RPC authorization");
                Either::Left(inner.call(req))
            }
            LayerAuthz::Sync(a) => {
                let peer = req.alts_peer();
                match a.decide(peer.as_deref(), Method::Known(path), req.headers()) {
                    Ok(()) => Either::Left(inner.call(req)),
                    Err(status) => deny(status),
                }
            }
            LayerAuthz::Async(f) => {
                let Some(peer) = req.alts_peer() else {
                    tracing::info!(method = path, "RPC denied: no ALTS peer on this connection");
                    return deny(denied());
                };
                let decision = f(&RpcInfo::new(path, &peer, req.headers(), req.extensions()));
                Either::Right(Box::pin(async move {
                    match decision.await {
                        Ok(()) => inner.call(req).await,
                        Err(status) => {
                            tracing::info!(
                                peer = %peer.identity,
                                method = req.uri().path(),
                                code = ?status.code(),
                                "RPC denied by the async authorizer"
                            );
                            let status = if status.code() == tonic::Code::Ok {
                                denied()
                            } else {
                                status
                            };
                            Ok(denial(status))
                        }
                    }
                }))
            }
        }
    }
}

/// A tonic interceptor authorizing every call with a service-wide
/// [`Authorizer`] (interceptors do not see the method). Denials are the
/// generic [`denied`] status.
#[derive(Clone, Debug)]
pub struct AuthzInterceptor {
    authorizer: Authorizer,
    /// Set once a method-scoped decision was refused (logged once).
    refused_scoped: Arc<AtomicBool>,
}

impl AuthzInterceptor {
    /// Refuses a method-scoped `authorizer` (see [`Authorizer::is_method_scoped`]).
    pub fn new(authorizer: Authorizer) -> Result<Self, AuthzError> {
        if authorizer.is_method_scoped() {
            return Err(AuthzError::MethodScoped {
                what: authorizer.describe().to_owned(),
            });
        }
        Ok(Self::unchecked(authorizer))
    }

    fn unchecked(authorizer: Authorizer) -> Self {
        Self {
            authorizer,
            refused_scoped: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl tonic::service::Interceptor for AuthzInterceptor {
    fn call(&mut self, req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        let peer = req.alts_peer();
        if self.authorizer.is_method_scoped() {
            if !self.refused_scoped.swap(true, Ordering::Relaxed) {
                tracing::error!(
                    authorizer = self.authorizer.describe(),
                    "method-scoped authorizer in an interceptor: denying every call"
                );
            }
            tracing::info!(peer = ?peer.as_ref().map(|p| &p.identity), "RPC denied: method-scoped authorizer in an interceptor");
            return Err(denied());
        }
        // Copied only for policies that look at headers.
        let headers = if self.authorizer.uses_headers() {
            req.metadata().clone().into_headers()
        } else {
            http::HeaderMap::new()
        };
        self.authorizer
            .decide(peer.as_deref(), Method::Unknown, &headers)?;
        Ok(req)
    }
}

/// A tonic interceptor authorizing with `authorizer`.
///
/// Interceptors do not see the method: a method-scoped `authorizer` (see
/// [`Authorizer::is_method_scoped`]) makes this interceptor deny every call
/// (and log an error once now).
#[deprecated(note = "use `AuthzInterceptor::new`, which refuses a method-scoped authorizer up front")]
pub fn authz_interceptor(
    authorizer: Authorizer,
) -> impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, Status> + Clone {
    if authorizer.is_method_scoped() {
        let problem = AuthzError::MethodScoped {
            what: authorizer.describe().to_owned(),
        };
        tracing::error!(error = %problem, "authz_interceptor denies every call");
    }
    let mut interceptor = AuthzInterceptor::unchecked(authorizer);
    interceptor.refused_scoped.store(true, Ordering::Relaxed);
    move |req| tonic::service::Interceptor::call(&mut interceptor, req)
}
