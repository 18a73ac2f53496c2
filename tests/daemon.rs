//! The daemon end to end, on real models: replay sources become stored encounters with
//! evidence-linked drafts; a bad source is reported without stopping the others; SIGTERM stops
//! it cleanly; a bad config is refused with exit code 64 before anything starts.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edge_scribe::store::{EncounterStatus, Store};

fn write_config(dir: &Path, sources: &[&Path]) -> std::path::PathBuf {
    let mut text = format!(
        "[storage]\ndata_dir = {:?}\n[models]\ndir = {:?}\n[review]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        dir.join("data"),
        common::models_dir()
    );
    for source in sources {
        text.push_str(&format!("[[capture.replay]]\npath = {source:?}\n"));
    }
    let path = dir.join("edge-scribe.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn replayed_visits_become_stored_evidence_linked_drafts_and_bad_files_are_skipped() {
    let work = tempfile::tempdir().unwrap();
    let (wav, _) = common::make_visit("followup-hypertension", work.path());
    let broken = work.path().join("broken.wav");
    std::fs::write(&broken, b"RIFF\x10\x00\x00\x00WAVEjunk").unwrap();
    let config = write_config(work.path(), &[&broken, &wav]);
    let export = work.path().join("export");

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edge-scribe"));
    cmd.args(["run", "--exit-when-idle", "--config"])
        .arg(&config)
        .arg("--export")
        .arg(&export);
    let run = common::run_logged(cmd, work.path(), "daemon", Duration::from_secs(900));
    let log = std::fs::read_to_string(&run.stderr).unwrap();
    // The broken file fails the run's exit status, but the good visit was still processed.
    assert!(
        !run.status.success(),
        "a failed source must be reported:\n{log}"
    );
    assert!(log.contains("replay source skipped"), "{log}");
    assert!(
        log.contains("broken.wav"),
        "the error must name the file:\n{log}"
    );

    let store = Store::open(&work.path().join("data")).unwrap();
    let encounters = store.list_encounters(10).unwrap();
    assert_eq!(encounters.len(), 1);
    let encounter = &encounters[0];
    assert_eq!(encounter.status, EncounterStatus::Drafted);
    assert_eq!(encounter.source_kind, "replay");

    let segments = store.load_transcript(&encounter.id).unwrap();
    assert!(segments.len() >= 5, "only {} segments", segments.len());
    let ids: HashSet<String> = segments.iter().map(|s| s.id.clone()).collect();
    let draft = store
        .latest_draft(&encounter.id)
        .unwrap()
        .expect("a stored draft");
    let body: serde_json::Value = serde_json::from_str(&draft.body_json).unwrap();
    let sections = body["sections"].as_array().unwrap();
    let names: Vec<&str> = sections
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Subjective", "Objective", "Assessment", "Plan"]);
    for section in sections {
        let statements = section["statements"].as_array().unwrap();
        match section["status"].as_str().unwrap() {
            "insufficient_input" => assert!(statements.is_empty()),
            "drafted" => assert!(!statements.is_empty()),
            other => panic!("unknown status {other}"),
        }
        for statement in statements {
            let evidence = statement["evidence"].as_array().unwrap();
            assert!(!evidence.is_empty());
            for id in evidence {
                assert!(ids.contains(id.as_str().unwrap()), "cites missing {id}");
            }
        }
    }

    // The export holds the same transcript the store does.
    let exported = common::Transcript::read(&export.join(&encounter.id).join("transcript.json"));
    assert_eq!(exported.segments.len(), segments.len());
    // Logs carry ids and counts, never what was said.
    for segment in &segments {
        if segment.text.split_whitespace().count() >= 4 {
            assert!(
                !log.contains(segment.text.trim()),
                "transcript text leaked into the log"
            );
        }
    }
}

#[test]
fn sigterm_stops_an_idle_daemon_promptly_and_cleanly() {
    let work = tempfile::tempdir().unwrap();
    let config = write_config(work.path(), &[]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_edge-scribe"))
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the store exists, i.e. the daemon is up.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !work.path().join("data").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "daemon exited on its own"
    );
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let stopped = Instant::now();
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(10),
            "no exit within 10 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit}");
}

#[test]
fn a_bad_config_is_refused_with_exit_code_64_listing_every_problem() {
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("bad.toml");
    std::fs::write(&config, "[asr]\nbeam_size = 0\n[vad]\nmode = \"loud\"\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_edge-scribe"))
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("asr.beam_size"), "{stderr}");
    assert!(stderr.contains("vad.mode"), "{stderr}");
    assert!(stderr.contains("bad.toml"), "{stderr}");
}

/// A stop request in the middle of a visit drains: the encounter being transcribed is finished
/// and stored (not left half-done), the daemon exits 0, and it starts no further encounter.
#[test]
fn sigterm_during_an_encounter_finishes_and_stores_it_then_exits_cleanly() {
    let work = tempfile::tempdir().unwrap();
    let (first, truth) = common::make_visit("followup-hypertension", work.path());
    let second = work.path().join("second.wav");
    std::fs::copy(&first, &second).unwrap();
    let config = write_config(work.path(), &[&first, &second]);
    let log = work.path().join("daemon.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_edge-scribe"))
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Stop once transcription of the first visit is under way.
    let deadline = Instant::now() + Duration::from_secs(300);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("speech regions found")
    {
        assert!(Instant::now() < deadline, "transcription never started");
        assert!(child.try_wait().unwrap().is_none(), "daemon exited early");
        std::thread::sleep(Duration::from_millis(20));
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let stopped = Instant::now();
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(300),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(exit.success(), "{exit}\n{text}");
    let store = Store::open(&work.path().join("data")).unwrap();
    let encounters = store.list_encounters(10).unwrap();
    assert_eq!(encounters.len(), 1, "the second visit must not start");
    assert_eq!(encounters[0].status, EncounterStatus::Drafted);
    let segments = store.load_transcript(&encounters[0].id).unwrap();
    let words = segments
        .iter()
        .map(|s| s.text.split_whitespace().count())
        .sum::<usize>();
    assert!(
        words * 2 > truth.text().split_whitespace().count(),
        "the drained encounter holds its whole transcript ({words} words)"
    );
    assert!(store.verify_audit().unwrap().is_intact());
}
