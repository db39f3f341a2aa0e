//! FTP AUTH TLS (RFC 4217 §4): greeting 220, AUTH TLS, 234.

use tokio::io::{AsyncRead, AsyncWrite};

use super::{Conversation, StartTlsError};

pub(super) async fn upgrade<S: AsyncRead + AsyncWrite + Unpin>(
    c: &mut Conversation<'_, S>,
) -> Result<(), StartTlsError> {
    let greeting = c.reply().await?;
    if greeting.code != 220 {
        return Err(StartTlsError::Refused(format!(
            "greeting {} {}",
            greeting.code,
            greeting.text(0, b" ")
        )));
    }
    c.send(b"AUTH TLS\r\n").await?;
    let answer = c.reply().await?;
    match answer.code {
        234 => Ok(()),
        code => Err(StartTlsError::Refused(format!(
            "AUTH TLS answered {code} {}",
            answer.text(0, b" ")
        ))),
    }
}
