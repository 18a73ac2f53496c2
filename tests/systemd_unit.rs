//! The systemd service: `systemd/edge-scribe.service` passes `systemd-analyze verify`, keeps its
//! `systemd-analyze security` exposure at or below the level recorded in docs/OPERATIONS.md, and
//! the real daemon speaks the notify protocol: READY=1, watchdog pings at half the interval,
//! STOPPING=1 and a clean exit on SIGTERM.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The highest exposure `systemd-analyze security --offline=true` may report: what systemd 252
/// measured (docs/OPERATIONS.md). Anything that loosens the unit fails here.
const MAX_EXPOSURE: f64 = 1.8;

fn unit_source() -> PathBuf {
    common::repo_root().join("systemd/edge-scribe.service")
}

fn systemd_analyze(args: &[&str]) -> Output {
    Command::new("systemd-analyze")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run systemd-analyze ({e}); install the `systemd` package \
                 (scripts/test does: APT_PACKAGES in scripts/lib/env.sh)"
            )
        })
}

fn combined(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The unit as shipped, except that ExecStart runs the binary this build made (verify checks
/// that the executable exists).
fn installable_copy(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(unit_source()).unwrap();
    let shipped = "ExecStart=/usr/bin/edge-scribe run --config /etc/edge-scribe/edge-scribe.toml";
    assert_eq!(
        text.lines().filter(|l| l.starts_with("ExecStart=")).count(),
        1,
        "exactly one ExecStart"
    );
    assert!(
        text.lines().any(|l| l == shipped),
        "ExecStart must be `{shipped}`"
    );
    let built = env!("CARGO_BIN_EXE_edge-scribe");
    let text = text.replace(
        "ExecStart=/usr/bin/edge-scribe ",
        &format!("ExecStart={built} "),
    );
    let path = dir.join("edge-scribe.service");
    std::fs::write(&path, text).unwrap();
    path
}

fn directives() -> Vec<(String, String)> {
    std::fs::read_to_string(unit_source())
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn the_unit_passes_systemd_analyze_verify_without_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let unit = installable_copy(dir.path());
    let output = systemd_analyze(&["verify", unit.to_str().unwrap()]);
    let text = combined(&output);
    assert!(output.status.success(), "verify failed:\n{text}");
    let about_unit: Vec<&str> = text.lines().filter(|l| l.contains("edge-scribe")).collect();
    assert!(
        about_unit.is_empty(),
        "verify warns about the unit:\n{text}"
    );
}

#[test]
fn the_unit_keeps_the_settings_the_appliance_relies_on() {
    let set = directives();
    for (key, value) in [
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        ("WatchdogSec", "30"),
        ("User", "edge-scribe"),
        ("StateDirectory", "edge-scribe"),
        ("StateDirectoryMode", "0700"),
        ("ConfigurationDirectory", "edge-scribe"),
        ("CapabilityBoundingSet", ""),
        ("DevicePolicy", "closed"),
        ("DeviceAllow", "char-alsa rw"),
        ("RestrictNamespaces", "user net"),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("MemoryDenyWriteExecute", "yes"),
        ("UMask", "0077"),
        ("KillMode", "mixed"),
    ] {
        assert!(
            set.iter().any(|(k, v)| k == key && v == value),
            "{key}={value} missing from the unit"
        );
    }
    // The credential carries the name the store looks for in $CREDENTIALS_DIRECTORY.
    let credential = format!(
        "{}:/etc/edge-scribe/credentials/master.key",
        edge_scribe::store::key::CREDENTIAL_NAME
    );
    assert!(
        set.iter()
            .any(|(k, v)| k == "LoadCredential" && *v == credential),
        "LoadCredential={credential} missing from the unit"
    );
}

#[test]
fn the_sysusers_file_creates_the_service_account() {
    let root = tempfile::tempdir().unwrap();
    let file = common::repo_root().join("systemd/edge-scribe.sysusers");
    let output = Command::new("systemd-sysusers")
        .arg(format!("--root={}", root.path().display()))
        .arg("--dry-run")
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run systemd-sysusers ({e}); install `systemd`"));
    let text = combined(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("Creating user 'edge-scribe'"), "{text}");
}

#[test]
fn the_unit_exposure_stays_at_the_recorded_level() {
    let dir = tempfile::tempdir().unwrap();
    let unit = installable_copy(dir.path());
    let output = systemd_analyze(&["security", "--offline=true", unit.to_str().unwrap()]);
    let text = combined(&output);
    let score = text
        .lines()
        .find_map(|l| {
            let rest = l
                .split("Overall exposure level for edge-scribe.service:")
                .nth(1)?;
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
        .unwrap_or_else(|| panic!("no overall exposure level in:\n{text}"));
    eprintln!("systemd-analyze security: exposure {score}");
    assert!(
        score <= MAX_EXPOSURE,
        "exposure {score} is above {MAX_EXPOSURE}; tighten the unit or record why:\n{text}"
    );
}

/// The daemon, stopped with SIGKILL if a failed assertion leaves it running.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn receive(socket: &UnixDatagram, until: Instant) -> Option<String> {
    let remaining = until.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
        return None;
    }
    socket.set_read_timeout(Some(remaining)).unwrap();
    let mut buf = [0u8; 4096];
    match socket.recv(&mut buf) {
        Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(_) => None,
    }
}

#[test]
fn the_daemon_announces_readiness_feeds_the_watchdog_and_reports_stopping() {
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("edge-scribe.toml");
    // No capture source and no LLM: readiness needs only the store, the templates and the
    // review port (port 0, so parallel tests do not collide).
    std::fs::write(
        &config,
        format!(
            "[storage]\ndata_dir = {:?}\n[models]\ndir = {:?}\n[drafting]\nuse_llm = false\n\
             [review]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"\"\n",
            work.path().join("data"),
            common::models_dir()
        ),
    )
    .unwrap();
    let socket_path = work.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let stderr = work.path().join("daemon.stderr");
    let mut daemon = Daemon(
        Command::new(env!("CARGO_BIN_EXE_edge-scribe"))
            .args(["run", "--config"])
            .arg(&config)
            .env("NOTIFY_SOCKET", &socket_path)
            .env("WATCHDOG_USEC", "1000000")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap(),
    );
    let log = || std::fs::read_to_string(&stderr).unwrap_or_default();

    let mut messages = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !messages.iter().any(|m: &String| m.starts_with("READY=1")) {
        if let Some(exit) = daemon.0.try_wait().unwrap() {
            panic!("the daemon exited ({exit}) before READY=1\n{}", log());
        }
        assert!(
            Instant::now() < deadline,
            "no READY=1 within 60 s; got {messages:?}\n{}",
            log()
        );
        let poll = (Instant::now() + Duration::from_millis(200)).min(deadline);
        messages.extend(receive(&socket, poll));
    }
    let ready = messages.iter().find(|m| m.starts_with("READY=1")).unwrap();
    assert!(
        ready.contains("STATUS=ready: 0 encounters stored, 0 failed"),
        "status carries counts only: {ready:?}"
    );

    // WATCHDOG_USEC=1 s: a ping every half second while the processing thread is alive.
    let window = Instant::now() + Duration::from_secs(3);
    let mut pings = 0;
    while let Some(message) = receive(&socket, window) {
        if message == "WATCHDOG=1" {
            pings += 1;
        }
    }
    assert!(pings >= 3, "only {pings} WATCHDOG=1 in 3 s\n{}", log());

    let pid = i32::try_from(daemon.0.id()).unwrap();
    // SAFETY: signals the daemon this test started and still owns (it has not been reaped).
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut stopping = false;
    while !stopping {
        match receive(&socket, deadline) {
            Some(message) => stopping = message.lines().any(|l| l == "STOPPING=1"),
            None => panic!("no STOPPING=1 within 30 s of SIGTERM\n{}", log()),
        }
    }
    let exit = loop {
        if let Some(exit) = daemon.0.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "no exit within 30 s of SIGTERM\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "exit {exit}\n{}", log());
}
