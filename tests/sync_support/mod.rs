//! Shared by the write-back tests: the real peers (`scripts/peers`, stopped on drop), a fault
//! proxy of our own between the sender and a peer, and signed notes put straight into a store.

// Each test binary uses a different part of this.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edge_scribe::attest::{AttestationFields, Signer};
use edge_scribe::store::review::{NewSignedNote, SignedKind};
use edge_scribe::store::Store;
use serde_json::Value;

/// The peers of `scripts/peers`, started in their own state dir and stopped on drop.
pub struct Peers {
    pub dir: tempfile::TempDir,
    pub info: Value,
}

impl Peers {
    pub fn start() -> Peers {
        Peers::start_with(&[])
    }

    /// Starts the peers with extra environment for `scripts/peers` (e.g. the nginx rate limit).
    pub fn start_with(env: &[(&str, &str)]) -> Peers {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut peers = Peers {
            info: Value::Null,
            dir,
        };
        let status = peers.run_with(&["start"], env);
        assert!(status, "scripts/peers start failed (see its output above)");
        let text =
            std::fs::read_to_string(peers.dir.path().join("peers.json")).expect("peers.json");
        peers.info = serde_json::from_str(&text).expect("peers.json is JSON");
        peers
    }

    pub fn run(&self, args: &[&str]) -> bool {
        self.run_with(args, &[])
    }

    fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> bool {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/peers");
        Command::new(script)
            .args(args)
            .envs(env.iter().copied())
            .arg("--dir")
            .arg(self.dir.path())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    pub fn get(&self, key: &str) -> String {
        self.info[key]
            .as_str()
            .unwrap_or_else(|| panic!("peers.json has no {key}"))
            .to_owned()
    }

    pub fn path(&self, key: &str) -> PathBuf {
        PathBuf::from(self.get(key))
    }
}

impl Drop for Peers {
    fn drop(&mut self) {
        self.run(&["stop"]);
    }
}

/// What the proxy does to the connections it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward both ways.
    Pass,
    /// Forward the request, then close both sides as the response starts: the server acted,
    /// the client never hears.
    DropResponse,
    /// Hold the response this long before forwarding it (past the client's timeout).
    Delay(Duration),
    /// Refuse: close the client connection at once.
    Refuse,
}

/// A TCP proxy on 127.0.0.1 whose fault can be changed while it runs; `random_drop` (per mille)
/// drops responses at random on top of the set fault.
pub struct FaultProxy {
    pub addr: SocketAddr,
    fault: Arc<Mutex<Fault>>,
    random_drop: Arc<AtomicU32>,
    pub faults_injected: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
}

impl FaultProxy {
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let fault = Arc::new(Mutex::new(Fault::Pass));
        let random_drop = Arc::new(AtomicU32::new(0));
        let faults_injected = Arc::new(AtomicU32::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, r, n, s) = (
            fault.clone(),
            random_drop.clone(),
            faults_injected.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || {
            let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
            for client in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let mode = *f.lock().unwrap();
                if mode != Fault::Pass {
                    n.fetch_add(1, Ordering::SeqCst);
                }
                let random = RandomDrop {
                    per_mille: r.clone(),
                    injected: n.clone(),
                    seed,
                };
                std::thread::spawn(move || carry(client, upstream, mode, random));
            }
        });
        FaultProxy {
            addr,
            fault,
            random_drop,
            faults_injected,
            stop,
        }
    }

    pub fn set(&self, fault: Fault) {
        *self.fault.lock().unwrap() = fault;
    }

    pub fn set_random_drop_per_mille(&self, per_mille: u32) {
        self.random_drop.store(per_mille, Ordering::SeqCst);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

/// Random response drops: each response on a kept-alive connection rolls the dice.
struct RandomDrop {
    per_mille: Arc<AtomicU32>,
    injected: Arc<AtomicU32>,
    seed: u64,
}

impl RandomDrop {
    fn roll(&mut self) -> bool {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let drop = (self.seed % 1000) < u64::from(self.per_mille.load(Ordering::SeqCst));
        if drop {
            self.injected.fetch_add(1, Ordering::SeqCst);
        }
        drop
    }
}

/// One proxied connection. The set fault applies to its first response; random drops to any
/// response (the first bytes from the server after the client sent a request). After a drop
/// the client needs a new connection.
fn carry(mut client: TcpStream, upstream: SocketAddr, fault: Fault, mut random: RandomDrop) {
    if fault == Fault::Refuse {
        return;
    }
    let Ok(mut server) = TcpStream::connect(upstream) else {
        return;
    };
    let (Ok(mut client_read), Ok(mut server_write)) = (client.try_clone(), server.try_clone())
    else {
        return;
    };
    // Set when the client sent bytes since the server last answered: the next server bytes
    // start a new response.
    let request_pending = Arc::new(AtomicBool::new(false));
    let pending = request_pending.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match client_read.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    pending.store(true, Ordering::SeqCst);
                    if server_write.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = server_write.shutdown(std::net::Shutdown::Write);
    });
    let mut buf = [0u8; 16 * 1024];
    let mut first = true;
    loop {
        let n = match server.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let new_response = request_pending.swap(false, Ordering::SeqCst);
        let drop_now = (first && fault == Fault::DropResponse) || (new_response && random.roll());
        if drop_now {
            let _ = client.shutdown(std::net::Shutdown::Both);
            let _ = server.shutdown(std::net::Shutdown::Both);
            return;
        }
        if first {
            first = false;
            if let Fault::Delay(d) = fault {
                std::thread::sleep(d);
            }
        }
        if client.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = client.shutdown(std::net::Shutdown::Both);
}

/// Signs the encounter's draft as its note directly (no HTTP), queuing it for `destinations`.
/// Returns the signed seq.
pub fn sign(
    store: &Store,
    signer: &Signer,
    encounter_id: &str,
    clinician_id: &str,
    text: &str,
    addendum_to: Option<&edge_scribe::attest::SignedNote>,
    destinations: &[String],
) -> u32 {
    let fields = AttestationFields {
        clinician_id: clinician_id.to_owned(),
        audio_sha256: Some("ab".repeat(32)),
        models: vec![edge_scribe::attest::ModelRef {
            name: "whisper-tiny.en".into(),
            sha256: "cd".repeat(32),
        }],
        template_id: "soap".into(),
        prompt_version: "facts-prompt-1".into(),
        ai_statements: Default::default(),
    };
    let signed = match addendum_to {
        None => signer.sign(text, fields),
        Some(original) => signer.sign_addendum(original, text, fields),
    }
    .expect("sign");
    store
        .save_signed_note(
            encounter_id,
            &NewSignedNote {
                kind: if addendum_to.is_some() {
                    SignedKind::Addendum
                } else {
                    SignedKind::Original
                },
                signed_at_ms: 0,
                clinician_id: clinician_id.to_owned(),
                note_sha256: signed.attestation().note_sha256.clone(),
                document: signed.to_json().expect("json"),
                version: None,
                ai: Default::default(),
            },
            None,
            destinations,
        )
        .expect("save the signed note")
}
