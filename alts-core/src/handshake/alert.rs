//! Alert codes: what a refusing side tells its (still unauthenticated) peer.
//!
//! An alert carries a number and a fixed generic text per number, never the
//! detail of the refusal: a prober learns that it was refused and roughly
//! why, but not the policy pattern, the revoked ID, the client's target
//! identities or either side's offered lists. The refusing side keeps the
//! detail in its own [`HandshakeError`](super::HandshakeError).

use std::fmt;

use super::messages::MAX_ALERT;

/// The kind of refusal carried by an alert on the wire.
///
/// Numbers are stable. Codes this version does not know are kept as
/// [`AlertCode::Other`]; [`AlertCode::from_u32`] never returns `Other` for a
/// number that has its own variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AlertCode {
    /// 1: a handshake message could not be decoded, was too large or arrived
    /// out of order.
    Malformed,
    /// 2: the handshake version is not supported.
    UnsupportedVersion,
    /// 3: the peer's certificate chain was refused (signature, root,
    /// validity, revocation or issuance policy).
    CertificateNotAccepted,
    /// 4: no handshake cipher, record protocol, application protocol or RPC
    /// version in common, or a required mode (forward secrecy, the
    /// KCI-resistant variant) missing.
    NoCommonParameters,
    /// 5: the peer is authenticated but not authorized (not one of the
    /// client's target identities, or refused by the server's predicate).
    NotAuthorized,
    /// 6: a Finished MAC or a claimed resumption did not verify.
    VerificationFailed,
    /// 7: the refusing side failed on its own (credentials, randomness).
    Internal,
    /// A code this version does not know.
    Other(u32),
}

impl AlertCode {
    /// The code for a number received on the wire.
    pub fn from_u32(code: u32) -> Self {
        match code {
            1 => Self::Malformed,
            2 => Self::UnsupportedVersion,
            3 => Self::CertificateNotAccepted,
            4 => Self::NoCommonParameters,
            5 => Self::NotAuthorized,
            6 => Self::VerificationFailed,
            7 => Self::Internal,
            other => Self::Other(other),
        }
    }

    /// The number sent on the wire.
    pub fn as_u32(self) -> u32 {
        match self {
            Self::Malformed => 1,
            Self::UnsupportedVersion => 2,
            Self::CertificateNotAccepted => 3,
            Self::NoCommonParameters => 4,
            Self::NotAuthorized => 5,
            Self::VerificationFailed => 6,
            Self::Internal => 7,
            Self::Other(n) => n,
        }
    }

    /// The fixed text sent with this code (`None` for [`AlertCode::Other`]).
    fn generic_text(self) -> Option<&'static str> {
        Some(match self {
            Self::Malformed => "malformed handshake message",
            Self::UnsupportedVersion => "unsupported handshake version",
            Self::CertificateNotAccepted => "peer certificate not accepted",
            Self::NoCommonParameters => "no common parameters",
            Self::NotAuthorized => "peer not authorized",
            Self::VerificationFailed => "handshake verification failed",
            Self::Internal => "internal error",
            Self::Other(_) => return None,
        })
    }
}

impl fmt::Display for AlertCode {
    /// The generic text of the code, the same for every refusal of that kind.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.generic_text() {
            Some(t) => f.write_str(t),
            None => write!(f, "handshake refused (unknown alert code {})", self.as_u32()),
        }
    }
}

impl From<u32> for AlertCode {
    fn from(code: u32) -> Self {
        Self::from_u32(code)
    }
}

impl From<AlertCode> for u32 {
    fn from(code: AlertCode) -> Self {
        code.as_u32()
    }
}

/// Characters dropped from received alert text besides control characters:
/// zero-width and bidirectional formatting marks, which can make a log line
/// read differently from what it contains.
fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}'
    )
}

/// Alert text as reported locally: control and invisible formatting
/// characters removed, at most [`MAX_ALERT`] bytes (cut at a character
/// boundary), and the code's generic text when nothing is left.
pub(crate) fn sanitize_received(code: AlertCode, text: &str) -> String {
    let mut out = String::new();
    for c in text
        .chars()
        .filter(|c| !c.is_control() && !is_invisible_format(*c))
    {
        if out.len() + c.len_utf8() > MAX_ALERT {
            break;
        }
        out.push(c);
    }
    match out.trim() {
        "" => code.to_string(),
        t => t.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip() {
        for n in 0..20 {
            assert_eq!(AlertCode::from_u32(n).as_u32(), n);
            assert_eq!(u32::from(AlertCode::from(n)), n);
        }
        assert_eq!(AlertCode::from_u32(3), AlertCode::CertificateNotAccepted);
        assert_eq!(AlertCode::from_u32(0), AlertCode::Other(0));
        assert_eq!(
            AlertCode::from_u32(99).to_string(),
            "handshake refused (unknown alert code 99)"
        );
        assert_eq!(AlertCode::NotAuthorized.to_string(), "peer not authorized");
    }

    #[test]
    fn received_text_is_sanitized_and_capped() {
        let code = AlertCode::NotAuthorized;
        assert_eq!(sanitize_received(code, "a\u{1b}[31mb\nc\u{202E}d"), "a[31mbcd");
        assert_eq!(sanitize_received(code, ""), "peer not authorized");
        assert_eq!(sanitize_received(code, " \t\u{200B} "), "peer not authorized");
        let long = "é".repeat(MAX_ALERT);
        let s = sanitize_received(code, &long);
        assert!(s.len() <= MAX_ALERT && s.len() > MAX_ALERT - 2, "{}", s.len());
    }
}
