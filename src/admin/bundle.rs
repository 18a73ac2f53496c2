//! The support bundle: what a vendor engineer needs to diagnose a box, and nothing of a
//! patient. It holds settings, versions, counts, health, the recent log (which by design never
//! carries patient content) and check results; patient references in the config are redacted.

use std::io::Write;
use std::path::Path;

use serde_json::{json, Value};

use crate::config::Config;
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot write the bundle: {0}")]
    Zip(#[from] zip::result::ZipError),
    #[error("cannot write the bundle: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("cannot encode {0}")]
    Encode(&'static str),
}

pub struct BundleInputs<'a> {
    pub store: &'a Store,
    pub config: &'a Config,
    pub data_dir: &'a Path,
    pub metrics: String,
    pub health: Value,
}

/// Replaces every `patient_ref` in a config text: a replay source may name a test patient.
pub fn redact_config(text: &str) -> String {
    let Ok(mut doc) = text.parse::<toml_edit::DocumentMut>() else {
        return "# the config could not be parsed, so it is left out\n".into();
    };
    // The list may be written as `[[capture.replay]]` tables or inline (`replay = [{ … }]`);
    // both spellings load the same sources (found by fuzzing: tests/fuzz_corpus.rs).
    match doc.get_mut("capture").and_then(|c| c.get_mut("replay")) {
        Some(toml_edit::Item::ArrayOfTables(replays)) => {
            for table in replays.iter_mut() {
                if table.contains_key("patient_ref") {
                    table["patient_ref"] = toml_edit::value("<redacted>");
                }
            }
        }
        Some(toml_edit::Item::Value(toml_edit::Value::Array(replays))) => {
            for table in replays.iter_mut().filter_map(|r| r.as_inline_table_mut()) {
                if let Some(value) = table.get_mut("patient_ref") {
                    *value = "<redacted>".into();
                }
            }
        }
        _ => {}
    }
    doc.to_string()
}

/// Builds the zip in memory (it is small: text files only).
pub fn build(inputs: &BundleInputs<'_>) -> Result<Vec<u8>, BundleError> {
    let store = inputs.store;
    let mut files: Vec<(&str, String)> = Vec::new();
    let encode = |what: &'static str, value: &Value| {
        serde_json::to_string_pretty(value).map_err(|_| BundleError::Encode(what))
    };
    files.push((
        "manifest.json",
        encode(
            "the manifest",
            &json!({
                "product": "edge-scribe",
                "version": env!("CARGO_PKG_VERSION"),
                "created_at_ms": crate::store::now_ms(),
                "contains": "settings, versions, counts, health, recent log lines; no patient data",
            }),
        )?,
    ));
    let current = store.current_config()?;
    files.push((
        "config.toml",
        current
            .as_ref()
            .map(|c| redact_config(&c.toml))
            .unwrap_or_else(|| "# started without a config file\n".into()),
    ));
    files.push((
        "config-versions.json",
        encode(
            "config versions",
            &serde_json::to_value(store.config_versions()?)
                .map_err(|_| BundleError::Encode("config versions"))?,
        )?,
    ));
    files.push(("metrics.txt", inputs.metrics.clone()));
    files.push(("health.json", encode("health", &inputs.health)?));
    let audit = store.verify_audit()?;
    files.push((
        "audit-verify.json",
        encode(
            "the audit check",
            &json!({
                "intact": audit.is_intact(),
                "entries_checked": audit.checked,
                "first_break_seq": audit.first_break.as_ref().map(|b| b.seq),
            }),
        )?,
    ));
    let devices = crate::capture::all_devices(inputs.config);
    files.push((
        "devices.json",
        encode(
            "devices",
            &serde_json::to_value(&devices).map_err(|_| BundleError::Encode("devices"))?,
        )?,
    ));
    let badges: Vec<Value> = store
        .badges()?
        .into_iter()
        .map(|b| {
            json!({
                "badge_id": b.badge_id,
                "clinician_id": b.clinician_id,
                "last_seen_ms": b.last_seen_ms,
                "signal_dbfs": b.signal_dbfs,
            })
        })
        .collect();
    files.push(("badges.json", encode("badges", &json!(badges))?));
    let disk = super::server::disk_space(inputs.data_dir);
    files.push((
        "system.json",
        encode(
            "system facts",
            &json!({
                "disk_available_bytes": disk.map(|d| d.0),
                "disk_total_bytes": disk.map(|d| d.1),
                "log_filter": crate::logging::current_filter(),
                "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease")
                    .map(|s| s.trim().to_string())
                    .unwrap_or_default(),
            }),
        )?,
    ));
    let mut log = crate::logging::recent_lines().join("\n");
    log.push('\n');
    files.push(("log.txt", log));

    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(0o600);
    for (name, text) in files {
        zip.start_file(name, options)?;
        zip.write_all(text.as_bytes())?;
    }
    Ok(zip.finish()?.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patient_references_are_redacted_and_the_rest_kept() {
        let text = "[[capture.replay]]\npath = \"a.wav\"\npatient_ref = \"MRN-123\"\n";
        let redacted = redact_config(text);
        assert!(!redacted.contains("MRN-123"));
        assert!(redacted.contains("a.wav") && redacted.contains("<redacted>"));
    }

    #[test]
    fn patient_references_in_an_inline_replay_list_are_redacted() {
        for text in [
            "[capture]\nreplay = [{ path = \"a.wav\", patient_ref = \"MRN-123\" }]\n",
            "capture.replay = [{ path = \"a.wav\", patient_ref = \"MRN-123\" }, 3]\n",
            "capture = { replay = [{ path = \"a.wav\", patient_ref = \"MRN-123\" }] }\n",
        ] {
            let redacted = redact_config(text);
            assert!(!redacted.contains("MRN-123"), "{redacted}");
            assert!(redacted.contains("a.wav") && redacted.contains("<redacted>"));
        }
    }
}
