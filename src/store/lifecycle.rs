//! Audio kept sealed, deletion with crypto-shredding, and retention.
//!
//! Audio is stored as sealed chunks of up to 10 s (16 kHz mono, 16-bit little-endian), so that
//! playing one statement's evidence opens only the chunks it spans; no plaintext audio is ever
//! written to a file, temporary or not.
//!
//! Deleting an encounter deletes its data key row first, then the encounter (its transcript,
//! drafts, audio, note versions and signed notes go with it, `ON DELETE CASCADE`), and leaves
//! an id-only tombstone in `deleted_encounters`. `secure_delete` (set at open) zeroes the freed
//! cells, and a `wal_checkpoint(TRUNCATE)` afterwards copies the zeroed pages into the main file
//! and empties the WAL, so neither file keeps the wrapped key. A backup taken before the
//! deletion still holds the key row: restore it only through [`Store::reapply_deletions`] with
//! the live database's tombstones (see its docs).

use rusqlite::{params, Connection, OptionalExtension};

use super::audit::{self, Actor, AuditAction, AuditDetail, AuditEntry};
use super::crypto;
use super::{ensure_encounter, now_ms, unknown, Store, StoreError};

/// Sample rate of stored audio.
pub const AUDIO_SAMPLE_RATE: u32 = 16_000;

/// Samples per sealed chunk: 10 s.
const CHUNK_SAMPLES: usize = 10 * AUDIO_SAMPLE_RATE as usize;
const CHUNK_MS: i64 = 10_000;
const SAMPLES_PER_MS: i64 = AUDIO_SAMPLE_RATE as i64 / 1000;
const MS_PER_DAY: i64 = 86_400_000;

/// What [`Store::save_audio`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioOutcome {
    /// Sealed and stored in this many chunks.
    Stored { chunks: u64 },
    /// Not stored: the encounter has no recorded consent. The discard is audited.
    DiscardedNoConsent,
}

fn chunk_purpose(seq: i64, start_ms: i64) -> String {
    format!("audio.chunk/{seq}/{start_ms}")
}

/// How long each kind of record is kept. `None` keeps it forever. Signed notes (and their
/// versions) and the audit log are never removed by retention; only an explicit deletion does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Audio of a signed encounter, counted from its (first) sign-off.
    pub audio_after_signoff_days: Option<u32>,
    /// Audio of an encounter never signed, counted from its creation.
    pub audio_unsigned_days: Option<u32>,
    /// Transcripts, counted from the encounter's creation, signed or not.
    pub transcript_days: Option<u32>,
    /// Pipeline drafts of encounters never signed, counted from the draft's creation.
    pub unsigned_draft_days: Option<u32>,
    /// Pipeline drafts of signed encounters, counted from sign-off (`Some(0)`: drafts are
    /// kept only until the note is signed).
    pub draft_after_signoff_days: Option<u32>,
}

/// What a retention run removed, per kind. Counts only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub audio_encounters: u64,
    pub audio_chunks: u64,
    pub transcript_encounters: u64,
    pub transcript_segments: u64,
    pub unsigned_drafts: u64,
    pub signed_drafts: u64,
}

impl RetentionReport {
    pub fn is_empty(&self) -> bool {
        *self == RetentionReport::default()
    }
}

/// `created_at` (RFC 3339 text) as Unix milliseconds, in SQL.
const CREATED_MS: &str = "CAST(round((julianday(e.created_at) - 2440587.5) * 86400000) AS INTEGER)";
/// The first sign-off of encounter `e`, or NULL.
const SIGNED_MS: &str = "(SELECT min(n.signed_at_ms) FROM signed_notes n
                           WHERE n.encounter_id = e.id AND n.kind = 'original')";

impl Store {
    /// Stores the encounter's audio (16 kHz mono samples) sealed in 10 s chunks, replacing any
    /// audio stored before, in one transaction. Without recorded consent nothing is stored and
    /// the discard is audited instead.
    pub fn save_audio(
        &self,
        encounter_id: &str,
        samples: &[i16],
    ) -> Result<AudioOutcome, StoreError> {
        let tx = self.write_transaction()?;
        let consent: bool = tx
            .query_row(
                "SELECT consent FROM encounters WHERE id = ?1",
                [encounter_id],
                |row| row.get(0),
            )
            .optional()?
            .ok_or_else(|| unknown(encounter_id))?;
        let sample_count = Some(u64::try_from(samples.len()).unwrap_or(u64::MAX));
        if !consent {
            audit::append_in(
                &tx,
                &AuditEntry {
                    actor: Actor::System,
                    action: AuditAction::AudioDiscarded,
                    subject: encounter_id.to_owned(),
                    detail: AuditDetail {
                        consent: Some(false),
                        count: sample_count,
                        ..AuditDetail::default()
                    },
                },
            )?;
            tx.commit()?;
            tracing::info!(encounter = %encounter_id, "audio discarded: no consent recorded");
            return Ok(AudioOutcome::DiscardedNoConsent);
        }
        tx.execute(
            "DELETE FROM audio_chunks WHERE encounter_id = ?1",
            [encounter_id],
        )?;
        let cipher = crypto::encounter_cipher(&tx, &self.keys, encounter_id, true)?;
        let mut chunks = 0u64;
        {
            let mut insert = tx.prepare(
                "INSERT INTO audio_chunks (encounter_id, seq, start_ms, samples, sealed)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut bytes = Vec::with_capacity(CHUNK_SAMPLES * 2);
            for (seq, chunk) in (0i64..).zip(samples.chunks(CHUNK_SAMPLES)) {
                bytes.clear();
                for s in chunk {
                    bytes.extend_from_slice(&s.to_le_bytes());
                }
                let start_ms = seq * CHUNK_MS;
                let sealed = cipher.seal(&chunk_purpose(seq, start_ms), &bytes)?;
                insert.execute(params![
                    encounter_id,
                    seq,
                    start_ms,
                    i64::try_from(chunk.len()).unwrap_or(i64::MAX),
                    sealed
                ])?;
                chunks += 1;
            }
            // The plaintext staging buffer held patient audio.
            crate::store::key::wipe(&mut bytes);
        }
        audit::append_in(
            &tx,
            &AuditEntry {
                actor: Actor::System,
                action: AuditAction::AudioStored,
                subject: encounter_id.to_owned(),
                detail: AuditDetail {
                    consent: Some(true),
                    count: sample_count,
                    ..AuditDetail::default()
                },
            },
        )?;
        tx.commit()?;
        Ok(AudioOutcome::Stored { chunks })
    }

    /// Whether sealed audio is stored for the encounter.
    pub fn has_audio(&self, encounter_id: &str) -> Result<bool, StoreError> {
        ensure_encounter(&self.conn, encounter_id)?;
        Ok(self.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM audio_chunks WHERE encounter_id = ?1)",
            [encounter_id],
            |r| r.get(0),
        )?)
    }

    /// The stored audio from `start_ms` to `end_ms` (clamped to what is stored), opening only the
    /// chunks that overlap it. Empty if the encounter has no audio (no consent, or removed by
    /// retention).
    pub fn load_audio_span(
        &self,
        encounter_id: &str,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<i16>, StoreError> {
        if start_ms < 0 || end_ms <= start_ms {
            return Err(StoreError::BadAudioSpan { start_ms, end_ms });
        }
        let tx = self.conn.unchecked_transaction()?;
        ensure_encounter(&tx, encounter_id)?;
        // A chunk starts at seq * 10 s, so the overlap test needs no end column.
        let first_seq = start_ms / CHUNK_MS;
        let last_seq = (end_ms - 1) / CHUNK_MS;
        let rows: Vec<(i64, i64, Vec<u8>)> = {
            let mut stmt = tx.prepare(
                "SELECT seq, start_ms, sealed FROM audio_chunks
                 WHERE encounter_id = ?1 AND seq BETWEEN ?2 AND ?3 ORDER BY seq",
            )?;
            let rows = stmt.query_map(params![encounter_id, first_seq, last_seq], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
            rows.collect::<Result<_, _>>()?
        };
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let cipher = crypto::encounter_cipher(&tx, &self.keys, encounter_id, false)?;
        tx.commit()?;
        let want_from = start_ms * SAMPLES_PER_MS;
        let want_to = end_ms * SAMPLES_PER_MS;
        let mut out = Vec::new();
        for (seq, chunk_start_ms, sealed) in rows {
            let mut plain = cipher.open(&chunk_purpose(seq, chunk_start_ms), &sealed)?;
            let chunk_from = chunk_start_ms * SAMPLES_PER_MS;
            for (i, pair) in (0i64..).zip(plain.chunks_exact(2)) {
                let at = chunk_from + i;
                if at >= want_from && at < want_to {
                    out.push(i16::from_le_bytes([pair[0], pair[1]]));
                }
            }
            crate::store::key::wipe(&mut plain);
        }
        Ok(out)
    }

    /// Deletes the encounter and everything of it (crypto-shredding its data key first), leaves
    /// an id-only tombstone, audits it, and checkpoints the WAL so no old page keeps the key.
    pub fn delete_encounter(&self, encounter_id: &str, actor: &Actor) -> Result<(), StoreError> {
        let tx = self.write_transaction()?;
        ensure_encounter(&tx, encounter_id)?;
        delete_in(&tx, encounter_id, actor, "request")?;
        tx.commit()?;
        self.checkpoint_after_delete();
        tracing::info!(encounter = %encounter_id, "encounter deleted");
        Ok(())
    }

    /// Deletes every encounter of the patient (found by the keyed hash of `patient_ref`, never a
    /// plaintext index) in one transaction, and returns how many there were. Audited per
    /// encounter and once for the request (subject: the keyed hash, not the reference).
    pub fn delete_patient(&self, patient_ref: &str, actor: &Actor) -> Result<usize, StoreError> {
        let lookup = self.keys.patient_lookup(patient_ref);
        let tx = self.write_transaction()?;
        let ids: Vec<String> = {
            let mut stmt = tx.prepare("SELECT id FROM encounters WHERE patient_lookup = ?1")?;
            let rows = stmt.query_map([&lookup], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        for id in &ids {
            delete_in(&tx, id, actor, "patient")?;
        }
        audit::append_in(
            &tx,
            &AuditEntry {
                actor: actor.clone(),
                action: AuditAction::PatientDeleted,
                subject: format!("patient-lookup:{lookup}"),
                detail: AuditDetail {
                    count: Some(ids.len() as u64),
                    ..AuditDetail::default()
                },
            },
        )?;
        tx.commit()?;
        self.checkpoint_after_delete();
        tracing::info!(encounters = ids.len(), "patient deletion request honoured");
        Ok(ids.len())
    }

    /// Ids and times of deleted encounters (the tombstones), oldest first.
    pub fn deleted_encounters(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT encounter_id, deleted_at_ms FROM deleted_encounters ORDER BY deleted_at_ms",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// After restoring a backup: deletes (and shreds) every encounter that `live` — the
    /// database the backup was replaced from, or any store holding its tombstones — records as
    /// deleted. Returns how many encounters were deleted here. Restore procedure: open the
    /// restored copy beside the live one, call this on it, then swap it into place.
    pub fn reapply_deletions(&self, live: &Store) -> Result<usize, StoreError> {
        let tombstones = live.deleted_encounters()?;
        let tx = self.write_transaction()?;
        let mut deleted = 0;
        for (id, _) in &tombstones {
            let exists: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM encounters WHERE id = ?1)",
                [id],
                |r| r.get(0),
            )?;
            if exists {
                delete_in(&tx, id, &Actor::System, "reapplied")?;
                deleted += 1;
            }
        }
        tx.commit()?;
        self.checkpoint_after_delete();
        Ok(deleted)
    }

    /// Removes what `policy` no longer keeps, as of `now_ms` (Unix ms), in one transaction,
    /// audited per encounter and kind, and once for the run.
    pub fn apply_retention(
        &self,
        policy: &RetentionPolicy,
        now_ms: i64,
    ) -> Result<RetentionReport, StoreError> {
        let cutoff = |days: u32| now_ms - i64::from(days) * MS_PER_DAY;
        let tx = self.write_transaction()?;
        let mut report = RetentionReport::default();

        let remove = |tx: &Connection,
                      which: &str,
                      artifact: &str,
                      table: &str,
                      before: i64|
         -> Result<(u64, u64), StoreError> {
            // `which` selects (encounter id, rows to delete) with ?1 = the cut-off.
            let found: Vec<(String, i64)> = {
                let mut stmt = tx.prepare(which)?;
                let rows = stmt.query_map([before], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect::<Result<_, _>>()?
            };
            let mut rows_total = 0u64;
            for (id, _) in &found {
                let n = tx.execute(
                    &format!("DELETE FROM {table} WHERE encounter_id = ?1"),
                    [id],
                )?;
                rows_total += n as u64;
                audit::append_in(
                    tx,
                    &AuditEntry {
                        actor: Actor::System,
                        action: AuditAction::RetentionApplied,
                        subject: id.clone(),
                        detail: AuditDetail {
                            artifact: Some(artifact.to_owned()),
                            count: Some(n as u64),
                            ..AuditDetail::default()
                        },
                    },
                )?;
            }
            Ok((found.len() as u64, rows_total))
        };

        let with_audio = "EXISTS (SELECT 1 FROM audio_chunks a WHERE a.encounter_id = e.id)";
        if let Some(days) = policy.audio_after_signoff_days {
            let (e, n) = remove(
                &tx,
                &format!(
                    "SELECT e.id, 0 FROM encounters e
                     WHERE {with_audio} AND {SIGNED_MS} IS NOT NULL AND {SIGNED_MS} <= ?1"
                ),
                "audio",
                "audio_chunks",
                cutoff(days),
            )?;
            report.audio_encounters += e;
            report.audio_chunks += n;
        }
        if let Some(days) = policy.audio_unsigned_days {
            let (e, n) = remove(
                &tx,
                &format!(
                    "SELECT e.id, 0 FROM encounters e
                     WHERE {with_audio} AND {SIGNED_MS} IS NULL AND {CREATED_MS} <= ?1"
                ),
                "audio",
                "audio_chunks",
                cutoff(days),
            )?;
            report.audio_encounters += e;
            report.audio_chunks += n;
        }
        if let Some(days) = policy.transcript_days {
            let (e, n) = remove(
                &tx,
                &format!(
                    "SELECT e.id, 0 FROM encounters e
                     WHERE EXISTS (SELECT 1 FROM transcript_segments t WHERE t.encounter_id = e.id)
                       AND {CREATED_MS} <= ?1"
                ),
                "transcript",
                "transcript_segments",
                cutoff(days),
            )?;
            report.transcript_encounters += e;
            report.transcript_segments += n;
        }
        // Drafts are removed one by one (by their own creation time), so not through `remove`.
        let remove_drafts = |signed: bool, before: i64| -> Result<u64, StoreError> {
            let sql = if signed {
                format!(
                    "SELECT d.id, d.encounter_id FROM drafts d JOIN encounters e ON e.id = d.encounter_id
                     WHERE {SIGNED_MS} IS NOT NULL AND {SIGNED_MS} <= ?1"
                )
            } else {
                format!(
                    "SELECT d.id, d.encounter_id FROM drafts d JOIN encounters e ON e.id = d.encounter_id
                     WHERE {SIGNED_MS} IS NULL
                       AND CAST(round((julianday(d.created_at) - 2440587.5) * 86400000) AS INTEGER) <= ?1"
                )
            };
            let found: Vec<(String, String)> = {
                let mut stmt = tx.prepare(&sql)?;
                let rows = stmt.query_map([before], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect::<Result<_, _>>()?
            };
            for (draft_id, encounter_id) in &found {
                tx.execute("DELETE FROM drafts WHERE id = ?1", [draft_id])?;
                audit::append_in(
                    &tx,
                    &AuditEntry {
                        actor: Actor::System,
                        action: AuditAction::RetentionApplied,
                        subject: encounter_id.clone(),
                        detail: AuditDetail {
                            artifact: Some(
                                if signed {
                                    "draft.signed"
                                } else {
                                    "draft.unsigned"
                                }
                                .to_owned(),
                            ),
                            draft_id: Some(draft_id.clone()),
                            count: Some(1),
                            ..AuditDetail::default()
                        },
                    },
                )?;
            }
            Ok(found.len() as u64)
        };
        if let Some(days) = policy.unsigned_draft_days {
            report.unsigned_drafts += remove_drafts(false, cutoff(days))?;
        }
        if let Some(days) = policy.draft_after_signoff_days {
            report.signed_drafts += remove_drafts(true, cutoff(days))?;
        }

        audit::append_in(
            &tx,
            &AuditEntry {
                actor: Actor::System,
                action: AuditAction::RetentionApplied,
                subject: "retention".to_owned(),
                detail: AuditDetail {
                    count: Some(
                        report.audio_chunks
                            + report.transcript_segments
                            + report.unsigned_drafts
                            + report.signed_drafts,
                    ),
                    ..AuditDetail::default()
                },
            },
        )?;
        tx.commit()?;
        if !report.is_empty() {
            self.checkpoint_after_delete();
        }
        tracing::info!(?report, "retention applied");
        Ok(report)
    }

    /// Copies the WAL (with the zeroed pages of a deletion) into the main file and truncates
    /// it, so deleted cells survive in neither. Readers holding an old snapshot can keep it
    /// from completing; then the next deletion's checkpoint catches up, which is logged.
    fn checkpoint_after_delete(&self) {
        match self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            }) {
            Ok((0, _, _)) => {}
            Ok((_, log, done)) => tracing::warn!(
                wal_frames = log,
                checkpointed = done,
                "WAL checkpoint after a deletion was blocked by a reader; it completes later"
            ),
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint after a deletion failed"),
        }
    }
}

/// Deletes one encounter inside `tx`: key row first (the shred), then the encounter with its
/// cascaded rows, then the tombstone and the audit entry.
fn delete_in(
    tx: &Connection,
    encounter_id: &str,
    actor: &Actor,
    reason: &str,
) -> Result<(), StoreError> {
    tx.execute(
        "DELETE FROM encounter_keys WHERE encounter_id = ?1",
        [encounter_id],
    )?;
    tx.execute("DELETE FROM encounters WHERE id = ?1", [encounter_id])?;
    tx.execute(
        "INSERT OR REPLACE INTO deleted_encounters (encounter_id, deleted_at_ms, reason)
         VALUES (?1, ?2, ?3)",
        params![encounter_id, now_ms(), reason],
    )?;
    audit::append_in(
        tx,
        &AuditEntry {
            actor: actor.clone(),
            action: AuditAction::EncounterDeleted,
            subject: encounter_id.to_owned(),
            detail: AuditDetail {
                artifact: Some(reason.to_owned()),
                ..AuditDetail::default()
            },
        },
    )?;
    Ok(())
}
