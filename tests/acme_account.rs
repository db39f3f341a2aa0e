//! `tlsward acme account show|export|import|rollover` against a real Pebble: the URL Pebble
//! gave, an export adopted by a fresh store as the same account, a key rollover after which
//! the new key orders and the old one is refused, accounts made outside tlsward (a JWK, a
//! SEC1 PEM by openssl) adopted without a new registration, an unknown key refused with
//! nothing stored, and no key material in any output.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use age::secrecy::ExposeSecret;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tlsward::store::{KeySource, Store};

use crate::cert_export::Ran;
use crate::util::pebble::Pebble;

/// A config for `pebble` with its own state dir `state` (inside the Pebble's temp dir),
/// answering HTTP-01 on `http01_port`.
fn config(pebble: &Pebble, state: &str, http01_port: u16) -> PathBuf {
    let dir = pebble.dir.path();
    let path = dir.join(format!("{state}.toml"));
    let text = format!(
        r#"
[server]
state_dir = "{state}"

[store]
path = "{state}/tlsward.db"
key_file = "{state}/store.key"

[acme]
directory = "{directory}"
ca_file = "{ca}"
http01_listen = "127.0.0.1:{http01_port}"

[[certificate]]
name = "site"
domains = ["site.tlsward.test"]
"#,
        directory = pebble.directory,
        ca = pebble.tls_ca_file.display(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Every run's output, to check that no key material is in any of it.
#[derive(Default)]
struct Outputs(Vec<String>);

impl Outputs {
    /// Runs the binary with `args` then `--config`, off the runtime's threads.
    async fn tlsward(&mut self, config: &Path, args: &[&str]) -> Ran {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tlsward"));
        cmd.args(args)
            .arg("--config")
            .arg(config)
            .env_remove("TLSWARD_LOG")
            .arg("-v");
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        let ran = Ran {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        self.0.push(format!("{}{}", ran.stdout, ran.stderr));
        ran
    }

    /// Asserts that no output holds a PKCS#8 P-256 key's private scalar (`pkcs8[36..68]`),
    /// in base64 or base64url, or a 12-character piece of it, nor a PEM or age secret key.
    fn assert_free_of(&self, pkcs8: &[u8]) {
        let d = &pkcs8[36..68];
        let encodings = [
            URL_SAFE_NO_PAD.encode(d),
            base64::engine::general_purpose::STANDARD.encode(d),
        ];
        for out in &self.0 {
            assert!(
                !out.contains("PRIVATE KEY") && !out.contains("AGE-SECRET-KEY"),
                "{out}"
            );
            for secret in &encodings {
                for i in 0..secret.len() - 12 {
                    assert!(!out.contains(&secret[i..i + 12]), "key material in: {out}");
                }
            }
        }
    }
}

fn ok(ran: &Ran) {
    assert_eq!(ran.code, Some(0), "{ran:?}");
}

fn refused(ran: &Ran, says: &str) {
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert!(ran.stderr.contains(says), "expected {says:?} in {ran:?}");
}

/// The store of `state` (inside the Pebble's temp dir).
fn store(pebble: &Pebble, state: &str) -> Store {
    let dir = pebble.dir.path().join(state);
    Store::open_existing(
        &dir.join("tlsward.db"),
        &KeySource::File(dir.join("store.key")),
    )
    .unwrap()
}

fn journal_kinds(store: &Store) -> Vec<String> {
    store
        .journal_entries(None)
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect()
}

/// The PKCS#8 key inside stored instant-acme credentials.
fn creds_key(creds: &[u8]) -> Vec<u8> {
    let creds: serde_json::Value = serde_json::from_slice(creds).unwrap();
    URL_SAFE_NO_PAD
        .decode(creds["key_pkcs8"].as_str().unwrap())
        .unwrap()
}

/// The PKCS#8 key of the store's account.
fn stored_key(store: &Store, directory: &str) -> Vec<u8> {
    creds_key(store.account(directory).unwrap().unwrap().expose())
}

/// The line of `show` that starts with `field:`, its value.
fn field(show: &str, name: &str) -> String {
    show.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in {show}"))
        .trim()
        .to_owned()
}

/// A new age identity written to `path` (0600), and its recipient.
fn identity(path: &Path) -> String {
    let id = age::x25519::Identity::generate();
    std::fs::write(path, format!("{}\n", id.to_string().expose_secret())).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    id.to_public().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn export_import_and_rollover_keep_one_account() {
    let port = crate::util::unique_port();
    let pebble = Pebble::start(port, 3600).await;
    let dir = pebble.dir.path();
    let (first, second) = (
        config(&pebble, "first", port),
        config(&pebble, "second", port),
    );
    let mut o = Outputs::default();

    // No account yet: show says so.
    refused(
        &o.tlsward(&first, &["acme", "account", "show"]).await,
        "no ACME account",
    );
    ok(&o.tlsward(&first, &["cert", "issue", "site"]).await);

    // show prints the URL Pebble gave (the one the store keeps), for CAA accounturi.
    let url = store(&pebble, "first")
        .account_row(&pebble.directory)
        .unwrap()
        .unwrap()
        .account_url;
    assert!(
        url.starts_with(pebble.directory.trim_end_matches("/dir")),
        "{url}"
    );
    let show = o.tlsward(&first, &["acme", "account", "show"]).await;
    ok(&show);
    assert_eq!(field(&show.stdout, "account"), url);
    assert_eq!(field(&show.stdout, "directory"), pebble.directory);
    assert_eq!(field(&show.stdout, "key"), "ecdsa-p256");
    assert_eq!(field(&show.stdout, "CAA"), format!("accounturi={url}"));
    let thumb1 = field(&show.stdout, "thumbprint");
    let json = o
        .tlsward(&first, &["acme", "account", "show", "-o", "json"])
        .await;
    ok(&json);
    let json: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(json["account_url"], url.as_str());
    assert_eq!(json["thumbprint"], thumb1.as_str());
    assert_eq!(json["pending_rollover"], false);
    let key1 = stored_key(&store(&pebble, "first"), &pebble.directory);

    // Export: age, 0600, not written twice without --force.
    let (id_file, other_id) = (dir.join("offline.key"), dir.join("other.key"));
    let recipient = identity(&id_file);
    identity(&other_id);
    let export = dir.join("account.age");
    let args = [
        "acme",
        "account",
        "export",
        "--to",
        export.to_str().unwrap(),
        "--recipient",
        &recipient,
    ];
    ok(&o.tlsward(&first, &args).await);
    let bytes = std::fs::read(&export).unwrap();
    assert!(bytes.starts_with(b"age-encryption.org/v1\n"));
    assert_eq!(
        std::fs::metadata(&export).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let again = o.tlsward(&first, &args).await;
    assert_ne!(again.code, Some(0));
    assert!(again.stderr.contains("--force"), "{again:?}");
    assert_eq!(std::fs::read(&export).unwrap(), bytes, "left as it was");

    // Without --recipient: the config's [backup] recipients, and without those a clear error
    // that writes nothing.
    let bare = dir.join("bare.age");
    let bare_args = ["acme", "account", "export", "--to", bare.to_str().unwrap()];
    let none = o.tlsward(&first, &bare_args).await;
    assert_eq!(none.code, Some(3), "{none:?}");
    assert!(none.stderr.contains("[backup] recipients"), "{none:?}");
    assert!(!bare.exists());
    let backed = dir.join("first-backed.toml");
    let text = std::fs::read_to_string(&first).unwrap();
    std::fs::write(
        &backed,
        format!("{text}\n[backup]\nrecipients = [\"{recipient}\"]\n"),
    )
    .unwrap();
    ok(&o.tlsward(&backed, &bare_args).await);
    let opened = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&id_file)
        .arg(&bare)
        .output()
        .expect("age (Debian package age) must be installed");
    assert!(opened.status.success(), "{opened:?}");
    std::fs::remove_file(&bare).unwrap();

    // Plain age: Debian's age decrypts it with the identity (and not without), and the key
    // inside is a PEM openssl reads.
    let age = |id: &Path| {
        Command::new("age")
            .arg("-d")
            .arg("-i")
            .arg(id)
            .arg(&export)
            .output()
            .expect("age (Debian package age) must be installed")
    };
    let plain = age(&id_file);
    assert!(plain.status.success(), "{plain:?}");
    let inside: serde_json::Value = serde_json::from_slice(&plain.stdout).unwrap();
    assert_eq!(inside["format"], "tlsward-acme-account");
    assert_eq!(inside["account_url"], url.as_str());
    assert_eq!(inside["directory"], pebble.directory.as_str());
    let key_pem = dir.join("exported-key.pem");
    std::fs::write(&key_pem, inside["key_pem"].as_str().unwrap()).unwrap();
    let checked = Command::new("openssl")
        .args(["pkey", "-noout", "-check", "-in"])
        .arg(&key_pem)
        .output()
        .unwrap();
    assert!(checked.status.success(), "{checked:?}");
    std::fs::remove_file(&key_pem).unwrap();
    assert!(!age(&other_id).status.success());

    // Import into a fresh state dir: refused without the identity or with another one, then
    // the same account, and then refused again (the store has one now).
    let import = ["acme", "account", "import", export.to_str().unwrap()];
    refused(&o.tlsward(&second, &import).await, "pass --identity");
    let with = |id: &Path| {
        let mut a: Vec<String> = import.iter().map(|s| s.to_string()).collect();
        a.extend(["--identity".into(), id.display().to_string()]);
        a
    };
    let wrong = with(&other_id);
    let wrong: Vec<&str> = wrong.iter().map(String::as_str).collect();
    refused(
        &o.tlsward(&second, &wrong).await,
        "not encrypted to this identity",
    );
    assert!(!dir.join("second/tlsward.db").exists(), "nothing stored");
    let right = with(&id_file);
    let right: Vec<&str> = right.iter().map(String::as_str).collect();
    let imported = o.tlsward(&second, &right).await;
    ok(&imported);
    assert!(imported.stdout.contains(&url), "{imported:?}");
    let show2 = o.tlsward(&second, &["acme", "account", "show"]).await;
    assert_eq!(field(&show2.stdout, "account"), url);
    assert_eq!(field(&show2.stdout, "thumbprint"), thumb1);
    refused(&o.tlsward(&second, &right).await, "already has account");

    // The imported account orders without a new registration.
    ok(&o.tlsward(&second, &["cert", "issue", "site"]).await);
    let kinds = journal_kinds(&store(&pebble, "second"));
    assert!(kinds.contains(&"account.imported".to_owned()), "{kinds:?}");
    assert!(!kinds.contains(&"account.saved".to_owned()), "{kinds:?}");

    // Rollover: the same account with a new key, the old one retired in the store.
    let rolled = o.tlsward(&first, &["acme", "account", "rollover"]).await;
    ok(&rolled);
    let show = o.tlsward(&first, &["acme", "account", "show"]).await;
    assert_eq!(field(&show.stdout, "account"), url);
    let thumb2 = field(&show.stdout, "thumbprint");
    assert_ne!(thumb2, thumb1);
    assert_eq!(field(&show.stdout, "retired keys"), "1");
    assert!(
        rolled.stdout.contains(&format!("{thumb1} -> {thumb2}")),
        "{rolled:?}"
    );
    let s1 = store(&pebble, "first");
    let retired = s1.retired_account_keys(&pebble.directory).unwrap();
    assert_eq!(retired.len(), 1);
    assert_eq!(retired[0].reason, "rollover");
    assert_eq!(creds_key(retired[0].creds.expose()), key1);
    assert!(journal_kinds(&s1).contains(&"account.rollover".to_owned()));
    let key2 = stored_key(&s1, &pebble.directory);
    drop(s1);

    // The new key orders; the old key (still the second store's) is refused by Pebble.
    ok(&o.tlsward(&first, &["cert", "renew", "site"]).await);
    let stale = o.tlsward(&second, &["cert", "renew", "site"]).await;
    assert_ne!(stale.code, Some(0), "{stale:?}");
    assert!(stale.stderr.contains("JWS verification error"), "{stale:?}");

    // No key material in anything printed or logged, nor in the export's bytes.
    o.assert_free_of(&key1);
    o.assert_free_of(&key2);
    assert!(!bytes.windows(32).any(|w| w == &key1[36..68]));
    assert!(!String::from_utf8_lossy(&bytes).contains("PRIVATE KEY"));
}

/// A JWK of a P-256 key as ring writes PKCS#8 (instant-acme's keys): certbot's
/// `private_key.json` for an EC account key.
fn jwk(pkcs8: &[u8]) -> String {
    let point = &pkcs8[pkcs8.len() - 64..];
    serde_json::json!({
        "kty": "EC",
        "crv": "P-256",
        "d": URL_SAFE_NO_PAD.encode(&pkcs8[36..68]),
        "x": URL_SAFE_NO_PAD.encode(&point[..32]),
        "y": URL_SAFE_NO_PAD.encode(&point[32..]),
    })
    .to_string()
}

/// An account registered at `pebble` by instant-acme directly: its URL and PKCS#8 key.
async fn outside_account(pebble: &Pebble) -> (String, Vec<u8>) {
    let (account, creds) = instant_acme::Account::builder_with_root(&pebble.tls_ca_file)
        .unwrap()
        .create(
            &instant_acme::NewAccount {
                contact: &[],
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            pebble.directory.clone(),
            None,
        )
        .await
        .unwrap();
    (
        account.id().to_owned(),
        creds.private_key().secret_pkcs8_der().to_vec(),
    )
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    format!("-----BEGIN {label}-----\n{b64}\n-----END {label}-----\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn accounts_made_elsewhere_are_adopted_and_unknown_keys_refused() {
    let port = crate::util::unique_port();
    let pebble = Pebble::start(port, 3600).await;
    let dir = pebble.dir.path();
    let mut o = Outputs::default();

    // certbot's private_key.json (an EC key): the same account, and it orders.
    let (url, key) = outside_account(&pebble).await;
    std::fs::write(dir.join("private_key.json"), jwk(&key)).unwrap();
    let jwk_config = config(&pebble, "jwk", port);
    let file = dir.join("private_key.json");
    let imported = o
        .tlsward(
            &jwk_config,
            &["acme", "account", "import", file.to_str().unwrap()],
        )
        .await;
    ok(&imported);
    assert!(imported.stdout.contains("jwk key"), "{imported:?}");
    let show = o.tlsward(&jwk_config, &["acme", "account", "show"]).await;
    assert_eq!(field(&show.stdout, "account"), url);
    ok(&o.tlsward(&jwk_config, &["cert", "issue", "site"]).await);
    let s = store(&pebble, "jwk");
    assert_eq!(
        s.account_row(&pebble.directory)
            .unwrap()
            .unwrap()
            .account_url,
        url,
        "no new registration"
    );
    let kinds = journal_kinds(&s);
    assert_eq!(
        kinds
            .iter()
            .filter(|k| k.starts_with("account."))
            .collect::<Vec<_>>(),
        ["account.imported"]
    );
    drop(s);

    // A SEC1 PEM (EC PRIVATE KEY, with its curve and public key) as openssl writes it.
    let (url2, key2) = outside_account(&pebble).await;
    let pkcs8_pem = dir.join("k8.pem");
    std::fs::write(&pkcs8_pem, pem("PRIVATE KEY", &key2)).unwrap();
    let sec1 = dir.join("sec1.pem");
    let status = Command::new("openssl")
        .args(["ec", "-in"])
        .arg(&pkcs8_pem)
        .arg("-out")
        .arg(&sec1)
        .output()
        .expect("openssl");
    assert!(status.status.success(), "{status:?}");
    assert!(
        std::fs::read_to_string(&sec1)
            .unwrap()
            .contains("BEGIN EC PRIVATE KEY")
    );
    let pem_config = config(&pebble, "pem", port);
    ok(&o
        .tlsward(
            &pem_config,
            &["acme", "account", "import", sec1.to_str().unwrap()],
        )
        .await);
    let show = o.tlsward(&pem_config, &["acme", "account", "show"]).await;
    assert_eq!(field(&show.stdout, "account"), url2);

    // A key Pebble does not know: refused, and not even a store is created.
    let unknown = dir.join("unknown.pem");
    std::fs::write(
        &unknown,
        rcgen::KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    let fresh = config(&pebble, "fresh", port);
    let ran = o
        .tlsward(
            &fresh,
            &["acme", "account", "import", unknown.to_str().unwrap()],
        )
        .await;
    refused(&ran, "the CA has no account for this key");
    assert!(ran.stderr.contains("nothing was stored"), "{ran:?}");
    assert!(!dir.join("fresh/tlsward.db").exists());
    assert!(!dir.join("fresh/store.key").exists());

    // An RSA JWK (certbot's default) is refused with the reason.
    std::fs::write(
        dir.join("rsa.json"),
        r#"{"kty":"RSA","n":"AQAB","e":"AQAB","d":"AQAB"}"#,
    )
    .unwrap();
    let rsa = dir.join("rsa.json");
    refused(
        &o.tlsward(
            &fresh,
            &["acme", "account", "import", rsa.to_str().unwrap()],
        )
        .await,
        "an RSA key",
    );

    o.assert_free_of(&key);
    o.assert_free_of(&key2);
}

/// The instant-acme credentials of `url` with a new key unknown to any CA.
fn unknown_creds(url: &str, directory: &str) -> tlsward::store::Secret {
    let key = rcgen::KeyPair::generate().unwrap();
    let creds = serde_json::json!({
        "id": url,
        "key_pkcs8": URL_SAFE_NO_PAD.encode(key.serialize_der()),
        "directory": directory,
    });
    tlsward::store::Secret::new(creds.to_string().into_bytes())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_rollover_settles_on_the_key_the_ca_has() {
    let port = crate::util::unique_port();
    let pebble = Pebble::start(port, 3600).await;
    let cfg = config(&pebble, "state", port);
    let mut o = Outputs::default();
    ok(&o.tlsward(&cfg, &["cert", "issue", "site"]).await);
    let s = store(&pebble, "state");
    let url = s
        .account_row(&pebble.directory)
        .unwrap()
        .unwrap()
        .account_url;
    let old = stored_key(&s, &pebble.directory);

    // Killed after the CA's answer: the CA has the new key, the store has it pending only.
    let creds: instant_acme::AccountCredentials =
        serde_json::from_slice(s.account(&pebble.directory).unwrap().unwrap().expose()).unwrap();
    let mut account = instant_acme::Account::builder_with_root(&pebble.tls_ca_file)
        .unwrap()
        .from_credentials(creds)
        .await
        .unwrap();
    let new = account.update_key().await.unwrap();
    let new_key = new.private_key().secret_pkcs8_der().to_vec();
    let pending = tlsward::store::Secret::new(serde_json::to_vec(&new).unwrap());
    s.begin_account_rollover(&pebble.directory, &pending, &serde_json::json!({}), 1)
        .unwrap();
    drop(s);
    let show = o.tlsward(&cfg, &["acme", "account", "show"]).await;
    assert!(show.stdout.contains("pending:"), "{show:?}");
    let stale = o.tlsward(&cfg, &["cert", "renew", "site"]).await;
    assert!(stale.stderr.contains("JWS verification error"), "{stale:?}");

    let settled = o.tlsward(&cfg, &["acme", "account", "rollover"]).await;
    ok(&settled);
    assert!(
        settled.stdout.contains("finished an interrupted rollover"),
        "{settled:?}"
    );
    let show = o.tlsward(&cfg, &["acme", "account", "show"]).await;
    assert!(!show.stdout.contains("pending:"), "{show:?}");
    assert_eq!(field(&show.stdout, "account"), url);
    assert_eq!(
        field(&show.stdout, "thumbprint"),
        account.key_thumbprint(),
        "the key the CA has"
    );
    ok(&o.tlsward(&cfg, &["cert", "renew", "site"]).await);

    // Killed before the request: the pending key is one the CA never saw; it is dropped and
    // the rollover done anew.
    let s = store(&pebble, "state");
    s.begin_account_rollover(
        &pebble.directory,
        &unknown_creds(&url, &pebble.directory),
        &serde_json::json!({}),
        2,
    )
    .unwrap();
    drop(s);
    let again = o.tlsward(&cfg, &["acme", "account", "rollover"]).await;
    ok(&again);
    assert!(again.stdout.starts_with("rolled over"), "{again:?}");
    ok(&o.tlsward(&cfg, &["cert", "renew", "site"]).await);
    let s = store(&pebble, "state");
    let kinds = journal_kinds(&s);
    let account_kinds: Vec<&str> = kinds
        .iter()
        .map(String::as_str)
        .filter(|k| k.starts_with("account."))
        .collect();
    assert_eq!(
        account_kinds,
        [
            "account.saved",
            "account.rollover_started",
            "account.rollover",
            "account.rollover_started",
            "account.rollover_abandoned",
            "account.rollover_started",
            "account.rollover",
        ]
    );
    let retired: Vec<Vec<u8>> = s
        .retired_account_keys(&pebble.directory)
        .unwrap()
        .iter()
        .map(|k| creds_key(k.creds.expose()))
        .collect();
    assert_eq!(retired, [old.clone(), new_key.clone()]);
    o.assert_free_of(&old);
    o.assert_free_of(&new_key);
    o.assert_free_of(&stored_key(&s, &pebble.directory));
}

#[tokio::test(flavor = "multi_thread")]
async fn import_and_rollover_wait_for_serve_to_stop() {
    let port = crate::util::unique_port();
    let pebble = Pebble::start(port, 3600).await;
    let cfg = config(&pebble, "state", port);
    let dir = pebble.dir.path().to_owned();
    let daemon = crate::util::daemon::start(&cfg).await;
    let directory = pebble.directory.clone();
    let db = dir.join("state/tlsward.db");
    crate::util::wait::eventually(60, "the daemon's account", || {
        let (db, dir, directory) = (db.clone(), dir.clone(), directory.clone());
        async move {
            db.exists()
                && Store::open_existing(&db, &KeySource::File(dir.join("state/store.key")))
                    .is_ok_and(|s| s.account_row(&directory).ok().flatten().is_some())
        }
    })
    .await;
    let mut o = Outputs::default();
    let before = stored_key(&store(&pebble, "state"), &pebble.directory);

    ok(&o.tlsward(&cfg, &["acme", "account", "show"]).await);
    let rollover = o.tlsward(&cfg, &["acme", "account", "rollover"]).await;
    assert_eq!(rollover.code, Some(3), "{rollover:?}");
    assert!(
        rollover.stderr.contains("tlsward serve is running"),
        "{rollover:?}"
    );
    let key = dir.join("key.pem");
    std::fs::write(&key, rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap();
    let import = o
        .tlsward(
            &cfg,
            &[
                "acme",
                "account",
                "import",
                key.to_str().unwrap(),
                "--force",
            ],
        )
        .await;
    assert_eq!(import.code, Some(3), "{import:?}");
    assert!(
        import.stderr.contains("tlsward serve is running"),
        "{import:?}"
    );
    assert_eq!(
        stored_key(&store(&pebble, "state"), &pebble.directory),
        before,
        "the key is the daemon's still"
    );
    drop(daemon);
}
