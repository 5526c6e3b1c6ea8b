//! The handshake key schedule (see `alts-core/HANDSHAKE.md`).
//!
//! ```text
//! TH1    = SHA-256(framed ClientInit || framed ServerInit)
//! IKM    = full:    X25519(static_c, static_s) [|| X25519(eph_c, eph_s)]
//!                   [KCI: || X25519(eph_c, static_s) || X25519(static_c, eph_s)]
//!          resumed: R [|| X25519(eph_c, eph_s)]
//! PRK    = HKDF-Extract(salt = TH1, IKM)
//! M      = HKDF-Expand(PRK, "alts v1 record key material", key_data_len)
//! R_c    = HKDF-Expand(PRK, "alts v1 resumption secret client ticket", 32)
//! R_s    = HKDF-Expand(PRK, "alts v1 resumption secret server ticket", 32)
//! A      = HKDF-Expand(PRK, "alts v1 authenticator", 32)
//! SF.mac = HMAC-SHA256(A, "alts v1 server finished" || TH1 || D(SF.new_ticket))
//! TH2    = SHA-256(framed ClientInit || framed ServerInit || framed ServerFinished)
//! CF.mac = HMAC-SHA256(A, "alts v1 client finished" || TH2 || D(CF.new_ticket))
//! D(t)   = SHA-256(u32be(len rid) || rid || u32be(len ticket) || ticket), or 32 zero bytes without t
//! ```

use crate::crypto::backend::{self as ring, hkdf, hmac}; // `ring::` below: the build's provider library
use alts_proto::alts_v1::ResumptionTicket;
use zeroize::Zeroizing;

use subtle::ConstantTimeEq;

use crate::resumption::{ResumptionSecret, SECRET_LEN};

/// HKDF-Expand label of the record key material `M`.
pub const LABEL_RECORD: &[u8] = b"alts v1 record key material";
/// HKDF-Expand label of `R_c`, the secret inside the server-sealed (client-side) ticket.
pub const LABEL_RESUMPTION_CLIENT_TICKET: &[u8] = b"alts v1 resumption secret client ticket";
/// HKDF-Expand label of `R_s`, the secret inside the client-sealed (server-side) ticket.
pub const LABEL_RESUMPTION_SERVER_TICKET: &[u8] = b"alts v1 resumption secret server ticket";
/// HKDF-Expand label of the authenticator secret `A`.
pub const LABEL_AUTHENTICATOR: &[u8] = b"alts v1 authenticator";
/// HMAC label of ServerFinished.
pub const LABEL_SERVER_FINISHED: &[u8] = b"alts v1 server finished";
/// HMAC label of ClientFinished.
pub const LABEL_CLIENT_FINISHED: &[u8] = b"alts v1 client finished";

/// Largest key material the schedule hands out.
const MAX_KEY_DATA: usize = 128;

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// Longest IKM: the static result plus up to three more X25519 results (KCI
/// and ephemeral), or `R` plus the ephemeral result.
const MAX_IKM: usize = 4 * 32;

/// The secrets derived from one handshake. The byte secrets are zeroized on
/// drop; the authenticator is kept as the HMAC key built from it (built once
/// for both Finished MACs; the raw bytes are zeroized right after).
pub(crate) struct Secrets {
    pub(crate) record_key_material: Zeroizing<Vec<u8>>,
    pub(crate) r_client_ticket: ResumptionSecret,
    pub(crate) r_server_ticket: ResumptionSecret,
    authenticator: hmac::Key,
}

fn expand(prk: &hkdf::Prk, label: &[u8], out: &mut [u8]) -> Result<(), ()> {
    let info = [label];
    prk.expand(&info, Len(out.len()))
        .and_then(|okm| okm.fill(out))
        .map_err(|_| ())
}

/// Runs the schedule over the concatenation of `ikm_parts` and the transcript hash.
pub(crate) fn derive(ikm_parts: &[&[u8]], th1: &[u8; 32], key_data_len: usize) -> Result<Secrets, ()> {
    if key_data_len > MAX_KEY_DATA {
        return Err(());
    }
    let mut ikm = Zeroizing::new([0u8; MAX_IKM]);
    let mut len = 0;
    for p in ikm_parts {
        ikm.get_mut(len..len + p.len()).ok_or(())?.copy_from_slice(p);
        len += p.len();
    }
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, th1).extract(ikm.get(..len).ok_or(())?);
    let mut m = Zeroizing::new(vec![0u8; key_data_len]);
    let mut rc = Zeroizing::new([0u8; SECRET_LEN]);
    let mut rs = Zeroizing::new([0u8; SECRET_LEN]);
    let mut a = Zeroizing::new([0u8; 32]);
    expand(&prk, LABEL_RECORD, &mut m)?;
    expand(&prk, LABEL_RESUMPTION_CLIENT_TICKET, rc.as_mut())?;
    expand(&prk, LABEL_RESUMPTION_SERVER_TICKET, rs.as_mut())?;
    expand(&prk, LABEL_AUTHENTICATOR, a.as_mut())?;
    Ok(Secrets {
        record_key_material: m,
        r_client_ticket: ResumptionSecret(rc),
        r_server_ticket: ResumptionSecret(rs),
        authenticator: hmac::Key::new(hmac::HMAC_SHA256, a.as_ref()),
    })
}

/// `D(t)`: binds an optional ticket into a Finished MAC.
pub(crate) fn ticket_digest(t: Option<&ResumptionTicket>) -> [u8; 32] {
    let Some(t) = t else { return [0u8; 32] };
    let mut h = Transcript::new();
    h.add(&u32::try_from(t.rid.len()).unwrap_or(u32::MAX).to_be_bytes());
    h.add(&t.rid);
    h.add(&u32::try_from(t.ticket.len()).unwrap_or(u32::MAX).to_be_bytes());
    h.add(&t.ticket);
    h.current()
}

impl Secrets {
    /// `HMAC(A, label || th || D(ticket))`, streamed (no buffer).
    fn mac(&self, label: &[u8], th: &[u8; 32], ticket: Option<&ResumptionTicket>) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.authenticator);
        ctx.update(label);
        ctx.update(th);
        ctx.update(&ticket_digest(ticket));
        ctx.sign()
    }

    /// Constant-time comparison of a received MAC with the expected one.
    fn mac_matches(
        &self,
        label: &[u8],
        th: &[u8; 32],
        ticket: Option<&ResumptionTicket>,
        mac: &[u8],
    ) -> bool {
        let want = self.mac(label, th, ticket);
        bool::from(want.as_ref().ct_eq(mac))
    }

    /// The ServerFinished MAC.
    pub(crate) fn server_finished(&self, th1: &[u8; 32], ticket: Option<&ResumptionTicket>) -> Vec<u8> {
        self.mac(LABEL_SERVER_FINISHED, th1, ticket).as_ref().to_vec()
    }

    /// The ClientFinished MAC.
    pub(crate) fn client_finished(&self, th2: &[u8; 32], ticket: Option<&ResumptionTicket>) -> Vec<u8> {
        self.mac(LABEL_CLIENT_FINISHED, th2, ticket).as_ref().to_vec()
    }

    /// Checks a ServerFinished MAC in constant time.
    pub(crate) fn verify_server_finished(
        &self,
        th1: &[u8; 32],
        ticket: Option<&ResumptionTicket>,
        mac: &[u8],
    ) -> bool {
        self.mac_matches(LABEL_SERVER_FINISHED, th1, ticket, mac)
    }

    /// Checks a ClientFinished MAC in constant time.
    pub(crate) fn verify_client_finished(
        &self,
        th2: &[u8; 32],
        ticket: Option<&ResumptionTicket>,
        mac: &[u8],
    ) -> bool {
        self.mac_matches(LABEL_CLIENT_FINISHED, th2, ticket, mac)
    }
}

/// The running SHA-256 of the framed handshake messages, so TH1 and TH2
/// are read off one pass over the bytes.
#[derive(Clone)]
pub(crate) struct Transcript(ring::digest::Context);

impl Transcript {
    pub(crate) fn new() -> Self {
        Self(ring::digest::Context::new(&ring::digest::SHA256))
    }

    /// Appends one framed message.
    pub(crate) fn add(&mut self, framed: &[u8]) {
        self.0.update(framed);
    }

    /// The hash of everything added so far.
    pub(crate) fn current(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.0.clone().finish().as_ref());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// Known answers: a change here changes the wire protocol.
    #[test]
    fn key_schedule_known_answer() {
        let dh = [0x11u8; 32];
        let mut t = Transcript::new();
        t.add(b"client init");
        t.add(b"server init");
        let th1 = t.current();
        let s = derive(&[&dh], &th1, 44).unwrap();
        let got = [
            hex(&th1),
            hex(&s.record_key_material),
            hex(s.r_client_ticket.as_bytes()),
            hex(s.r_server_ticket.as_bytes()),
            hex(&s.server_finished(&th1, None)),
            hex(&s.client_finished(&th1, None)),
        ];
        let want = KAT;
        assert_eq!(got, want, "key schedule output changed: {got:#?}");
    }

    /// Cross-checked against an independent HKDF/HMAC (Python's `hmac`/`hashlib`).
    const KAT: [&str; 6] = [
        "4c8d03e5fc1f155924c4d65e7ee0c09988ff23dab62499a6dac070abc2f16bea",
        "1f34922498cb875bace6b729dc627a9c38973caca692ff2e953ce6e83f8734c7028a518854194f6b8847ea5e",
        "f864f53080909a069050b601711a612f566fb20bc7b889fa684981ee1ab5fbe2",
        "135d3116b18cbb30bf1019d15df73121e110d98bc673d6c7421c9b4480bbda67",
        "8cb27520900c258cf12b617e1f6e810f91797c581b510423bfb5d2e16a8165a8",
        "b712478b94c5a2fa92fbf98102fc1c6821cac43d3019d883f82bda00337b3fb0",
    ];

    #[test]
    fn finished_labels_differ_and_verify() {
        let th = [7u8; 32];
        let s = derive(&[&[1u8; 32]], &th, 44).unwrap();
        let sf = s.server_finished(&th, None);
        let cf = s.client_finished(&th, None);
        assert_ne!(sf, cf);
        assert!(s.verify_server_finished(&th, None, &sf));
        assert!(!s.verify_server_finished(&th, None, &cf));
        assert!(!s.verify_client_finished(&th, None, &sf));
        let t = ResumptionTicket {
            rid: vec![1],
            ticket: vec![2],
        };
        assert!(!s.verify_server_finished(&th, Some(&t), &sf));
    }
}
