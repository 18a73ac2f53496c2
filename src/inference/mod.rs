//! Inference as the pipeline sees it: the [`Transcriber`] and [`Drafter`] traits, and their
//! implementations that run whisper.cpp and llama.cpp in supervised worker processes.
//!
//! The pipeline never sees an FFI type or a process: it calls a trait. The worker-backed
//! implementations send the workers only what they need — audio in, text out for ASR; a prompt in,
//! text out for drafting — and never a database handle, key or network access.

pub mod sandbox;
pub mod worker;

use std::path::{Path, PathBuf};
use std::time::Duration;

use edge_scribe_protocol::{samples_to_payload, Request, Response};
pub use edge_scribe_protocol::{AsrSegment, ChatMessage};

use crate::config::{AsrSettings, Config, LlmSettings, WorkerSettings};
use worker::{SupervisedWorker, WorkerError, WorkerSpec};

pub const ASR_WORKER_BIN: &str = "edge-scribe-asr-worker";
pub const LLM_WORKER_BIN: &str = "edge-scribe-llm-worker";

#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    #[error(transparent)]
    Worker(#[from] WorkerError),
    #[error("the {engine} worker answered with an unexpected message ({got}); check that the worker and daemon versions match")]
    UnexpectedReply { engine: &'static str, got: String },
    #[error("model {name} is not installed under {dir}; run `edge-scribe models fetch`")]
    ModelMissing { name: String, dir: PathBuf },
}

/// What the transcriber is asked to do besides hearing the audio.
#[derive(Debug, Clone)]
pub struct TranscribeOptions {
    pub language: Option<String>,
    pub initial_prompt: Option<String>,
    pub beam_size: u32,
}

impl From<&AsrSettings> for TranscribeOptions {
    fn from(settings: &AsrSettings) -> Self {
        Self {
            language: Some(settings.language.clone()).filter(|l| l != "auto"),
            initial_prompt: settings.initial_prompt.clone(),
            beam_size: settings.beam_size,
        }
    }
}

/// Speech to text. Times in the result are relative to the start of `audio`.
pub trait Transcriber: Send {
    fn transcribe(
        &mut self,
        audio: &[f32],
        options: &TranscribeOptions,
    ) -> Result<Vec<AsrSegment>, InferenceError>;
    /// The model in use, for the record (file name, never a path).
    fn model(&self) -> String;
    /// SHA-256 of the model file, recorded with every transcript; empty when unknown.
    fn model_sha256(&self) -> String {
        String::new()
    }
    /// How often the backing engine had to be restarted so far.
    fn restarts(&self) -> u32 {
        0
    }
}

#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub messages: Vec<ChatMessage>,
    pub grammar: Option<String>,
    pub max_tokens: u32,
    pub temperature: f32,
    pub seed: u32,
}

#[derive(Debug, Clone)]
pub struct Generation {
    pub text: String,
    pub prompt_tokens: u32,
    pub generated_tokens: u32,
    pub prompt_ms: u64,
    pub generation_ms: u64,
}

/// Text generation for drafting.
pub trait Drafter: Send {
    fn generate(&mut self, request: &GenerateRequest) -> Result<Generation, InferenceError>;
    fn model(&self) -> String;
    /// SHA-256 of the model file, recorded with every draft; empty when unknown.
    fn model_sha256(&self) -> String {
        String::new()
    }
    fn restarts(&self) -> u32 {
        0
    }
}

/// Where the worker executables are: configured, or next to the running binary (which is where
/// `cargo build` and the install both put them).
pub fn worker_dir(settings: &WorkerSettings) -> PathBuf {
    if let Some(dir) = &settings.dir {
        return dir.clone();
    }
    if let Ok(dir) = std::env::var("EDGE_SCRIBE_WORKER_DIR") {
        return PathBuf::from(dir);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The ggml file whisper.cpp loads for an installed ASR model.
pub fn asr_model_file(models_dir: &Path, name: &str) -> PathBuf {
    models_dir.join(name).join("ggml-model.bin")
}

/// The GGUF file of an installed LLM: the one `.gguf` in its directory.
pub fn llm_model_file(models_dir: &Path, name: &str) -> Result<PathBuf, InferenceError> {
    let dir = models_dir.join(name);
    let missing = || InferenceError::ModelMissing {
        name: name.to_string(),
        dir: models_dir.to_path_buf(),
    };
    let entries = std::fs::read_dir(&dir).map_err(|_| missing())?;
    let mut ggufs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|ext| ext == "gguf"))
        .collect();
    ggufs.sort();
    ggufs.into_iter().next().ok_or_else(missing)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Whisper in a supervised `edge-scribe-asr-worker` process.
pub struct WorkerTranscriber {
    worker: SupervisedWorker,
    model: String,
    model_sha256: String,
    timeout_per_audio_second: f32,
}

impl WorkerTranscriber {
    pub fn new(config: &Config) -> Result<Self, InferenceError> {
        let model_file = asr_model_file(&config.models_dir, &config.asr_model);
        if !model_file.is_file() {
            return Err(InferenceError::ModelMissing {
                name: config.asr_model.clone(),
                dir: config.models_dir.clone(),
            });
        }
        let spec = WorkerSpec {
            engine: "asr",
            program: worker_dir(&config.workers).join(ASR_WORKER_BIN),
            args: vec![
                "--model".into(),
                model_file.clone().into_os_string(),
                "--threads".into(),
                config.asr.threads.to_string().into(),
            ],
            settings: config.workers.clone(),
        };
        let model = file_name(&model_file);
        Ok(Self {
            worker: SupervisedWorker::new(spec),
            model_sha256: recorded_sha256(&config.models_dir.join(&config.asr_model), &model)
                .unwrap_or_default(),
            model,
            timeout_per_audio_second: config.workers.timeout_per_audio_second,
        })
    }

    /// The supervised process, for tests and metrics.
    pub fn worker(&self) -> &SupervisedWorker {
        &self.worker
    }
}

impl Transcriber for WorkerTranscriber {
    fn transcribe(
        &mut self,
        audio: &[f32],
        options: &TranscribeOptions,
    ) -> Result<Vec<AsrSegment>, InferenceError> {
        let audio_seconds = audio.len() as f32 / crate::audio::SAMPLE_RATE as f32;
        let extra = Duration::from_secs_f32(audio_seconds * self.timeout_per_audio_second);
        let payload = samples_to_payload(audio);
        let reply = self.worker.call(
            |id| Request::Transcribe {
                id,
                language: options.language.clone(),
                initial_prompt: options.initial_prompt.clone(),
                beam_size: options.beam_size,
            },
            &payload,
            extra,
        )?;
        match reply {
            Response::Transcription { segments, .. } => Ok(segments),
            other => Err(InferenceError::UnexpectedReply {
                engine: "asr",
                got: worker::describe(&other),
            }),
        }
    }

    fn model_sha256(&self) -> String {
        self.model_sha256.clone()
    }

    fn model(&self) -> String {
        self.model.clone()
    }

    fn restarts(&self) -> u32 {
        self.worker.restarts()
    }
}

/// The sha256 that `models fetch` recorded for a file of an installed model, if any. Read from
/// `installed.json` rather than hashed again: a clinic's 8 GB model would take a minute.
fn recorded_sha256(model_dir: &Path, file: &str) -> Option<String> {
    let text = std::fs::read_to_string(model_dir.join("installed.json")).ok()?;
    let record: serde_json::Value = serde_json::from_str(&text).ok()?;
    record["files"]
        .as_array()?
        .iter()
        .find(|f| f["path"] == file)
        .and_then(|f| f["sha256"].as_str())
        .map(str::to_string)
}

/// llama.cpp in a supervised `edge-scribe-llm-worker` process.
pub struct WorkerDrafter {
    worker: SupervisedWorker,
    model: String,
    model_sha256: String,
}

impl WorkerDrafter {
    /// The drafter the config asks for, already starting: `None` when drafting is
    /// extraction-only (`drafting.use_llm = false`), so no LLM worker ever runs.
    pub fn from_config(config: &Config) -> Result<Option<Self>, InferenceError> {
        if !config.drafting.use_llm {
            return Ok(None);
        }
        let mut drafter = Self::new(config)?;
        drafter.start_early();
        Ok(Some(drafter))
    }

    pub fn new(config: &Config) -> Result<Self, InferenceError> {
        let model_file = llm_model_file(&config.models_dir, &config.llm_model)?;
        let LlmSettings {
            threads,
            context_tokens,
            ..
        } = config.llm;
        let spec = WorkerSpec {
            engine: "llm",
            program: worker_dir(&config.workers).join(LLM_WORKER_BIN),
            args: vec![
                "--model".into(),
                model_file.clone().into_os_string(),
                "--threads".into(),
                threads.to_string().into(),
                "--ctx".into(),
                context_tokens.to_string().into(),
            ],
            settings: config.workers.clone(),
        };
        let file = file_name(&model_file);
        Ok(Self {
            worker: SupervisedWorker::new(spec),
            model_sha256: recorded_sha256(&config.models_dir.join(&config.llm_model), &file)
                .unwrap_or_default(),
            // The configured name ("smollm2-135m-instruct"), not the file inside its directory.
            model: config.llm_model.clone(),
        })
    }

    pub fn worker(&self) -> &SupervisedWorker {
        &self.worker
    }

    /// Starts the worker now so the model loads while Whisper works (both fit in memory). A
    /// failure here is only logged: the first request retries the start and reports it.
    pub fn start_early(&mut self) {
        if let Err(e) = self.worker.start() {
            tracing::warn!(error = %e, "LLM worker did not start early; will retry when needed");
        }
    }
}

impl Drafter for WorkerDrafter {
    fn generate(&mut self, request: &GenerateRequest) -> Result<Generation, InferenceError> {
        // Small models generate a few dozen tokens a second on two cores; allow for that.
        let extra = Duration::from_millis(u64::from(request.max_tokens) * 100);
        let reply = self.worker.call(
            |id| Request::Generate {
                id,
                messages: request.messages.clone(),
                grammar: request.grammar.clone(),
                max_tokens: request.max_tokens,
                seed: request.seed,
                temperature: request.temperature,
            },
            &[],
            extra,
        )?;
        match reply {
            Response::Generated {
                text,
                prompt_tokens,
                generated_tokens,
                prompt_ms,
                generation_ms,
                ..
            } => Ok(Generation {
                text,
                prompt_tokens,
                generated_tokens,
                prompt_ms,
                generation_ms,
            }),
            other => Err(InferenceError::UnexpectedReply {
                engine: "llm",
                got: worker::describe(&other),
            }),
        }
    }

    fn model_sha256(&self) -> String {
        self.model_sha256.clone()
    }

    fn model(&self) -> String {
        self.model.clone()
    }

    fn restarts(&self) -> u32 {
        self.worker.restarts()
    }
}
