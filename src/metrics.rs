//! Process-wide counters for `/metrics`. Only counts and durations live here; nothing that is
//! patient data can be a label or a value, because the set of series is fixed in this file.

use std::sync::atomic::{AtomicU64, Ordering};

/// The daemon's counters. Gauges and counters are plain atomics: scraped rarely, updated per
/// encounter or per worker restart, never per audio frame.
pub struct Metrics {
    pub encounters_processed: AtomicU64,
    pub encounters_failed: AtomicU64,
    /// Encounters waiting to be processed (replay sources not yet started).
    pub encounters_queued: AtomicU64,
    /// Milliseconds of audio transcribed and milliseconds the ASR stage took for them; their
    /// ratio is the real-time factor.
    pub asr_audio_ms: AtomicU64,
    pub asr_busy_ms: AtomicU64,
    pub worker_restarts: AtomicU64,
    /// Audio frames dropped because a bounded buffer was full.
    pub capture_overruns: AtomicU64,
    pub config_applies: AtomicU64,
    pub config_rollbacks: AtomicU64,
}

impl Metrics {
    const fn new() -> Metrics {
        Metrics {
            encounters_processed: AtomicU64::new(0),
            encounters_failed: AtomicU64::new(0),
            encounters_queued: AtomicU64::new(0),
            asr_audio_ms: AtomicU64::new(0),
            asr_busy_ms: AtomicU64::new(0),
            worker_restarts: AtomicU64::new(0),
            capture_overruns: AtomicU64::new(0),
            config_applies: AtomicU64::new(0),
            config_rollbacks: AtomicU64::new(0),
        }
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// ASR time per second of audio (0 before any audio).
    pub fn asr_real_time_factor(&self) -> f64 {
        let audio = Self::get(&self.asr_audio_ms);
        if audio == 0 {
            0.0
        } else {
            Self::get(&self.asr_busy_ms) as f64 / audio as f64
        }
    }
}

pub static METRICS: Metrics = Metrics::new();

/// Appends one Prometheus text-format series with its HELP and TYPE lines.
pub fn write_series(out: &mut String, name: &str, kind: &str, help: &str, value: impl ToString) {
    out.push_str(&format!(
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}\n",
        value.to_string()
    ));
}

/// The process-wide series, in Prometheus text format.
pub fn render_process_series() -> String {
    let m = &METRICS;
    let mut out = String::new();
    for (name, kind, help, value) in [
        (
            "edge_scribe_encounters_processed_total",
            "counter",
            "Encounters processed since start.",
            Metrics::get(&m.encounters_processed),
        ),
        (
            "edge_scribe_encounters_failed_total",
            "counter",
            "Encounters that failed since start.",
            Metrics::get(&m.encounters_failed),
        ),
        (
            "edge_scribe_encounters_queued",
            "gauge",
            "Encounters waiting to be processed.",
            Metrics::get(&m.encounters_queued),
        ),
        (
            "edge_scribe_worker_restarts_total",
            "counter",
            "Inference worker restarts since start.",
            Metrics::get(&m.worker_restarts),
        ),
        (
            "edge_scribe_capture_overruns_total",
            "counter",
            "Audio frames dropped because a buffer was full.",
            Metrics::get(&m.capture_overruns),
        ),
        (
            "edge_scribe_config_applies_total",
            "counter",
            "Config versions applied since start.",
            Metrics::get(&m.config_applies),
        ),
        (
            "edge_scribe_config_rollbacks_total",
            "counter",
            "Applied configs rolled back by their health check since start.",
            Metrics::get(&m.config_rollbacks),
        ),
        (
            "edge_scribe_asr_audio_seconds_total",
            "counter",
            "Seconds of audio transcribed since start.",
            Metrics::get(&m.asr_audio_ms) / 1000,
        ),
    ] {
        write_series(&mut out, name, kind, help, value);
    }
    write_series(
        &mut out,
        "edge_scribe_asr_real_time_factor",
        "gauge",
        "ASR processing time per second of audio since start (lower is faster).",
        format!("{:.4}", m.asr_real_time_factor()),
    );
    out
}
