//! The drafting targets of issue 5 on ACI-Bench valid, extraction only (no model needed): every
//! statement supported by the verifier's verdict and by the harness's independent check, no
//! unsupported number, drug or dose, and ≥ 90 % recall of the vitals, medications and allergies
//! the dialogue states. Runs the real binary: `edge-scribe eval aci`.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// ACI-Bench's CSVs: `$ACI_BENCH_DIR`, else `data/aci-bench` in the checkout.
fn aci_bench_dir() -> PathBuf {
    std::env::var_os("ACI_BENCH_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| common::repo_root().join("data/aci-bench"))
}

/// A missing number (NaN) counts as below any target.
fn below(value: f64, target: f64) -> bool {
    value.is_nan() || value < target
}

#[test]
fn extraction_drafts_on_aci_bench_valid_meet_the_precision_and_recall_targets() {
    let data = aci_bench_dir();
    assert!(
        data.join("valid.csv").is_file(),
        "ACI-Bench is not at {} (set ACI_BENCH_DIR to the directory holding valid.csv)",
        data.display()
    );
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("aci-valid-extraction.json");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edge-scribe"));
    cmd.args([
        "eval",
        "aci",
        "--split",
        "valid",
        "--mode",
        "extraction",
        "--data",
    ])
    .arg(&data)
    .arg("--out")
    .arg(&out);
    let run = common::run_logged(cmd, work.path(), "eval-aci", Duration::from_secs(300));
    assert!(
        run.status.success(),
        "edge-scribe eval aci failed ({}):\n{}",
        run.status,
        run.stderr_tail()
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let t = &report["totals"];
    let num = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
    let count = |key: &str| t["independent"][key].as_u64().unwrap_or(u64::MAX);

    let mut failures = Vec::new();
    if t["errors"].as_u64() != Some(0) {
        failures.push(format!("{} encounters were not drafted", t["errors"]));
    }
    if t["statements"].as_u64().unwrap_or(0) == 0 {
        failures.push("no statements were drafted at all".to_string());
    }
    for key in ["precision_verifier", "precision_independent"] {
        if below(num(&t[key]), 0.99) {
            failures.push(format!("{key} = {:.3} < 0.99", num(&t[key])));
        }
    }
    for key in [
        "unsupported_numbers",
        "unsupported_drugs",
        "unsupported_doses",
    ] {
        if count(key) != 0 {
            failures.push(format!("{key} = {}", count(key)));
        }
    }
    for category in ["vitals", "medications", "allergies"] {
        let rate = num(&t["recall_rate"][category]);
        if below(rate, 0.90) {
            let c = &t["recall"][category];
            failures.push(format!(
                "{category} recall {}/{} = {rate:.3} < 0.90 (missed: {})",
                c["found"], c["stated"], c["missed"]
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "ACI-Bench valid (extraction) misses the issue's targets:\n  {}\nfull report: rerun \
         `edge-scribe eval aci --split valid --out FILE.json`",
        failures.join("\n  ")
    );
}
