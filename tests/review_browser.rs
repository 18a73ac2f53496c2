//! The clinician's review page in a real browser: Debian's Chromium, headless, driven over
//! WebDriver (chromedriver) against the real daemon processing the sample visit.
//!
//! A clinician signs in (after a wrong password is refused in `#error`), opens the encounter,
//! clicks a statement and gets its evidence highlighted and the span of audio in `#audio` (a WAV),
//! edits, rejects, accepts and adds a statement, saves a new version and sees the four changes,
//! signs through the in-page dialog and gets the attestation on a read-only note, then adds an
//! addendum. An IT admin signing in sees no encounter content (the API answers 403).
//!
//! Speaker labels, against the review service alone over a seeded store (no daemon, no
//! models): the room front end's overlap flag shows as a marker on its segment only, and a
//! speaker the clinician picks in the page is stored and still shown after a reload, until the
//! note is signed.
//!
//! Screenshots go to `docs/screenshots/` when `EDGE_SCRIBE_SCREENSHOTS=1`, else to a temp dir.

mod common;
mod records_fixture;
mod sync_support;

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CLINICIAN: &str = "dr.evans";
const CLINICIAN_PASSWORD: &str = "correct horse battery staple";
const ADMIN: &str = "it.admin";
const ADMIN_PASSWORD: &str = "admin password for the closet box";
const WRONG_PASSWORD: &str = "not-the-password-7731";
const EDITED_TEXT: &str = "Edited in the browser test: lower back pain for ten days.";
const ADDED_TEXT: &str = "Added in the browser test: lumbar strain, review in three weeks.";
const ADDENDUM_TEXT: &str = "Addendum from the browser test: patient called, pain improving.";
/// Viewport the page must work at.
const VIEW_W: u32 = 1280;
const VIEW_H: u32 = 800;
/// How long the daemon may take to transcribe and draft the sample visit.
const PROCESSING_TIMEOUT: Duration = Duration::from_secs(900);
const UI_TIMEOUT: Duration = Duration::from_secs(20);

/// A child process that is stopped (SIGTERM, then SIGKILL) when the guard goes, panic or not.
struct ChildGuard {
    name: &'static str,
    child: Child,
}

impl ChildGuard {
    fn spawn(name: &'static str, mut cmd: Command) -> ChildGuard {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({:?}): {e}", cmd.get_program()));
        ChildGuard { name, child }
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        // Only this child, by its own pid: it was started here.
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{} did not stop on SIGTERM; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn require_browser() {
    for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
        assert!(
            Path::new(path).exists(),
            "{path} is missing: the review page is tested in Debian's Chromium. Run scripts/test, \
             which installs it (or: apt-get install {package})"
        );
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("cannot find a free port")
        .port()
}

fn screenshot_dir(work: &Path) -> PathBuf {
    if std::env::var("EDGE_SCRIBE_SCREENSHOTS").as_deref() == Ok("1") {
        common::repo_root().join("docs/screenshots")
    } else {
        work.join("screenshots")
    }
}

/// The sample visit: the checked-out one if present, else synthesized like it.
fn sample_visit(work: &Path) -> PathBuf {
    let sample = common::repo_root().join("samples/sample-encounter.wav");
    if sample.exists() {
        sample
    } else {
        common::make_visit("sample-visit", work).0
    }
}

/// The daemon's config: the sample visit for the clinician, and the real FHIR server of
/// `scripts/peers` as the EHR, so the page can show the note reaching the chart.
fn write_config(work: &Path, wav: &Path, fhir_base: &str) -> PathBuf {
    let text = format!(
        "[storage]\ndata_dir = {data:?}\n[models]\ndir = {models:?}\n[review]\nlisten = \
         \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[drafting]\nuse_llm = false\n[[capture.replay]]\npath = {wav:?}\n\
         clinician = {CLINICIAN:?}\npatient_ref = \"MRN-BROWSER-1\"\n\
         [[sync.destination]]\nname = \"ehr\"\nkind = \"fhir\"\nurl = {fhir_base:?}\n",
        data = work.join("data"),
        models = common::models_dir(),
    );
    let path = work.join("edge-scribe.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn add_user(config: &Path, work: &Path, username: &str, role: &str, password: &str) {
    let log = work.join(format!("users-add-{username}.log"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_edge-scribe"))
        .args(["users", "add", "--config"])
        .arg(config)
        .args(["--username", username, "--role", role, "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(File::create(&log).unwrap())
        .stderr(File::create(work.join(format!("users-add-{username}.err"))).unwrap())
        .spawn()
        .expect("cannot run edge-scribe users add");
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let status = child.wait().unwrap();
    let err = std::fs::read_to_string(work.join(format!("users-add-{username}.err"))).unwrap();
    assert!(
        status.success(),
        "edge-scribe users add {username} failed ({status}):\n{err}"
    );
}

/// Starts `edge-scribe run` and waits for `<data_dir>/review.addr`.
fn start_daemon(config: &Path, work: &Path) -> (ChildGuard, String) {
    let stderr = work.join("daemon.stderr");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edge-scribe"));
    cmd.args(["run", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(File::create(work.join("daemon.stdout")).unwrap())
        .stderr(File::create(&stderr).unwrap());
    let mut daemon = ChildGuard::spawn("edge-scribe run", cmd);
    let addr_file = work.join("data/review.addr");
    let started = Instant::now();
    loop {
        if let Ok(addr) = std::fs::read_to_string(&addr_file) {
            let addr = addr.trim().to_owned();
            if !addr.is_empty() {
                return (daemon, addr);
            }
        }
        if let Some(status) = daemon.exited() {
            panic!(
                "the daemon exited ({status}) before listening:\n{}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no {} after 120 s:\n{}",
            addr_file.display(),
            std::fs::read_to_string(&stderr).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start_chromedriver(work: &Path) -> (ChildGuard, u16) {
    let port = free_port();
    let mut cmd = Command::new(CHROMEDRIVER);
    cmd.arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(File::create(work.join("chromedriver.log")).unwrap())
        .stderr(Stdio::inherit());
    let mut driver = ChildGuard::spawn("chromedriver", cmd);
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = driver.exited() {
            panic!("chromedriver exited ({status}) before listening");
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "chromedriver did not listen on {port} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (driver, port)
}

async fn connect_browser(port: u16, profile: &Path) -> Client {
    let args = [
        "--headless=new".to_owned(),
        "--no-sandbox".to_owned(),
        "--disable-gpu".to_owned(),
        "--disable-quic".to_owned(),
        "--no-first-run".to_owned(),
        "--disable-background-networking".to_owned(),
        "--disable-component-update".to_owned(),
        "--disable-sync".to_owned(),
        "--autoplay-policy=no-user-gesture-required".to_owned(),
        format!("--user-data-dir={}", profile.display()),
        format!("--window-size={VIEW_W},{VIEW_H}"),
    ];
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), json!("chrome"));
    caps.insert(
        "goog:chromeOptions".into(),
        json!({ "binary": CHROMIUM, "args": args }),
    );
    let client = ClientBuilder::new(HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .unwrap_or_else(|e| panic!("cannot start a Chromium session through chromedriver: {e}"));
    // --window-size counts the (invisible) window frame: grow the window until the page itself
    // gets 1280x800.
    let inner = client
        .execute("return [window.innerWidth, window.innerHeight]", vec![])
        .await
        .unwrap();
    let (w, h) = client.get_window_size().await.unwrap();
    let extra_w = w.saturating_sub(inner[0].as_u64().unwrap_or(w));
    let extra_h = h.saturating_sub(inner[1].as_u64().unwrap_or(h));
    client
        .set_window_size(VIEW_W + extra_w as u32, VIEW_H + extra_h as u32)
        .await
        .unwrap();
    client
}

fn truthy(v: &Value) -> bool {
    !matches!(v, Value::Null | Value::Bool(false))
        && v.as_array().is_none_or(|a| !a.is_empty())
        && v.as_str().is_none_or(|s| !s.is_empty())
}

/// Evaluates `script` (a function body that returns a value) until it returns something truthy.
async fn wait_for(c: &Client, what: &str, timeout: Duration, script: &str) -> Value {
    let started = Instant::now();
    loop {
        let value = c
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script for {what} failed: {e}"));
        if truthy(&value) {
            return value;
        }
        if started.elapsed() > timeout {
            let error = c
                .execute(
                    "const e = document.querySelector('#error'); return e && !e.hidden ? \
                     e.textContent : ''",
                    vec![],
                )
                .await
                .unwrap_or(Value::Null);
            panic!(
                "timed out after {} s waiting for {what} (last value {value}; #error: {error})",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// Runs `script` asynchronously in the page; it reports its result by calling `done(value)`.
async fn in_page(c: &Client, script: &str, args: Vec<Value>) -> Value {
    let wrapped = format!("const done = arguments[arguments.length - 1]; {script}");
    c.execute_async(&wrapped, args)
        .await
        .unwrap_or_else(|e| panic!("async script failed: {e}\n{script}"))
}

/// `fetch` from the page (with its session cookie): `{status, type, json|bytes}`.
async fn page_fetch(c: &Client, method: &str, path: &str, body: Option<Value>) -> Value {
    in_page(
        c,
        "const [method, path, body] = arguments;
         const init = { method, headers: {} };
         if (body !== null) { init.headers['Content-Type'] = 'application/json'; init.body = JSON.stringify(body); }
         fetch(path, init).then(async (r) => {
           const type = r.headers.get('content-type') || '';
           const out = { status: r.status, type };
           if (type.includes('json')) out.json = await r.json();
           else { const b = new Uint8Array(await r.arrayBuffer()); out.length = b.length; out.head = Array.from(b.slice(0, 44)); }
           done(out);
         }).catch((e) => done({ status: 0, error: String(e) }));",
        vec![json!(method), json!(path), body.unwrap_or(Value::Null)],
    )
    .await
}

async fn css(c: &Client, selector: &str) -> fantoccini::elements::Element {
    c.wait()
        .at_most(UI_TIMEOUT)
        .for_element(Locator::Css(selector))
        .await
        .unwrap_or_else(|e| panic!("no element {selector}: {e}"))
}

async fn click(c: &Client, selector: &str) {
    // The page re-renders lists after each answer; an element found just before that is stale,
    // so look it up again.
    let mut attempts = 0;
    loop {
        match css(c, selector).await.click().await {
            Ok(()) => return,
            Err(e) if attempts < 20 && e.to_string().contains("stale") => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("cannot click {selector}: {e}"),
        }
    }
}

async fn type_into(c: &Client, selector: &str, text: &str) {
    let field = css(c, selector).await;
    field.clear().await.unwrap();
    field
        .send_keys(text)
        .await
        .unwrap_or_else(|e| panic!("cannot type into {selector}: {e}"));
}

async fn screenshot(c: &Client, dir: &Path, name: &str) {
    // Let transitions and smooth scrolling settle.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let png = c.screenshot().await.expect("screenshot");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), png).unwrap();
}

async fn login(c: &Client, base: &str, username: &str, password: &str) {
    c.goto(base).await.unwrap();
    css(c, "#login-username").await;
    wait_for(
        c,
        "the login form",
        UI_TIMEOUT,
        "return !document.querySelector('#login-view').hidden",
    )
    .await;
    type_into(c, "#login-username", username).await;
    type_into(c, "#login-password", password).await;
    click(c, "#login-submit").await;
}

async fn wait_signed_in(c: &Client) {
    wait_for(
        c,
        "the signed-in page",
        UI_TIMEOUT,
        "return !document.querySelector('#app-view').hidden",
    )
    .await;
}

async fn logout(c: &Client) {
    click(c, "#logout").await;
    wait_for(
        c,
        "the login form after signing out",
        UI_TIMEOUT,
        "return !document.querySelector('#login-view').hidden",
    )
    .await;
}

fn as_set(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected a list, got {v}"))
        .iter()
        .map(|x| x.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clinician_reviews_edits_and_signs_in_chromium_and_an_admin_sees_nothing() {
    require_browser();
    let work = tempfile::tempdir().unwrap();
    let shots = screenshot_dir(work.path());
    let wav = sample_visit(work.path());
    let peers = sync_support::Peers::start();
    let config = write_config(work.path(), &wav, &peers.get("fhir_base"));
    add_user(
        &config,
        work.path(),
        CLINICIAN,
        "clinician",
        CLINICIAN_PASSWORD,
    );
    add_user(&config, work.path(), ADMIN, "admin", ADMIN_PASSWORD);
    let (_daemon, addr) = start_daemon(&config, work.path());
    let base = format!("http://{addr}/");

    let (_driver, port) = start_chromedriver(work.path());
    let profile = tempfile::tempdir().unwrap();
    let client = connect_browser(port, profile.path()).await;
    // The scenario runs as its own task so that the browser session is closed even when an
    // assertion fails; the failure is re-raised afterwards.
    let daemon_log = work.path().join("daemon.stderr");
    let scenario = tokio::spawn(scenario(client.clone(), base, shots, daemon_log));
    let outcome = scenario.await;
    let _ = client.close().await;
    if let Err(e) = outcome {
        let log = std::fs::read_to_string(work.path().join("daemon.stderr")).unwrap_or_default();
        let tail: String = log
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        eprintln!("daemon log (last lines):\n{tail}");
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn scenario(c: Client, base: String, shots: PathBuf, daemon_log: PathBuf) {
    // ---- a wrong password is refused in #error, without echoing what was typed
    login(&c, &base, CLINICIAN, WRONG_PASSWORD).await;
    let error = wait_for(
        &c,
        "the wrong-password message",
        UI_TIMEOUT,
        "const e = document.querySelector('#error'); return e.hidden ? '' : e.textContent",
    )
    .await;
    let error = error.as_str().unwrap();
    assert!(error.contains("Wrong username or password"), "{error}");
    assert!(!error.contains(WRONG_PASSWORD), "{error}");
    let still_out = c
        .execute(
            "return document.querySelector('#app-view').hidden && \
             document.querySelector('#login-password').value === ''",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        still_out,
        json!(true),
        "a refused login must stay on the form, password cleared"
    );

    // ---- the login page (clean, for the docs)
    c.goto(&base).await.unwrap();
    css(&c, "#login-username").await;
    type_into(&c, "#login-username", CLINICIAN).await;
    screenshot(&c, &shots, "review-login.png").await;

    // ---- the clinician signs in; the encounter appears once the daemon has drafted it
    type_into(&c, "#login-password", CLINICIAN_PASSWORD).await;
    click(&c, "#login-submit").await;
    wait_signed_in(&c).await;
    let user = c
        .execute(
            "return document.querySelector('#user-name').textContent",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(user, json!(CLINICIAN));
    let started = Instant::now();
    let mut stored_seen: Option<Instant> = None;
    let encounter_id = loop {
        let list = page_fetch(&c, "GET", "/api/encounters", None).await;
        assert_eq!(list["status"], 200, "GET /api/encounters: {list}");
        let drafted = list["json"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["status"] == "drafted")
            .cloned();
        if let Some(e) = drafted {
            break e["id"].as_str().unwrap().to_owned();
        }
        assert!(
            started.elapsed() < PROCESSING_TIMEOUT,
            "the sample visit was not drafted within {} s: {list}",
            PROCESSING_TIMEOUT.as_secs()
        );
        let log = std::fs::read_to_string(&daemon_log).unwrap_or_default();
        if let Some(at) = log.find("encounter stored") {
            stored_seen.get_or_insert_with(Instant::now);
            assert!(
                stored_seen.is_some_and(|t| t.elapsed() < Duration::from_secs(30)),
                "the daemon stored the encounter ({}) but GET /api/encounters shows the \
                 clinician {CLINICIAN} none 30 s later: {list}",
                log[at..].lines().next().unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    click(&c, "#refresh").await;
    let item = format!("#encounter-list li[data-encounter-id=\"{encounter_id}\"] button");
    click(&c, &item).await;

    // ---- transcript and note are rendered
    let view = page_fetch(&c, "GET", &format!("/api/encounters/{encounter_id}"), None).await;
    assert_eq!(view["status"], 200, "{view}");
    let view = view["json"].clone();
    let transcript = view["transcript"].as_array().unwrap().clone();
    assert!(
        transcript.len() >= 5,
        "a short transcript: {}",
        transcript.len()
    );
    let segments_shown = wait_for(
        &c,
        "the transcript",
        UI_TIMEOUT,
        "const n = document.querySelectorAll('#transcript [data-segment-id]').length; return n || null",
    )
    .await;
    assert_eq!(segments_shown.as_u64().unwrap() as usize, transcript.len());
    let first_text = transcript[0]["text"].as_str().unwrap();
    let shown = c
        .execute(
            "return document.querySelector('#transcript').textContent",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        shown.as_str().unwrap().contains(first_text),
        "transcript text not shown"
    );

    let statements: Vec<Value> = view["sections"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| {
            let name = s["name"].clone();
            s["statements"].as_array().unwrap().iter().map(move |st| {
                let mut st = st.clone();
                st["section"] = name.clone();
                st
            })
        })
        .collect();
    let shown_ids = as_set(
        &c.execute(
            "return Array.from(document.querySelectorAll('#note [data-statement-id]'), \
             (e) => e.dataset.statementId)",
            vec![],
        )
        .await
        .unwrap(),
    );
    let api_ids: BTreeSet<String> = statements
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        shown_ids, api_ids,
        "every statement of the draft is on the page"
    );
    let ai: Vec<&Value> = statements
        .iter()
        .filter(|s| s["origin"] != "clinician" && !s["evidence"].as_array().unwrap().is_empty())
        .collect();
    assert!(
        ai.len() >= 3,
        "the sample visit should draft at least 3 AI statements, got {}",
        ai.len()
    );
    // Flagged sections are shown before the note.
    let flagged: Vec<String> = view["sections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "insufficient_input")
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect();
    for name in &flagged {
        let alert = c
            .execute(
                "const a = document.querySelector(`#alerts [data-alert=\"flagged\"][data-section=\"${arguments[0]}\"]`);
                 return !!a && (a.compareDocumentPosition(document.querySelector('#note')) & Node.DOCUMENT_POSITION_FOLLOWING) !== 0;",
                vec![json!(name)],
            )
            .await
            .unwrap();
        assert_eq!(
            alert,
            json!(true),
            "flagged section {name} must be shown first"
        );
    }

    // ---- clicking a statement highlights its evidence and plays that span of audio
    // A statement of the first section whose evidence is furthest down the transcript, so the
    // transcript has to scroll while the note stays at its top (alerts in view for the picture).
    let first_section = ai[0]["section"].clone();
    let target = ai
        .iter()
        .filter(|s| s["section"] == first_section)
        .max_by_key(|s| {
            let last = s["evidence"].as_array().unwrap().last().cloned();
            transcript
                .iter()
                .position(|t| Some(&t["id"]) == last.as_ref())
        })
        .unwrap();
    let target_id = target["id"].as_str().unwrap();
    let evidence = as_set(&target["evidence"]);
    let span: Vec<(i64, i64)> = transcript
        .iter()
        .filter(|t| evidence.contains(t["id"].as_str().unwrap()))
        .map(|t| {
            (
                t["start_ms"].as_i64().unwrap(),
                t["end_ms"].as_i64().unwrap(),
            )
        })
        .collect();
    let start_ms = span.iter().map(|s| s.0).min().unwrap();
    let end_ms = span.iter().map(|s| s.1).max().unwrap();
    click(
        &c,
        &format!("#note [data-statement-id=\"{target_id}\"] .stmt-text"),
    )
    .await;
    let highlighted = wait_for(
        &c,
        "evidence highlighting",
        UI_TIMEOUT,
        "return Array.from(document.querySelectorAll('#transcript .evidence'), (e) => e.dataset.segmentId)",
    )
    .await;
    assert_eq!(as_set(&highlighted), evidence, "highlighted segments");
    wait_for(
        &c,
        "the evidence scrolled into view",
        UI_TIMEOUT,
        "const box = document.querySelector('#transcript').getBoundingClientRect();
         const seg = document.querySelector('#transcript .evidence').getBoundingClientRect();
         return seg.top >= box.top - 1 && seg.bottom <= box.bottom + 1 && seg.top < innerHeight;",
    )
    .await;
    let src = c
        .execute("return document.querySelector('#audio').src", vec![])
        .await
        .unwrap();
    let expected =
        format!("{base}api/encounters/{encounter_id}/audio?start_ms={start_ms}&end_ms={end_ms}");
    assert_eq!(src, json!(expected), "#audio must play the evidence span");
    let audio = page_fetch(&c, "GET", &src.as_str().unwrap().replace(&base, "/"), None).await;
    assert_eq!(audio["status"], 200, "{}", audio["status"]);
    assert!(
        audio["type"].as_str().unwrap().starts_with("audio/wav"),
        "audio content type {}",
        audio["type"]
    );
    let head: Vec<u8> = audio["head"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_u64().unwrap() as u8)
        .collect();
    assert_eq!(&head[0..4], b"RIFF");
    assert_eq!(&head[8..12], b"WAVE");
    let channels = u16::from_le_bytes([head[22], head[23]]);
    let rate = u32::from_le_bytes([head[24], head[25], head[26], head[27]]);
    let bits = u16::from_le_bytes([head[34], head[35]]);
    assert_eq!(
        (channels, rate, bits),
        (1, 16_000, 16),
        "16 kHz mono 16-bit"
    );
    let expected_bytes = (end_ms - start_ms) * 32; // 16 kHz * 2 bytes per ms
    let length = audio["length"].as_i64().unwrap() - 44;
    assert!(
        (length - expected_bytes).abs() <= 32 * 50,
        "the WAV holds {length} bytes of samples; the span {start_ms}..{end_ms} ms is {expected_bytes}"
    );
    c.execute("document.querySelector('#note-col').scrollTop = 0", vec![])
        .await
        .unwrap();
    screenshot(&c, &shots, "review-evidence.png").await;

    // ---- edit one statement, reject one, accept one, add one
    let edit_id = ai[0]["id"].as_str().unwrap();
    let reject_id = ai[1]["id"].as_str().unwrap();
    let accept_id = ai[2]["id"].as_str().unwrap();
    let stmt = |id: &str| format!("#note [data-statement-id=\"{id}\"]");
    click(&c, &format!("{} .edit", stmt(edit_id))).await;
    type_into(&c, &format!("{} textarea", stmt(edit_id)), EDITED_TEXT).await;
    click(&c, &format!("{} .edit-done", stmt(edit_id))).await;
    click(&c, &format!("{} .reject", stmt(reject_id))).await;
    click(&c, &format!("{} .accept", stmt(accept_id))).await;
    let add_section = flagged.first().cloned().unwrap_or_else(|| {
        view["sections"].as_array().unwrap().last().unwrap()["name"]
            .as_str()
            .unwrap()
            .to_owned()
    });
    click(
        &c,
        &format!("#note .add-statement[data-section=\"{add_section}\"]"),
    )
    .await;
    let new_editor =
        format!("#note section[data-section=\"{add_section}\"] [data-state=\"added\"] textarea");
    type_into(&c, &new_editor, ADDED_TEXT).await;
    click(
        &c,
        &format!("#note section[data-section=\"{add_section}\"] [data-state=\"added\"] .edit-done"),
    )
    .await;
    let states = c
        .execute(
            "return Object.fromEntries(Array.from(document.querySelectorAll('#note [data-statement-id]'), \
             (e) => [e.dataset.statementId, [e.dataset.state, e.querySelector('.stmt-text') ? e.querySelector('.stmt-text').textContent : null]]))",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(states[edit_id], json!(["edited", EDITED_TEXT]), "{states}");
    assert_eq!(states[reject_id][0], "rejected", "{states}");
    assert_eq!(states[accept_id][0], "accepted", "{states}");
    let added: Vec<String> = states
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, v)| v[0] == "added")
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(added.len(), 1, "{states}");
    let added_id = added[0].clone();
    assert!(added_id.starts_with("new-"), "{added_id}");
    assert_eq!(states[&added_id][1], json!(ADDED_TEXT));

    // ---- Save makes the next version and shows its four changes
    click(&c, "#save").await;
    let saved_version = view["version"].as_u64().unwrap() + 1;
    let diff = wait_for(
        &c,
        "the diff of the saved version",
        UI_TIMEOUT,
        "const items = Array.from(document.querySelectorAll('#diff li[data-kind]'));
         return items.length ? items.map((e) => [e.dataset.kind, e.dataset.statement]) : null",
    )
    .await;
    let diff: BTreeSet<(String, String)> = diff
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap().to_owned(),
                p[1].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected_diff: BTreeSet<(String, String)> = [
        ("accepted", accept_id),
        ("added", added_id.as_str()),
        ("edited", edit_id),
        ("rejected", reject_id),
    ]
    .into_iter()
    .map(|(k, s)| (k.to_owned(), s.to_owned()))
    .collect();
    assert_eq!(diff, expected_diff, "the diff shown after saving");
    wait_for(
        &c,
        "the saved version in #versions",
        UI_TIMEOUT,
        &format!(
            "return document.querySelector('#versions [data-version=\"{saved_version}\"]') \
             && document.querySelector('#versions [data-version=\"{}\"]')",
            saved_version - 1
        ),
    )
    .await;
    let v2 = page_fetch(
        &c,
        "GET",
        &format!("/api/encounters/{encounter_id}/versions/{saved_version}"),
        None,
    )
    .await;
    assert_eq!(v2["status"], 200, "{v2}");
    let v2_text = v2["json"]["sections"].to_string();
    assert!(v2_text.contains(EDITED_TEXT) && v2_text.contains(ADDED_TEXT));
    c.execute(
        "document.querySelector('#history').scrollIntoView({block: 'center'})",
        vec![],
    )
    .await
    .unwrap();
    screenshot(&c, &shots, "review-diff.png").await;

    // ---- Sign through the in-page dialog; the attestation shows and the note locks
    click(&c, "#sign").await;
    wait_for(
        &c,
        "the sign-off dialog",
        UI_TIMEOUT,
        "return document.querySelector('#confirm-dialog').open",
    )
    .await;
    click(&c, "#confirm-ok").await;
    wait_for(
        &c,
        "the attestation",
        UI_TIMEOUT,
        "return !document.querySelector('#attestation').hidden",
    )
    .await;
    let signed = page_fetch(
        &c,
        "GET",
        &format!("/api/encounters/{encounter_id}/signed"),
        None,
    )
    .await;
    assert_eq!(signed["status"], 200, "{signed}");
    let attestation = signed["json"][0]["attestation"].clone();
    let shown = c
        .execute(
            "const t = (s) => document.querySelector(s).textContent;
             return { clinician: t('#att-clinician'), time: t('#att-time'),
                      note: t('#att-note-sha256'), audio: t('#att-audio-sha256'),
                      models: t('#att-models'), counts: { ...document.querySelector('#att-counts').dataset } };",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        shown["clinician"].as_str().unwrap().contains(CLINICIAN),
        "{shown}"
    );
    assert!(
        shown["time"]
            .as_str()
            .unwrap()
            .contains(attestation["signed_at"].as_str().unwrap()),
        "{shown}"
    );
    let note_sha = attestation["note_sha256"].as_str().unwrap();
    assert_eq!(note_sha.len(), 64);
    assert_eq!(shown["note"], json!(note_sha));
    let audio_sha = attestation["audio_sha256"].as_str().unwrap();
    assert_eq!(audio_sha.len(), 64);
    assert_eq!(shown["audio"], json!(audio_sha));
    let models = attestation["models"].as_array().unwrap();
    assert!(
        models
            .iter()
            .any(|m| m["name"].as_str().unwrap().contains("whisper")
                && m["sha256"].as_str().unwrap().len() == 64),
        "the attestation must name the speech model that made the transcript, with its hash: \
         {models:?}"
    );
    for model in models {
        assert!(
            shown["models"]
                .as_str()
                .unwrap()
                .contains(model["name"].as_str().unwrap()),
            "{shown}"
        );
    }
    // The note reaches the chart, and the page hears it without polling (server-sent events).
    wait_for(
        &c,
        "the delivery to be confirmed in the chart",
        Duration::from_secs(30),
        "return document.querySelector('#delivery').dataset.state === 'confirmed'",
    )
    .await;
    let delivery = c
        .execute(
            "return document.querySelector('#delivery').textContent",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        delivery.as_str().unwrap().contains("Confirmed in chart"),
        "{delivery}"
    );
    let ai_total = statements
        .iter()
        .filter(|s| s["origin"] != "clinician")
        .count();
    assert_eq!(
        shown["counts"],
        json!({
            "accepted": (ai_total - 2).to_string(),
            "modified": "1",
            "rejected": "1",
        }),
        "attestation counts"
    );
    let locked = c
        .execute(
            "return { locked: document.querySelector('#note').dataset.locked,
                      buttons: document.querySelectorAll('#note .accept, #note .edit, #note .reject, #note .add-statement, #note textarea').length,
                      save: document.querySelector('#save').hidden || document.querySelector('#save').disabled,
                      sign: document.querySelector('#sign').hidden || document.querySelector('#sign').disabled,
                      addendum: !!document.querySelector('#add-addendum') };",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        locked,
        json!({"locked": "true", "buttons": 0, "save": true, "sign": true, "addendum": true}),
        "a signed note is read-only and offers an addendum"
    );
    c.execute("document.querySelector('#note-col').scrollTop = 0", vec![])
        .await
        .unwrap();
    screenshot(&c, &shots, "review-signed.png").await;

    // ---- an addendum is signed on its own
    click(&c, "#add-addendum").await;
    type_into(&c, "#addendum-text", ADDENDUM_TEXT).await;
    click(&c, "#addendum-submit").await;
    wait_for(
        &c,
        "the signed addendum",
        UI_TIMEOUT,
        "const a = document.querySelector('#addenda .addendum-text'); return a ? a.textContent : null",
    )
    .await;
    logout(&c).await;

    // ---- an IT admin sees no encounter content
    login(&c, &base, ADMIN, ADMIN_PASSWORD).await;
    let error = wait_for(
        &c,
        "the admin's 403 message",
        UI_TIMEOUT,
        "const e = document.querySelector('#error'); return e.hidden ? '' : e.textContent",
    )
    .await;
    assert!(
        error.as_str().unwrap().contains("cannot view encounters"),
        "{error}"
    );
    let list = page_fetch(&c, "GET", "/api/encounters", None).await;
    assert_eq!(list["status"], 403, "{list}");
    let page = c
        .execute(
            "return { items: document.querySelectorAll('#encounter-list li').length,
                      segments: document.querySelectorAll('[data-segment-id]').length,
                      statements: document.querySelectorAll('[data-statement-id]').length,
                      text: document.body.innerText };",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(page["items"], 0, "{page}");
    assert_eq!(page["segments"], 0, "{page}");
    assert_eq!(page["statements"], 0, "{page}");
    let text = page["text"].as_str().unwrap();
    for segment in &transcript {
        let words = segment["text"].as_str().unwrap();
        if words.len() > 12 {
            assert!(
                !text.contains(words),
                "the admin's page shows transcript text"
            );
        }
    }
    assert!(!text.contains(EDITED_TEXT) && !text.contains(ADDED_TEXT));
}

// ---- speaker labels: the overlap marker and corrections

/// The seeded encounter's segment marked as overlapping speech, and the one corrected.
const OVERLAPPED: &str = "s3";
const CORRECTED: &str = "s2";

/// Starts the review service in this runtime over a new store holding one encounter of
/// `CLINICIAN`: the knee visit, with `OVERLAPPED` flagged as overlapping speech. Returns the
/// encounter id and the page's URL.
async fn start_review_service(data: &Path) -> (String, String) {
    use edge_scribe::review::{self, AppState, ReviewSettings};
    use edge_scribe::store::users::NewUser;
    use edge_scribe::store::{Actor, Store};

    let store = Store::open(data).unwrap();
    let clinician = store
        .create_user(
            &NewUser {
                username: CLINICIAN.into(),
                role: "clinician".into(),
                specialty: None,
                password_hash: edge_scribe::auth::hash_password(CLINICIAN_PASSWORD).unwrap(),
            },
            &Actor::System,
        )
        .unwrap();
    let dialogue = std::fs::read_to_string(
        common::repo_root().join("tests/fixtures/dialogues/knee-and-blood-pressure.txt"),
    )
    .unwrap();
    let mut transcript = edge_scribe::transcript::Transcript::from_dialogue(&dialogue).unwrap();
    for segment in &mut transcript.segments {
        segment.overlap = segment.id == OVERLAPPED;
    }
    let encounter = records_fixture::add_encounter(
        &store,
        &transcript,
        &records_fixture::EncounterSpec {
            clinician_id: &clinician,
            patient_ref: None,
            audio: false,
        },
    );
    drop(store);
    let settings = ReviewSettings {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        ..ReviewSettings::default()
    };
    let state = AppState::open(
        data,
        review::ServiceConfig {
            review: settings.clone(),
            ..review::ServiceConfig::default()
        },
    )
    .unwrap();
    let server = review::bind(settings.listen.unwrap(), data, state)
        .await
        .unwrap();
    let base = format!("http://{}/", server.local_addr);
    tokio::spawn(review::serve(server, std::future::pending()));
    (encounter, base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_is_marked_and_a_speaker_corrected_in_the_page_survives_a_reload() {
    require_browser();
    let work = tempfile::tempdir().unwrap();
    let (encounter, base) = start_review_service(&work.path().join("data")).await;
    let (_driver, port) = start_chromedriver(work.path());
    let profile = tempfile::tempdir().unwrap();
    let client = connect_browser(port, profile.path()).await;
    let shots = screenshot_dir(work.path());
    let scenario = tokio::spawn(speaker_scenario(client.clone(), base, encounter, shots));
    let outcome = scenario.await;
    let _ = client.close().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// What the page shows of each segment's speaker: `[id, speaker label text, data-speaker,
/// corrected marker text or null, overlap marker (visible, title, text) or null, editable]`.
const SPEAKER_STATE: &str = "return Array.from(document.querySelectorAll('#transcript [data-segment-id]'), (s) => {
       const label = s.querySelector('.seg-speaker');
       const corrected = s.querySelector('.seg-corrected');
       const overlap = s.querySelector('.seg-overlap');
       const box = overlap && overlap.getBoundingClientRect();
       return [s.dataset.segmentId, label ? label.textContent : null, s.dataset.speaker,
               corrected ? corrected.textContent : null,
               overlap ? [box.width > 0 && box.height > 0 && getComputedStyle(overlap).visibility === 'visible',
                          overlap.title, overlap.textContent] : null,
               !!s.querySelector('button.seg-speaker')];
     })";

async fn open_encounter(c: &Client, encounter: &str) -> Value {
    let item = format!("#encounter-list li[data-encounter-id=\"{encounter}\"] button");
    click(c, &item).await;
    wait_for(
        c,
        "the transcript",
        UI_TIMEOUT,
        &format!("{SPEAKER_STATE}.filter((s) => s[1] !== null).length > 5 ? true : null"),
    )
    .await;
    c.execute(SPEAKER_STATE, vec![]).await.unwrap()
}

fn segment_state<'a>(shown: &'a Value, id: &str) -> &'a Value {
    shown
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s[0] == id)
        .unwrap_or_else(|| panic!("segment {id} is not on the page: {shown}"))
}

async fn speaker_scenario(c: Client, base: String, encounter: String, shots: PathBuf) {
    login(&c, &base, CLINICIAN, CLINICIAN_PASSWORD).await;
    wait_signed_in(&c).await;
    let shown = open_encounter(&c, &encounter).await;

    // ---- the overlap marker is on the overlapped segment only, visible and explained
    for segment in shown.as_array().unwrap() {
        let id = segment[0].as_str().unwrap();
        if id == OVERLAPPED {
            let marker = &segment[4];
            assert_eq!(
                marker[0], true,
                "the overlap marker is not visible: {segment}"
            );
            assert!(
                marker[1].as_str().unwrap().contains("Overlapping speech"),
                "the marker's tooltip: {segment}"
            );
            assert!(
                marker[2].as_str().unwrap().contains("overlapping speech"),
                "the marker's text for screen readers: {segment}"
            );
        } else {
            assert_eq!(
                segment[4],
                Value::Null,
                "only {OVERLAPPED} overlaps: {segment}"
            );
        }
        assert_eq!(
            segment[3],
            Value::Null,
            "nothing is corrected yet: {segment}"
        );
        assert_eq!(
            segment[5], true,
            "an unsigned note's speakers are editable: {segment}"
        );
    }
    assert_eq!(segment_state(&shown, CORRECTED)[1], "Patient", "{shown}");

    // ---- the clinician picks another speaker: saved, and the label changes
    let head = format!("#transcript [data-segment-id=\"{CORRECTED}\"]");
    click(&c, &format!("{head} button.seg-speaker")).await;
    let focused = wait_for(
        &c,
        "the speaker choices",
        UI_TIMEOUT,
        &format!(
            "const s = document.querySelector('{head} select.seg-speaker-select');
             return s && document.activeElement === s ? Array.from(s.options, (o) => o.value) : null"
        ),
    )
    .await;
    assert_eq!(
        focused,
        json!(["clinician", "patient", "other-1", "other-2", "other-3"]),
        "the choices offered"
    );
    css(&c, &format!("{head} select.seg-speaker-select"))
        .await
        .select_by_value("other-1")
        .await
        .expect("choose Other 1");
    wait_for(
        &c,
        "the corrected label",
        UI_TIMEOUT,
        &format!(
            "const s = document.querySelector('{head}');
             return s.dataset.speaker === 'other-1' && s.querySelector('button.seg-speaker')
                    && s.querySelector('.seg-corrected') ? true : null"
        ),
    )
    .await;
    let after = c.execute(SPEAKER_STATE, vec![]).await.unwrap();
    let corrected = segment_state(&after, CORRECTED);
    assert_eq!(corrected[1], "Other 1", "{corrected}");
    assert_eq!(corrected[3], "corrected", "{corrected}");
    let tooltip = c
        .execute(
            &format!("return document.querySelector('{head} .seg-corrected').title"),
            vec![],
        )
        .await
        .unwrap();
    assert!(
        tooltip.as_str().unwrap().contains("Patient"),
        "the corrected marker names the recording's label: {tooltip}"
    );
    c.execute(
        &format!("document.querySelector('{head}').scrollIntoView({{block: 'center'}})"),
        vec![],
    )
    .await
    .unwrap();
    screenshot(&c, &shots, "review-speakers.png").await;

    // ---- the correction is stored: a reload shows it, and so does the API
    c.refresh().await.unwrap();
    wait_for(
        &c,
        "the encounter reopened after the reload",
        UI_TIMEOUT,
        &format!("const s = document.querySelector('{head}'); return s ? s.dataset.speaker : null"),
    )
    .await;
    let reloaded = c.execute(SPEAKER_STATE, vec![]).await.unwrap();
    let corrected = segment_state(&reloaded, CORRECTED);
    assert_eq!(
        (
            corrected[1].clone(),
            corrected[2].clone(),
            corrected[3].clone()
        ),
        (json!("Other 1"), json!("other-1"), json!("corrected")),
        "after the reload: {reloaded}"
    );
    assert_eq!(
        segment_state(&reloaded, OVERLAPPED)[4][0],
        true,
        "{reloaded}"
    );
    let view = page_fetch(&c, "GET", &format!("/api/encounters/{encounter}"), None).await;
    let stored = view["json"]["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == CORRECTED)
        .unwrap()
        .clone();
    assert_eq!(
        (
            stored["speaker"].clone(),
            stored["speaker_corrected"].clone(),
            stored["original_speaker"].clone()
        ),
        (json!("other-1"), json!(true), json!("patient")),
        "{stored}"
    );

    // ---- once signed, the labels are read-only
    let signed = page_fetch(
        &c,
        "POST",
        &format!("/api/encounters/{encounter}/sign"),
        Some(json!({"version": 0})),
    )
    .await;
    assert_eq!(signed["status"], 200, "{signed}");
    c.refresh().await.unwrap();
    wait_for(
        &c,
        "the signed note",
        UI_TIMEOUT,
        "return !document.querySelector('#attestation').hidden",
    )
    .await;
    let locked = c.execute(SPEAKER_STATE, vec![]).await.unwrap();
    for segment in locked.as_array().unwrap() {
        assert_eq!(
            segment[5], false,
            "a signed note's speakers are read-only: {segment}"
        );
    }
    assert_eq!(segment_state(&locked, CORRECTED)[1], "Other 1", "{locked}");
}
