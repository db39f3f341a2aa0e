//! XMPP client-stream STARTTLS (RFC 6120 §5.4): open a stream, find `<starttls/>` among the
//! stream features, ask for it, and wait for `<proceed/>`.
//!
//! The server's stream is XML, which RFC 6120 §11.6 requires to be UTF-8: bytes that cannot
//! be UTF-8 are a protocol error as soon as they arrive. Everything else is matched on bytes.

use tokio::io::{AsyncRead, AsyncWrite};

use super::{Conversation, MAX_LINE, Parsed, StartTlsError, find, peer_text, resume};

const TLS_NS: &[u8] = b"urn:ietf:params:xml:ns:xmpp-tls";

pub(super) async fn upgrade<S: AsyncRead + AsyncWrite + Unpin>(
    c: &mut Conversation<'_, S>,
    domain: &str,
) -> Result<(), StartTlsError> {
    if domain.contains(['\'', '"', '<', '>', '&']) {
        return Err(StartTlsError::Protocol(format!(
            "{} cannot be an XMPP domain",
            peer_text(domain.as_bytes())
        )));
    }
    let open = format!(
        "<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
    );
    c.send(open.as_bytes()).await?;
    let features = c.next(features).await?;
    if let Some(at) = find(&features, b"stream:error") {
        return Err(StartTlsError::Refused(format!(
            "stream error: {}",
            peer_text(&features[at..])
        )));
    }
    if !offers_starttls(&features) {
        return Err(StartTlsError::Refused(
            "the server does not offer STARTTLS among its stream features".into(),
        ));
    }
    c.send(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        .await?;
    match c.next(answer).await? {
        (Answer::Proceed, _) => Ok(()),
        (Answer::Failure | Answer::StreamError, tag) => Err(StartTlsError::Refused(format!(
            "STARTTLS answered {}",
            peer_text(&tag)
        ))),
        (Answer::Other, tag) => Err(StartTlsError::Protocol(format!(
            "STARTTLS answered neither <proceed/> nor <failure/>: {}",
            peer_text(&tag)
        ))),
    }
}

/// Everything up to the end of the stream features element (or of a stream error). Only
/// those bytes are judged, so what follows them cannot change the verdict.
fn features(buf: &[u8], seen: usize) -> Parsed<Vec<u8>> {
    const ENDS: [&[u8]; 3] = [
        b"</stream:features>",
        b"<stream:features/>",
        b"</stream:error>",
    ];
    // In this order of preference, as a features element may carry an error's name. None
    // was in the first `seen` bytes, so each search starts where one may straddle.
    let used = ENDS.iter().find_map(|end| {
        let from = resume(seen, end.len());
        find(&buf[from..], end).map(|at| from + at + end.len())
    });
    utf8(&buf[..used.unwrap_or(buf.len())], seen)?;
    Ok(used.map(|used| (buf[..used].to_vec(), used)))
}

/// Whether the features list `<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'>`.
fn offers_starttls(features: &[u8]) -> bool {
    let mut rest = features;
    while let Some(at) = find(rest, b"<starttls") {
        rest = &rest[at..];
        let tag_end = rest.iter().position(|&b| b == b'>').unwrap_or(rest.len());
        if find(&rest[..tag_end], TLS_NS).is_some() {
            return true;
        }
        rest = &rest[1..];
    }
    false
}

/// The server's answer to `<starttls/>` (RFC 6120 §5.4.2.2-3): its first element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Proceed,
    Failure,
    StreamError,
    Other,
}

/// The first tag after any whitespace (keepalives, RFC 6120 §4.6.1), up to its `>`, and
/// which answer it is.
fn answer(buf: &[u8], seen: usize) -> Parsed<(Answer, Vec<u8>)> {
    let start = buf
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(buf.len());
    utf8(&buf[..buf.len().min(start + 1)], seen)?;
    match buf.get(start) {
        None => return Ok(None),
        Some(b'<') => {}
        Some(_) => {
            return Err(StartTlsError::Protocol(format!(
                "STARTTLS answered with text, not an element: {}",
                peer_text(&buf[start..])
            )));
        }
    }
    let from = seen.max(start);
    let Some(at) = buf[from..].iter().position(|&b| b == b'>') else {
        utf8(buf, seen)?;
        return if buf.len() - start > MAX_LINE {
            Err(StartTlsError::Protocol(format!(
                "an XML tag longer than {MAX_LINE} bytes: {}",
                peer_text(&buf[start..])
            )))
        } else {
            Ok(None)
        };
    };
    let used = from + at + 1;
    utf8(&buf[..used], seen)?;
    let tag = &buf[start..used];
    let name_end = tag[1..]
        .iter()
        .position(|&b| b.is_ascii_whitespace() || b == b'/' || b == b'>')
        .map_or(tag.len(), |n| n + 1);
    let kind = match &tag[1..name_end] {
        b"proceed" => Answer::Proceed,
        b"failure" => Answer::Failure,
        b"stream:error" => Answer::StreamError,
        _ => Answer::Other,
    };
    Ok(Some(((kind, tag.to_vec()), used)))
}

/// Refuses bytes that cannot be UTF-8; an incomplete sequence at the end may still become
/// so. The first `seen` bytes were checked before (or are checked again: `seen` may exceed
/// `buf`), up to a character that may have been cut.
fn utf8(buf: &[u8], seen: usize) -> Result<(), StartTlsError> {
    // A character is at most 4 bytes: step back 3, then past continuation bytes that belong
    // to a character checked whole before.
    let mut from = seen.saturating_sub(3).min(buf.len());
    while from < seen.min(buf.len()) && buf[from] & 0xc0 == 0x80 {
        from += 1;
    }
    match std::str::from_utf8(&buf[from..]) {
        Err(e) if e.error_len().is_some() => {
            let at = from + e.valid_up_to();
            Err(StartTlsError::Protocol(format!(
                "the server's XML stream is not UTF-8 (RFC 6120 §11.6) at byte {at}: {}",
                peer_text(&buf[at..])
            )))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN: &[u8] = b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";

    #[test]
    fn features_end_and_offer() {
        let mut buf = OPEN.to_vec();
        buf.extend_from_slice(b"<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:feat");
        assert_eq!(features(&buf, 0), Ok(None), "not complete yet");
        let seen = buf.len();
        buf.extend_from_slice(b"ures>");
        let (f, used) = features(&buf, seen).unwrap().unwrap();
        assert_eq!(used, buf.len(), "found across the old and new bytes");
        assert!(offers_starttls(&f));
        assert!(!offers_starttls(b"<starttls xmlns='urn:x'/><starttlsfoo>"));
        assert!(offers_starttls(
            b"<starttls xmlns='urn:x'/><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
        ));
    }

    #[test]
    fn bytes_that_cannot_be_utf8_are_refused_at_once() {
        // A run of 0xff before the end of the features: the input that panicked when lossily
        // decoded text was cut at a raw-buffer index.
        let mut buf = OPEN.to_vec();
        buf.extend_from_slice(b"<stream:features>");
        buf.extend_from_slice(&[0xff; 40]);
        let err = features(&buf, 0).unwrap_err();
        let StartTlsError::Protocol(msg) = &err else {
            panic!("{err:?}");
        };
        assert!(
            msg.starts_with("the server's XML stream is not UTF-8"),
            "{msg}"
        );
        assert!(msg.contains(r#""\xff\xff"#), "{msg}");
        assert!(msg.len() < 200, "{msg}");
    }

    #[test]
    fn characters_cut_between_reads_are_checked_whole() {
        let text = "<stream:features>é€😀</stream:features>".as_bytes();
        // Every way of splitting the text into what was seen and what is new.
        for seen in 0..text.len() {
            assert_eq!(utf8(&text[..seen], 0), Ok(()), "{seen}");
            assert_eq!(utf8(text, seen), Ok(()), "{seen}");
        }
        assert!(features(text, 20).unwrap().is_some());
        let bad = b"<a>\xe2\x82\x28";
        assert!(utf8(&bad[..5], 0).is_ok(), "incomplete so far");
        assert!(
            utf8(bad, 5).is_err(),
            "an invalid continuation byte is caught"
        );
    }

    #[test]
    fn the_answer_is_the_first_element() {
        let (kind, tag) = answer(b" \r\n<failure xmlns='x'/><proceed/>", 0)
            .unwrap()
            .unwrap()
            .0;
        assert_eq!(kind, Answer::Failure);
        assert_eq!(tag, b"<failure xmlns='x'/>");
        assert_eq!(
            answer(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'", 0),
            Ok(None)
        );
        assert_eq!(
            answer(b"<proceed/>", 3).unwrap().unwrap(),
            ((Answer::Proceed, b"<proceed/>".to_vec()), 10)
        );
        assert_eq!(
            answer(b"<stream:error><host-unknown/>", 0)
                .unwrap()
                .unwrap()
                .0
                .0,
            Answer::StreamError
        );
        assert_eq!(
            answer(b"<proceeding/>", 0).unwrap().unwrap().0.0,
            Answer::Other
        );
        assert!(answer(b"junk<proceed/>", 0).is_err());
        assert!(answer(&[b'<'; MAX_LINE + 2], 0).is_err());
    }
}
