//! Storage cost of encryption: one hour of transcript (1,200 segments) saved and loaded through
//! (a) the store (SQLCipher pages + per-encounter AES-GCM sealing + audit entry), (b) the same
//! SQL on a SQLCipher connection without sealing, (c) the same SQL on plain SQLite; and one
//! hour of 16 kHz audio saved and read back through the store. Prints a markdown section.
//!
//!     CARGO_TARGET_DIR=... cargo test --release --bench store            # default 7 repeats
//!     BENCH_REPEATS=15 cargo test --release --bench store

use std::time::{Duration, Instant};

use edge_scribe::store::{NewEncounter, Store, StoredSegment};
use rusqlite::{params, Connection};

const SEGMENTS: usize = 1_200;
const AUDIO_SECONDS: usize = 3_600;

fn transcript() -> Vec<StoredSegment> {
    // ~3 s per segment, ~8 words each: a one-hour visit's worth.
    (0..SEGMENTS)
        .map(|i| StoredSegment {
            id: format!("s{}", i + 1),
            start_ms: i as i64 * 3_000,
            end_ms: i as i64 * 3_000 + 2_800,
            speaker: Some(if i % 2 == 0 { "clinician" } else { "patient" }.to_owned()),
            text: format!("and the pain started about {i} days ago, mostly after meals"),
            confidence: Some(0.9),
            overlap: false,
            speaker_corrected: false,
            original_speaker: None,
        })
        .collect()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The transcript table of the store, with the text in clear (no sealing).
fn plain_connection(path: &std::path::Path, key: Option<&str>) -> Connection {
    let conn = Connection::open(path).unwrap();
    if let Some(hex) = key {
        conn.execute_batch(&format!("PRAGMA key = \"x'{hex}'\";"))
            .unwrap();
    }
    conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))
        .unwrap();
    conn.execute_batch(
        "PRAGMA foreign_keys = ON; PRAGMA secure_delete = ON;
         CREATE TABLE encounters (id TEXT PRIMARY KEY NOT NULL) STRICT;
         CREATE TABLE transcript_segments (
            encounter_id TEXT NOT NULL REFERENCES encounters (id) ON DELETE CASCADE,
            seq INTEGER NOT NULL, id TEXT NOT NULL, start_ms INTEGER NOT NULL,
            end_ms INTEGER NOT NULL, speaker TEXT, text TEXT NOT NULL, confidence REAL,
            PRIMARY KEY (encounter_id, id), UNIQUE (encounter_id, seq)) STRICT;
         INSERT INTO encounters (id) VALUES ('e1');",
    )
    .unwrap();
    conn
}

fn save_load_plain(conn: &Connection, segments: &[StoredSegment]) -> (Duration, Duration) {
    let t = Instant::now();
    conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    conn.execute(
        "DELETE FROM transcript_segments WHERE encounter_id = 'e1'",
        [],
    )
    .unwrap();
    {
        let mut insert = conn
            .prepare(
                "INSERT INTO transcript_segments
                 (encounter_id, seq, id, start_ms, end_ms, speaker, text, confidence)
                 VALUES ('e1', ?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .unwrap();
        for (seq, s) in (0i64..).zip(segments) {
            insert
                .execute(params![
                    seq,
                    s.id,
                    s.start_ms,
                    s.end_ms,
                    s.speaker,
                    s.text,
                    s.confidence
                ])
                .unwrap();
        }
    }
    conn.execute_batch("COMMIT").unwrap();
    let saved = t.elapsed();
    let t = Instant::now();
    let mut stmt = conn
        .prepare(
            "SELECT id, start_ms, end_ms, speaker, text, confidence FROM transcript_segments
             WHERE encounter_id = 'e1' ORDER BY seq",
        )
        .unwrap();
    let loaded: Vec<StoredSegment> = stmt
        .query_map([], |r| {
            Ok(StoredSegment {
                id: r.get(0)?,
                start_ms: r.get(1)?,
                end_ms: r.get(2)?,
                speaker: r.get(3)?,
                text: r.get(4)?,
                confidence: r.get(5)?,
                overlap: false,
                speaker_corrected: false,
                original_speaker: None,
            })
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(loaded.len(), segments.len());
    (saved, t.elapsed())
}

fn main() {
    // `cargo test --bench` passes harness flags; they mean nothing here.
    let repeats: usize = std::env::var("BENCH_REPEATS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let segments = transcript();
    let dir = tempfile::tempdir().unwrap();

    // (a) the store
    let store = Store::open(&dir.path().join("store")).unwrap();
    let id = store
        .create_encounter(&NewEncounter {
            source_kind: "file".to_owned(),
            consent: true,
            ..NewEncounter::default()
        })
        .unwrap();
    let (mut a_save, mut a_load) = (Vec::new(), Vec::new());
    for _ in 0..repeats {
        let t = Instant::now();
        store.save_transcript(&id, &segments).unwrap();
        a_save.push(t.elapsed());
        let t = Instant::now();
        assert_eq!(store.load_transcript(&id).unwrap().len(), SEGMENTS);
        a_load.push(t.elapsed());
    }

    // (b) SQLCipher only, (c) plain SQLite
    let key = "7f".repeat(32);
    let cipher = plain_connection(&dir.path().join("cipher.db"), Some(&key));
    let plain = plain_connection(&dir.path().join("plain.db"), None);
    let (mut b_save, mut b_load, mut c_save, mut c_load) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..repeats {
        let (s, l) = save_load_plain(&cipher, &segments);
        b_save.push(s);
        b_load.push(l);
        let (s, l) = save_load_plain(&plain, &segments);
        c_save.push(s);
        c_load.push(l);
    }
    let rows = [
        (
            "(a) SQLCipher + per-encounter sealing (the store)",
            median(a_save),
            median(a_load),
        ),
        ("(b) SQLCipher, no sealing", median(b_save), median(b_load)),
        ("(c) plain SQLite", median(c_save), median(c_load)),
    ];

    // Audio: one hour through the store.
    let audio: Vec<i16> = (0..AUDIO_SECONDS * 16_000)
        .map(|i| (i % 4_000) as i16)
        .collect();
    let audio_repeats = repeats.clamp(1, 3);
    let (mut au_save, mut au_span, mut au_all) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..audio_repeats {
        let t = Instant::now();
        store.save_audio(&id, &audio).unwrap();
        au_save.push(t.elapsed());
        let t = Instant::now();
        for k in 0..20i64 {
            // 4 s statements spread over the hour, some across a chunk boundary.
            let start = k * 177_000 + 8_000;
            assert_eq!(
                store
                    .load_audio_span(&id, start, start + 4_000)
                    .unwrap()
                    .len(),
                64_000
            );
        }
        au_span.push(t.elapsed() / 20);
        let t = Instant::now();
        let all = store
            .load_audio_span(&id, 0, AUDIO_SECONDS as i64 * 1_000)
            .unwrap();
        assert_eq!(all.len(), audio.len());
        au_all.push(t.elapsed());
    }
    let audio_mb = (audio.len() * 2) as f64 / 1e6;

    println!("### Storage: cost of encryption\n");
    println!(
        "One hour of transcript ({SEGMENTS} segments, {} kB of text) replaced and read back; \
         median of {repeats}. Same SQL, WAL, `secure_delete` on in all three; (a) also \
         appends the audit entry.\n",
        segments.iter().map(|s| s.text.len()).sum::<usize>() / 1000
    );
    println!("| variant | save (ms) | load (ms) | save × (c) | load × (c) |");
    println!("|---|---:|---:|---:|---:|");
    let (c_s, c_l) = (ms(rows[2].1), ms(rows[2].2));
    for (name, s, l) in &rows {
        println!(
            "| {name} | {:.1} | {:.1} | {:.2} | {:.2} |",
            ms(*s),
            ms(*l),
            ms(*s) / c_s,
            ms(*l) / c_l
        );
    }
    println!(
        "\nSealing on top of SQLCipher: save ×{:.2}, load ×{:.2}. SQLCipher on top of SQLite: \
         save ×{:.2}, load ×{:.2}.\n",
        ms(rows[0].1) / ms(rows[1].1),
        ms(rows[0].2) / ms(rows[1].2),
        ms(rows[1].1) / c_s,
        ms(rows[1].2) / c_l
    );
    println!(
        "One hour of 16 kHz mono audio ({audio_mb:.0} MB, 360 sealed 10 s chunks), median of \
         {audio_repeats}: save {:.0} ms ({:.0} MB/s); a 4 s evidence span {:.1} ms; the whole \
         hour {:.0} ms.",
        ms(median(au_save.clone())),
        audio_mb / median(au_save).as_secs_f64(),
        ms(median(au_span)),
        ms(median(au_all))
    );
}
