//! IMAP STARTTLS (RFC 9051 §6.2.1): greeting, tagged STARTTLS, tagged OK.

use tokio::io::{AsyncRead, AsyncWrite};

use super::{Conversation, StartTlsError, preview};

const TAG: &str = "tw1";

pub(super) async fn upgrade<S: AsyncRead + AsyncWrite + Unpin>(
    c: &mut Conversation<'_, S>,
) -> Result<(), StartTlsError> {
    let greeting = c.line().await?;
    let upper = greeting.to_ascii_uppercase();
    if upper.starts_with("* PREAUTH") {
        return Err(StartTlsError::Refused(
            "the server pre-authenticated the session, so STARTTLS is not allowed".into(),
        ));
    }
    if !upper.starts_with("* OK") {
        return Err(StartTlsError::Refused(format!(
            "greeting {}",
            preview(greeting.as_bytes())
        )));
    }
    c.send(format!("{TAG} STARTTLS\r\n").as_bytes()).await?;
    for _ in 0..100 {
        let line = c.line().await?;
        let Some(status) = line.strip_prefix(TAG).map(str::trim_start) else {
            continue; // untagged data, e.g. a CAPABILITY response
        };
        if status.len() >= 2 && status[..2].eq_ignore_ascii_case("OK") {
            return Ok(());
        }
        return Err(StartTlsError::Refused(format!(
            "STARTTLS answered {}",
            preview(status.as_bytes())
        )));
    }
    Err(StartTlsError::Protocol(
        "no tagged answer to STARTTLS".into(),
    ))
}
