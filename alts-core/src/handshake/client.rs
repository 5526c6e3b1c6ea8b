//! The client state machine: `ExpectServerInit` → `ExpectServerFinished` → done.

use std::sync::Arc;

use alts_proto::alts_v1::{
    ClientFinished, ClientInit, ResumptionMode, ResumptionTicket, ServerFinished, handshake_message::Msg,
};
use zeroize::Zeroizing;

use super::key_schedule::{self, Secrets, Transcript};
use super::messages;
use super::{
    ClientOptions, Core, HandshakeConfig, HandshakeError, HandshakeOutcome, HandshakeRandom, Machine,
    PeerLists, Phase, Resumption, ResumptionConfig, RpcVersion, RpcVersions, cipher_refusal,
    negotiated_frame_size, own_boundary, record_protocol_refusal,
};
use crate::UnixTime;
use crate::crypto::{CryptoError, StaticKeyPair};
use crate::record::{RecordProtocol, Side};
use crate::resumption::{
    ChainTrust, ClientTicket, OpenedTicket, TicketError, TicketKind, TicketParams, TicketRandom,
    check_contents,
};
use crate::verify::VerifiedPeer;

/// The client side of an ALTS handshake.
pub struct ClientHandshake {
    config: Arc<HandshakeConfig>,
    options: ClientOptions,
    now: UnixTime,
    core: Core<Step>,
}

pub(crate) enum Step {
    ExpectServerInit(Box<ExpectServerInit>),
    ExpectServerFinished(Box<ExpectServerFinished>),
}

pub(crate) struct ExpectServerInit {
    /// Holds ClientInit.
    transcript: Transcript,
    ephemeral: Option<StaticKeyPair>,
    offered_ticket: Option<ClientTicket>,
    /// The RIDs listed in ClientInit (a server-side ticket must name one).
    accepted_rids: Vec<Vec<u8>>,
    /// ID and nonce of the server-side ticket we may seal.
    ticket_random: TicketRandom,
}

pub(crate) struct ExpectServerFinished {
    /// Holds ClientInit and ServerInit.
    transcript: Transcript,
    th1: [u8; 32],
    secrets: Secrets,
    peer: VerifiedPeer,
    record_protocol: RecordProtocol,
    handshake_cipher: String,
    application_protocol: String,
    rpc_version: RpcVersion,
    peer_rpc_versions: RpcVersions,
    max_frame_size: u32,
    resumption: Resumption,
    pfs: bool,
    /// Our trust in the server's chain: from this handshake, or carried
    /// forward from the ticket it resumed.
    trust: ChainTrust,
    /// ID and nonce of the server-side ticket we may seal.
    ticket_random: TicketRandom,
}

impl ClientHandshake {
    /// Starts a handshake: the ClientInit is ready in [`Handshake::poll_output`](super::Handshake::poll_output).
    pub fn new(
        config: Arc<HandshakeConfig>,
        options: ClientOptions,
        now: UnixTime,
    ) -> Result<Self, HandshakeError> {
        let c = &config;
        let kci = c.kci_resistant;
        // The only call to the random source in this handshake.
        let random = HandshakeRandom::draw(&c.provider)?;
        let ephemeral = (c.pfs || c.require_pfs || kci).then(|| random.ephemeral());
        let boundary = own_boundary(c)?;
        // Offer only what our certificate lists too, at or above our minimum
        // level, integrity-only only with a boundary of our own (the server's
        // choice is checked against the same rules).
        let ours_only = PeerLists {
            handshake_ciphers: None,
            record_protocols: None,
        };
        let handshake_ciphers: Vec<String> = c
            .handshake_ciphers
            .iter()
            .filter(|n| cipher_refusal(c, n, ours_only).is_none())
            .cloned()
            .collect();
        let record_protocols: Vec<String> = c
            .record_protocols
            .iter()
            .filter(|p| record_protocol_refusal(c, **p, boundary.as_str(), ours_only).is_none())
            .map(|p| p.name().to_owned())
            .collect();
        let resumption = c.resumption.as_ref().filter(|_| !kci);
        let cache_key = options.cache_key();
        let mut offered_ticket =
            resumption.and_then(|r| usable_cached_ticket(c, r, &options, &cache_key, now));
        // No server-side ticket while they are suspended for this session key.
        let accepted_rids: Vec<Vec<u8>> = resumption
            .filter(|r| !r.client_cache.server_tickets_suspended(&cache_key, now))
            .map(|r| r.keys.rids().map(|r| r.to_vec()).collect())
            .unwrap_or_default();
        let ci = ClientInit {
            version: 1,
            handshake_cert: c.credentials.cert_bytes().to_vec(),
            handshake_ciphers,
            record_protocols,
            nonce: random.nonce().to_vec(),
            // The sealed bytes move into ClientInit; the rest of the cached
            // ticket (secret, server, trust) stays for the resumption.
            resumption: offered_ticket.as_mut().map(|t| ResumptionTicket {
                rid: std::mem::take(&mut t.rid),
                ticket: std::mem::take(&mut t.ticket),
            }),
            ephemeral_share: ephemeral
                .as_ref()
                .map(|e| e.public_key().to_vec())
                .unwrap_or_default(),
            rpc_versions: Some(c.rpc_versions.to_proto()),
            max_frame_size: c.max_frame_size,
            application_protocols: c.application_protocols.clone(),
            accepted_rids: accepted_rids.clone(),
            kci_resistant: kci,
            pfs: ephemeral.is_some(),
            boundary,
        };
        let framed = messages::frame(Msg::ClientInit(ci));
        let mut transcript = Transcript::new();
        transcript.add(&framed);
        let first = Step::ExpectServerInit(Box::new(ExpectServerInit {
            transcript,
            ephemeral,
            offered_ticket,
            accepted_rids,
            ticket_random: random.ticket(),
        }));
        Ok(Self {
            core: Core::new(first, framed),
            config,
            options,
            now,
        })
    }

    fn check_target(&self, peer: &VerifiedPeer) -> Result<(), HandshakeError> {
        let t = &self.options.target_identities;
        if !t.is_empty() && !t.contains(&peer.identity) {
            return Err(HandshakeError::TargetIdentityMismatch {
                got: peer.identity.clone(),
                targets: t.clone(),
            });
        }
        Ok(())
    }

    fn on_server_init(
        &self,
        st: ExpectServerInit,
        framed: &[u8],
    ) -> Result<ExpectServerFinished, HandshakeError> {
        let Msg::ServerInit(si) = messages::decode(framed)? else {
            return Err(HandshakeError::UnexpectedMessage {
                expected: "ServerInit",
            });
        };
        messages::check_server_init(&si)?;
        let c = &self.config;
        // The server's choices must be among what we offered; whether they
        // are allowed with this server is checked once it is verified.
        if !c.handshake_ciphers.contains(&si.handshake_cipher) {
            return Err(HandshakeError::NotOffered {
                what: "handshake cipher",
                chosen: si.handshake_cipher,
            });
        }
        let record_protocol = RecordProtocol::from_name(&si.record_protocol)
            .filter(|p| c.record_protocols.contains(p))
            .ok_or_else(|| HandshakeError::NotOffered {
                what: "record protocol",
                chosen: si.record_protocol.clone(),
            })?;
        if !c.application_protocols.contains(&si.application_protocol) {
            return Err(HandshakeError::NotOffered {
                what: "application protocol",
                chosen: si.application_protocol.clone(),
            });
        }
        let peer_rpc_versions = RpcVersions::from_proto(si.rpc_versions.as_ref())
            .ok_or(HandshakeError::Malformed("rpc versions"))?;
        let rpc_version = c
            .rpc_versions
            .negotiate(&peer_rpc_versions)
            .ok_or(HandshakeError::NoCommonRpcVersion)?;
        let max_frame_size = negotiated_frame_size(c.max_frame_size, si.max_frame_size);

        let kci = c.kci_resistant;
        let peer_share = (!si.ephemeral_share.is_empty()).then_some(&si.ephemeral_share[..]);
        match (&st.ephemeral, peer_share) {
            (None, Some(_)) => return Err(HandshakeError::Malformed("unsolicited ephemeral share")),
            (Some(_), None) if kci => return Err(HandshakeError::KciRequired),
            (Some(_), None) if c.require_pfs => return Err(HandshakeError::PfsRequired),
            _ => {}
        }
        let mode =
            ResumptionMode::try_from(si.resumed).map_err(|_| HandshakeError::Malformed("resumption mode"))?;
        if kci && mode != ResumptionMode::NotResumed {
            return Err(HandshakeError::Malformed("resumption in KCI-resistant mode"));
        }

        let mut resumed_trust = None;
        let (peer, ikm_first, resumption): (VerifiedPeer, Zeroizing<Vec<u8>>, Resumption) = match mode {
            ResumptionMode::ClientTicket => {
                let t = st
                    .offered_ticket
                    .ok_or(HandshakeError::Malformed("resumed without a ticket"))?;
                resumed_trust = Some(t.trust);
                (
                    t.peer,
                    Zeroizing::new(t.secret.as_bytes().to_vec()),
                    Resumption::ClientTicket,
                )
            }
            ResumptionMode::ServerTicket => {
                let offered = si
                    .resumption
                    .as_ref()
                    .ok_or(HandshakeError::Malformed("missing server ticket"))?;
                // Only a ticket for a RID we listed (none while suspended).
                let r = c
                    .resumption
                    .as_ref()
                    .filter(|_| st.accepted_rids.contains(&offered.rid))
                    .ok_or(HandshakeError::BadResumption(TicketError::UnknownRid))?;
                let opened = self.open_server_ticket(r, &offered.rid, &offered.ticket)?;
                resumed_trust = Some(opened.trust);
                (
                    opened.peer,
                    Zeroizing::new(opened.secret.as_bytes().to_vec()),
                    Resumption::ServerTicket,
                )
            }
            ResumptionMode::NotResumed => {
                // The server's chain, the policy and our targets, before any
                // key agreement.
                let peer = c.verifier.verify_handshake_cert(&si.handshake_cert, self.now)?;
                self.check_target(&peer)?;
                let static_dh = c.credentials.static_agree(&peer.static_public_key)?;
                let mut ikm = Zeroizing::new(static_dh.secret_bytes().to_vec());
                if kci {
                    let (Some(e), Some(p)) = (&st.ephemeral, peer_share) else {
                        return Err(HandshakeError::KciRequired);
                    };
                    // es: our ephemeral with the server's static key; se: our static with its ephemeral.
                    ikm.extend_from_slice(e.agree(&peer.static_public_key)?.secret_bytes());
                    ikm.extend_from_slice(c.credentials.key_pair().agree(p)?.secret_bytes());
                }
                let r = if st.offered_ticket.is_some() {
                    Resumption::Refused("server did not accept the ticket".to_owned())
                } else {
                    Resumption::NotAttempted
                };
                (peer, ikm, r)
            }
        };
        if resumption.resumed() {
            c.verifier.recheck(&peer, self.now)?;
        }
        self.check_target(&peer)?;
        let trust = resumed_trust.unwrap_or_else(|| ChainTrust::of_peer(&peer, self.now));
        let lists = PeerLists::of(&peer, resumption.resumed());
        if let Some(reason) = cipher_refusal(c, &si.handshake_cipher, lists) {
            return Err(HandshakeError::NotAllowed {
                what: "handshake cipher",
                chosen: si.handshake_cipher,
                reason,
            });
        }
        if let Some(reason) = record_protocol_refusal(c, record_protocol, &si.boundary, lists) {
            return Err(HandshakeError::NotAllowed {
                what: "record protocol",
                chosen: si.record_protocol,
                reason,
            });
        }
        let ee = match (&st.ephemeral, peer_share) {
            (Some(e), Some(p)) => Some(e.agree(p)?),
            _ => None,
        };

        let mut ikm = ikm_first;
        if let Some(ee) = &ee {
            ikm.extend_from_slice(ee.secret_bytes());
        }
        let mut transcript = st.transcript;
        transcript.add(framed);
        let th1 = transcript.current();
        let secrets = key_schedule::derive(&[&ikm], &th1, record_protocol.key_data_len())
            .map_err(|()| HandshakeError::Malformed("key schedule"))?;
        Ok(ExpectServerFinished {
            transcript,
            th1,
            secrets,
            peer,
            record_protocol,
            handshake_cipher: si.handshake_cipher,
            application_protocol: si.application_protocol,
            rpc_version,
            peer_rpc_versions,
            max_frame_size,
            resumption,
            pfs: ee.is_some(),
            trust,
            ticket_random: st.ticket_random,
        })
    }

    /// Opens and checks a server-presented (server-side) ticket. When it
    /// cannot be used, this handshake fails (the server keyed it to the
    /// ticket) and the session key's state is reset so that the next
    /// connection runs a full handshake: its cached tickets are forgotten
    /// and no RID is listed under it for `ticket_lifetime_secs`.
    fn open_server_ticket(
        &self,
        r: &ResumptionConfig,
        rid: &[u8],
        ticket: &[u8],
    ) -> Result<OpenedTicket, HandshakeError> {
        let c = &self.config;
        let opened = r
            .keys
            .find(rid)
            .ok_or(TicketError::UnknownRid)
            .and_then(|key| key.open_as(TicketKind::ServerTicket, ticket))
            .and_then(|contents| check_contents(contents, c.credentials.identity(), self.now))
            .and_then(|opened| {
                opened.trust.check(&c.verifier, r.max_chain_age_secs, self.now)?;
                c.verifier
                    .recheck(&opened.peer, self.now)
                    .map_err(TicketError::PeerNotAccepted)?;
                Ok(opened)
            });
        opened.map_err(|e| {
            let key = self.options.cache_key();
            r.client_cache.forget(&key);
            r.client_cache
                .suspend_server_tickets(&key, self.now.plus(r.ticket_lifetime_secs));
            tracing::debug!(reason = %e, "server-side ticket unusable; the next connection runs a full handshake");
            HandshakeError::UnusableServerTicket(e)
        })
    }

    fn on_server_finished(
        &mut self,
        st: ExpectServerFinished,
        framed: &[u8],
    ) -> Result<HandshakeOutcome, HandshakeError> {
        let Msg::ServerFinished(ServerFinished { mac, new_ticket }) = messages::decode(framed)? else {
            return Err(HandshakeError::UnexpectedMessage {
                expected: "ServerFinished",
            });
        };
        messages::check_finished_ticket(new_ticket.as_ref(), &mac)?;
        if !st
            .secrets
            .verify_server_finished(&st.th1, new_ticket.as_ref(), &mac)
        {
            return Err(HandshakeError::BadFinished("ServerFinished"));
        }
        let c = &self.config;
        let kci = c.kci_resistant;
        let local = c.credentials.identity().to_owned();
        let mut cf_ticket = None;
        if let Some(r) = c.resumption.as_ref().filter(|_| !kci)
            && let Some(expires_at) = r.ticket_expiry(&st.peer, &st.trust, self.now)
        {
            let wants_server_ticket = server_wants_server_ticket(&st.resumption, new_ticket.is_some());
            if let Some(t) = new_ticket {
                r.client_cache.put(
                    &self.options.cache_key(),
                    ClientTicket {
                        rid: t.rid,
                        ticket: t.ticket,
                        secret: st.secrets.r_client_ticket.clone(),
                        peer: st.peer.clone(),
                        expires_at,
                        trust: st.trust,
                    },
                );
            }
            if wants_server_ticket {
                let params = TicketParams {
                    kind: TicketKind::ServerTicket,
                    peer: &st.peer,
                    local: &local,
                    secret: &st.secrets.r_server_ticket,
                    trust: &st.trust,
                    expires_at,
                    record_protocol: st.record_protocol.name(),
                };
                cf_ticket = Some(
                    r.keys
                        .seal_ticket(&params, &st.ticket_random)
                        .map_err(|_| HandshakeError::Crypto(CryptoError::Random))?,
                );
            }
        }
        let mut transcript = st.transcript;
        transcript.add(framed);
        let th2 = transcript.current();
        let mac = st.secrets.client_finished(&th2, cf_ticket.as_ref());
        messages::frame_into(
            Msg::ClientFinished(ClientFinished {
                mac,
                new_ticket: cf_ticket,
            }),
            &mut self.core.out,
        );
        Ok(HandshakeOutcome {
            side: Side::Client,
            record_protocol: st.record_protocol,
            key_data: st.secrets.record_key_material.clone(),
            peer: st.peer,
            local_identity: local,
            handshake_cipher: st.handshake_cipher,
            application_protocol: st.application_protocol,
            rpc_version: st.rpc_version,
            peer_rpc_versions: st.peer_rpc_versions,
            max_frame_size: st.max_frame_size,
            local_max_frame_size: c.max_frame_size,
            resumption: st.resumption,
            pfs: st.pfs,
            kci_resistant: kci,
        })
    }
}

/// Whether a server-side ticket (sealed by us, kept by the server) is of
/// use to this server, from what its flight says:
/// - a server that sent no ticket in ServerFinished and resumed nothing
///   shows no resumption: it keeps no server-side tickets either;
/// - after a resumption from our client-side ticket that brought a fresh
///   client-side ticket, we resume from that one next time (ClientInit
///   presents a client-side ticket first, and the server then never looks
///   for a server-side one), so a server-side ticket would only be sealed,
///   sent, MACed and stored to go unused. The server keeps the server-side
///   tickets of earlier full or server-side resumed handshakes.
///
/// In every other case (a full handshake, a resumption from a server-side
/// ticket) the server gets a fresh server-side ticket, as before.
fn server_wants_server_ticket(resumption: &Resumption, got_client_ticket: bool) -> bool {
    match resumption {
        Resumption::ClientTicket => !got_client_ticket,
        Resumption::ServerTicket => true,
        Resumption::NotAttempted | Resumption::Refused(_) => got_client_ticket,
    }
}

/// Takes the newest cached ticket for `key` the client may still resume
/// with: its trust holds (same root key, chain verification within the
/// maximum age), the server it records still passes the verifier's checks
/// (expiry, revocation, issuance policy) and is one of the targets. Tickets
/// that fail are dropped, so the server is never asked to resume a session
/// the client would then refuse.
fn usable_cached_ticket(
    c: &HandshakeConfig,
    r: &ResumptionConfig,
    options: &ClientOptions,
    key: &str,
    now: UnixTime,
) -> Option<ClientTicket> {
    let targets = &options.target_identities;
    while let Some(t) = r.client_cache.take(key, now) {
        let usable = t
            .trust
            .check(&c.verifier, r.max_chain_age_secs, now)
            .and_then(|()| {
                c.verifier
                    .recheck(&t.peer, now)
                    .map_err(TicketError::PeerNotAccepted)
            });
        match usable {
            Ok(()) if targets.is_empty() || targets.contains(&t.peer.identity) => return Some(t),
            Ok(()) => tracing::debug!("cached ticket's server is not a target; dropped"),
            Err(e) => tracing::debug!(reason = %e, "cached ticket no longer usable; dropped"),
        }
    }
    None
}

impl Machine for ClientHandshake {
    type Step = Step;

    fn core(&mut self) -> &mut Core<Step> {
        &mut self.core
    }

    fn core_ref(&self) -> &Core<Step> {
        &self.core
    }

    fn advance(&mut self, step: Step, framed: &[u8]) -> Result<Phase<Step>, HandshakeError> {
        Ok(match step {
            Step::ExpectServerInit(st) => Phase::Running(Step::ExpectServerFinished(Box::new(
                self.on_server_init(*st, framed)?,
            ))),
            Step::ExpectServerFinished(st) => {
                Phase::Done(Some(Box::new(self.on_server_finished(*st, framed)?)))
            }
        })
    }
}

impl std::fmt::Debug for ClientHandshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientHandshake")
    }
}
