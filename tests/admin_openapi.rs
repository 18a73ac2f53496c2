//! The admin API's OpenAPI document (`docs/admin-openapi.json`) against the daemon's real
//! behaviour: every route of the admin router is documented (and nothing more), and
//! schemathesis (`scripts/schemathesis`, pinned by sha256) fuzzes every operation of the
//! document the running daemon serves, over HTTPS with the box's own certificate and an admin
//! token, with every check it has: no 5xx, only documented status codes, content types,
//! headers and response schemas, schema-invalid input refused, schema-valid input accepted,
//! calls without a token refused with 401, unsupported methods answered with 405. The daemon
//! must come out of it ready and stop cleanly. Nothing is excluded; where the box's state and
//! not the schema decides (a model file that is not there, a capture device that is not
//! plugged in, a config or log filter that does not validate), `scripts/schemathesis` also
//! expects the documented refusal of a schema-valid request, and switching models (a smoke
//! test each time) gets 10 examples.
//!
//! `EDGE_SCRIBE_SCHEMATHESIS_EXAMPLES` (default 100) sets the examples per operation and
//! `EDGE_SCRIBE_SCHEMATHESIS_SEED` the seed (default fixed, so a failure reproduces).

mod admin_support;
mod common;
mod records_fixture;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use admin_support::{add_user, base_config, Admin, Daemon, PASSWORD};
use serde_json::{json, Value};

const ADMIN: &str = "it-admin";
const CLINICIAN: &str = "dr-lee";
const DEFAULT_EXAMPLES: u32 = 100;
const DEFAULT_SEED: &str = "20261123";
/// The whole schemathesis run, venv install included, must end within this.
const SCHEMATHESIS_TIMEOUT: Duration = Duration::from_secs(600);

/// `(path, method)` pairs, methods lower case as OpenAPI writes them.
type Operations = BTreeSet<(String, String)>;

fn openapi_doc() -> Value {
    let path = common::repo_root().join("docs/admin-openapi.json");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn documented_operations(doc: &Value) -> Operations {
    let mut out = Operations::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if matches!(
                method.as_str(),
                "get" | "put" | "post" | "delete" | "patch" | "head" | "options" | "trace"
            ) {
                out.insert((path.clone(), method.clone()));
            }
        }
    }
    out
}

/// The routes of `router()` in src/admin/server.rs: each `.route("PATH", get(h).put(h2))`,
/// however rustfmt wraps it.
fn routed_operations() -> Operations {
    let path = common::repo_root().join("src/admin/server.rs");
    let source = std::fs::read_to_string(&path).unwrap();
    let start = source
        .find("pub fn router(")
        .expect("src/admin/server.rs has no `pub fn router(`");
    let body = &source[start..];
    let end = body.find("\n}\n").expect("end of router()");
    let body = &body[..end];
    // The routes come before the fallback and the layers.
    let routes_end = [".fallback(", ".layer(", ".with_state("]
        .iter()
        .filter_map(|m| body.find(m))
        .min()
        .unwrap_or(body.len());
    let (body, rest) = body.split_at(routes_end);
    assert!(
        !rest.contains(".route"),
        "router() adds routes after its fallback or a layer; teach this test to read it"
    );
    assert!(
        !body.contains(".nest(") && !body.contains(".merge("),
        "router() nests or merges another router; teach this test to read it"
    );
    let route = regex::Regex::new(r#"\.route\(\s*"([^"]+)"\s*,"#).unwrap();
    let method = regex::Regex::new(r"\b(get|put|post|delete|patch|head|options|trace)\(").unwrap();
    let other_router = regex::Regex::new(r"\b(any|on|any_service|route_service)\(").unwrap();
    let mut out = Operations::new();
    let starts: Vec<_> = route.captures_iter(body).collect();
    for (i, captures) in starts.iter().enumerate() {
        let whole = captures.get(0).unwrap();
        let next = starts
            .get(i + 1)
            .map_or(body.len(), |c| c.get(0).unwrap().start());
        let handlers = &body[whole.end()..next];
        assert!(
            !other_router.is_match(handlers),
            "{} is routed with any() or on(); teach this test to read it",
            &captures[1]
        );
        let before = out.len();
        for m in method.captures_iter(handlers) {
            out.insert((captures[1].to_string(), m[1].to_string()));
        }
        assert!(
            out.len() > before,
            "no method router found for {}",
            &captures[1]
        );
    }
    assert!(out.len() >= 10, "found only {out:?} in router()");
    out
}

/// The document cannot drift from the router: same paths, same methods, and every operation
/// has a unique id and documents its refusals.
#[test]
fn every_admin_route_is_documented_and_every_documented_operation_is_routed() {
    let doc = openapi_doc();
    assert_eq!(doc["openapi"], "3.0.3");
    let documented = documented_operations(&doc);
    let routed = routed_operations();
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(
        undocumented.is_empty() && unrouted.is_empty(),
        "docs/admin-openapi.json and router() in src/admin/server.rs differ:\n  routed but not \
         documented: {undocumented:?}\n  documented but not routed: {unrouted:?}"
    );

    let mut ids = BTreeMap::new();
    for (path, method) in &documented {
        let operation = &doc["paths"][path][method];
        let id = operation["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
        if let Some(other) = ids.insert(id.to_string(), format!("{method} {path}")) {
            panic!("operationId {id} is used by {other} and {method} {path}");
        }
        let open = operation["security"]
            .as_array()
            .is_some_and(|s| s.is_empty());
        let responses = operation["responses"].as_object().unwrap();
        if !open {
            for status in ["401", "403"] {
                assert!(
                    responses.contains_key(status),
                    "{method} {path} needs a token but documents no {status}"
                );
            }
        }
        let mut placeholders: Vec<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        placeholders.sort_unstable();
        let mut parameters: Vec<&str> = operation["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "path")
            .filter_map(|p| p["name"].as_str())
            .collect();
        parameters.sort_unstable();
        assert_eq!(placeholders, parameters, "{method} {path}: path parameters");
    }
}

/// The last lines of the daemon's log, for failure messages.
fn log_tail(daemon: &Daemon) -> String {
    let text = std::fs::read_to_string(&daemon.log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn assert_running(daemon: &mut Daemon) {
    if let Ok(Some(status)) = daemon.child.try_wait() {
        panic!("the daemon exited ({status}):\n{}", log_tail(daemon));
    }
}

fn wait_ready(admin: &Admin, daemon: &mut Daemon, within: Duration) {
    let started = Instant::now();
    loop {
        let ready = admin.get("/admin/v1/ready");
        if ready.status == 200 {
            return;
        }
        assert_running(daemon);
        assert!(
            started.elapsed() < within,
            "not ready after {} s: {} {}\n{}",
            within.as_secs(),
            ready.status,
            ready.text(),
            log_tail(daemon)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs `cmd` in its own process group with its output in `log`; on timeout the whole group
/// (the script and the schemathesis it started) is killed.
fn run_with_timeout(mut cmd: Command, log: &Path, timeout: Duration) -> std::process::ExitStatus {
    let out = std::fs::File::create(log).unwrap();
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .process_group(0);
    let mut child = cmd.spawn().expect("cannot start scripts/schemathesis");
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > timeout {
            // The group was made for this child above; nothing else is in it.
            let group = format!("-{}", child.id());
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = child.wait();
            panic!(
                "scripts/schemathesis did not finish within {} s:\n{}",
                timeout.as_secs(),
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The first capture group of `pattern` in `output` as a number (`Tested: 22`, `1645 generated`).
fn number_near(output: &str, pattern: &str) -> Option<u64> {
    let re = regex::Regex::new(pattern).unwrap();
    re.captures(output)?.get(1)?.as_str().parse().ok()
}

#[test]
fn schemathesis_finds_nothing_wrong_with_the_running_daemon() {
    let examples: u32 = std::env::var("EDGE_SCRIBE_SCHEMATHESIS_EXAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_EXAMPLES);
    let seed =
        std::env::var("EDGE_SCRIBE_SCHEMATHESIS_SEED").unwrap_or_else(|_| DEFAULT_SEED.into());
    let doc = openapi_doc();
    let operations = documented_operations(&doc).len() as u64;

    let work = tempfile::tempdir().unwrap();
    let config_path = work.path().join("edge-scribe.toml");
    std::fs::write(&config_path, base_config(work.path(), "")).unwrap();
    add_user(&config_path, ADMIN, "admin");
    add_user(&config_path, CLINICIAN, "clinician");
    let mut daemon = Daemon::start(work.path(), &config_path, "daemon");
    let mut admin = Admin::new(daemon.addr("admin.addr"), &daemon.data);
    wait_ready(&admin, &mut daemon, Duration::from_secs(60));
    admin.sign_in(ADMIN);
    let token = admin.token.clone().unwrap();

    // Two paired badges, so that the badge list is checked against its schema with content.
    let mut lee = records_fixture::Client::login(daemon.addr("review.addr"), CLINICIAN, PASSWORD);
    for badge in ["BADGE-1", "BADGE-2"] {
        let pairing = admin.json(
            "POST",
            "/admin/v1/badges",
            &json!({"badge_id": badge, "clinician": CLINICIAN}),
        );
        assert_eq!(pairing.status, 201, "{}", pairing.text());
        let code = pairing.json()["code"].clone();
        let (status, body) = lee.post("/api/badges/confirm", &json!({ "code": code }));
        assert_eq!(status, 200, "{body}");
    }

    // What schemathesis reads is the document in the repository, byte for byte.
    let served = admin.get("/admin/v1/openapi.json");
    assert_eq!(served.status, 200);
    let file = std::fs::read(common::repo_root().join("docs/admin-openapi.json")).unwrap();
    assert!(
        served.bytes == file,
        "the daemon serves another document than docs/admin-openapi.json (rebuild)"
    );

    let reports = work.path().join("reports");
    let log = work.path().join("schemathesis.log");
    let mut cmd = Command::new(common::repo_root().join("scripts/schemathesis"));
    cmd.arg("--data-dir")
        .arg(&daemon.data)
        .args(["--max-examples", &examples.to_string()])
        .args(["--seed", &seed])
        .args(["--checks", "all"])
        .args(["--clinician", CLINICIAN])
        .arg("--report-dir")
        .arg(&reports)
        .env("EDGE_SCRIBE_ADMIN_TOKEN", &token)
        .current_dir(work.path());
    let started = Instant::now();
    let status = run_with_timeout(cmd, &log, SCHEMATHESIS_TIMEOUT);
    let elapsed = started.elapsed();
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        status.success(),
        "schemathesis found problems ({status}; seed {seed}, {examples} examples per \
         operation):\n{output}\n--- daemon log ---\n{}",
        log_tail(&daemon)
    );
    // Every operation but the document's own URL, which schemathesis leaves out when it loads
    // the schema from there (it was fetched and compared above).
    let tested = number_near(&output, r"Tested:\s+(\d+)");
    assert_eq!(
        tested,
        Some(operations - 1),
        "schemathesis did not test every documented operation:\n{output}"
    );
    let generated = number_near(&output, r"(\d+) generated").unwrap_or(0);
    assert!(
        generated >= operations * 10,
        "only {generated} test cases:\n{output}"
    );
    let junit = std::fs::read_to_string(reports.join("junit.xml")).unwrap_or_default();
    assert!(
        junit.contains("<testcase") && !junit.contains("<failure") && !junit.contains("<error"),
        "junit report:\n{junit}"
    );
    let phases: Vec<&str> = output
        .lines()
        .filter(|l| l.contains(" (in ") || l.contains("generated"))
        .map(str::trim)
        .collect();
    let case = regex::Regex::new(r#"<testcase name="([^"]+)"[^>]*time="([0-9.]+)""#).unwrap();
    let mut slowest: Vec<(f64, String)> = case
        .captures_iter(&junit)
        .filter_map(|c| Some((c[2].parse().ok()?, c[1].to_string())))
        .collect();
    slowest.sort_by(|a, b| b.0.total_cmp(&a.0));
    let slowest: Vec<String> = slowest
        .iter()
        .take(4)
        .map(|(s, name)| format!("{name} {s:.1} s"))
        .collect();
    println!(
        "schemathesis: {operations} operations, {generated} test cases, seed {seed}, \
         {examples} examples per operation, {:.1} s; {}; slowest: {}",
        elapsed.as_secs_f64(),
        phases.join("; "),
        slowest.join(", ")
    );

    // The box survived it: still ready, still answering, and it stops cleanly.
    assert_running(&mut daemon);
    wait_ready(&admin, &mut daemon, Duration::from_secs(30));
    assert_eq!(admin.get("/admin/v1/config").status, 200);
    let status = daemon.stop();
    assert!(status.success(), "graceful stop after fuzzing: {status}");
}
