//! The daemon: opens the store, starts the inference workers, and processes every encounter its
//! capture sources produce until SIGTERM/SIGINT. Capture so far is replay of recorded WAV files;
//! live devices come with the room-audio work and plug in as further sources. Inference runs on
//! a dedicated thread, never on the async runtime that waits for signals.

use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

mod components;

use tokio::sync::{mpsc, watch};

use self::components::{Components, ReviewComponent, SenderComponent};
use crate::admin::{self, AdminState, ApplyRequest, Health, Runtime};
use crate::config::Config;
use crate::draft::context::DraftingContext;
use crate::inference::{Drafter, WorkerDrafter, WorkerTranscriber};
use crate::metrics::{Metrics, METRICS};
use crate::pipeline::{self, AudioSource};
use crate::room::RoomModels;
use crate::service::{Heartbeat, Notifier};
use crate::store::Store;
use crate::visits::{StartedVisit, VisitControl, VisitDesk, VisitState};
use crate::{audio, report};

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub exit_when_idle: bool,
    pub export_dir: Option<PathBuf>,
    /// The config file the daemon was started with; the admin API writes pushed configs there.
    pub config_path: Option<PathBuf>,
}

pub fn run(config: &Config, options: &RunOptions) -> Result<()> {
    // One daemon per data directory, and no restore underneath a running one.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&config.data_dir)
        .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
    let _data_dir_lock = crate::store::lock::DataDirLock::try_acquire(&config.data_dir)?;
    let shutdown = Arc::new(AtomicBool::new(false));
    let notifier = Arc::new(Notifier::from_env());
    // The processing thread proves it is not hung; the watchdog is fed only while it does.
    let heartbeat = Arc::new(Heartbeat::new());
    let health = Arc::new(Health::new(heartbeat.clone()));
    let (store_opened, processing_ready) = tokio::sync::oneshot::channel::<()>();
    let (config_tx, config_rx) = watch::channel(Arc::new(config.clone()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // A daemon asked to exit when idle is a batch run: no page, no admin port, no sender.
    let serving = !options.exit_when_idle;
    // The services open the store before the processing thread does, so the two never race to
    // migrate a new database.
    let review_state = if serving {
        ReviewComponent::open_state(config).context("cannot start the review service")?
    } else {
        None
    };
    let (apply_tx, mut apply_rx) = mpsc::channel::<ApplyRequest>(1);
    let admin_state = match (config.admin.listen, serving) {
        (Some(_), true) => Some(
            AdminState::open(
                config,
                options.config_path.clone(),
                Runtime {
                    apply: apply_tx,
                    current: config_rx.clone(),
                    health: health.clone(),
                },
            )
            .context("cannot start the admin API")?,
        ),
        _ => None,
    };

    let worker_config = config.clone();
    let worker_options = options.clone();
    let worker_shutdown = shutdown.clone();
    let worker_liveness = Liveness {
        heartbeat: heartbeat.clone(),
        notifier: notifier.clone(),
        ready: store_opened,
    };
    let worker_configs = config_rx.clone();
    // Visits started at the review page reach the processing thread through the desk.
    let desk = serving.then(|| VisitDesk::new(visit_rooms(config)));
    let worker_desk = desk.clone();
    let processing = std::thread::Builder::new()
        .name("encounters".into())
        .spawn(move || {
            process_sources(
                &worker_config,
                &worker_configs,
                &worker_options,
                &worker_shutdown,
                worker_liveness,
                worker_desk,
            )
        })
        .context("cannot start the processing thread")?;
    // The sender drains the outbox on its own connection. A batch run signs nothing, so it
    // does not start one.
    let sender = if serving {
        SenderComponent::start(config, health.clone()).context("cannot start the EHR sender")?
    } else {
        SenderComponent::off()
    };
    // Retention runs beside the pipeline on its own connection; a batch run (exit when idle)
    // does not wait for it.
    let retention = if serving {
        let retention_configs = config_rx.clone();
        let retention_shutdown = shutdown.clone();
        Some(
            std::thread::Builder::new()
                .name("retention".into())
                .spawn(move || enforce_retention(&retention_configs, &retention_shutdown))
                .context("cannot start the retention job")?,
        )
    } else {
        None
    };

    let exit_when_idle = options.exit_when_idle;
    let (stop_admin, admin_stopped) = watch::channel(false);
    let mut components = Components {
        review: ReviewComponent::off(),
        sender,
        health: health.clone(),
        with_sender: serving,
    };
    runtime.block_on(async {
        components.review = ReviewComponent::start(config, review_state, &health)
            .await
            .map_err(anyhow::Error::msg)?;
        let admin_task = match (admin_state, config.admin.listen) {
            (Some(state), Some(addr)) => {
                let server = admin::bind(addr, state).await?;
                let mut stopped = admin_stopped;
                Some(tokio::spawn(admin::serve(server, async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                })))
            }
            _ => None,
        };
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("cannot install the SIGTERM handler")?;
        // systemd wants a ping within the interval; half leaves room for a slow tick.
        let mut watchdog = notifier.watchdog_interval().map(|interval| {
            let mut ticks = tokio::time::interval(interval / 2);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks
        });
        let mut processing_ready = processing_ready;
        let mut announced = false;
        let mut starved = false;
        loop {
            // The processing thread beats (or is inside an encounter's budget) and the sender
            // has not panicked. A sender that stopped on a bad certificate is not hung: it
            // logged why.
            let alive = !components.sender.panicked()
                && notifier
                    .watchdog_interval()
                    .is_none_or(|interval| heartbeat.is_alive(interval));
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = terminate.recv() => break,
                opened = &mut processing_ready, if !announced => {
                    announced = true;
                    // The services are bound by now; a processing thread that failed before
                    // opening the store never announces readiness.
                    if opened.is_ok() {
                        health.processing_started();
                        notifier.ready("ready: 0 encounters stored, 0 failed");
                    }
                }
                Some(request) = apply_rx.recv() => {
                    let problems = components::apply(&mut components, &config_tx, request.config).await;
                    let _ = request.reply.send(problems);
                }
                _ = async {
                    match watchdog.as_mut() {
                        Some(ticks) => {
                            ticks.tick().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                } => {
                    if !processing.is_finished() && alive {
                        notifier.ping_watchdog();
                        starved = false;
                    } else if !starved {
                        starved = true;
                        tracing::error!(
                            "a daemon thread stopped or made no progress; no longer feeding the \
                             systemd watchdog so the service is restarted"
                        );
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    if exit_when_idle && processing.is_finished() {
                        break;
                    }
                }
            }
        }
        health.set_draining();
        let _ = stop_admin.send(true);
        if let Some(task) = admin_task {
            if task.await.is_err() {
                tracing::error!("the admin API panicked");
            }
        }
        components.review.stop().await.map_err(anyhow::Error::msg)?;
        anyhow::Ok(())
    })?;
    tracing::info!("shutting down: finishing the current encounter");
    notifier.stopping();
    shutdown.store(true, Ordering::SeqCst);
    if let Some(desk) = &desk {
        // A visit being heard ends here and is stored like one the clinician ended.
        desk.close();
    }
    components.sender.request_stop();
    let alive = || {
        !components.sender.panicked()
            && notifier
                .watchdog_interval()
                .is_none_or(|interval| heartbeat.is_alive(interval))
    };
    // systemd's stop timeout is extended in steps while the current encounter still makes
    // progress within its budget; a hung drain stops asking and is killed at TimeoutStopSec.
    let threads_running = || {
        !processing.is_finished()
            || components.sender.is_running()
            || retention.as_ref().is_some_and(|t| !t.is_finished())
    };
    while threads_running() {
        if processing.is_finished() || alive() {
            notifier.extend_timeout(DRAIN_EXTENSION);
            notifier.ping_watchdog();
        }
        let until = Instant::now() + DRAIN_EXTENSION / 4;
        while threads_running() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    components.sender.join();
    if let Some(retention) = retention {
        if retention.join().is_err() {
            tracing::error!("the retention job panicked");
        }
    }
    match processing.join() {
        Ok(result) => result,
        Err(_) => anyhow::bail!("the processing thread panicked"),
    }
}

/// How much longer systemd is asked to wait, each time, while the drain makes progress.
const DRAIN_EXTENSION: Duration = Duration::from_secs(20);

/// What the processing thread needs to tell systemd (through the async loop) that it lives.
struct Liveness {
    heartbeat: Arc<Heartbeat>,
    notifier: Arc<Notifier>,
    ready: tokio::sync::oneshot::Sender<()>,
}

/// The longest one encounter may keep the processing thread from beating: everything the worker
/// supervisor's own deadlines allow (each request's attempts, restarts and backoff), so only a
/// step that outlived all of them stops the watchdog.
fn encounter_budget(config: &Config, audio_seconds: f32) -> Duration {
    // Packed ASR chunks carry at least a second of speech each; drafting makes at most one
    // call per template section, far fewer than this.
    const MIN_CHUNK_SECONDS: f32 = 1.0;
    const DRAFTING_REQUESTS: u32 = 32;
    let workers = &config.workers;
    let attempts = workers.max_attempts.max(1);
    let requests = (audio_seconds / MIN_CHUNK_SECONDS).ceil() as u32 + DRAFTING_REQUESTS;
    let per_attempt =
        workers.startup_timeout + workers.request_timeout + workers.restart_backoff_max;
    let per_audio = Duration::try_from_secs_f32(audio_seconds * workers.timeout_per_audio_second)
        .unwrap_or(Duration::MAX);
    per_attempt
        .checked_mul(attempts.saturating_mul(requests))
        .and_then(|d| d.checked_add(per_audio.checked_mul(attempts)?))
        .unwrap_or(Duration::MAX)
}

fn process_sources(
    config: &Config,
    configs: &watch::Receiver<Arc<Config>>,
    options: &RunOptions,
    shutdown: &AtomicBool,
    liveness: Liveness,
    desk: Option<Arc<VisitDesk>>,
) -> Result<()> {
    let Liveness {
        heartbeat,
        notifier,
        ready,
    } = liveness;
    // Opening (and migrating) the store and loading templates are bounded by the disk, not by
    // a worker deadline; a worker start is the slowest thing that may follow.
    heartbeat.busy_for(config.workers.startup_timeout);
    let store = Store::open(&config.data_dir)?;
    let mut transcriber = WorkerTranscriber::new(config)?;
    let mut drafting = DraftingContext::load(config)?;
    let mut drafter = WorkerDrafter::from_config(config)?;
    let mut room_models: Option<RoomModels> = None;
    // The settings the workers and templates were made with; a pushed config replaces them
    // between encounters, never during one.
    let mut live = configs.borrow().clone();
    tracing::info!(
        sources = config.replay_sources.len(),
        data_dir = %config.data_dir.display(),
        "daemon ready"
    );
    heartbeat.beat();
    let _ = ready.send(());
    let mut stored = 0usize;
    let mut failures = 0usize;
    let report_counts = |stored: usize, failures: usize| {
        notifier.status(&format!(
            "ready: {stored} encounters stored, {failures} failed"
        ));
    };
    // A replay source that is a room's array is a device for visits, not an encounter.
    let encounters: Vec<&crate::config::ReplaySource> = config
        .replay_sources
        .iter()
        .enumerate()
        .filter(|(index, _)| !is_room_device(config, *index))
        .map(|(_, source)| source)
        .collect();
    Metrics::add(&METRICS.encounters_queued, encounters.len() as u64);
    let mut engines = Engines {
        transcriber: &mut transcriber,
        drafter: &mut drafter,
        drafting: &mut drafting,
        room_models: &mut room_models,
    };
    for source in encounters {
        heartbeat.beat();
        if shutdown.load(Ordering::SeqCst) {
            break;
        }
        METRICS.encounters_queued.fetch_sub(1, Ordering::Relaxed);
        follow_config(
            configs,
            &mut live,
            &mut engines,
            &heartbeat,
            desk.as_deref(),
        );
        let Engines {
            transcriber,
            drafter,
            drafting,
            room_models,
        } = &mut engines;
        let (transcriber, drafter, drafting) = (&mut **transcriber, &mut **drafter, &**drafting);
        let config = live.as_ref();
        let result = match room_geometry(config, source) {
            Some(geometry) => listen_to_room(
                config,
                source,
                geometry,
                &store,
                room_models.get_or_insert_with(|| RoomModels::load(config)),
                transcriber,
                drafter.as_mut().map(|d| d as &mut dyn Drafter),
                drafting,
                shutdown,
                &heartbeat,
            ),
            None => process_recording(
                config,
                source,
                &store,
                transcriber,
                drafter.as_mut().map(|d| d as &mut dyn Drafter),
                drafting,
                shutdown,
                &heartbeat,
            ),
        };
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(SourceError::Skipped(e)) => {
                // One bad file must not stop the box: report it and go on with the next source.
                tracing::error!(error = %e, "replay source skipped");
                failures += 1;
                report_counts(stored, failures);
                continue;
            }
            Err(SourceError::Failed(e)) => {
                tracing::error!(error = %e, "encounter failed");
                Metrics::add(&METRICS.encounters_failed, 1);
                failures += 1;
                report_counts(stored, failures);
                continue;
            }
            Err(SourceError::Fatal(e)) => return Err(e),
        };
        heartbeat.beat();
        Metrics::add(&METRICS.encounters_processed, 1);
        Metrics::add(&METRICS.asr_audio_ms, outcome.audio_duration_ms);
        Metrics::add(&METRICS.asr_busy_ms, outcome.timings.asr_ms);
        stored += 1;
        report_counts(stored, failures);
        tracing::info!(
            encounter = %outcome.encounter_id,
            total_ms = outcome.timings.total_ms,
            "encounter stored"
        );
        if let Some(dir) = &options.export_dir {
            let out = dir.join(&outcome.encounter_id);
            report::write_outputs(&out, &outcome)?;
            // Patient content left the store: that is an export, and it is audited.
            store.append_audit(&crate::store::AuditEntry {
                actor: crate::store::Actor::System,
                action: crate::store::AuditAction::NoteExported,
                subject: outcome.encounter_id.clone(),
                detail: crate::store::AuditDetail::default(),
            })?;
            report::print_summary(&outcome);
            println!("Exported to {}", out.display());
        }
    }
    if failures > 0 && options.exit_when_idle {
        anyhow::bail!("{failures} encounter(s) failed; see the log above");
    }
    if !options.exit_when_idle {
        tracing::info!("all capture sources done; waiting for visits or a stop signal");
        while !shutdown.load(Ordering::SeqCst) {
            heartbeat.beat();
            let Some(desk) = desk.as_deref() else {
                std::thread::sleep(Duration::from_millis(200));
                continue;
            };
            follow_config(configs, &mut live, &mut engines, &heartbeat, Some(desk));
            let Some(visit) = desk.next_started(Duration::from_millis(200)) else {
                continue;
            };
            let config = live.as_ref();
            let Engines {
                transcriber,
                drafter,
                drafting,
                room_models,
            } = &mut engines;
            let outcome = hear_visit(
                config,
                &visit,
                desk,
                &store,
                room_models.get_or_insert_with(|| RoomModels::load(config)),
                transcriber,
                drafter.as_mut().map(|d| d as &mut dyn Drafter),
                drafting,
                shutdown,
                &heartbeat,
            );
            match outcome {
                Ok(Some(outcome)) => {
                    Metrics::add(&METRICS.encounters_processed, 1);
                    Metrics::add(&METRICS.asr_audio_ms, outcome.audio_duration_ms);
                    Metrics::add(&METRICS.asr_busy_ms, outcome.timings.asr_ms);
                    stored += 1;
                    report_counts(stored, failures);
                    tracing::info!(
                        encounter = %outcome.encounter_id,
                        tail_ms = outcome.timings.tail_ms,
                        "visit stored"
                    );
                    desk.report(
                        &visit.id,
                        Some(VisitState::Stored {
                            encounter_id: outcome.encounter_id,
                        }),
                        None,
                    );
                }
                Ok(None) => {
                    tracing::info!("visit ended without consent; nothing was kept");
                    desk.report(&visit.id, Some(VisitState::Discarded), None);
                }
                Err(failure) => {
                    tracing::error!(error = %failure.detail, "visit failed");
                    Metrics::add(&METRICS.encounters_failed, 1);
                    failures += 1;
                    report_counts(stored, failures);
                    desk.report(
                        &visit.id,
                        Some(VisitState::Failed {
                            reason: failure.reason.to_string(),
                        }),
                        None,
                    );
                }
            }
        }
    }
    Ok(())
}

/// The engines the processing thread keeps between encounters.
struct Engines<'a> {
    transcriber: &'a mut WorkerTranscriber,
    drafter: &'a mut Option<WorkerDrafter>,
    drafting: &'a mut DraftingContext,
    room_models: &'a mut Option<RoomModels>,
}

/// Takes a pushed config between encounters (never during one): engines it changes are
/// rebuilt, and the visit desk learns its rooms.
fn follow_config(
    configs: &watch::Receiver<Arc<Config>>,
    live: &mut Arc<Config>,
    engines: &mut Engines<'_>,
    heartbeat: &Heartbeat,
    desk: Option<&VisitDesk>,
) {
    let latest = configs.borrow().clone();
    if Arc::ptr_eq(&latest, live) {
        return;
    }
    heartbeat.busy_for(latest.workers.startup_timeout);
    if let Err(e) = reload_engines(
        live,
        &latest,
        engines.transcriber,
        engines.drafter,
        engines.drafting,
    ) {
        tracing::error!(error = %e, "the new config's models could not be loaded; keeping the previous ones");
        return;
    }
    if let Some(desk) = desk {
        desk.set_rooms(visit_rooms(&latest));
    }
    *live = latest;
    // The room models follow the models directory; reload them at first use.
    *engines.room_models = None;
    heartbeat.beat();
}

/// Rooms a visit can be started in: an array assigned and a geometry for it.
pub(crate) fn visit_rooms(config: &Config) -> Vec<String> {
    config
        .rooms
        .iter()
        .filter(|room| room.array.is_some() && room.geometry.len() >= 2)
        .map(|room| room.name.clone())
        .collect()
}

/// Whether replay source `index` is some room's array (`array = "replay-<index>"`).
fn is_room_device(config: &Config, index: usize) -> bool {
    let id = format!("replay-{index}");
    config
        .rooms
        .iter()
        .any(|room| room.array.as_deref() == Some(id.as_str()))
}

/// Why a visit failed: a step IT can look into, and the error for the log.
struct VisitFailure {
    reason: &'static str,
    detail: String,
}

/// A visit started at the review page: the room's array (and the badge heard with it) through
/// the live path until the clinician ends it; stored and drafted unless no consent was ever
/// given. A replay source stands in for a sound card when the room's array is `replay-<n>`.
#[allow(clippy::too_many_arguments)]
fn hear_visit(
    config: &Config,
    visit: &StartedVisit,
    desk: &VisitDesk,
    store: &Store,
    models: &mut RoomModels,
    transcriber: &mut WorkerTranscriber,
    drafter: Option<&mut dyn Drafter>,
    drafting: &DraftingContext,
    shutdown: &AtomicBool,
    heartbeat: &Heartbeat,
) -> Result<Option<pipeline::EncounterOutcome>, VisitFailure> {
    use crate::capture::{CaptureSource, CpalSource, ReplayOptions, ReplaySource};
    let failed = |reason: &'static str| {
        move |e: crate::capture::CaptureError| VisitFailure {
            reason,
            detail: e.to_string(),
        }
    };
    let room = config
        .rooms
        .iter()
        .find(|r| r.name == visit.request.room)
        .filter(|r| r.geometry.len() >= 2)
        .ok_or(VisitFailure {
            reason: "the room has no array configured",
            detail: "the visit's room is not in the running config".into(),
        })?;
    let device = room.array.clone().unwrap_or_default();
    let replay = device
        .strip_prefix("replay-")
        .and_then(|n| n.parse::<usize>().ok())
        .and_then(|n| config.replay_sources.get(n));
    let (kind, array, badge): (
        &'static str,
        Box<dyn CaptureSource>,
        Option<Box<dyn CaptureSource>>,
    ) = match replay {
        Some(source) => {
            let options = ReplayOptions {
                speed: if source.realtime { 1.0 } else { f32::INFINITY },
                ..ReplayOptions::default()
            };
            let array = ReplaySource::open(device.as_str(), &source.path, options)
                .map_err(failed("the room's array could not be opened"))?;
            let badge = match &source.badge_audio {
                Some(path) => Some(Box::new(
                    ReplaySource::open("replay-badge", path, options)
                        .map_err(failed("the badge could not be opened"))?,
                ) as Box<dyn CaptureSource>),
                None => None,
            };
            ("replay", Box::new(array), badge)
        }
        None => (
            "device",
            Box::new(
                CpalSource::new(device.as_str(), room.geometry.len() as u16)
                    .map_err(failed("the room's array could not be opened"))?,
            ),
            None,
        ),
    };
    let capture = crate::live::RoomCapture {
        array: array
            .start(REPLAY_BUFFER_BLOCKS)
            .map_err(failed("the room's array could not be started"))?,
        badge: match badge {
            Some(b) => Some(
                b.start(REPLAY_BUFFER_BLOCKS)
                    .map_err(failed("the badge could not be started"))?,
            ),
            None => None,
        },
        geometry: room.geometry.clone(),
    };
    desk.report(&visit.id, Some(VisitState::Listening), Some(0));
    let last_report = std::cell::Cell::new(Instant::now());
    let progress = |p: crate::live::Progress| match p {
        crate::live::Progress::Listening { heard_s } => {
            heartbeat.beat();
            if last_report.get().elapsed() >= Duration::from_millis(250) {
                last_report.set(Instant::now());
                desk.report(&visit.id, None, Some((heard_s * 1000.0) as u64));
            }
        }
        crate::live::Progress::Tail { heard_s } => {
            desk.report(
                &visit.id,
                Some(VisitState::Finishing),
                Some((heard_s * 1000.0) as u64),
            );
            heartbeat.busy_for(encounter_budget(config, heard_s));
        }
    };
    let listened = crate::live::listen(
        config,
        capture,
        models,
        transcriber,
        &visit.control,
        shutdown,
        &progress,
    )
    .map_err(|e| VisitFailure {
        reason: "listening failed",
        detail: e.to_string(),
    })?;
    if listened.counts.kept_frames == 0 {
        return Ok(None);
    }
    let audio_source = AudioSource {
        kind,
        sha256: samples_sha256(&listened.samples),
        clinician_id: Some(visit.request.clinician_id.clone()),
        consent: true,
        patient_ref: visit.request.patient_ref.clone(),
    };
    pipeline::conclude(
        config,
        pipeline::Heard {
            samples: &listened.samples,
            transcript: listened.transcript,
            regions: listened.regions,
            timings: listened.timings,
            started: listened.started,
        },
        &audio_source,
        transcriber,
        drafter,
        drafting,
        store,
    )
    .map(Some)
    .map_err(|e| VisitFailure {
        reason: "storing or drafting the visit failed",
        detail: e.to_string(),
    })
}

/// SHA-256 of a signal (little-endian f32 bytes): the identity of audio heard live.
fn samples_sha256(samples: &[f32]) -> String {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for s in samples {
        context.update(&s.to_le_bytes());
    }
    context
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Rebuilds the workers and drafting context that a new config changes. Workers restart
/// with their next request, so an unchanged engine keeps its loaded model.
fn reload_engines(
    old: &Config,
    new: &Config,
    transcriber: &mut WorkerTranscriber,
    drafter: &mut Option<WorkerDrafter>,
    drafting: &mut DraftingContext,
) -> Result<()> {
    let changes = crate::admin::configs::changes(old, new);
    let touched = |part: &str| changes.hot.contains(&part);
    if touched("models") || touched("asr") || touched("workers") {
        *transcriber = WorkerTranscriber::new(new)?;
    }
    if touched("models") || touched("drafting") || touched("workers") {
        *drafting = DraftingContext::load(new)?;
        *drafter = WorkerDrafter::from_config(new)?;
    }
    Ok(())
}

/// Why a source produced no stored encounter.
enum SourceError {
    /// The source could not be read (a missing or broken file): skipped, the box goes on.
    Skipped(crate::room::RoomError),
    /// Processing failed (a worker gave up, the store refused): counted as a failed encounter.
    Failed(pipeline::PipelineError),
    /// The box cannot go on.
    Fatal(anyhow::Error),
}

/// Blocks a replay stream may hold before its reader catches up (20 ms each: 10 s).
const REPLAY_BUFFER_BLOCKS: usize = 500;

/// The geometry of a replay source's room when the recording has one channel per microphone
/// of it: such a recording is a room's array and goes through the room front end.
fn room_geometry(config: &Config, source: &crate::config::ReplaySource) -> Option<Vec<[f32; 3]>> {
    let geometry = source
        .room
        .as_deref()
        .and_then(|name| config.rooms.iter().find(|r| r.name == name))
        .map(|room| room.geometry.clone())
        .filter(|g| g.len() >= 2)?;
    let channels = hound::WavReader::open(&source.path)
        .map(|r| usize::from(r.spec().channels))
        .unwrap_or(0);
    (geometry.len() == channels).then_some(geometry)
}

/// A room's recording replayed through the capture layer as if its array (and the badge) were
/// live: the front end and the recogniser run while it plays, and the encounter is stored and
/// drafted when it ends.
#[allow(clippy::too_many_arguments)]
fn listen_to_room(
    config: &Config,
    source: &crate::config::ReplaySource,
    geometry: Vec<[f32; 3]>,
    store: &Store,
    models: &mut RoomModels,
    transcriber: &mut WorkerTranscriber,
    drafter: Option<&mut dyn Drafter>,
    drafting: &DraftingContext,
    shutdown: &AtomicBool,
    heartbeat: &Heartbeat,
) -> Result<pipeline::EncounterOutcome, SourceError> {
    use crate::capture::{CaptureSource, ReplayOptions, ReplaySource};
    let skipped = |e: crate::capture::CaptureError| SourceError::Skipped(e.into());
    let options = ReplayOptions {
        // A replayed recording arrives no faster than a microphone would deliver it, unless
        // asked to go as fast as it is processed.
        speed: if source.realtime { 1.0 } else { f32::INFINITY },
        ..ReplayOptions::default()
    };
    let array = ReplaySource::open("replay-array", &source.path, options).map_err(skipped)?;
    let badge = match &source.badge_audio {
        Some(path) => Some(ReplaySource::open("replay-badge", path, options).map_err(skipped)?),
        None => None,
    };
    let sha256 = pipeline::sha256_file(&source.path)
        .with_context(|| format!("cannot read {}", source.path.display()))
        .map_err(SourceError::Fatal)?;
    let capture = crate::live::RoomCapture {
        array: Box::new(array)
            .start(REPLAY_BUFFER_BLOCKS)
            .map_err(skipped)?,
        badge: match badge {
            Some(b) => Some(Box::new(b).start(REPLAY_BUFFER_BLOCKS).map_err(skipped)?),
            None => None,
        },
        geometry,
    };
    let progress = |p: crate::live::Progress| match p {
        crate::live::Progress::Listening { .. } => heartbeat.beat(),
        crate::live::Progress::Tail { heard_s } => {
            heartbeat.busy_for(encounter_budget(config, heard_s));
        }
    };
    let listened = crate::live::listen(
        config,
        capture,
        models,
        transcriber,
        &VisitControl::new(source.consent),
        shutdown,
        &progress,
    )
    .map_err(SourceError::Failed)?;
    let audio_source = AudioSource {
        kind: "replay",
        sha256,
        clinician_id: encounter_clinician(store, source, listened.badge_dbfs),
        consent: source.consent,
        patient_ref: source.patient_ref.clone(),
    };
    pipeline::conclude(
        config,
        pipeline::Heard {
            samples: &listened.samples,
            transcript: listened.transcript,
            regions: listened.regions,
            timings: listened.timings,
            started: listened.started,
        },
        &audio_source,
        transcriber,
        drafter,
        drafting,
        store,
    )
    .map_err(SourceError::Failed)
}

/// A single-channel recording (a file, a badge alone) read whole and processed at once.
#[allow(clippy::too_many_arguments)]
fn process_recording(
    config: &Config,
    source: &crate::config::ReplaySource,
    store: &Store,
    transcriber: &mut WorkerTranscriber,
    drafter: Option<&mut dyn Drafter>,
    drafting: &DraftingContext,
    shutdown: &AtomicBool,
    heartbeat: &Heartbeat,
) -> Result<pipeline::EncounterOutcome, SourceError> {
    let started = Instant::now();
    let audio = audio::read_wav(&source.path)
        .map_err(|e| SourceError::Skipped(crate::room::RoomError::from(e)))?;
    let duration_ms = audio.duration_ms();
    if source.realtime {
        // A replayed recording arrives no faster than a microphone would deliver it.
        let duration = Duration::from_millis(duration_ms);
        while started.elapsed() < duration && !shutdown.load(Ordering::SeqCst) {
            heartbeat.beat();
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    heartbeat.busy_for(encounter_budget(config, duration_ms as f32 / 1000.0));
    let sha256 = pipeline::sha256_file(&source.path)
        .with_context(|| format!("cannot read {}", source.path.display()))
        .map_err(SourceError::Fatal)?;
    let (energy, count) = audio.samples.iter().fold((0.0f64, 0usize), |(e, n), &v| {
        (e + f64::from(v) * f64::from(v), n + 1)
    });
    let audio_source = AudioSource {
        kind: "replay",
        sha256,
        clinician_id: encounter_clinician(store, source, Some(audio::level_dbfs(energy, count))),
        consent: source.consent,
        patient_ref: source.patient_ref.clone(),
    };
    pipeline::process_input(
        config,
        pipeline::EncounterInput::Mono(&audio),
        &audio_source,
        transcriber,
        drafter,
        drafting,
        store,
    )
    .map_err(SourceError::Failed)
}

/// Who an encounter belongs to: the clinician the source names, else the clinician its badge
/// is paired to (the badge heard in the room binds the encounter). Records the badge as seen,
/// with its speech level, for IT's badge list.
fn encounter_clinician(
    store: &Store,
    source: &crate::config::ReplaySource,
    badge_dbfs: Option<f64>,
) -> Option<String> {
    let named = clinician_id(store, source.clinician.as_deref());
    let Some(badge) = source.badge.as_deref() else {
        return named;
    };
    if let Err(e) =
        store.record_badge_heard(badge, badge_dbfs.unwrap_or(-120.0), source.room.as_deref())
    {
        tracing::warn!(error = %e, "cannot record the badge as heard");
    }
    if named.is_some() {
        return named;
    }
    match store.badge_clinician(badge) {
        Ok(Some(id)) => Some(id),
        Ok(None) => {
            tracing::warn!(
                badge = %badge,
                "the badge heard in this encounter is not paired; the encounter is stored \
                 unassigned (pair it on the admin port)"
            );
            None
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot look up the badge's clinician");
            None
        }
    }
}

/// The account id for a replay source's clinician. An unknown name is logged (staff names are
/// not patient data) and the encounter stays unassigned rather than being dropped.
fn clinician_id(store: &Store, username: Option<&str>) -> Option<String> {
    let username = username?;
    match store.user_by_username(username) {
        Ok(Some(user)) => Some(user.id),
        Ok(None) => {
            tracing::error!(
                clinician = %username,
                "replay source names a clinician without an account; create it with \
                 `edge-scribe users add`; the encounter is stored unassigned"
            );
            None
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot look up the replay source's clinician");
            None
        }
    }
}

/// Applies the retention policy now and then every `retention.interval` until shutdown. A
/// failed run is logged and retried at the next interval: retention must never stop the box.
fn enforce_retention(configs: &watch::Receiver<Arc<Config>>, shutdown: &AtomicBool) {
    let mut config = configs.borrow().clone();
    let store = match Store::open(&config.data_dir) {
        Ok(store) => store,
        Err(e) => {
            tracing::error!(error = %e, "retention job cannot open the store; it will not run");
            return;
        }
    };
    loop {
        match store.apply_retention(&config.retention.policy, crate::store::now_ms()) {
            Ok(report) if report.is_empty() => tracing::debug!("retention: nothing due"),
            Ok(report) => tracing::info!(
                audio_encounters = report.audio_encounters,
                transcript_encounters = report.transcript_encounters,
                unsigned_drafts = report.unsigned_drafts,
                signed_drafts = report.signed_drafts,
                "retention removed expired records"
            ),
            Err(e) => tracing::error!(error = %e, "retention run failed; retrying later"),
        }
        let next = Instant::now() + config.retention.interval;
        while Instant::now() < next {
            if shutdown.load(Ordering::SeqCst) {
                return;
            }
            // A pushed config with a new policy applies at once, not after the old interval.
            let latest = configs.borrow().clone();
            if !Arc::ptr_eq(&latest, &config) {
                let policy_changed =
                    format!("{:?}", latest.retention) != format!("{:?}", config.retention);
                config = latest;
                if policy_changed {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
