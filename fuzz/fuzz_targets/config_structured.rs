//! Structure-aware config fuzzing: the input drives typed edits of the shipped
//! `config/edge-scribe.toml` (values of every type and edge, removed keys and sections, added
//! rooms, replay sources and destinations, lists written inline, unknown keys), so mutations
//! reach the validation rules (`edge_scribe::admin::fuzzing::config_edits`).
#![no_main]

use std::path::Path;

use edge_scribe::admin::fuzzing;
use libfuzzer_sys::fuzz_target;

const SHIPPED: &str = include_str!("../../config/edge-scribe.toml");

fuzz_target!(|data: &[u8]| {
    if let Err(broken) = fuzzing::config_edits(SHIPPED, data, Path::new("/tmp")) {
        panic!("{broken}");
    }
});
