//! The LLM inference worker: one llama.cpp model behind the framed protocol of
//! `edge-scribe-protocol`, so that the daemon never links llama.cpp (or its ggml) itself.
//!
//! Started as `edge-scribe-llm-worker --model PATH --threads N [--ctx N]`. In order: parse and
//! check the arguments; move fds 1 and 2 out of native code's reach ([`streams`]); load the GGUF
//! and check its chat template ([`engine`]); send `Ready`; then answer `Generate` requests one at
//! a time until `Shutdown` or end of input. It opens no file but the model, uses no network, and
//! its stderr lines ([`diag`]) carry ids, counts and timings, never prompt or generated text.
//!
//! Exit codes: 0 after `Shutdown` or end of input; 64 bad arguments; 65 model unusable (missing,
//! unloadable, no or unknown chat template, context too large); 71 the standard streams could not
//! be set up; 76 the request stream broke (truncated or malformed frame, I/O error).

mod args;
mod diag;
mod engine;
mod streams;

use std::fs::File;
use std::io::{self, BufWriter};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Instant;

use edge_scribe_protocol::{
    read_frame, write_frame, FrameError, Request, Response, PROTOCOL_VERSION,
};

use crate::args::ArgsError;
use crate::diag::Event;
use crate::engine::{Engine, GenerateRequest, Session};
use crate::streams::Streams;

const EXIT_USAGE: u8 = 64;
const EXIT_MODEL: u8 = 65;
const EXIT_OS: u8 = 71;
const EXIT_PROTOCOL: u8 = 76;

fn main() -> ExitCode {
    // Read by ggml when a C++ exception escapes: without it ggml forks gdb to print a backtrace.
    // Set before any thread exists.
    std::env::set_var("GGML_NO_BACKTRACE", "1");

    let args = match args::parse(std::env::args_os().skip(1)) {
        Ok(args) => args,
        Err(ArgsError::Help) => {
            // Asked for, so stdout; nothing else has been written there yet.
            println!("{}", ArgsError::Help);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            diag::emit(&Event::Fatal { message: &e });
            return ExitCode::from(EXIT_USAGE);
        }
    };

    let Streams {
        protocol,
        diag: diag_file,
        swallowed,
    } = match streams::isolate() {
        Ok(streams) => streams,
        Err(e) => {
            diag::emit(&Event::Fatal { message: &e });
            return ExitCode::from(EXIT_OS);
        }
    };
    diag::install(diag_file);
    std::panic::set_hook(Box::new(|info| {
        // Only the location: a panic message may quote data.
        let summary = info.location().map_or_else(
            || "unknown location (message withheld)".to_owned(),
            |at| format!("{}:{} (panic; message withheld)", at.file(), at.line()),
        );
        diag::emit(&Event::NativeAbort { summary });
    }));

    let load_started = Instant::now();
    let engine = match Engine::load(&args.model, args.threads, args.ctx) {
        Ok(engine) => engine,
        Err(e) => {
            diag::emit(&Event::Fatal { message: &e });
            return ExitCode::from(EXIT_MODEL);
        }
    };
    if engine.n_ctx() < args.ctx {
        diag::emit(&Event::CtxClamped {
            requested: args.ctx,
            n_ctx_train: engine.n_ctx(),
        });
    }
    let mut session = match engine.session() {
        Ok(session) => session,
        Err(e) => {
            diag::emit(&Event::Fatal { message: &e });
            return ExitCode::from(EXIT_MODEL);
        }
    };
    diag::emit(&Event::Loaded {
        load_ms: u64::try_from(load_started.elapsed().as_millis()).unwrap_or(u64::MAX),
        n_ctx: engine.n_ctx(),
        n_ctx_train: engine.n_ctx_train(),
        n_vocab: engine.n_vocab(),
        threads: args.threads,
    });

    let mut server = Server {
        session: &mut session,
        output: protocol,
        swallowed: &swallowed,
        served: 0,
        failed: 0,
    };
    let ready = Response::Ready {
        protocol_version: PROTOCOL_VERSION,
        engine: "llama.cpp".to_owned(),
        // File name only: directories can describe the clinic's layout.
        model: args
            .model
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default(),
        threads: args.threads,
    };
    if write_frame(&mut server.output, &ready, &[]).is_err() {
        diag::emit(&Event::ProtocolError { kind: "write" });
        return ExitCode::from(EXIT_PROTOCOL);
    }
    let code = server.run(&mut io::stdin().lock());
    diag::emit(&Event::Exiting {
        served: server.served,
        failed: server.failed,
    });
    code
}

struct Server<'s, 'e> {
    session: &'s mut Session<'e>,
    output: BufWriter<File>,
    swallowed: &'s std::sync::atomic::AtomicU64,
    served: u64,
    failed: u64,
}

impl Server<'_, '_> {
    /// Answers requests until `Shutdown` or end of input.
    fn run(&mut self, input: &mut impl io::Read) -> ExitCode {
        loop {
            let request = match read_frame::<_, Request>(input) {
                Ok(Some(frame)) => frame.message,
                Ok(None) => return ExitCode::SUCCESS,
                Err(e) => {
                    // Framing cannot be trusted after this, so stop; the daemon restarts us.
                    diag::emit(&Event::ProtocolError {
                        kind: frame_error_kind(&e),
                    });
                    return ExitCode::from(EXIT_PROTOCOL);
                }
            };
            let response = match request {
                Request::Shutdown => return ExitCode::SUCCESS,
                Request::Generate {
                    id,
                    messages,
                    grammar,
                    max_tokens,
                    seed,
                    temperature,
                } => self.generate(
                    id,
                    &GenerateRequest {
                        messages: &messages,
                        grammar: grammar.as_deref(),
                        max_tokens,
                        seed,
                        temperature,
                    },
                ),
                Request::Transcribe { id, .. } => {
                    diag::emit(&Event::Unsupported { id });
                    self.failed += 1;
                    Response::Failed {
                        id,
                        message: "this is the LLM worker; it does not transcribe audio".to_owned(),
                    }
                }
            };
            if let Err(code) = self.send(&response) {
                return code;
            }
        }
    }

    fn generate(&mut self, id: u64, request: &GenerateRequest<'_>) -> Response {
        match self.session.generate(request) {
            Ok(generation) => {
                self.served += 1;
                diag::emit(&Event::Generated {
                    id,
                    prompt_tokens: generation.prompt_tokens,
                    generated_tokens: generation.generated_tokens,
                    prompt_ms: generation.prompt_ms,
                    generation_ms: generation.generation_ms,
                    stop: generation.stop,
                    swallowed_native_bytes: self.swallowed.load(Ordering::Relaxed),
                });
                Response::Generated {
                    id,
                    text: generation.text,
                    prompt_tokens: generation.prompt_tokens,
                    generated_tokens: generation.generated_tokens,
                    prompt_ms: generation.prompt_ms,
                    generation_ms: generation.generation_ms,
                }
            }
            Err(e) => {
                self.failed += 1;
                diag::emit(&Event::Failed { id, reason: &e });
                Response::Failed {
                    id,
                    message: e.to_string(),
                }
            }
        }
    }

    fn send(&mut self, response: &Response) -> Result<(), ExitCode> {
        match write_frame(&mut self.output, response, &[]) {
            Ok(()) => Ok(()),
            // Refused before anything was written, so the stream is intact: say why instead.
            Err(FrameError::HeaderTooLarge(_)) => {
                let id = match response {
                    Response::Generated { id, .. } | Response::Failed { id, .. } => *id,
                    _ => 0,
                };
                let failed = Response::Failed {
                    id,
                    message:
                        "the answer exceeds the protocol's header size limit; lower max_tokens"
                            .to_owned(),
                };
                write_frame(&mut self.output, &failed, &[]).map_err(|_| {
                    diag::emit(&Event::ProtocolError { kind: "write" });
                    ExitCode::from(EXIT_PROTOCOL)
                })
            }
            Err(_) => {
                diag::emit(&Event::ProtocolError { kind: "write" });
                Err(ExitCode::from(EXIT_PROTOCOL))
            }
        }
    }
}

/// A fixed word for each way the request stream can break. Never the serde message, which can
/// quote field values from the header.
fn frame_error_kind(error: &FrameError) -> &'static str {
    match error {
        FrameError::Io(_) => "io",
        FrameError::HeaderTooLarge(_) => "header_too_large",
        FrameError::PayloadTooLarge(_) => "payload_too_large",
        FrameError::Truncated => "truncated",
        FrameError::BadHeader(e) => match e.classify() {
            serde_json::error::Category::Io => "bad_header_io",
            serde_json::error::Category::Syntax => "bad_header_syntax",
            serde_json::error::Category::Data => "bad_header_data",
            serde_json::error::Category::Eof => "bad_header_eof",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_header_kind_does_not_quote_the_header() {
        let error = serde_json::from_str::<Request>(r#"{"type":"generate","id":"Mrs Example"}"#)
            .err()
            .map(FrameError::BadHeader)
            .unwrap();
        assert_eq!(frame_error_kind(&error), "bad_header_data");
        assert!(
            error.to_string().contains("Mrs Example"),
            "serde does quote it"
        );
    }

    #[test]
    fn stream_errors_have_fixed_kinds() {
        assert_eq!(frame_error_kind(&FrameError::Truncated), "truncated");
        assert_eq!(
            frame_error_kind(&FrameError::HeaderTooLarge(u32::MAX)),
            "header_too_large"
        );
    }
}
