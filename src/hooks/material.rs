//! The certificate a run deploys, in one shape: the DER chain as the store keeps it, its key,
//! and the leaf's facts parsed once. The caller builds it; the run's host state shares it
//! (an `Arc`), and every format is converted from it ([`Material::view`]), PEM rendered from
//! the DER only where a format or the guest's bundle needs text.

use std::fmt;

use super::convert;
use crate::cert::CertFacts;
use crate::secret::Secret;

/// The certificate a run deploys. Its `Debug` shows sizes and names, never the key.
pub struct Material {
    /// The endpoint deployed to.
    pub endpoint: String,
    /// The managed certificate's name.
    pub certificate: String,
    /// Leaf first, then intermediates (DER).
    chain_der: Vec<Vec<u8>>,
    /// The private key, PKCS#8 DER; `None` only for [`Hooks::check`](super::Hooks::check)'s
    /// placeholder.
    key: Option<Secret>,
    /// The leaf's facts, or why there are none (kept, so the run fails at load with it).
    leaf: Result<CertFacts, String>,
}

impl Material {
    /// A certificate to deploy: `chain_der` leaf first, then intermediates; `key` PKCS#8 DER.
    /// The leaf is parsed here, once; a chain without a usable leaf is kept, and a run of it
    /// fails before the guest starts, saying why.
    pub fn new(
        endpoint: String,
        certificate: String,
        chain_der: Vec<Vec<u8>>,
        key: Secret,
    ) -> Self {
        let leaf = match chain_der.first() {
            None => Err("the certificate has no leaf".to_owned()),
            Some(der) => CertFacts::parse(der).map_err(|e| format!("the leaf: {e}")),
        };
        Self {
            endpoint,
            certificate,
            chain_der,
            key: Some(key),
            leaf,
        }
    }

    /// The trial call's stand-in: no certificate, no key.
    pub(super) fn placeholder(name: &str) -> Self {
        Self {
            endpoint: name.to_owned(),
            certificate: name.to_owned(),
            chain_der: Vec::new(),
            key: None,
            leaf: Err("no certificate".to_owned()),
        }
    }

    /// The leaf's facts, or why it has none.
    pub fn facts(&self) -> Result<&CertFacts, &str> {
        self.leaf.as_ref().map_err(String::as_str)
    }

    /// The leaf, DER (empty for the placeholder).
    pub fn leaf_der(&self) -> &[u8] {
        self.chain_der.first().map_or(&[], Vec::as_slice)
    }

    /// The intermediates, DER, from the leaf's issuer upwards.
    pub fn intermediates(&self) -> &[Vec<u8>] {
        self.chain_der.get(1..).unwrap_or_default()
    }

    /// The private key, when there is one.
    pub fn key(&self) -> Option<&Secret> {
        self.key.as_ref()
    }

    /// What [`convert::convert`] reads, under the keystore `alias`.
    pub fn view<'a>(&'a self, alias: &'a str) -> convert::Material<'a> {
        convert::Material {
            leaf_der: self.leaf_der(),
            chain_der: self.intermediates(),
            key_pkcs8_der: self.key.as_ref().map(Secret::expose),
            alias,
        }
    }
}

impl fmt::Debug for Material {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Material")
            .field("endpoint", &self.endpoint)
            .field("certificate", &self.certificate)
            .field(
                "chain_der",
                &format_args!("<{} certs>", self.chain_der.len()),
            )
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A leaf for `m.test` and a second certificate standing in for its issuer.
    fn chain() -> (Vec<Vec<u8>>, Secret) {
        let cert = |name: &str, key: &rcgen::KeyPair| {
            rcgen::CertificateParams::new(vec![name.to_owned()])
                .unwrap()
                .self_signed(key)
                .unwrap()
                .der()
                .to_vec()
        };
        let key = rcgen::KeyPair::generate().unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        (
            vec![cert("m.test", &key), cert("ca.test", &other)],
            Secret::new(key.serialize_der()),
        )
    }

    #[test]
    fn the_leaf_is_parsed_once_and_the_view_borrows_the_chain() {
        let (der, key) = chain();
        let m = Material::new("e".into(), "c".into(), der.clone(), key.clone());
        assert_eq!(m.facts().unwrap().dns_names, ["m.test"]);
        assert_eq!(m.leaf_der(), der[0].as_slice());
        assert_eq!(m.intermediates(), &der[1..]);
        let v = m.view("alias");
        assert_eq!(v.leaf_der, der[0].as_slice());
        assert_eq!(v.chain_der, &der[1..]);
        assert_eq!(v.key_pkcs8_der, Some(key.expose()));
        assert_eq!(v.alias, "alias");
    }

    #[test]
    fn a_chain_without_a_usable_leaf_says_why() {
        let key = Secret::new(vec![1]);
        let empty = Material::new("e".into(), "c".into(), Vec::new(), key.clone());
        assert_eq!(empty.facts().unwrap_err(), "the certificate has no leaf");
        assert_eq!(empty.leaf_der(), b"");
        assert!(empty.intermediates().is_empty());
        let junk = Material::new("e".into(), "c".into(), vec![b"junk".to_vec()], key);
        assert!(
            junk.facts().unwrap_err().starts_with("the leaf: "),
            "{junk:?}"
        );
    }

    #[test]
    fn debug_hides_the_key() {
        let (der, key) = chain();
        let m = Material::new("e".into(), "c".into(), der, key.clone());
        let shown = format!("{m:?}");
        assert!(
            shown.contains("<2 certs>") && shown.contains("<redacted>"),
            "{shown}"
        );
        assert!(!shown.contains(&format!("{:?}", key.expose())), "{shown}");
    }
}
