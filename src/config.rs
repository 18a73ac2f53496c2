//! Configuration in two steps: [`RawConfig`] mirrors the TOML file exactly (unknown keys are an
//! error), and [`Config`] is the validated, typed form the rest of the program uses, with every
//! path resolved and every value checked. Each default is defined once, in the `Default` impls
//! of the raw structs. This module does no I/O beyond reading the one file it is given.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML for edge-scribe: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path} has invalid values:\n  - {}", problems.join("\n  - "))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub storage: RawStorage,
    pub models: RawModels,
    pub asr: RawAsr,
    pub llm: RawLlm,
    pub drafting: RawDrafting,
    pub vad: RawVad,
    pub workers: RawWorkers,
    pub capture: RawCapture,
    pub review: RawReview,
    pub retention: RawRetention,
    pub sync: RawSync,
    pub admin: RawAdmin,
    pub log: RawLog,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStorage {
    pub data_dir: String,
}

impl Default for RawStorage {
    fn default() -> Self {
        Self {
            data_dir: "/var/lib/edge-scribe".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawModels {
    pub dir: String,
    pub asr: String,
    pub llm: String,
}

impl Default for RawModels {
    fn default() -> Self {
        Self {
            dir: "/var/lib/edge-scribe/models".into(),
            asr: "whisper-tiny.en".into(),
            llm: "smollm2-135m-instruct".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAsr {
    pub language: String,
    pub beam_size: u32,
    pub threads: u32,
    pub initial_prompt: String,
}

impl Default for RawAsr {
    fn default() -> Self {
        Self {
            language: "en".into(),
            beam_size: 1,
            threads: 2,
            initial_prompt: String::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLlm {
    pub threads: u32,
    pub context_tokens: u32,
    pub max_tokens: u32,
    pub temperature: f32,
    pub seed: u32,
    pub max_statements_per_section: u32,
    pub draft_time_budget_s: u32,
}

impl Default for RawLlm {
    fn default() -> Self {
        Self {
            threads: 2,
            context_tokens: 4096,
            max_tokens: 900,
            temperature: 0.0,
            seed: 42,
            max_statements_per_section: 4,
            draft_time_budget_s: 12,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDrafting {
    pub templates_dir: String,
    pub template: String,
    pub use_llm: bool,
    pub gaps_dir: String,
    pub suggest_codes: bool,
}

impl Default for RawDrafting {
    fn default() -> Self {
        Self {
            templates_dir: "/etc/edge-scribe/templates".into(),
            template: "soap".into(),
            use_llm: true,
            gaps_dir: "/etc/edge-scribe/gaps".into(),
            suggest_codes: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawVad {
    pub mode: String,
    pub min_speech_ms: u32,
    pub min_silence_ms: u32,
    pub padding_ms: u32,
    pub max_region_s: u32,
}

impl Default for RawVad {
    fn default() -> Self {
        Self {
            mode: "aggressive".into(),
            min_speech_ms: 250,
            min_silence_ms: 400,
            padding_ms: 200,
            max_region_s: 28,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawWorkers {
    pub dir: String,
    pub startup_timeout_s: u32,
    pub request_timeout_s: u32,
    pub timeout_per_audio_s: f32,
    pub max_attempts: u32,
    pub restart_backoff_ms: u32,
    pub restart_backoff_max_ms: u32,
}

impl Default for RawWorkers {
    fn default() -> Self {
        Self {
            dir: String::new(),
            startup_timeout_s: 60,
            request_timeout_s: 60,
            timeout_per_audio_s: 2.0,
            max_attempts: 4,
            restart_backoff_ms: 200,
            restart_backoff_max_ms: 5000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawCapture {
    pub replay: Vec<RawReplaySource>,
    pub room: Vec<RawRoom>,
}

/// An exam room: the tabletop array that hears it and the array's microphone positions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoom {
    pub name: String,
    /// The capture device (name or id) of the room's array; empty = none assigned yet.
    #[serde(default)]
    pub array: String,
    /// Microphone positions in metres, one `[x, y, z]` per channel.
    #[serde(default)]
    pub geometry: Vec<[f32; 3]>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReplaySource {
    pub path: String,
    #[serde(default)]
    pub realtime: bool,
    /// User name of the clinician the encounter belongs to (who may review and sign it).
    #[serde(default)]
    pub clinician: Option<String>,
    /// Whether the patient consented to recording; without it the audio is not kept.
    #[serde(default = "default_true")]
    pub consent: bool,
    /// The patient's identifier in the EHR (e.g. the MRN), which the signed note is filed under.
    #[serde(default)]
    pub patient_ref: Option<String>,
    /// The badge heard in this recording (its device id or serial): when it is paired, the
    /// encounter belongs to the badge's clinician.
    #[serde(default)]
    pub badge: Option<String>,
    /// The room the recording was made in (a `[[capture.room]]` name). When the recording has
    /// one channel per mic of that room's geometry, it goes through the room front end.
    #[serde(default)]
    pub room: Option<String>,
    /// The badge's own recording of the same visit (a WAV file), heard alongside the room's
    /// array: its voice is marked as the clinician's.
    #[serde(default)]
    pub badge_audio: Option<String>,
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSync {
    /// How often the sender looks for due deliveries when idle, in milliseconds.
    pub poll_ms: u32,
    pub destination: Vec<RawDestination>,
}

impl Default for RawSync {
    fn default() -> Self {
        Self {
            poll_ms: 100,
            destination: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDestination {
    pub name: String,
    /// "fhir" or "hl7".
    pub kind: String,
    /// FHIR base URL (http:// or https://).
    #[serde(default)]
    pub url: Option<String>,
    /// MLLP host:port.
    #[serde(default)]
    pub address: Option<String>,
    /// PEM file of the CA that signed the EHR's certificate: turns TLS on (HL7: MLLP over TLS).
    #[serde(default)]
    pub ca_cert: Option<String>,
    #[serde(default)]
    pub client_cert: Option<String>,
    #[serde(default)]
    pub client_key: Option<String>,
    /// The name the EHR's certificate carries, when `address` is an IP it does not name.
    #[serde(default)]
    pub server_name: Option<String>,
    #[serde(default = "default_timeout_s")]
    pub timeout_s: u32,
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_backoff_base_ms")]
    pub backoff_base_ms: u32,
    #[serde(default = "default_backoff_max_s")]
    pub backoff_max_s: u32,
    #[serde(default = "default_true")]
    pub read_back: bool,
    #[serde(default = "default_document_system")]
    pub document_system: String,
    #[serde(default = "default_patient_system")]
    pub patient_system: String,
}

fn default_timeout_s() -> u32 {
    10
}
fn default_max_attempts() -> u32 {
    12
}
fn default_backoff_base_ms() -> u32 {
    500
}
fn default_backoff_max_s() -> u32 {
    300
}
fn default_document_system() -> String {
    "urn:edge-scribe:note".into()
}
fn default_patient_system() -> String {
    "urn:clinic:mrn".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestinationKind {
    Fhir,
    Hl7,
}

/// One EHR endpoint the signed notes go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationSettings {
    pub name: String,
    pub kind: DestinationKind,
    pub url: Option<String>,
    pub address: Option<String>,
    pub tls: Option<crate::sync::tls::TlsFiles>,
    pub server_name: Option<String>,
    pub timeout: Duration,
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub read_back: bool,
    pub document_system: String,
    pub patient_system: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncSettings {
    pub poll_interval: Duration,
    pub destinations: Vec<DestinationSettings>,
}

impl RawSync {
    fn validate(&self, base: &Path, problems: &mut Vec<String>) -> SyncSettings {
        let mut destinations = Vec::new();
        let mut names = std::collections::HashSet::new();
        for (i, d) in self.destination.iter().enumerate() {
            let key = format!("sync.destination[{i}]");
            if !is_model_name(&d.name) || !names.insert(d.name.clone()) {
                problems.push(format!(
                    "{key}.name = {:?} must be a unique name of letters, digits, '-', '_', '.'",
                    d.name
                ));
            }
            let kind = match d.kind.as_str() {
                "fhir" => DestinationKind::Fhir,
                "hl7" => DestinationKind::Hl7,
                other => {
                    problems.push(format!(
                        "{key}.kind = {other:?} must be \"fhir\" or \"hl7\""
                    ));
                    continue;
                }
            };
            match kind {
                DestinationKind::Fhir => {
                    let ok = d.url.as_deref().is_some_and(|u| {
                        let rest = u
                            .strip_prefix("https://")
                            .or_else(|| u.strip_prefix("http://"));
                        rest.is_some_and(|r| !r.is_empty())
                    });
                    if !ok {
                        problems.push(format!("{key}.url must be the FHIR base, http(s)://…"));
                    }
                    if d.url.as_deref().is_some_and(|u| u.starts_with("https://"))
                        && d.ca_cert.is_none()
                    {
                        problems.push(format!(
                            "{key}: an https url needs ca_cert (the CA that signed the EHR's certificate)"
                        ));
                    }
                }
                DestinationKind::Hl7 => {
                    if !d.address.as_deref().is_some_and(|a| {
                        a.rsplit_once(':')
                            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
                    }) {
                        problems.push(format!(
                            "{key}.address must be host:port of the MLLP receiver"
                        ));
                    }
                }
            }
            if d.client_cert.is_some() != d.client_key.is_some() {
                problems.push(format!("{key}: client_cert and client_key go together"));
            }
            if d.client_cert.is_some() && d.ca_cert.is_none() {
                problems.push(format!("{key}: a client certificate needs ca_cert (TLS)"));
            }
            if !(1..=300).contains(&d.timeout_s) {
                problems.push(format!("{key}.timeout_s must be 1..300"));
            }
            if !(1..=1000).contains(&d.max_attempts) {
                problems.push(format!("{key}.max_attempts must be 1..1000"));
            }
            destinations.push(DestinationSettings {
                name: d.name.clone(),
                kind,
                url: d.url.as_ref().map(|u| u.trim_end_matches('/').to_owned()),
                address: d.address.clone(),
                tls: d.ca_cert.as_ref().map(|ca| crate::sync::tls::TlsFiles {
                    ca_cert: resolve(base, ca),
                    client_cert: d.client_cert.as_ref().map(|c| resolve(base, c)),
                    client_key: d.client_key.as_ref().map(|k| resolve(base, k)),
                }),
                server_name: d.server_name.clone(),
                timeout: Duration::from_secs(d.timeout_s.into()),
                max_attempts: d.max_attempts,
                backoff_base: Duration::from_millis(d.backoff_base_ms.into()),
                backoff_max: Duration::from_secs(d.backoff_max_s.into()),
                read_back: d.read_back,
                document_system: d.document_system.clone(),
                patient_system: d.patient_system.clone(),
            });
        }
        if !(10..=60_000).contains(&self.poll_ms) {
            problems.push("sync.poll_ms must be 10..60000".into());
        }
        SyncSettings {
            poll_interval: Duration::from_millis(self.poll_ms.into()),
            destinations,
        }
    }
}

/// A retention period: a number of days, or "forever".
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum RawDays {
    Days(u32),
    Word(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRetention {
    pub audio_after_signoff_days: RawDays,
    pub audio_unsigned_days: RawDays,
    pub transcript_days: RawDays,
    pub unsigned_draft_days: RawDays,
    pub draft_after_signoff_days: RawDays,
    /// How often the retention job runs.
    pub interval_minutes: u32,
}

impl Default for RawRetention {
    fn default() -> Self {
        Self {
            audio_after_signoff_days: RawDays::Days(7),
            audio_unsigned_days: RawDays::Days(30),
            transcript_days: RawDays::Days(30),
            unsigned_draft_days: RawDays::Word("forever".into()),
            draft_after_signoff_days: RawDays::Days(0),
            interval_minutes: 60,
        }
    }
}

impl RawRetention {
    fn validate(&self, problems: &mut Vec<String>) -> RetentionSettings {
        let mut days = |key: &str, value: &RawDays| match value {
            RawDays::Days(n) => Some(*n),
            RawDays::Word(w) if w == "forever" => None,
            RawDays::Word(w) => {
                problems.push(format!(
                    "retention.{key} = {w:?} must be a number of days or \"forever\""
                ));
                None
            }
        };
        let policy = crate::store::RetentionPolicy {
            audio_after_signoff_days: days(
                "audio_after_signoff_days",
                &self.audio_after_signoff_days,
            ),
            audio_unsigned_days: days("audio_unsigned_days", &self.audio_unsigned_days),
            transcript_days: days("transcript_days", &self.transcript_days),
            unsigned_draft_days: days("unsigned_draft_days", &self.unsigned_draft_days),
            draft_after_signoff_days: days(
                "draft_after_signoff_days",
                &self.draft_after_signoff_days,
            ),
        };
        if !(1..=7 * 24 * 60).contains(&self.interval_minutes) {
            problems.push("retention.interval_minutes must be 1..10080".into());
        }
        RetentionSettings {
            policy,
            interval: Duration::from_secs(u64::from(self.interval_minutes) * 60),
        }
    }
}

/// What is kept how long, and how often the job that enforces it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionSettings {
    pub policy: crate::store::RetentionPolicy,
    pub interval: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawReview {
    /// `host:port` of the review page and API; empty turns the service off.
    pub listen: String,
    pub session_idle_minutes: u32,
    pub session_max_hours: u32,
}

impl Default for RawReview {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            session_idle_minutes: 15,
            session_max_hours: 12,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmin {
    /// `host:port` of the HTTPS admin API; empty turns it off.
    pub listen: String,
    /// PEM certificate chain and key the admin port presents; both empty = a self-signed
    /// certificate made at first start in `<data_dir>/admin-tls/`.
    pub tls_cert: String,
    pub tls_key: String,
    /// PEM CA whose client certificates the admin port requires; empty = tokens only.
    pub client_ca: String,
    /// Lifetime of an admin token, in minutes.
    pub token_minutes: u32,
    /// How long an applied config has to prove healthy before it is rolled back, in seconds.
    pub health_check_s: u32,
}

impl Default for RawAdmin {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8443".into(),
            tls_cert: String::new(),
            tls_key: String::new(),
            client_ca: String::new(),
            token_minutes: 15,
            health_check_s: 10,
        }
    }
}

impl RawAdmin {
    fn validate(&self, base: &Path, problems: &mut Vec<String>) -> AdminSettings {
        let listen = self.listen.trim();
        let listen = if listen.is_empty() {
            None
        } else {
            listen.parse().map(Some).unwrap_or_else(|_| {
                problems.push(format!(
                    "admin.listen = {listen:?} is not an address like 127.0.0.1:8443 \
                     (empty turns the admin API off)"
                ));
                None
            })
        };
        let path = |value: &str| {
            Some(value.trim())
                .filter(|v| !v.is_empty())
                .map(|v| resolve(base, v))
        };
        let (tls_cert, tls_key) = (path(&self.tls_cert), path(&self.tls_key));
        if tls_cert.is_some() != tls_key.is_some() {
            problems.push(
                "admin.tls_cert and admin.tls_key go together: set both, or neither for a \
                 self-signed certificate"
                    .into(),
            );
        }
        if !(1..=24 * 60).contains(&self.token_minutes) {
            problems.push("admin.token_minutes must be 1..1440".into());
        }
        if !(1..=600).contains(&self.health_check_s) {
            problems.push("admin.health_check_s must be 1..600".into());
        }
        AdminSettings {
            listen,
            tls_cert,
            tls_key,
            client_ca: path(&self.client_ca),
            token_ttl: Duration::from_secs(u64::from(self.token_minutes) * 60),
            health_check: Duration::from_secs(self.health_check_s.into()),
        }
    }
}

/// The admin API's settings (config `[admin]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    pub listen: Option<std::net::SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub client_ca: Option<PathBuf>,
    pub token_ttl: Duration,
    pub health_check: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    pub level: String,
    pub format: String,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: "text".into(),
        }
    }
}

impl RawReview {
    fn validate(&self, problems: &mut Vec<String>) -> crate::review::ReviewSettings {
        let listen = self.listen.trim();
        let listen = if listen.is_empty() {
            None
        } else {
            match listen.parse() {
                Ok(addr) => Some(addr),
                Err(_) => {
                    problems.push(format!(
                        "review.listen = {listen:?} is not an address like 127.0.0.1:8080 \
                         (empty turns the review service off)"
                    ));
                    None
                }
            }
        };
        if !(1..=24 * 60).contains(&self.session_idle_minutes) {
            problems.push("review.session_idle_minutes must be 1..1440".into());
        }
        if !(1..=72).contains(&self.session_max_hours) {
            problems.push("review.session_max_hours must be 1..72".into());
        }
        crate::review::ReviewSettings {
            listen,
            session_idle: Duration::from_secs(u64::from(self.session_idle_minutes) * 60),
            session_max: Duration::from_secs(u64::from(self.session_max_hours) * 3600),
        }
    }
}

/// webrtc-vad's aggressiveness levels, from most to least permissive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadMode {
    Quality,
    LowBitrate,
    Aggressive,
    VeryAggressive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct AsrSettings {
    pub language: String,
    pub beam_size: u32,
    pub threads: u32,
    pub initial_prompt: Option<String>,
}

#[derive(Debug, Clone)]
pub struct LlmSettings {
    pub threads: u32,
    pub context_tokens: u32,
    pub max_tokens: u32,
    pub temperature: f32,
    pub seed: u32,
    pub max_statements_per_section: u32,
    /// After this long, sections not yet rephrased keep the extracted wording.
    pub draft_time_budget: Duration,
}

#[derive(Debug, Clone)]
pub struct DraftingSettings {
    /// Directory of note templates (`*.toml`), read when drafting starts.
    pub templates_dir: PathBuf,
    /// Template id used when an encounter names no type.
    pub template: String,
    /// false = extraction-only drafts: the LLM worker is never started.
    pub use_llm: bool,
    /// Directory of documentation-gap rules (`*.toml`) added to the built-in ones.
    pub gaps_dir: PathBuf,
    /// Suggest ICD-10-CM codes (needs the `icd10cm` code set installed by `models fetch`).
    pub suggest_codes: bool,
}

#[derive(Debug, Clone)]
pub struct VadSettings {
    pub mode: VadMode,
    pub min_speech: Duration,
    pub min_silence: Duration,
    pub padding: Duration,
    pub max_region: Duration,
}

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Directory holding the worker executables; `None` means next to the running binary.
    pub dir: Option<PathBuf>,
    pub startup_timeout: Duration,
    pub request_timeout: Duration,
    /// Extra time allowed per second of audio in a transcription request.
    pub timeout_per_audio_second: f32,
    pub max_attempts: u32,
    pub restart_backoff: Duration,
    pub restart_backoff_max: Duration,
}

#[derive(Debug, Clone)]
pub struct ReplaySource {
    pub path: PathBuf,
    pub realtime: bool,
    pub clinician: Option<String>,
    pub consent: bool,
    pub patient_ref: Option<String>,
    pub badge: Option<String>,
    pub room: Option<String>,
    pub badge_audio: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Room {
    pub name: String,
    pub array: Option<String>,
    pub geometry: Vec<[f32; 3]>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub models_dir: PathBuf,
    pub asr_model: String,
    pub llm_model: String,
    pub asr: AsrSettings,
    pub llm: LlmSettings,
    pub drafting: DraftingSettings,
    pub vad: VadSettings,
    pub workers: WorkerSettings,
    pub replay_sources: Vec<ReplaySource>,
    pub rooms: Vec<Room>,
    pub review: crate::review::ReviewSettings,
    pub admin: AdminSettings,
    pub retention: RetentionSettings,
    pub sync: SyncSettings,
    pub log_level: String,
    pub log_format: LogFormat,
}

impl Config {
    /// Reads, parses and validates a config file. Relative paths in it are taken relative to
    /// the file's own directory, so a config means the same thing whatever the working directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        // Absolute, because workers run with `/` as their working directory.
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let base = std::path::absolute(&base).unwrap_or(base);
        Self::from_toml(&text, &base).map_err(|e| e.with_path(path))
    }

    /// Parses and validates TOML text; relative paths are resolved against `base`.
    pub fn from_toml(text: &str, base: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            message: e.to_string(),
        })?;
        raw.validate(base)
    }

    /// The configuration used when no file is given (a test keeps it valid).
    pub fn defaults() -> Result<Config, ConfigError> {
        RawConfig::default().validate(Path::new("/"))
    }
}

impl ConfigError {
    fn with_path(self, path: &Path) -> ConfigError {
        match self {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            ConfigError::Invalid { problems, .. } => ConfigError::Invalid {
                path: path.to_path_buf(),
                problems,
            },
            other => other,
        }
    }
}

fn resolve(base: &Path, value: &str) -> PathBuf {
    let path = PathBuf::from(value);
    if path.is_absolute() {
        path
    } else {
        base.join(path)
    }
}

fn is_model_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.')
}

impl RawConfig {
    pub fn validate(self, base: &Path) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let review = self.review.validate(&mut problems);
        let retention = self.retention.validate(&mut problems);
        let sync = self.sync.validate(base, &mut problems);
        let admin = self.admin.validate(base, &mut problems);
        let mut room_names = std::collections::HashSet::new();
        for (i, room) in self.capture.room.iter().enumerate() {
            if !is_model_name(&room.name) {
                problems.push(format!(
                    "capture.room[{i}].name = {:?} must be a short name (letters, digits, '-', \
                     '_', '.')",
                    room.name
                ));
            } else if !room_names.insert(room.name.as_str()) {
                problems.push(format!(
                    "capture.room[{i}].name = {:?} is used twice",
                    room.name
                ));
            }
            if room.geometry.len() == 1 || room.geometry.len() > 16 {
                problems.push(format!(
                    "capture.room[{i}].geometry lists {} microphones; an array has 2 to 16",
                    room.geometry.len()
                ));
            }
            if room
                .geometry
                .iter()
                .flatten()
                .any(|v| !v.is_finite() || v.abs() > 10.0)
            {
                problems.push(format!(
                    "capture.room[{i}].geometry: positions are metres within 10 m of the origin"
                ));
            }
        }
        for (i, source) in self.capture.replay.iter().enumerate() {
            if let Some(room) = &source.room {
                if !room_names.contains(room.as_str()) {
                    problems.push(format!(
                        "capture.replay[{i}].room = {room:?} is not a [[capture.room]] name"
                    ));
                }
            }
            if let Some(badge) = &source.badge {
                if crate::auth::check_username(badge).is_err() {
                    problems.push(format!(
                        "capture.replay[{i}].badge = {badge:?} is not a badge id (letters, \
                         digits, '.', '-', '_')"
                    ));
                }
            }
        }
        for (i, source) in self.capture.replay.iter().enumerate() {
            if let Some(name) = &source.clinician {
                if crate::auth::check_username(name).is_err() {
                    problems.push(format!(
                        "capture.replay[{i}].clinician = {name:?} is not a user name (letters, \
                         digits, '.', '-', '_')"
                    ));
                }
            }
        }
        if self.storage.data_dir.trim().is_empty() {
            problems.push("storage.data_dir must not be empty".to_string());
        }
        if self.models.dir.trim().is_empty() {
            problems.push("models.dir must not be empty".to_string());
        }
        for (key, name) in [
            ("models.asr", &self.models.asr),
            ("models.llm", &self.models.llm),
        ] {
            if !is_model_name(name) {
                problems.push(format!(
                    "{key} = {name:?} is not a model name (letters, digits, '-', '_', '.')"
                ));
            }
        }
        let language = self.asr.language.trim().to_ascii_lowercase();
        if !(language == "auto"
            || (language.len() == 2 && language.chars().all(|c| c.is_ascii_lowercase())))
        {
            problems.push(format!(
                "asr.language = {:?} must be a two-letter ISO 639-1 code or \"auto\"",
                self.asr.language
            ));
        }
        if !(1..=16).contains(&self.asr.beam_size) {
            problems.push(format!(
                "asr.beam_size = {} must be between 1 and 16",
                self.asr.beam_size
            ));
        }
        for (key, threads) in [
            ("asr.threads", self.asr.threads),
            ("llm.threads", self.llm.threads),
        ] {
            if !(1..=64).contains(&threads) {
                problems.push(format!("{key} = {threads} must be between 1 and 64"));
            }
        }
        if !(512..=131_072).contains(&self.llm.context_tokens) {
            problems.push(format!(
                "llm.context_tokens = {} must be between 512 and 131072",
                self.llm.context_tokens
            ));
        }
        if self.llm.max_tokens == 0 || self.llm.max_tokens >= self.llm.context_tokens {
            problems.push(format!(
                "llm.max_tokens = {} must be above 0 and below llm.context_tokens ({})",
                self.llm.max_tokens, self.llm.context_tokens
            ));
        }
        if !(0.0..=2.0).contains(&self.llm.temperature) {
            problems.push(format!(
                "llm.temperature = {} must be between 0 and 2",
                self.llm.temperature
            ));
        }
        if !(1..=20).contains(&self.llm.max_statements_per_section) {
            problems.push(format!(
                "llm.max_statements_per_section = {} must be between 1 and 20",
                self.llm.max_statements_per_section
            ));
        }
        if self.drafting.templates_dir.trim().is_empty() {
            problems.push("drafting.templates_dir must not be empty".to_string());
        }
        if !is_model_name(&self.drafting.template) {
            problems.push(format!(
                "drafting.template = {:?} is not a template id (letters, digits, '-', '_')",
                self.drafting.template
            ));
        }
        if self.llm.draft_time_budget_s > 600 {
            problems.push(format!(
                "llm.draft_time_budget_s = {} must be at most 600",
                self.llm.draft_time_budget_s
            ));
        }
        let vad_mode = match self.vad.mode.as_str() {
            "quality" => Some(VadMode::Quality),
            "low-bitrate" => Some(VadMode::LowBitrate),
            "aggressive" => Some(VadMode::Aggressive),
            "very-aggressive" => Some(VadMode::VeryAggressive),
            other => {
                problems.push(format!(
                    "vad.mode = {other:?} must be one of quality, low-bitrate, aggressive, very-aggressive"
                ));
                None
            }
        };
        if self.vad.min_speech_ms < 30 || self.vad.min_speech_ms > 5_000 {
            problems.push(format!(
                "vad.min_speech_ms = {} must be between 30 and 5000",
                self.vad.min_speech_ms
            ));
        }
        if self.vad.min_silence_ms < 30 || self.vad.min_silence_ms > 10_000 {
            problems.push(format!(
                "vad.min_silence_ms = {} must be between 30 and 10000",
                self.vad.min_silence_ms
            ));
        }
        if self.vad.padding_ms > 2_000 {
            problems.push(format!(
                "vad.padding_ms = {} must be at most 2000",
                self.vad.padding_ms
            ));
        }
        if !(5..=600).contains(&self.vad.max_region_s) {
            problems.push(format!(
                "vad.max_region_s = {} must be between 5 and 600",
                self.vad.max_region_s
            ));
        }
        if self.workers.startup_timeout_s == 0 || self.workers.request_timeout_s == 0 {
            problems.push(
                "workers.startup_timeout_s and workers.request_timeout_s must be above 0".into(),
            );
        }
        if !(0.0..=100.0).contains(&self.workers.timeout_per_audio_s) {
            problems.push(format!(
                "workers.timeout_per_audio_s = {} must be between 0 and 100",
                self.workers.timeout_per_audio_s
            ));
        }
        if !(1..=100).contains(&self.workers.max_attempts) {
            problems.push(format!(
                "workers.max_attempts = {} must be between 1 and 100",
                self.workers.max_attempts
            ));
        }
        if self.workers.restart_backoff_ms > self.workers.restart_backoff_max_ms {
            problems.push(format!(
                "workers.restart_backoff_ms ({}) must not exceed workers.restart_backoff_max_ms ({})",
                self.workers.restart_backoff_ms, self.workers.restart_backoff_max_ms
            ));
        }
        for (index, source) in self.capture.replay.iter().enumerate() {
            if source.path.trim().is_empty() {
                problems.push(format!("capture.replay[{index}].path must not be empty"));
            }
        }
        let log_format = match self.log.format.as_str() {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            other => {
                problems.push(format!(
                    "log.format = {other:?} must be \"text\" or \"json\""
                ));
                None
            }
        };
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            problems.push(format!(
                "log.level = {:?} is not a level or filter (e.g. \"info\", \"edge_scribe=debug\")",
                self.log.level
            ));
        }
        let (Some(vad_mode), Some(log_format)) = (vad_mode, log_format) else {
            return Err(ConfigError::Invalid {
                path: PathBuf::new(),
                problems,
            });
        };
        if !problems.is_empty() {
            return Err(ConfigError::Invalid {
                path: PathBuf::new(),
                problems,
            });
        }
        let initial_prompt =
            Some(self.asr.initial_prompt.trim().to_string()).filter(|p| !p.is_empty());
        Ok(Config {
            data_dir: resolve(base, &self.storage.data_dir),
            models_dir: resolve(base, &self.models.dir),
            asr_model: self.models.asr,
            llm_model: self.models.llm,
            asr: AsrSettings {
                language,
                beam_size: self.asr.beam_size,
                threads: self.asr.threads,
                initial_prompt,
            },
            llm: LlmSettings {
                threads: self.llm.threads,
                context_tokens: self.llm.context_tokens,
                max_tokens: self.llm.max_tokens,
                temperature: self.llm.temperature,
                seed: self.llm.seed,
                max_statements_per_section: self.llm.max_statements_per_section,
                draft_time_budget: Duration::from_secs(self.llm.draft_time_budget_s.into()),
            },
            drafting: DraftingSettings {
                templates_dir: resolve(base, &self.drafting.templates_dir),
                template: self.drafting.template,
                use_llm: self.drafting.use_llm,
                gaps_dir: resolve(base, &self.drafting.gaps_dir),
                suggest_codes: self.drafting.suggest_codes,
            },
            vad: VadSettings {
                mode: vad_mode,
                min_speech: Duration::from_millis(self.vad.min_speech_ms.into()),
                min_silence: Duration::from_millis(self.vad.min_silence_ms.into()),
                padding: Duration::from_millis(self.vad.padding_ms.into()),
                max_region: Duration::from_secs(self.vad.max_region_s.into()),
            },
            workers: WorkerSettings {
                dir: Some(self.workers.dir.trim())
                    .filter(|d| !d.is_empty())
                    .map(|d| resolve(base, d)),
                startup_timeout: Duration::from_secs(self.workers.startup_timeout_s.into()),
                request_timeout: Duration::from_secs(self.workers.request_timeout_s.into()),
                timeout_per_audio_second: self.workers.timeout_per_audio_s,
                max_attempts: self.workers.max_attempts,
                restart_backoff: Duration::from_millis(self.workers.restart_backoff_ms.into()),
                restart_backoff_max: Duration::from_millis(
                    self.workers.restart_backoff_max_ms.into(),
                ),
            },
            replay_sources: self
                .capture
                .replay
                .into_iter()
                .map(|source| ReplaySource {
                    path: resolve(base, &source.path),
                    realtime: source.realtime,
                    clinician: source.clinician,
                    consent: source.consent,
                    patient_ref: source.patient_ref,
                    badge: source.badge,
                    room: source.room,
                    badge_audio: source.badge_audio.map(|p| resolve(base, &p)),
                })
                .collect(),
            rooms: self
                .capture
                .room
                .into_iter()
                .map(|room| Room {
                    name: room.name,
                    array: Some(room.array.trim().to_string()).filter(|a| !a.is_empty()),
                    geometry: room.geometry,
                })
                .collect(),
            review,
            admin,
            retention,
            sync,
            log_level: self.log.level,
            log_format,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_default_config_parses_and_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/edge-scribe.toml");
        let config = Config::load(&path).unwrap();
        assert_eq!(config.asr_model, "whisper-tiny.en");
        assert_eq!(config.llm_model, "smollm2-135m-instruct");
        assert!(config.models_dir.starts_with(path.parent().unwrap()));
        assert_eq!(config.replay_sources.len(), 1);
    }

    #[test]
    fn the_shipped_config_documents_every_key() {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("config/edge-scribe.toml"),
        )
        .unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (index, line) in lines.iter().enumerate() {
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('[') {
                continue;
            }
            assert!(
                index > 0 && lines[index - 1].trim().starts_with('#'),
                "key on line {} has no comment above it: {trimmed}",
                index + 1
            );
        }
    }

    #[test]
    fn built_in_defaults_are_valid() {
        let config = Config::defaults().unwrap();
        assert_eq!(config.vad.mode, VadMode::Aggressive);
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let err = Config::from_toml("[asr]\nbeam = 3\n", Path::new("/")).unwrap_err();
        assert!(err.to_string().contains("beam"), "{err}");
    }

    #[test]
    fn every_problem_is_listed_not_just_the_first() {
        let err = Config::from_toml(
            "[asr]\nbeam_size = 0\nlanguage = \"english\"\n[vad]\nmode = \"loud\"\n",
            Path::new("/"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("asr.beam_size"), "{err}");
        assert!(err.contains("asr.language"), "{err}");
        assert!(err.contains("vad.mode"), "{err}");
    }

    #[test]
    fn relative_paths_resolve_against_the_config_directory() {
        let config =
            Config::from_toml("[storage]\ndata_dir = \"data\"\n", Path::new("/etc/es")).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/etc/es/data"));
    }

    /// Damaged config text gives a config or an error listing problems, never a panic.
    #[test]
    fn mutated_config_files_never_panic() {
        let original =
            std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/edge-scribe.toml"))
                .unwrap();
        let mut next = crate::test_support::xorshift(0xd1b5_4a32_d192_ed03);
        let alphabet = b"=[]\"#\n0123456789-.ae ";
        for _ in 0..2_000 {
            let mut bytes = original.clone();
            for _ in 0..(next() % 4 + 1) {
                let at = (next() as usize) % bytes.len();
                bytes[at] = alphabet[(next() as usize) % alphabet.len()];
            }
            let text = String::from_utf8_lossy(&bytes);
            let _ = Config::from_toml(&text, Path::new("/etc/edge-scribe"));
        }
    }

    #[test]
    fn model_names_cannot_escape_the_models_directory() {
        let err = Config::from_toml("[models]\nllm = \"../../etc/passwd\"\n", Path::new("/"))
            .unwrap_err();
        assert!(err.to_string().contains("models.llm"), "{err}");
    }

    #[test]
    fn retention_takes_days_or_forever_and_names_bad_values() {
        let config = Config::from_toml(
            "[retention]\naudio_after_signoff_days = 3\ntranscript_days = \"forever\"\n",
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(config.retention.policy.audio_after_signoff_days, Some(3));
        assert_eq!(config.retention.policy.transcript_days, None);
        // The defaults: drafts go at sign-off, audio a week after it.
        assert_eq!(config.retention.policy.draft_after_signoff_days, Some(0));
        assert_eq!(config.retention.policy.unsigned_draft_days, None);
        let err = Config::from_toml(
            "[retention]\ntranscript_days = \"never\"\ninterval_minutes = 0\n",
            Path::new("/"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("retention.transcript_days"), "{err}");
        assert!(err.contains("retention.interval_minutes"), "{err}");
    }

    #[test]
    fn review_listen_and_replay_clinicians_are_checked() {
        let config = Config::from_toml("[review]\nlisten = \"\"\n", Path::new("/")).unwrap();
        assert_eq!(config.review.listen, None);
        let err = Config::from_toml(
            "[review]\nlisten = \"localhost\"\nsession_idle_minutes = 0\n\
             [[capture.replay]]\npath = \"a.wav\"\nclinician = \"dr lee\"\n",
            Path::new("/"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("review.listen"), "{err}");
        assert!(err.contains("review.session_idle_minutes"), "{err}");
        assert!(err.contains("capture.replay[0].clinician"), "{err}");
    }
}
