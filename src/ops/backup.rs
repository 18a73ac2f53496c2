//! `edge-scribe backup` and `edge-scribe restore`.
//!
//! A backup is one zip file (mode 0600, written to a temp file and renamed into place) holding:
//! a snapshot of the database taken while the daemon runs (still SQLCipher-encrypted with the
//! same database key), `database.key` (the database key, wrapped under the master key), the
//! box's signing key sealed under the master key, `signing.pub`, and `manifest.json` (format,
//! creation time, schema version, the id of the master key it needs, record counts, and the
//! sha256 and size of every member). The master key is never in a backup: the file alone opens
//! nothing, and the master key must be kept separately.
//!
//! A restore refuses while a daemon uses the data directory, checks every member against the
//! manifest, rebuilds the box's files in a staging directory inside the data directory, opens
//! the restored database with the current master key, deletes again every encounter the
//! replaced database records as deleted (a deletion made after the backup must survive it),
//! verifies the audit chain, and only then swaps the files in, moving the replaced ones to
//! `<data_dir>/pre-restore-<time>/`. Any failure before the swap leaves the data directory's
//! files as they were.
//!
//! What it may not do: write a master key anywhere, put a secret in a backup in a form that
//! opens without the master key, delete the replaced files, or name patient data in a message.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::digest;
use serde::{Deserialize, Serialize};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipArchive, ZipWriter};

use crate::attest::{PUBLIC_KEY_FILE_NAME, SIGNING_KEY_FILE_NAME};
use crate::store::backup::{
    credentials_dir_from_env, master_key_files, master_key_ids, open_copy, open_secret,
    seal_secret, RecordCounts, SealedSecretError,
};
use crate::store::key::{self, check_private_file, PrivateFileProblem};
use crate::store::lock::{DataDirLock, LockError};
use crate::store::{Store, StoreError, DATABASE_KEY_FILE_NAME, DB_FILE_NAME};

/// `format` of every backup manifest.
pub const FORMAT: &str = "edge-scribe-backup";
/// The manifest version this release writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;
/// Name of the manifest inside the backup.
pub const MANIFEST_NAME: &str = "manifest.json";
/// The signing key's member: sealed under the master key, never in clear.
pub const SEALED_SIGNING_KEY: &str = "signing.key.sealed";
/// Purpose bound into the sealed signing key.
const SIGNING_KEY_PURPOSE: &str = "signing.key";

/// Every member a backup may hold, in the order they are written. Anything else in a backup
/// file is refused, which also keeps a crafted member name from reaching outside the staging
/// directory.
///
/// A new file in the data directory that is not derived from these (the way `signing.pub` is
/// from `signing.key`, or `review.addr` from the running daemon) must be added here, and to
/// [`REPLACED_FILES`].
const MEMBERS: [&str; 4] = [
    DB_FILE_NAME,
    DATABASE_KEY_FILE_NAME,
    SEALED_SIGNING_KEY,
    PUBLIC_KEY_FILE_NAME,
];

/// The live files a restore moves aside (to `pre-restore-<time>/`) before moving the restored
/// ones in. Not the master key (it stays: the restored files are opened with it), not the lock,
/// and not the installed models.
const REPLACED_FILES: [&str; 7] = [
    DB_FILE_NAME,
    "edge-scribe.db-wal",
    "edge-scribe.db-shm",
    "edge-scribe.db-journal",
    DATABASE_KEY_FILE_NAME,
    SIGNING_KEY_FILE_NAME,
    PUBLIC_KEY_FILE_NAME,
];

/// A bound on the small members (key files, manifest) read into memory.
const MAX_SMALL_FILE: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(
        "there is no database at {path}, so there is nothing to back up; check --data-dir or \
         storage.data_dir in the configuration"
    )]
    NoDatabase { path: PathBuf },

    #[error(
        "no master key for {data_dir}: neither {path} nor a systemd credential \
         ($CREDENTIALS_DIRECTORY/master.key); put the master.key that belongs to this box in \
         place first (mode 600, owned by the service user), or set CREDENTIALS_DIRECTORY to the \
         directory that holds it"
    )]
    NoMasterKey { data_dir: PathBuf, path: PathBuf },

    #[error(
        "the edge-scribe daemon appears to be running: its review service answers at {addr}; \
         stop it first (`systemctl stop edge-scribe`) and run restore again (if no daemon runs, \
         remove the stale {path})"
    )]
    DaemonRunning { addr: SocketAddr, path: PathBuf },

    #[error(transparent)]
    Lock(#[from] LockError),

    #[error("could not {action} {path}: {source}; check free disk space and permissions")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },

    #[error("could not write the backup {path}: {source}; check free disk space")]
    Write {
        path: PathBuf,
        source: zip::result::ZipError,
    },

    #[error("{path} is not an edge-scribe backup ({reason}); nothing was changed")]
    NotABackup { path: PathBuf, reason: String },

    #[error(
        "the backup {path} is damaged or incomplete ({reason}); nothing was changed. Use \
         another copy of the backup"
    )]
    Damaged { path: PathBuf, reason: String },

    #[error(
        "the backup {path} was written by a newer edge-scribe (backup format {version}); \
         nothing was changed. Install that release to restore it"
    )]
    NewerFormat { path: PathBuf, version: u32 },

    #[error(
        "this backup was made under a different master key: it needs master key {needed}, and \
         this box has {have}; nothing was changed. Put the master.key that was in use when the \
         backup was made in place (keep the current one safe), or restore a backup made under \
         the current key"
    )]
    WrongMasterKey { needed: String, have: String },

    #[error(
        "the audit log {where_} is broken at entry seq {seq} ({reason}); {what}. Run \
         `edge-scribe audit verify`, keep the files as evidence, and review who had access to \
         the box"
    )]
    AuditBroken {
        where_: &'static str,
        seq: i64,
        reason: String,
        what: &'static str,
    },

    #[error(
        "the current database cannot be opened to read which encounters were deleted since \
         the backup was made ({source}); nothing was changed. If it is damaged beyond use and \
         you accept that encounters deleted after the backup will come back (delete them again \
         afterwards), run restore again with --force"
    )]
    LiveUnreadable {
        #[source]
        source: StoreError,
    },

    #[error(
        "could not give {path} to the data directory's owner (uid {uid}): {source}; run \
         restore as root or as the service user"
    )]
    Ownership {
        path: PathBuf,
        uid: u32,
        source: io::Error,
    },

    #[error(
        "the restore failed while moving files into {data_dir} ({source}); the files that \
         were there are back in place where that was possible, the replaced ones are in \
         {aside} and the restored ones in {staging}; check permissions and free space, and \
         compare the directories before starting the service"
    )]
    Swap {
        data_dir: PathBuf,
        aside: PathBuf,
        staging: PathBuf,
        source: io::Error,
    },

    #[error(transparent)]
    Store(#[from] StoreError),
}

fn io_err<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> BackupError + 'p {
    move |source| BackupError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// `manifest.json`: what a backup holds. Ids, counts, hashes and times only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupManifest {
    pub format: String,
    pub format_version: u32,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// The release that wrote it.
    pub edge_scribe_version: String,
    pub schema_version: u32,
    /// The master key (its public id) that opens `database.key` and the sealed signing key.
    pub master_key_id: String,
    pub encounters: u64,
    pub signed_notes: u64,
    pub audit_entries: u64,
    pub members: Vec<Member>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    pub sha256: String,
    pub bytes: u64,
}

/// What a backup wrote.
#[derive(Debug, Clone)]
pub struct BackupReport {
    pub out: PathBuf,
    pub bytes: u64,
    pub manifest: BackupManifest,
    /// Where the master key this backup needs lives now (a file or the systemd credential).
    pub master_key: PathBuf,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct RestoreOptions {
    /// Restore even when the replaced database cannot be read, so its deletions cannot be
    /// replayed.
    pub force: bool,
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    pub manifest: BackupManifest,
    /// The restored database after deletions were replayed.
    pub counts: RecordCounts,
    /// Encounters deleted again because the replaced database records them as deleted; `None`
    /// when there was no database to replace, or it could not be read (`--force`).
    pub replayed_deletions: Option<usize>,
    /// True when a database was replaced but could not be read for its deletions.
    pub deletions_skipped: bool,
    /// Where the replaced files went.
    pub moved_aside: Option<PathBuf>,
}

/// Backs up the store in `data_dir` to `out` while the daemon may be running.
pub fn create_backup(data_dir: &Path, out: &Path) -> Result<BackupReport, BackupError> {
    let credentials = credentials_dir_from_env();
    let credentials = credentials.as_deref();
    let db = data_dir.join(DB_FILE_NAME);
    if !db.is_file() {
        return Err(BackupError::NoDatabase { path: db });
    }
    let key_files = master_key_files(data_dir, credentials);
    let Some(master_key) = key_files.first().cloned() else {
        return Err(no_master_key(data_dir));
    };

    let live = Store::open_existing(data_dir)?;
    let staging = Staging::create(data_dir, "backup")?;
    live.snapshot_to(&staging.path.join(DB_FILE_NAME))?;
    let mut master_key_id = live.current_master_key_id()?;
    drop(live);

    let database_key = data_dir.join(DATABASE_KEY_FILE_NAME);
    if database_key.exists() {
        let text = read_small(&database_key)?;
        // Its third word names the master key that wraps it: the one a restore needs.
        if let Some(id) = String::from_utf8_lossy(&text)
            .split_ascii_whitespace()
            .nth(2)
        {
            master_key_id = Some(id.to_owned());
        }
        write_private(&staging.path.join(DATABASE_KEY_FILE_NAME), &text)?;
    }
    let master_key_id = master_key_id.ok_or_else(|| StoreError::NoMatchingMasterKey {
        kek_id: "none".to_owned(),
        path: data_dir.join(key::KEY_FILE_NAME),
    })?;

    let signing_key = data_dir.join(SIGNING_KEY_FILE_NAME);
    if signing_key.exists() {
        refuse_open_secret(&signing_key)?;
        let mut plain = read_small(&signing_key)?;
        let sealed = seal_secret(
            data_dir,
            credentials,
            &master_key_id,
            SIGNING_KEY_PURPOSE,
            &plain,
        );
        key::wipe(&mut plain);
        write_private(&staging.path.join(SEALED_SIGNING_KEY), sealed?.as_bytes())?;
    }
    let public_key = data_dir.join(PUBLIC_KEY_FILE_NAME);
    if public_key.exists() {
        let text = read_small(&public_key)?;
        write_private(&staging.path.join(PUBLIC_KEY_FILE_NAME), &text)?;
    }

    // Prove the copy opens with the box's key and its audit chain holds before calling it a
    // backup.
    let copy = open_copy(&staging.path, data_dir, credentials)?;
    let audit = copy.verify_audit()?;
    if let Some(broken) = audit.first_break {
        return Err(BackupError::AuditBroken {
            where_: "of the database",
            seq: broken.seq,
            reason: broken.reason.to_string(),
            what: "no backup was written",
        });
    }
    let schema_version = copy.schema_version()?;
    let counts = copy.record_counts()?;
    drop(copy);
    staging.require_closed()?;

    let mut members = Vec::new();
    for name in MEMBERS {
        let path = staging.path.join(name);
        if path.exists() {
            let (sha256, bytes) = sha256_of(&path)?;
            members.push(Member {
                name: name.to_owned(),
                sha256,
                bytes,
            });
        }
    }
    let manifest = BackupManifest {
        format: FORMAT.to_owned(),
        format_version: FORMAT_VERSION,
        created_at: rfc3339_now(),
        edge_scribe_version: env!("CARGO_PKG_VERSION").to_owned(),
        schema_version,
        master_key_id,
        encounters: counts.encounters,
        signed_notes: counts.signed_notes,
        audit_entries: counts.audit_entries,
        members,
    };
    let bytes = write_archive(out, &staging.path, &manifest)?;
    tracing::info!(
        encounters = counts.encounters,
        audit_entries = counts.audit_entries,
        bytes,
        "backup written"
    );
    Ok(BackupReport {
        out: out.to_path_buf(),
        bytes,
        manifest,
        master_key,
    })
}

/// Restores the backup `file` into `data_dir`. The daemon must be stopped.
pub fn restore_backup(
    data_dir: &Path,
    file: &Path,
    options: &RestoreOptions,
) -> Result<RestoreReport, BackupError> {
    let credentials = credentials_dir_from_env();
    let credentials = credentials.as_deref();
    if master_key_files(data_dir, credentials).is_empty() {
        return Err(no_master_key(data_dir));
    }
    if !data_dir.is_dir() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)
            .map_err(io_err("create the data directory", data_dir))?;
    }
    // Held until the restore is over, so a daemon that takes the lock cannot start meanwhile.
    let _lock = DataDirLock::try_acquire(data_dir)?;
    if let Some((addr, path)) = review_service_answering(data_dir) {
        return Err(BackupError::DaemonRunning { addr, path });
    }

    let archive_file = File::open(file).map_err(io_err("open", file))?;
    let mut archive = ZipArchive::new(archive_file).map_err(|e| BackupError::Damaged {
        path: file.to_path_buf(),
        reason: format!(
            "its zip directory cannot be read: {e}; a truncated copy or not a backup at all"
        ),
    })?;
    let manifest = read_manifest(&mut archive, file)?;

    let staging = Staging::create(data_dir, "restore")?;
    for member in &manifest.members {
        extract_member(&mut archive, member, &staging.path, file)?;
    }

    let sealed_path = staging.path.join(SEALED_SIGNING_KEY);
    if sealed_path.exists() {
        let text = read_small(&sealed_path)?;
        let text = String::from_utf8_lossy(&text);
        let plain = open_secret(data_dir, credentials, SIGNING_KEY_PURPOSE, &text).map_err(
            |e| match e {
                SealedSecretError::NoKey { kek_id } => {
                    wrong_master_key(kek_id, data_dir, credentials)
                }
                SealedSecretError::Store(e) => BackupError::Store(e),
                other => BackupError::Damaged {
                    path: file.to_path_buf(),
                    reason: format!("the sealed signing key: {other}"),
                },
            },
        )?;
        key::write_new_private_file(&staging.path.join(SIGNING_KEY_FILE_NAME), plain.as_slice())
            .map_err(io_err("write", &staging.path.join(SIGNING_KEY_FILE_NAME)))?;
        drop(plain);
        fs::remove_file(&sealed_path).map_err(io_err("remove", &sealed_path))?;
    }

    let restored = open_copy(&staging.path, data_dir, credentials).map_err(|e| match e {
        StoreError::NoMatchingMasterKey { .. }
        | StoreError::WrongKey { .. }
        | StoreError::DatabaseKeyFile { .. } => {
            wrong_master_key(manifest.master_key_id.clone(), data_dir, credentials)
        }
        other => BackupError::Store(other),
    })?;

    let live_db = data_dir.join(DB_FILE_NAME);
    let mut deletions_skipped = false;
    let replayed_deletions = if live_db.is_file() {
        match Store::open_existing(data_dir) {
            Ok(live) => Some(restored.reapply_deletions(&live)?),
            Err(source) if options.force => {
                tracing::warn!(
                    error = %source,
                    "restoring without replaying deletions: the replaced database cannot be read"
                );
                deletions_skipped = true;
                None
            }
            Err(source) => return Err(BackupError::LiveUnreadable { source }),
        }
    } else {
        None
    };
    let audit = restored.verify_audit()?;
    if let Some(broken) = audit.first_break {
        return Err(BackupError::AuditBroken {
            where_: "in the backup",
            seq: broken.seq,
            reason: broken.reason.to_string(),
            what: "nothing was changed; restore an older backup",
        });
    }
    let counts = restored.record_counts()?;
    drop(restored);
    staging.require_closed()?;
    give_to_owner(data_dir, &staging.path)?;

    let moved_aside = swap_in(data_dir, &staging.path)?;
    tracing::info!(
        encounters = counts.encounters,
        replayed = replayed_deletions.unwrap_or(0),
        "backup restored"
    );
    Ok(RestoreReport {
        manifest,
        counts,
        replayed_deletions,
        deletions_skipped,
        moved_aside,
    })
}

fn no_master_key(data_dir: &Path) -> BackupError {
    BackupError::NoMasterKey {
        data_dir: data_dir.to_path_buf(),
        path: data_dir.join(key::KEY_FILE_NAME),
    }
}

fn wrong_master_key(needed: String, data_dir: &Path, credentials: Option<&Path>) -> BackupError {
    let have = master_key_ids(data_dir, credentials)
        .map(|ids| ids.join(" and "))
        .unwrap_or_else(|_| "none".to_owned());
    BackupError::WrongMasterKey { needed, have }
}

/// The review service's address if it accepts a connection: a daemon runs on this data
/// directory even if it predates the lock.
fn review_service_answering(data_dir: &Path) -> Option<(SocketAddr, PathBuf)> {
    let path = data_dir.join(crate::review::ADDR_FILE_NAME);
    let text = fs::read_to_string(&path).ok()?;
    let addr: SocketAddr = text.trim().parse().ok()?;
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    Some((addr, path))
}

/// Refuses a secret file that group or others could read, as the daemon would.
fn refuse_open_secret(path: &Path) -> Result<(), BackupError> {
    match check_private_file(path) {
        Ok(()) => Ok(()),
        Err(PrivateFileProblem::Read(source)) => Err(io_err("read", path)(source)),
        Err(PrivateFileProblem::NotAFile) => Err(StoreError::Key(key::KeyError::NotAFile {
            path: path.to_path_buf(),
        })
        .into()),
        Err(PrivateFileProblem::TooOpen { mode }) => Err(StoreError::Key(key::KeyError::TooOpen {
            path: path.to_path_buf(),
            mode,
        })
        .into()),
    }
}

fn read_small(path: &Path) -> Result<Vec<u8>, BackupError> {
    let file = File::open(path).map_err(io_err("read", path))?;
    let mut out = Vec::new();
    file.take(MAX_SMALL_FILE)
        .read_to_end(&mut out)
        .map_err(io_err("read", path))?;
    Ok(out)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), BackupError> {
    key::write_new_private_file(path, bytes).map_err(io_err("write", path))
}

fn sha256_of(path: &Path) -> Result<(String, u64), BackupError> {
    let mut file = File::open(path).map_err(io_err("read", path))?;
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err("read", path)(e)),
        };
        ctx.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hex(ctx.finish().as_ref()), total))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn rfc3339_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    format!(
        "{}Z",
        crate::sync::tls::utc_date_time(secs).replacen(' ', "T", 1)
    )
}

/// `20260131T140307Z`, for directory names.
fn compact_now() -> String {
    rfc3339_now().replace(['-', ':'], "")
}

/// Writes the archive to a temp file beside `out` (mode 0600) and renames it into place.
fn write_archive(
    out: &Path,
    staging: &Path,
    manifest: &BackupManifest,
) -> Result<u64, BackupError> {
    let file_name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| BackupError::Io {
            action: "write",
            path: out.to_path_buf(),
            source: io::Error::from(io::ErrorKind::InvalidInput),
        })?;
    let dir = out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = (|| {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        let zip_err = |source| BackupError::Write {
            path: out.to_path_buf(),
            source,
        };
        let mut zip = ZipWriter::new(file);
        for member in &manifest.members {
            let options = SimpleFileOptions::default()
                .compression_method(CompressionMethod::Stored)
                .large_file(member.bytes >= u64::from(u32::MAX))
                .unix_permissions(0o600);
            zip.start_file(member.name.as_str(), options)
                .map_err(zip_err)?;
            let path = staging.join(&member.name);
            let mut from = File::open(&path).map_err(io_err("read", &path))?;
            io::copy(&mut from, &mut zip).map_err(io_err("write", &tmp))?;
        }
        let json = serde_json::to_vec_pretty(manifest).map_err(|e| BackupError::Io {
            action: "encode the manifest of",
            path: out.to_path_buf(),
            source: io::Error::other(e),
        })?;
        zip.start_file(
            MANIFEST_NAME,
            SimpleFileOptions::default()
                .compression_method(CompressionMethod::Stored)
                .unix_permissions(0o600),
        )
        .map_err(zip_err)?;
        zip.write_all(&json).map_err(io_err("write", &tmp))?;
        let mut file = zip.finish().map_err(zip_err)?;
        file.flush().map_err(io_err("write", &tmp))?;
        file.sync_all().map_err(io_err("sync", &tmp))?;
        let bytes = file.stream_position().map_err(io_err("write", &tmp))?;
        fs::rename(&tmp, out).map_err(io_err("move the finished backup to", out))?;
        sync_dir(dir);
        Ok(bytes)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn sync_dir(dir: &Path) {
    // Only durability of the rename is at stake; the data itself was synced.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

fn read_manifest<R: Read + Seek>(
    archive: &mut ZipArchive<R>,
    file: &Path,
) -> Result<BackupManifest, BackupError> {
    let not_ours = |reason: String| BackupError::NotABackup {
        path: file.to_path_buf(),
        reason,
    };
    let damaged = |reason: String| BackupError::Damaged {
        path: file.to_path_buf(),
        reason,
    };
    let mut text = Vec::new();
    {
        let entry = archive
            .by_name(MANIFEST_NAME)
            .map_err(|_| not_ours(format!("it has no {MANIFEST_NAME}")))?;
        entry
            .take(MAX_SMALL_FILE)
            .read_to_end(&mut text)
            .map_err(|e| damaged(format!("{MANIFEST_NAME} cannot be read: {e}")))?;
    }
    // Check the format word first, so another program's manifest is not reported as damage.
    let value: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|_| damaged(format!("{MANIFEST_NAME} is not valid JSON")))?;
    if value.get("format").and_then(serde_json::Value::as_str) != Some(FORMAT) {
        return Err(not_ours(format!("its {MANIFEST_NAME} is not {FORMAT:?}")));
    }
    if let Some(version) = value
        .get("format_version")
        .and_then(serde_json::Value::as_u64)
        .filter(|v| *v > u64::from(FORMAT_VERSION))
    {
        return Err(BackupError::NewerFormat {
            path: file.to_path_buf(),
            version: u32::try_from(version).unwrap_or(u32::MAX),
        });
    }
    let manifest: BackupManifest = serde_json::from_value(value)
        .map_err(|e| damaged(format!("{MANIFEST_NAME} has the wrong shape: {e}")))?;

    let mut seen = Vec::new();
    for member in &manifest.members {
        if !MEMBERS.contains(&member.name.as_str()) {
            return Err(not_ours(format!("unknown member {:?}", member.name)));
        }
        if seen.contains(&member.name.as_str()) {
            return Err(damaged(format!("member {} is listed twice", member.name)));
        }
        seen.push(member.name.as_str());
    }
    if !seen.contains(&DB_FILE_NAME) {
        return Err(damaged(format!("it holds no {DB_FILE_NAME}")));
    }
    for name in archive.file_names() {
        if name != MANIFEST_NAME && !seen.contains(&name) {
            return Err(damaged(format!(
                "it holds {name:?}, which its manifest does not list"
            )));
        }
    }
    Ok(manifest)
}

/// Copies one member into `staging`, checking its size and sha256 against the manifest.
fn extract_member<R: Read + Seek>(
    archive: &mut ZipArchive<R>,
    member: &Member,
    staging: &Path,
    file: &Path,
) -> Result<(), BackupError> {
    let damaged = |reason: String| BackupError::Damaged {
        path: file.to_path_buf(),
        reason,
    };
    let entry = archive
        .by_name(&member.name)
        .map_err(|_| damaged(format!("member {} is missing", member.name)))?;
    let to = staging.join(&member.name);
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&to)
        .map_err(io_err("create", &to))?;
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut total = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    // One byte past the promised size is enough to know it is too long.
    let mut reader = entry.take(member.bytes.saturating_add(1));
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(damaged(format!(
                    "member {} cannot be read: {e}",
                    member.name
                )))
            }
        };
        ctx.update(&buf[..n]);
        total += n as u64;
        out.write_all(&buf[..n]).map_err(io_err("write", &to))?;
    }
    out.sync_all().map_err(io_err("sync", &to))?;
    let actual = hex(ctx.finish().as_ref());
    if total != member.bytes || actual != member.sha256 {
        return Err(damaged(format!(
            "member {} has {total} bytes and sha256 {}, the manifest says {} bytes and {}",
            member.name,
            &actual[..12],
            member.bytes,
            member.sha256.get(..12).unwrap_or(&member.sha256)
        )));
    }
    Ok(())
}

/// Restored files were made by whoever runs the restore; the daemon runs as the data
/// directory's owner and could not read root's 0600 files.
fn give_to_owner(data_dir: &Path, staging: &Path) -> Result<(), BackupError> {
    let meta = fs::metadata(data_dir).map_err(io_err("read", data_dir))?;
    let (uid, gid) = (meta.uid(), meta.gid());
    let entries = fs::read_dir(staging).map_err(io_err("read", staging))?;
    for entry in entries {
        let entry = entry.map_err(io_err("read", staging))?;
        let path = entry.path();
        let current = entry.metadata().map_err(io_err("read", &path))?;
        if current.uid() != uid || current.gid() != gid {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid)).map_err(|source| {
                BackupError::Ownership {
                    path: path.clone(),
                    uid,
                    source,
                }
            })?;
        }
    }
    Ok(())
}

/// Moves the live files to `pre-restore-<time>/` and the staged ones into the data directory.
/// On a failure midway, puts back what it can and says where everything is.
fn swap_in(data_dir: &Path, staging: &Path) -> Result<Option<PathBuf>, BackupError> {
    let live: Vec<&str> = REPLACED_FILES
        .iter()
        .copied()
        .filter(|name| fs::symlink_metadata(data_dir.join(name)).is_ok())
        .collect();
    let staged: Vec<String> = fs::read_dir(staging)
        .map_err(io_err("read", staging))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let aside = data_dir.join(format!("pre-restore-{}", compact_now()));
    if !live.is_empty() {
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&aside)
            .map_err(io_err("create", &aside))?;
    }
    let mut moved_out = Vec::new();
    let mut moved_in = Vec::new();
    let result = (|| -> io::Result<()> {
        for name in &live {
            fs::rename(data_dir.join(name), aside.join(name))?;
            moved_out.push(*name);
        }
        for name in &staged {
            fs::rename(staging.join(name), data_dir.join(name))?;
            moved_in.push(name.as_str());
        }
        Ok(())
    })();
    if let Err(source) = result {
        for name in moved_in.iter().rev() {
            let _ = fs::rename(data_dir.join(name), staging.join(name));
        }
        for name in moved_out.iter().rev() {
            let _ = fs::rename(aside.join(name), data_dir.join(name));
        }
        return Err(BackupError::Swap {
            data_dir: data_dir.to_path_buf(),
            aside,
            staging: staging.to_path_buf(),
            source,
        });
    }
    sync_dir(&aside);
    sync_dir(data_dir);
    Ok((!live.is_empty()).then_some(aside))
}

/// A private working directory inside the data directory (same file system, so files move in
/// by rename), removed with everything in it when dropped.
struct Staging {
    path: PathBuf,
}

impl Staging {
    fn create(data_dir: &Path, what: &str) -> Result<Staging, BackupError> {
        let path = data_dir.join(format!(".{what}-{}-{}", std::process::id(), compact_now()));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(io_err("create", &path))?;
        Ok(Staging { path })
    }

    /// Closing the last connection checkpoints and removes the WAL; one left behind would mean
    /// the database file alone is not the whole database.
    fn require_closed(&self) -> Result<(), BackupError> {
        let _ = fs::remove_file(self.path.join(format!("{DB_FILE_NAME}-shm")));
        let wal = self.path.join(format!("{DB_FILE_NAME}-wal"));
        match fs::metadata(&wal) {
            Ok(meta) if meta.len() > 0 => Err(BackupError::Io {
                action: "fold the write-ahead log into",
                path: self.path.join(DB_FILE_NAME),
                source: io::Error::other("the WAL was not checkpointed when the copy was closed"),
            }),
            Ok(_) => fs::remove_file(&wal).map_err(io_err("remove", &wal)),
            Err(_) => Ok(()),
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %self.path.display(), error = %e, "could not remove a staging directory");
            }
        }
    }
}
