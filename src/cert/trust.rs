//! Trust anchors: which roots a chain may lead to. Built from DER; loading files is the
//! caller's business.

use rustls_pki_types::{CertificateDer, TrustAnchor};

use super::facts::CertFacts;

/// Where a trust anchor came from. The CA/Browser Forum's rules bind publicly trusted CAs
/// only, so some checks apply only to chains that end in a [`Origin::Public`] anchor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The operating system's store of publicly trusted roots.
    Public,
    /// A root the operator supplied (`--ca-file`): a private or test CA.
    Private,
}

#[derive(Debug)]
struct Anchor {
    anchor: TrustAnchor<'static>,
    origin: Origin,
    subject_der: Vec<u8>,
    name: String,
}

/// A set of trust anchors, each remembering its [`Origin`].
#[derive(Debug, Default)]
pub struct TrustStore {
    anchors: Vec<Anchor>,
    webpki: Vec<TrustAnchor<'static>>,
    skipped: usize,
}

impl TrustStore {
    /// An empty store: nothing is trusted.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Adds every certificate in `certs` as an anchor of the given origin. Certificates that
    /// cannot serve as anchors (malformed) are skipped and counted in [`Self::skipped`],
    /// as system stores often carry a few oddities.
    pub fn add_all<'a>(
        &mut self,
        certs: impl IntoIterator<Item = &'a CertificateDer<'a>>,
        origin: Origin,
    ) -> usize {
        let mut added = 0;
        for der in certs {
            let Ok(anchor) = webpki::anchor_from_trusted_cert(der) else {
                self.skipped += 1;
                continue;
            };
            let anchor = anchor.to_owned();
            let name = CertFacts::parse(der).map(|f| f.subject).unwrap_or_default();
            self.webpki.push(anchor.clone());
            self.anchors.push(Anchor {
                subject_der: anchor.subject.as_ref().to_vec(),
                anchor,
                origin,
                name,
            });
            added += 1;
        }
        added
    }

    /// The number of anchors.
    pub fn len(&self) -> usize {
        self.anchors.len()
    }

    /// Whether the store has no anchors.
    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }

    /// How many offered certificates could not be used as anchors.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    pub(crate) fn webpki_anchors(&self) -> &[TrustAnchor<'static>] {
        &self.webpki
    }

    /// Whether some anchor's subject is the issuer named by `cert`.
    pub(crate) fn has_issuer_of(&self, cert: &CertFacts) -> bool {
        // TrustAnchor::subject is the name's content without the outer SEQUENCE header.
        let issuer = strip_sequence(&cert.issuer_der);
        self.anchors.iter().any(|a| a.subject_der == issuer)
    }

    /// The origin and subject of a stored anchor (as returned by path validation).
    pub(crate) fn describe(&self, anchor: &TrustAnchor<'_>) -> Option<(Origin, &str)> {
        self.anchors
            .iter()
            .find(|a| {
                a.anchor.subject_public_key_info == anchor.subject_public_key_info
                    && a.anchor.subject == anchor.subject
            })
            .map(|a| (a.origin, a.name.as_str()))
    }
}

/// The contents of a DER SEQUENCE (the name without its tag and length).
fn strip_sequence(der: &[u8]) -> &[u8] {
    if der.len() < 2 || der[0] != 0x30 {
        return der;
    }
    let len_byte = der[1];
    let header = if len_byte & 0x80 == 0 {
        2
    } else {
        2 + usize::from(len_byte & 0x7f)
    };
    der.get(header..).unwrap_or(der)
}
