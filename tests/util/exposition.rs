//! A strict parser of the two exposition formats tlsward serves: the Prometheus text format
//! 0.0.4 and OpenMetrics 1.0.0 (text), written from their grammars to judge scrapes of
//! hostile endpoints. Any line that does not follow the grammar fails the whole parse with
//! the line number, as a scraper would reject the scrape.
//!
//! Where a format leaves room that tlsward never uses, the parser is stricter, so that a
//! loophole shows up here first:
//! - no control character anywhere but the LF that ends each line (OpenMetrics allows a raw
//!   CR or ESC inside a label value; a terminal or a line-based tool does not);
//! - no blank lines and no comments other than the format's own (`# HELP`, `# TYPE`, and in
//!   OpenMetrics `# UNIT` and the final `# EOF`); no timestamps, no exemplars;
//! - every family is declared by `# TYPE` before its first sample, its lines are contiguous,
//!   and a family, a series (name and label set) or a label name never appears twice;
//! - in the text format, no trailing comma in a label set.

use std::collections::{BTreeMap, BTreeSet};

/// Which format a body is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`.
    Text,
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
}

/// Label names and decoded values, in the order written.
pub type Labels = Vec<(String, String)>;

/// A metric family's metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub kind: String,
    pub help: Option<String>,
    pub unit: Option<String>,
}

/// One sample, label values decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The family it belongs to (the `# TYPE` name).
    pub family: String,
    /// The sample's own name (`x_total`, `x_bucket`, ...).
    pub name: String,
    pub labels: Labels,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A parsed exposition.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    pub families: BTreeMap<String, Family>,
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// The samples named `name`, in order.
    pub fn named(&self, name: &str) -> Vec<&Sample> {
        self.samples.iter().filter(|s| s.name == name).collect()
    }

    /// Every sample carrying `key="value"`.
    pub fn with_label(&self, key: &str, value: &str) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| s.label(key) == Some(value))
            .collect()
    }
}

/// Parses `body` strictly as `format`; the error names the line and what is wrong with it.
pub fn parse(format: Format, body: &str) -> Result<Exposition, String> {
    Parser {
        format,
        out: Exposition::default(),
        current: None,
        closed: BTreeSet::new(),
        series: BTreeSet::new(),
    }
    .run(body)
}

/// Parses `body` strictly or panics with the error and the body.
pub fn parse_or_panic(format: Format, body: &str) -> Exposition {
    parse(format, body).unwrap_or_else(|e| panic!("{format:?} exposition rejected: {e}\n{body}"))
}

impl Exposition {
    /// The value of the sample `name` whose label set is exactly `labels`, in any order.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut want: Vec<(&str, &str)> = labels.to_vec();
        want.sort_unstable();
        self.samples
            .iter()
            .find(|s| {
                let mut have: Vec<(&str, &str)> = s
                    .labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                have.sort_unstable();
                s.name == name && have == want
            })
            .map(|s| s.value)
    }
}

/// The format a scrape body is in: OpenMetrics ends with `# EOF`.
pub fn format_of(body: &str) -> Format {
    if body.ends_with("# EOF\n") {
        Format::OpenMetrics
    } else {
        Format::Text
    }
}

/// The value of the sample `name` with exactly the label set `labels` (in any order) in a
/// scrape `body` (either format), or `None` when there is no such series. The body is parsed
/// strictly: a body that does not parse fails the test.
#[track_caller]
pub fn metric(body: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    parse_or_panic(format_of(body), body).value(name, labels)
}

/// Asserts that the series `name{labels}` has the value `want`; on a mismatch, shows every
/// series of that name beside what was expected.
#[track_caller]
pub fn assert_metric(body: &str, name: &str, labels: &[(&str, &str)], want: f64) {
    let x = parse_or_panic(format_of(body), body);
    let got = x.value(name, labels);
    if got != Some(want) {
        let have: Vec<String> = x
            .named(name)
            .iter()
            .map(|s| format!("  {:?} {}", s.labels, s.value))
            .collect();
        panic!(
            "{name} {labels:?}\n  expected: {want}\n  actual:   {got:?}\nseries of that name:\n{}",
            have.join("\n")
        );
    }
}

/// An expected series and its value, for tests that wait for or check several.
#[derive(Debug, Clone, Copy)]
pub struct Series<'a> {
    pub name: &'a str,
    pub labels: &'a [(&'a str, &'a str)],
    pub value: f64,
}

/// The series `name{labels}` with the value `value`.
pub fn series<'a>(name: &'a str, labels: &'a [(&'a str, &'a str)], value: f64) -> Series<'a> {
    Series {
        name,
        labels,
        value,
    }
}

impl Series<'_> {
    /// Whether `body` has this series with this value.
    #[track_caller]
    pub fn in_body(&self, body: &str) -> bool {
        metric(body, self.name, self.labels) == Some(self.value)
    }

    /// Asserts that `body` has this series with this value (see [`assert_metric`]).
    #[track_caller]
    pub fn assert_in(&self, body: &str) {
        assert_metric(body, self.name, self.labels, self.value);
    }
}

struct Parser {
    format: Format,
    out: Exposition,
    /// The family whose lines are being read.
    current: Option<String>,
    /// Families whose lines have ended: seeing them again is an error.
    closed: BTreeSet<String>,
    /// (name, sorted labels) of every sample so far.
    series: BTreeSet<(String, Labels)>,
}

impl Parser {
    fn run(mut self, body: &str) -> Result<Exposition, String> {
        let Some(body) = body.strip_suffix('\n') else {
            return Err("the body does not end with a line feed".into());
        };
        let lines: Vec<&str> = body.split('\n').collect();
        let mut eof = false;
        for (i, line) in lines.iter().enumerate() {
            let n = i + 1;
            if eof {
                return Err(format!("line {n}: text after # EOF: {line:?}"));
            }
            if let Some(c) = line.chars().find(|c| c.is_control()) {
                return Err(format!("line {n}: control character {c:?}: {line:?}"));
            }
            let result = if *line == "# EOF" && self.format == Format::OpenMetrics {
                eof = true;
                Ok(())
            } else if let Some(rest) = line.strip_prefix('#') {
                self.comment(rest)
            } else {
                self.sample(line)
            };
            result.map_err(|e| format!("line {n}: {e}: {line:?}"))?;
        }
        if self.format == Format::OpenMetrics && !eof {
            return Err("no # EOF at the end".into());
        }
        Ok(self.out)
    }

    /// Makes `name` the current family, refusing one whose lines already ended.
    fn enter(&mut self, name: &str) -> Result<(), String> {
        if self.current.as_deref() == Some(name) {
            return Ok(());
        }
        if self.closed.contains(name) {
            return Err(format!("family {name} appears twice"));
        }
        if let Some(prev) = self.current.take() {
            self.closed.insert(prev);
        }
        self.current = Some(name.to_owned());
        Ok(())
    }

    fn comment(&mut self, rest: &str) -> Result<(), String> {
        let rest = rest
            .strip_prefix(' ')
            .ok_or("a comment without a space after #")?;
        let (keyword, rest) = rest.split_once(' ').ok_or("an incomplete descriptor")?;
        let (name, value) = match rest.split_once(' ') {
            Some((name, value)) => (name, Some(value)),
            None => (rest, None),
        };
        metric_name(name)?;
        let om = self.format == Format::OpenMetrics;
        match keyword {
            "TYPE" => {
                let kind = value.ok_or("TYPE without a type")?;
                let kinds: &[&str] = if om {
                    &[
                        "counter",
                        "gauge",
                        "histogram",
                        "gaugehistogram",
                        "stateset",
                        "info",
                        "summary",
                        "unknown",
                    ]
                } else {
                    &["counter", "gauge", "histogram", "summary", "untyped"]
                };
                if !kinds.contains(&kind) {
                    return Err(format!("unknown type {kind:?}"));
                }
                if om && kind == "info" && name.ends_with("_info") {
                    return Err("an info family named with _info".into());
                }
                if om && kind == "counter" && name.ends_with("_total") {
                    return Err("a counter family named with _total".into());
                }
                self.enter(name)?;
                let family = self.out.families.entry(name.to_owned()).or_insert(Family {
                    kind: String::new(),
                    help: None,
                    unit: None,
                });
                if !family.kind.is_empty() {
                    return Err("a second TYPE".into());
                }
                if self.out.samples.last().is_some_and(|s| s.family == name) {
                    return Err("TYPE after the family's samples".into());
                }
                family.kind = kind.to_owned();
            }
            "HELP" => {
                let text = unescape(value.unwrap_or(""), if om { "\\\"n" } else { "\\n" }, om)?;
                self.enter(name)?;
                let family = self.out.families.entry(name.to_owned()).or_insert(Family {
                    kind: String::new(),
                    help: None,
                    unit: None,
                });
                if family.help.replace(text).is_some() {
                    return Err("a second HELP".into());
                }
            }
            "UNIT" if om => {
                let unit = value.ok_or("UNIT without a unit")?;
                if !unit
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                {
                    return Err(format!("bad unit {unit:?}"));
                }
                if !name.ends_with(&format!("_{unit}")) {
                    return Err(format!("family {name} is not suffixed by its unit {unit}"));
                }
                self.enter(name)?;
                let family = self.out.families.entry(name.to_owned()).or_insert(Family {
                    kind: String::new(),
                    help: None,
                    unit: None,
                });
                if family.unit.replace(unit.to_owned()).is_some() {
                    return Err("a second UNIT".into());
                }
            }
            other => return Err(format!("an unexpected comment {other:?}")),
        }
        Ok(())
    }

    fn sample(&mut self, line: &str) -> Result<(), String> {
        let name_end = line.find(['{', ' ']).ok_or("a sample without a value")?;
        let name = &line[..name_end];
        metric_name(name)?;
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if rest.starts_with('{') {
            let (parsed, after) = self.labels(&rest[1..])?;
            labels = parsed;
            rest = after;
        }
        let value = rest
            .strip_prefix(' ')
            .ok_or("no single space before the value")?;
        if value.contains(' ') {
            return Err("a timestamp, an exemplar or trailing text after the value".into());
        }
        let value = number(value)?;
        let family = self.family_of(name)?;
        let kind = self.out.families[&family].kind.clone();
        match kind.as_str() {
            "info" if value != 1.0 => return Err("an info sample that is not 1".into()),
            "counter" if value < 0.0 || value.is_nan() => {
                return Err("a negative or NaN counter".into());
            }
            "histogram" if name.ends_with("_bucket") && !labels.iter().any(|(k, _)| k == "le") => {
                return Err("a bucket without le".into());
            }
            _ => {}
        }
        if let Some(prev) = self.current.clone()
            && prev != family
        {
            return Err(format!("a sample of {family} inside family {prev}"));
        }
        let mut key = labels.clone();
        key.sort();
        if !self.series.insert((name.to_owned(), key)) {
            return Err("a duplicate series".into());
        }
        self.out.samples.push(Sample {
            family,
            name: name.to_owned(),
            labels,
            value,
        });
        Ok(())
    }

    /// The declared family a sample name belongs to.
    fn family_of(&self, name: &str) -> Result<String, String> {
        let om = self.format == Format::OpenMetrics;
        let suffixes: &[(&str, &[&str])] = if om {
            &[
                ("counter", &["_total", "_created"]),
                ("gauge", &[""]),
                ("info", &["_info"]),
                ("histogram", &["_bucket", "_count", "_sum", "_created"]),
                ("gaugehistogram", &["_bucket", "_gcount", "_gsum"]),
                ("stateset", &[""]),
                ("summary", &["", "_count", "_sum", "_created"]),
                ("unknown", &[""]),
            ]
        } else {
            &[
                ("counter", &[""]),
                ("gauge", &[""]),
                ("histogram", &["_bucket", "_count", "_sum"]),
                ("summary", &["", "_count", "_sum"]),
                ("untyped", &[""]),
            ]
        };
        for (kind, ends) in suffixes {
            for end in *ends {
                if let Some(base) = name.strip_suffix(end)
                    && self.out.families.get(base).is_some_and(|f| f.kind == *kind)
                {
                    return Ok(base.to_owned());
                }
            }
        }
        Err(format!("sample {name} belongs to no declared family"))
    }

    /// Reads `name="value",...}` after the opening brace; returns the labels and the rest.
    fn labels<'l>(&self, mut s: &'l str) -> Result<(Labels, &'l str), String> {
        let mut labels = Labels::new();
        if let Some(rest) = s.strip_prefix('}') {
            return Ok((labels, rest));
        }
        loop {
            let eq = s.find('=').ok_or("a label without =")?;
            let name = &s[..eq];
            label_name(name)?;
            if labels.iter().any(|(k, _)| k == name) {
                return Err(format!("label {name} twice"));
            }
            let rest = s[eq + 1..]
                .strip_prefix('"')
                .ok_or("a label value without quotes")?;
            // The closing quote is the first one not escaped by a backslash.
            let mut end = None;
            let mut escaped = false;
            for (i, c) in rest.char_indices() {
                match (escaped, c) {
                    (true, _) => escaped = false,
                    (false, '\\') => escaped = true,
                    (false, '"') => {
                        end = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let end = end.ok_or("an unterminated label value")?;
            let value = unescape(&rest[..end], "\\\"n", true)?;
            labels.push((name.to_owned(), value));
            s = &rest[end + 1..];
            if let Some(after) = s.strip_prefix('}') {
                return Ok((labels, after));
            }
            s = s
                .strip_prefix(',')
                .ok_or("labels not separated by a comma")?;
            if s.starts_with('}') {
                return Err("a trailing comma in the label set".into());
            }
        }
    }
}

/// Decodes the escapes in `allowed` (a backslash followed by one of those characters);
/// `quotes_escaped` says whether a raw `"` is an error (label values, OpenMetrics HELP).
fn unescape(s: &str, allowed: &str, quotes_escaped: bool) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e) if allowed.contains(e) => out.push(if e == 'n' { '\n' } else { e }),
                other => return Err(format!("invalid escape \\{other:?}")),
            },
            '"' if quotes_escaped => return Err("an unescaped quote".into()),
            c => out.push(c),
        }
    }
    Ok(out)
}

fn metric_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    ok.then_some(())
        .ok_or_else(|| format!("bad metric name {name:?}"))
}

fn label_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    ok.then_some(())
        .ok_or_else(|| format!("bad label name {name:?}"))
}

/// A sample value: a decimal float, `+Inf`, `-Inf` or `NaN`.
fn number(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => return Ok(f64::INFINITY),
        "-Inf" => return Ok(f64::NEG_INFINITY),
        "NaN" => return Ok(f64::NAN),
        _ => {}
    }
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (mantissa, exponent) = match digits.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e)),
        None => (digits, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all_digits = |t: &str| t.chars().all(|c| c.is_ascii_digit());
    let ok = !(int.is_empty() && frac.is_empty())
        && all_digits(int)
        && all_digits(frac)
        && exponent.is_none_or(|e| {
            let e = e.strip_prefix(['+', '-']).unwrap_or(e);
            !e.is_empty() && all_digits(e)
        });
    if !ok {
        return Err(format!("bad value {s:?}"));
    }
    s.parse().map_err(|_| format!("bad value {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP a_total Things.\n# TYPE a_total counter\na_total{k=\"v\"} 3\n\
                        # TYPE b gauge\nb{k=\"a\\\"b\\\\c\\nd\"} -1.5e3\nb{k=\"x\"} +Inf\n";
    const OM: &str = "# HELP a Things.\n# TYPE a counter\na_total{k=\"v\"} 3\n\
                      # TYPE i info\ni_info{k=\"v\"} 1\n# TYPE l_seconds histogram\n\
                      # UNIT l_seconds seconds\nl_seconds_bucket{le=\"+Inf\"} 1\nl_seconds_sum 0.5\n# EOF\n";

    #[test]
    fn metric_finds_a_series_by_its_exact_label_set_in_any_order() {
        let body = "# TYPE m gauge\nm{a=\"1\",b=\"2\"} 5\nm{a=\"1\"} 7\nm 9\n";
        assert_eq!(metric(body, "m", &[("b", "2"), ("a", "1")]), Some(5.0));
        assert_eq!(metric(body, "m", &[("a", "1")]), Some(7.0));
        assert_eq!(metric(body, "m", &[]), Some(9.0));
        assert_eq!(metric(body, "m", &[("a", "2")]), None);
        assert_eq!(
            metric(body, "m", &[("b", "2")]),
            None,
            "a subset is not the set"
        );
        assert_eq!(metric(body, "n", &[]), None);
        assert_eq!(metric(OM, "a_total", &[("k", "v")]), Some(3.0));
        assert!(series("m", &[("a", "1")], 7.0).in_body(body));
        assert!(!series("m", &[("a", "1")], 5.0).in_body(body));
    }

    #[test]
    #[should_panic(expected = "expected: 2")]
    fn assert_metric_shows_expected_and_actual() {
        assert_metric("# TYPE m gauge\nm{a=\"1\"} 1\n", "m", &[("a", "1")], 2.0);
    }

    #[test]
    fn accepts_well_formed_bodies_and_decodes_values() {
        let text = parse(Format::Text, TEXT).unwrap();
        assert_eq!(text.named("b")[0].label("k"), Some("a\"b\\c\nd"));
        assert_eq!(text.samples.len(), 3);
        let om = parse(Format::OpenMetrics, OM).unwrap();
        assert_eq!(om.named("i_info")[0].family, "i");
        assert_eq!(om.families["l_seconds"].unit.as_deref(), Some("seconds"));
    }

    #[test]
    fn rejects_every_kind_of_malformed_line() {
        let bad_text = [
            "# TYPE b gauge\nb{k=\"x\"} 1\nforged 1\n", // undeclared family
            "# TYPE b gauge\nb{k=\"x\"} 1\n\n",         // blank line
            "# TYPE b gauge\nb{k=\"x\"\"} 1\n",         // stray quote
            "# TYPE b gauge\nb{k=\"a\\x\"} 1\n",        // unknown escape
            "# TYPE b gauge\nb{k=\"a\rb\"} 1\n",        // raw CR
            "# TYPE b gauge\nb{k=\"x\",} 1\n",          // trailing comma
            "# TYPE b gauge\nb{k=\"x\",k=\"y\"} 1\n",   // label twice
            "# TYPE b gauge\nb{k=\"x\"} 1\nb{k=\"x\"} 2\n", // duplicate series
            "# TYPE b gauge\nb 1 123\n",                // timestamp
            "# TYPE b gauge\nb one\n",                  // bad value
            "# TYPE b gauge\nb 1",                      // no final LF
            "# TYPE b gauge\n# TYPE c gauge\nc 1\nb 2\n", // family twice
            "# a comment\n",                            // free comment
            "# TYPE b info\nb 1\n",                     // not a text type
        ];
        for body in bad_text {
            assert!(parse(Format::Text, body).is_err(), "accepted {body:?}");
        }
        let bad_om = [
            OM.trim_end_matches("# EOF\n"),                      // no EOF
            &format!("{OM}x 1\n"),                               // after EOF
            "# TYPE a counter\na 1\n# EOF\n",                    // counter without _total
            "# TYPE i info\ni_info{k=\"v\"} 2\n# EOF\n",         // info not 1
            "# HELP a say \"hi\"\n# TYPE a gauge\na 1\n# EOF\n", // raw quote in HELP
            "# TYPE a gauge\n# UNIT a seconds\na 1\n# EOF\n",    // unit not a suffix
        ];
        for body in bad_om {
            assert!(
                parse(Format::OpenMetrics, body).is_err(),
                "accepted {body:?}"
            );
        }
    }
}
