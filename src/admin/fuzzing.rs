//! Entry points for the fuzz targets (`fuzz/`) and their replay test (`tests/fuzz_corpus.rs`):
//! the config parser and every admin API body parser, reached without a store or a running
//! daemon. Each function runs the same code the daemon and the handlers run, up to the point
//! where a handler would touch the database, a worker or the running config.
//!
//! Besides "never panics", the entry points check properties whose failure is a bug even
//! without a panic, and report it as [`Broken`] (a fuzz target turns that into a crash): a
//! rejected config always lists a problem; a room or model edit of readable TOML stays readable
//! and, once it validates, says what was asked; the support bundle's copy of a config keeps no
//! patient reference.
//!
//! Nothing here writes outside the [`Sandbox`] directory: every path of a parsed config is
//! moved into it before the environment checks (which probe and read files) run. Logging is
//! never initialised here; in a process where it is, the log-level body is only parsed, not
//! applied.

use std::path::{Component, Path, PathBuf};

use axum::body::Bytes;
use axum::http::{header, HeaderMap, HeaderValue};

use super::configs;
use super::server;
use crate::config::Config;
use crate::models::install::{self, InstallError, InstallRequest, ModelKind};

/// Whether an input got past every check a handler makes before it touches the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Refused,
}

/// A property that does not hold: a bug, though nothing panicked.
#[derive(Debug, thiserror::Error)]
pub enum Broken {
    #[error("a config was rejected without a single problem listed")]
    NoProblemListed,
    #[error("the {edit} edit turned readable TOML into unreadable TOML: {message}")]
    EditUnreadable { edit: &'static str, message: String },
    #[error("the {edit} edit validated but the parsed config does not show it: {detail}")]
    EditLost { edit: &'static str, detail: String },
    #[error("the support bundle's copy of the config keeps a patient reference")]
    PatientRefKept,
}

/// Admin endpoints that take a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Token,
    PushConfig,
    Rollback,
    Pairing,
    Room,
    Install,
    Switch,
    Level,
}

impl Endpoint {
    pub const ALL: [Endpoint; 8] = [
        Endpoint::Token,
        Endpoint::PushConfig,
        Endpoint::Rollback,
        Endpoint::Pairing,
        Endpoint::Room,
        Endpoint::Install,
        Endpoint::Switch,
        Endpoint::Level,
    ];

    /// The endpoint a fuzz input's selector byte names (modulo their number).
    pub fn from_byte(b: u8) -> Endpoint {
        Endpoint::ALL[usize::from(b) % Endpoint::ALL.len()]
    }

    pub fn route(self) -> &'static str {
        match self {
            Endpoint::Token => "POST /admin/v1/token",
            Endpoint::PushConfig => "PUT /admin/v1/config",
            Endpoint::Rollback => "POST /admin/v1/config/rollback",
            Endpoint::Pairing => "POST /admin/v1/badges",
            Endpoint::Room => "PUT /admin/v1/rooms/{room}",
            Endpoint::Install => "POST /admin/v1/models/install",
            Endpoint::Switch => "PUT /admin/v1/models/active",
            Endpoint::Level => "PUT /admin/v1/log-level",
        }
    }
}

/// Content types a fuzz input's second byte picks from (modulo their number).
pub const CONTENT_TYPES: [&str; 8] = [
    "application/json",
    "application/json; charset=utf-8",
    "application/toml",
    "text/plain; charset=utf-8",
    "",
    "application/x-www-form-urlencoded",
    "Application/JSON",
    "application/jsonp",
];

/// A directory the environment checks may probe, and the config the box "runs".
pub struct Sandbox {
    dir: PathBuf,
    current: Config,
    current_text: String,
}

impl Sandbox {
    /// `dir` is an empty directory the caller owns (and removes); `current_text` is the config
    /// the box runs, which the room and model edits start from. Its problems if it is invalid.
    pub fn new(dir: &Path, current_text: &str) -> Result<Sandbox, Vec<String>> {
        let mut current = configs::parse(current_text, dir)?;
        confine_config(&mut current, dir);
        Ok(Sandbox {
            dir: dir.to_path_buf(),
            current,
            current_text: current_text.to_string(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Config text

/// A config file's text, as the daemon loads it and as `PUT /admin/v1/config` checks it, plus
/// the room and model edits on it and the support bundle's redaction of it.
pub fn config_toml(text: &str, base: &Path) -> Result<Outcome, Broken> {
    // `configs::parse` is `Config::from_toml` with its error flattened into a list.
    let outcome = match configs::parse(text, base) {
        Ok(_) => Outcome::Accepted,
        Err(problems) if problems.is_empty() => return Err(Broken::NoProblemListed),
        Err(_) => Outcome::Refused,
    };
    let edited = configs::set_string(text, "models", "llm", "fuzz-model");
    check_edit("model", edited, base, |config| {
        expect_same("models.llm", &config.llm_model, "fuzz-model")
    })?;
    let geometry = [[0.0, 0.0, 0.0], [0.05, 0.0, 0.0]];
    let edited = configs::set_room(text, "exam-9", "replay-0", &geometry);
    check_edit("room", edited, base, |config| {
        check_room(config, "exam-9", "replay-0", &geometry)
    })?;
    check_redaction(text)?;
    Ok(outcome)
}

/// A config edit's result. An edit succeeds only on text that parses as TOML, so what it gives
/// must parse too; and when the edited config validates, it must show the change.
fn check_edit(
    edit: &'static str,
    edited: Result<String, configs::EditError>,
    base: &Path,
    shows: impl FnOnce(&Config) -> Result<(), String>,
) -> Result<Outcome, Broken> {
    let Ok(edited) = edited else {
        return Ok(Outcome::Refused);
    };
    match configs::parse(&edited, base) {
        Ok(config) => {
            shows(&config).map_err(|detail| Broken::EditLost { edit, detail })?;
            Ok(Outcome::Accepted)
        }
        Err(problems) if problems.is_empty() => Err(Broken::NoProblemListed),
        Err(_) => match toml::from_str::<toml::Table>(&edited) {
            Err(e) => Err(Broken::EditUnreadable {
                edit,
                message: e.message().to_string(),
            }),
            Ok(_) => Ok(Outcome::Refused),
        },
    }
}

fn expect_same(key: &str, found: &str, wanted: &str) -> Result<(), String> {
    if found == wanted {
        Ok(())
    } else {
        Err(format!("{key} is {found:?}, not {wanted:?}"))
    }
}

fn check_room(
    config: &Config,
    name: &str,
    array: &str,
    geometry: &[[f32; 3]],
) -> Result<(), String> {
    let room = config
        .rooms
        .iter()
        .find(|r| r.name == name)
        .ok_or_else(|| format!("no room {name:?}"))?;
    let wanted = Some(array.trim()).filter(|a| !a.is_empty());
    if room.array.as_deref() != wanted {
        return Err(format!(
            "room {name:?} has array {:?}, not {wanted:?}",
            room.array
        ));
    }
    if room.geometry != geometry {
        return Err(format!("room {name:?} has geometry {:?}", room.geometry));
    }
    Ok(())
}

/// The support bundle's copy of `text` keeps no `patient_ref` of a replay source, however the
/// TOML spells the list (tables or inline).
fn check_redaction(text: &str) -> Result<(), Broken> {
    let redacted = super::bundle::redact_config(text);
    let Ok(doc) = toml::from_str::<toml::Table>(&redacted) else {
        return Ok(());
    };
    let replays = doc
        .get("capture")
        .and_then(|c| c.get("replay"))
        .and_then(|r| r.as_array());
    for replay in replays.into_iter().flatten() {
        if let Some(value) = replay.get("patient_ref") {
            if value.as_str() != Some("<redacted>") {
                return Err(Broken::PatientRefKept);
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Admin bodies

/// One admin fuzz input: `[endpoint selector][content-type selector][body]`, where the body may
/// be followed by `\0` and the current config text (else the sandbox's), and by `\0` and the
/// URL parameter (the room name; else `exam-1`).
pub fn admin_input(data: &[u8], sandbox: &Sandbox) -> Result<Outcome, Broken> {
    let [endpoint, content_type, rest @ ..] = data else {
        return Ok(Outcome::Refused);
    };
    let mut parts = rest.splitn(3, |b| *b == 0);
    let body = parts.next().unwrap_or_default();
    let current = parts.next().map(String::from_utf8_lossy);
    let param = parts.next().map(String::from_utf8_lossy);
    admin_body(
        Endpoint::from_byte(*endpoint),
        CONTENT_TYPES[usize::from(*content_type) % CONTENT_TYPES.len()],
        body,
        current.as_deref().unwrap_or(&sandbox.current_text),
        param.as_deref().unwrap_or("exam-1"),
        sandbox,
    )
}

/// A request body for `endpoint` sent with `content_type`, through the parsing and checks the
/// handler runs before it touches the store: `current` stands for the running config's text,
/// `param` for the URL parameter.
pub fn admin_body(
    endpoint: Endpoint,
    content_type: &str,
    body: &[u8],
    current: &str,
    param: &str,
    sandbox: &Sandbox,
) -> Result<Outcome, Broken> {
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(content_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    let bytes = Bytes::copy_from_slice(body);
    let accepted = |ok: bool| {
        if ok {
            Outcome::Accepted
        } else {
            Outcome::Refused
        }
    };
    match endpoint {
        Endpoint::Token => Ok(accepted(
            server::parse_json::<server::TokenBody>(&headers, &bytes).is_ok(),
        )),
        Endpoint::Rollback => Ok(accepted(
            server::parse_json::<server::RollbackBody>(&headers, &bytes).is_ok(),
        )),
        Endpoint::Pairing => {
            let Ok(body) = server::parse_json::<server::PairingBody>(&headers, &bytes) else {
                return Ok(Outcome::Refused);
            };
            Ok(accepted(
                crate::auth::check_username(&body.badge_id).is_ok(),
            ))
        }
        Endpoint::PushConfig => {
            let Ok(text) = server::config_text(&bytes) else {
                return Ok(Outcome::Refused);
            };
            push_config(&text, current, sandbox)
        }
        Endpoint::Room => {
            let Ok(body) = server::parse_json::<server::RoomBody>(&headers, &bytes) else {
                return Ok(Outcome::Refused);
            };
            let edited = configs::set_room(current, param, &body.array, &body.geometry);
            check_edit("room", edited, &sandbox.dir, |config| {
                check_room(config, param, &body.array, &body.geometry)
            })
        }
        Endpoint::Install => {
            let Ok(body) = server::parse_json::<server::InstallBody>(&headers, &bytes) else {
                return Ok(Outcome::Refused);
            };
            // The source never exists, so installing stops after checking the name and hash,
            // before anything is read or written.
            let request = InstallRequest {
                name: body.name,
                kind: body.kind,
                source: sandbox.dir.join("no-such-model-file"),
                sha256: body.sha256,
            };
            match install::install_local_model(&sandbox.current, &request) {
                Err(InstallError::SourceUnreadable { .. }) => Ok(Outcome::Accepted),
                _ => Ok(Outcome::Refused),
            }
        }
        Endpoint::Switch => {
            let Ok(body) = server::parse_json::<server::SwitchBody>(&headers, &bytes) else {
                return Ok(Outcome::Refused);
            };
            let key = match body.role {
                ModelKind::Asr => "asr",
                ModelKind::Llm => "llm",
            };
            let edited = configs::set_string(current, "models", key, &body.name);
            check_edit("model", edited, &sandbox.dir, |config| {
                let found = match body.role {
                    ModelKind::Asr => &config.asr_model,
                    ModelKind::Llm => &config.llm_model,
                };
                expect_same(&format!("models.{key}"), found, &body.name)
            })
        }
        Endpoint::Level => {
            let Ok(body) = server::parse_json::<server::LevelBody>(&headers, &bytes) else {
                return Ok(Outcome::Refused);
            };
            // Without logging set up, `set_filter` parses the filter and stops there.
            let ok = if crate::logging::current_filter().is_none() {
                !matches!(
                    crate::logging::set_filter(&body.level),
                    Err(crate::logging::LogError::BadFilter(_))
                )
            } else {
                tracing_subscriber::EnvFilter::try_new(&body.level).is_ok()
            };
            Ok(accepted(ok))
        }
    }
}

/// `PUT /admin/v1/config` after the body was read as text: parse, the environment checks
/// (within the sandbox), what would change, and the diff `GET /config/versions/N` shows.
fn push_config(text: &str, current: &str, sandbox: &Sandbox) -> Result<Outcome, Broken> {
    let outcome = config_toml(text, &sandbox.dir)?;
    let _ = configs::unified_diff(current, text, "version 1", "version 2");
    let Ok(mut config) = configs::parse(text, &sandbox.dir) else {
        return Ok(Outcome::Refused);
    };
    confine_config(&mut config, &sandbox.dir);
    // The sound cards are left out: enumerating them is slow and says nothing about the input.
    let mut devices = crate::capture::replay_devices(&config);
    devices.push(crate::capture::DeviceInfo {
        id: "array-0".into(),
        kind: "alsa",
        channels: 2,
        sample_rate: 48_000,
        state: "available",
    });
    let _ = configs::check_environment(&config, &sandbox.current, &devices);
    let _ = configs::changes(&sandbox.current, &config);
    Ok(outcome)
}

/// Moves every path of `config` under `dir` (keeping only plain components), so the checks
/// that probe and read files stay inside the sandbox.
fn confine_config(config: &mut Config, dir: &Path) {
    fn confine(dir: &Path, path: &mut PathBuf) {
        let rest = path.strip_prefix(dir).unwrap_or(path.as_path());
        let mut inside = dir.to_path_buf();
        for component in rest.components() {
            if let Component::Normal(part) = component {
                inside.push(part);
            }
        }
        *path = inside;
    }
    confine(dir, &mut config.data_dir);
    confine(dir, &mut config.models_dir);
    confine(dir, &mut config.drafting.templates_dir);
    confine(dir, &mut config.drafting.gaps_dir);
    if let Some(workers) = &mut config.workers.dir {
        confine(dir, workers);
    }
    for source in &mut config.replay_sources {
        confine(dir, &mut source.path);
    }
    for path in [
        &mut config.admin.tls_cert,
        &mut config.admin.tls_key,
        &mut config.admin.client_ca,
    ]
    .into_iter()
    .flatten()
    {
        confine(dir, path);
    }
    for destination in &mut config.sync.destinations {
        if let Some(tls) = &mut destination.tls {
            confine(dir, &mut tls.ca_cert);
            for path in [&mut tls.client_cert, &mut tls.client_key]
                .into_iter()
                .flatten()
            {
                confine(dir, path);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Structure-aware config edits

/// Keys of the lists of tables the shipped config shows only in comments.
const LISTS: [(&str, &str, &[&str]); 3] = [
    ("capture", "room", &["name", "array", "geometry"]),
    (
        "capture",
        "replay",
        &[
            "path",
            "realtime",
            "clinician",
            "consent",
            "patient_ref",
            "badge",
            "room",
        ],
    ),
    (
        "sync",
        "destination",
        &[
            "name",
            "kind",
            "url",
            "address",
            "ca_cert",
            "client_cert",
            "client_key",
            "server_name",
            "timeout_s",
            "max_attempts",
            "backoff_base_ms",
            "backoff_max_s",
            "read_back",
            "document_system",
            "patient_system",
        ],
    ),
];

const INTS: [i64; 36] = [
    0,
    1,
    2,
    -1,
    5,
    9,
    10,
    16,
    17,
    29,
    30,
    60,
    64,
    65,
    100,
    101,
    300,
    301,
    511,
    512,
    600,
    601,
    1000,
    1001,
    1440,
    1441,
    5000,
    10_080,
    10_081,
    60_000,
    60_001,
    131_073,
    4_294_967_295,
    4_294_967_296,
    i64::MAX,
    i64::MIN,
];

const FLOATS: [f64; 16] = [
    0.0,
    -0.0,
    0.05,
    1.0,
    2.0,
    2.000_001,
    -1.0,
    10.0,
    10.000_001,
    100.0,
    100.1,
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    3.5e38,
    f64::MIN_POSITIVE,
];

const STRINGS: [&str; 44] = [
    "",
    " ",
    "forever",
    "never",
    "auto",
    "en",
    "EN",
    "eng",
    "127.0.0.1:0",
    "127.0.0.1:8080",
    "127.0.0.1:8443",
    "[::1]:8443",
    "0.0.0.0:99999",
    "fhir",
    "hl7",
    "http://",
    "https://ehr.example/fhir",
    "http://ehr.example/fhir/",
    "ehr.example:2575",
    ":2575",
    "quality",
    "low-bitrate",
    "very-aggressive",
    "json",
    "text",
    "edge_scribe=debug",
    "info,[{x}]=trace",
    "whisper-tiny.en",
    "smollm2-135m-instruct",
    ".hidden",
    "../../etc/passwd",
    "/",
    "relative/dir",
    "dr-demo",
    "exam-1",
    "replay-0",
    "BADGE-0001",
    "MRN-0001",
    "x.wav",
    "é",
    "\0",
    "a\nb",
    "\"'",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
];

/// Reads fuzz bytes; past the end it gives zeros.
struct Reader<'a> {
    data: &'a [u8],
}

impl Reader<'_> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((first, rest)) => {
                self.data = rest;
                *first
            }
            None => 0,
        }
    }

    fn pick<'t, T>(&mut self, from: &'t [T]) -> Option<&'t T> {
        let i = usize::from(self.byte());
        from.get(i % from.len().max(1))
    }

    fn u64(&mut self) -> u64 {
        (0..8).fold(0u64, |v, _| (v << 8) | u64::from(self.byte()))
    }

    fn text(&mut self) -> String {
        let len = usize::from(self.byte() % 48).min(self.data.len());
        let (text, rest) = self.data.split_at(len);
        self.data = rest;
        String::from_utf8_lossy(text).into_owned()
    }

    fn value(&mut self) -> toml_edit::Value {
        match self.byte() % 9 {
            0 => self.pick(&INTS).copied().unwrap_or(0).into(),
            1 => i64::from_be_bytes(self.u64().to_be_bytes()).into(),
            2 => self.pick(&FLOATS).copied().unwrap_or(0.0).into(),
            3 => f64::from_bits(self.u64()).into(),
            4 => (self.byte() % 2 == 1).into(),
            5 => self.pick(&STRINGS).copied().unwrap_or("").into(),
            6 => self.text().into(),
            7 => {
                let mut positions = toml_edit::Array::new();
                for _ in 0..self.byte() % 20 {
                    let mut xyz = toml_edit::Array::new();
                    for _ in 0..3 {
                        xyz.push(self.pick(&FLOATS).copied().unwrap_or(0.0));
                    }
                    positions.push(xyz);
                }
                positions.into()
            }
            _ => {
                let mut table = toml_edit::InlineTable::new();
                table.insert("x", self.pick(&STRINGS).copied().unwrap_or("").into());
                table.into()
            }
        }
    }
}

/// Every `(section, key)` set in `doc`'s top-level tables.
fn keys_of(doc: &toml_edit::DocumentMut) -> Vec<(String, String)> {
    let mut keys = Vec::new();
    for (section, item) in doc.iter() {
        if let Some(table) = item.as_table_like() {
            for (key, _) in table.iter() {
                keys.push((section.to_string(), key.to_string()));
            }
        }
    }
    keys
}

/// Structure-aware config fuzzing: `ops` drive typed edits of `seed` (a valid config: set a
/// key to a value of any type, remove a key or a section, add tables to the lists, write a list
/// inline, add an unknown key), and the result goes through [`config_toml`]. Mutating values
/// in a valid file reaches the validation rules, which random bytes rarely do. The seed's
/// comment lines are dropped first: parsing them is most of the time an execution takes, and
/// `config_toml`'s own corpus has them.
pub fn config_edits(seed: &str, ops: &[u8], base: &Path) -> Result<Outcome, Broken> {
    let seed: String = seed
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .flat_map(|line| [line, "\n"])
        .collect();
    let Ok(mut doc) = seed.parse::<toml_edit::DocumentMut>() else {
        return config_toml(&seed, base);
    };
    let keys = keys_of(&doc);
    let mut r = Reader { data: ops };
    while !r.data.is_empty() {
        match r.byte() % 8 {
            0 | 1 => {
                if let Some((section, key)) = r.pick(&keys).map(|(s, k)| (s.clone(), k.clone())) {
                    let value = r.value();
                    if let Some(table) = doc.get_mut(&section).and_then(|t| t.as_table_like_mut()) {
                        table.insert(&key, toml_edit::Item::Value(value));
                    }
                }
            }
            2 => {
                if let Some((section, key)) = r.pick(&keys) {
                    if let Some(table) = doc.get_mut(section).and_then(|t| t.as_table_like_mut()) {
                        table.remove(key);
                    }
                }
            }
            3 => {
                let Some((section, list, _)) = r.pick(&LISTS).copied() else {
                    continue;
                };
                let Some(tables) = list_mut(&mut doc, section, list) else {
                    continue;
                };
                let n = tables.len();
                let mut table = toml_edit::Table::new();
                match list {
                    "room" => table["name"] = toml_edit::value(format!("room-{n}")),
                    "replay" => table["path"] = toml_edit::value(format!("visit-{n}.wav")),
                    _ => {
                        table["name"] = toml_edit::value(format!("ehr-{n}"));
                        table["kind"] = toml_edit::value("fhir");
                        table["url"] = toml_edit::value("http://ehr.example/fhir");
                    }
                }
                tables.push(table);
            }
            4 => {
                let Some((section, list, list_keys)) = r.pick(&LISTS).copied() else {
                    continue;
                };
                let (which, key, value) = (r.byte(), r.pick(list_keys).copied(), r.value());
                let Some(tables) = list_mut(&mut doc, section, list) else {
                    continue;
                };
                let len = tables.len().max(1);
                if let (Some(table), Some(key)) = (tables.get_mut(usize::from(which) % len), key) {
                    table[key] = toml_edit::Item::Value(value);
                }
            }
            5 => {
                let sections: Vec<String> = doc.iter().map(|(k, _)| k.to_string()).collect();
                if let Some(section) = r.pick(&sections) {
                    if r.byte().is_multiple_of(2) {
                        doc.remove(section);
                    } else {
                        doc[section.as_str()] = toml_edit::Item::Value(r.value());
                    }
                }
            }
            6 => {
                // The same list written inline: `replay = [{ path = "…" }, …]`.
                let Some((section, list, _)) = r.pick(&LISTS).copied() else {
                    continue;
                };
                if let Some(tables) = list_mut(&mut doc, section, list) {
                    let inline = std::mem::take(tables).into_array();
                    if let Some(table) = doc.get_mut(section).and_then(|t| t.as_table_mut()) {
                        table[list] = toml_edit::Item::Value(inline.into());
                    }
                }
            }
            _ => {
                let sections: Vec<String> = doc.iter().map(|(k, _)| k.to_string()).collect();
                let key = r.text();
                if let Some(section) = r.pick(&sections) {
                    if let Some(table) = doc.get_mut(section).and_then(|t| t.as_table_like_mut()) {
                        if !key.is_empty() {
                            table.insert(&key, toml_edit::value(1));
                        }
                    }
                }
            }
        }
    }
    config_toml(&doc.to_string(), base)
}

/// The `[[section.list]]` tables of `doc`, made when missing; `None` when `section` is not a
/// table or `list` is not a list of tables.
fn list_mut<'a>(
    doc: &'a mut toml_edit::DocumentMut,
    section: &str,
    list: &str,
) -> Option<&'a mut toml_edit::ArrayOfTables> {
    doc.entry(section)
        .or_insert(toml_edit::table())
        .as_table_mut()?
        .entry(list)
        .or_insert(toml_edit::Item::ArrayOfTables(
            toml_edit::ArrayOfTables::new(),
        ))
        .as_array_of_tables_mut()
}
