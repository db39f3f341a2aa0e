//! `tlsward completions SHELL` and `tlsward man`: shell completions and man pages generated
//! from the clap definitions, so they cannot drift from the real arguments.

use std::io::{self, Write};
use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;
use clap_mangen::Man;

use super::Cli;
use crate::version::{BUILD_DATE, VERSION};

/// Writes the completion script for `shell` to stdout.
pub(super) fn completions(shell: clap_complete::Shell) -> anyhow::Result<u8> {
    let mut cmd = Cli::command();
    // Into memory first: clap_complete panics when its writer fails (a closed pipe), while
    // a failed write to stdout here is an error that `main` treats as a quiet exit.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "tlsward", &mut script);
    let mut out = io::stdout().lock();
    out.write_all(&script)?;
    out.flush()?;
    Ok(0)
}

/// Writes tlsward(1) to stdout, or with `dir` every page (tlsward.1 and one per subcommand,
/// such as tlsward-cert-issue.1) into that directory.
pub(super) fn man(dir: Option<&Path>) -> anyhow::Result<u8> {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let Some(dir) = dir else {
        let mut out = io::stdout().lock();
        top_page(&cmd, &mut out)?;
        out.flush()?;
        return Ok(0);
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = 0;
    let mut top = Vec::new();
    top_page(&cmd, &mut top)?;
    write_page(dir, "tlsward.1", &top)?;
    written += 1;
    let mut stack: Vec<clap::Command> = cmd.get_subcommands().cloned().collect();
    while let Some(sub) = stack.pop() {
        stack.extend(sub.get_subcommands().cloned());
        let page = page(sub);
        let mut text = Vec::new();
        page.render(&mut text)?;
        write_page(dir, &page.get_filename(), &text)?;
        written += 1;
    }
    eprintln!("{written} man pages written to {}", dir.display());
    Ok(0)
}

fn write_page(dir: &Path, name: &str, text: &[u8]) -> anyhow::Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

/// A page with tlsward's version and build date in its title line.
fn page(cmd: clap::Command) -> Man {
    let man = Man::new(cmd)
        .source(format!("tlsward {VERSION}"))
        .manual("tlsward manual");
    if BUILD_DATE == "unknown" {
        man
    } else {
        man.date(BUILD_DATE)
    }
}

/// tlsward(1): what clap_mangen renders, plus the sections clap knows nothing about.
fn top_page(cmd: &clap::Command, w: &mut dyn Write) -> io::Result<()> {
    let man = page(cmd.clone());
    let mut parts = Vec::new();
    man.render_title(&mut parts)?;
    man.render_name_section(&mut parts)?;
    man.render_synopsis_section(&mut parts)?;
    man.render_description_section(&mut parts)?;
    man.render_options_section(&mut parts)?;
    man.render_subcommands_section(&mut parts)?;
    parts.extend_from_slice(EXTRA_SECTIONS.as_bytes());
    man.render_version_section(&mut parts)?;
    // Each part opens with the same two-line preamble (defining the apostrophe string);
    // the page needs it once.
    let text = String::from_utf8_lossy(&parts);
    let mut seen = Vec::new();
    for line in text.lines() {
        if line.starts_with(".ie \\n(.g .ds Aq") || line.starts_with(".el .ds Aq") {
            if seen.contains(&line) {
                continue;
            }
            seen.push(line);
        }
        writeln!(w, "{line}")?;
    }
    Ok(())
}

/// Hand-written roff: no line starts with a dot or quote except requests, and every
/// hyphen of an option is `\-`.
const EXTRA_SECTIONS: &str = r#".SH "EXIT STATUS"
\fBprobe\fR and \fBverify\fR follow the monitoring\-plugin convention, so they drop into
Nagios, Icinga or a shell \fBif\fR:
.TP
\fB0\fR
every check is ok
.TP
\fB1\fR
a warning (for example a certificate near its expiry)
.TP
\fB2\fR
a critical problem (expired, wrong name, broken chain, no handshake)
.TP
\fB3\fR
unknown: a usage, configuration or internal error
.PP
\fBcheck\-config\fR exits 0 for a valid file and 1 for an invalid one, after listing every
problem. \fBdeploy run\-now\fR exits 0 when the deployment was verified, 1 when it failed or
was rolled back, 3 for a usage or configuration error. A closed standard output (a pipe to
\fBhead\fR) is a quiet 0.
.SH ENVIRONMENT
.TP
\fBTLSWARD_LOG\fR
a log filter such as \fBinfo\fR or \fBtlsward=debug\fR; overrides \fB\-v\fR
.TP
\fBNO_COLOR\fR
when set, no colour in the output, as with \fB\-\-color never\fR
.SH FILES
.TP
\fI/etc/tlsward/tlsward.toml\fR
the configuration of the packaged \fBtlsward.service\fR (the commands default to
\fItlsward.toml\fR in the current directory; pass \fB\-\-config\fR)
.TP
\fI/var/lib/tlsward\fR
the packaged state directory: \fItlsward.db\fR (the store) and \fIstore.key\fR (the age
identity that seals every private key and the ACME account: back it up, separately from the
database; without it nothing stored can be decrypted)
.TP
\fI/usr/share/tlsward/hooks\fR
the stock deploy hooks of the Debian package (WebAssembly components)
.SH "SEE ALSO"
\fBtlsward\-probe\fR(1), \fBtlsward\-serve\fR(1), \fBtlsward\-check\-config\fR(1),
\fBsystemd.exec\fR(5) for the hardening of \fBtlsward.service\fR
"#;
