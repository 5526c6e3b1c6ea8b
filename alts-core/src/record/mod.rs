//! The ALTS record protocol, byte-compatible with the one stock gRPC ships
//! (`ALTSRP_GCM_AES128_REKEY`, `ALTSRP_GCM_AES128`), plus the
//! integrity-only `ALTSRP_GMAC_AES128_REKEY`.
//!
//! [`new_record_layer`] turns the negotiated [`RecordProtocol`] and the
//! handshake's key data into a [`Sealer`] (our records out) and an [`Opener`]
//! (the peer's records in). Both work in place in caller-owned
//! [`bytes::BytesMut`] buffers and allocate nothing per record once the
//! buffers have grown to their working size.
//!
//! Wire format of every record: `u32 LE length` (= 4 + payload + 16, not
//! counting itself), `u32 LE type` (= 6), payload, 16-byte tag. The nonce
//! comes from a 12-byte little-endian counter kept by each side and never
//! sent: records the server sends have the top bit of the last counter byte
//! set, each side's in-counter starts at the peer's start value, and records
//! must be opened in order (a replayed, reordered or dropped record fails
//! authentication). When the counter overflows every later seal/open fails:
//! the connection must be closed; the counter never wraps.
//!
//! Decisions recorded here:
//! - Type check: like stock gRPC, only the low byte of the type field must
//!   be 6; the upper three bytes are ignored.
//! - Empty plaintext: [`Sealer::seal`] writes no frame for it (as grpc-go's
//!   `Write` of an empty slice); an empty frame from the peer is accepted and
//!   opens to an empty payload.
//! - After any error the [`Opener`] (and the [`Sealer`]) is fused: every later
//!   call returns the first error again.
//! - Key data longer than the protocol needs is truncated (stock clients
//!   may receive 128 bytes); shorter is [`RecordError::BadKeyLength`].

mod counter;
mod crypter;
mod frame;

use std::fmt;
use std::io::IoSlice;

use bytes::{Buf, BufMut, BytesMut};

use counter::{COUNTER_LEN, Counter};
use crypter::{AES_KEY_LEN, Crypter, Mode, REKEY_KEY_DATA_LEN};
use frame::{HEADER_LEN, MIN_LENGTH_FIELD, RECORD_TYPE};

/// Which end of the connection this record layer belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The side that opened the connection.
    Client,
    /// The side that accepted it; its records carry the direction bit.
    Server,
}

impl Side {
    /// The other side.
    pub fn peer(self) -> Side {
        match self {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        }
    }
}

/// What a record protocol protects (the `grpc.gcp.SecurityLevel` values).
/// Ordered weakest first: `IntegrityOnly < IntegrityAndPrivacy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SecurityLevel {
    /// Payload in clear, authenticated (GMAC).
    IntegrityOnly,
    /// Payload encrypted and authenticated (GCM).
    IntegrityAndPrivacy,
}

/// A record protocol that can be negotiated in the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecordProtocol {
    /// `ALTSRP_GCM_AES128_REKEY`: AES-128-GCM with a key derived from a
    /// 32-byte KDF key every 65,536 records and a masked nonce (44 bytes of
    /// key data). The default and stock gRPC's only choice.
    GcmAes128Rekey,
    /// `ALTSRP_GCM_AES128`: legacy AES-128-GCM with one 16-byte key, nonce =
    /// counter, at most 2^40 records per direction.
    GcmAes128,
    /// `ALTSRP_GMAC_AES128_REKEY` (our own name, not known to stock gRPC):
    /// integrity only. Keys, nonces, counters and framing as
    /// [`RecordProtocol::GcmAes128Rekey`], but the payload travels in clear and
    /// the tag is the GCM tag over the payload as associated data with an
    /// empty plaintext (GMAC). Negotiated only inside a shared boundary (see
    /// `HandshakeConfig::boundary`).
    GmacAes128Rekey,
}

impl RecordProtocol {
    /// Every supported protocol in our preference order: privacy first
    /// (`ALTSRP_GCM_AES128_REKEY`, then legacy `ALTSRP_GCM_AES128`), and the
    /// integrity-only `ALTSRP_GMAC_AES128_REKEY` last, so it is only ever
    /// chosen when a peer offers nothing else. The handshake's default
    /// configuration does not offer it, and negotiates it only between peers
    /// that configure the same boundary (`HandshakeConfig::boundary`).
    pub const ALL: [RecordProtocol; 3] = [
        RecordProtocol::GcmAes128Rekey,
        RecordProtocol::GcmAes128,
        RecordProtocol::GmacAes128Rekey,
    ];

    /// The protocol's name as negotiated in the handshake.
    pub fn name(self) -> &'static str {
        match self {
            RecordProtocol::GcmAes128Rekey => "ALTSRP_GCM_AES128_REKEY",
            RecordProtocol::GcmAes128 => "ALTSRP_GCM_AES128",
            RecordProtocol::GmacAes128Rekey => "ALTSRP_GMAC_AES128_REKEY",
        }
    }

    /// The protocol with this exact name, if supported.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// How many bytes of key data the protocol uses (44, 16, 44).
    pub fn key_data_len(self) -> usize {
        match self {
            RecordProtocol::GcmAes128Rekey | RecordProtocol::GmacAes128Rekey => REKEY_KEY_DATA_LEN,
            RecordProtocol::GcmAes128 => AES_KEY_LEN,
        }
    }

    /// Whether the protocol encrypts or only authenticates.
    pub fn security_level(self) -> SecurityLevel {
        match self {
            RecordProtocol::GcmAes128Rekey | RecordProtocol::GcmAes128 => SecurityLevel::IntegrityAndPrivacy,
            RecordProtocol::GmacAes128Rekey => SecurityLevel::IntegrityOnly,
        }
    }

    /// How many low counter bytes are incremented before the counter is
    /// exhausted (8 for the REKEY protocols, 5 for plain GCM).
    fn overflow_len(self) -> usize {
        match self {
            RecordProtocol::GcmAes128Rekey | RecordProtocol::GmacAes128Rekey => 8,
            RecordProtocol::GcmAes128 => 5,
        }
    }

    fn crypter(self, key_data: &[u8]) -> Result<Crypter, RecordError> {
        match self {
            RecordProtocol::GcmAes128Rekey => Crypter::new_rekey(key_data, Mode::Privacy),
            RecordProtocol::GmacAes128Rekey => Crypter::new_rekey(key_data, Mode::IntegrityOnly),
            RecordProtocol::GcmAes128 => Crypter::new_plain(key_data, Mode::Privacy),
        }
    }
}

impl fmt::Display for RecordProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Bytes a frame adds to its payload: length (4) + type (4) + tag (16).
pub const FRAME_OVERHEAD: usize = 24;
/// Default limit on the `length` field of received frames (1 MiB, as stock
/// gRPC).
pub const DEFAULT_MAX_RECV_FRAME: usize = 1 << 20;
/// Default size of a whole frame we send, on the wire (4 KiB, as stock gRPC).
pub const DEFAULT_SEND_FRAME: usize = 4096;
/// The largest value accepted for either limit in [`RecordConfig`] (16 MiB,
/// on the `length` field).
pub const MAX_FRAME_LIMIT: usize = 16 << 20;

/// Frame sizes of a record layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordConfig {
    /// Largest accepted `length` field of a received frame (the frame on the
    /// wire is 4 bytes longer). At least 20, at most [`MAX_FRAME_LIMIT`].
    pub max_recv_frame: usize,
    /// Size on the wire of the frames we send (payload = this - 24). Above 24,
    /// at most [`MAX_FRAME_LIMIT`] + 4. Larger than the default only when the
    /// peer is known to accept it.
    pub send_frame_size: usize,
}

impl Default for RecordConfig {
    fn default() -> Self {
        Self {
            max_recv_frame: DEFAULT_MAX_RECV_FRAME,
            send_frame_size: DEFAULT_SEND_FRAME,
        }
    }
}

impl RecordConfig {
    fn validate(&self) -> Result<(), RecordError> {
        let recv_ok = (MIN_LENGTH_FIELD..=MAX_FRAME_LIMIT).contains(&self.max_recv_frame);
        let send_ok = self.send_frame_size > FRAME_OVERHEAD
            && self.send_frame_size - frame::LEN_FIELD <= MAX_FRAME_LIMIT;
        if recv_ok && send_ok {
            Ok(())
        } else {
            Err(RecordError::BadConfig)
        }
    }
}

/// Why a record could not be sealed or opened, or a record layer not built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// A received frame's `length` field exceeds the receive limit (checked
    /// from the header alone, before anything is reserved for the body).
    #[error("record frame length {len} exceeds the limit {limit}")]
    FrameTooLarge {
        /// The `length` field received.
        len: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A received frame's `length` field is below 20 (type + tag).
    #[error("record frame too small to hold a type and a tag")]
    FrameTooSmall,
    /// A received frame's type field does not have 6 in its low byte.
    #[error("record frame has type {0:#x}, expected low byte 6")]
    WrongType(u32),
    /// A record failed authentication: tampered, truncated inside the body,
    /// replayed, reordered, preceded by a dropped record, sent by the wrong
    /// side, or sealed with another key.
    #[error("record failed authentication")]
    Authentication,
    /// The record counter is exhausted; the connection must be closed.
    #[error("record counter overflow: the connection must be closed")]
    CounterOverflow,
    /// The key data is too short for the record protocol.
    #[error("record key data has {len} bytes, the protocol needs {need}")]
    BadKeyLength {
        /// Bytes supplied.
        len: usize,
        /// Bytes needed.
        need: usize,
    },
    /// A [`RecordConfig`] value is out of range.
    #[error(
        "bad record config: max_recv_frame must be in 20..=16 MiB and send_frame_size in 25..=16 MiB + 4"
    )]
    BadConfig,
    /// The AES key could not be set up.
    #[error("record AEAD key setup failed")]
    KeySetup,
    /// The AEAD refused to seal (input too long for the AEAD).
    #[error("record sealing failed")]
    SealFailed,
}

/// Builds the two halves of a record layer for `side`.
///
/// `key_data` is the handshake's key material; bytes beyond
/// [`RecordProtocol::key_data_len`] are ignored, fewer is an error.
pub fn new_record_layer(
    protocol: RecordProtocol,
    key_data: &[u8],
    side: Side,
    config: RecordConfig,
) -> Result<(Sealer, Opener), RecordError> {
    config.validate()?;
    let overflow = protocol.overflow_len();
    let sealer = Sealer {
        protocol,
        side,
        crypter: protocol.crypter(key_data)?,
        counter: Counter::new(side, overflow),
        max_payload: config.send_frame_size - FRAME_OVERHEAD,
        failed: None,
    };
    let opener = Opener {
        protocol,
        side,
        crypter: protocol.crypter(key_data)?,
        counter: Counter::new(side.peer(), overflow),
        max_recv_frame: config.max_recv_frame,
        failed: None,
    };
    Ok((sealer, opener))
}

/// Seals our outgoing records.
pub struct Sealer {
    protocol: RecordProtocol,
    side: Side,
    crypter: Crypter,
    counter: Counter,
    max_payload: usize,
    failed: Option<RecordError>,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("protocol", &self.protocol)
            .field("side", &self.side)
            .field("sequence", &self.counter.sequence())
            .field("max_payload", &self.max_payload)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// The most payload bytes one frame carries (`send_frame_size - 24`).
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// The negotiated record protocol.
    pub fn protocol(&self) -> RecordProtocol {
        self.protocol
    }

    /// Appends one or more complete frames for `plaintext` to `out`
    /// (splitting at [`Sealer::max_payload`]), encrypting in place inside
    /// `out`. An empty `plaintext` appends nothing.
    ///
    /// On error `out` is left as it was and the sealer is fused.
    pub fn seal(&mut self, plaintext: &[u8], out: &mut BytesMut) -> Result<(), RecordError> {
        self.seal_vectored(&[IoSlice::new(plaintext)], out)
    }

    /// Like [`Sealer::seal`] for the concatenation of `parts`: the parts
    /// share frames (a frame is filled across part boundaries), so many
    /// small writes cost one frame, one tag and one copy of each byte.
    ///
    /// On error `out` is left as it was and the sealer is fused.
    pub fn seal_vectored(&mut self, parts: &[IoSlice<'_>], out: &mut BytesMut) -> Result<(), RecordError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let start = out.len();
        let result = self.seal_frames(parts, out);
        if let Err(err) = &result {
            out.truncate(start);
            self.failed = Some(err.clone());
        }
        result
    }

    fn seal_frames(&mut self, parts: &[IoSlice<'_>], out: &mut BytesMut) -> Result<(), RecordError> {
        let len = parts
            .iter()
            .try_fold(0usize, |acc, p| acc.checked_add(p.len()))
            .ok_or(RecordError::SealFailed)?;
        let frames = len.div_ceil(self.max_payload);
        let total = frames
            .checked_mul(FRAME_OVERHEAD)
            .and_then(|o| o.checked_add(len))
            .ok_or(RecordError::SealFailed)?;
        out.reserve(total);
        // Cursor into `parts`: the part and the offset inside it.
        let (mut part, mut offset) = (0, 0);
        let mut left = len;
        while left > 0 {
            let frame_len = left.min(self.max_payload);
            let counter: [u8; COUNTER_LEN] = *self.counter.value().ok_or(RecordError::CounterOverflow)?;
            let length = frame_len
                .checked_add(MIN_LENGTH_FIELD)
                .and_then(|l| u32::try_from(l).ok())
                .ok_or(RecordError::SealFailed)?;
            out.put_u32_le(length);
            out.put_u32_le(RECORD_TYPE);
            let body_start = out.len();
            let mut need = frame_len;
            while need > 0 {
                let rest = parts
                    .get(part)
                    .and_then(|p| p.get(offset..))
                    .ok_or(RecordError::SealFailed)?;
                let take = rest.len().min(need);
                out.extend_from_slice(rest.get(..take).ok_or(RecordError::SealFailed)?);
                need -= take;
                offset += take;
                if take == rest.len() {
                    part += 1;
                    offset = 0;
                }
            }
            let body = out.get_mut(body_start..).ok_or(RecordError::SealFailed)?;
            let tag = self.crypter.seal(&counter, &[], body)?;
            out.extend_from_slice(tag.as_ref());
            self.counter.increment();
            left -= frame_len;
        }
        Ok(())
    }

    /// Test hook: sets the number of records already sealed (the low counter
    /// bytes), keeping the direction bit, to test behaviour near overflow.
    /// Fails with [`RecordError::BadConfig`] if `seq` exceeds the protocol's
    /// counter space (2^64 for REKEY, 2^40 for plain GCM).
    #[doc(hidden)]
    pub fn set_sequence_for_testing(&mut self, seq: u64) -> Result<(), RecordError> {
        self.counter
            .set_sequence(seq)
            .then_some(())
            .ok_or(RecordError::BadConfig)
    }
}

/// Opens the peer's incoming records.
pub struct Opener {
    protocol: RecordProtocol,
    side: Side,
    crypter: Crypter,
    counter: Counter,
    max_recv_frame: usize,
    failed: Option<RecordError>,
}

impl fmt::Debug for Opener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opener")
            .field("protocol", &self.protocol)
            .field("side", &self.side)
            .field("sequence", &self.counter.sequence())
            .field("max_recv_frame", &self.max_recv_frame)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl Opener {
    /// The negotiated record protocol.
    pub fn protocol(&self) -> RecordProtocol {
        self.protocol
    }

    /// Takes at most one complete frame off the front of `input` (leaving any
    /// following bytes), decrypts it in place, and returns its payload;
    /// `Ok(None)` when more input is needed.
    ///
    /// The length limit and the type are checked from the header alone,
    /// before anything is reserved; once they pass and the body is
    /// incomplete, `input` is reserved up to the frame's size so the next
    /// read can fill it. After any error the opener is fused.
    pub fn open(&mut self, input: &mut BytesMut) -> Result<Option<BytesMut>, RecordError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let result = self.open_frame(input);
        if let Err(err) = &result {
            self.failed = Some(err.clone());
        }
        result
    }

    fn open_frame(&mut self, input: &mut BytesMut) -> Result<Option<BytesMut>, RecordError> {
        let Some(frame_len) = frame::parse_header(input, self.max_recv_frame)? else {
            return Ok(None);
        };
        if let Some(missing) = frame_len.checked_sub(input.len()).filter(|&m| m > 0) {
            input.reserve(missing);
            return Ok(None);
        }
        let counter: [u8; COUNTER_LEN] = *self.counter.value().ok_or(RecordError::CounterOverflow)?;
        let mut frame = input.split_to(frame_len);
        let body = frame.get_mut(HEADER_LEN..).ok_or(RecordError::FrameTooSmall)?;
        let payload_len = self.crypter.open(&counter, &[], body)?;
        self.counter.increment();
        frame.advance(HEADER_LEN);
        frame.truncate(payload_len);
        Ok(Some(frame))
    }

    /// Whether the peer's counter is exhausted (no further record can be
    /// opened).
    pub fn is_exhausted(&self) -> bool {
        self.counter.is_exhausted()
    }

    /// Test hook: sets the number of records already opened (the low
    /// counter bytes), keeping the direction bit. See
    /// [`Sealer::set_sequence_for_testing`].
    #[doc(hidden)]
    pub fn set_sequence_for_testing(&mut self, seq: u64) -> Result<(), RecordError> {
        self.counter
            .set_sequence(seq)
            .then_some(())
            .ok_or(RecordError::BadConfig)
    }
}

/// Test hook for the known-answer vectors: the `ALTSRP_GCM_AES128_REKEY`
/// AEAD primitive with an explicit 12-byte counter value as nonce input and
/// optional associated data. Returns ciphertext ‖ tag.
#[doc(hidden)]
pub fn rekey_aead_seal(
    key_data: &[u8],
    counter: &[u8; 12],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, RecordError> {
    let mut crypter = Crypter::new_rekey(key_data, Mode::Privacy)?;
    let mut buf = plaintext.to_vec();
    let tag = crypter.seal(counter, aad, &mut buf)?;
    buf.extend_from_slice(tag.as_ref());
    Ok(buf)
}

/// Test hook: the inverse of [`rekey_aead_seal`]; returns the plaintext.
#[doc(hidden)]
pub fn rekey_aead_open(
    key_data: &[u8],
    counter: &[u8; 12],
    aad: &[u8],
    ciphertext_and_tag: &[u8],
) -> Result<Vec<u8>, RecordError> {
    let mut crypter = Crypter::new_rekey(key_data, Mode::Privacy)?;
    let mut buf = ciphertext_and_tag.to_vec();
    let n = crypter.open(counter, aad, &mut buf)?;
    buf.truncate(n);
    Ok(buf)
}
