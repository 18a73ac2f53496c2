//! The box's Ed25519 signing key and the [`Signer`] that is the only maker of [`SignedNote`]s.
//!
//! The key is kept as PKCS#8 (DER, as `ring` generates it) in `<data_dir>/signing.key`, mode
//! 0600, created on first use and refused if group or others could read it. Its public half is
//! written as hex to `<data_dir>/signing.pub` so an auditor can verify notes offline without
//! the box. The private key is never cloned, printed, logged or serialized: `Signer` has no
//! `Debug`, and the only thing it hands out is a signature.

use std::fs;
use std::io::{self, Read};
use std::path::Path;
use std::time::SystemTime;

use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};

use crate::store::key::{check_private_file, wipe, write_new_private_file, PrivateFileProblem};

use super::{
    hex, rfc3339_utc, sha256_hex, signed_bytes, AttestError, Attestation, AttestationFields,
    SignedNote,
};

/// Name of the private key file inside the data directory.
pub const SIGNING_KEY_FILE_NAME: &str = "signing.key";
/// Name of the public key file (hex, one line) inside the data directory.
pub const PUBLIC_KEY_FILE_NAME: &str = "signing.pub";

/// A PKCS#8 Ed25519 key from ring is 83 bytes; anything much larger is not our file, and
/// bounding the read keeps a wrong file from making us allocate.
const MAX_KEY_FILE_LEN: usize = 256;

/// Signs notes with the box's key. Deliberately not `Clone` or `Debug`.
pub struct Signer {
    key_pair: Ed25519KeyPair,
}

impl Signer {
    /// Loads `<data_dir>/signing.key`, generating it on first use, and makes sure
    /// `<data_dir>/signing.pub` holds its public key.
    ///
    /// A key file that group or others could read is refused rather than repaired: if it was
    /// exposed, anyone could have forged notes, and fixing the mode silently would hide that.
    pub fn open(data_dir: &Path) -> Result<Signer, AttestError> {
        let path = data_dir.join(SIGNING_KEY_FILE_NAME);
        let key_pair = match fs::symlink_metadata(&path) {
            Ok(_) => load(&path)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => match create(&path) {
                // Another process created it between our check and our create: use theirs.
                Err(AttestError::KeyCreate { source, .. })
                    if source.kind() == io::ErrorKind::AlreadyExists =>
                {
                    load(&path)?
                }
                other => other?,
            },
            Err(source) => return Err(AttestError::KeyRead { path, source }),
        };
        let signer = Signer { key_pair };
        signer.ensure_public_key_file(data_dir)?;
        Ok(signer)
    }

    /// The raw 32-byte Ed25519 public key.
    pub fn public_key(&self) -> &[u8] {
        self.key_pair.public_key().as_ref()
    }

    /// Signs `note_text` as a new note. The note hash and the signing time are computed here,
    /// so a caller cannot attest to a hash of some other text.
    pub fn sign(
        &self,
        note_text: &str,
        fields: AttestationFields,
    ) -> Result<SignedNote, AttestError> {
        self.sign_inner(note_text, fields, None)
    }

    /// Signs `note_text` as an addendum correcting `original`, which stays as it was: a signed
    /// note is immutable, so corrections are new signed notes that point at the old one's hash.
    pub fn sign_addendum(
        &self,
        original: &SignedNote,
        note_text: &str,
        fields: AttestationFields,
    ) -> Result<SignedNote, AttestError> {
        let original_hash = original.attestation().note_sha256.clone();
        self.sign_inner(note_text, fields, Some(original_hash))
    }

    fn sign_inner(
        &self,
        note_text: &str,
        fields: AttestationFields,
        addendum_to: Option<String>,
    ) -> Result<SignedNote, AttestError> {
        let attestation = Attestation {
            clinician_id: fields.clinician_id,
            signed_at: rfc3339_utc(SystemTime::now()),
            note_sha256: sha256_hex(note_text.as_bytes()),
            audio_sha256: fields.audio_sha256,
            models: fields.models,
            template_id: fields.template_id,
            prompt_version: fields.prompt_version,
            ai_statements: fields.ai_statements,
            addendum_to,
        };
        let bytes = signed_bytes(note_text, &attestation)?;
        let signature = self.key_pair.sign(&bytes);
        Ok(SignedNote {
            note_text: note_text.to_owned(),
            attestation,
            signature_hex: hex(signature.as_ref()),
            public_key_hex: hex(self.public_key()),
        })
    }

    /// Writes signing.pub if missing; refuses to run if it names a different key, because an
    /// auditor trusting that file would then reject every note (or, worse, the key was swapped).
    fn ensure_public_key_file(&self, data_dir: &Path) -> Result<(), AttestError> {
        let path = data_dir.join(PUBLIC_KEY_FILE_NAME);
        let expected = hex(self.public_key());
        match fs::read_to_string(&path) {
            Ok(text) if text.trim() == expected => Ok(()),
            Ok(_) => Err(AttestError::PublicKeyMismatch { path }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Temp file + rename so an auditor never copies a half-written key.
                let tmp = data_dir.join(format!("{PUBLIC_KEY_FILE_NAME}.tmp"));
                let write_err = |source| AttestError::KeyCreate {
                    path: path.clone(),
                    source,
                };
                fs::write(&tmp, format!("{expected}\n")).map_err(write_err)?;
                fs::rename(&tmp, &path).map_err(write_err)
            }
            Err(source) => Err(AttestError::KeyRead { path, source }),
        }
    }
}

fn load(path: &Path) -> Result<Ed25519KeyPair, AttestError> {
    let read_err = |source| AttestError::KeyRead {
        path: path.to_path_buf(),
        source,
    };
    match check_private_file(path) {
        Ok(()) => {}
        Err(PrivateFileProblem::Read(source)) => return Err(read_err(source)),
        Err(PrivateFileProblem::NotAFile) => {
            return Err(AttestError::KeyNotAFile {
                path: path.to_path_buf(),
            })
        }
        Err(PrivateFileProblem::TooOpen { mode }) => {
            return Err(AttestError::KeyTooOpen {
                path: path.to_path_buf(),
                mode,
            })
        }
    }
    let file = fs::File::open(path).map_err(read_err)?;
    let mut der = Vec::with_capacity(MAX_KEY_FILE_LEN + 1);
    let read = file
        .take(MAX_KEY_FILE_LEN as u64 + 1)
        .read_to_end(&mut der)
        .map_err(read_err);
    let parsed = read.and_then(|_| {
        Ed25519KeyPair::from_pkcs8(&der).map_err(|_| AttestError::KeyMalformed {
            path: path.to_path_buf(),
        })
    });
    wipe(&mut der);
    parsed
}

fn create(path: &Path) -> Result<Ed25519KeyPair, AttestError> {
    let rng = SystemRandom::new();
    let document = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| AttestError::Random)?;
    let key_pair =
        Ed25519KeyPair::from_pkcs8(document.as_ref()).map_err(|_| AttestError::Random)?;
    let create_err = |source| AttestError::KeyCreate {
        path: path.to_path_buf(),
        source,
    };
    // Never overwrite a key that appeared meanwhile: notes signed with it would no longer
    // verify against the published signing.pub.
    write_new_private_file(path, document.as_ref()).map_err(create_err)?;
    // ring's pkcs8::Document gives no mutable access, so its bytes are freed unwiped; the key
    // itself lives on inside `key_pair` for the process's lifetime anyway.
    Ok(key_pair)
}

/// Reads a public key file as an auditor would pass it: 64 hex digits (signing.pub) or the
/// 32 raw bytes.
pub fn read_public_key_file(path: &Path) -> Result<Vec<u8>, AttestError> {
    let bytes = fs::read(path).map_err(|source| AttestError::PublicKeyRead {
        path: path.to_path_buf(),
        source,
    })?;
    if bytes.len() == 32 {
        return Ok(bytes);
    }
    std::str::from_utf8(&bytes)
        .ok()
        .and_then(|text| super::unhex(text.trim()))
        .filter(|key| key.len() == 32)
        .ok_or_else(|| AttestError::PublicKeyMalformed {
            path: path.to_path_buf(),
        })
}
