//! The fuzz corpora on the stable toolchain: every file in `fuzz/corpus/<target>/` (and any
//! crash saved in `fuzz/artifacts/<target>/`) goes through the entry point its libFuzzer target
//! uses, then a deterministic mutation loop (fixed-seed xorshift: byte flips, insertions of
//! TOML/JSON tokens, deletions, truncations, duplications, splices between seeds) runs 20,000
//! more inputs. Nothing may panic or break a property (`edge_scribe::admin::fuzzing`). Seeds
//! named `ok-*` must be accepted and `bad-*` refused, so the corpus keeps meaning what it says.
//! `scripts/fuzz` runs the real fuzzers (docs/FUZZING.md).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Instant;

use edge_scribe::admin::fuzzing::{self, Broken, Outcome, Sandbox};

const SHIPPED: &str = include_str!("../config/edge-scribe.toml");
const TARGETS: [&str; 3] = ["config_toml", "config_structured", "admin_bodies"];
const MUTATIONS: usize = 20_000;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Runs one input through `target`'s entry point, as its fuzz target does.
fn run(target: &str, data: &[u8], sandbox: &Sandbox) -> Result<Outcome, Broken> {
    match target {
        "config_toml" => fuzzing::config_toml(&String::from_utf8_lossy(data), Path::new("/tmp")),
        "config_structured" => fuzzing::config_edits(SHIPPED, data, Path::new("/tmp")),
        "admin_bodies" => fuzzing::admin_input(data, sandbox),
        other => panic!("fuzz/corpus/{other}: no such fuzz target (add it to TARGETS)"),
    }
}

/// Runs `data`, turning a panic or a broken property into a failure that shows the input, so it
/// can be saved to the corpus.
fn check(target: &str, what: &str, data: &[u8], sandbox: &Sandbox) -> Outcome {
    let shown = || data.escape_ascii().to_string();
    match catch_unwind(AssertUnwindSafe(|| run(target, data, sandbox))) {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(broken)) => panic!("{target} {what}: {broken}; input: \"{}\"", shown()),
        Err(_) => panic!("{target} {what} panicked; input: \"{}\"", shown()),
    }
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn sandbox() -> (tempfile::TempDir, Sandbox) {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::new(dir.path(), SHIPPED).unwrap();
    (dir, sandbox)
}

/// Every corpus file of every target, as (target, name, bytes).
fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut seeds = Vec::new();
    for target in TARGETS {
        for kind in ["corpus", "artifacts"] {
            for path in files(&fuzz_dir().join(kind).join(target)) {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                seeds.push((target, name, std::fs::read(&path).unwrap()));
            }
        }
    }
    seeds
}

#[test]
fn every_corpus_file_replays_without_a_crash() {
    let (_dir, sandbox) = sandbox();
    let seeds = seeds();
    for target in TARGETS {
        assert!(
            seeds
                .iter()
                .filter(|(t, name, _)| *t == target && name.starts_with("ok-"))
                .count()
                > 0
                || target == "config_structured",
            "fuzz/corpus/{target} has no ok-* seed"
        );
    }
    for (target, name, data) in &seeds {
        let outcome = check(target, name, data, &sandbox);
        if name.starts_with("ok-") {
            assert_eq!(
                outcome,
                Outcome::Accepted,
                "{target}/{name} should be accepted"
            );
        } else if name.starts_with("bad-") {
            assert_eq!(
                outcome,
                Outcome::Refused,
                "{target}/{name} should be refused"
            );
        }
    }
}

/// A fixed-seed xorshift, so a failure names an input that fails again.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Tokens of the two syntaxes, inserted whole so mutations make structure, not only noise.
const TOKENS: [&[u8]; 28] = [
    b"\"",
    b"'",
    b"[",
    b"]",
    b"[[",
    b"]]",
    b"{",
    b"}",
    b",",
    b"=",
    b".",
    b"\n",
    b"#",
    b":",
    b"\"\"\"",
    b"true",
    b"-1",
    b"1e999",
    b"nan",
    b"inf",
    b"4294967296",
    b"0x7f",
    b"null",
    b"\\u0000",
    b"\xff",
    b"\0",
    b"\"patient_ref\"",
    b"[[capture.replay]]\npath = \"a.wav\"\n",
];

fn mutate(rng: &mut Rng, data: &mut Vec<u8>, other: &[u8]) {
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(data.len() + 1);
        match rng.below(7) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            1 => data.insert(at, rng.next() as u8),
            2 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                data.splice(at..at, token.iter().copied());
            }
            3 => {
                let end = (at + 1 + rng.below(16)).min(data.len());
                data.drain(at.min(end)..end);
            }
            4 => data.truncate(at),
            5 => {
                let end = (at + 1 + rng.below(32)).min(data.len());
                let chunk = data[at.min(end)..end].to_vec();
                data.splice(at..at, chunk);
            }
            _ => {
                let from = rng.below(other.len() + 1);
                let end = (from + 1 + rng.below(64)).min(other.len());
                data.splice(at..at, other[from.min(end)..end].iter().copied());
            }
        }
    }
}

#[test]
fn mutated_corpus_inputs_never_crash() {
    let (_dir, sandbox) = sandbox();
    let seeds = seeds();
    assert!(
        !seeds.is_empty(),
        "no corpus under {}",
        fuzz_dir().display()
    );
    let mut rng = Rng(0x5eed_f0cc_ed17_0001);
    let started = Instant::now();
    let mut accepted = 0usize;
    for i in 0..MUTATIONS {
        let (target, name, seed) = &seeds[rng.below(seeds.len())];
        let (_, _, other) = &seeds[rng.below(seeds.len())];
        let mut data = seed.clone();
        mutate(&mut rng, &mut data, other);
        if check(target, &format!("mutation {i} of {name}"), &data, &sandbox) == Outcome::Accepted {
            accepted += 1;
        }
    }
    eprintln!(
        "{MUTATIONS} mutated inputs ({accepted} accepted) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
