//! Checking a pushed config before it goes live, telling what applying it changes, and the text
//! edits behind the room and model endpoints. Pure functions over configs and the file system;
//! the daemon applies, the server records.

use std::path::Path;

use crate::capture::DeviceInfo;
use crate::config::{Config, ConfigError};

/// Parses and validates TOML text the way the daemon loads its file (relative paths against
/// `base`, the config file's directory). Every problem found is listed.
pub fn parse(text: &str, base: &Path) -> Result<Config, Vec<String>> {
    Config::from_toml(text, base).map_err(|e| match e {
        ConfigError::Parse { message, .. } => vec![format!("not valid TOML: {message}")],
        ConfigError::Invalid { problems, .. } => problems,
        ConfigError::Read { source, .. } => vec![format!("cannot read the config: {source}")],
    })
}

/// Checks what schema validation cannot: that what the config names exists on this box and
/// can be used. `devices` are the capture devices present now.
pub fn check_environment(new: &Config, current: &Config, devices: &[DeviceInfo]) -> Vec<String> {
    let mut problems = Vec::new();
    if new.data_dir != current.data_dir {
        problems.push(format!(
            "storage.data_dir cannot change while the box runs (it holds the database); stop \
             the service, move {} and edit the file by hand",
            current.data_dir.display()
        ));
    }
    if !is_writable_dir(&new.data_dir) {
        problems.push(format!(
            "storage.data_dir {} is not a writable directory",
            new.data_dir.display()
        ));
    }
    let asr = crate::inference::asr_model_file(&new.models_dir, &new.asr_model);
    if !asr.is_file() {
        problems.push(format!(
            "models.asr = {:?} is not installed ({} is missing); install it first",
            new.asr_model,
            asr.display()
        ));
    }
    if new.drafting.use_llm {
        if let Err(e) = crate::inference::llm_model_file(&new.models_dir, &new.llm_model) {
            problems.push(format!("models.llm = {:?}: {e}", new.llm_model));
        }
    }
    if let Some(dir) = &new.workers.dir {
        for worker in ["edge-scribe-asr-worker", "edge-scribe-llm-worker"] {
            if !dir.join(worker).is_file() {
                problems.push(format!(
                    "workers.dir {} has no {worker} executable",
                    dir.display()
                ));
            }
        }
    }
    problems.extend(
        crate::sync::check_destinations(&new.sync)
            .into_iter()
            .map(|p| format!("sync: {p}")),
    );
    for (i, source) in new.replay_sources.iter().enumerate() {
        let files = std::iter::once(("path", &source.path))
            .chain(source.badge_audio.iter().map(|p| ("badge_audio", p)));
        for (key, path) in files {
            if !path.is_file() {
                problems.push(format!(
                    "capture.replay[{i}].{key} {} does not exist",
                    path.display()
                ));
            } else if let Err(e) = hound::WavReader::open(path) {
                problems.push(format!(
                    "capture.replay[{i}].{key} {} is not a readable WAV file: {e}",
                    path.display()
                ));
            }
        }
    }
    for room in &new.rooms {
        let Some(array) = &room.array else {
            continue;
        };
        match devices.iter().find(|d| &d.id == array) {
            None => problems.push(format!(
                "capture.room {:?}: no capture device {array:?} on this box (see GET \
                 /admin/v1/devices)",
                room.name
            )),
            Some(device)
                if !room.geometry.is_empty()
                    && usize::from(device.channels) != room.geometry.len() =>
            {
                problems.push(format!(
                    "capture.room {:?}: the geometry lists {} microphones but {array:?} has {} \
                     channels",
                    room.name,
                    room.geometry.len(),
                    device.channels
                ))
            }
            Some(_) => {}
        }
    }
    if let (Some(review), Some(admin)) = (new.review.listen, new.admin.listen) {
        if review == admin && review.port() != 0 {
            problems.push(format!(
                "review.listen and admin.listen are both {review}; the admin port must be its own"
            ));
        }
    }
    for (key, path) in [
        ("admin.tls_cert", &new.admin.tls_cert),
        ("admin.client_ca", &new.admin.client_ca),
    ] {
        if let Some(path) = path {
            if let Err(e) = crate::sync::tls::read_pem_certs(path) {
                problems.push(format!("{key}: {e}"));
            }
        }
    }
    if let Some(key) = &new.admin.tls_key {
        if let Err(e) = crate::sync::tls::read_pem_key(key) {
            problems.push(format!("admin.tls_key: {e}"));
        }
    }
    problems
}

fn is_writable_dir(dir: &Path) -> bool {
    let probe = dir.join(format!(".write-probe-{}", std::process::id()));
    let ok = std::fs::write(&probe, b"").is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

/// What applying a config changes, by component.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Changes {
    /// Applied in place: log level, retention, drafting, models and ASR/VAD settings (the
    /// next encounter uses them).
    pub hot: Vec<&'static str>,
    /// Components the daemon restarts to apply the change (review service, EHR sender).
    pub restarted: Vec<&'static str>,
    /// Changes that take effect at the next service restart.
    pub restart_required: Vec<&'static str>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.hot.is_empty() && self.restarted.is_empty() && self.restart_required.is_empty()
    }
}

/// Sections that differ between two configs. Compared through their debug form: every
/// settings type prints all of its fields, so any change shows.
pub fn changes(old: &Config, new: &Config) -> Changes {
    fn differs<T: std::fmt::Debug>(a: &T, b: &T) -> bool {
        format!("{a:?}") != format!("{b:?}")
    }
    let mut c = Changes::default();
    if old.log_level != new.log_level {
        c.hot.push("log");
    }
    if old.log_format != new.log_format {
        c.restart_required.push("log.format");
    }
    if differs(&old.retention, &new.retention) {
        c.hot.push("retention");
    }
    if differs(&old.drafting, &new.drafting) || differs(&old.llm, &new.llm) {
        c.hot.push("drafting");
    }
    if old.asr_model != new.asr_model
        || old.llm_model != new.llm_model
        || old.models_dir != new.models_dir
    {
        c.hot.push("models");
    }
    if differs(&old.asr, &new.asr) || differs(&old.vad, &new.vad) {
        c.hot.push("asr");
    }
    if differs(&old.workers, &new.workers) {
        c.hot.push("workers");
    }
    if differs(&old.rooms, &new.rooms) {
        c.hot.push("rooms");
    }
    if differs(&old.review, &new.review) {
        c.restarted.push("review");
    }
    if differs(&old.sync, &new.sync) {
        c.restarted.push("sync");
    }
    if differs(&old.replay_sources, &new.replay_sources) {
        c.restart_required.push("capture");
    }
    if differs(&old.admin, &new.admin) {
        c.restart_required.push("admin");
    }
    c
}

/// A unified diff of two config texts, for people.
pub fn unified_diff(old: &str, new: &str, old_name: &str, new_name: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(old_name, new_name)
        .to_string()
}

#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("the current config is not valid TOML: {0}")]
    Parse(String),
    #[error("{0}")]
    Shape(String),
}

/// Sets `[section] key = value` (a string), keeping the rest of the text and its comments.
pub fn set_string(text: &str, section: &str, key: &str, value: &str) -> Result<String, EditError> {
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| EditError::Parse(e.to_string()))?;
    let table = doc
        .entry(section)
        .or_insert(toml_edit::table())
        .as_table_mut()
        .ok_or_else(|| EditError::Shape(format!("[{section}] is not a table")))?;
    table[key] = toml_edit::value(value);
    Ok(doc.to_string())
}

/// Sets a room's array and geometry (adding the room if it is new) in `[[capture.room]]`.
pub fn set_room(
    text: &str,
    name: &str,
    array: &str,
    geometry: &[[f32; 3]],
) -> Result<String, EditError> {
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| EditError::Parse(e.to_string()))?;
    let capture = doc
        .entry("capture")
        .or_insert(toml_edit::table())
        .as_table_mut()
        .ok_or_else(|| EditError::Shape("[capture] is not a table".into()))?;
    let rooms = capture
        .entry("room")
        .or_insert(toml_edit::Item::ArrayOfTables(
            toml_edit::ArrayOfTables::new(),
        ))
        .as_array_of_tables_mut()
        .ok_or_else(|| EditError::Shape("capture.room is not a list of [[capture.room]]".into()))?;
    let mut positions = toml_edit::Array::new();
    for mic in geometry {
        let mut xyz = toml_edit::Array::new();
        for v in mic {
            xyz.push(f64::from(*v));
        }
        positions.push(xyz);
    }
    let existing = rooms
        .iter_mut()
        .find(|t| t.get("name").and_then(|v| v.as_str()) == Some(name));
    let table = match existing {
        Some(table) => table,
        None => {
            let mut table = toml_edit::Table::new();
            table["name"] = toml_edit::value(name);
            rooms.push(table);
            let last = rooms.len() - 1;
            rooms
                .get_mut(last)
                .ok_or_else(|| EditError::Shape("cannot add the room".into()))?
        }
    };
    table["array"] = toml_edit::value(array);
    table["geometry"] = toml_edit::value(positions);
    Ok(doc.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_edits_keep_comments_and_parse_back() {
        let text = "# the clinic's box\n[log]\nlevel = \"info\" # quiet\n";
        let edited = set_string(text, "models", "llm", "clinic-llm").unwrap();
        assert!(edited.contains("# the clinic's box") && edited.contains("# quiet"));
        let edited = set_room(
            &edited,
            "exam-1",
            "replay-0",
            &[[0.0, 0.0, 0.0], [0.05, 0.0, 0.0]],
        )
        .unwrap();
        let edited = set_room(&edited, "exam-1", "replay-1", &[]).unwrap();
        let doc: toml::Value = toml::from_str(&edited).unwrap();
        assert_eq!(doc["models"]["llm"].as_str(), Some("clinic-llm"));
        let rooms = doc["capture"]["room"].as_array().unwrap();
        assert_eq!(rooms.len(), 1);
        assert_eq!(rooms[0]["array"].as_str(), Some("replay-1"));
    }

    #[test]
    fn every_schema_problem_is_listed() {
        let problems = parse(
            "[review]\nlisten = \"nowhere\"\n[admin]\ntoken_minutes = 0\n",
            Path::new("/"),
        )
        .unwrap_err();
        assert!(
            problems.iter().any(|p| p.contains("review.listen")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("admin.token_minutes")),
            "{problems:?}"
        );
        let problems = parse("[review\n", Path::new("/")).unwrap_err();
        assert!(problems[0].starts_with("not valid TOML"));
    }

    #[test]
    fn changes_name_the_components_to_touch() {
        let old = Config::defaults().unwrap();
        let mut new = old.clone();
        new.log_level = "debug".into();
        new.review.listen = None;
        new.admin.token_ttl = std::time::Duration::from_secs(60);
        let c = changes(&old, &new);
        assert_eq!(c.hot, ["log"]);
        assert_eq!(c.restarted, ["review"]);
        assert_eq!(c.restart_required, ["admin"]);
        assert!(changes(&old, &old).is_empty());
    }
}
