//! Every admin API request body, through the parsing and checks its handler runs before the
//! store (`edge_scribe::admin::fuzzing::admin_input`): input = endpoint byte, content-type
//! byte, body, then optionally `\0` current config text and `\0` URL parameter.
#![no_main]

use std::sync::OnceLock;

use edge_scribe::admin::fuzzing::{self, Sandbox};
use libfuzzer_sys::fuzz_target;

const SHIPPED: &str = include_str!("../../config/edge-scribe.toml");

/// The directory the environment checks may touch (under TMPDIR; scripts/fuzz removes it).
static SANDBOX: OnceLock<(tempfile::TempDir, Sandbox)> = OnceLock::new();

fn sandbox() -> &'static Sandbox {
    let (_, sandbox) = SANDBOX.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let sandbox = Sandbox::new(dir.path(), SHIPPED).unwrap();
        (dir, sandbox)
    });
    sandbox
}

fuzz_target!(|data: &[u8]| {
    if let Err(broken) = fuzzing::admin_input(data, sandbox()) {
        panic!("{broken}");
    }
});
