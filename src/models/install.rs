//! Models installed by hand: a clinic's own GGUF or whisper.cpp file, given as a local file and
//! its sha256, checked by a smoke test on the real worker before it can be switched to.
//!
//! [`install_local_model`] copies the file into a staging directory inside the models directory
//! (hashing the bytes as it copies them, so what is verified is what is installed), starts the
//! real inference worker on the staged copy with the running configuration, and renames the
//! directory into `<models_dir>/<name>/` only when the worker loaded the model and answered.
//! [`smoke_test`] runs the same check on a model that is already installed, before `models.llm`
//! or `models.asr` is pointed at it. [`list_installed`] describes every model directory from the
//! hashes recorded at install time (`installed.json`), never by hashing again.
//!
//! What it may not do: install a file whose sha256 differs from the one given, replace a model
//! that is already installed, leave a staging directory behind after an error, or log or return
//! anything a model generated or transcribed. Everything here blocks (file copies, worker
//! processes); callers keep it off the async runtime.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ring::digest;
use serde::{Deserialize, Serialize};

use super::fetch::{Manifest, INSTALLED_FILE};
use crate::config::Config;
use crate::draft::grammar::{note_grammar, GrammarSection};
use crate::inference::worker::WorkerError;
use crate::inference::{
    asr_model_file, llm_model_file, ChatMessage, Drafter, GenerateRequest, InferenceError,
    TranscribeOptions, Transcriber, WorkerDrafter, WorkerTranscriber,
};

/// File name of an installed LLM; the inference code takes the one `.gguf` in the directory.
pub const LLM_FILE: &str = "model.gguf";

/// File name of an installed ASR model: what [`asr_model_file`] points the worker at.
pub const ASR_FILE: &str = "ggml-model.bin";

/// Longest model name accepted; it becomes a directory name and a config value.
const MAX_NAME_LEN: usize = 64;

const CHUNK: usize = 1 << 20;

/// Staging directories are `.install-<name>-<pid>-<seq>`; the dot keeps them out of listings and
/// out of reach of config values (model names cannot start with a dot).
const STAGING_PREFIX: &str = ".install-";

/// A scripted, synthetic visit (espeak-ng voices, no patient): the ASR smoke test hears its
/// opening seconds. Compiled in so an appliance needs no sample files on disk.
const SMOKE_WAV: &[u8] = include_bytes!("../../samples/sample-encounter.wav");

/// The first turn of the sample ends before 6 s, so the clip holds whole words.
const SMOKE_CLIP_MS: u64 = 6_000;

/// Long enough to show the model writes, short enough for a large model on two cores.
const SMOKE_MAX_TOKENS: u32 = 64;

/// Which engine a model is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// A whisper.cpp (ggml) model for the ASR worker.
    Asr,
    /// An instruction-tuned GGUF with a chat template for the LLM worker.
    Llm,
}

impl ModelKind {
    fn file_name(self) -> &'static str {
        match self {
            ModelKind::Asr => ASR_FILE,
            ModelKind::Llm => LLM_FILE,
        }
    }

    fn format(self) -> &'static str {
        match self {
            ModelKind::Asr => "ggml",
            ModelKind::Llm => "gguf",
        }
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            ModelKind::Asr => "asr",
            ModelKind::Llm => "llm",
        })
    }
}

/// What a directory under the models directory holds, as far as a listing can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstalledKind {
    Asr,
    Llm,
    /// Not a model the workers load: the VAD model, the ICD-10-CM code set, anything unknown.
    Other,
}

impl From<ModelKind> for InstalledKind {
    fn from(kind: ModelKind) -> Self {
        match kind {
            ModelKind::Asr => InstalledKind::Asr,
            ModelKind::Llm => InstalledKind::Llm,
        }
    }
}

/// How a model directory came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// `edge-scribe models fetch`, from the pinned manifest.
    Fetched,
    /// [`install_local_model`].
    Local,
    /// No `installed.json`: put there by hand.
    Unrecorded,
}

/// One file of an installed model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelFile {
    /// Name inside the model directory.
    pub path: String,
    pub bytes: u64,
    /// As recorded at install, else as pinned by the manifest; `None` when neither knows it.
    pub sha256: Option<String>,
}

/// A directory under the models directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstalledModel {
    pub name: String,
    pub kind: InstalledKind,
    pub origin: Origin,
    pub dir: PathBuf,
    pub files: Vec<ModelFile>,
    /// Every file the install record lists is present with its recorded size (a cheap check;
    /// hashes are not computed again). False when there is no record.
    pub intact: bool,
    /// The smoke test that let a local install in.
    pub smoke: Option<SmokeReport>,
}

/// A model file to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallRequest {
    /// Directory name, and the value `models.llm` / `models.asr` will name.
    pub name: String,
    pub kind: ModelKind,
    /// The GGUF (LLM) or whisper.cpp ggml file (ASR) on this machine.
    pub source: PathBuf,
    /// The sha256 the file must have, as 64 hex digits.
    pub sha256: String,
}

/// How long the worker took to load the model and to answer one short request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmokeReport {
    pub load_ms: u64,
    pub run_ms: u64,
}

/// Why a model failed its smoke test. Never carries what the model produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmokeFailure {
    /// The worker exited or broke its stream while loading.
    LoadFailed {
        detail: String,
        hint: Option<&'static str>,
    },
    LoadTimeout {
        seconds: u64,
    },
    /// Loaded, then died or broke its stream on the request.
    Crashed {
        detail: String,
    },
    /// The worker answered the request with an error of its own.
    Refused {
        message: String,
    },
    RunTimeout {
        seconds: u64,
    },
    ProducedNothing,
}

impl fmt::Display for SmokeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SmokeFailure::LoadFailed { detail, hint } => {
                write!(f, "the worker failed to load the model ({detail})")?;
                if let Some(hint) = hint {
                    write!(f, "; {hint}")?;
                }
                Ok(())
            }
            SmokeFailure::LoadTimeout { seconds } => write!(
                f,
                "the worker did not finish loading the model within {seconds} s \
                 (workers.startup_timeout_s); the model may be too large for this box"
            ),
            SmokeFailure::Crashed { detail } => write!(
                f,
                "the worker loaded the model but failed while running it ({detail})"
            ),
            SmokeFailure::Refused { message } => {
                write!(f, "the worker refused the test request: {message}")
            }
            SmokeFailure::RunTimeout { seconds } => write!(
                f,
                "the model did not answer a short test request within {seconds} s \
                 (workers.request_timeout_s); it is too slow for this box"
            ),
            SmokeFailure::ProducedNothing => {
                write!(
                    f,
                    "the model loaded but produced nothing for the test input"
                )
            }
        }
    }
}

/// Everything that can go wrong listing, installing or testing a model.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(
        "{name:?} is not a usable model name: {reason}; use 1 to {MAX_NAME_LEN} letters, \
         digits, '-', '_' or '.', not starting with '.'"
    )]
    InvalidName { name: String, reason: &'static str },

    #[error(
        "the name {name:?} belongs to a pinned model of the manifest; install that one with \
         `edge-scribe models fetch`, or choose another name for this file"
    )]
    ReservedName { name: String },

    #[error("{given:?} is not a sha256: give the 64 hex digits `sha256sum` prints for the file")]
    InvalidSha256 { given: String },

    #[error("the model file {path} cannot be read: {source}")]
    SourceUnreadable { path: PathBuf, source: io::Error },

    #[error("{path} is not a regular file with content; give the path of the model file itself")]
    SourceNotAFile { path: PathBuf },

    #[error(
        "the file {path} has sha256 {actual}, not the expected {expected}; nothing was \
         installed. Check that this is the file you meant and that the copy is complete"
    )]
    HashMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },

    #[error(
        "a model named {name:?} is already installed in {dir} with different content; it is \
         not replaced. Choose another name, or remove that directory first if it is not in use"
    )]
    AlreadyInstalled { name: String, dir: PathBuf },

    #[error("no {kind} model named {name:?} is installed in {models_dir}")]
    NotInstalled {
        name: String,
        kind: ModelKind,
        models_dir: PathBuf,
    },

    #[error("{kind} model {name:?} failed its smoke test: {failure}; nothing was changed")]
    SmokeTest {
        name: String,
        kind: ModelKind,
        failure: SmokeFailure,
    },

    #[error("the {kind} smoke test of {name:?} could not run: {source}")]
    SmokeUnavailable {
        name: String,
        kind: ModelKind,
        #[source]
        source: InferenceError,
    },

    #[error("{action} {path}: {source}; check free disk space and that the directory is writable")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },

    #[error("the built-in smoke-test clip cannot be read ({reason}); this build is broken")]
    Clip { reason: String },
}

fn io_err<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> InstallError + 'p {
    move |source| InstallError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

// ---------------------------------------------------------------------------------------------
// Install records

/// `installed.json` of a local install. Shares `files` (path, sha256, bytes) with the records
/// `models fetch` writes, which is what the inference code reads a model's hash from.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LocalRecord {
    name: String,
    role: ModelKind,
    format: String,
    origin: Origin,
    /// File name only: the source's directory can describe the clinic's layout.
    source_file: String,
    installed_unix_s: u64,
    files: Vec<RecordFile>,
    smoke: SmokeReport,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct RecordFile {
    path: String,
    sha256: String,
    bytes: u64,
}

/// Any `installed.json`, fetched or local, read leniently: a listing must not fail on a record
/// written by another version.
#[derive(Debug, Deserialize)]
struct AnyRecord {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    origin: Option<Origin>,
    #[serde(default)]
    files: Vec<RecordFile>,
    #[serde(default)]
    smoke: Option<SmokeReport>,
}

fn read_record(dir: &Path) -> Option<AnyRecord> {
    let text = fs::read(dir.join(INSTALLED_FILE)).ok()?;
    serde_json::from_slice(&text).ok()
}

// ---------------------------------------------------------------------------------------------
// Listing

/// Every model directory under `models_dir`, sorted by name. Reads `installed.json` files and
/// file sizes only. A missing models directory lists as empty.
pub fn list_installed(models_dir: &Path) -> Result<Vec<InstalledModel>, InstallError> {
    let entries = match fs::read_dir(models_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("could not read the models directory", models_dir)(e)),
    };
    // A manifest that does not parse only costs the pins of unrecorded models.
    let manifest = Manifest::builtin().ok();
    let mut models = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err("could not read the models directory", models_dir))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        // Staging and set-aside directories of installs in progress, and files like the
        // manifest, are not models.
        if name.starts_with('.') || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        models.push(describe(&entry.path(), name, manifest.as_ref())?);
    }
    models.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(models)
}

fn describe(
    dir: &Path,
    name: String,
    manifest: Option<&Manifest>,
) -> Result<InstalledModel, InstallError> {
    let record = read_record(dir);
    let spec = manifest.and_then(|m| m.get(&name));

    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("could not read", dir))? {
        let entry = entry.map_err(io_err("could not read", dir))?;
        let Ok(path) = entry.file_name().into_string() else {
            continue;
        };
        if path == INSTALLED_FILE {
            continue;
        }
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let recorded = record
            .as_ref()
            .and_then(|r| r.files.iter().find(|f| f.path == path))
            .map(|f| f.sha256.clone());
        let pinned = || {
            spec.and_then(|s| s.files.iter().find(|f| f.to == path))
                .and_then(|f| f.sha256.clone())
        };
        files.push(ModelFile {
            sha256: recorded.or_else(pinned),
            bytes: meta.len(),
            path,
        });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));

    let kind = match record.as_ref().and_then(|r| r.role.as_deref()) {
        Some("asr") => InstalledKind::Asr,
        Some("llm") => InstalledKind::Llm,
        Some(_) => InstalledKind::Other,
        // Unrecorded: judge by the files the workers would load.
        None if files.iter().any(|f| f.path == ASR_FILE) => InstalledKind::Asr,
        None if files.iter().any(|f| f.path.ends_with(".gguf")) => InstalledKind::Llm,
        None => InstalledKind::Other,
    };
    let intact = record.as_ref().is_some_and(|r| {
        r.files.iter().all(|rf| {
            files
                .iter()
                .any(|f| f.path == rf.path && f.bytes == rf.bytes)
        })
    });
    let origin = match &record {
        None => Origin::Unrecorded,
        Some(r) => r.origin.unwrap_or(Origin::Fetched),
    };
    Ok(InstalledModel {
        name,
        kind,
        origin,
        dir: dir.to_path_buf(),
        files,
        intact,
        smoke: record.and_then(|r| r.smoke),
    })
}

// ---------------------------------------------------------------------------------------------
// Installing

/// Installs `request.source` as model `request.name` of `request.kind` under the configured
/// models directory, after checking its sha256 and smoke-testing it on the real worker with
/// `config`'s settings. Either the model directory appears complete, or nothing does.
///
/// A model already installed under that name with the same sha256 and size is returned as is
/// (the source is then not read); one with other content is never replaced.
pub fn install_local_model(
    config: &Config,
    request: &InstallRequest,
) -> Result<InstalledModel, InstallError> {
    let name = request.name.as_str();
    check_name(name)?;
    if Manifest::builtin().is_ok_and(|m| m.get(name).is_some()) {
        return Err(InstallError::ReservedName {
            name: name.to_owned(),
        });
    }
    let expected = normalize_sha256(&request.sha256)?;
    let source_meta =
        fs::metadata(&request.source).map_err(|source| InstallError::SourceUnreadable {
            path: request.source.clone(),
            source,
        })?;
    if !source_meta.is_file() || source_meta.len() == 0 {
        return Err(InstallError::SourceNotAFile {
            path: request.source.clone(),
        });
    }

    let models_dir = &config.models_dir;
    let target = models_dir.join(name);
    if fs::symlink_metadata(&target).is_ok() {
        return existing_if_identical(&target, name, request.kind, &expected, source_meta.len());
    }

    fs::create_dir_all(models_dir).map_err(io_err("could not create", models_dir))?;
    remove_stale_staging(models_dir);
    let started = Instant::now();
    tracing::info!(model = name, kind = %request.kind, bytes = source_meta.len(), "installing a local model");

    let staging = Staging::create(models_dir, name)?;
    let file = request.kind.file_name();
    let staged_file = staging.path.join(file);
    let (actual, bytes) = copy_hashing(&request.source, &staged_file)?;
    if actual != expected {
        return Err(InstallError::HashMismatch {
            path: request.source.clone(),
            expected,
            actual,
        });
    }

    let smoke = run_smoke(config, request.kind, &staging.dir_name, name)?;

    let record = LocalRecord {
        name: name.to_owned(),
        role: request.kind,
        format: request.kind.format().to_owned(),
        origin: Origin::Local,
        source_file: request
            .source
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        installed_unix_s: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        files: vec![RecordFile {
            path: file.to_owned(),
            sha256: actual,
            bytes,
        }],
        smoke,
    };
    write_record(&staging.path, &record)?;
    staging.move_to(&target, name)?;
    if let Ok(dir) = File::open(models_dir) {
        // The rename is what makes the model exist; make it survive a power cut.
        let _ = dir.sync_all();
    }
    tracing::info!(
        model = name,
        kind = %request.kind,
        bytes,
        load_ms = smoke.load_ms,
        run_ms = smoke.run_ms,
        seconds = started.elapsed().as_secs_f64(),
        "local model installed"
    );
    describe(&target, name.to_owned(), None)
}

fn existing_if_identical(
    target: &Path,
    name: &str,
    kind: ModelKind,
    sha256: &str,
    bytes: u64,
) -> Result<InstalledModel, InstallError> {
    let same = read_record(target).is_some_and(|r| {
        r.role.as_deref() == Some(&kind.to_string())
            && r.files
                .iter()
                .any(|f| f.path == kind.file_name() && f.sha256 == sha256 && f.bytes == bytes)
    });
    let installed = same
        .then(|| describe(target, name.to_owned(), None))
        .transpose()?;
    match installed {
        Some(model) if model.intact => {
            tracing::info!(model = name, kind = %kind, "model already installed with this sha256");
            Ok(model)
        }
        _ => Err(InstallError::AlreadyInstalled {
            name: name.to_owned(),
            dir: target.to_path_buf(),
        }),
    }
}

/// Same rule as the config's model names (so the name can be configured), plus a length limit.
fn check_name(name: &str) -> Result<(), InstallError> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("it is too long")
    } else if name.starts_with('.') {
        Some("it starts with '.'")
    } else if !name
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
    {
        Some("it holds a character that is not allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(InstallError::InvalidName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

fn normalize_sha256(given: &str) -> Result<String, InstallError> {
    let sha = given.trim().to_ascii_lowercase();
    if sha.len() == 64 && sha.bytes().all(|c| c.is_ascii_hexdigit()) {
        Ok(sha)
    } else {
        Err(InstallError::InvalidSha256 {
            given: given.to_owned(),
        })
    }
}

/// Copies `from` to a new file `to`, returning the sha256 of the bytes written and their count.
fn copy_hashing(from: &Path, to: &Path) -> Result<(String, u64), InstallError> {
    let mut input = File::open(from).map_err(|source| InstallError::SourceUnreadable {
        path: from.to_path_buf(),
        source,
    })?;
    let mut output = File::create_new(to).map_err(io_err("could not create", to))?;
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut buf = vec![0u8; CHUNK];
    let mut bytes = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(InstallError::SourceUnreadable {
                    path: from.to_path_buf(),
                    source,
                })
            }
        };
        ctx.update(&buf[..n]);
        output
            .write_all(&buf[..n])
            .map_err(io_err("could not write", to))?;
        bytes += n as u64;
    }
    output.sync_all().map_err(io_err("could not write", to))?;
    Ok((hex(ctx.finish().as_ref()), bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn write_record(dir: &Path, record: &LocalRecord) -> Result<(), InstallError> {
    let path = dir.join(INSTALLED_FILE);
    let json = serde_json::to_vec_pretty(record)
        .map_err(|e| io_err("could not encode", &path)(io::Error::other(e)))?;
    let mut file = File::create_new(&path).map_err(io_err("could not create", &path))?;
    file.write_all(&json)
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.sync_all())
        .map_err(io_err("could not write", &path))?;
    // The rename that follows must not reach the disk before the directory's contents do.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("could not sync", dir))
}

/// A staging directory inside the models directory, removed when dropped unless moved into place.
struct Staging {
    path: PathBuf,
    /// Its name in the models directory, which the workers are pointed at for the smoke test.
    dir_name: String,
    armed: bool,
}

/// Tells apart concurrent installs of one process (the admin API may run two at once).
static STAGING_SEQ: AtomicU64 = AtomicU64::new(0);

impl Staging {
    fn create(models_dir: &Path, name: &str) -> Result<Staging, InstallError> {
        let seq = STAGING_SEQ.fetch_add(1, Ordering::Relaxed);
        let dir_name = format!("{STAGING_PREFIX}{name}-{}-{seq}", std::process::id());
        let path = models_dir.join(&dir_name);
        fs::create_dir(&path).map_err(io_err("could not create", &path))?;
        Ok(Staging {
            path,
            dir_name,
            armed: true,
        })
    }

    fn move_to(mut self, target: &Path, name: &str) -> Result<(), InstallError> {
        // rename(2) refuses to replace a non-empty directory, so an install of the same name
        // that finished meanwhile is not overwritten; checking first only gives the clearer
        // error in the common case.
        if fs::symlink_metadata(target).is_ok() {
            return Err(InstallError::AlreadyInstalled {
                name: name.to_owned(),
                dir: target.to_path_buf(),
            });
        }
        fs::rename(&self.path, target).map_err(|source| {
            if matches!(source.raw_os_error(), Some(libc::ENOTEMPTY | libc::EEXIST)) {
                InstallError::AlreadyInstalled {
                    name: name.to_owned(),
                    dir: target.to_path_buf(),
                }
            } else {
                io_err("could not move the new model to", target)(source)
            }
        })?;
        self.armed = false;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = fs::remove_dir_all(&self.path) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = %self.path.display(), error = %e, "could not remove a staging directory");
                }
            }
        }
    }
}

/// Removes staging directories of installs whose process is gone (killed mid-copy). Those of
/// live processes, this one included, may be installs at work and are left alone.
fn remove_stale_staging(models_dir: &Path) {
    let Ok(entries) = fs::read_dir(models_dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let file_name = entry.file_name();
        let Some(rest) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(STAGING_PREFIX))
        else {
            continue;
        };
        // `<name>-<pid>-<seq>`; the name may itself hold '-'.
        let mut parts = rest.rsplitn(3, '-');
        let (Some(seq), Some(pid), Some(_name)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let (Ok(_), Ok(pid)) = (seq.parse::<u64>(), pid.parse::<u32>()) else {
            continue;
        };
        if pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        match fs::remove_dir_all(entry.path()) {
            Ok(()) => {
                tracing::info!(path = %entry.path().display(), "removed a staging directory left by an interrupted install")
            }
            Err(e) => {
                tracing::warn!(path = %entry.path().display(), error = %e, "could not remove a leftover staging directory")
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Smoke tests

/// Starts the worker for installed model `name` with `config`'s settings and has it answer one
/// short request: a grammar-constrained completion (LLM) or a few seconds of synthetic speech
/// (ASR). Use it before pointing `models.llm` / `models.asr` at the model. The worker is a
/// separate process, so this works while the daemon's own workers run (memory permitting).
pub fn smoke_test(
    config: &Config,
    kind: ModelKind,
    name: &str,
) -> Result<SmokeReport, InstallError> {
    check_name(name)?;
    let present = match kind {
        ModelKind::Asr => asr_model_file(&config.models_dir, name).is_file(),
        ModelKind::Llm => llm_model_file(&config.models_dir, name).is_ok(),
    };
    if !present {
        return Err(InstallError::NotInstalled {
            name: name.to_owned(),
            kind,
            models_dir: config.models_dir.clone(),
        });
    }
    run_smoke(config, kind, name, name)
}

/// Runs the smoke test on the model in `config.models_dir/<dir_name>`; `name` is what errors and
/// logs call it.
fn run_smoke(
    config: &Config,
    kind: ModelKind,
    dir_name: &str,
    name: &str,
) -> Result<SmokeReport, InstallError> {
    let mut candidate = config.clone();
    // A smoke test asks whether the model works, not whether a retry would get through: the
    // first failure is the answer (and a broken model is not loaded four times).
    candidate.workers.max_attempts = 1;
    let unavailable = |source| InstallError::SmokeUnavailable {
        name: name.to_owned(),
        kind,
        source,
    };
    let failed = |failure: SmokeFailure| {
        tracing::warn!(model = name, %kind, reason = %failure, "model failed its smoke test");
        InstallError::SmokeTest {
            name: name.to_owned(),
            kind,
            failure,
        }
    };
    let outcome = match kind {
        ModelKind::Llm => {
            candidate.llm_model = dir_name.to_owned();
            let drafter = WorkerDrafter::new(&candidate).map_err(unavailable)?;
            smoke_llm(drafter)
        }
        ModelKind::Asr => {
            candidate.asr_model = dir_name.to_owned();
            let clip = smoke_clip()?;
            let transcriber = WorkerTranscriber::new(&candidate).map_err(unavailable)?;
            smoke_asr(transcriber, &clip, TranscribeOptions::from(&config.asr))
        }
    };
    let hint = || source_hint(&config.models_dir.join(dir_name), kind);
    match outcome {
        Ok(report) => {
            tracing::info!(
                model = name,
                %kind,
                load_ms = report.load_ms,
                run_ms = report.run_ms,
                "model passed its smoke test"
            );
            Ok(report)
        }
        Err(Outcome::Unavailable(e)) => Err(unavailable(e)),
        Err(Outcome::Failed(SmokeFailure::LoadFailed { detail, .. })) => {
            Err(failed(SmokeFailure::LoadFailed {
                detail,
                hint: hint(),
            }))
        }
        Err(Outcome::Failed(failure)) => Err(failed(failure)),
    }
}

enum Outcome {
    /// The test could not be run (worker binary missing, wrong version): not the model's fault.
    Unavailable(InferenceError),
    Failed(SmokeFailure),
}

fn smoke_llm(mut drafter: WorkerDrafter) -> Result<SmokeReport, Outcome> {
    // An empty chat is refused by the worker before it touches the model, so the answer to it
    // times the load alone, and a model that cannot load fails here with the worker's exit code.
    let started = Instant::now();
    let ping = drafter.generate(&GenerateRequest {
        messages: Vec::new(),
        grammar: None,
        max_tokens: 1,
        temperature: 0.0,
        seed: 0,
    });
    check_loaded(ping)?;
    let load_ms = elapsed_ms(started);

    // The grammar drafting uses, so a model whose vocabulary the grammar sampler cannot handle
    // fails here rather than in every draft.
    let grammar = note_grammar(
        &[GrammarSection {
            name: "Subjective",
            fact_ids: vec!["f1"],
        }],
        1,
        120,
    );
    let started = Instant::now();
    let result = drafter.generate(&GenerateRequest {
        messages: vec![
            ChatMessage {
                role: "system".into(),
                content: "Rewrite the fact as one sentence of a clinical note, citing its id."
                    .into(),
            },
            ChatMessage {
                role: "user".into(),
                content: "f1: cough for three days, worse at night".into(),
            },
        ],
        grammar: Some(grammar),
        max_tokens: SMOKE_MAX_TOKENS,
        temperature: 0.0,
        seed: 0,
    });
    let run_ms = elapsed_ms(started);
    let generation = result.map_err(classify_run)?;
    // Only whether there is text is looked at; the text itself goes nowhere.
    if generation.generated_tokens == 0 || generation.text.trim().is_empty() {
        return Err(Outcome::Failed(SmokeFailure::ProducedNothing));
    }
    Ok(SmokeReport { load_ms, run_ms })
}

fn smoke_asr(
    mut transcriber: WorkerTranscriber,
    clip: &[f32],
    options: TranscribeOptions,
) -> Result<SmokeReport, Outcome> {
    // As for the LLM: empty audio is refused before the model runs, which times the load alone.
    let started = Instant::now();
    check_loaded(transcriber.transcribe(&[], &options))?;
    let load_ms = elapsed_ms(started);

    let started = Instant::now();
    let result = transcriber.transcribe(clip, &options);
    let run_ms = elapsed_ms(started);
    let segments = result.map_err(classify_run)?;
    if segments.iter().all(|s| s.text.trim().is_empty()) {
        return Err(Outcome::Failed(SmokeFailure::ProducedNothing));
    }
    Ok(SmokeReport { load_ms, run_ms })
}

/// The probe's answer: a refusal (or any answer) means the worker is up with the model loaded.
fn check_loaded<T>(probe: Result<T, InferenceError>) -> Result<(), Outcome> {
    match probe {
        Ok(_) | Err(InferenceError::Worker(WorkerError::Failed { .. })) => Ok(()),
        Err(InferenceError::Worker(e)) => Err(match last_attempt(e) {
            WorkerError::StartupTimeout { seconds, .. } => {
                Outcome::Failed(SmokeFailure::LoadTimeout { seconds })
            }
            e @ (WorkerError::Missing { .. }
            | WorkerError::Spawn { .. }
            | WorkerError::VersionMismatch { .. }) => {
                Outcome::Unavailable(InferenceError::Worker(e))
            }
            e => Outcome::Failed(SmokeFailure::LoadFailed {
                detail: e.to_string(),
                hint: None,
            }),
        }),
        Err(e) => Err(Outcome::Failed(SmokeFailure::LoadFailed {
            detail: e.to_string(),
            hint: None,
        })),
    }
}

fn classify_run(error: InferenceError) -> Outcome {
    match error {
        InferenceError::Worker(e) => match last_attempt(e) {
            WorkerError::Failed { message, .. } => {
                Outcome::Failed(SmokeFailure::Refused { message })
            }
            WorkerError::Hung { seconds, .. } => {
                Outcome::Failed(SmokeFailure::RunTimeout { seconds })
            }
            WorkerError::StartupTimeout { seconds, .. } => {
                Outcome::Failed(SmokeFailure::LoadTimeout { seconds })
            }
            e @ (WorkerError::Missing { .. }
            | WorkerError::Spawn { .. }
            | WorkerError::VersionMismatch { .. }) => {
                Outcome::Unavailable(InferenceError::Worker(e))
            }
            e => Outcome::Failed(SmokeFailure::Crashed {
                detail: e.to_string(),
            }),
        },
        e => Outcome::Failed(SmokeFailure::Crashed {
            detail: e.to_string(),
        }),
    }
}

/// With one attempt allowed, the supervisor wraps the only failure in `GaveUp`; that failure is
/// the one worth naming.
fn last_attempt(error: WorkerError) -> WorkerError {
    match error {
        WorkerError::GaveUp { last, .. } => *last,
        e => e,
    }
}

/// A hint when the model file does not even start like its format: the worker's exit code alone
/// does not tell an IT person they picked the wrong file.
fn source_hint(dir: &Path, kind: ModelKind) -> Option<&'static str> {
    let path = match kind {
        ModelKind::Asr => dir.join(ASR_FILE),
        ModelKind::Llm => llm_model_file(dir.parent()?, dir.file_name()?.to_str()?).ok()?,
    };
    let mut magic = [0u8; 4];
    File::open(path).ok()?.read_exact(&mut magic).ok()?;
    match kind {
        ModelKind::Llm if &magic != b"GGUF" => {
            Some("the file is not a GGUF file (it does not start with \"GGUF\")")
        }
        // whisper.cpp's magic, 0x67676d6c little-endian.
        ModelKind::Asr if magic != 0x6767_6d6c_u32.to_le_bytes() => Some(
            "the file is not a whisper.cpp ggml model; a CTranslate2 or PyTorch Whisper model \
             must be converted first",
        ),
        ModelKind::Llm => Some(
            "it is a GGUF file, but llama.cpp could not use it: it may be damaged, have no or \
             an unknown chat template, or need more memory than this box has",
        ),
        ModelKind::Asr => Some(
            "it is a ggml file, but whisper.cpp could not load it: it may be damaged or of a \
             version this build does not read",
        ),
    }
}

fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The opening seconds of the compiled-in sample, as 16 kHz mono samples.
fn smoke_clip() -> Result<Vec<f32>, InstallError> {
    let clip_err = |reason: String| InstallError::Clip { reason };
    let reader =
        hound::WavReader::new(io::Cursor::new(SMOKE_WAV)).map_err(|e| clip_err(e.to_string()))?;
    let spec = reader.spec();
    if spec.sample_rate != crate::audio::SAMPLE_RATE
        || spec.channels != 1
        || spec.bits_per_sample != 16
        || spec.sample_format != hound::SampleFormat::Int
    {
        return Err(clip_err(format!("{spec:?} is not 16 kHz mono 16-bit PCM")));
    }
    let take = usize::try_from(SMOKE_CLIP_MS * u64::from(crate::audio::SAMPLE_RATE) / 1000)
        .unwrap_or(usize::MAX);
    reader
        .into_samples::<i16>()
        .take(take)
        .map(|s| {
            s.map(|v| f32::from(v) / 32768.0)
                .map_err(|e| clip_err(e.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha_of(bytes: &[u8]) -> String {
        hex(digest::digest(&digest::SHA256, bytes).as_ref())
    }

    fn config_with(models_dir: &Path) -> Config {
        let mut config = Config::defaults().unwrap();
        config.models_dir = models_dir.to_path_buf();
        // Nothing here reaches a worker; a wrong path makes sure of that.
        config.workers.dir = Some(PathBuf::from("/nonexistent-worker-dir"));
        config
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn names_that_could_escape_or_not_be_configured_are_refused() {
        for bad in [
            "",
            "../evil",
            "..",
            ".hidden",
            "a/b",
            "a b",
            "naïve",
            &"x".repeat(65),
        ] {
            assert!(
                matches!(check_name(bad), Err(InstallError::InvalidName { .. })),
                "accepted {bad:?}"
            );
        }
        for good in ["llama-3.1-8b_q4", "Mistral-7B", "m"] {
            check_name(good).unwrap();
        }
    }

    #[test]
    fn sha256_is_normalized_or_refused() {
        let upper = "AB".repeat(32);
        assert_eq!(
            normalize_sha256(&format!(" {upper}\n")).unwrap(),
            "ab".repeat(32)
        );
        for bad in ["", "abc", &"g".repeat(64), &"a".repeat(65)] {
            assert!(matches!(
                normalize_sha256(bad),
                Err(InstallError::InvalidSha256 { .. })
            ));
        }
    }

    #[test]
    fn a_wrong_sha256_names_both_hashes_and_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let models = tmp.path().join("models");
        let source = tmp.path().join("big.gguf");
        fs::write(&source, b"GGUF not really a model").unwrap();
        let wrong = "0".repeat(64);
        let err = install_local_model(
            &config_with(&models),
            &InstallRequest {
                name: "clinic-llm".into(),
                kind: ModelKind::Llm,
                source: source.clone(),
                sha256: wrong.clone(),
            },
        )
        .unwrap_err();
        let actual = sha_of(&fs::read(&source).unwrap());
        let message = err.to_string();
        assert!(
            matches!(&err, InstallError::HashMismatch { expected, actual: got, .. } if *expected == wrong && *got == actual),
            "{err}"
        );
        assert!(
            message.contains(&wrong) && message.contains(&actual),
            "{message}"
        );
        assert!(entries(&models).is_empty(), "left {:?}", entries(&models));
    }

    #[test]
    fn manifest_names_are_reserved() {
        let tmp = tempfile::tempdir().unwrap();
        let source = tmp.path().join("m.gguf");
        fs::write(&source, b"x").unwrap();
        let err = install_local_model(
            &config_with(tmp.path()),
            &InstallRequest {
                name: "smollm2-135m-instruct".into(),
                kind: ModelKind::Llm,
                source,
                sha256: "0".repeat(64),
            },
        )
        .unwrap_err();
        assert!(matches!(err, InstallError::ReservedName { .. }), "{err}");
    }

    #[test]
    fn an_existing_model_is_kept_unless_identical() {
        let tmp = tempfile::tempdir().unwrap();
        let models = tmp.path().join("models");
        let dir = models.join("clinic-llm");
        fs::create_dir_all(&dir).unwrap();
        let content = b"GGUF installed earlier";
        fs::write(dir.join(LLM_FILE), content).unwrap();
        let record = LocalRecord {
            name: "clinic-llm".into(),
            role: ModelKind::Llm,
            format: "gguf".into(),
            origin: Origin::Local,
            source_file: "x.gguf".into(),
            installed_unix_s: 0,
            files: vec![RecordFile {
                path: LLM_FILE.into(),
                sha256: sha_of(content),
                bytes: content.len() as u64,
            }],
            smoke: SmokeReport {
                load_ms: 1,
                run_ms: 2,
            },
        };
        fs::write(
            dir.join(INSTALLED_FILE),
            serde_json::to_vec(&record).unwrap(),
        )
        .unwrap();
        let config = config_with(&models);

        let same = tmp.path().join("same.gguf");
        fs::write(&same, content).unwrap();
        let model = install_local_model(
            &config,
            &InstallRequest {
                name: "clinic-llm".into(),
                kind: ModelKind::Llm,
                source: same,
                sha256: sha_of(content),
            },
        )
        .unwrap();
        assert_eq!(model.origin, Origin::Local);
        assert_eq!(model.smoke, Some(record.smoke));

        let other = tmp.path().join("other.gguf");
        fs::write(&other, b"GGUF a different model").unwrap();
        let err = install_local_model(
            &config,
            &InstallRequest {
                name: "clinic-llm".into(),
                kind: ModelKind::Llm,
                source: other,
                sha256: sha_of(b"GGUF a different model"),
            },
        )
        .unwrap_err();
        assert!(
            matches!(err, InstallError::AlreadyInstalled { .. }),
            "{err}"
        );
        assert_eq!(fs::read(dir.join(LLM_FILE)).unwrap(), content);
    }

    #[test]
    fn a_missing_worker_is_not_blamed_on_the_model_and_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let models = tmp.path().join("models");
        let source = tmp.path().join("m.gguf");
        fs::write(&source, b"GGUF").unwrap();
        let err = install_local_model(
            &config_with(&models),
            &InstallRequest {
                name: "clinic-llm".into(),
                kind: ModelKind::Llm,
                source,
                sha256: sha_of(b"GGUF"),
            },
        )
        .unwrap_err();
        assert!(
            matches!(err, InstallError::SmokeUnavailable { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("cargo build"), "{err}");
        assert!(entries(&models).is_empty(), "left {:?}", entries(&models));
    }

    #[test]
    fn listing_reads_records_pins_and_bare_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let models = tmp.path();
        fs::write(models.join("manifest.toml"), b"not a model").unwrap();
        fs::create_dir(models.join(".install-x-1-0")).unwrap();

        // Fetched, with a record in the format `models fetch` writes.
        let vad = models.join("silero-vad");
        fs::create_dir(&vad).unwrap();
        fs::write(vad.join("silero_vad.onnx"), b"onnx").unwrap();
        let sha = sha_of(b"onnx");
        fs::write(
            vad.join(INSTALLED_FILE),
            format!(
                r#"{{"name":"silero-vad","role":"vad","format":"onnx","license":"MIT","packages":[],
                "files":[{{"path":"silero_vad.onnx","sha256":"{sha}","bytes":4}}]}}"#
            ),
        )
        .unwrap();

        // No record, but a manifest name: the pin is the hash it should have.
        let llm = models.join("smollm2-135m-instruct");
        fs::create_dir(&llm).unwrap();
        fs::write(llm.join("model.gguf"), b"GGUF").unwrap();

        // No record and no manifest entry.
        let bare = models.join("hand-made");
        fs::create_dir(&bare).unwrap();
        fs::write(bare.join(ASR_FILE), b"lmgg").unwrap();

        let listed = list_installed(models).unwrap();
        let names: Vec<&str> = listed.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["hand-made", "silero-vad", "smollm2-135m-instruct"]);

        assert_eq!(listed[0].kind, InstalledKind::Asr);
        assert_eq!(listed[0].origin, Origin::Unrecorded);
        assert!(!listed[0].intact);
        assert_eq!(listed[0].files[0].sha256, None);

        assert_eq!(listed[1].kind, InstalledKind::Other);
        assert_eq!(listed[1].origin, Origin::Fetched);
        assert!(listed[1].intact);
        assert_eq!(listed[1].files[0].sha256.as_deref(), Some(sha.as_str()));

        assert_eq!(listed[2].kind, InstalledKind::Llm);
        assert_eq!(
            listed[2].files[0].sha256.as_deref(),
            Some("b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53")
        );

        // A truncated file shows as not intact without hashing anything.
        fs::write(vad.join("silero_vad.onnx"), b"on").unwrap();
        assert!(!list_installed(models).unwrap()[1].intact);

        assert!(list_installed(&models.join("absent")).unwrap().is_empty());
    }

    #[test]
    fn staging_left_by_a_dead_process_is_removed_and_live_ones_kept() {
        let tmp = tempfile::tempdir().unwrap();
        // pid_max is at most 2^22, so this pid cannot be running.
        let dead = tmp.path().join(".install-my-model-4194305-0");
        let ours = tmp
            .path()
            .join(format!(".install-other-{}-3", std::process::id()));
        let unrelated = tmp.path().join(".staging-whisper-1");
        for dir in [&dead, &ours, &unrelated] {
            fs::create_dir(dir).unwrap();
        }
        remove_stale_staging(tmp.path());
        assert!(!dead.exists());
        assert!(ours.exists() && unrelated.exists());
    }

    #[test]
    fn the_smoke_clip_is_six_seconds_of_sound() {
        let clip = smoke_clip().unwrap();
        assert_eq!(clip.len(), 6 * 16_000);
        let peak = clip.iter().fold(0f32, |m, s| m.max(s.abs()));
        assert!(peak > 0.05, "the clip is silent (peak {peak})");
    }

    #[test]
    fn smoke_failures_read_as_reasons() {
        let failure = SmokeFailure::LoadFailed {
            detail: "the llm worker exited (exit code 65)".into(),
            hint: Some("the file is not a GGUF file"),
        };
        let err = InstallError::SmokeTest {
            name: "clinic-llm".into(),
            kind: ModelKind::Llm,
            failure,
        };
        let message = err.to_string();
        assert!(message.contains("failed to load the model"), "{message}");
        assert!(message.contains("not a GGUF"), "{message}");
        assert!(message.contains("nothing was changed"), "{message}");
    }
}
