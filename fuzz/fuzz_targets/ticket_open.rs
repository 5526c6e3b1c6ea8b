//! Resumption tickets.
//!
//! Raw mode (first byte even): the rest of the input goes to
//! `ResumptionKey::open_as` for both kinds (must fail: nobody but the key
//! holder can seal).
//!
//! Sealed mode (first byte odd): the rest is sealed as ticket plaintext with
//! the key's own AES-256-GCM parameters (through ring) and the associated
//! data of the kind the mode byte picks, so decoding after decryption is
//! reached. `open_as` must then succeed for that kind exactly when the
//! plaintext decodes as `TicketContents`, never for the other kind, and a
//! decoded ticket must round-trip through `seal_as` → `open_as`.
#![no_main]

use alts_core::crypto::DeterministicRandom;
use alts_core::resumption::{MAX_TICKET_LEN, ResumptionKey, TicketKind};
use alts_proto::alts_v1::TicketContents;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use ring::aead;

const RID: [u8; 16] = [0x5e; 16];
const SECRET: [u8; 32] = [0x22; 32];

fuzz_target!(|data: &[u8]| {
    let [mode, rest @ ..] = data else { return };
    let key = ResumptionKey::new(RID, &SECRET);
    if mode % 2 == 0 {
        for kind in [TicketKind::ClientTicket, TicketKind::ServerTicket] {
            assert!(key.open_as(kind, rest).is_err(), "forged ticket opened");
        }
        return;
    }
    let (kind, other, kind_byte) = if mode & 2 == 0 {
        (TicketKind::ClientTicket, TicketKind::ServerTicket, 1u8)
    } else {
        (TicketKind::ServerTicket, TicketKind::ClientTicket, 2u8)
    };
    let (nonce, plain) = rest.split_at(rest.len().min(12));
    let mut n = [0u8; 12];
    n[..nonce.len()].copy_from_slice(nonce);
    let mut aad = RID.to_vec();
    aad.extend_from_slice(b"alts v2 ticket");
    aad.push(kind_byte);
    let sealing = aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_256_GCM, &SECRET).unwrap());
    let mut body = plain.to_vec();
    let tag = sealing
        .seal_in_place_separate_tag(
            aead::Nonce::assume_unique_for_key(n),
            aead::Aad::from(&aad[..]),
            &mut body,
        )
        .unwrap();
    let mut ticket = n.to_vec();
    ticket.extend_from_slice(&body);
    ticket.extend_from_slice(tag.as_ref());
    assert!(key.open_as(other, &ticket).is_err(), "opened as the other kind");
    let opened = key.open_as(kind, &ticket);
    if ticket.len() > MAX_TICKET_LEN {
        assert!(opened.is_err());
        return;
    }
    let decoded = TicketContents::decode(plain);
    assert_eq!(opened.is_ok(), decoded.is_ok());
    if let Ok(contents) = opened {
        assert_eq!(Ok(&contents), decoded.as_ref().map_err(|_| ()));
        if let Ok(resealed) = key.seal_as(kind, &contents, &DeterministicRandom::new(rest)) {
            assert_eq!(key.open_as(kind, &resealed).unwrap(), contents);
            assert!(key.open_as(other, &resealed).is_err());
        }
    }
});
