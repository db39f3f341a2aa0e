//! One deployment at this endpoint: a bundle accepted only once its signature checks, the
//! certificate material it carries (the central key opened with the agent's age identity,
//! or the agent's own key), the local hook, the local probe, and the roll back when either
//! fails. Nothing here talks to the center: the loop (`run.rs`) reports what this returns.

use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::json;

use super::config::AgentSettings;
use super::state::{AgentFile, FileRecord, InstalledEndpoint, StateDir, StateError, file_sha256};
use crate::agent::protocol::{AgentEndpoint, BundlePayload, KeyMode, ReportEvent, SignedBundle};
use crate::agent::sign::{self, BundleError, Expected};
use crate::clock::Clock;
use crate::hooks::{HookRun, Hooks, Material};
use crate::probe::Round;
use crate::secret::Secret;

/// How long the local probe keeps trying to see the new leaf after the hook succeeded (a
/// reload is asynchronous: nginx answers `-s reload` before its new workers serve).
pub const LOCAL_PROBE_PATIENCE: Duration = Duration::from_secs(10);
/// How long a roll back's commands may take.
pub const ROLLBACK_LIMIT: Duration = Duration::from_secs(60);

/// Why a bundle could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// The signature, agent, version or leaf does not check: nothing was written.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// It could not be stored.
    #[error(transparent)]
    State(#[from] StateError),
}

/// Checks `signed` against the center's pinned signing key and the version the desired
/// state names, and only then stores it (keeping the last `keep` of that certificate, and
/// always `protect`, the installed one). An altered or substituted bundle is refused and
/// the bundles already stored stay as they are.
pub fn accept_bundle(
    state: &StateDir,
    signing_key: &str,
    expected: &Expected<'_>,
    signed: &SignedBundle,
    keep: usize,
    protect: Option<i64>,
) -> Result<BundlePayload, AcceptError> {
    let payload = sign::verify(signed, signing_key, expected)?;
    state.store_bundle(
        expected.certificate,
        expected.version,
        signed,
        keep,
        protect,
    )?;
    Ok(payload)
}

/// A bundle kept in the state dir, checked again (the disk is not trusted more than the
/// wire).
pub fn local_bundle(
    state: &StateDir,
    agent: &AgentFile,
    certificate: &str,
    version: i64,
) -> Result<Option<BundlePayload>, AcceptError> {
    let Some(signed) = state.bundle(certificate, version)? else {
        return Ok(None);
    };
    // The leaf it claims; `verify` checks the signature over it first, then the chain.
    let sha = peek_sha256(&signed).unwrap_or_default();
    Ok(Some(sign::verify(
        &signed,
        &agent.signing_key,
        &Expected {
            agent: &agent.agent,
            certificate,
            version,
            sha256: &sha,
        },
    )?))
}

/// The `sha256` a bundle's payload claims (checked by [`sign::verify`] afterwards).
fn peek_sha256(signed: &SignedBundle) -> Option<String> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(signed.payload.as_bytes())
        .ok()?;
    let p: BundlePayload = serde_json::from_slice(&bytes).ok()?;
    Some(p.sha256)
}

/// The material a hook deploys from `payload`: the chain, and the key opened with `age`
/// (a central key) or found among the agent's own keys (`key = "agent"`).
pub fn material(
    endpoint: &str,
    payload: &BundlePayload,
    age: &age::x25519::Identity,
    state: &StateDir,
) -> Result<Material, String> {
    let chain: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(payload.chain_pem.as_bytes())
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the bundle's chain: {e}"))?;
    let key = match payload.key {
        KeyMode::Central => {
            let sealed = payload
                .sealed_key
                .as_deref()
                .ok_or("the bundle carries no key")?;
            pkcs8_der(sign::open_with(age, sealed).map_err(|e| e.to_string())?)?
        }
        KeyMode::Agent => {
            let leaf = chain.first().ok_or("the bundle's chain is empty")?;
            super::keys::matching(state, age, &payload.certificate, leaf)?
        }
    };
    Ok(Material::new(
        endpoint.to_owned(),
        payload.certificate.clone(),
        chain,
        key,
    ))
}

/// A key as PKCS#8 DER, whether it came as DER or as PEM.
fn pkcs8_der(key: Secret) -> Result<Secret, String> {
    if !key.expose().starts_with(b"-----BEGIN") {
        return Ok(key);
    }
    let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(key.expose())
        .map_err(|_| "the bundle's key is not PKCS#8".to_owned())?;
    Ok(Secret::new(der.secret_pkcs8_der().to_vec()))
}

/// What one deployment came to, to report.
#[derive(Debug)]
pub struct Outcome {
    /// `installed`, `failed` or `rolled_back`.
    pub event: ReportEvent,
    /// The leaf the local probe saw, when it saw one.
    pub sha256: Option<String>,
    /// The hook's calls, the probe, an error (never a key).
    pub detail: serde_json::Value,
    /// The run, kept to roll back later when the center asks.
    pub run: Option<HookRun>,
}

impl Outcome {
    fn failed(why: impl Into<String>) -> Self {
        Self {
            event: ReportEvent::Failed,
            sha256: None,
            detail: json!({ "error": why.into() }),
            run: None,
        }
    }
}

/// What the deployment needs from the agent.
#[derive(Clone)]
pub struct Deployer {
    /// The agent's settings (hooks, profiles).
    pub settings: Arc<AgentSettings>,
    /// The hook engine.
    pub hooks: Arc<Hooks>,
    /// The agent's clock.
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Deployer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployer").finish_non_exhaustive()
    }
}

impl Deployer {
    /// Runs `endpoint`'s hook for `material`, probes the local service for `sha256`, and
    /// rolls back at once when the hook failed after changing something or the probe does
    /// not see the new leaf.
    pub async fn deploy(
        &self,
        endpoint: &AgentEndpoint,
        material: Material,
        sha256: &str,
    ) -> Outcome {
        let Some(spec) = self.settings.hooks.get(&endpoint.hook).cloned() else {
            return Outcome::failed(format!(
                "the agent's config has no [hook.{}]",
                crate::escape::visible(&endpoint.hook)
            ));
        };
        let hooks = self.hooks.clone();
        let extra = endpoint.settings.clone();
        let rt = tokio::runtime::Handle::current();
        let now = self.clock.now();
        let material = Arc::new(material);
        let run =
            match tokio::task::spawn_blocking(move || hooks.run(&spec, material, &extra, rt, now))
                .await
            {
                Ok(run) => run,
                Err(e) => return Outcome::failed(format!("the hook's task failed: {e}")),
            };
        let calls = run_detail(&run);
        if let Err(e) = &run.outcome {
            if run.written.is_empty() && run.commands.is_empty() {
                return Outcome {
                    event: ReportEvent::Failed,
                    sha256: None,
                    detail: json!({ "hook": calls, "error": e.to_string() }),
                    run: None,
                };
            }
            let rollback = self.roll_back(&run).await;
            return Outcome {
                event: ReportEvent::RolledBack,
                sha256: None,
                detail: json!({ "hook": calls, "error": e.to_string(), "rollback": rollback }),
                run: None,
            };
        }
        let seen = self.probe_until(endpoint, sha256).await;
        if seen.as_deref() == Some(sha256) {
            return Outcome {
                event: ReportEvent::Installed,
                sha256: seen,
                detail: json!({ "hook": calls, "probe": "served" }),
                run: Some(run),
            };
        }
        let rollback = self.roll_back(&run).await;
        Outcome {
            event: ReportEvent::RolledBack,
            sha256: seen.clone(),
            detail: json!({
                "hook": calls,
                "error": "the local probe does not see the new certificate",
                "probe": seen,
                "rollback": rollback,
            }),
            run: None,
        }
    }

    /// Undoes `run` (files restored, commands run again).
    pub async fn roll_back(&self, run: &HookRun) -> serde_json::Value {
        let run = run.clone();
        let rt = tokio::runtime::Handle::current();
        let done =
            tokio::task::spawn_blocking(move || Hooks::roll_back(&run, &rt, ROLLBACK_LIMIT)).await;
        match done {
            Ok(r) => json!({ "ok": r.ok(), "detail": format!("{r:?}") }),
            Err(e) => json!({ "ok": false, "detail": e.to_string() }),
        }
    }

    /// Probes the endpoint's target as the center would, until every address serves
    /// `sha256` or [`LOCAL_PROBE_PATIENCE`] has passed; the leaf last seen (`None`: none).
    pub async fn probe_until(&self, endpoint: &AgentEndpoint, sha256: &str) -> Option<String> {
        let prober = self.settings.profiles.get(&endpoint.profile)?.clone();
        let mut target: crate::probe::Target = endpoint.target.parse().ok()?;
        target.server_name.clone_from(&endpoint.server_name);
        target.connect_to.clone_from(&endpoint.connect_to);
        let until = tokio::time::Instant::now() + LOCAL_PROBE_PATIENCE;
        loop {
            let reports = prober
                .clone()
                .round(&target, self.clock.clone(), Round::EachAddress)
                .await;
            let leaves: Vec<Option<&str>> = reports
                .iter()
                .map(|r| r.outcome.as_ref().ok().map(|f| f.leaf.sha256.as_str()))
                .collect();
            let last = leaves.first().copied().flatten().map(str::to_owned);
            if leaves.iter().all(|l| *l == Some(sha256)) {
                return last;
            }
            if tokio::time::Instant::now() >= until {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// What to record in `installed.json` for a run that installed `payload`.
pub fn installed_record(
    payload: &BundlePayload,
    run: &HookRun,
    previous: Option<i64>,
) -> InstalledEndpoint {
    InstalledEndpoint {
        certificate: payload.certificate.clone(),
        version: payload.version,
        sha256: payload.sha256.clone(),
        files: run
            .written
            .iter()
            .filter_map(|w| {
                Some(FileRecord {
                    sha256: file_sha256(&w.path)?,
                    path: w.path.clone(),
                })
            })
            .collect(),
        previous,
    }
}

/// The files of `installed` whose content is no longer what the agent wrote (changed,
/// missing, unreadable).
pub fn drifted(installed: &InstalledEndpoint) -> Vec<std::path::PathBuf> {
    installed
        .files
        .iter()
        .filter(|f| file_sha256(&f.path).as_deref() != Some(f.sha256.as_str()))
        .map(|f| f.path.clone())
        .collect()
}

/// A run's record for the report: the hook, its outcome, its calls (never the key).
fn run_detail(run: &HookRun) -> serde_json::Value {
    json!({
        "hook": run.hook,
        "reason": run.reason(),
        "outcome": match &run.outcome { Ok(s) => s.clone(), Err(e) => e.to_string() },
        "calls": run.calls,
        "written": run.written.iter().map(|w| w.path.display().to_string()).collect::<Vec<_>>(),
        "commands": run.commands,
    })
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    use super::*;
    use crate::agent::sign::Signer;

    fn signed(signer: &Signer, version: i64) -> (SignedBundle, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["web.test".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let sha = crate::cert::sha256_hex(cert.der());
        let bundle = signer.sign(&BundlePayload {
            agent: "web-01".into(),
            certificate: "site".into(),
            version,
            sha256: sha.clone(),
            chain_pem: cert.pem(),
            key: KeyMode::Agent,
            sealed_key: None,
            signed_at: 1,
        });
        (bundle, sha)
    }

    #[test]
    fn an_altered_bundle_is_refused_and_the_kept_one_stays() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::create(tmp.path()).unwrap();
        let signer = Signer::from_pkcs8(&Signer::generate().unwrap()).unwrap();
        let agent = AgentFile {
            agent: "web-01".into(),
            server: "https://c:1".into(),
            signing_key: signer.public_base64(),
            ca_sha256: String::new(),
            identity_not_after: 0,
            identity_issued_at: 0,
        };
        let (first, sha1) = signed(&signer, 1);
        accept_bundle(
            &state,
            &agent.signing_key,
            &expect(1, &sha1),
            &first,
            3,
            None,
        )
        .unwrap();
        // Version 2, one byte of its payload flipped in transit.
        let (second, sha2) = signed(&signer, 2);
        let mut bytes = STANDARD.decode(&second.payload).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        let altered = SignedBundle {
            payload: STANDARD.encode(&bytes),
            signature: second.signature.clone(),
        };
        let e = accept_bundle(
            &state,
            &agent.signing_key,
            &expect(2, &sha2),
            &altered,
            3,
            None,
        )
        .unwrap_err();
        assert!(
            matches!(e, AcceptError::Bundle(BundleError::Signature)),
            "{e:?}"
        );
        // Another validly signed bundle substituted for the one the state names.
        let (third, _) = signed(&signer, 2);
        let e = accept_bundle(
            &state,
            &agent.signing_key,
            &expect(2, &sha2),
            &third,
            3,
            None,
        )
        .unwrap_err();
        assert!(matches!(e, AcceptError::Bundle(_)), "{e:?}");
        // Signed by someone else.
        let rogue = Signer::from_pkcs8(&Signer::generate().unwrap()).unwrap();
        let (forged, sha4) = signed(&rogue, 2);
        assert!(
            accept_bundle(
                &state,
                &agent.signing_key,
                &expect(2, &sha4),
                &forged,
                3,
                None
            )
            .is_err()
        );
        assert_eq!(state.bundle_versions("site").unwrap(), [1]);
        assert_eq!(state.bundle("site", 1).unwrap(), Some(first));
        assert!(local_bundle(&state, &agent, "site", 1).unwrap().is_some());
        // The right one is accepted.
        accept_bundle(
            &state,
            &agent.signing_key,
            &expect(2, &sha2),
            &second,
            3,
            None,
        )
        .unwrap();
        // A kept bundle edited on disk is refused when read back.
        let path = state.path("bundles/site/2.json");
        let text = std::fs::read_to_string(&path).unwrap();
        let mut on_disk: SignedBundle = serde_json::from_str(&text).unwrap();
        on_disk.signature = first_signature_of(&state);
        std::fs::write(&path, serde_json::to_vec(&on_disk).unwrap()).unwrap();
        assert!(local_bundle(&state, &agent, "site", 2).is_err());
    }

    fn expect(version: i64, sha256: &str) -> Expected<'_> {
        Expected {
            agent: "web-01",
            certificate: "site",
            version,
            sha256,
        }
    }

    fn first_signature_of(state: &StateDir) -> String {
        state.bundle("site", 1).unwrap().unwrap().signature
    }
}
