//! XMPP client-stream STARTTLS (RFC 6120 §5.4): open a stream, find `<starttls/>` among the
//! stream features, ask for it, and wait for `<proceed/>`.
//!
//! The server's stream is XML, which RFC 6120 §11.6 requires to be UTF-8: bytes that cannot
//! be UTF-8 are a protocol error as soon as they arrive. Everything else is matched on bytes.

use tokio::io::{AsyncRead, AsyncWrite};

use super::{Conversation, Parsed, StartTlsError, find, peer_text};

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
        (_, text) => Err(StartTlsError::Refused(format!(
            "STARTTLS answered {}",
            peer_text(&text)
        ))),
    }
}

/// Everything up to the end of the stream features element (or of a stream error).
fn features(buf: &[u8]) -> Parsed<Vec<u8>> {
    utf8(buf)?;
    const ENDS: [&[u8]; 3] = [
        b"</stream:features>",
        b"<stream:features/>",
        b"</stream:error>",
    ];
    // In this order of preference, as a features element may carry an error's name.
    Ok(ENDS.iter().find_map(|end| {
        find(buf, end).map(|at| {
            let used = at + end.len();
            (buf[..used].to_vec(), used)
        })
    }))
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

/// The server's answer to `<starttls/>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Proceed,
    Failure,
    StreamError,
}

/// The first `<proceed`, `<failure` or stream error and its bytes up to the end of that tag.
fn answer(buf: &[u8]) -> Parsed<(Answer, Vec<u8>)> {
    utf8(buf)?;
    let first = [
        (Answer::Proceed, &b"<proceed"[..]),
        (Answer::Failure, b"<failure"),
        (Answer::StreamError, b"stream:error"),
    ]
    .into_iter()
    .filter_map(|(kind, tag)| find(buf, tag).map(|at| (at, kind)))
    .min_by_key(|(at, _)| *at);
    let Some((at, kind)) = first else {
        return Ok(None);
    };
    Ok(buf[at..].iter().position(|&b| b == b'>').map(|end| {
        let used = at + end + 1;
        ((kind, buf[..used].to_vec()), used)
    }))
}

/// Refuses bytes that cannot be UTF-8; an incomplete sequence at the end may still become so.
fn utf8(buf: &[u8]) -> Result<(), StartTlsError> {
    match std::str::from_utf8(buf) {
        Err(e) if e.error_len().is_some() => Err(StartTlsError::Protocol(format!(
            "the server's XML stream is not UTF-8 (RFC 6120 §11.6) at byte {}: {}",
            e.valid_up_to(),
            peer_text(&buf[e.valid_up_to()..])
        ))),
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
        buf.extend_from_slice(b"<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>");
        assert_eq!(features(&buf), Ok(None), "not complete yet");
        buf.extend_from_slice(b"</stream:features>");
        let (f, used) = features(&buf).unwrap().unwrap();
        assert_eq!(used, buf.len());
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
        let err = features(&buf).unwrap_err();
        let StartTlsError::Protocol(msg) = &err else {
            panic!("{err:?}");
        };
        assert!(
            msg.starts_with("the server's XML stream is not UTF-8"),
            "{msg}"
        );
        assert!(msg.contains(r#""\xff\xff"#), "{msg}");
        assert!(msg.len() < 200, "{msg}");
        // An incomplete character at the end waits for its last bytes.
        assert_eq!(
            features("<stream:features>é".as_bytes().split_last().unwrap().1),
            Ok(None)
        );
        assert!(
            features("<stream:features>é</stream:features>".as_bytes())
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn the_first_answer_wins() {
        let (kind, text) = answer(b"<failure xmlns='x'/><proceed/>")
            .unwrap()
            .unwrap()
            .0;
        assert_eq!(kind, Answer::Failure);
        assert_eq!(text, b"<failure xmlns='x'/>");
        assert_eq!(
            answer(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'"),
            Ok(None)
        );
        assert_eq!(
            answer(b"<proceed/>").unwrap().unwrap().0,
            (Answer::Proceed, b"<proceed/>".to_vec())
        );
        assert_eq!(
            answer(b"<stream:error><host-unknown/>")
                .unwrap()
                .unwrap()
                .0
                .0,
            Answer::StreamError
        );
    }
}
