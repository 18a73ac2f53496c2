//! Review and sign-off records: who may see an encounter, the versions of its note, speaker
//! corrections of its transcript, its signed notes and addenda, and the quality counts kept
//! after sign-off.
//!
//! Note bodies and signed documents are patient content and are sealed with the encounter's own
//! key before they reach SQLite; what stays readable is ids, versions, times, hashes and counts.
//! Every change is audited in the same transaction.

use rusqlite::{params, Connection, OptionalExtension};

use super::audit::{self, Actor, AuditAction, AuditDetail, AuditEntry};
use super::crypto;
use super::{
    ensure_encounter, now_ms, SealedSegment, Store, StoreError, StoredSegment, SEGMENT_COLUMNS,
};

/// Which statements changed in a saved version, by kind. Ids and counts only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChangeCounts {
    pub accepted: u64,
    pub edited: u64,
    pub rejected: u64,
    pub added: u64,
}

/// A stored note version. `Debug` hides the body.
#[derive(Clone, PartialEq, Eq)]
pub struct NoteVersion {
    pub version: u32,
    pub created_at_ms: i64,
    /// `system` for the draft's first version, else `user:<id>`.
    pub author: String,
    /// The version's sections as JSON (see `crate::review::note`).
    pub body: Vec<u8>,
    /// The changes against the previous version as JSON: ids and kinds only.
    pub changes_json: String,
}

impl std::fmt::Debug for NoteVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoteVersion")
            .field("version", &self.version)
            .field("author", &self.author)
            .field("body_bytes", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// An encounter as the review list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewListing {
    pub id: String,
    pub created_at: String,
    pub status: String,
    pub clinician_id: Option<String>,
    pub signed: bool,
}

/// What a signed note adds to the record besides its document.
#[derive(Clone, PartialEq, Eq)]
pub struct NewSignedNote {
    pub kind: SignedKind,
    pub signed_at_ms: i64,
    pub clinician_id: String,
    pub note_sha256: String,
    /// The signed note file (`attest::SignedNote::to_json`).
    pub document: String,
    /// The version signed, for an original.
    pub version: Option<u32>,
    pub ai: ChangeCounts,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignedKind {
    Original,
    Addendum,
}

impl SignedKind {
    fn as_str(self) -> &'static str {
        match self {
            SignedKind::Original => "original",
            SignedKind::Addendum => "addendum",
        }
    }
}

/// Quality counts for one signed encounter. No patient content: counts, ids, names of the
/// template and specialty, and times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QualitySignal {
    pub encounter_id: String,
    pub clinician_id: String,
    pub specialty: Option<String>,
    pub template: String,
    pub ai_statements: u64,
    pub accepted: u64,
    pub modified: u64,
    pub rejected: u64,
    pub added: u64,
    /// Characters changed between the draft's text and the signed text (Levenshtein).
    pub edit_distance: u64,
    pub draft_chars: u64,
    pub sections: u64,
    pub flagged_sections: u64,
    pub drafted_at_ms: i64,
    pub signed_at_ms: i64,
}

/// The one place note bodies cross into and out of the database: sealed with the encounter's
/// own data key (`crypto::seal`), so deleting the encounter's key shreds them. `purpose` should
/// name the row (e.g. `note_version.body/3`) so a body cannot be moved to another row.
fn seal_body(
    conn: &Connection,
    encounter_id: &str,
    purpose: &str,
    plaintext: &[u8],
) -> Result<Vec<u8>, StoreError> {
    super::crypto::seal(conn, encounter_id, purpose, plaintext)
}

fn open_body(
    conn: &Connection,
    encounter_id: &str,
    purpose: &str,
    sealed: &[u8],
) -> Result<Vec<u8>, StoreError> {
    super::crypto::open(conn, encounter_id, purpose, sealed)
}

const VERSION_PURPOSE: &str = "note_version.body";
const SIGNED_PURPOSE: &str = "signed_note.document";

impl Store {
    /// Encounters a clinician owns (`clinician_id`), newest first.
    pub fn encounters_of_clinician(
        &self,
        clinician_id: &str,
        limit: u32,
    ) -> Result<Vec<ReviewListing>, StoreError> {
        self.listings(
            "WHERE e.clinician_id = ?1 ORDER BY e.created_at DESC LIMIT ?2",
            clinician_id,
            limit,
        )
    }

    /// Encounters assigned to a reviewer, newest first.
    pub fn encounters_assigned_to(
        &self,
        reviewer_id: &str,
        limit: u32,
    ) -> Result<Vec<ReviewListing>, StoreError> {
        self.listings(
            "JOIN reviewer_assignments a ON a.encounter_id = e.id
             WHERE a.user_id = ?1 ORDER BY e.created_at DESC LIMIT ?2",
            reviewer_id,
            limit,
        )
    }

    fn listings(
        &self,
        clause: &str,
        user_id: &str,
        limit: u32,
    ) -> Result<Vec<ReviewListing>, StoreError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT e.id, e.created_at, e.status, e.clinician_id,
                    EXISTS (SELECT 1 FROM signed_notes s WHERE s.encounter_id = e.id)
             FROM encounters e {clause}"
        ))?;
        let rows = stmt.query_map(params![user_id, limit], |r| {
            Ok(ReviewListing {
                id: r.get(0)?,
                created_at: r.get(1)?,
                status: r.get(2)?,
                clinician_id: r.get(3)?,
                signed: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The clinician an encounter belongs to, if any; `UnknownEncounter` if there is none.
    pub fn encounter_clinician(&self, encounter_id: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row(
                "SELECT clinician_id FROM encounters WHERE id = ?1",
                [encounter_id],
                |r| r.get(0),
            )
            .optional()?
            .ok_or_else(|| StoreError::UnknownEncounter {
                id: encounter_id.to_owned(),
            })
    }

    pub fn is_assigned_reviewer(
        &self,
        encounter_id: &str,
        user_id: &str,
    ) -> Result<bool, StoreError> {
        Ok(self.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM reviewer_assignments
                            WHERE encounter_id = ?1 AND user_id = ?2)",
            params![encounter_id, user_id],
            |r| r.get(0),
        )?)
    }

    pub fn assign_reviewer(
        &self,
        encounter_id: &str,
        reviewer_id: &str,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        let tx = self.write_transaction()?;
        ensure_encounter(&tx, encounter_id)?;
        tx.execute(
            "INSERT OR IGNORE INTO reviewer_assignments (encounter_id, user_id, assigned_at_ms)
             VALUES (?1, ?2, ?3)",
            params![encounter_id, reviewer_id, now_ms()],
        )?;
        audit::append_in(
            &tx,
            &AuditEntry {
                actor: actor.clone(),
                action: AuditAction::ReviewerAssigned,
                subject: encounter_id.to_owned(),
                detail: AuditDetail {
                    user_id: Some(reviewer_id.to_owned()),
                    ..AuditDetail::default()
                },
            },
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Saves the next version of an encounter's note. `base_version` is the version the editor
    /// started from (0 for the first, made from the draft); if another save came first the
    /// result is `VersionConflict` and nothing is written. A signed encounter takes no versions.
    pub fn save_note_version(
        &self,
        encounter_id: &str,
        base_version: u32,
        body: &[u8],
        changes_json: &str,
        counts: ChangeCounts,
        author: &Actor,
    ) -> Result<u32, StoreError> {
        let tx = self.write_transaction()?;
        ensure_encounter(&tx, encounter_id)?;
        if is_signed(&tx, encounter_id)? {
            return Err(StoreError::AlreadySigned {
                id: encounter_id.to_owned(),
            });
        }
        let latest = latest_version_number(&tx, encounter_id)?;
        if latest != base_version {
            return Err(StoreError::VersionConflict {
                base: base_version,
                latest,
            });
        }
        let version = latest + 1;
        let sealed = seal_body(
            &tx,
            encounter_id,
            &format!("{VERSION_PURPOSE}.{version}"),
            body,
        )?;
        tx.execute(
            "INSERT INTO note_versions
                 (encounter_id, version, created_at_ms, author, body, changes_json)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                encounter_id,
                version,
                now_ms(),
                author.to_stored(),
                sealed,
                changes_json
            ],
        )?;
        audit::append_in(
            &tx,
            &AuditEntry {
                actor: author.clone(),
                action: AuditAction::VersionSaved,
                subject: encounter_id.to_owned(),
                detail: AuditDetail {
                    version: Some(u64::from(version)),
                    accepted: Some(counts.accepted),
                    edited: Some(counts.edited),
                    rejected: Some(counts.rejected),
                    added: Some(counts.added),
                    ..AuditDetail::default()
                },
            },
        )?;
        tx.commit()?;
        Ok(version)
    }

    pub fn latest_note_version(
        &self,
        encounter_id: &str,
    ) -> Result<Option<NoteVersion>, StoreError> {
        let latest = latest_version_number(&self.conn, encounter_id)?;
        if latest == 0 {
            return Ok(None);
        }
        self.note_version(encounter_id, latest)
    }

    pub fn note_version(
        &self,
        encounter_id: &str,
        version: u32,
    ) -> Result<Option<NoteVersion>, StoreError> {
        let row: Option<(i64, String, Vec<u8>, String)> = self
            .conn
            .query_row(
                "SELECT created_at_ms, author, body, changes_json FROM note_versions
                 WHERE encounter_id = ?1 AND version = ?2",
                params![encounter_id, version],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let Some((created_at_ms, author, sealed, changes_json)) = row else {
            return Ok(None);
        };
        let body = open_body(
            &self.conn,
            encounter_id,
            &format!("{VERSION_PURPOSE}.{version}"),
            &sealed,
        )?;
        Ok(Some(NoteVersion {
            version,
            created_at_ms,
            author,
            body,
            changes_json,
        }))
    }

    /// Every version's number, time, author and changes, oldest first, without bodies.
    pub fn note_version_history(
        &self,
        encounter_id: &str,
    ) -> Result<Vec<(u32, i64, String, String)>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT version, created_at_ms, author, changes_json FROM note_versions
             WHERE encounter_id = ?1 ORDER BY version",
        )?;
        let rows = stmt.query_map([encounter_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Stores a signed note or addendum, with the quality counts of an original, in one
    /// transaction: the note is immutable from here on. An original on an already signed
    /// encounter is `AlreadySigned`; an addendum before the original is `NotSigned`.
    /// The note is queued for each of `destinations` (outbox) in the same transaction.
    pub fn save_signed_note(
        &self,
        encounter_id: &str,
        note: &NewSignedNote,
        quality: Option<&QualitySignal>,
        destinations: &[String],
    ) -> Result<u32, StoreError> {
        let tx = self.write_transaction()?;
        ensure_encounter(&tx, encounter_id)?;
        let signed = is_signed(&tx, encounter_id)?;
        match (note.kind, signed) {
            (SignedKind::Original, true) => {
                return Err(StoreError::AlreadySigned {
                    id: encounter_id.to_owned(),
                })
            }
            (SignedKind::Addendum, false) => {
                return Err(StoreError::NotSigned {
                    id: encounter_id.to_owned(),
                })
            }
            _ => {}
        }
        let seq: u32 = tx.query_row(
            "SELECT coalesce(max(seq), 0) + 1 FROM signed_notes WHERE encounter_id = ?1",
            [encounter_id],
            |r| r.get(0),
        )?;
        let sealed = seal_body(
            &tx,
            encounter_id,
            &format!("{SIGNED_PURPOSE}.{seq}"),
            note.document.as_bytes(),
        )?;
        tx.execute(
            "INSERT INTO signed_notes
                 (encounter_id, seq, kind, signed_at_ms, clinician_id, note_sha256, document)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                encounter_id,
                seq,
                note.kind.as_str(),
                note.signed_at_ms,
                note.clinician_id,
                note.note_sha256,
                sealed
            ],
        )?;
        if let Some(q) = quality {
            insert_quality(&tx, q)?;
        }
        let signer = Actor::User(note.clinician_id.clone());
        super::outbox::enqueue_in(&tx, encounter_id, seq, destinations, &signer)?;
        audit::append_in(
            &tx,
            &AuditEntry {
                actor: Actor::User(note.clinician_id.clone()),
                action: match note.kind {
                    SignedKind::Original => AuditAction::NoteSigned,
                    SignedKind::Addendum => AuditAction::AddendumSigned,
                },
                subject: encounter_id.to_owned(),
                detail: AuditDetail {
                    version: note.version.map(u64::from),
                    note_sha256: Some(note.note_sha256.clone()),
                    accepted: Some(note.ai.accepted),
                    edited: Some(note.ai.edited),
                    rejected: Some(note.ai.rejected),
                    added: Some(note.ai.added),
                    ..AuditDetail::default()
                },
            },
        )?;
        tx.commit()?;
        Ok(seq)
    }

    /// The signed documents of an encounter, original first, then addenda in order.
    pub fn signed_notes(&self, encounter_id: &str) -> Result<Vec<String>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT seq, document FROM signed_notes WHERE encounter_id = ?1 ORDER BY seq",
        )?;
        let rows = stmt.query_map([encounter_id], |r| {
            Ok((r.get::<_, u32>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        let mut documents = Vec::new();
        for row in rows {
            let (seq, sealed) = row?;
            let plain = open_body(
                &self.conn,
                encounter_id,
                &format!("{SIGNED_PURPOSE}.{seq}"),
                &sealed,
            )?;
            documents.push(
                String::from_utf8(plain).map_err(|_| StoreError::Unrecognised {
                    what: format!("signed note {seq} of encounter {encounter_id} is not UTF-8"),
                })?,
            );
        }
        Ok(documents)
    }

    pub fn is_signed(&self, encounter_id: &str) -> Result<bool, StoreError> {
        is_signed(&self.conn, encounter_id)
    }

    /// Gives one transcript segment the speaker a clinician chose at review and returns the
    /// segment as now stored. `speaker` must be a role label (`clinician`, `patient`, `other-N`,
    /// `unknown`), else `NotASpeakerRole`. The segment is sealed again with the new label; the
    /// label the pipeline gave is kept (sealed) beside it, so the correction shows and can be
    /// undone: choosing that label again clears it. A signed encounter's transcript is part of
    /// the record and does not change (`AlreadySigned`). The audit entry names the segment and
    /// both labels, never words; choosing the label the segment already has writes nothing.
    pub fn correct_speaker(
        &self,
        encounter_id: &str,
        segment_id: &str,
        speaker: &str,
        actor: &Actor,
    ) -> Result<StoredSegment, StoreError> {
        if !is_role_label(speaker) {
            return Err(StoreError::NotASpeakerRole);
        }
        let tx = self.write_transaction()?;
        ensure_encounter(&tx, encounter_id)?;
        if is_signed(&tx, encounter_id)? {
            return Err(StoreError::AlreadySigned {
                id: encounter_id.to_owned(),
            });
        }
        let sealed = tx
            .query_row(
                &format!(
                    "SELECT {SEGMENT_COLUMNS} FROM transcript_segments
                     WHERE encounter_id = ?1 AND id = ?2"
                ),
                params![encounter_id, segment_id],
                SealedSegment::from_row,
            )
            .optional()?
            .ok_or_else(|| StoreError::UnknownSegment {
                encounter_id: encounter_id.to_owned(),
                segment_id: segment_id.to_owned(),
            })?;
        let cipher = crypto::encounter_cipher(&tx, &self.keys, encounter_id, false)?;
        let mut segment = sealed.open(&cipher, encounter_id)?;
        if segment.speaker.as_deref() == Some(speaker) {
            return Ok(segment);
        }
        let from = segment.speaker.replace(speaker.to_owned());
        let pipeline_label = if segment.speaker_corrected {
            segment.original_speaker.take()
        } else {
            from.clone()
        };
        segment.speaker_corrected = pipeline_label.as_deref() != Some(speaker);
        let original = if segment.speaker_corrected {
            segment.original_speaker = pipeline_label;
            Some(cipher.seal(
                &crypto::original_speaker_purpose(segment_id),
                &crypto::encode_segment(segment.original_speaker.as_deref(), ""),
            )?)
        } else {
            None
        };
        let content = cipher.seal(
            &crypto::segment_purpose(segment_id),
            &crypto::encode_segment(Some(speaker), &segment.text),
        )?;
        tx.execute(
            "UPDATE transcript_segments SET content = ?3, original_speaker = ?4
             WHERE encounter_id = ?1 AND id = ?2",
            params![encounter_id, segment_id, content, original],
        )?;
        audit::append_in(
            &tx,
            &AuditEntry {
                actor: actor.clone(),
                action: AuditAction::SpeakerCorrected,
                subject: encounter_id.to_owned(),
                detail: AuditDetail {
                    segment_id: Some(segment_id.to_owned()),
                    // A label stored by other means could be anything: only roles are audited.
                    from_speaker: from.filter(|label| is_role_label(label)),
                    to_speaker: Some(speaker.to_owned()),
                    ..AuditDetail::default()
                },
            },
        )?;
        tx.commit()?;
        Ok(segment)
    }

    /// Audits a read of patient content (the note, the transcript, or a span of audio).
    pub fn record_view(
        &self,
        encounter_id: &str,
        user_id: &str,
        action: AuditAction,
        span_ms: Option<(i64, i64)>,
    ) -> Result<(), StoreError> {
        self.append_audit(&AuditEntry {
            actor: Actor::User(user_id.to_owned()),
            action,
            subject: encounter_id.to_owned(),
            detail: AuditDetail {
                span_ms,
                ..AuditDetail::default()
            },
        })?;
        Ok(())
    }

    /// Every quality signal, for aggregation by the caller.
    pub fn quality_signals(&self) -> Result<Vec<QualitySignal>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT encounter_id, clinician_id, specialty, template, ai_statements, accepted,
                    modified, rejected, added, edit_distance, draft_chars, sections,
                    flagged_sections, drafted_at_ms, signed_at_ms
             FROM quality_signals ORDER BY signed_at_ms",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(QualitySignal {
                encounter_id: r.get(0)?,
                clinician_id: r.get(1)?,
                specialty: r.get(2)?,
                template: r.get(3)?,
                ai_statements: count(r, 4)?,
                accepted: count(r, 5)?,
                modified: count(r, 6)?,
                rejected: count(r, 7)?,
                added: count(r, 8)?,
                edit_distance: count(r, 9)?,
                draft_chars: count(r, 10)?,
                sections: count(r, 11)?,
                flagged_sections: count(r, 12)?,
                drafted_at_ms: r.get(13)?,
                signed_at_ms: r.get(14)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// A count column: stored as SQLite's signed integer, never negative.
fn count(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<u64> {
    Ok(u64::try_from(row.get::<_, i64>(index)?).unwrap_or(0))
}

/// A count for a SQLite integer column (counts here are far below `i64::MAX`).
fn sql_count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Whether `label` is a speaker's role (`clinician`, `patient`, `unknown`, `other-N`): what the
/// audit log may say about a speaker, since a role tells nothing about who the person is.
fn is_role_label(label: &str) -> bool {
    matches!(label, "clinician" | "patient" | "unknown")
        || label
            .strip_prefix("other-")
            .is_some_and(|n| (1..=3).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit()))
}

fn latest_version_number(conn: &Connection, encounter_id: &str) -> Result<u32, StoreError> {
    Ok(conn.query_row(
        "SELECT coalesce(max(version), 0) FROM note_versions WHERE encounter_id = ?1",
        [encounter_id],
        |r| r.get(0),
    )?)
}

fn is_signed(conn: &Connection, encounter_id: &str) -> Result<bool, StoreError> {
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM signed_notes
                        WHERE encounter_id = ?1 AND kind = 'original')",
        [encounter_id],
        |r| r.get(0),
    )?)
}

fn insert_quality(conn: &Connection, q: &QualitySignal) -> Result<(), StoreError> {
    conn.execute(
        "INSERT OR REPLACE INTO quality_signals
             (encounter_id, clinician_id, specialty, template, ai_statements, accepted, modified,
              rejected, added, edit_distance, draft_chars, sections, flagged_sections,
              drafted_at_ms, signed_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        params![
            q.encounter_id,
            q.clinician_id,
            q.specialty,
            q.template,
            sql_count(q.ai_statements),
            sql_count(q.accepted),
            sql_count(q.modified),
            sql_count(q.rejected),
            sql_count(q.added),
            sql_count(q.edit_distance),
            sql_count(q.draft_chars),
            sql_count(q.sections),
            sql_count(q.flagged_sections),
            q.drafted_at_ms,
            q.signed_at_ms
        ],
    )?;
    Ok(())
}

/// An audit row as the auditor's API shows it. Rows hold ids, counts and hashes only.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditRow {
    pub seq: i64,
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub detail: serde_json::Value,
    pub hash: String,
}

impl Store {
    /// Audit rows after `after_seq`, oldest first, at most `limit`.
    pub fn audit_rows(&self, after_seq: i64, limit: u32) -> Result<Vec<AuditRow>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT seq, at_ms, actor, action, subject, detail_json, hash FROM audit
             WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![after_seq, limit], |r| {
            let detail: String = r.get(5)?;
            Ok(AuditRow {
                seq: r.get(0)?,
                at_ms: r.get(1)?,
                actor: r.get(2)?,
                action: r.get(3)?,
                subject: r.get(4)?,
                detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
                hash: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
