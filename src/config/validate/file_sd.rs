//! `file_sd`: Prometheus file_sd target files, a JSON or YAML list of groups
//! `{"targets": ["host:port", ...], "labels": {"k": "v"}}`, so that a CMDB export drives
//! tlsward as it drives Prometheus.
//!
//! Each group's targets go through [`TargetList::add`] with `[defaults]`, like every other
//! target source; its labels are checked like a `[[target]]`'s (valid names, none that
//! tlsward sets itself, no `__` prefix) and, since they come from another program, their
//! values too (no control or bidi character, at most [`MAX_LABEL_VALUE`] bytes). The label
//! `profile` chooses the group's profile instead of being a label: it is the name tlsward
//! exports the profile under, so the file reads like the series it gives.
//!
//! Every problem names the file and either the line and column the parser gives, or the
//! group and target (`group[2].targets[0]`); at most [`MAX_FILE_PROBLEMS`] are listed per
//! file. What a file says is quoted only escaped and cut short.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use super::Validator;
use super::problems::suggest;
use super::targets::{Origin, RESERVED_LABELS, TargetList, TargetSettings, valid_label_name};
use crate::config::file_sd::{DEFAULT_FILE_SD_REFRESH, FileSd, Stamp, matches};
use crate::config::raw::RawConfig;
use crate::escape::is_unsafe;
use crate::files::excerpt;
use crate::probe::Target;

/// The longest label value a file_sd group may set, in bytes.
pub(super) const MAX_LABEL_VALUE: usize = 1024;
/// The most labels one group may set.
pub(super) const MAX_GROUP_LABELS: usize = 64;
/// The most bytes of labels all file_sd targets together may carry (each target holds its
/// own copy of its group's labels): a small file of a million targets under a group with
/// large labels must not grow into gigabytes.
pub(super) const MAX_LABEL_BYTES: usize = 256 << 20;
/// The most problems listed for one file; the rest are counted.
pub(super) const MAX_FILE_PROBLEMS: usize = 100;
/// The deepest nesting of YAML flow collections (`[`, `{`) a file may have; a group needs
/// three. libyaml takes time quadratic in this depth before the deserializer's own limit is
/// reached (20,000 levels, 40 KB, take seconds), so deeper files are refused before parsing.
pub(super) const MAX_YAML_DEPTH: usize = 64;
/// How many characters of a name or value from a file a message quotes.
const QUOTE: usize = 64;

/// One group of a file_sd file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    targets: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// How a file_sd file is written, by its name's extension (as Prometheus decides).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Yaml,
}

impl Format {
    fn of(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()? {
            "json" => Some(Self::Json),
            "yml" | "yaml" => Some(Self::Yaml),
            _ => None,
        }
    }
}

/// Why a file did not parse: the parser's message, and its line and column when it gave
/// them.
#[derive(Debug, PartialEq, Eq)]
struct ParseError {
    at: Option<(usize, usize)>,
    message: String,
}

/// The groups in `text`. An empty file is refused rather than read as no targets: a file
/// caught while a non-atomic writer has just truncated it must not drop every target.
fn parse(text: &str, format: Format) -> Result<Vec<RawGroup>, ParseError> {
    if text.trim().is_empty() {
        return Err(ParseError {
            at: None,
            message: "is empty (write [] for a file without targets)".to_owned(),
        });
    }
    match format {
        Format::Json => serde_json::from_str(text).map_err(|e| {
            let at = (e.line() > 0).then(|| (e.line(), e.column()));
            ParseError {
                message: without_position(e.to_string(), at),
                at,
            }
        }),
        Format::Yaml => {
            if let Some(at) = too_deep(text) {
                return Err(ParseError {
                    at: Some(at),
                    message: format!("nested deeper than {MAX_YAML_DEPTH} levels"),
                });
            }
            serde_yaml_ng::from_str(text).map_err(|e| {
                let at = e.location().map(|l| (l.line(), l.column()));
                ParseError {
                    message: without_position(e.to_string(), at),
                    at,
                }
            })
        }
    }
}

/// Where (line, column) the YAML `text` first nests flow collections deeper than
/// [`MAX_YAML_DEPTH`], if it does. Quoted scalars and comments are skipped; brackets in
/// plain scalars count, which can only refuse a file early, never let a deep one through.
fn too_deep(text: &str) -> Option<(usize, usize)> {
    let (mut depth, mut line, mut column) = (0usize, 1, 0);
    let mut quote: Option<char> = None;
    let mut comment = false;
    let mut escaped = false;
    let mut boundary = true;
    for c in text.chars() {
        column += 1;
        if c == '\n' {
            (line, column, comment) = (line + 1, 0, false);
            if quote.is_none() {
                boundary = true;
                continue;
            }
        }
        if comment {
            continue;
        }
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if q == '"' && c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' if boundary => quote = Some(c),
            '#' if boundary => comment = true,
            '[' | '{' => {
                depth += 1;
                if depth > MAX_YAML_DEPTH {
                    return Some((line, column));
                }
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        boundary = c.is_whitespace() || matches!(c, '[' | '{' | ',' | ':' | '-');
    }
    None
}

/// `message` without the ` at line L column C` of the position given in front (serde_json
/// ends with it, libyaml puts it before its context).
fn without_position(message: String, at: Option<(usize, usize)>) -> String {
    match at {
        Some((line, column)) => {
            message.replacen(&format!(" at line {line} column {column}"), "", 1)
        }
        None => message,
    }
}

/// The problems of one file, capped at [`MAX_FILE_PROBLEMS`].
struct FileProblems {
    file: Arc<str>,
    listed: Vec<String>,
    more: usize,
}

impl FileProblems {
    fn push(&mut self, text: String) {
        if self.listed.len() < MAX_FILE_PROBLEMS {
            self.listed.push(text);
        } else {
            self.more += 1;
        }
    }
}

impl Validator<'_, '_> {
    /// Every file each `file_sd` pattern matches, into `list`, and what `serve` watches.
    /// `broken` names the profiles written in this config that did not validate.
    pub(super) fn file_sd(
        &mut self,
        raw: &RawConfig,
        defaults: &TargetSettings,
        broken: &[&String],
        list: &mut TargetList<'_>,
    ) -> FileSd {
        let refresh = self
            .duration(raw.file_sd_refresh.as_ref(), "file_sd_refresh")
            .unwrap_or(DEFAULT_FILE_SD_REFRESH);
        let mut sd = FileSd {
            patterns: Vec::new(),
            refresh,
            stamp: Stamp::default(),
        };
        let mut label_bytes = 0;
        for pattern in &raw.file_sd {
            let full = self.base.join(pattern.get_ref());
            sd.patterns.push(full.clone());
            let paths = match matches(&full) {
                Ok(paths) => paths,
                Err(e) => {
                    self.p.at(pattern, "file_sd", format!("bad pattern: {e}"));
                    continue;
                }
            };
            if paths.is_empty() {
                self.p.at(
                    pattern,
                    "file_sd",
                    format!("no file matches {}", full.display()),
                );
            }
            for path in paths {
                // Stamped before it is read: a change from here on is seen at the next look.
                sd.stamp.add(path.clone());
                self.sd_file(pattern, &path, defaults, broken, list, &mut label_bytes);
            }
        }
        sd
    }

    /// One file_sd file.
    fn sd_file(
        &mut self,
        pattern: &Spanned<String>,
        path: &Path,
        d: &TargetSettings,
        broken: &[&String],
        list: &mut TargetList<'_>,
        label_bytes: &mut usize,
    ) {
        let Some(format) = Format::of(path) else {
            self.p.at(
                pattern,
                "file_sd",
                format!(
                    "{}: unknown format: name the file .json, .yml or .yaml",
                    path.display()
                ),
            );
            return;
        };
        let text = match crate::files::read_to_string(path, crate::files::MAX_TARGETS) {
            Ok(t) => t,
            Err(e) => {
                self.p.at(pattern, "file_sd", e);
                return;
            }
        };
        let mut problems = FileProblems {
            file: path.display().to_string().into(),
            listed: Vec::new(),
            more: 0,
        };
        match parse(&text, format) {
            Ok(groups) => {
                drop(text);
                for (g, group) in groups.into_iter().enumerate() {
                    if !sd_group(&mut problems, g, group, d, broken, list, label_bytes) {
                        break;
                    }
                }
            }
            Err(e) => {
                let message = crate::escape::visible(&e.message);
                let file = &problems.file;
                problems.listed.push(match e.at {
                    Some((line, column)) => format!("{file}:{line}:{column}: {message}"),
                    None => format!("{file}: {message}"),
                });
            }
        }
        let FileProblems { file, listed, more } = problems;
        for text in listed {
            self.p.elsewhere(text);
        }
        if more > 0 {
            self.p
                .elsewhere(format!("{file}: {more} more problems not listed"));
        }
    }
}

/// Group `g` of a file into `list`; false when no more targets may be added (the labels'
/// bytes are used up).
fn sd_group(
    problems: &mut FileProblems,
    g: usize,
    group: RawGroup,
    d: &TargetSettings,
    broken: &[&String],
    list: &mut TargetList<'_>,
    label_bytes: &mut usize,
) -> bool {
    let file = problems.file.clone();
    let Some((settings, labels)) = sd_labels(problems, g, &group.labels, d, broken, list) else {
        return true;
    };
    // What each target's copy of the labels holds, with the strings' own headers.
    let per_target: usize = labels
        .iter()
        .map(|(k, v)| k.len() + v.len() + 2 * size_of::<String>())
        .sum();
    for (t, address) in group.targets.iter().enumerate() {
        let at = format!("{file}: group[{g}].targets[{t}]");
        let target = match address.parse::<Target>() {
            Ok(t) => t,
            Err(e) => {
                problems.push(format!("{at}: {e}"));
                continue;
            }
        };
        *label_bytes += per_target;
        if *label_bytes > MAX_LABEL_BYTES {
            problems.push(format!(
                "{at}: the labels of file_sd targets take more than {} MiB; give fewer or \
                 shorter labels",
                MAX_LABEL_BYTES >> 20
            ));
            return false;
        }
        let name = target.to_string();
        let origin = Origin::SdFile {
            file: file.clone(),
            group: g,
        };
        if let Err(first) = list.add(origin, target, &settings, labels.clone(), false) {
            problems.push(format!(
                "{at}: {name} with profile {:?} is already {first}",
                settings.profile
            ));
        }
    }
    true
}

/// A group's settings (`[defaults]`, with the profile its `profile` label names) and its
/// other labels; `None` when the group is left out: a label or the profile is wrong (each
/// problem reported), or the profile did not validate (reported where it is written).
fn sd_labels(
    problems: &mut FileProblems,
    g: usize,
    labels: &BTreeMap<String, String>,
    d: &TargetSettings,
    broken: &[&String],
    list: &TargetList<'_>,
) -> Option<(TargetSettings, Vec<(String, String)>)> {
    let at = format!("{}: group[{g}].labels", problems.file);
    if labels.len() > MAX_GROUP_LABELS {
        problems.push(format!(
            "{at}: {} labels, more than {MAX_GROUP_LABELS}",
            labels.len()
        ));
        return None;
    }
    let mut ok = true;
    let mut settings = d.clone();
    let mut out = Vec::new();
    for (name, value) in labels {
        let problem = if name == "profile" {
            let profiles = list.profiles();
            if broken.contains(&value) {
                ok = false;
                None
            } else if profiles.contains_key(value) {
                settings.profile.clone_from(value);
                None
            } else {
                let hint = suggest(value, profiles.keys());
                Some(format!("unknown profile {}{hint}", excerpt(value, QUOTE)))
            }
        } else if !valid_label_name(name) {
            Some(format!(
                "{} is not a valid Prometheus label name",
                excerpt(name, QUOTE)
            ))
        } else if RESERVED_LABELS.contains(&name.as_str()) || name.starts_with("__") {
            Some(format!("{name:?} is reserved by tlsward"))
        } else if value.chars().any(is_unsafe) {
            Some(format!(
                "{name}: {} has a control or bidi character",
                excerpt(value, QUOTE)
            ))
        } else if value.len() > MAX_LABEL_VALUE {
            Some(format!(
                "{name}: the value is {} bytes, longer than {MAX_LABEL_VALUE}",
                value.len()
            ))
        } else {
            out.push((name.clone(), value.clone()));
            None
        };
        if let Some(problem) = problem {
            problems.push(format!("{at}: {problem}"));
            ok = false;
        }
    }
    ok.then_some((settings, out))
}

#[cfg(test)]
mod tests;
