//! The server state machine: `ExpectClientInit` → `ExpectClientFinished` → done.

use std::sync::Arc;

use alts_proto::alts_v1::{
    ClientFinished, ClientInit, ResumptionMode, ResumptionTicket, ServerFinished, ServerInit,
    handshake_message::Msg,
};
use zeroize::Zeroizing;

use super::key_schedule::{self, Secrets, Transcript};
use super::messages;
use super::{
    Core, HandshakeConfig, HandshakeError, HandshakeOutcome, HandshakeRandom, Machine, PeerLists, Phase,
    Resumption, ResumptionConfig, RpcVersion, RpcVersions, cipher_refusal, first_common,
    negotiated_frame_size, own_boundary, record_protocol_refusal,
};
use crate::UnixTime;
use crate::crypto::CryptoError;
use crate::record::{RecordProtocol, Side};
use crate::resumption::{
    ChainTrust, OpenedTicket, StoredServerTicket, TicketError, TicketKind, TicketLease, TicketParams,
    check_contents,
};
use crate::verify::VerifiedPeer;

/// The server side of an ALTS handshake.
pub struct ServerHandshake {
    config: Arc<HandshakeConfig>,
    now: UnixTime,
    core: Core<Step>,
}

pub(crate) enum Step {
    ExpectClientInit,
    ExpectClientFinished(Box<ExpectClientFinished>),
}

pub(crate) struct ExpectClientFinished {
    th2: [u8; 32],
    secrets: Secrets,
    outcome: HandshakeOutcome,
    /// The server-side ticket presented in ServerInit: back to the store
    /// unless a valid ClientFinished arrives.
    lease: Option<TicketLease>,
    /// Our trust in the client's chain: from this handshake, or carried
    /// forward from the ticket it resumed.
    trust: ChainTrust,
}

/// A resumption the server accepted.
struct Resumed {
    peer: VerifiedPeer,
    secret: Zeroizing<Vec<u8>>,
    mode: ResumptionMode,
    server_ticket: Option<ResumptionTicket>,
    trust: ChainTrust,
    lease: Option<TicketLease>,
}

impl ServerHandshake {
    /// Waits for a ClientInit.
    pub fn new(config: Arc<HandshakeConfig>, now: UnixTime) -> Self {
        Self {
            config,
            now,
            core: Core::new(Step::ExpectClientInit, Vec::new()),
        }
    }

    fn admit(&self, peer: &VerifiedPeer) -> Result<(), HandshakeError> {
        if let Some(pred) = &self.config.client_predicate {
            pred(peer).map_err(|reason| HandshakeError::ClientRefused {
                identity: peer.identity.clone(),
                reason,
            })?;
        }
        Ok(())
    }

    /// Verifies the client's certificate chain and runs the predicate.
    fn verify_client(&self, cert: &[u8]) -> Result<VerifiedPeer, HandshakeError> {
        let peer = self.config.verifier.verify_handshake_cert(cert, self.now)?;
        self.admit(&peer)?;
        Ok(peer)
    }

    /// Tries the client's ticket, then a stored server-side ticket. Errors
    /// here refuse the resumption only; the handshake falls back to full.
    /// A server-side ticket is looked up only after the client's chain in
    /// ClientInit verified, under that verified identity; the result of that
    /// verification is left in `verified` for the full handshake.
    fn try_resume(
        &self,
        ci: &ClientInit,
        verified: &mut Option<Result<VerifiedPeer, HandshakeError>>,
    ) -> Result<Option<Resumed>, String> {
        let Some(r) = self.config.resumption.as_ref().filter(|_| !ci.kci_resistant) else {
            return Ok(None);
        };
        if let Some(t) = &ci.resumption {
            return self
                .resume_client_ticket(r, &t.rid, &t.ticket)
                .map(Some)
                .map_err(|e| e.to_string());
        }
        if ci.accepted_rids.is_empty() {
            return Ok(None);
        }
        let client = match self.verify_client(&ci.handshake_cert) {
            Ok(p) => p,
            Err(e) => {
                *verified = Some(Err(e));
                return Ok(None);
            }
        };
        let lease = r
            .server_store
            .lease(&client.identity, &ci.accepted_rids, self.now);
        *verified = Some(Ok(client));
        let Some(lease) = lease else { return Ok(None) };
        let stored = lease.ticket();
        let usable = stored
            .trust
            .check(&self.config.verifier, r.max_chain_age_secs, self.now)
            .and_then(|()| {
                self.config
                    .verifier
                    .recheck(&stored.peer, self.now)
                    .map_err(TicketError::PeerNotAccepted)
            })
            .map_err(|e| e.to_string())
            .and_then(|()| self.admit(&stored.peer).map_err(|e| e.to_string()));
        if let Err(reason) = usable {
            // It cannot be used here any more: out of the store for good.
            lease.commit();
            return Err(reason);
        }
        Ok(Some(Resumed {
            peer: stored.peer.clone(),
            secret: Zeroizing::new(stored.secret.as_bytes().to_vec()),
            mode: ResumptionMode::ServerTicket,
            server_ticket: Some(ResumptionTicket {
                rid: lease.rid().to_vec(),
                ticket: stored.ticket.clone(),
            }),
            trust: stored.trust,
            lease: Some(lease),
        }))
    }

    /// Opens and checks a client-presented (client-side) ticket: our key,
    /// the client-side kind, our identity as sealer, unexpired, trust still
    /// holding, never accepted before, the client still passing the
    /// verifier's checks and the predicate.
    fn resume_client_ticket(
        &self,
        r: &ResumptionConfig,
        rid: &[u8],
        ticket: &[u8],
    ) -> Result<Resumed, String> {
        let c = &self.config;
        let checked = || -> Result<OpenedTicket, TicketError> {
            let key = r.keys.find(rid).ok_or(TicketError::UnknownRid)?;
            let contents = key.open_as(TicketKind::ClientTicket, ticket)?;
            let opened = check_contents(contents, c.credentials.identity(), self.now)?;
            opened.trust.check(&c.verifier, r.max_chain_age_secs, self.now)?;
            if !r
                .replay_guard
                .check_and_insert(opened.replay_id(), opened.expires_at, self.now)
            {
                return Err(TicketError::Replayed);
            }
            c.verifier
                .recheck(&opened.peer, self.now)
                .map_err(TicketError::PeerNotAccepted)?;
            Ok(opened)
        };
        let opened = checked().map_err(|e| e.to_string())?;
        self.admit(&opened.peer).map_err(|e| e.to_string())?;
        Ok(Resumed {
            peer: opened.peer,
            secret: Zeroizing::new(opened.secret.as_bytes().to_vec()),
            mode: ResumptionMode::ClientTicket,
            server_ticket: None,
            trust: opened.trust,
            lease: None,
        })
    }

    fn on_client_init(&mut self, framed: &[u8]) -> Result<ExpectClientFinished, HandshakeError> {
        let Msg::ClientInit(ci) = messages::decode(framed)? else {
            return Err(HandshakeError::UnexpectedMessage {
                expected: "ClientInit",
            });
        };
        messages::check_client_init(&ci)?;
        let c = Arc::clone(&self.config);
        let boundary = own_boundary(&c)?;
        // Everything that does not depend on the peer's certificate first.
        let application_protocol = if ci.application_protocols.is_empty() {
            c.application_protocols.first().cloned().unwrap_or_default()
        } else {
            first_common(&ci.application_protocols, |n| {
                c.application_protocols.iter().any(|o| o == n)
            })
            .ok_or_else(|| HandshakeError::NoCommonApplicationProtocol {
                offered: ci.application_protocols.clone(),
            })?
            .clone()
        };
        let peer_rpc_versions = RpcVersions::from_proto(ci.rpc_versions.as_ref())
            .ok_or(HandshakeError::Malformed("rpc versions"))?;
        let rpc_version: RpcVersion = c
            .rpc_versions
            .negotiate(&peer_rpc_versions)
            .ok_or(HandshakeError::NoCommonRpcVersion)?;
        let max_frame_size = negotiated_frame_size(c.max_frame_size, ci.max_frame_size);

        let kci = ci.kci_resistant;
        if c.kci_resistant && !kci {
            return Err(HandshakeError::KciRequired);
        }
        let peer_share = (!ci.ephemeral_share.is_empty()).then_some(&ci.ephemeral_share[..]);
        if peer_share.is_none() && (kci || c.require_pfs) {
            return Err(if kci {
                HandshakeError::KciRequired
            } else {
                HandshakeError::PfsRequired
            });
        }

        // Then the client: its ticket, or its certificate chain, verified
        // (and admitted) before any key generation or key agreement. A
        // server-side ticket is looked up under the identity the chain in
        // ClientInit proved; that verification is reused below.
        let mut verified = None;
        let (mut resumed, resumption) = match self.try_resume(&ci, &mut verified) {
            Ok(Some(r)) => {
                let mode = if r.mode == ResumptionMode::ClientTicket {
                    Resumption::ClientTicket
                } else {
                    Resumption::ServerTicket
                };
                (Some(r), mode)
            }
            Ok(None) => (None, Resumption::NotAttempted),
            Err(reason) => {
                tracing::debug!(%reason, "resumption refused; running a full handshake");
                (None, Resumption::Refused(reason))
            }
        };
        let (lease, resumed_trust) = match resumed.as_mut() {
            Some(r) => (r.lease.take(), Some(r.trust)),
            None => (None, None),
        };
        let (peer, secret, mode, server_ticket) = match resumed {
            Some(r) => (r.peer, Some(r.secret), r.mode, r.server_ticket),
            None => {
                let peer = match verified.take() {
                    Some(checked) => checked?,
                    None => self.verify_client(&ci.handshake_cert)?,
                };
                (peer, None, ResumptionMode::NotResumed, None)
            }
        };

        // Negotiation within our configuration, both certificates, our
        // minimum security level and the boundary rule.
        let lists = PeerLists::of(&peer, mode != ResumptionMode::NotResumed);
        let cipher = first_common(&ci.handshake_ciphers, |n| cipher_refusal(&c, n, lists).is_none())
            .ok_or_else(|| HandshakeError::NoCommonCipher {
                offered: ci.handshake_ciphers.clone(),
            })?
            .clone();
        let record_protocol = ci
            .record_protocols
            .iter()
            .filter_map(|n| RecordProtocol::from_name(n))
            .find(|p| record_protocol_refusal(&c, *p, &ci.boundary, lists).is_none())
            .ok_or_else(|| HandshakeError::NoCommonRecordProtocol {
                offered: ci.record_protocols.clone(),
            })?;

        // The only call to the random source in this handshake, after the
        // client and the negotiation passed.
        let random = HandshakeRandom::draw(&c.provider)?;
        let ephemeral = peer_share.map(|_| random.ephemeral());
        let ee = match (&ephemeral, peer_share) {
            (Some(e), Some(p)) => Some(e.agree(p)?),
            _ => None,
        };
        let mut ikm = match secret {
            Some(secret) => secret,
            None => {
                let static_dh = c.credentials.static_agree(&peer.static_public_key)?;
                let mut ikm = Zeroizing::new(static_dh.secret_bytes().to_vec());
                if kci {
                    let (Some(e), Some(p)) = (&ephemeral, peer_share) else {
                        return Err(HandshakeError::KciRequired);
                    };
                    // es: the client's ephemeral with our static key; se: its static with our ephemeral.
                    ikm.extend_from_slice(c.credentials.key_pair().agree(p)?.secret_bytes());
                    ikm.extend_from_slice(e.agree(&peer.static_public_key)?.secret_bytes());
                }
                ikm
            }
        };
        if let Some(ee) = &ee {
            ikm.extend_from_slice(ee.secret_bytes());
        }

        let si = ServerInit {
            version: 1,
            handshake_cert: if mode == ResumptionMode::NotResumed {
                c.credentials.cert_bytes().to_vec()
            } else {
                Vec::new()
            },
            handshake_cipher: cipher.clone(),
            record_protocol: record_protocol.name().to_owned(),
            nonce: random.nonce().to_vec(),
            resumption: server_ticket,
            ephemeral_share: ephemeral
                .as_ref()
                .map(|e| e.public_key().to_vec())
                .unwrap_or_default(),
            rpc_versions: Some(c.rpc_versions.to_proto()),
            max_frame_size: c.max_frame_size,
            application_protocol: application_protocol.clone(),
            resumed: mode as i32,
            boundary,
        };
        // Both messages are framed straight into the output buffer.
        let si_start = messages::frame_into(Msg::ServerInit(si), &mut self.core.out);
        let mut transcript = Transcript::new();
        transcript.add(framed);
        transcript.add(self.core.out.get(si_start..).unwrap_or_default());
        let th1 = transcript.current();
        let secrets = key_schedule::derive(&[&ikm], &th1, record_protocol.key_data_len())
            .map_err(|()| HandshakeError::Malformed("key schedule"))?;

        let local = c.credentials.identity().to_owned();
        let trust = resumed_trust.unwrap_or_else(|| ChainTrust::of_peer(&peer, self.now));
        let mut sf_ticket = None;
        if let Some(r) = c.resumption.as_ref().filter(|_| !kci)
            && let Some(expires_at) = r.ticket_expiry(&peer, &trust, self.now)
        {
            let params = TicketParams {
                kind: TicketKind::ClientTicket,
                peer: &peer,
                local: &local,
                secret: &secrets.r_client_ticket,
                trust: &trust,
                expires_at,
                record_protocol: record_protocol.name(),
            };
            sf_ticket = Some(
                r.keys
                    .seal_ticket(&params, &random.ticket())
                    .map_err(|_| HandshakeError::Crypto(CryptoError::Random))?,
            );
        }
        let mac = secrets.server_finished(&th1, sf_ticket.as_ref());
        let sf_start = messages::frame_into(
            Msg::ServerFinished(ServerFinished {
                mac,
                new_ticket: sf_ticket,
            }),
            &mut self.core.out,
        );
        transcript.add(self.core.out.get(sf_start..).unwrap_or_default());
        let th2 = transcript.current();

        let outcome = HandshakeOutcome {
            side: Side::Server,
            record_protocol,
            key_data: secrets.record_key_material.clone(),
            peer,
            local_identity: local,
            handshake_cipher: cipher,
            application_protocol,
            rpc_version,
            peer_rpc_versions,
            max_frame_size,
            local_max_frame_size: c.max_frame_size,
            resumption,
            pfs: ee.is_some(),
            kci_resistant: kci,
        };
        Ok(ExpectClientFinished {
            th2,
            secrets,
            outcome,
            lease,
            trust,
        })
    }

    fn on_client_finished(
        &self,
        st: ExpectClientFinished,
        framed: &[u8],
    ) -> Result<HandshakeOutcome, HandshakeError> {
        let Msg::ClientFinished(ClientFinished { mac, new_ticket }) = messages::decode(framed)? else {
            return Err(HandshakeError::UnexpectedMessage {
                expected: "ClientFinished",
            });
        };
        messages::check_finished_ticket(new_ticket.as_ref(), &mac)?;
        if !st
            .secrets
            .verify_client_finished(&st.th2, new_ticket.as_ref(), &mac)
        {
            return Err(HandshakeError::BadFinished("ClientFinished"));
        }
        // The presented server-side ticket is used: it stays out of the store.
        if let Some(lease) = st.lease {
            lease.commit();
        }
        if let (Some(r), Some(t)) = (
            self.config
                .resumption
                .as_ref()
                .filter(|_| !st.outcome.kci_resistant),
            new_ticket,
        ) && let Some(expires_at) = r.ticket_expiry(&st.outcome.peer, &st.trust, self.now)
        {
            // Filed under the client's verified identity and the RID.
            r.server_store.put(
                &t.rid,
                StoredServerTicket {
                    ticket: t.ticket,
                    secret: st.secrets.r_server_ticket.clone(),
                    peer: st.outcome.peer.clone(),
                    expires_at,
                    trust: st.trust,
                },
            );
        }
        Ok(st.outcome)
    }
}

impl Machine for ServerHandshake {
    type Step = Step;

    fn core(&mut self) -> &mut Core<Step> {
        &mut self.core
    }

    fn core_ref(&self) -> &Core<Step> {
        &self.core
    }

    fn advance(&mut self, step: Step, framed: &[u8]) -> Result<Phase<Step>, HandshakeError> {
        Ok(match step {
            Step::ExpectClientInit => {
                // ServerInit is framed into the output before the steps that
                // may still fail: on failure none of it is sent (only the alert).
                let out_start = self.core.out.len();
                match self.on_client_init(framed) {
                    Ok(st) => Phase::Running(Step::ExpectClientFinished(Box::new(st))),
                    Err(e) => {
                        self.core.out.truncate(out_start);
                        return Err(e);
                    }
                }
            }
            Step::ExpectClientFinished(st) => {
                Phase::Done(Some(Box::new(self.on_client_finished(*st, framed)?)))
            }
        })
    }
}

impl std::fmt::Debug for ServerHandshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerHandshake")
    }
}
