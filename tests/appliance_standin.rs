//! The appliance stand-in (tests/util/appliance.rs) driven by a plain HTTPS client: upload,
//! activate, poll, and the data plane then serves the uploaded leaf; the failure modes and
//! the refusals (bad token, wrong passphrase, garbage, oversized bodies).

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use tlsward::cert::sha256_hex;

use crate::util::appliance::{Appliance, ApplianceMode, MAX_UPLOAD, Upload};
use crate::util::probe::{facts, probe};
use crate::util::{Leaf, TestCa, TlsServer, pem_chain, real_now};

macro_rules! token {
    () => {
        "s3cret-token"
    };
}
const TOKEN: &str = token!();
const BEARER: (&str, &str) = ("authorization", concat!("Bearer ", token!()));
const DATA_NAME: &str = "appliance.test";

/// An appliance whose API certificate is issued by `api_ca` (valid now, as the client
/// checks it at the real clock), serving `old` on its data plane.
async fn appliance(api_ca: &TestCa, old: &Leaf, mode: ApplianceMode) -> Appliance {
    let api_leaf = api_ca.leaf(&["127.0.0.1"]).build();
    Appliance::start(&api_leaf, TlsServer::leaf(old), TOKEN, mode).await
}

/// One HTTPS request to the appliance's API, trusting `api_ca`: the status and the JSON body.
async fn call(
    appliance: &Appliance,
    api_ca: &TestCa,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, Value) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(api_ca.cert.clone()).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("https://{}{path}", appliance.api_addr()));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let resp = client
        .request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .expect("request to the appliance API");
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{method} {path}: non-JSON body {bytes:?}: {e}"));
    (status, json)
}

/// The leaf as PKCS#12 under `password`.
fn pkcs12(leaf: &Leaf, password: &str) -> Vec<u8> {
    let key = p12_keystore::PrivateKey::from_der(leaf.key.secret_der()).unwrap();
    let certs = leaf
        .chain
        .iter()
        .map(|c| p12_keystore::Certificate::from_der(c).unwrap());
    let chain = p12_keystore::PrivateKeyChain::new("key-1", key, certs);
    let mut store = p12_keystore::KeyStore::new();
    store.add_entry(
        "tlsward",
        p12_keystore::KeyStoreEntry::PrivateKeyChain(chain),
    );
    store.writer(password).write().unwrap()
}

/// The leaf, its chain and its key in one PEM file.
fn pem_bundle(leaf: &Leaf) -> Vec<u8> {
    let key = pem::encode(&pem::Pem::new(
        "PRIVATE KEY",
        leaf.key.secret_der().to_vec(),
    ));
    format!("{}{key}", pem_chain(&leaf.chain)).into_bytes()
}

/// Uploads, activates and polls until the job leaves `running`; returns the final job JSON
/// and how many polls said `running`.
async fn deploy(appliance: &Appliance, api_ca: &TestCa, body: Vec<u8>, ty: &str) -> (Value, u32) {
    let headers = [BEARER, ("content-type", ty), ("x-passphrase", "pw")];
    let (status, created) = call(
        appliance,
        api_ca,
        "POST",
        "/api/v1/certificates",
        &headers,
        body,
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id");
    let path = format!("/api/v1/certificates/{id}/activate");
    let (status, job) = call(appliance, api_ca, "POST", &path, &[BEARER], vec![]).await;
    assert_eq!(status, 202, "{job}");
    let path = format!("/api/v1/jobs/{}", job["job"].as_str().expect("job"));
    for running in 0..10 {
        let (status, state) = call(appliance, api_ca, "GET", &path, &[BEARER], vec![]).await;
        assert_eq!(status, 200, "{state}");
        if state["state"] != "running" {
            return (state, running);
        }
    }
    panic!("job {path} still running after 10 polls");
}

#[tokio::test]
async fn appliance_upload_activate_serves_the_new_leaf() {
    let api_ca = TestCa::root_at("Appliance API CA", real_now());
    let ca = TestCa::root("Data CA");
    let (old, new) = (ca.leaf(&[DATA_NAME]).build(), ca.leaf(&[DATA_NAME]).build());
    let appliance = appliance(&api_ca, &old, ApplianceMode::Honest).await;
    let (new_sha, old_sha) = (sha256_hex(new.der()), sha256_hex(old.der()));
    assert_eq!(
        facts(&probe(appliance.data_plane(), DATA_NAME, ca.trust()).await)
            .leaf
            .sha256,
        old_sha
    );

    let (job, running) = deploy(
        &appliance,
        &api_ca,
        pkcs12(&new, "pw"),
        "application/x-pkcs12",
    )
    .await;
    assert_eq!((job["state"].as_str(), running), (Some("done"), 2), "{job}");

    let report = probe(appliance.data_plane(), DATA_NAME, ca.trust()).await;
    assert_eq!(facts(&report).leaf.sha256, new_sha);
    assert_eq!(
        (appliance.active_sha256(), appliance.serving_sha256()),
        (new_sha.clone(), new_sha.clone())
    );
    let (status, active) = call(
        &appliance,
        &api_ca,
        "GET",
        "/api/v1/certificates/active",
        &[BEARER],
        vec![],
    )
    .await;
    assert_eq!(
        (status, active["sha256"].as_str()),
        (200, Some(new_sha.as_str()))
    );
    assert_eq!(
        appliance.uploads(),
        [Upload {
            content_type: "application/x-pkcs12".into(),
            passphrase_ok: Some(true),
            sha256: Some(new_sha),
            status: 201
        }]
    );

    // A PEM upload (leaf, chain, key) works the same way.
    let newer = ca.leaf(&[DATA_NAME]).build();
    let (job, _) = deploy(
        &appliance,
        &api_ca,
        pem_bundle(&newer),
        "application/x-pem-file",
    )
    .await;
    assert_eq!(job["state"], "done");
    let report = probe(appliance.data_plane(), DATA_NAME, ca.trust()).await;
    assert_eq!(facts(&report).leaf.sha256, sha256_hex(newer.der()));
}

#[tokio::test]
async fn appliance_failing_and_lying_activations() {
    let api_ca = TestCa::root_at("Appliance API CA", real_now());
    let ca = TestCa::root("Data CA");
    let (old, new) = (ca.leaf(&[DATA_NAME]).build(), ca.leaf(&[DATA_NAME]).build());
    let (old_sha, new_sha) = (sha256_hex(old.der()), sha256_hex(new.der()));

    let rejecting = appliance(&api_ca, &old, ApplianceMode::RejectActivation).await;
    let (job, _) = deploy(
        &rejecting,
        &api_ca,
        pem_bundle(&new),
        "application/x-pem-file",
    )
    .await;
    assert_eq!(
        (job["state"].as_str(), job["message"].as_str()),
        (Some("failed"), Some("certificate rejected by policy"))
    );
    assert_eq!(
        (rejecting.active_sha256(), rejecting.serving_sha256()),
        (old_sha.clone(), old_sha.clone())
    );

    // The lying appliance says done and claims the new leaf, but keeps serving the old one.
    let lying = appliance(&api_ca, &old, ApplianceMode::Lying).await;
    let (job, _) = deploy(&lying, &api_ca, pem_bundle(&new), "application/x-pem-file").await;
    assert_eq!(job["state"], "done");
    let (_, active) = call(
        &lying,
        &api_ca,
        "GET",
        "/api/v1/certificates/active",
        &[BEARER],
        vec![],
    )
    .await;
    assert_eq!(active["sha256"].as_str(), Some(new_sha.as_str()));
    let report = probe(lying.data_plane(), DATA_NAME, ca.trust()).await;
    assert_eq!(facts(&report).leaf.sha256, old_sha);
}

#[tokio::test]
async fn appliance_refuses_bad_requests() {
    let api_ca = TestCa::root_at("Appliance API CA", real_now());
    let ca = TestCa::root("Data CA");
    let (old, new) = (ca.leaf(&[DATA_NAME]).build(), ca.leaf(&[DATA_NAME]).build());
    let appliance = appliance(&api_ca, &old, ApplianceMode::Honest).await;
    let upload = |headers: Vec<(&'static str, &'static str)>, body: Vec<u8>| {
        let appliance = &appliance;
        let api_ca = &api_ca;
        async move {
            call(
                appliance,
                api_ca,
                "POST",
                "/api/v1/certificates",
                &headers,
                body,
            )
            .await
        }
    };
    let p12 = ("content-type", "application/x-pkcs12");

    for auth in [
        vec![],
        vec![("authorization", "Bearer wrong")],
        vec![("authorization", TOKEN)],
    ] {
        let (status, body) = upload(
            [auth.clone(), vec![p12, ("x-passphrase", "pw")]].concat(),
            pkcs12(&new, "pw"),
        )
        .await;
        assert_eq!(status, 401, "{auth:?}: {body}");
        assert!(body["error"].is_string(), "{body}");
    }
    assert_eq!(
        appliance.uploads(),
        [],
        "unauthenticated uploads are not recorded"
    );

    let (status, body) = upload(
        vec![BEARER, p12, ("x-passphrase", "wrong")],
        pkcs12(&new, "pw"),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("PKCS#12"),
        "{body}"
    );
    assert_eq!(appliance.uploads()[0].passphrase_ok, Some(false));

    let (status, _) = upload(
        vec![BEARER, p12, ("x-passphrase", "pw")],
        b"garbage".to_vec(),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = upload(
        vec![BEARER, ("content-type", "application/x-pem-file")],
        b"garbage".to_vec(),
    )
    .await;
    assert_eq!(status, 400);
    // The key of another certificate.
    let mismatched = Leaf {
        chain: new.chain.clone(),
        key: old.key.clone_key(),
    };
    let (status, body) = upload(
        vec![BEARER, ("content-type", "application/x-pem-file")],
        pem_bundle(&mismatched),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = upload(vec![BEARER, p12], vec![0; MAX_UPLOAD + 1]).await;
    assert_eq!(status, 413);

    let (status, _) = call(
        &appliance,
        &api_ca,
        "POST",
        "/api/v1/certificates/c9/activate",
        &[BEARER],
        vec![],
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = call(
        &appliance,
        &api_ca,
        "GET",
        "/api/v1/jobs/j1",
        &[BEARER],
        vec![],
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(appliance.serving_sha256(), sha256_hex(old.der()));
    let statuses: Vec<u16> = appliance.uploads().iter().map(|u| u.status).collect();
    assert_eq!(statuses, [400, 400, 400, 400]);
}
