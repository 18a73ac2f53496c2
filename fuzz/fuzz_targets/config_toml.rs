//! Config text, as the daemon loads its file and `PUT /admin/v1/config` checks a pushed one,
//! plus the room and model edits on it and the support bundle's redaction of it
//! (`edge_scribe::admin::fuzzing::config_toml`). Seeds: `fuzz/corpus/config_toml/`.
#![no_main]

use std::path::Path;

use edge_scribe::admin::fuzzing;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The daemon reads the file as UTF-8 and refuses anything else before parsing; replacing
    // bad bytes keeps the rest of a mutated input useful.
    let text = String::from_utf8_lossy(data);
    if let Err(broken) = fuzzing::config_toml(&text, Path::new("/tmp")) {
        panic!("{broken}");
    }
});
