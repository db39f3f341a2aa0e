//! A stapled OCSP response (RFC 6960 §4.2.1), read far enough to report the leaf's status.
//!
//! The response's signature is not verified here: the staple is reported as the server's
//! claim, which is what an operator needs to see ("the server staples a revoked response").

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};
use x509_parser::der_parser::asn1_rs::{Any, Class, FromDer, Tag};

/// id-pkix-ocsp-basic, 1.3.6.1.5.5.7.48.1.1, DER-encoded without tag and length.
const OID_OCSP_BASIC: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x01];

/// The status a response gives for the leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OcspCertStatus {
    /// Not revoked.
    Good,
    /// Revoked at the given time.
    Revoked,
    /// The responder does not know the certificate, or the response does not cover it.
    Unknown,
}

impl OcspCertStatus {
    /// The stable lowercase name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Good => "good",
            Self::Revoked => "revoked",
            Self::Unknown => "unknown",
        }
    }
}

/// What a stapled response says about the leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OcspStaple {
    /// The leaf's status.
    pub status: OcspCertStatus,
    /// When the status was known to be correct.
    pub this_update: Option<OffsetDateTime>,
    /// When newer information will be available.
    pub next_update: Option<OffsetDateTime>,
    /// When the leaf was revoked, if it was.
    pub revocation_time: Option<OffsetDateTime>,
}

/// Reads a DER `OCSPResponse` and finds the `SingleResponse` for the certificate whose serial
/// number, as lowercase hex of its encoded bytes (as in [`super::CertFacts::serial`]), is
/// `serial_hex`.
pub(super) fn parse_staple(der: &[u8], serial_hex: &str) -> Result<OcspStaple, String> {
    // OCSPResponse ::= SEQUENCE { responseStatus ENUMERATED, responseBytes [0] EXPLICIT ... }
    let mut resp = Reader::new(seq(der, "OCSPResponse")?);
    let status = resp.next(Tag::Enumerated, "responseStatus")?;
    if status.data != [0] {
        let code = status.data.first().copied().unwrap_or(255);
        return Err(format!("responder returned status {code} (not successful)"));
    }
    let bytes = resp.next_context(0, "responseBytes")?;
    // ResponseBytes ::= SEQUENCE { responseType OID, response OCTET STRING }
    let mut rb = Reader::new(seq(bytes.data, "ResponseBytes")?);
    let oid = rb.next(Tag::Oid, "responseType")?;
    if oid.data != OID_OCSP_BASIC {
        return Err("response type is not id-pkix-ocsp-basic".into());
    }
    let basic = rb.next(Tag::OctetString, "response")?;
    // BasicOCSPResponse ::= SEQUENCE { tbsResponseData ResponseData, ... }
    let mut basic = Reader::new(seq(basic.data, "BasicOCSPResponse")?);
    let tbs = basic.next(Tag::Sequence, "tbsResponseData")?;
    // ResponseData ::= SEQUENCE { version [0] DEFAULT, responderID, producedAt, responses, ... }
    let mut rd = Reader::new(tbs.data);
    let mut item = rd.any("responderID")?;
    if item.header.class() == Class::ContextSpecific && item.header.tag() == Tag(0) {
        item = rd.any("responderID")?;
    }
    let _responder = item;
    rd.next(Tag::GeneralizedTime, "producedAt")?;
    let responses = rd.next(Tag::Sequence, "responses")?;
    let mut list = Reader::new(responses.data);
    while !list.is_empty() {
        let single = list.next(Tag::Sequence, "SingleResponse")?;
        let mut sr = Reader::new(single.data);
        // CertID ::= SEQUENCE { hashAlgorithm, issuerNameHash, issuerKeyHash, serialNumber }
        let mut cert_id = Reader::new(sr.next(Tag::Sequence, "certID")?.data);
        cert_id.next(Tag::Sequence, "hashAlgorithm")?;
        cert_id.next(Tag::OctetString, "issuerNameHash")?;
        cert_id.next(Tag::OctetString, "issuerKeyHash")?;
        let sn = cert_id.next(Tag::Integer, "serialNumber")?;
        if hex::encode(sn.data) != serial_hex {
            continue;
        }
        let cert_status = sr.any("certStatus")?;
        if cert_status.header.class() != Class::ContextSpecific {
            return Err("certStatus is not a context-specific choice".into());
        }
        let mut revocation_time = None;
        let status = match cert_status.header.tag().0 {
            0 => OcspCertStatus::Good,
            1 => {
                // RevokedInfo ::= SEQUENCE { revocationTime GeneralizedTime, ... } (implicit tag)
                let mut info = Reader::new(cert_status.data);
                let t = info.next(Tag::GeneralizedTime, "revocationTime")?;
                revocation_time = Some(generalized_time(t.data)?);
                OcspCertStatus::Revoked
            }
            _ => OcspCertStatus::Unknown,
        };
        let this_update = Some(generalized_time(
            sr.next(Tag::GeneralizedTime, "thisUpdate")?.data,
        )?);
        let mut next_update = None;
        while !sr.is_empty() {
            let opt = sr.any("singleExtensions")?;
            if opt.header.class() == Class::ContextSpecific && opt.header.tag() == Tag(0) {
                let t = Reader::new(opt.data).next(Tag::GeneralizedTime, "nextUpdate")?;
                next_update = Some(generalized_time(t.data)?);
            }
        }
        return Ok(OcspStaple {
            status,
            this_update,
            next_update,
            revocation_time,
        });
    }
    Ok(OcspStaple {
        status: OcspCertStatus::Unknown,
        this_update: None,
        next_update: None,
        revocation_time: None,
    })
}

fn seq<'a>(der: &'a [u8], what: &str) -> Result<&'a [u8], String> {
    let (rest, any) = Any::from_der(der).map_err(|e| format!("{what}: {e}"))?;
    if any.header.tag() != Tag::Sequence || !rest.is_empty() {
        return Err(format!("{what}: expected one SEQUENCE"));
    }
    Ok(any.data)
}

/// Walks the elements of a constructed value in order.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { rest: data }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn any(&mut self, what: &str) -> Result<Any<'a>, String> {
        let (rest, any) = Any::from_der(self.rest).map_err(|e| format!("{what}: {e}"))?;
        self.rest = rest;
        Ok(any)
    }

    fn next(&mut self, tag: Tag, what: &str) -> Result<Any<'a>, String> {
        let any = self.any(what)?;
        if any.header.class() != Class::Universal || any.header.tag() != tag {
            return Err(format!("{what}: unexpected tag {}", any.header.tag()));
        }
        Ok(any)
    }

    fn next_context(&mut self, n: u32, what: &str) -> Result<Any<'a>, String> {
        let any = self.any(what)?;
        if any.header.class() != Class::ContextSpecific || any.header.tag() != Tag(n) {
            return Err(format!("{what}: expected [{n}]"));
        }
        Ok(any)
    }
}

/// Parses `YYYYMMDDHHMMSS[.fff]Z` (RFC 5280 §4.1.2.5.2 form) into UTC.
fn generalized_time(bytes: &[u8]) -> Result<OffsetDateTime, String> {
    let s = std::str::from_utf8(bytes).map_err(|_| "GeneralizedTime is not ASCII".to_owned())?;
    let bad = || format!("malformed GeneralizedTime {s:?}");
    if s.len() < 15 || !s.ends_with('Z') || !s.as_bytes()[..14].iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| s[r].parse::<u16>().map_err(|_| bad());
    let month = Month::try_from(num(4..6)? as u8).map_err(|_| bad())?;
    let date = Date::from_calendar_date(i32::from(num(0..4)?), month, num(6..8)? as u8)
        .map_err(|_| bad())?;
    let time = Time::from_hms(num(8..10)? as u8, num(10..12)? as u8, num(12..14)? as u8)
        .map_err(|_| bad())?;
    Ok(PrimitiveDateTime::new(date, time).assume_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generalized_time_parses_utc_and_rejects_junk() {
        let t = generalized_time(b"20260115000000Z").unwrap();
        assert_eq!(t, time::macros::datetime!(2026-01-15 00:00 UTC));
        assert!(generalized_time(b"2026011500000Z").is_err());
        assert!(generalized_time(b"20261315000000Z").is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse_staple(&[], "01").is_err());
        assert!(parse_staple(&[0x30, 0x03, 0x0a, 0x01, 0x06], "01").is_err());
        assert!(parse_staple(&[0x30, 0x80, 0x00], "01").is_err());
    }
}
