//! POP3 STLS (RFC 2595 §4): greeting, STLS, +OK.

use tokio::io::{AsyncRead, AsyncWrite};

use super::{Conversation, StartTlsError, preview};

pub(super) async fn upgrade<S: AsyncRead + AsyncWrite + Unpin>(
    c: &mut Conversation<'_, S>,
) -> Result<(), StartTlsError> {
    let greeting = c.line().await?;
    if !greeting.starts_with("+OK") {
        return Err(StartTlsError::Refused(format!(
            "greeting {}",
            preview(greeting.as_bytes())
        )));
    }
    c.send(b"STLS\r\n").await?;
    let answer = c.line().await?;
    if answer.starts_with("+OK") {
        Ok(())
    } else {
        Err(StartTlsError::Refused(format!(
            "STLS answered {}",
            preview(answer.as_bytes())
        )))
    }
}
