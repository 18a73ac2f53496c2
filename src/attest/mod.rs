//! Sign-off: a clinician's attestation over a final note, signed with the box's Ed25519 key, and
//! the offline check of such a signed note (`edge-scribe verify NOTE.json`).
//!
//! A [`SignedNote`] is a proof type: only [`Signer::sign`] and [`Signer::sign_addendum`] make
//! one, and reading one back from JSON goes through [`verify_signed_note`], so code that takes a
//! `SignedNote` never sees an unsigned or unchecked note. A signed note is immutable; a correction
//! is an addendum, itself signed, whose `addendum_to` is the original's `note_sha256`.
//!
//! # What is signed
//!
//! The signature is Ed25519 over these bytes:
//!
//! ```text
//! "edge-scribe/signed-note/v1\n" ++ serde_json::to_vec({"note_text": …, "attestation": {…}})
//! ```
//!
//! serde_json writes a struct's fields in declaration order, compactly, and every value here is
//! a string, a list or null (no maps, no floats), so the bytes are a pure function of the
//! values: a verifier parses the file and re-serializes to get them back. Absent optional fields
//! are written as `null`, never skipped. Renaming, reordering or retyping a field of
//! [`Attestation`] or [`SignedPayload`] changes the signed bytes: bump the tag when doing so.
//!
//! This module may not log or print note text, and its errors never carry it; key material
//! stays in [`key`].

pub mod key;

use std::time::{SystemTime, UNIX_EPOCH};

use ring::digest::{digest, SHA256};
use ring::signature::{UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};

pub use self::key::{read_public_key_file, Signer, PUBLIC_KEY_FILE_NAME, SIGNING_KEY_FILE_NAME};

/// Domain separation: these bytes can never be mistaken for another message signed by the box.
const DOMAIN_TAG: &[u8] = b"edge-scribe/signed-note/v1\n";

/// A model that took part in drafting the note, by name and the sha256 of its weights.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRef {
    pub name: String,
    pub sha256: String,
}

/// What the clinician did with the AI's statements, by statement id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AiStatements {
    pub accepted: Vec<String>,
    pub modified: Vec<String>,
    pub rejected: Vec<String>,
}

/// The clinician's statement about a final note. Field order is part of the signed format.
///
/// Holds hashes and ids only, never note text, so it may be logged or stored in the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attestation {
    pub clinician_id: String,
    /// RFC 3339 UTC with milliseconds, e.g. `2026-11-23T02:58:45.123Z`.
    pub signed_at: String,
    /// Lowercase hex SHA-256 of the note text's UTF-8 bytes.
    pub note_sha256: String,
    /// Lowercase hex SHA-256 of the source audio, when there was audio.
    pub audio_sha256: Option<String>,
    pub models: Vec<ModelRef>,
    pub template_id: String,
    pub prompt_version: String,
    pub ai_statements: AiStatements,
    /// `note_sha256` of the signed note this one corrects.
    pub addendum_to: Option<String>,
}

/// What the caller supplies when signing; the signer adds the time, the note hash and, for an
/// addendum, the link to the original.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationFields {
    pub clinician_id: String,
    pub audio_sha256: Option<String>,
    pub models: Vec<ModelRef>,
    pub template_id: String,
    pub prompt_version: String,
    pub ai_statements: AiStatements,
}

/// A note with its attestation and a signature over both. Only [`Signer`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedNote {
    note_text: String,
    attestation: Attestation,
    signature_hex: String,
    public_key_hex: String,
}

impl SignedNote {
    pub fn note_text(&self) -> &str {
        &self.note_text
    }

    pub fn attestation(&self) -> &Attestation {
        &self.attestation
    }

    pub fn signature_hex(&self) -> &str {
        &self.signature_hex
    }

    pub fn public_key_hex(&self) -> &str {
        &self.public_key_hex
    }

    /// The file format: pretty JSON with fields `note_text`, `attestation`, `signature_hex`,
    /// `public_key_hex`.
    pub fn to_json(&self) -> Result<String, AttestError> {
        serde_json::to_string_pretty(&SignedNoteFileRef {
            note_text: &self.note_text,
            attestation: &self.attestation,
            signature_hex: &self.signature_hex,
            public_key_hex: &self.public_key_hex,
        })
        .map_err(|_| AttestError::Encode)
    }
}

/// A signed note read from outside whose hash, signature and (if asked) key were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedNote {
    note: SignedNote,
}

impl VerifiedNote {
    pub fn signed_note(&self) -> &SignedNote {
        &self.note
    }

    pub fn into_signed_note(self) -> SignedNote {
        self.note
    }

    pub fn attestation(&self) -> &Attestation {
        &self.note.attestation
    }

    pub fn note_text(&self) -> &str {
        &self.note.note_text
    }
}

/// What can go wrong while signing or verifying. No variant carries note text or key bytes.
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    #[error(
        "the signing key {path} can be read by group or others (mode {mode:03o}); anyone who \
         read it could forge signed notes. Run `chmod 600 {path}`, make sure it is owned by the \
         edge-scribe service user, and find out how it became readable"
    )]
    KeyTooOpen { path: std::path::PathBuf, mode: u32 },

    #[error(
        "the signing key {path} is not a regular file; restore signing.key from your backup \
         (a symlink or directory is not accepted)"
    )]
    KeyNotAFile { path: std::path::PathBuf },

    #[error(
        "the signing key {path} is not a PKCS#8 Ed25519 key; restore signing.key from your \
         backup (a new key would not match the signing.pub auditors already hold)"
    )]
    KeyMalformed { path: std::path::PathBuf },

    #[error("could not read {path}: {source}; check that the service user owns it")]
    KeyRead {
        path: std::path::PathBuf,
        source: std::io::Error,
    },

    #[error(
        "could not create {path}: {source}; check that the data directory exists and that the \
         service user may write to it"
    )]
    KeyCreate {
        path: std::path::PathBuf,
        source: std::io::Error,
    },

    #[error(
        "{path} does not hold the public key of signing.key next to it; one of the two was \
         replaced. Restore both from the same backup before signing anything"
    )]
    PublicKeyMismatch { path: std::path::PathBuf },

    #[error("the operating system's random number generator failed; check the kernel log")]
    Random,

    #[error("could not encode the signed note as JSON; this is a bug, please report it")]
    Encode,

    #[error("could not read the public key file {path}: {source}")]
    PublicKeyRead {
        path: std::path::PathBuf,
        source: std::io::Error,
    },

    #[error(
        "the public key file {path} holds neither 64 hex digits nor 32 raw bytes; pass the \
         box's signing.pub"
    )]
    PublicKeyMalformed { path: std::path::PathBuf },

    #[error("not a signed note file: {detail}")]
    Malformed { detail: String },

    #[error(
        "hash mismatch: the note text does not match the note_sha256 it was signed with; the \
         note was changed after signing"
    )]
    HashMismatch,

    #[error(
        "bad signature: the signature does not verify under the embedded public key; the note \
         or its attestation was changed after signing"
    )]
    BadSignature,

    #[error(
        "untrusted key: the note was signed by key {embedded_prefix}…, not by the trusted \
         public key given; it was not signed by this box"
    )]
    UntrustedKey { embedded_prefix: String },
}

/// The signed bytes' JSON part; field order is part of the format.
#[derive(Serialize)]
struct SignedPayload<'a> {
    note_text: &'a str,
    attestation: &'a Attestation,
}

#[derive(Serialize)]
struct SignedNoteFileRef<'a> {
    note_text: &'a str,
    attestation: &'a Attestation,
    signature_hex: &'a str,
    public_key_hex: &'a str,
}

/// The file as read; private so that deserializing never yields a `SignedNote` unchecked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignedNoteFile {
    note_text: String,
    attestation: Attestation,
    signature_hex: String,
    public_key_hex: String,
}

/// The exact bytes the signature covers (see the module doc).
fn signed_bytes(note_text: &str, attestation: &Attestation) -> Result<Vec<u8>, AttestError> {
    let mut bytes = DOMAIN_TAG.to_vec();
    serde_json::to_writer(
        &mut bytes,
        &SignedPayload {
            note_text,
            attestation,
        },
    )
    .map_err(|_| AttestError::Encode)?;
    Ok(bytes)
}

/// Checks a signed note file: well-formed, signed by `trusted_public_key` when one is given
/// (raw 32 bytes), note text matching its hash, and signature valid under the embedded key.
pub fn verify_signed_note(
    json: &str,
    trusted_public_key: Option<&[u8]>,
) -> Result<VerifiedNote, AttestError> {
    let file: SignedNoteFile = serde_json::from_str(json).map_err(|e| AttestError::Malformed {
        // serde_json's own message may quote the input (note text); keep position and category.
        detail: format!(
            "line {}, column {}: {}",
            e.line(),
            e.column(),
            match e.classify() {
                serde_json::error::Category::Io => "read error",
                serde_json::error::Category::Syntax => "invalid JSON",
                serde_json::error::Category::Data =>
                    "JSON of the wrong shape (expected note_text, attestation, signature_hex, \
                     public_key_hex)",
                serde_json::error::Category::Eof => "the JSON ends early",
            }
        ),
    })?;
    let public_key = unhex(&file.public_key_hex)
        .filter(|k| k.len() == 32)
        .ok_or_else(|| AttestError::Malformed {
            detail: "public_key_hex is not 64 hex digits".to_owned(),
        })?;
    let signature = unhex(&file.signature_hex)
        .filter(|s| s.len() == 64)
        .ok_or_else(|| AttestError::Malformed {
            detail: "signature_hex is not 128 hex digits".to_owned(),
        })?;
    if let Some(trusted) = trusted_public_key {
        // Public keys are not secret, so a plain comparison is fine.
        if trusted != public_key.as_slice() {
            return Err(AttestError::UntrustedKey {
                embedded_prefix: file.public_key_hex.chars().take(16).collect(),
            });
        }
    }
    // Checked before the signature so that the common tampering, an edited note, is named.
    if sha256_hex(file.note_text.as_bytes()) != file.attestation.note_sha256 {
        return Err(AttestError::HashMismatch);
    }
    let bytes = signed_bytes(&file.note_text, &file.attestation)?;
    UnparsedPublicKey::new(&ED25519, &public_key)
        .verify(&bytes, &signature)
        .map_err(|_| AttestError::BadSignature)?;
    Ok(VerifiedNote {
        note: SignedNote {
            note_text: file.note_text,
            attestation: file.attestation,
            signature_hex: file.signature_hex,
            public_key_hex: file.public_key_hex,
        },
    })
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(digest(&SHA256, bytes).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(2 * bytes.len());
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Decodes lowercase or uppercase hex; `None` if `s` is not an even number of hex digits.
fn unhex(s: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.as_bytes()
        .chunks_exact(2)
        .map(|pair| Some((nibble(pair[0])? << 4) | nibble(pair[1])?))
        .collect()
}

/// `time` as RFC 3339 UTC with milliseconds. Times before 1970 (a broken clock) print as the
/// epoch rather than failing a sign-off.
fn rfc3339_utc(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days: days since 1970-01-01 → proleptic Gregorian date.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests;
