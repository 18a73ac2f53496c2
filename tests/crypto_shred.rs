//! Crypto-shredding acceptance: after an encounter is deleted, its words and audio cannot be
//! recovered from the database file or its WAL even by someone holding the master key, and
//! copies of its sealed rows (a backup) no longer open.
//!
//! The test re-derives every key itself from the files on disk (master.key → database.key →
//! the SQLCipher page key → the encounter's wrapped data key), decrypts every page of the
//! database and the WAL with its own AES-CBC code, and searches the plaintext pages. The same
//! search must find the wrapped data key before the deletion, which proves the scanner sees it.

mod store_support;

use std::fs;
use std::path::Path;

use edge_scribe::store::{Actor, NewEncounter, Store, StoredSegment, DB_FILE_NAME};
use rusqlite::Connection;
use store_support::{
    aad, database_key, decrypted_pages, find, gcm_open, master_key, raw_files_contain,
    raw_files_contain_bytes,
};

const MARKER: &str = "QUOKKA-MARMALADE-4417 metoprolol";

/// (kek id, wrapped data key) of the encounter, read through SQLCipher with the page key.
fn wrapped_dek(conn: &Connection, id: &str) -> Option<(String, Vec<u8>)> {
    conn.query_row(
        "SELECT kek_id, wrapped FROM encounter_keys WHERE encounter_id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .ok()
}

fn unwrap_dek(master: &[u8], id: &str, kek_id: &str, wrapped: &[u8]) -> Vec<u8> {
    gcm_open(
        master,
        &aad(b"edge-scribe/dek/v1", &[id.as_bytes(), kek_id.as_bytes()]),
        wrapped,
    )
    .expect("the wrapped data key opens with the master key")
}

fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// Which needles appear in any decrypted page of the database or the WAL.
fn found_in_pages(dir: &Path, key: &[u8; 32], needles: &[(&str, Vec<u8>)]) -> Vec<String> {
    let pages = decrypted_pages(dir, DB_FILE_NAME, key);
    assert!(!pages.is_empty());
    let mut found = Vec::new();
    for (label, needle) in needles {
        for (where_, page) in &pages {
            if find(page, needle).is_some() {
                found.push(format!("{label} in {where_}"));
            }
        }
    }
    found
}

#[test]
fn a_deleted_encounter_cannot_be_recovered_from_the_database_even_with_the_master_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let backup = dir.path().join("backup");
    let store = Store::open(&data).unwrap();
    let new = NewEncounter {
        source_kind: "file".to_owned(),
        consent: true,
        patient_ref: Some("MRN-SHRED-1".to_owned()),
        ..NewEncounter::default()
    };
    let kept = store.create_encounter(&new).unwrap();
    let doomed = store.create_encounter(&new).unwrap();
    let segments: Vec<StoredSegment> = (0..40)
        .map(|i| StoredSegment {
            id: format!("s{i}"),
            start_ms: i * 1_000,
            end_ms: i * 1_000 + 900,
            speaker: Some("patient".to_owned()),
            text: format!("{MARKER} number {i}"),
            confidence: None,
            overlap: false,
            speaker_corrected: false,
            original_speaker: None,
        })
        .collect();
    store.save_transcript(&kept, &segments[..2]).unwrap();
    store.save_transcript(&doomed, &segments).unwrap();
    // Audio whose raw samples spell the marker, repeated.
    let marker_samples: Vec<i16> = MARKER
        .as_bytes()
        .chunks(2)
        .map(|c| i16::from_le_bytes([c[0], *c.get(1).unwrap_or(&0)]))
        .collect();
    let audio: Vec<i16> = marker_samples
        .iter()
        .copied()
        .cycle()
        .take(16_000 * 25)
        .collect();
    store.save_audio(&doomed, &audio).unwrap();

    let db_key = database_key(&data);
    let master = master_key(&data);
    let live = store_support::keyed_conn(&data.join(DB_FILE_NAME), &db_key);
    let (kek_id, wrapped) = wrapped_dek(&live, &doomed).unwrap();
    let dek = unwrap_dek(&master, &doomed, &kek_id, &wrapped);
    // The derived key really is the encounter's: it opens a stored segment.
    let sealed_segment: Vec<u8> = live
        .query_row(
            "SELECT content FROM transcript_segments WHERE encounter_id = ?1 AND id = 's0'",
            [&doomed],
            |r| r.get(0),
        )
        .unwrap();
    let segment_aad = aad(b"edge-scribe/value/v1", &[doomed.as_bytes(), b"segment/s0"]);
    let opened = gcm_open(&dek, &segment_aad, &sealed_segment).unwrap();
    assert!(find(&opened, MARKER.as_bytes()).is_some());
    drop(live);

    // A "backup": the database and WAL files as they are now.
    fs::create_dir_all(&backup).unwrap();
    for name in [DB_FILE_NAME.to_owned(), format!("{DB_FILE_NAME}-wal")] {
        if data.join(&name).exists() {
            fs::copy(data.join(&name), backup.join(&name)).unwrap();
        }
    }

    let needles = [
        ("wrapped data key", wrapped.clone()),
        ("data key", dek.clone()),
        ("marker (utf-8)", MARKER.as_bytes().to_vec()),
        ("marker (utf-16)", utf16le(MARKER)),
    ];
    // The scanner works: before the deletion it finds the wrapped key in the decrypted pages.
    let before = found_in_pages(&data, &db_key, &needles[..1]);
    assert!(!before.is_empty(), "scanner did not find the wrapped key");
    // The marker is never in a page in clear, even before: it is sealed with the data key.
    assert!(found_in_pages(&data, &db_key, &needles[2..]).is_empty());

    store
        .delete_encounter(&doomed, &Actor::User("u-admin".to_owned()))
        .unwrap();

    let after = found_in_pages(&data, &db_key, &needles);
    assert!(after.is_empty(), "left after deletion: {after:?}");
    // Nor anywhere in the raw files (database, WAL, shm, key files).
    assert!(raw_files_contain(&data, &[MARKER]).is_empty());
    assert!(raw_files_contain_bytes(&data, &[&wrapped, &dek]).is_empty());
    let wal_len = fs::metadata(data.join(format!("{DB_FILE_NAME}-wal")))
        .map(|m| m.len())
        .unwrap_or(0);
    assert_eq!(wal_len, 0, "the WAL was truncated after the deletion");

    // The backup's sealed rows: they are there, but nothing in the live database opens them.
    let old = store_support::keyed_conn(&backup.join(DB_FILE_NAME), &db_key);
    let backup_blobs: Vec<Vec<u8>> = {
        let mut stmt = old
            .prepare(
                "SELECT content FROM transcript_segments WHERE encounter_id = ?1
                 UNION ALL SELECT sealed FROM audio_chunks WHERE encounter_id = ?1",
            )
            .unwrap();
        stmt.query_map([&doomed], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(backup_blobs.len(), 40 + 3);
    let live = store_support::keyed_conn(&data.join(DB_FILE_NAME), &db_key);
    assert!(wrapped_dek(&live, &doomed).is_none());
    let mut stmt = live
        .prepare("SELECT encounter_id, kek_id, wrapped FROM encounter_keys")
        .unwrap();
    let remaining: Vec<(String, String, Vec<u8>)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(remaining.len(), 1);
    for (id, kek, wrapped) in &remaining {
        let key = unwrap_dek(&master, id, kek, wrapped);
        assert!(gcm_open(&key, &segment_aad, &backup_blobs[0]).is_none());
    }
    // The tombstone keeps the id only, so the backup can be shredded again on restore.
    assert_eq!(store.deleted_encounters().unwrap()[0].0, doomed);
    assert!(store.verify_audit().unwrap().is_intact());
    assert_eq!(store.load_transcript(&kept).unwrap(), segments[..2]);

    // Restoring the backup and replaying the live tombstones shreds it again.
    drop(old);
    let restored_dir = dir.path().join("restored");
    fs::create_dir_all(&restored_dir).unwrap();
    for name in ["master.key", "database.key"] {
        fs::copy(data.join(name), restored_dir.join(name)).unwrap();
    }
    for entry in fs::read_dir(&backup).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), restored_dir.join(entry.file_name())).unwrap();
    }
    let restored = Store::open(&restored_dir).unwrap();
    assert_eq!(restored.load_transcript(&doomed).unwrap().len(), 40);
    assert_eq!(restored.reapply_deletions(&store).unwrap(), 1);
    assert!(restored.load_encounter(&doomed).is_err());
    assert!(found_in_pages(&restored_dir, &db_key, &needles).is_empty());
}
