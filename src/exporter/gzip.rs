//! gzip for the large answers (`/metrics`, `/api/targets`) when the client asks for it.
//!
//! Prometheus sends `Accept-Encoding: gzip` on every scrape; a fleet's exposition is mostly
//! repeated label text and shrinks about tenfold. The header is parsed by
//! [RFC 9110 §12.5.3](https://www.rfc-editor.org/rfc/rfc9110#section-12.5.3): a list of
//! codings, each with an optional weight `q`, where `q=0` refuses that coding and `*` stands
//! for every coding not named. Knows nothing of routes or metrics.

use flate2::Compression;
use hyper::HeaderMap;
use hyper::header::ACCEPT_ENCODING;

/// The most `Accept-Encoding` entries looked at; a longer list is the client's problem, and
/// the rest are ignored rather than parsed at the peer's pace.
const MAX_CODINGS: usize = 64;

/// The compression level: fast. A scrape's body is regenerated every time, so the CPU spent
/// per byte matters more than the last few percent of size (level 1 keeps most of the gain on
/// exposition text).
pub(crate) const LEVEL: Compression = Compression::fast();

/// Whether the request's `Accept-Encoding` headers accept gzip (`gzip` or its alias `x-gzip`
/// with a weight above zero, or else `*` with a weight above zero).
pub(crate) fn accepts_gzip(headers: &HeaderMap) -> bool {
    let mut gzip = None;
    let mut any = None;
    let entries = headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .take(MAX_CODINGS);
    for entry in entries {
        let mut parts = entry.split(';');
        let coding = parts.next().unwrap_or_default().trim();
        let weight = parts
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .map_or(Some(1.0), |(_, v)| parse_weight(v.trim()));
        // A malformed weight counts as a refusal: never send what may not be understood.
        let accepted = weight.is_some_and(|q| q > 0.0);
        if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            // The most favourable mention wins, as when a header is repeated.
            gzip = Some(gzip.unwrap_or(false) || accepted);
        } else if coding == "*" {
            any = Some(any.unwrap_or(false) || accepted);
        }
    }
    gzip.or(any).unwrap_or(false)
}

/// A weight as RFC 9110 writes it: `0`, `1`, or up to three decimals (`0.5`, `1.000`).
fn parse_weight(v: &str) -> Option<f32> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    let well_formed = matches!(int, "0" | "1")
        && frac.len() <= 3
        && frac.bytes().all(|b| b.is_ascii_digit())
        && (int == "0" || frac.bytes().all(|b| b == b'0'));
    if !well_formed {
        return None;
    }
    v.parse().ok()
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderValue;

    use super::*;

    fn accepts(values: &[&str]) -> bool {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        }
        accepts_gzip(&h)
    }

    #[test]
    fn gzip_is_chosen_only_when_the_client_accepts_it() {
        for yes in [
            &["gzip"][..],
            &["GZIP"],
            &["x-gzip"],
            &["gzip, deflate, br"],
            &["br;q=1.0, gzip;q=0.8, *;q=0.1"],
            &["gzip;q=0.001"],
            &["gzip ; q=1"],
            &["*"],
            &["deflate", "gzip"],
            // Named twice: the favourable mention wins.
            &["gzip;q=0, gzip"],
            // `*` does not override a coding named explicitly, and vice versa.
            &["gzip, *;q=0"],
        ] {
            assert!(accepts(yes), "{yes:?}");
        }
        for no in [
            &[][..],
            &[""],
            &["identity"],
            &["deflate, br"],
            &["gzip;q=0"],
            &["gzip;q=0.000"],
            &["gzip; Q=0"],
            &["*;q=0"],
            &["gzip;q=0, *"],
            &["gzip;q=2"],
            &["gzip;q=-1"],
            &["gzip;q=NaN"],
            &["gzip;q=0.0001"],
            &["gzip;q=1.5"],
            &["gzipx"],
        ] {
            assert!(!accepts(no), "{no:?}");
        }
        let mut h = HeaderMap::new();
        h.insert(
            ACCEPT_ENCODING,
            HeaderValue::from_bytes(b"\xffgzip").unwrap(),
        );
        assert!(!accepts_gzip(&h), "a header that is not text is ignored");
    }
}
