//! The 12-byte little-endian record counter. Records the server sends have
//! the top bit of the last byte set; only the low 8 bytes (REKEY protocols) or 5 bytes
//! (plain GCM) count, and an overflow invalidates the counter for good.
//!
//! The counter is never sent on the wire: each side keeps its own expected
//! value for each direction, so a replayed, reordered or dropped record is
//! opened with the wrong nonce and fails authentication.

use super::Side;

/// Length of the counter (and of the AES-GCM nonce) in bytes.
pub(crate) const COUNTER_LEN: usize = 12;

/// A record counter: 12 bytes, little-endian, of which only the low
/// `overflow_len` bytes count. Once those wrap the counter is invalid for
/// good (it never wraps back to a used value).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Counter {
    value: [u8; COUNTER_LEN],
    overflow_len: usize,
    invalid: bool,
}

impl Counter {
    /// The start value of the records `sender` sends: zero for the client,
    /// `00..00 80` (the direction bit) for the server.
    pub(crate) fn new(sender: Side, overflow_len: usize) -> Self {
        let mut value = [0u8; COUNTER_LEN];
        if sender == Side::Server {
            value[COUNTER_LEN - 1] = 0x80;
        }
        Self {
            value,
            overflow_len: overflow_len.min(COUNTER_LEN - 1),
            invalid: false,
        }
    }

    /// The current value, or `None` once the counter has overflowed.
    pub(crate) fn value(&self) -> Option<&[u8; COUNTER_LEN]> {
        (!self.invalid).then_some(&self.value)
    }

    /// Advances by one; past the last value the counter becomes invalid.
    pub(crate) fn increment(&mut self) {
        for byte in self.value.iter_mut().take(self.overflow_len) {
            *byte = byte.wrapping_add(1);
            if *byte != 0 {
                return;
            }
        }
        self.invalid = true;
    }

    /// Sets the low `overflow_len` bytes to `seq` (little-endian), keeping the
    /// direction bit. Returns `false` (and changes nothing) if `seq` does not
    /// fit in `overflow_len` bytes. For tests near the overflow limit.
    pub(crate) fn set_sequence(&mut self, seq: u64) -> bool {
        let bits = self.overflow_len.saturating_mul(8);
        if bits < 64 && seq >> bits != 0 {
            return false;
        }
        for (byte, src) in self
            .value
            .iter_mut()
            .zip(seq.to_le_bytes())
            .take(self.overflow_len)
        {
            *byte = src;
        }
        self.invalid = false;
        true
    }

    /// The low 8 bytes as a number (for `Debug` output only).
    pub(crate) fn sequence(&self) -> u64 {
        let mut low = [0u8; 8];
        for (dst, src) in low.iter_mut().zip(self.value.iter()).take(self.overflow_len) {
            *dst = *src;
        }
        u64::from_le_bytes(low)
    }

    /// Whether the counter has overflowed.
    pub(crate) fn is_exhausted(&self) -> bool {
        self.invalid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_values_and_direction_bit() {
        assert_eq!(Counter::new(Side::Client, 8).value(), Some(&[0u8; 12]));
        let mut server = [0u8; 12];
        server[11] = 0x80;
        assert_eq!(Counter::new(Side::Server, 8).value(), Some(&server));
    }

    #[test]
    fn increments_little_endian_with_carry() {
        let mut c = Counter::new(Side::Server, 8);
        assert!(c.set_sequence(0xff));
        c.increment();
        let v = c.value().copied().unwrap();
        assert_eq!(&v[..3], &[0x00, 0x01, 0x00]);
        assert_eq!(v[11], 0x80);
    }

    #[test]
    fn overflow_is_permanent() {
        let mut c = Counter::new(Side::Client, 5);
        assert!(!c.set_sequence(1 << 40));
        assert!(c.set_sequence((1 << 40) - 1));
        assert!(c.value().is_some());
        c.increment();
        assert!(c.value().is_none());
        c.increment();
        assert!(c.value().is_none());
        assert!(c.is_exhausted());
    }

    #[test]
    fn rekey_overflow_after_u64_max() {
        let mut c = Counter::new(Side::Server, 8);
        assert!(c.set_sequence(u64::MAX));
        let v = c.value().copied().unwrap();
        assert_eq!(&v[..8], &[0xff; 8]);
        assert_eq!(&v[8..], &[0, 0, 0, 0x80]);
        c.increment();
        assert!(c.value().is_none());
    }
}
