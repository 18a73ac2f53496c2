//! `edge-scribe doctor` with the real binary on a box built in a temp directory: a healthy box
//! passes (exit 0, no FAIL), and each planted problem is reported on its own line with a fix
//! (exit 1): an open master key, an expired and an expiring CA, a peer that does not answer, a
//! model that is missing or was changed, a missing worker, a file that is not a WAV, a config
//! that does not load. No check prints patient data, and doctor never creates a master key.

mod common;

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use edge_scribe::ops::doctor::{Check, Status};
use edge_scribe::store::{NewEncounter, Store, StoredSegment};

const MARKER: &str = "KESTREL-PARSNIP-5521";

fn doctor(config: &Path, json: bool) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edge-scribe"));
    cmd.arg("doctor").arg("--config").arg(config);
    if json {
        cmd.arg("--json");
    }
    cmd.env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("EDGE_SCRIBE_WORKER_DIR")
        .output()
        .expect("cannot run the edge-scribe binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is needed for the certificate checks (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        text(&out.stderr)
    );
}

/// A self-signed CA certificate valid from now for `days`.
fn ca_for_days(dir: &Path, name: &str, days: u32) -> PathBuf {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            &days.to_string(),
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    dir.join(format!("{name}.pem"))
}

/// A self-signed CA certificate that expired on 2025-02-01 (`openssl ca` can set both dates).
fn expired_ca(dir: &Path) -> PathBuf {
    let ca_dir = dir.join("expired-ca");
    fs::create_dir(&ca_dir).unwrap();
    fs::write(
        ca_dir.join("ca.cnf"),
        "[ ca ]\ndefault_ca = d\n[ d ]\ndir = .\ndatabase = index.txt\nnew_certs_dir = .\n\
         serial = serial\ndefault_md = sha256\npolicy = p\n[ p ]\ncommonName = supplied\n",
    )
    .unwrap();
    fs::write(ca_dir.join("index.txt"), "").unwrap();
    fs::write(ca_dir.join("serial"), "01\n").unwrap();
    openssl(
        &ca_dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.csr",
            "-subj",
            "/CN=expired-ca",
        ],
    );
    openssl(
        &ca_dir,
        &[
            "ca",
            "-batch",
            "-config",
            "ca.cnf",
            "-selfsign",
            "-keyfile",
            "ca.key",
            "-in",
            "ca.csr",
            "-out",
            "ca.pem",
            "-startdate",
            "20250101000000Z",
            "-enddate",
            "20250201000000Z",
            "-notext",
        ],
    );
    ca_dir.join("ca.pem")
}

fn write_wav(path: &Path) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(path, spec).unwrap();
    for _ in 0..16_000 {
        writer.write_sample(0i16).unwrap();
    }
    writer.finalize().unwrap();
}

/// Stand-ins for the worker executables: doctor checks that they are there and executable.
fn fake_workers(dir: &Path, which: &[&str]) -> PathBuf {
    let workers = dir.join("workers");
    fs::create_dir_all(&workers).unwrap();
    for name in which {
        let path = workers.join(name);
        fs::write(&path, "#!/bin/sh\nexit 0\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }
    workers
}

/// A store with one encounter whose transcript carries the marker.
fn make_store(data: &Path) {
    let store = Store::open(data).unwrap();
    let id = store
        .create_encounter(&NewEncounter {
            source_kind: "file".to_owned(),
            consent: true,
            patient_ref: Some(format!("MRN-{MARKER}")),
            ..NewEncounter::default()
        })
        .unwrap();
    store
        .save_transcript(
            &id,
            &[StoredSegment {
                id: "s1".to_owned(),
                start_ms: 0,
                end_ms: 1_000,
                speaker: None,
                text: MARKER.to_owned(),
                confidence: None,
                overlap: false,
                speaker_corrected: false,
                original_speaker: None,
            }],
        )
        .unwrap();
}

struct Destination<'a> {
    name: &'a str,
    port: u16,
    ca: Option<&'a Path>,
}

#[allow(clippy::too_many_arguments)]
fn write_config(
    path: &Path,
    data: &Path,
    models: &Path,
    asr: &str,
    workers: &Path,
    destinations: &[Destination<'_>],
    replay: &Path,
) {
    let repo = common::repo_root();
    let mut toml = format!(
        "[storage]\ndata_dir = {data:?}\n[models]\ndir = {models:?}\nasr = {asr:?}\n\
         [drafting]\ntemplates_dir = {:?}\ngaps_dir = {:?}\n[workers]\ndir = {workers:?}\n\
         [review]\nlisten = \"\"\n[[capture.replay]]\npath = {replay:?}\n",
        repo.join("config/templates"),
        repo.join("config/gaps"),
    );
    for d in destinations {
        toml.push_str(&format!(
            "[[sync.destination]]\nname = {:?}\nkind = \"hl7\"\naddress = \"127.0.0.1:{}\"\n",
            d.name, d.port
        ));
        if let Some(ca) = d.ca {
            toml.push_str(&format!("ca_cert = {ca:?}\n"));
        }
    }
    fs::write(path, toml).unwrap();
}

fn parse(out: &Output) -> Vec<Check> {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json printed no check list ({e}): {}",
            text(&out.stdout)
        )
    })
}

fn find<'c>(checks: &'c [Check], name: &str) -> &'c Check {
    checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no check named {name:?} in {checks:#?}"))
}

/// A port nothing listens on: bound, then let go.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn a_healthy_box_passes_with_one_line_per_check() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    make_store(&data);
    let ca = ca_for_days(dir.path(), "clinic-ca", 400);
    let peer = TcpListener::bind("127.0.0.1:0").unwrap();
    let wav = dir.path().join("visit.wav");
    write_wav(&wav);
    let workers = fake_workers(
        dir.path(),
        &["edge-scribe-asr-worker", "edge-scribe-llm-worker"],
    );
    let config = dir.path().join("edge-scribe.toml");
    write_config(
        &config,
        &data,
        &common::models_dir(),
        "whisper-tiny.en",
        &workers,
        &[Destination {
            name: "ehr",
            port: peer.local_addr().unwrap().port(),
            ca: Some(&ca),
        }],
        &wav,
    );

    let out = doctor(&config, false);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "doctor failed on a healthy box:\n{stdout}\n{}",
        text(&out.stderr)
    );
    for line in stdout.lines() {
        assert!(
            line.starts_with("ok ") || line.starts_with("warn "),
            "unexpected line: {line}"
        );
    }
    for name in [
        "config:",
        "drafting:",
        "data dir:",
        "disk:",
        "master key:",
        "store:",
        "audit log:",
        "model asr:",
        "model llm:",
        "worker asr:",
        "worker llm:",
        "certificates ehr:",
        "clock:",
        "clock sync:",
        "peer ehr:",
    ] {
        assert!(
            stdout.lines().any(|l| l.contains(&format!(" {name}"))),
            "no {name} line:\n{stdout}"
        );
    }
    assert!(!stdout.contains(MARKER) && !text(&out.stderr).contains(MARKER));

    let out = doctor(&config, true);
    assert!(out.status.success());
    let checks = parse(&out);
    assert!(
        checks.iter().all(|c| c.status != Status::Fail),
        "{checks:#?}"
    );
    assert_eq!(find(&checks, "master key").status, Status::Ok);
    assert_eq!(find(&checks, "model asr").status, Status::Ok, "{checks:#?}");
    assert!(find(&checks, "model asr")
        .detail
        .contains("every sha256 matches"));
    assert_eq!(find(&checks, "audit log").status, Status::Ok);
    assert_eq!(find(&checks, "peer ehr").status, Status::Ok);
    let capture = format!("capture {}", wav.display());
    assert_eq!(find(&checks, &capture).status, Status::Ok);
    for check in &checks {
        if check.status == Status::Ok {
            assert!(check.fix.is_none(), "{check:?}");
        } else {
            assert!(check.fix.is_some(), "a warning without a fix: {check:?}");
        }
    }
}

#[test]
fn each_problem_is_a_fail_or_warn_line_that_says_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    make_store(&data);
    fs::set_permissions(data.join("master.key"), fs::Permissions::from_mode(0o644)).unwrap();
    let expired = expired_ca(dir.path());
    let expiring = ca_for_days(dir.path(), "expiring-ca", 10);
    let up = TcpListener::bind("127.0.0.1:0").unwrap();
    let not_wav = dir.path().join("not-a-visit.wav");
    fs::write(&not_wav, "this is text, not audio").unwrap();
    let workers = fake_workers(dir.path(), &["edge-scribe-asr-worker"]);

    // A model directory whose ASR model was changed after install, and without the LLM.
    let models = dir.path().join("models");
    let fake = models.join("clinic-asr");
    fs::create_dir_all(&fake).unwrap();
    fs::write(fake.join("ggml-model.bin"), b"weights, changed").unwrap();
    fs::write(
        fake.join("installed.json"),
        format!(
            r#"{{"name":"clinic-asr","files":[{{"path":"ggml-model.bin","sha256":"{}","bytes":16}}]}}"#,
            "ab".repeat(32)
        ),
    )
    .unwrap();

    let config = dir.path().join("edge-scribe.toml");
    write_config(
        &config,
        &data,
        &models,
        "clinic-asr",
        &workers,
        &[
            Destination {
                name: "old-ehr",
                port: up.local_addr().unwrap().port(),
                ca: Some(&expired),
            },
            Destination {
                name: "soon-ehr",
                port: up.local_addr().unwrap().port(),
                ca: Some(&expiring),
            },
            Destination {
                name: "down-ehr",
                port: closed_port(),
                ca: None,
            },
        ],
        &not_wav,
    );

    let out = doctor(&config, false);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        text(&out.stderr).contains("checks failed"),
        "{}",
        text(&out.stderr)
    );
    let line = |prefix: &str| -> String {
        stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting {prefix:?}:\n{stdout}"))
            .to_owned()
    };
    let key = line("FAIL master key:");
    assert!(
        key.contains("mode 644") && key.contains("chmod 600"),
        "{key}"
    );
    let cert = line("FAIL certificates old-ehr:");
    assert!(cert.contains("expired on 2025-02-01"), "{cert}");
    let soon = line("warn certificates soon-ehr:");
    assert!(
        soon.contains("expires on") && soon.contains("fix:"),
        "{soon}"
    );
    let peer = line("FAIL peer down-ehr:");
    assert!(
        peer.contains("did not accept a connection") && peer.contains("firewall"),
        "{peer}"
    );
    line("ok   peer old-ehr:");
    let asr = line("FAIL model asr:");
    assert!(asr.contains("changed or damaged"), "{asr}");
    let llm = line("FAIL model llm:");
    assert!(
        llm.contains("edge-scribe models fetch --model smollm2-135m-instruct"),
        "{llm}"
    );
    let worker = line("FAIL worker llm:");
    assert!(
        worker.contains("edge-scribe-llm-worker is missing"),
        "{worker}"
    );
    line("ok   worker asr:");
    let wav = line("FAIL capture ");
    assert!(wav.contains("not a readable WAV"), "{wav}");
    // The store is not opened with a key that was refused.
    line("warn store:");
    assert!(!stdout.contains(MARKER) && !text(&out.stderr).contains(MARKER));
}

#[test]
fn a_config_that_does_not_load_is_the_failing_check() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("edge-scribe.toml");
    fs::write(&config, "[storage]\ndata_dir = \"\"\nno_such_key = 1\n").unwrap();
    let out = doctor(&config, false);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.starts_with("FAIL config:"), "{stdout}");
    assert!(
        stdout.contains(&format!("correct {}", config.display())),
        "{stdout}"
    );

    let out = doctor(&config, true);
    let checks = parse(&out);
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0].status, Status::Fail);
}

#[test]
fn a_missing_master_key_fails_and_doctor_does_not_make_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    make_store(&data);
    fs::remove_file(data.join("master.key")).unwrap();
    let workers = fake_workers(
        dir.path(),
        &["edge-scribe-asr-worker", "edge-scribe-llm-worker"],
    );
    let wav = dir.path().join("visit.wav");
    write_wav(&wav);
    let config = dir.path().join("edge-scribe.toml");
    write_config(
        &config,
        &data,
        &common::models_dir(),
        "whisper-tiny.en",
        &workers,
        &[],
        &wav,
    );
    let out = doctor(&config, true);
    assert_eq!(out.status.code(), Some(1));
    let checks = parse(&out);
    let key = find(&checks, "master key");
    assert_eq!(key.status, Status::Fail, "{key:?}");
    assert!(key
        .fix
        .as_deref()
        .unwrap_or("")
        .contains("Do not let the daemon create a new one"));
    assert!(
        !data.join("master.key").exists(),
        "doctor created a master key"
    );
}
