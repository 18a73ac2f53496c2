//! The worker's own diagnostic lines on stderr, as one typed event per kind of line.
//!
//! Every field that can reach stderr is listed in [`Event`], so a reviewer can check at a glance
//! that no prompt, message or generated text can: requests contribute only ids, counts,
//! durations and the content-free messages of [`crate::engine::GenerateError`]. The one free-text
//! variant, [`Event::Fatal`], is used only before the first request is read (bad arguments,
//! unusable model). Native code never writes here (see [`crate::streams`]), and a native abort is
//! reduced to its source location by [`abort_summary`] before it is printed.

use std::fmt;
use std::fs::File;
use std::io::Write;
use std::sync::OnceLock;

use crate::engine::StopReason;

/// The original stderr, once [`crate::streams::isolate`] has moved fd 2 away.
static DIAG: OnceLock<File> = OnceLock::new();

/// Routes later events to `file` (the worker's private copy of stderr).
pub fn install(file: File) {
    // A second call would mean two copies of stderr; the first one is as good as any.
    let _ = DIAG.set(file);
}

/// One diagnostic line.
pub enum Event<'a> {
    Loaded {
        load_ms: u64,
        n_ctx: u32,
        n_ctx_train: u32,
        n_vocab: i32,
        threads: u32,
    },
    CtxClamped {
        requested: u32,
        n_ctx_train: u32,
    },
    Generated {
        id: u64,
        prompt_tokens: u32,
        generated_tokens: u32,
        prompt_ms: u64,
        generation_ms: u64,
        stop: StopReason,
        swallowed_native_bytes: u64,
    },
    Failed {
        id: u64,
        reason: &'a dyn fmt::Display,
    },
    /// A request this worker does not serve (e.g. `Transcribe`).
    Unsupported {
        id: u64,
    },
    /// The frame stream broke; `kind` is a fixed word, never the serde message (which can quote
    /// field values).
    ProtocolError {
        kind: &'static str,
    },
    Exiting {
        served: u64,
        failed: u64,
    },
    NativeAbort {
        summary: String,
    },
    Fatal {
        message: &'a dyn fmt::Display,
    },
}

impl fmt::Display for Event<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "edge-scribe-llm-worker: ")?;
        match self {
            Event::Loaded {
                load_ms,
                n_ctx,
                n_ctx_train,
                n_vocab,
                threads,
            } => write!(
                f,
                "event=loaded load_ms={load_ms} n_ctx={n_ctx} n_ctx_train={n_ctx_train} \
                 n_vocab={n_vocab} threads={threads}"
            ),
            Event::CtxClamped {
                requested,
                n_ctx_train,
            } => write!(
                f,
                "event=ctx_clamped requested={requested} used={n_ctx_train} \
                 reason=\"the model was trained on at most {n_ctx_train} tokens\""
            ),
            Event::Generated {
                id,
                prompt_tokens,
                generated_tokens,
                prompt_ms,
                generation_ms,
                stop,
                swallowed_native_bytes,
            } => write!(
                f,
                "event=generated id={id} prompt_tokens={prompt_tokens} \
                 generated_tokens={generated_tokens} prompt_ms={prompt_ms} \
                 generation_ms={generation_ms} stop={} swallowed_native_bytes={swallowed_native_bytes}",
                stop.as_str()
            ),
            Event::Failed { id, reason } => write!(f, "event=failed id={id} reason=\"{reason}\""),
            Event::Unsupported { id } => write!(f, "event=unsupported_request id={id}"),
            Event::ProtocolError { kind } => write!(f, "event=protocol_error kind={kind}"),
            Event::Exiting { served, failed } => {
                write!(f, "event=exiting served={served} failed={failed}")
            }
            Event::NativeAbort { summary } => write!(f, "event=native_abort at=\"{summary}\""),
            Event::Fatal { message } => write!(f, "error: {message}"),
        }
    }
}

/// Writes one event as one line. Diagnostics are best effort: a closed stderr must not take the
/// worker down, so write errors are ignored.
pub fn emit(event: &Event<'_>) {
    let line = format!("{event}\n");
    match DIAG.get() {
        Some(mut file) => {
            let _ = file.write_all(line.as_bytes());
        }
        None => {
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
    }
}

/// Reduces a `ggml_abort` message (`"file:line: text"`) to what is safe to print: the location,
/// plus the text only when it is a `GGML_ASSERT(expr) failed`, whose text is source code.
/// Anything else is withheld, because abort messages are formatted with runtime values.
pub fn abort_summary(message: &str) -> String {
    let Some((location, rest)) = split_location(message) else {
        return "unknown location (message withheld)".to_owned();
    };
    let is_assert = rest.starts_with("GGML_ASSERT(")
        && rest.ends_with(") failed")
        && !rest.contains(['\n', '\r', '"']);
    if is_assert {
        format!("{location}: {rest}")
    } else {
        format!("{location} (message withheld)")
    }
}

/// Splits `"path:123: rest"` into `("path:123", "rest")`.
fn split_location(message: &str) -> Option<(&str, &str)> {
    let (location, rest) = message.split_once(": ")?;
    let (file, line) = location.rsplit_once(':')?;
    let plausible = !file.is_empty()
        && !file.contains(char::is_whitespace)
        && !line.is_empty()
        && line.bytes().all(|b| b.is_ascii_digit());
    plausible.then_some((location, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assert_messages_keep_their_expression() {
        assert_eq!(
            abort_summary("/src/ggml.c:1234: GGML_ASSERT(n > 0) failed"),
            "/src/ggml.c:1234: GGML_ASSERT(n > 0) failed"
        );
    }

    #[test]
    fn other_abort_messages_are_reduced_to_their_location() {
        assert_eq!(
            abort_summary("/src/llama-vocab.cpp:88: invalid token text 'Mrs Smith'"),
            "/src/llama-vocab.cpp:88 (message withheld)"
        );
        assert_eq!(
            abort_summary("no location here"),
            "unknown location (message withheld)"
        );
        assert_eq!(
            abort_summary("a b:12: GGML_ASSERT(x) failed"),
            "unknown location (message withheld)"
        );
    }

    #[test]
    fn an_assert_look_alike_with_quotes_is_withheld() {
        assert_eq!(
            abort_summary("f.c:1: GGML_ASSERT(\"patient said\") failed"),
            "f.c:1 (message withheld)"
        );
    }

    #[test]
    fn generated_line_carries_only_numbers_and_a_stop_word() {
        let line = Event::Generated {
            id: 9,
            prompt_tokens: 120,
            generated_tokens: 30,
            prompt_ms: 400,
            generation_ms: 600,
            stop: StopReason::EndOfGeneration,
            swallowed_native_bytes: 0,
        }
        .to_string();
        assert_eq!(
            line,
            "edge-scribe-llm-worker: event=generated id=9 prompt_tokens=120 generated_tokens=30 \
             prompt_ms=400 generation_ms=600 stop=end_of_generation swallowed_native_bytes=0"
        );
    }
}
