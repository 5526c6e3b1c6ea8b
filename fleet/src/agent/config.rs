//! The agent's configuration file (TOML).
//!
//! ```toml
//! # Where the agent keeps its private state: one principal key (0600) per
//! # workload, the revocation-ID range it holds, the newest revocation list.
//! state_dir = "/var/lib/alts-agent"
//! # The agent's own ALTS credentials (handshake.cert, handshake.key,
//! # root.pub), bootstrapped offline with `alts issue`.
//! credentials = "/etc/alts/agent"
//! # The fleet's issuance policy, copied into every workload directory.
//! issuance_policy = "/etc/alts/issuance-policy.toml"
//!
//! handshake_lifetime = "24h"   # lifetime of each handshake certificate
//! renew_at = 0.5               # renew at 50% of a certificate's lifetime...
//! jitter = 0.1                 # ... plus or minus 10% of the lifetime
//! principal_validity = "30d"   # requested principal lifetime (the signer may cap it)
//! crl_refresh = "60s"
//! key_ring_refresh = "60s"
//! retry_min = "1s"             # first retry after a failure (doubling)...
//! retry_max = "60s"            # ... up to this
//! revocation_id_batch = 256    # revocation IDs asked for at once
//!
//! [signer]
//! address = "http://alts-signer.internal:7443"
//! identity = "alts-signer"     # the signer must prove this ALTS identity
//! timeout = "10s"
//!
//! [[workload]]
//! identity = "greeter-prod"
//! category = "workload"
//! cell = "cell-a"
//! dir = "/run/alts/greeter"
//! owner = "greeter"            # user name or numeric uid (optional)
//! group = "greeter"            # group name or numeric gid (optional)
//! mode = "0640"                # mode of every file in the directory
//! ```
//!
//! Relative paths are relative to the configuration file's directory.
//! Unknown keys are refused.

use std::path::{Path, PathBuf};
use std::time::Duration;

use alts_core::cert::{Category, MAX_NAME_LEN};
use serde::Deserialize;

/// Largest configuration file read.
pub const MAX_CONFIG_LEN: usize = 1024 * 1024;
/// Most workloads one agent serves.
pub const MAX_WORKLOADS: usize = 1024;
/// Largest `revocation_id_batch`.
pub const MAX_REVOCATION_ID_BATCH: u32 = 65_536;
/// A credential is in the expiry alarm when less than this fraction of its
/// lifetime is left.
pub const ALARM_FRACTION: f64 = 0.2;

/// The configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_CONFIG_LEN`].
    #[error("{}: larger than {MAX_CONFIG_LEN} bytes", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The TOML does not parse, or has unknown or mistyped keys.
    #[error("{}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (with line and column).
        message: String,
    },
    /// A value is out of range or inconsistent with another.
    #[error("{}: {field}: {what}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key (e.g. `workload[0].mode`).
        field: String,
        /// What is wrong.
        what: String,
    },
}

/// How to reach the signing service.
#[derive(Clone, Debug, PartialEq)]
pub struct SignerConfig {
    /// `http://host:port` (ALTS runs under it; `https://` is refused by the connector).
    pub address: String,
    /// The ALTS identity the signer must prove.
    pub identity: String,
    /// Limit for connecting and for each call.
    pub timeout: Duration,
}

/// Lifetimes and refresh periods.
#[derive(Clone, Debug, PartialEq)]
pub struct Lifetimes {
    /// Lifetime of each handshake certificate (whole seconds, at least 1 s).
    pub handshake_lifetime: Duration,
    /// Renewal point as a fraction of a certificate's lifetime.
    pub renew_at: f64,
    /// Random spread around `renew_at`, as a fraction of the lifetime.
    pub jitter: f64,
    /// Requested principal certificate lifetime.
    pub principal_validity: Duration,
    /// Period of revocation-list fetches.
    pub crl_refresh: Duration,
    /// Period of key-ring fetches.
    pub key_ring_refresh: Duration,
    /// First retry delay after a failure.
    pub retry_min: Duration,
    /// Largest retry delay.
    pub retry_max: Duration,
}

/// One workload whose credential directory the agent keeps fresh.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadConfig {
    /// The ALTS identity.
    pub identity: String,
    /// The certificate category.
    pub category: Category,
    /// The cell (replicas of one identity in one cell share a key ring).
    pub cell: String,
    /// The credential directory (absolute).
    pub dir: PathBuf,
    /// Owner of the files (user name or uid).
    pub owner: Option<String>,
    /// Group of the files (group name or gid).
    pub group: Option<String>,
    /// Mode of every file (no bits for others, no group write).
    pub mode: u32,
}

/// The agent's configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentConfig {
    /// The signing service.
    pub signer: SignerConfig,
    /// The agent's own credential directory.
    pub credentials: PathBuf,
    /// The fleet's issuance policy file.
    pub issuance_policy: PathBuf,
    /// The agent's private state directory.
    pub state_dir: PathBuf,
    /// Lifetimes and periods.
    pub lifetimes: Lifetimes,
    /// Revocation IDs asked for per `AllocateRevocationIds` call.
    pub revocation_id_batch: u32,
    /// The workloads.
    pub workloads: Vec<WorkloadConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSigner {
    address: String,
    identity: String,
    #[serde(default)]
    timeout: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkload {
    identity: String,
    #[serde(default)]
    category: Option<String>,
    cell: String,
    dir: PathBuf,
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    mode: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    signer: RawSigner,
    credentials: PathBuf,
    issuance_policy: PathBuf,
    state_dir: PathBuf,
    #[serde(default)]
    handshake_lifetime: Option<String>,
    #[serde(default)]
    renew_at: Option<f64>,
    #[serde(default)]
    jitter: Option<f64>,
    #[serde(default)]
    principal_validity: Option<String>,
    #[serde(default)]
    crl_refresh: Option<String>,
    #[serde(default)]
    key_ring_refresh: Option<String>,
    #[serde(default)]
    retry_min: Option<String>,
    #[serde(default)]
    retry_max: Option<String>,
    #[serde(default)]
    revocation_id_batch: Option<u32>,
    #[serde(default, rename = "workload")]
    workloads: Vec<RawWorkload>,
}

impl AgentConfig {
    /// Reads and checks a configuration file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        if meta.len() > MAX_CONFIG_LEN as u64 {
            return Err(ConfigError::TooLarge {
                path: path.to_owned(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_toml(&text, path, base)
    }

    /// Parses and checks configuration text; `path` names it in errors and
    /// relative paths are resolved against `base`.
    pub fn from_toml(text: &str, path: &Path, base: &Path) -> Result<Self, ConfigError> {
        if text.len() > MAX_CONFIG_LEN {
            return Err(ConfigError::TooLarge {
                path: path.to_owned(),
            });
        }
        let raw: Raw = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let invalid = |field: &str, what: String| ConfigError::Invalid {
            path: path.to_owned(),
            field: field.to_owned(),
            what,
        };
        let dur = |field: &str, v: Option<String>, default: Duration| -> Result<Duration, ConfigError> {
            match v {
                None => Ok(default),
                Some(s) => humantime::parse_duration(&s).map_err(|e| {
                    invalid(
                        field,
                        format!("not a duration ({e}); e.g. \"24h\", \"30d\", \"500ms\""),
                    )
                }),
            }
        };
        let abs = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };

        let signer = SignerConfig {
            timeout: dur("signer.timeout", raw.signer.timeout, Duration::from_secs(10))?,
            address: raw.signer.address,
            identity: raw.signer.identity,
        };
        if !signer.address.starts_with("http://") {
            return Err(invalid(
                "signer.address",
                "must be http://host:port (ALTS protects the connection)".into(),
            ));
        }
        check_name(&signer.identity).map_err(|w| invalid("signer.identity", w))?;
        if signer.timeout < Duration::from_millis(100) || signer.timeout > Duration::from_secs(600) {
            return Err(invalid("signer.timeout", "between 100ms and 10m".into()));
        }

        let lifetimes = Lifetimes {
            handshake_lifetime: dur(
                "handshake_lifetime",
                raw.handshake_lifetime,
                Duration::from_secs(24 * 3600),
            )?,
            renew_at: raw.renew_at.unwrap_or(0.5),
            jitter: raw.jitter.unwrap_or(0.1),
            principal_validity: dur(
                "principal_validity",
                raw.principal_validity,
                Duration::from_secs(30 * 86_400),
            )?,
            crl_refresh: dur("crl_refresh", raw.crl_refresh, Duration::from_secs(60))?,
            key_ring_refresh: dur("key_ring_refresh", raw.key_ring_refresh, Duration::from_secs(60))?,
            retry_min: dur("retry_min", raw.retry_min, Duration::from_secs(1))?,
            retry_max: dur("retry_max", raw.retry_max, Duration::from_secs(60))?,
        };
        let l = &lifetimes;
        let year = Duration::from_secs(366 * 86_400);
        if l.handshake_lifetime < Duration::from_secs(1) || l.handshake_lifetime > year {
            return Err(invalid("handshake_lifetime", "between 1s and 366d".into()));
        }
        if l.principal_validity < l.handshake_lifetime
            || l.principal_validity > Duration::from_secs(10 * 366 * 86_400)
        {
            return Err(invalid(
                "principal_validity",
                "at least handshake_lifetime and at most 10 years".into(),
            ));
        }
        if !(l.renew_at.is_finite() && l.jitter.is_finite()) || l.renew_at <= 0.0 || l.renew_at >= 1.0 {
            return Err(invalid("renew_at", "a fraction strictly between 0 and 1".into()));
        }
        if l.jitter < 0.0 || l.renew_at - l.jitter < 0.05 || l.renew_at + l.jitter > 1.0 - ALARM_FRACTION {
            return Err(invalid(
                "jitter",
                format!(
                    "renew_at - jitter must be at least 0.05 and renew_at + jitter at most {} (renewal before the expiry alarm)",
                    1.0 - ALARM_FRACTION
                ),
            ));
        }
        for (field, d) in [
            ("crl_refresh", l.crl_refresh),
            ("key_ring_refresh", l.key_ring_refresh),
            ("retry_min", l.retry_min),
            ("retry_max", l.retry_max),
        ] {
            if d < Duration::from_millis(100) || d > Duration::from_secs(86_400) {
                return Err(invalid(field, "between 100ms and 24h".into()));
            }
        }
        if l.retry_max < l.retry_min {
            return Err(invalid("retry_max", "at least retry_min".into()));
        }
        let revocation_id_batch = raw.revocation_id_batch.unwrap_or(256);
        if revocation_id_batch == 0 || revocation_id_batch > MAX_REVOCATION_ID_BATCH {
            return Err(invalid(
                "revocation_id_batch",
                format!("between 1 and {MAX_REVOCATION_ID_BATCH}"),
            ));
        }

        let state_dir = abs(raw.state_dir);
        let credentials = abs(raw.credentials);
        let issuance_policy = abs(raw.issuance_policy);
        if raw.workloads.len() > MAX_WORKLOADS {
            return Err(invalid("workload", format!("at most {MAX_WORKLOADS} workloads")));
        }
        let mut workloads: Vec<WorkloadConfig> = Vec::with_capacity(raw.workloads.len());
        for (i, w) in raw.workloads.into_iter().enumerate() {
            let field = |f: &str| format!("workload[{i}].{f}");
            check_name(&w.identity).map_err(|e| invalid(&field("identity"), e))?;
            check_name(&w.cell).map_err(|e| invalid(&field("cell"), e))?;
            let category = match w.category {
                None => Category::Workload,
                Some(c) => c
                    .parse()
                    .map_err(|e| invalid(&field("category"), format!("{e}")))?,
            };
            let dir = abs(w.dir);
            if dir.parent().is_none()
                || dir
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return Err(invalid(&field("dir"), "not / and without `..`".into()));
            }
            for (what, other) in [("state_dir", &state_dir), ("credentials", &credentials)] {
                if dir.starts_with(other) || other.starts_with(&dir) {
                    return Err(invalid(
                        &field("dir"),
                        format!(
                            "must not contain or be inside {what} (private keys stay out of workload directories)"
                        ),
                    ));
                }
            }
            if let Some(prev) = workloads
                .iter()
                .position(|p| dir.starts_with(&p.dir) || p.dir.starts_with(&dir))
            {
                return Err(invalid(&field("dir"), format!("overlaps workload[{prev}].dir")));
            }
            let mode = match w.mode {
                None => 0o600,
                Some(m) => parse_mode(&m).map_err(|e| invalid(&field("mode"), e))?,
            };
            for (what, v) in [("owner", &w.owner), ("group", &w.group)] {
                if let Some(v) = v
                    && (v.is_empty() || v.len() > 64)
                {
                    return Err(invalid(&field(what), "1 to 64 characters".into()));
                }
            }
            workloads.push(WorkloadConfig {
                identity: w.identity,
                category,
                cell: w.cell,
                dir,
                owner: w.owner,
                group: w.group,
                mode,
            });
        }
        Ok(Self {
            signer,
            credentials,
            issuance_policy,
            state_dir,
            lifetimes,
            revocation_id_batch,
            workloads,
        })
    }
}

fn check_name(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > MAX_NAME_LEN {
        return Err(format!("1 to {MAX_NAME_LEN} bytes"));
    }
    if s.chars().any(char::is_control) {
        return Err("no control characters".into());
    }
    Ok(())
}

/// Parses an octal file mode such as `"0640"`. Refused: bits beyond `0o777`,
/// any bit for others and group write (the directory holds private keys).
pub fn parse_mode(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(format!("{s:?} is not an octal mode such as \"0640\""));
    }
    let mode = u32::from_str_radix(digits, 8).map_err(|_| format!("{s:?} is not an octal mode"))?;
    if mode & !0o777 != 0 {
        return Err("no setuid, setgid or sticky bits".into());
    }
    if mode & 0o400 == 0 {
        return Err("the owner must be able to read (0o400)".into());
    }
    if mode & 0o007 != 0 {
        return Err("no permissions for others: handshake.key and resumption.keys are secret".into());
    }
    if mode & 0o020 != 0 {
        return Err("no group write".into());
    }
    Ok(mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
state_dir = "state"
credentials = "/etc/alts/agent"
issuance_policy = "policy.toml"
"#;
    const SIGNER: &str = r#"
[signer]
address = "http://127.0.0.1:7443"
identity = "alts-signer"
"#;

    fn parse(extra: &str) -> Result<AgentConfig, ConfigError> {
        AgentConfig::from_toml(
            &format!("{BASE}{extra}{SIGNER}"),
            Path::new("agent.toml"),
            Path::new("/etc/alts"),
        )
    }

    fn field_of(r: Result<AgentConfig, ConfigError>) -> String {
        match r {
            Err(ConfigError::Invalid { field, .. }) => field,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn defaults_and_paths() {
        let c = parse(
            r#"
[[workload]]
identity = "greeter-prod"
cell = "cell-a"
dir = "/run/alts/greeter"
owner = "greeter"
group = "greeter"
mode = "0640"
"#,
        )
        .unwrap();
        assert_eq!(c.state_dir, Path::new("/etc/alts/state"));
        assert_eq!(c.issuance_policy, Path::new("/etc/alts/policy.toml"));
        assert_eq!(c.lifetimes.handshake_lifetime, Duration::from_secs(86_400));
        assert_eq!(c.lifetimes.principal_validity, Duration::from_secs(30 * 86_400));
        assert_eq!(c.lifetimes.renew_at, 0.5);
        assert_eq!(c.lifetimes.jitter, 0.1);
        assert_eq!(c.lifetimes.crl_refresh, Duration::from_secs(60));
        assert_eq!(c.workloads[0].mode, 0o640);
        assert_eq!(c.workloads[0].category, Category::Workload);
    }

    #[test]
    fn refusals() {
        assert!(matches!(parse("bogus = 1\n"), Err(ConfigError::Parse { .. })));
        assert_eq!(
            field_of(parse("handshake_lifetime = \"500ms\"\n")),
            "handshake_lifetime"
        );
        assert_eq!(field_of(parse("renew_at = 0.9\n")), "jitter");
        assert_eq!(field_of(parse("renew_at = 1.5\n")), "renew_at");
        assert_eq!(field_of(parse("jitter = -0.1\n")), "jitter");
        assert_eq!(field_of(parse("retry_max = \"1000000years\"\n")), "retry_max");
        assert_eq!(field_of(parse("crl_refresh = \"10ms\"\n")), "crl_refresh");
        assert_eq!(
            field_of(parse(
                "principal_validity = \"1h\"\nhandshake_lifetime = \"2h\"\n"
            )),
            "principal_validity"
        );
        let w = |dir: &str, mode: &str| {
            format!("[[workload]]\nidentity = \"a\"\ncell = \"c\"\ndir = \"{dir}\"\nmode = \"{mode}\"\n")
        };
        for bad in ["0644", "0660", "04640", "0040", "9", "rw"] {
            assert_eq!(field_of(parse(&w("/run/a", bad))), "workload[0].mode", "{bad}");
        }
        assert_eq!(
            field_of(parse(&w("/etc/alts/state/w", "0600"))),
            "workload[0].dir"
        );
        assert_eq!(field_of(parse(&w("/etc", "0600"))), "workload[0].dir");
        assert_eq!(field_of(parse(&w("/run/../x", "0600"))), "workload[0].dir");
        let two = format!("{}{}", w("/run/a", "0600"), w("/run/a/b", "0600"));
        assert_eq!(field_of(parse(&two)), "workload[1].dir");
    }
}
