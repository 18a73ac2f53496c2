//! Who may use the box: roles, password hashing and session tokens.
//!
//! Passwords are hashed with Argon2id (memory-hard, so a stolen database resists offline
//! guessing) and never logged or stored in clear. A session token is 32 random bytes handed to
//! the browser once; the store keeps only its SHA-256, so a copy of the database cannot be used
//! to sign in. What each role may do is decided in one place, [`Role::may`], so the API handlers
//! and the role × endpoint test read the same table.

pub mod login;

use std::fmt;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use ring::digest::{digest, SHA256};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

/// Failed logins in a row that lock an account.
pub const MAX_FAILED_LOGINS: u32 = 5;
/// How long a locked account stays locked.
pub const LOCKOUT_MS: i64 = 15 * 60 * 1000;
/// Shortest password accepted when an account is created.
pub const MIN_PASSWORD_CHARS: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the system random number generator failed")]
    Random,
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("a password needs at least {MIN_PASSWORD_CHARS} characters")]
    WeakPassword,
    #[error("a user name is 1-64 characters of letters, digits, '.', '-' or '_'")]
    BadUsername,
}

/// A user's role. Stored as its lowercase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Sees and signs only their own encounters.
    Clinician,
    /// Sees the notes assigned to them; cannot edit or sign.
    Reviewer,
    /// Runs the box: users, retention, deletions, metrics. Never sees patient content.
    Admin,
    /// Reads the audit log and quality metrics.
    Auditor,
}

/// Everything a signed-in user can ask for. Handlers name the permission they need; whether an
/// encounter is the user's own (or assigned) is checked separately, per encounter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// List and open encounters visible to the user: transcript, draft, audio, versions.
    ReadNotes,
    /// Save versions, sign, write addenda, assign reviewers (own encounters only).
    EditNotes,
    ReadAudit,
    ReadQuality,
    ManageUsers,
    /// Retention runs and deletion requests.
    DeleteRecords,
    /// See the outbox (ids and states) and retry or cancel dead deliveries.
    ManageDeliveries,
    /// The admin port: config, badges, devices, models, log level, support bundle.
    ConfigureBox,
    /// Pair a badge to oneself at the review page.
    PairOwnBadge,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Clinician, Role::Reviewer, Role::Admin, Role::Auditor];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Clinician => "clinician",
            Role::Reviewer => "reviewer",
            Role::Admin => "admin",
            Role::Auditor => "auditor",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == s)
    }

    /// The role table. The IT admin deliberately has no way to read notes: it deletes records
    /// by id or patient reference without seeing them.
    pub fn may(self, permission: Permission) -> bool {
        use Permission::*;
        match self {
            Role::Clinician => matches!(permission, ReadNotes | EditNotes | PairOwnBadge),
            Role::Reviewer => matches!(permission, ReadNotes),
            Role::Admin => matches!(
                permission,
                ReadQuality | ManageUsers | DeleteRecords | ManageDeliveries | ConfigureBox
            ),
            Role::Auditor => matches!(permission, ReadAudit | ReadQuality),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Argon2id with OWASP's minimum (19 MiB, 2 passes, 1 lane): ~30-60 ms here, so a login stays
/// quick while a GPU guessing offline pays for the memory of every guess.
fn hasher() -> Result<Argon2<'static>, AuthError> {
    let params = Params::new(19 * 1024, 2, 1, None).map_err(|e| AuthError::Hash(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// The PHC string (`$argon2id$v=19$m=…`) to store for `password`.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(AuthError::WeakPassword);
    }
    let mut salt = [0u8; 16];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| AuthError::Random)?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| AuthError::Hash(e.to_string()))?;
    let hash = hasher()?
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| AuthError::Hash(e.to_string()))?;
    Ok(hash.to_string())
}

/// Whether `password` matches the stored PHC string. A malformed stored hash never matches.
pub fn verify_password(password: &str, stored: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else {
        return false;
    };
    let Ok(argon) = hasher() else {
        return false;
    };
    argon.verify_password(password.as_bytes(), &parsed).is_ok()
}

/// A hash to check against when the user name is unknown, so an unknown name takes as long as
/// a wrong password and does not reveal which names exist.
pub fn dummy_hash() -> &'static str {
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$7t1uUq3m4bV8wYv9x6p2m3Yk0Xr7b4w7n0Zq8a5c2dE"
}

/// A fresh session token (64 hex characters) for the browser.
pub fn new_session_token() -> Result<String, AuthError> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| AuthError::Random)?;
    Ok(hex(&bytes))
}

/// What the store keeps of a session token.
pub fn token_digest(token: &str) -> String {
    hex(digest(&SHA256, token.as_bytes()).as_ref())
}

/// Checks a new user name: short, and no characters that could smuggle markup or paths.
pub fn check_username(name: &str) -> Result<(), AuthError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(AuthError::BadUsername)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_verifies_only_against_its_own_hash() {
        let hash = hash_password("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify_password("correct horse battery", &hash));
        assert!(!verify_password("correct horse batterY", &hash));
        // Two hashes of one password differ (fresh salt) and both verify.
        let again = hash_password("correct horse battery").unwrap();
        assert_ne!(hash, again);
        assert!(verify_password("correct horse battery", &again));
    }

    #[test]
    fn short_passwords_and_odd_names_are_refused() {
        assert!(matches!(
            hash_password("short"),
            Err(AuthError::WeakPassword)
        ));
        assert!(check_username("dr.lee-2").is_ok());
        for bad in ["", "a b", "<script>", "../etc", &"x".repeat(65)] {
            assert!(check_username(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_dummy_hash_parses_and_matches_nothing_likely() {
        assert!(PasswordHash::new(dummy_hash()).is_ok());
        assert!(!verify_password("", dummy_hash()));
        assert!(!verify_password("password1234", dummy_hash()));
    }

    #[test]
    fn tokens_are_random_and_stored_as_digests() {
        let a = new_session_token().unwrap();
        let b = new_session_token().unwrap();
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert_eq!(token_digest(&a).len(), 64);
        assert_ne!(token_digest(&a), a);
    }

    #[test]
    fn only_clinicians_edit_and_admins_never_read_notes() {
        for role in Role::ALL {
            assert_eq!(role.may(Permission::EditNotes), role == Role::Clinician);
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert!(!Role::Admin.may(Permission::ReadNotes));
        assert!(!Role::Auditor.may(Permission::ReadNotes));
        assert!(Role::Reviewer.may(Permission::ReadNotes));
    }
}
