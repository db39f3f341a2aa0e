//! Commands a hook runs (a service reload): no shell, an empty environment, a deadline.

use std::time::Duration;

use super::{COMMAND_PATH, MAX_COMMAND_OUTPUT, State};
use crate::hooks::bindings::tlsward::hook::types::{CommandOutput, HookError};

impl State {
    pub(super) fn command(&mut self, argv: &[String]) -> Result<CommandOutput, HookError> {
        self.grant.check_command(argv)?;
        let left = self.remaining()?;
        let out = run_command(&self.rt, argv, left)?;
        self.rec().commands.push(argv.to_vec());
        Ok(out)
    }
}

fn truncate(bytes: &[u8]) -> String {
    let cut = bytes.len().min(MAX_COMMAND_OUTPUT);
    let mut s = String::from_utf8_lossy(&bytes[..cut]).into_owned();
    if bytes.len() > cut {
        s.push_str(&format!("\n[{} more bytes dropped]", bytes.len() - cut));
    }
    s
}

/// Runs `argv` with no shell, an empty environment (but [`COMMAND_PATH`]), stdin closed,
/// killed when `limit` passes.
pub(crate) fn run_command(
    rt: &tokio::runtime::Handle,
    argv: &[String],
    limit: Duration,
) -> Result<CommandOutput, HookError> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| HookError::InvalidArgument("empty argv".into()))?;
    // Checked at config load too; here for grants built in code and for rollback's re-runs.
    if !program.starts_with('/') {
        return Err(HookError::InvalidArgument(format!(
            "{program:?} is not an absolute path"
        )));
    }
    rt.block_on(async {
        let child = tokio::process::Command::new(program)
            .args(args)
            .env_clear()
            .env("PATH", COMMAND_PATH)
            .current_dir("/")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| HookError::Failed(format!("cannot start {program}: {e}")))?;
        match tokio::time::timeout(limit, child.wait_with_output()).await {
            Ok(Ok(out)) => Ok(CommandOutput {
                exit_code: out.status.code().unwrap_or(-1),
                stdout: truncate(&out.stdout),
                stderr: truncate(&out.stderr),
            }),
            Ok(Err(e)) => Err(HookError::Failed(format!("{program}: {e}"))),
            Err(_) => Err(HookError::Timeout(format!(
                "{argv:?} was still running after {} and was killed",
                humantime::format_duration(Duration::from_millis(limit.as_millis() as u64))
            ))),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_run_only_by_absolute_path() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        for argv in [["bin/true"], ["true"]] {
            let argv: Vec<String> = argv.iter().map(|s| (*s).to_owned()).collect();
            let e = run_command(rt.handle(), &argv, Duration::from_secs(60)).unwrap_err();
            assert!(
                matches!(&e, HookError::InvalidArgument(m) if m.contains("is not an absolute path")),
                "{e:?}"
            );
        }
        let ok = run_command(
            rt.handle(),
            &["/bin/true".to_owned()],
            Duration::from_secs(60),
        );
        assert_eq!(ok.map(|o| o.exit_code).ok(), Some(0));
    }
}
