//! The ASR worker: a separate process that links whisper.cpp (and so its copy of ggml) and
//! nothing else, loads one ggml Whisper model, and answers transcription requests from the daemon
//! over the framed protocol of `edge-scribe-protocol` on stdin/stdout.
//!
//! It opens no file but the model and no socket. stdout carries protocol frames only; stderr
//! carries short diagnostics (counts, durations, errors) and never audio or transcript text.
//!
//! Exit codes: 0 after `Shutdown` or end of stdin; 64 for bad arguments; 66 when the model cannot
//! be loaded; 1 when the protocol stream breaks.

mod args;
mod engine;
mod stdio;

use std::io::{self, BufReader, BufWriter};
use std::process::ExitCode;

use edge_scribe_protocol::{
    payload_to_samples, read_frame, write_frame, Frame, FrameError, Request, Response,
    PROTOCOL_VERSION,
};

use crate::engine::{Engine, TranscribeOptions};

const EXIT_USAGE: u8 = 64;
const EXIT_NO_MODEL: u8 = 66;

fn main() -> ExitCode {
    let args = match args::Args::parse(std::env::args_os().skip(1)) {
        Ok(args::Parsed::Run(args)) => args,
        Ok(args::Parsed::Help) => {
            println!("{}", args::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("edge-scribe-asr-worker: {e}\n\n{}", args::USAGE);
            return ExitCode::from(EXIT_USAGE);
        }
    };

    // Before anything from C can print: stdout must carry nothing but frames.
    let frames_out = match stdio::take_stdout_for_frames() {
        Ok(out) => out,
        Err(e) => {
            eprintln!("edge-scribe-asr-worker: cannot set up stdout for the protocol: {e}");
            return ExitCode::FAILURE;
        }
    };

    let mut engine = match Engine::load(&args.model, args.threads) {
        Ok(engine) => engine,
        Err(e) => {
            eprintln!("edge-scribe-asr-worker: {e}");
            return ExitCode::from(EXIT_NO_MODEL);
        }
    };
    eprintln!(
        "edge-scribe-asr-worker: loaded {} ({}) in {} ms, {} threads; {}",
        args.model_file_name(),
        engine.describe(),
        engine.load_ms(),
        args.threads,
        // CPU features ggml was built with: the first thing to check when it runs slowly.
        whisper_rs::print_system_info().trim()
    );

    let mut out = BufWriter::new(frames_out);
    let ready = Response::Ready {
        protocol_version: PROTOCOL_VERSION,
        engine: format!("whisper.cpp {}", whisper_rs::WHISPER_CPP_VERSION),
        model: args.model_file_name(),
        threads: args.threads,
    };
    if let Err(e) = write_frame(&mut out, &ready, &[]) {
        eprintln!("edge-scribe-asr-worker: cannot announce readiness: {e}");
        return ExitCode::FAILURE;
    }

    match serve(
        &mut engine,
        &mut BufReader::new(io::stdin().lock()),
        &mut out,
    ) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edge-scribe-asr-worker: protocol stream broken, exiting: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Answers requests until `Shutdown` or a clean end of input.
fn serve<R: io::Read, W: io::Write>(
    engine: &mut Engine,
    input: &mut R,
    out: &mut W,
) -> Result<(), FrameError> {
    loop {
        let frame: Frame<Request> = match read_frame(input) {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(()),
            Err(FrameError::BadHeader(_)) => {
                // The frame was read whole, so the stream is still in step: refuse it and go
                // on. serde's message is not forwarded, since it can quote the header's content.
                eprintln!("edge-scribe-asr-worker: refused a frame whose header is not a request");
                let failed = Response::Failed {
                    id: 0,
                    message: "the frame header is not a request this worker understands; check \
                              that the daemon and worker versions match"
                        .into(),
                };
                write_frame(out, &failed, &[])?;
                continue;
            }
            Err(e) => return Err(e),
        };
        let response = match frame.message {
            Request::Transcribe {
                id,
                language,
                initial_prompt,
                beam_size,
            } => {
                let options = TranscribeOptions {
                    language,
                    initial_prompt,
                    beam_size,
                };
                transcribe(engine, id, &frame.payload, &options)
            }
            Request::Generate { id, .. } => Response::Failed {
                id,
                message: "this is the ASR worker; text generation belongs to the LLM worker".into(),
            },
            Request::Shutdown => return Ok(()),
        };
        write_frame(out, &response, &[])?;
    }
}

fn transcribe(
    engine: &mut Engine,
    id: u64,
    payload: &[u8],
    options: &TranscribeOptions,
) -> Response {
    let Some(samples) = payload_to_samples(payload) else {
        let message = format!(
            "the audio payload is {} bytes, not a whole number of f32 samples",
            payload.len()
        );
        eprintln!("edge-scribe-asr-worker: request {id} failed: {message}");
        return Response::Failed { id, message };
    };
    match engine.transcribe(&samples, options) {
        Ok(result) => {
            eprintln!(
                "edge-scribe-asr-worker: request {id}: {} samples, {} segments, {} ms",
                samples.len(),
                result.segments.len(),
                result.elapsed_ms
            );
            Response::Transcription {
                id,
                segments: result.segments,
                elapsed_ms: result.elapsed_ms,
            }
        }
        Err(e) => {
            eprintln!("edge-scribe-asr-worker: request {id} failed: {e}");
            Response::Failed {
                id,
                message: e.to_string(),
            }
        }
    }
}
