//! `edge-scribe backup` and `restore` with the real binary on real SQLCipher stores: a backup
//! taken while another writer keeps writing is a consistent, encrypted snapshot; a restore
//! keeps encounters deleted after the backup deleted and signed notes verifiable; a damaged
//! backup, a backup under another master key, and a data directory in use are refused with a
//! clear message and the live files untouched.

mod common;
mod store_support;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edge_scribe::attest::{AttestationFields, ModelRef, Signer, PUBLIC_KEY_FILE_NAME};
use edge_scribe::store::lock::DataDirLock;
use edge_scribe::store::review::{NewSignedNote, SignedKind};
use edge_scribe::store::{Actor, NewEncounter, Store, StoreError, StoredSegment, DB_FILE_NAME};

const MARKER: &str = "OSPREY-RHUBARB-7731";

fn run(args: &[&str], data_dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edge-scribe"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--config")
        .arg(common::repo_root().join("config/edge-scribe.toml"))
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .expect("cannot run the edge-scribe binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn backup(data_dir: &Path, out: &Path) -> Output {
    let out = run(&["backup", "--out", &out.to_string_lossy()], data_dir);
    assert!(
        out.status.success(),
        "backup failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

fn restore(data_dir: &Path, file: &Path) -> Output {
    run(&["restore", &file.to_string_lossy()], data_dir)
}

fn new_encounter(store: &Store, n: usize) -> String {
    let id = store
        .create_encounter(&NewEncounter {
            source_kind: "file".to_owned(),
            consent: true,
            clinician_id: Some("dr-0042".to_owned()),
            patient_ref: Some(format!("MRN-{n}")),
            ..NewEncounter::default()
        })
        .unwrap();
    store
        .save_transcript(
            &id,
            &[StoredSegment {
                id: "s1".to_owned(),
                start_ms: 0,
                end_ms: 1_000,
                speaker: Some("patient".to_owned()),
                text: format!("{MARKER} visit {n}: cough for three days"),
                confidence: Some(0.9),
                overlap: false,
                speaker_corrected: false,
                original_speaker: None,
            }],
        )
        .unwrap();
    id
}

fn sign(store: &Store, signer: &Signer, id: &str) {
    let note = format!("Chief complaint: cough. {MARKER}");
    let signed = signer
        .sign(
            &note,
            AttestationFields {
                clinician_id: "dr-0042".to_owned(),
                audio_sha256: None,
                models: vec![ModelRef {
                    name: "whisper-tiny.en".to_owned(),
                    sha256: "cd".repeat(32),
                }],
                template_id: "soap".to_owned(),
                prompt_version: "facts-prompt-1".to_owned(),
                ai_statements: Default::default(),
            },
        )
        .unwrap();
    store
        .save_signed_note(
            id,
            &NewSignedNote {
                kind: SignedKind::Original,
                signed_at_ms: 0,
                clinician_id: "dr-0042".to_owned(),
                note_sha256: signed.attestation().note_sha256.clone(),
                document: signed.to_json().unwrap(),
                version: None,
                ai: Default::default(),
            },
            None,
            &[],
        )
        .unwrap();
}

/// A box with `n` encounters, the first `signed` of them signed. Returns the ids.
fn make_box(data_dir: &Path, n: usize, signed: usize) -> Vec<String> {
    let store = Store::open(data_dir).unwrap();
    let signer = Signer::open(data_dir).unwrap();
    let ids: Vec<String> = (0..n).map(|i| new_encounter(&store, i)).collect();
    for id in ids.iter().take(signed) {
        sign(&store, &signer, id);
    }
    ids
}

/// Every file of the data directory (not the lock) with its bytes, to compare before and after.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    store_support::files_under(dir)
        .into_iter()
        .filter(|p| !p.ends_with("edge-scribe.lock"))
        .map(|p| {
            let bytes = fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

fn zip_members(file: &Path) -> Vec<String> {
    let archive = zip::ZipArchive::new(fs::File::open(file).unwrap()).unwrap();
    let mut names: Vec<String> = archive.file_names().map(str::to_owned).collect();
    names.sort();
    names
}

fn manifest(file: &Path) -> serde_json::Value {
    let mut archive = zip::ZipArchive::new(fs::File::open(file).unwrap()).unwrap();
    let mut text = String::new();
    archive
        .by_name("manifest.json")
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn a_backup_taken_while_another_writer_writes_is_a_consistent_encrypted_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    make_box(&data, 3, 1);

    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (data, stop, written) = (data.clone(), stop.clone(), written.clone());
        std::thread::spawn(move || {
            let store = Store::open(&data).unwrap();
            let mut n = 1_000;
            while !stop.load(Ordering::SeqCst) {
                new_encounter(&store, n);
                n += 1;
                written.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let started = Instant::now();
    while written.load(Ordering::SeqCst) < 5 && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let file = dir.path().join("backups/box.zip");
    fs::create_dir(dir.path().join("backups")).unwrap();
    let out = backup(&data, &file);
    let during = written.load(Ordering::SeqCst);
    // The writer must still have been writing when the backup finished.
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let after = written.load(Ordering::SeqCst);
    assert!(after > 5, "the writer did not write");

    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("NOT in the backup: the master key"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&data.join("master.key").display().to_string()),
        "{stdout}"
    );
    assert!(!stdout.contains(MARKER) && !text(&out.stderr).contains(MARKER));

    // One private file, with the master key nowhere in it and no member in clear.
    let mode = fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(
        zip_members(&file),
        [
            "database.key",
            "edge-scribe.db",
            "manifest.json",
            "signing.key.sealed",
            "signing.pub"
        ]
    );
    let leftovers: Vec<_> = fs::read_dir(&data)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
    let backups = dir.path().join("backups");
    assert!(store_support::raw_files_contain(&backups, &[MARKER, "SQLite format 3"]).is_empty());
    let master_hex = fs::read_to_string(data.join("master.key")).unwrap();
    let signing_key = fs::read(data.join("signing.key")).unwrap();
    assert!(store_support::raw_files_contain_bytes(
        &backups,
        &[
            master_hex.trim().as_bytes(),
            &store_support::master_key(&data),
            // ring's PKCS#8 v2 Ed25519 document: a 16-byte header, then the 32-byte seed.
            &signing_key[16..48],
        ]
    )
    .is_empty());

    // The snapshot restores on a new box that has the master key, opens, and its audit chain
    // holds; it has every encounter from before it started and none from after the writer
    // stopped.
    let m = manifest(&file);
    let encounters = m["encounters"].as_u64().unwrap() as usize;
    assert!(
        (3 + 5..=3 + after).contains(&encounters),
        "{encounters} encounters in the backup; {during} written by then, {after} in all"
    );
    let fresh = dir.path().join("fresh");
    fs::create_dir(&fresh).unwrap();
    fs::copy(data.join("master.key"), fresh.join("master.key")).unwrap();
    let out = restore(&fresh, &file);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("no deletions to apply"),
        "{}",
        text(&out.stdout)
    );
    let restored = Store::open_existing(&fresh).unwrap();
    assert!(restored.verify_audit().unwrap().first_break.is_none());
    assert_eq!(restored.list_encounters(100_000).unwrap().len(), encounters);
    let audit = run(&["audit", "verify"], &fresh);
    assert!(audit.status.success(), "{}", text(&audit.stderr));
}

#[test]
fn an_encounter_deleted_after_the_backup_stays_deleted_and_signed_notes_still_verify() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ids = make_box(&data, 3, 2);
    let file = dir.path().join("box.zip");
    backup(&data, &file);

    {
        let store = Store::open(&data).unwrap();
        store
            .delete_encounter(&ids[1], &Actor::User("admin".to_owned()))
            .unwrap();
    }
    let out = restore(&data, &file);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains("1 encounter(s) deleted after the backup"),
        "{stdout}"
    );
    assert!(!stdout.contains(MARKER) && !text(&out.stderr).contains(MARKER));

    let store = Store::open_existing(&data).unwrap();
    match store.load_encounter(&ids[1]) {
        Err(StoreError::UnknownEncounter { .. }) => {}
        other => panic!("the deleted encounter came back: {other:?}"),
    }
    assert!(store
        .deleted_encounters()
        .unwrap()
        .iter()
        .any(|(id, _)| id == &ids[1]));
    store.load_encounter(&ids[2]).unwrap();
    assert!(store.load_transcript(&ids[2]).unwrap()[0]
        .text
        .contains(MARKER));
    let documents = store.signed_notes(&ids[0]).unwrap();
    assert_eq!(documents.len(), 1);
    assert!(store.verify_audit().unwrap().first_break.is_none());
    drop(store);

    // The restored signing key is the box's key: a note it signed verifies under signing.pub.
    let note = dir.path().join("note.json");
    fs::write(&note, &documents[0]).unwrap();
    let verify = Command::new(env!("CARGO_BIN_EXE_edge-scribe"))
        .arg("verify")
        .arg(&note)
        .arg("--public-key")
        .arg(data.join(PUBLIC_KEY_FILE_NAME))
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", text(&verify.stderr));
    let signer = Signer::open(&data).unwrap();
    assert_eq!(
        store_support::encode_hex(signer.public_key()),
        fs::read_to_string(data.join(PUBLIC_KEY_FILE_NAME))
            .unwrap()
            .trim()
    );

    // The replaced files were moved aside, not deleted.
    let aside: Vec<PathBuf> = fs::read_dir(&data)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("pre-restore-"))
        })
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(aside[0].join(DB_FILE_NAME).is_file());
    assert!(aside[0].join("database.key").is_file());
    assert!(!aside[0].join("master.key").exists());
    assert!(data.join("master.key").is_file());
}

#[test]
fn a_truncated_or_corrupted_backup_is_refused_and_the_live_data_is_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    make_box(&data, 2, 1);
    let file = dir.path().join("box.zip");
    backup(&data, &file);
    let bytes = fs::read(&file).unwrap();
    let before = snapshot(&data);

    let truncated = dir.path().join("truncated.zip");
    fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let mut flipped = bytes.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x5a;
    let corrupted = dir.path().join("corrupted.zip");
    fs::write(&corrupted, &flipped).unwrap();
    let stranger = dir.path().join("stranger.zip");
    fs::write(&stranger, b"PK\x05\x06 not a backup at all").unwrap();

    for bad in [&truncated, &corrupted, &stranger] {
        let out = restore(&data, bad);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{} was restored", bad.display());
        assert!(
            stderr.contains("damaged or incomplete")
                || stderr.contains("not an edge-scribe backup"),
            "{}: {stderr}",
            bad.display()
        );
        assert!(stderr.contains("nothing was changed"), "{stderr}");
        assert!(
            snapshot(&data) == before,
            "{} changed the data directory",
            bad.display()
        );
    }

    // The intact file still restores.
    let out = restore(&data, &file);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn a_backup_made_under_another_master_key_is_refused_and_the_live_data_is_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other");
    let data = dir.path().join("data");
    make_box(&other, 2, 1);
    make_box(&data, 1, 0);
    let file = dir.path().join("other.zip");
    backup(&other, &file);
    let before = snapshot(&data);

    let out = restore(&data, &file);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "a foreign backup was restored");
    assert!(
        stderr.contains("this backup was made under a different master key"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was changed"), "{stderr}");
    assert!(snapshot(&data) == before, "the data directory changed");
}

#[test]
fn restore_refuses_while_the_data_directory_is_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    make_box(&data, 1, 0);
    let file = dir.path().join("box.zip");
    backup(&data, &file);
    let before = snapshot(&data);

    // What the daemon holds while it runs.
    let lock = DataDirLock::try_acquire(&data).unwrap();
    let out = restore(&data, &file);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "restored under a held lock");
    assert!(
        stderr.contains("in use by another edge-scribe process"),
        "{stderr}"
    );
    assert!(stderr.contains("systemctl stop edge-scribe"), "{stderr}");
    assert!(snapshot(&data) == before, "the data directory changed");

    // A daemon from before the lock is still seen through its review port.
    drop(lock);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    fs::write(
        data.join("review.addr"),
        listener.local_addr().unwrap().to_string(),
    )
    .unwrap();
    let out = restore(&data, &file);
    assert!(
        !out.status.success(),
        "restored while the review port answers"
    );
    assert!(
        text(&out.stderr).contains("daemon appears to be running"),
        "{}",
        text(&out.stderr)
    );
    drop(listener);

    let out = restore(&data, &file);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn restore_without_the_master_key_in_place_says_so_and_creates_none() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    make_box(&data, 1, 0);
    let file = dir.path().join("box.zip");
    backup(&data, &file);
    let empty = dir.path().join("new-box");
    let out = restore(&empty, &file);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("no master key"), "{stderr}");
    assert!(!empty.exists(), "the data directory was created anyway");
}
