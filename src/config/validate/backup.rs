//! `[backup]`: the age recipients, the drill identity, and the schedule (`every` with `dir`,
//! `keep`, the offsite `command` and its `command_timeout`).

use std::str::FromStr;
use std::time::Duration;

use super::Validator;
use crate::backup::{BackupSettings, DEFAULT_COMMAND_TIMEOUT, DEFAULT_KEEP, Schedule};
use crate::config::raw::RawConfig;

/// The shortest `every` accepted.
const MIN_EVERY: Duration = Duration::from_secs(1);
/// The largest `keep` accepted.
const MAX_KEEP: i64 = 10_000;

impl Validator<'_, '_> {
    pub(super) fn backup(&mut self, raw: &RawConfig) -> Option<BackupSettings> {
        let b = raw.backup.as_ref()?.get_ref();
        let recipients = b.recipients.get_ref().clone();
        if recipients.is_empty() {
            self.p.at(
                &b.recipients,
                "backup.recipients",
                "name at least one age recipient (age1...) whose identity is kept off this server",
            );
        }
        for (i, r) in recipients.iter().enumerate() {
            if age::x25519::Recipient::from_str(r).is_err() {
                self.p.at(
                    &b.recipients,
                    &format!("backup.recipients[{i}]"),
                    format!(
                        "{:?} is not an age X25519 recipient (age1...)",
                        crate::escape::visible_within(r, 80)
                    ),
                );
            }
        }
        let drill_identity_file = b
            .drill_identity_file
            .as_ref()
            .map(|f| self.base.join(f.get_ref()));
        let every = self.duration(b.every.as_ref(), "backup.every");
        if let (Some(d), Some(v)) = (every, &b.every)
            && d < MIN_EVERY
        {
            self.p.at(v, "backup.every", "must be at least 1s");
        }
        let keep = match &b.keep {
            Some(k) if (1..=MAX_KEEP).contains(k.get_ref()) => *k.get_ref() as usize,
            Some(k) => {
                self.p.at(
                    k,
                    "backup.keep",
                    format!("must be between 1 and {MAX_KEEP}"),
                );
                DEFAULT_KEEP
            }
            None => DEFAULT_KEEP,
        };
        let command = b.command.as_ref().and_then(|c| match c.get_ref().first() {
            None => {
                self.p.at(
                    c,
                    "backup.command",
                    "an empty argv: give the program and its arguments",
                );
                None
            }
            Some(program) if !program.starts_with('/') => {
                self.p.at(
                    c,
                    "backup.command",
                    format!("{program:?} is not an absolute path (no shell, no PATH lookup)"),
                );
                None
            }
            Some(_) => Some(c.get_ref().clone()),
        });
        let command_timeout = self
            .duration(b.command_timeout.as_ref(), "backup.command_timeout")
            .unwrap_or(DEFAULT_COMMAND_TIMEOUT);
        let schedule = match (&b.every, &b.dir) {
            (Some(_), Some(dir)) => every.map(|every| Schedule {
                every,
                dir: self.base.join(dir.get_ref()),
                keep,
                command,
                command_timeout,
            }),
            (Some(v), None) => {
                self.p
                    .at(v, "backup.every", "needs backup.dir, where the files go");
                None
            }
            (None, Some(dir)) => {
                self.p.at(
                    dir,
                    "backup.dir",
                    "needs backup.every, how often to back up",
                );
                None
            }
            (None, None) => None,
        };
        Some(BackupSettings {
            recipients,
            drill_identity_file,
            schedule,
        })
    }
}
