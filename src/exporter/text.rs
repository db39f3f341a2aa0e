//! The Prometheus text format (0.0.4) from prometheus-client's OpenMetrics output, for
//! scrapers that do not ask for OpenMetrics.
//!
//! The two differ in a few places: OpenMetrics names a counter family without `_total` and an
//! info family without `_info`, has an `info` type, `# UNIT` lines and a closing `# EOF`.

/// Rewrites OpenMetrics text as Prometheus text format 0.0.4.
pub(crate) fn openmetrics_to_text(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    let mut help = None;
    for line in om.lines() {
        convert_line(line, &mut help, &mut out);
    }
    out
}

/// Converts one OpenMetrics line (without its line ending), appending the text-format
/// lines to `out`. A `# HELP` line is held in `help` until its `# TYPE` line names the
/// family as the text format does.
fn convert_line(line: &str, help: &mut Option<String>, out: &mut String) {
    if line == "# EOF" || line.starts_with("# UNIT ") {
        return;
    }
    if let Some(rest) = line.strip_prefix("# HELP ") {
        *help = Some(rest.to_owned());
        return;
    }
    if let Some(rest) = line.strip_prefix("# TYPE ") {
        let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
        let (name, kind) = match kind {
            "info" => (format!("{name}_info"), "gauge"),
            "counter" => (format!("{name}_total"), "counter"),
            "unknown" => (name.to_owned(), "untyped"),
            other => (name.to_owned(), other),
        };
        if let Some(h) = help.take() {
            let text = h.split_once(' ').map_or("", |(_, t)| t);
            out.push_str(&format!("# HELP {name} {text}\n"));
        }
        out.push_str(&format!("# TYPE {name} {kind}\n"));
        return;
    }
    out.push_str(line);
    out.push('\n');
}

/// [`openmetrics_to_text`] over OpenMetrics text that arrives in pieces: the same output,
/// a line at a time, holding only the line not yet ended.
#[derive(Debug, Default)]
pub(crate) struct TextConverter {
    help: Option<String>,
    partial: String,
}

// === impl TextConverter ===

impl TextConverter {
    /// Converts every line `piece` ends, appending to `out`; keeps the unfinished rest.
    pub(crate) fn push(&mut self, mut piece: &str, out: &mut String) {
        while let Some(end) = piece.find('\n') {
            let (line, rest) = (&piece[..end], &piece[end + 1..]);
            piece = rest;
            if self.partial.is_empty() {
                convert_line(strip_cr(line), &mut self.help, out);
            } else {
                self.partial.push_str(line);
                let whole = std::mem::take(&mut self.partial);
                convert_line(strip_cr(&whole), &mut self.help, out);
                // Keep the allocation for the next partial line.
                self.partial = whole;
                self.partial.clear();
            }
        }
        self.partial.push_str(piece);
    }

    /// Converts a last line that has no line ending (as `str::lines` yields it).
    pub(crate) fn finish(&mut self, out: &mut String) {
        if !self.partial.is_empty() {
            let whole = std::mem::take(&mut self.partial);
            convert_line(&whole, &mut self.help, out);
        }
    }
}

/// A line without the `\r` of a `\r\n` ending, as `str::lines` splits them.
fn strip_cr(line: &str) -> &str {
    line.strip_suffix('\r').unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_counters_and_infos_and_drops_openmetrics_only_lines() {
        let om = "# HELP a_probes Probes.\n# TYPE a_probes counter\na_probes_total{result=\"ok\"} 3\n\
                  # HELP a_build Build.\n# TYPE a_build info\na_build_info{version=\"1\"} 1\n\
                  # HELP a_lag Lag.\n# TYPE a_lag histogram\n# UNIT a_lag seconds\na_lag_sum 0.0\n# EOF\n";
        let text = openmetrics_to_text(om);
        assert!(
            text.contains("# TYPE a_probes_total counter\na_probes_total{"),
            "{text}"
        );
        assert!(text.contains("# HELP a_probes_total Probes.\n"));
        assert!(text.contains("# TYPE a_build_info gauge\na_build_info{version=\"1\"} 1\n"));
        assert!(!text.contains("# EOF") && !text.contains("# UNIT"));
    }

    #[test]
    fn converting_in_pieces_gives_the_same_text_wherever_the_pieces_are_cut() {
        let om = "# HELP a_probes Probes.\n# TYPE a_probes counter\na_probes_total{result=\"ok\"} 3\r\n\
                  # HELP a_build Build.\n# TYPE a_build info\na_build_info{version=\"1\\\"\\n\"} 1\n\
                  \n# UNIT a_lag seconds\na_lag_sum 0.0\n# EOF\nno ending";
        let whole = openmetrics_to_text(om);
        for size in 1..=om.len() {
            let mut conv = TextConverter::default();
            let mut out = String::new();
            let mut rest = om;
            while !rest.is_empty() {
                let mut cut = size.min(rest.len());
                while !rest.is_char_boundary(cut) {
                    cut += 1;
                }
                conv.push(&rest[..cut], &mut out);
                rest = &rest[cut..];
            }
            conv.finish(&mut out);
            assert_eq!(out, whole, "pieces of {size}");
        }
    }
}
