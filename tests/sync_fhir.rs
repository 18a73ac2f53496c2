//! Write-back to a real FHIR R4 server (sekmet-fhir, started by scripts/peers) under faults:
//! lost responses, slow responses, refused connections, 429 storms behind nginx, the server
//! stopped for a while, mutual TLS, and the sender killed with SIGKILL mid-send. After each, the
//! server holds exactly one DocumentReference per signed note with the right content, and the
//! outbox is empty. Every bundle the box emits is checked by Medplum's validator and the
//! official R4 JSON schema.

mod common;
mod records_fixture;
mod sync_support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use edge_scribe::attest::Signer;
use edge_scribe::config::{DestinationKind, DestinationSettings, SyncSettings};
use edge_scribe::store::outbox::DeliveryState;
use edge_scribe::store::users::NewUser;
use edge_scribe::store::{Actor, Store};
use edge_scribe::sync;
use serde_json::Value;
use sync_support::{Fault, FaultProxy, Peers};

const SYSTEM: &str = "urn:edge-scribe:note";

fn destination(url: &str) -> DestinationSettings {
    DestinationSettings {
        name: "ehr".into(),
        kind: DestinationKind::Fhir,
        url: Some(url.trim_end_matches('/').to_owned()),
        address: None,
        tls: None,
        server_name: None,
        timeout: Duration::from_secs(2),
        max_attempts: 1000,
        backoff_base: Duration::from_millis(50),
        backoff_max: Duration::from_secs(2),
        read_back: true,
        document_system: SYSTEM.into(),
        patient_system: "urn:clinic:mrn".into(),
    }
}

/// A store with a clinician and `n` encounters with transcripts and drafts.
struct Box_ {
    dir: tempfile::TempDir,
    store: Store,
    signer: Signer,
    clinician: String,
    encounters: Vec<String>,
}

fn new_box(n: usize) -> Box_ {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let clinician = store
        .create_user(
            &NewUser {
                username: "dr-sync".into(),
                role: "clinician".into(),
                specialty: None,
                password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$aGFzaA".into(),
            },
            &Actor::System,
        )
        .unwrap();
    let transcript = edge_scribe::transcript::Transcript::from_dialogue(
        "[doctor] your blood pressure is one thirty over eighty .\n[patient] okay .\n",
    )
    .unwrap();
    let encounters = (0..n)
        .map(|i| {
            records_fixture::add_encounter(
                &store,
                &transcript,
                &records_fixture::EncounterSpec {
                    clinician_id: &clinician,
                    patient_ref: Some(&format!("MRN-{i:04}")),
                    audio: false,
                },
            )
        })
        .collect();
    let signer = Signer::open(dir.path()).unwrap();
    Box_ {
        dir,
        store,
        signer,
        clinician,
        encounters,
    }
}

fn note_text(i: usize) -> String {
    format!("Subjective:\nVisit {i}: blood pressure 130/80.\n\nPlan:\nRecheck in 4 weeks.\n")
}

impl Box_ {
    fn sign_all(&self, destinations: &[String]) {
        for (i, e) in self.encounters.iter().enumerate() {
            sync_support::sign(
                &self.store,
                &self.signer,
                e,
                &self.clinician,
                &note_text(i),
                None,
                destinations,
            );
        }
    }

    /// Runs the sender on its own connection until nothing is queued, sending or awaiting
    /// read-back, or `limit` passes.
    fn drain(&self, settings: &SyncSettings, limit: Duration) -> Duration {
        let stop = Arc::new(AtomicBool::new(false));
        let data = self.dir.path().to_owned();
        let (settings_c, stop_c) = (settings.clone(), stop.clone());
        let key = self.signer.public_key().to_vec();
        let sender = std::thread::spawn(move || {
            let store = Store::open(&data).unwrap();
            sync::run_sender(&store, &settings_c, &key, &stop_c)
        });
        let started = Instant::now();
        while started.elapsed() < limit && self.pending() > 0 {
            std::thread::sleep(Duration::from_millis(50));
        }
        stop.store(true, Ordering::SeqCst);
        sender.join().unwrap().unwrap();
        started.elapsed()
    }

    fn pending(&self) -> u64 {
        self.store
            .outbox_counts()
            .unwrap()
            .iter()
            .filter(|(s, _)| {
                matches!(
                    s,
                    DeliveryState::Queued | DeliveryState::Sending | DeliveryState::Sent
                )
            })
            .map(|(_, n)| n)
            .sum()
    }

    fn states(&self) -> Vec<(String, DeliveryState, Option<String>)> {
        self.store
            .outbox_items(None, 10_000)
            .unwrap()
            .into_iter()
            .map(|i| (i.business_id, i.state, i.last_status))
            .collect()
    }
}

fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent()
}

/// The DocumentReferences the server holds for a business id.
fn documents(base: &str, business_id: &str) -> Vec<Value> {
    let url = format!("{base}/DocumentReference?identifier={SYSTEM}%7C{business_id}");
    let mut response = http().get(&url).call().unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let bundle: Value =
        serde_json::from_slice(&response.body_mut().read_to_vec().unwrap()).unwrap();
    bundle["entry"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|e| e["resource"].clone())
        .collect()
}

fn attachment_text(document: &Value) -> String {
    let data = document["content"][0]["attachment"]["data"]
        .as_str()
        .unwrap();
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap(),
    )
    .unwrap()
}

/// Exactly one document per signed note, each with its own text.
fn assert_exactly_once(base: &str, b: &Box_) {
    for (i, e) in b.encounters.iter().enumerate() {
        let docs = documents(base, &format!("{e}.1"));
        assert_eq!(docs.len(), 1, "note {i}: {} documents", docs.len());
        assert_eq!(attachment_text(&docs[0]), note_text(i));
    }
    let states = b.states();
    assert!(
        states
            .iter()
            .all(|(_, s, _)| *s == DeliveryState::Confirmed),
        "every delivery confirmed: {states:?}"
    );
}

fn upstream(url: &str) -> SocketAddr {
    let rest = url.split("://").nth(1).unwrap();
    rest.split('/').next().unwrap().parse().unwrap()
}

fn validate(validator: &str, resource: &Value) -> Value {
    let mut response = http()
        .post(validator)
        .header("content-type", "application/fhir+json")
        .send(resource.to_string())
        .unwrap();
    serde_json::from_slice(&response.body_mut().read_to_vec().unwrap()).unwrap()
}

#[test]
fn notes_and_an_addendum_reach_the_chart_once_and_validate() {
    let peers = Peers::start();
    let base = peers.get("fhir_base");
    let b = new_box(4);
    let names = vec!["ehr".to_owned()];
    b.sign_all(&names);
    // An addendum to the first note.
    let original = edge_scribe::attest::verify_signed_note(
        &b.store.signed_notes(&b.encounters[0]).unwrap()[0],
        None,
    )
    .unwrap()
    .into_signed_note();
    sync_support::sign(
        &b.store,
        &b.signer,
        &b.encounters[0],
        &b.clinician,
        "Addendum: X-ray result normal.",
        Some(&original),
        &names,
    );
    let settings = SyncSettings {
        poll_interval: Duration::from_millis(20),
        destinations: vec![destination(&base)],
    };

    // Every bundle the box would emit passes Medplum's validator and the R4 schema.
    let validator = peers.get("validator_url");
    for item in b.store.outbox_items(None, 100).unwrap() {
        let note = sync::outgoing_note(&b.store, &item, b.signer.public_key()).unwrap();
        let bundle =
            sync::fhir::transaction_bundle(&note, &settings.destinations[0], &base).unwrap();
        let verdict = validate(&validator, &bundle);
        assert_eq!(verdict["valid"], true, "{}: {verdict}", item.business_id);
        assert!(!bundle.to_string().contains("dr-sync password"));
    }

    b.drain(&settings, Duration::from_secs(60));
    assert_eq!(b.pending(), 0, "{:?}", b.states());
    assert_exactly_once(&base, &b);

    // The addendum replaces the original, which is now superseded.
    let addendum = documents(&base, &format!("{}.2", b.encounters[0]));
    assert_eq!(addendum.len(), 1);
    assert_eq!(addendum[0]["relatesTo"][0]["code"], "replaces");
    assert_eq!(
        attachment_text(&addendum[0]),
        "Addendum: X-ray result normal."
    );
    let first = documents(&base, &format!("{}.1", b.encounters[0]));
    assert_eq!(first[0]["status"], "superseded");
    // What the server stored validates too.
    for doc in [&first[0], &addendum[0]] {
        let verdict = validate(&validator, doc);
        assert_eq!(verdict["valid"], true, "{verdict}");
    }
    // The Provenance carries the signed note, which verifies offline.
    let mut response = http()
        .get(format!("{base}/Provenance?_count=100"))
        .call()
        .unwrap();
    let provenances: Value =
        serde_json::from_slice(&response.body_mut().read_to_vec().unwrap()).unwrap();
    let signed_b64 = provenances["entry"][0]["resource"]["signature"][0]["data"]
        .as_str()
        .unwrap();
    let signed = base64::engine::general_purpose::STANDARD
        .decode(signed_b64)
        .unwrap();
    edge_scribe::attest::verify_signed_note(
        std::str::from_utf8(&signed).unwrap(),
        Some(b.signer.public_key()),
    )
    .unwrap();
}

#[test]
fn lost_and_slow_responses_refusals_and_a_stopped_server_still_give_exactly_one_document() {
    let peers = Peers::start();
    let base = peers.get("fhir_base");
    let proxy = FaultProxy::start(upstream(&base));
    let via_proxy = base.replace(&upstream(&base).to_string(), &proxy.addr.to_string());
    let names = vec!["ehr".to_owned()];
    let settings = SyncSettings {
        poll_interval: Duration::from_millis(20),
        destinations: vec![destination(&via_proxy)],
    };

    // Lost responses: the server commits each transaction, the sender never hears.
    let b = new_box(3);
    b.sign_all(&names);
    proxy.set(Fault::DropResponse);
    let stop_faults = {
        let started = Instant::now();
        move |proxy: &FaultProxy| {
            while started.elapsed() < Duration::from_secs(2) {
                std::thread::sleep(Duration::from_millis(50));
            }
            proxy.set(Fault::Pass);
        }
    };
    std::thread::scope(|scope| {
        scope.spawn(|| stop_faults(&proxy));
        b.drain(&settings, Duration::from_secs(60));
    });
    assert!(proxy.faults_injected.load(Ordering::SeqCst) >= 3);
    assert_exactly_once(&base, &b);

    // Responses slower than the timeout, then refused connections.
    for fault in [Fault::Delay(Duration::from_secs(3)), Fault::Refuse] {
        let b = new_box(3);
        b.sign_all(&names);
        proxy.set(fault);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                std::thread::sleep(Duration::from_secs(4));
                proxy.set(Fault::Pass);
            });
            b.drain(&settings, Duration::from_secs(60));
        });
        assert_exactly_once(&base, &b);
        let statuses: Vec<String> = b.states().into_iter().filter_map(|s| s.2).collect();
        assert!(statuses.iter().all(|s| s == "confirmed"), "{statuses:?}");
    }

    // The FHIR server stopped for a while, then back.
    let b = new_box(3);
    b.sign_all(&names);
    assert!(peers.run(&["stop", "fhir"]));
    std::thread::scope(|scope| {
        scope.spawn(|| {
            // A minute without the EHR.
            std::thread::sleep(Duration::from_secs(60));
            assert!(peers.run(&["start"]));
        });
        b.drain(&settings, Duration::from_secs(150));
    });
    assert_exactly_once(&base, &b);
    let audit = b.store.audit_rows(0, 100_000).unwrap();
    assert!(
        audit.iter().any(|r| r.action == "delivery.retrying"),
        "retries are audited"
    );
}

#[test]
fn a_429_storm_is_ridden_out_with_retry_after() {
    let peers = Peers::start();
    let base = peers.get("fhir_base");
    let throttled = peers.get("fhir_429_base");
    let b = new_box(12);
    b.sign_all(&["ehr".to_owned()]);
    let settings = SyncSettings {
        poll_interval: Duration::from_millis(20),
        destinations: vec![destination(&throttled)],
    };
    b.drain(&settings, Duration::from_secs(120));
    assert_exactly_once(&base, &b);
    let audit = b.store.audit_rows(0, 100_000).unwrap();
    let throttled_attempts = audit
        .iter()
        .filter(|r| r.detail["status"] == "http 429")
        .count();
    assert!(throttled_attempts > 0, "nginx should have answered 429");
}

#[test]
fn mutual_tls_with_the_clinics_ca_and_clear_errors_for_bad_certificates() {
    let peers = Peers::start();
    let base = peers.get("fhir_base");
    let mtls = peers.get("fhir_mtls_base");
    let tls = |cert: &str, key: &str| edge_scribe::sync::tls::TlsFiles {
        ca_cert: peers.path("ca_cert"),
        client_cert: Some(peers.path(cert)),
        client_key: Some(peers.path(key)),
    };
    let with = |files: edge_scribe::sync::tls::TlsFiles| DestinationSettings {
        tls: Some(files),
        ..destination(&mtls)
    };

    let b = new_box(2);
    b.sign_all(&["ehr".to_owned()]);
    let settings = SyncSettings {
        poll_interval: Duration::from_millis(20),
        destinations: vec![with(tls("client_cert", "client_key"))],
    };
    b.drain(&settings, Duration::from_secs(30));
    assert_exactly_once(&base, &b);

    // An expired client certificate is refused before anything is sent, naming the problem.
    let expired =
        sync::fhir::FhirTransport::new(&with(tls("client_expired_cert", "client_expired_key")));
    let message = expired
        .err()
        .expect("an expired certificate is refused")
        .to_string();
    assert!(message.contains("expired"), "{message}");

    // A certificate from another CA: nginx refuses it; the item is dead-lettered, not retried
    // forever, with a status that says why.
    let b = new_box(1);
    b.sign_all(&["ehr".to_owned()]);
    let settings = SyncSettings {
        poll_interval: Duration::from_millis(20),
        destinations: vec![with(tls("client_untrusted_cert", "client_untrusted_key"))],
    };
    b.drain(&settings, Duration::from_secs(30));
    let states = b.states();
    assert_eq!(states[0].1, DeliveryState::Dead, "{states:?}");
    assert_eq!(states[0].2.as_deref(), Some("http 400"), "{states:?}");
    assert!(documents(&base, &format!("{}.1", b.encounters[0])).is_empty());
}

#[test]
fn the_daemon_killed_mid_send_delivers_every_note_exactly_once_after_restart() {
    let peers = Peers::start();
    let base = peers.get("fhir_base");
    let b = new_box(200);
    b.sign_all(&["ehr".to_owned()]);
    // The real daemon, with no capture source: it only drains the outbox.
    let config = b.dir.path().join("edge-scribe.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\ndata_dir = {:?}\n[models]\ndir = {:?}\n[review]\nlisten = \"\"\n[admin]\nlisten = \"\"\n\
             [sync]\npoll_ms = 10\n[[sync.destination]]\nname = \"ehr\"\nkind = \"fhir\"\n\
             url = {base:?}\ntimeout_s = 2\nbackoff_base_ms = 50\nbackoff_max_s = 2\n",
            b.dir.path(),
            common::models_dir()
        ),
    )
    .unwrap();
    let mut kills = 0;
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let before = b.pending();
    while b.pending() > 0 && kills < 5 {
        let at_start = b.pending();
        let mut daemon = std::process::Command::new(env!("CARGO_BIN_EXE_edge-scribe"))
            .args(["run", "--config"])
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Kill it mid-stream: once it has made progress, after a random few milliseconds.
        let started = Instant::now();
        while b.pending() == at_start && started.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(2));
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(seed % 40));
        // SIGKILL: no chance to tidy up.
        daemon.kill().unwrap();
        daemon.wait().unwrap();
        kills += 1;
    }
    assert!(kills >= 2, "the daemon should have been killed mid-run");
    assert!(
        b.pending() < before,
        "the killed daemons delivered some notes"
    );
    let settings = SyncSettings {
        poll_interval: Duration::from_millis(20),
        destinations: vec![destination(&base)],
    };
    b.drain(&settings, Duration::from_secs(60));
    assert_exactly_once(&base, &b);
}

/// 1,000 signed notes through nginx's rate limit (429 with Retry-After, here 20 writes/s with a
/// burst of 5) behind a proxy that drops 3 % of responses after the server acted: zero lost,
/// zero duplicated.
#[test]
fn soak_a_thousand_notes_through_a_throttled_faulty_link() {
    let notes: usize = std::env::var("EDGE_SCRIBE_SOAK_NOTES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let peers = Peers::start_with(&[
        ("EDGE_SCRIBE_PEERS_RATE", "20r/s"),
        ("EDGE_SCRIBE_PEERS_BURST", "5"),
    ]);
    let base = peers.get("fhir_base");
    let throttled = peers.get("fhir_429_base");
    let proxy = FaultProxy::start(upstream(&throttled));
    proxy.set_random_drop_per_mille(30);
    let via_proxy = throttled.replace(&upstream(&throttled).to_string(), &proxy.addr.to_string());
    let b = new_box(notes);
    b.sign_all(&["ehr".to_owned()]);
    let settings = SyncSettings {
        poll_interval: Duration::from_millis(10),
        destinations: vec![DestinationSettings {
            backoff_base: Duration::from_millis(20),
            backoff_max: Duration::from_millis(500),
            max_attempts: 1000,
            ..destination(&via_proxy)
        }],
    };
    let took = b.drain(&settings, Duration::from_secs(900));
    assert_exactly_once(&base, &b);
    let audit = b.store.audit_rows(0, 10_000_000).unwrap();
    let count = |status: &str| {
        audit
            .iter()
            .filter(|r| {
                r.detail["status"]
                    .as_str()
                    .is_some_and(|s| s.starts_with(status))
            })
            .count()
    };
    let (throttled_n, lost) = (count("http 429"), count("network"));
    eprintln!(
        "soak: {notes} notes in {:.1} s; {throttled_n} answered 429, {lost} lost responses or \
         resets, {} faults injected",
        took.as_secs_f64(),
        proxy.faults_injected.load(Ordering::SeqCst)
    );
    assert!(proxy.faults_injected.load(Ordering::SeqCst) > 0);
}

#[test]
fn one_note_goes_to_fhir_and_to_a_strict_hl7_receiver_through_the_outbox() {
    let peers = Peers::start();
    let base = peers.get("fhir_base");
    let strict = peers.info["peers"]["mllp_strict"].clone();
    let b = new_box(2);
    let names = vec!["ehr".to_owned(), "hl7".to_owned()];
    b.sign_all(&names);
    let hl7 = DestinationSettings {
        name: "hl7".into(),
        kind: DestinationKind::Hl7,
        url: None,
        address: Some(peers.get("mllp_strict")),
        ..destination(&base)
    };
    let settings = SyncSettings {
        poll_interval: Duration::from_millis(20),
        destinations: vec![destination(&base), hl7],
    };
    b.drain(&settings, Duration::from_secs(60));
    assert_exactly_once(&base, &b);
    assert_eq!(b.states().len(), 4, "two notes × two destinations");

    // The strict receiver validated and accepted each note once, filed under its business id.
    let log = std::fs::read_to_string(strict["log_jsonl"].as_str().unwrap()).unwrap();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (i, e) in b.encounters.iter().enumerate() {
        let business_id = format!("{e}.1");
        let received: Vec<&Value> = lines
            .iter()
            .filter(|l| l["message"].as_str().unwrap_or("").contains(&business_id))
            .collect();
        assert_eq!(received.len(), 1, "note {i} reached the HL7 receiver once");
        assert_eq!(received[0]["ack_code"], "AA", "{}", received[0]);
        assert!(received[0]["message"].as_str().unwrap().contains("MDM^T02"));
    }
}
