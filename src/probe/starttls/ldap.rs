//! LDAP StartTLS (RFC 4511 §4.14): an ExtendedRequest for 1.3.6.1.4.1.1466.20037 and an
//! ExtendedResponse with resultCode success (0).

use tokio::io::{AsyncRead, AsyncWrite};
use x509_parser::der_parser::asn1_rs::{Any, Class, FromBer, Tag};

use super::{Conversation, StartTlsError};

/// LDAPMessage { messageID 1, [APPLICATION 23] { [0] "1.3.6.1.4.1.1466.20037" } }.
const START_TLS_REQUEST: &[u8] = b"\x30\x1d\x02\x01\x01\x77\x18\x80\x16\x31\x2e\x33\x2e\x36\x2e\x31\x2e\x34\x2e\x31\x2e\x31\x34\x36\x36\x2e\x32\x30\x30\x33\x37";

/// The largest response accepted (a StartTLS answer is a few dozen bytes).
const MAX_MESSAGE: usize = 16 * 1024;

pub(super) async fn upgrade<S: AsyncRead + AsyncWrite + Unpin>(
    c: &mut Conversation<'_, S>,
) -> Result<(), StartTlsError> {
    c.send(START_TLS_REQUEST).await?;
    let message = read_message(c).await?;
    let (code, diagnostic) = parse_response(&message).map_err(StartTlsError::Protocol)?;
    match code {
        0 => Ok(()),
        code => Err(StartTlsError::Refused(format!(
            "StartTLS answered resultCode {code} ({})",
            diagnostic.trim()
        ))),
    }
}

/// Reads one BER element with a definite length.
async fn read_message<S: AsyncRead + AsyncWrite + Unpin>(
    c: &mut Conversation<'_, S>,
) -> Result<Vec<u8>, StartTlsError> {
    let mut msg = c.exact(2).await?;
    if msg[0] != 0x30 {
        return Err(StartTlsError::Protocol(
            "the answer is not an LDAP message".into(),
        ));
    }
    let len = match msg[1] {
        n if n < 0x80 => usize::from(n),
        0x81..=0x84 => {
            let extra = c.exact(usize::from(msg[1] & 0x7f)).await?;
            let len = extra
                .iter()
                .fold(0usize, |acc, b| acc << 8 | usize::from(*b));
            msg.extend_from_slice(&extra);
            len
        }
        _ => {
            return Err(StartTlsError::Protocol(
                "unsupported BER length in the LDAP answer".into(),
            ));
        }
    };
    if len > MAX_MESSAGE {
        return Err(StartTlsError::Protocol(format!(
            "an LDAP answer of {len} bytes"
        )));
    }
    msg.extend(c.exact(len).await?);
    Ok(msg)
}

/// The resultCode and diagnosticMessage of an ExtendedResponse (or of a notice of
/// disconnection, which some servers send instead).
fn parse_response(msg: &[u8]) -> Result<(u32, String), String> {
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
        .map(|(_, d)| String::from_utf8_lossy(d.data).into_owned())
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
        assert_eq!(parse_response(ok), Ok((0, String::new())));
        // protocolError (2) with a diagnostic
        let refused = b"\x30\x0f\x02\x01\x01\x78\x0a\x0a\x01\x02\x04\x00\x04\x03no!";
        assert_eq!(parse_response(refused), Ok((2, "no!".into())));
        assert!(parse_response(b"\x30\x03\x02\x01\x01").is_err());
    }
}
