//! Fuzzes the legacy TLS record parser (src/probe/legacy.rs): bytes from a hostile server,
//! fed in arbitrary chunks, must give a hello, an error or a request for more, never a panic
//! or unbounded memory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tlsward::probe::legacy::LegacyParser;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, bytes)) = data.split_first() else { return };
    let chunk = usize::from(chunk).max(1);
    let mut parser = LegacyParser::new();
    for piece in bytes.chunks(chunk) {
        match parser.feed(piece) {
            Ok(Some(hello)) => {
                assert!(!hello.chain.is_empty());
                break;
            }
            Ok(None) => {}
            Err(_) => break,
        }
    }
});
