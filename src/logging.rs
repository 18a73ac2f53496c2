//! Logging setup: structured `tracing` output on stderr, as text or JSON. Events carry ids,
//! counts and durations; the code never passes transcript text, names or audio to a log macro.
//!
//! The filter can be changed while the daemon runs (admin API), and the last lines are kept in
//! memory for the support bundle, so IT never needs shell access to read them.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Mutex, OnceLock};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

use crate::config::LogFormat;

/// Lines kept for the support bundle.
const RECENT_LINES: usize = 2000;

static FILTER: OnceLock<(reload::Handle<EnvFilter, Registry>, Mutex<String>)> = OnceLock::new();
static RECENT: Mutex<VecDeque<String>> = Mutex::new(VecDeque::new());

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{0:?} is not a log level or filter (e.g. \"info\", \"edge_scribe=debug\")")]
    BadFilter(String),
    #[error("logging was not set up by this process")]
    NotInitialised,
}

/// Installs the global subscriber. `EDGE_SCRIBE_LOG` overrides the configured filter.
pub fn init(level: &str, format: LogFormat) {
    let (spec, filter) = std::env::var("EDGE_SCRIBE_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(&f).ok().map(|e| (f, e)))
        .or_else(|| {
            EnvFilter::try_new(level)
                .ok()
                .map(|e| (level.to_string(), e))
        })
        .unwrap_or_else(|| ("info".into(), EnvFilter::new("info")));
    let (filter, handle) = reload::Layer::new(filter);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let output = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(|| TeeWriter)
            .with_ansi(ansi)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(|| TeeWriter)
            .boxed(),
    };
    // A second init (tests) is harmless; the first one's handle stays.
    if tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init()
        .is_ok()
    {
        let _ = FILTER.set((handle, Mutex::new(spec)));
    }
}

/// Replaces the log filter of the running process.
pub fn set_filter(spec: &str) -> Result<(), LogError> {
    let filter = EnvFilter::try_new(spec).map_err(|_| LogError::BadFilter(spec.to_string()))?;
    let (handle, current) = FILTER.get().ok_or(LogError::NotInitialised)?;
    handle
        .reload(filter)
        .map_err(|_| LogError::NotInitialised)?;
    if let Ok(mut current) = current.lock() {
        *current = spec.to_string();
    }
    Ok(())
}

/// The filter in force, as it was given.
pub fn current_filter() -> Option<String> {
    FILTER
        .get()
        .and_then(|(_, current)| current.lock().ok().map(|c| c.clone()))
}

/// The most recent log lines, oldest first.
pub fn recent_lines() -> Vec<String> {
    RECENT
        .lock()
        .map(|lines| lines.iter().cloned().collect())
        .unwrap_or_default()
}

/// Writes each formatted event to stderr and keeps a copy in the in-memory ring.
struct TeeWriter;

impl Write for TeeWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut lines) = RECENT.lock() {
            let text = String::from_utf8_lossy(buf);
            for line in text.lines().filter(|l| !l.is_empty()) {
                if lines.len() == RECENT_LINES {
                    lines.pop_front();
                }
                lines.push_back(strip_ansi(line));
            }
        }
        std::io::stderr().write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Removes terminal colour codes so the kept lines read as plain text.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_codes_are_removed_from_kept_lines() {
        assert_eq!(strip_ansi("\u{1b}[32mINFO\u{1b}[0m ready"), "INFO ready");
    }
}
