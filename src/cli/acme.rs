//! `tlsward acme account show|export|import|rollover`: the store's ACME account, for CAA
//! `accounturi`, carried to another machine or adopted from another client, and its key
//! changed. Import and rollover are refused while `serve` runs: the daemon holds the account
//! (and its key) in memory and would go on signing with the replaced key.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};

use super::StoreConfig;
use super::cert::time;
use crate::clock::SystemClock;
use crate::config::{self, Config, RemediationSettings};
use crate::escape::visible;
use crate::issuer::{self, ImportedKey};
use crate::store::Store;

/// `tlsward acme`.
#[derive(Debug, Args)]
pub struct AcmeArgs {
    /// The config file (its [acme] and [store]).
    #[command(flatten)]
    pub file: StoreConfig,
    /// What to do.
    #[command(subcommand)]
    pub command: AcmeCommand,
}

/// `tlsward acme` subcommands.
#[derive(Debug, Subcommand)]
pub enum AcmeCommand {
    /// The ACME account of the config's directory: show, export, import, roll its key over.
    Account {
        /// What to do.
        #[command(subcommand)]
        command: AccountCommand,
    },
}

/// `tlsward acme account` subcommands.
#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// The account URL (for a CAA record's `accounturi`, RFC 8657), the directory, the key
    /// type and thumbprint, and when the store got the account.
    ///
    /// Exit codes: 0 shown, 1 the store has no account for the directory, 3 usage or config error.
    Show {
        /// Output format: text, or one JSON object (for scripts that write CAA records).
        #[arg(short, long, value_enum, default_value_t = AccountFormat::Text)]
        output: AccountFormat,
    },
    /// Write the account (its URL, directory and key) encrypted with age to the given
    /// recipients: a new file, 0600, written and synced under a temporary name, then moved into place.
    /// `age -d -i KEY FILE` decrypts it; `acme account import FILE --identity KEY` adopts it.
    Export {
        /// The file to write.
        #[arg(long, value_name = "FILE")]
        to: PathBuf,
        /// An age recipient (age1...) to encrypt to (repeatable); without one, the config's
        /// `[backup] recipients`.
        #[arg(long = "recipient", value_name = "AGE1...")]
        recipients: Vec<String>,
        /// Replace FILE if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Adopt an existing account key: an `acme account export` (with --identity), a JWK such
    /// as certbot's private_key.json, or a PEM key (PKCS#8 or EC PRIVATE KEY). ECDSA P-256
    /// only (the one key type the ACME client signs with). The CA must already know the key
    /// (asked with onlyReturnExisting; no account is created); nothing is stored otherwise.
    ///
    /// Exit codes: 0 imported, 1 refused (the key, the CA or an existing account; the reason
    /// on stderr), 3 usage or config error.
    Import {
        /// The key file.
        file: PathBuf,
        /// An age identity file (AGE-SECRET-KEY-1...) to decrypt an export with.
        #[arg(long, value_name = "KEYFILE")]
        identity: Option<PathBuf>,
        /// Replace the store's account for the directory (its key is kept in the store).
        #[arg(long)]
        force: bool,
    },
    /// Change the account's key at the CA (RFC 8555 §7.3.5): same account URL, a new key;
    /// the old key is kept sealed in the store, and the change journaled.
    ///
    /// Exit codes: 0 rolled over, 1 refused (no account, the CA), 3 usage or config error.
    Rollover,
}

/// How `acme account show` prints the account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AccountFormat {
    /// One `field: value` line each.
    Text,
    /// One JSON object.
    Json,
}

pub(super) fn run(args: AcmeArgs) -> anyhow::Result<u8> {
    let AcmeCommand::Account { command } = args.command;
    let path = &args.file.config;
    let config = config::load(path)?;
    let Some(remediation) = config.remediation.clone() else {
        bail!("{} has no [acme] section: no ACME account", path.display());
    };
    match account(command, &config, &remediation) {
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<issuer::AccountError>()
                    .is_some_and(|e| !matches!(e, issuer::AccountError::Store(_)))
            }) =>
        {
            eprintln!("{}", super::render_error(&e));
            Ok(1)
        }
        other => other,
    }
}

/// One `acme account` command; an [`issuer::AccountError`] is a refusal (exit 1).
fn account(
    command: AccountCommand,
    config: &Config,
    remediation: &RemediationSettings,
) -> anyhow::Result<u8> {
    let directory = remediation.acme.directory.clone();
    let mut out = io::stdout().lock();
    match command {
        AccountCommand::Show { output } => {
            let store = open(config, false)?;
            let Some(s) = issuer::account_summary(&store, &directory)? else {
                eprintln!(
                    "tlsward: the store has no ACME account for {}",
                    visible(&directory)
                );
                return Ok(1);
            };
            if output == AccountFormat::Json {
                // JSON escapes control characters itself.
                let json = serde_json::json!({
                    "directory": s.directory,
                    "account_url": s.account_url,
                    "key_type": s.key_type,
                    "thumbprint": s.thumbprint,
                    "created_at": s.created_at,
                    "retired_keys": s.retired_keys,
                    "pending_rollover": s.pending_rollover,
                });
                writeln!(out, "{json}")?;
                return Ok(0);
            }
            writeln!(out, "directory:    {}", visible(&s.directory))?;
            writeln!(out, "account:      {}", visible(&s.account_url))?;
            writeln!(out, "key:          {}", s.key_type)?;
            writeln!(out, "thumbprint:   {}", s.thumbprint)?;
            writeln!(out, "created at:   {}", time(s.created_at))?;
            writeln!(out, "retired keys: {}", s.retired_keys)?;
            if s.pending_rollover {
                writeln!(
                    out,
                    "pending:      a key rollover was interrupted; `tlsward acme account rollover` settles it"
                )?;
            }
            writeln!(out, "CAA:          accounturi={}", visible(&s.account_url))?;
        }
        AccountCommand::Export {
            to,
            recipients,
            force,
        } => {
            let recipients = if recipients.is_empty() {
                let Some(backup) = &config.backup else {
                    bail!(
                        "no recipient: pass --recipient age1... or set [backup] recipients in the config"
                    );
                };
                issuer::parse_recipients(&backup.recipients)?
            } else {
                issuer::parse_recipients(&recipients)?
            };
            if !force && fs::symlink_metadata(&to).is_ok() {
                bail!("{} exists: pass --force to replace it", to.display());
            }
            let store = open(config, false)?;
            let file = issuer::export_account(&store, &directory, &recipients, &SystemClock)?;
            write_new(&to, &file, force)
                .with_context(|| format!("cannot write {}", to.display()))?;
            writeln!(
                out,
                "exported the account for {} to {} (age, {} recipient(s))",
                visible(&directory),
                to.display(),
                recipients.len()
            )?;
        }
        AccountCommand::Import {
            file,
            identity,
            force,
        } => {
            refuse_while_serving(config, "import an account")?;
            let bytes = crate::files::read(&file, crate::files::MAX_SECRET)
                .map_err(|e| anyhow::anyhow!("{}", e.why()))
                .with_context(|| format!("cannot read {}", file.display()))?;
            let identities = match &identity {
                Some(p) => {
                    let text = crate::files::read_to_string(p, crate::files::MAX_SECRET)
                        .map_err(|e| anyhow::anyhow!("{}", e.why()))
                        .with_context(|| format!("cannot read {}", p.display()))?;
                    issuer::parse_identities(&text)?
                }
                None => Vec::new(),
            };
            let key = ImportedKey::parse(&bytes, &identities)
                .with_context(|| format!("cannot import {}", file.display()))?;
            // Refused before asking the CA, from a store that may not exist yet.
            if !force && let Some(row) = open(config, false)?.account_row(&directory)? {
                return Err(issuer::AccountError::Exists {
                    directory: visible(&directory).into_owned(),
                    url: visible(&row.account_url).into_owned(),
                }
                .into());
            }
            let confirmed = runtime()?
                .block_on(issuer::confirm_with_ca(&remediation.acme, &key))
                .context("nothing was stored")?;
            let store = open(config, true)?;
            issuer::adopt(&store, &directory, &confirmed, &SystemClock)?;
            writeln!(
                out,
                "imported account {} for {} ({} key, thumbprint {})",
                visible(&confirmed.account_url),
                visible(&directory),
                key.origin.as_str(),
                confirmed.thumbprint
            )?;
        }
        AccountCommand::Rollover => {
            refuse_while_serving(config, "roll the account key over")?;
            let store = open(config, false)?;
            let done =
                runtime()?.block_on(issuer::rollover(&remediation.acme, &store, &SystemClock))?;
            writeln!(
                out,
                "{} the key of account {}: thumbprint {} -> {} (the old key is kept in the store)",
                if done.resumed {
                    "finished an interrupted rollover of"
                } else {
                    "rolled over"
                },
                visible(&done.account_url),
                done.old_thumbprint,
                done.new_thumbprint
            )?;
        }
    }
    Ok(0)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// The store: created on first use when `create`, otherwise as it is (an empty one in
/// memory when none exists yet).
fn open(config: &Config, create: bool) -> anyhow::Result<Store> {
    let open = if create {
        Store::open
    } else {
        Store::open_existing
    };
    open(&config.store.path, &config.store.key)
        .with_context(|| format!("cannot open the store {}", config.store.path.display()))
}

/// Refuses when a daemon answers on the store's control socket.
fn refuse_while_serving(config: &Config, what: &str) -> anyhow::Result<()> {
    let socket = crate::control::socket_path(&config.store.path);
    if crate::control::connect(&socket)?.is_some() {
        bail!(
            "tlsward serve is running ({}): stop it to {what}; it holds the account key in memory",
            socket.display()
        );
    }
    Ok(())
}

/// Writes `bytes` to a new file at `path` (0600), atomically: under a temporary name beside
/// it, synced, then linked into place (or with `replace` renamed over it), and the directory
/// synced; a kill at any moment leaves the old state or the whole file, never part of one.
fn write_new(path: &Path, bytes: &[u8], replace: bool) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.tlsward-{}-{:016x}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        if replace {
            fs::rename(&tmp, path)?;
        } else {
            fs::hard_link(&tmp, path)?;
            fs::remove_file(&tmp)?;
        }
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
