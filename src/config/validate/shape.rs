//! Errors of the TOML layer (syntax, unknown keys, wrong types), located by key path.
//!
//! serde stops at the first shape error it meets, and its messages name no key
//! (`unknown field `timeoutt``, `invalid type: string, expected an integer`). The document
//! is parsed once more as a spanned tree, and the key whose name or value covers the error's
//! position gives the path (`defaults.timeoutt`, `target[2].interval`).

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// Said after a shape error: the checks that would list every other problem did not run.
pub(super) const FIRST_ONLY: &str =
    "(the file's structure is checked first and stops at its first error: fix it to see the rest)";

/// The key path at `span` in `text`, e.g. `target[3].adress`; `None` when no key covers it
/// (a syntax error, or a problem at the top of the document).
pub(super) fn key_path_at(text: &str, span: &Range<usize>) -> Option<String> {
    let doc = DeTable::parse(text).ok()?;
    let mut best: Option<(usize, String)> = None;
    walk_table(doc.get_ref(), "", span.start, &mut best);
    best.map(|(_, path)| path)
}

/// Keeps in `best` the narrowest key or value span that contains `at`, with its path.
fn walk_table(table: &DeTable<'_>, prefix: &str, at: usize, best: &mut Option<(usize, String)>) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        for span in [key.span(), value.span()] {
            consider(&span, at, &path, best);
        }
        walk_value(value, &path, at, best);
    }
}

fn walk_value(
    value: &Spanned<DeValue<'_>>,
    path: &str,
    at: usize,
    best: &mut Option<(usize, String)>,
) {
    match value.get_ref() {
        DeValue::Table(t) => walk_table(t, path, at, best),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let path = format!("{path}[{i}]");
                consider(&item.span(), at, &path, best);
                walk_value(item, &path, at, best);
            }
        }
        _ => {}
    }
}

fn consider(span: &Range<usize>, at: usize, path: &str, best: &mut Option<(usize, String)>) {
    // An empty span (an implicit table) covers nothing.
    if span.start <= at && at < span.end.max(span.start + 1) && !span.is_empty() {
        let width = span.end - span.start;
        if best.as_ref().is_none_or(|(w, _)| width <= *w) {
            *best = Some((width, path.to_owned()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path_of(text: &str, needle: &str) -> Option<String> {
        let start = text.find(needle).unwrap();
        key_path_at(text, &(start..start + needle.len()))
    }

    #[test]
    fn finds_keys_in_tables_arrays_of_tables_and_inline_tables() {
        let text = "[defaults]\ntimeoutt = \"5s\"\n\n[[target]]\naddress = \"a:443\"\n\n\
                    [[target]]\naddress = \"b:443\"\nlabels = { team = 3 }\n\n[server.web]\nx = 1\n";
        assert_eq!(
            path_of(text, "timeoutt").as_deref(),
            Some("defaults.timeoutt")
        );
        assert_eq!(
            path_of(text, "\"b:443\"").as_deref(),
            Some("target[1].address")
        );
        assert_eq!(
            path_of(text, "3 }").as_deref(),
            Some("target[1].labels.team")
        );
        assert_eq!(path_of(text, "x = 1").as_deref(), Some("server.web.x"));
    }

    #[test]
    fn nothing_for_a_span_outside_every_key() {
        assert_eq!(key_path_at("a = 1\n", &(100..101)), None);
        assert_eq!(key_path_at("a = [1,", &(0..1)), None);
    }
}
