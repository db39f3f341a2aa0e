//! The agent on an endpoint host, without a center: bundles deployed with the stock
//! pem-files hook into a real nginx and checked by the local probe, a failed local probe
//! rolled back at once, windows by the agent's own clock, and a restart that redeploys from
//! the local copy only when the service's files changed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tlsward::agent::client::run::Agent;
use tlsward::agent::client::state::{AgentFile, StateDir};
use tlsward::agent::protocol::{
    AgentEndpoint, BundlePayload, DeploymentOrder, DesiredState, Instruction, KeyMode, VersionRef,
};
use tlsward::agent::sign::{self, Signer};
use tlsward::clock::{Clock, TestClock};
use tlsward::reconcile::window::WindowDef;

use crate::util::hooks::{component, engine};
use crate::util::servers::NginxHttps;
use crate::util::wait::eventually;
use crate::util::{Leaf, TestCa, TlsServer, pem_chain};

const NAME: &str = "site.tlsward.test";

/// A state dir enrolled by hand (the identity is never used: the center is a closed port),
/// an nginx first serving `old`, and the agent's config with pem-files granted its files.
struct Fixture {
    _dir: tempfile::TempDir,
    state: PathBuf,
    config: PathBuf,
    nginx: NginxHttps,
    signer: Signer,
    age: age::x25519::Identity,
    file: AgentFile,
    ca: TestCa,
    old: Leaf,
}

impl Fixture {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::root("agent fixture CA");
        let old = ca.leaf(&[NAME]).build();
        let (c, k) = old.write_pem(dir.path(), "old");
        let nginx = NginxHttps::start(1, &c, &k).await;
        let state = dir.path().join("state");
        let sd = StateDir::create(&state).unwrap();
        // A throwaway identity under a throwaway CA: what `enroll` would have written.
        let id_ca = TestCa::root("tlsward agent CA");
        let id = id_ca.leaf(&["web-01"]).client().build();
        sd.write("ca.pem", id_ca.pem().as_bytes()).unwrap();
        sd.write("identity.pem", pem_chain(&id.chain[..1]).as_bytes())
            .unwrap();
        let key_pem = pem::encode(&pem::Pem::new("PRIVATE KEY", id.key.secret_der().to_vec()));
        sd.write("identity.key", key_pem.as_bytes()).unwrap();
        let age = age::x25519::Identity::generate();
        use age::secrecy::ExposeSecret as _;
        sd.write("age.key", age.to_string().expose_secret().as_bytes())
            .unwrap();
        let signer = Signer::from_pkcs8(&Signer::generate().unwrap()).unwrap();
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let file = AgentFile {
            agent: "web-01".into(),
            server: format!("https://127.0.0.1:{port}"),
            signing_key: signer.public_base64(),
            ca_sha256: "00".repeat(32),
            identity_not_after: i64::MAX / 2,
            identity_issued_at: 0,
        };
        sd.write_json("agent.json", &file).unwrap();
        let reload = nginx.reload_argv();
        let config = dir.path().join("agent.toml");
        std::fs::write(
            &config,
            format!(
                r#"[agent]
state_dir = "state"
keep = 2
[hook.nginx]
component = "{component}"
write_paths = ["{certs}"]
commands = [{reload:?}]
key_access = true
[hook.nginx.settings]
fullchain_path = "{certs}/0.crt"
key_path = "{certs}/0.key"
reload = "{reload_line}"
"#,
                component = component("pem-files").display(),
                certs = nginx.certs.display(),
                reload_line = reload.join(" "),
            ),
        )
        .unwrap();
        Self {
            _dir: dir,
            state,
            config,
            nginx,
            signer,
            age,
            file,
            ca,
            old,
        }
    }

    /// A new version of the certificate, its bundle signed and stored as the agent would
    /// have fetched it; its reference.
    fn version(&self, id: i64) -> (Leaf, VersionRef) {
        let leaf = self.ca.leaf(&[NAME]).build();
        let sha = tlsward::cert::sha256_hex(leaf.der());
        let sealed = sign::seal_to(
            &self.age.to_public().to_string(),
            &tlsward::secret::Secret::new(leaf.key.secret_der().to_vec()),
        )
        .unwrap();
        let signed = self.signer.sign(&BundlePayload {
            agent: "web-01".into(),
            certificate: "site".into(),
            version: id,
            sha256: sha.clone(),
            chain_pem: pem_chain(&leaf.chain),
            key: KeyMode::Central,
            sealed_key: Some(sealed),
            signed_at: 0,
        });
        let sd = StateDir::open(&self.state).unwrap().0;
        tlsward::agent::client::deploy::accept_bundle(
            &sd,
            &self.file.signing_key,
            &sign::Expected {
                agent: "web-01",
                certificate: "site",
                version: id,
                sha256: &sha,
            },
            &signed,
            3,
            None,
        )
        .unwrap();
        (
            leaf,
            VersionRef {
                id,
                sha256: sha,
                not_after: 0,
            },
        )
    }

    /// The desired state the center would have sent, kept in the state dir. An address
    /// `target` becomes the unresolvable name `NAME` with the address as its `connect_to`,
    /// so the local probe reaches nginx only if it takes the center's addresses.
    fn desire(&self, target: &str, order: Option<DeploymentOrder>, window: Option<WindowDef>) {
        let (target, connect_to) = match target.parse::<std::net::SocketAddr>() {
            Ok(at) => (format!("{NAME}:{}", at.port()), vec![at]),
            Err(_) => (target.to_owned(), Vec::new()),
        };
        let endpoint = AgentEndpoint {
            name: "web".into(),
            certificate: "site".into(),
            target,
            server_name: Some(NAME.into()),
            connect_to,
            profile: "https".into(),
            hook: "nginx".into(),
            settings: BTreeMap::new(),
            window,
            key: KeyMode::Central,
            version: order.as_ref().map(|o| o.version.clone()),
            deployment: order,
            csr_wanted: None,
        };
        let sd = StateDir::open(&self.state).unwrap().0;
        sd.write_json(
            "desired.json",
            &DesiredState {
                etag: "e".into(),
                agent: "web-01".into(),
                endpoints: vec![endpoint],
            },
        )
        .unwrap();
    }

    fn nginx_target(&self) -> String {
        format!("127.0.0.1:{}", self.nginx.addrs[0].port())
    }

    fn agent(&self, clock: Arc<dyn Clock>) -> Agent {
        let settings = tlsward::config::load_agent(&self.config).unwrap();
        Agent::open(settings, engine(), clock).unwrap()
    }

    fn served(&self) -> String {
        sha256_served(self.nginx.addrs[0], NAME)
    }

    /// Waits until nginx serves `sha256`: its reload is asynchronous, and old workers may
    /// answer for a moment after it.
    async fn serves(&self, sha256: &str, what: &str) {
        eventually(60, what, || {
            let now = self.served();
            async move { now == sha256 }
        })
        .await;
    }

    fn installed(&self) -> tlsward::agent::client::state::Installed {
        StateDir::open(&self.state).unwrap().0.installed().unwrap()
    }
}

fn order(id: i64, version: &VersionRef, instruction: Instruction) -> DeploymentOrder {
    DeploymentOrder {
        id,
        version: version.clone(),
        instruction,
        why: None,
    }
}

fn mtime(p: &Path) -> SystemTime {
    std::fs::metadata(p).unwrap().modified().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_redeploys_the_local_copy_only_when_the_files_changed() {
    let f = Fixture::new().await;
    let clock: Arc<dyn Clock> = Arc::new(tlsward::clock::SystemClock);
    let (_new, v) = f.version(7);
    f.desire(
        &f.nginx_target(),
        Some(order(1, &v, Instruction::DeployNow)),
        None,
    );
    let mut agent = f.agent(clock.clone());
    agent.act().await;
    assert_eq!(agent.failures(), 0);
    f.serves(&v.sha256, "nginx serves the new leaf").await;
    let installed = f.installed();
    let web = &installed["web"];
    assert_eq!((web.version, web.sha256.as_str()), (7, v.sha256.as_str()));
    assert_eq!(web.files.len(), 2, "{web:?}");
    // The center is down: started and installed wait to be delivered.
    assert!(agent.flush().await.is_err());
    assert_eq!(agent.pending(), 2);
    drop(agent);

    // A restart with the files as written: no hook runs, nothing is touched.
    let crt = f.nginx.certs.join("0.crt");
    let before = mtime(&crt);
    let mut agent = f.agent(clock.clone());
    assert_eq!(agent.restore().await, 0);
    assert_eq!(mtime(&crt), before);
    assert_eq!(
        agent.pending(),
        2,
        "the undelivered reports survive the restart"
    );
    drop(agent);

    // A hand edit (the old certificate put back): the restarted agent redeploys its copy.
    std::fs::write(&crt, pem_chain(&f.old.chain)).unwrap();
    let mut agent = f.agent(clock);
    assert_eq!(agent.restore().await, 1);
    f.serves(&v.sha256, "nginx serves the redeployed copy")
        .await;
    assert_eq!(
        tlsward::cert::sha256_hex(&std::fs::read(&crt).unwrap()),
        f.installed()["web"].files[0].sha256
    );
    assert_eq!(
        agent.pending(),
        3,
        "redeployed waits for the center, after the others"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_probe_that_does_not_see_the_new_leaf_rolls_back_at_once() {
    let f = Fixture::new().await;
    // The endpoint's target is another server, which keeps serving the old leaf.
    let other = TlsServer::leaf(&f.old).start().await;
    let (_new, v) = f.version(8);
    f.desire(
        &format!("127.0.0.1:{}", other.addr.port()),
        Some(order(2, &v, Instruction::DeployNow)),
        None,
    );
    let crt = f.nginx.certs.join("0.crt");
    let old_pem = std::fs::read(&crt).unwrap();
    let mut agent = f.agent(Arc::new(tlsward::clock::SystemClock));
    agent.act().await;
    assert_eq!(agent.failures(), 1);
    assert_eq!(
        std::fs::read(&crt).unwrap(),
        old_pem,
        "the files are put back"
    );
    f.serves(
        &tlsward::cert::sha256_hex(f.old.der()),
        "nginx serves the old leaf again",
    )
    .await;
    assert!(f.installed().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_window_is_the_agents_clock_and_deploy_now_ignores_it() {
    let f = Fixture::new().await;
    // Mondays 02:00-03:00 UTC; the agent's clock says Monday 01:00.
    let monday_1am = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_605_200);
    assert_eq!(
        time::OffsetDateTime::from(monday_1am).weekday(),
        time::Weekday::Monday
    );
    let window = WindowDef {
        name: "nightly".into(),
        days: vec!["mon".into()],
        start: "02:00:00".into(),
        duration_seconds: 3600,
        tz: "UTC".into(),
    };
    let clock = Arc::new(TestClock::at(monday_1am));
    let (_new, v) = f.version(9);
    f.desire(
        &f.nginx_target(),
        Some(order(3, &v, Instruction::Deploy)),
        Some(window.clone()),
    );
    let old_sha = tlsward::cert::sha256_hex(f.old.der());
    let mut agent = f.agent(clock.clone());
    let wake = agent.act().await;
    assert_eq!(
        wake,
        Some(1_796_605_200 + 3600),
        "it wakes when the window opens"
    );
    assert_eq!(f.served(), old_sha, "nothing ran outside the window");
    clock.advance(Duration::from_secs(3600 + 60));
    assert_eq!(agent.act().await, None);
    f.serves(&v.sha256, "deployed once the window opened").await;

    // Outside the window again, deploy_now deploys at once.
    clock.advance(Duration::from_secs(7200));
    let (_newer, v2) = f.version(10);
    f.desire(
        &f.nginx_target(),
        Some(order(4, &v2, Instruction::DeployNow)),
        Some(window),
    );
    let mut agent = f.agent(clock);
    assert_eq!(agent.act().await, None);
    f.serves(&v2.sha256, "nginx serves the version deployed now")
        .await;
    assert_eq!(f.installed()["web"].previous, Some(9));
}

/// The live certificate's SHA-256, read by openssl as an outside observer would.
fn sha256_served(addr: std::net::SocketAddr, name: &str) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect {addr} -servername {name} </dev/null 2>/dev/null \
             | openssl x509 -noout -fingerprint -sha256"
        ))
        .output()
        .expect("openssl");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .rsplit('=')
        .next()
        .unwrap_or_default()
        .replace(':', "")
        .to_lowercase()
}
