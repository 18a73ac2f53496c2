//! Users and sessions. Passwords arrive here already hashed (see `crate::auth`); session tokens
//! arrive as digests. Every login, failed login, logout and new account is audited by user id.

use rusqlite::{params, OptionalExtension, Row};

use super::audit::{self, Actor, AuditAction, AuditDetail, AuditEntry};
use super::{now_ms, Store, StoreError};

/// A user as stored, with the fields login needs. `Debug` leaves the hash out.
#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: String,
    pub username: String,
    /// One of `crate::auth::Role`'s names.
    pub role: String,
    pub specialty: Option<String>,
    pub password_hash: String,
    pub failed_logins: u32,
    pub locked_until_ms: Option<i64>,
    pub disabled: bool,
}

impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("role", &self.role)
            .field("failed_logins", &self.failed_logins)
            .field("locked_until_ms", &self.locked_until_ms)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

/// What the caller supplies for a new account.
#[derive(Clone)]
pub struct NewUser {
    pub username: String,
    pub role: String,
    pub specialty: Option<String>,
    pub password_hash: String,
}

/// The outcome of a login attempt, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginRecord {
    Succeeded,
    /// Wrong password; the account is now locked if `locked`.
    Failed {
        locked: bool,
    },
}

const USER_COLUMNS: &str =
    "id, username, role, specialty, password_hash, failed_logins, locked_until_ms, disabled";

fn user_from_row(row: &Row<'_>) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        id: row.get(0)?,
        username: row.get(1)?,
        role: row.get(2)?,
        specialty: row.get(3)?,
        password_hash: row.get(4)?,
        failed_logins: row.get(5)?,
        locked_until_ms: row.get(6)?,
        disabled: row.get(7)?,
    })
}

impl Store {
    /// Creates an account and returns its id. `StoreError::UsernameTaken` if the name exists.
    pub fn create_user(&self, user: &NewUser, actor: &Actor) -> Result<String, StoreError> {
        let id = uuid::Uuid::new_v4().to_string();
        let tx = self.write_transaction()?;
        let taken: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM users WHERE username = ?1)",
            [&user.username],
            |r| r.get(0),
        )?;
        if taken {
            return Err(StoreError::UsernameTaken);
        }
        tx.execute(
            "INSERT INTO users (id, username, role, specialty, password_hash, created_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                id,
                user.username,
                user.role,
                user.specialty,
                user.password_hash,
                now_ms()
            ],
        )?;
        audit::append_in(
            &tx,
            &AuditEntry {
                actor: actor.clone(),
                action: AuditAction::UserCreated,
                subject: id.clone(),
                detail: AuditDetail {
                    role: Some(user.role.clone()),
                    ..AuditDetail::default()
                },
            },
        )?;
        tx.commit()?;
        Ok(id)
    }

    pub fn user_by_username(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE username = ?1"),
                [username],
                user_from_row,
            )
            .optional()?)
    }

    pub fn user_by_id(&self, id: &str) -> Result<Option<UserRecord>, StoreError> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"),
                [id],
                user_from_row,
            )
            .optional()?)
    }

    pub fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {USER_COLUMNS} FROM users ORDER BY username"
        ))?;
        let rows = stmt.query_map([], user_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Number of accounts with `role`, e.g. to tell whether the first admin exists.
    pub fn count_users_with_role(&self, role: &str) -> Result<u64, StoreError> {
        let n: i64 =
            self.conn
                .query_row("SELECT count(*) FROM users WHERE role = ?1", [role], |r| {
                    r.get(0)
                })?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Records a login attempt for an existing user: resets the failure count on success;
    /// on failure counts it and locks the account for `lockout_ms` once `max_failures` is
    /// reached. Audited either way.
    pub fn record_login(
        &self,
        user_id: &str,
        succeeded: bool,
        max_failures: u32,
        lockout_ms: i64,
    ) -> Result<LoginRecord, StoreError> {
        let tx = self.write_transaction()?;
        let now = now_ms();
        let (record, failures) = if succeeded {
            tx.execute(
                "UPDATE users SET failed_logins = 0, locked_until_ms = NULL WHERE id = ?1",
                [user_id],
            )?;
            (LoginRecord::Succeeded, 0)
        } else {
            let failures: u32 = tx.query_row(
                "UPDATE users SET failed_logins = failed_logins + 1 WHERE id = ?1
                 RETURNING failed_logins",
                [user_id],
                |r| r.get(0),
            )?;
            let locked = failures >= max_failures;
            if locked {
                tx.execute(
                    "UPDATE users SET locked_until_ms = ?2, failed_logins = 0 WHERE id = ?1",
                    params![user_id, now + lockout_ms],
                )?;
            }
            (LoginRecord::Failed { locked }, failures)
        };
        audit::append_in(
            &tx,
            &AuditEntry {
                actor: Actor::User(user_id.to_owned()),
                action: if succeeded {
                    AuditAction::LoginSucceeded
                } else {
                    AuditAction::LoginFailed
                },
                subject: user_id.to_owned(),
                detail: AuditDetail {
                    failed_logins: (!succeeded).then_some(u64::from(failures)),
                    ..AuditDetail::default()
                },
            },
        )?;
        tx.commit()?;
        Ok(record)
    }

    /// Audits a login for a name that has no account. The name is not recorded: a mistyped
    /// password in the user-name field must not end up in the audit log.
    pub fn record_unknown_login(&self) -> Result<(), StoreError> {
        self.append_audit(&AuditEntry {
            actor: Actor::System,
            action: AuditAction::LoginFailed,
            subject: "unknown-user".to_owned(),
            detail: AuditDetail::default(),
        })?;
        Ok(())
    }

    pub fn create_session(
        &self,
        token_digest: &str,
        user_id: &str,
        max_age_ms: i64,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        self.conn.execute(
            "INSERT INTO sessions (token_digest, user_id, created_at_ms, last_seen_ms, expires_at_ms)
             VALUES (?1, ?2, ?3, ?3, ?4)",
            params![token_digest, user_id, now, now + max_age_ms],
        )?;
        // Expired sessions of anyone are swept here, so the table cannot grow without bound.
        self.conn
            .execute("DELETE FROM sessions WHERE expires_at_ms < ?1", [now])?;
        Ok(())
    }

    /// The user behind a live session, touching its last-seen time. A session unused for
    /// `idle_ms`, past its expiry, or of a disabled user is deleted and yields `None`.
    pub fn session_user(
        &self,
        token_digest: &str,
        idle_ms: i64,
    ) -> Result<Option<UserRecord>, StoreError> {
        let now = now_ms();
        let found: Option<(String, i64, i64)> = self
            .conn
            .query_row(
                "SELECT user_id, last_seen_ms, expires_at_ms FROM sessions WHERE token_digest = ?1",
                [token_digest],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((user_id, last_seen, expires_at)) = found else {
            return Ok(None);
        };
        let user = self.user_by_id(&user_id)?;
        let live = now <= expires_at
            && now - last_seen <= idle_ms
            && user.as_ref().is_some_and(|u| !u.disabled);
        if !live {
            self.conn.execute(
                "DELETE FROM sessions WHERE token_digest = ?1",
                [token_digest],
            )?;
            return Ok(None);
        }
        self.conn.execute(
            "UPDATE sessions SET last_seen_ms = ?2 WHERE token_digest = ?1",
            params![token_digest, now],
        )?;
        Ok(user)
    }

    /// Ends a session (logout), audited.
    pub fn end_session(&self, token_digest: &str, user_id: &str) -> Result<(), StoreError> {
        let tx = self.write_transaction()?;
        tx.execute(
            "DELETE FROM sessions WHERE token_digest = ?1",
            [token_digest],
        )?;
        audit::append_in(
            &tx,
            &AuditEntry {
                actor: Actor::User(user_id.to_owned()),
                action: AuditAction::LoggedOut,
                subject: user_id.to_owned(),
                detail: AuditDetail::default(),
            },
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Test hook: pretends a session was last used `ago_ms` earlier.
    #[doc(hidden)]
    pub fn age_session_for_test(&self, token_digest: &str, ago_ms: i64) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE sessions SET last_seen_ms = last_seen_ms - ?2 WHERE token_digest = ?1",
            params![token_digest, ago_ms],
        )?;
        Ok(())
    }
}
