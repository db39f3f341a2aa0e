//! The TOML layer (syntax, unknown keys, wrong types): every shape error at once, each
//! located by its key path.
//!
//! serde stops at the first shape error, and its messages name no key (`unknown field
//! `timeoutt``, `invalid type: string, expected an integer`). So the document is also parsed
//! as a spanned tree: the key whose name or value covers the error's position gives the path
//! (`defaults.timeoutt`, `target[2].interval`), and that key's entry is blanked out (replaced
//! by spaces, so every other offset and line number stays the same) before deserializing
//! again. Unknown keys and wrong types are then all reported in one run, and the rest of the
//! file is still validated. Only syntax errors and missing required keys stop the run early,
//! and the message says so.

use std::ops::Range;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// Said after an error that stops the checks: the ones that list every other problem.
pub(super) const FIRST_ONLY: &str = "(checking stopped here: fix this to see any further problems)";

/// At most this many shape errors are collected before giving up.
const MAX_ROUNDS: usize = 100;

/// One shape error: where, which key, what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ShapeError {
    /// Byte range in the document, when serde gave one.
    pub(super) span: Option<Range<usize>>,
    /// The key path, or empty.
    pub(super) key: String,
    /// serde's message (with [`FIRST_ONLY`] appended where checking stopped).
    pub(super) message: String,
}

/// Deserializes `text`, collecting every unknown key and wrong type. `Ok` carries the value
/// (of the document with the offending entries blanked out) and the errors found on the
/// way; `Err` means checking had to stop, with every error up to there.
pub(super) fn deserialize<T: DeserializeOwned>(
    text: &str,
) -> Result<(T, Vec<ShapeError>), Vec<ShapeError>> {
    let mut doc = text.to_owned();
    let mut errors: Vec<ShapeError> = Vec::new();
    // Keys blanked because of a wrong type: the "missing field" that follows is not news.
    let mut blanked: Vec<String> = Vec::new();
    for _ in 0..MAX_ROUNDS {
        let e = match toml::from_str::<T>(&doc) {
            Ok(v) => return Ok((v, errors)),
            Err(e) => e,
        };
        let message = e.message().trim_end().to_owned();
        let entry = e.span().and_then(|span| entry_at(&doc, span.start));
        let key = entry.as_ref().map(|en| en.path.clone()).unwrap_or_default();
        let missing = message.starts_with("missing field");
        let field = message.split('`').nth(1).unwrap_or_default().to_owned();
        // The key was there but unusable (a wrong type), or misspelled right before: the
        // missing key is already explained by the error before it.
        let explained = missing
            && (blanked
                .iter()
                .any(|b| b.rsplit('.').next() == Some(field.as_str()))
                || errors.last().is_some_and(|last| {
                    last.message.starts_with("unknown field")
                        && last.key.rsplit_once('.').map(|(t, _)| t) == Some(key.as_str())
                }));
        match entry {
            Some(en) if !missing => {
                if !message.starts_with("unknown field") {
                    blanked.push(strip_index(&en.path));
                }
                errors.push(ShapeError {
                    span: e.span(),
                    key,
                    message,
                });
                blank(&mut doc, en.range);
            }
            _ => {
                match errors.last_mut() {
                    Some(last) if explained => {
                        last.message =
                            format!("{}; `{field}` is then missing {FIRST_ONLY}", last.message);
                    }
                    _ => errors.push(ShapeError {
                        span: e.span(),
                        key,
                        message: format!("{message} {FIRST_ONLY}"),
                    }),
                }
                return Err(errors);
            }
        }
    }
    if let Some(last) = errors.last_mut() {
        last.message = format!("{} {FIRST_ONLY}", last.message);
    }
    Err(errors)
}

/// The path without a trailing array index (`commands[1]` -> `commands`).
fn strip_index(path: &str) -> String {
    match path.rfind('[') {
        Some(i) if path.ends_with(']') => path[..i].to_owned(),
        _ => path.to_owned(),
    }
}

/// The key path at byte `at` in `text`, e.g. `target[3].adress`; `None` when no key covers
/// it (a syntax error, or a position outside every entry).
#[cfg(test)]
pub(super) fn key_path_at(text: &str, at: usize) -> Option<String> {
    entry_at(text, at).map(|e| e.path)
}

/// The entry whose key or value covers `at`, the narrowest one.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// Its key path (with an array index when `at` falls on one element).
    path: String,
    /// What to blank to remove it: `key = value`, or a whole `[table]` section.
    range: Range<usize>,
}

fn entry_at(text: &str, at: usize) -> Option<Entry> {
    let doc = DeTable::parse(text).ok()?;
    let mut headers = Vec::new();
    collect_headers(text, doc.get_ref(), &mut headers);
    headers.sort_unstable();
    let mut best: Option<(usize, Entry)> = None;
    let mut walk = Walk {
        text,
        at,
        headers: &headers,
        best: &mut best,
    };
    walk.table(doc.get_ref(), "");
    best.map(|(_, e)| e)
}

/// Start offsets of every `[table]` and `[[array]]` header.
fn collect_headers(text: &str, table: &DeTable<'_>, out: &mut Vec<usize>) {
    for value in table.values() {
        match value.get_ref() {
            DeValue::Table(t) => {
                if is_header(text, &value.span()) {
                    out.push(value.span().start);
                }
                collect_headers(text, t, out);
            }
            DeValue::Array(items) => {
                for item in items {
                    if let DeValue::Table(t) = item.get_ref() {
                        if is_header(text, &item.span()) {
                            out.push(item.span().start);
                        }
                        collect_headers(text, t, out);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Whether a table's span is its `[header]` (it is defined by one, not inline or dotted).
fn is_header(text: &str, span: &Range<usize>) -> bool {
    text.get(span.clone()).is_some_and(|s| s.starts_with('['))
        && text[..span.start]
            .rsplit('\n')
            .next()
            .is_some_and(|before| before.trim().is_empty())
}

struct Walk<'w> {
    text: &'w str,
    at: usize,
    headers: &'w [usize],
    best: &'w mut Option<(usize, Entry)>,
}

impl Walk<'_> {
    fn table(&mut self, table: &DeTable<'_>, prefix: &str) {
        for (key, value) in table {
            let path = if prefix.is_empty() {
                key.get_ref().to_string()
            } else {
                format!("{prefix}.{}", key.get_ref())
            };
            let range = self.entry_range(&key.span(), value);
            for span in [key.span(), value.span()] {
                self.consider(&span, &path, &range);
            }
            self.value(value, &path, &range);
        }
    }

    fn value(&mut self, value: &Spanned<DeValue<'_>>, path: &str, range: &Range<usize>) {
        match value.get_ref() {
            DeValue::Table(t) => self.table(t, path),
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let path = format!("{path}[{i}]");
                    // An element of an array of tables is removed with its section; one of
                    // an inline array with the whole key.
                    let range = if is_header(self.text, &item.span()) {
                        self.section(&item.span())
                    } else {
                        range.clone()
                    };
                    self.consider(&item.span(), &path, &range);
                    self.value(item, &path, &range);
                }
            }
            _ => {}
        }
    }

    /// `key = value`, or for a table defined by a header, its whole section.
    fn entry_range(&self, key: &Range<usize>, value: &Spanned<DeValue<'_>>) -> Range<usize> {
        let v = value.span();
        if matches!(value.get_ref(), DeValue::Table(_)) && is_header(self.text, &v) {
            return self.section(&v);
        }
        key.start.min(v.start)..key.end.max(v.end)
    }

    /// From a header to the next header (or the end of the document).
    fn section(&self, header: &Range<usize>) -> Range<usize> {
        let end = self
            .headers
            .iter()
            .copied()
            .find(|&h| h > header.start)
            .unwrap_or(self.text.len());
        header.start..end
    }

    fn consider(&mut self, span: &Range<usize>, path: &str, range: &Range<usize>) {
        if span.is_empty() || !(span.start <= self.at && self.at < span.end) {
            return;
        }
        let width = span.end - span.start;
        if self.best.as_ref().is_none_or(|(w, _)| width <= *w) {
            *self.best = Some((
                width,
                Entry {
                    path: path.to_owned(),
                    range: range.clone(),
                },
            ));
        }
    }
}

/// Replaces `range` with spaces, keeping line breaks, so that no other offset moves.
fn blank(doc: &mut String, range: Range<usize>) {
    let range = range.start.min(doc.len())..range.end.min(doc.len());
    let blanked: String = doc[range.clone()]
        .chars()
        .map(|c| if c == '\n' || c == '\r' { c } else { ' ' })
        .collect();
    // Multi-byte characters become one space each: pad to keep the byte length.
    let pad = range.len() - blanked.len();
    doc.replace_range(range, &format!("{blanked}{}", " ".repeat(pad)));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path_of(text: &str, needle: &str) -> Option<String> {
        key_path_at(text, text.find(needle).unwrap())
    }

    const DOC: &str = "[defaults]\ntimeoutt = \"5s\"\n\n[[target]]\naddress = \"a:443\"\n\n\
                       [[target]]\naddress = \"b:443\"\nlabels = { team = 3 }\n\n[server.web]\nx = 1\n";

    #[test]
    fn finds_keys_in_tables_arrays_of_tables_and_inline_tables() {
        assert_eq!(
            path_of(DOC, "timeoutt").as_deref(),
            Some("defaults.timeoutt")
        );
        assert_eq!(
            path_of(DOC, "\"b:443\"").as_deref(),
            Some("target[1].address")
        );
        assert_eq!(
            path_of(DOC, "3 }").as_deref(),
            Some("target[1].labels.team")
        );
        assert_eq!(path_of(DOC, "x = 1").as_deref(), Some("server.web.x"));
        assert_eq!(key_path_at("a = 1\n", 100), None);
        assert_eq!(key_path_at("a = [1,", 0), None);
    }

    #[test]
    fn blanking_an_entry_or_a_section_keeps_every_offset() {
        let at = DOC.find("timeoutt").unwrap();
        let e = entry_at(DOC, at).unwrap();
        let mut doc = DOC.to_owned();
        blank(&mut doc, e.range);
        assert_eq!(doc.len(), DOC.len());
        assert_eq!(doc.lines().count(), DOC.lines().count());
        assert!(!doc.contains("timeoutt") && doc.contains("[defaults]"));

        // The second [[target]] section goes as a whole, up to [server.web].
        let at = DOC.rfind("[[target]]").unwrap();
        let e = entry_at(DOC, at + 2).unwrap();
        assert_eq!(e.path, "target[1]");
        let mut doc = DOC.to_owned();
        blank(&mut doc, e.range);
        assert!(!doc.contains("b:443") && doc.contains("a:443") && doc.contains("[server.web]"));
        let t: toml::Table = toml::from_str(&doc).unwrap();
        assert_eq!(t["target"].as_array().unwrap().len(), 1);
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Doc {
        a: Option<u32>,
        b: Option<String>,
        sub: Option<Sub>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sub {
        c: u32,
    }

    #[test]
    fn every_unknown_key_and_wrong_type_in_one_run() {
        let text = "a = \"x\"\nzz = 1\n[sub]\nc = 2\nyy = 3\n";
        let (_, mut errors) = deserialize::<Doc>(text).unwrap();
        errors.sort_by_key(|e| e.span.as_ref().map(|s| s.start));
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["a", "zz", "sub.yy"], "{errors:?}");
        // A wrong type of a required key: reported once, then checking stops.
        let errors = deserialize::<Doc>("[sub]\nc = \"two\"\n").unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].key, "sub.c");
        assert!(errors[0].message.ends_with(FIRST_ONLY), "{errors:?}");
        // A syntax error stops at once.
        let errors = deserialize::<Doc>("a = [1,\nzz = 2\n").unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].message.ends_with(FIRST_ONLY));
    }
}
