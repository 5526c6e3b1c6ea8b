//! **INSECURE** test-only handshake engine: proves the handshaker service
//! plumbing and the stock-gRPC harness until the real ALTS engine lands.
//!
//! It authenticates nothing: identities are merely *claimed* in the clear
//! and the key is derived from two public nonces, so anybody watching the
//! wire can decrypt. It exists only so that stock gRPC peers talking through
//! our handshaker service encrypt records with matching keys. Compiled only
//! with the `insecure-test-engine` feature; nothing uses it by default.
//!
//! Protocol: each side sends one frame `u32 BE length ‖ body`, where body =
//! `b"NULLHS1 " ‖ 32-byte nonce ‖ UTF-8 "key=value\n" lines`. The client
//! offers `rp` (record protocols, comma-separated), `ap` (application
//! protocols), `rpc` (`maxMaj.maxMin-minMaj.minMin`), `mfs` and claims `id`;
//! the server answers with the chosen `rp`/`ap`, its `rpc`, `mfs` and `id`.
//! Both derive `key_data` (44 bytes) = HKDF-SHA256(salt =
//! "NULLHS1 insecure test key", ikm = client nonce ‖ server nonce,
//! info = "key_data").

use std::collections::BTreeMap;

use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};
use tonic::Code;
use zeroize::Zeroizing;

use crate::handshaker_service::{
    ClientStart, EngineError, EngineFactory, EngineOutcome, HandshakeEngine, RpcVersion, ServerStart,
};

/// Magic prefix of every frame body.
pub const MAGIC: &[u8; 8] = b"NULLHS1 ";
/// Largest accepted frame body.
pub const MAX_BODY: usize = 4096;
/// Length of `key_data` (REKEY record protocol: 32-byte key ‖ 12-byte mask).
pub const KEY_DATA_LEN: usize = 44;
const NONCE_LEN: usize = 32;
const DEFAULT_RPC: (RpcVersion, RpcVersion) = ((2, 1), (2, 1));

/// Factory of the insecure test engine. `client_identity` is claimed by
/// client-side handshakes, `server_identity` by server-side ones.
#[derive(Debug, Clone)]
pub struct InsecureTestEngineFactory {
    /// Identity claimed by client-side handshakes.
    pub client_identity: String,
    /// Identity claimed by server-side handshakes.
    pub server_identity: String,
}

impl InsecureTestEngineFactory {
    /// Creates a factory with the two claimed identities.
    pub fn new(client_identity: impl Into<String>, server_identity: impl Into<String>) -> Self {
        Self {
            client_identity: client_identity.into(),
            server_identity: server_identity.into(),
        }
    }
}

fn check_value(v: &str) -> Result<(), EngineError> {
    if v.contains(['\n', '=', ',']) {
        return Err(EngineError::new(
            Code::InvalidArgument,
            format!("value {v:?} contains a reserved character"),
        ));
    }
    Ok(())
}

impl EngineFactory for InsecureTestEngineFactory {
    fn client(&self, start: &ClientStart) -> Result<Box<dyn HandshakeEngine>, EngineError> {
        check_value(&self.client_identity)?;
        start
            .record_protocols
            .iter()
            .chain(&start.application_protocols)
            .try_for_each(|v| check_value(v))?;
        let mut engine = InsecureTestEngine::new(self.client_identity.clone(), start.max_frame_size)?;
        let rpc = start.rpc_versions.unwrap_or(DEFAULT_RPC);
        let fields = [
            ("id", self.client_identity.clone()),
            ("rp", start.record_protocols.join(",")),
            ("ap", start.application_protocols.join(",")),
            ("rpc", fmt_rpc(rpc)),
            ("mfs", start.max_frame_size.to_string()),
        ];
        engine.queue_frame(&fields)?;
        engine.role = Role::Client {
            target_identities: start.target_identities.clone(),
            offered_record_protocols: start.record_protocols.clone(),
            rpc,
        };
        Ok(Box::new(engine))
    }

    fn server(&self, start: &ServerStart) -> Result<Box<dyn HandshakeEngine>, EngineError> {
        check_value(&self.server_identity)?;
        let mut engine = InsecureTestEngine::new(self.server_identity.clone(), start.max_frame_size)?;
        engine.role = Role::Server {
            record_protocols: start.record_protocols.clone(),
            application_protocols: start.application_protocols.clone(),
            rpc: start.rpc_versions.unwrap_or(DEFAULT_RPC),
        };
        Ok(Box::new(engine))
    }
}

enum Role {
    Client {
        target_identities: Vec<String>,
        offered_record_protocols: Vec<String>,
        rpc: (RpcVersion, RpcVersion),
    },
    Server {
        record_protocols: Vec<String>,
        application_protocols: Vec<String>,
        rpc: (RpcVersion, RpcVersion),
    },
    Done,
}

/// The insecure engine (see the module docs). NOT secure; tests only.
pub struct InsecureTestEngine {
    role: Role,
    local_identity: String,
    max_frame_size: u32,
    nonce: [u8; NONCE_LEN],
    inbuf: Vec<u8>,
    out: Vec<u8>,
    outcome: Option<EngineOutcome>,
}

impl std::fmt::Debug for InsecureTestEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InsecureTestEngine")
            .field("local_identity", &self.local_identity)
            .finish_non_exhaustive()
    }
}

fn fmt_rpc(((a, b), (c, d)): (RpcVersion, RpcVersion)) -> String {
    format!("{a}.{b}-{c}.{d}")
}

fn parse_rpc(s: &str) -> Option<(RpcVersion, RpcVersion)> {
    let (max, min) = s.split_once('-')?;
    let v = |x: &str| -> Option<RpcVersion> {
        let (a, b) = x.split_once('.')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    };
    Some((v(max)?, v(min)?))
}

fn err(code: Code, details: impl Into<String>) -> EngineError {
    EngineError::new(code, details)
}

/// HKDF output length marker for ring.
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn derive_key(client_nonce: &[u8], server_nonce: &[u8]) -> Result<Zeroizing<Vec<u8>>, EngineError> {
    let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"NULLHS1 insecure test key");
    let mut ikm = Zeroizing::new(Vec::with_capacity(2 * NONCE_LEN));
    ikm.extend_from_slice(client_nonce);
    ikm.extend_from_slice(server_nonce);
    let prk = salt.extract(&ikm);
    let info: [&[u8]; 1] = [b"key_data"];
    let okm = prk
        .expand(&info, Len(KEY_DATA_LEN))
        .map_err(|_| err(Code::Internal, "hkdf expand"))?;
    let mut key = Zeroizing::new(vec![0u8; KEY_DATA_LEN]);
    okm.fill(&mut key).map_err(|_| err(Code::Internal, "hkdf fill"))?;
    Ok(key)
}

fn overlap(a: (RpcVersion, RpcVersion), b: (RpcVersion, RpcVersion)) -> bool {
    // (max, min) pairs; versions compare by (major, minor).
    a.1.max(b.1) <= a.0.min(b.0)
}

fn min_nonzero(a: u32, b: u32) -> u32 {
    match (a, b) {
        (0, x) | (x, 0) => x,
        (x, y) => x.min(y),
    }
}

impl InsecureTestEngine {
    fn new(local_identity: String, max_frame_size: u32) -> Result<Self, EngineError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| err(Code::Internal, "rng failure"))?;
        Ok(Self {
            role: Role::Done,
            local_identity,
            max_frame_size,
            nonce,
            inbuf: Vec::new(),
            out: Vec::new(),
            outcome: None,
        })
    }

    fn queue_frame(&mut self, fields: &[(&str, String)]) -> Result<(), EngineError> {
        let mut body = Vec::with_capacity(64);
        body.extend_from_slice(MAGIC);
        body.extend_from_slice(&self.nonce);
        for (k, v) in fields {
            body.extend_from_slice(format!("{k}={v}\n").as_bytes());
        }
        if body.len() > MAX_BODY {
            return Err(err(Code::InvalidArgument, "handshake message too large"));
        }
        let len = u32::try_from(body.len()).map_err(|_| err(Code::Internal, "length"))?;
        self.out.extend_from_slice(&len.to_be_bytes());
        self.out.extend_from_slice(&body);
        Ok(())
    }

    /// Parses a frame body into (peer nonce, fields).
    fn parse(body: &[u8]) -> Result<([u8; NONCE_LEN], BTreeMap<String, String>), EngineError> {
        let bad = |d: &str| err(Code::InvalidArgument, format!("NULLHS1: {d}"));
        let rest = body
            .strip_prefix(MAGIC.as_slice())
            .ok_or_else(|| bad("bad magic"))?;
        let (nonce, text) = rest
            .split_at_checked(NONCE_LEN)
            .ok_or_else(|| bad("short message"))?;
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| bad("short nonce"))?;
        let text = std::str::from_utf8(text).map_err(|_| bad("fields not UTF-8"))?;
        let mut fields = BTreeMap::new();
        for line in text.lines() {
            let (k, v) = line.split_once('=').ok_or_else(|| bad("malformed field"))?;
            fields.insert(k.to_owned(), v.to_owned());
        }
        Ok((nonce, fields))
    }

    fn process(&mut self, body: &[u8]) -> Result<(), EngineError> {
        let (peer_nonce, fields) = Self::parse(body)?;
        let get = |k: &str| fields.get(k).map(String::as_str).unwrap_or("");
        let peer_identity = get("id").to_owned();
        let peer_rpc =
            parse_rpc(get("rpc")).ok_or_else(|| err(Code::InvalidArgument, "NULLHS1: bad rpc versions"))?;
        let peer_mfs: u32 = get("mfs").parse().unwrap_or(0);
        let role = std::mem::replace(&mut self.role, Role::Done);
        let (record_protocol, application_protocol, key) = match role {
            Role::Done => {
                return Err(err(
                    Code::FailedPrecondition,
                    "NULLHS1: handshake already complete",
                ));
            }
            Role::Client {
                target_identities,
                offered_record_protocols,
                rpc,
            } => {
                if !target_identities.is_empty() && !target_identities.contains(&peer_identity) {
                    return Err(err(
                        Code::PermissionDenied,
                        format!(
                            "server identity {peer_identity:?} is not one of the target identities {target_identities:?}"
                        ),
                    ));
                }
                let rp = get("rp").to_owned();
                if !offered_record_protocols.contains(&rp) {
                    return Err(err(
                        Code::FailedPrecondition,
                        format!("server chose unoffered record protocol {rp:?}"),
                    ));
                }
                if !overlap(rpc, peer_rpc) {
                    return Err(err(Code::FailedPrecondition, "no common RPC protocol version"));
                }
                (rp, get("ap").to_owned(), derive_key(&self.nonce, &peer_nonce)?)
            }
            Role::Server {
                record_protocols,
                application_protocols,
                rpc,
            } => {
                let offered: Vec<&str> = get("rp").split(',').collect();
                let rp = record_protocols
                    .iter()
                    .find(|p| offered.contains(&p.as_str()))
                    .cloned()
                    .ok_or_else(|| err(Code::FailedPrecondition, "no common record protocol"))?;
                let offered_ap: Vec<&str> = get("ap").split(',').collect();
                let ap = application_protocols
                    .iter()
                    .find(|p| offered_ap.contains(&p.as_str()))
                    .cloned()
                    .unwrap_or_else(|| "grpc".to_owned());
                if !overlap(rpc, peer_rpc) {
                    return Err(err(Code::FailedPrecondition, "no common RPC protocol version"));
                }
                let key = derive_key(&peer_nonce, &self.nonce)?;
                let fields = [
                    ("id", self.local_identity.clone()),
                    ("rp", rp.clone()),
                    ("ap", ap.clone()),
                    ("rpc", fmt_rpc(rpc)),
                    ("mfs", self.max_frame_size.to_string()),
                ];
                self.queue_frame(&fields)?;
                (rp, ap, key)
            }
        };
        let mut peer_attributes = BTreeMap::new();
        peer_attributes.insert("insecure_test_engine".to_owned(), "true".to_owned());
        self.outcome = Some(EngineOutcome {
            application_protocol,
            record_protocol,
            key_data: key,
            peer_identity,
            peer_attributes,
            local_identity: self.local_identity.clone(),
            peer_rpc_versions: peer_rpc,
            max_frame_size: min_nonzero(self.max_frame_size, peer_mfs),
        });
        Ok(())
    }
}

impl HandshakeEngine for InsecureTestEngine {
    fn handle_input(&mut self, input: &[u8]) -> Result<usize, EngineError> {
        if matches!(self.role, Role::Done) {
            return Err(err(
                Code::FailedPrecondition,
                "NULLHS1: no handshake message expected",
            ));
        }
        let mut used = 0usize;
        if self.inbuf.len() < 4 {
            let take = (4 - self.inbuf.len()).min(input.len());
            self.inbuf
                .extend_from_slice(input.get(..take).unwrap_or_default());
            used = take;
        }
        let Some(len_bytes) = self.inbuf.get(..4) else {
            return Ok(used);
        };
        let len_bytes: [u8; 4] = len_bytes.try_into().map_err(|_| err(Code::Internal, "len"))?;
        let body_len = usize::try_from(u32::from_be_bytes(len_bytes)).unwrap_or(usize::MAX);
        if body_len > MAX_BODY {
            return Err(err(
                Code::InvalidArgument,
                format!("NULLHS1: message length {body_len} exceeds {MAX_BODY}"),
            ));
        }
        let need = 4 + body_len - self.inbuf.len();
        let rest = input.get(used..).unwrap_or_default();
        let take = need.min(rest.len());
        self.inbuf.extend_from_slice(rest.get(..take).unwrap_or_default());
        used += take;
        if self.inbuf.len() < 4 + body_len {
            return Ok(used);
        }
        let frame = std::mem::take(&mut self.inbuf);
        self.process(frame.get(4..).unwrap_or_default())?;
        Ok(used)
    }

    fn poll_output(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.out);
    }

    fn take_outcome(&mut self) -> Option<EngineOutcome> {
        self.outcome.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(targets: &[&str]) -> (Box<dyn HandshakeEngine>, Box<dyn HandshakeEngine>) {
        let f = InsecureTestEngineFactory::new("client@test", "server@test");
        let rp = vec!["ALTSRP_GCM_AES128_REKEY".to_owned()];
        let ap = vec!["grpc".to_owned()];
        let c = f
            .client(&ClientStart {
                record_protocols: rp.clone(),
                target_identities: targets.iter().map(|s| s.to_string()).collect(),
                target_name: "x:1".into(),
                rpc_versions: Some(((2, 1), (2, 1))),
                max_frame_size: 1 << 20,
                application_protocols: ap.clone(),
            })
            .unwrap();
        let s = f
            .server(&ServerStart {
                record_protocols: rp,
                rpc_versions: None,
                max_frame_size: 16384,
                application_protocols: ap,
            })
            .unwrap();
        (c, s)
    }

    #[test]
    fn byte_at_a_time_with_early_data_derives_same_key() {
        let (mut c, mut s) = pair(&["server@test"]);
        let mut m1 = Vec::new();
        c.poll_output(&mut m1);
        for b in &m1 {
            assert_eq!(s.handle_input(std::slice::from_ref(b)).unwrap(), 1);
        }
        let so = s.take_outcome().unwrap();
        let mut m2 = Vec::new();
        s.poll_output(&mut m2);
        let n = m2.len();
        m2.extend_from_slice(b"early");
        assert_eq!(c.handle_input(&m2).unwrap(), n);
        let co = c.take_outcome().unwrap();
        assert_eq!(*co.key_data, *so.key_data);
        assert_eq!(co.key_data.len(), KEY_DATA_LEN);
        assert_eq!(co.peer_identity, "server@test");
        assert_eq!(so.peer_identity, "client@test");
        assert_eq!(co.max_frame_size, 16384);
        assert!(c.take_outcome().is_none());
    }

    #[test]
    fn wrong_target_identity_is_refused() {
        let (mut c, mut s) = pair(&["someone-else"]);
        let mut m = Vec::new();
        c.poll_output(&mut m);
        s.handle_input(&m).unwrap();
        m.clear();
        s.poll_output(&mut m);
        let e = c.handle_input(&m).unwrap_err();
        assert_eq!(e.code, Code::PermissionDenied);
    }

    #[test]
    fn oversized_length_is_rejected() {
        let (_, mut s) = pair(&[]);
        assert!(s.handle_input(&[0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
