//! The real engine: our ALTS handshake (`alts-core`) behind the
//! `grpc.gcp.HandshakerService`, so a stock gRPC peer using this service and
//! a native tonic-alts peer put the same bytes on the wire.
//!
//! Mapping of the stock `grpc.gcp` handshaker requests (`client_start`,
//! `server_start`, `next`):
//! - `ClientStart.target_identities` → [`ClientOptions::target_identities`]
//!   (empty = any server the policy allows). The service fills them in
//!   before the engine runs: the caller's list, else the handshaker's
//!   targets map entry for `target_name`, else the handshake is refused
//!   unless the handshaker accepts any server (see [`crate::targets`]).
//!   `target_name` is the dial target (`host:port`), **not** an identity:
//!   the engine never takes it as one; it keys the client-side resumption
//!   cache.
//! - `record_protocols` / `application_protocols`: our configured lists are
//!   restricted to the ones the caller offers (caller's order), because the
//!   caller must be able to run the negotiated record protocol. No overlap
//!   is an error (`INVALID_ARGUMENT`).
//! - `rpc_versions` and `max_frame_size` are the caller's own (its gRPC
//!   stack and its record layer), so they are advertised as sent; absent
//!   ones keep the configured defaults (`max_frame_size` 0 stays 0 = "not
//!   sent", so the peer uses the 4 KiB default frame size as with grpc-go).
//! - Failures: refusals (certificate, revocation, policy, target identity,
//!   client predicate, no common protocol, bad MAC) → `PERMISSION_DENIED`
//!   (7); malformed or unexpected messages → `INVALID_ARGUMENT` (3); local
//!   problems (credentials, crypto) → `INTERNAL`. The details carry the
//!   `alts-core` error text.
//!
//! The result's `peer_identity.attributes` carry `category`, `issuer`,
//! `principal_revocation_id`, `handshake_revocation_id` (hex, as printed in
//! revocation errors), `not_after` (unix seconds or `none`), `resumed`
//! (`true`/`false`), `resumption` (detail), `record_protocol`,
//! `handshake_cipher`, `pfs` and `kci_resistant`.

use std::collections::BTreeMap;
use std::sync::Arc;

use alts_core::UnixTime;
use alts_core::handshake::{
    ClientHandshake, ClientOptions, Handshake, HandshakeConfig, HandshakeError, HandshakeOutcome, Resumption,
    RpcVersion as CoreVersion, RpcVersions, ServerHandshake,
};
use alts_core::record::RecordProtocol;
use tonic::Code;
use tonic_alts::AltsConfig;

use crate::handshaker_service::{
    ClientStart, EngineError, EngineFactory, EngineOutcome, HandshakeEngine, RpcVersion, ServerStart,
};

/// A clock for certificate and ticket checks.
pub type Clock = Arc<dyn Fn() -> UnixTime + Send + Sync>;

/// The current system time as [`UnixTime`].
pub fn system_now() -> UnixTime {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    UnixTime(i64::try_from(secs).unwrap_or(i64::MAX))
}

/// [`EngineFactory`] running `alts-core` handshakes with the current
/// snapshot of an [`AltsConfig`] (so reloaded credentials, policy and CRL
/// apply to new handshakes).
#[derive(Clone)]
pub struct AltsEngineFactory {
    config: AltsConfig,
    clock: Clock,
}

impl std::fmt::Debug for AltsEngineFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AltsEngineFactory")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl AltsEngineFactory {
    /// A factory over a (reloadable) [`AltsConfig`].
    pub fn new(config: AltsConfig) -> Self {
        Self {
            config,
            clock: Arc::new(system_now),
        }
    }

    /// A factory over a fixed [`HandshakeConfig`].
    pub fn from_handshake_config(config: Arc<HandshakeConfig>) -> Self {
        Self::new(AltsConfig::new(HandshakeConfig::clone(&config)))
    }

    /// Uses `clock` instead of the system time (tests).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Our configuration adapted to the caller's start parameters.
    fn adapted(
        &self,
        record_protocols: &[String],
        application_protocols: &[String],
        rpc_versions: Option<(RpcVersion, RpcVersion)>,
        max_frame_size: u32,
    ) -> Result<Arc<HandshakeConfig>, EngineError> {
        let mut cfg = HandshakeConfig::clone(&self.config.snapshot());
        if !record_protocols.is_empty() {
            let ours = &cfg.record_protocols;
            let common: Vec<RecordProtocol> = record_protocols
                .iter()
                .filter_map(|n| RecordProtocol::from_name(n))
                .filter(|p| ours.contains(p))
                .collect();
            if common.is_empty() {
                return Err(EngineError::new(
                    Code::InvalidArgument,
                    format!(
                        "no record protocol in common: caller offers {record_protocols:?}, \
                         handshaker supports {:?}",
                        ours.iter().map(|p| p.name()).collect::<Vec<_>>()
                    ),
                ));
            }
            cfg.record_protocols = common;
        }
        if !application_protocols.is_empty() {
            let common: Vec<String> = application_protocols
                .iter()
                .filter(|a| cfg.application_protocols.contains(a))
                .cloned()
                .collect();
            if common.is_empty() {
                return Err(EngineError::new(
                    Code::InvalidArgument,
                    format!(
                        "no application protocol in common: caller offers {application_protocols:?}, \
                         handshaker supports {:?}",
                        cfg.application_protocols
                    ),
                ));
            }
            cfg.application_protocols = common;
        }
        if let Some(((max_major, max_minor), (min_major, min_minor))) = rpc_versions {
            let max = CoreVersion {
                major: max_major,
                minor: max_minor,
            };
            let min = CoreVersion {
                major: min_major,
                minor: min_minor,
            };
            if min > max {
                return Err(EngineError::new(
                    Code::InvalidArgument,
                    format!("rpc_versions: min {min_major}.{min_minor} > max {max_major}.{max_minor}"),
                ));
            }
            cfg.rpc_versions = RpcVersions { max, min };
        }
        cfg.max_frame_size = max_frame_size;
        Ok(Arc::new(cfg))
    }
}

impl EngineFactory for AltsEngineFactory {
    fn client(&self, start: &ClientStart) -> Result<Box<dyn HandshakeEngine>, EngineError> {
        let cfg = self.adapted(
            &start.record_protocols,
            &start.application_protocols,
            start.rpc_versions,
            start.max_frame_size,
        )?;
        let options = ClientOptions {
            target_identities: start.target_identities.clone(),
            session_key: (!start.target_name.is_empty()).then(|| start.target_name.clone()),
        };
        let hs = ClientHandshake::new(cfg, options, (self.clock)()).map_err(map_error)?;
        Ok(Box::new(CoreEngine { hs: Box::new(hs) }))
    }

    fn server(&self, start: &ServerStart) -> Result<Box<dyn HandshakeEngine>, EngineError> {
        let cfg = self.adapted(
            &start.record_protocols,
            &start.application_protocols,
            start.rpc_versions,
            start.max_frame_size,
        )?;
        let hs = ServerHandshake::new(cfg, (self.clock)());
        Ok(Box::new(CoreEngine { hs: Box::new(hs) }))
    }
}

/// One `alts-core` handshake as a [`HandshakeEngine`].
struct CoreEngine {
    hs: Box<dyn Handshake>,
}

impl HandshakeEngine for CoreEngine {
    fn handle_input(&mut self, input: &[u8]) -> Result<usize, EngineError> {
        self.hs.handle_input(input).map_err(map_error)
    }

    fn poll_output(&mut self, out: &mut Vec<u8>) {
        self.hs.poll_output(out);
    }

    fn take_outcome(&mut self) -> Option<EngineOutcome> {
        if !self.hs.is_done() {
            return None;
        }
        self.hs.take_outcome().map(outcome)
    }
}

/// The gRPC code for a handshake failure.
pub fn error_code(e: &HandshakeError) -> Code {
    match e {
        HandshakeError::Malformed(_)
        | HandshakeError::MessageTooLarge { .. }
        | HandshakeError::UnsupportedVersion(_)
        | HandshakeError::UnexpectedMessage { .. }
        | HandshakeError::AlreadyComplete => Code::InvalidArgument,
        HandshakeError::LocalCredentials(_) | HandshakeError::Crypto(_) => Code::Internal,
        _ => Code::PermissionDenied,
    }
}

/// Maps a handshake failure to an in-band status.
pub fn map_error(e: HandshakeError) -> EngineError {
    EngineError::new(error_code(&e), format!("ALTS handshake failed: {e}"))
}

fn resumption_text(r: &Resumption) -> String {
    match r {
        Resumption::NotAttempted => "not_attempted".to_owned(),
        Resumption::ClientTicket => "client_ticket".to_owned(),
        Resumption::ServerTicket => "server_ticket".to_owned(),
        Resumption::Refused(why) => format!("refused: {why}"),
    }
}

/// Builds the service result from a completed handshake.
pub fn outcome(o: HandshakeOutcome) -> EngineOutcome {
    let p = &o.peer;
    let mut attrs = BTreeMap::new();
    attrs.insert("category".to_owned(), p.category.as_str().to_owned());
    attrs.insert("issuer".to_owned(), p.issuer.clone());
    attrs.insert(
        "principal_revocation_id".to_owned(),
        format!("{:#018x}", p.principal_revocation_id),
    );
    attrs.insert(
        "handshake_revocation_id".to_owned(),
        format!("{:#018x}", p.handshake_revocation_id),
    );
    attrs.insert(
        "not_after".to_owned(),
        p.not_after
            .map_or_else(|| "none".to_owned(), |t| t.secs().to_string()),
    );
    attrs.insert("resumed".to_owned(), o.resumption.resumed().to_string());
    attrs.insert("resumption".to_owned(), resumption_text(&o.resumption));
    attrs.insert("record_protocol".to_owned(), o.record_protocol.name().to_owned());
    attrs.insert("handshake_cipher".to_owned(), o.handshake_cipher.clone());
    attrs.insert("pfs".to_owned(), o.pfs.to_string());
    attrs.insert("kci_resistant".to_owned(), o.kci_resistant.to_string());
    let v = o.peer_rpc_versions;
    EngineOutcome {
        application_protocol: o.application_protocol.clone(),
        record_protocol: o.record_protocol.name().to_owned(),
        key_data: o.key_data.clone(),
        peer_identity: p.identity.clone(),
        peer_attributes: attrs,
        local_identity: o.local_identity.clone(),
        peer_rpc_versions: ((v.max.major, v.max.minor), (v.min.major, v.min.minor)),
        max_frame_size: o.max_frame_size,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alts_core::cert::Category;
    use alts_core::crypto::default_provider;
    use alts_core::policy::IssuancePolicy;
    use alts_core::testing::{NOW, TestPki};

    fn factory(pki: &TestPki, identity: &str) -> AltsEngineFactory {
        let issued = pki.issue(identity, Category::Workload, "test-ca");
        let cfg = HandshakeConfig::new(
            issued.credentials,
            pki.verifier(IssuancePolicy::allow_all_for_tests()),
            default_provider(),
        );
        AltsEngineFactory::from_handshake_config(Arc::new(cfg)).with_clock(Arc::new(|| NOW))
    }

    fn stock_client_start(targets: &[&str]) -> ClientStart {
        ClientStart {
            record_protocols: vec!["ALTSRP_GCM_AES128_REKEY".into()],
            target_identities: targets.iter().map(|s| (*s).to_owned()).collect(),
            target_name: "127.0.0.1:50061".into(),
            rpc_versions: Some(((2, 1), (2, 1))),
            max_frame_size: 1 << 20,
            application_protocols: vec!["grpc".into()],
        }
    }

    fn stock_server_start() -> ServerStart {
        ServerStart {
            record_protocols: vec!["ALTSRP_GCM_AES128_REKEY".into()],
            rpc_versions: Some(((2, 1), (2, 1))),
            max_frame_size: 1 << 20,
            application_protocols: vec!["grpc".into()],
        }
    }

    /// Runs client and server engines against each other, one byte at a time
    /// when `bytewise`, with 5 bytes of "early data" after the client's last
    /// message.
    fn run(
        c: &mut dyn HandshakeEngine,
        s: &mut dyn HandshakeEngine,
        bytewise: bool,
    ) -> Result<(EngineOutcome, EngineOutcome), EngineError> {
        let (mut co, mut so) = (None, None);
        for _ in 0..10 {
            let mut out = Vec::new();
            c.poll_output(&mut out);
            if co.is_none() {
                co = c.take_outcome();
            }
            if co.is_some() && !out.is_empty() {
                out.extend_from_slice(b"early");
            }
            let chunks: Vec<&[u8]> = if bytewise {
                out.chunks(1).collect()
            } else {
                vec![&out[..]]
            };
            let mut extra = 0;
            for ch in chunks {
                if ch.is_empty() {
                    continue;
                }
                let n = s.handle_input(ch)?;
                extra += ch.len() - n;
                if so.is_none() {
                    so = s.take_outcome();
                }
            }
            match (co.take(), so.take()) {
                (Some(c), Some(s)) => {
                    assert_eq!(extra, 5, "early data left for the record layer");
                    return Ok((c, s));
                }
                (c, s) => (co, so) = (c, s),
            }
            let mut back = Vec::new();
            s.poll_output(&mut back);
            if !back.is_empty() {
                assert_eq!(c.handle_input(&back)?, back.len());
            }
        }
        panic!("no progress");
    }

    #[test]
    fn client_and_server_engines_agree() {
        let pki = TestPki::new(b"engine");
        let fc = factory(&pki, "client-a");
        let fs = factory(&pki, "server-b");
        for bytewise in [false, true] {
            let mut c = fc.client(&stock_client_start(&["server-b"])).unwrap();
            let mut s = fs.server(&stock_server_start()).unwrap();
            let (co, so) = run(c.as_mut(), s.as_mut(), bytewise).unwrap();
            assert_eq!(co.key_data.len(), 44);
            assert_eq!(*co.key_data, *so.key_data);
            assert_eq!(co.peer_identity, "server-b");
            assert_eq!(co.local_identity, "client-a");
            assert_eq!(so.peer_identity, "client-a");
            assert_eq!(so.peer_attributes["category"], "workload");
            assert_eq!(so.peer_attributes["issuer"], "test-ca");
            assert_eq!(so.peer_attributes["resumed"], "false");
            assert_eq!(co.record_protocol, "ALTSRP_GCM_AES128_REKEY");
            assert_eq!(co.peer_rpc_versions, ((2, 1), (2, 1)));
            assert_eq!(co.max_frame_size, 1 << 20);
        }
    }

    #[test]
    fn wrong_target_is_permission_denied() {
        let pki = TestPki::new(b"engine2");
        let fc = factory(&pki, "client-a");
        let fs = factory(&pki, "server-b");
        let mut c = fc.client(&stock_client_start(&["someone-else"])).unwrap();
        let mut s = fs.server(&stock_server_start()).unwrap();
        let e = run(c.as_mut(), s.as_mut(), false).unwrap_err();
        assert_eq!(e.code, Code::PermissionDenied);
        assert!(e.details.contains("not one of the target identities"), "{e}");
    }

    #[test]
    fn garbage_is_invalid_argument_and_no_common_protocol_refused() {
        let pki = TestPki::new(b"engine3");
        let fs = factory(&pki, "server-b");
        let mut s = fs.server(&stock_server_start()).unwrap();
        let mut junk = vec![0, 0, 0, 8];
        junk.extend_from_slice(&[0xff; 8]);
        let e = s.handle_input(&junk).unwrap_err();
        assert_eq!(e.code, Code::InvalidArgument, "{e}");
        let mut start = stock_client_start(&[]);
        start.record_protocols = vec!["ALTSRP_UNKNOWN".into()];
        let e = fs.client(&start).err().unwrap();
        assert_eq!(e.code, Code::InvalidArgument);
        assert!(e.details.contains("no record protocol in common"));
    }
}
