//! Envelope encryption inside the (already SQLCipher-encrypted) database.
//!
//! Every encounter has its own random 256-bit data key (DEK), stored only wrapped under a master
//! key in `encounter_keys(encounter_id, kek_id, wrapped)`. Patient content (transcript text and
//! speakers, draft and note bodies, audio, the patient reference) is sealed with that DEK before
//! it reaches SQLite. Deleting the one `encounter_keys` row destroys the content for good, in
//! every copy of the rows that lacks that row (crypto-shredding): SQLCipher alone could not do
//! that, since one key opens the whole file and every backup of it.
//!
//! Sealed value: `version (1) | nonce (12, random) | AES-256-GCM ciphertext | tag (16)`. The
//! associated data binds it to the encounter id and a purpose label that names the row (e.g.
//! `segment/s12`), so a blob moved to another row or encounter fails to open instead of showing
//! the wrong patient's words. Random 96-bit nonces are safe here: one key seals at most a few
//! thousand values.
//!
//! Master keys (KEKs) are named by [`MasterKey::kek_id`]. The [`KeyRing`] holds every master key
//! that was found at open (mid-rotation there are two) and reloads from disk when it meets a
//! key id it lacks (another process rotated). Which KEK wraps new DEKs is recorded in the
//! database (`key_state`), so that choice is serialized with the rotation's rewrap by SQLite's
//! write lock: a DEK is never wrapped under a key a finished rotation has retired.
//!
//! The SQLCipher page key is a separate random [`DatabaseKey`], wrapped under the master key in
//! `<data_dir>/database.key`, so rotation never rekeys pages ([`Store::rotate_master_key`]).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock, Weak};

use ring::aead::{Aad, LessSafeKey, Nonce, NONCE_LEN};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use rusqlite::{params, Connection, OptionalExtension};

use super::audit::{self, Actor, AuditAction, AuditDetail, AuditEntry};
use super::key::{
    self, check_private_file, DatabaseKey, KeyError, KeySource, LoadedKey, MasterKey,
    PrivateFileProblem, SecretBytes, KEY_LEN,
};
use super::{Store, StoreError};

/// Name of the wrapped database key inside the data directory.
pub const DATABASE_KEY_FILE_NAME: &str = "database.key";

/// First byte of every sealed value; a new format gets a new number.
const SEALED_VERSION: u8 = 1;
const TAG_LEN: usize = 16;

/// Domain tags of the associated data: a sealed value, a wrapped DEK and a wrapped database key
/// can never be taken for one another.
const VALUE_DOMAIN: &[u8] = b"edge-scribe/value/v1";
const DEK_DOMAIN: &[u8] = b"edge-scribe/dek/v1";
const DATABASE_KEY_DOMAIN: &[u8] = b"edge-scribe/database-key/v1";

/// First word of `database.key`, so a stray file is recognised as not ours.
const DATABASE_KEY_MAGIC: &str = "edge-scribe-database-key";

/// Seals `plaintext` with the data key of `encounter_id`, creating that key if the encounter has
/// none yet. `purpose` names the column and the row (e.g. `note_version.body/3`): a sealed value
/// only opens with the same encounter id and purpose, so include the row's identity in it.
///
/// `tx` must be a connection of a [`Store`] (a `Transaction` derefs to one); creating a key
/// writes, so call it inside the write transaction that stores the result.
pub(crate) fn seal(
    tx: &Connection,
    encounter_id: &str,
    purpose: &str,
    plaintext: &[u8],
) -> Result<Vec<u8>, StoreError> {
    let ring = ring_for(tx)?;
    encounter_cipher(tx, &ring, encounter_id, true)?.seal(purpose, plaintext)
}

/// Opens a value made by [`seal`] with the same encounter id and purpose. Fails with
/// `DataKeyGone` once the encounter's key was deleted, and with `SealedValue` if the value was
/// damaged or belongs to another row.
pub(crate) fn open(
    tx: &Connection,
    encounter_id: &str,
    purpose: &str,
    sealed: &[u8],
) -> Result<Vec<u8>, StoreError> {
    let ring = ring_for(tx)?;
    encounter_cipher(tx, &ring, encounter_id, false)?.open(purpose, sealed)
}

/// Associated data: a domain tag, then each part with a 4-byte big-endian length, so no two
/// different part lists encode alike.
fn associated_data(domain: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(domain.len() + parts.iter().map(|p| p.len() + 4).sum::<usize>());
    out.extend_from_slice(domain);
    for part in parts {
        out.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

fn seal_raw(key: &LessSafeKey, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, KeyError> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| KeyError::Random)?;
    let mut out = Vec::with_capacity(1 + NONCE_LEN + plaintext.len() + TAG_LEN);
    out.push(SEALED_VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut out[1 + NONCE_LEN..],
        )
        .map_err(|_| KeyError::Crypto)?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

/// `None` if the value is not ours, was changed, or was sealed with another key or AAD.
fn open_raw(key: &LessSafeKey, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    let (&version, rest) = sealed.split_first()?;
    if version != SEALED_VERSION || rest.len() < NONCE_LEN + TAG_LEN {
        return None;
    }
    let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut buf = ciphertext.to_vec();
    let len = key
        .open_in_place(nonce, Aad::from(aad), &mut buf)
        .ok()?
        .len();
    buf.truncate(len);
    Some(buf)
}

/// One master key held by the ring.
struct Kek {
    id: String,
    key: MasterKey,
    wrap: LessSafeKey,
    source: KeySource,
}

impl Kek {
    fn new(loaded: LoadedKey) -> Result<Kek, KeyError> {
        Ok(Kek {
            id: loaded.key.kek_id(),
            wrap: loaded.key.wrapping_key()?,
            key: loaded.key,
            source: loaded.source,
        })
    }
}

/// The master keys of one database and what was derived from its database key. Shared (`Arc`)
/// by every [`Store`] on the same file in this process.
pub(crate) struct KeyRing {
    data_dir: PathBuf,
    credentials_dir: Option<PathBuf>,
    keks: RwLock<Vec<Kek>>,
    /// Keyed hash of patient references, so deletion by patient needs no plaintext index.
    lookup: hmac::Key,
    /// The KEK that unlocked the database at open: wraps new DEKs until `key_state` names one.
    primary: String,
}

impl KeyRing {
    fn with_kek<T>(&self, kek_id: &str, f: impl Fn(&Kek) -> T) -> Result<T, StoreError> {
        if let Some(found) = self.find(kek_id, &f) {
            return Ok(found);
        }
        // Another process may have rotated: the key it moved to is on disk now.
        self.reload()?;
        self.find(kek_id, &f)
            .ok_or_else(|| StoreError::NoMatchingMasterKey {
                kek_id: kek_id.to_owned(),
                path: self.data_dir.join(key::KEY_FILE_NAME),
            })
    }

    fn find<T>(&self, kek_id: &str, f: &impl Fn(&Kek) -> T) -> Option<T> {
        let keks = self.keks.read().unwrap_or_else(PoisonError::into_inner);
        keks.iter().find(|k| k.id == kek_id).map(f)
    }

    fn reload(&self) -> Result<(), StoreError> {
        let loaded = key::load_master_keys(&self.data_dir, self.credentials_dir.as_deref())?;
        for key in loaded {
            self.add(key)?;
        }
        Ok(())
    }

    fn add(&self, loaded: LoadedKey) -> Result<(), StoreError> {
        let kek = Kek::new(loaded)?;
        let mut keks = self.keks.write().unwrap_or_else(PoisonError::into_inner);
        if !keks.iter().any(|k| k.id == kek.id) {
            keks.push(kek);
        }
        Ok(())
    }

    /// Hex HMAC-SHA256 of a patient reference (trimmed), for `encounters.patient_lookup`.
    pub(crate) fn patient_lookup(&self, patient_ref: &str) -> String {
        hex(hmac::sign(&self.lookup, patient_ref.trim().as_bytes()).as_ref())
    }

    /// The KEK that wraps new DEKs: the one `key_state` names, else the one that opened the
    /// database. Read inside the caller's write transaction, which serializes it with rotation.
    fn current_kek_id(&self, conn: &Connection) -> Result<String, StoreError> {
        let recorded: Option<String> = conn
            .query_row(
                "SELECT current_kek_id FROM key_state WHERE id = 1",
                [],
                |row| row.get(0),
            )
            .optional()?;
        Ok(recorded.unwrap_or_else(|| self.primary.clone()))
    }

    fn wrap_dek(
        &self,
        kek_id: &str,
        encounter_id: &str,
        dek: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        let aad = associated_data(DEK_DOMAIN, &[encounter_id.as_bytes(), kek_id.as_bytes()]);
        Ok(self.with_kek(kek_id, |kek| seal_raw(&kek.wrap, &aad, dek))??)
    }

    fn unwrap_dek(
        &self,
        kek_id: &str,
        encounter_id: &str,
        wrapped: &[u8],
    ) -> Result<SecretBytes, StoreError> {
        let aad = associated_data(DEK_DOMAIN, &[encounter_id.as_bytes(), kek_id.as_bytes()]);
        let opened = self.with_kek(kek_id, |kek| open_raw(&kek.wrap, &aad, wrapped))?;
        let mut plain = opened.ok_or_else(|| StoreError::SealedValue {
            encounter_id: encounter_id.to_owned(),
            purpose: "encounter key".to_owned(),
        })?;
        let mut secret = SecretBytes::with_capacity(KEY_LEN);
        secret.extend(&plain[..plain.len().min(KEY_LEN)]);
        key::wipe(&mut plain);
        Ok(secret)
    }
}

/// An encounter's data key, ready to seal and open its values.
pub(crate) struct EncounterCipher {
    encounter_id: String,
    key: LessSafeKey,
}

impl EncounterCipher {
    pub(crate) fn seal(&self, purpose: &str, plaintext: &[u8]) -> Result<Vec<u8>, StoreError> {
        let aad = associated_data(
            VALUE_DOMAIN,
            &[self.encounter_id.as_bytes(), purpose.as_bytes()],
        );
        Ok(seal_raw(&self.key, &aad, plaintext)?)
    }

    pub(crate) fn open(&self, purpose: &str, sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        let aad = associated_data(
            VALUE_DOMAIN,
            &[self.encounter_id.as_bytes(), purpose.as_bytes()],
        );
        open_raw(&self.key, &aad, sealed).ok_or_else(|| StoreError::SealedValue {
            encounter_id: self.encounter_id.clone(),
            purpose: purpose.to_owned(),
        })
    }
}

/// The encounter's data key. With `create`, an encounter without one gets a fresh key (written
/// on `conn`, so inside the caller's write transaction); without, a missing key is `DataKeyGone`.
pub(crate) fn encounter_cipher(
    conn: &Connection,
    ring: &KeyRing,
    encounter_id: &str,
    create: bool,
) -> Result<EncounterCipher, StoreError> {
    let row: Option<(String, Vec<u8>)> = conn
        .query_row(
            "SELECT kek_id, wrapped FROM encounter_keys WHERE encounter_id = ?1",
            [encounter_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let dek = match row {
        Some((kek_id, wrapped)) => ring.unwrap_dek(&kek_id, encounter_id, &wrapped)?,
        None if create => create_dek(conn, ring, encounter_id)?,
        None => {
            return Err(StoreError::DataKeyGone {
                encounter_id: encounter_id.to_owned(),
            })
        }
    };
    Ok(EncounterCipher {
        encounter_id: encounter_id.to_owned(),
        key: key::aes_key(dek.as_slice())?,
    })
}

fn create_dek(
    conn: &Connection,
    ring: &KeyRing,
    encounter_id: &str,
) -> Result<SecretBytes, StoreError> {
    let mut bytes = [0u8; KEY_LEN];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| KeyError::Random)?;
    let mut dek = SecretBytes::with_capacity(KEY_LEN);
    dek.extend(&bytes);
    key::wipe(&mut bytes);
    let kek_id = ring.current_kek_id(conn)?;
    let wrapped = ring.wrap_dek(&kek_id, encounter_id, dek.as_slice())?;
    conn.execute(
        "INSERT INTO encounter_keys (encounter_id, kek_id, wrapped) VALUES (?1, ?2, ?3)",
        params![encounter_id, kek_id, wrapped],
    )?;
    Ok(dek)
}

// ---- which key ring belongs to a connection ----

/// Key rings by database file path. `seal`/`open` get only a connection, and the one thing a
/// connection tells about itself is its file; every `Store` on that file in this process shares
/// one ring. Weak, so a ring dies with its last `Store`.
fn registry() -> &'static Mutex<HashMap<String, Weak<KeyRing>>> {
    static RINGS: OnceLock<Mutex<HashMap<String, Weak<KeyRing>>>> = OnceLock::new();
    RINGS.get_or_init(|| Mutex::new(HashMap::new()))
}

fn connection_file(conn: &Connection) -> Option<String> {
    conn.path().filter(|p| !p.is_empty()).map(str::to_owned)
}

/// Makes `ring` the ring of `conn`'s database, or merges its keys into the ring already there.
fn register(conn: &Connection, ring: KeyRing) -> Result<Arc<KeyRing>, StoreError> {
    let file = connection_file(conn).ok_or(StoreError::NoKeyRing)?;
    let mut rings = registry().lock().unwrap_or_else(PoisonError::into_inner);
    rings.retain(|_, weak| weak.strong_count() > 0);
    if let Some(existing) = rings.get(&file).and_then(Weak::upgrade) {
        let keks = std::mem::take(&mut *ring.keks.write().unwrap_or_else(PoisonError::into_inner));
        let mut into = existing
            .keks
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        for kek in keks {
            if !into.iter().any(|k| k.id == kek.id) {
                into.push(kek);
            }
        }
        drop(into);
        return Ok(existing);
    }
    let ring = Arc::new(ring);
    rings.insert(file, Arc::downgrade(&ring));
    Ok(ring)
}

fn ring_for(conn: &Connection) -> Result<Arc<KeyRing>, StoreError> {
    let file = connection_file(conn).ok_or(StoreError::NoKeyRing)?;
    registry()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&file)
        .and_then(Weak::upgrade)
        .ok_or(StoreError::NoKeyRing)
}

// ---- unlocking the database ----

/// `database.key`: `edge-scribe-database-key v1 <kek_id> <hex of the sealed database key>`.
struct DatabaseKeyFile {
    kek_id: String,
    wrapped: Vec<u8>,
}

fn database_key_aad(kek_id: &str) -> Vec<u8> {
    associated_data(DATABASE_KEY_DOMAIN, &[kek_id.as_bytes()])
}

fn read_database_key_file(path: &Path) -> Result<Option<DatabaseKeyFile>, StoreError> {
    let bad = |problem: &'static str| StoreError::DatabaseKeyFile {
        path: path.to_path_buf(),
        problem,
    };
    match check_private_file(path) {
        Ok(()) => {}
        Err(PrivateFileProblem::Read(e)) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(PrivateFileProblem::Read(source)) => {
            return Err(StoreError::Key(KeyError::Read {
                path: path.to_path_buf(),
                source,
            }))
        }
        Err(PrivateFileProblem::NotAFile) => return Err(bad("it is not a regular file")),
        Err(PrivateFileProblem::TooOpen { mode }) => {
            return Err(StoreError::Key(KeyError::TooOpen {
                path: path.to_path_buf(),
                mode,
            }))
        }
    }
    let text = fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut words = text.split_ascii_whitespace();
    let (Some(DATABASE_KEY_MAGIC), Some("v1"), Some(kek_id), Some(hex_text), None) = (
        words.next(),
        words.next(),
        words.next(),
        words.next(),
        words.next(),
    ) else {
        return Err(bad("it is not an edge-scribe database key file"));
    };
    let mut wrapped = vec![0u8; hex_text.len() / 2];
    if hex_text.len() % 2 != 0 || !key::decode_hex(hex_text.as_bytes(), &mut wrapped) {
        return Err(bad("its key is not hex"));
    }
    Ok(Some(DatabaseKeyFile {
        kek_id: kek_id.to_owned(),
        wrapped,
    }))
}

fn database_key_file_text(kek: &Kek, db_key: &DatabaseKey) -> Result<String, StoreError> {
    let wrapped = seal_raw(&kek.wrap, &database_key_aad(&kek.id), db_key.as_bytes())?;
    Ok(format!(
        "{DATABASE_KEY_MAGIC} v1 {} {}\n",
        kek.id,
        hex(&wrapped)
    ))
}

fn unwrap_database_key(kek: &Kek, file: &DatabaseKeyFile) -> Option<DatabaseKey> {
    let mut plain = open_raw(&kek.wrap, &database_key_aad(&kek.id), &file.wrapped)?;
    DatabaseKey::from_slice(&mut plain)
}

/// How the database was unlocked.
pub(crate) struct Unlocked {
    pub conn: Connection,
    ring: KeyRing,
}

/// Finds the database key (from `database.key`, or for a database from before it existed the
/// master key's own bytes, or fresh for a new database), keys a connection from `open_conn` with
/// it and checks it fits via `apply_key`.
pub(crate) fn unlock(
    data_dir: &Path,
    credentials_dir: Option<&Path>,
    db_path: &Path,
    database_existed: bool,
    open_conn: &dyn Fn() -> Result<Connection, StoreError>,
    apply_key: &dyn Fn(&Connection, &DatabaseKey) -> Result<(), StoreError>,
) -> Result<Unlocked, StoreError> {
    let keks = key::load_master_keys(data_dir, credentials_dir)?
        .into_iter()
        .map(Kek::new)
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(pending) = keks
        .iter()
        .find(|k| matches!(k.source, KeySource::Pending(_)))
    {
        tracing::warn!(
            path = %pending.source.path().display(),
            "a master key rotation was interrupted; run the rotation again to finish it"
        );
    }
    let key_path = data_dir.join(DATABASE_KEY_FILE_NAME);
    let (conn, db_key, primary) = match read_database_key_file(&key_path)? {
        Some(file) => {
            let kek = keks.iter().find(|k| k.id == file.kek_id).ok_or_else(|| {
                StoreError::NoMatchingMasterKey {
                    kek_id: file.kek_id.clone(),
                    path: key_path.clone(),
                }
            })?;
            let db_key =
                unwrap_database_key(kek, &file).ok_or_else(|| StoreError::DatabaseKeyFile {
                    path: key_path.clone(),
                    problem: "it does not open with the master key it names (damaged)",
                })?;
            let conn = open_conn()?;
            apply_key(&conn, &db_key)?;
            (conn, db_key, kek.id.clone())
        }
        None if database_existed => {
            // Keyed directly with a master key's bytes by an earlier release; the next pending
            // key cannot be it (it is only ever used after database.key exists).
            let mut last_err = None;
            let mut found = None;
            for kek in keks
                .iter()
                .filter(|k| !matches!(k.source, KeySource::Pending(_)))
            {
                let db_key = kek.key.legacy_database_key();
                let conn = open_conn()?;
                match apply_key(&conn, &db_key) {
                    Ok(()) => {
                        found = Some((conn, db_key, kek.id.clone()));
                        break;
                    }
                    Err(e) => last_err = Some(e),
                }
            }
            match (found, last_err) {
                (Some(found), _) => found,
                (None, Some(e)) => return Err(e),
                (None, None) => {
                    return Err(StoreError::WrongKey {
                        path: db_path.to_path_buf(),
                    })
                }
            }
        }
        None => {
            let kek = keks
                .iter()
                .find(|k| !matches!(k.source, KeySource::Pending(_)))
                .ok_or_else(|| StoreError::NoMatchingMasterKey {
                    kek_id: "none".to_owned(),
                    path: data_dir.join(key::KEY_FILE_NAME),
                })?;
            let db_key = DatabaseKey::generate()?;
            let text = database_key_file_text(kek, &db_key)?;
            match key::write_new_private_file(&key_path, text.as_bytes()) {
                Ok(()) => {}
                // Another process created the database at the same moment: use its key.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return unlock(
                        data_dir,
                        credentials_dir,
                        db_path,
                        database_existed,
                        open_conn,
                        apply_key,
                    )
                }
                Err(source) => {
                    return Err(StoreError::Key(KeyError::Create {
                        path: key_path,
                        source,
                    }))
                }
            }
            let conn = open_conn()?;
            apply_key(&conn, &db_key)?;
            (conn, db_key, kek.id.clone())
        }
    };
    let ring = KeyRing {
        data_dir: data_dir.to_path_buf(),
        credentials_dir: credentials_dir.map(Path::to_path_buf),
        keks: RwLock::new(keks),
        lookup: db_key.lookup_key(),
        primary,
    };
    drop(db_key);
    Ok(Unlocked { conn, ring })
}

impl Unlocked {
    /// Registers the ring for the connection's file and returns both.
    pub(crate) fn register(self) -> Result<(Connection, Arc<KeyRing>), StoreError> {
        let ring = register(&self.conn, self.ring)?;
        Ok((self.conn, ring))
    }
}

/// Records which KEK wraps new DEKs if the database does not say yet, and warns when the
/// systemd credential is not that key (it was rotated since; the credential needs updating).
pub(crate) fn init_key_state(conn: &Connection, ring: &KeyRing) -> Result<(), StoreError> {
    let current: Option<String> = conn
        .query_row(
            "SELECT current_kek_id FROM key_state WHERE id = 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    let current = match current {
        Some(c) => c,
        None => {
            conn.execute(
                "INSERT OR IGNORE INTO key_state (id, current_kek_id) VALUES (1, ?1)",
                [&ring.primary],
            )?;
            ring.primary.clone()
        }
    };
    let keks = ring.keks.read().unwrap_or_else(PoisonError::into_inner);
    for kek in keks.iter() {
        if let KeySource::Credential(path) = &kek.source {
            if kek.id != current {
                tracing::warn!(
                    credential = %path.display(),
                    kek_id = %kek.id,
                    current_kek_id = %current,
                    "the master key credential is not the current master key (it was rotated); \
                     update the systemd credential from <data_dir>/master.key"
                );
            }
        }
    }
    Ok(())
}

/// Test helper: the database key of `data_dir`, found as `Store::open` finds it.
#[cfg(test)]
pub(crate) fn database_key_for_tests(data_dir: &Path) -> DatabaseKey {
    let keks: Vec<Kek> = key::load_master_keys(data_dir, None)
        .unwrap()
        .into_iter()
        .map(|k| Kek::new(k).unwrap())
        .collect();
    match read_database_key_file(&data_dir.join(DATABASE_KEY_FILE_NAME)).unwrap() {
        Some(file) => keks
            .iter()
            .filter(|k| k.id == file.kek_id)
            .find_map(|k| unwrap_database_key(k, &file))
            .unwrap(),
        None => keks[0].key.legacy_database_key(),
    }
}

// ---- master key rotation ----

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationReport {
    pub old_kek_id: String,
    pub new_kek_id: String,
    /// Encounter keys rewrapped.
    pub rewrapped: u64,
    /// True if the master key came from a systemd credential, which the box cannot update: the
    /// new key is in `<data_dir>/master.key` and the credential must be replaced with it.
    pub credential_needs_update: bool,
}

/// The steps of a rotation, in order; a test stops after one to simulate a crash there.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RotationStep {
    /// `master.key.new` written and synced.
    NewKeyWritten = 1,
    /// `database.key` rewrapped under the new key (renamed into place).
    DatabaseKeyRewrapped = 2,
    /// Every `encounter_keys` row rewrapped and `key_state` switched, in one transaction.
    RowsRewrapped = 3,
    /// `master.key.new` renamed over `master.key`: done.
    Finished = 4,
}

impl Store {
    /// Replaces the master key without downtime and without rekeying the database pages.
    ///
    /// 1. A new key is written to `master.key.new` (0600, synced); an interrupted earlier
    ///    rotation's `master.key.new` is reused instead, so running this again finishes it.
    /// 2. `database.key` is rewrapped under it (temp file, fsync, rename). A database from
    ///    before `database.key` gets one now, wrapping the old master key's bytes, which stay
    ///    its page key.
    /// 3. One transaction rewraps every `encounter_keys` row and records the new key as the
    ///    one that wraps new data keys (audited).
    /// 4. `master.key.new` is renamed over `master.key`.
    ///
    /// A crash after any step leaves files the loader opens: it offers both keys and picks each
    /// wrapped value's key by its id. Another process with the store open keeps working: it
    /// reloads keys from disk when it meets the new key id. With a systemd credential, the new
    /// key is written to `<data_dir>/master.key` and the credential must be updated from it.
    pub fn rotate_master_key(&self) -> Result<RotationReport, StoreError> {
        self.rotate_master_key_until(RotationStep::Finished)
    }

    /// Test hook: runs the rotation only up to and including `stop_after`, as if the process
    /// died right after it.
    #[doc(hidden)]
    pub fn rotate_master_key_until(
        &self,
        stop_after: RotationStep,
    ) -> Result<RotationReport, StoreError> {
        let ring = &self.keys;
        let data_dir = ring.data_dir.clone();
        let io_err = |step: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source: io::Error| StoreError::KeyRotation { step, path, source }
        };

        // Step 1: the next key.
        let pending_path = data_dir.join(key::NEW_KEY_FILE_NAME);
        let existing = match MasterKey::load(&pending_path) {
            Ok(key) => Some(key),
            Err(KeyError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => None,
            Err(KeyError::Malformed { .. }) => {
                // Half-written by a crash in step 1: nothing was wrapped under it.
                fs::remove_file(&pending_path).map_err(io_err(
                    "remove a half-written master.key.new",
                    &pending_path,
                ))?;
                None
            }
            Err(e) => return Err(e.into()),
        };
        let new_key = match existing {
            Some(key) => key,
            None => {
                let key = MasterKey::generate()?;
                key.write_new(&pending_path)?;
                key
            }
        };
        let new_id = new_key.kek_id();
        ring.add(LoadedKey {
            key: new_key,
            source: KeySource::Pending(pending_path.clone()),
        })?;
        let old_id = ring.current_kek_id(&self.conn)?;
        let credential_needs_update = ring
            .keks
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .any(|k| matches!(k.source, KeySource::Credential(_)));
        let report = |rewrapped| RotationReport {
            old_kek_id: old_id.clone(),
            new_kek_id: new_id.clone(),
            rewrapped,
            credential_needs_update,
        };
        if stop_after == RotationStep::NewKeyWritten {
            return Ok(report(0));
        }

        // Step 2: database.key under the new key.
        let key_path = data_dir.join(DATABASE_KEY_FILE_NAME);
        let db_key = match read_database_key_file(&key_path)? {
            Some(file) => {
                let opened = ring.with_kek(&file.kek_id, |kek| unwrap_database_key(kek, &file))?;
                opened.ok_or_else(|| StoreError::DatabaseKeyFile {
                    path: key_path.clone(),
                    problem: "it does not open with the master key it names (damaged)",
                })?
            }
            // An earlier release's database: its page key is the bytes of the master key that
            // opened it, which is the ring's primary.
            None => ring.with_kek(&ring.primary, |kek| kek.key.legacy_database_key())?,
        };
        let text = ring.with_kek(&new_id, |kek| database_key_file_text(kek, &db_key))??;
        drop(db_key);
        let tmp_path = data_dir.join(format!("{DATABASE_KEY_FILE_NAME}.tmp"));
        match fs::remove_file(&tmp_path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove a stale database.key.tmp", &tmp_path)(e)),
        }
        key::write_new_private_file(&tmp_path, text.as_bytes())
            .map_err(io_err("write database.key.tmp", &tmp_path))?;
        fs::rename(&tmp_path, &key_path).map_err(io_err("rename database.key.tmp", &key_path))?;
        sync_dir(&data_dir).map_err(io_err("sync the data directory", &data_dir))?;
        if stop_after == RotationStep::DatabaseKeyRewrapped {
            return Ok(report(0));
        }

        // Step 3: every encounter key, and the key for new ones, in one transaction.
        let tx = self.write_transaction()?;
        let rows: Vec<(String, String, Vec<u8>)> = {
            let mut stmt = tx.prepare(
                "SELECT encounter_id, kek_id, wrapped FROM encounter_keys WHERE kek_id != ?1",
            )?;
            let rows = stmt.query_map([&new_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut rewrapped = 0u64;
        for (encounter_id, kek_id, wrapped) in rows {
            let dek = ring.unwrap_dek(&kek_id, &encounter_id, &wrapped)?;
            let rewrap = ring.wrap_dek(&new_id, &encounter_id, dek.as_slice())?;
            tx.execute(
                "UPDATE encounter_keys SET kek_id = ?2, wrapped = ?3 WHERE encounter_id = ?1",
                params![encounter_id, new_id, rewrap],
            )?;
            rewrapped += 1;
        }
        tx.execute(
            "INSERT INTO key_state (id, current_kek_id) VALUES (1, ?1)
             ON CONFLICT (id) DO UPDATE SET current_kek_id = excluded.current_kek_id",
            [&new_id],
        )?;
        audit::append_in(
            &tx,
            &AuditEntry {
                actor: Actor::System,
                action: AuditAction::MasterKeyRotated,
                subject: new_id.clone(),
                detail: AuditDetail {
                    kek_id: Some(new_id.clone()),
                    count: Some(rewrapped),
                    ..AuditDetail::default()
                },
            },
        )?;
        tx.commit()?;
        if stop_after == RotationStep::RowsRewrapped {
            return Ok(report(rewrapped));
        }

        // Step 4: the new key becomes master.key.
        let key_file = data_dir.join(key::KEY_FILE_NAME);
        fs::rename(&pending_path, &key_file).map_err(io_err("rename master.key.new", &key_file))?;
        sync_dir(&data_dir).map_err(io_err("sync the data directory", &data_dir))?;
        {
            let mut keks = ring.keks.write().unwrap_or_else(PoisonError::into_inner);
            for kek in keks.iter_mut() {
                if kek.id == new_id {
                    kek.source = KeySource::File(key_file.clone());
                }
            }
        }
        if credential_needs_update {
            tracing::warn!(
                key_file = %key_file.display(),
                kek_id = %new_id,
                "master key rotated; the systemd credential still holds the old key: replace \
                 it with the new master.key, then the old key may be destroyed"
            );
        }
        tracing::info!(old_kek_id = %old_id, kek_id = %new_id, rewrapped, "master key rotated");
        Ok(report(rewrapped))
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

// ---- migration: sealing rows an earlier release stored in clear ----

/// Migration step: gives every encounter a data key and seals the transcript text and speakers
/// and the draft bodies that earlier releases stored in clear, then drops the clear columns.
/// Runs inside the migration's transaction, so a crash leaves the old schema or the new.
pub(crate) fn seal_existing_rows(tx: &Connection, ring: &KeyRing) -> Result<(), StoreError> {
    tx.execute(
        "INSERT OR IGNORE INTO key_state (id, current_kek_id) VALUES (1, ?1)",
        [&ring.primary],
    )?;
    let ids: Vec<String> = {
        let mut stmt = tx.prepare("SELECT id FROM encounters")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    for id in &ids {
        let cipher = encounter_cipher(tx, ring, id, true)?;
        let segments: Vec<(String, Option<String>, String)> = {
            let mut stmt = tx.prepare(
                "SELECT id, speaker, text FROM transcript_segments WHERE encounter_id = ?1",
            )?;
            let rows = stmt.query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        for (seg_id, speaker, text) in segments {
            let content = cipher.seal(
                &segment_purpose(&seg_id),
                &encode_segment(speaker.as_deref(), &text),
            )?;
            tx.execute(
                "UPDATE transcript_segments SET content = ?3 WHERE encounter_id = ?1 AND id = ?2",
                params![id, seg_id, content],
            )?;
        }
        let drafts: Vec<(String, String)> = {
            let mut stmt =
                tx.prepare("SELECT id, body_json FROM drafts WHERE encounter_id = ?1")?;
            let rows = stmt.query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        for (draft_id, body) in drafts {
            let sealed = cipher.seal(&draft_purpose(&draft_id), body.as_bytes())?;
            tx.execute(
                "UPDATE drafts SET body = ?2,
                     prompt_version = CASE WHEN json_type(body_json, '$.prompt_version') = 'text'
                                           THEN json_extract(body_json, '$.prompt_version') END
                 WHERE id = ?1",
                params![draft_id, sealed],
            )?;
        }
    }
    // With secure_delete on (set at open), the clear text's old cells are zeroed as the
    // columns are dropped.
    tx.execute_batch(
        "ALTER TABLE transcript_segments DROP COLUMN text;
         ALTER TABLE transcript_segments DROP COLUMN speaker;
         ALTER TABLE drafts DROP COLUMN body_json;",
    )?;
    Ok(())
}

/// Purpose label of a transcript segment's sealed content: binds it to the segment id.
pub(crate) fn segment_purpose(segment_id: &str) -> String {
    format!("segment/{segment_id}")
}

/// Purpose label of the speaker the pipeline gave a segment whose speaker a clinician corrected
/// (encoded like a segment without text).
pub(crate) fn original_speaker_purpose(segment_id: &str) -> String {
    format!("segment.original_speaker/{segment_id}")
}

/// Purpose label of a draft's sealed body: binds it to the draft id.
pub(crate) fn draft_purpose(draft_id: &str) -> String {
    format!("draft.body/{draft_id}")
}

/// A segment's speaker and text as one sealed value: `0` (no speaker), or `1`, the speaker's
/// length (4 bytes big-endian) and its bytes; then the text.
pub(crate) fn encode_segment(speaker: Option<&str>, text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + speaker.map_or(0, str::len) + text.len());
    match speaker {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            out.extend_from_slice(&u32::try_from(s.len()).unwrap_or(u32::MAX).to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
    }
    out.extend_from_slice(text.as_bytes());
    out
}

/// Inverse of [`encode_segment`]; `None` if the bytes are not one.
pub(crate) fn decode_segment(bytes: &[u8]) -> Option<(Option<String>, String)> {
    let (&flag, rest) = bytes.split_first()?;
    let (speaker, text) = match flag {
        0 => (None, rest),
        1 => {
            let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
            let len = usize::try_from(len).ok()?;
            let speaker = rest.get(4..4 + len)?;
            (
                Some(String::from_utf8(speaker.to_vec()).ok()?),
                rest.get(4 + len..)?,
            )
        }
        _ => return None,
    };
    Some((speaker, String::from_utf8(text.to_vec()).ok()?))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}
