//! Write-back benchmarks against the real peers of `scripts/peers`: sign-off to confirmed in
//! chart at a steady 10 notes a second (p50/p99), and the throughput ceiling when a backlog
//! drains, FHIR (transaction + read-back) next to HL7 MLLP on the same notes.
//!
//!   cargo bench --bench sync -- [--out docs/BENCHMARKS.md] [--seconds 30] [--backlog 300]

#[path = "report/mod.rs"]
mod report;

#[path = "../tests/records_fixture/mod.rs"]
mod records_fixture;
#[path = "../tests/sync_support/mod.rs"]
mod sync_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edge_scribe::attest::Signer;
use edge_scribe::config::{DestinationKind, DestinationSettings, SyncSettings};
use edge_scribe::store::outbox::DeliveryState;
use edge_scribe::store::users::NewUser;
use edge_scribe::store::{Actor, Store};

const MARK_START: &str = "<!-- sync-bench:start -->";
const MARK_END: &str = "<!-- sync-bench:end -->";

fn destination(name: &str, kind: DestinationKind, target: &str) -> DestinationSettings {
    DestinationSettings {
        name: name.into(),
        kind,
        url: (kind == DestinationKind::Fhir).then(|| target.to_owned()),
        address: (kind == DestinationKind::Hl7).then(|| target.to_owned()),
        tls: None,
        server_name: None,
        timeout: Duration::from_secs(5),
        max_attempts: 100,
        backoff_base: Duration::from_millis(50),
        backoff_max: Duration::from_secs(2),
        read_back: true,
        document_system: "urn:edge-scribe:note".into(),
        patient_system: "urn:clinic:mrn".into(),
    }
}

struct Bench {
    dir: tempfile::TempDir,
    store: Store,
    signer: Signer,
    clinician: String,
    encounters: Vec<String>,
}

fn setup(n: usize) -> Bench {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("store");
    let clinician = store
        .create_user(
            &NewUser {
                username: "dr-bench".into(),
                role: "clinician".into(),
                specialty: None,
                password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$aGFzaA".into(),
            },
            &Actor::System,
        )
        .expect("user");
    let transcript = edge_scribe::transcript::Transcript::from_dialogue(
        "[doctor] your blood pressure is one thirty over eighty .\n[patient] okay .\n",
    )
    .expect("dialogue");
    let encounters = (0..n)
        .map(|i| {
            records_fixture::add_encounter(
                &store,
                &transcript,
                &records_fixture::EncounterSpec {
                    clinician_id: &clinician,
                    patient_ref: Some(&format!("MRN-{i:05}")),
                    audio: false,
                },
            )
        })
        .collect();
    let signer = Signer::open(dir.path()).expect("signer");
    Bench {
        dir,
        store,
        signer,
        clinician,
        encounters,
    }
}

impl Bench {
    fn sign(&self, i: usize, destinations: &[String]) {
        let text = format!(
            "Subjective:\nVisit {i}: cough for 5 days, no fever.\n\nAssessment:\nViral bronchitis.\n\
             \nPlan:\nFluids, rest, return if short of breath.\n"
        );
        sync_support::sign(
            &self.store,
            &self.signer,
            &self.encounters[i],
            &self.clinician,
            &text,
            None,
            destinations,
        );
    }

    fn start_sender(
        &self,
        settings: SyncSettings,
    ) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
        let stop = Arc::new(AtomicBool::new(false));
        let (data, key, stop_c) = (
            self.dir.path().to_owned(),
            self.signer.public_key().to_vec(),
            stop.clone(),
        );
        let handle = std::thread::spawn(move || {
            let store = Store::open(&data).expect("store");
            edge_scribe::sync::run_sender(&store, &settings, &key, &stop_c).expect("sender");
        });
        (stop, handle)
    }

    fn pending(&self) -> usize {
        self.store
            .outbox_items(None, 100_000)
            .expect("outbox")
            .iter()
            .filter(|i| i.state != DeliveryState::Confirmed)
            .count()
    }

    fn wait_drained(&self, limit: Duration) {
        let started = Instant::now();
        while self.pending() > 0 && started.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(self.pending(), 0, "the outbox did not drain");
    }

    /// Milliseconds from queueing (sign-off) to confirmed, per item.
    fn latencies(&self) -> Vec<i64> {
        let mut l: Vec<i64> = self
            .store
            .outbox_items(None, 100_000)
            .expect("outbox")
            .iter()
            .filter_map(|i| i.confirmed_ms.map(|c| c - i.created_ms))
            .collect();
        l.sort_unstable();
        l
    }
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let seconds: usize = arg("--seconds").and_then(|s| s.parse().ok()).unwrap_or(30);
    let backlog: usize = arg("--backlog").and_then(|s| s.parse().ok()).unwrap_or(300);
    let out = arg("--out");
    let peers = sync_support::Peers::start();
    let fhir = peers.get("fhir_base");
    let mllp = peers.get("mllp_plain");

    // 1. Steady load: one note signed every 100 ms, the sender running beside it.
    let rate = 10;
    let steady = setup(seconds * rate);
    let names = vec!["ehr".to_owned()];
    let (stop, sender) = steady.start_sender(SyncSettings {
        poll_interval: Duration::from_millis(10),
        destinations: vec![destination("ehr", DestinationKind::Fhir, &fhir)],
    });
    let started = Instant::now();
    for i in 0..seconds * rate {
        let due = Duration::from_millis(i as u64 * 1000 / rate as u64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
        steady.sign(i, &names);
    }
    steady.wait_drained(Duration::from_secs(120));
    stop.store(true, Ordering::SeqCst);
    sender.join().expect("sender thread");
    let l = steady.latencies();
    let (p50, p99, max) = (percentile(&l, 0.5), percentile(&l, 0.99), l[l.len() - 1]);

    // 2. Ceiling: a backlog signed at once, drained by FHIR and by HL7 on the same notes.
    let mut ceilings = Vec::new();
    for (label, kind, target) in [
        (
            "FHIR R4 transaction + read-back (sekmet-fhir)",
            DestinationKind::Fhir,
            fhir.as_str(),
        ),
        (
            "HL7 v2 MDM^T02 over MLLP (python-hl7 receiver)",
            DestinationKind::Hl7,
            mllp.as_str(),
        ),
    ] {
        let bench = setup(backlog);
        let names = vec!["d".to_owned()];
        for i in 0..backlog {
            bench.sign(i, &names);
        }
        let started = Instant::now();
        let (stop, sender) = bench.start_sender(SyncSettings {
            poll_interval: Duration::from_millis(10),
            destinations: vec![destination("d", kind, target)],
        });
        bench.wait_drained(Duration::from_secs(600));
        let took = started.elapsed();
        stop.store(true, Ordering::SeqCst);
        sender.join().expect("sender thread");
        ceilings.push((label, backlog as f64 / took.as_secs_f64(), took));
    }

    let mut md = vec![
        MARK_START.to_owned(),
        "## 6. Write-back: sign-off to confirmed in chart".into(),
        String::new(),
        format!(
            "Command: `cargo bench --bench sync -- --out docs/BENCHMARKS.md` ({seconds} s at \
             {rate} notes/s, backlog {backlog}). Peers from `scripts/peers` on this machine; \
             one sender thread; \"confirmed\" means the transaction was accepted **and** the \
             DocumentReference read back with the right content hash."
        ),
        String::new(),
        "| load | notes | p50 | p99 | max | issue target |".into(),
        "|---|---:|---:|---:|---:|---|".into(),
        format!(
            "| steady {rate} notes/s, FHIR | {} | {p50} ms | {p99} ms | {max} ms | p50 ≤ 1 s, p99 ≤ 2 s |",
            l.len()
        ),
        String::new(),
        "| backlog drained by | throughput | time |".into(),
        "|---|---:|---:|".into(),
    ];
    for (label, per_s, took) in &ceilings {
        md.push(format!(
            "| {label} | {per_s:.1} notes/s | {:.1} s |",
            took.as_secs_f64()
        ));
    }
    md.push(String::new());
    md.push(format!(
        "Against seed 003's cloud path (median 12 s, p99 22 s, 30 s ceiling): the box has no \
         client→gateway hop (their T+200 ms), no gateway validation pass (T+500 ms) and no \
         10 s acknowledgement wait before a retry starts: it talks to the EHR directly, sends \
         as soon as the note is signed (outbox polled every 10 ms) and retries after a \
         timeout of its own choosing. Here that gives a median of {p50} ms ({:.0}× faster than \
         12 s) and a p99 of {p99} ms ({:.0}× faster than 22 s); the EHR's own write time \
         (their T+1–8 s) is what remains, here a local server.",
        12_000.0 / p50.max(1) as f64,
        22_000.0 / p99.max(1) as f64
    ));
    md.push(MARK_END.to_owned());
    let section = md.join("\n");
    report::publish(&section, MARK_START, MARK_END, out.as_deref());
}
