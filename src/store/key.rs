//! The database master key: where it lives, how it is made, and how it is handed to SQLCipher.
//!
//! For now the key is 32 random bytes kept as hex in `<data_dir>/master.key` (mode 0600). A later
//! change moves it to systemd credentials and per-encounter data keys; that change should only
//! have to touch this file. Key bytes may never be cloned, printed, serialized or logged, and every
//! buffer that held them is wiped when dropped. Nothing outside the store may see a `MasterKey`.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{compiler_fence, Ordering};

use ring::rand::{SecureRandom, SystemRandom};

/// Name of the key file inside the data directory.
pub const KEY_FILE_NAME: &str = "master.key";

const KEY_LEN: usize = 32;

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
}

/// The 32-byte key that encrypts the database.
///
/// Deliberately not `Clone`, `Debug`, `Display` or `Serialize`: the only ways out are
/// [`MasterKey::sqlcipher_key_pragma`] and being dropped, which wipes it.
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

    fn load(path: &Path) -> Result<MasterKey, KeyError> {
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
        let mut bytes = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| KeyError::Random)?;
        let key = MasterKey { bytes };

        let mut text = SecretBytes::with_capacity(2 * KEY_LEN + 1);
        encode_hex(&key.bytes, &mut text);
        text.extend(b"\n");

        let create_err = |source| KeyError::Create {
            path: path.to_path_buf(),
            source,
        };
        // Never overwrite a key that appeared meanwhile: losing it loses the data.
        write_new_private_file(path, text.as_slice()).map_err(create_err)?;
        Ok(key)
    }

    /// The SQL statement that hands this key to SQLCipher as a raw key (no key derivation).
    ///
    /// The returned buffer is wiped on drop. SQLite copies the statement text internally; that
    /// copy is outside our reach, which is one reason the key moves to systemd credentials later.
    pub(crate) fn sqlcipher_key_pragma(&self) -> SecretBytes {
        let mut sql = SecretBytes::with_capacity(32 + 2 * KEY_LEN);
        sql.extend(b"PRAGMA key = \"x'");
        encode_hex(&self.bytes, &mut sql);
        sql.extend(b"'\";");
        sql
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        wipe(&mut self.bytes);
    }
}

/// A byte buffer for secret text that never reallocates (so no stray copies are left on the
/// heap) and is wiped on drop.
pub(crate) struct SecretBytes {
    buf: Vec<u8>,
}

impl SecretBytes {
    fn with_capacity(capacity: usize) -> SecretBytes {
        SecretBytes {
            buf: Vec::with_capacity(capacity),
        }
    }

    fn extend(&mut self, bytes: &[u8]) {
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

fn encode_hex(bytes: &[u8], out: &mut SecretBytes) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        out.extend(&[DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0x0f)]]);
    }
}

/// Decodes hex into `out`; false if `hex` is not exactly `2 * out.len()` hex digits.
fn decode_hex(hex: &[u8], out: &mut [u8]) -> bool {
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
        let pragma = key.sqlcipher_key_pragma();
        let text = pragma.as_str().unwrap();
        assert_eq!(
            text,
            format!("PRAGMA key = \"x'{}'\";", "ab".repeat(KEY_LEN))
        );
    }
}
