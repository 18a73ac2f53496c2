//! Benchmarks of the review service over real sockets and a real encrypted store: the time to
//! open a draft with 10 minutes and 1 hour of transcript, and sign-off latency, each next to
//! the obvious baseline measured in the same run (a direct store read; Ed25519 signing alone).
//!
//!   cargo bench --bench records -- [--out docs/BENCHMARKS.md] [--repeats N] [--extra FILE.md]
//!
//! With --out, the section between the `records-bench` markers of that file is replaced (or
//! appended); the Markdown is also printed.

#[path = "report/mod.rs"]
mod report;

use std::path::Path;
use std::time::{Duration, Instant};

#[path = "../tests/records_fixture/mod.rs"]
mod records_fixture;
use records_fixture::Client;

use edge_scribe::attest::{AttestationFields, Signer};
use edge_scribe::auth;
use edge_scribe::review::{self, AppState, ReviewSettings};
use edge_scribe::store::users::NewUser;
use edge_scribe::store::{Actor, Store};
use edge_scribe::transcript::Transcript;
use serde_json::{json, Value};

const MARK_START: &str = "<!-- records-bench:start -->";
const MARK_END: &str = "<!-- records-bench:end -->";
const PASSWORD: &str = "benchmark password 1";

/// ACI-Bench dialogues strung together until they hold `minutes` of speech at 130 words a
/// minute, with times spread by word count.
fn long_transcript(minutes: u32) -> Transcript {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/aci-bench");
    let rows = edge_scribe::eval::aci::load_split(&dir, "train").expect("data/aci-bench/train.csv");
    let target_words = minutes as usize * 130;
    let mut text = String::new();
    let mut words = 0;
    for row in rows.iter().cycle() {
        if words >= target_words {
            break;
        }
        for line in row
            .dialogue
            .lines()
            .filter(|l| l.trim_start().starts_with('['))
        {
            words += line.split_whitespace().count().saturating_sub(1);
            text.push_str(line.trim());
            text.push('\n');
        }
    }
    let mut transcript = Transcript::from_dialogue(&text).expect("ACI dialogues parse");
    let seconds_per_word = f64::from(minutes) * 60.0 / words as f64;
    let mut clock = 0.0;
    for segment in &mut transcript.segments {
        segment.start = clock;
        clock += segment.text.split_whitespace().count() as f64 * seconds_per_word;
        segment.end = clock;
    }
    transcript
}

fn add_encounter(store: &Store, clinician: &str, transcript: &Transcript) -> String {
    records_fixture::add_encounter(
        store,
        transcript,
        &records_fixture::EncounterSpec {
            clinician_id: clinician,
            patient_ref: None,
            audio: false,
        },
    )
}

/// GET or POST that must answer 200; the body.
fn ok(client: &mut Client, method: &str, path: &str, body: Option<Value>) -> Vec<u8> {
    let (status, _, bytes) = client.send(method, path, body.as_ref());
    assert_eq!(status, 200, "{method} {path}");
    bytes
}

/// Median and 95th percentile, in milliseconds.
fn stats(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p95 = ((samples.len() as f64 * 0.95).ceil() as usize).clamp(1, samples.len()) - 1;
    (ms(samples[samples.len() / 2]), ms(samples[p95]))
}

fn time<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let started = Instant::now();
    let out = f();
    (started.elapsed(), out)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu}, {cores} cores")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let repeats: usize = arg("--repeats").and_then(|r| r.parse().ok()).unwrap_or(20);
    let out = arg("--out");
    // Markdown from `cargo bench --bench store`, placed inside this section.
    let extra = arg("--extra").map(|path| std::fs::read_to_string(path).expect("--extra file"));

    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("store");
    let clinician = store
        .create_user(
            &NewUser {
                username: "bench".into(),
                role: "clinician".into(),
                specialty: None,
                password_hash: auth::hash_password(PASSWORD).expect("hash"),
            },
            &Actor::System,
        )
        .expect("user");
    let short = long_transcript(10);
    let long = long_transcript(60);
    let short_id = add_encounter(&store, &clinician, &short);
    let long_id = add_encounter(&store, &clinician, &long);
    let to_sign: Vec<String> = (0..repeats)
        .map(|_| add_encounter(&store, &clinician, &short))
        .collect();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let settings = ReviewSettings {
        listen: Some("127.0.0.1:0".parse().expect("addr")),
        ..ReviewSettings::default()
    };
    let state = AppState::open(
        dir.path(),
        review::ServiceConfig {
            review: settings.clone(),
            ..Default::default()
        },
    )
    .expect("state");
    let server = runtime
        .block_on(review::bind(
            settings.listen.expect("listen"),
            dir.path(),
            state,
        ))
        .expect("bind");
    let addr = server.local_addr;
    runtime.spawn(review::serve(server, std::future::pending()));
    let (login_time, mut client) = time(|| Client::login(addr, "bench", PASSWORD));

    let mut rows = Vec::new();
    for (label, id, transcript) in [("10 min", &short_id, &short), ("60 min", &long_id, &long)] {
        let words: usize = transcript
            .segments
            .iter()
            .map(|s| s.text.split_whitespace().count())
            .sum();
        let path = format!("/api/encounters/{id}");
        let bytes = ok(&mut client, "GET", &path, None).len(); // warm-up
        let api: Vec<Duration> = (0..repeats)
            .map(|_| time(|| ok(&mut client, "GET", &path, None)).0)
            .collect();
        let direct: Vec<Duration> = (0..repeats)
            .map(|_| {
                time(|| {
                    let t = store.load_transcript(id).expect("transcript");
                    let d = store.latest_draft(id).expect("draft");
                    (t.len(), d.map(|d| d.body_json.len()))
                })
                .0
            })
            .collect();
        let (api_p50, api_p95) = stats(api);
        let (direct_p50, _) = stats(direct);
        rows.push(format!(
            "| {label} | {} | {words} | {:.0} KB | {api_p50:.1} | {api_p95:.1} | {direct_p50:.1} | {:.1}× |",
            transcript.segments.len(),
            bytes as f64 / 1024.0,
            api_p50 / direct_p50.max(0.001)
        ));
    }

    let mut sign_times = Vec::new();
    for id in &to_sign {
        let path = format!("/api/encounters/{id}/sign");
        let (elapsed, _) = time(|| ok(&mut client, "POST", &path, Some(json!({"version": 0}))));
        sign_times.push(elapsed);
    }
    let signer = Signer::open(dir.path()).expect("signer");
    let signed_path = format!("/api/encounters/{}/signed", to_sign[0]);
    let note_text = String::from_utf8(ok(&mut client, "GET", &signed_path, None)).expect("utf-8");
    let ed25519: Vec<Duration> = (0..repeats)
        .map(|_| {
            time(|| {
                signer.sign(
                    &note_text,
                    AttestationFields {
                        clinician_id: clinician.clone(),
                        audio_sha256: None,
                        models: vec![],
                        template_id: "soap".into(),
                        prompt_version: "p".into(),
                        ai_statements: Default::default(),
                    },
                )
            })
            .0
        })
        .collect();
    let (sign_p50, sign_p95) = stats(sign_times);
    let (ed_p50, _) = stats(ed25519);

    let mut md = Vec::new();
    md.push(MARK_START.to_owned());
    md.push("## 5. Review service: opening a draft and signing it".into());
    md.push(String::new());
    md.push(format!(
        "Machine: {}. Command: `cargo bench --bench records -- --out docs/BENCHMARKS.md` \
         ({repeats} repeats; real HTTP on 127.0.0.1, SQLCipher store with per-encounter sealing). \
         Transcripts are ACI-Bench train dialogues strung together to 130 words a minute.",
        machine()
    ));
    md.push(String::new());
    md.push("| transcript | segments | words | answer | open via API p50 ms | p95 ms | direct store read p50 ms | API / direct |".into());
    md.push("|---|---:|---:|---:|---:|---:|---:|---:|".into());
    md.extend(rows);
    md.push(String::new());
    md.push(format!(
        "\"Open via API\" is `GET /api/encounters/{{id}}`: session check, decrypting the transcript \
         and draft, building the review view and sending it; \"direct\" reads the same rows \
         from the store with no HTTP or view. Sign-off (`POST /api/encounters/{{id}}/sign`, \
         10-minute visit): p50 {sign_p50:.1} ms, p95 {sign_p95:.1} ms, against {ed_p50:.2} ms \
         for the Ed25519 signature alone ({:.0}× — the rest is rendering, hashing, the quality \
         counts and one audited transaction). Login (Argon2id, 19 MiB, t=2): {:.0} ms.",
        sign_p50 / ed_p50.max(0.001),
        login_time.as_secs_f64() * 1000.0
    ));
    if let Some(extra) = extra {
        md.push(String::new());
        md.push(extra.trim().to_owned());
    }
    md.push(MARK_END.to_owned());
    let section = md.join("\n");
    report::publish(&section, MARK_START, MARK_END, out.as_deref());
}
