//! `edge-scribe audit verify` with the real binary on a real SQLCipher database written through
//! the library's `Store`: an intact log passes, a row changed or deleted with the key (as someone
//! with access to the box could) fails naming the entry's seq and never its content, and a
//! missing database is an error rather than an empty log that "verifies".

mod common;

use std::path::Path;
use std::process::{Command, Output};

mod store_support;

use edge_scribe::store::{EncounterStatus, NewDraft, NewEncounter, Store, StoredSegment};

const MARKER: &str = "PELICAN-TURNIP-9052";

fn verify(data_dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edge-scribe"))
        .arg("audit")
        .arg("verify")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--config")
        .arg(common::repo_root().join("config/edge-scribe.toml"))
        .output()
        .expect("cannot run the edge-scribe binary")
}

/// One encounter through the store as the pipeline would write it: five audit entries.
fn populate(data_dir: &Path) {
    let store = Store::open(data_dir).unwrap();
    let id = store
        .create_encounter(&NewEncounter {
            source_kind: "file".to_owned(),
            audio_sha256: Some("ab".repeat(32)),
            audio_duration_ms: Some(60_000),
            ..NewEncounter::default()
        })
        .unwrap();
    store.set_status(&id, EncounterStatus::Transcribed).unwrap();
    store
        .save_transcript(
            &id,
            &[StoredSegment {
                id: "s1".to_owned(),
                start_ms: 0,
                end_ms: 1_000,
                speaker: Some("patient".to_owned()),
                text: format!("{MARKER} my knee hurts"),
                confidence: None,
                overlap: false,
                speaker_corrected: false,
                original_speaker: None,
            }],
        )
        .unwrap();
    store
        .save_draft(&NewDraft {
            encounter_id: id.clone(),
            model: "none".to_owned(),
            model_sha256: String::new(),
            template: "soap".to_owned(),
            body_json: format!(r#"{{"plan":"{MARKER}"}}"#),
        })
        .unwrap();
    store.set_status(&id, EncounterStatus::Drafted).unwrap();
}

/// Opens the database the way someone holding master.key could, bypassing the store.
fn raw_conn(data_dir: &Path) -> rusqlite::Connection {
    store_support::raw_store_conn(data_dir)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn intact_log_verifies_with_its_entry_count() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path());
    let out = verify(dir.path());
    assert!(out.status.success(), "verify failed: {}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("audit log intact: 5 entries"),
        "stdout: {}",
        text(&out.stdout)
    );
}

#[test]
fn modified_row_fails_naming_its_seq_and_no_content() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path());
    raw_conn(dir.path())
        .execute(
            r#"UPDATE audit SET detail_json = '{"segments":99}' WHERE seq = 3"#,
            [],
        )
        .unwrap();
    let out = verify(dir.path());
    assert!(!out.status.success(), "tampering went undetected");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("seq 3"), "stderr: {stderr}");
    assert!(stderr.contains("modified"), "stderr: {stderr}");
    let all = format!("{}{}", text(&out.stdout), stderr);
    assert!(!all.contains(MARKER) && !all.contains("knee"));
}

#[test]
fn deleted_row_fails() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path());
    raw_conn(dir.path())
        .execute("DELETE FROM audit WHERE seq = 2", [])
        .unwrap();
    let out = verify(dir.path());
    assert!(!out.status.success(), "deletion went undetected");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("seq 3"), "stderr: {stderr}");
    assert!(stderr.contains("missing"), "stderr: {stderr}");
}

#[test]
fn missing_database_is_an_error_and_nothing_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("no-such-data");
    let out = verify(&data_dir);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no database"),
        "stderr: {}",
        text(&out.stderr)
    );
    assert!(!data_dir.exists(), "verify created a data directory");
}
