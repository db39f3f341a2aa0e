//! XMPP client-stream STARTTLS (RFC 6120 §5.4): open a stream, find `<starttls/>` among the
//! stream features, ask for it, and wait for `<proceed/>`.

use tokio::io::{AsyncRead, AsyncWrite};

use super::{Conversation, StartTlsError, preview};

const TLS_NS: &str = "urn:ietf:params:xml:ns:xmpp-tls";

pub(super) async fn upgrade<S: AsyncRead + AsyncWrite + Unpin>(
    c: &mut Conversation<'_, S>,
    domain: &str,
) -> Result<(), StartTlsError> {
    if domain.contains(['\'', '"', '<', '>', '&']) {
        return Err(StartTlsError::Protocol(format!(
            "{domain:?} cannot be an XMPP domain"
        )));
    }
    let open = format!(
        "<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
    );
    c.send(open.as_bytes()).await?;
    let features = c.until(features_end).await?;
    if let Some(at) = features.find("stream:error") {
        return Err(StartTlsError::Refused(format!(
            "stream error: {}",
            preview(&features.as_bytes()[at..])
        )));
    }
    let offers = features.match_indices("<starttls").any(|(at, _)| {
        features[at..]
            .split('>')
            .next()
            .is_some_and(|tag| tag.contains(TLS_NS))
    });
    if !offers {
        return Err(StartTlsError::Refused(
            "the server does not offer STARTTLS among its stream features".into(),
        ));
    }
    c.send(format!("<starttls xmlns='{TLS_NS}'/>").as_bytes())
        .await?;
    let answer = c
        .until(|t| {
            ["<proceed", "<failure", "stream:error"]
                .iter()
                .filter_map(|tag| t.find(tag))
                .min()
                .and_then(|at| t[at..].find('>').map(|end| at + end + 1))
        })
        .await?;
    if answer.contains("<proceed") {
        Ok(())
    } else {
        Err(StartTlsError::Refused(format!(
            "STARTTLS answered {}",
            preview(answer.as_bytes())
        )))
    }
}

/// The end of the stream features element (or of a stream error), if it has arrived.
fn features_end(t: &str) -> Option<usize> {
    if let Some(at) = t.find("</stream:features>") {
        return Some(at + "</stream:features>".len());
    }
    if let Some(at) = t.find("<stream:features/>") {
        return Some(at + "<stream:features/>".len());
    }
    t.find("</stream:error>")
        .map(|at| at + "</stream:error>".len())
}
