//! Rendering reports for people: a coloured table. (The JSON contract is `probe::json`.)

use std::io::{self, Write};

use anstyle::{AnsiColor, Style};
use clap::ValueEnum;
use time::OffsetDateTime;

use super::ColorWhen;
use crate::cert::Status;
use crate::probe::ProbeReport;

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
