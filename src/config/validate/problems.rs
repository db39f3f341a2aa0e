//! The problems found in a config, each located by file, line and key, and the "did you
//! mean" hint for a misspelt name.

use std::ops::Range;

use toml::Spanned;

use crate::config::ConfigError;

/// Problems found so far, each rendered as `file:line: key: message`.
pub(super) struct Problems<'a> {
    file: String,
    src: &'a str,
    /// (line, text); problems without a line sort last.
    pub(super) list: Vec<(usize, String)>,
}

impl<'a> Problems<'a> {
    pub(super) fn new(file: String, src: &'a str) -> Self {
        Self {
            file,
            src,
            list: Vec::new(),
        }
    }

    pub(super) fn add(
        &mut self,
        span: Option<Range<usize>>,
        key: &str,
        msg: impl std::fmt::Display,
    ) {
        let msg = msg.to_string();
        let msg = msg.trim_end();
        let key = if key.is_empty() {
            String::new()
        } else {
            format!("{key}: ")
        };
        match span {
            Some(span) => {
                let line = self.src[..span.start.min(self.src.len())]
                    .matches('\n')
                    .count()
                    + 1;
                self.list
                    .push((line, format!("{}:{line}: {key}{msg}", self.file)));
            }
            None => self
                .list
                .push((usize::MAX, format!("{}: {key}{msg}", self.file))),
        }
    }

    pub(super) fn at<T>(&mut self, v: &Spanned<T>, key: &str, msg: impl std::fmt::Display) {
        self.add(Some(v.span()), key, msg);
    }

    /// A problem located in another file (`file:line: message`).
    pub(super) fn elsewhere(&mut self, text: String) {
        self.list.push((usize::MAX - 1, text));
    }

    pub(super) fn into_error(mut self) -> ConfigError {
        self.list.sort_by_key(|(line, _)| *line);
        ConfigError {
            problems: self.list.into_iter().map(|(_, t)| t).collect(),
        }
    }
}

/// ` (did you mean "https"?)` when a known name is one or two edits away.
pub(super) fn suggest<'a>(name: &str, known: impl Iterator<Item = &'a String>) -> String {
    known
        .map(|k| (edit_distance(name, k), k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| format!(" (did you mean {k:?}?)"))
        .unwrap_or_default()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}
