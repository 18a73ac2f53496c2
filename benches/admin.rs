//! The admin port's operations on the real daemon over HTTPS: a config change applied in place,
//! one that restarts the review service, and the obvious alternative — editing the file and
//! restarting the service (SIGTERM, start, wait until `/ready`) — plus a metrics scrape and the
//! support bundle.
//!
//!   cargo bench --bench admin -- [--out docs/BENCHMARKS.md] [--repeats 10]

#[path = "report/mod.rs"]
mod report;

#[path = "../tests/admin_support/mod.rs"]
mod admin_support;

use std::time::{Duration, Instant};

use admin_support::{add_user, base_config, Admin, Daemon};

const MARK_START: &str = "<!-- admin-bench:start -->";
const MARK_END: &str = "<!-- admin-bench:end -->";

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[index.min(samples.len() - 1)]
}

fn wait_ready(admin: &Admin) {
    let started = Instant::now();
    while admin.get("/admin/v1/ready").status != 200 {
        assert!(started.elapsed() < Duration::from_secs(120), "never ready");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn main() {
    let repeats: usize = arg("--repeats").and_then(|r| r.parse().ok()).unwrap_or(10);
    let out = arg("--out");
    let work = tempfile::tempdir().expect("temp dir");
    let config_path = work.path().join("edge-scribe.toml");
    let base = base_config(work.path(), "");
    std::fs::write(&config_path, &base).expect("config");
    add_user(&config_path, "it-admin", "admin");

    let mut daemon = Daemon::start(work.path(), &config_path, "bench");
    let mut admin = Admin::new(daemon.addr("admin.addr"), &daemon.data);
    wait_ready(&admin);
    admin.sign_in("it-admin");

    let time = |f: &mut dyn FnMut()| {
        let started = Instant::now();
        f();
        started.elapsed().as_secs_f64() * 1000.0
    };
    let mut hot = Vec::new();
    let mut restart_review = Vec::new();
    for i in 0..repeats {
        let level = if i % 2 == 0 { "debug" } else { "info" };
        let text = base.replace("level = \"info\"", &format!("level = \"{level}\""));
        hot.push(time(&mut || {
            let answer = admin.put_config(&text);
            assert_eq!(answer.status, 200, "{}", answer.text());
        }));
        let minutes = 15 + (i % 2);
        let text = base.replace(
            "[review]\n",
            &format!("[review]\nsession_idle_minutes = {minutes}\n"),
        );
        restart_review.push(time(&mut || {
            let answer = admin.put_config(&text);
            assert_eq!(answer.status, 200, "{}", answer.text());
        }));
    }
    let mut scrape = Vec::new();
    let mut bundle = Vec::new();
    for _ in 0..repeats {
        scrape.push(time(&mut || {
            assert_eq!(admin.get("/admin/v1/metrics").status, 200);
        }));
        bundle.push(time(&mut || {
            assert_eq!(admin.get("/admin/v1/support-bundle").status, 200);
        }));
    }
    // The alternative: edit the file and restart the service until it is ready again.
    let mut full_restart = Vec::new();
    for _ in 0..repeats.min(5) {
        let started = Instant::now();
        assert!(daemon.stop().success());
        daemon = Daemon::start(work.path(), &config_path, "bench");
        admin = Admin::new(daemon.addr("admin.addr"), &daemon.data);
        wait_ready(&admin);
        full_restart.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    assert!(daemon.stop().success());

    let hot_p50 = percentile(&mut hot, 0.5);
    let review_p50 = percentile(&mut restart_review, 0.5);
    let restart_p50 = percentile(&mut full_restart, 0.5);
    let row = |name: &str, samples: &mut Vec<f64>| {
        format!(
            "| {name} | {} | {:.1} ms | {:.1} ms |",
            samples.len(),
            percentile(samples, 0.5),
            percentile(samples, 0.95)
        )
    };
    let md = [
        MARK_START.to_owned(),
        "## 7. Admin port: config changes, metrics, support bundle".into(),
        String::new(),
        format!(
            "Command: `cargo bench --bench admin -- --out docs/BENCHMARKS.md --repeats {repeats}`. \
             The real daemon (no LLM, no capture source) over HTTPS on loopback; each config \
             push is the whole round trip: TLS request, validation against the box (models, \
             files, certificates, devices), a new version in the store, the file written, the \
             change applied and the health check passed."
        ),
        String::new(),
        "| operation | runs | p50 | p95 |".into(),
        "|---|---:|---:|---:|".into(),
        row("config push, applied in place (log level)", &mut hot),
        row(
            "config push restarting the review service",
            &mut restart_review,
        ),
        row(
            "alternative: edit the file, restart the daemon, wait for /ready",
            &mut full_restart,
        ),
        row("GET /admin/v1/metrics", &mut scrape),
        row("GET /admin/v1/support-bundle", &mut bundle),
        String::new(),
        format!(
            "A change applied in place takes {:.0}× less time than restarting the service for \
             it ({hot_p50:.0} ms vs {restart_p50:.0} ms), and one that restarts only the review \
             service {:.0}× less ({review_p50:.0} ms); neither interrupts a visit being \
             processed, which a service restart would (it drains the visit first).",
            restart_p50 / hot_p50.max(0.001),
            restart_p50 / review_p50.max(0.001),
        ),
        MARK_END.to_owned(),
    ]
    .join("\n");
    report::publish(&md, MARK_START, MARK_END, out.as_deref());
}
