//! `edge-scribe verify` with the real binary on signed note files written through the library's
//! `Signer`: an intact note passes (with and without the box's public key), and a tampered note,
//! a note from another key, or a garbled file fail with the reason and never the note text.

use std::path::Path;
use std::process::{Command, Output};

use edge_scribe::attest::{
    AiStatements, AttestationFields, ModelRef, Signer, PUBLIC_KEY_FILE_NAME,
};

const MARKER: &str = "HERON-PARSNIP-4417";

fn note_text() -> String {
    format!("Chief complaint: {MARKER} cough for 3 days.\nPlan: amoxicillin 500 mg TID.")
}

fn fields() -> AttestationFields {
    AttestationFields {
        clinician_id: "dr-0042".to_owned(),
        audio_sha256: Some("ab".repeat(32)),
        models: vec![ModelRef {
            name: "whisper-small".to_owned(),
            sha256: "cd".repeat(32),
        }],
        template_id: "soap".to_owned(),
        prompt_version: "v3".to_owned(),
        ai_statements: AiStatements::default(),
    }
}

fn verify(note: &Path, public_key: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edge-scribe"));
    cmd.arg("verify").arg(note);
    if let Some(key) = public_key {
        cmd.arg("--public-key").arg(key);
    }
    // No config anywhere: verify must not need one.
    cmd.env_remove("EDGE_SCRIBE_CONFIG")
        .output()
        .expect("cannot run the edge-scribe binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write_signed(box_dir: &Path, out: &Path) -> String {
    let signer = Signer::open(box_dir).unwrap();
    let json = signer
        .sign(&note_text(), fields())
        .unwrap()
        .to_json()
        .unwrap();
    std::fs::write(out, &json).unwrap();
    json
}

#[test]
fn intact_note_verifies_and_prints_a_one_line_summary() {
    let dir = tempfile::tempdir().unwrap();
    let box_dir = dir.path().join("box");
    std::fs::create_dir(&box_dir).unwrap();
    let note = dir.path().join("note.json");
    write_signed(&box_dir, &note);

    for key in [None, Some(box_dir.join(PUBLIC_KEY_FILE_NAME))] {
        let out = verify(&note, key.as_deref());
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "stderr: {}", text(&out.stderr));
        assert_eq!(stdout.lines().count(), 1, "{stdout}");
        assert!(stdout.contains("dr-0042"), "{stdout}");
        assert!(
            !stdout.contains(MARKER),
            "the summary printed the note text"
        );
    }
}

#[test]
fn tampered_note_fails_naming_the_hash_mismatch_without_the_text() {
    let dir = tempfile::tempdir().unwrap();
    let note = dir.path().join("note.json");
    let json = write_signed(dir.path(), &note);
    std::fs::write(&note, json.replace("500 mg", "800 mg")).unwrap();

    let out = verify(&note, None);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "a tampered note verified");
    assert!(stderr.contains("hash mismatch"), "{stderr}");
    assert!(!stderr.contains(MARKER) && !text(&out.stdout).contains(MARKER));
}

#[test]
fn note_from_another_key_fails_under_the_box_public_key() {
    let dir = tempfile::tempdir().unwrap();
    let box_dir = dir.path().join("box");
    let other_dir = dir.path().join("other");
    std::fs::create_dir(&box_dir).unwrap();
    std::fs::create_dir(&other_dir).unwrap();
    Signer::open(&box_dir).unwrap();
    let note = dir.path().join("note.json");
    write_signed(&other_dir, &note);

    let out = verify(&note, Some(&box_dir.join(PUBLIC_KEY_FILE_NAME)));
    assert!(!out.status.success(), "a note from another key verified");
    assert!(
        text(&out.stderr).contains("untrusted key"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn garbled_file_fails_as_malformed() {
    let dir = tempfile::tempdir().unwrap();
    let note = dir.path().join("note.json");
    std::fs::write(&note, format!("{{\"note_text\": \"{MARKER}\"")).unwrap();
    let out = verify(&note, None);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("not a signed note file"), "{stderr}");
    assert!(!stderr.contains(MARKER), "{stderr}");
}
