use super::keys::{from_sec1, key_pair};
use super::*;
use crate::store::KeySource;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};

const DIRECTORY: &str = "https://ca.test/dir";
const ACCOUNT: &str = "https://ca.test/acct/42";

/// A new P-256 key as ring writes PKCS#8 (the layout of [`PKCS8_PREFIX`]).
fn new_pkcs8() -> Vec<u8> {
    EcdsaKeyPair::generate_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        &ring::rand::SystemRandom::new(),
    )
    .unwrap()
    .as_ref()
    .to_vec()
}

fn jwk_of(pkcs8: &[u8]) -> Value {
    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    let point = &pkcs8[pkcs8.len() - 64..];
    json!({
        "kty": "EC",
        "crv": "P-256",
        "d": b64(&pkcs8[36..68]),
        "x": b64(&point[..32]),
        "y": b64(&point[32..]),
    })
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

fn message(e: AccountError) -> String {
    e.to_string()
}

#[test]
fn a_jwk_pem_and_sec1_key_become_the_same_pkcs8() {
    let pkcs8 = new_pkcs8();
    let jwk = ImportedKey::parse(jwk_of(&pkcs8).to_string().as_bytes(), &[]).unwrap();
    assert_eq!(jwk.origin, KeyOrigin::Jwk);
    assert_eq!(jwk.pkcs8.expose(), &pkcs8[..]);
    assert_eq!(jwk.account_url, None);

    let pem8 = ImportedKey::parse(pem("PRIVATE KEY", &pkcs8).as_bytes(), &[]).unwrap();
    assert_eq!(pem8.origin, KeyOrigin::Pem);
    assert_eq!(pem8.pkcs8.expose(), &pkcs8[..]);

    // The ECPrivateKey inside the PKCS#8 is a SEC1 key (public key, no parameters).
    let sec1 = ImportedKey::parse(pem("EC PRIVATE KEY", &pkcs8[29..]).as_bytes(), &[]).unwrap();
    assert_eq!(sec1.pkcs8.expose(), &pkcs8[..]);
    assert_eq!(
        jwk.thumbprint().unwrap(),
        sec1.thumbprint().unwrap(),
        "one key, one thumbprint"
    );
    assert_ne!(
        jwk.thumbprint().unwrap(),
        thumbprint(&Secret::new(new_pkcs8())).unwrap()
    );
}

#[test]
fn keys_instant_acme_cannot_sign_with_are_refused_with_the_reason() {
    let rsa = json!({ "kty": "RSA", "n": "AQAB", "e": "AQAB", "d": "AQAB" });
    let e = message(ImportedKey::parse(rsa.to_string().as_bytes(), &[]).unwrap_err());
    assert!(e.contains("an RSA key") && e.contains("P-256"), "{e}");

    let p384 = json!({ "kty": "EC", "crv": "P-384", "d": "AA", "x": "AA", "y": "AA" });
    let e = message(ImportedKey::parse(p384.to_string().as_bytes(), &[]).unwrap_err());
    assert!(e.contains("another curve"), "{e}");

    let e = message(
        ImportedKey::parse(
            pem("RSA PRIVATE KEY", b"\x30\x03\x02\x01\x00").as_bytes(),
            &[],
        )
        .unwrap_err(),
    );
    assert!(e.contains("an RSA key"), "{e}");

    // A JWK whose private scalar is another key's: the halves do not match.
    let (a, b) = (new_pkcs8(), new_pkcs8());
    let mut mixed = jwk_of(&a);
    mixed["d"] = jwk_of(&b)["d"].clone();
    let e = message(ImportedKey::parse(mixed.to_string().as_bytes(), &[]).unwrap_err());
    assert!(e.contains("do not match"), "{e}");

    for junk in [
        &b""[..],
        b"hello",
        b"\xff\xfe",
        b"{\"kty\":\"EC\"",
        b"-----BEGIN X-----\n",
    ] {
        assert!(ImportedKey::parse(junk, &[]).is_err());
    }
}

#[test]
fn no_sec1_prefix_or_altered_byte_panics() {
    let pkcs8 = new_pkcs8();
    let sec1 = &pkcs8[29..];
    for n in 0..sec1.len() {
        assert!(from_sec1(&sec1[..n]).is_err(), "prefix of {n} bytes");
    }
    for i in 0..sec1.len() {
        let mut altered = sec1.to_vec();
        altered[i] ^= 0x41;
        // Anything may be refused; nothing may panic, and an accepted key is a real one.
        if let Ok(der) = from_sec1(&altered) {
            key_pair(der.expose()).unwrap();
        }
    }
}

/// A store holding an account, as `Issuer::connect` saves instant-acme's credentials.
fn store_with_account(pkcs8: &[u8]) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        &dir.path().join("tlsward.db"),
        &KeySource::File(dir.path().join("store.key")),
    )
    .unwrap();
    let creds = json!({ "id": ACCOUNT, "key_pkcs8": URL_SAFE_NO_PAD.encode(pkcs8), "directory": DIRECTORY });
    store
        .save_account(
            DIRECTORY,
            ACCOUNT,
            &Secret::new(creds.to_string().into_bytes()),
            5,
        )
        .unwrap();
    (dir, store)
}

#[test]
fn an_export_decrypts_only_with_its_identity_and_holds_the_account() {
    let pkcs8 = new_pkcs8();
    let (_dir, store) = store_with_account(&pkcs8);
    let summary = account_summary(&store, DIRECTORY).unwrap().unwrap();
    assert_eq!(summary.account_url, ACCOUNT);
    assert_eq!(summary.created_at, 5);
    assert_eq!(summary.key_type, "ecdsa-p256");
    assert_eq!(summary.retired_keys, 0);

    let offline = age::x25519::Identity::generate();
    let other = age::x25519::Identity::generate();
    let file = export_account(
        &store,
        DIRECTORY,
        &[offline.to_public()],
        &crate::clock::SystemClock,
    )
    .unwrap();
    assert!(file.starts_with(b"age-encryption.org/v1\n"));
    let d = &pkcs8[36..68];
    assert!(
        !file.windows(d.len()).any(|w| w == d),
        "the key is encrypted"
    );

    let key = ImportedKey::parse(&file, std::slice::from_ref(&offline)).unwrap();
    assert_eq!(key.origin, KeyOrigin::Export);
    assert_eq!(key.pkcs8.expose(), &pkcs8[..]);
    assert_eq!(key.account_url.as_deref(), Some(ACCOUNT));
    assert_eq!(key.directory.as_deref(), Some(DIRECTORY));
    assert_eq!(key.thumbprint().unwrap(), summary.thumbprint);

    let e = message(ImportedKey::parse(&file, &[]).unwrap_err());
    assert!(e.contains("pass --identity"), "{e}");
    let e = message(ImportedKey::parse(&file, &[other]).unwrap_err());
    assert!(e.contains("not encrypted to this identity"), "{e}");
    for cut in [file.len() - 1, file.len() / 2, 30] {
        assert!(ImportedKey::parse(&file[..cut], std::slice::from_ref(&offline)).is_err());
    }
    let mut flipped = file.clone();
    let last = flipped.len() - 5;
    flipped[last] ^= 1;
    assert!(ImportedKey::parse(&flipped, std::slice::from_ref(&offline)).is_err());
    assert!(format!("{key:?}").len() < 200 && !format!("{key:?}").contains("pkcs8"));
}

#[test]
fn recipients_and_identities_are_checked() {
    let id = age::x25519::Identity::generate();
    let public = id.to_public().to_string();
    assert_eq!(parse_recipients(&[public]).unwrap().len(), 1);
    assert!(parse_recipients(&[]).is_err());
    let e = message(parse_recipients(&["age1nope".into()]).unwrap_err());
    assert!(e.contains("not an age X25519 recipient"), "{e}");
    use age::secrecy::ExposeSecret;
    let text = format!("# created: now\n{}\n", id.to_string().expose_secret());
    assert_eq!(parse_identities(&text).unwrap().len(), 1);
    assert!(parse_identities("# nothing\n").is_err());
}

#[test]
fn a_jws_verifies_with_its_public_key_over_protected_dot_payload() {
    use ring::signature::{ECDSA_P256_SHA256_FIXED, KeyPair, UnparsedPublicKey};
    let pkcs8 = new_pkcs8();
    let pair = key_pair(&pkcs8).unwrap();
    let jws = keys::jws(&pair, &json!({ "alg": "ES256", "url": "u" }), b"{}").unwrap();
    let (p, pl, sig) = (
        jws["protected"].as_str().unwrap(),
        jws["payload"].as_str().unwrap(),
        URL_SAFE_NO_PAD
            .decode(jws["signature"].as_str().unwrap())
            .unwrap(),
    );
    assert_eq!(sig.len(), 64, "r || s, RFC 7518 §3.4");
    assert_eq!(URL_SAFE_NO_PAD.decode(pl).unwrap(), b"{}");
    let key = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, pair.public_key().as_ref());
    key.verify(format!("{p}.{pl}").as_bytes(), &sig).unwrap();
    assert!(key.verify(format!("{p}.e30x").as_bytes(), &sig).is_err());
    let jwk: Value = serde_json::from_str(&keys::public_jwk(&pair).unwrap()).unwrap();
    assert_eq!(
        jwk,
        jwk_of(&pkcs8)
            .as_object()
            .map(|o| {
                let mut o = o.clone();
                o.remove("d");
                Value::Object(o)
            })
            .unwrap()
    );
}
