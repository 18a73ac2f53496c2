//! What `edge-scribe backup` and `restore` need from the store: a consistent snapshot of the
//! database taken while the daemon writes, opening such a copy with the box's master key, and
//! sealing a secret file (the signing key) under the master key so that a backup file on its own
//! opens nothing.
//!
//! The snapshot is SQLite's `VACUUM INTO`: it reads one snapshot of the database (a read
//! transaction, so writers in WAL mode carry on) and writes a fresh, compacted file. SQLCipher
//! attaches the target with the main database's key when no key is given, so the copy is
//! encrypted with the very same database key and `database.key` opens it unchanged; the tests
//! prove that by opening the copy and by looking for the SQLite header in its bytes.
//!
//! What it may not do: write a plaintext page anywhere, leave a copy of the master key behind,
//! or create a master key (opening a copy where no key exists would make a new, useless one).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use ring::aead::{Aad, Nonce, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use rusqlite::OptionalExtension;

use super::key::{self, KeyError, SecretBytes, CREDENTIAL_NAME, KEY_FILE_NAME, NEW_KEY_FILE_NAME};
use super::{Store, StoreError};

/// First word of a sealed secret file, so a stray file is recognised as not ours.
const SEALED_SECRET_MAGIC: &str = "edge-scribe-sealed-secret";
/// Keeps a sealed secret apart from every other value sealed under a master key.
const SEALED_SECRET_DOMAIN: &[u8] = b"edge-scribe/backup-secret/v1";
const TAG_LEN: usize = 16;
/// A sealed secret file larger than this is not ours; bounding the read keeps a wrong file from
/// making us allocate.
const MAX_SECRET_LEN: usize = 4096;

/// Record counts of a database, for a backup's manifest. Counts only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordCounts {
    pub encounters: u64,
    pub signed_notes: u64,
    pub audit_entries: u64,
}

impl Store {
    /// Writes a consistent snapshot of the whole database to `dest`, which must not exist yet,
    /// encrypted with this database's key. Other connections keep reading and writing
    /// meanwhile; the copy holds exactly the transactions committed before it started.
    pub fn snapshot_to(&self, dest: &Path) -> Result<(), StoreError> {
        let target = dest.to_str().ok_or_else(|| StoreError::Open {
            path: dest.to_path_buf(),
            source: rusqlite::Error::InvalidPath(dest.to_path_buf()),
        })?;
        self.conn.execute("VACUUM INTO ?1", [target])?;
        Ok(())
    }

    /// The schema version of this database (how many migrations it has had).
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        Ok(self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    /// How many encounters, signed notes and audit entries the database holds, from one
    /// snapshot.
    pub fn record_counts(&self) -> Result<RecordCounts, StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        let count = |table: &str| -> Result<u64, StoreError> {
            let n: i64 =
                tx.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?;
            Ok(u64::try_from(n).unwrap_or(0))
        };
        let counts = RecordCounts {
            encounters: count("encounters")?,
            signed_notes: count("signed_notes")?,
            audit_entries: count("audit")?,
        };
        tx.commit()?;
        Ok(counts)
    }

    /// The id of the master key that wraps new data keys: the key a backup of this database
    /// needs (see `crypto.rs`). `None` for a database not opened by this release yet.
    pub fn current_master_key_id(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT current_kek_id FROM key_state WHERE id = 1",
                [],
                |r| r.get(0),
            )
            .optional()?)
    }
}

/// The master key files that exist for `data_dir`, in the order the store offers them: the
/// systemd credential, `master.key`, then an unfinished rotation's `master.key.new`. Empty means
/// the store would create a new key, which is never what a copy or a check wants.
pub fn master_key_files(data_dir: &Path, credentials_dir: Option<&Path>) -> Vec<PathBuf> {
    let candidates = [
        credentials_dir.map(|dir| dir.join(CREDENTIAL_NAME)),
        Some(data_dir.join(KEY_FILE_NAME)),
        Some(data_dir.join(NEW_KEY_FILE_NAME)),
    ];
    candidates
        .into_iter()
        .flatten()
        .filter(|p| fs::symlink_metadata(p).is_ok())
        .collect()
}

/// The directory of systemd credentials this process was given, as [`Store::open`] reads it.
pub fn credentials_dir_from_env() -> Option<PathBuf> {
    std::env::var_os(key::CREDENTIALS_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Opens a database copy in `copy_dir` (its `edge-scribe.db` and `database.key`) with the master
/// keys of `live_dir` (and the credential, if any), exactly as the store would open `live_dir`.
///
/// The live key files are hard-linked into `copy_dir` only for the open and unlinked before this
/// returns, so no copy of a master key is ever written; the opened store keeps its keys in
/// memory. Fails with `NoMatchingMasterKey` when the copy was made under another master key.
pub fn open_copy(
    copy_dir: &Path,
    live_dir: &Path,
    credentials_dir: Option<&Path>,
) -> Result<Store, StoreError> {
    let live_files: Vec<PathBuf> = [KEY_FILE_NAME, NEW_KEY_FILE_NAME]
        .iter()
        .map(|name| live_dir.join(name))
        .filter(|p| fs::symlink_metadata(p).is_ok())
        .collect();
    if live_files.is_empty() && master_key_files(live_dir, credentials_dir).is_empty() {
        return Err(StoreError::NoMatchingMasterKey {
            kek_id: "none".to_owned(),
            path: live_dir.join(KEY_FILE_NAME),
        });
    }
    let mut linked = Vec::new();
    let result = (|| {
        for from in &live_files {
            let Some(name) = from.file_name() else {
                continue;
            };
            let to = copy_dir.join(name);
            fs::hard_link(from, &to).map_err(|source| KeyError::Read {
                path: from.clone(),
                source,
            })?;
            linked.push(to);
        }
        Store::open_with_credentials(copy_dir, credentials_dir)
    })();
    for link in &linked {
        let _ = fs::remove_file(link);
    }
    // Had no key been found after all, the open would have created one here: never keep it.
    if linked.is_empty() {
        for name in [KEY_FILE_NAME, NEW_KEY_FILE_NAME] {
            let _ = fs::remove_file(copy_dir.join(name));
        }
    }
    result
}

/// Seals `plain` (a secret file's bytes) under the master key `kek_id` of `data_dir`, as text:
/// `edge-scribe-sealed-secret v1 <kek_id> <hex of version | nonce | ciphertext | tag>`.
/// `purpose` (e.g. the file name) is bound in, so a sealed secret cannot pass for another.
pub fn seal_secret(
    data_dir: &Path,
    credentials_dir: Option<&Path>,
    kek_id: &str,
    purpose: &str,
    plain: &[u8],
) -> Result<String, StoreError> {
    let keys = existing_master_keys(data_dir, credentials_dir)?;
    let found = keys
        .iter()
        .find(|k| k.key.kek_id() == kek_id)
        .ok_or_else(|| StoreError::NoMatchingMasterKey {
            kek_id: kek_id.to_owned(),
            path: data_dir.join(KEY_FILE_NAME),
        })?;
    let wrap = found.key.wrapping_key()?;
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| KeyError::Random)?;
    let mut buf = Vec::with_capacity(1 + NONCE_LEN + plain.len() + TAG_LEN);
    buf.push(1u8);
    buf.extend_from_slice(&nonce);
    buf.extend_from_slice(plain);
    let tag = wrap
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(secret_aad(kek_id, purpose)),
            &mut buf[1 + NONCE_LEN..],
        )
        .map_err(|_| KeyError::Crypto)?;
    buf.extend_from_slice(tag.as_ref());
    Ok(format!("{SEALED_SECRET_MAGIC} v1 {kek_id} {}\n", hex(&buf)))
}

/// Why a sealed secret could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SealedSecretError {
    #[error("it is not a sealed edge-scribe secret (damaged, or not from a backup)")]
    Malformed,
    #[error("it was sealed under master key {kek_id}, which this box does not have")]
    NoKey { kek_id: String },
    #[error("it does not open with master key {kek_id} (damaged)")]
    Damaged { kek_id: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The master key id a sealed secret names, if the text is one.
pub fn sealed_secret_key_id(text: &str) -> Option<&str> {
    let mut words = text.split_ascii_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some(SEALED_SECRET_MAGIC), Some("v1"), Some(kek_id)) => Some(kek_id),
        _ => None,
    }
}

/// Opens a secret sealed by [`seal_secret`] with the master keys of `data_dir`. The result is
/// wiped when dropped.
pub(crate) fn open_secret(
    data_dir: &Path,
    credentials_dir: Option<&Path>,
    purpose: &str,
    text: &str,
) -> Result<SecretBytes, SealedSecretError> {
    let mut words = text.split_ascii_whitespace();
    let (Some(SEALED_SECRET_MAGIC), Some("v1"), Some(kek_id), Some(hex_text), None) = (
        words.next(),
        words.next(),
        words.next(),
        words.next(),
        words.next(),
    ) else {
        return Err(SealedSecretError::Malformed);
    };
    let mut sealed = vec![0u8; hex_text.len() / 2];
    if hex_text.len() % 2 != 0
        || sealed.len() < 1 + NONCE_LEN + TAG_LEN
        || sealed.len() > MAX_SECRET_LEN
        || !key::decode_hex(hex_text.as_bytes(), &mut sealed)
        || sealed[0] != 1
    {
        return Err(SealedSecretError::Malformed);
    }
    let keys = existing_master_keys(data_dir, credentials_dir)?;
    let found = keys
        .iter()
        .find(|k| k.key.kek_id() == kek_id)
        .ok_or_else(|| SealedSecretError::NoKey {
            kek_id: kek_id.to_owned(),
        })?;
    let wrap = found.key.wrapping_key().map_err(StoreError::from)?;
    let damaged = || SealedSecretError::Damaged {
        kek_id: kek_id.to_owned(),
    };
    let nonce =
        Nonce::try_assume_unique_for_key(&sealed[1..1 + NONCE_LEN]).map_err(|_| damaged())?;
    let mut body = sealed[1 + NONCE_LEN..].to_vec();
    let opened = wrap.open_in_place(nonce, Aad::from(secret_aad(kek_id, purpose)), &mut body);
    let result = match opened {
        Ok(plain) => {
            let mut secret = SecretBytes::with_capacity(plain.len());
            secret.extend(plain);
            Ok(secret)
        }
        Err(_) => Err(damaged()),
    };
    key::wipe(&mut body);
    result
}

/// The ids of the master keys on offer for `data_dir` (public names, see
/// [`key::MasterKey::kek_id`]), for telling an operator which key a backup needs and which
/// this box has. Never creates a key.
pub fn master_key_ids(
    data_dir: &Path,
    credentials_dir: Option<&Path>,
) -> Result<Vec<String>, StoreError> {
    Ok(existing_master_keys(data_dir, credentials_dir)?
        .iter()
        .map(|k| k.key.kek_id())
        .collect())
}

/// The master keys of `data_dir` without ever creating one.
fn existing_master_keys(
    data_dir: &Path,
    credentials_dir: Option<&Path>,
) -> Result<Vec<key::LoadedKey>, StoreError> {
    if master_key_files(data_dir, credentials_dir).is_empty() {
        return Err(StoreError::Key(KeyError::Read {
            path: data_dir.join(KEY_FILE_NAME),
            source: io::Error::from(io::ErrorKind::NotFound),
        }));
    }
    Ok(key::load_master_keys(data_dir, credentials_dir)?)
}

fn secret_aad(kek_id: &str, purpose: &str) -> Vec<u8> {
    let mut out = SEALED_SECRET_DOMAIN.to_vec();
    for part in [kek_id.as_bytes(), purpose.as_bytes()] {
        out.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewEncounter, DB_FILE_NAME};

    #[test]
    fn a_snapshot_is_encrypted_with_the_same_key_and_opens_with_the_live_master_key() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live");
        let store = Store::open_with_credentials(&live, None).unwrap();
        let id = store
            .create_encounter(&NewEncounter {
                source_kind: "file".into(),
                consent: true,
                patient_ref: Some("MRN-SNAPSHOT-1".into()),
                ..NewEncounter::default()
            })
            .unwrap();
        let copy = dir.path().join("copy");
        fs::create_dir(&copy).unwrap();
        store.snapshot_to(&copy.join(DB_FILE_NAME)).unwrap();
        let bytes = fs::read(copy.join(DB_FILE_NAME)).unwrap();
        assert!(
            !bytes.starts_with(b"SQLite format 3"),
            "the copy is plaintext"
        );
        fs::copy(
            live.join(crate::store::DATABASE_KEY_FILE_NAME),
            copy.join(crate::store::DATABASE_KEY_FILE_NAME),
        )
        .unwrap();

        let opened = open_copy(&copy, &live, None).unwrap();
        assert_eq!(
            opened.patient_ref(&id).unwrap().as_deref(),
            Some("MRN-SNAPSHOT-1")
        );
        assert!(opened.verify_audit().unwrap().first_break.is_none());
        assert_eq!(
            opened.schema_version().unwrap(),
            store.schema_version().unwrap()
        );
        assert!(
            !copy.join(KEY_FILE_NAME).exists(),
            "a master key link was left"
        );
    }

    #[test]
    fn a_copy_under_another_master_key_does_not_open_and_gets_no_key_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live");
        let other = dir.path().join("other");
        let store = Store::open_with_credentials(&other, None).unwrap();
        drop(Store::open_with_credentials(&live, None).unwrap());
        let copy = dir.path().join("copy");
        fs::create_dir(&copy).unwrap();
        store.snapshot_to(&copy.join(DB_FILE_NAME)).unwrap();
        fs::copy(
            other.join(crate::store::DATABASE_KEY_FILE_NAME),
            copy.join(crate::store::DATABASE_KEY_FILE_NAME),
        )
        .unwrap();
        match open_copy(&copy, &live, None) {
            Err(StoreError::NoMatchingMasterKey { .. }) => {}
            other => panic!("unexpected: {:?}", other.map(|_| ())),
        }
        assert!(!copy.join(KEY_FILE_NAME).exists());

        let empty = dir.path().join("no-key");
        fs::create_dir(&empty).unwrap();
        assert!(open_copy(&copy, &empty, None).is_err());
        assert!(!copy.join(KEY_FILE_NAME).exists());
        assert!(!empty.join(KEY_FILE_NAME).exists());
    }

    #[test]
    fn a_sealed_secret_opens_only_with_its_master_key_and_purpose() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live");
        let store = Store::open_with_credentials(&live, None).unwrap();
        let kek = store.current_master_key_id().unwrap().unwrap();
        let text = seal_secret(&live, None, &kek, "signing.key", b"SECRET-BYTES").unwrap();
        assert!(!text.contains("SECRET"));
        assert_eq!(sealed_secret_key_id(&text), Some(kek.as_str()));
        let opened = open_secret(&live, None, "signing.key", &text).unwrap();
        assert_eq!(opened.as_slice(), b"SECRET-BYTES");
        assert!(matches!(
            open_secret(&live, None, "other", &text),
            Err(SealedSecretError::Damaged { .. })
        ));
        let other = dir.path().join("other");
        drop(Store::open_with_credentials(&other, None).unwrap());
        assert!(matches!(
            open_secret(&other, None, "signing.key", &text),
            Err(SealedSecretError::NoKey { .. })
        ));
        assert!(matches!(
            open_secret(&live, None, "signing.key", "garbage"),
            Err(SealedSecretError::Malformed)
        ));
    }
}
