//! The data directory's lock: the daemon holds it for as long as it runs, so that work which
//! must not happen under a running daemon (restoring a backup) can tell, and so that two daemons
//! never share one data directory.
//!
//! The lock is an exclusive `flock` on `<data_dir>/edge-scribe.lock`. The kernel drops it when
//! the holder exits, however it exits, so a crash never leaves a stale lock behind (a PID file
//! or `review.addr` could). The file itself is never removed: removing a lock file while another
//! process waits on it would let two holders in. The descriptor is close-on-exec, so worker
//! processes never inherit it and cannot keep it alive after the daemon dies.
//!
//! What it may not do: block. Every caller wants to know now whether the directory is in use.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Name of the lock file inside the data directory.
pub const LOCK_FILE_NAME: &str = "edge-scribe.lock";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "the data directory {dir} is in use by another edge-scribe process (it holds {path}); \
         stop the service first (`systemctl stop edge-scribe`) and run this again"
    )]
    Held { dir: PathBuf, path: PathBuf },

    #[error(
        "could not open or lock {path}: {source}; check that the data directory exists and \
         that this user may write to it"
    )]
    Io { path: PathBuf, source: io::Error },
}

/// The held lock; dropping it releases it.
#[derive(Debug)]
pub struct DataDirLock {
    // Held only for its lock: closing the file is what releases it.
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Takes the lock of `data_dir` without waiting: `Held` if another process (or another
    /// handle in this one) has it. The data directory must exist.
    pub fn try_acquire(data_dir: &Path) -> Result<DataDirLock, LockError> {
        let path = data_dir.join(LOCK_FILE_NAME);
        let io_err = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io_err)?;
        give_to_dir_owner(data_dir, &path);
        match file.try_lock() {
            Ok(()) => Ok(DataDirLock { _file: file, path }),
            Err(TryLockError::WouldBlock) => Err(LockError::Held {
                dir: data_dir.to_path_buf(),
                path,
            }),
            Err(TryLockError::Error(source)) => Err(io_err(source)),
        }
    }

    /// Whether some process holds the lock of `data_dir` right now. A directory without a lock
    /// file is not in use (no daemon that takes the lock has run there).
    pub fn is_held(data_dir: &Path) -> Result<bool, LockError> {
        if !data_dir.join(LOCK_FILE_NAME).exists() {
            return Ok(false);
        }
        match DataDirLock::try_acquire(data_dir) {
            Ok(_released_on_drop) => Ok(false),
            Err(LockError::Held { .. }) => Ok(true),
            Err(e) => Err(e),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A lock file made by root (a restore run before the service ever started) would be mode 0600
/// root's, and the daemon, running as the data directory's owner, could then never open it.
/// Best effort: only root can change it, and a file that is right already is left alone.
fn give_to_dir_owner(data_dir: &Path, path: &Path) {
    use std::os::unix::fs::MetadataExt;
    let (Ok(dir), Ok(file)) = (std::fs::metadata(data_dir), std::fs::metadata(path)) else {
        return;
    };
    if dir.uid() != file.uid() || dir.gid() != file.gid() {
        let _ = std::os::unix::fs::chown(path, Some(dir.uid()), Some(dir.gid()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!DataDirLock::is_held(dir.path()).unwrap());
        let first = DataDirLock::try_acquire(dir.path()).unwrap();
        assert!(matches!(
            DataDirLock::try_acquire(dir.path()),
            Err(LockError::Held { .. })
        ));
        assert!(DataDirLock::is_held(dir.path()).unwrap());
        drop(first);
        assert!(!DataDirLock::is_held(dir.path()).unwrap());
        DataDirLock::try_acquire(dir.path()).unwrap();
    }
}
