//! LDAP StartTLS (RFC 4511 §4.14): an ExtendedRequest for 1.3.6.1.4.1.1466.20037 and an
//! ExtendedResponse with resultCode success (0).

use tokio::io::{AsyncRead, AsyncWrite};
use x509_parser::der_parser::asn1_rs::{Any, Class, FromBer, Tag};

use super::{Conversation, Parsed, StartTlsError, peer_text};

/// LDAPMessage { messageID 1, [APPLICATION 23] { [0] "1.3.6.1.4.1.1466.20037" } }.
const START_TLS_REQUEST: &[u8] = b"\x30\x1d\x02\x01\x01\x77\x18\x80\x16\x31\x2e\x33\x2e\x36\x2e\x31\x2e\x34\x2e\x31\x2e\x31\x34\x36\x36\x2e\x32\x30\x30\x33\x37";

/// The largest response accepted (a StartTLS answer is a few dozen bytes).
const MAX_MESSAGE: usize = 16 * 1024;

pub(super) async fn upgrade<S: AsyncRead + AsyncWrite + Unpin>(
    c: &mut Conversation<'_, S>,
) -> Result<(), StartTlsError> {
    c.send(START_TLS_REQUEST).await?;
    let message = c.next(message).await?;
    let (code, diagnostic) = parse_response(&message).map_err(StartTlsError::Protocol)?;
    match code {
        0 => Ok(()),
        code => Err(StartTlsError::Refused(format!(
            "StartTLS answered resultCode {code} ({})",
            peer_text(&diagnostic)
        ))),
    }
}

/// One BER element with a definite length at the start of `buf` (an LDAPMessage SEQUENCE).
fn message(buf: &[u8], _seen: usize) -> Parsed<Vec<u8>> {
    let protocol = |what: &str| Err(StartTlsError::Protocol(what.to_owned()));
    let (header, len) = match buf {
        [first, ..] if *first != 0x30 => return protocol("the answer is not an LDAP message"),
        [] | [_] => return Ok(None),
        [_, n, ..] if *n < 0x80 => (2, usize::from(*n)),
        [_, n @ 0x81..=0x84, rest @ ..] => {
            let k = usize::from(n & 0x7f);
            let Some(bytes) = rest.get(..k) else {
                return Ok(None);
            };
            let len = bytes
                .iter()
                .fold(0usize, |acc, b| acc << 8 | usize::from(*b));
            (2 + k, len)
        }
        _ => return protocol("unsupported BER length in the LDAP answer"),
    };
    if len > MAX_MESSAGE {
        return Err(StartTlsError::Protocol(format!(
            "an LDAP answer of {len} bytes"
        )));
    }
    let total = header + len;
    Ok(buf.get(..total).map(|m| (m.to_vec(), total)))
}

/// The resultCode and diagnosticMessage of an ExtendedResponse (or of a notice of
/// disconnection, which some servers send instead).
fn parse_response(msg: &[u8]) -> Result<(u32, Vec<u8>), String> {
    let err = |what: &str| format!("malformed LDAP answer: {what}");
    let (_, outer) = Any::from_ber(msg).map_err(|_| err("not BER"))?;
    let (rest, _id) = Any::from_ber(outer.data).map_err(|_| err("no messageID"))?;
    let (_, op) = Any::from_ber(rest).map_err(|_| err("no protocolOp"))?;
    if op.header.class() != Class::Application || op.header.tag() != Tag(24) {
        return Err(err("not an ExtendedResponse"));
    }
    let (rest, code) = Any::from_ber(op.data).map_err(|_| err("no resultCode"))?;
    if code.header.tag() != Tag::Enumerated || code.data.is_empty() || code.data.len() > 4 {
        return Err(err("bad resultCode"));
    }
    let code = code
        .data
        .iter()
        .fold(0u32, |acc, b| acc << 8 | u32::from(*b));
    let (rest, _matched_dn) = Any::from_ber(rest).map_err(|_| err("no matchedDN"))?;
    let diagnostic = Any::from_ber(rest)
        .map(|(_, d)| d.data.to_vec())
        .unwrap_or_default();
    Ok((code, diagnostic))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_is_the_start_tls_extended_operation() {
        assert_eq!(START_TLS_REQUEST.len(), 31);
        assert!(START_TLS_REQUEST.ends_with(b"1.3.6.1.4.1.1466.20037"));
    }

    #[test]
    fn parses_success_and_refusal() {
        // messageID 1, ExtendedResponse { success, "", "" }
        let ok = b"\x30\x0c\x02\x01\x01\x78\x07\x0a\x01\x00\x04\x00\x04\x00";
        assert_eq!(parse_response(ok), Ok((0, Vec::new())));
        // protocolError (2) with a diagnostic
        let refused = b"\x30\x0f\x02\x01\x01\x78\x0a\x0a\x01\x02\x04\x00\x04\x03no!";
        assert_eq!(parse_response(refused), Ok((2, b"no!".to_vec())));
        assert!(parse_response(b"\x30\x03\x02\x01\x01").is_err());
    }

    #[test]
    fn message_framing() {
        assert_eq!(message(b"", 0), Ok(None));
        assert_eq!(message(b"\x30", 0), Ok(None));
        assert!(message(b"\x31", 0).is_err(), "refused at the first byte");
        assert_eq!(message(b"\x30\x03\x02\x01", 0), Ok(None));
        assert_eq!(
            message(b"\x30\x03\x02\x01\x01\xff", 0),
            Ok(Some((b"\x30\x03\x02\x01\x01".to_vec(), 5)))
        );
        assert_eq!(message(b"\x30\x82\x00", 0), Ok(None));
        assert_eq!(
            message(b"\x30\x81\x01\x05", 0),
            Ok(Some((b"\x30\x81\x01\x05".to_vec(), 4)))
        );
        assert!(
            message(b"\x30\x84\xff\xff\xff\xff", 0).is_err(),
            "too large"
        );
        assert!(message(b"\x30\x80", 0).is_err(), "indefinite length");
        assert!(message(b"\x30\x85", 0).is_err());
    }
}
