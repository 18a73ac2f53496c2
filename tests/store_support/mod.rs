//! Raw readers for the storage acceptance tests: a byte scan of every file under a directory,
//! and an independent SQLCipher 4 page decryptor, so a test can look at what is really on disk
//! instead of trusting the code under test. Use with `mod store_support;`.
//!
//! The decryptor assumes SQLCipher 4 defaults with a raw 32-byte key (`PRAGMA key = "x'..'"`,
//! as `src/store/key.rs` issues it): no PBKDF2 for the encryption key, 4096-byte pages, 80
//! reserved bytes per page (16-byte IV, then the 64-byte HMAC-SHA512, which is not checked
//! here), AES-256-CBC over the rest, and page 1's first 16 bytes hold the salt in clear.

// Each integration test is its own crate and uses a different subset of these helpers.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use aes::cipher::{block_padding::NoPadding, BlockDecryptMut, KeyIvInit};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use rusqlite::Connection;

/// SQLCipher 4's default page size and per-page reserve.
pub const PAGE_SIZE: usize = 4096;
const RESERVE: usize = 80;
const IV_LEN: usize = 16;
const SALT_LEN: usize = 16;
const WAL_HEADER: usize = 32;
const WAL_FRAME_HEADER: usize = 24;

/// One needle found in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawHit {
    /// Index of the needle in the list given.
    pub needle: usize,
    pub file: PathBuf,
    /// `utf-8`, `utf-16le` or `utf-16be` (`bytes` for [`raw_files_contain_bytes`]).
    pub encoding: &'static str,
    pub offset: usize,
}

/// Every regular file under `dir` (recursively; symlinks are not followed).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    out
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > haystack.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn utf16(s: &str, big_endian: bool) -> Vec<u8> {
    s.encode_utf16()
        .flat_map(|u| {
            if big_endian {
                u.to_be_bytes()
            } else {
                u.to_le_bytes()
            }
        })
        .collect()
}

/// Reads every file under `dir` byte-wise (database, -wal, -shm, keys, logs, anything) and
/// reports each needle found, in UTF-8 and in UTF-16 (LE and BE). Empty means none was found.
pub fn raw_files_contain(dir: &Path, needles: &[&str]) -> Vec<RawHit> {
    let mut hits = Vec::new();
    for file in files_under(dir) {
        let Ok(bytes) = fs::read(&file) else { continue };
        for (i, needle) in needles.iter().enumerate() {
            let forms = [
                ("utf-8", needle.as_bytes().to_vec()),
                ("utf-16le", utf16(needle, false)),
                ("utf-16be", utf16(needle, true)),
            ];
            for (encoding, form) in forms {
                if let Some(offset) = find(&bytes, &form) {
                    hits.push(RawHit {
                        needle: i,
                        file: file.clone(),
                        encoding,
                        offset,
                    });
                }
            }
        }
    }
    hits
}

/// Like [`raw_files_contain`] for binary needles (keys, sealed values), as they are.
pub fn raw_files_contain_bytes(dir: &Path, needles: &[&[u8]]) -> Vec<RawHit> {
    let mut hits = Vec::new();
    for file in files_under(dir) {
        let Ok(bytes) = fs::read(&file) else { continue };
        for (i, needle) in needles.iter().enumerate() {
            if let Some(offset) = find(&bytes, needle) {
                hits.push(RawHit {
                    needle: i,
                    file: file.clone(),
                    encoding: "bytes",
                    offset,
                });
            }
        }
    }
    hits
}

/// Decrypts one SQLCipher page (`page_no` counts from 1). Page 1 comes back with SQLite's
/// header string in place of the salt, like a plain SQLite page; the reserve is dropped.
pub fn decrypt_page(page: &[u8], page_no: u32, key: &[u8; 32]) -> Vec<u8> {
    assert_eq!(page.len(), PAGE_SIZE, "not a whole page");
    let iv = &page[PAGE_SIZE - RESERVE..PAGE_SIZE - RESERVE + IV_LEN];
    let offset = if page_no == 1 { SALT_LEN } else { 0 };
    let mut buf = page[offset..PAGE_SIZE - RESERVE].to_vec();
    cbc::Decryptor::<aes::Aes256>::new(key.into(), iv.into())
        .decrypt_padded_mut::<NoPadding>(&mut buf)
        .expect("page length is a multiple of the AES block");
    let mut out = Vec::with_capacity(PAGE_SIZE);
    if page_no == 1 {
        out.extend_from_slice(b"SQLite format 3\0");
    }
    out.extend_from_slice(&buf);
    out
}

/// Every page of a SQLCipher main database file, decrypted, in file order.
pub fn decrypt_database_file(bytes: &[u8], key: &[u8; 32]) -> Vec<Vec<u8>> {
    bytes
        .chunks_exact(PAGE_SIZE)
        .zip(1u32..)
        .map(|(page, no)| decrypt_page(page, no, key))
        .collect()
}

/// Every frame's page of a WAL file (SQLCipher encrypts WAL frames like database pages),
/// decrypted, in file order; frame headers give the page numbers.
pub fn decrypt_wal_file(bytes: &[u8], key: &[u8; 32]) -> Vec<Vec<u8>> {
    let mut pages = Vec::new();
    let mut at = WAL_HEADER;
    while at + WAL_FRAME_HEADER + PAGE_SIZE <= bytes.len() {
        let page_no = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
        let page = &bytes[at + WAL_FRAME_HEADER..at + WAL_FRAME_HEADER + PAGE_SIZE];
        pages.push(decrypt_page(page, page_no, key));
        at += WAL_FRAME_HEADER + PAGE_SIZE;
    }
    pages
}

/// The decrypted content of the database file and its WAL in `dir` (named `db_name`), each
/// page whole, so a needle never straddles two unrelated pages.
pub fn decrypted_pages(dir: &Path, db_name: &str, key: &[u8; 32]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    if let Ok(main) = fs::read(dir.join(db_name)) {
        for (i, page) in decrypt_database_file(&main, key).into_iter().enumerate() {
            out.push((format!("{db_name} page {}", i + 1), page));
        }
    }
    if let Ok(wal) = fs::read(dir.join(format!("{db_name}-wal"))) {
        for (i, page) in decrypt_wal_file(&wal, key).into_iter().enumerate() {
            out.push((format!("{db_name}-wal frame {}", i + 1), page));
        }
    }
    out
}

pub fn decode_hex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

pub fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---- the store's key files, read independently of the store ----

/// The associated data as the store builds it: domain, then each part with a u32 BE length.
pub fn aad(domain: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut out = domain.to_vec();
    for p in parts {
        out.extend_from_slice(&(p.len() as u32).to_be_bytes());
        out.extend_from_slice(p);
    }
    out
}

/// Opens `version | nonce | ciphertext | tag` with AES-256-GCM.
pub fn gcm_open(key: &[u8], aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    assert_eq!(sealed[0], 1, "sealed value version");
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).unwrap());
    let nonce = Nonce::try_assume_unique_for_key(&sealed[1..13]).unwrap();
    let mut buf = sealed[13..].to_vec();
    let len = key
        .open_in_place(nonce, Aad::from(aad), &mut buf)
        .ok()?
        .len();
    buf.truncate(len);
    Some(buf)
}

pub fn master_key(dir: &Path) -> Vec<u8> {
    decode_hex(fs::read_to_string(dir.join("master.key")).unwrap().trim())
}

/// The SQLCipher page key, unwrapped from database.key with the master key.
pub fn database_key(dir: &Path) -> [u8; 32] {
    let text = fs::read_to_string(dir.join("database.key")).unwrap();
    let words: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(words[..2], ["edge-scribe-database-key", "v1"]);
    let kek_id = words[2];
    let plain = gcm_open(
        &master_key(dir),
        &aad(b"edge-scribe/database-key/v1", &[kek_id.as_bytes()]),
        &decode_hex(words[3]),
    )
    .expect("database.key opens with master.key");
    plain.try_into().unwrap()
}

/// A connection to a store database (`<dir>/edge-scribe.db`) keyed the way the store keys it,
/// for tests that look at or tamper with rows as someone holding the key files could.
pub fn keyed_conn(path: &Path, key: &[u8; 32]) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(&format!("PRAGMA key = \"x'{}'\";", encode_hex(key)))
        .unwrap();
    conn
}

/// [`keyed_conn`] for the database in a data directory, with the key from its key files.
pub fn raw_store_conn(data_dir: &Path) -> Connection {
    keyed_conn(&data_dir.join("edge-scribe.db"), &database_key(data_dir))
}
