//! Undoing a run: the files it wrote put back (through the same directories), then its
//! commands run again so a service reloads the previous files.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::warn;

use super::{Written, render_error, run_command};
use crate::hooks::beneath;

/// What undoing a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Rollback {
    /// Files put back from their previous version.
    pub restored: Vec<PathBuf>,
    /// Files the run created, removed.
    pub removed: Vec<PathBuf>,
    /// Commands re-run (the reload), with their exit code.
    pub commands: Vec<(Vec<String>, i32)>,
    /// What could not be undone.
    pub errors: Vec<String>,
}

impl Rollback {
    /// Whether everything was undone.
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Puts back the files a run wrote, newest first, then re-runs the commands it ran (once
/// each, in order), so a service reloads the previous files.
pub(crate) fn roll_back(
    rt: &tokio::runtime::Handle,
    written: &[Written],
    commands: &[Vec<String>],
    limit: Duration,
) -> Rollback {
    let mut out = Rollback::default();
    for w in written.iter().rev() {
        let Ok(rel) = w.path.strip_prefix(&w.root) else {
            out.errors.push(format!(
                "{}: not beneath {}",
                w.path.display(),
                w.root.display()
            ));
            continue;
        };
        let previous = w.previous.as_deref().and_then(Path::file_name);
        match beneath::restore(&w.root, rel, previous) {
            Ok(beneath::Restored::Renamed) => out.restored.push(w.path.clone()),
            Ok(beneath::Restored::Removed) => out.removed.push(w.path.clone()),
            Ok(beneath::Restored::Absent) => {}
            Err(e) if e.is_link() => {
                let e = format!(
                    "{}: not put back: {e} (replaced since the hook wrote it; rollback goes \
                     through real directories only)",
                    w.path.display()
                );
                warn!(error = %e, "rollback refused");
                out.errors.push(e);
            }
            Err(e) => out.errors.push(format!("{}: {e}", w.path.display())),
        }
    }
    let deadline = Instant::now() + limit;
    let mut seen: Vec<&Vec<String>> = Vec::new();
    for argv in commands {
        if seen.contains(&argv) {
            continue;
        }
        seen.push(argv);
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1));
        match run_command(rt, argv, left) {
            Ok(o) => {
                if o.exit_code != 0 {
                    out.errors.push(format!(
                        "{argv:?} exited {}: {}",
                        o.exit_code,
                        o.stderr.trim()
                    ));
                }
                out.commands.push((argv.clone(), o.exit_code));
            }
            Err(e) => out.errors.push(format!("{argv:?}: {}", render_error(&e))),
        }
    }
    out
}
