//! Rendering reports for people: a coloured table. (The JSON contract is `probe::json`.)
//!
//! Every cell goes through [`cell`]: subjects, issuers, error messages (which quote STARTTLS
//! replies and certificate names) and targets come from the peer or the command line, and a
//! raw ESC, CR or bidi override in them would reach the operator's terminal under any
//! `--color` mode (`never` strips ANSI sequences but keeps CR and LF, which forge rows).

use std::io::{self, Write};

use anstyle::{AnsiColor, Style};
use clap::ValueEnum;
use time::OffsetDateTime;

use super::ColorWhen;
use crate::cert::Status;
use crate::escape;
use crate::probe::ProbeReport;

/// The widest a table cell gets, in bytes; longer text is cut with a visible marker (JSON
/// output keeps it whole). A 60 KB subject would otherwise pad every row to 60 KB.
const MAX_CELL_BYTES: usize = 512;

/// A table cell: control and bidi characters rendered visibly (`\x1b`, `\r`, `\u{202e}`),
/// capped at [`MAX_CELL_BYTES`].
fn cell(text: &str) -> String {
    escape::visible_within(text, MAX_CELL_BYTES).into_owned()
}

/// How to print results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people, coloured on a terminal.
    Table,
    /// JSON: for `probe` an array with an object per target, in input order; for `verify`
    /// the one object.
    Json,
    /// One JSON object per line, printed as each probe finishes.
    Jsonl,
}

pub(super) fn color_choice(when: ColorWhen) -> anstream::ColorChoice {
    match when {
        ColorWhen::Auto => anstream::ColorChoice::Auto,
        ColorWhen::Always => anstream::ColorChoice::Always,
        ColorWhen::Never => anstream::ColorChoice::Never,
    }
}

fn status_style(s: Status) -> Style {
    let color = match s {
        Status::Ok => AnsiColor::Green,
        Status::Warning => AnsiColor::Yellow,
        Status::Critical => AnsiColor::Red,
        Status::Unknown => AnsiColor::Magenta,
    };
    Style::new().fg_color(Some(color.into())).bold()
}

/// Writes reports as an aligned table.
pub(super) fn write_table(
    out: &mut dyn Write,
    reports: &[ProbeReport],
    now: OffsetDateTime,
) -> io::Result<()> {
    let header = [
        "STATUS",
        "TARGET",
        "ADDRESS",
        "DAYS",
        "NOT AFTER",
        "ISSUER",
        "REASON",
    ];
    let rows: Vec<[String; 7]> = reports
        .iter()
        .map(|r| {
            let facts = r.outcome.as_ref().ok();
            let (days, not_after, issuer) = match facts {
                Some(f) => (
                    format!("{:.1}", f.leaf.days_left(now)),
                    f.leaf
                        .not_after
                        .format(time::macros::format_description!(
                            "[year]-[month]-[day] [hour]:[minute]"
                        ))
                        .unwrap_or_default(),
                    f.leaf.issuer.clone(),
                ),
                None => ("-".into(), "-".into(), "-".into()),
            };
            let reason = match (r.reason(), r.error()) {
                (Some(reason), Some(err)) => format!("{reason}: {err}"),
                (Some(reason), None) => reason.to_owned(),
                _ => String::new(),
            };
            [
                r.status().as_str().to_owned(),
                r.target.clone(),
                r.address
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "-".into()),
                days,
                not_after,
                issuer,
                reason,
            ]
            .map(|c| cell(&c))
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let bold = Style::new().bold();
    for (i, h) in header.iter().enumerate() {
        let sep = if i + 1 == header.len() { "\n" } else { "  " };
        let pad = if i + 1 == header.len() { 0 } else { widths[i] };
        write!(out, "{bold}{h:<pad$}{bold:#}{sep}")?;
    }
    for (row, r) in rows.iter().zip(reports) {
        let style = status_style(r.status());
        for (i, cell) in row.iter().enumerate() {
            let last = i + 1 == row.len();
            let pad = if last { 0 } else { widths[i] };
            let sep = if last { "\n" } else { "  " };
            if i == 0 {
                write!(out, "{style}{cell:<pad$}{style:#}{sep}")?;
            } else {
                write!(out, "{cell:<pad$}{sep}")?;
            }
        }
    }
    Ok(())
}

/// An error chain as one `tlsward: ...` line for stderr, `{:#}`-style (causes joined by `: `),
/// with every unsafe character rendered visibly: an error can quote a peer (a CA's problem
/// detail, a server's reply). Only a config error keeps its line breaks, one problem a line,
/// and each of its lines is rendered the same way.
pub fn render_error(e: &anyhow::Error) -> String {
    let causes: Vec<String> = e
        .chain()
        .map(
            |cause| match cause.downcast_ref::<crate::config::ConfigError>() {
                Some(config) => config
                    .to_string()
                    .lines()
                    .map(|line| escape::visible(line).into_owned())
                    .collect::<Vec<_>>()
                    .join("\n"),
                None => escape::Visible(cause).to_string(),
            },
        )
        .collect();
    format!("tlsward: {}", causes.join(": "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_lines_show_controls_visibly_and_keep_config_problems_on_their_lines() {
        let e = anyhow::anyhow!("the CA said \x1b]0;pwned\x07\r\ntlsward: forged")
            .context("ordering cert \u{202e}a");
        assert_eq!(
            render_error(&e),
            "tlsward: ordering cert \\u{202e}a: the CA said \\x1b]0;pwned\\x07\\r\\ntlsward: forged"
        );
        let config = crate::config::ConfigError {
            problems: vec!["a.toml:1: x: bad \x1b[2J".into(), "a.toml:2: y: bad".into()],
        };
        let e = anyhow::Error::new(config).context("cannot load a.toml");
        assert_eq!(
            render_error(&e),
            "tlsward: cannot load a.toml: 2 problems in the configuration:\n  a.toml:1: x: bad \\x1b[2J\n  a.toml:2: y: bad"
        );
    }
}
