//! The master key and the database key: where they live, how they are made, and how the
//! database key is handed to SQLCipher.
//!
//! A master key is 32 random bytes kept as hex (mode 0600) in `<data_dir>/master.key`, or in a
//! systemd credential named `master.key` (`LoadCredential=master.key:...`, found through
//! `$CREDENTIALS_DIRECTORY`). During a key rotation the next key waits in
//! `<data_dir>/master.key.new` until everything is wrapped under it; the loader offers every key
//! it finds and the caller picks by key id ([`MasterKey::kek_id`]), so a crash mid-rotation
//! always leaves a key that opens the database.
//!
//! The master key never keys SQLCipher directly in a new database: a random [`DatabaseKey`]
//! does, wrapped under the master key in `database.key` (see `crypto.rs`), so rotating the
//! master key rewraps 32 bytes instead of re-encrypting every page. A database from before
//! `database.key` existed was keyed with the master key's own bytes and keeps working.
//!
//! Key bytes may never be cloned, printed, serialized or logged, and every buffer that held them
//! is wiped when dropped. Nothing outside the store may see a `MasterKey`.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{compiler_fence, Ordering};

use ring::aead::{LessSafeKey, UnboundKey, AES_256_GCM};
use ring::digest::{Context, SHA256};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// Name of the key file inside the data directory.
pub const KEY_FILE_NAME: &str = "master.key";

/// The next master key during a rotation, beside `master.key` until the rotation's last step.
pub const NEW_KEY_FILE_NAME: &str = "master.key.new";

/// Name of the master key among the service's systemd credentials.
pub const CREDENTIAL_NAME: &str = "master.key";

/// The environment variable systemd sets to the service's credentials directory.
pub const CREDENTIALS_ENV: &str = "CREDENTIALS_DIRECTORY";

/// Domain tags keep every derived value of a key apart from every other.
const KEK_ID_DOMAIN: &[u8] = b"edge-scribe/kek-id/v1";
const LOOKUP_KEY_DOMAIN: &[u8] = b"edge-scribe/patient-lookup/v1";

pub(crate) const KEY_LEN: usize = 32;

/// Permission bits that must be clear on the key file: any access by group or others.
const FORBIDDEN_MODE_BITS: u32 = 0o077;

/// What can go wrong while reading or creating the master key.
///
/// No variant ever carries key material, not even a malformed key file's contents.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "the key file {path} can be read by group or others (mode {mode:03o}); run \
         `chmod 600 {path}` and make sure it is owned by the edge-scribe service user, \
         then check how it became readable: the key protects every recorded encounter"
    )]
    TooOpen { path: PathBuf, mode: u32 },

    #[error(
        "the key file {path} is not a regular file; replace it with the master.key from your \
         backup (a symlink or directory is not accepted)"
    )]
    NotAFile { path: PathBuf },

    #[error(
        "the key file {path} does not hold a 64-character hex key; restore master.key from your \
         backup (do not generate a new one: the database cannot be read without the old key)"
    )]
    Malformed { path: PathBuf },

    #[error("could not read the key file {path}: {source}; check that the service user owns it")]
    Read { path: PathBuf, source: io::Error },

    #[error(
        "could not create the key file {path}: {source}; check that the data directory exists \
         and that the service user may write to it"
    )]
    Create { path: PathBuf, source: io::Error },

    #[error("the operating system's random number generator failed; check the kernel log")]
    Random,

    #[error("the cryptography library refused a 32-byte key; report this with the log")]
    Crypto,
}

/// The 32-byte key that wraps the database key and the encounters' data keys (a KEK).
///
/// Deliberately not `Clone`, `Debug`, `Display` or `Serialize`: it leaves only as a wrapping key,
/// a key id, the page key of a legacy database, and by being dropped, which wipes it.
pub struct MasterKey {
    bytes: [u8; KEY_LEN],
}

impl MasterKey {
    /// Reads `<data_dir>/master.key`, creating it with a fresh random key if it does not exist.
    ///
    /// A key file that group or others could read is refused rather than repaired: if it was
    /// exposed, fixing the mode silently would hide that.
    pub fn load_or_create(data_dir: &Path) -> Result<MasterKey, KeyError> {
        let path = data_dir.join(KEY_FILE_NAME);
        match fs::symlink_metadata(&path) {
            Ok(_) => Self::load(&path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => match Self::create(&path) {
                // Another process created it between our check and our create: use theirs.
                Err(KeyError::Create { source, .. })
                    if source.kind() == io::ErrorKind::AlreadyExists =>
                {
                    Self::load(&path)
                }
                other => other,
            },
            Err(source) => Err(KeyError::Read { path, source }),
        }
    }

    /// Reads a master key file, refusing one that is not private.
    pub(crate) fn load(path: &Path) -> Result<MasterKey, KeyError> {
        let read_err = |source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        };
        match check_private_file(path) {
            Ok(()) => {}
            Err(PrivateFileProblem::Read(source)) => return Err(read_err(source)),
            Err(PrivateFileProblem::NotAFile) => {
                return Err(KeyError::NotAFile {
                    path: path.to_path_buf(),
                })
            }
            Err(PrivateFileProblem::TooOpen { mode }) => {
                return Err(KeyError::TooOpen {
                    path: path.to_path_buf(),
                    mode,
                })
            }
        }

        let mut file = fs::File::open(path).map_err(read_err)?;
        // Read at most a little more than a key's worth so a wrong file cannot make us allocate.
        let mut text = SecretBytes::with_capacity(2 * KEY_LEN + 2);
        let mut chunk = [0u8; 2 * KEY_LEN + 2];
        let n = read_up_to(&mut file, &mut chunk).map_err(read_err)?;
        text.extend(&chunk[..n]);
        wipe(&mut chunk);

        let trimmed = trim_ascii_newline(text.as_slice());
        let mut bytes = [0u8; KEY_LEN];
        if trimmed.len() != 2 * KEY_LEN || !decode_hex(trimmed, &mut bytes) {
            wipe(&mut bytes);
            return Err(KeyError::Malformed {
                path: path.to_path_buf(),
            });
        }
        Ok(MasterKey { bytes })
    }

    fn create(path: &Path) -> Result<MasterKey, KeyError> {
        let key = MasterKey::generate()?;
        key.write_new(path)?;
        Ok(key)
    }

    /// A fresh random key, in memory only.
    pub(crate) fn generate() -> Result<MasterKey, KeyError> {
        Ok(MasterKey {
            bytes: random_key()?,
        })
    }

    /// Writes the key to a new private file (never over an existing one).
    pub(crate) fn write_new(&self, path: &Path) -> Result<(), KeyError> {
        let key = self;
        let mut text = SecretBytes::with_capacity(2 * KEY_LEN + 1);
        encode_hex(&key.bytes, &mut text);
        text.extend(b"\n");

        let create_err = |source| KeyError::Create {
            path: path.to_path_buf(),
            source,
        };
        // Never overwrite a key that appeared meanwhile: losing it loses the data.
        write_new_private_file(path, text.as_slice()).map_err(create_err)
    }

    /// A short public name for this key: the first 16 hex digits of SHA-256 over a domain tag
    /// and the key. Stored beside everything wrapped under the key, so a loader holding several
    /// keys (mid-rotation) knows which one to use; it reveals nothing useful about the key.
    pub(crate) fn kek_id(&self) -> String {
        let mut ctx = Context::new(&SHA256);
        ctx.update(KEK_ID_DOMAIN);
        ctx.update(&self.bytes);
        let digest = ctx.finish();
        let mut out = String::with_capacity(16);
        for b in &digest.as_ref()[..8] {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }

    /// The key as an AES-256-GCM key for wrapping other keys.
    pub(crate) fn wrapping_key(&self) -> Result<LessSafeKey, KeyError> {
        aes_key(&self.bytes)
    }

    /// For a database from before `database.key`: SQLCipher was keyed with these very bytes.
    pub(crate) fn legacy_database_key(&self) -> DatabaseKey {
        DatabaseKey { bytes: self.bytes }
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        wipe(&mut self.bytes);
    }
}

/// The 32-byte key SQLCipher encrypts the pages with. Not `Clone`/`Debug`; wiped on drop.
pub(crate) struct DatabaseKey {
    bytes: [u8; KEY_LEN],
}

impl DatabaseKey {
    pub(crate) fn generate() -> Result<DatabaseKey, KeyError> {
        Ok(DatabaseKey {
            bytes: random_key()?,
        })
    }

    /// Takes the key out of `bytes` (which is wiped); `None` if it is not 32 bytes long.
    pub(crate) fn from_slice(bytes: &mut [u8]) -> Option<DatabaseKey> {
        let mut key = DatabaseKey {
            bytes: [0u8; KEY_LEN],
        };
        let ok = bytes.len() == KEY_LEN;
        if ok {
            key.bytes.copy_from_slice(bytes);
        }
        wipe(bytes);
        ok.then_some(key)
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The SQL statement that hands this key to SQLCipher as a raw key (no key derivation).
    ///
    /// The returned buffer is wiped on drop. SQLite copies the statement text internally; that
    /// copy is outside our reach.
    pub(crate) fn sqlcipher_key_pragma(&self) -> SecretBytes {
        raw_key_pragma(&self.bytes)
    }

    /// The HMAC key for patient lookup hashes. Derived from the database key, not the master
    /// key, because the database key survives master key rotation: the stored hashes stay
    /// valid without being recomputed.
    pub(crate) fn lookup_key(&self) -> hmac::Key {
        let base = hmac::Key::new(hmac::HMAC_SHA256, &self.bytes);
        let tag = hmac::sign(&base, LOOKUP_KEY_DOMAIN);
        hmac::Key::new(hmac::HMAC_SHA256, tag.as_ref())
    }
}

impl Drop for DatabaseKey {
    fn drop(&mut self) {
        wipe(&mut self.bytes);
    }
}

/// Where a master key was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeySource {
    /// `$CREDENTIALS_DIRECTORY/master.key`, read-only to us: rotation cannot update it.
    Credential(PathBuf),
    /// `<data_dir>/master.key`.
    File(PathBuf),
    /// `<data_dir>/master.key.new`: an unfinished rotation's next key.
    Pending(PathBuf),
}

impl KeySource {
    pub(crate) fn path(&self) -> &Path {
        match self {
            KeySource::Credential(p) | KeySource::File(p) | KeySource::Pending(p) => p,
        }
    }
}

/// A master key and where it came from.
pub(crate) struct LoadedKey {
    pub key: MasterKey,
    pub source: KeySource,
}

/// Every master key on offer, most authoritative first: the systemd credential (if
/// `credentials_dir` holds `master.key`), `<data_dir>/master.key`, then `master.key.new`.
///
/// Creates `<data_dir>/master.key` only when there is neither a credential nor a key file (a
/// first start). A malformed `master.key.new` is skipped with a warning: a crash while it was
/// being written leaves it so, and nothing was wrapped under it before it was synced whole.
pub(crate) fn load_master_keys(
    data_dir: &Path,
    credentials_dir: Option<&Path>,
) -> Result<Vec<LoadedKey>, KeyError> {
    let mut keys = Vec::new();
    if let Some(dir) = credentials_dir {
        let path = dir.join(CREDENTIAL_NAME);
        match fs::symlink_metadata(&path) {
            // systemd makes credentials 0400 and owned by the service user, which passes the
            // same private-file check as master.key.
            Ok(_) => keys.push(LoadedKey {
                key: MasterKey::load(&path)?,
                source: KeySource::Credential(path),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(KeyError::Read { path, source }),
        }
    }
    let file = data_dir.join(KEY_FILE_NAME);
    let file_exists = match fs::symlink_metadata(&file) {
        Ok(_) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(source) => return Err(KeyError::Read { path: file, source }),
    };
    if file_exists || keys.is_empty() {
        keys.push(LoadedKey {
            key: MasterKey::load_or_create(data_dir)?,
            source: KeySource::File(file),
        });
    }
    let pending = data_dir.join(NEW_KEY_FILE_NAME);
    if fs::symlink_metadata(&pending).is_ok() {
        match MasterKey::load(&pending) {
            Ok(key) => keys.push(LoadedKey {
                key,
                source: KeySource::Pending(pending),
            }),
            Err(KeyError::Malformed { .. }) => tracing::warn!(
                path = %pending.display(),
                "ignoring a half-written next master key left by an interrupted rotation"
            ),
            Err(e) => return Err(e),
        }
    }
    Ok(keys)
}

fn random_key() -> Result<[u8; KEY_LEN], KeyError> {
    let mut bytes = [0u8; KEY_LEN];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| KeyError::Random)?;
    Ok(bytes)
}

/// A 32-byte key as an AES-256-GCM key.
pub(crate) fn aes_key(bytes: &[u8]) -> Result<LessSafeKey, KeyError> {
    UnboundKey::new(&AES_256_GCM, bytes)
        .map(LessSafeKey::new)
        .map_err(|_| KeyError::Crypto)
}

fn raw_key_pragma(bytes: &[u8; KEY_LEN]) -> SecretBytes {
    let mut sql = SecretBytes::with_capacity(32 + 2 * KEY_LEN);
    sql.extend(b"PRAGMA key = \"x'");
    encode_hex(bytes, &mut sql);
    sql.extend(b"'\";");
    sql
}

/// A byte buffer for secret text that never reallocates (so no stray copies are left on the
/// heap) and is wiped on drop.
pub(crate) struct SecretBytes {
    buf: Vec<u8>,
}

impl SecretBytes {
    pub(crate) fn with_capacity(capacity: usize) -> SecretBytes {
        SecretBytes {
            buf: Vec::with_capacity(capacity),
        }
    }

    pub(crate) fn extend(&mut self, bytes: &[u8]) {
        // Growing would move the secret and leave the old allocation unwiped; every caller sizes
        // the buffer up front, so truncating instead can only happen through a bug here.
        let room = self.buf.capacity() - self.buf.len();
        let take = bytes.len().min(room);
        debug_assert_eq!(take, bytes.len(), "SecretBytes sized too small");
        self.buf.extend_from_slice(&bytes[..take]);
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.buf
    }

    /// The buffer as text; `None` only if it holds invalid UTF-8, which our hex never does.
    pub(crate) fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.buf).ok()
    }
}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        wipe(&mut self.buf);
    }
}

/// Why a secret file may not be used.
pub(crate) enum PrivateFileProblem {
    Read(io::Error),
    /// A symlink, directory or device: a secret must be a plain file we own.
    NotAFile,
    /// Group or world may read or write it.
    TooOpen {
        mode: u32,
    },
}

/// The one rule for every secret file of the box (master key, signing key): a regular file,
/// not a symlink, with no group or world permission bits.
pub(crate) fn check_private_file(path: &Path) -> Result<(), PrivateFileProblem> {
    let meta = fs::symlink_metadata(path).map_err(PrivateFileProblem::Read)?;
    if !meta.file_type().is_file() {
        return Err(PrivateFileProblem::NotAFile);
    }
    let mode = meta.mode() & 0o7777;
    if mode & FORBIDDEN_MODE_BITS != 0 {
        return Err(PrivateFileProblem::TooOpen { mode });
    }
    Ok(())
}

/// Creates a secret file that must not exist yet (`create_new`), mode 0600, written and synced
/// whole: a half-written file is removed (nothing used it yet, and it would be refused as
/// malformed on the next start), and the directory entry is synced so a crash cannot lose it.
pub(crate) fn write_new_private_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    if let Err(e) = file.write_all(bytes).and_then(|()| file.sync_all()) {
        let _ = fs::remove_file(path);
        return Err(e);
    }
    if let Some(dir) = path.parent() {
        // Failure here only risks a re-create after a crash.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Overwrites `buf` with zeros in a way the optimiser may not remove as a dead store.
pub(crate) fn wipe(buf: &mut [u8]) {
    for b in buf.iter_mut() {
        // SAFETY: `b` is a valid, aligned, exclusive reference to a u8.
        unsafe { std::ptr::write_volatile(b, 0) };
    }
    compiler_fence(Ordering::SeqCst);
}

fn read_up_to(file: &mut fs::File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn trim_ascii_newline(mut s: &[u8]) -> &[u8] {
    while let [rest @ .., b'\n' | b'\r'] = s {
        s = rest;
    }
    s
}

pub(crate) fn encode_hex(bytes: &[u8], out: &mut SecretBytes) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        out.extend(&[DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0x0f)]]);
    }
}

/// Decodes hex into `out`; false if `hex` is not exactly `2 * out.len()` hex digits.
pub(crate) fn decode_hex(hex: &[u8], out: &mut [u8]) -> bool {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    if hex.len() != 2 * out.len() {
        return false;
    }
    for (slot, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        match (nibble(pair[0]), nibble(pair[1])) {
            (Some(hi), Some(lo)) => *slot = (hi << 4) | lo,
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_key_file_is_private_hex_and_reloads_to_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let first = MasterKey::load_or_create(dir.path()).unwrap();
        let path = dir.path().join(KEY_FILE_NAME);
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.trim_end().len(), 64);
        assert!(text.trim_end().bytes().all(|c| c.is_ascii_hexdigit()));

        let second = MasterKey::load_or_create(dir.path()).unwrap();
        assert_eq!(first.bytes, second.bytes);
        assert_ne!(first.bytes, [0u8; KEY_LEN]);
    }

    #[test]
    fn world_readable_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(MasterKey::load_or_create(dir.path()).unwrap());
        let path = dir.path().join(KEY_FILE_NAME);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o604)).unwrap();
        match MasterKey::load_or_create(dir.path()) {
            Err(KeyError::TooOpen { mode, .. }) => assert_eq!(mode, 0o604),
            Err(e) => panic!("unexpected error: {e}"),
            Ok(_) => panic!("world-readable key file was accepted"),
        }
    }

    #[test]
    fn malformed_key_file_is_refused_without_echoing_its_contents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE_NAME);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap();
        f.write_all(b"not-a-key-SECRETISH\n").unwrap();
        drop(f);
        match MasterKey::load_or_create(dir.path()) {
            Err(e @ KeyError::Malformed { .. }) => {
                assert!(!e.to_string().contains("SECRETISH"));
            }
            Err(e) => panic!("unexpected error: {e}"),
            Ok(_) => panic!("malformed key file was accepted"),
        }
    }

    #[test]
    fn pragma_embeds_the_key_as_a_raw_hex_blob() {
        let key = MasterKey {
            bytes: [0xab; KEY_LEN],
        };
        let pragma = key.legacy_database_key().sqlcipher_key_pragma();
        let text = pragma.as_str().unwrap();
        assert_eq!(
            text,
            format!("PRAGMA key = \"x'{}'\";", "ab".repeat(KEY_LEN))
        );
    }
}
