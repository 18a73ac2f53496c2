//! Logging setup: structured `tracing` output on stderr, as text or JSON. Events carry ids,
//! counts and durations; the code never passes transcript text, names or audio to a log macro.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. `EDGE_SCRIBE_LOG` overrides the configured filter.
pub fn init(level: &str, format: LogFormat) {
    let filter = std::env::var("EDGE_SCRIBE_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_new(level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // A second init (tests) is harmless; ignore the error it reports.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
