//! `tlsward cert export` and `cert issue`'s refusal, from a store that holds a real version:
//! every format read back by `openssl` and `keytool`, file modes, no overwriting.

use std::path::{Path, PathBuf};
use std::process::Command;

use tlsward::cert::CertFacts;
use tlsward::secret::Secret;
use tlsward::store::{CertificateRow, NewVersion};

use crate::util::cli::open_store;
use crate::util::tools::{cert_pubkey, key_pubkey, keytool, ok, openssl};
use crate::util::{Leaf, TestCa, mode, pem, pem_chain, read, real_now};

/// A config whose `[acme]` CA is never reached, with one certificate `www` (plus `extra`),
/// and a store holding one version of it: a real leaf under a root and an intermediate.
pub struct Stored {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub leaf: Leaf,
    pub version: i64,
}

impl Stored {
    pub fn new(extra: &str) -> Self {
        Self::with_state_dir("state", extra)
    }

    /// With `[server] state_dir` (relative to the config's directory, or absolute).
    pub fn with_state_dir(state_dir: &str, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("tlsward.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nstate_dir = \"{state_dir}\"\n\n\
                 [store]\npath = \"tlsward.db\"\nkey_file = \"store.key\"\n\n\
                 [acme]\ndirectory = \"https://127.0.0.1:1/dir\"\nhttp01_listen = \"127.0.0.1:{port}\"\n\n\
                 [[certificate]]\nname = \"www\"\ndomains = [\"www.tlsward.test\"]\n\n{extra}",
                port = crate::util::unique_port()
            ),
        )
        .unwrap();
        let root = TestCa::root_at("Export Root", real_now());
        let leaf = root
            .intermediate("Export Intermediate")
            .leaf(&["www.tlsward.test"])
            .build();
        let store = open_store(dir.path());
        let row = CertificateRow {
            name: "www".into(),
            domains: vec!["www.tlsward.test".into()],
            key_type: "ecdsa-p256".into(),
        };
        store.upsert_certificate(&row, 1).unwrap();
        let facts = CertFacts::parse(leaf.der()).unwrap();
        let order = store.begin_order("www", None, 2).unwrap();
        let key = Secret::new(leaf.key.secret_der().to_vec());
        let version = store
            .complete_order(
                order,
                &NewVersion {
                    certificate: "www",
                    serial: &facts.serial,
                    sha256: &facts.sha256,
                    not_before: facts.not_before.unix_timestamp(),
                    not_after: facts.not_after.unix_timestamp(),
                    chain_pem: &pem_chain(&leaf.chain),
                    key: &key,
                    ari_id: None,
                },
                3,
            )
            .unwrap()
            .id;
        Self {
            dir,
            config,
            leaf,
            version,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs the binary with `args` then `--config` (environment: `env` added).
    pub fn tlsward(&self, args: &[&str], env: &[(&str, &str)]) -> Ran {
        let out = Command::new(env!("CARGO_BIN_EXE_tlsward"))
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .env_remove("TLSWARD_LOG")
            .envs(env.iter().copied())
            .output()
            .expect("run tlsward");
        Ran {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// A finished run of the binary.
#[derive(Debug)]
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// The certificates of a PEM file, DER.
fn certs_in(path: &Path) -> Vec<Vec<u8>> {
    ::pem::parse_many(read(path))
        .unwrap()
        .into_iter()
        .map(|p| {
            assert_eq!(p.tag(), "CERTIFICATE");
            p.into_contents()
        })
        .collect()
}

/// The public key of the private key in `key_file`, and of the leaf, as openssl prints them.
fn public_keys(s: &Stored, key_file: &Path) -> (String, String) {
    let leaf = s.path("leaf.pem");
    std::fs::write(&leaf, pem(s.leaf.der())).unwrap();
    (key_pubkey(key_file), cert_pubkey(&leaf))
}

#[test]
fn pem_export_is_a_bundle_with_a_private_key_file() {
    let s = Stored::new("");
    let out_dir = s.path("out/www");
    let dir = out_dir.to_str().unwrap();
    let run = s.tlsward(
        &["cert", "export", "www", "--format", "pem", "--out", dir],
        &[],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout
            .starts_with(&format!("exported www version {} (serial ", s.version)),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("key.pem (0600)"), "{}", run.stdout);
    // The missing directory is created for its owner alone.
    assert_eq!(mode(&out_dir), 0o700);
    let der: Vec<Vec<u8>> = s.leaf.chain.iter().map(|c| c.to_vec()).collect();
    assert_eq!(certs_in(&out_dir.join("cert.pem")), der[..1]);
    assert_eq!(certs_in(&out_dir.join("chain.pem")), der[1..]);
    assert_eq!(certs_in(&out_dir.join("fullchain.pem")), der);
    assert_eq!(mode(out_dir.join("key.pem")), 0o600);
    for cert in ["cert.pem", "chain.pem", "fullchain.pem"] {
        assert_eq!(mode(out_dir.join(cert)) & 0o600, 0o600, "{cert}");
        assert_eq!(mode(out_dir.join(cert)) & 0o022, 0, "{cert}");
    }
    let (of_key, of_leaf) = public_keys(&s, &out_dir.join("key.pem"));
    assert_eq!(of_key, of_leaf);
    // The bundle verifies under the root as a chain file.
    ok(openssl(&["verify", "-partial_chain", "-untrusted"])
        .arg(out_dir.join("chain.pem"))
        .arg("-CAfile")
        .arg(out_dir.join("chain.pem"))
        .arg(out_dir.join("cert.pem")));

    // Nothing is overwritten without --force: the run fails before writing anything.
    std::fs::write(out_dir.join("key.pem"), "old key").unwrap();
    std::fs::remove_file(out_dir.join("cert.pem")).unwrap();
    let again = s.tlsward(
        &["cert", "export", "www", "--format", "pem", "--out", dir],
        &[],
    );
    assert_eq!(again.code, Some(3), "{again:?}");
    assert!(
        again
            .stderr
            .contains("already exist; --force replaces them")
            && again.stderr.contains("key.pem"),
        "{}",
        again.stderr
    );
    assert_eq!(read(out_dir.join("key.pem")), "old key");
    assert!(!out_dir.join("cert.pem").exists());
    let forced = s.tlsward(
        &[
            "cert", "export", "www", "--format", "pem", "--out", dir, "--force",
        ],
        &[],
    );
    assert_eq!(forced.code, Some(0), "{forced:?}");
    assert_eq!(mode(out_dir.join("key.pem")), 0o600);
    assert_eq!(public_keys(&s, &out_dir.join("key.pem")).0, of_leaf);
    let names: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 4, "no temporary file is left: {names:?}");

    // PEM takes no password; an unknown version is named.
    std::fs::write(s.path("pass"), "pw\n").unwrap();
    let pass = s.path("pass");
    let other = s.path("other");
    let run = s.tlsward(
        &[
            "cert",
            "export",
            "www",
            "--format",
            "pem",
            "--out",
            other.to_str().unwrap(),
            "--password-file",
            pass.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(run.code, Some(3), "{run:?}");
    assert!(
        run.stderr.contains("PEM files are never encrypted"),
        "{}",
        run.stderr
    );
    assert!(!other.exists(), "nothing is created for a refused export");
    let run = s.tlsward(
        &[
            "cert",
            "export",
            "www",
            "--format",
            "pem",
            "--out",
            other.to_str().unwrap(),
            "--version-id",
            "999",
        ],
        &[],
    );
    assert!(
        run.stderr.contains("www has no version 999"),
        "{}",
        run.stderr
    );
}

#[test]
fn pkcs12_and_jks_exports_open_with_their_password() {
    let s = Stored::new("");
    let out_dir = s.path("out");
    let dir = out_dir.to_str().unwrap();
    // The password file's first line, without its line end.
    std::fs::write(s.path("p12-pass"), "p12 s3cret\r\nignored\n").unwrap();
    let pass_file = s.path("p12-pass");
    let run = s.tlsward(
        &[
            "cert",
            "export",
            "www",
            "--format",
            "pkcs12",
            "--out",
            dir,
            "--password-file",
            pass_file.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    let p12 = out_dir.join("cert.p12");
    assert_eq!(mode(&p12), 0o600);
    let info = ok(openssl(&[
        "pkcs12",
        "-info",
        "-noout",
        "-passin",
        "pass:p12 s3cret",
        "-in",
    ])
    .arg(&p12));
    let info = format!("{}{}", info.stdout, info.stderr);
    assert!(
        info.contains("MAC: sha256") && info.contains("AES-256-CBC"),
        "{info}"
    );
    let key = ok(openssl(&[
        "pkcs12",
        "-nocerts",
        "-nodes",
        "-passin",
        "pass:p12 s3cret",
        "-in",
    ])
    .arg(&p12));
    std::fs::write(s.path("from-p12.key"), &key.stdout).unwrap();
    let (of_key, of_leaf) = public_keys(&s, &s.path("from-p12.key"));
    assert_eq!(of_key, of_leaf);

    // JKS, its password from the environment; keytool lists the whole chain under the
    // certificate's name.
    let run = s.tlsward(
        &[
            "cert",
            "export",
            "www",
            "--format",
            "jks",
            "--out",
            dir,
            "--password-env",
            "EXPORT_JKS_PASS",
        ],
        &[("EXPORT_JKS_PASS", "jks-s3cret")],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    let jks = out_dir.join("cert.jks");
    assert_eq!(mode(&jks), 0o600);
    let list = ok(keytool(&[
        "-list",
        "-v",
        "-storetype",
        "JKS",
        "-storepass",
        "jks-s3cret",
        "-keystore",
    ])
    .arg(&jks))
    .stdout;
    assert!(list.contains("Alias name: www\n"), "{list}");
    assert!(list.contains("Entry type: PrivateKeyEntry"), "{list}");
    assert!(list.contains("Certificate chain length: 2"), "{list}");

    // Encrypted formats need a password, and never take it from argv.
    let run = s.tlsward(
        &[
            "cert",
            "export",
            "www",
            "--format",
            "pkcs12-legacy",
            "--out",
            dir,
            "--force",
        ],
        &[],
    );
    assert_eq!(run.code, Some(3), "{run:?}");
    assert!(
        run.stderr
            .contains("--password-file FILE or --password-env VAR"),
        "{}",
        run.stderr
    );
    let run = s.tlsward(
        &[
            "cert",
            "export",
            "www",
            "--format",
            "jks",
            "--out",
            dir,
            "--password-env",
            "EXPORT_UNSET_VAR",
        ],
        &[],
    );
    assert!(
        run.stderr
            .contains("the environment variable EXPORT_UNSET_VAR is not set"),
        "{}",
        run.stderr
    );
    let run = s.tlsward(
        &[
            "cert",
            "export",
            "www",
            "--format",
            "jks",
            "--out",
            dir,
            "--password",
            "x",
        ],
        &[],
    );
    assert_eq!(run.code, Some(3), "no --password flag: {run:?}");
    // The refused runs left the files as they were.
    ok(keytool(&[
        "-list",
        "-storetype",
        "JKS",
        "-storepass",
        "jks-s3cret",
        "-keystore",
    ])
    .arg(&jks));
}

#[test]
fn cert_issue_refuses_a_certificate_that_has_a_version() {
    let s = Stored::new("");
    let run = s.tlsward(&["cert", "issue", "www"], &[]);
    assert_eq!(run.code, Some(3), "{run:?}");
    assert!(
        run.stderr
            .contains(&format!("www already has version {} (serial ", s.version))
            && run
                .stderr
                .contains("`tlsward cert renew www` orders a new version")
            && run.stderr.contains("--force"),
        "{}",
        run.stderr
    );
    // With --force it goes on to order (and here fails to reach the CA, which is absent).
    let forced = s.tlsward(&["cert", "issue", "--force", "www"], &[]);
    assert_eq!(forced.code, Some(3), "{forced:?}");
    assert!(
        !forced.stderr.contains("already has version"),
        "{}",
        forced.stderr
    );
    assert!(forced.stderr.contains("ACME"), "{}", forced.stderr);
}
