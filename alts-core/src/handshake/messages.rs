//! Handshake message framing: `u32 big-endian length || HandshakeMessage`.
//! Lengths are checked against [`MAX_HANDSHAKE_MESSAGE`] before anything is
//! buffered for the body, and every repeated or bytes field is capped after
//! decoding.

use alts_proto::alts_v1::{ClientInit, HandshakeMessage, ResumptionTicket, ServerInit, handshake_message};
use prost::Message;

use super::{AlertCode, HandshakeError};

/// Largest handshake message accepted (the body, without the 4-byte length).
pub const MAX_HANDSHAKE_MESSAGE: usize = 32 * 1024;
/// Most entries accepted in any list of names.
pub const MAX_LIST: usize = 16;
/// Longest name (cipher, protocol) accepted.
pub const MAX_NAME: usize = 128;
/// Length of handshake nonces.
pub const NONCE_LEN: usize = 32;
/// Largest ephemeral key share (room for an X25519+ML-KEM-768 hybrid).
pub const MAX_SHARE: usize = 2048;
/// Largest resumption ticket carried.
pub const MAX_TICKET: usize = crate::resumption::MAX_TICKET_LEN;

/// Longest alert text sent or accepted.
pub(crate) const MAX_ALERT: usize = 256;

/// Frames one message.
pub(crate) fn frame(msg: handshake_message::Msg) -> Vec<u8> {
    let mut out = Vec::new();
    frame_into(msg, &mut out);
    out
}

/// Appends the framed message to `out`; returns where it starts.
pub(crate) fn frame_into(msg: handshake_message::Msg, out: &mut Vec<u8>) -> usize {
    let m = HandshakeMessage { msg: Some(msg) };
    let len = m.encoded_len();
    let start = out.len();
    out.reserve(4 + len);
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    m.encode(out).unwrap_or_default();
    start
}

/// The length of the framed message at the start of `input` when all of it
/// is there (`None` when more bytes are needed). The same length checks as
/// [`MessageReader::read`].
pub(crate) fn whole_message_len(input: &[u8]) -> Result<Option<usize>, HandshakeError> {
    let Some(hdr) = input.get(..4).and_then(|h| <[u8; 4]>::try_from(h).ok()) else {
        return Ok(None);
    };
    let len = checked_body_len(hdr)?;
    Ok((input.len() >= 4 + len).then_some(4 + len))
}

fn checked_body_len(hdr: [u8; 4]) -> Result<usize, HandshakeError> {
    let len = u32::from_be_bytes(hdr) as usize;
    if len > MAX_HANDSHAKE_MESSAGE {
        return Err(HandshakeError::MessageTooLarge {
            len,
            max: MAX_HANDSHAKE_MESSAGE,
        });
    }
    Ok(len)
}

/// Accumulates one framed message from input delivered in any chunking.
#[derive(Default)]
pub(crate) struct MessageReader {
    buf: Vec<u8>,
}

impl MessageReader {
    /// Takes bytes from `input` up to the end of the current message.
    /// Returns how many bytes were taken and, once complete, the framed
    /// message (length prefix included, for the transcript).
    pub(crate) fn read(&mut self, input: &[u8]) -> Result<(usize, Option<Vec<u8>>), HandshakeError> {
        let mut used = 0;
        if self.buf.len() < 4 {
            let take = (4 - self.buf.len()).min(input.len());
            self.buf.extend_from_slice(input.get(..take).unwrap_or_default());
            used = take;
            if self.buf.len() < 4 {
                return Ok((used, None));
            }
        }
        let body_len = self.body_len()?;
        let have = self.buf.len() - 4;
        let take = (body_len - have).min(input.len() - used);
        if self.buf.capacity() < 4 + body_len {
            self.buf.reserve_exact(4 + body_len - self.buf.len());
        }
        self.buf
            .extend_from_slice(input.get(used..used + take).unwrap_or_default());
        used += take;
        if self.buf.len() == 4 + body_len {
            Ok((used, Some(std::mem::take(&mut self.buf))))
        } else {
            Ok((used, None))
        }
    }

    fn body_len(&self) -> Result<usize, HandshakeError> {
        let hdr: [u8; 4] = self
            .buf
            .get(..4)
            .and_then(|h| h.try_into().ok())
            .ok_or(HandshakeError::Malformed("length prefix"))?;
        checked_body_len(hdr)
    }

    /// True when no part of a message is buffered.
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// Decodes a framed message.
pub(crate) fn decode(framed: &[u8]) -> Result<handshake_message::Msg, HandshakeError> {
    let body = framed
        .get(4..)
        .ok_or(HandshakeError::Malformed("length prefix"))?;
    let decoded = HandshakeMessage::decode(body).map_err(|_| HandshakeError::Malformed("protobuf"))?;
    // Only the canonical encoding (what `frame` writes) is accepted: the
    // Finished messages' own bytes are not covered by the MAC they carry, so
    // unknown fields or padded varints would otherwise let a modified flight
    // through (found by the `handshake_flight_mutation` fuzz target).
    if !is_canonical(&decoded, body) {
        return Err(HandshakeError::Malformed("non-canonical encoding"));
    }
    let msg = decoded.msg.ok_or(HandshakeError::Malformed("empty message"))?;
    if let handshake_message::Msg::Alert(a) = msg {
        let code = AlertCode::from_u32(a.code);
        return Err(HandshakeError::PeerRefused {
            code,
            message: super::alert::sanitize_received(code, &a.message),
        });
    }
    Ok(msg)
}

/// Messages up to this size are re-encoded on the stack for the canonical
/// check (every message of a handshake with the usual certificates).
const CANONICAL_STACK_BUF: usize = 2048;

/// Whether re-encoding `decoded` gives exactly `body`.
fn is_canonical(decoded: &HandshakeMessage, body: &[u8]) -> bool {
    if decoded.encoded_len() != body.len() {
        return false;
    }
    if body.len() > CANONICAL_STACK_BUF {
        return decoded.encode_to_vec() == body;
    }
    let mut buf = [0u8; CANONICAL_STACK_BUF];
    let encoded = match buf.get_mut(..body.len()) {
        Some(out) => {
            let mut w: &mut [u8] = out;
            decoded.encode(&mut w).is_ok() && w.is_empty()
        }
        None => false,
    };
    encoded && buf.get(..body.len()) == Some(body)
}

fn check_names(list: &[String], what: &'static str) -> Result<(), HandshakeError> {
    if list.len() > MAX_LIST || list.iter().any(|s| s.len() > MAX_NAME) {
        return Err(HandshakeError::Malformed(what));
    }
    Ok(())
}

fn check_ticket(t: Option<&ResumptionTicket>) -> Result<(), HandshakeError> {
    if let Some(t) = t
        && (t.rid.len() != crate::resumption::RID_LEN || t.ticket.len() > MAX_TICKET)
    {
        return Err(HandshakeError::Malformed("resumption ticket"));
    }
    Ok(())
}

/// Structural checks of a ClientInit (caps and fixed lengths).
pub(crate) fn check_client_init(ci: &ClientInit) -> Result<(), HandshakeError> {
    if ci.version != 1 {
        return Err(HandshakeError::UnsupportedVersion(ci.version));
    }
    if ci.nonce.len() != NONCE_LEN {
        return Err(HandshakeError::Malformed("client nonce"));
    }
    check_names(&ci.handshake_ciphers, "handshake cipher list")?;
    check_names(&ci.record_protocols, "record protocol list")?;
    check_names(&ci.application_protocols, "application protocol list")?;
    if ci.boundary.len() > MAX_NAME {
        return Err(HandshakeError::Malformed("boundary"));
    }
    if ci.ephemeral_share.len() > MAX_SHARE {
        return Err(HandshakeError::Malformed("ephemeral share"));
    }
    if ci.accepted_rids.len() > MAX_LIST
        || ci
            .accepted_rids
            .iter()
            .any(|r| r.len() != crate::resumption::RID_LEN)
    {
        return Err(HandshakeError::Malformed("accepted RIDs"));
    }
    check_ticket(ci.resumption.as_ref())
}

/// Structural checks of a ServerInit.
pub(crate) fn check_server_init(si: &ServerInit) -> Result<(), HandshakeError> {
    if si.version != 1 {
        return Err(HandshakeError::UnsupportedVersion(si.version));
    }
    if si.nonce.len() != NONCE_LEN {
        return Err(HandshakeError::Malformed("server nonce"));
    }
    if si.boundary.len() > MAX_NAME {
        return Err(HandshakeError::Malformed("boundary"));
    }
    if si.ephemeral_share.len() > MAX_SHARE {
        return Err(HandshakeError::Malformed("ephemeral share"));
    }
    check_ticket(si.resumption.as_ref())
}

/// Structural checks of a Finished ticket.
pub(crate) fn check_finished_ticket(t: Option<&ResumptionTicket>, mac: &[u8]) -> Result<(), HandshakeError> {
    if mac.len() != 32 {
        return Err(HandshakeError::Malformed("finished MAC length"));
    }
    check_ticket(t)
}
