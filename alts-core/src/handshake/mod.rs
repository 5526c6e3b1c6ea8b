//! The ALTS handshake as sans-IO state machines: mutual authentication by
//! handshake certificate, static X25519 between the certified keys (optionally
//! ephemeral X25519 for forward secrecy), HKDF-SHA256 over the transcript into
//! the record secret `M`, the resumption secret `R` and the authenticator
//! secret `A`, and Finished MACs with `A`. The full description with every
//! label is in `alts-core/HANDSHAKE.md`.
//!
//! ```text
//! client                                         server
//!   ClientInit  ───────────────────────────────►
//!                                                 verify client, negotiate, derive M/R/A
//!               ◄───────────────  ServerInit + ServerFinished
//!   verify server, derive, check ServerFinished
//!   ClientFinished [+ first records] ───────────►
//!                                                 check ClientFinished; may now send
//! ```
//!
//! Both sides are driven the same way (the [`Handshake`] trait): feed bytes
//! received from the peer to [`Handshake::handle_input`] (it returns how many
//! belong to the handshake; the rest is record data), move bytes to send out
//! with [`Handshake::poll_output`], and once [`Handshake::is_done`], take the
//! [`HandshakeOutcome`]. After an error every call returns that error.

mod alert;
mod client;
mod key_schedule;
mod messages;
mod server;

use std::fmt;
use std::sync::Arc;

use zeroize::Zeroizing;

pub use alert::AlertCode;
pub use client::ClientHandshake;
pub use key_schedule::{
    LABEL_AUTHENTICATOR, LABEL_CLIENT_FINISHED, LABEL_RECORD, LABEL_RESUMPTION_CLIENT_TICKET,
    LABEL_RESUMPTION_SERVER_TICKET, LABEL_SERVER_FINISHED,
};
pub use messages::{MAX_HANDSHAKE_MESSAGE, MAX_LIST, MAX_NAME, MAX_SHARE, MAX_TICKET, NONCE_LEN};
pub use server::ServerHandshake;

use crate::UnixTime;
use crate::cert::{CertError, LocalCredentials};
use crate::crypto::{CryptoError, CryptoProvider, StaticKeyPair, X25519_LEN};
use crate::record::{self, RecordConfig, RecordProtocol, SecurityLevel, Side};
use crate::resumption::{
    ChainTrust, ClientSessionCache, ReplayGuard, ResumptionKeys, ServerTicketStore, TICKET_RANDOM_LEN,
    TicketError, TicketRandom,
};
use crate::verify::{VerifiedPeer, Verifier};

/// The handshake cipher: static X25519 between the certificates, optional
/// ephemeral X25519, HKDF-SHA256 and HMAC-SHA256.
pub const HS_X25519_HKDF_SHA256: &str = "ALTS_HS_X25519_HKDF_SHA256";

/// Name of the ephemeral key-agreement group a handshake cipher uses.
fn ephemeral_group(cipher: &str) -> Option<&'static str> {
    match cipher {
        HS_X25519_HKDF_SHA256 => Some("X25519"),
        _ => None,
    }
}

/// Why a handshake failed. Each failing check has its own variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// A message could not be decoded or broke a structural rule.
    #[error("malformed handshake message: {0}")]
    Malformed(&'static str),
    /// A length prefix exceeded the cap.
    #[error("handshake message of {len} bytes exceeds the limit of {max}")]
    MessageTooLarge {
        /// Announced length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// The peer speaks another handshake version.
    #[error("unsupported handshake version {0}")]
    UnsupportedVersion(u32),
    /// A message arrived where another was expected.
    #[error("unexpected handshake message: expected {expected}")]
    UnexpectedMessage {
        /// What the state machine was waiting for.
        expected: &'static str,
    },
    /// The peer's certificate chain was refused.
    #[error("peer certificate refused: {0}")]
    PeerCert(#[from] CertError),
    /// Our own credentials are unusable.
    #[error("local credentials unusable: {0}")]
    LocalCredentials(String),
    /// No handshake cipher in common.
    #[error("no handshake cipher in common (peer offered {offered:?})")]
    NoCommonCipher {
        /// What the client offered.
        offered: Vec<String>,
    },
    /// No record protocol in common.
    #[error("no record protocol in common (peer offered {offered:?})")]
    NoCommonRecordProtocol {
        /// What the client offered.
        offered: Vec<String>,
    },
    /// No application protocol in common.
    #[error("no application protocol in common (peer offered {offered:?})")]
    NoCommonApplicationProtocol {
        /// What the client offered.
        offered: Vec<String>,
    },
    /// The RPC protocol version ranges do not overlap.
    #[error("RPC protocol versions do not overlap")]
    NoCommonRpcVersion,
    /// The server chose something the client never offered.
    #[error("server chose {what} {chosen:?}, which the client did not offer")]
    NotOffered {
        /// Which negotiated item.
        what: &'static str,
        /// The server's choice.
        chosen: String,
    },
    /// The server chose a handshake cipher or record protocol the client
    /// offered but may not use in this handshake (outside a certificate's
    /// list, below the minimum security level, or integrity-only outside a
    /// shared boundary).
    #[error("server chose {what} {chosen:?}, which is not allowed here: {reason}")]
    NotAllowed {
        /// Which negotiated item.
        what: &'static str,
        /// The server's choice.
        chosen: String,
        /// Which rule refuses it.
        reason: &'static str,
    },
    /// Our own configuration is unusable (e.g. a boundary label outside the
    /// name grammar).
    #[error("invalid local configuration: {0}")]
    InvalidConfig(&'static str),
    /// Forward secrecy (ephemeral keys) was required but not provided.
    #[error("perfect forward secrecy required but the peer sent no ephemeral key share")]
    PfsRequired,
    /// The KCI-resistant mode was required but the peer did not use it.
    #[error("KCI-resistant handshake required but not negotiated")]
    KciRequired,
    /// The server identity is not among the client's targets.
    #[error("server identity {got:?} is not one of the target identities {targets:?}")]
    TargetIdentityMismatch {
        /// The server's verified identity.
        got: String,
        /// The client's targets.
        targets: Vec<String>,
    },
    /// The server's predicate refused the client.
    #[error("client {identity:?} refused: {reason}")]
    ClientRefused {
        /// The client's verified identity.
        identity: String,
        /// The predicate's reason.
        reason: String,
    },
    /// The server claimed a resumption the client cannot complete (it
    /// presented a ticket for a RID the client did not list).
    #[error("server resumption refused: {0}")]
    BadResumption(TicketError),
    /// The server presented a server-side ticket this client cannot use
    /// (it does not open, belongs to another identity, expired, rests on a
    /// root key or chain verification the client no longer accepts, or the
    /// server it records no longer passes the checks). The server has keyed
    /// the handshake to that ticket, so this handshake fails; the client
    /// forgets its tickets for the session key and asks for no server-side
    /// ticket under it for `ticket_lifetime_secs`, so the next connection
    /// runs a full handshake.
    #[error("server presented an unusable resumption ticket: {0}")]
    UnusableServerTicket(TicketError),
    /// A Finished MAC did not verify.
    #[error("{0} MAC does not verify")]
    BadFinished(&'static str),
    /// A cryptographic operation failed.
    #[error("crypto failure: {0}")]
    Crypto(#[from] CryptoError),
    /// The handshake is finished and expects no more input.
    #[error("handshake already complete")]
    AlreadyComplete,
    /// The peer refused the handshake and said why. No longer produced:
    /// received alerts are reported as [`HandshakeError::PeerRefused`].
    #[deprecated(note = "received alerts are reported as `HandshakeError::PeerRefused`")]
    #[error("peer refused the handshake: {0}")]
    PeerAlert(String),
    /// The peer refused the handshake with an alert. Alerts carry a code and
    /// a generic text, not the peer's detailed reason (which stays in the
    /// peer's own logs).
    #[error("peer refused the handshake: {message} (alert code {})", code.as_u32())]
    PeerRefused {
        /// The alert's code.
        code: AlertCode,
        /// The alert's text: control and invisible formatting characters
        /// removed, at most 256 bytes, the code's generic text when the peer
        /// sent none.
        message: String,
    },
}

impl HandshakeError {
    /// A stable number for the kind of failure, sent in alerts: the number of
    /// [`HandshakeError::alert_code`].
    pub fn code(&self) -> u32 {
        self.alert_code().as_u32()
    }

    /// The kind of failure as sent in alerts. For
    /// [`HandshakeError::PeerRefused`] it is the code the peer sent; for the
    /// other errors that send no alert (a received alert, a call after
    /// completion) it is [`AlertCode::Internal`].
    #[allow(deprecated)] // `PeerAlert` is still matched.
    pub fn alert_code(&self) -> AlertCode {
        match self {
            Self::Malformed(_) | Self::MessageTooLarge { .. } | Self::UnexpectedMessage { .. } => {
                AlertCode::Malformed
            }
            Self::UnsupportedVersion(_) => AlertCode::UnsupportedVersion,
            Self::PeerCert(_) => AlertCode::CertificateNotAccepted,
            Self::NoCommonCipher { .. }
            | Self::NoCommonRecordProtocol { .. }
            | Self::NoCommonApplicationProtocol { .. }
            | Self::NoCommonRpcVersion
            | Self::NotOffered { .. }
            | Self::NotAllowed { .. }
            | Self::PfsRequired
            | Self::KciRequired => AlertCode::NoCommonParameters,
            Self::TargetIdentityMismatch { .. } | Self::ClientRefused { .. } => AlertCode::NotAuthorized,
            Self::BadResumption(_) | Self::UnusableServerTicket(_) | Self::BadFinished(_) => {
                AlertCode::VerificationFailed
            }
            Self::PeerRefused { code, .. } => *code,
            Self::LocalCredentials(_)
            | Self::InvalidConfig(_)
            | Self::Crypto(_)
            | Self::AlreadyComplete
            | Self::PeerAlert(_) => AlertCode::Internal,
        }
    }

    /// The alert to send the peer for this failure (none for an alert
    /// received). It carries only the code and the code's generic text: the
    /// peer is not authenticated (or not authorized), so it learns nothing
    /// about our policy, revocation list, targets or offered lists. The
    /// detail stays in this error, for the local side's logs.
    #[allow(deprecated)] // `PeerAlert` is still matched.
    pub(crate) fn alert(&self) -> Option<Vec<u8>> {
        if matches!(
            self,
            Self::PeerAlert(_) | Self::PeerRefused { .. } | Self::AlreadyComplete
        ) {
            return None;
        }
        let code = self.alert_code();
        Some(messages::frame(
            alts_proto::alts_v1::handshake_message::Msg::Alert(alts_proto::alts_v1::Alert {
                code: code.as_u32(),
                message: code.to_string(),
            }),
        ))
    }
}

/// An RPC protocol version. Versions compare by major, then minor; each side
/// advertises a range and the highest version inside both is negotiated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RpcVersion {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
}

/// A supported range of RPC protocol versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RpcVersions {
    /// Highest supported.
    pub max: RpcVersion,
    /// Lowest supported.
    pub min: RpcVersion,
}

impl Default for RpcVersions {
    /// gRPC's current range: 2.1 to 2.1.
    fn default() -> Self {
        let v = RpcVersion { major: 2, minor: 1 };
        Self { max: v, min: v }
    }
}

impl RpcVersions {
    /// The highest version inside both ranges.
    pub fn negotiate(&self, peer: &RpcVersions) -> Option<RpcVersion> {
        let hi = self.max.min(peer.max);
        let lo = self.min.max(peer.min);
        (hi >= lo).then_some(hi)
    }

    fn to_proto(self) -> alts_proto::alts_v1::RpcVersions {
        use alts_proto::alts_v1::RpcVersion as P;
        alts_proto::alts_v1::RpcVersions {
            max: Some(P {
                major: self.max.major,
                minor: self.max.minor,
            }),
            min: Some(P {
                major: self.min.major,
                minor: self.min.minor,
            }),
        }
    }

    fn from_proto(p: Option<&alts_proto::alts_v1::RpcVersions>) -> Option<Self> {
        let p = p?;
        let max = p.max.as_ref()?;
        let min = p.min.as_ref()?;
        Some(Self {
            max: RpcVersion {
                major: max.major,
                minor: max.minor,
            },
            min: RpcVersion {
                major: min.major,
                minor: min.minor,
            },
        })
    }
}

/// Resumption settings shared by all handshakes of one party.
#[derive(Clone, Debug)]
pub struct ResumptionConfig {
    /// Our RID keys: seal the tickets we issue, open the ones we get back.
    pub keys: Arc<ResumptionKeys>,
    /// Lifetime of issued tickets, in seconds. A client that met a
    /// server-side ticket it could not use asks for none under that session
    /// key for this long.
    pub ticket_lifetime_secs: i64,
    /// Longest time, in seconds, a resumption may rest on the chain
    /// verification of the last full handshake; resumed handshakes carry
    /// that time forward, so after it every connection runs a full handshake
    /// again. Tickets also never outlive the peer certificate's expiry.
    pub max_chain_age_secs: i64,
    /// Server: refuses a client-presented ticket seen before.
    pub replay_guard: Arc<dyn ReplayGuard>,
    /// Client: server-sealed tickets kept for later connections.
    pub client_cache: Arc<ClientSessionCache>,
    /// Server: client-sealed tickets kept for later connections.
    pub server_store: Arc<ServerTicketStore>,
}

impl ResumptionConfig {
    /// Resumption with `keys`, in-memory stores, 2-hour tickets, and at most
    /// 24 hours since the last full handshake.
    pub fn new(keys: Arc<ResumptionKeys>) -> Self {
        Self {
            keys,
            ticket_lifetime_secs: 2 * 3600,
            max_chain_age_secs: crate::resumption::DEFAULT_MAX_CHAIN_AGE_SECS,
            replay_guard: Arc::new(crate::resumption::InMemoryReplayGuard::new(1_000_000)),
            client_cache: Arc::new(ClientSessionCache::default()),
            server_store: Arc::new(ServerTicketStore::default()),
        }
    }

    /// When a ticket issued at `now` for `peer` under `trust` expires: the
    /// ticket lifetime, cut at the chain-age deadline and at the peer
    /// certificate's expiry. `None` when that is not after `now` (no ticket
    /// is issued).
    pub(crate) fn ticket_expiry(
        &self,
        peer: &VerifiedPeer,
        trust: &ChainTrust,
        now: UnixTime,
    ) -> Option<UnixTime> {
        let mut expires = now
            .plus(self.ticket_lifetime_secs)
            .min(trust.deadline(self.max_chain_age_secs));
        if let Some(not_after) = peer.not_after {
            expires = expires.min(not_after);
        }
        (expires > now).then_some(expires)
    }
}

/// A server's test over a verified client.
pub type ClientPredicate = Arc<dyn Fn(&VerifiedPeer) -> Result<(), String> + Send + Sync>;

/// Settings shared by every handshake of one party.
#[derive(Clone)]
pub struct HandshakeConfig {
    /// Our handshake certificate and static key.
    pub credentials: Arc<LocalCredentials>,
    /// Checks peer chains (root, CRL, policy).
    pub verifier: Arc<Verifier>,
    /// Crypto primitives and randomness.
    pub provider: CryptoProvider,
    /// Handshake ciphers in preference order.
    pub handshake_ciphers: Vec<String>,
    /// Record protocols in preference order. Only those also listed in our
    /// own handshake certificate are offered or chosen; the peer's
    /// certificate restricts the choice further in a full handshake.
    pub record_protocols: Vec<RecordProtocol>,
    /// Application protocols in preference order.
    pub application_protocols: Vec<String>,
    /// Supported RPC versions.
    pub rpc_versions: RpcVersions,
    /// Largest record frame we accept, as the whole frame on the wire
    /// (length field included), advertised to the peer and enforced by the
    /// record layer that [`HandshakeOutcome::record_config`] configures.
    /// 0 advertises nothing (the peer then sends 4 KiB frames). The enforced
    /// limit is never below [`MIN_RECV_FRAME_SIZE`] (the frame size any peer
    /// may send) nor above [`record::MAX_FRAME_LIMIT`] + 4.
    pub max_frame_size: u32,
    /// The lowest record-protocol security level we accept (default
    /// [`SecurityLevel::IntegrityOnly`]: integrity-only protocols are still
    /// limited to peers in our [`boundary`](Self::boundary)).
    /// [`SecurityLevel::IntegrityAndPrivacy`] refuses integrity-only
    /// protocols outright.
    pub min_security_level: SecurityLevel,
    /// A label naming the security boundary (e.g. a cell) this party is in.
    /// Sent in the handshake (transcript-bound). An integrity-only record
    /// protocol is negotiated only when both sides set a boundary and the two
    /// labels are equal; otherwise the server picks the next protocol that
    /// encrypts. Same grammar as identities ([`crate::cert::check_identity`]).
    pub boundary: Option<String>,
    /// INSECURE, restores the behaviour before boundaries: lets an
    /// integrity-only record protocol be negotiated with peers outside our
    /// boundary (or without any). Both sides must set it. Off by default.
    pub insecure_allow_integrity_only_without_boundary: bool,
    /// Offer (client) / answer with (server) ephemeral keys.
    pub pfs: bool,
    /// Refuse peers that do not use ephemeral keys.
    pub require_pfs: bool,
    /// Use the KCI-resistant variant (client) / require it (server).
    pub kci_resistant: bool,
    /// Resumption; `None` disables it.
    pub resumption: Option<ResumptionConfig>,
    /// Server: an extra test on the verified client.
    pub client_predicate: Option<ClientPredicate>,
}

impl HandshakeConfig {
    /// A configuration with the defaults: record protocols
    /// `ALTSRP_GCM_AES128_REKEY` then `ALTSRP_GCM_AES128` (the integrity-only
    /// `ALTSRP_GMAC_AES128_REKEY` is not offered unless added, and then only
    /// used inside a shared [`boundary`](Self::boundary)), no boundary, no
    /// PFS, no KCI variant, no resumption, 1 MiB frames.
    pub fn new(
        credentials: Arc<LocalCredentials>,
        verifier: Arc<Verifier>,
        provider: CryptoProvider,
    ) -> Self {
        Self {
            credentials,
            verifier,
            provider,
            handshake_ciphers: vec![HS_X25519_HKDF_SHA256.to_owned()],
            record_protocols: vec![RecordProtocol::GcmAes128Rekey, RecordProtocol::GcmAes128],
            application_protocols: vec!["grpc".to_owned()],
            rpc_versions: RpcVersions::default(),
            max_frame_size: record::DEFAULT_MAX_RECV_FRAME as u32,
            min_security_level: SecurityLevel::IntegrityOnly,
            boundary: None,
            insecure_allow_integrity_only_without_boundary: false,
            pfs: false,
            require_pfs: false,
            kci_resistant: false,
            resumption: None,
            client_predicate: None,
        }
    }
}

impl fmt::Debug for HandshakeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandshakeConfig")
            .field("identity", &self.credentials.identity())
            .field("handshake_ciphers", &self.handshake_ciphers)
            .field("record_protocols", &self.record_protocols)
            .field("max_frame_size", &self.max_frame_size)
            .field("min_security_level", &self.min_security_level)
            .field("boundary", &self.boundary)
            .field(
                "insecure_allow_integrity_only_without_boundary",
                &self.insecure_allow_integrity_only_without_boundary,
            )
            .field("pfs", &self.pfs)
            .field("kci_resistant", &self.kci_resistant)
            .field("resumption", &self.resumption.is_some())
            .finish_non_exhaustive()
    }
}

/// Per-connection client choices.
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// Acceptable server identities; empty accepts any identity the policy allows.
    pub target_identities: Vec<String>,
    /// Key under which client-side tickets are cached (e.g. the authority).
    /// `None` uses the sorted target identities.
    pub session_key: Option<String>,
}

impl ClientOptions {
    fn cache_key(&self) -> String {
        self.session_key.clone().unwrap_or_else(|| {
            let mut t = self.target_identities.clone();
            t.sort();
            t.join(",")
        })
    }
}

/// How (and whether) a handshake resumed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resumption {
    /// Full handshake; no resumption was attempted.
    NotAttempted,
    /// Resumed from a server-sealed ticket the client presented.
    ClientTicket,
    /// Resumed from a client-sealed ticket the server presented.
    ServerTicket,
    /// A resumption was attempted and refused; a full handshake ran instead.
    Refused(String),
}

impl Resumption {
    /// True when no certificate chain was verified in this handshake.
    pub fn resumed(&self) -> bool {
        matches!(self, Self::ClientTicket | Self::ServerTicket)
    }
}

/// What a completed handshake yields.
pub struct HandshakeOutcome {
    /// Which side we are.
    pub side: Side,
    /// The negotiated record protocol.
    pub record_protocol: RecordProtocol,
    /// Record key material `M`, sized for the record protocol.
    pub key_data: Zeroizing<Vec<u8>>,
    /// The verified peer.
    pub peer: VerifiedPeer,
    /// Our identity.
    pub local_identity: String,
    /// The negotiated handshake cipher.
    pub handshake_cipher: String,
    /// The negotiated application protocol.
    pub application_protocol: String,
    /// The negotiated RPC version.
    pub rpc_version: RpcVersion,
    /// The peer's advertised RPC version range.
    pub peer_rpc_versions: RpcVersions,
    /// Largest frame both sides accept (send frames at most this big).
    pub max_frame_size: u32,
    /// The largest frame we advertised (our configured
    /// [`HandshakeConfig::max_frame_size`]): the receive limit of the record
    /// layer built with [`HandshakeOutcome::record_config`].
    pub local_max_frame_size: u32,
    /// Resumption result.
    pub resumption: Resumption,
    /// Ephemeral keys were mixed in.
    pub pfs: bool,
    /// The KCI-resistant variant ran.
    pub kci_resistant: bool,
}

impl HandshakeOutcome {
    /// Builds the record layer for this connection. The send frame size is
    /// the negotiated maximum, capped by `config.send_frame_size` when that is
    /// larger than the default (so stock peers get 4 KiB frames by default).
    pub fn record_layer(
        &self,
        config: RecordConfig,
    ) -> Result<(record::Sealer, record::Opener), record::RecordError> {
        record::new_record_layer(self.record_protocol, &self.key_data, self.side, config)
    }

    /// A record configuration for this connection: frames we send are at
    /// most the negotiated size (between 4 KiB and 1 MiB), and frames we
    /// receive are refused when larger than the size we advertised
    /// ([`HandshakeOutcome::local_max_frame_size`], see
    /// [`HandshakeConfig::max_frame_size`] for its bounds).
    pub fn record_config(&self) -> RecordConfig {
        let send =
            (self.max_frame_size as usize).clamp(record::DEFAULT_SEND_FRAME, record::DEFAULT_MAX_RECV_FRAME);
        RecordConfig {
            send_frame_size: send,
            max_recv_frame: recv_length_limit(self.local_max_frame_size),
        }
    }
}

impl fmt::Debug for HandshakeOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandshakeOutcome")
            .field("side", &self.side)
            .field("record_protocol", &self.record_protocol)
            .field("peer", &self.peer.identity)
            .field("local_identity", &self.local_identity)
            .field("resumption", &self.resumption)
            .field("pfs", &self.pfs)
            .field("kci_resistant", &self.kci_resistant)
            .finish_non_exhaustive()
    }
}

/// Where a side's state machine is: in one of its steps, done, or failed.
/// After a failure every call returns the same error (fused).
pub(crate) enum Phase<S> {
    Running(S),
    Done(Option<Box<HandshakeOutcome>>),
    Failed(HandshakeError),
}

/// The I/O state both sides share: the message being read, bytes to send,
/// and the phase.
pub(crate) struct Core<S> {
    reader: messages::MessageReader,
    pub(crate) out: Vec<u8>,
    phase: Phase<S>,
}

impl<S> Core<S> {
    pub(crate) fn new(first: S, out: Vec<u8>) -> Self {
        Self {
            reader: messages::MessageReader::default(),
            out,
            phase: Phase::Running(first),
        }
    }
}

/// One side of the protocol: how a whole message moves it to its next phase.
/// The input loop, fusing, alerts and the [`Handshake`] impl are shared.
pub(crate) trait Machine: Send {
    type Step;
    fn core(&mut self) -> &mut Core<Self::Step>;
    fn core_ref(&self) -> &Core<Self::Step>;
    /// Handles one complete framed message received in `step`.
    fn advance(&mut self, step: Self::Step, framed: &[u8]) -> Result<Phase<Self::Step>, HandshakeError>;
}

/// Reads whole messages from `input` and advances until done or out of input.
fn read_messages<M: Machine>(m: &mut M, input: &[u8]) -> Result<usize, HandshakeError> {
    let mut used = 0;
    loop {
        if matches!(m.core_ref().phase, Phase::Done(_)) {
            return Ok(used);
        }
        let rest = input.get(used..).unwrap_or_default();
        // A message that arrived whole is handled where it lies; only one
        // split across calls is gathered in the reader's buffer.
        let whole = if m.core_ref().reader.is_empty() {
            messages::whole_message_len(rest)?
        } else {
            None
        };
        let buffered;
        let framed = match whole {
            Some(len) => {
                used += len;
                rest.get(..len).unwrap_or_default()
            }
            None => {
                let (n, msg) = m.core().reader.read(rest)?;
                used += n;
                let Some(msg) = msg else { return Ok(used) };
                buffered = msg;
                &buffered[..]
            }
        };
        let placeholder = Phase::Failed(HandshakeError::AlreadyComplete);
        match std::mem::replace(&mut m.core().phase, placeholder) {
            Phase::Running(step) => {
                let next = m.advance(step, framed)?;
                m.core().phase = next;
            }
            other => m.core().phase = other,
        }
    }
}

impl<M: Machine> Handshake for M {
    fn handle_input(&mut self, input: &[u8]) -> Result<usize, HandshakeError> {
        match &self.core_ref().phase {
            Phase::Failed(e) => return Err(e.clone()),
            Phase::Done(_) => return Ok(0),
            Phase::Running(_) => {}
        }
        read_messages(self, input).inspect_err(|e| {
            let core = self.core();
            core.phase = Phase::Failed(e.clone());
            // Tell the peer why (the connection is closed after this).
            core.out.extend(e.alert().unwrap_or_default());
        })
    }

    fn poll_output(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.core().out);
    }

    fn is_done(&self) -> bool {
        matches!(self.core_ref().phase, Phase::Done(_))
    }

    fn take_outcome(&mut self) -> Option<HandshakeOutcome> {
        match &mut self.core().phase {
            Phase::Done(o) => o.take().map(|b| *b),
            _ => None,
        }
    }
}

/// The driving interface shared by both sides.
pub trait Handshake: Send {
    /// Feeds bytes from the peer; returns how many belong to the handshake.
    /// Bytes past that (once done) are record-layer data.
    fn handle_input(&mut self, input: &[u8]) -> Result<usize, HandshakeError>;
    /// Appends bytes to send to the peer to `out`.
    fn poll_output(&mut self, out: &mut Vec<u8>);
    /// True once the outcome is ready (the client may still have output to flush).
    fn is_done(&self) -> bool;
    /// Takes the outcome (once).
    fn take_outcome(&mut self) -> Option<HandshakeOutcome>;
}

/// The smallest receive limit a configured [`HandshakeConfig::max_frame_size`]
/// gives (4 KiB, whole frame): every peer may send frames of this size, since
/// it is what a peer that advertises nothing gets.
pub const MIN_RECV_FRAME_SIZE: u32 = record::DEFAULT_SEND_FRAME as u32;

/// Size of a record frame's length field (not counted by the field itself).
const FRAME_LENGTH_FIELD: usize = 4;

/// The record layer's limit on the `length` field of received frames for an
/// advertised whole-frame maximum `advertised` (0: nothing advertised).
fn recv_length_limit(advertised: u32) -> usize {
    let frame = if advertised == 0 {
        record::DEFAULT_SEND_FRAME
    } else {
        advertised as usize
    };
    let frame = frame.clamp(
        MIN_RECV_FRAME_SIZE as usize,
        record::MAX_FRAME_LIMIT + FRAME_LENGTH_FIELD,
    );
    frame - FRAME_LENGTH_FIELD
}

fn first_common(prefs: &[String], supported: impl Fn(&str) -> bool) -> Option<&String> {
    prefs.iter().find(|p| supported(p))
}

/// What the peer's handshake certificate allows, when it was verified in
/// this handshake. A resumed handshake has no certificate (the ticket carries
/// the identity summary only), so only our own lists apply there.
#[derive(Clone, Copy)]
pub(crate) struct PeerLists<'a> {
    pub(crate) handshake_ciphers: Option<&'a [String]>,
    pub(crate) record_protocols: Option<&'a [String]>,
}

impl<'a> PeerLists<'a> {
    /// The lists of a peer verified from its certificate, or none when
    /// `resumed`.
    pub(crate) fn of(peer: &'a VerifiedPeer, resumed: bool) -> Self {
        if resumed {
            Self {
                handshake_ciphers: None,
                record_protocols: None,
            }
        } else {
            Self {
                handshake_ciphers: Some(&peer.handshake_ciphers),
                record_protocols: Some(&peer.record_protocols),
            }
        }
    }
}

fn listed(list: &[String], name: &str) -> bool {
    list.iter().any(|n| n == name)
}

/// Why `cipher` may not be used in this handshake, or `None` when it may:
/// it must be in our configuration, our certificate and (in a full
/// handshake) the peer's certificate, with a known key-agreement group.
pub(crate) fn cipher_refusal(c: &HandshakeConfig, cipher: &str, peer: PeerLists<'_>) -> Option<&'static str> {
    if !listed(&c.handshake_ciphers, cipher) {
        return Some("not in our configuration");
    }
    if ephemeral_group(cipher).is_none() {
        return Some("not supported");
    }
    if !listed(c.credentials.handshake_ciphers(), cipher) {
        return Some("not in our certificate");
    }
    if peer.handshake_ciphers.is_some_and(|l| !listed(l, cipher)) {
        return Some("not in the peer's certificate");
    }
    None
}

/// Why `protocol` may not be used in this handshake, or `None` when it may:
/// it must be in our configuration, our certificate and (in a full
/// handshake) the peer's certificate, meet our minimum security level, and
/// an integrity-only protocol needs both sides in the same boundary.
pub(crate) fn record_protocol_refusal(
    c: &HandshakeConfig,
    protocol: RecordProtocol,
    peer_boundary: &str,
    peer: PeerLists<'_>,
) -> Option<&'static str> {
    if !c.record_protocols.contains(&protocol) {
        return Some("not in our configuration");
    }
    if !listed(c.credentials.record_protocols(), protocol.name()) {
        return Some("not in our certificate");
    }
    if peer.record_protocols.is_some_and(|l| !listed(l, protocol.name())) {
        return Some("not in the peer's certificate");
    }
    let level = protocol.security_level();
    if level < c.min_security_level {
        return Some("below our minimum security level");
    }
    if level == SecurityLevel::IntegrityOnly && !c.insecure_allow_integrity_only_without_boundary {
        let shared = c
            .boundary
            .as_deref()
            .is_some_and(|ours| !ours.is_empty() && ours == peer_boundary);
        if !shared {
            return Some("integrity-only outside a shared boundary");
        }
    }
    None
}

/// Our boundary label as sent (empty: none), checked against the grammar.
pub(crate) fn own_boundary(c: &HandshakeConfig) -> Result<String, HandshakeError> {
    match &c.boundary {
        None => Ok(String::new()),
        Some(b) => {
            crate::cert::check_identity(b).map_err(|_| HandshakeError::InvalidConfig("boundary label"))?;
            Ok(b.clone())
        }
    }
}

fn negotiated_frame_size(ours: u32, peer: u32) -> u32 {
    if peer == 0 {
        record::DEFAULT_SEND_FRAME as u32
    } else {
        ours.min(peer)
    }
}

/// Offsets into [`HandshakeRandom`]: the handshake nonce, then the random
/// input of the one ticket this side may seal, then the ephemeral secret.
const RANDOM_TICKET: usize = NONCE_LEN;
const RANDOM_EPHEMERAL: usize = RANDOM_TICKET + TICKET_RANDOM_LEN;
const RANDOM_LEN: usize = RANDOM_EPHEMERAL + X25519_LEN;

/// Every random byte one side of a handshake may need, drawn from the
/// provider's random source in a single call: the handshake nonce, the ID
/// and AEAD nonce of the one ticket this side may seal, and the ephemeral
/// X25519 secret (used only with PFS or the KCI-resistant mode). Each part
/// is handed out once. Zeroized on drop (the ephemeral secret is key
/// material); unused parts are simply dropped.
pub(crate) struct HandshakeRandom(Zeroizing<[u8; RANDOM_LEN]>);

impl HandshakeRandom {
    /// One call to `provider.random`.
    pub(crate) fn draw(provider: &CryptoProvider) -> Result<Self, HandshakeError> {
        let mut bytes = Zeroizing::new([0u8; RANDOM_LEN]);
        provider.random.fill(bytes.as_mut())?;
        Ok(Self(bytes))
    }

    fn part<const N: usize>(&self, offset: usize) -> [u8; N] {
        let mut out = [0u8; N];
        if let Some(src) = self.0.get(offset..offset + N) {
            out.copy_from_slice(src);
        }
        out
    }

    /// The handshake nonce sent in ClientInit or ServerInit.
    pub(crate) fn nonce(&self) -> [u8; NONCE_LEN] {
        self.part(0)
    }

    /// The random ID and AEAD nonce of the ticket this side seals.
    pub(crate) fn ticket(&self) -> TicketRandom {
        TicketRandom::from_bytes(&self.part(RANDOM_TICKET))
    }

    /// The ephemeral key pair (PFS, KCI-resistant mode).
    pub(crate) fn ephemeral(&self) -> StaticKeyPair {
        let secret = Zeroizing::new(self.part::<X25519_LEN>(RANDOM_EPHEMERAL));
        StaticKeyPair::from_secret_bytes(*secret)
    }
}
