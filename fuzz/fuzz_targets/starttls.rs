//! Fuzzes the seven STARTTLS conversations (src/probe/starttls): the first byte picks the
//! protocol, the second the size of each read, the rest is everything the server sends.
//! Every input must end `Ok` or in a typed error with a short printable message, never a
//! panic. The harness is shared with the seeded in-tree run (tests/probe_starttls.rs,
//! `mutated_transcripts_never_panic`), whose `SEEDS` make a good starting corpus.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../tests/util/starttls_script.rs"]
mod starttls_script;

use starttls_script::{PROTOCOLS, check, converse};

fuzz_target!(|data: &[u8]| {
    let [protocol, chunk, script @ ..] = data else {
        return;
    };
    let protocol = PROTOCOLS[usize::from(*protocol) % PROTOCOLS.len()];
    let outcome = converse(protocol, script, usize::from(*chunk).max(1));
    check(protocol, script, &outcome);
});
