//! The framed protocol between the edge-scribe daemon and its inference workers.
//!
//! A worker reads requests from stdin and writes responses to stdout; stderr is for its own
//! diagnostics, which must never carry transcript text or audio. Every message is one frame:
//!
//! ```text
//! u32 LE header_len | u32 LE payload_len | header (JSON, UTF-8) | payload (raw bytes)
//! ```
//!
//! The header is a [`Request`] or [`Response`]; the payload carries bulk data that JSON would
//! bloat (audio as little-endian `f32` samples). Limits on both lengths keep a corrupt or hostile
//! stream from making either side allocate without bound.
//!
//! This crate does no I/O of its own beyond the `Read`/`Write` it is handed, and knows nothing
//! about whisper.cpp or llama.cpp, so both worker packages and the daemon can depend on it
//! without pulling in a second copy of ggml.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

/// Largest header accepted: headers carry prompts and transcripts, never audio.
pub const MAX_HEADER_BYTES: u32 = 16 * 1024 * 1024;
/// Largest payload accepted: two hours of 16 kHz mono f32 audio is 460 MB, so one request may
/// carry at most about an hour; the daemon sends speech regions, which are far shorter.
pub const MAX_PAYLOAD_BYTES: u32 = 256 * 1024 * 1024;

/// Bumped whenever a message changes shape; the daemon refuses a worker that disagrees.
pub const PROTOCOL_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("worker stream I/O failed: {0}")]
    Io(#[from] io::Error),
    #[error("frame header of {0} bytes exceeds the {MAX_HEADER_BYTES}-byte limit")]
    HeaderTooLarge(u32),
    #[error("frame payload of {0} bytes exceeds the {MAX_PAYLOAD_BYTES}-byte limit")]
    PayloadTooLarge(u32),
    #[error("frame header is not a valid message: {0}")]
    BadHeader(serde_json::Error),
    #[error("stream ended in the middle of a frame")]
    Truncated,
}

/// One chat turn handed to the LLM worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// What the daemon asks of a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Transcribe the payload: mono 16 kHz audio as little-endian f32 samples in [-1, 1].
    Transcribe {
        id: u64,
        /// ISO 639-1 code, or `None` to let a multilingual model detect it.
        language: Option<String>,
        /// Vocabulary hint (clinic terms); not patient data.
        initial_prompt: Option<String>,
        /// 1 = greedy decoding.
        beam_size: u32,
    },
    /// Generate a completion for a chat, optionally constrained by a GBNF grammar.
    Generate {
        id: u64,
        messages: Vec<ChatMessage>,
        grammar: Option<String>,
        max_tokens: u32,
        /// Seed for any sampling; generation is greedy when `temperature` is 0.
        seed: u32,
        temperature: f32,
    },
    /// Finish the current work and exit cleanly.
    Shutdown,
}

/// A transcript segment, with times relative to the start of the submitted audio.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AsrSegment {
    pub start_ms: u64,
    pub end_ms: u64,
    pub text: String,
    /// Mean token probability in [0, 1].
    pub confidence: f32,
}

/// What a worker answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    /// Sent once, unprompted, after the model has loaded.
    Ready {
        protocol_version: u32,
        /// Engine and version, e.g. "whisper.cpp" or "llama.cpp".
        engine: String,
        /// Model file name (no directory: paths can name a clinic's layout, not patients).
        model: String,
        threads: u32,
    },
    Transcription {
        id: u64,
        segments: Vec<AsrSegment>,
        /// Wall time spent in inference.
        elapsed_ms: u64,
    },
    Generated {
        id: u64,
        text: String,
        prompt_tokens: u32,
        generated_tokens: u32,
        prompt_ms: u64,
        generation_ms: u64,
    },
    /// The request failed; `message` describes the failure without echoing request content.
    Failed { id: u64, message: String },
}

/// A decoded frame: its message and its raw payload.
#[derive(Debug)]
pub struct Frame<M> {
    pub message: M,
    pub payload: Vec<u8>,
}

/// Writes one frame and flushes, so the peer sees it at once.
pub fn write_frame<W: Write, M: Serialize>(
    writer: &mut W,
    message: &M,
    payload: &[u8],
) -> Result<(), FrameError> {
    let header = serde_json::to_vec(message).map_err(FrameError::BadHeader)?;
    let header_len = u32::try_from(header.len())
        .ok()
        .filter(|len| *len <= MAX_HEADER_BYTES)
        .ok_or(FrameError::HeaderTooLarge(u32::MAX))?;
    let payload_len = u32::try_from(payload.len())
        .ok()
        .filter(|len| *len <= MAX_PAYLOAD_BYTES)
        .ok_or(FrameError::PayloadTooLarge(u32::MAX))?;
    writer.write_all(&header_len.to_le_bytes())?;
    writer.write_all(&payload_len.to_le_bytes())?;
    writer.write_all(&header)?;
    writer.write_all(payload)?;
    writer.flush()?;
    Ok(())
}

/// Reads one frame. `Ok(None)` means the stream ended cleanly between frames.
pub fn read_frame<R: Read, M: for<'de> Deserialize<'de>>(
    reader: &mut R,
) -> Result<Option<Frame<M>>, FrameError> {
    let mut lengths = [0u8; 8];
    match read_exact_or_eof(reader, &mut lengths)? {
        ReadOutcome::Eof => return Ok(None),
        ReadOutcome::Partial => return Err(FrameError::Truncated),
        ReadOutcome::Full => {}
    }
    let header_len = u32::from_le_bytes([lengths[0], lengths[1], lengths[2], lengths[3]]);
    let payload_len = u32::from_le_bytes([lengths[4], lengths[5], lengths[6], lengths[7]]);
    if header_len > MAX_HEADER_BYTES {
        return Err(FrameError::HeaderTooLarge(header_len));
    }
    if payload_len > MAX_PAYLOAD_BYTES {
        return Err(FrameError::PayloadTooLarge(payload_len));
    }
    let mut header = vec![0u8; header_len as usize];
    read_body(reader, &mut header)?;
    let mut payload = vec![0u8; payload_len as usize];
    read_body(reader, &mut payload)?;
    let message = serde_json::from_slice(&header).map_err(FrameError::BadHeader)?;
    Ok(Some(Frame { message, payload }))
}

enum ReadOutcome {
    Full,
    Partial,
    Eof,
}

fn read_exact_or_eof<R: Read>(reader: &mut R, buf: &mut [u8]) -> Result<ReadOutcome, io::Error> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) if filled == 0 => return Ok(ReadOutcome::Eof),
            Ok(0) => return Ok(ReadOutcome::Partial),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(ReadOutcome::Full)
}

fn read_body<R: Read>(reader: &mut R, buf: &mut [u8]) -> Result<(), FrameError> {
    match read_exact_or_eof(reader, buf)? {
        ReadOutcome::Full => Ok(()),
        ReadOutcome::Eof if buf.is_empty() => Ok(()),
        _ => Err(FrameError::Truncated),
    }
}

/// Encodes samples as the little-endian f32 payload of a `Transcribe` request.
pub fn samples_to_payload(samples: &[f32]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

/// Decodes a `Transcribe` payload; `None` if its length is not a whole number of samples.
pub fn payload_to_samples(payload: &[u8]) -> Option<Vec<f32>> {
    if !payload.len().is_multiple_of(4) {
        return None;
    }
    Some(
        payload
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trips_message_and_payload() {
        let samples = [0.0f32, 0.5, -1.0, 1.0e-7];
        let request = Request::Transcribe {
            id: 7,
            language: Some("en".into()),
            initial_prompt: None,
            beam_size: 1,
        };
        let mut wire = Vec::new();
        write_frame(&mut wire, &request, &samples_to_payload(&samples)).unwrap();
        let frame: Frame<Request> = read_frame(&mut wire.as_slice()).unwrap().unwrap();
        assert_eq!(frame.message, request);
        assert_eq!(payload_to_samples(&frame.payload).unwrap(), samples);
    }

    #[test]
    fn clean_eof_between_frames_is_none() {
        let frame: Option<Frame<Request>> = read_frame(&mut [].as_slice()).unwrap();
        assert!(frame.is_none());
    }

    #[test]
    fn truncated_frame_is_an_error_not_a_hang() {
        let mut wire = Vec::new();
        write_frame(&mut wire, &Request::Shutdown, b"abc").unwrap();
        for cut in 1..wire.len() {
            let result: Result<Option<Frame<Request>>, _> = read_frame(&mut &wire[..cut]);
            assert!(matches!(result, Err(FrameError::Truncated)), "cut at {cut}");
        }
    }

    #[test]
    fn oversized_lengths_are_refused_before_allocating() {
        let mut wire = Vec::new();
        wire.extend_from_slice(&(MAX_HEADER_BYTES + 1).to_le_bytes());
        wire.extend_from_slice(&0u32.to_le_bytes());
        let result: Result<Option<Frame<Request>>, _> = read_frame(&mut wire.as_slice());
        assert!(matches!(result, Err(FrameError::HeaderTooLarge(_))));

        let mut wire = Vec::new();
        wire.extend_from_slice(&2u32.to_le_bytes());
        wire.extend_from_slice(&(MAX_PAYLOAD_BYTES + 1).to_le_bytes());
        let result: Result<Option<Frame<Request>>, _> = read_frame(&mut wire.as_slice());
        assert!(matches!(result, Err(FrameError::PayloadTooLarge(_))));
    }

    #[test]
    fn garbage_header_is_a_clear_error() {
        let mut wire = Vec::new();
        wire.extend_from_slice(&3u32.to_le_bytes());
        wire.extend_from_slice(&0u32.to_le_bytes());
        wire.extend_from_slice(b"{x}");
        let result: Result<Option<Frame<Response>>, _> = read_frame(&mut wire.as_slice());
        assert!(matches!(result, Err(FrameError::BadHeader(_))));
    }

    /// Mutated valid frames and random bytes must give a frame or an error, never a panic or
    /// a huge allocation: this is the parser both sides run on the other's output.
    #[test]
    fn mutated_and_random_streams_never_panic() {
        let mut wire = Vec::new();
        write_frame(
            &mut wire,
            &Response::Transcription {
                id: 1,
                segments: vec![AsrSegment {
                    start_ms: 0,
                    end_ms: 10,
                    text: "x".into(),
                    confidence: 0.5,
                }],
                elapsed_ms: 3,
            },
            &[1, 2, 3, 4],
        )
        .unwrap();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..20_000 {
            let mut bytes = wire.clone();
            if round % 2 == 0 {
                for _ in 0..(next() % 4 + 1) {
                    let at = (next() as usize) % bytes.len();
                    bytes[at] = next() as u8;
                }
            } else {
                bytes = (0..(next() % 64)).map(|_| next() as u8).collect();
            }
            let mut reader = bytes.as_slice();
            while let Ok(Some(_)) = read_frame::<_, Response>(&mut reader) {}
        }
    }

    #[test]
    fn odd_payload_length_is_not_samples() {
        assert!(payload_to_samples(&[0, 0, 0]).is_none());
    }
}
