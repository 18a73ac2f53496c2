//! The encrypted local database: encounters, their transcripts and drafts, processing timings
//! and the hash-chained audit log ([`audit`]). This is the only module that talks to SQLite or
//! handles database keys. Every write that changes patient records appends its audit entry in
//! the same transaction.
//!
//! The database is a SQLCipher file, `<data_dir>/edge-scribe.db`, keyed with the master key from
//! [`key`]. Opening it creates what is missing, refuses a key file that others could read or a
//! key that does not fit, and brings the schema up to date ([`migrations`]). The store speaks in
//! plain structs (string ids, milliseconds) so it depends on no other part of the pipeline.
//!
//! What it may not do: write anything to logs or errors but ids, counts and paths — transcript
//! text, speakers and draft bodies are patient data and stay inside the encrypted file; and
//! accept a plaintext database (a build without SQLCipher is refused at open).

pub mod admin;
pub mod audit;
pub mod backup;
pub(crate) mod crypto;
pub mod key;
mod lifecycle;
pub mod lock;
mod migrations;
pub mod outbox;
pub mod review;
pub mod users;

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{
    params, Connection, ErrorCode, OptionalExtension, Row, Transaction, TransactionBehavior,
};
use serde::{Deserialize, Serialize};

pub use self::audit::{
    Actor, AuditAction, AuditBreak, AuditDetail, AuditEntry, AuditReport, BreakReason,
};
use self::crypto::{EncounterCipher, KeyRing};
pub use self::crypto::{RotationReport, RotationStep, DATABASE_KEY_FILE_NAME};
use self::key::{DatabaseKey, KeyError};
pub use self::lifecycle::{AudioOutcome, RetentionPolicy, RetentionReport, AUDIO_SAMPLE_RATE};
pub use self::migrations::MigrationError;

/// File name of the database inside the data directory.
pub const DB_FILE_NAME: &str = "edge-scribe.db";

/// How long a write waits for another connection's lock before failing. Long enough to ride out
/// a WAL checkpoint, short enough that a stuck process shows up as an error, not a hang.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Timestamps are made by SQLite, in UTC with milliseconds, so every row uses one clock and one
/// format (RFC 3339, which also sorts correctly as text).
const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

/// Everything that can go wrong in the store. Messages name paths and ids, never content.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "could not create the data directory {path}: {source}; check that the service user may \
         write to its parent directory"
    )]
    CreateDataDir { path: PathBuf, source: io::Error },

    #[error(transparent)]
    Key(#[from] KeyError),

    #[error(
        "could not open the database {path}: {source}; check free disk space and that the \
         service user owns the data directory"
    )]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },

    #[error(
        "could not make the database {path} private (mode 600): {source}; check that the \
         service user owns it"
    )]
    Permissions { path: PathBuf, source: io::Error },

    #[error(
        "the database {path} cannot be read with the key in master.key beside it: the key file \
         was replaced or the database is damaged. Restore the master.key that belongs to this \
         database from your backup; do not delete either file"
    )]
    WrongKey { path: PathBuf },

    #[error(
        "this edge-scribe binary was built without SQLCipher and would store patient data \
         unencrypted, so it refuses to open the database; install an official build"
    )]
    NoEncryption,

    #[error("the database {path} could not be brought up to date: {source}")]
    Migration {
        path: PathBuf,
        #[source]
        source: MigrationError,
    },

    #[error(
        "there is no database at {path}; check --data-dir or storage.data_dir in the \
         configuration"
    )]
    NoDatabase { path: PathBuf },

    #[error(
        "the audit log's head record is missing, so no audit entry can be written; the audit \
         table was tampered with: run `edge-scribe audit verify` and restore the database from \
         a backup"
    )]
    AuditHeadMissing,

    #[error("could not encode an audit entry's details: {0}; report this with the log")]
    AuditEncode(serde_json::Error),

    #[error("no encounter with id {id} in the database")]
    UnknownEncounter { id: String },

    #[error("that user name is already taken")]
    UsernameTaken,

    #[error("no outbox item with id {id}")]
    UnknownOutboxItem { id: String },

    #[error("outbox item {id} is {state}; only a dead or queued item can be retried or cancelled")]
    DeliveryNotPending { id: String, state: &'static str },

    #[error(
        "the note changed since version {base} was loaded (latest is {latest}); reload and \
         apply your changes again"
    )]
    VersionConflict { base: u32, latest: u32 },

    #[error("encounter {id} is signed; a signed note cannot change, add an addendum instead")]
    AlreadySigned { id: String },

    #[error("encounter {id} is not signed yet; an addendum needs a signed note")]
    NotSigned { id: String },

    #[error("encounter {encounter_id} has no transcript segment {segment_id}")]
    UnknownSegment {
        encounter_id: String,
        segment_id: String,
    },

    #[error("a speaker is one of clinician, patient, unknown or other-N (N a number)")]
    NotASpeakerRole,

    #[error(
        "the database holds a value this release does not understand ({what}); it was probably \
         written by a newer release: install that release again"
    )]
    Unrecognised { what: String },

    #[error(
        "the data key of encounter {encounter_id} is gone: its content was deleted \
         (crypto-shredded) and cannot be read any more"
    )]
    DataKeyGone { encounter_id: String },

    #[error(
        "a sealed value of encounter {encounter_id} ({purpose}) does not open with its key: it \
         was damaged or moved from another row; restore the database from a backup"
    )]
    SealedValue {
        encounter_id: String,
        purpose: String,
    },

    #[error(
        "no available master key has id {kek_id}, which {path} (or a row of the database) needs; \
         restore the master.key that belongs to this database from your backup (or the \
         systemd credential), do not generate a new one"
    )]
    NoMatchingMasterKey { kek_id: String, path: PathBuf },

    #[error("the database key file {path} cannot be used: {problem}; restore it from your backup")]
    DatabaseKeyFile {
        path: PathBuf,
        problem: &'static str,
    },

    #[error(
        "key rotation failed at '{step}' ({path}): {source}; the database still opens with the \
         keys on disk; fix the cause and run the rotation again to finish it"
    )]
    KeyRotation {
        step: &'static str,
        path: PathBuf,
        source: io::Error,
    },

    #[error("the draft body is not valid JSON: {0}")]
    InvalidJson(serde_json::Error),

    #[error(
        "the audio span {start_ms}..{end_ms} ms is not a valid range; ask for start < end, both \
         at or after 0"
    )]
    BadAudioSpan { start_ms: i64, end_ms: i64 },

    #[error("internal error: a database connection has no key ring (not opened by Store::open)")]
    NoKeyRing,

    #[error("database operation failed: {0}; if it repeats, check disk space and the system log")]
    Sqlite(#[from] rusqlite::Error),
}

/// Milliseconds since the Unix epoch, for columns that sort and compare times as numbers.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// An encounter's id: a random UUID, carrying no patient information, so it may be logged.
pub type EncounterId = String;

/// Where an encounter is in the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EncounterStatus {
    /// Recorded or imported; nothing processed yet.
    Created,
    Transcribing,
    Transcribed,
    Drafting,
    Drafted,
    /// A stage failed; `processing_events` says which.
    Failed,
}

impl EncounterStatus {
    pub const ALL: [EncounterStatus; 6] = [
        EncounterStatus::Created,
        EncounterStatus::Transcribing,
        EncounterStatus::Transcribed,
        EncounterStatus::Drafting,
        EncounterStatus::Drafted,
        EncounterStatus::Failed,
    ];

    /// The spelling stored in the database. Stable: changing one needs a migration.
    pub fn as_str(self) -> &'static str {
        match self {
            EncounterStatus::Created => "created",
            EncounterStatus::Transcribing => "transcribing",
            EncounterStatus::Transcribed => "transcribed",
            EncounterStatus::Drafting => "drafting",
            EncounterStatus::Drafted => "drafted",
            EncounterStatus::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<EncounterStatus, StoreError> {
        EncounterStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| StoreError::Unrecognised {
                what: format!("encounter status {s:?}"),
            })
    }
}

/// What the caller knows about a new encounter; the store adds the id, time and status.
/// `Debug` hides the patient reference.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct NewEncounter {
    /// How the audio came in, e.g. `"file"` or `"device"`.
    pub source_kind: String,
    pub audio_sha256: Option<String>,
    pub audio_duration_ms: Option<i64>,
    /// The user id of the clinician the encounter belongs to.
    pub clinician_id: Option<String>,
    /// The patient's identifier (e.g. an MRN): patient data, stored sealed, plus a keyed hash
    /// so that [`Store::delete_patient`] finds the patient's encounters.
    pub patient_ref: Option<String>,
    /// Whether the patient consented to the recording being kept. Without it,
    /// [`Store::save_audio`] discards the audio (and audits that).
    pub consent: bool,
}

impl fmt::Debug for NewEncounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewEncounter")
            .field("source_kind", &self.source_kind)
            .field("audio_sha256", &self.audio_sha256)
            .field("audio_duration_ms", &self.audio_duration_ms)
            .field("clinician_id", &self.clinician_id)
            .field(
                "patient_ref",
                &self.patient_ref.as_ref().map(|s| Redacted(s.len())),
            )
            .field("consent", &self.consent)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Encounter {
    pub id: EncounterId,
    /// RFC 3339 UTC, e.g. `2025-01-31T14:03:07.123Z`.
    pub created_at: String,
    pub source_kind: String,
    pub audio_sha256: Option<String>,
    pub audio_duration_ms: Option<i64>,
    pub status: EncounterStatus,
    pub clinician_id: Option<String>,
    /// Whether consent to keep the recording was recorded.
    pub consent: bool,
    /// Whether (sealed) audio is stored: consent was given and retention has not removed it.
    pub has_audio: bool,
}

/// One transcript segment as stored. Its position in the slice given to
/// [`Store::save_transcript`] is its order. `Debug` shows only lengths of the text and speakers,
/// which are patient data and must not reach a log by way of `{:?}`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredSegment {
    /// Unique within the encounter.
    pub id: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub speaker: Option<String>,
    pub text: String,
    pub confidence: Option<f64>,
    /// Another voice talks during part of this segment (room audio). A property of the sound,
    /// not patient text: stored in clear.
    #[serde(default)]
    pub overlap: bool,
    /// A clinician corrected `speaker` at review ([`Store::correct_speaker`]).
    #[serde(default)]
    pub speaker_corrected: bool,
    /// The speaker the pipeline gave, if `speaker_corrected` (sealed like `speaker`).
    #[serde(default)]
    pub original_speaker: Option<String>,
}

/// A draft note to save. `Debug` hides the body, which is patient data.
#[derive(Clone, PartialEq, Eq)]
pub struct NewDraft {
    pub encounter_id: EncounterId,
    /// The model's name, e.g. `smollm2-135m-instruct`.
    pub model: String,
    pub model_sha256: String,
    pub template: String,
    /// The note as JSON; SQLite refuses text that is not valid JSON.
    pub body_json: String,
}

/// A saved draft. `Debug` hides the body, which is patient data.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct Draft {
    pub id: String,
    pub encounter_id: EncounterId,
    pub created_at: String,
    pub model: String,
    pub model_sha256: String,
    pub template: String,
    pub body_json: String,
}

/// Stands in for patient text in `Debug` output: its length only.
struct Redacted(usize);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes redacted>", self.0)
    }
}

impl fmt::Debug for StoredSegment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredSegment")
            .field("id", &self.id)
            .field("start_ms", &self.start_ms)
            .field("end_ms", &self.end_ms)
            .field("speaker", &self.speaker.as_ref().map(|s| Redacted(s.len())))
            .field("text", &Redacted(self.text.len()))
            .field("confidence", &self.confidence)
            .field("overlap", &self.overlap)
            .field("speaker_corrected", &self.speaker_corrected)
            .field(
                "original_speaker",
                &self.original_speaker.as_ref().map(|s| Redacted(s.len())),
            )
            .finish()
    }
}

impl fmt::Debug for NewDraft {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewDraft")
            .field("encounter_id", &self.encounter_id)
            .field("model", &self.model)
            .field("model_sha256", &self.model_sha256)
            .field("template", &self.template)
            .field("body_json", &Redacted(self.body_json.len()))
            .finish()
    }
}

impl fmt::Debug for Draft {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Draft")
            .field("id", &self.id)
            .field("encounter_id", &self.encounter_id)
            .field("created_at", &self.created_at)
            .field("model", &self.model)
            .field("model_sha256", &self.model_sha256)
            .field("template", &self.template)
            .field("body_json", &Redacted(self.body_json.len()))
            .finish()
    }
}

/// A timing or count from one pipeline stage. `detail_json` must hold no patient content: ids,
/// durations, counts and model names only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessingEvent {
    pub encounter_id: EncounterId,
    pub at: String,
    pub stage: String,
    pub detail_json: String,
}

/// An open, keyed and migrated database.
///
/// Not `Sync`: share it behind a `Mutex`, or open one `Store` per thread (WAL mode lets readers
/// and a writer work side by side). Methods take `&self`; each write is its own transaction.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// The master keys and derived keys of this database, shared with `crypto::seal`/`open`.
    keys: Arc<KeyRing>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if needed) the database in `data_dir`. The master key comes from the
    /// systemd credential `master.key` when `$CREDENTIALS_DIRECTORY` holds one, else from
    /// `data_dir/master.key` (created on first start); see [`key`].
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        let credentials = std::env::var_os(key::CREDENTIALS_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        Store::open_with_credentials(data_dir, credentials.as_deref())
    }

    /// [`Store::open`] with the credentials directory given instead of read from the
    /// environment (tests, and callers that resolved it already).
    pub fn open_with_credentials(
        data_dir: &Path,
        credentials_dir: Option<&Path>,
    ) -> Result<Store, StoreError> {
        create_private_dir(data_dir)?;
        let path = data_dir.join(DB_FILE_NAME);
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        // A zero-length file is what an interrupted first open leaves: still a new database.
        let existed = fs::metadata(&path).map(|m| m.len() > 0).unwrap_or(false);
        let open_conn = || -> Result<Connection, StoreError> {
            let conn = Connection::open(&path).map_err(open_err)?;
            // SQLite gives the -wal and -shm files the database file's mode, so this covers them.
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(|source| {
                StoreError::Permissions {
                    path: path.clone(),
                    source,
                }
            })?;
            require_sqlcipher(&conn)?;
            Ok(conn)
        };
        let key_it = |conn: &Connection, key: &DatabaseKey| apply_key(conn, key, &path);
        let (mut conn, keys) = crypto::unlock(
            data_dir,
            credentials_dir,
            &path,
            existed,
            &open_conn,
            &key_it,
        )?
        .register()?;

        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        let journal: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(open_err)?;
        if !journal.eq_ignore_ascii_case("wal") {
            tracing::warn!(journal_mode = %journal, "database did not switch to WAL mode");
        }
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(open_err)?;
        // Deleted rows are overwritten with zeros, not just unlinked, so that a deletion (and
        // the checkpoint after it) leaves no old cell content in the file.
        conn.pragma_update(None, "secure_delete", true)
            .map_err(open_err)?;

        let from =
            migrations::migrate(&mut conn, &keys).map_err(|source| StoreError::Migration {
                path: path.clone(),
                source,
            })?;
        crypto::init_key_state(&conn, &keys)?;
        tracing::info!(
            path = %path.display(),
            schema_from = from,
            schema = migrations::latest_version(),
            "database opened"
        );
        Ok(Store { conn, path, keys })
    }

    /// Like [`Store::open`], but fails with `NoDatabase` instead of creating a new, empty
    /// database, for commands that inspect one (an empty new log would "verify" vacuously).
    pub fn open_existing(data_dir: &Path) -> Result<Store, StoreError> {
        let path = data_dir.join(DB_FILE_NAME);
        if !path.is_file() {
            return Err(StoreError::NoDatabase { path });
        }
        Store::open(data_dir)
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records a new encounter with status `created` and returns its fresh id.
    pub fn create_encounter(&self, new: &NewEncounter) -> Result<EncounterId, StoreError> {
        let id = uuid::Uuid::new_v4().to_string();
        let tx = self.write_transaction()?;
        tx.execute(
            &format!(
                "INSERT INTO encounters
                     (id, created_at, source_kind, audio_sha256, audio_duration_ms, status,
                      clinician_id, consent)
                 VALUES (?1, {NOW}, ?2, ?3, ?4, ?5, ?6, ?7)"
            ),
            params![
                id,
                new.source_kind,
                new.audio_sha256,
                new.audio_duration_ms,
                EncounterStatus::Created.as_str(),
                new.clinician_id,
                new.consent,
            ],
        )?;
        // The data key is made with the encounter, so every later write only unwraps it.
        let cipher = crypto::encounter_cipher(&tx, &self.keys, &id, true)?;
        if let Some(patient_ref) = new.patient_ref.as_deref() {
            let sealed = cipher.seal(PATIENT_REF_PURPOSE, patient_ref.trim().as_bytes())?;
            tx.execute(
                "UPDATE encounters SET patient_ref = ?2, patient_lookup = ?3 WHERE id = ?1",
                params![id, sealed, self.keys.patient_lookup(patient_ref)],
            )?;
        }
        audit::append_in(
            &tx,
            &AuditEntry {
                actor: Actor::System,
                action: AuditAction::EncounterCreated,
                subject: id.clone(),
                detail: AuditDetail {
                    source_kind: Some(new.source_kind.clone()),
                    audio_sha256: new.audio_sha256.clone(),
                    user_id: new.clinician_id.clone(),
                    consent: Some(new.consent),
                    ..AuditDetail::default()
                },
            },
        )?;
        tx.commit()?;
        Ok(id)
    }

    /// Replaces the encounter's whole transcript with `segments`, atomically: readers see the
    /// old transcript or the new one, never a mix.
    pub fn save_transcript(
        &self,
        encounter_id: &str,
        segments: &[StoredSegment],
    ) -> Result<(), StoreError> {
        let tx = self.write_transaction()?;
        ensure_encounter(&tx, encounter_id)?;
        tx.execute(
            "DELETE FROM transcript_segments WHERE encounter_id = ?1",
            [encounter_id],
        )?;
        {
            let cipher = crypto::encounter_cipher(&tx, &self.keys, encounter_id, true)?;
            let mut insert = tx.prepare(
                "INSERT INTO transcript_segments
                     (encounter_id, seq, id, start_ms, end_ms, content, confidence, overlap,
                      original_speaker)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            for (seq, s) in (0i64..).zip(segments) {
                let content = cipher.seal(
                    &crypto::segment_purpose(&s.id),
                    &crypto::encode_segment(s.speaker.as_deref(), &s.text),
                )?;
                let original = s
                    .speaker_corrected
                    .then(|| {
                        cipher.seal(
                            &crypto::original_speaker_purpose(&s.id),
                            &crypto::encode_segment(s.original_speaker.as_deref(), ""),
                        )
                    })
                    .transpose()?;
                insert.execute(params![
                    encounter_id,
                    seq,
                    s.id,
                    s.start_ms,
                    s.end_ms,
                    content,
                    s.confidence,
                    s.overlap,
                    original,
                ])?;
            }
        }
        audit::append_in(
            &tx,
            &AuditEntry {
                actor: Actor::System,
                action: AuditAction::TranscriptSaved,
                subject: encounter_id.to_owned(),
                detail: AuditDetail {
                    segments: Some(segments.len() as u64),
                    ..AuditDetail::default()
                },
            },
        )?;
        tx.commit()?;
        tracing::debug!(encounter = %encounter_id, segments = segments.len(), "transcript saved");
        Ok(())
    }

    /// Saves a draft and returns its fresh id. Earlier drafts are kept. The audit entry names
    /// the model, its sha256, the template and the body's `prompt_version` if it has one.
    pub fn save_draft(&self, draft: &NewDraft) -> Result<String, StoreError> {
        let id = uuid::Uuid::new_v4().to_string();
        // The body is sealed, so SQLite can no longer check it: parse it here, and take the
        // prompt version (a string only) before sealing.
        let body: serde_json::Value =
            serde_json::from_str(&draft.body_json).map_err(StoreError::InvalidJson)?;
        let prompt_version = body
            .get("prompt_version")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned);
        let tx = self.write_transaction()?;
        ensure_encounter(&tx, &draft.encounter_id)?;
        let sealed = crypto::encounter_cipher(&tx, &self.keys, &draft.encounter_id, true)?
            .seal(&crypto::draft_purpose(&id), draft.body_json.as_bytes())?;
        tx.execute(
            &format!(
                "INSERT INTO drafts
                     (id, encounter_id, created_at, model, model_sha256, template, body,
                      prompt_version)
                 VALUES (?1, ?2, {NOW}, ?3, ?4, ?5, ?6, ?7)"
            ),
            params![
                id,
                draft.encounter_id,
                draft.model,
                draft.model_sha256,
                draft.template,
                sealed,
                prompt_version,
            ],
        )?;
        audit::append_in(
            &tx,
            &AuditEntry {
                actor: Actor::System,
                action: AuditAction::DraftSaved,
                subject: draft.encounter_id.clone(),
                detail: AuditDetail {
                    draft_id: Some(id.clone()),
                    model: Some(draft.model.clone()),
                    model_sha256: Some(draft.model_sha256.clone()),
                    template: Some(draft.template.clone()),
                    prompt_version,
                    ..AuditDetail::default()
                },
            },
        )?;
        tx.commit()?;
        Ok(id)
    }

    pub fn set_status(
        &self,
        encounter_id: &str,
        status: EncounterStatus,
    ) -> Result<(), StoreError> {
        let tx = self.write_transaction()?;
        let from: String = tx
            .query_row(
                "SELECT status FROM encounters WHERE id = ?1",
                [encounter_id],
                |row| row.get(0),
            )
            .optional()?
            .ok_or_else(|| unknown(encounter_id))?;
        tx.execute(
            "UPDATE encounters SET status = ?2 WHERE id = ?1",
            params![encounter_id, status.as_str()],
        )?;
        audit::append_in(
            &tx,
            &AuditEntry {
                actor: Actor::System,
                action: AuditAction::StatusChanged,
                subject: encounter_id.to_owned(),
                detail: AuditDetail {
                    from_status: Some(from),
                    to_status: Some(status.as_str().to_owned()),
                    ..AuditDetail::default()
                },
            },
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Appends one audit entry in its own transaction and returns its seq. Store writes audit
    /// themselves; this is for events that change nothing else (a view, a failed login).
    pub fn append_audit(&self, entry: &AuditEntry) -> Result<i64, StoreError> {
        let tx = self.write_transaction()?;
        let seq = audit::append_in(&tx, entry)?;
        tx.commit()?;
        Ok(seq)
    }

    /// Walks the audit chain and reports the first broken entry, if any. Reads one snapshot, so
    /// appends running meanwhile do not make it report a break.
    pub fn verify_audit(&self) -> Result<AuditReport, StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        let report = audit::verify(&tx)?;
        tx.commit()?;
        Ok(report)
    }

    /// A transaction that takes the write lock at once (IMMEDIATE), so two connections cannot
    /// both read the audit head and then race to append after it.
    fn write_transaction(&self) -> Result<Transaction<'_>, StoreError> {
        Ok(Transaction::new_unchecked(
            &self.conn,
            TransactionBehavior::Immediate,
        )?)
    }

    /// Records a stage's timings. `detail_json` must be valid JSON and hold no patient content.
    pub fn record_event(
        &self,
        encounter_id: &str,
        stage: &str,
        detail_json: &str,
    ) -> Result<(), StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        ensure_encounter(&tx, encounter_id)?;
        tx.execute(
            &format!(
                "INSERT INTO processing_events (encounter_id, at, stage, detail_json)
                 VALUES (?1, {NOW}, ?2, ?3)"
            ),
            params![encounter_id, stage, detail_json],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn load_encounter(&self, encounter_id: &str) -> Result<Encounter, StoreError> {
        self.conn
            .query_row(
                &format!("SELECT {ENCOUNTER_COLUMNS} FROM encounters e WHERE e.id = ?1"),
                [encounter_id],
                RawEncounter::from_row,
            )
            .optional()?
            .ok_or_else(|| unknown(encounter_id))?
            .into_encounter()
    }

    /// The encounter's transcript in order; empty if none was saved yet.
    pub fn load_transcript(&self, encounter_id: &str) -> Result<Vec<StoredSegment>, StoreError> {
        ensure_encounter(&self.conn, encounter_id)?;
        // One snapshot for the key and the rows.
        let tx = self.conn.unchecked_transaction()?;
        let raw: Vec<SealedSegment> = {
            let mut stmt = tx.prepare(&format!(
                "SELECT {SEGMENT_COLUMNS}
                 FROM transcript_segments WHERE encounter_id = ?1 ORDER BY seq"
            ))?;
            let rows = stmt.query_map([encounter_id], SealedSegment::from_row)?;
            rows.collect::<Result<_, _>>()?
        };
        if raw.is_empty() {
            return Ok(Vec::new());
        }
        let cipher = self.cipher(&tx, encounter_id)?;
        tx.commit()?;
        raw.into_iter()
            .map(|row| row.open(&cipher, encounter_id))
            .collect()
    }

    /// The encounter's data key for reading; `DataKeyGone` if it was deleted.
    fn cipher(&self, conn: &Connection, encounter_id: &str) -> Result<EncounterCipher, StoreError> {
        crypto::encounter_cipher(conn, &self.keys, encounter_id, false)
    }

    /// The encounter's patient reference, unsealed; `None` if none was recorded.
    pub fn patient_ref(&self, encounter_id: &str) -> Result<Option<String>, StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        let sealed: Option<Vec<u8>> = tx
            .query_row(
                "SELECT patient_ref FROM encounters WHERE id = ?1",
                [encounter_id],
                |row| row.get(0),
            )
            .optional()?
            .ok_or_else(|| unknown(encounter_id))?;
        let Some(sealed) = sealed else {
            return Ok(None);
        };
        let plain = self
            .cipher(&tx, encounter_id)?
            .open(PATIENT_REF_PURPOSE, &sealed)?;
        tx.commit()?;
        String::from_utf8(plain)
            .map(Some)
            .map_err(|_| StoreError::SealedValue {
                encounter_id: encounter_id.to_owned(),
                purpose: PATIENT_REF_PURPOSE.to_owned(),
            })
    }

    /// The newest draft of the encounter, if any.
    pub fn latest_draft(&self, encounter_id: &str) -> Result<Option<Draft>, StoreError> {
        ensure_encounter(&self.conn, encounter_id)?;
        let tx = self.conn.unchecked_transaction()?;
        // rowid breaks ties between drafts saved within the same millisecond.
        let row = tx
            .query_row(
                "SELECT id, encounter_id, created_at, model, model_sha256, template, body
                 FROM drafts WHERE encounter_id = ?1
                 ORDER BY created_at DESC, rowid DESC LIMIT 1",
                [encounter_id],
                |row| {
                    Ok((
                        Draft {
                            id: row.get(0)?,
                            encounter_id: row.get(1)?,
                            created_at: row.get(2)?,
                            model: row.get(3)?,
                            model_sha256: row.get(4)?,
                            template: row.get(5)?,
                            body_json: String::new(),
                        },
                        row.get::<_, Vec<u8>>(6)?,
                    ))
                },
            )
            .optional()?;
        let Some((mut draft, sealed)) = row else {
            return Ok(None);
        };
        let purpose = crypto::draft_purpose(&draft.id);
        let plain = self.cipher(&tx, encounter_id)?.open(&purpose, &sealed)?;
        tx.commit()?;
        draft.body_json = String::from_utf8(plain).map_err(|_| StoreError::SealedValue {
            encounter_id: encounter_id.to_owned(),
            purpose,
        })?;
        Ok(Some(draft))
    }

    /// Up to `limit` encounters, newest first.
    pub fn list_encounters(&self, limit: u32) -> Result<Vec<Encounter>, StoreError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {ENCOUNTER_COLUMNS} FROM encounters e
             ORDER BY e.created_at DESC, e.rowid DESC LIMIT ?1"
        ))?;
        let raw = stmt
            .query_map([limit], RawEncounter::from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        raw.into_iter().map(RawEncounter::into_encounter).collect()
    }

    /// The encounter's processing events, oldest first.
    pub fn load_events(&self, encounter_id: &str) -> Result<Vec<ProcessingEvent>, StoreError> {
        ensure_encounter(&self.conn, encounter_id)?;
        let mut stmt = self.conn.prepare(
            "SELECT encounter_id, at, stage, detail_json
             FROM processing_events WHERE encounter_id = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([encounter_id], |row| {
            Ok(ProcessingEvent {
                encounter_id: row.get(0)?,
                at: row.get(1)?,
                stage: row.get(2)?,
                detail_json: row.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// The columns [`SealedSegment::from_row`] reads, from `transcript_segments`.
const SEGMENT_COLUMNS: &str =
    "id, start_ms, end_ms, content, confidence, overlap, original_speaker";

/// A `transcript_segments` row as read, before its sealed values are opened.
struct SealedSegment {
    id: String,
    start_ms: i64,
    end_ms: i64,
    content: Vec<u8>,
    confidence: Option<f64>,
    overlap: bool,
    original_speaker: Option<Vec<u8>>,
}

impl SealedSegment {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<SealedSegment> {
        Ok(SealedSegment {
            id: row.get(0)?,
            start_ms: row.get(1)?,
            end_ms: row.get(2)?,
            content: row.get(3)?,
            confidence: row.get(4)?,
            overlap: row.get(5)?,
            original_speaker: row.get(6)?,
        })
    }

    fn open(
        self,
        cipher: &EncounterCipher,
        encounter_id: &str,
    ) -> Result<StoredSegment, StoreError> {
        let open_labelled = |purpose: String, sealed: &[u8]| {
            let plain = cipher.open(&purpose, sealed)?;
            crypto::decode_segment(&plain).ok_or_else(|| StoreError::SealedValue {
                encounter_id: encounter_id.to_owned(),
                purpose,
            })
        };
        let (speaker, text) = open_labelled(crypto::segment_purpose(&self.id), &self.content)?;
        let original_speaker = match &self.original_speaker {
            Some(sealed) => {
                Some(open_labelled(crypto::original_speaker_purpose(&self.id), sealed)?.0)
            }
            None => None,
        };
        Ok(StoredSegment {
            id: self.id,
            start_ms: self.start_ms,
            end_ms: self.end_ms,
            speaker,
            text,
            confidence: self.confidence,
            overlap: self.overlap,
            speaker_corrected: original_speaker.is_some(),
            original_speaker: original_speaker.flatten(),
        })
    }
}

/// Purpose label of an encounter's sealed patient reference.
const PATIENT_REF_PURPOSE: &str = "encounter.patient_ref";

/// The columns [`RawEncounter::from_row`] reads, from `encounters e`.
const ENCOUNTER_COLUMNS: &str = "e.id, e.created_at, e.source_kind, e.audio_sha256,
    e.audio_duration_ms, e.status, e.clinician_id, e.consent,
    EXISTS (SELECT 1 FROM audio_chunks a WHERE a.encounter_id = e.id)";

/// An encounter row before its status text is checked.
struct RawEncounter {
    id: String,
    created_at: String,
    source_kind: String,
    audio_sha256: Option<String>,
    audio_duration_ms: Option<i64>,
    status: String,
    clinician_id: Option<String>,
    consent: bool,
    has_audio: bool,
}

impl RawEncounter {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<RawEncounter> {
        Ok(RawEncounter {
            id: row.get(0)?,
            created_at: row.get(1)?,
            source_kind: row.get(2)?,
            audio_sha256: row.get(3)?,
            audio_duration_ms: row.get(4)?,
            status: row.get(5)?,
            clinician_id: row.get(6)?,
            consent: row.get(7)?,
            has_audio: row.get(8)?,
        })
    }

    fn into_encounter(self) -> Result<Encounter, StoreError> {
        Ok(Encounter {
            id: self.id,
            created_at: self.created_at,
            source_kind: self.source_kind,
            audio_sha256: self.audio_sha256,
            audio_duration_ms: self.audio_duration_ms,
            status: EncounterStatus::parse(&self.status)?,
            clinician_id: self.clinician_id,
            consent: self.consent,
            has_audio: self.has_audio,
        })
    }
}

fn unknown(id: &str) -> StoreError {
    StoreError::UnknownEncounter { id: id.to_owned() }
}

/// Fails with `UnknownEncounter` rather than letting a foreign-key error speak for it.
fn ensure_encounter(conn: &Connection, id: &str) -> Result<(), StoreError> {
    let exists: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM encounters WHERE id = ?1)",
        [id],
        |row| row.get(0),
    )?;
    if exists {
        Ok(())
    } else {
        Err(unknown(id))
    }
}

fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| StoreError::CreateDataDir {
            path: dir.to_path_buf(),
            source,
        })?;
    // An existing directory keeps its mode (an administrator may have reasons), but say so.
    if let Ok(meta) = fs::metadata(dir) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %dir.display(),
                mode = format_args!("{mode:03o}"),
                "data directory is accessible to group or others; chmod 700 is recommended"
            );
        }
    }
    Ok(())
}

/// Refuses to go on unless the linked SQLite is SQLCipher, so data is never written in clear.
fn require_sqlcipher(conn: &Connection) -> Result<(), StoreError> {
    let version: Option<String> = conn
        .query_row("PRAGMA cipher_version", [], |row| row.get(0))
        .optional()?;
    match version {
        Some(v) if !v.is_empty() => Ok(()),
        _ => Err(StoreError::NoEncryption),
    }
}

/// Keys the connection and proves the key fits by reading the schema.
fn apply_key(conn: &Connection, key: &DatabaseKey, path: &Path) -> Result<(), StoreError> {
    let pragma = key.sqlcipher_key_pragma();
    let sql = pragma.as_str().ok_or(StoreError::NoEncryption)?;
    conn.execute_batch(sql)?;
    drop(pragma);
    // SQLCipher only decrypts on first read; a wrong key shows up here as "not a database".
    match conn.query_row("SELECT count(*) FROM sqlite_master", [], |row| {
        row.get::<_, i64>(0)
    }) {
        Ok(_) => Ok(()),
        Err(e) if e.sqlite_error_code() == Some(ErrorCode::NotADatabase) => {
            Err(StoreError::WrongKey {
                path: path.to_path_buf(),
            })
        }
        Err(e) => Err(StoreError::Open {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

#[cfg(test)]
mod tests;
