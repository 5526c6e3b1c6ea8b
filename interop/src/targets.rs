//! Which servers a client handshake accepts when the stock caller names none.
//!
//! A stock gRPC client lists the server identities it accepts in
//! `target_service_accounts` (Go `TargetServiceAccounts`, Python
//! `service_accounts`). Many apps leave the list empty, which would accept
//! **any** server the issuance policy allows, so a compromised or
//! impersonating workload could serve them. The handshaker therefore applies
//! a [`ClientTargets`] to every `client_start`:
//!
//! 1. the caller's `target_identities`, when non-empty, are used as sent;
//! 2. else the handshaker's targets map is looked up by the caller's
//!    `target_name` (the dial target exactly as the stock stack sends it,
//!    e.g. `ledger.internal:443` or `127.0.0.1:50051`; it is logged at debug
//!    level with each `client_start`, and quoted in the refusal);
//! 3. else the handshake is refused (`PERMISSION_DENIED`), unless
//!    `accept_any_server` is set (then any server the policy allows).
//!
//! # Targets file (`alts-handshaker --targets FILE`, TOML)
//! ```toml
//! # Optional; the only version is 1.
//! version = 1
//!
//! [targets]
//! "ledger.internal:50051" = ["ledger-prod"]
//! "billing.internal:443" = ["billing-prod", "billing-canary"]
//! ```
//! Each key is a `target_name`, each value the non-empty list of identities
//! accepted for it. Unknown keys are rejected. The file is read at startup.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// The handshaker's rule for client handshakes (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTargets {
    map: BTreeMap<String, Vec<String>>,
    accept_any_server: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetsFile {
    version: Option<u32>,
    #[serde(default)]
    targets: BTreeMap<String, Vec<String>>,
}

impl ClientTargets {
    /// No map; client handshakes must name their targets.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses a targets file (see the module docs).
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let f: TargetsFile = toml::from_str(text).map_err(|e| e.to_string())?;
        if let Some(v) = f.version.filter(|v| *v != 1) {
            return Err(format!("unsupported version {v} (the only version is 1)"));
        }
        for (name, ids) in &f.targets {
            if name.is_empty() {
                return Err("empty target name".to_owned());
            }
            if ids.is_empty() || ids.iter().any(String::is_empty) {
                return Err(format!("target {name:?}: list one or more non-empty identities"));
            }
        }
        Ok(Self {
            map: f.targets,
            accept_any_server: false,
        })
    }

    /// Reads a targets file.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Adds (or replaces) the identities accepted for `target_name`.
    pub fn with_target(mut self, target_name: impl Into<String>, identities: Vec<String>) -> Self {
        self.map.insert(target_name.into(), identities);
        self
    }

    /// Accepts any server the policy allows when a client handshake names no
    /// targets and its `target_name` is not in the map (the behaviour of
    /// stock handshakers; NOT fail closed).
    pub fn accept_any_server(mut self, accept: bool) -> Self {
        self.accept_any_server = accept;
        self
    }

    /// Whether [`accept_any_server`](Self::accept_any_server) is set.
    pub fn accepts_any_server(&self) -> bool {
        self.accept_any_server
    }

    /// Number of target names in the map.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The server identities a client handshake accepts (empty = any server
    /// the policy allows, only with `accept_any_server`), or the refusal.
    pub fn resolve(&self, requested: &[String], target_name: &str) -> Result<Vec<String>, String> {
        if !requested.is_empty() {
            return Ok(requested.to_vec());
        }
        if let Some(ids) = self.map.get(target_name) {
            return Ok(ids.clone());
        }
        if self.accept_any_server {
            return Ok(Vec::new());
        }
        Err(format!(
            "client handshake to target_name {target_name:?} names no target identities \
             (target_service_accounts) and the handshaker has no targets entry for it; \
             refusing to accept any server"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_order() {
        let t = ClientTargets::from_toml(
            "version = 1\n[targets]\n\"ledger.internal:50051\" = [\"ledger-prod\"]\n",
        )
        .unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t.resolve(&["x".into()], "ledger.internal:50051").unwrap(), ["x"]);
        assert_eq!(t.resolve(&[], "ledger.internal:50051").unwrap(), ["ledger-prod"]);
        let e = t.resolve(&[], "other:1").unwrap_err();
        assert!(e.contains("\"other:1\"") && e.contains("no targets entry"), "{e}");
        assert!(
            t.clone()
                .accept_any_server(true)
                .resolve(&[], "other:1")
                .unwrap()
                .is_empty()
        );
        assert!(ClientTargets::new().resolve(&[], "").is_err());
    }

    #[test]
    fn bad_files() {
        for bad in [
            "version = 2",
            "[targets]\n\"a:1\" = []",
            "[targets]\n\"a:1\" = [\"\"]",
            "[targets]\n\"\" = [\"x\"]",
            "[target]\n\"a:1\" = [\"x\"]",
            "[targets]\n\"a:1\" = \"x\"",
        ] {
            assert!(ClientTargets::from_toml(bad).is_err(), "{bad}");
        }
        assert!(ClientTargets::from_toml("").unwrap().is_empty());
    }
}
