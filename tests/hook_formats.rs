//! The formats the hook host writes, read by real consumers: `openssl` (PEM, DER, PKCS#12)
//! and Java's `keytool` (JKS, and PKCS#12 too).

use std::path::{Path, PathBuf};

use rcgen::KeyPair;
use tlsward::hooks::convert::{Format, Material, convert};

use crate::util::tools::{fails, key_pubkey, keytool, ok, openssl, pem_certs};
use crate::util::{Leaf, TestCa, rsa_key};

const PASSWORD: &str = "s3cret-Pass";
/// `test_now()` (2026-06-01T12:00:00Z) in Unix milliseconds: the JKS creation date.
const NOW_MS: i64 = 1_780_315_200_000;

/// A leaf under root → intermediate A → intermediate B, with an EC (P-256) or RSA key.
fn leaf(key: Option<KeyPair>) -> Leaf {
    let root = TestCa::root("Hook Formats Root");
    let a = root.intermediate("Hook Formats Intermediate A");
    let b = a.intermediate("Hook Formats Intermediate B");
    let spec = b.leaf(&["a.test"]);
    match key {
        Some(key) => spec.key(key),
        None => spec,
    }
    .build()
}

/// The leaf and the material for it, with the chain above the leaf as owned DER.
struct Subject {
    leaf: Leaf,
    chain: Vec<Vec<u8>>,
    dir: tempfile::TempDir,
}

impl Subject {
    fn new(key: Option<KeyPair>) -> Self {
        let leaf = leaf(key);
        let chain = leaf.chain[1..].iter().map(|c| c.to_vec()).collect();
        let dir = tempfile::tempdir().expect("tempdir");
        Self { leaf, chain, dir }
    }

    fn material(&self) -> Material<'_> {
        Material {
            leaf_der: self.leaf.der(),
            chain_der: &self.chain,
            key_pkcs8_der: Some(self.leaf.key.secret_der()),
            alias: "Hook-Alias",
        }
    }

    /// Converts to `format` (with [`PASSWORD`] when it needs one) and writes it to `name`.
    fn write(&self, format: Format, name: &str) -> PathBuf {
        let password = format.needs_password().then_some(PASSWORD);
        let out = convert(format, &self.material(), password, NOW_MS)
            .unwrap_or_else(|e| panic!("convert to {format}: {e}"));
        let path = self.dir.path().join(name);
        std::fs::write(&path, &*out).expect("write");
        path
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Every certificate, leaf first, as DER.
    fn all_certs(&self) -> Vec<Vec<u8>> {
        self.leaf.chain.iter().map(|c| c.to_vec()).collect()
    }

    /// The leaf's public key as `openssl x509 -pubkey` prints it.
    fn leaf_pubkey(&self) -> String {
        let leaf = self.path("leaf-for-pubkey.der");
        std::fs::write(&leaf, self.leaf.der()).unwrap();
        let out = ok(openssl(&["x509", "-inform", "DER", "-noout", "-pubkey", "-in"]).arg(&leaf));
        assert!(out.stdout.contains("BEGIN PUBLIC KEY"), "{}", out.stdout);
        out.stdout
    }
}

/// keytool's spelling of a SHA-256 fingerprint: uppercase hex pairs joined by colons.
fn keytool_fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Checks a PKCS#12 file with openssl: the MAC and encryption algorithms `-info` reports,
/// every certificate, and a key that belongs to the leaf.
fn check_pkcs12_with_openssl(s: &Subject, p12: &Path, expect_info: &[&str]) {
    let pass = format!("pass:{PASSWORD}");
    let info = ok(openssl(&["pkcs12", "-info", "-noout", "-passin", &pass, "-in"]).arg(p12));
    // -info writes the algorithms to stderr.
    let info = format!("{}{}", info.stdout, info.stderr);
    for expected in expect_info {
        assert!(
            info.contains(expected),
            "-info should say {expected:?}:\n{info}"
        );
    }

    let certs = ok(openssl(&["pkcs12", "-nokeys", "-passin", &pass, "-in"]).arg(p12));
    assert_eq!(
        pem_certs(&certs.stdout),
        s.all_certs(),
        "the leaf and both intermediates, leaf first:\n{}",
        certs.stdout
    );

    let key = ok(openssl(&["pkcs12", "-nocerts", "-nodes", "-passin", &pass, "-in"]).arg(p12));
    assert!(
        key.stdout.contains("friendlyName: Hook-Alias"),
        "the key's friendlyName:\n{}",
        key.stdout
    );
    let key_file = s.path("extracted.key");
    std::fs::write(&key_file, &key.stdout).unwrap();
    assert_eq!(
        key_pubkey(&key_file),
        s.leaf_pubkey(),
        "the key matches the leaf"
    );

    let err =
        fails(openssl(&["pkcs12", "-nodes", "-passin", "pass:wrong-password", "-in"]).arg(p12));
    assert!(
        err.contains("invalid password") || err.contains("mac verify"),
        "{err}"
    );
}

#[test]
fn pkcs12_is_read_by_openssl() {
    let s = Subject::new(None);
    let p12 = s.write(Format::Pkcs12, "modern.p12");
    check_pkcs12_with_openssl(
        &s,
        &p12,
        &[
            "MAC: sha256",
            "Shrouded Keybag: PBES2, PBKDF2, AES-256-CBC",
            "PRF hmacWithSHA256",
            "PKCS7 Encrypted data: PBES2, PBKDF2, AES-256-CBC",
        ],
    );
}

#[test]
fn pkcs12_legacy_is_read_by_openssl_without_the_legacy_provider() {
    let s = Subject::new(None);
    let p12 = s.write(Format::Pkcs12Legacy, "legacy.p12");
    check_pkcs12_with_openssl(
        &s,
        &p12,
        &[
            "MAC: sha1",
            "Shrouded Keybag: pbeWithSHA1And3-KeyTripleDES-CBC",
            "PKCS7 Encrypted data: pbeWithSHA1And3-KeyTripleDES-CBC",
        ],
    );
}

#[test]
fn pkcs12_with_an_rsa_key_is_read_by_openssl() {
    let s = Subject::new(Some(rsa_key()));
    let p12 = s.write(Format::Pkcs12, "rsa.p12");
    check_pkcs12_with_openssl(&s, &p12, &["MAC: sha256"]);
}

/// Checks `keytool -list -v` of a store: one PrivateKeyEntry named `alias`, the whole chain,
/// the leaf first.
fn check_keytool_list(s: &Subject, store: &Path, store_type: &str, alias: &str) {
    let out = ok(keytool(&[
        "-list",
        "-v",
        "-storetype",
        store_type,
        "-storepass",
        PASSWORD,
        "-keystore",
    ])
    .arg(store));
    let text = out.stdout;
    assert!(text.contains("Your keystore contains 1 entry"), "{text}");
    assert!(text.contains(&format!("Alias name: {alias}\n")), "{text}");
    assert!(text.contains("Entry type: PrivateKeyEntry"), "{text}");
    assert!(text.contains("Certificate chain length: 3"), "{text}");
    let certs = s.all_certs();
    let (first, rest) = text
        .split_once("Certificate[2]:")
        .unwrap_or_else(|| panic!("a second certificate:\n{text}"));
    assert!(
        first.contains(&format!("SHA256: {}", keytool_fingerprint(&certs[0]))),
        "the leaf's fingerprint in Certificate[1]:\n{text}"
    );
    for cert in &certs[1..] {
        assert!(
            rest.contains(&format!("SHA256: {}", keytool_fingerprint(cert))),
            "an intermediate's fingerprint:\n{text}"
        );
    }
}

fn check_jks(key: Option<KeyPair>) {
    let s = Subject::new(key);
    let jks = s.write(Format::Jks, "store.jks");
    // JKS aliases are case-insensitive: Java keeps them lowercased.
    check_keytool_list(&s, &jks, "JKS", "hook-alias");

    // The key itself decrypts: keytool re-encrypts it into a PKCS#12 that openssl opens.
    let p12 = s.path("converted.p12");
    ok(keytool(&[
        "-importkeystore",
        "-noprompt",
        "-srcstoretype",
        "JKS",
        "-srcstorepass",
        PASSWORD,
        "-deststoretype",
        "PKCS12",
        "-deststorepass",
        "other-pass",
        "-srckeystore",
    ])
    .arg(&jks)
    .arg("-destkeystore")
    .arg(&p12));
    let key = ok(openssl(&[
        "pkcs12",
        "-nocerts",
        "-nodes",
        "-passin",
        "pass:other-pass",
        "-in",
    ])
    .arg(&p12));
    let key_file = s.path("from-jks.key");
    std::fs::write(&key_file, &key.stdout).unwrap();
    assert_eq!(
        key_pubkey(&key_file),
        s.leaf_pubkey(),
        "the JKS key matches the leaf"
    );

    let err = fails(
        keytool(&[
            "-list",
            "-storetype",
            "JKS",
            "-storepass",
            "wrong-pass",
            "-keystore",
        ])
        .arg(&jks),
    );
    assert!(err.contains("password was incorrect"), "{err}");
}

#[test]
fn jks_is_read_by_keytool() {
    check_jks(None);
}

/// An RSA key is over 1 KiB of PKCS#8: two-byte DER lengths in the protected key.
#[test]
fn jks_with_an_rsa_key_is_read_by_keytool() {
    check_jks(Some(rsa_key()));
}

#[test]
fn pkcs12_is_read_by_keytool() {
    let s = Subject::new(None);
    for (format, name) in [
        (Format::Pkcs12, "modern.p12"),
        (Format::Pkcs12Legacy, "legacy.p12"),
    ] {
        let p12 = s.write(format, name);
        // Java lowercases PKCS#12 aliases (friendlyNames) too.
        check_keytool_list(&s, &p12, "PKCS12", "hook-alias");
    }
}

#[test]
fn pem_and_der_are_read_by_openssl() {
    let s = Subject::new(None);
    let leaf_pubkey = s.leaf_pubkey();

    let fullchain = s.write(Format::PemFullchain, "fullchain.pem");
    let out = ok(openssl(&["storeutl", "-noout", "-certs"]).arg(&fullchain));
    assert!(out.stdout.contains("Total found: 3"), "{}", out.stdout);
    let chain = s.write(Format::PemChain, "chain.pem");
    let out = ok(openssl(&["storeutl", "-noout", "-certs"]).arg(&chain));
    assert!(out.stdout.contains("Total found: 2"), "{}", out.stdout);

    let cert = s.write(Format::PemCert, "cert.pem");
    let out = ok(openssl(&["x509", "-noout", "-pubkey", "-in"]).arg(&cert));
    assert_eq!(out.stdout, leaf_pubkey);
    let der = s.write(Format::DerCert, "cert.der");
    let out = ok(openssl(&["x509", "-inform", "DER", "-noout", "-pubkey", "-in"]).arg(&der));
    assert_eq!(out.stdout, leaf_pubkey);

    let key = s.write(Format::PemKey, "key.pem");
    assert_eq!(key_pubkey(&key), leaf_pubkey);
    let combined = s.write(Format::PemCombined, "combined.pem");
    assert_eq!(key_pubkey(&combined), leaf_pubkey);
    // Without -certs: OpenSSL 3.0's storeutl fails on a key when filtering for certificates.
    let out = ok(openssl(&["storeutl", "-noout"]).arg(&combined));
    assert_eq!(
        out.stdout, "0: Certificate\n1: Certificate\n2: Certificate\n3: Pkey\nTotal found: 4\n",
        "the leaf, two intermediates, then the key"
    );
    let der_key = s.write(Format::DerKey, "key.der");
    let out = ok(openssl(&["pkey", "-inform", "DER", "-pubout", "-in"]).arg(&der_key));
    assert_eq!(out.stdout, leaf_pubkey);
}
