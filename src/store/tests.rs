//! Store tests against real SQLCipher files in temporary directories.

use super::*;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

fn new_encounter() -> NewEncounter {
    NewEncounter {
        source_kind: "file".to_owned(),
        audio_sha256: Some("ab".repeat(32)),
        audio_duration_ms: Some(93_500),
    }
}

fn segment(id: &str, start_ms: i64, text: &str) -> StoredSegment {
    StoredSegment {
        id: id.to_owned(),
        start_ms,
        end_ms: start_ms + 1_000,
        speaker: Some("clinician".to_owned()),
        text: text.to_owned(),
        confidence: Some(0.75),
    }
}

fn draft(encounter_id: &str, body: &str) -> NewDraft {
    NewDraft {
        encounter_id: encounter_id.to_owned(),
        model: "smollm2-135m-instruct".to_owned(),
        model_sha256: "cd".repeat(32),
        template: "soap".to_owned(),
        body_json: body.to_owned(),
    }
}

/// Reads every file SQLite may have written for the database, so a check sees WAL pages too.
fn raw_database_bytes(data_dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let path = data_dir.join(format!("{DB_FILE_NAME}{suffix}"));
        if let Ok(bytes) = fs::read(&path) {
            all.extend(bytes);
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn write_key_file(data_dir: &Path, hex: &str, mode: u32) {
    let path = data_dir.join(key::KEY_FILE_NAME);
    let _ = fs::remove_file(&path);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&path)
        .unwrap();
    writeln!(f, "{hex}").unwrap();
    // The process umask may have cleared bits the test wants set.
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn round_trip_of_encounter_transcript_draft_status_and_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();

    let id = store.create_encounter(&new_encounter()).unwrap();
    let enc = store.load_encounter(&id).unwrap();
    assert_eq!(enc.id, id);
    assert_eq!(enc.source_kind, "file");
    assert_eq!(enc.audio_sha256.as_deref(), Some("ab".repeat(32).as_str()));
    assert_eq!(enc.audio_duration_ms, Some(93_500));
    assert_eq!(enc.status, EncounterStatus::Created);
    assert!(enc.created_at.ends_with('Z') && enc.created_at.contains('T'));

    assert!(store.load_transcript(&id).unwrap().is_empty());
    let segments = vec![
        segment("s-2", 0, "first in order"),
        StoredSegment {
            speaker: None,
            confidence: None,
            ..segment("s-1", 1_000, "second in order")
        },
    ];
    store.save_transcript(&id, &segments).unwrap();
    let loaded = store.load_transcript(&id).unwrap();
    assert_eq!(loaded, segments);

    // Saving again replaces, it does not append.
    let replacement = vec![segment("s-9", 5, "only one now")];
    store.save_transcript(&id, &replacement).unwrap();
    assert_eq!(store.load_transcript(&id).unwrap(), replacement);

    assert!(store.latest_draft(&id).unwrap().is_none());
    let first = store.save_draft(&draft(&id, r#"{"v":1}"#)).unwrap();
    let second = store.save_draft(&draft(&id, r#"{"v":2}"#)).unwrap();
    assert_ne!(first, second);
    let latest = store.latest_draft(&id).unwrap().unwrap();
    assert_eq!(latest.id, second);
    assert_eq!(latest.body_json, r#"{"v":2}"#);
    assert_eq!(latest.encounter_id, id);
    assert_eq!(latest.model, "smollm2-135m-instruct");

    for status in EncounterStatus::ALL {
        store.set_status(&id, status).unwrap();
        assert_eq!(store.load_encounter(&id).unwrap().status, status);
    }

    store
        .record_event(&id, "asr", r#"{"ms":1234,"segments":1}"#)
        .unwrap();
    let events = store.load_events(&id).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].stage, "asr");

    let other = store.create_encounter(&new_encounter()).unwrap();
    let listed = store.list_encounters(10).unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].id, other, "newest first");
    assert_eq!(store.list_encounters(1).unwrap().len(), 1);
}

#[test]
fn unknown_encounter_is_a_named_error_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let missing = "no-such-encounter";
    let is_unknown = |e: StoreError| matches!(e, StoreError::UnknownEncounter { .. });
    assert!(is_unknown(store.load_encounter(missing).unwrap_err()));
    assert!(is_unknown(store.load_transcript(missing).unwrap_err()));
    assert!(is_unknown(store.latest_draft(missing).unwrap_err()));
    assert!(is_unknown(store.save_transcript(missing, &[]).unwrap_err()));
    assert!(is_unknown(
        store.save_draft(&draft(missing, "{}")).unwrap_err()
    ));
    assert!(is_unknown(
        store
            .set_status(missing, EncounterStatus::Failed)
            .unwrap_err()
    ));
    assert!(is_unknown(
        store.record_event(missing, "asr", "{}").unwrap_err()
    ));
}

#[test]
fn invalid_draft_json_is_refused_and_nothing_is_saved() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let id = store.create_encounter(&new_encounter()).unwrap();
    assert!(store.save_draft(&draft(&id, "not json")).is_err());
    assert!(store.latest_draft(&id).unwrap().is_none());
}

#[test]
fn debug_output_of_patient_data_is_redacted() {
    let seg = segment("s1", 0, "MARKER-TEXT of a visit");
    let shown = format!("{seg:?}");
    assert!(!shown.contains("MARKER-TEXT") && !shown.contains("clinician"));
    assert!(shown.contains("s1"));
    let d = draft("e1", r#"{"plan":"MARKER-TEXT"}"#);
    assert!(!format!("{d:?}").contains("MARKER-TEXT"));
}

#[test]
fn data_survives_reopen_after_drop() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let store = Store::open(dir.path()).unwrap();
        let id = store.create_encounter(&new_encounter()).unwrap();
        store
            .save_transcript(&id, &[segment("a", 0, "kept across restarts")])
            .unwrap();
        store.save_draft(&draft(&id, r#"{"kept":true}"#)).unwrap();
        store.set_status(&id, EncounterStatus::Drafted).unwrap();
        id
    };
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        store.load_encounter(&id).unwrap().status,
        EncounterStatus::Drafted
    );
    let transcript = store.load_transcript(&id).unwrap();
    assert_eq!(transcript.len(), 1);
    assert_eq!(transcript[0].text, "kept across restarts");
    assert_eq!(
        store.latest_draft(&id).unwrap().unwrap().body_json,
        r#"{"kept":true}"#
    );
}

#[test]
fn files_are_private_to_the_service_user() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("nested").join("data");
    let _store = Store::open(&data_dir).unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data_dir), 0o700);
    assert_eq!(mode(&data_dir.join(key::KEY_FILE_NAME)), 0o600);
    assert_eq!(mode(&data_dir.join(DB_FILE_NAME)), 0o600);
}

#[test]
fn wrong_key_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store.create_encounter(&new_encounter()).unwrap();
    }
    write_key_file(dir.path(), &"11".repeat(32), 0o600);
    let err = Store::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, StoreError::WrongKey { .. }),
        "unexpected error: {err}"
    );
    assert!(err.to_string().contains("master.key"));
}

#[test]
fn group_readable_key_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    let key_path = dir.path().join(key::KEY_FILE_NAME);
    fs::set_permissions(&key_path, fs::Permissions::from_mode(0o640)).unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    match &err {
        StoreError::Key(KeyError::TooOpen { mode, .. }) => assert_eq!(*mode, 0o640),
        other => panic!("unexpected error: {other}"),
    }
    assert!(err.to_string().contains("chmod 600"));
}

#[test]
fn raw_database_file_does_not_contain_transcript_text() {
    const MARKER: &str = "ZEBRA-PINEAPPLE-7731 lisinopril twenty milligrams";
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        let id = store.create_encounter(&new_encounter()).unwrap();
        // Many copies so the marker would fill whole pages if it were stored in clear.
        let segments: Vec<_> = (0..200)
            .map(|i| segment(&format!("s{i}"), i * 1_000, MARKER))
            .collect();
        store.save_transcript(&id, &segments).unwrap();
        store
            .save_draft(&draft(&id, &format!(r#"{{"plan":"{MARKER}"}}"#)))
            .unwrap();

        // Check while the data may still sit in the WAL file, before the close checkpoints it.
        let live = raw_database_bytes(dir.path());
        assert!(live.len() > 4096, "database files are unexpectedly small");
        assert!(!contains(&live, MARKER.as_bytes()));
    }
    let at_rest = raw_database_bytes(dir.path());
    assert!(at_rest.len() > 4096);
    assert!(!contains(&at_rest, MARKER.as_bytes()));
    assert!(!contains(&at_rest, b"ZEBRA-PINEAPPLE"));
    // A plaintext SQLite file starts with this header; SQLCipher's starts with a random salt.
    assert!(!at_rest.starts_with(b"SQLite format 3\0"));
}

#[test]
fn databases_at_every_earlier_schema_version_migrate_forward() {
    let latest = migrations::latest_version();
    assert!(latest >= 1);
    for version in 0..latest {
        let dir = tempfile::tempdir().unwrap();
        let seeded_id = "seeded-before-upgrade";
        {
            // Build the old database by hand, keyed exactly as Store::open keys it.
            let key = MasterKey::load_or_create(dir.path()).unwrap();
            let path = dir.path().join(DB_FILE_NAME);
            let mut conn = Connection::open(&path).unwrap();
            apply_key(&conn, &key, &path).unwrap();
            migrations::migrate_to(&mut conn, version).unwrap();
            assert_eq!(migrations::user_version(&conn).unwrap(), version);
            if version >= 1 {
                // Columns of schema v1; later migrations must keep such rows readable.
                conn.execute(
                    "INSERT INTO encounters
                         (id, created_at, source_kind, audio_sha256, audio_duration_ms, status)
                     VALUES (?1, '2025-01-01T00:00:00.000Z', 'file', NULL, 1000, 'transcribed')",
                    [seeded_id],
                )
                .unwrap();
            }
        }

        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            migrations::user_version(&store.conn).unwrap(),
            latest,
            "from version {version}"
        );
        if version >= 1 {
            let seeded = store.load_encounter(seeded_id).unwrap();
            assert_eq!(seeded.status, EncounterStatus::Transcribed);
        }
        let id = store.create_encounter(&new_encounter()).unwrap();
        store
            .save_transcript(&id, &[segment("a", 0, "after upgrade")])
            .unwrap();
        store.save_draft(&draft(&id, "{}")).unwrap();
        store.record_event(&id, "asr", "{}").unwrap();
        // The audit log starts empty at the upgrade and chains from there.
        let report = store.verify_audit().unwrap();
        assert!(report.is_intact(), "from version {version}: {report:?}");
        assert_eq!(report.checked, 3, "from version {version}");
    }
}

#[test]
fn foreign_keys_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let result = store.conn.execute(
        "INSERT INTO drafts (id, encounter_id, created_at, model, model_sha256, template, body_json)
         VALUES ('d', 'missing', 'now', 'm', 's', 't', '{}')",
        [],
    );
    assert!(result.is_err(), "draft without encounter was accepted");
}

// ---- audit log ----

/// A second connection to the store's database, keyed like the store, for tampering with rows
/// the way someone holding the key file could.
fn raw_conn(data_dir: &Path) -> Connection {
    let key = MasterKey::load_or_create(data_dir).unwrap();
    let path = data_dir.join(DB_FILE_NAME);
    let conn = Connection::open(&path).unwrap();
    apply_key(&conn, &key, &path).unwrap();
    conn
}

/// What the pipeline does for one encounter; returns the encounter id. Five audit entries.
fn pipeline_like_sequence(store: &Store, transcript_text: &str) -> String {
    let id = store.create_encounter(&new_encounter()).unwrap();
    store.set_status(&id, EncounterStatus::Transcribed).unwrap();
    store
        .save_transcript(&id, &[segment("s1", 0, transcript_text)])
        .unwrap();
    store
        .save_draft(&draft(
            &id,
            r#"{"template":"soap","prompt_version":"facts-prompt-1","sections":[]}"#,
        ))
        .unwrap();
    store.set_status(&id, EncounterStatus::Drafted).unwrap();
    id
}

fn audit_rows(conn: &Connection) -> Vec<(i64, String, String, String, String)> {
    let mut stmt = conn
        .prepare("SELECT seq, actor, action, subject, detail_json FROM audit ORDER BY seq")
        .unwrap();
    stmt.query_map([], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

fn first_break(store: &Store) -> AuditBreak {
    let report = store.verify_audit().unwrap();
    match report.first_break {
        Some(broken) => broken,
        None => panic!(
            "tampering went undetected: {} entries intact",
            report.checked
        ),
    }
}

#[test]
fn untampered_audit_log_of_a_pipeline_run_verifies_and_records_each_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let id = pipeline_like_sequence(&store, "a visit");
    let report = store.verify_audit().unwrap();
    assert_eq!(
        report,
        AuditReport {
            checked: 5,
            first_break: None
        }
    );
    let rows = audit_rows(&store.conn);
    let actions: Vec<&str> = rows.iter().map(|r| r.2.as_str()).collect();
    assert_eq!(
        actions,
        [
            "encounter.created",
            "status.changed",
            "transcript.saved",
            "draft.saved",
            "status.changed"
        ]
    );
    assert!(rows.iter().all(|r| r.1 == "system" && r.3 == id));
    assert_eq!(
        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    let detail: serde_json::Value = serde_json::from_str(&rows[3].4).unwrap();
    assert_eq!(detail["model"], "smollm2-135m-instruct");
    assert_eq!(detail["model_sha256"], "cd".repeat(32));
    assert_eq!(detail["template"], "soap");
    assert_eq!(detail["prompt_version"], "facts-prompt-1");
    assert!(detail["draft_id"].is_string());
    let status: serde_json::Value = serde_json::from_str(&rows[4].4).unwrap();
    assert_eq!(status["from_status"], "transcribed");
    assert_eq!(status["to_status"], "drafted");
    let transcript: serde_json::Value = serde_json::from_str(&rows[2].4).unwrap();
    assert_eq!(transcript["segments"], 1);

    // Events from elsewhere (a failed login) chain on, and the chain survives a reopen.
    let seq = store
        .append_audit(&AuditEntry {
            actor: Actor::User("u-42".to_owned()),
            action: AuditAction::LoginFailed,
            subject: "u-42".to_owned(),
            detail: AuditDetail::default(),
        })
        .unwrap();
    assert_eq!(seq, 6);
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.verify_audit().unwrap().checked, 6);
    assert!(store.verify_audit().unwrap().is_intact());
}

#[test]
fn audit_detects_a_modified_detail() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    pipeline_like_sequence(&store, "a visit");
    raw_conn(dir.path())
        .execute(
            r#"UPDATE audit SET detail_json = '{"model":"other"}' WHERE seq = 4"#,
            [],
        )
        .unwrap();
    let broken = first_break(&store);
    assert_eq!(broken.seq, 4);
    assert_eq!(broken.reason, BreakReason::Modified);
}

#[test]
fn audit_detects_a_deleted_middle_row() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    pipeline_like_sequence(&store, "a visit");
    raw_conn(dir.path())
        .execute("DELETE FROM audit WHERE seq = 3", [])
        .unwrap();
    let broken = first_break(&store);
    assert_eq!(broken.seq, 4);
    assert_eq!(broken.reason, BreakReason::Gap { expected: 3 });
}

#[test]
fn audit_detects_a_deleted_middle_row_with_later_rows_renumbered() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    pipeline_like_sequence(&store, "a visit");
    let conn = raw_conn(dir.path());
    conn.execute("DELETE FROM audit WHERE seq = 3", []).unwrap();
    conn.execute("UPDATE audit SET seq = seq - 1 WHERE seq > 3", [])
        .unwrap();
    let broken = first_break(&store);
    assert_eq!(broken.seq, 3);
    assert_eq!(broken.reason, BreakReason::Modified, "the seq is hashed");
}

#[test]
fn audit_detects_two_rows_with_swapped_seq() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    pipeline_like_sequence(&store, "a visit");
    let conn = raw_conn(dir.path());
    conn.execute_batch(
        "UPDATE audit SET seq = -1 WHERE seq = 2;
         UPDATE audit SET seq = 2 WHERE seq = 4;
         UPDATE audit SET seq = 4 WHERE seq = -1;",
    )
    .unwrap();
    let broken = first_break(&store);
    assert_eq!(broken.seq, 2);
    assert_eq!(broken.reason, BreakReason::Modified);
}

#[test]
fn audit_detects_a_deleted_last_row_through_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    pipeline_like_sequence(&store, "a visit");
    raw_conn(dir.path())
        .execute("DELETE FROM audit WHERE seq = 5", [])
        .unwrap();
    let broken = first_break(&store);
    assert_eq!(broken.seq, 5);
    assert_eq!(
        broken.reason,
        BreakReason::TailMissing {
            head_count: 5,
            head_last_seq: 5
        }
    );

    // A later append does not paper over it: the new row follows the head, not the cut log.
    store.create_encounter(&new_encounter()).unwrap();
    let broken = first_break(&store);
    assert_eq!(broken.seq, 6);
    assert_eq!(broken.reason, BreakReason::Gap { expected: 5 });
}

#[test]
fn audit_detects_a_removed_head() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    pipeline_like_sequence(&store, "a visit");
    raw_conn(dir.path())
        .execute("DELETE FROM audit_head", [])
        .unwrap();
    assert_eq!(first_break(&store).reason, BreakReason::HeadMissing);
    assert!(matches!(
        store.create_encounter(&new_encounter()).unwrap_err(),
        StoreError::AuditHeadMissing
    ));
}

/// The limit of a chain kept inside the database: whoever holds the key can cut the tail and
/// rewind the head consistently. Catching that needs the head anchored outside the box.
#[test]
fn known_limit_a_key_holder_who_also_rewinds_the_head_is_not_detected() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    pipeline_like_sequence(&store, "a visit");
    raw_conn(dir.path())
        .execute_batch(
            "DELETE FROM audit WHERE seq = 5;
             UPDATE audit_head SET count = 4, last_seq = 4,
                 hash = (SELECT hash FROM audit WHERE seq = 4);",
        )
        .unwrap();
    assert!(store.verify_audit().unwrap().is_intact());
}

#[test]
fn audit_rows_hold_no_transcript_text() {
    const MARKER: &str = "QUOKKA-MARMALADE-4410";
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let id = pipeline_like_sequence(&store, &format!("{MARKER} metformin 500 mg"));
    store
        .save_transcript(
            &id,
            &[StoredSegment {
                speaker: Some(format!("{MARKER}-speaker")),
                ..segment("s1", 0, MARKER)
            }],
        )
        .unwrap();
    store
        .save_draft(&draft(&id, &format!(r#"{{"plan":"{MARKER}"}}"#)))
        .unwrap();
    let mut stmt = store
        .conn
        .prepare(
            "SELECT CAST(seq AS TEXT) || '|' || CAST(at_ms AS TEXT) || '|' || actor || '|' ||
                    action || '|' || subject || '|' || detail_json || '|' || prev_hash || '|' ||
                    hash FROM audit
             UNION ALL
             SELECT CAST(count AS TEXT) || '|' || CAST(last_seq AS TEXT) || '|' || hash
             FROM audit_head",
        )
        .unwrap();
    let all: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(all.len(), 8, "7 entries and the head");
    for row in &all {
        assert!(!row.contains("QUOKKA"), "audit row holds transcript text");
        assert!(
            !row.contains("metformin"),
            "audit row holds transcript text"
        );
        assert!(!row.contains("clinician"), "audit row holds a speaker");
    }
}

#[test]
fn failed_writes_leave_no_audit_entry() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let id = store.create_encounter(&new_encounter()).unwrap();
    assert!(store.save_draft(&draft(&id, "not json")).is_err());
    assert!(store.save_draft(&draft("missing", "{}")).is_err());
    assert!(store.save_transcript("missing", &[]).is_err());
    assert!(store
        .set_status("missing", EncounterStatus::Failed)
        .is_err());
    let report = store.verify_audit().unwrap();
    assert_eq!(
        report,
        AuditReport {
            checked: 1,
            first_break: None
        }
    );
}

#[test]
fn two_connections_appending_in_turn_keep_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let a = Store::open(dir.path()).unwrap();
    let b = Store::open(dir.path()).unwrap();
    for _ in 0..5 {
        a.create_encounter(&new_encounter()).unwrap();
        b.create_encounter(&new_encounter()).unwrap();
    }
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let path = dir.path().to_path_buf();
            std::thread::spawn(move || {
                let store = Store::open(&path).unwrap();
                for _ in 0..10 {
                    store.create_encounter(&new_encounter()).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let report = a.verify_audit().unwrap();
    assert_eq!(
        report,
        AuditReport {
            checked: 30,
            first_break: None
        }
    );
}
