//! ALTS record framing, as stock gRPC writes it:
//!
//! ```text
//! u32 LE  length  = 4 (type) + len(payload) + 16 (tag)   (does not count itself)
//! u32 LE  type    = 6
//! bytes   payload (ciphertext, or clear text in GMAC mode)
//! 16 B    tag
//! ```

use super::RecordError;
use super::crypter::TAG_LEN;

/// Size of the `length` field.
pub(crate) const LEN_FIELD: usize = 4;
/// Size of the `length` and `type` fields together.
pub(crate) const HEADER_LEN: usize = 8;
/// The record type of data frames.
pub(crate) const RECORD_TYPE: u32 = 6;
/// The smallest valid `length` field: type + tag (empty payload).
pub(crate) const MIN_LENGTH_FIELD: usize = HEADER_LEN - LEN_FIELD + TAG_LEN;

/// Reads and checks the frame header at the start of `input`.
///
/// Returns `Ok(None)` when fewer than 8 bytes are available (after checking
/// the length field as soon as its 4 bytes are there), otherwise
/// `Ok(Some(total))` with the whole frame size on the wire (`4 + length`),
/// whether or not the rest of the frame has arrived yet.
///
/// Like stock gRPC, only the low byte of the type is checked (`type & 0xff
/// == 6`), so a peer that sets the upper bytes still interoperates.
pub(crate) fn parse_header(input: &[u8], limit: usize) -> Result<Option<usize>, RecordError> {
    let Some(len_bytes) = input.get(..LEN_FIELD) else {
        return Ok(None);
    };
    let length = u32::from_le_bytes(len_bytes.try_into().map_err(|_| RecordError::FrameTooSmall)?);
    // A u32 always fits in usize on the platforms we build for; saturate otherwise.
    let length = usize::try_from(length).unwrap_or(usize::MAX);
    if length > limit {
        return Err(RecordError::FrameTooLarge { len: length, limit });
    }
    if length < MIN_LENGTH_FIELD {
        return Err(RecordError::FrameTooSmall);
    }
    let Some(type_bytes) = input.get(LEN_FIELD..HEADER_LEN) else {
        return Ok(None);
    };
    let ty = u32::from_le_bytes(type_bytes.try_into().map_err(|_| RecordError::FrameTooSmall)?);
    if ty & 0xff != RECORD_TYPE {
        return Err(RecordError::WrongType(ty));
    }
    Ok(Some(LEN_FIELD.saturating_add(length)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(length: u32, ty: u32) -> Vec<u8> {
        let mut v = length.to_le_bytes().to_vec();
        v.extend_from_slice(&ty.to_le_bytes());
        v
    }

    #[test]
    fn needs_more_below_eight_bytes() {
        let h = header(30, 6);
        for n in 0..8 {
            assert_eq!(parse_header(&h[..n], 1 << 20), Ok(None), "prefix {n}");
        }
        assert_eq!(parse_header(&h, 1 << 20), Ok(Some(34)));
    }

    #[test]
    fn length_checked_from_four_bytes() {
        let h = header(1 << 21, 6);
        assert_eq!(
            parse_header(&h[..4], 1 << 20),
            Err(RecordError::FrameTooLarge {
                len: 1 << 21,
                limit: 1 << 20
            })
        );
        assert_eq!(
            parse_header(&header(19, 6)[..4], 1 << 20),
            Err(RecordError::FrameTooSmall)
        );
        assert_eq!(parse_header(&header(20, 6), 1 << 20), Ok(Some(24)));
    }

    #[test]
    fn only_low_type_byte_checked() {
        assert_eq!(parse_header(&header(20, 0x0100_0006), 100), Ok(Some(24)));
        assert_eq!(parse_header(&header(20, 7), 100), Err(RecordError::WrongType(7)));
    }
}
