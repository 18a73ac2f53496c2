//! Helpers shared by the integration tests: locating the repository, synthesizing scripted visits
//! with `scripts/make-visit`, and running the `edge-scribe` binary with its output kept in files.
//!
//! Every helper panics with a message saying what to fix, because a test has no one else to
//! report to. Nothing here touches real patient data: all audio is synthesized from the scripts in
//! `tests/fixtures/visits`.

// Each integration test is its own crate and uses a different subset of these helpers.
#![allow(dead_code)]

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

/// The repository root (where Cargo.toml, `scripts/` and `tests/fixtures/` live).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where the models are installed: `$EDGE_SCRIBE_MODELS_DIR` (set by scripts/test), else the
/// checkout's `models/`.
pub fn models_dir() -> PathBuf {
    std::env::var_os("EDGE_SCRIBE_MODELS_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("models"))
}

/// Path of a visit script in `tests/fixtures/visits`, by file stem.
pub fn visit_script(stem: &str) -> PathBuf {
    repo_root()
        .join("tests/fixtures/visits")
        .join(format!("{stem}.txt"))
}

/// Ground truth written by `make-visit --truth`.
#[derive(Debug, Deserialize)]
pub struct Truth {
    pub duration_s: f64,
    pub turns: Vec<TruthTurn>,
}

/// One spoken turn: who spoke, when (seconds from the start of the WAV) and what was said.
#[derive(Debug, Deserialize)]
pub struct TruthTurn {
    pub speaker: String,
    pub start: f64,
    pub end: f64,
    pub text: String,
}

impl Truth {
    /// All turns' text in order, as one reference transcript.
    pub fn text(&self) -> String {
        join_texts(self.turns.iter().map(|t| t.text.as_str()))
    }
}

/// `transcript.json` as written by `edge-scribe process`; only the fields the tests read.
#[derive(Debug, Deserialize)]
pub struct Transcript {
    pub segments: Vec<Segment>,
}

#[derive(Debug, Deserialize)]
pub struct Segment {
    pub text: String,
}

impl Transcript {
    pub fn read(path: &Path) -> Transcript {
        let raw = fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        serde_json::from_str(&raw)
            .unwrap_or_else(|e| panic!("{} is not a valid transcript: {e}", path.display()))
    }

    /// All segments' text in order, as one hypothesis transcript.
    pub fn text(&self) -> String {
        join_texts(self.segments.iter().map(|s| s.text.as_str()))
    }
}

fn join_texts<'a>(texts: impl Iterator<Item = &'a str>) -> String {
    texts
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Synthesizes `tests/fixtures/visits/{stem}.txt` into `{dir}/{stem}.wav` and returns the WAV path
/// and its ground truth.
pub fn make_visit(stem: &str, dir: &Path) -> (PathBuf, Truth) {
    let wav = dir.join(format!("{stem}.wav"));
    let truth_path = dir.join(format!("{stem}.truth.json"));
    let mut cmd = Command::new(repo_root().join("scripts/make-visit"));
    cmd.arg(visit_script(stem))
        .arg(&wav)
        .arg("--truth")
        .arg(&truth_path);
    let run = run_logged(
        cmd,
        dir,
        &format!("make-visit-{stem}"),
        Duration::from_secs(120),
    );
    assert!(
        run.status.success(),
        "scripts/make-visit failed for {stem} ({}); it needs python3, espeak-ng and sox \
         (apt-get install espeak-ng sox):\n{}",
        run.status,
        run.stderr_tail()
    );
    let raw = fs::read_to_string(&truth_path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", truth_path.display()));
    let truth: Truth = serde_json::from_str(&raw)
        .unwrap_or_else(|e| panic!("{} is not valid ground truth: {e}", truth_path.display()));
    assert!(
        !truth.turns.is_empty(),
        "{} has no turns",
        truth_path.display()
    );
    (wav, truth)
}

/// Result of a finished command whose output went to files.
pub struct Run {
    pub status: ExitStatus,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    pub elapsed: Duration,
}

impl Run {
    /// The last lines of stderr, for failure messages.
    pub fn stderr_tail(&self) -> String {
        tail(&self.stderr)
    }
}

/// The last 40 lines of a log file (empty if it cannot be read).
fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Runs `cmd` with stdout and stderr sent to `{log_dir}/{name}.stdout|.stderr`, killing it after
/// `timeout`.
///
/// Output goes to files rather than pipes so a chatty child can never block on a full pipe while
/// we wait, and so the logs are there to read when something fails.
pub fn run_logged(mut cmd: Command, log_dir: &Path, name: &str, timeout: Duration) -> Run {
    let stdout = log_dir.join(format!("{name}.stdout"));
    let stderr = log_dir.join(format!("{name}.stderr"));
    let create = |path: &Path| {
        File::create(path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()))
    };
    cmd.stdin(Stdio::null())
        .stdout(create(&stdout))
        .stderr(create(&stderr));
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program()));
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > timeout => {
                // Only this child is killed; it was started here and nowhere else.
                let _ = child.kill();
                let _ = child.wait();
                // The log directory is usually a temp dir that is gone once the panic unwinds.
                panic!(
                    "{name} did not finish within {} s; last stderr:\n{}",
                    timeout.as_secs(),
                    tail(&stderr)
                );
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => panic!("waiting for {name} failed: {e}"),
        }
    };
    Run {
        status,
        stdout,
        stderr,
        elapsed: started.elapsed(),
    }
}
