//! Killing an inference worker mid-encounter loses nothing: the daemon restarts it, resends the
//! work item, and finishes with the same transcript an undisturbed run gives.
//!
//! Real models, real worker processes, a real `kill -9`: the test watches the daemon's log for
//! the moment ASR is between regions and the moment drafting has begun, and kills the worker
//! process (found as a child of the `edge-scribe` process) at each.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn edge_scribe(wav: &Path, out: &Path, data: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edge-scribe"));
    cmd.arg("process")
        .arg(wav)
        .arg("--out")
        .arg(out)
        .arg("--data-dir")
        .arg(data)
        .arg("--config")
        .arg(common::repo_root().join("config/edge-scribe.toml"))
        .arg("--models-dir")
        .arg(common::models_dir())
        .arg("--quiet")
        .env("EDGE_SCRIBE_LOG", "info");
    cmd
}

/// Children of `parent` whose command name starts with `name` (the kernel keeps 15 bytes of it).
fn children_named(parent: u32, name: &str) -> Vec<u32> {
    let prefix: String = name.chars().take(15).collect();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // stat: pid (comm) state ppid ...; comm may hold spaces, so split at the last ')'.
        let Some((head, tail)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head.split_once('(').map(|(_, c)| c).unwrap_or("");
        let ppid = tail
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) && comm.starts_with(&prefix) {
            found.push(pid);
        }
    }
    found
}

fn kill_9(pid: u32) {
    let status = Command::new("kill")
        .arg("-9")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -9 {pid} failed");
}

fn read_json(path: PathBuf) -> serde_json::Value {
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn killing_either_worker_mid_encounter_loses_nothing() {
    let work = tempfile::tempdir().unwrap();
    let (wav, _truth) = common::make_visit("acute-cough", work.path());

    // The undisturbed run is the reference.
    let baseline_out = work.path().join("baseline");
    let run = common::run_logged(
        edge_scribe(&wav, &baseline_out, &work.path().join("data-baseline")),
        work.path(),
        "baseline",
        Duration::from_secs(900),
    );
    assert!(
        run.status.success(),
        "baseline run failed:\n{}",
        run.stderr_tail()
    );

    let out = work.path().join("disturbed");
    let mut child = edge_scribe(&wav, &out, &work.path().join("data-disturbed"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (lines_tx, lines) = mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut log = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            log.push_str(&line);
            log.push('\n');
            let _ = lines_tx.send(line);
        }
        log
    });

    let deadline = Instant::now() + Duration::from_secs(900);
    let mut killed_asr = None;
    let mut killed_llm = None;
    while killed_asr.is_none() || killed_llm.is_none() {
        let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        else {
            break;
        };
        if killed_asr.is_none() && line.contains("transcribed region") && line.contains("region=2 ")
        {
            let asr = children_named(pid, "edge-scribe-asr-worker");
            assert_eq!(asr.len(), 1, "expected one ASR worker under {pid}: {asr:?}");
            kill_9(asr[0]);
            killed_asr = Some(asr[0]);
        }
        if killed_llm.is_none() && line.contains("drafting started") {
            // Let generation get going, then pull the rug.
            std::thread::sleep(Duration::from_millis(800));
            let llm = children_named(pid, "edge-scribe-llm-worker");
            assert_eq!(llm.len(), 1, "expected one LLM worker under {pid}: {llm:?}");
            kill_9(llm[0]);
            killed_llm = Some(llm[0]);
        }
    }
    let status = child.wait().unwrap();
    let log = reader.join().unwrap();
    assert!(
        killed_asr.is_some(),
        "never saw ASR between regions:\n{log}"
    );
    assert!(killed_llm.is_some(), "never saw drafting start:\n{log}");
    assert!(status.success(), "disturbed run failed:\n{log}");
    assert!(log.contains("restarting"), "no restart was logged:\n{log}");

    let run = read_json(out.join("run.json"));
    assert_eq!(run["asr_worker_restarts"], 1, "{run}");
    assert_eq!(run["llm_worker_restarts"], 1, "{run}");
    assert_eq!(
        read_json(out.join("transcript.json")),
        read_json(baseline_out.join("transcript.json")),
        "the transcript after a worker crash differs from the undisturbed one"
    );
    // Greedy decoding is deterministic, so the redone draft is the same note.
    assert_eq!(
        read_json(out.join("draft.json"))["sections"],
        read_json(baseline_out.join("draft.json"))["sections"]
    );
    // No worker outlives the daemon.
    assert!(children_named(pid, "edge-scribe").is_empty());
}
