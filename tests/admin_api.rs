//! The admin port, end to end: the real daemon on port 0 over HTTPS (its self-signed
//! certificate pinned), every admin endpoint exercised — tokens, bad configs rejected with
//! every problem and nothing changed, a good config applied hot, a config that fails its health
//! check rolled back (file and running state), versions with diffs, rollback to any version,
//! badge pairing confirmed at the review page and binding an encounter, devices and rooms,
//! model install and switch with a smoke test, log level, metrics, the support bundle — every
//! call audited, and no answer carrying a word of the patient's visit.

mod admin_support;
mod common;
mod records_fixture;

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use admin_support::{add_user, base_config, pem_certificates, Admin, Daemon, PASSWORD};
use edge_scribe::store::Store;
use records_fixture::Client;
use serde_json::json;

const ADMIN: &str = "it-admin";
const CLINICIAN: &str = "dr-lee";
/// Words the marker visit says; no admin answer may contain them.
const MARKERS: [&str; 4] = ["emily", "saxophone", "pineapple", "jazz"];

fn sha256_file(path: &Path) -> String {
    edge_scribe::pipeline::sha256_file(path).unwrap()
}

fn leaked_markers(bytes: &[u8]) -> Vec<&'static str> {
    let lower: Vec<u8> = bytes.iter().map(u8::to_ascii_lowercase).collect();
    MARKERS
        .into_iter()
        .filter(|m| lower.windows(m.len()).any(|w| w == m.as_bytes()))
        .collect()
}

fn unzip_all(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    (0..archive.len())
        .map(|i| {
            let mut file = archive.by_index(i).unwrap();
            let mut out = Vec::new();
            file.read_to_end(&mut out).unwrap();
            (file.name().to_owned(), out)
        })
        .collect()
}

#[test]
fn every_admin_endpoint_works_over_https_and_bad_configs_change_nothing() {
    let work = tempfile::tempdir().unwrap();
    let config_path = work.path().join("edge-scribe.toml");
    let original = base_config(work.path(), "");
    std::fs::write(&config_path, &original).unwrap();
    add_user(&config_path, ADMIN, "admin");
    add_user(&config_path, CLINICIAN, "clinician");
    let mut daemon = Daemon::start(work.path(), &config_path, "daemon");
    let admin_addr = daemon.addr("admin.addr");
    daemon.addr("review.addr");
    let mut admin = Admin::new(admin_addr, &daemon.data);

    // Probes need no token; the box becomes ready once processing has started.
    let live = admin.get("/admin/v1/live");
    assert_eq!(live.status, 200);
    assert_eq!(live.json()["status"], "live");
    let started = Instant::now();
    loop {
        let ready = admin.get("/admin/v1/ready");
        if ready.status == 200 {
            assert_eq!(ready.json()["checks"]["review"], "up");
            break;
        }
        assert_eq!(ready.status, 503);
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{}",
            ready.text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let metrics = admin.get("/admin/v1/metrics");
    assert!(metrics.content_type.starts_with("text/plain"));
    for series in [
        "edge_scribe_outbox_items{state=\"queued\"} 0",
        "edge_scribe_disk_available_bytes ",
        "edge_scribe_asr_real_time_factor ",
        "edge_scribe_worker_restarts_total ",
        "edge_scribe_encounters_queued ",
        "edge_scribe_config_version 1",
    ] {
        assert!(
            metrics.text().contains(series),
            "{series}\n{}",
            metrics.text()
        );
    }
    let openapi = admin.get("/admin/v1/openapi.json").json();
    assert_eq!(openapi["openapi"], "3.0.3");

    // Everything else needs an admin token.
    assert_eq!(admin.get("/admin/v1/config").status, 401);
    let wrong = admin.json(
        "POST",
        "/admin/v1/token",
        &json!({"username": ADMIN, "password": "not the password"}),
    );
    assert_eq!(wrong.status, 401);
    let clinician = admin.json(
        "POST",
        "/admin/v1/token",
        &json!({"username": CLINICIAN, "password": PASSWORD}),
    );
    assert_eq!(clinician.status, 403, "{}", clinician.text());
    admin.sign_in(ADMIN);

    let current = admin.get("/admin/v1/config").json();
    assert_eq!(current["version"], 1);
    assert_eq!(current["toml"], original.as_str());

    // Bad configs: each rejected with every problem, and nothing changes.
    let not_toml = admin.put_config("[review\nlisten = ");
    assert_eq!(not_toml.status, 400);
    assert!(not_toml.json()["problems"][0]
        .as_str()
        .unwrap()
        .starts_with("not valid TOML"));
    let schema = admin.put_config(
        &original
            .replace(
                "health_check_s = 5",
                "health_check_s = 5\ntoken_minutes = 0",
            )
            .replace("level = \"info\"", "level = \"info\"\nformat = \"yaml\""),
    );
    assert_eq!(schema.status, 400);
    let problems = schema.json()["problems"].clone();
    assert!(
        problems.to_string().contains("admin.token_minutes"),
        "{problems}"
    );
    assert!(problems.to_string().contains("log.format"), "{problems}");
    let missing = admin.put_config(&format!(
        "{}[[capture.replay]]\npath = \"/nowhere/visit.wav\"\n",
        original.replace("[models]\n", "[models]\nasr = \"whisper-none\"\n")
    ));
    assert_eq!(missing.status, 400, "{}", missing.text());
    let problems = missing.json()["problems"].to_string();
    assert!(problems.contains("whisper-none"), "{problems}");
    assert!(problems.contains("/nowhere/visit.wav"), "{problems}");
    let moved = admin.put_config(&original.replace("/data\"", "/elsewhere\""));
    assert_eq!(moved.status, 400);
    assert!(moved.json()["problems"]
        .to_string()
        .contains("storage.data_dir"));
    assert_eq!(std::fs::read_to_string(&config_path).unwrap(), original);
    assert_eq!(admin.get("/admin/v1/config").json()["version"], 1);
    let wrong_type = admin.send("PUT", "/admin/v1/config", Some("application/json"), b"{}");
    assert_eq!(wrong_type.status, 415);

    // A good config: applied in place.
    let debug = original.replace("level = \"info\"", "level = \"debug\"")
        + "[retention]\ntranscript_days = 14\n";
    let applied = admin.put_config(&debug);
    assert_eq!(applied.status, 200, "{}", applied.text());
    let applied = applied.json();
    let good_version = applied["version"].as_u64().unwrap();
    let hot = applied["changes"]["hot"].to_string();
    assert!(
        hot.contains("log") && hot.contains("retention"),
        "{applied}"
    );
    assert_eq!(std::fs::read_to_string(&config_path).unwrap(), debug);
    assert_eq!(admin.get("/admin/v1/log-level").json()["level"], "debug");

    // A config that passes validation but fails its health check (the review port is taken):
    // rolled back, file and running service both.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap();
    let unhealthy = debug.replace(
        "[review]\nlisten = \"127.0.0.1:0\"",
        &format!("[review]\nlisten = \"{taken}\""),
    );
    let rolled = admin.put_config(&unhealthy);
    assert_eq!(rolled.status, 422, "{}", rolled.text());
    let rolled = rolled.json();
    assert_eq!(rolled["state"], "rolled_back");
    assert_eq!(rolled["rolled_back_to"], good_version);
    assert!(
        rolled["problems"].to_string().contains("review service"),
        "{rolled}"
    );
    assert_eq!(std::fs::read_to_string(&config_path).unwrap(), debug);
    assert_eq!(
        admin.get("/admin/v1/config").json()["version"],
        good_version
    );
    let new_review = daemon.addr("review.addr");
    assert_ne!(new_review, taken);
    let (status, _) = Client::new(new_review).get("/api/me");
    assert_eq!(status, 401, "the review service is back after the rollback");
    drop(squatter);

    // Versions, diffs, rollback to any version.
    let versions = admin.get("/admin/v1/config/versions").json();
    let states: Vec<&str> = versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        [
            "superseded",
            "rejected",
            "rejected",
            "rejected",
            "rejected",
            "applied",
            "rolled_back"
        ],
        "{versions}"
    );
    let one = admin
        .get(&format!("/admin/v1/config/versions/{good_version}"))
        .json();
    let diff = one["diff_from_previous"].as_str().unwrap();
    assert!(diff.contains("+level = \"debug\""), "{diff}");
    assert_eq!(admin.get("/admin/v1/config/versions/999").status, 404);
    assert_eq!(admin.get("/admin/v1/config/versions/abc").status, 400);
    let back = admin.json("POST", "/admin/v1/config/rollback", &json!({"version": 1}));
    assert_eq!(back.status, 200, "{}", back.text());
    assert_eq!(std::fs::read_to_string(&config_path).unwrap(), original);
    assert_eq!(admin.get("/admin/v1/log-level").json()["level"], "info");

    // Badges: a one-time code the clinician confirms at the review page.
    let pairing = admin.json(
        "POST",
        "/admin/v1/badges",
        &json!({"badge_id": "BADGE-7", "clinician": CLINICIAN}),
    );
    assert_eq!(pairing.status, 201, "{}", pairing.text());
    let code = pairing.json()["code"].as_str().unwrap().to_owned();
    assert_eq!(code.len(), 8);
    assert_eq!(
        admin
            .json(
                "POST",
                "/admin/v1/badges",
                &json!({"badge_id": "B", "clinician": "nobody"})
            )
            .status,
        404
    );
    assert_eq!(
        admin
            .json(
                "POST",
                "/admin/v1/badges",
                &json!({"badge_id": "../x", "clinician": CLINICIAN})
            )
            .status,
        400
    );
    let review_addr_now = daemon.addr("review.addr");
    let mut lee = Client::login(review_addr_now, CLINICIAN, PASSWORD);
    let (status, _) = lee.post("/api/badges/confirm", &json!({"code": "00000000"}));
    assert_eq!(status, 404);
    let (status, body) = lee.post("/api/badges/confirm", &json!({ "code": code }));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["badge_id"], "BADGE-7");
    let (status, _) = lee.post("/api/badges/confirm", &json!({ "code": code }));
    assert_eq!(status, 404, "a code works once");
    let badges = admin.get("/admin/v1/badges").json();
    assert_eq!(badges["badges"][0]["clinician"], CLINICIAN);
    assert_eq!(
        admin
            .send("DELETE", "/admin/v1/badges/NOPE", None, b"")
            .status,
        404
    );
    let unpaired = admin.send("DELETE", "/admin/v1/badges/BADGE-7", None, b"");
    assert_eq!(unpaired.status, 204);
    assert_eq!(admin.get("/admin/v1/badges").json()["badges"], json!([]));

    // Devices and rooms: an array must exist on the box.
    let devices = admin.get("/admin/v1/devices");
    assert_eq!(devices.status, 200);
    let no_device = admin.json(
        "PUT",
        "/admin/v1/rooms/exam-1",
        &json!({"array": "replay-0", "geometry": []}),
    );
    assert_eq!(no_device.status, 400, "{}", no_device.text());
    assert!(no_device.json()["problems"]
        .to_string()
        .contains("replay-0"));

    // Models: install a local file by its hash (smoke-tested), then switch to it.
    let models = admin.get("/admin/v1/models").json();
    assert_eq!(models["active"]["asr"], "whisper-tiny.en");
    let whisper = common::models_dir().join("whisper-tiny.en/ggml-model.bin");
    let cleanup = scopeguard(common::models_dir().join("whisper-clinic"));
    let bad_hash = admin.json(
        "POST",
        "/admin/v1/models/install",
        &json!({"name": "whisper-clinic", "kind": "asr", "path": whisper, "sha256": "00".repeat(32)}),
    );
    assert_eq!(bad_hash.status, 422, "{}", bad_hash.text());
    let installed = admin.json(
        "POST",
        "/admin/v1/models/install",
        &json!({"name": "whisper-clinic", "kind": "asr", "path": whisper, "sha256": sha256_file(&whisper)}),
    );
    assert_eq!(installed.status, 201, "{}", installed.text());
    let switched = admin.json(
        "PUT",
        "/admin/v1/models/active",
        &json!({"role": "asr", "name": "whisper-clinic"}),
    );
    assert_eq!(switched.status, 200, "{}", switched.text());
    assert!(std::fs::read_to_string(&config_path)
        .unwrap()
        .contains("asr = \"whisper-clinic\""));
    assert_eq!(
        admin.get("/admin/v1/models").json()["active"]["asr"],
        "whisper-clinic"
    );
    let unknown = admin.json(
        "PUT",
        "/admin/v1/models/active",
        &json!({"role": "llm", "name": "no-such-model"}),
    );
    assert_eq!(unknown.status, 422, "{}", unknown.text());

    // Log level at run time.
    assert_eq!(
        admin
            .json("PUT", "/admin/v1/log-level", &json!({"level": "[bad"}))
            .status,
        400
    );
    let level = admin.json("PUT", "/admin/v1/log-level", &json!({"level": "warn"}));
    assert_eq!(level.status, 200, "{}", level.text());
    assert_eq!(admin.get("/admin/v1/log-level").json()["level"], "warn");

    // The support bundle: a zip of text files.
    let bundle = admin.get("/admin/v1/support-bundle");
    assert_eq!(bundle.status, 200);
    assert_eq!(bundle.content_type, "application/zip");
    let names: Vec<String> = unzip_all(&bundle.bytes)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    for name in [
        "config.toml",
        "metrics.txt",
        "log.txt",
        "health.json",
        "audit-verify.json",
    ] {
        assert!(names.contains(&name.to_owned()), "{names:?}");
    }

    // Malformed bodies: clear errors, never a crash.
    assert_eq!(
        admin
            .send(
                "POST",
                "/admin/v1/badges",
                Some("application/json"),
                b"{\"badge_id\":"
            )
            .status,
        400
    );
    assert_eq!(
        admin
            .send("POST", "/admin/v1/badges", Some("text/plain"), b"x")
            .status,
        415
    );
    assert_eq!(admin.get("/admin/v1/nothing-here").status, 404);

    let status = daemon.stop();
    assert!(status.success(), "graceful stop: {status}");
    drop(cleanup);

    // Every call was audited, with its route and status; a call without a token as `system`.
    let store = Store::open(&work.path().join("data")).unwrap();
    let rows = store.audit_rows(0, 100_000).unwrap();
    let calls: Vec<&edge_scribe::store::review::AuditRow> = rows
        .iter()
        .filter(|r| r.action == "admin.request")
        .collect();
    assert!(calls.len() >= 35, "{} admin calls audited", calls.len());
    assert!(calls.iter().any(|r| r.actor == "system"
        && r.detail["artifact"] == "GET /admin/v1/config"
        && r.detail["status"] == "401"));
    assert!(calls.iter().any(|r| r.actor.starts_with("user:")
        && r.detail["artifact"] == "PUT /admin/v1/config"
        && r.detail["status"] == "422"));
    for action in [
        "config.rolled_back",
        "config.rejected",
        "badge.paired",
        "badge.unpaired",
        "model.installed",
        "log_level.changed",
        "support_bundle.exported",
    ] {
        assert!(rows.iter().any(|r| r.action == action), "{action} audited");
    }
    assert!(store.verify_audit().unwrap().is_intact());
}

/// Removes a directory when dropped (an installed test model must not outlive the test).
struct Cleanup(PathBuf);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
fn scopeguard(path: PathBuf) -> Cleanup {
    let _ = std::fs::remove_dir_all(&path);
    Cleanup(path)
}

#[test]
fn a_paired_badge_binds_the_encounter_and_no_admin_answer_carries_patient_words() {
    let work = tempfile::tempdir().unwrap();
    let (wav, _) = common::make_visit("marker-visit", work.path());
    let config_path = work.path().join("edge-scribe.toml");
    std::fs::write(&config_path, base_config(work.path(), "")).unwrap();
    add_user(&config_path, ADMIN, "admin");
    add_user(&config_path, CLINICIAN, "clinician");

    // Pair the badge first (a box without capture sources).
    let daemon = Daemon::start(work.path(), &config_path, "pairing");
    let mut admin = Admin::new(
        std::fs::read_to_string(daemon.data.join("admin.addr"))
            .unwrap()
            .parse()
            .unwrap(),
        &daemon.data,
    );
    admin.sign_in(ADMIN);
    let code = admin.json(
        "POST",
        "/admin/v1/badges",
        &json!({"badge_id": "BADGE-7", "clinician": CLINICIAN}),
    );
    assert_eq!(code.status, 201);
    let code = code.json()["code"].as_str().unwrap().to_owned();
    let review: SocketAddr = std::fs::read_to_string(daemon.data.join("review.addr"))
        .unwrap()
        .parse()
        .unwrap();
    let mut lee = Client::login(review, CLINICIAN, PASSWORD);
    assert_eq!(
        lee.post("/api/badges/confirm", &json!({ "code": code })).0,
        200
    );
    assert!(daemon.stop().success());

    // The room's recording names no clinician, only the badge heard in it.
    std::fs::write(
        &config_path,
        base_config(
            work.path(),
            &format!(
                "[[capture.room]]\nname = \"exam-1\"\n[[capture.replay]]\npath = {wav:?}\n\
                 badge = \"BADGE-7\"\nroom = \"exam-1\"\npatient_ref = \"MRN-ADMIN-1\"\n"
            ),
        ),
    )
    .unwrap();
    let mut daemon = Daemon::start(work.path(), &config_path, "visit");
    let review = daemon.addr("review.addr");
    let mut admin = Admin::new(daemon.addr("admin.addr"), &daemon.data);
    admin.sign_in(ADMIN);
    let mut lee = Client::login(review, CLINICIAN, PASSWORD);
    let started = Instant::now();
    let encounter = loop {
        let (status, list) = lee.get("/api/encounters");
        assert_eq!(status, 200);
        if let Some(drafted) = list
            .as_array()
            .and_then(|a| a.iter().find(|e| e["status"] == "drafted"))
        {
            break drafted["id"].as_str().unwrap().to_owned();
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the encounter never reached the badge's clinician:\n{}",
            std::fs::read_to_string(&daemon.log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    // The markers are really in the visit (the scan below is not vacuous).
    let (_, view) = lee.get(&format!("/api/encounters/{encounter}"));
    assert!(!leaked_markers(view.to_string().as_bytes()).is_empty());

    let badge = &admin.get("/admin/v1/badges").json()["badges"][0];
    assert_eq!(badge["last_room"], "exam-1");
    let level = badge["signal_dbfs"].as_f64().unwrap();
    assert!((-60.0..0.0).contains(&level), "badge level {level} dBFS");
    assert!(badge["last_seen_ms"].as_i64().unwrap() > 0);
    let room = admin.json(
        "PUT",
        "/admin/v1/rooms/exam-1",
        &json!({"array": "replay-0", "geometry": []}),
    );
    assert_eq!(room.status, 200, "{}", room.text());
    assert_eq!(
        admin.get("/admin/v1/rooms").json()["rooms"][0]["array"],
        "replay-0"
    );
    assert!(admin
        .get("/admin/v1/metrics")
        .text()
        .contains("edge_scribe_encounters_processed_total 1"));

    // Every admin answer, the support bundle's every file and the daemon log: no patient word.
    let mut answers: Vec<(String, Vec<u8>)> = Vec::new();
    for path in [
        "/admin/v1/live",
        "/admin/v1/ready",
        "/admin/v1/metrics",
        "/admin/v1/config",
        "/admin/v1/config/versions",
        "/admin/v1/config/versions/1",
        "/admin/v1/config/versions/2",
        "/admin/v1/badges",
        "/admin/v1/devices",
        "/admin/v1/rooms",
        "/admin/v1/models",
        "/admin/v1/log-level",
    ] {
        let answer = admin.get(path);
        assert_eq!(answer.status, 200, "{path}: {}", answer.text());
        answers.push((path.to_owned(), answer.bytes));
    }
    let bundle = admin.get("/admin/v1/support-bundle");
    assert_eq!(bundle.status, 200);
    for (name, bytes) in unzip_all(&bundle.bytes) {
        answers.push((format!("bundle/{name}"), bytes));
    }
    let bundle_config = answers
        .iter()
        .find(|(n, _)| n == "bundle/config.toml")
        .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
        .unwrap();
    assert!(!bundle_config.contains("MRN-ADMIN-1"), "{bundle_config}");
    assert!(daemon.stop().success());
    answers.push((
        "daemon log".into(),
        std::fs::read(work.path().join("visit.log")).unwrap(),
    ));
    for (name, bytes) in &answers {
        assert!(
            leaked_markers(bytes).is_empty(),
            "{name} carries patient words {:?}",
            leaked_markers(bytes)
        );
    }
}

/// With `admin.client_ca` set, the TLS layer refuses a client without a certificate from it.
#[test]
fn a_client_certificate_is_required_when_a_client_ca_is_configured() {
    let work = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let client_key = rcgen::KeyPair::generate().unwrap();
    let client_params = rcgen::CertificateParams::new(vec!["it-laptop".to_owned()]).unwrap();
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let client = client_params.signed_by(&client_key, &issuer).unwrap();
    let ca_path = work.path().join("it-ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();

    let config_path = work.path().join("edge-scribe.toml");
    let text = base_config(work.path(), "").replace(
        "health_check_s = 5\n",
        &format!("health_check_s = 5\nclient_ca = {ca_path:?}\n"),
    );
    std::fs::write(&config_path, text).unwrap();
    add_user(&config_path, ADMIN, "admin");
    let mut daemon = Daemon::start(work.path(), &config_path, "mtls");
    let addr = daemon.addr("admin.addr");

    let without = Admin::new(addr, &daemon.data);
    let refused = without
        .agent
        .get(format!("{}/admin/v1/live", without.base))
        .call();
    assert!(
        refused.is_err(),
        "a client without a certificate was served"
    );

    use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};
    let pem = std::fs::read(daemon.data.join("admin-tls/cert.pem")).unwrap();
    let roots: Vec<Certificate<'static>> = pem_certificates(&pem)
        .into_iter()
        .map(|der| Certificate::from_der(&der).to_owned())
        .collect();
    let chain = vec![Certificate::from_der(client.der()).to_owned()];
    let key = PrivateKey::from_pem(client_key.serialize_pem().as_bytes())
        .unwrap()
        .to_owned();
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(
            TlsConfig::builder()
                .root_certs(RootCerts::new_with_certs(&roots))
                .client_cert(Some(ClientCert::new_with_certs(&chain, key)))
                .build(),
        )
        .build()
        .new_agent();
    let mut with = Admin {
        base: without.base.clone(),
        agent,
        token: None,
    };
    assert_eq!(with.get("/admin/v1/live").status, 200);
    with.sign_in(ADMIN);
    assert_eq!(with.get("/admin/v1/config").status, 200);
    assert!(daemon.stop().success());
}
