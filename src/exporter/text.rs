//! The Prometheus text format (0.0.4) from prometheus-client's OpenMetrics output, for
//! scrapers that do not ask for OpenMetrics.
//!
//! The two differ in a few places: OpenMetrics names a counter family without `_total` and an
//! info family without `_info`, has an `info` type, `# UNIT` lines and a closing `# EOF`.

/// Rewrites OpenMetrics text as Prometheus text format 0.0.4.
pub(crate) fn openmetrics_to_text(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    let mut help: Option<&str> = None;
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest);
            continue;
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
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
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
}
