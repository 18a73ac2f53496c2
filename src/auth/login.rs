//! Checking a user name and password against the store, with the lockout rule: shared by the
//! review page's login and the admin port's token endpoint, so both refuse alike.

use crate::store::users::{LoginRecord, UserRecord};
use crate::store::{Store, StoreError};

/// Why a login was refused. The messages never say whether the name exists.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("wrong user name or password")]
    WrongCredentials,
    #[error(
        "this account is locked after repeated failed logins; try again in 15 minutes or ask IT \
         to unlock it"
    )]
    Locked,
    #[error("too many failed logins: this account is locked for 15 minutes")]
    LockedNow,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl LoginError {
    /// Whether the account is locked (HTTP 423) rather than the credentials wrong (401).
    pub fn is_lockout(&self) -> bool {
        matches!(self, LoginError::Locked | LoginError::LockedNow)
    }
}

/// The user whose password this is, after recording the attempt (failed attempts count toward
/// the lockout). Blocks: Argon2 takes tens of milliseconds.
pub fn check_password(
    store: &Store,
    username: &str,
    password: &str,
) -> Result<UserRecord, LoginError> {
    let Some(user) = store.user_by_username(username)? else {
        // Spend the time a real check takes, so timing does not reveal which names exist.
        let _ = super::verify_password(password, super::dummy_hash());
        store.record_unknown_login()?;
        return Err(LoginError::WrongCredentials);
    };
    if user
        .locked_until_ms
        .is_some_and(|until| until > crate::store::now_ms())
    {
        return Err(LoginError::Locked);
    }
    let ok = !user.disabled && super::verify_password(password, &user.password_hash);
    match store.record_login(&user.id, ok, super::MAX_FAILED_LOGINS, super::LOCKOUT_MS)? {
        LoginRecord::Succeeded => Ok(user),
        LoginRecord::Failed { locked: true } => Err(LoginError::LockedNow),
        LoginRecord::Failed { locked: false } => Err(LoginError::WrongCredentials),
    }
}
