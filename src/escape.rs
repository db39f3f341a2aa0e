//! Text from outside made safe to show: on a terminal, in a log line, in a metric label.
//!
//! A certificate's subject, a STARTTLS greeting or a CA's error message is chosen by whoever
//! runs the other end. Printed as is, an ESC sequence sets the operator's window title or
//! clears the screen, a CR or LF forges a table row or a log line, and a bidi override makes
//! a name read backwards. [`visible`] renders every such character as an escape a person can
//! read (`\x1b`, `\r`, `\u{202e}`), and [`visible_within`] also caps the length, on a char
//! boundary and with a visible marker.
//!
//! [`LabelValue`] is the one type metric label values pass through: its encoding renders
//! unsafe characters visibly (a line feed becomes the two characters `\n`) and escapes `\`
//! and `"`, as both exposition formats require (Prometheus text 0.0.4 and OpenMetrics 1.0
//! agree on the escapes `\\`, `\"` and `\n`), so no value, from the peer or from the config,
//! can end a label, a line or a scrape.
//!
//! Knows nothing of probes, certificates or HTTP.

use std::borrow::Cow;
use std::fmt::Write;

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

/// The most bytes a label value taken from a peer (subject, issuer, names, serial) keeps,
/// marker included. A 60 KB subject would otherwise become a 60 KB label on every scrape.
pub const MAX_PEER_LABEL_BYTES: usize = 1024;

/// Whether `c` must not reach a terminal, a log line or an exposition line as itself: the
/// C0 and C1 controls and DEL (Unicode category Cc), the line and paragraph separators, and
/// the bidirectional formatting characters (embeddings, overrides, isolates and marks) that
/// make text display in another order than it is stored.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// Appends `c` as itself, or its visible form when it is [unsafe](is_unsafe).
fn push_visible(out: &mut String, c: char) {
    match c {
        '\t' => out.push_str("\\t"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        c if !is_unsafe(c) => out.push(c),
        c if c.is_ascii() => {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        }
        c => {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        }
    }
}

/// The length in bytes of `c` once rendered by [`push_visible`].
fn visible_len(c: char) -> usize {
    match c {
        '\t' | '\n' | '\r' => 2,
        c if !is_unsafe(c) => c.len_utf8(),
        c if c.is_ascii() => 4,
        // `\u{` + 2 to 4 hex digits (the unsafe range ends at U+2069) + `}`
        c => 4 + format!("{:x}", u32::from(c)).len(),
    }
}

/// `s` with every [unsafe](is_unsafe) character rendered visibly: `\t`, `\n`, `\r`, other
/// ASCII controls as `\x1b`, the rest as `\u{9b}` or `\u{202e}`. Everything else, backslashes
/// included, is kept as is: the result is for people to read, not to be parsed back.
pub fn visible(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        push_visible(&mut out, c);
    }
    Cow::Owned(out)
}

/// [`visible`], then capped to `max` bytes: when the rendered text is longer, it is cut on a
/// character (and escape) boundary and ends with a marker giving the original length, such as
/// `…[truncated, 60003 bytes]`, the whole within `max` (a `max` shorter than the marker
/// yields the marker alone).
pub fn visible_within(s: &str, max: usize) -> Cow<'_, str> {
    let rendered: usize = s.chars().map(visible_len).sum();
    if rendered <= max {
        return visible(s);
    }
    let marker = format!("…[truncated, {} bytes]", s.len());
    let budget = max.saturating_sub(marker.len());
    let mut out = String::with_capacity(budget + marker.len());
    for c in s.chars() {
        if out.len() + visible_len(c) > budget {
            break;
        }
        push_visible(&mut out, c);
    }
    out.push_str(&marker);
    Cow::Owned(out)
}

/// Displays `T` with every [unsafe](is_unsafe) character rendered visibly, as [`visible`]
/// does, without building the text first: for a log field or an error line that may quote a
/// peer (`error = %Visible(&e)`).
#[derive(Debug, Clone, Copy)]
pub struct Visible<T>(pub T);

impl<T: std::fmt::Display> std::fmt::Display for Visible<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        /// Renders what it is given, then passes it on.
        struct Rendering<'a, 'b>(&'a mut std::fmt::Formatter<'b>);
        impl Write for Rendering<'_, '_> {
            fn write_str(&mut self, s: &str) -> std::fmt::Result {
                self.0.write_str(&visible(s))
            }
        }
        write!(Rendering(f), "{}", self.0)
    }
}

/// A metric label value. Every label value tlsward exposes that is not a `&'static str` from
/// a closed set (a reason, a result, a check name) is one of these, so the escaping below is
/// the one place they all pass through.
///
/// Encoding writes the value with unsafe characters rendered [visibly](visible), line feeds
/// included, and `\` and `"` escaped as `\\` and `\"` (of the three escapes both exposition
/// formats define for label values, `\n` is then never needed): a value can neither close its
/// quotes nor start a new line, and what a scraper reads back has no control character.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LabelValue<'a>(Cow<'a, str>);

// === impl LabelValue ===

impl<'a> LabelValue<'a> {
    /// A value from the config or from tlsward itself (a target's name, a configured label),
    /// kept whole.
    pub fn new(value: impl Into<Cow<'a, str>>) -> Self {
        Self(value.into())
    }

    /// A value the peer chose (a certificate's subject, issuer, names or serial), capped to
    /// [`MAX_PEER_LABEL_BYTES`] with a visible marker.
    pub fn peer(value: &str) -> LabelValue<'static> {
        LabelValue(Cow::Owned(
            visible_within(value, MAX_PEER_LABEL_BYTES).into_owned(),
        ))
    }

    /// The value before escaping.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'a> From<&'a str> for LabelValue<'a> {
    fn from(value: &'a str) -> Self {
        Self::new(value)
    }
}

impl From<String> for LabelValue<'static> {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

impl EncodeLabelValue for LabelValue<'_> {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut start = 0;
        let text = self.0.as_ref();
        for (i, c) in text.char_indices() {
            if c != '\\' && c != '"' && !is_unsafe(c) {
                continue;
            }
            encoder.write_str(&text[start..i])?;
            start = i + c.len_utf8();
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                c => {
                    // The visible form starts with a backslash, itself escaped, so the value
                    // a scraper reads is the visible form (`\r`, `\x1b`), never the control.
                    let mut one = String::new();
                    push_visible(&mut one, c);
                    encoder.write_str("\\")?;
                    encoder.write_str(&one)?;
                }
            }
        }
        encoder.write_str(&text[start..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_text_is_borrowed_and_unchanged() {
        let s = "CN=ünïcödé.test, O=Ex\\,ample \"Q\" 日本";
        assert!(matches!(visible(s), Cow::Borrowed(_)));
        assert_eq!(visible(s), s);
    }

    #[test]
    fn controls_and_bidi_are_rendered_visibly() {
        let cases = [
            ("a\x1b]0;pwned\x07b", "a\\x1b]0;pwned\\x07b"),
            ("\x1b[2J", "\\x1b[2J"),
            ("row\r\nforged\tcell", "row\\r\\nforged\\tcell"),
            ("\0\x7f", "\\x00\\x7f"),
            ("c1 \u{9b}31m \u{85}", "c1 \\u{9b}31m \\u{85}"),
            ("evil\u{202e}txt.exe", "evil\\u{202e}txt.exe"),
            (
                "\u{2066}\u{2069}\u{200f}\u{2028}",
                "\\u{2066}\\u{2069}\\u{200f}\\u{2028}",
            ),
        ];
        for (raw, shown) in cases {
            assert_eq!(visible(raw), shown, "{raw:?}");
            assert!(!visible(raw).chars().any(is_unsafe));
            let lens: usize = raw.chars().map(visible_len).sum();
            assert_eq!(lens, shown.len(), "{raw:?}");
        }
    }

    #[test]
    fn visible_display_renders_what_it_wraps() {
        let e = std::io::Error::other("server said \x1b[2J\r\nerror: forged");
        assert_eq!(
            Visible(&e).to_string(),
            "server said \\x1b[2J\\r\\nerror: forged"
        );
        assert_eq!(format!("{}", Visible("plain")), "plain");
    }

    #[test]
    fn long_text_is_capped_on_a_boundary_with_a_marker() {
        let short = "x".repeat(100);
        assert_eq!(visible_within(&short, 100), short);

        let long = "é".repeat(30_000); // 60,000 bytes
        let capped = visible_within(&long, 256);
        assert!(capped.len() <= 256, "{}", capped.len());
        assert!(capped.ends_with("…[truncated, 60000 bytes]"), "{capped}");
        assert!(capped.starts_with("éé"));

        // An escape is never cut in half: nothing of `\x1b` is kept unless all of it fits.
        let escapes = "\x1b".repeat(100);
        let capped = visible_within(&escapes, 64);
        let body = capped.strip_suffix("…[truncated, 100 bytes]").unwrap();
        assert_eq!(body.len() % 4, 0, "{capped}");
        assert!(body.chars().all(|c| "\\x1b".contains(c)));

        assert_eq!(visible_within(&long, 3), "…[truncated, 60000 bytes]");
    }

    #[test]
    fn peer_values_are_capped() {
        let v = LabelValue::peer(&"a".repeat(60_000));
        assert!(v.as_str().len() <= MAX_PEER_LABEL_BYTES);
        assert!(v.as_str().ends_with("…[truncated, 60000 bytes]"));
        assert_eq!(LabelValue::new("a".repeat(5000)).as_str().len(), 5000);
    }

    /// Encodes one label through prometheus-client, as a scrape does.
    fn encoded(value: &str) -> String {
        use prometheus_client::encoding::DescriptorEncoder;
        use prometheus_client::metrics::MetricType;

        #[derive(Debug)]
        struct One(String);
        impl prometheus_client::collector::Collector for One {
            fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
                let fam = enc.encode_descriptor("x", "X.", None, MetricType::Info)?;
                let mut fam = fam;
                fam.encode_info(&[("v", LabelValue::from(self.0.as_str()))])
            }
        }
        let mut reg = prometheus_client::registry::Registry::default();
        reg.register_collector(Box::new(One(value.to_owned())));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        let line = out.lines().find(|l| l.starts_with("x_info")).unwrap();
        line.strip_prefix("x_info{v=\"")
            .and_then(|l| l.strip_suffix("\"} 1"))
            .unwrap_or_else(|| panic!("{out}"))
            .to_owned()
    }

    #[test]
    fn encoding_escapes_quotes_backslashes_and_every_line_break() {
        assert_eq!(encoded("plain"), "plain");
        assert_eq!(encoded(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(
            encoded("x\"} 1\nforged{a=\"b\"} 1\n"),
            "x\\\"} 1\\\\nforged{a=\\\"b\\\"} 1\\\\n"
        );
        assert_eq!(encoded("cr\rff\x0cesc\x1b"), "cr\\\\rff\\\\x0cesc\\\\x1b");
        assert_eq!(encoded("nel\u{85}ls\u{2028}"), "nel\\\\u{85}ls\\\\u{2028}");
        // Whatever the input, the encoded value has no control character and no quote
        // that is not preceded by an escaping backslash.
        let nasty: String = (0u32..0x2100)
            .filter_map(char::from_u32)
            .chain("\"\\\"\\\\\"".chars())
            .collect();
        let out = encoded(&nasty);
        assert!(!out.chars().any(is_unsafe));
        let mut chars = out.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => assert!(matches!(chars.next(), Some('\\' | '"' | 'n'))),
                '"' => panic!("unescaped quote in {out:?}"),
                _ => {}
            }
        }
    }
}
