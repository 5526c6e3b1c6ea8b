//! The `alts` credentials command: create a CA, issue principal and handshake
//! certificates, inspect and verify them, check policies, and build and query
//! revocation lists.
//!
//! Exit status: 0 on success; 1 when a verification, policy or revocation
//! check says no; 2 on any other error (missing file, garbage input, wrong key
//! type, bad arguments).
//!
//! Defaults (documented in `--help` too):
//! - principal certificates are valid 90 days unless `--valid-for` is
//!   given; `--no-expiry` issues one without expiry (the revocation list is
//!   then the only way to end it; verifiers warn about such certificates);
//! - handshake certificates are valid 20 h for people, 48 h otherwise, and
//!   at most 7 days (the longest lifetime verifiers accept by default) unless
//!   `--allow-long-lifetime` is given;
//! - identities follow the identity grammar: 1 to 128 bytes of `a-z`, `0-9`
//!   and `. _ @ : -`, starting with a letter or digit;
//! - revocation IDs: principal certificates get a random ID in their
//!   category's range (`category byte ‖ random 56 bits`); handshake
//!   certificates of people inherit the principal's ID, others get a random ID
//!   in their category's range. `--revocation-id` overrides both (use it when
//!   the CRL service handed the issuer a range).
#![forbid(unsafe_code)]

/// `println!` that ends the process quietly (exit 0) when stdout is closed
/// early (`alts inspect … | head -1`) instead of panicking, and with exit
/// code 2 on any other output error.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            eprintln!("alts: error: writing output: {e}");
            std::process::exit(2);
        }
    }};
}

use std::error::Error;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alts_cli::files::{self, FileError};
use alts_core::UnixTime;
use alts_core::cert::{
    Category, HandshakeCertInfo, HandshakeParams, PrincipalCertInfo, PrincipalParams, RootKey, SigningKey,
    ValidityWindow, issue_handshake, issue_principal, random_revocation_id, split_revocation_id,
};
use alts_core::crl::{MAX_CRL_LEN, RevocationListBuilder, RevocationListInfo};
use alts_core::crypto::{RingRandom, StaticKeyPair};
use alts_core::policy::IssuancePolicy;
use alts_core::verify::Verifier;
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

#[derive(Parser)]
#[command(
    name = "alts",
    version,
    about = "Create, issue, inspect and verify ALTS credentials and revocation lists."
)]
#[command(
    after_help = "Exit status: 0 success; 1 a check failed (verification, policy, revoked); 2 any other error."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Manage the signing-service CA (the root of trust).
    Ca {
        #[command(subcommand)]
        cmd: CaCmd,
    },
    /// Issue principal and handshake certificates.
    Issue {
        #[command(subcommand)]
        cmd: IssueCmd,
    },
    /// Show any ALTS file (root.pub, principal.cert, handshake.cert, a CRL, a key's public half).
    /// Signatures are not checked: use `alts verify`.
    Inspect {
        /// The file.
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Verify a handshake (or principal) certificate: chain, validity, CRL, policy.
    Verify {
        /// The root public key (root.pub).
        #[arg(long)]
        root: PathBuf,
        /// The certificate (handshake.cert or principal.cert).
        #[arg(long)]
        cert: PathBuf,
        /// Policy TOML; without it the policy is NOT checked (only chain, validity and CRL).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Signed revocation list; without it revocation is not checked.
        #[arg(long)]
        crl: Option<PathBuf>,
    },
    /// Policy tools.
    Policy {
        #[command(subcommand)]
        cmd: PolicyCmd,
    },
    /// Revocation-list tools.
    Crl {
        #[command(subcommand)]
        cmd: CrlCmd,
    },
}

#[derive(Subcommand)]
enum CaCmd {
    /// Create a CA: DIR/ca.key (Ed25519 PKCS#8, mode 0600) and DIR/root.pub.
    Init {
        /// Output directory (created if missing). An existing ca.key is never overwritten.
        #[arg(long)]
        out: PathBuf,
        /// Name of the signing service, recorded in root.pub.
        #[arg(long, default_value = "alts-ca")]
        name: String,
    },
}

#[derive(Subcommand)]
enum IssueCmd {
    /// Issue a principal certificate signed by the CA: DIR/principal.cert, DIR/principal.key (0600), DIR/root.pub.
    Principal {
        /// CA directory (ca.key and root.pub).
        #[arg(long)]
        ca: PathBuf,
        /// Who requests the certificate (checked by the policy), e.g. corp-ca or scheduler.
        #[arg(long)]
        issuer: String,
        /// The identity, e.g. alice or frontend-prod: 1 to 128 bytes of a-z, 0-9 and . _ @ : -, starting with a letter or digit.
        #[arg(long)]
        identity: String,
        /// person, machine or workload.
        #[arg(long, value_parser = parse_category)]
        category: Category,
        /// Validity from now, e.g. 30days (default: 90 days).
        #[arg(long, conflicts_with = "no_expiry")]
        valid_for: Option<humantime::Duration>,
        /// Issue a principal certificate that never expires (only revocation ends it).
        #[arg(long)]
        no_expiry: bool,
        /// Revocation ID, decimal or 0x-hex (default: random in the category's range).
        #[arg(long, value_parser = parse_u64)]
        revocation_id: Option<u64>,
        /// Output directory (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
    /// Issue a handshake certificate with a fresh X25519 key: DIR/handshake.cert, DIR/handshake.key (0600), DIR/root.pub.
    Handshake {
        /// Principal directory (principal.cert, principal.key, root.pub).
        #[arg(long)]
        principal: PathBuf,
        /// Validity from now (default: 20h for people, 48h otherwise; at most 7days).
        #[arg(long)]
        valid_for: Option<humantime::Duration>,
        /// Allow --valid-for above 7 days. Verifiers refuse such certificates unless they opted out.
        #[arg(long)]
        allow_long_lifetime: bool,
        /// Revocation ID, decimal or 0x-hex (default: the principal's for people, random in the category's range otherwise).
        #[arg(long, value_parser = parse_u64)]
        revocation_id: Option<u64>,
        /// Output directory (created if missing; may be the principal directory).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Would the policy allow this certificate's (issuer, category, identity)? Signatures are not checked.
    Check {
        /// Policy TOML.
        #[arg(long)]
        policy: PathBuf,
        /// handshake.cert or principal.cert.
        #[arg(long)]
        cert: PathBuf,
    },
}

#[derive(Subcommand)]
enum CrlCmd {
    /// Build and sign a revocation list.
    Build {
        /// The CA's private key (ca.key).
        #[arg(long)]
        root_key: PathBuf,
        /// IDs file: one per line, decimal or 0x-hex, `A-B` inclusive ranges, `#` comments.
        #[arg(long)]
        ids: PathBuf,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Is an ID revoked? Exit 0 "not revoked", 1 "revoked", 2 on error.
    Check {
        /// The revocation list.
        #[arg(long)]
        crl: PathBuf,
        /// The root public key that must have signed it (root.pub).
        #[arg(long)]
        root: PathBuf,
        /// The revocation ID, decimal or 0x-hex.
        #[arg(long, value_parser = parse_u64)]
        id: u64,
    },
}

fn parse_category(s: &str) -> std::result::Result<Category, String> {
    s.parse::<Category>().map_err(|e| e.to_string())
}

fn parse_u64(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16),
        None => t.replace('_', "").parse::<u64>(),
    };
    parsed.map_err(|_| format!("{s:?} is not a 64-bit number (decimal or 0x-hex)"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("alts: error: {e}");
            ExitCode::from(2)
        }
    }
}

fn now() -> UnixTime {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    UnixTime(secs)
}

/// RFC 3339 for in-range times, `@secs` otherwise (never panics).
fn fmt_time(t: UnixTime) -> String {
    const MAX: i64 = 253_402_300_799;
    if (0..=MAX).contains(&t.secs()) {
        let st = UNIX_EPOCH + Duration::from_secs(t.secs().unsigned_abs());
        humantime::format_rfc3339_seconds(st).to_string()
    } else {
        format!("@{}", t.secs())
    }
}

fn fmt_opt_time(t: Option<UnixTime>, none: &str) -> String {
    t.map_or_else(|| none.to_owned(), fmt_time)
}

fn fmt_id(id: u64) -> String {
    format!("{id:#018x}")
}

fn validity_from(now: UnixTime, d: Duration) -> Result<Option<(UnixTime, UnixTime)>> {
    let secs = i64::try_from(d.as_secs()).map_err(|_| "--valid-for is too long")?;
    if secs <= 0 {
        return Err("--valid-for must be at least one second".into());
    }
    Ok(Some((now, now.plus(secs))))
}

fn rng() -> RingRandom {
    RingRandom::default()
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.cmd {
        Cmd::Ca {
            cmd: CaCmd::Init { out, name },
        } => ca_init(&out, &name),
        Cmd::Issue { cmd } => match cmd {
            IssueCmd::Principal {
                ca,
                issuer,
                identity,
                category,
                valid_for,
                no_expiry,
                revocation_id,
                out,
            } => issue_principal_cmd(
                &ca,
                issuer,
                identity,
                category,
                match (valid_for, no_expiry) {
                    (_, true) => None,
                    (Some(d), false) => Some(d.into()),
                    (None, false) => Some(DEFAULT_PRINCIPAL_VALIDITY),
                },
                revocation_id,
                &out,
            ),
            IssueCmd::Handshake {
                principal,
                valid_for,
                allow_long_lifetime,
                revocation_id,
                out,
            } => issue_handshake_cmd(
                &principal,
                valid_for.map(Into::into),
                allow_long_lifetime,
                revocation_id,
                &out,
            ),
        },
        Cmd::Inspect { file, json } => inspect(&file, json),
        Cmd::Verify {
            root,
            cert,
            policy,
            crl,
        } => verify(&root, &cert, policy.as_deref(), crl.as_deref()),
        Cmd::Policy {
            cmd: PolicyCmd::Check { policy, cert },
        } => policy_check(&policy, &cert),
        Cmd::Crl { cmd } => match cmd {
            CrlCmd::Build { root_key, ids, out } => crl_build(&root_key, &ids, &out),
            CrlCmd::Check { crl, root, id } => crl_check(&crl, &root, id),
        },
    }
}

fn ca_init(out: &Path, name: &str) -> Result<ExitCode> {
    if name.is_empty() || name.len() > alts_core::cert::MAX_NAME_LEN {
        return Err(format!("--name must be 1 to {} bytes", alts_core::cert::MAX_NAME_LEN).into());
    }
    files::create_dir(out)?;
    let key = SigningKey::generate(&rng())?;
    files::write_private_new(&out.join(files::CA_KEY), key.pkcs8_bytes())?;
    let root = RootKey::from_signing_key(name, &key);
    files::write_public(&out.join(files::ROOT_PUB), &root.to_bytes())?;
    out!("created CA {name:?} in {}", out.display());
    out!("  {} (secret, mode 0600)", out.join(files::CA_KEY).display());
    out!(
        "  {} (distribute to every machine)",
        out.join(files::ROOT_PUB).display()
    );
    out!("  root key id: {}", hex::encode(root.key_id()));
    Ok(ExitCode::SUCCESS)
}

fn warn_category_byte(id: u64, category: Category) {
    let (byte, _) = split_revocation_id(id);
    if byte != category.revocation_byte() {
        eprintln!(
            "alts: warning: revocation id {} has category byte {byte:#04x}, {category} is conventionally {:#04x}",
            fmt_id(id),
            category.revocation_byte()
        );
    }
}

/// Default lifetime of a principal certificate issued by `alts issue principal`.
const DEFAULT_PRINCIPAL_VALIDITY: Duration = Duration::from_secs(90 * 86_400);

fn issue_principal_cmd(
    ca: &Path,
    issuer: String,
    identity: String,
    category: Category,
    valid_for: Option<Duration>,
    revocation_id: Option<u64>,
    out: &Path,
) -> Result<ExitCode> {
    alts_core::cert::check_identity(&identity).map_err(|e| format!("--identity: {e}"))?;
    let (ca_key, root) = files::load_ca(ca)?;
    let now = now();
    let validity = match valid_for {
        Some(d) => validity_from(now, d)?,
        None => None,
    };
    let rng = rng();
    let revocation_id = match revocation_id {
        Some(id) => {
            warn_category_byte(id, category);
            id
        }
        None => random_revocation_id(category, &rng)?,
    };
    let key = SigningKey::generate(&rng)?;
    let params = PrincipalParams {
        identity,
        category,
        issuer,
        validity,
        revocation_id,
    };
    let cert = issue_principal(&ca_key, &params, key.public_key())?;
    files::create_dir(out)?;
    files::write_public(&out.join(files::PRINCIPAL_CERT), &cert)?;
    files::write_private(&out.join(files::PRINCIPAL_KEY), key.pkcs8_bytes())?;
    files::write_public(&out.join(files::ROOT_PUB), &root.to_bytes())?;
    out!(
        "issued {} principal certificate for {:?} (issuer {:?}) in {}",
        params.category,
        params.identity,
        params.issuer,
        out.display()
    );
    out!("  revocation id: {}", fmt_id(revocation_id));
    out!("  expires: {}", fmt_opt_time(validity.map(|v| v.1), "never"));
    Ok(ExitCode::SUCCESS)
}

fn issue_handshake_cmd(
    dir: &Path,
    valid_for: Option<Duration>,
    allow_long_lifetime: bool,
    revocation_id: Option<u64>,
    out: &Path,
) -> Result<ExitCode> {
    let max = alts_core::verify::DEFAULT_MAX_HANDSHAKE_CERT_LIFETIME_SECS;
    if let Some(d) = valid_for
        && d.as_secs() > max.unsigned_abs()
        && !allow_long_lifetime
    {
        return Err(format!(
            "--valid-for: handshake certificates live at most 7 days ({max} s); verifiers refuse longer \
             ones by default (pass --allow-long-lifetime to issue one anyway)"
        )
        .into());
    }
    let (pkey, pcert, root) = files::load_principal(dir)?;
    let now = now();
    // The principal must verify against its root (no policy here).
    let check = Verifier::new(root.clone(), Arc::new(IssuancePolicy::allow_all_for_tests()));
    let principal = check
        .verify_principal_cert(&pcert, now)
        .map_err(|e| {
            format!(
                "{}: does not verify against root.pub: {e}",
                dir.join(files::PRINCIPAL_CERT).display()
            )
        })?
        .info;
    let default = if principal.category == Category::Person {
        Duration::from_secs(20 * 3600)
    } else {
        Duration::from_secs(48 * 3600)
    };
    let validity = validity_from(now, valid_for.unwrap_or(default))?;
    let rng = rng();
    let revocation_id = match revocation_id {
        Some(id) => {
            warn_category_byte(id, principal.category);
            id
        }
        None if principal.category == Category::Person => principal.revocation_id,
        None => random_revocation_id(principal.category, &rng)?,
    };
    let static_key = StaticKeyPair::generate(&rng)?;
    let params = HandshakeParams::with_defaults(*static_key.public_key(), validity, revocation_id);
    let cert = issue_handshake(&pkey, &pcert, &params)?;
    files::create_dir(out)?;
    files::write_public(&out.join(files::HANDSHAKE_CERT), &cert)?;
    files::write_private(
        &out.join(files::HANDSHAKE_KEY),
        static_key.secret_bytes().as_ref(),
    )?;
    files::write_public(&out.join(files::ROOT_PUB), &root.to_bytes())?;
    out!(
        "issued handshake certificate for {:?} ({}, issuer {:?}) in {}",
        principal.identity,
        principal.category,
        principal.issuer,
        out.display()
    );
    out!("  revocation id: {}", fmt_id(revocation_id));
    out!("  expires: {}", fmt_opt_time(validity.map(|v| v.1), "never"));
    if let (Some(p), Some((_, h))) = (principal.validity.not_after, validity)
        && p < h
    {
        out!(
            "  note: the principal certificate expires earlier, at {}",
            fmt_time(p)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn validity_json(v: &ValidityWindow) -> Value {
    json!({
        "not_before": v.not_before.map(|t| t.secs()),
        "not_after": v.not_after.map(|t| t.secs()),
        "not_before_rfc3339": v.not_before.map(fmt_time),
        "not_after_rfc3339": v.not_after.map(fmt_time),
    })
}

fn principal_json(p: &PrincipalCertInfo) -> Value {
    json!({
        "kind": "principal_cert",
        "identity": p.identity,
        "category": p.category,
        "issuer": p.issuer,
        "validity": validity_json(&p.validity),
        "revocation_id": fmt_id(p.revocation_id),
        "public_key": hex::encode(p.public_key),
        "root_key_id": hex::encode(p.root_key_id),
    })
}

fn handshake_json(h: &HandshakeCertInfo) -> Value {
    json!({
        "kind": "handshake_cert",
        "static_public_key": hex::encode(h.static_public_key),
        "handshake_ciphers": h.handshake_ciphers,
        "record_protocols": h.record_protocols,
        "validity": validity_json(&h.validity),
        "revocation_id": fmt_id(h.revocation_id),
        "principal": principal_json(&h.principal),
    })
}

fn print_validity(indent: &str, v: &ValidityWindow) {
    out!("{indent}not before: {}", fmt_opt_time(v.not_before, "-"));
    out!("{indent}not after: {}", fmt_opt_time(v.not_after, "never"));
}

fn print_principal(indent: &str, p: &PrincipalCertInfo) {
    out!("{indent}identity: {}", p.identity);
    out!("{indent}category: {}", p.category);
    out!("{indent}issuer: {}", p.issuer);
    print_validity(indent, &p.validity);
    out!("{indent}revocation id: {}", fmt_id(p.revocation_id));
    out!("{indent}public key (ed25519): {}", hex::encode(p.public_key));
    out!("{indent}root key id: {}", hex::encode(p.root_key_id));
}

/// What a file is, detected from its contents.
enum Kind {
    Handshake(HandshakeCertInfo),
    Principal(PrincipalCertInfo),
    Crl(RevocationListInfo),
    Root(RootKey),
    Ed25519Key([u8; 32]),
    X25519Key([u8; 32]),
}

fn detect(bytes: &[u8]) -> Option<Kind> {
    if let Ok(h) = HandshakeCertInfo::parse(bytes) {
        return Some(Kind::Handshake(h));
    }
    if let Ok(p) = PrincipalCertInfo::parse(bytes) {
        return Some(Kind::Principal(p));
    }
    if let Ok(c) = RevocationListInfo::parse(bytes) {
        return Some(Kind::Crl(c));
    }
    if let Ok(r) = RootKey::from_bytes(bytes) {
        return Some(Kind::Root(r));
    }
    if let Ok(k) = SigningKey::from_pkcs8(bytes) {
        return Some(Kind::Ed25519Key(k.public_key()));
    }
    if let Ok(arr) = <[u8; 32]>::try_from(bytes) {
        let arr = zeroize::Zeroizing::new(arr);
        return Some(Kind::X25519Key(
            *StaticKeyPair::from_secret_bytes(*arr).public_key(),
        ));
    }
    None
}

fn inspect(path: &Path, as_json: bool) -> Result<ExitCode> {
    let bytes = zeroize::Zeroizing::new(files::read_capped(path, MAX_CRL_LEN)?);
    let kind = detect(&bytes).ok_or_else(|| FileError::Invalid {
        path: path.to_owned(),
        what:
            "not an ALTS file (expected root.pub, principal.cert, handshake.cert, a revocation list or a key)"
                .into(),
    })?;
    if as_json {
        let v = match &kind {
            Kind::Handshake(h) => handshake_json(h),
            Kind::Principal(p) => principal_json(p),
            Kind::Crl(c) => json!({
                "kind": "revocation_list",
                "issued_at": c.issued_at.secs(),
                "issued_at_rfc3339": fmt_time(c.issued_at),
                "count": c.count,
                "compressed_size": c.ids_len,
                "root_key_id": hex::encode(c.root_key_id),
            }),
            Kind::Root(r) => json!({
                "kind": "root_key",
                "name": r.name(),
                "algorithm": "ed25519",
                "public_key": hex::encode(r.public_key()),
                "key_id": hex::encode(r.key_id()),
            }),
            Kind::Ed25519Key(pk) => json!({"kind": "ed25519_private_key", "public_key": hex::encode(pk)}),
            Kind::X25519Key(pk) => json!({"kind": "x25519_private_key", "public_key": hex::encode(pk)}),
        };
        out!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    match &kind {
        Kind::Handshake(h) => {
            out!("handshake certificate (signatures not checked; use `alts verify`)");
            out!(
                "  static public key (x25519): {}",
                hex::encode(h.static_public_key)
            );
            out!("  handshake ciphers: {}", h.handshake_ciphers.join(", "));
            out!("  record protocols: {}", h.record_protocols.join(", "));
            print_validity("  ", &h.validity);
            out!("  revocation id: {}", fmt_id(h.revocation_id));
            out!("  principal certificate:");
            print_principal("    ", &h.principal);
        }
        Kind::Principal(p) => {
            out!("principal certificate (signature not checked; use `alts verify`)");
            print_principal("  ", p);
        }
        Kind::Crl(c) => {
            out!("revocation list (signature not checked; use `alts crl check`)");
            out!("  issued at: {}", fmt_time(c.issued_at));
            out!("  revoked ids: {}", c.count);
            out!("  compressed size: {} bytes", c.ids_len);
            out!("  root key id: {}", hex::encode(c.root_key_id));
        }
        Kind::Root(r) => {
            out!("root key");
            out!("  name: {}", r.name());
            out!("  algorithm: ed25519");
            out!("  public key: {}", hex::encode(r.public_key()));
            out!("  key id: {}", hex::encode(r.key_id()));
        }
        Kind::Ed25519Key(pk) => {
            out!("Ed25519 private key (PKCS#8; secret not shown)");
            out!("  public key: {}", hex::encode(pk));
        }
        Kind::X25519Key(pk) => {
            out!("32 raw bytes: an X25519 private key (handshake.key; secret not shown)");
            out!("  public key: {}", hex::encode(pk));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(
    root_path: &Path,
    cert_path: &Path,
    policy_path: Option<&Path>,
    crl_path: Option<&Path>,
) -> Result<ExitCode> {
    let root = files::load_root(root_path)?;
    let policy = match policy_path {
        Some(p) => Some(Arc::new(files::load_policy(p)?)),
        None => None,
    };
    let crl = match crl_path {
        Some(p) => Some(Arc::new(files::load_crl(p, &root)?)),
        None => None,
    };
    let cert = files::load_cert_bytes(cert_path)?;
    let is_handshake = HandshakeCertInfo::parse(&cert).is_ok();
    if !is_handshake && PrincipalCertInfo::parse(&cert).is_err() {
        // Report the handshake-certificate parse error: that is the usual input.
        let e = HandshakeCertInfo::parse(&cert)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        return Err(FileError::Invalid {
            path: cert_path.to_owned(),
            what: format!("not an ALTS certificate ({e})"),
        }
        .into());
    }
    let effective = policy
        .clone()
        .unwrap_or_else(|| Arc::new(IssuancePolicy::allow_all_for_tests()));
    let mut verifier = Verifier::new(root, effective.clone());
    if let Some(c) = &crl {
        verifier = verifier.with_crl(c.clone());
    }
    let now = now();
    let result = if is_handshake {
        verifier.verify_handshake_cert(&cert, now).map(|p| {
            (
                p.identity,
                p.category,
                p.issuer,
                p.principal_revocation_id,
                Some(p.handshake_revocation_id),
                p.not_after,
            )
        })
    } else {
        verifier.verify_principal_cert(&cert, now).map(|p| {
            (
                p.info.identity,
                p.info.category,
                p.info.issuer,
                p.info.revocation_id,
                None,
                p.info.validity.not_after,
            )
        })
    };
    match result {
        Ok((identity, category, issuer, prid, hrid, not_after)) => {
            out!("OK: {identity}");
            out!("  identity: {identity}");
            out!("  category: {category}");
            out!("  issuer: {issuer}");
            out!(
                "  certificate: {}",
                if is_handshake { "handshake" } else { "principal" }
            );
            out!("  principal revocation id: {}", fmt_id(prid));
            if let Some(h) = hrid {
                out!("  handshake revocation id: {}", fmt_id(h));
            }
            out!("  expires: {}", fmt_opt_time(not_after, "never"));
            out!("  chain: ok (signatures, validity)");
            match &crl {
                Some(c) => out!(
                    "  crl: not revoked (list of {} ids issued {})",
                    c.len(),
                    fmt_time(c.issued_at())
                ),
                None => out!("  crl: not checked"),
            }
            match policy {
                Some(p) => {
                    let rule = p
                        .check(&issuer, category, &identity)
                        .map(|a| a.rule_index())
                        .unwrap_or(0);
                    out!("  policy: allowed (rule #{})", rule + 1);
                }
                None => out!("  policy: not checked"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("alts: verification FAILED: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

fn policy_check(policy_path: &Path, cert_path: &Path) -> Result<ExitCode> {
    let policy = files::load_policy(policy_path)?;
    let cert = files::load_cert_bytes(cert_path)?;
    let p = match HandshakeCertInfo::parse(&cert) {
        Ok(h) => h.principal,
        Err(he) => PrincipalCertInfo::parse(&cert).map_err(|_| FileError::Invalid {
            path: cert_path.to_owned(),
            what: format!("not an ALTS certificate ({he})"),
        })?,
    };
    out!("(signatures not checked; `alts verify --policy` checks everything)");
    match policy.check(&p.issuer, p.category, &p.identity) {
        Ok(a) => {
            out!(
                "allowed: issuer {:?} may issue {} certificates for {:?} (rule #{})",
                p.issuer,
                p.category,
                p.identity,
                a.rule_index() + 1
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(d) => {
            out!("denied: {d}");
            Ok(ExitCode::from(1))
        }
    }
}

/// Longest accepted line in an IDs file.
const MAX_ID_LINE: u64 = 4096;
/// Longest accepted `A-B` range (one full 32-bit block of IDs).
const MAX_RANGE_LEN: u64 = 1 << 32;
/// Most IDs accepted in total (counting ranges by their length).
const MAX_TOTAL_IDS: u64 = 1 << 36;

fn parse_ids_file(path: &Path) -> Result<RevocationListBuilder> {
    let file = std::fs::File::open(path).map_err(|source| FileError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut reader = BufReader::new(file);
    let mut builder = RevocationListBuilder::new();
    let mut total: u64 = 0;
    let mut line = Vec::new();
    let mut lineno = 0u64;
    let bad = |lineno: u64, what: String| -> Box<dyn Error> {
        format!("{}:{lineno}: {what}", path.display()).into()
    };
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_ID_LINE)
            .read_until(b'\n', &mut line)
            .map_err(|source| FileError::Io {
                path: path.to_owned(),
                source,
            })?;
        if n == 0 {
            break;
        }
        lineno += 1;
        if n as u64 == MAX_ID_LINE && line.last() != Some(&b'\n') {
            return Err(bad(lineno, format!("line longer than {MAX_ID_LINE} bytes")));
        }
        let text = std::str::from_utf8(&line).map_err(|_| bad(lineno, "not UTF-8 text".into()))?;
        let text = text.split('#').next().unwrap_or("").trim();
        if text.is_empty() {
            continue;
        }
        let (a, b) = match text.split_once('-') {
            Some((a, b)) => (
                parse_u64(a).map_err(|e| bad(lineno, e))?,
                parse_u64(b).map_err(|e| bad(lineno, e))?,
            ),
            None => {
                let v = parse_u64(text).map_err(|e| bad(lineno, e))?;
                (v, v)
            }
        };
        if a > b {
            return Err(bad(
                lineno,
                format!("empty range {a:#x}-{b:#x} (start after end)"),
            ));
        }
        let len = (b - a).saturating_add(1);
        if len > MAX_RANGE_LEN {
            return Err(bad(
                lineno,
                format!("range of {len} ids is longer than the limit of {MAX_RANGE_LEN}"),
            ));
        }
        total = total.saturating_add(len);
        if total > MAX_TOTAL_IDS {
            return Err(bad(lineno, format!("more than {MAX_TOTAL_IDS} ids in total")));
        }
        builder.insert_range(a..=b);
    }
    Ok(builder)
}

fn crl_build(root_key: &Path, ids: &Path, out: &Path) -> Result<ExitCode> {
    let key = files::load_signing_key(root_key)?;
    let builder = parse_ids_file(ids)?;
    let bytes = builder.sign(&key, now())?;
    files::write_public(out, &bytes)?;
    out!(
        "wrote revocation list {}: {} revoked ids, {} bytes",
        out.display(),
        builder.len(),
        bytes.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn crl_check(crl_path: &Path, root_path: &Path, id: u64) -> Result<ExitCode> {
    let root = files::load_root(root_path)?;
    let crl = files::load_crl(crl_path, &root)?;
    if crl.is_revoked(id) {
        out!("revoked: {}", fmt_id(id));
        Ok(ExitCode::from(1))
    } else {
        out!("not revoked: {}", fmt_id(id));
        Ok(ExitCode::SUCCESS)
    }
}
