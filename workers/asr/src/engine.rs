//! The whisper.cpp side of the worker: loads the model once and turns f32 audio into
//! timestamped segments. All whisper-rs types stay in this module.
//!
//! Decoding settings mirror what the converter is proven against (CTranslate2 through
//! faster-whisper, see `scripts/reference/ct2_transcribe.py`): temperature 0 with no fallback,
//! no conditioning on earlier requests, non-speech tokens suppressed, timestamps decoded. Nothing
//! whisper.cpp logs after loading is kept, because its debug lines quote decoded tokens.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use edge_scribe_protocol::AsrSegment;
use whisper_rs::{
    FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters, WhisperState,
};

/// whisper.cpp's `WHISPER_MAX_DECODERS`: it refuses larger beams.
const MAX_BEAM_SIZE: u32 = 8;
/// Longest initial prompt accepted; Whisper keeps at most 223 prompt tokens anyway.
const MAX_PROMPT_BYTES: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(
        "whisper.cpp could not load the model {0}: it is not a ggml Whisper model or it is \
         damaged; convert the CTranslate2 model again (see the warnings above)"
    )]
    Load(String),
    #[error("whisper.cpp could not allocate its decoding state: {0}; check free memory")]
    State(String),
    #[error("the request carries no audio samples")]
    NoAudio,
    #[error("the audio holds a sample that is not a finite number; send PCM scaled to [-1, 1]")]
    NonFiniteAudio,
    #[error("language {0:?} is not one whisper.cpp knows; use an ISO 639-1 code such as \"en\"")]
    UnknownLanguage(String),
    #[error("beam_size {0} is larger than whisper.cpp's maximum of {MAX_BEAM_SIZE}")]
    BeamTooLarge(u32),
    #[error(
        "the initial prompt is not usable (it holds a NUL character or exceeds \
         {MAX_PROMPT_BYTES} bytes); shorten the clinic vocabulary hint"
    )]
    BadPrompt,
    #[error("whisper.cpp failed to transcribe: {0}")]
    Inference(String),
}

/// What a request may change about decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranscribeOptions {
    pub language: Option<String>,
    pub initial_prompt: Option<String>,
    pub beam_size: u32,
}

pub struct Transcript {
    pub segments: Vec<AsrSegment>,
    pub elapsed_ms: u64,
}

pub struct Engine {
    ctx: WhisperContext,
    state: WhisperState,
    threads: i32,
    load_ms: u64,
    /// The parameters of the last request, reused while requests keep asking for the same:
    /// whisper-rs leaks the C strings of each language and prompt it is given, so building
    /// parameters once per distinct setting keeps the leak bounded.
    params: Option<(TranscribeOptions, FullParams<'static, 'static>)>,
}

impl Engine {
    pub fn load(model: &Path, threads: u32) -> Result<Self, EngineError> {
        quiet_whisper_logs();
        let started = Instant::now();
        LOADING.store(true, Ordering::SeqCst);
        let mut context_params = WhisperContextParameters::default();
        context_params.use_gpu(false);
        let ctx = WhisperContext::new_with_params(model, context_params);
        LOADING.store(false, Ordering::SeqCst);
        let name = model
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let ctx = ctx.map_err(|_| EngineError::Load(name))?;
        let state = ctx
            .create_state()
            .map_err(|e| EngineError::State(e.to_string()))?;
        Ok(Self {
            ctx,
            state,
            threads: i32::try_from(threads).unwrap_or(i32::MAX),
            load_ms: elapsed_ms(started),
            params: None,
        })
    }

    pub fn load_ms(&self) -> u64 {
        self.load_ms
    }

    /// Model shape for the start-up diagnostic line.
    pub fn describe(&self) -> String {
        format!(
            "{} layers, vocabulary {}, {}",
            self.ctx.model_n_text_layer(),
            self.ctx.model_n_vocab(),
            if self.ctx.is_multilingual() {
                "multilingual"
            } else {
                "English only"
            }
        )
    }

    pub fn transcribe(
        &mut self,
        samples: &[f32],
        options: &TranscribeOptions,
    ) -> Result<Transcript, EngineError> {
        if samples.is_empty() {
            return Err(EngineError::NoAudio);
        }
        if !samples.iter().all(|s| s.is_finite()) {
            return Err(EngineError::NonFiniteAudio);
        }
        let params = self.params_for(options)?;
        let started = Instant::now();
        self.state
            .full(params, samples)
            .map_err(|e| EngineError::Inference(e.to_string()))?;

        let eot = self.ctx.token_eot();
        let mut segments = Vec::new();
        for segment in self.state.as_iter() {
            // Special tokens (timestamps, end of text) have ids from eot up: not words.
            let pieces: Vec<TokenPiece> = (0..segment.n_tokens())
                .filter_map(|i| segment.get_token(i))
                .filter(|t| t.token_id() < eot)
                .map(|t| {
                    let data = t.token_data();
                    TokenPiece {
                        bytes: t.to_bytes().map(<[u8]>::to_vec).unwrap_or_default(),
                        t0: data.t0,
                        t1: data.t1,
                        probability: t.token_probability(),
                    }
                })
                .collect();
            segments.extend(split_sentences(
                &pieces,
                segment.start_timestamp(),
                segment.end_timestamp(),
            ));
        }
        Ok(Transcript {
            segments,
            elapsed_ms: elapsed_ms(started),
        })
    }

    fn params_for(
        &mut self,
        options: &TranscribeOptions,
    ) -> Result<FullParams<'static, 'static>, EngineError> {
        if let Some((cached, params)) = &self.params {
            if cached == options {
                return Ok(params.clone());
            }
        }
        let params = build_params(options, self.threads, self.ctx.is_multilingual())?;
        self.params = Some((options.clone(), params.clone()));
        Ok(params)
    }
}

fn build_params(
    options: &TranscribeOptions,
    threads: i32,
    multilingual: bool,
) -> Result<FullParams<'static, 'static>, EngineError> {
    // whisper.cpp wants a language from its own table; taking the string from that table also
    // gives it the 'static lifetime whisper-rs asks for.
    let language: &'static str = match options.language.as_deref() {
        None if multilingual => "auto",
        None => "en",
        Some(code) => {
            let valid = !code.is_empty()
                && code.len() <= 32
                && code.bytes().all(|b| b.is_ascii_alphabetic());
            valid
                .then(|| whisper_rs::get_lang_id(code))
                .flatten()
                .and_then(whisper_rs::get_lang_str)
                .ok_or_else(|| EngineError::UnknownLanguage(code.to_owned()))?
        }
    };
    let strategy = match options.beam_size {
        0 | 1 => SamplingStrategy::Greedy { best_of: 1 },
        n if n > MAX_BEAM_SIZE => return Err(EngineError::BeamTooLarge(n)),
        n => SamplingStrategy::BeamSearch {
            beam_size: n as i32,
            patience: -1.0,
        },
    };
    let mut p = FullParams::new(strategy);
    p.set_n_threads(threads);
    p.set_language(Some(language));
    p.set_translate(false);
    p.set_no_context(true);
    p.set_no_timestamps(false);
    p.set_single_segment(false);
    // Token times let a long window be cut into sentences, each a segment of its own that a
    // note statement can cite precisely; they do not change the decoded text.
    p.set_token_timestamps(true);
    p.set_print_special(false);
    p.set_print_progress(false);
    p.set_print_realtime(false);
    p.set_print_timestamps(false);
    p.set_debug_mode(false);
    p.set_suppress_blank(true);
    // openai-whisper and faster-whisper suppress non-speech symbols by default
    // (suppress_tokens=[-1]); whisper.cpp does not unless asked.
    p.set_suppress_nst(true);
    // Temperature 0 only: fallback to sampling makes transcripts differ from run to run, and
    // differ from the reference the converter is checked against.
    p.set_temperature(0.0);
    p.set_temperature_inc(0.0);
    if let Some(prompt) = &options.initial_prompt {
        if prompt.contains('\0') || prompt.len() > MAX_PROMPT_BYTES {
            return Err(EngineError::BadPrompt);
        }
        // The leading space is how openai-whisper and faster-whisper encode a prompt, so the
        // first word tokenizes as it would mid-sentence.
        let prompt = prompt.trim();
        if !prompt.is_empty() {
            p.set_initial_prompt(&format!(" {prompt}"));
        }
    }
    Ok(p)
}

/// One decoded text token: its bytes (a byte-level BPE piece, possibly part of a UTF-8
/// character), its time span in centiseconds, and its probability.
#[derive(Debug, Clone)]
struct TokenPiece {
    bytes: Vec<u8>,
    t0: i64,
    t1: i64,
    probability: f32,
}

/// Abbreviations whose period does not end a sentence.
const ABBREVIATIONS: [&str; 9] = ["dr", "mr", "mrs", "ms", "st", "vs", "e.g", "i.e", "no"];

/// Cuts one whisper segment into sentences. A sentence ends at a token ending in `.`, `?` or
/// `!` when the next token starts a new word (so "98.4" stays whole) and the word is no
/// abbreviation ("Dr. Evans"). Times come from the token timestamps, falling back to the
/// segment's own where whisper gave none. Empty sentences are dropped.
fn split_sentences(pieces: &[TokenPiece], segment_t0: i64, segment_t1: i64) -> Vec<AsrSegment> {
    let mut out = Vec::new();
    let mut start = 0;
    for index in 0..pieces.len() {
        let next_starts_word = pieces
            .get(index + 1)
            .is_none_or(|next| next.bytes.first() == Some(&b' '));
        let ends_sentence = next_starts_word && {
            let text = String::from_utf8_lossy(&pieces[index].bytes);
            let text = text.trim_end();
            text.ends_with(['.', '?', '!']) && !ends_with_abbreviation(&pieces[start..=index])
        };
        if ends_sentence || index + 1 == pieces.len() {
            if let Some(segment) = sentence(&pieces[start..=index], segment_t0, segment_t1) {
                out.push(segment);
            }
            start = index + 1;
        }
    }
    out
}

fn ends_with_abbreviation(pieces: &[TokenPiece]) -> bool {
    let bytes: Vec<u8> = pieces
        .iter()
        .flat_map(|p| p.bytes.iter().copied())
        .collect();
    let text = String::from_utf8_lossy(&bytes);
    let last_word = text
        .trim_end()
        .trim_end_matches(['.', '?', '!'])
        .rsplit(|c: char| c.is_whitespace())
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    text.trim_end().ends_with('.') && ABBREVIATIONS.contains(&last_word.as_str())
}

fn sentence(pieces: &[TokenPiece], segment_t0: i64, segment_t1: i64) -> Option<AsrSegment> {
    let bytes: Vec<u8> = pieces
        .iter()
        .flat_map(|p| p.bytes.iter().copied())
        .collect();
    let text = String::from_utf8_lossy(&bytes).trim().to_owned();
    if text.is_empty() {
        return None;
    }
    let valid = |t: i64| (t >= segment_t0 && t <= segment_t1).then_some(t);
    let t0 = pieces
        .iter()
        .find_map(|p| valid(p.t0))
        .unwrap_or(segment_t0);
    let t1 = pieces
        .iter()
        .rev()
        .find_map(|p| valid(p.t1))
        .unwrap_or(segment_t1)
        .max(t0);
    let confidence = pieces.iter().map(|p| p.probability).sum::<f32>() / pieces.len() as f32;
    Some(AsrSegment {
        // whisper.cpp counts in centiseconds.
        start_ms: centiseconds_to_ms(t0),
        end_ms: centiseconds_to_ms(t1),
        text,
        confidence,
    })
}

fn centiseconds_to_ms(cs: i64) -> u64 {
    u64::try_from(cs).unwrap_or(0).saturating_mul(10)
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// True only while the model loads: the one time whisper.cpp's warnings are worth showing (a
/// damaged or mis-converted file), and the one time they cannot quote a transcript.
static LOADING: AtomicBool = AtomicBool::new(false);

struct LoadLogger;

impl log::Log for LoadLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        LOADING.load(Ordering::SeqCst) && metadata.level() <= log::Level::Warn
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            eprintln!("edge-scribe-asr-worker: whisper.cpp: {}", record.args());
        }
    }

    fn flush(&self) {}
}

static LOGGER: LoadLogger = LoadLogger;

/// Routes whisper.cpp's and ggml's logging through [`LoadLogger`] instead of their default,
/// which writes every line, decoded text included, to stderr.
fn quiet_whisper_logs() {
    // Fails only if a logger is already set, which in this binary means this already ran.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Warn);
    whisper_rs::install_logging_hooks();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(language: Option<&str>, beam: u32) -> TranscribeOptions {
        TranscribeOptions {
            language: language.map(str::to_owned),
            initial_prompt: None,
            beam_size: beam,
        }
    }

    #[test]
    fn unknown_language_and_oversized_beam_are_refused_before_decoding() {
        assert!(matches!(
            build_params(&options(Some("xx"), 1), 1, true),
            Err(EngineError::UnknownLanguage(_))
        ));
        assert!(matches!(
            build_params(&options(Some("e\0n"), 1), 1, true),
            Err(EngineError::UnknownLanguage(_))
        ));
        assert!(matches!(
            build_params(&options(Some("en"), 9), 1, true),
            Err(EngineError::BeamTooLarge(9))
        ));
        assert!(build_params(&options(Some("de"), 5), 1, true).is_ok());
        assert!(build_params(&options(None, 0), 1, false).is_ok());
    }

    #[test]
    fn prompt_with_nul_is_refused_not_a_panic() {
        let mut o = options(None, 1);
        o.initial_prompt = Some("lisinopril\0".into());
        assert!(matches!(
            build_params(&o, 1, false),
            Err(EngineError::BadPrompt)
        ));
    }

    fn pieces(tokens: &[(&str, i64, i64)]) -> Vec<TokenPiece> {
        tokens
            .iter()
            .map(|(text, t0, t1)| TokenPiece {
                bytes: text.as_bytes().to_vec(),
                t0: *t0,
                t1: *t1,
                probability: 0.5,
            })
            .collect()
    }

    #[test]
    fn a_window_is_cut_into_sentences_with_their_own_times() {
        let p = pieces(&[
            (" Good", 0, 20),
            (" morning", 20, 50),
            (".", 50, 55),
            (" I'm", 60, 80),
            (" Dr", 80, 95),
            (".", 95, 96),
            (" Evans", 96, 130),
            (".", 130, 131),
            (" Temperature", 140, 180),
            (" 98", 180, 200),
            (".", 200, 201),
            ("4", 201, 210),
            ("?", 210, 212),
        ]);
        let s = split_sentences(&p, 0, 300);
        let texts: Vec<&str> = s.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(
            texts,
            ["Good morning.", "I'm Dr. Evans.", "Temperature 98.4?"]
        );
        assert_eq!((s[1].start_ms, s[1].end_ms), (600, 1310));
        assert_eq!((s[2].start_ms, s[2].end_ms), (1400, 2120));
    }

    #[test]
    fn missing_token_times_fall_back_to_the_segment() {
        let p = pieces(&[(" Hello", -1, -1), (" there", -1, -1)]);
        let s = split_sentences(&p, 100, 250);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].start_ms, s[0].end_ms), (1000, 2500));
        assert_eq!(s[0].text, "Hello there");
    }

    #[test]
    fn negative_timestamps_clamp_to_zero() {
        assert_eq!(centiseconds_to_ms(-3), 0);
        assert_eq!(centiseconds_to_ms(576), 5760);
    }
}
