//! Scheduled backups in `serve`: one at start and then every `every`, into `dir`, the
//! oldest pruned beyond `keep`; the offsite command run on each new file; and the restore
//! drill, which verifies each fresh backup with the drill identity exactly as
//! `tlsward backup verify` does. Every stage's failure is counted by stage and logged once.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tracing::{error, info, warn};

use super::{BackupError, BackupSettings, Schedule};
use crate::clock::{Clock, unix_seconds};
use crate::shutdown::Shutdown;
use crate::store::Store;

/// The name every scheduled backup file starts with.
const PREFIX: &str = "tlsward-backup-";
/// And ends with.
const SUFFIX: &str = ".age";
/// How much of the offsite command's output is logged.
const MAX_OUTPUT: usize = 4096;
/// The offsite command's `PATH`: the rest of its environment is empty.
const COMMAND_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// A stage of a scheduled backup, the `stage` label of `tlsward_backup_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Making the file.
    Create,
    /// The offsite command.
    Ship,
    /// The restore drill.
    Drill,
}

impl Stage {
    /// Every stage, in order.
    pub const ALL: [Self; 3] = [Self::Create, Self::Ship, Self::Drill];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Ship => "ship",
            Self::Drill => "drill",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabel {
    stage: &'static str,
}

/// The backup metric families.
#[derive(Debug, Clone)]
pub struct BackupMetrics {
    last_success: Gauge,
    last_drill: Gauge,
    size: Gauge,
    failures: Family<StageLabel, Counter<u64, AtomicU64>>,
}

// === impl BackupMetrics ===

impl BackupMetrics {
    /// Registers the families under `reg` (the `tlsward` prefix); the drill's timestamp
    /// only with `drill`, so that an alert comparing it finds no series without drills.
    pub fn register(reg: &mut Registry, drill: bool) -> Self {
        let m = Self {
            last_success: Gauge::default(),
            last_drill: Gauge::default(),
            size: Gauge::default(),
            failures: Family::default(),
        };
        reg.register(
            "backup_last_success_timestamp_seconds",
            "When the last scheduled backup was written (0: none since start)",
            m.last_success.clone(),
        );
        if drill {
            reg.register(
                "backup_last_drill_success_timestamp_seconds",
                "When a restore drill last verified a fresh backup (0: none since start)",
                m.last_drill.clone(),
            );
        }
        reg.register(
            "backup_size_bytes",
            "Size of the last backup written",
            m.size.clone(),
        );
        reg.register(
            "backup_failures",
            "Scheduled backups that failed, by stage (create, ship, drill)",
            m.failures.clone(),
        );
        for stage in Stage::ALL {
            let _ = m.failures.get_or_create(&StageLabel {
                stage: stage.as_str(),
            });
        }
        m
    }

    fn failed(&self, stage: Stage) {
        self.failures
            .get_or_create(&StageLabel {
                stage: stage.as_str(),
            })
            .inc();
    }
}

/// Runs scheduled backups of `store` until `stop` fires: one now, then every
/// `schedule.every`. A round in progress when `stop` fires is finished.
pub async fn run(
    store: Arc<Store>,
    settings: BackupSettings,
    clock: Arc<dyn Clock>,
    metrics: BackupMetrics,
    stop: Shutdown,
) {
    let Some(schedule) = settings.schedule.clone() else {
        return;
    };
    let settings = Arc::new(settings);
    loop {
        round(&store, &settings, &schedule, clock.as_ref(), &metrics).await;
        tokio::select! {
            () = tokio::time::sleep(schedule.every) => {}
            () = stop.wait() => return,
        }
    }
}

/// One scheduled backup: create and prune, ship, drill.
async fn round(
    store: &Arc<Store>,
    settings: &Arc<BackupSettings>,
    schedule: &Schedule,
    clock: &dyn Clock,
    metrics: &BackupMetrics,
) {
    let now = unix_seconds(clock);
    let stamp = time::OffsetDateTime::from(clock.now())
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .unwrap_or_else(|_| now.to_string());
    let path = schedule.dir.join(format!("{PREFIX}{stamp}{SUFFIX}"));
    let created = {
        let (store, settings, dir, path) = (
            store.clone(),
            settings.clone(),
            schedule.dir.clone(),
            path.clone(),
        );
        let keep = schedule.keep;
        tokio::task::spawn_blocking(move || {
            crate::files::create_private_dir(&dir).map_err(|e| BackupError::io(&dir, e))?;
            let manifest = super::create(&store, &settings, &path, now)?;
            prune(&dir, keep);
            Ok::<_, BackupError>(manifest)
        })
        .await
    };
    let manifest = match created {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => {
            metrics.failed(Stage::Create);
            error!(error = %e, "backup failed");
            return;
        }
        Err(e) => {
            metrics.failed(Stage::Create);
            error!(error = %e, "backup task failed");
            return;
        }
    };
    let size = std::fs::metadata(&path).map_or(0, |m| m.len());
    metrics.size.set(size as i64);
    metrics.last_success.set(unix_seconds(clock));
    info!(file = %path.display(), bytes = size, versions = manifest.counts.versions, "backup written");

    if let Some(argv) = &schedule.command
        && let Err(why) = ship(argv, &path, schedule.command_timeout).await
    {
        metrics.failed(Stage::Ship);
        error!(file = %path.display(), error = %crate::escape::visible(&why), "backup offsite command failed");
    }

    if let Some(identity) = &settings.drill_identity_file {
        let (identity, path, scratch) = (
            identity.clone(),
            path.clone(),
            store_dir(store.path()).to_owned(),
        );
        let drilled = tokio::task::spawn_blocking(move || {
            let ids = super::ops::load_identities(&identity)?;
            super::verify(&path, &ids, &scratch)
        })
        .await;
        match drilled {
            Ok(Ok(summary)) => {
                metrics.last_drill.set(unix_seconds(clock));
                info!(
                    keys_checked = summary.keys_checked,
                    accounts_checked = summary.accounts_checked,
                    "restore drill passed"
                );
            }
            Ok(Err(e)) => {
                metrics.failed(Stage::Drill);
                error!(error = %e, "restore drill failed: this backup would not restore");
            }
            Err(e) => {
                metrics.failed(Stage::Drill);
                error!(error = %e, "restore drill task failed");
            }
        }
    }
}

fn store_dir(store: &Path) -> &Path {
    store
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Keeps the newest `keep` backups in `dir` (their names sort by time), and removes
/// temporary files that killed runs left.
fn prune(dir: &Path, keep: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut backups: Vec<PathBuf> = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(PREFIX) && name.ends_with(SUFFIX) {
            backups.push(entry.path());
        } else if name.starts_with(&format!(".{PREFIX}")) && name.ends_with(".tmp") {
            // `.NAME.PID.RAND.tmp`: gone with its process.
            let pid = name.rsplit('.').nth(2).unwrap_or_default();
            if !pid.is_empty() && !Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    backups.sort();
    let excess = backups.len().saturating_sub(keep);
    for old in &backups[..excess] {
        match std::fs::remove_file(old) {
            Ok(()) => info!(file = %old.display(), "old backup pruned"),
            Err(e) => warn!(file = %old.display(), error = %e, "cannot prune an old backup"),
        }
    }
}

/// Runs the offsite command: exact argv with the file's path appended, no shell, an empty
/// environment but `PATH`, stdin closed, killed after `limit`. Its output is logged, capped.
async fn ship(argv: &[String], file: &Path, limit: Duration) -> Result<(), String> {
    let (program, args) = argv.split_first().ok_or("empty command")?;
    let child = tokio::process::Command::new(program)
        .args(args)
        .arg(file)
        .env_clear()
        .env("PATH", COMMAND_PATH)
        .current_dir("/")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    let out = match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Err(format!("{program}: {e}")),
        Err(_) => {
            return Err(format!(
                "{program} was still running after {} and was killed",
                humantime::format_duration(limit)
            ));
        }
    };
    let text = |b: &[u8]| {
        crate::escape::visible(&String::from_utf8_lossy(&b[..b.len().min(MAX_OUTPUT)])).into_owned()
    };
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    if out.status.success() {
        info!(command = %crate::escape::visible(program), %stdout, %stderr, "backup shipped");
        Ok(())
    } else {
        Err(format!(
            "{program} exited with {}: stdout {stdout:?}, stderr {stderr:?}",
            out.status
        ))
    }
}
