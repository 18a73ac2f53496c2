//! What the admin API keeps in the store: every config version pushed (whole, for diffs and
//! rollback) and the badges paired to clinicians. None of it is patient data; badge ids and
//! clinician ids are what the audit log names.

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::audit::{self, Actor, AuditAction, AuditDetail, AuditEntry};
use super::{now_ms, Store, StoreError};

/// What became of a pushed config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfigState {
    /// Running now (the newest applied version is the current one).
    Applied,
    /// Failed validation; never applied.
    Rejected,
    /// Applied, failed its health check, and replaced by the version before it.
    RolledBack,
    /// Was applied; a later version replaced it.
    Superseded,
}

impl ConfigState {
    pub fn as_str(self) -> &'static str {
        match self {
            ConfigState::Applied => "applied",
            ConfigState::Rejected => "rejected",
            ConfigState::RolledBack => "rolled_back",
            ConfigState::Superseded => "superseded",
        }
    }

    fn parse(s: &str) -> Result<ConfigState, StoreError> {
        Ok(match s {
            "applied" => ConfigState::Applied,
            "rejected" => ConfigState::Rejected,
            "rolled_back" => ConfigState::RolledBack,
            "superseded" => ConfigState::Superseded,
            other => {
                return Err(StoreError::Unrecognised {
                    what: format!("config state {other:?}"),
                })
            }
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ConfigVersion {
    pub version: u64,
    pub created_at_ms: i64,
    /// `system` or `user:<id>`.
    pub actor: String,
    pub sha256: String,
    #[serde(skip)]
    pub toml: String,
    pub state: ConfigState,
    /// Why it was rejected or rolled back: validation problems and health failures (settings
    /// and paths, no patient data).
    pub reason: Option<String>,
}

/// A badge paired to a clinician, with what the capture side last heard of it.
#[derive(Debug, Clone, Serialize)]
pub struct BadgeRecord {
    pub badge_id: String,
    pub clinician_id: String,
    pub paired_at_ms: i64,
    pub last_seen_ms: Option<i64>,
    /// Speech level in dBFS the last time the badge was heard.
    pub signal_dbfs: Option<f64>,
    pub last_room: Option<String>,
}

fn config_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(ConfigVersion, String)> {
    let state: String = row.get(5)?;
    Ok((
        ConfigVersion {
            version: row.get::<_, i64>(0)?.unsigned_abs(),
            created_at_ms: row.get(1)?,
            actor: row.get(2)?,
            sha256: row.get(3)?,
            toml: row.get(4)?,
            state: ConfigState::Applied,
            reason: row.get(6)?,
        },
        state,
    ))
}

const CONFIG_COLUMNS: &str = "version, created_at_ms, actor, sha256, toml, state, reason";

fn with_state((mut version, state): (ConfigVersion, String)) -> Result<ConfigVersion, StoreError> {
    version.state = ConfigState::parse(&state)?;
    Ok(version)
}

impl Store {
    /// Every config version, oldest first.
    pub fn config_versions(&self) -> Result<Vec<ConfigVersion>, StoreError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {CONFIG_COLUMNS} FROM config_versions ORDER BY version"
        ))?;
        let rows = stmt
            .query_map([], config_row)?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(with_state).collect()
    }

    pub fn config_version(&self, version: u64) -> Result<Option<ConfigVersion>, StoreError> {
        let Ok(version) = i64::try_from(version) else {
            return Ok(None);
        };
        self.conn
            .query_row(
                &format!("SELECT {CONFIG_COLUMNS} FROM config_versions WHERE version = ?1"),
                [version],
                config_row,
            )
            .optional()?
            .map(with_state)
            .transpose()
    }

    /// The config running now: the newest applied version.
    pub fn current_config(&self) -> Result<Option<ConfigVersion>, StoreError> {
        self.conn
            .query_row(
                &format!(
                    "SELECT {CONFIG_COLUMNS} FROM config_versions WHERE state = 'applied' \
                     ORDER BY version DESC LIMIT 1"
                ),
                [],
                config_row,
            )
            .optional()?
            .map(with_state)
            .transpose()
    }

    /// Stores a pushed config as the next version. An applied one supersedes the version that
    /// was current, in the same transaction, so exactly one version is current at any time.
    pub fn record_config_version(
        &self,
        toml: &str,
        sha256: &str,
        state: ConfigState,
        reason: Option<&str>,
        actor: &Actor,
    ) -> Result<u64, StoreError> {
        let tx = self.write_transaction()?;
        if state == ConfigState::Applied {
            tx.execute(
                "UPDATE config_versions SET state = 'superseded' WHERE state = 'applied'",
                [],
            )?;
        }
        tx.execute(
            "INSERT INTO config_versions (version, created_at_ms, actor, sha256, toml, state, reason)
             VALUES ((SELECT COALESCE(MAX(version), 0) + 1 FROM config_versions), ?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                now_ms(),
                actor.to_stored(),
                sha256,
                toml,
                state.as_str(),
                reason
            ],
        )?;
        let version = tx.last_insert_rowid().unsigned_abs();
        audit::append_in(
            &tx,
            &AuditEntry {
                actor: actor.clone(),
                action: if state == ConfigState::Rejected {
                    AuditAction::ConfigRejected
                } else {
                    AuditAction::ConfigChanged
                },
                subject: format!("config:{version}"),
                detail: AuditDetail {
                    version: Some(version),
                    status: Some(state.as_str().into()),
                    note_sha256: Some(sha256.into()),
                    ..AuditDetail::default()
                },
            },
        )?;
        tx.commit()?;
        Ok(version)
    }

    /// Marks an applied version as rolled back (its health check failed) and makes `restored`
    /// current again.
    pub fn roll_back_config(
        &self,
        failed: u64,
        restored: u64,
        reason: &str,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        let tx = self.write_transaction()?;
        let (failed_i, restored_i) = (
            i64::try_from(failed).unwrap_or(i64::MAX),
            i64::try_from(restored).unwrap_or(i64::MAX),
        );
        tx.execute(
            "UPDATE config_versions SET state = 'rolled_back', reason = ?2 WHERE version = ?1",
            params![failed_i, reason],
        )?;
        tx.execute(
            "UPDATE config_versions SET state = 'applied' WHERE version = ?1",
            [restored_i],
        )?;
        audit::append_in(
            &tx,
            &AuditEntry {
                actor: actor.clone(),
                action: AuditAction::ConfigRolledBack,
                subject: format!("config:{failed}"),
                detail: AuditDetail {
                    version: Some(restored),
                    ..AuditDetail::default()
                },
            },
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Starts pairing `badge_id` to a clinician: the code (stored as its digest) is what the
    /// clinician enters at the review page. Earlier unconfirmed codes for the badge end here.
    pub fn start_badge_pairing(
        &self,
        badge_id: &str,
        clinician_id: &str,
        code_digest: &str,
        expires_at_ms: i64,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        let tx = self.write_transaction()?;
        let now = now_ms();
        tx.execute(
            "DELETE FROM badge_pairings WHERE badge_id = ?1 OR expires_at_ms < ?2",
            params![badge_id, now],
        )?;
        tx.execute(
            "INSERT INTO badge_pairings (code_digest, badge_id, clinician_id, created_at_ms, expires_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![code_digest, badge_id, clinician_id, now, expires_at_ms],
        )?;
        audit::append_in(
            &tx,
            &AuditEntry {
                actor: actor.clone(),
                action: AuditAction::BadgePairingStarted,
                subject: format!("badge:{badge_id}"),
                detail: AuditDetail {
                    user_id: Some(clinician_id.into()),
                    ..AuditDetail::default()
                },
            },
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Completes a pairing when `clinician_id` presents a live code meant for them. Returns the
    /// badge id, or `None` for an unknown, expired or someone else's code (the code is spent
    /// either way only when it matched the clinician).
    pub fn confirm_badge_pairing(
        &self,
        code_digest: &str,
        clinician_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let tx = self.write_transaction()?;
        let now = now_ms();
        let found: Option<(String, String, i64)> = tx
            .query_row(
                "SELECT badge_id, clinician_id, expires_at_ms FROM badge_pairings
                 WHERE code_digest = ?1",
                [code_digest],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((badge_id, for_clinician, expires_at)) = found else {
            return Ok(None);
        };
        if for_clinician != clinician_id || expires_at < now {
            return Ok(None);
        }
        tx.execute(
            "DELETE FROM badge_pairings WHERE code_digest = ?1",
            [code_digest],
        )?;
        tx.execute(
            "INSERT INTO badges (badge_id, clinician_id, paired_at_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (badge_id) DO UPDATE SET clinician_id = excluded.clinician_id,
                 paired_at_ms = excluded.paired_at_ms, last_seen_ms = NULL,
                 signal_dbfs = NULL, last_room = NULL",
            params![badge_id, clinician_id, now],
        )?;
        audit::append_in(
            &tx,
            &AuditEntry {
                actor: Actor::User(clinician_id.into()),
                action: AuditAction::BadgePaired,
                subject: format!("badge:{badge_id}"),
                detail: AuditDetail::default(),
            },
        )?;
        tx.commit()?;
        Ok(Some(badge_id))
    }

    /// Removes a badge's pairing; `false` if it was not paired.
    pub fn unpair_badge(&self, badge_id: &str, actor: &Actor) -> Result<bool, StoreError> {
        let tx = self.write_transaction()?;
        let removed = tx.execute("DELETE FROM badges WHERE badge_id = ?1", [badge_id])?;
        tx.execute("DELETE FROM badge_pairings WHERE badge_id = ?1", [badge_id])?;
        if removed > 0 {
            audit::append_in(
                &tx,
                &AuditEntry {
                    actor: actor.clone(),
                    action: AuditAction::BadgeUnpaired,
                    subject: format!("badge:{badge_id}"),
                    detail: AuditDetail::default(),
                },
            )?;
        }
        tx.commit()?;
        Ok(removed > 0)
    }

    pub fn badges(&self) -> Result<Vec<BadgeRecord>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT badge_id, clinician_id, paired_at_ms, last_seen_ms, signal_dbfs, last_room
             FROM badges ORDER BY badge_id",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok(BadgeRecord {
                    badge_id: r.get(0)?,
                    clinician_id: r.get(1)?,
                    paired_at_ms: r.get(2)?,
                    last_seen_ms: r.get(3)?,
                    signal_dbfs: r.get(4)?,
                    last_room: r.get(5)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// The clinician a badge is paired to.
    pub fn badge_clinician(&self, badge_id: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT clinician_id FROM badges WHERE badge_id = ?1",
                [badge_id],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Records that a badge was heard, with its level, in a room.
    pub fn record_badge_heard(
        &self,
        badge_id: &str,
        signal_dbfs: f64,
        room: Option<&str>,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE badges SET last_seen_ms = ?2, signal_dbfs = ?3, last_room = ?4
             WHERE badge_id = ?1",
            params![badge_id, now_ms(), signal_dbfs, room],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::users::NewUser;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    fn clinician(store: &Store, name: &str) -> String {
        store
            .create_user(
                &NewUser {
                    username: name.into(),
                    role: "clinician".into(),
                    specialty: None,
                    password_hash: "x".into(),
                },
                &Actor::System,
            )
            .unwrap()
    }

    #[test]
    fn exactly_one_config_version_is_current_and_rollback_restores_the_previous() {
        let (_dir, store) = store();
        let v1 = store
            .record_config_version("a = 1", "h1", ConfigState::Applied, None, &Actor::System)
            .unwrap();
        let rejected = store
            .record_config_version(
                "a = ",
                "h2",
                ConfigState::Rejected,
                Some("bad"),
                &Actor::System,
            )
            .unwrap();
        assert_eq!(store.current_config().unwrap().unwrap().version, v1);
        let v3 = store
            .record_config_version("a = 3", "h3", ConfigState::Applied, None, &Actor::System)
            .unwrap();
        assert_eq!(store.current_config().unwrap().unwrap().version, v3);
        assert_eq!(
            store.config_version(v1).unwrap().unwrap().state,
            ConfigState::Superseded
        );
        store
            .roll_back_config(v3, v1, "health check failed", &Actor::System)
            .unwrap();
        let current = store.current_config().unwrap().unwrap();
        assert_eq!((current.version, current.toml.as_str()), (v1, "a = 1"));
        let states: Vec<_> = store
            .config_versions()
            .unwrap()
            .iter()
            .map(|v| v.state)
            .collect();
        assert_eq!(
            states,
            [
                ConfigState::Applied,
                ConfigState::Rejected,
                ConfigState::RolledBack
            ]
        );
        assert_eq!(rejected, 2);
        assert!(store.verify_audit().unwrap().is_intact());
    }

    #[test]
    fn a_pairing_code_works_once_and_only_for_its_clinician() {
        let (_dir, store) = store();
        let alice = clinician(&store, "alice");
        let bob = clinician(&store, "bob");
        let later = now_ms() + 60_000;
        store
            .start_badge_pairing("BADGE-1", &alice, "d1", later, &Actor::System)
            .unwrap();
        assert_eq!(store.confirm_badge_pairing("d1", &bob).unwrap(), None);
        assert_eq!(store.confirm_badge_pairing("nope", &alice).unwrap(), None);
        assert_eq!(
            store
                .confirm_badge_pairing("d1", &alice)
                .unwrap()
                .as_deref(),
            Some("BADGE-1")
        );
        assert_eq!(store.confirm_badge_pairing("d1", &alice).unwrap(), None);
        assert_eq!(
            store.badge_clinician("BADGE-1").unwrap().as_deref(),
            Some(alice.as_str())
        );
        store
            .record_badge_heard("BADGE-1", -23.5, Some("exam-1"))
            .unwrap();
        let badges = store.badges().unwrap();
        assert_eq!(badges[0].signal_dbfs, Some(-23.5));
        assert!(store.unpair_badge("BADGE-1", &Actor::System).unwrap());
        assert!(!store.unpair_badge("BADGE-1", &Actor::System).unwrap());
        assert_eq!(store.badge_clinician("BADGE-1").unwrap(), None);
    }

    #[test]
    fn an_expired_code_does_not_pair() {
        let (_dir, store) = store();
        let alice = clinician(&store, "alice");
        store
            .start_badge_pairing("B2", &alice, "d2", now_ms() - 1, &Actor::System)
            .unwrap();
        assert_eq!(store.confirm_badge_pairing("d2", &alice).unwrap(), None);
    }
}
