//! FTP AUTH TLS (RFC 4217 §4): greeting 220, AUTH TLS, 234.

use tokio::io::{AsyncRead, AsyncWrite};

use super::{Conversation, StartTlsError};

pub(super) async fn upgrade<S: AsyncRead + AsyncWrite + Unpin>(
    c: &mut Conversation<'_, S>,
) -> Result<(), StartTlsError> {
    let (code, text) = c.reply().await?;
    if code != 220 {
        return Err(StartTlsError::Refused(format!(
            "greeting {code} {}",
            text.join(" ")
        )));
    }
    c.send(b"AUTH TLS\r\n").await?;
    match c.reply().await? {
        (234, _) => Ok(()),
        (code, text) => Err(StartTlsError::Refused(format!(
            "AUTH TLS answered {code} {}",
            text.join(" ")
        ))),
    }
}
