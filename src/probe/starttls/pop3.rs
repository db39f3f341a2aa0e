//! POP3 STLS (RFC 2595 §4): greeting, STLS, +OK.

use tokio::io::{AsyncRead, AsyncWrite};

use super::{Conversation, StartTlsError, peer_text};

pub(super) async fn upgrade<S: AsyncRead + AsyncWrite + Unpin>(
    c: &mut Conversation<'_, S>,
) -> Result<(), StartTlsError> {
    let greeting = c.line().await?;
    if !positive(&greeting)? {
        return Err(StartTlsError::Refused(format!(
            "greeting {}",
            peer_text(&greeting)
        )));
    }
    c.send(b"STLS\r\n").await?;
    let answer = c.line().await?;
    if positive(&answer)? {
        Ok(())
    } else {
        Err(StartTlsError::Refused(format!(
            "STLS answered {}",
            peer_text(&answer)
        )))
    }
}

/// Whether a status line is `+OK` (true) or `-ERR` (false); anything else is not POP3
/// (RFC 1939 §3).
fn positive(line: &[u8]) -> Result<bool, StartTlsError> {
    if line.starts_with(b"+OK") {
        Ok(true)
    } else if line.starts_with(b"-ERR") {
        Ok(false)
    } else {
        Err(StartTlsError::Protocol(format!(
            "not a POP3 status line: {}",
            peer_text(line)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(positive(b"+OK POP3 ready"), Ok(true));
        assert_eq!(positive(b"-ERR \xff\xfe"), Ok(false));
        let err = positive(b"\xff+OK").unwrap_err();
        assert_eq!(
            err,
            StartTlsError::Protocol(r#"not a POP3 status line: "\xff+OK""#.into())
        );
    }
}
