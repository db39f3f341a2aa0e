//! PostgreSQL SSLRequest: an 8-byte request, then one byte, `S` to go on with TLS or `N`.

use tokio::io::{AsyncRead, AsyncWrite};

use super::{Conversation, StartTlsError};

/// Length 8, then the SSLRequest code 80877103 (1234 << 16 | 5679).
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

pub(super) async fn upgrade<S: AsyncRead + AsyncWrite + Unpin>(
    c: &mut Conversation<'_, S>,
) -> Result<(), StartTlsError> {
    c.send(&SSL_REQUEST).await?;
    let answer = c.exact(1).await?;
    match answer.first() {
        Some(b'S') => Ok(()),
        Some(b'N') => Err(StartTlsError::Refused(
            "the server does not accept SSL connections (answered N)".into(),
        )),
        Some(b'E') => Err(StartTlsError::Refused(
            "the server answered the SSLRequest with an error".into(),
        )),
        other => Err(StartTlsError::Protocol(format!(
            "unexpected answer byte 0x{:02x} to SSLRequest",
            other.copied().unwrap_or_default()
        ))),
    }
}
