//! What this binary is: its version, the git commit it was built from and the build date,
//! recorded by `build.rs`.
//!
//! A leaf: `cli` prints it (`--version` and the man pages), `daemon` exports it as
//! `tlsward_build_info`. Knows nothing else.

/// The crate's version, e.g. `0.1.0`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The short git commit the binary was built from, or `unknown` outside a git checkout
/// (a source tarball, a packaged crate).
pub const REVISION: &str = env!("TLSWARD_REVISION");

/// The build date as `YYYY-MM-DD` in UTC: `SOURCE_DATE_EPOCH` when set, else the commit's
/// date, else `unknown`. Never the wall clock, so builds of one commit are reproducible.
pub const BUILD_DATE: &str = env!("TLSWARD_BUILD_DATE");

/// What `tlsward --version` prints after the name: `0.1.0 (abc1234 2026-12-01)`.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("TLSWARD_REVISION"),
    " ",
    env!("TLSWARD_BUILD_DATE"),
    ")"
);
