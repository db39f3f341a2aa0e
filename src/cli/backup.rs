//! `tlsward backup create|verify|restore`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::backup::{self, BackupError, Summary};
use crate::clock::{SystemClock, unix_seconds};
use crate::store::Store;

/// `tlsward backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: BackupCommand,
}

/// `tlsward backup` subcommands.
///
/// Exit codes: 0 done (for verify: every check held), 1 the backup is refused (truncated,
/// altered, the wrong identity, or what it holds does not check out), 2 restore refused a
/// directory that is not empty, 3 usage, config or other errors.
#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Back up the whole store (certificates, every version, private keys, ACME accounts,
    /// orders, deployments, journal) while `serve` runs: a consistent snapshot, encrypted
    /// with age to [backup] recipients (and the drill identity's), written atomically.
    Create {
        /// The config file (its [store] and [backup]).
        #[arg(short, long, value_name = "FILE", default_value = "tlsward.toml")]
        config: PathBuf,
        /// The backup file to write (replaced atomically if it exists; created 0600).
        #[arg(long, value_name = "FILE")]
        to: PathBuf,
    },
    /// Prove a backup restores: decrypt it into a private scratch directory, open the store,
    /// run its consistency check, decrypt every private key and match it to its
    /// certificate, decrypt the ACME account; print a summary.
    Verify {
        /// The backup file.
        file: PathBuf,
        /// An age identity file (`AGE-SECRET-KEY-1...`) of one of its recipients.
        #[arg(long, value_name = "KEYFILE")]
        identity: PathBuf,
    },
    /// Restore a backup as the store of a config, on a new machine: verified first, then
    /// every key re-sealed to the new store's key. The store's directory must be empty.
    Restore {
        /// The backup file.
        file: PathBuf,
        /// An age identity file of one of its recipients.
        #[arg(long, value_name = "KEYFILE")]
        identity: PathBuf,
        /// The config file (its [store]: where the store and its key go).
        #[arg(short, long, value_name = "FILE", default_value = "tlsward.toml")]
        config: PathBuf,
        /// Restore into a directory that is not empty: replaces the database there and
        /// keeps an existing key file.
        #[arg(long)]
        force: bool,
    },
}

pub(super) fn run(args: BackupArgs) -> anyhow::Result<u8> {
    let now = unix_seconds(&SystemClock);
    let result = match args.command {
        BackupCommand::Create { config, to } => {
            let config = crate::config::load(&config)?;
            let Some(settings) = &config.backup else {
                anyhow::bail!(
                    "{}: no [backup] section: name the recipients first, e.g. \
                     [backup] recipients = [\"age1...\"]",
                    config.path.display()
                );
            };
            let store =
                Store::open_existing(&config.store.path, &config.store.key).with_context(|| {
                    format!("cannot open the store {}", config.store.path.display())
                })?;
            backup::create(&store, settings, &to, now).map(|m| {
                let bytes = std::fs::metadata(&to).map_or(0, |m| m.len());
                println!(
                    "{}: backup of {} certificate(s), {} version(s), {} account(s), {} journal entries; {bytes} bytes",
                    to.display(),
                    m.counts.certificates,
                    m.counts.versions,
                    m.counts.accounts,
                    m.counts.journal,
                );
            })
        }
        BackupCommand::Verify { file, identity } => {
            backup::load_identities(&identity).and_then(|ids| {
                backup::verify(&file, &ids, &std::env::temp_dir()).map(|s| {
                    println!("{}: OK, it restores", file.display());
                    print_summary(&s);
                })
            })
        }
        BackupCommand::Restore {
            file,
            identity,
            config,
            force,
        } => {
            let config = crate::config::load(&config)?;
            backup::load_identities(&identity).and_then(|ids| {
                backup::restore(
                    &file,
                    &ids,
                    &config.store.path,
                    &config.store.key,
                    force,
                    now,
                )
                .map(|r| {
                    println!("{}: restored from {}", r.store.display(), file.display());
                    print_summary(&r.summary);
                    println!(
                        "every key is sealed to the store key of {}; `tlsward serve` goes on with the same ACME account",
                        key_name(&config.store.key)
                    );
                })
            })
        }
    };
    match result {
        Ok(()) => Ok(0),
        Err(e) => Ok(fail(&e)),
    }
}

fn fail(e: &BackupError) -> u8 {
    eprintln!("error: {}", crate::escape::visible(&e.to_string()));
    e.exit_code()
}

fn key_name(key: &crate::store::KeySource) -> String {
    match key {
        crate::store::KeySource::File(f) => f.display().to_string(),
        crate::store::KeySource::Env(v) => format!("${v}"),
    }
}

fn print_summary(s: &Summary) {
    let at = |t: i64| {
        time::OffsetDateTime::from_unix_timestamp(t)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| t.to_string())
    };
    println!("  created at:     {}", at(s.manifest.created_at));
    println!("  certificates:   {}", s.certificates);
    println!("  versions:       {}", s.versions);
    println!(
        "  keys checked:   {} (each matches its certificate)",
        s.keys_checked
    );
    println!(
        "  accounts:       {} (credentials decrypt)",
        s.accounts_checked
    );
    match &s.newest_version {
        Some((cert, issued)) => println!(
            "  newest version: {} issued {}",
            crate::escape::visible(cert),
            at(*issued)
        ),
        None => println!("  newest version: none"),
    }
}
