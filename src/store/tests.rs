//! Store tests against real SQLCipher files in temporary directories.

use super::key::MasterKey;
use super::*;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

fn new_encounter() -> NewEncounter {
    NewEncounter {
        source_kind: "file".to_owned(),
        audio_sha256: Some("ab".repeat(32)),
        audio_duration_ms: Some(93_500),
        clinician_id: Some("u-clin".to_owned()),
        patient_ref: Some("MRN-0042".to_owned()),
        consent: true,
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
        overlap: false,
        speaker_corrected: false,
        original_speaker: None,
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
            overlap: true,
            speaker_corrected: true,
            original_speaker: Some("patient".to_owned()),
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
    assert_eq!(mode(&data_dir.join(DATABASE_KEY_FILE_NAME)), 0o600);
}

#[test]
fn wrong_key_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store.create_encounter(&new_encounter()).unwrap();
    }
    write_key_file(dir.path(), &"11".repeat(32), 0o600);
    // database.key names the master key it needs, so a replaced master.key is caught there.
    let err = Store::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, StoreError::NoMatchingMasterKey { .. }),
        "unexpected error: {err}"
    );
    assert!(err.to_string().contains("master.key"));

    // A database of an earlier release (keyed with master.key itself) finds out by reading.
    let legacy = tempfile::tempdir().unwrap();
    build_old_database(legacy.path(), 2);
    write_key_file(legacy.path(), &"11".repeat(32), 0o600);
    let err = Store::open(legacy.path()).unwrap_err();
    assert!(
        matches!(err, StoreError::WrongKey { .. }),
        "unexpected error: {err}"
    );
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

/// Builds a database at schema `version` the way the release that stopped there did: keyed
/// with master.key's own bytes (no database.key), tables from the migrations' SQL, rows in
/// clear. Returns what was seeded: (encounter id, segments, draft body) if `version >= 1`.
fn build_old_database(
    data_dir: &Path,
    version: u32,
) -> Option<(String, Vec<StoredSegment>, String)> {
    let key = MasterKey::load_or_create(data_dir).unwrap();
    let path = data_dir.join(DB_FILE_NAME);
    let mut conn = Connection::open(&path).unwrap();
    apply_key(&conn, &key.legacy_database_key(), &path).unwrap();
    migrations::migrate_to(&mut conn, version, None).unwrap();
    assert_eq!(migrations::user_version(&conn).unwrap(), version);
    if version == 0 {
        return None;
    }
    let id = "seeded-before-upgrade".to_owned();
    conn.execute(
        "INSERT INTO encounters
             (id, created_at, source_kind, audio_sha256, audio_duration_ms, status)
         VALUES (?1, '2025-01-01T00:00:00.000Z', 'file', NULL, 1000, 'transcribed')",
        [&id],
    )
    .unwrap();
    let segments = vec![
        segment("s1", 0, "The patient reports chest pain since Tuesday."),
        StoredSegment {
            speaker: None,
            ..segment("s2", 1_000, "Blood pressure 150 over 90 — ünïcödé ✓")
        },
    ];
    for (seq, s) in (0i64..).zip(&segments) {
        conn.execute(
            "INSERT INTO transcript_segments
                 (encounter_id, seq, id, start_ms, end_ms, speaker, text, confidence)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                id,
                seq,
                s.id,
                s.start_ms,
                s.end_ms,
                s.speaker,
                s.text,
                s.confidence
            ],
        )
        .unwrap();
    }
    let body = r#"{"prompt_version":"facts-prompt-1","plan":"start lisinopril"}"#.to_owned();
    conn.execute(
        "INSERT INTO drafts (id, encounter_id, created_at, model, model_sha256, template, body_json)
         VALUES ('d-old', ?1, '2025-01-01T00:00:01.000Z', 'm', 's', 'soap', ?2)",
        params![id, body],
    )
    .unwrap();
    Some((id, segments, body))
}

#[test]
fn databases_at_every_earlier_schema_version_migrate_forward() {
    let latest = migrations::latest_version();
    assert!(latest >= 4);
    // Versions before per-encounter keys, built the way those releases did (rows in clear).
    // Later versions are covered by envelope_era_databases_migrate_forward.
    for version in 0..4 {
        let dir = tempfile::tempdir().unwrap();
        let seeded = build_old_database(dir.path(), version);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            migrations::user_version(&store.conn).unwrap(),
            latest,
            "from version {version}"
        );
        if let Some((seeded_id, segments, body)) = &seeded {
            let enc = store.load_encounter(seeded_id).unwrap();
            assert_eq!(enc.status, EncounterStatus::Transcribed);
            assert!(!enc.consent && !enc.has_audio);
            assert_eq!(&store.load_transcript(seeded_id).unwrap(), segments);
            let d = store.latest_draft(seeded_id).unwrap().unwrap();
            assert_eq!(&d.body_json, body, "from version {version}");
            // Converted forward: sealed, and the clear columns are gone.
            let conn = raw_conn(dir.path());
            let (content, prompt): (Vec<u8>, Option<String>) = conn
                .query_row(
                    "SELECT t.content, d.prompt_version FROM transcript_segments t, drafts d
                     WHERE t.id = 's1' AND d.id = 'd-old'",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .unwrap();
            assert!(!contains(&content, b"chest pain"));
            assert_eq!(prompt.as_deref(), Some("facts-prompt-1"));
            assert!(conn
                .prepare("SELECT text FROM transcript_segments")
                .is_err());
            assert!(conn.prepare("SELECT body_json FROM drafts").is_err());
        }
        // The earlier release's page key stays (no rekey); reopening keeps working.
        assert!(!dir.path().join(DATABASE_KEY_FILE_NAME).exists() || version == 0);
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
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.load_transcript(&id).unwrap()[0].text, "after upgrade");
        if let Some((seeded_id, segments, _)) = &seeded {
            assert_eq!(&store.load_transcript(seeded_id).unwrap(), segments);
        }
    }
}

/// Databases from after per-encounter keys (version 4 on): made by this release, then taken back
/// to version `v` by undoing what later migrations add (the outbox of version 5, the admin
/// tables of version 6, the overlap and original-speaker columns of version 7), with
/// a signed-note-era encounter in them; opening migrates forward and everything reads back.
#[test]
fn envelope_era_databases_migrate_forward() {
    let latest = migrations::latest_version();
    for version in 4..latest {
        let dir = tempfile::tempdir().unwrap();
        let id = {
            let store = Store::open(dir.path()).unwrap();
            let id = store.create_encounter(&new_encounter()).unwrap();
            store
                .save_transcript(&id, &[segment("s1", 0, "sealed before the upgrade")])
                .unwrap();
            id
        };
        {
            let conn = raw_conn(dir.path());
            if version < 5 {
                conn.execute_batch("DROP TABLE outbox;").unwrap();
            }
            if version < 6 {
                conn.execute_batch(
                    "DROP TABLE config_versions; DROP TABLE badges; DROP TABLE badge_pairings;",
                )
                .unwrap();
            }
            if version < 7 {
                undo_segment_review_columns(&conn);
            }
            conn.pragma_update(None, "user_version", version).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(migrations::user_version(&store.conn).unwrap(), latest);
        assert_eq!(
            store.load_transcript(&id).unwrap()[0].text,
            "sealed before the upgrade",
            "from version {version}"
        );
        assert!(store.outbox_items(None, 10).unwrap().is_empty());
        assert!(store.badges().unwrap().is_empty());
        assert!(store.verify_audit().unwrap().is_intact());
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
    let key = crypto::database_key_for_tests(data_dir);
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

// ---- envelope encryption, audio, deletion, retention, rotation ----

fn audio(seconds: usize) -> Vec<i16> {
    (0..seconds * 16_000)
        .map(|i| i16::try_from(i % 30_000).unwrap() - 15_000)
        .collect()
}

#[test]
fn seal_and_open_round_trip_and_are_bound_to_encounter_and_purpose() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let a = store.create_encounter(&new_encounter()).unwrap();
    let b = store.create_encounter(&new_encounter()).unwrap();
    let sealed = crypto::seal(&store.conn, &a, "note_version.body/1", b"hello").unwrap();
    assert!(!contains(&sealed, b"hello"));
    assert_eq!(
        crypto::open(&store.conn, &a, "note_version.body/1", &sealed).unwrap(),
        b"hello"
    );
    assert!(matches!(
        crypto::open(&store.conn, &a, "note_version.body/2", &sealed),
        Err(StoreError::SealedValue { .. })
    ));
    assert!(matches!(
        crypto::open(&store.conn, &b, "note_version.body/1", &sealed),
        Err(StoreError::SealedValue { .. })
    ));
    let mut flipped = sealed.clone();
    *flipped.last_mut().unwrap() ^= 1;
    assert!(crypto::open(&store.conn, &a, "note_version.body/1", &flipped).is_err());
    // Two seals of the same text differ (random nonce).
    assert_ne!(
        sealed,
        crypto::seal(&store.conn, &a, "note_version.body/1", b"hello").unwrap()
    );
    let secure_delete: i64 = store
        .conn
        .query_row("PRAGMA secure_delete", [], |r| r.get(0))
        .unwrap();
    assert_eq!(secure_delete, 1);
}

#[test]
fn a_segment_moved_to_another_row_or_encounter_does_not_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let a = store.create_encounter(&new_encounter()).unwrap();
    let b = store.create_encounter(&new_encounter()).unwrap();
    store
        .save_transcript(&a, &[segment("s1", 0, "one"), segment("s2", 1, "two")])
        .unwrap();
    store
        .save_transcript(&b, &[segment("s1", 0, "other")])
        .unwrap();
    let conn = raw_conn(dir.path());
    conn.execute(
        "UPDATE transcript_segments SET content =
             (SELECT content FROM transcript_segments WHERE encounter_id = ?1 AND id = 's2')
         WHERE encounter_id = ?1 AND id = 's1'",
        [&a],
    )
    .unwrap();
    assert!(matches!(
        store.load_transcript(&a),
        Err(StoreError::SealedValue { .. })
    ));
    conn.execute(
        "UPDATE transcript_segments SET content =
             (SELECT content FROM transcript_segments WHERE encounter_id = ?1 AND id = 's1')
         WHERE encounter_id = ?2 AND id = 's1'",
        params![a, b],
    )
    .unwrap();
    let err = store.load_transcript(&b).unwrap_err();
    assert!(matches!(err, StoreError::SealedValue { .. }));
    assert!(!err.to_string().contains("one"));
}

#[test]
fn audio_is_stored_sealed_in_chunks_and_spans_read_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let id = store.create_encounter(&new_encounter()).unwrap();
    let pcm = audio(35);
    assert_eq!(
        store.save_audio(&id, &pcm).unwrap(),
        AudioOutcome::Stored { chunks: 4 }
    );
    assert!(store.load_encounter(&id).unwrap().has_audio);
    assert!(store.has_audio(&id).unwrap());
    assert_eq!(store.load_audio_span(&id, 0, 1_000).unwrap(), pcm[..16_000]);
    // Across a chunk boundary.
    assert_eq!(
        store.load_audio_span(&id, 9_500, 10_500).unwrap(),
        pcm[9_500 * 16..10_500 * 16]
    );
    // Clamped to what is stored.
    assert_eq!(
        store.load_audio_span(&id, 34_000, 60_000).unwrap(),
        pcm[34_000 * 16..]
    );
    assert!(store
        .load_audio_span(&id, 40_000, 50_000)
        .unwrap()
        .is_empty());
    assert!(matches!(
        store.load_audio_span(&id, 5, 5),
        Err(StoreError::BadAudioSpan { .. })
    ));
    let conn = raw_conn(dir.path());
    let sealed: Vec<u8> = conn
        .query_row("SELECT sealed FROM audio_chunks WHERE seq = 0", [], |r| {
            r.get(0)
        })
        .unwrap();
    let clear: Vec<u8> = pcm[..4_000].iter().flat_map(|s| s.to_le_bytes()).collect();
    assert!(!contains(&sealed, &clear[..64]));
}

#[test]
fn audio_without_consent_is_discarded_and_the_discard_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let id = store
        .create_encounter(&NewEncounter {
            consent: false,
            ..new_encounter()
        })
        .unwrap();
    assert_eq!(
        store.save_audio(&id, &audio(2)).unwrap(),
        AudioOutcome::DiscardedNoConsent
    );
    let enc = store.load_encounter(&id).unwrap();
    assert!(!enc.consent && !enc.has_audio);
    assert!(store.load_audio_span(&id, 0, 1_000).unwrap().is_empty());
    let actions: Vec<String> = audit_rows(&store.conn).into_iter().map(|r| r.2).collect();
    assert_eq!(actions, ["encounter.created", "audio.discarded"]);
}

#[test]
fn patient_ref_is_sealed_and_deleting_a_patient_removes_all_their_encounters() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mine: Vec<String> = (0..2)
        .map(|_| store.create_encounter(&new_encounter()).unwrap())
        .collect();
    let other = store
        .create_encounter(&NewEncounter {
            patient_ref: Some("MRN-9999".to_owned()),
            ..new_encounter()
        })
        .unwrap();
    for id in &mine {
        store.save_transcript(id, &[segment("s1", 0, "x")]).unwrap();
        store.save_audio(id, &audio(1)).unwrap();
    }
    assert_eq!(
        store.patient_ref(&mine[0]).unwrap().as_deref(),
        Some("MRN-0042")
    );
    assert_eq!(
        store
            .load_encounter(&mine[0])
            .unwrap()
            .clinician_id
            .as_deref(),
        Some("u-clin")
    );
    let conn = raw_conn(dir.path());
    let (sealed, lookup): (Vec<u8>, String) = conn
        .query_row(
            "SELECT patient_ref, patient_lookup FROM encounters WHERE id = ?1",
            [&mine[0]],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(!contains(&sealed, b"MRN-0042"));
    assert!(!lookup.contains("MRN") && lookup.len() == 64);

    let admin = Actor::User("u-admin".to_owned());
    assert_eq!(store.delete_patient(" MRN-0042 ", &admin).unwrap(), 2);
    for id in &mine {
        assert!(matches!(
            store.load_encounter(id),
            Err(StoreError::UnknownEncounter { .. })
        ));
    }
    assert!(store.load_encounter(&other).is_ok());
    let tombstones: Vec<String> = store
        .deleted_encounters()
        .unwrap()
        .into_iter()
        .map(|t| t.0)
        .collect();
    assert_eq!(tombstones.len(), 2);
    assert!(mine.iter().all(|id| tombstones.contains(id)));
    let left: i64 = conn
        .query_row(
            "SELECT (SELECT count(*) FROM encounter_keys) + (SELECT count(*) FROM audio_chunks)
                  + (SELECT count(*) FROM transcript_segments)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(left, 1, "only the other patient's key is left");
    let rows = audit_rows(&store.conn);
    let deleted: Vec<_> = rows
        .iter()
        .filter(|r| r.2 == "encounter.deleted" || r.2 == "patient.deleted")
        .collect();
    assert_eq!(deleted.len(), 3);
    assert!(deleted.iter().all(|r| r.1 == "user:u-admin"));
    assert!(rows
        .iter()
        .all(|r| !r.3.contains("MRN") && !r.4.contains("MRN")));
    assert!(store.verify_audit().unwrap().is_intact());
    // A second request finds nothing and says so.
    assert_eq!(store.delete_patient("MRN-0042", &admin).unwrap(), 0);
}

#[test]
fn sealed_values_kept_from_before_a_deletion_never_open_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let id = store.create_encounter(&new_encounter()).unwrap();
    store
        .save_transcript(&id, &[segment("s1", 0, "secret words")])
        .unwrap();
    let conn = raw_conn(dir.path());
    let kept: Vec<u8> = conn
        .query_row("SELECT content FROM transcript_segments", [], |r| r.get(0))
        .unwrap();
    let purpose = crypto::segment_purpose("s1");
    assert!(crypto::open(&store.conn, &id, &purpose, &kept).is_ok());

    store.delete_encounter(&id, &Actor::System).unwrap();
    assert!(matches!(
        crypto::open(&store.conn, &id, &purpose, &kept),
        Err(StoreError::DataKeyGone { .. })
    ));
    // Re-creating an encounter under the same id gets a new key, which does not open it either.
    conn.execute(
        "INSERT INTO encounters (id, created_at, source_kind, status)
         VALUES (?1, 'x', 'file', 'created')",
        [&id],
    )
    .unwrap();
    crypto::seal(&store.conn, &id, "probe", b"x").unwrap();
    assert!(matches!(
        crypto::open(&store.conn, &id, &purpose, &kept),
        Err(StoreError::SealedValue { .. })
    ));
}

#[test]
fn retention_removes_each_kind_on_its_own_clock_and_keeps_signed_notes() {
    const DAY: i64 = 86_400_000;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let now = 1_800_000_000_000i64; // injected clock
    let conn = raw_conn(dir.path());
    let mut ids = Vec::new();
    // signed 10 days ago (created 40 days ago), signed 2 days ago, unsigned 40 days old, new.
    for (created_days_ago, signed_days_ago) in [(40, Some(10)), (3, Some(2)), (40, None), (0, None)]
    {
        let id = store.create_encounter(&new_encounter()).unwrap();
        store
            .save_transcript(&id, &[segment("s1", 0, "t"), segment("s2", 1, "u")])
            .unwrap();
        store.save_audio(&id, &audio(12)).unwrap();
        store.save_draft(&draft(&id, "{}")).unwrap();
        conn.execute(
            "UPDATE encounters SET created_at = strftime('%Y-%m-%dT%H:%M:%fZ', ?2 / 1000.0, 'unixepoch')
             WHERE id = ?1",
            params![id, now - created_days_ago * DAY],
        )
        .unwrap();
        conn.execute(
            "UPDATE drafts SET created_at = strftime('%Y-%m-%dT%H:%M:%fZ', ?2 / 1000.0, 'unixepoch')
             WHERE encounter_id = ?1",
            params![id, now - created_days_ago * DAY],
        )
        .unwrap();
        if let Some(days) = signed_days_ago {
            conn.execute(
                "INSERT INTO signed_notes
                     (encounter_id, seq, kind, signed_at_ms, clinician_id, note_sha256, document)
                 VALUES (?1, 1, 'original', ?2, 'u-clin', 'h', x'00')",
                params![id, now - days * DAY],
            )
            .unwrap();
        }
        ids.push(id);
    }
    let policy = RetentionPolicy {
        audio_after_signoff_days: Some(7),
        audio_unsigned_days: Some(30),
        transcript_days: Some(30),
        unsigned_draft_days: Some(30),
        draft_after_signoff_days: None,
    };
    let report = store.apply_retention(&policy, now).unwrap();
    assert_eq!(
        report,
        RetentionReport {
            audio_encounters: 2,
            audio_chunks: 4,
            transcript_encounters: 2,
            transcript_segments: 4,
            unsigned_drafts: 1,
            signed_drafts: 0,
        }
    );
    let has = |i: usize| {
        (
            store.has_audio(&ids[i]).unwrap(),
            !store.load_transcript(&ids[i]).unwrap().is_empty(),
            store.latest_draft(&ids[i]).unwrap().is_some(),
        )
    };
    assert_eq!(has(0), (false, false, true));
    assert_eq!(has(1), (true, true, true));
    assert_eq!(has(2), (false, false, false));
    assert_eq!(has(3), (true, true, true));
    let signed: i64 = conn
        .query_row("SELECT count(*) FROM signed_notes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(signed, 2);
    // Idempotent; then drafts go at sign-off when so configured.
    assert!(store.apply_retention(&policy, now).unwrap().is_empty());
    let at_signoff = RetentionPolicy {
        draft_after_signoff_days: Some(0),
        ..RetentionPolicy::default()
    };
    assert_eq!(
        store
            .apply_retention(&at_signoff, now)
            .unwrap()
            .signed_drafts,
        2
    );
    assert!(store.verify_audit().unwrap().is_intact());
}

/// Encounters with a transcript, a draft and audio, and a check that reads them all back.
fn seed_for_rotation(store: &Store) -> Vec<String> {
    (0..3)
        .map(|i| {
            let id = store.create_encounter(&new_encounter()).unwrap();
            store
                .save_transcript(&id, &[segment("s1", 0, &format!("rotation text {i}"))])
                .unwrap();
            store
                .save_draft(&draft(&id, &format!(r#"{{"n":{i}}}"#)))
                .unwrap();
            store.save_audio(&id, &audio(1)).unwrap();
            id
        })
        .collect()
}

fn check_rotation_data(store: &Store, ids: &[String]) {
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            store.load_transcript(id).unwrap()[0].text,
            format!("rotation text {i}")
        );
        assert_eq!(
            store.latest_draft(id).unwrap().unwrap().body_json,
            format!(r#"{{"n":{i}}}"#)
        );
        assert_eq!(store.load_audio_span(id, 0, 1_000).unwrap(), audio(1));
        assert_eq!(store.patient_ref(id).unwrap().as_deref(), Some("MRN-0042"));
    }
    assert!(store.verify_audit().unwrap().is_intact());
}

fn kek_of_file(path: &Path) -> String {
    MasterKey::load(path).unwrap().kek_id()
}

#[test]
fn key_rotation_survives_a_crash_after_every_step_and_finishes_when_run_again() {
    let steps = [
        RotationStep::NewKeyWritten,
        RotationStep::DatabaseKeyRewrapped,
        RotationStep::RowsRewrapped,
        RotationStep::Finished,
    ];
    for legacy in [false, true] {
        for step in steps {
            let dir = tempfile::tempdir().unwrap();
            if legacy {
                build_old_database(dir.path(), 2);
            }
            let ids = {
                let store = Store::open(dir.path()).unwrap();
                seed_for_rotation(&store)
            };
            let old = kek_of_file(&dir.path().join(key::KEY_FILE_NAME));
            {
                let store = Store::open(dir.path()).unwrap();
                let report = store.rotate_master_key_until(step).unwrap();
                assert_eq!(report.old_kek_id, old);
                // "Crash": the store is dropped right after the step.
            }
            let store = Store::open(dir.path()).unwrap();
            check_rotation_data(&store, &ids);
            // New data written mid-rotation must survive its completion too.
            let late = store.create_encounter(&new_encounter()).unwrap();
            store
                .save_transcript(&late, &[segment("s1", 0, "late")])
                .unwrap();
            let report = store.rotate_master_key().unwrap();
            assert_ne!(report.new_kek_id, old, "{step:?}");
            assert!(!report.credential_needs_update);
            drop(store);

            assert!(!dir.path().join(key::NEW_KEY_FILE_NAME).exists());
            let new = kek_of_file(&dir.path().join(key::KEY_FILE_NAME));
            assert_eq!(new, report.new_kek_id, "{step:?}");
            let store = Store::open(dir.path()).unwrap();
            check_rotation_data(&store, &ids);
            assert_eq!(store.load_transcript(&late).unwrap()[0].text, "late");
            let keks: Vec<String> = {
                let mut stmt = store
                    .conn
                    .prepare("SELECT DISTINCT kek_id FROM encounter_keys")
                    .unwrap();
                stmt.query_map([], |r| r.get(0))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect()
            };
            assert_eq!(keks, std::slice::from_ref(&new), "legacy {legacy} {step:?}");
            let db_key_file = fs::read_to_string(dir.path().join(DATABASE_KEY_FILE_NAME)).unwrap();
            assert!(db_key_file.contains(&new));
        }
    }
}

#[test]
fn master_key_from_a_systemd_credential_and_rotation_away_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let creds = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_key_file(creds.path(), &"5a".repeat(32), 0o400);
    let ids = {
        let store = Store::open_with_credentials(&data, Some(creds.path())).unwrap();
        seed_for_rotation(&store)
    };
    assert!(
        !data.join(key::KEY_FILE_NAME).exists(),
        "no key file beside a credential"
    );
    let store = Store::open_with_credentials(&data, Some(creds.path())).unwrap();
    check_rotation_data(&store, &ids);
    let report = store.rotate_master_key().unwrap();
    assert!(report.credential_needs_update);
    drop(store);
    // The credential is stale now; the rotated key in data_dir opens the database.
    let store = Store::open_with_credentials(&data, Some(creds.path())).unwrap();
    check_rotation_data(&store, &ids);
    drop(store);

    // A credential that is a symlink is refused.
    let other = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        creds.path().join(key::CREDENTIAL_NAME),
        other.path().join(key::CREDENTIAL_NAME),
    )
    .unwrap();
    let err = Store::open_with_credentials(&dir.path().join("d2"), Some(other.path())).unwrap_err();
    assert!(
        matches!(err, StoreError::Key(KeyError::NotAFile { .. })),
        "{err}"
    );
}

// ---- overlap flags and speaker corrections ----

/// Takes a database back to before version 7: the segment columns it added are dropped.
fn undo_segment_review_columns(conn: &Connection) {
    conn.execute_batch(
        "ALTER TABLE transcript_segments DROP COLUMN overlap;
         ALTER TABLE transcript_segments DROP COLUMN original_speaker;",
    )
    .unwrap();
}

fn audit_entries_of(store: &Store, action: AuditAction) -> Vec<serde_json::Value> {
    audit_rows(&store.conn)
        .into_iter()
        .filter(|r| r.2 == action.as_str())
        .map(|r| serde_json::from_str(&r.4).unwrap())
        .collect()
}

#[test]
fn transcripts_from_before_overlap_flags_migrate_forward_and_take_corrections() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let store = Store::open(dir.path()).unwrap();
        let id = store.create_encounter(&new_encounter()).unwrap();
        store
            .save_transcript(
                &id,
                &[
                    segment("s1", 0, "stored at v6"),
                    segment("s2", 1_000, "two"),
                ],
            )
            .unwrap();
        id
    };
    {
        let conn = raw_conn(dir.path());
        undo_segment_review_columns(&conn);
        conn.pragma_update(None, "user_version", 6).unwrap();
        assert!(conn
            .prepare("SELECT overlap FROM transcript_segments")
            .is_err());
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(migrations::user_version(&store.conn).unwrap(), 7);
    let loaded = store.load_transcript(&id).unwrap();
    assert_eq!(
        loaded,
        vec![
            segment("s1", 0, "stored at v6"),
            segment("s2", 1_000, "two")
        ],
        "old segments read back with no overlap and no correction"
    );
    let corrected = store
        .correct_speaker(&id, "s2", "patient", &Actor::User("u-clin".into()))
        .unwrap();
    assert_eq!(corrected.speaker.as_deref(), Some("patient"));
    assert_eq!(corrected.original_speaker.as_deref(), Some("clinician"));
    store
        .save_transcript(
            &id,
            &[StoredSegment {
                overlap: true,
                ..segment("s1", 0, "saved after the upgrade")
            }],
        )
        .unwrap();
    assert!(store.load_transcript(&id).unwrap()[0].overlap);
    assert!(store.verify_audit().unwrap().is_intact());
}

#[test]
fn a_speaker_correction_reseals_the_segment_keeps_the_pipelines_label_and_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let id = store.create_encounter(&new_encounter()).unwrap();
    let original = vec![
        segment("s1", 0, "how is the knee"),
        StoredSegment {
            speaker: Some("patient".into()),
            overlap: true,
            ..segment("s2", 1_000, "OKAPI-LANTERN it still aches")
        },
    ];
    store.save_transcript(&id, &original).unwrap();
    let who = Actor::User("u-clin".into());

    let changed = store.correct_speaker(&id, "s2", "other-2", &who).unwrap();
    let loaded = store.load_transcript(&id).unwrap();
    assert_eq!(loaded[1], changed);
    assert_eq!(
        loaded[1],
        StoredSegment {
            speaker: Some("other-2".into()),
            speaker_corrected: true,
            original_speaker: Some("patient".into()),
            ..original[1].clone()
        },
        "text, times and overlap stay; the pipeline's label is kept"
    );
    assert_eq!(loaded[0], original[0], "other segments are untouched");

    // A second correction keeps the pipeline's label, not the first correction's.
    store.correct_speaker(&id, "s2", "clinician", &who).unwrap();
    let loaded = store.load_transcript(&id).unwrap();
    assert_eq!(loaded[1].speaker.as_deref(), Some("clinician"));
    assert_eq!(loaded[1].original_speaker.as_deref(), Some("patient"));
    // The kept label is sealed like the segment, bound to its row.
    let conn = raw_conn(dir.path());
    let kept: Vec<u8> = conn
        .query_row(
            "SELECT original_speaker FROM transcript_segments WHERE id = 's2'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(!contains(&kept, b"patient"));

    // Choosing the pipeline's label again undoes the correction; the same label writes nothing.
    store.correct_speaker(&id, "s2", "patient", &who).unwrap();
    assert_eq!(store.load_transcript(&id).unwrap(), original);
    let before = audit_rows(&store.conn).len();
    store.correct_speaker(&id, "s2", "patient", &who).unwrap();
    assert_eq!(audit_rows(&store.conn).len(), before);

    let details = audit_entries_of(&store, AuditAction::SpeakerCorrected);
    let labels: Vec<(&str, &str)> = details
        .iter()
        .map(|d| {
            assert_eq!(d["segment_id"], "s2");
            (
                d["from_speaker"].as_str().unwrap(),
                d["to_speaker"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        labels,
        [
            ("patient", "other-2"),
            ("other-2", "clinician"),
            ("clinician", "patient")
        ]
    );
    for row in audit_rows(&store.conn) {
        assert!(
            !row.4.contains("OKAPI") && !row.4.contains("aches"),
            "{row:?}"
        );
    }
    assert!(store.verify_audit().unwrap().is_intact());
}

#[test]
fn a_speaker_correction_refuses_bad_labels_unknown_rows_and_signed_encounters() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let id = store.create_encounter(&new_encounter()).unwrap();
    const MARKER: &str = "WOMBAT-TRELLIS";
    store
        .save_transcript(
            &id,
            &[StoredSegment {
                // A label stored by other means, not a role.
                speaker: Some(format!("{MARKER} the neighbour")),
                ..segment("s1", 0, "words")
            }],
        )
        .unwrap();
    let who = Actor::User("u-clin".into());
    for bad in [
        "",
        "Dr Jones",
        "other-",
        "other-x1",
        "other-1234",
        "patient ",
    ] {
        assert!(
            matches!(
                store.correct_speaker(&id, "s1", bad, &who),
                Err(StoreError::NotASpeakerRole)
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        store.correct_speaker(&id, "s9", "patient", &who),
        Err(StoreError::UnknownSegment { .. })
    ));
    assert!(matches!(
        store.correct_speaker("missing", "s1", "patient", &who),
        Err(StoreError::UnknownEncounter { .. })
    ));
    assert!(audit_entries_of(&store, AuditAction::SpeakerCorrected).is_empty());

    // A label that is not a role never reaches the audit log; the new role does.
    store.correct_speaker(&id, "s1", "other-1", &who).unwrap();
    let details = audit_entries_of(&store, AuditAction::SpeakerCorrected);
    assert_eq!(details.len(), 1);
    assert_eq!(details[0].get("from_speaker"), None);
    assert_eq!(details[0]["to_speaker"], "other-1");
    let loaded = store.load_transcript(&id).unwrap();
    assert_eq!(
        loaded[0].original_speaker.as_deref(),
        Some(format!("{MARKER} the neighbour").as_str())
    );
    for row in audit_rows(&store.conn) {
        assert!(!row.4.contains(MARKER), "{row:?}");
    }

    // Once signed, the transcript is part of the record.
    store
        .save_signed_note(
            &id,
            &review::NewSignedNote {
                kind: review::SignedKind::Original,
                signed_at_ms: now_ms(),
                clinician_id: "u-clin".into(),
                note_sha256: "ef".repeat(32),
                document: "{}".into(),
                version: None,
                ai: review::ChangeCounts::default(),
            },
            None,
            &[],
        )
        .unwrap();
    assert!(matches!(
        store.correct_speaker(&id, "s1", "patient", &who),
        Err(StoreError::AlreadySigned { .. })
    ));
    assert_eq!(
        store.load_transcript(&id).unwrap()[0].speaker.as_deref(),
        Some("other-1")
    );
}
