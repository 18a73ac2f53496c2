//! The daemon: opens the store, starts the inference workers, and processes every encounter its
//! capture sources produce until SIGTERM/SIGINT. Capture so far is replay of recorded WAV files;
//! live devices come with the room-audio work and plug in as further sources. Inference runs on
//! a dedicated thread, never on the async runtime that waits for signals.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::config::Config;
use crate::draft::context::DraftingContext;
use crate::inference::{Drafter, WorkerDrafter, WorkerTranscriber};
use crate::pipeline::{self, AudioSource};
use crate::store::Store;
use crate::{audio, report, review};

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub exit_when_idle: bool,
    pub export_dir: Option<PathBuf>,
}

pub fn run(config: &Config, options: &RunOptions) -> Result<()> {
    let shutdown = Arc::new(AtomicBool::new(false));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // The review service opens the store before the processing thread does, so the two never
    // race to migrate a new database. A daemon asked to exit when idle is a batch run: no page.
    let review_state = match (config.review.listen, options.exit_when_idle) {
        (Some(_), false) => Some(
            review::AppState::open(
                &config.data_dir,
                review::ServiceConfig {
                    review: config.review.clone(),
                    retention: config.retention.policy,
                    destinations: config
                        .sync
                        .destinations
                        .iter()
                        .map(|d| d.name.clone())
                        .collect(),
                },
            )
            .context("cannot start the review service")?,
        ),
        _ => None,
    };

    let worker_config = config.clone();
    let worker_options = options.clone();
    let worker_shutdown = shutdown.clone();
    let processing = std::thread::Builder::new()
        .name("encounters".into())
        .spawn(move || process_sources(&worker_config, &worker_options, &worker_shutdown))
        .context("cannot start the processing thread")?;
    // The sender drains the outbox on its own connection. A batch run signs nothing, so it
    // does not start one.
    let sender = if options.exit_when_idle || config.sync.destinations.is_empty() {
        None
    } else {
        let sender_config = config.clone();
        let sender_shutdown = shutdown.clone();
        Some(
            std::thread::Builder::new()
                .name("sender".into())
                .spawn(move || send_notes(&sender_config, &sender_shutdown))
                .context("cannot start the EHR sender")?,
        )
    };
    // Retention runs beside the pipeline on its own connection; a batch run (exit when idle)
    // does not wait for it.
    let retention = if options.exit_when_idle {
        None
    } else {
        let retention_config = config.clone();
        let retention_shutdown = shutdown.clone();
        Some(
            std::thread::Builder::new()
                .name("retention".into())
                .spawn(move || enforce_retention(&retention_config, &retention_shutdown))
                .context("cannot start the retention job")?,
        )
    };

    let exit_when_idle = options.exit_when_idle;
    let (stop_review, review_stopped) = tokio::sync::watch::channel(false);
    runtime.block_on(async {
        let review_task = match (review_state, config.review.listen) {
            (Some(state), Some(addr)) => {
                let server = review::bind(addr, &config.data_dir, state).await?;
                let mut stopped = review_stopped;
                Some(tokio::spawn(review::serve(server, async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                })))
            }
            _ => None,
        };
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("cannot install the SIGTERM handler")?;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = terminate.recv() => break,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    if exit_when_idle && processing.is_finished() {
                        break;
                    }
                }
            }
        }
        let _ = stop_review.send(true);
        if let Some(task) = review_task {
            match task.await {
                Ok(result) => result?,
                Err(_) => anyhow::bail!("the review service panicked"),
            }
        }
        anyhow::Ok(())
    })?;
    tracing::info!("shutting down: finishing the current encounter");
    shutdown.store(true, Ordering::SeqCst);
    if let Some(sender) = sender {
        if sender.join().is_err() {
            tracing::error!("the EHR sender panicked");
        }
    }
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

fn process_sources(config: &Config, options: &RunOptions, shutdown: &AtomicBool) -> Result<()> {
    let store = Store::open(&config.data_dir)?;
    let mut transcriber = WorkerTranscriber::new(config)?;
    let drafting = DraftingContext::load(config)?;
    let mut drafter = WorkerDrafter::from_config(config)?;
    tracing::info!(
        sources = config.replay_sources.len(),
        data_dir = %config.data_dir.display(),
        "daemon ready"
    );
    let mut failures = 0usize;
    for source in &config.replay_sources {
        if shutdown.load(Ordering::SeqCst) {
            break;
        }
        let started = Instant::now();
        let audio = match audio::read_wav(&source.path) {
            Ok(audio) => audio,
            Err(e) => {
                // One bad file must not stop the box: report it and go on with the next source.
                tracing::error!(error = %e, "replay source skipped");
                failures += 1;
                continue;
            }
        };
        if source.realtime {
            // A replayed recording arrives no faster than a microphone would deliver it.
            let duration = Duration::from_millis(audio.duration_ms());
            while started.elapsed() < duration && !shutdown.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let sha256 = pipeline::sha256_file(&source.path)
            .with_context(|| format!("cannot read {}", source.path.display()))?;
        let outcome = match pipeline::process_encounter(
            config,
            &audio,
            &AudioSource {
                kind: "replay",
                sha256,
                clinician_id: clinician_id(&store, source.clinician.as_deref()),
                consent: source.consent,
                patient_ref: source.patient_ref.clone(),
            },
            &mut transcriber,
            drafter.as_mut().map(|d| d as &mut dyn Drafter),
            &drafting,
            &store,
        ) {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::error!(error = %e, "encounter failed");
                failures += 1;
                continue;
            }
        };
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
        tracing::info!("all capture sources done; waiting for new encounters or a stop signal");
        while !shutdown.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(())
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
fn enforce_retention(config: &Config, shutdown: &AtomicBool) {
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
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Runs the outbox sender until shutdown. A failure to start it (a bad certificate, say) is
/// logged and leaves the notes safely queued; the rest of the box keeps working.
fn send_notes(config: &Config, shutdown: &AtomicBool) {
    let started = Store::open(&config.data_dir)
        .map_err(anyhow::Error::from)
        .and_then(|store| {
            // Only the public half: the sender checks signed notes, it never signs.
            let public_key = crate::attest::Signer::open(&config.data_dir)?
                .public_key()
                .to_vec();
            crate::sync::run_sender(&store, &config.sync, &public_key, shutdown)?;
            anyhow::Ok(())
        });
    if let Err(e) = started {
        tracing::error!(error = %e, "the EHR sender stopped; signed notes stay queued");
    }
}
