//! The database schema, as an ordered list of migrations, and the code that applies them.
//!
//! `PRAGMA user_version` records how many migrations a database has had. Each migration runs in
//! its own transaction together with the version bump, so a crash leaves the database at one
//! version or the next, never between. Released migrations may never be edited or reordered: a
//! schema change is always a new entry at the end (users and outbox will come that way).
//!
//! A step that must transform rows with Rust (sealing what an earlier release stored in clear)
//! names its Rust part through its description (see [`rust_step`]), so the entries of the list
//! stay plain SQL literals.

use rusqlite::Connection;

use super::crypto::{self, KeyRing};
use super::StoreError;

/// Description of the envelope-encryption migration, which has a Rust part.
const ENVELOPE_STEP: &str =
    "per-encounter data keys, sealed transcript, drafts and patient reference, audio, deletions";

/// One schema step. Its version is its position in [`MIGRATIONS`] plus one.
pub(crate) struct Migration {
    /// What the step does, for error messages.
    pub description: &'static str,
    pub sql: &'static str,
}

/// Every migration, oldest first.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        description: "encounters, transcripts, drafts and processing events",
        // STRICT tables make SQLite reject values of the wrong type instead of storing them.
        // ON DELETE CASCADE lets a retention job remove an encounter with one statement.
        sql: "
        CREATE TABLE encounters (
            id                TEXT PRIMARY KEY NOT NULL,
            created_at        TEXT NOT NULL,
            source_kind       TEXT NOT NULL,
            audio_sha256      TEXT,
            audio_duration_ms INTEGER,
            status            TEXT NOT NULL
        ) STRICT;
        CREATE INDEX encounters_by_created_at ON encounters (created_at);

        CREATE TABLE transcript_segments (
            encounter_id TEXT NOT NULL REFERENCES encounters (id) ON DELETE CASCADE,
            seq          INTEGER NOT NULL,
            id           TEXT NOT NULL,
            start_ms     INTEGER NOT NULL,
            end_ms       INTEGER NOT NULL,
            speaker      TEXT,
            text         TEXT NOT NULL,
            confidence   REAL,
            PRIMARY KEY (encounter_id, id),
            UNIQUE (encounter_id, seq)
        ) STRICT;

        CREATE TABLE drafts (
            id           TEXT PRIMARY KEY NOT NULL,
            encounter_id TEXT NOT NULL REFERENCES encounters (id) ON DELETE CASCADE,
            created_at   TEXT NOT NULL,
            model        TEXT NOT NULL,
            model_sha256 TEXT NOT NULL,
            template     TEXT NOT NULL,
            body_json    TEXT NOT NULL CHECK (json_valid(body_json))
        ) STRICT;
        CREATE INDEX drafts_by_encounter ON drafts (encounter_id, created_at);

        -- Timings and counts per pipeline stage. Never patient content: see the store's docs.
        CREATE TABLE processing_events (
            id           INTEGER PRIMARY KEY,
            encounter_id TEXT NOT NULL REFERENCES encounters (id) ON DELETE CASCADE,
            at           TEXT NOT NULL,
            stage        TEXT NOT NULL,
            detail_json  TEXT NOT NULL CHECK (json_valid(detail_json))
        ) STRICT;
        CREATE INDEX processing_events_by_encounter ON processing_events (encounter_id, id);
    ",
    },
    Migration {
        description: "hash-chained audit log and its head",
        // No foreign keys and no ON DELETE CASCADE: audit rows outlive what they describe.
        // audit_head holds one row (id 1), updated with every append, so a deleted tail shows.
        sql: "
        CREATE TABLE audit (
            seq         INTEGER PRIMARY KEY,
            at_ms       INTEGER NOT NULL,
            actor       TEXT NOT NULL,
            action      TEXT NOT NULL,
            subject     TEXT NOT NULL,
            detail_json TEXT NOT NULL CHECK (json_valid(detail_json)),
            prev_hash   TEXT NOT NULL,
            hash        TEXT NOT NULL
        ) STRICT;
        CREATE INDEX audit_by_subject ON audit (subject, seq);

        CREATE TABLE audit_head (
            id       INTEGER PRIMARY KEY CHECK (id = 1),
            count    INTEGER NOT NULL,
            last_seq INTEGER NOT NULL,
            hash     TEXT NOT NULL
        ) STRICT;
        INSERT INTO audit_head (id, count, last_seq, hash)
            VALUES (1, 0, 0, '0000000000000000000000000000000000000000000000000000000000000000');
    ",
    },
    Migration {
        description: "users, sessions, reviewer assignments, note versions and signed notes",
        // Sessions keep only a token digest. Note bodies are sealed with the encounter's key
        // (BLOBs); changes_json holds statement ids and change kinds only. quality_signals has
        // no foreign key: its counts outlive a deleted encounter and carry no patient content.
        sql: "
        CREATE TABLE users (
            id              TEXT PRIMARY KEY NOT NULL,
            username        TEXT NOT NULL UNIQUE,
            role            TEXT NOT NULL,
            specialty       TEXT,
            password_hash   TEXT NOT NULL,
            created_at_ms   INTEGER NOT NULL,
            failed_logins   INTEGER NOT NULL DEFAULT 0,
            locked_until_ms INTEGER,
            disabled        INTEGER NOT NULL DEFAULT 0
        ) STRICT;

        CREATE TABLE sessions (
            token_digest  TEXT PRIMARY KEY NOT NULL,
            user_id       TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            created_at_ms INTEGER NOT NULL,
            last_seen_ms  INTEGER NOT NULL,
            expires_at_ms INTEGER NOT NULL
        ) STRICT;
        CREATE INDEX sessions_by_user ON sessions (user_id);

        CREATE TABLE reviewer_assignments (
            encounter_id TEXT NOT NULL REFERENCES encounters (id) ON DELETE CASCADE,
            user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            assigned_at_ms INTEGER NOT NULL,
            PRIMARY KEY (encounter_id, user_id)
        ) STRICT;
        CREATE INDEX reviewer_assignments_by_user ON reviewer_assignments (user_id);

        CREATE TABLE note_versions (
            encounter_id  TEXT NOT NULL REFERENCES encounters (id) ON DELETE CASCADE,
            version       INTEGER NOT NULL,
            created_at_ms INTEGER NOT NULL,
            author        TEXT NOT NULL,
            body          BLOB NOT NULL,
            changes_json  TEXT NOT NULL CHECK (json_valid(changes_json)),
            PRIMARY KEY (encounter_id, version)
        ) STRICT;

        CREATE TABLE signed_notes (
            encounter_id  TEXT NOT NULL REFERENCES encounters (id) ON DELETE CASCADE,
            seq           INTEGER NOT NULL,
            kind          TEXT NOT NULL CHECK (kind IN ('original', 'addendum')),
            signed_at_ms  INTEGER NOT NULL,
            clinician_id  TEXT NOT NULL,
            note_sha256   TEXT NOT NULL,
            document      BLOB NOT NULL,
            PRIMARY KEY (encounter_id, seq)
        ) STRICT;

        CREATE TABLE quality_signals (
            encounter_id      TEXT PRIMARY KEY NOT NULL,
            clinician_id      TEXT NOT NULL,
            specialty         TEXT,
            template          TEXT NOT NULL,
            ai_statements     INTEGER NOT NULL,
            accepted          INTEGER NOT NULL,
            modified          INTEGER NOT NULL,
            rejected          INTEGER NOT NULL,
            added             INTEGER NOT NULL,
            edit_distance     INTEGER NOT NULL,
            draft_chars       INTEGER NOT NULL,
            sections          INTEGER NOT NULL,
            flagged_sections  INTEGER NOT NULL,
            drafted_at_ms     INTEGER NOT NULL,
            signed_at_ms      INTEGER NOT NULL
        ) STRICT;
    ",
    },
    Migration {
        description: ENVELOPE_STEP,
        // The sealed columns are added here; the Rust part (crypto::seal_existing_rows) fills
        // them from the clear columns and drops those. ALTER/DROP COLUMN rather than new tables,
        // so no row is deleted and nothing that references drafts is cascaded.
        sql: "
        ALTER TABLE encounters ADD COLUMN clinician_id TEXT;
        ALTER TABLE encounters ADD COLUMN patient_ref BLOB;
        ALTER TABLE encounters ADD COLUMN patient_lookup TEXT;
        ALTER TABLE encounters ADD COLUMN consent INTEGER NOT NULL DEFAULT 0
            CHECK (consent IN (0, 1));
        CREATE INDEX encounters_by_clinician ON encounters (clinician_id, created_at);
        CREATE INDEX encounters_by_patient_lookup ON encounters (patient_lookup)
            WHERE patient_lookup IS NOT NULL;

        -- The encounter's data key, wrapped under the master key kek_id. Deleting this row
        -- destroys everything sealed with it.
        CREATE TABLE encounter_keys (
            encounter_id TEXT PRIMARY KEY NOT NULL REFERENCES encounters (id) ON DELETE CASCADE,
            kek_id       TEXT NOT NULL,
            wrapped      BLOB NOT NULL
        ) STRICT;

        -- Which master key wraps new data keys; switched by rotation in its rewrap transaction.
        CREATE TABLE key_state (
            id             INTEGER PRIMARY KEY CHECK (id = 1),
            current_kek_id TEXT NOT NULL
        ) STRICT;

        -- 16 kHz mono 16-bit audio in sealed chunks of up to 10 s.
        CREATE TABLE audio_chunks (
            encounter_id TEXT NOT NULL REFERENCES encounters (id) ON DELETE CASCADE,
            seq          INTEGER NOT NULL,
            start_ms     INTEGER NOT NULL,
            samples      INTEGER NOT NULL,
            sealed       BLOB NOT NULL,
            PRIMARY KEY (encounter_id, seq)
        ) STRICT;

        -- Ids of deleted encounters (no content), so a restored backup can be shredded again.
        CREATE TABLE deleted_encounters (
            encounter_id  TEXT PRIMARY KEY NOT NULL,
            deleted_at_ms INTEGER NOT NULL,
            reason        TEXT NOT NULL
        ) STRICT;

        ALTER TABLE transcript_segments ADD COLUMN content BLOB NOT NULL DEFAULT x'';
        ALTER TABLE drafts ADD COLUMN body BLOB NOT NULL DEFAULT x'';
        ALTER TABLE drafts ADD COLUMN prompt_version TEXT;
    ",
    },
    Migration {
        description: "outbox of signed notes to deliver to the EHR",
        // One row per signed note and destination. The payload is not copied here: it is built
        // from the sealed signed note at send time, so deleting the encounter's key also
        // shreds what was waiting to be sent. last_status holds codes, never server text.
        sql: "
        CREATE TABLE outbox (
            id              TEXT PRIMARY KEY NOT NULL,
            encounter_id    TEXT NOT NULL REFERENCES encounters (id) ON DELETE CASCADE,
            signed_seq      INTEGER NOT NULL,
            destination     TEXT NOT NULL,
            business_id     TEXT NOT NULL,
            state           TEXT NOT NULL CHECK (state IN
                                ('queued', 'sending', 'sent', 'confirmed', 'dead', 'cancelled')),
            attempts        INTEGER NOT NULL DEFAULT 0,
            next_attempt_ms INTEGER NOT NULL,
            last_status     TEXT,
            remote_id       TEXT,
            created_ms      INTEGER NOT NULL,
            updated_ms      INTEGER NOT NULL,
            confirmed_ms    INTEGER,
            UNIQUE (encounter_id, signed_seq, destination)
        ) STRICT;
        CREATE INDEX outbox_due ON outbox (state, next_attempt_ms);
    ",
    },
    Migration {
        description: "config versions, badges and badge pairing codes",
        // Configs are kept whole (they hold paths and settings, never patient data) so any
        // version can be diffed and rolled back to. A pairing code is stored as its SHA-256.
        sql: "
        CREATE TABLE config_versions (
            version       INTEGER PRIMARY KEY NOT NULL,
            created_at_ms INTEGER NOT NULL,
            actor         TEXT NOT NULL,
            sha256        TEXT NOT NULL,
            toml          TEXT NOT NULL,
            state         TEXT NOT NULL CHECK (state IN
                              ('applied', 'rejected', 'rolled_back', 'superseded')),
            reason        TEXT
        ) STRICT;

        CREATE TABLE badges (
            badge_id      TEXT PRIMARY KEY NOT NULL,
            clinician_id  TEXT NOT NULL REFERENCES users (id),
            paired_at_ms  INTEGER NOT NULL,
            last_seen_ms  INTEGER,
            signal_dbfs   REAL,
            last_room     TEXT
        ) STRICT;

        CREATE TABLE badge_pairings (
            code_digest   TEXT PRIMARY KEY NOT NULL,
            badge_id      TEXT NOT NULL,
            clinician_id  TEXT NOT NULL REFERENCES users (id),
            created_at_ms INTEGER NOT NULL,
            expires_at_ms INTEGER NOT NULL
        ) STRICT;
    ",
    },
    Migration {
        description: "overlap flags and speaker corrections of transcript segments",
        // overlap (another voice during the segment) describes the sound, not what was said, so
        // it is a plain column. original_speaker is NULL until a clinician corrects the
        // segment's speaker; then it holds the pipeline's label, sealed like the segment.
        sql: "
        ALTER TABLE transcript_segments ADD COLUMN overlap INTEGER NOT NULL DEFAULT 0
            CHECK (overlap IN (0, 1));
        ALTER TABLE transcript_segments ADD COLUMN original_speaker BLOB;
    ",
    },
];

/// The schema version this build writes.
pub(crate) fn latest_version() -> u32 {
    version_of(MIGRATIONS)
}

fn version_of(migrations: &[Migration]) -> u32 {
    u32::try_from(migrations.len()).unwrap_or(u32::MAX)
}

/// A migration's Rust part: runs inside the step's transaction, after its SQL.
type RustStep = fn(&Connection, &KeyRing) -> Result<(), StoreError>;

/// The Rust part of a migration, if it has one.
fn rust_step(step: &Migration) -> Option<RustStep> {
    (step.description == ENVELOPE_STEP).then_some(crypto::seal_existing_rows)
}

/// Why migrating failed; carried inside `StoreError::Migration`.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error(
        "the database is at schema version {found}, newer than this software understands \
         (version {supported}); install the edge-scribe release that wrote it, or restore a \
         backup made by this release"
    )]
    TooNew { found: u32, supported: u32 },

    #[error(
        "upgrading the database to schema version {version} ({description}) failed: {source}; \
         the database was left at version {} and is intact; report this with the log",
        version - 1
    )]
    Step {
        version: u32,
        description: &'static str,
        source: rusqlite::Error,
    },

    #[error("could not read the database schema version: {0}")]
    ReadVersion(rusqlite::Error),

    #[error(
        "upgrading the database to schema version {version} ({description}) failed: {source}; \
         the database was left at version {} and is intact; report this with the log",
        version - 1
    )]
    Convert {
        version: u32,
        description: &'static str,
        source: Box<StoreError>,
    },

    #[error(
        "upgrading the database to schema version {version} ({description}) needs the database \
         keys, which were not given; report this"
    )]
    NoKeys {
        version: u32,
        description: &'static str,
    },
}

pub(crate) fn user_version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.query_row("PRAGMA user_version", [], |row| row.get::<_, u32>(0))
}

/// Brings the database up to the newest schema. Returns the version it started at.
pub(crate) fn migrate(conn: &mut Connection, keys: &KeyRing) -> Result<u32, MigrationError> {
    migrate_with(conn, MIGRATIONS, latest_version(), Some(keys))
}

/// Applies `migrations[current..target]`, each in its own transaction.
fn migrate_with(
    conn: &mut Connection,
    migrations: &[Migration],
    target: u32,
    keys: Option<&KeyRing>,
) -> Result<u32, MigrationError> {
    let start = user_version(conn).map_err(MigrationError::ReadVersion)?;
    let supported = version_of(migrations);
    if start > supported {
        return Err(MigrationError::TooNew {
            found: start,
            supported,
        });
    }
    for version in (start + 1)..=target.min(supported) {
        let Some(step) = usize::try_from(version - 1)
            .ok()
            .and_then(|i| migrations.get(i))
        else {
            break;
        };
        apply(conn, version, step, keys)?;
        tracing::info!(schema_version = version, "database schema upgraded");
    }
    Ok(start)
}

fn apply(
    conn: &mut Connection,
    version: u32,
    step: &Migration,
    keys: Option<&KeyRing>,
) -> Result<(), MigrationError> {
    let sql_err = |source| MigrationError::Step {
        version,
        description: step.description,
        source,
    };
    let tx = conn.transaction().map_err(sql_err)?;
    tx.execute_batch(step.sql).map_err(sql_err)?;
    if let Some(convert) = rust_step(step) {
        let keys = keys.ok_or(MigrationError::NoKeys {
            version,
            description: step.description,
        })?;
        convert(&tx, keys).map_err(|source| MigrationError::Convert {
            version,
            description: step.description,
            source: Box::new(source),
        })?;
    }
    // user_version lives in the database header, which SQLite writes inside the transaction.
    tx.pragma_update(None, "user_version", version)
        .map_err(sql_err)?;
    tx.commit().map_err(sql_err)
}

/// Test hook: migrate only up to `target`, so tests can build databases at older versions.
#[cfg(test)]
pub(crate) fn migrate_to(
    conn: &mut Connection,
    target: u32,
    keys: Option<&KeyRing>,
) -> Result<u32, MigrationError> {
    migrate_with(conn, MIGRATIONS, target, keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEPS: &[Migration] = &[
        Migration {
            description: "one",
            sql: "CREATE TABLE a (x INTEGER);",
        },
        Migration {
            description: "two",
            sql: "ALTER TABLE a ADD COLUMN y INTEGER; INSERT INTO a (x, y) VALUES (1, 2);",
        },
        Migration {
            description: "three",
            sql: "CREATE TABLE b (z TEXT);",
        },
    ];

    #[test]
    fn each_starting_version_reaches_the_end_with_every_step_applied_once() {
        for start in 0..=3u32 {
            let mut conn = Connection::open_in_memory().unwrap();
            migrate_with(&mut conn, STEPS, start, None).unwrap();
            assert_eq!(user_version(&conn).unwrap(), start);
            assert_eq!(migrate_with(&mut conn, STEPS, 3, None).unwrap(), start);
            assert_eq!(user_version(&conn).unwrap(), 3);
            let rows: i64 = conn
                .query_row("SELECT count(*) FROM a", [], |r| r.get(0))
                .unwrap();
            assert_eq!(rows, 1, "starting at {start}");
            conn.execute("INSERT INTO b (z) VALUES ('ok')", []).unwrap();
        }
    }

    #[test]
    fn a_failing_step_rolls_back_and_leaves_the_previous_version() {
        const BROKEN: &[Migration] = &[
            Migration {
                description: "one",
                sql: "CREATE TABLE a (x INTEGER);",
            },
            Migration {
                description: "broken",
                sql: "CREATE TABLE c (x INTEGER); THIS IS NOT SQL;",
            },
        ];
        let mut conn = Connection::open_in_memory().unwrap();
        let err = migrate_with(&mut conn, BROKEN, 2, None).unwrap_err();
        assert!(matches!(err, MigrationError::Step { version: 2, .. }));
        assert_eq!(user_version(&conn).unwrap(), 1);
        let c_exists: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'c'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(c_exists, 0);
    }

    #[test]
    fn a_database_from_a_newer_release_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        let err = migrate_with(&mut conn, STEPS, 3, None).unwrap_err();
        assert!(matches!(
            err,
            MigrationError::TooNew {
                found: 99,
                supported: 3
            }
        ));
    }
}
