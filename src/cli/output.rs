//! Rendering reports for people: a coloured table fitted to the terminal, and plain tables
//! sized to their content. (The JSON contract is `probe::json`.)
//!
//! Every cell goes through [`cell`]: subjects, issuers, error messages (which quote STARTTLS
//! replies and certificate names) and targets come from the peer or the command line, and a
//! raw ESC, CR or bidi override in them would reach the operator's terminal under any
//! `--color` mode (`never` strips ANSI sequences but keeps CR and LF, which forge rows).

use std::borrow::Cow;
use std::io::{self, IsTerminal, Write};

use anstyle::{AnsiColor, Style};
use clap::ValueEnum;
use time::OffsetDateTime;
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

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

/// Columns are this many spaces apart.
const GAP: usize = 2;
/// A column narrowed to fit the terminal keeps at least this many display columns (or its
/// header's width, when wider).
const MIN_NARROWED: usize = 6;

/// The display width of `s` in a terminal (wide characters count two).
fn width(s: &str) -> usize {
    UnicodeWidthStr::width(s)
}

/// `s` cut to at most `max` display columns, ending with `…` when it was cut.
fn ellipsize(s: &str, max: usize) -> Cow<'_, str> {
    if width(s) <= max {
        return Cow::Borrowed(s);
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let w = UnicodeWidthChar::width(c).unwrap_or(0);
        if used + w + 1 > max {
            break;
        }
        out.push(c);
        used += w;
    }
    if max > 0 {
        out.push('…');
    }
    Cow::Owned(out)
}

/// How wide tables may be: `$COLUMNS` when set (as shells export it, and for scripts), else
/// the terminal's width when stdout is one; `None` (as wide as the content) otherwise, so a
/// table piped to a file or `grep` keeps every character.
pub(super) fn table_width() -> Option<usize> {
    if let Some(n) = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
    {
        return Some(n);
    }
    if !io::stdout().is_terminal() {
        return None;
    }
    terminal_size::terminal_size_of(io::stdout()).map(|(w, _)| usize::from(w.0))
}

/// One column of a table that fits a width.
#[derive(Debug, Clone, Copy)]
struct Column {
    header: &'static str,
    /// From this stage of [`layout`] on, the column may be narrowed to `narrowest` display
    /// columns (or its header's width), its cells cut with `…`.
    narrow_from: Option<u8>,
    /// See `narrow_from`.
    narrowest: usize,
    /// From this stage on, the column is left out.
    drop_from: Option<u8>,
}

/// The width of each column (`None`: left out) so that the rows fit in `max` display columns.
///
/// Columns start at their content's width. When the line is too long, layout goes through
/// stages (0, 1, ...), each allowing more columns to be narrowed or dropped (see [`Column`]),
/// and a last one where every narrowable column may shrink to [`MIN_NARROWED`]; it stops at
/// the first whose minimum widths fit. There the narrowable columns share the space left,
/// the widest giving up most: each keeps the smaller of its width and an equal share, and
/// what a narrower one does not need passes to the wider ones. When no stage fits, the last
/// stage's minimums are used and the terminal wraps.
fn layout(columns: &[Column], natural: &[usize], max: Option<usize>) -> Vec<Option<usize>> {
    let all = || natural.iter().map(|w| Some(*w)).collect();
    let Some(max) = max else {
        return all();
    };
    let lines = |visible: &[usize]| GAP * visible.len().saturating_sub(1);
    let every: Vec<usize> = (0..columns.len()).collect();
    if natural.iter().sum::<usize>() + lines(&every) <= max {
        return all();
    }
    let last = columns
        .iter()
        .flat_map(|c| [c.narrow_from, c.drop_from])
        .flatten()
        .max()
        .unwrap_or(0)
        + 1;
    let mut widths = Vec::new();
    for stage in 0..=last {
        let shown = |i: usize| columns[i].drop_from.is_none_or(|d| d > stage);
        let min = |i: usize| {
            let c = &columns[i];
            let narrowest = if stage == last {
                MIN_NARROWED
            } else {
                c.narrowest
            };
            match c.narrow_from {
                Some(n) if n <= stage => natural[i].min(narrowest.max(width(c.header))),
                _ => natural[i],
            }
        };
        let visible: Vec<usize> = every.iter().copied().filter(|i| shown(*i)).collect();
        let least = visible.iter().map(|i| min(*i)).sum::<usize>() + lines(&visible);
        widths = (0..columns.len())
            .map(|i| shown(i).then(|| min(i)))
            .collect();
        if least > max {
            continue;
        }
        // Share out what is left above the minimums, the smallest wishes first.
        let mut extra = max - least;
        let mut wishes: Vec<usize> = visible
            .iter()
            .copied()
            .filter(|i| natural[*i] > min(*i))
            .collect();
        wishes.sort_by_key(|i| natural[*i] - min(*i));
        let mut left = wishes.len();
        for i in wishes {
            let give = (natural[i] - min(i)).min(extra / left);
            widths[i] = Some(min(i) + give);
            extra -= give;
            left -= 1;
        }
        break;
    }
    widths
}

/// Writes `header` (in `header_style`) and `rows` (cells already through [`cell`]) in
/// columns of `widths` (`None`: left out), each row's first cell in its style from `styles`.
fn write_laid_out(
    out: &mut dyn Write,
    (header, header_style): (&[&str], Style),
    rows: &[Vec<String>],
    widths: &[Option<usize>],
    styles: Option<&[Style]>,
) -> io::Result<()> {
    let last = widths.iter().rposition(Option::is_some).unwrap_or(0);
    let line =
        |out: &mut dyn Write, cells: &[&str], style: Style, header: bool| -> io::Result<()> {
            for (i, (text, w)) in cells.iter().zip(widths).enumerate() {
                let Some(w) = *w else { continue };
                let text = ellipsize(text, w);
                let pad = if i == last { 0 } else { w - width(&text) + GAP };
                let style = if i == 0 || header {
                    style
                } else {
                    Style::new()
                };
                write!(out, "{style}{text}{style:#}{:pad$}", "")?;
                if i == last {
                    break;
                }
            }
            writeln!(out)
        };
    line(out, header, header_style, true)?;
    for (n, row) in rows.iter().enumerate() {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        let style = styles.and_then(|s| s.get(n)).copied().unwrap_or_default();
        line(out, &cells, style, false)?;
    }
    Ok(())
}

/// The display width of each column: its widest cell or its header.
fn natural_widths(header: &[&str], rows: &[Vec<String>]) -> Vec<usize> {
    let mut widths: Vec<usize> = header.iter().map(|h| width(h)).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(width(c));
        }
    }
    widths
}

/// Writes a plain table (`deploy list`, `cert list`): columns sized to their content, every
/// cell through [`cell`], no colour (these commands write to stdout without the ANSI adapter).
pub(super) fn write_columns(
    out: &mut dyn Write,
    header: &[&str],
    rows: &[Vec<String>],
) -> io::Result<()> {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| cell(c)).collect())
        .collect();
    let widths: Vec<Option<usize>> = natural_widths(header, &rows)
        .into_iter()
        .map(Some)
        .collect();
    write_laid_out(out, (header, Style::new()), &rows, &widths, None)
}

/// The probe table's columns. On a narrow terminal the issuer and the reason are cut first
/// (the reason keeps room for its label); then NOT AFTER goes (DAYS says as much), then
/// ISSUER; then the target and the address are cut, then ADDRESS goes; at last every cut
/// column may shrink to a few characters.
const PROBE_COLUMNS: [Column; 7] = [
    Column {
        header: "STATUS",
        narrow_from: None,
        narrowest: 0,
        drop_from: None,
    },
    Column {
        header: "TARGET",
        narrow_from: Some(3),
        narrowest: 12,
        drop_from: None,
    },
    Column {
        header: "ADDRESS",
        narrow_from: Some(3),
        narrowest: 10,
        drop_from: Some(4),
    },
    Column {
        header: "DAYS",
        narrow_from: None,
        narrowest: 0,
        drop_from: None,
    },
    Column {
        header: "NOT AFTER",
        narrow_from: None,
        narrowest: 0,
        drop_from: Some(1),
    },
    Column {
        header: "ISSUER",
        narrow_from: Some(0),
        narrowest: 12,
        drop_from: Some(2),
    },
    Column {
        header: "REASON",
        narrow_from: Some(0),
        narrowest: 16,
        drop_from: None,
    },
];

/// Writes reports as an aligned table at most `max_width` display columns wide (cells cut
/// with `…`, see [`layout`]).
pub(super) fn write_table(
    out: &mut dyn Write,
    reports: &[ProbeReport],
    now: OffsetDateTime,
    max_width: Option<usize>,
) -> io::Result<()> {
    let header = PROBE_COLUMNS.map(|c| c.header);
    let rows: Vec<Vec<String>> = reports
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
            .to_vec()
        })
        .collect();
    let widths = layout(&PROBE_COLUMNS, &natural_widths(&header, &rows), max_width);
    let styles: Vec<Style> = reports.iter().map(|r| status_style(r.status())).collect();
    write_laid_out(
        out,
        (&header, Style::new().bold()),
        &rows,
        &widths,
        Some(&styles),
    )
}

/// The line `probe` prints after its table: `12 ok, 2 warning, 1 critical` (and
/// `, 1 unknown` when there is one), one count per row.
pub(super) fn summary(reports: &[ProbeReport]) -> String {
    let count = |s: Status| reports.iter().filter(|r| r.status() == s).count();
    let mut line = format!(
        "{} ok, {} warning, {} critical",
        count(Status::Ok),
        count(Status::Warning),
        count(Status::Critical)
    );
    let unknown = count(Status::Unknown);
    if unknown > 0 {
        line.push_str(&format!(", {unknown} unknown"));
    }
    line
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
    fn ellipsize_cuts_on_display_width() {
        assert_eq!(ellipsize("issuer", 6), "issuer");
        assert_eq!(ellipsize("issuer", 5), "issu…");
        // Wide characters count two columns and are never split.
        assert_eq!(ellipsize("認証局の名前", 7), "認証局…");
        assert_eq!(width(&ellipsize("認証局の名前", 6)), 5);
        assert_eq!(ellipsize("abc", 1), "…");
        assert_eq!(ellipsize("abc", 0), "");
    }

    const COLS: [Column; 4] = [
        Column {
            header: "STATUS",
            narrow_from: None,
            narrowest: 6,
            drop_from: None,
        },
        Column {
            header: "TARGET",
            narrow_from: Some(1),
            narrowest: 6,
            drop_from: None,
        },
        Column {
            header: "NOT AFTER",
            narrow_from: None,
            narrowest: 6,
            drop_from: Some(1),
        },
        Column {
            header: "ISSUER",
            narrow_from: Some(0),
            narrowest: 6,
            drop_from: None,
        },
    ];

    #[test]
    fn layout_narrows_then_drops_stage_by_stage() {
        // 8 + 20 + 16 + 40 + 3 gaps of 2 = 90.
        let natural = [8, 20, 16, 40];
        assert_eq!(layout(&COLS, &natural, None), natural.map(Some));
        assert_eq!(layout(&COLS, &natural, Some(90)), natural.map(Some));
        // Stage 0: only the issuer gives up space.
        assert_eq!(
            layout(&COLS, &natural, Some(80)),
            [Some(8), Some(20), Some(16), Some(30)]
        );
        assert_eq!(
            layout(&COLS, &natural, Some(56)),
            [Some(8), Some(20), Some(16), Some(6)]
        );
        // Stage 1: NOT AFTER goes and the target may be cut too; the space is shared out,
        // the target's smaller wish first.
        assert_eq!(
            layout(&COLS, &natural, Some(55)),
            [Some(8), Some(20), None, Some(23)]
        );
        assert_eq!(
            layout(&COLS, &natural, Some(40)),
            [Some(8), Some(14), None, Some(14)]
        );
        // No stage fits: the last one's minimums, and the terminal wraps.
        assert_eq!(
            layout(&COLS, &natural, Some(10)),
            [Some(8), Some(6), None, Some(6)]
        );
        // A column that keeps more room shrinks further only at the last stage.
        let mut roomy = COLS;
        roomy[3].narrowest = 20;
        assert_eq!(
            layout(&roomy, &natural, Some(40)),
            [Some(8), Some(7), None, Some(21)]
        );
        assert_eq!(
            layout(&roomy, &natural, Some(30)),
            [Some(8), Some(9), None, Some(9)]
        );
        // Narrowing the issuer is enough: everything else keeps its width.
        assert_eq!(
            layout(&COLS, &[8, 7, 16, 60], Some(60)),
            [Some(8), Some(7), Some(16), Some(23)]
        );
    }

    #[test]
    fn plain_tables_are_as_wide_as_their_content() {
        let mut out = Vec::new();
        let rows = vec![
            vec!["1".into(), "web".into(), "rolled_back".into()],
            vec!["22".into(), "mail\x1b[2J".into(), "waiting".into()],
        ];
        write_columns(&mut out, &["ID", "ENDPOINT", "STATE"], &rows).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "ID  ENDPOINT     STATE\n\
             1   web          rolled_back\n\
             22  mail\\x1b[2J  waiting\n"
        );
    }

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
