//! `tlsward cert list|show|issue|renew`: operators' view of the store and the issuer.
//! `issue` and `renew` go through the running daemon when there is one (it holds the HTTP-01
//! port and the account), and order here when there is none.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};
use time::OffsetDateTime;

use super::{CertArgs, CertCommand};
use crate::cert::rfc3339;
use crate::clock::SystemClock;
use crate::config::{self, Config, RemediationSettings};
use crate::control::{self, Reply};
use crate::issuer::{Http01Responder, Issuer};
use crate::reconcile::{renewal_time, version_ari_id};
use crate::store::Store;

pub(super) fn time(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .map(rfc3339)
        .unwrap_or_else(|_| unix.to_string())
}

/// The config, its issuance side and the store. `create`: a store and key may be created on
/// first use (issuing); otherwise (listing, showing, deploying) the store must exist.
pub(super) fn load(
    path: &Path,
    create: bool,
) -> anyhow::Result<(Config, RemediationSettings, Store)> {
    let config = config::load(path)?;
    let Some(remediation) = config.remediation.clone() else {
        bail!(
            "{} has no [acme] section: no managed certificates",
            path.display()
        );
    };
    let open = if create {
        Store::open
    } else {
        Store::open_existing
    };
    let store = open(&config.store.path, &config.store.key)
        .with_context(|| format!("cannot open the store {}", config.store.path.display()))?;
    Ok((config, remediation, store))
}

/// The running daemon that holds `config`'s store, if one answers on its control socket;
/// says on stderr which way the command goes.
pub(super) fn daemon(config: &Config, what: &str) -> anyhow::Result<Option<control::Client>> {
    let socket = control::socket_path(&config.store.path);
    let client = control::connect(&socket)?;
    match &client {
        Some(_) => eprintln!(
            "tlsward: {what} through the running daemon ({})",
            socket.display()
        ),
        None => eprintln!(
            "tlsward: no daemon answers on {}; {what} here",
            socket.display()
        ),
    }
    Ok(client)
}

/// Sends `request` to the daemon and waits for its final reply; progress notes go to
/// stderr, a refusal becomes the error.
pub(super) fn ask(client: control::Client, request: &control::Request) -> anyhow::Result<Reply> {
    let reply = client.request(request, control::CLIENT_TIMEOUT, |note| {
        eprintln!("tlsward: {}", crate::escape::visible(note));
    })?;
    if let Reply::Error { message, .. } = &reply {
        bail!("{}", crate::escape::visible(message));
    }
    Ok(reply)
}

/// Who runs this command, as journaled.
pub(super) fn user() -> String {
    std::env::var("USER").unwrap_or_else(|_| "unknown".into())
}

pub(super) fn run(args: CertArgs) -> anyhow::Result<u8> {
    let writes = matches!(
        args.command,
        CertCommand::Issue { .. } | CertCommand::Renew { .. }
    );
    let (config, remediation, store) = load(&args.file.config, writes)?;
    let mut out = std::io::stdout().lock();
    if let CertCommand::Issue { name, force: false } = &args.command {
        refuse_reissue(&store, name)?;
    }
    match args.command {
        CertCommand::List => {
            let mut rows = Vec::with_capacity(remediation.certificates.len());
            for spec in &remediation.certificates {
                let versions = store.versions(&spec.name)?;
                let (not_after, renew) = match versions.first() {
                    Some(v) => (
                        time(v.not_after),
                        time(renewal_time(
                            v.not_before,
                            v.not_after,
                            remediation.renew_fraction,
                        )),
                    ),
                    None => ("-".into(), "now (never issued)".into()),
                };
                rows.push(vec![
                    spec.name.clone(),
                    versions.len().to_string(),
                    not_after,
                    renew,
                    spec.domains.join(","),
                ]);
            }
            super::output::write_columns(
                &mut out,
                &["NAME", "VERSIONS", "NOT AFTER", "RENEW AT", "DOMAINS"],
                &rows,
            )?;
        }
        CertCommand::Show { name } => {
            let spec = remediation
                .certificates
                .iter()
                .find(|c| c.name == name)
                .with_context(|| format!("no [[certificate]] named {name:?}"))?;
            writeln!(
                out,
                "certificate {} ({}): {}",
                spec.name,
                spec.key_type.as_str(),
                spec.domains.join(", ")
            )?;
            for v in store.versions(&name)? {
                writeln!(
                    out,
                    "  version {}: serial {} sha256 {}\n    valid {} .. {}, stored {}",
                    v.id,
                    v.serial,
                    v.sha256,
                    time(v.not_before),
                    time(v.not_after),
                    time(v.issued_at)
                )?;
            }
            writeln!(out, "journal:")?;
            for e in store.journal_entries(Some(&name))? {
                writeln!(out, "  {} {:<16} {}", time(e.at), e.kind, e.detail)?;
            }
        }
        CertCommand::Export(export) => {
            let spec = remediation
                .certificates
                .iter()
                .find(|c| c.name == export.name)
                .with_context(|| format!("no [[certificate]] named {:?}", export.name))?;
            super::export::run(&store, spec, &export, &mut out)?;
        }
        CertCommand::Issue { name, .. } | CertCommand::Renew { name } => {
            let spec = remediation
                .certificates
                .iter()
                .find(|c| c.name == name)
                .with_context(|| format!("no [[certificate]] named {name:?}"))?
                .clone();
            if let Some(client) = daemon(&config, "ordering")? {
                // `force`: an existing version is renewed, as when ordering here.
                let request = control::Request::CertIssue {
                    name: name.clone(),
                    force: true,
                };
                let Reply::Issued {
                    serial,
                    sha256,
                    not_after,
                    ..
                } = ask(client, &request)?
                else {
                    bail!("the daemon answered something else than the new version");
                };
                writeln!(
                    out,
                    "issued {name}: serial {serial} sha256 {sha256}, valid until {}",
                    time(not_after)
                )?;
                return Ok(0);
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let version = runtime.block_on(async {
                let clock = SystemClock;
                let responder = Http01Responder::new();
                let listener = tokio::net::TcpListener::bind(remediation.http01_listen)
                    .await
                    .with_context(|| format!("cannot listen for HTTP-01 on {} (is tlsward serve running? it answers challenges itself)", remediation.http01_listen))?;
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                tokio::spawn(responder.clone().serve(listener, async {
                    let _ = stopped.await;
                }));
                let issuer = Issuer::connect(remediation.acme.clone(), &store, responder, &clock).await?;
                let replaces = store
                    .latest(&spec.name)?
                    .and_then(|v| version_ari_id(&v));
                let version = issuer.issue(&spec, &store, &clock, replaces.as_deref()).await;
                let _ = stop.send(());
                anyhow::Ok(version?)
            })?;
            writeln!(
                out,
                "issued {}: serial {} sha256 {}, valid until {}",
                name,
                version.serial,
                version.sha256,
                time(version.not_after)
            )?;
        }
    }
    Ok(0)
}

/// `cert issue` orders a certificate's first version; once it has one, a new version is a
/// renewal, which an operator asks for by name (`cert renew`), not by repeating `issue`.
fn refuse_reissue(store: &Store, name: &str) -> anyhow::Result<()> {
    if let Some(v) = store.latest(name)? {
        bail!(
            "{name} already has version {} (serial {}, valid until {}): \
             `tlsward cert renew {name}` orders a new version; \
             `tlsward cert issue --force {name}` orders one anyway",
            v.id,
            v.serial,
            time(v.not_after)
        );
    }
    Ok(())
}
