//! RPC authorization policies without sockets: loading (formats, validation,
//! file and line in errors, limits), TOML and gRFC A43 JSON decisions, the
//! interceptor's refusal of method-scoped authorizers, generic denials, and
//! reloading.

mod common;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use alts_core::cert::Category;
use alts_core::handshake::{ClientHandshake, ServerHandshake};
use alts_core::testing::{Delivery, drive};
use tonic::Code;
use tonic::service::Interceptor;
use tonic_alts::AltsPeer;
use tonic_alts::authz::{
    AuthorizeRpc, Authorizer, AuthzError, AuthzInterceptor, AuthzPolicyErrorKind, AuthzPolicyFormat,
    AuthzRule, Decision, MAX_AUTHZ_POLICY_LEN, MAX_AUTHZ_RULES, RpcAuthzPolicy, RpcInfo,
};

/// A real peer (from an in-memory handshake), its identity and category
/// replaced.
fn peer(identity: &str, category: Category) -> AltsPeer {
    static BASE: OnceLock<AltsPeer> = OnceLock::new();
    let base = BASE.get_or_init(|| {
        let (c, s) = common::configs();
        let mut client = ClientHandshake::new(c, Default::default(), common::now()).expect("client");
        let mut server = ServerHandshake::new(s, common::now());
        let (_, outcome) = drive(&mut client, &mut server, Delivery::Whole).expect("handshake");
        AltsPeer::from_outcome(&outcome)
    });
    let mut p = base.clone();
    p.identity = identity.into();
    p.category = Some(category);
    p
}

fn workload(identity: &str) -> AltsPeer {
    peer(identity, Category::Workload)
}

fn allowed(p: &RpcAuthzPolicy, identity: &str, method: &str) -> bool {
    p.check(&workload(identity), method).is_ok()
}

/// Asks an authorizer as the layer does; returns the status of a denial.
fn ask(a: &Authorizer, identity: &str, method: &str) -> Result<(), tonic::Status> {
    let peer = Arc::new(workload(identity));
    let (headers, ext) = (http::HeaderMap::new(), http::Extensions::new());
    futures_util::FutureExt::now_or_never(a.authorize(&RpcInfo::new(method, &peer, &headers, &ext)))
        .expect("a synchronous authorizer is ready at once")
}

fn assert_generic(status: &tonic::Status) {
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(status.message(), "unauthorized RPC");
}

const ECHO: &str = "/alts.examples.echo.Echo/Unary";

// ---- loading errors ---------------------------------------------------------

#[test]
fn toml_invalid_pattern_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("authz.toml");
    std::fs::write(
        &path,
        "default = \"deny\"\n\n[[rule]]\nmethods = [\"*\"]\nallow = [\n  \"ok-prod\",\n  \"*-dev*\",\n]\n",
    )
    .unwrap();
    let err = RpcAuthzPolicy::from_file(&path).expect_err("`*-dev*` must be refused");
    assert_eq!(err.path.as_deref(), Some(path.as_path()));
    assert_eq!(err.line, Some(7), "{err}");
    assert_eq!(
        err.kind,
        AuthzPolicyErrorKind::BadPattern {
            pattern: "*-dev*".into()
        }
    );
    let msg = err.to_string();
    assert!(msg.starts_with(&format!("{}:7: ", path.display())), "{msg}");
    assert!(msg.contains("*-dev*"), "{msg}");

    // The same rule without the bad pattern loads and decides.
    std::fs::write(&path, "[[rule]]\nmethods = [\"*\"]\nallow = [\"ok-prod\"]\n").unwrap();
    let p = RpcAuthzPolicy::from_file(&path).expect("valid");
    assert!(allowed(&p, "ok-prod", ECHO) && !allowed(&p, "x-dev", ECHO));
}

#[test]
fn toml_method_without_slash_is_refused_with_line() {
    let text = "[[rule]]\nmethods = [\"/a.B/*\",\n  \"alts.examples.echo.Echo/Unary\"]\nallow = [\"*\"]\n";
    let err = RpcAuthzPolicy::from_toml_str(text).expect_err("method without `/`");
    assert_eq!(err.line, Some(3), "{err}");
    assert!(err.path.is_none());
    assert!(
        matches!(&err.kind, AuthzPolicyErrorKind::BadMethod { method, .. } if method == "alts.examples.echo.Echo/Unary"),
        "{err:?}"
    );
    for bad in ["/a.B", "/a.*", "/a.B/C/D", "*Unary"] {
        let text = format!("[[rule]]\nmethods = [\"{bad}\"]\nallow = [\"*\"]\n");
        let err = RpcAuthzPolicy::from_toml_str(&text).expect_err(bad);
        assert_eq!(err.line, Some(2), "{bad}: {err}");
    }
}

#[test]
fn toml_unknown_key_syntax_and_empty_methods() {
    let err = RpcAuthzPolicy::from_toml_str("[[rule]]\nmethods = [\"*\"]\nalow = [\"*\"]\n").unwrap_err();
    assert_eq!(
        err.kind,
        AuthzPolicyErrorKind::UnknownKey { key: "alow".into() },
        "{err}"
    );
    assert_eq!(err.line, Some(3), "{err}");

    let err = RpcAuthzPolicy::from_toml_str("default = \"deny\"\n[[rule]\n").unwrap_err();
    assert!(matches!(err.kind, AuthzPolicyErrorKind::Syntax { .. }), "{err:?}");
    assert_eq!(err.line, Some(2), "{err}");

    let err = RpcAuthzPolicy::from_toml_str("\n[[rule]]\nmethods = []\ndeny = [\"*-dev\"]\n").unwrap_err();
    assert_eq!(err.kind, AuthzPolicyErrorKind::Empty { field: "methods" });
    assert_eq!(err.line, Some(2), "{err}");

    let err =
        RpcAuthzPolicy::from_toml_str("[[rule]]\nmethods = [\"*\"]\ncategories = [\"robot\"]\n").unwrap_err();
    assert_eq!(err.line, Some(3), "{err}");
}

#[test]
fn json_errors_carry_lines() {
    let policy = |principal: &str, path: &str| {
        format!(
            "{{\n  \"name\": \"p\",\n  \"allow_rules\": [\n    {{\n      \"name\": \"r\",\n      \"source\": {{ \"principals\": [\"{principal}\"] }},\n      \"request\": {{ \"paths\": [\"{path}\"] }}\n    }}\n  ]\n}}\n"
        )
    };
    assert!(RpcAuthzPolicy::from_json_str(&policy("a-prod", "/a.B/*")).is_ok());

    let err = RpcAuthzPolicy::from_json_str(&policy("*-dev*", "/a.B/*")).unwrap_err();
    assert_eq!(
        err.kind,
        AuthzPolicyErrorKind::BadPattern {
            pattern: "*-dev*".into()
        }
    );
    assert_eq!(err.line, Some(6), "{err}");

    let err = RpcAuthzPolicy::from_json_str(&policy("a-prod", "a.B/C")).unwrap_err();
    assert!(
        matches!(err.kind, AuthzPolicyErrorKind::BadMethod { .. }),
        "{err:?}"
    );
    assert_eq!(err.line, Some(7), "{err}");

    let err =
        RpcAuthzPolicy::from_json_str("{\n \"name\": \"p\",\n \"allow_rules\": [],\n \"allow_ruls\": []\n}")
            .unwrap_err();
    assert_eq!(
        err.kind,
        AuthzPolicyErrorKind::UnknownKey {
            key: "allow_ruls".into()
        },
        "{err}"
    );
    assert_eq!(err.line, Some(4), "{err}");

    let err = RpcAuthzPolicy::from_json_str("{\n \"name\": \"p\",\n \"allow_rules\": [\n").unwrap_err();
    assert!(matches!(err.kind, AuthzPolicyErrorKind::Syntax { .. }), "{err:?}");

    let err = RpcAuthzPolicy::from_json_str("{\"name\": \"p\"}").unwrap_err();
    assert_eq!(
        err.kind,
        AuthzPolicyErrorKind::MissingKey {
            key: "allow_rules".into()
        },
        "{err}"
    );
    let err = RpcAuthzPolicy::from_json_str("{\"name\": \"p\", \"allow_rules\": []}").unwrap_err();
    assert_eq!(err.kind, AuthzPolicyErrorKind::Empty { field: "allow_rules" });
    let err =
        RpcAuthzPolicy::from_json_str("{\"name\": \"p\", \"allow_rules\": [{\"source\": {}}]}").unwrap_err();
    assert_eq!(err.kind, AuthzPolicyErrorKind::MissingKey { key: "name".into() });

    for key in [":path", "grpc-timeout", "host", "connection"] {
        let text = format!(
            "{{\"name\": \"p\", \"allow_rules\": [{{\"name\": \"r\", \"request\": {{\"headers\": [{{\"key\": \"{key}\", \"values\": [\"*\"]}}]}}}}]}}"
        );
        let err = RpcAuthzPolicy::from_json_str(&text).unwrap_err();
        assert!(
            matches!(err.kind, AuthzPolicyErrorKind::BadHeader { .. }),
            "{key}: {err:?}"
        );
    }
}

#[test]
fn limits() {
    let big = format!("# {}\n", "x".repeat(MAX_AUTHZ_POLICY_LEN));
    let err = RpcAuthzPolicy::from_toml_str(&big).unwrap_err();
    assert!(
        matches!(err.kind, AuthzPolicyErrorKind::TooLarge { .. }),
        "{err:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.json");
    std::fs::write(&path, &big).unwrap();
    let err = RpcAuthzPolicy::from_file(&path).unwrap_err();
    assert!(
        matches!(err.kind, AuthzPolicyErrorKind::TooLarge { .. }),
        "{err:?}"
    );

    let many = "[[rule]]\nmethods=['*']\n".repeat(MAX_AUTHZ_RULES + 1);
    let err = RpcAuthzPolicy::from_toml_str(&many).unwrap_err();
    assert!(
        matches!(err.kind, AuthzPolicyErrorKind::TooMany { what: "rules", .. }),
        "{err:?}"
    );
}

#[test]
fn file_format_by_extension_or_override() {
    let dir = tempfile::tempdir().unwrap();
    let toml = "[[rule]]\nmethods = [\"*\"]\nallow = [\"a-prod\"]\n";
    let json = r#"{"name": "p", "allow_rules": [{"name": "r", "source": {"principals": ["a-prod"]}}]}"#;
    let (t, j, other) = (
        dir.path().join("p.toml"),
        dir.path().join("p.json"),
        dir.path().join("p.conf"),
    );
    std::fs::write(&t, toml).unwrap();
    std::fs::write(&j, json).unwrap();
    std::fs::write(&other, json).unwrap();
    assert_eq!(
        RpcAuthzPolicy::from_file(&t).unwrap().format(),
        AuthzPolicyFormat::Toml
    );
    assert_eq!(
        RpcAuthzPolicy::from_file(&j).unwrap().format(),
        AuthzPolicyFormat::A43Json
    );
    let err = RpcAuthzPolicy::from_file(&other).unwrap_err();
    assert_eq!(err.kind, AuthzPolicyErrorKind::UnknownFormat);
    let p = RpcAuthzPolicy::from_file_format(&other, AuthzPolicyFormat::A43Json).unwrap();
    assert!(allowed(&p, "a-prod", ECHO) && !allowed(&p, "b-prod", ECHO));
    // The wrong format is an error, not a policy.
    assert!(RpcAuthzPolicy::from_file_format(&j, AuthzPolicyFormat::Toml).is_err());
    let err = RpcAuthzPolicy::from_file(dir.path().join("missing.toml")).unwrap_err();
    assert!(matches!(err.kind, AuthzPolicyErrorKind::Io { .. }), "{err:?}");
}

// ---- decisions --------------------------------------------------------------

#[test]
fn toml_rules_decide_first_match() {
    let p = RpcAuthzPolicy::from_toml_str(
        r#"
        [[rule]]
        methods = ["/admin.Admin/*"]
        allow = ["oncall-*"]
        categories = ["person"]

        [[rule]]
        methods = ["/alts.examples.echo.Echo/*", "*/Check"]
        deny = ["*-dev"]
        allow = ["*"]
        "#,
    )
    .unwrap();
    assert!(
        p.check(&peer("oncall-alice", Category::Person), "/admin.Admin/Drain")
            .is_ok()
    );
    // Category refused even though the identity matches.
    assert!(
        p.check(&peer("oncall-alice", Category::Workload), "/admin.Admin/Drain")
            .is_err()
    );
    assert!(
        p.check(&peer("bob", Category::Person), "/admin.Admin/Drain")
            .is_err()
    );
    assert!(allowed(&p, "frontend-prod", ECHO));
    assert!(!allowed(&p, "frontend-dev", ECHO));
    assert!(allowed(&p, "lb-prod", "/grpc.health.v1.Health/Check"));
    // Default deny for methods no rule covers.
    assert!(!allowed(&p, "frontend-prod", "/other.Svc/Call"));
    // Rules built in code are validated the same way.
    let rule = |m: &str| AuthzRule {
        methods: vec![m.into()],
        allow: vec!["*".into()],
        deny: vec![],
        categories: vec![],
    };
    assert!(RpcAuthzPolicy::from_rules(Decision::Deny, vec![rule("/a.B/*")]).is_ok());
    assert!(RpcAuthzPolicy::from_rules(Decision::Deny, vec![rule("a.B/*")]).is_err());
    let open = RpcAuthzPolicy::from_rules(Decision::Allow, vec![]).unwrap();
    assert!(allowed(&open, "anyone", ECHO));
}

const A43: &str = r#"{
  "name": "echo",
  "deny_rules": [
    { "name": "no-dev", "source": { "principals": ["*-dev"] } },
    { "name": "secret", "request": { "paths": ["*/Secret"] } }
  ],
  "allow_rules": [
    { "name": "prod-echo",
      "source": { "principals": ["*-prod"] },
      "request": { "paths": ["/alts.examples.echo.Echo/*"] } },
    { "name": "oncall", "source": { "principals": ["oncall-*", "root"] } }
  ]
}"#;

/// The same decisions as [`A43`], in TOML (first match wins).
const A43_AS_TOML: &str = r#"
default = "deny"
[[rule]]
methods = ["*/Secret"]
[[rule]]
methods = ["/alts.examples.echo.Echo/*"]
deny = ["*-dev"]
allow = ["*-prod", "oncall-*", "root"]
[[rule]]
methods = ["*"]
deny = ["*-dev"]
allow = ["oncall-*", "root"]
"#;

#[test]
fn a43_deny_precedence_allow_and_default_deny() {
    let p = RpcAuthzPolicy::from_json_str(A43).unwrap();
    assert_eq!(p.format(), AuthzPolicyFormat::A43Json);
    // Allowed by an allow rule.
    assert!(allowed(&p, "frontend-prod", ECHO));
    assert!(allowed(&p, "oncall-bob", "/other.Svc/Call"));
    // Deny rules win over allow rules: oncall may call anything but Secret.
    assert!(!allowed(&p, "oncall-bob", "/alts.examples.echo.Echo/Secret"));
    assert!(!allowed(&p, "root", "/x.Y/Secret"));
    // `*-dev` is denied even where `*-prod` patterns would not matter.
    assert!(!allowed(&p, "oncall-dev", ECHO));
    // No allow rule matches: denied.
    assert!(!allowed(&p, "frontend-prod", "/other.Svc/Call"));
    assert!(!allowed(&p, "stranger", ECHO));
    // The reason names the rule (for the log).
    let why = p.check(&workload("frontend-dev"), ECHO).unwrap_err();
    assert!(why.contains("no-dev"), "{why}");
}

#[test]
fn a43_and_equivalent_toml_decide_alike() {
    let a43 = RpcAuthzPolicy::from_json_str(A43).unwrap();
    let toml = RpcAuthzPolicy::from_toml_str(A43_AS_TOML).unwrap();
    let identities = [
        "frontend-prod",
        "frontend-dev",
        "oncall-bob",
        "oncall-dev",
        "root",
        "stranger",
        "prod",
    ];
    let methods = [
        ECHO,
        "/alts.examples.echo.Echo/ServerStream",
        "/alts.examples.echo.Echo/Secret",
        "/other.Svc/Secret",
        "/other.Svc/Call",
        "/grpc.health.v1.Health/Check",
    ];
    let mut allowed_somewhere = 0;
    for id in identities {
        for m in methods {
            let (a, t) = (allowed(&a43, id, m), allowed(&toml, id, m));
            assert_eq!(a, t, "{id} calling {m}: A43 {a}, TOML {t}");
            allowed_somewhere += usize::from(a);
        }
    }
    assert!(allowed_somewhere > 5, "the grid exercises both outcomes");
}

#[test]
fn a43_empty_rule_matches_all_and_headers_are_anded() {
    let open =
        RpcAuthzPolicy::from_json_str(r#"{"name": "open", "allow_rules": [{"name": "all"}]}"#).unwrap();
    assert!(allowed(&open, "anyone", ECHO));
    assert!(!open.is_method_scoped());

    let p = RpcAuthzPolicy::from_json_str(
        r#"{"name": "h", "allow_rules": [{"name": "tenant",
            "request": {"headers": [
                {"key": "X-Tenant", "values": ["acme", "acme-*"]},
                {"key": "x-env", "values": ["*"]}]}}]}"#,
    )
    .unwrap();
    let peer = workload("frontend-prod");
    let headers = |pairs: &[(&'static str, &'static str)]| {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, http::HeaderValue::from_static(v));
        }
        h
    };
    assert!(
        p.decide(
            &peer,
            ECHO,
            &headers(&[("x-tenant", "acme-eu"), ("x-env", "prod")])
        )
        .is_ok()
    );
    // Every header entry must match (AND) ...
    assert!(p.decide(&peer, ECHO, &headers(&[("x-tenant", "acme")])).is_err());
    // ... one of its values (OR) ...
    assert!(
        p.decide(&peer, ECHO, &headers(&[("x-tenant", "other"), ("x-env", "prod")]))
            .is_err()
    );
    // ... `*` needs a non-empty value, and repeated headers join with `,`.
    assert!(
        p.decide(&peer, ECHO, &headers(&[("x-tenant", "acme"), ("x-env", "")]))
            .is_err()
    );
    assert!(
        p.decide(
            &peer,
            ECHO,
            &headers(&[("x-tenant", "acme"), ("x-tenant", "evil"), ("x-env", "a")])
        )
        .is_err()
    );
    // `check` has no headers: the rule cannot match.
    assert!(p.check(&peer, ECHO).is_err());
}

#[test]
fn method_scoped_detection() {
    let scoped = |s: &str| RpcAuthzPolicy::from_toml_str(s).unwrap().is_method_scoped();
    assert!(!scoped(""));
    assert!(!scoped("[[rule]]\nmethods = [\"*\"]\nallow = [\"*\"]\n"));
    assert!(scoped(
        "[[rule]]\nmethods = [\"*\"]\nallow = [\"*\"]\n[[rule]]\nmethods = [\"/a.B/C\"]\n"
    ));
    assert!(scoped(
        "[[rule]]\nmethods = [\"*\", \"/a.B/*\"]\nallow = [\"*\"]\n"
    ));
    assert!(RpcAuthzPolicy::from_json_str(A43).unwrap().is_method_scoped());
    assert!(!Authorizer::require_identity(["a"]).unwrap().is_method_scoped());
    assert!(!Authorizer::service_wide(|_| Ok(())).is_method_scoped());
    assert!(Authorizer::from_fn(|_, _| Ok(())).is_method_scoped());
}

// ---- authorizers and the interceptor ------------------------------------------------

#[test]
fn denials_are_generic() {
    let p = RpcAuthzPolicy::from_toml_str(
        "[[rule]]\nmethods = [\"/alts.examples.echo.Echo/*\"]\ndeny = [\"*-dev\"]\nallow = [\"*\"]\n",
    )
    .unwrap();
    let a = Authorizer::from_policy(p);
    let status = ask(&a, "frontend-dev", ECHO).unwrap_err();
    assert_generic(&status);
    assert!(!status.message().contains("frontend") && !status.message().contains("Echo"));
    assert!(ask(&a, "frontend-prod", ECHO).is_ok());

    let closure = Authorizer::from_fn(|peer, method| Err(format!("{} may not call {method}", peer.identity)));
    let status = ask(&closure, "frontend-dev", ECHO).unwrap_err();
    assert_generic(&status);
    assert!(!status.message().contains("frontend-dev"));
}

#[test]
fn require_identity_patterns() {
    let a = Authorizer::require_identity(["greeter-prod", "oncall-*"]).unwrap();
    assert!(ask(&a, "greeter-prod", ECHO).is_ok());
    assert!(ask(&a, "oncall-bob", ECHO).is_ok());
    assert_generic(&ask(&a, "greeter-dev", ECHO).unwrap_err());
    assert_generic(&ask(&a, "greeter-prod2", ECHO).unwrap_err());
    assert!(Authorizer::require_identity(["*-dev*"]).is_err());
    assert!(Authorizer::require_identity(Vec::<String>::new()).is_err());
}

fn request_from(identity: Option<&str>) -> tonic::Request<()> {
    let mut r = tonic::Request::new(());
    if let Some(id) = identity {
        r.extensions_mut().insert(Arc::new(workload(id)));
    }
    r
}

#[test]
fn interceptor_refuses_method_scoped_authorizers() {
    let scoped =
        RpcAuthzPolicy::from_toml_str("[[rule]]\nmethods = [\"/a.B/*\"]\nallow = [\"*\"]\n").unwrap();
    let err = AuthzInterceptor::new(Authorizer::from_policy(scoped)).unwrap_err();
    assert!(matches!(err, AuthzError::MethodScoped { .. }));
    assert!(err.to_string().contains("cannot see the method"), "{err}");
    let a43 = RpcAuthzPolicy::from_json_str(A43).unwrap();
    assert!(AuthzInterceptor::new(Authorizer::from_policy(a43)).is_err());
    assert!(AuthzInterceptor::new(Authorizer::from_fn(|_, _| Ok(()))).is_err());

    // Service-wide ones work: the honest peer passes, the others do not.
    let wide =
        RpcAuthzPolicy::from_toml_str("[[rule]]\nmethods = [\"*\"]\ndeny = [\"*-dev\"]\nallow = [\"*\"]\n")
            .unwrap();
    let mut i = AuthzInterceptor::new(Authorizer::from_policy(wide)).unwrap();
    assert!(i.call(request_from(Some("frontend-prod"))).is_ok());
    assert_generic(&i.call(request_from(Some("frontend-dev"))).unwrap_err());
    assert_generic(&i.call(request_from(None)).unwrap_err());
    let mut i = AuthzInterceptor::new(Authorizer::require_identity(["frontend-prod"]).unwrap()).unwrap();
    assert!(i.call(request_from(Some("frontend-prod"))).is_ok());
    assert_generic(&i.call(request_from(Some("frontend-dev"))).unwrap_err());
}

#[test]
#[allow(deprecated)]
fn deprecated_interceptor_with_method_scoped_policy_denies_everything() {
    let scoped = tonic_alts::AuthzPolicy::from_toml(
        "default = \"allow\"\n[[rule]]\nmethods = [\"/a.B/Secret\"]\ndeny = [\"*\"]\n",
    )
    .unwrap();
    let mut i = tonic_alts::authz_interceptor(Authorizer::from_policy(scoped));
    // Without the method the deny rule could never match; the interceptor
    // fails closed instead of falling back to `default = "allow"`.
    for who in ["frontend-prod", "frontend-dev"] {
        assert_generic(&i(request_from(Some(who))).unwrap_err());
    }
    // A service-wide policy keeps working through the deprecated function.
    let wide = tonic_alts::AuthzPolicy::from_toml(
        "[[rule]]\nmethods = [\"*\"]\ndeny = [\"*-dev\"]\nallow = [\"*\"]\n",
    )
    .unwrap();
    let mut i = tonic_alts::authz_interceptor(Authorizer::from_policy(wide));
    assert!(i(request_from(Some("frontend-prod"))).is_ok());
    assert_generic(&i(request_from(Some("frontend-dev"))).unwrap_err());
}

// ---- reloading ----------------------------------------------------------------

#[tokio::test]
async fn reload_swaps_valid_policies_and_keeps_the_old_on_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("authz.toml");
    let allow = |who: &str| format!("[[rule]]\nmethods = [\"*\"]\nallow = [\"{who}\"]\n");
    std::fs::write(&path, allow("a-prod")).unwrap();
    let (a, handle) = Authorizer::from_file_reloading(&path, Duration::from_secs(3600)).unwrap();
    assert!(ask(&a, "a-prod", ECHO).is_ok() && ask(&a, "b-prod", ECHO).is_err());
    assert_eq!(handle.reload_now(), Ok(false), "unchanged");

    std::fs::write(&path, allow("b-prod")).unwrap();
    assert_eq!(handle.reload_now(), Ok(true));
    assert!(ask(&a, "b-prod", ECHO).is_ok() && ask(&a, "a-prod", ECHO).is_err());

    // Invalid: the error names the line, the previous policy stays.
    std::fs::write(&path, "[[rule]]\nmethods = [\"*\"]\nallow = [\"*-dev*\"]\n").unwrap();
    let err = handle.reload_now().unwrap_err();
    assert_eq!((err.line, err.path.as_deref()), (Some(3), Some(path.as_path())));
    assert!(ask(&a, "b-prod", ECHO).is_ok() && ask(&a, "x-dev", ECHO).is_err());
    // A missing file keeps it too.
    std::fs::remove_file(&path).unwrap();
    assert!(handle.reload_now().is_err());
    assert!(ask(&a, "b-prod", ECHO).is_ok());

    // A policy turning method-scoped makes the interceptor fail closed.
    std::fs::write(&path, "[[rule]]\nmethods = [\"*\"]\nallow = [\"*\"]\n").unwrap();
    assert_eq!(handle.reload_now(), Ok(true));
    let mut i = AuthzInterceptor::new(a.clone()).expect("service-wide now");
    assert!(i.call(request_from(Some("c-prod"))).is_ok());
    std::fs::write(&path, "[[rule]]\nmethods = [\"/a.B/*\"]\ndeny = [\"c-prod\"]\n[[rule]]\nmethods = [\"*\"]\nallow = [\"*\"]\n").unwrap();
    assert_eq!(handle.reload_now(), Ok(true));
    assert_generic(&i.call(request_from(Some("c-prod"))).unwrap_err());
    assert_generic(&i.call(request_from(Some("d-prod"))).unwrap_err());
}

#[tokio::test]
async fn reload_polls_and_stops_when_the_handle_drops() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("authz.json");
    let allow = |who: &str| {
        format!(r#"{{"name": "p", "allow_rules": [{{"name": "r", "source": {{"principals": ["{who}"]}}}}]}}"#)
    };
    std::fs::write(&path, allow("a-prod")).unwrap();
    let (a, handle) = Authorizer::from_file_reloading(&path, Duration::from_millis(20)).unwrap();
    assert_eq!(handle.current().format(), AuthzPolicyFormat::A43Json);
    std::fs::write(&path, allow("b-prod")).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while ask(&a, "b-prod", ECHO).is_err() {
        assert!(tokio::time::Instant::now() < deadline, "not reloaded");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(ask(&a, "a-prod", ECHO).is_err());
    drop(handle);
    std::fs::write(&path, allow("c-prod")).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        ask(&a, "b-prod", ECHO).is_ok(),
        "no reload after the handle is dropped"
    );
    assert!(ask(&a, "c-prod", ECHO).is_err());
}

#[test]
fn interceptor_matches_a43_headers_from_metadata() {
    let p = RpcAuthzPolicy::from_json_str(
        r#"{"name": "t", "allow_rules": [{"name": "acme",
            "source": {"principals": ["frontend-prod"]},
            "request": {"headers": [{"key": "x-tenant", "values": ["acme"]}]}}]}"#,
    )
    .unwrap();
    let mut i = AuthzInterceptor::new(Authorizer::from_policy(p)).expect("no paths: service-wide");
    let with_tenant = |who: &str, tenant: &'static str| {
        let mut r = request_from(Some(who));
        r.metadata_mut().insert("x-tenant", tenant.parse().unwrap());
        r
    };
    assert!(i.call(with_tenant("frontend-prod", "acme")).is_ok());
    assert_generic(&i.call(with_tenant("frontend-prod", "other")).unwrap_err());
    assert_generic(&i.call(with_tenant("frontend-dev", "acme")).unwrap_err());
    assert_generic(&i.call(request_from(Some("frontend-prod"))).unwrap_err());
}
