//! SMTP STARTTLS (RFC 3207 §4): greeting, EHLO, STARTTLS, 220.

use tokio::io::{AsyncRead, AsyncWrite};

use super::{Conversation, StartTlsError};

/// The EHLO argument. `.invalid` (RFC 2606) says honestly that the prober has no mail domain.
const EHLO_NAME: &str = "tlsward.invalid";

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
    c.send(format!("EHLO {EHLO_NAME}\r\n").as_bytes()).await?;
    let (code, caps) = c.reply().await?;
    if code != 250 {
        return Err(StartTlsError::Refused(format!(
            "EHLO answered {code} {}",
            caps.join(" ")
        )));
    }
    let offers = caps.iter().any(|l| {
        l.split_whitespace()
            .next()
            .is_some_and(|w| w.eq_ignore_ascii_case("STARTTLS"))
    });
    if !offers {
        return Err(StartTlsError::Refused(format!(
            "the server does not offer STARTTLS (EHLO: {})",
            caps.iter().skip(1).cloned().collect::<Vec<_>>().join(", ")
        )));
    }
    c.send(b"STARTTLS\r\n").await?;
    match c.reply().await? {
        (220, _) => Ok(()),
        (code, text) => Err(StartTlsError::Refused(format!(
            "STARTTLS answered {code} {}",
            text.join(" ")
        ))),
    }
}
