//! SMTP STARTTLS (RFC 3207 §4): greeting, EHLO, STARTTLS, 220.

use tokio::io::{AsyncRead, AsyncWrite};

use super::{Conversation, Reply, StartTlsError, first_word};

/// The EHLO argument. `.invalid` (RFC 2606) says honestly that the prober has no mail domain.
const EHLO_NAME: &str = "tlsward.invalid";

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
    c.send(format!("EHLO {EHLO_NAME}\r\n").as_bytes()).await?;
    let ehlo = c.reply().await?;
    if ehlo.code != 250 {
        return Err(StartTlsError::Refused(format!(
            "EHLO answered {} {}",
            ehlo.code,
            ehlo.text(0, b" ")
        )));
    }
    if !offers_starttls(&ehlo) {
        return Err(StartTlsError::Refused(format!(
            "the server does not offer STARTTLS (EHLO: {})",
            ehlo.text(1, b", ")
        )));
    }
    c.send(b"STARTTLS\r\n").await?;
    let answer = c.reply().await?;
    match answer.code {
        220 => Ok(()),
        code => Err(StartTlsError::Refused(format!(
            "STARTTLS answered {code} {}",
            answer.text(0, b" ")
        ))),
    }
}

/// Whether an EHLO reply lists the STARTTLS keyword (RFC 3207 §4: one keyword a line).
fn offers_starttls(ehlo: &Reply) -> bool {
    ehlo.lines
        .iter()
        .any(|l| first_word(l).0.eq_ignore_ascii_case(b"STARTTLS"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keyword_is_a_whole_first_word() {
        let ehlo = |last: &[u8]| Reply {
            code: 250,
            lines: vec![b"mx.test".to_vec(), last.to_vec()],
        };
        assert!(offers_starttls(&ehlo(b"starttls")));
        assert!(offers_starttls(&ehlo(b"STARTTLS extra")));
        assert!(!offers_starttls(&ehlo(b"STARTTLSX")));
        assert!(!offers_starttls(&ehlo(b"X-STARTTLS")));
        assert!(!offers_starttls(&ehlo(b"\xffSTARTTLS")));
    }
}
