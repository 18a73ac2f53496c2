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
use crate::{audio, report};

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

    let worker_config = config.clone();
    let worker_options = options.clone();
    let worker_shutdown = shutdown.clone();
    let processing = std::thread::Builder::new()
        .name("encounters".into())
        .spawn(move || process_sources(&worker_config, &worker_options, &worker_shutdown))
        .context("cannot start the processing thread")?;

    let exit_when_idle = options.exit_when_idle;
    runtime.block_on(async {
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
        anyhow::Ok(())
    })?;
    tracing::info!("shutting down: finishing the current encounter");
    shutdown.store(true, Ordering::SeqCst);
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
