//! Is this file a hook at all? The WebAssembly header of a component file (pure, over its
//! first bytes), read when the config loads, so an ELF binary or a core module named as a
//! `component` is refused with what it is; and the clear message for a component that does
//! not export the world's `deploy`.
//!
//! The binary format: a component starts with the magic `\0asm`, then a 16-bit version and
//! a 16-bit layer, little-endian; layer 0 is a core module (version 1), layer 1 a component
//! (version 0x0d in the current component-model binary format). See
//! <https://github.com/WebAssembly/component-model/blob/main/design/mvp/Binary.md>.

use std::io::Read;
use std::path::Path;

/// The bytes read to tell what a file is.
pub const HEADER_LEN: usize = 8;
/// The WebAssembly magic.
const MAGIC: &[u8; 4] = b"\0asm";
/// The component layer's version this wasmtime reads.
const COMPONENT_VERSION: u16 = 0x0d;
/// The layer of a component (a core module has layer 0).
const COMPONENT_LAYER: u16 = 1;

/// The name of the function the `tlsward:hook` world exports.
pub const DEPLOY_EXPORT: &str = "deploy";

/// Checks that `head` (a file's first [`HEADER_LEN`] bytes, or all of a shorter file) is the
/// header of a WebAssembly component; the error says what the file is instead, e.g. `not a
/// WebAssembly component (it starts with ELF: a native executable or library)`.
pub fn check_header(head: &[u8]) -> Result<(), String> {
    let not = |what: String| Err(format!("not a WebAssembly component ({what})"));
    if head.starts_with(b"\x7fELF") {
        return not("it starts with ELF: a native executable or library".into());
    }
    if head.starts_with(b"#!") {
        return not("it starts with #!: a script".into());
    }
    if head.starts_with(b"PK\x03\x04") {
        return not("it starts with PK: a zip archive".into());
    }
    if !head.starts_with(MAGIC) {
        if head.is_empty() {
            return not("the file is empty".into());
        }
        return not(format!(
            "it starts with {}, not the WebAssembly magic \\0asm",
            shown(head)
        ));
    }
    if head.len() < HEADER_LEN {
        return not("the file ends inside the WebAssembly header".into());
    }
    let version = u16::from_le_bytes([head[4], head[5]]);
    let layer = u16::from_le_bytes([head[6], head[7]]);
    match (layer, version) {
        (COMPONENT_LAYER, COMPONENT_VERSION) => Ok(()),
        (0, _) => not(format!(
            "it is a core WebAssembly module of version {version}; make it a component with \
             `wasm-tools component new`, or build it with scripts/build-hooks"
        )),
        (COMPONENT_LAYER, _) => not(format!(
            "it is a component in binary version {version:#x}; this tlsward reads version \
             {COMPONENT_VERSION:#x}"
        )),
        _ => not(format!("unknown WebAssembly layer {layer}")),
    }
}

/// Reads a file's first bytes and checks them with [`check_header`].
pub fn check_file(path: &Path) -> Result<(), String> {
    let mut head = Vec::with_capacity(HEADER_LEN);
    std::fs::File::open(path)
        .and_then(|f| f.take(HEADER_LEN as u64).read_to_end(&mut head))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    check_header(&head)
}

/// The first bytes of a file, printable ASCII as it is and the rest as `\xNN`.
fn shown(head: &[u8]) -> String {
    let mut s = String::from("\"");
    for &b in head {
        if b.is_ascii_graphic() || b == b' ' {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s.push('"');
    s
}

/// The message for a component whose exports lack `deploy`, listing what it exports.
pub(crate) fn missing_deploy(exports: &[String]) -> String {
    format!(
        "it does not export the function `{DEPLOY_EXPORT}` of the tlsward:hook@0.1.0 world \
         (it exports: {}); a JavaScript hook needs `export function {DEPLOY_EXPORT}(bundle, \
         settings)`, a Python hook a `{DEPLOY_EXPORT}` method on its WitWorld class",
        if exports.is_empty() {
            "nothing".to_owned()
        } else {
            exports.join(", ")
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_pass_and_everything_else_says_what_it_is() {
        assert_eq!(check_header(b"\0asm\x0d\x00\x01\x00"), Ok(()));
        for (head, says) in [
            (
                &b"\x7fELF\x02\x01\x01\x00"[..],
                "it starts with ELF: a native executable",
            ),
            (
                b"\0asm\x01\x00\x00\x00",
                "it is a core WebAssembly module of version 1; make it",
            ),
            (
                b"\0asm\x0c\x00\x01\x00",
                "a component in binary version 0xc",
            ),
            (b"\0asm\x0d\x00\x02\x00", "unknown WebAssembly layer 2"),
            (b"\0asm\x0d", "ends inside the WebAssembly header"),
            (b"", "the file is empty"),
            (b"#!/bin/sh", "a script"),
            (b"PK\x03\x04", "a zip archive"),
            (
                b"\x1b[31mhi",
                "it starts with \"\\x1b[31mhi\", not the WebAssembly magic",
            ),
        ] {
            let e = check_header(head).unwrap_err();
            assert!(e.starts_with("not a WebAssembly component ("), "{e}");
            assert!(e.contains(says), "{head:?}: {e}");
        }
    }

    #[test]
    fn a_missing_deploy_names_what_is_exported() {
        let m = missing_deploy(&["deplyo".into()]);
        assert!(m.contains("does not export the function `deploy`"), "{m}");
        assert!(m.contains("(it exports: deplyo)"), "{m}");
        assert!(missing_deploy(&[]).contains("(it exports: nothing)"));
    }
}
