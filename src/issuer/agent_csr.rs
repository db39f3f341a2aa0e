//! `key = "agent"`: the checks on a CSR an agent sends for a certificate whose key it
//! holds, and the comparison of the leaf the CA sent with that CSR's key. The CA checks the
//! request's signature when the order is finalized (RFC 8555 §7.4); here the names must be
//! the certificate's and the key its configured type, so an agent cannot widen what it is
//! issued.

use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

use super::KeyType;

/// Checks that the PKCS#10 request `csr_der` asks for exactly `domains` (as a set, case
/// aside, in its subjectAltName) with a key of `key_type`; the error says what differs.
pub fn check_csr(csr_der: &[u8], domains: &[String], key_type: KeyType) -> Result<(), String> {
    let (rest, csr) = X509CertificationRequest::from_der(csr_der)
        .map_err(|e| format!("the CSR does not parse: {e}"))?;
    if !rest.is_empty() {
        return Err("the CSR has trailing bytes".into());
    }
    let mut names: Vec<String> = Vec::new();
    for ext in csr.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext {
            for n in &san.general_names {
                match n {
                    GeneralName::DNSName(d) => names.push(d.to_ascii_lowercase()),
                    _ => return Err("the CSR asks for a name that is not a DNS name".into()),
                }
            }
        }
    }
    names.sort();
    names.dedup();
    let mut want: Vec<String> = domains.iter().map(|d| d.to_ascii_lowercase()).collect();
    want.sort();
    want.dedup();
    if names != want {
        return Err(format!(
            "the CSR asks for {}, not the certificate's names {}",
            crate::escape::Visible(&names.join(", ")),
            want.join(", ")
        ));
    }
    let bits = match csr.certification_request_info.subject_pki.parsed() {
        Ok(PublicKey::EC(point)) => point.key_size(),
        Ok(_) => 0,
        Err(e) => return Err(format!("the CSR's public key does not parse: {e}")),
    };
    let wanted = match key_type {
        KeyType::EcdsaP256 => 256,
        KeyType::EcdsaP384 => 384,
    };
    if bits != wanted {
        return Err(format!(
            "the CSR's key is not {} (key_type of the certificate)",
            key_type.as_str()
        ));
    }
    Ok(())
}

/// The raw subjectPublicKey bits of the request, to compare with the leaf's.
pub(super) fn csr_public_key(csr_der: &[u8]) -> Option<Vec<u8>> {
    let (_, csr) = X509CertificationRequest::from_der(csr_der).ok()?;
    Some(
        csr.certification_request_info
            .subject_pki
            .subject_public_key
            .data
            .to_vec(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr(names: &[&str], alg: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let params = rcgen::CertificateParams::new(
            names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
        )
        .unwrap();
        params.serialize_request(&key).unwrap().der().to_vec()
    }

    #[test]
    fn a_csr_must_ask_for_the_certificate_s_names_and_key_type() {
        let domains = vec!["a.test".to_owned(), "b.test".to_owned()];
        let p256 = &rcgen::PKCS_ECDSA_P256_SHA256;
        assert_eq!(
            check_csr(
                &csr(&["b.test", "A.test"], p256),
                &domains,
                KeyType::EcdsaP256
            ),
            Ok(())
        );
        let more = check_csr(
            &csr(&["a.test", "b.test", "evil.test"], p256),
            &domains,
            KeyType::EcdsaP256,
        )
        .unwrap_err();
        assert!(more.contains("evil.test"), "{more}");
        assert!(check_csr(&csr(&["a.test"], p256), &domains, KeyType::EcdsaP256).is_err());
        let p384 = csr(&["a.test", "b.test"], &rcgen::PKCS_ECDSA_P384_SHA384);
        let wrong = check_csr(&p384, &domains, KeyType::EcdsaP256).unwrap_err();
        assert!(wrong.contains("ecdsa-p256"), "{wrong}");
        assert_eq!(check_csr(&p384, &domains, KeyType::EcdsaP384), Ok(()));
        assert!(check_csr(b"junk", &domains, KeyType::EcdsaP256).is_err());
    }
}
