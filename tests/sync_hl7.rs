//! HL7 v2 MDM over MLLP against the real receivers of `scripts/peers` (docs/PEERS.md): python-hl7's
//! asyncio server (plain, strict with hl7apy validation, TLS with client certificates) and
//! hl7apy's own `MLLPServer`, which closes the connection after every ACK.
//!
//! One test starts the peers in a temporary state dir (a few seconds warm) and runs every case in
//! order, since the fault cases write the receivers' control files. Set
//! `EDGE_SCRIBE_TEST_PEERS_DIR` to a dir with running peers (`scripts/peers start --dir DIR`) to
//! reuse them instead; they are then left running.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use edge_scribe::sync::hl7::{self, AckCode, MdmDocument, SendingApp};
use edge_scribe::sync::mllp::{self, MllpClient, MllpError};
use edge_scribe::sync::tls::{self, TlsError, TlsFiles};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_millis(1500);

/// The peers, stopped on drop (also when a case panics) unless they were borrowed.
struct Peers {
    dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    info: Value,
}

impl Peers {
    fn start() -> Peers {
        if let Some(dir) = std::env::var_os("EDGE_SCRIBE_TEST_PEERS_DIR") {
            let dir = PathBuf::from(dir);
            let info = read_json(&dir.join("peers.json"));
            return Peers {
                dir,
                _temp: None,
                info,
            };
        }
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = temp.path().to_path_buf();
        let t0 = Instant::now();
        // `scripts/peers start` has no way to start only some peers, so all of them come up.
        assert!(
            run_peers(&dir, &["start"]),
            "scripts/peers start --dir {} failed (output above); see docs/PEERS.md",
            dir.display()
        );
        eprintln!("peers started in {:?}", t0.elapsed());
        let info = read_json(&dir.join("peers.json"));
        Peers {
            dir,
            _temp: Some(temp),
            info,
        }
    }

    fn get(&self, key: &str) -> String {
        self.info[key]
            .as_str()
            .unwrap_or_else(|| panic!("peers.json has no {key}"))
            .to_owned()
    }

    fn path(&self, key: &str) -> PathBuf {
        PathBuf::from(self.get(key))
    }

    fn peer(&self, name: &str, key: &str) -> PathBuf {
        PathBuf::from(
            self.info["peers"][name][key]
                .as_str()
                .unwrap_or_else(|| panic!("peers.json has no peers.{name}.{key}")),
        )
    }

    /// Queues faults for the next messages the receiver gets.
    fn fault(&self, name: &str, next: &[&str]) {
        let control = self.peer(name, "control");
        std::fs::write(&control, serde_json::json!({ "next": next }).to_string())
            .expect("write control file");
    }

    fn clear_faults(&self, name: &str) {
        let _ = std::fs::remove_file(self.peer(name, "control"));
    }

    /// The receiver's log lines for one control id.
    fn logged(&self, name: &str, control_id: &str) -> Vec<Value> {
        let text = std::fs::read_to_string(self.peer(name, "log_jsonl")).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["control_id"].as_str() == Some(control_id))
            .collect()
    }
}

impl Drop for Peers {
    fn drop(&mut self) {
        if self._temp.is_some() {
            run_peers(&self.dir, &["stop"]);
        }
    }
}

fn run_peers(dir: &Path, args: &[&str]) -> bool {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/peers");
    Command::new(script)
        .args(args)
        .arg("--dir")
        .arg(dir)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run `scripts/peers start --dir DIR` (docs/PEERS.md)",
            path.display()
        )
    });
    serde_json::from_str(&text).expect("peers.json is JSON")
}

static SEQ: AtomicU32 = AtomicU32::new(0);

fn unique(prefix: &str) -> String {
    let n = SEQ.fetch_add(1, Ordering::SeqCst);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}{}-{nanos:x}-{n}", std::process::id())
}

fn document() -> MdmDocument {
    MdmDocument {
        message_control_id: unique("M"),
        document_id: unique("NOTE-"),
        parent_document_id: None,
        patient_id: "MRN0042".into(),
        encounter_id: unique("ENC-"),
        clinician_id: "dr.lee".into(),
        clinician_name: Some("Lee, Ana".into()),
        document_type: "11506-3".into(),
        signed_at: "2025-03-04T15:16:17Z".into(),
        note_text: "Subjective: cough for 3 days | no fever ^ chills & no ~ rash \\ none\n\
                    Objective: T 37.1 C, BP 118/76\n\nAssessment: viral URI\nPlan: fluids, rest\n"
            .into(),
        note_sha256: "0f".repeat(32),
    }
}

fn app() -> SendingApp {
    SendingApp {
        application: "EDGE-SCRIBE".into(),
        facility: "CLINIC".into(),
        receiving_application: "EHR".into(),
        receiving_facility: "HOSPITAL".into(),
    }
}

fn message(doc: &MdmDocument) -> String {
    hl7::try_build_mdm_t02(doc, &app()).expect("valid document")
}

fn client(addr: String) -> MllpClient {
    MllpClient::new(addr, None, TIMEOUT)
}

/// TXA-12.1 of a logged message.
fn txa12(message: &str) -> String {
    let txa = message
        .split('\r')
        .find(|s| s.starts_with("TXA|"))
        .expect("logged message has TXA");
    let field = txa.split('|').nth(12).unwrap_or_default();
    field.split('^').next().unwrap_or_default().to_owned()
}

#[test]
fn mdm_over_mllp_against_real_receivers() {
    let peers = Peers::start();
    for name in ["mllp_plain", "mllp_strict", "mllp_tls", "mllp_hl7apy"] {
        peers.clear_faults(name);
    }
    valid_message_is_stored_once(&peers, "mllp_plain");
    valid_message_is_stored_once(&peers, "mllp_strict");
    correction_is_accepted_by_strict(&peers);
    many_messages_over_one_connection(&peers);
    reconnects_to_a_peer_that_closes_after_each_ack(&peers);
    strict_peer_rejects_a_message_without_txa(&peers);
    injected_faults_are_classified(&peers);
    mutual_tls(&peers);
}

fn valid_message_is_stored_once(peers: &Peers, name: &str) {
    let doc = document();
    let mut c = client(peers.get(name));
    let t0 = Instant::now();
    let ack = c.send(&message(&doc)).expect("send");
    eprintln!(
        "{name}: first message (connect + ACK) in {:?}",
        t0.elapsed()
    );
    assert_eq!(ack.code, AckCode::AA, "{name}: {ack:?}");
    assert_eq!(ack.control_id, doc.message_control_id);
    let logged = peers.logged(name, &doc.message_control_id);
    assert_eq!(logged.len(), 1, "{name} logged {} copies", logged.len());
    assert_eq!(logged[0]["ack_code"], "AA");
    assert_eq!(logged[0]["message_type"], "MDM^T02^MDM_T02");
    assert_eq!(
        txa12(logged[0]["message"].as_str().unwrap()),
        doc.document_id
    );
}

fn correction_is_accepted_by_strict(peers: &Peers) {
    let mut doc = document();
    doc.parent_document_id = Some(unique("NOTE-"));
    let ack = client(peers.get("mllp_strict"))
        .send(&message(&doc))
        .expect("send");
    assert_eq!(ack.code, AckCode::AA, "{ack:?}");
    let logged = peers.logged("mllp_strict", &doc.message_control_id);
    assert_eq!(logged.len(), 1);
    assert_eq!(logged[0]["message_type"], "MDM^T10^MDM_T02");
}

fn many_messages_over_one_connection(peers: &Peers) {
    let mut c = client(peers.get("mllp_plain"));
    let mut ids = std::collections::BTreeSet::new();
    let mut times = Vec::new();
    for _ in 0..20 {
        let doc = document();
        let t0 = Instant::now();
        let ack = c.send(&message(&doc)).expect("send");
        times.push(t0.elapsed());
        assert_eq!(ack.code, AckCode::AA);
        assert_eq!(ack.control_id, doc.message_control_id);
        ids.insert(ack.control_id);
    }
    assert_eq!(ids.len(), 20);
    assert_eq!(c.connects(), 1, "20 messages should share one connection");
    times.sort();
    eprintln!(
        "mllp_plain: 20 messages on one connection, round trip p50 {:?}, max {:?}",
        times[10], times[19]
    );
    let conns: std::collections::BTreeSet<String> = ids
        .iter()
        .flat_map(|id| peers.logged("mllp_plain", id))
        .map(|v| v["conn"].to_string())
        .collect();
    assert_eq!(
        conns.len(),
        1,
        "the receiver saw {} connections",
        conns.len()
    );
}

fn reconnects_to_a_peer_that_closes_after_each_ack(peers: &Peers) {
    let mut c = client(peers.get("mllp_hl7apy"));
    for i in 0..5 {
        let doc = document();
        let ack = c
            .send(&message(&doc))
            .unwrap_or_else(|e| panic!("message {i}: {e}"));
        assert_eq!(ack.code, AckCode::AA, "message {i}: {ack:?}");
        assert_eq!(
            peers.logged("mllp_hl7apy", &doc.message_control_id).len(),
            1
        );
    }
    assert_eq!(c.connects(), 5);
}

fn strict_peer_rejects_a_message_without_txa(peers: &Peers) {
    let doc = document();
    let without_txa: String = message(&doc)
        .split_inclusive('\r')
        .filter(|s| !s.starts_with("TXA|"))
        .collect();
    let ack = client(peers.get("mllp_strict"))
        .send(&without_txa)
        .expect("send");
    assert_eq!(ack.code, AckCode::AE, "{ack:?}");
    let text = ack.text.unwrap_or_default();
    assert!(
        text.contains("Missing required child MDM_T02.TXA"),
        "{text}"
    );
}

fn injected_faults_are_classified(peers: &Peers) {
    let name = "mllp_plain";
    let mut c = client(peers.get(name));

    peers.fault(name, &["AR"]);
    let doc = document();
    let ack = c.send(&message(&doc)).expect("AR is an answer");
    assert_eq!(ack.code, AckCode::AR);
    assert_eq!(ack.control_id, doc.message_control_id);

    peers.fault(name, &["DROP"]);
    let doc = document();
    let err = c.send(&message(&doc)).expect_err("DROP");
    assert!(matches!(err, MllpError::ClosedWithoutAck { .. }), "{err}");
    assert!(err.is_retryable() && err.outcome_unknown(), "{err}");
    assert!(err.to_string().contains("outcome unknown"), "{err}");
    // The receiver did get it: exactly why the outcome is unknown.
    assert_eq!(peers.logged(name, &doc.message_control_id).len(), 1);

    peers.fault(name, &["NOREPLY"]);
    let doc = document();
    let t0 = Instant::now();
    let err = c.send(&message(&doc)).expect_err("NOREPLY");
    let waited = t0.elapsed();
    assert!(matches!(err, MllpError::Timeout { .. }), "{err}");
    assert!(err.is_retryable() && err.outcome_unknown());
    assert!(
        waited >= TIMEOUT && waited < TIMEOUT + Duration::from_millis(500),
        "timed out after {waited:?} for a {TIMEOUT:?} timeout"
    );
    eprintln!("NOREPLY: timeout reported after {waited:?} (configured {TIMEOUT:?})");

    // The same client recovers on the next message.
    let doc = document();
    let ack = c.send(&message(&doc)).expect("after the faults");
    assert_eq!(ack.code, AckCode::AA);
    peers.clear_faults(name);
}

fn tls_client(peers: &Peers, files: &TlsFiles) -> Result<MllpClient, TlsError> {
    let config = tls::client_config(files)?;
    let addr = peers.get("mllp_tls");
    let name = mllp::server_name(&addr, None).expect("server name");
    Ok(MllpClient::new(addr, Some((config, name)), TIMEOUT).with_tls_files(files.clone()))
}

fn mutual_tls(peers: &Peers) {
    let good = TlsFiles {
        ca_cert: peers.path("ca_cert"),
        client_cert: Some(peers.path("client_cert")),
        client_key: Some(peers.path("client_key")),
    };
    let mut c = tls_client(peers, &good).expect("client config");
    let doc = document();
    let t0 = Instant::now();
    let ack = c.send(&message(&doc)).expect("send over TLS");
    eprintln!(
        "mllp_tls: first message (TCP + TLS handshake + ACK) in {:?}",
        t0.elapsed()
    );
    assert_eq!(ack.code, AckCode::AA);
    let logged = peers.logged("mllp_tls", &doc.message_control_id);
    assert_eq!(logged.len(), 1);
    assert!(
        logged[0]["tls_subject"].as_str().is_some(),
        "{:?}",
        logged[0]
    );
    let doc = document();
    assert_eq!(c.send(&message(&doc)).expect("second").code, AckCode::AA);
    assert_eq!(c.connects(), 1);

    // Expired: refused at load, naming the file and the date.
    let expired = TlsFiles {
        client_cert: Some(peers.path("client_expired_cert")),
        client_key: Some(peers.path("client_expired_key")),
        ..good.clone()
    };
    let err = tls::client_config(&expired).expect_err("expired certificate");
    assert!(matches!(err, TlsError::ClientCertExpired { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("2021-01-01") && msg.contains("client-expired.crt"),
        "{msg}"
    );
    eprintln!("expired: {msg}");

    // A client certificate from a CA the receiver does not trust: permanent, says why.
    let untrusted = TlsFiles {
        client_cert: Some(peers.path("client_untrusted_cert")),
        client_key: Some(peers.path("client_untrusted_key")),
        ..good.clone()
    };
    let mut c = tls_client(peers, &untrusted).expect("loads: only the peer can refuse it");
    let doc = document();
    let err = c
        .send(&message(&doc))
        .expect_err("untrusted client certificate");
    assert!(matches!(err, MllpError::Tls { .. }), "{err}");
    assert!(!err.is_retryable());
    let msg = err.to_string();
    assert!(msg.contains("client-untrusted.crt"), "{msg}");
    assert!(peers.logged("mllp_tls", &doc.message_control_id).is_empty());
    eprintln!("untrusted client: {msg}");

    // Our CA file is not the one that signed the server: refused by us, naming the file.
    let wrong_ca = TlsFiles {
        ca_cert: peers.path("untrusted_ca_cert"),
        ..good.clone()
    };
    let mut c = tls_client(peers, &wrong_ca).expect("client config");
    let err = c.send(&message(&document())).expect_err("wrong CA");
    assert!(matches!(err, MllpError::Tls { .. }), "{err}");
    assert!(!err.is_retryable());
    let msg = err.to_string();
    assert!(
        msg.contains("not signed by the CA in") && msg.contains("untrusted-ca.crt"),
        "{msg}"
    );
    eprintln!("wrong CA: {msg}");
}
