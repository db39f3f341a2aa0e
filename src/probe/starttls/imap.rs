//! IMAP STARTTLS (RFC 9051 §6.2.1): greeting, tagged STARTTLS, tagged OK.

use tokio::io::{AsyncRead, AsyncWrite};

use super::{Conversation, StartTlsError, first_word, peer_text};

/// The tag of the STARTTLS command.
const TAG: &[u8] = b"tw1";
/// The most untagged lines accepted before the tagged answer.
const MAX_UNTAGGED: usize = 100;

pub(super) async fn upgrade<S: AsyncRead + AsyncWrite + Unpin>(
    c: &mut Conversation<'_, S>,
) -> Result<(), StartTlsError> {
    greeting(&c.line().await?)?;
    c.send(b"tw1 STARTTLS\r\n").await?;
    for _ in 0..MAX_UNTAGGED {
        if let Some(answer) = tagged(&c.line().await?) {
            return answer;
        }
    }
    Err(StartTlsError::Protocol(
        "no tagged answer to STARTTLS".into(),
    ))
}

/// Whether the greeting lets the client go on (RFC 9051 §7.1: `* OK`; `* PREAUTH` forbids
/// STARTTLS, `* BYE` closes).
fn greeting(line: &[u8]) -> Result<(), StartTlsError> {
    let Some(rest) = line.strip_prefix(b"* ") else {
        return Err(StartTlsError::Protocol(format!(
            "not an IMAP greeting: {}",
            peer_text(line)
        )));
    };
    let (status, _) = first_word(rest);
    if status.eq_ignore_ascii_case(b"OK") {
        Ok(())
    } else if status.eq_ignore_ascii_case(b"PREAUTH") {
        Err(StartTlsError::Refused(
            "the server pre-authenticated the session, so STARTTLS is not allowed".into(),
        ))
    } else if status.eq_ignore_ascii_case(b"BYE") {
        Err(StartTlsError::Refused(format!(
            "greeting {}",
            peer_text(line)
        )))
    } else {
        Err(StartTlsError::Protocol(format!(
            "not an IMAP greeting: {}",
            peer_text(line)
        )))
    }
}

/// The verdict of the tagged answer to STARTTLS, or `None` for any other line (untagged
/// data such as a CAPABILITY response).
fn tagged(line: &[u8]) -> Option<Result<(), StartTlsError>> {
    let rest = line.strip_prefix(TAG)?.strip_prefix(b" ")?;
    let (status, _) = first_word(rest);
    Some(if status.eq_ignore_ascii_case(b"OK") {
        Ok(())
    } else if status.eq_ignore_ascii_case(b"NO") || status.eq_ignore_ascii_case(b"BAD") {
        Err(StartTlsError::Refused(format!(
            "STARTTLS answered {}",
            peer_text(rest)
        )))
    } else {
        Err(StartTlsError::Protocol(format!(
            "a tagged answer to STARTTLS that is not OK, NO or BAD: {}",
            peer_text(rest)
        )))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greetings() {
        assert_eq!(
            greeting(b"* OK [CAPABILITY IMAP4rev2 STARTTLS] ready"),
            Ok(())
        );
        assert_eq!(greeting(b"* ok \xff\xfe"), Ok(()));
        assert!(matches!(
            greeting(b"* PREAUTH hi"),
            Err(StartTlsError::Refused(_))
        ));
        assert!(matches!(
            greeting(b"* BYE busy"),
            Err(StartTlsError::Refused(_))
        ));
        assert!(matches!(greeting(b"*OK"), Err(StartTlsError::Protocol(_))));
        assert!(matches!(
            greeting(b"* \xffOK"),
            Err(StartTlsError::Protocol(_))
        ));
    }

    #[test]
    fn tagged_answers_on_bytes() {
        assert_eq!(tagged(b"* CAPABILITY IMAP4rev2"), None);
        assert_eq!(tagged(b"tw12 OK"), None);
        assert_eq!(tagged(b"tw1 OK Begin TLS"), Some(Ok(())));
        assert_eq!(tagged(b"tw1 ok"), Some(Ok(())));
        // The reply that panicked when it was lossily decoded and sliced at byte 2.
        assert_eq!(
            tagged(b"tw1 \xff\xfeOK"),
            Some(Err(StartTlsError::Protocol(
                r#"a tagged answer to STARTTLS that is not OK, NO or BAD: "\xff\xfeOK""#.into()
            )))
        );
        assert_eq!(
            tagged(b"tw1 NO \x1b]0;owned\x07"),
            Some(Err(StartTlsError::Refused(
                r#"STARTTLS answered "NO \x1b]0;owned\x07""#.into()
            )))
        );
        assert_eq!(
            tagged(b"tw1 OKAY"),
            Some(Err(StartTlsError::Protocol(
                r#"a tagged answer to STARTTLS that is not OK, NO or BAD: "OKAY""#.into()
            )))
        );
    }
}
