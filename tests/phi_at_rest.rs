//! Patient content never reaches the disk or the log in the clear: the daemon processes a
//! synthesized visit with planted marker words, a clinician reviews and signs it over the API,
//! and a raw byte scan of every file the daemon wrote (the database, its WAL and shared-memory
//! files, keys, the address file), of its temp directory and of its log finds none of them —
//! while the same words are present in the decrypted transcript, so the scan is not vacuous.

mod common;
mod records_fixture;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edge_scribe::store::Store;
use records_fixture::Client;
use serde_json::{json, Value};

/// Words the visit says that only patient content could carry into a file.
const MARKERS: [&str; 4] = ["emily", "saxophone", "pineapple", "jazz"];
const PASSWORD: &str = "correct horse battery staple";

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Which markers occur in which files, matching ASCII case-insensitively in UTF-8 and UTF-16LE.
fn scan(files: &[PathBuf]) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for file in files {
        let Ok(bytes) = std::fs::read(file) else {
            continue;
        };
        let lower: Vec<u8> = bytes.iter().map(u8::to_ascii_lowercase).collect();
        for marker in MARKERS {
            let utf16: Vec<u8> = marker.bytes().flat_map(|b| [b, 0]).collect();
            if contains(&lower, marker.as_bytes()) || contains(&lower, &utf16) {
                found.push((file.display().to_string(), marker.to_owned()));
            }
        }
    }
    found
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn no_file_and_no_log_line_holds_patient_words_in_the_clear() {
    let work = tempfile::tempdir().unwrap();
    let (wav, _) = common::make_visit("marker-visit", work.path());
    let data = work.path().join("data");
    let tmp = work.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let config = work.path().join("edge-scribe.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\ndata_dir = {data:?}\n[models]\ndir = {:?}\n[drafting]\nuse_llm = false\n\
             [review]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\nlevel = \"debug\"\n\
             [[capture.replay]]\npath = {wav:?}\nclinician = \"dr-lee\"\n",
            common::models_dir()
        ),
    )
    .unwrap();

    let mut add = Command::new(env!("CARGO_BIN_EXE_edge-scribe"))
        .args([
            "users",
            "add",
            "--username",
            "dr-lee",
            "--role",
            "clinician",
        ])
        .arg("--password-stdin")
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    writeln!(add.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    assert!(add.wait().unwrap().success());

    let log_path = work.path().join("daemon.log");
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_edge-scribe"))
        .args(["run", "--config"])
        .arg(&config)
        .env("TMPDIR", &tmp)
        .stdout(std::fs::File::create(work.path().join("daemon.out")).unwrap())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();

    // Wait for the review service, then for the encounter to be drafted.
    let started = Instant::now();
    let addr = loop {
        if let Ok(addr) = std::fs::read_to_string(data.join("review.addr")) {
            break addr;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no review.addr"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut api = Client::login(addr.parse().unwrap(), "dr-lee", PASSWORD);
    // Every call here must succeed; the answer's body is JSON.
    let mut call = |method: &str, path: &str, body: Option<Value>| -> Value {
        let (status, _, bytes) = api.send(method, path, body.as_ref());
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {}",
            String::from_utf8_lossy(&bytes)
        );
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    };
    let encounter = loop {
        let list = call("GET", "/api/encounters", None);
        if let Some(e) = list
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["status"] == "drafted")
        {
            break e["id"].as_str().unwrap().to_owned();
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the visit was not drafted:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    // Review it the way a clinician would: open, play, save, sign.
    let view = call("GET", &format!("/api/encounters/{encounter}"), None);
    call(
        "GET",
        &format!("/api/encounters/{encounter}/audio?start_ms=0&end_ms=3000"),
        None,
    );
    let sections: Vec<Value> = view["sections"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let added = (i == 0).then(|| {
                json!({"id": "new-1", "state": "added",
                "text": "Emily will bring her saxophone strap next time."})
            });
            json!({"name": s["name"], "statements": s["statements"].as_array().unwrap().iter()
                .map(|t| json!({"id": t["id"], "text": t["text"], "state": "accepted"}))
                .chain(added)
                .collect::<Vec<_>>()})
        })
        .collect();
    call(
        "POST",
        &format!("/api/encounters/{encounter}/versions"),
        Some(json!({"base_version": 0, "sections": sections})),
    );
    call(
        "POST",
        &format!("/api/encounters/{encounter}/sign"),
        Some(json!({"version": 1})),
    );

    // While the daemon runs (WAL and shared-memory files present) and after it stops.
    let mut scanned = files_under(&data);
    assert!(
        scanned
            .iter()
            .any(|f| f.to_string_lossy().ends_with("-wal")),
        "the WAL should exist while the daemon runs: {scanned:?}"
    );
    scanned.extend(files_under(&tmp));
    scanned.push(log_path.clone());
    let running = scan(&scanned);

    // SIGTERM, as systemd stops the service.
    let _ = Command::new("kill").arg(daemon.id().to_string()).status();
    let status = daemon.wait().unwrap();
    assert!(status.success(), "daemon exit: {status}");
    let mut after = files_under(&data);
    after.extend(files_under(&tmp));
    after.push(log_path.clone());
    after.push(work.path().join("daemon.out"));
    let stopped = scan(&after);

    // The words are really there, decrypted, so a clean scan means something.
    let store = Store::open(&data).unwrap();
    let transcript: String = store
        .load_transcript(&encounter)
        .unwrap()
        .iter()
        .map(|s| s.text.to_lowercase())
        .collect::<Vec<_>>()
        .join(" ");
    let heard: Vec<&str> = MARKERS
        .iter()
        .copied()
        .filter(|m| transcript.contains(m))
        .collect();
    assert!(
        heard.len() >= 2,
        "ASR should have heard at least two marker words, heard {heard:?}"
    );
    let signed = store.signed_notes(&encounter).unwrap();
    assert!(signed[0].to_lowercase().contains("saxophone"));

    assert!(
        running.is_empty(),
        "patient words in the clear: {running:?}"
    );
    assert!(
        stopped.is_empty(),
        "patient words in the clear: {stopped:?}"
    );
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("note signed"),
        "the log should show the run:\n{log}"
    );
}
