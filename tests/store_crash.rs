//! Crash safety: a child process writes encounters (transcript, draft, audio) in a loop and
//! prints what it committed; the test SIGKILLs it at random moments, reopens the store and
//! checks that everything reported is there and decrypts, that no transcript is partial, and
//! that the audit chain verifies. The child is this test binary itself, run with an env var.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edge_scribe::store::{NewDraft, NewEncounter, Store, StoredSegment};

const CHILD_ENV: &str = "EDGE_SCRIBE_STORE_CRASH_CHILD_DIR";
const ROUNDS: u64 = 24;

fn segment_text(id: &str, k: usize, n: usize) -> String {
    format!("{id} segment {k} of {n}: the quick brown fox")
}

fn segments_for(id: &str, n: usize) -> Vec<StoredSegment> {
    (0..n)
        .map(|k| StoredSegment {
            id: format!("s{k}"),
            start_ms: k as i64 * 1_000,
            end_ms: k as i64 * 1_000 + 800,
            speaker: (k % 2 == 0).then(|| "clinician".to_owned()),
            text: segment_text(id, k, n),
            confidence: Some(0.5),
            overlap: k % 3 == 1,
            speaker_corrected: false,
            original_speaker: None,
        })
        .collect()
}

fn audio_for(seconds: usize) -> Vec<i16> {
    (0..seconds * 16_000).map(|i| (i % 2_000) as i16).collect()
}

/// Not a test on its own: the child's body, active only when the parent sets CHILD_ENV.
#[test]
fn child_writer() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let store = Store::open(Path::new(&dir)).unwrap();
    let started = Instant::now();
    let mut i = 0usize;
    while started.elapsed() < Duration::from_secs(30) {
        let id = store
            .create_encounter(&NewEncounter {
                source_kind: "file".to_owned(),
                consent: true,
                patient_ref: Some(format!("MRN-{i}")),
                ..NewEncounter::default()
            })
            .unwrap();
        println!("@@ encounter {id}");
        let n = 20 + (i * 37) % 280;
        store.save_transcript(&id, &segments_for(&id, n)).unwrap();
        println!("@@ transcript {id} {n}");
        let draft_id = store
            .save_draft(&NewDraft {
                encounter_id: id.clone(),
                model: "m".to_owned(),
                model_sha256: "s".to_owned(),
                template: "soap".to_owned(),
                body_json: format!(r#"{{"encounter":"{id}"}}"#),
            })
            .unwrap();
        println!("@@ draft {id} {draft_id}");
        store.save_audio(&id, &audio_for(3)).unwrap();
        println!("@@ audio {id}");
        i += 1;
    }
}

fn delay_ms(round: u64) -> u64 {
    // Deterministic spread from ~5 ms (during open) to ~600 ms (mid-loop).
    let mut x = round.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    x ^= x >> 29;
    5 + x % 600
}

#[test]
fn sigkill_during_writes_loses_no_committed_data() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut reported: Vec<String> = Vec::new();
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "child_writer",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(pos) = line.find("@@ ") {
                    sink.lock().unwrap().push(line[pos + 3..].to_owned());
                }
            }
        });
        std::thread::sleep(Duration::from_millis(delay_ms(round)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        reported.extend(lines.lock().unwrap().drain(..));

        let store = Store::open(dir.path()).unwrap();
        check(&store, &reported, round);
    }
    let transcripts = reported
        .iter()
        .filter(|l| l.starts_with("transcript "))
        .count();
    assert!(
        transcripts >= 10,
        "too few writes to mean anything: {transcripts}"
    );
}

fn check(store: &Store, reported: &[String], round: u64) {
    for line in reported {
        let words: Vec<&str> = line.split(' ').collect();
        match words[..] {
            ["encounter", id] => {
                store.load_encounter(id).unwrap();
            }
            ["transcript", id, n] => {
                let n: usize = n.parse().unwrap();
                assert_eq!(
                    store.load_transcript(id).unwrap(),
                    segments_for(id, n),
                    "round {round}"
                );
            }
            ["draft", id, draft_id] => {
                let d = store.latest_draft(id).unwrap().unwrap();
                assert_eq!(d.id, draft_id);
                assert_eq!(d.body_json, format!(r#"{{"encounter":"{id}"}}"#));
            }
            ["audio", id] => {
                assert_eq!(store.load_audio_span(id, 0, 3_000).unwrap(), audio_for(3));
            }
            _ => panic!("unexpected child output {line:?}"),
        }
    }
    // No partial transcript anywhere, reported or not: all of it or none.
    for enc in store.list_encounters(100_000).unwrap() {
        let segments = store.load_transcript(&enc.id).unwrap();
        if let Some(first) = segments.first() {
            let n: usize = first
                .text
                .split(' ')
                .nth(4)
                .unwrap()
                .trim_end_matches(':')
                .parse()
                .unwrap();
            assert_eq!(segments, segments_for(&enc.id, n), "round {round}");
        }
        assert_eq!(
            store
                .patient_ref(&enc.id)
                .unwrap()
                .map(|p| p.starts_with("MRN-")),
            Some(true)
        );
    }
    let report = store.verify_audit().unwrap();
    assert!(report.is_intact(), "round {round}: {report:?}");
}
