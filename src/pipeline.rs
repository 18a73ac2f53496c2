//! One encounter from audio to a stored, evidence-linked draft. Batch mode (`edge-scribe
//! process`) and the daemon both call [`process_encounter`]; neither knows how inference is
//! hosted. Stages: resampled audio → speech regions (VAD) → ASR per region on the encounter's
//! time base → draft (LLM under grammar + verifier) → store. Logs carry counts, ids and timings,
//! never transcript text.

use std::time::Instant;

use serde::Serialize;

use crate::audio::vad::{self, Region};
use crate::audio::{Audio, SAMPLE_RATE};
use crate::config::Config;
use crate::draft::compose::compose_draft;
use crate::draft::context::DraftingContext;
use crate::draft::{self, Draft, DraftSettings};
use crate::inference::{Drafter, InferenceError, TranscribeOptions, Transcriber};
use crate::room::{self, RoomModels, RoomRecording};
use crate::store::{self, Store};
use crate::transcript::{Segment, Speaker, Transcript};

/// whisper.cpp refuses input shorter than one second; short regions are padded with silence.
const MIN_ASR_SAMPLES: usize = SAMPLE_RATE as usize * 11 / 10;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("transcription failed: {0}")]
    Transcribe(InferenceError),
    #[error("drafting failed: {0}")]
    Draft(#[from] draft::DraftError),
    #[error(transparent)]
    Template(#[from] draft::template::TemplateError),
    #[error("the draft could not be encoded: {0}")]
    Encode(serde_json::Error),
    #[error("storing the encounter failed: {0}")]
    Store(#[from] store::StoreError),
    #[error("the room front end failed: {0}")]
    Room(#[from] room::RoomError),
    #[error("the room front end failed: {0}")]
    Frontend(#[from] crate::frontend::FrontendError),
    #[error("listening failed: {0}")]
    Listen(&'static str),
}

/// Wall-clock time per stage, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    /// The room front end (alignment, beamforming, diarization); 0 for one channel.
    pub frontend_ms: u64,
    pub vad_ms: u64,
    pub asr_ms: u64,
    pub draft_ms: u64,
    pub store_ms: u64,
    pub total_ms: u64,
    /// A live encounter: from the end of its audio to its transcript with speakers named, i.e.
    /// what was left to do when the visit ended (0 for a recording processed whole).
    pub tail_ms: u64,
}

/// Everything a run produced, for output files, summaries and tests.
#[derive(Debug, Clone, Serialize)]
pub struct EncounterOutcome {
    pub encounter_id: String,
    pub audio_duration_ms: u64,
    pub speech_regions: usize,
    pub transcript: Transcript,
    pub draft: Draft,
    pub timings: Timings,
    pub asr_model: String,
    pub asr_worker_restarts: u32,
    pub llm_worker_restarts: u32,
}

/// The processing event that names the speech model and its sha256.
pub const ASR_MODEL_STAGE: &str = "asr.model";

/// Where the audio came from, for the record.
#[derive(Debug, Clone)]
pub struct AudioSource {
    /// "file" for batch mode, "replay" for the daemon's replay source, later "device".
    pub kind: &'static str,
    pub sha256: String,
    /// The account id of the clinician the encounter belongs to, when known.
    pub clinician_id: Option<String>,
    /// Whether the patient consented to recording: without it the audio is not kept.
    pub consent: bool,
    /// The patient's identifier in the EHR (MRN), when known.
    pub patient_ref: Option<String>,
}

/// What an encounter was heard with: one channel (a file, a badge alone), or a room's array
/// with the models of the room front end (and maybe the clinician's badge).
pub enum EncounterInput<'a> {
    Mono(&'a Audio),
    Room {
        recording: &'a RoomRecording,
        models: &'a mut RoomModels,
    },
}

/// Runs one single-channel encounter through every stage and stores the result.
pub fn process_encounter(
    config: &Config,
    audio: &Audio,
    source: &AudioSource,
    transcriber: &mut dyn Transcriber,
    drafter: Option<&mut dyn Drafter>,
    drafting: &DraftingContext,
    store: &Store,
) -> Result<EncounterOutcome, PipelineError> {
    process_input(
        config,
        EncounterInput::Mono(audio),
        source,
        transcriber,
        drafter,
        drafting,
        store,
    )
}

/// Runs one encounter, from either kind of input, through every stage and stores the result.
pub fn process_input(
    config: &Config,
    input: EncounterInput<'_>,
    source: &AudioSource,
    transcriber: &mut dyn Transcriber,
    drafter: Option<&mut dyn Drafter>,
    drafting: &DraftingContext,
    store: &Store,
) -> Result<EncounterOutcome, PipelineError> {
    let started = Instant::now();
    // The room front end runs first: what is kept for playback is the signal it chose.
    let frontend_started = Instant::now();
    let (audio, analysis) = match input {
        EncounterInput::Mono(audio) => (std::borrow::Cow::Borrowed(audio), None),
        EncounterInput::Room { recording, models } => {
            let analysis = room::analyse(recording, models)?;
            let audio = Audio {
                samples: analysis.asr_signal.clone(),
                source_rate: SAMPLE_RATE,
                source_channels: recording.array.len() as u16,
                source_bits: 32,
            };
            (std::borrow::Cow::Owned(audio), Some(analysis))
        }
    };
    let frontend_ms = elapsed_ms(frontend_started);
    let audio = audio.as_ref();

    let vad_started = Instant::now();
    let max_chunk = max_chunk_samples(config);
    let (speech, regions) = match &analysis {
        Some(analysis) => {
            let speech = room::speech_regions(analysis);
            let regions = vad::pack_regions(&speech, max_chunk);
            (speech, regions)
        }
        None => {
            let speech = vad::speech_regions(&audio.samples, &config.vad);
            let regions = vad::pack_regions(&speech, max_chunk);
            (speech, regions)
        }
    };
    let vad_ms = elapsed_ms(vad_started);
    tracing::info!(
        speech_regions = speech.len(),
        regions = regions.len(),
        vad_ms,
        frontend_ms,
        voices = analysis.as_ref().map_or(0, |a| a.voices),
        "speech regions found"
    );

    let asr_started = Instant::now();
    let mut transcript = transcribe_regions(
        "batch",
        &audio.samples,
        &regions,
        transcriber,
        &TranscribeOptions::from(&config.asr),
    )
    .map_err(PipelineError::Transcribe)?;
    if let Some(analysis) = &analysis {
        room::label_speakers(&mut transcript, &analysis.turns);
    }
    let asr_ms = elapsed_ms(asr_started);
    conclude(
        config,
        Heard {
            samples: &audio.samples,
            transcript,
            regions: regions.len(),
            timings: Timings {
                frontend_ms,
                vad_ms,
                asr_ms,
                ..Timings::default()
            },
            started,
        },
        source,
        transcriber,
        drafter,
        drafting,
        store,
    )
}

/// Longest stretch of audio sent to the recogniser at once, in samples.
pub fn max_chunk_samples(config: &Config) -> usize {
    config.vad.max_region.as_millis() as usize * SAMPLE_RATE as usize / 1000
}

/// What an encounter's listening produced: the audio kept for playback, the transcript on its
/// time base (speakers named), and the time it took.
pub struct Heard<'a> {
    pub samples: &'a [f32],
    pub transcript: Transcript,
    /// Chunks the recogniser was given.
    pub regions: usize,
    /// Front end, VAD and ASR times so far; drafting and storing are added here.
    pub timings: Timings,
    pub started: Instant,
}

/// Stores a heard encounter (audio when consented, transcript, the speech model's identity),
/// drafts its note and stores the draft: the part batch and live encounters share.
pub fn conclude(
    config: &Config,
    heard: Heard<'_>,
    source: &AudioSource,
    transcriber: &mut dyn Transcriber,
    mut drafter: Option<&mut dyn Drafter>,
    drafting: &DraftingContext,
    store: &Store,
) -> Result<EncounterOutcome, PipelineError> {
    let Heard {
        samples,
        transcript,
        regions,
        mut timings,
        started,
    } = heard;
    let duration_ms = vad::samples_to_ms(samples.len());
    let store_started = Instant::now();
    let encounter_id = store.create_encounter(&store::NewEncounter {
        source_kind: source.kind.to_string(),
        audio_sha256: Some(source.sha256.clone()),
        audio_duration_ms: Some(duration_ms as i64),
        clinician_id: source.clinician_id.clone(),
        patient_ref: source.patient_ref.clone(),
        consent: source.consent,
    })?;
    // Kept sealed in the store for evidence playback; the store discards it (audited) when no
    // consent is recorded. Clamped: resampling can overshoot [-1, 1] slightly.
    let pcm: Vec<i16> = samples
        .iter()
        .map(|s| (s.clamp(-1.0, 1.0) * f32::from(i16::MAX)).round() as i16)
        .collect();
    store.save_audio(&encounter_id, &pcm)?;
    drop(pcm);
    store.set_status(&encounter_id, store::EncounterStatus::Transcribed)?;
    store.save_transcript(&encounter_id, &to_stored(&transcript))?;
    // Which speech model heard the visit, for the sign-off attestation.
    store.record_event(
        &encounter_id,
        ASR_MODEL_STAGE,
        &serde_json::json!({
            "model": config.asr_model,
            "sha256": transcriber.model_sha256(),
        })
        .to_string(),
    )?;
    let mut store_ms = elapsed_ms(store_started);
    tracing::info!(
        encounter = %encounter_id,
        duration_ms,
        segments = transcript.segments.len(),
        words = transcript.word_count(),
        asr_ms = timings.asr_ms,
        "transcription stored"
    );

    let draft_started = Instant::now();
    tracing::info!(encounter = %encounter_id, "drafting started");
    let mut draft = compose_draft(
        &transcript,
        drafting.template(None)?,
        drafter.as_mut().map(|d| &mut **d as &mut dyn Drafter),
        &DraftSettings::from(&config.llm),
    )?;
    drafting.annotate(&mut draft);
    let draft_ms = elapsed_ms(draft_started);
    tracing::info!(
        encounter = %encounter_id,
        proposed = draft.verifier.proposed,
        accepted = draft.verifier.accepted,
        rejected = draft.verifier.rejected.len(),
        draft_ms,
        "draft finished"
    );

    let store_started = Instant::now();
    let body = serde_json::to_string(&draft).map_err(PipelineError::Encode)?;
    store.save_draft(&store::NewDraft {
        encounter_id: encounter_id.clone(),
        model: draft.model.clone(),
        model_sha256: drafter
            .as_ref()
            .map(|d| d.model_sha256())
            .unwrap_or_default(),
        template: draft.template.clone(),
        body_json: body,
    })?;
    store.set_status(&encounter_id, store::EncounterStatus::Drafted)?;
    store_ms += elapsed_ms(store_started);
    timings.draft_ms = draft_ms;
    timings.store_ms = store_ms;
    timings.total_ms = elapsed_ms(started);

    Ok(EncounterOutcome {
        encounter_id,
        audio_duration_ms: duration_ms,
        speech_regions: regions,
        asr_model: transcriber.model(),
        asr_worker_restarts: transcriber.restarts(),
        llm_worker_restarts: drafter.as_ref().map_or(0, |d| d.restarts()),
        transcript,
        draft,
        timings,
    })
}

/// Transcribes each speech region and shifts its segments onto the encounter's time base.
/// `label` names the run in progress logs (never patient data).
pub fn transcribe_regions(
    label: &str,
    samples: &[f32],
    regions: &[Region],
    transcriber: &mut dyn Transcriber,
    options: &TranscribeOptions,
) -> Result<Transcript, InferenceError> {
    let mut collector = SegmentCollector::default();
    for (index, region) in regions.iter().enumerate() {
        let audio = &samples[region.start..region.end];
        for (piece, segments) in transcribe_chunk(audio, *region, transcriber, options)? {
            collector.add(&piece, segments);
        }
        tracing::info!(
            run = %label,
            region = index + 1,
            regions = regions.len(),
            segments = collector.len(),
            "transcribed region"
        );
    }
    Ok(collector.finish())
}

/// How many times a chunk the recogniser failed on is split and decoded again.
const DECODE_GUARD_DEPTH: u32 = 2;
/// Chunks shorter than this are never split.
const DECODE_GUARD_MIN_SAMPLES: usize = 6 * SAMPLE_RATE as usize;

/// Transcribes one chunk (`audio` is the signal over `region`). Whisper at temperature 0 with
/// no fallback sometimes fails on a noisy chunk: a repetition loop, or a long chunk decoded to a
/// few words. Such a chunk is split at its quietest 200 ms near the middle and each half decoded
/// again, at most twice deep; on the simulated rooms this fixed every loop seen and changed
/// nothing else. Returns the pieces in time order, each with its segments (times relative to
/// the piece's start).
pub fn transcribe_chunk(
    audio: &[f32],
    region: Region,
    transcriber: &mut dyn Transcriber,
    options: &TranscribeOptions,
) -> Result<Vec<(Region, Vec<crate::inference::AsrSegment>)>, InferenceError> {
    let mut pieces = Vec::new();
    let mut padded = Vec::with_capacity(MIN_ASR_SAMPLES);
    // Right halves go on the stack first, so pieces come off it in time order.
    let mut stack = vec![(region, 0u32)];
    while let Some((piece, depth)) = stack.pop() {
        let heard = &audio[piece.start - region.start..piece.end - region.start];
        let segments = transcriber.transcribe(asr_input(heard, &mut padded), options)?;
        if depth < DECODE_GUARD_DEPTH
            && piece.len() >= DECODE_GUARD_MIN_SAMPLES
            && decode_failed(&segments, piece.len())
        {
            let mid = piece.start + quietest_split(heard);
            stack.push((
                Region {
                    start: mid,
                    end: piece.end,
                },
                depth + 1,
            ));
            stack.push((
                Region {
                    start: piece.start,
                    end: mid,
                },
                depth + 1,
            ));
            continue;
        }
        pieces.push((piece, segments));
    }
    Ok(pieces)
}

/// A repetition loop (under 60 % distinct word trigrams) or far fewer words than `samples` of
/// speech hold (under 0.7 a second).
fn decode_failed(segments: &[crate::inference::AsrSegment], samples: usize) -> bool {
    let words: Vec<String> = segments
        .iter()
        .flat_map(|a| a.text.split_whitespace())
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect();
    let seconds = samples as f32 / SAMPLE_RATE as f32;
    if (words.len() as f32) < 0.7 * seconds {
        return true;
    }
    if words.len() >= 12 {
        let mut trigrams: Vec<&[String]> = words.windows(3).collect();
        let all = trigrams.len();
        trigrams.sort_unstable();
        trigrams.dedup();
        if (trigrams.len() as f32) < 0.6 * all as f32 {
            return true;
        }
    }
    false
}

/// Where to split a chunk: the middle of its quietest 200 ms (in 10 ms steps) within the middle
/// third, as an offset into it.
fn quietest_split(audio: &[f32]) -> usize {
    let len = audio.len();
    let (lo, hi) = (len / 3, 2 * len / 3);
    let step = SAMPLE_RATE as usize / 100;
    let window = SAMPLE_RATE as usize / 5;
    let mut best = (f32::INFINITY, len / 2);
    let mut t = lo;
    while t + window <= hi {
        let energy: f32 = audio[t..t + window].iter().map(|x| x * x).sum();
        if energy < best.0 {
            best = (energy, t + window / 2);
        }
        t += step;
    }
    best.1
}

/// A region's audio as whisper.cpp accepts it: short ones are padded with silence.
pub fn asr_input<'a>(audio: &'a [f32], padded: &'a mut Vec<f32>) -> &'a [f32] {
    if audio.len() >= MIN_ASR_SAMPLES {
        return audio;
    }
    padded.clear();
    padded.extend_from_slice(audio);
    padded.resize(MIN_ASR_SAMPLES, 0.0);
    padded
}

/// Builds a transcript from the recogniser's output, region by region in time order: segments
/// land on the encounter's time base, annotations such as "[BLANK_AUDIO]" are dropped, and ids
/// `s1, s2, …` are handed out in order, so they never change once given.
#[derive(Debug, Default)]
pub struct SegmentCollector {
    segments: Vec<Segment>,
}

impl SegmentCollector {
    /// The recogniser's segments for `region` (times relative to the region's start).
    pub fn add(&mut self, region: &Region, asr: Vec<crate::inference::AsrSegment>) {
        let offset_ms = region.start_ms();
        let region_end_ms = region.end_ms();
        let first_of_region = self.segments.len();
        for asr in asr {
            let text = asr.text.trim();
            if text.is_empty() || is_non_speech_annotation(text) {
                continue;
            }
            // Padding can push whisper's timestamps past the region; clamp to what was heard.
            let start_ms = (offset_ms + asr.start_ms).min(region_end_ms);
            let end_ms = (offset_ms + asr.end_ms).clamp(start_ms, region_end_ms);
            self.segments.push(Segment {
                id: Transcript::segment_id(self.segments.len()),
                start: start_ms as f64 / 1000.0,
                end: end_ms as f64 / 1000.0,
                speaker: Speaker::Unknown,
                text: text.to_string(),
                confidence: asr.confidence,
                overlap: false,
            });
        }
        close_zero_length_segments(&mut self.segments[first_of_region..], region_end_ms);
    }

    pub fn len(&self) -> usize {
        self.segments.len()
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    pub fn finish(self) -> Transcript {
        Transcript {
            segments: self.segments,
        }
    }
}

/// Token timestamps near the end of a window can collapse a sentence to zero length; such a
/// sentence is taken to last until the next one starts (or the region ends), so clicking it
/// still plays its words.
fn close_zero_length_segments(segments: &mut [Segment], region_end_ms: u64) {
    let region_end = region_end_ms as f64 / 1000.0;
    for index in 0..segments.len() {
        if segments[index].end > segments[index].start {
            continue;
        }
        let next_start = segments[index + 1..]
            .iter()
            .map(|s| s.start)
            .find(|&start| start > segments[index].start)
            .unwrap_or(region_end);
        segments[index].end = next_start.max(segments[index].start);
    }
}

/// Whisper marks noise as "[BLANK_AUDIO]", "(coughs)", "[Music]": not speech, not evidence.
fn is_non_speech_annotation(text: &str) -> bool {
    let t = text.trim();
    (t.starts_with('[') && t.ends_with(']')) || (t.starts_with('(') && t.ends_with(')'))
}

fn to_stored(transcript: &Transcript) -> Vec<store::StoredSegment> {
    transcript
        .segments
        .iter()
        .map(|s| store::StoredSegment {
            id: s.id.clone(),
            start_ms: s.start_ms(),
            end_ms: s.end_ms(),
            speaker: Some(s.speaker.label()),
            text: s.text.clone(),
            confidence: Some(f64::from(s.confidence)),
            overlap: s.overlap,
            speaker_corrected: false,
            original_speaker: None,
        })
        .collect()
}

fn elapsed_ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

/// SHA-256 of a file's bytes, hex: the audio's identity in the record.
pub fn sha256_file(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        context.update(&buffer[..n]);
    }
    Ok(context
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_failures_are_loops_and_near_silence() {
        let seg = |text: &str| crate::inference::AsrSegment {
            start_ms: 0,
            end_ms: 1000,
            text: text.to_string(),
            confidence: 1.0,
        };
        let ten_s = 10 * SAMPLE_RATE as usize;
        let fine = seg("Hello, what can I do for you today? I have been dizzy when I stand up.");
        assert!(!decode_failed(&[fine], ten_s));
        let looped = seg(&format!("You know, I am {}", "a son of ".repeat(20)));
        assert!(decode_failed(&[looped], ten_s));
        assert!(decode_failed(&[seg("The blood pressure bills.")], ten_s));
    }

    /// Loops on any chunk longer than 6 s, answers plainly otherwise.
    struct Looper {
        calls: Vec<usize>,
    }

    impl Transcriber for Looper {
        fn transcribe(
            &mut self,
            audio: &[f32],
            _: &TranscribeOptions,
        ) -> Result<Vec<AsrSegment>, InferenceError> {
            self.calls.push(audio.len());
            let text = if audio.len() > 6 * SAMPLE_RATE as usize {
                "amlodipine ".repeat(40)
            } else {
                "one two three four five six seven eight".to_string()
            };
            Ok(vec![AsrSegment {
                start_ms: 0,
                end_ms: 500,
                text,
                confidence: 0.5,
            }])
        }
        fn model(&self) -> String {
            "looper".into()
        }
    }

    #[test]
    fn a_looping_chunk_is_split_at_its_quietest_point_and_decoded_again() {
        // 16 s of tone with a silent stretch at 7.0–7.3 s, inside the middle third.
        let rate = SAMPLE_RATE as usize;
        let mut samples: Vec<f32> = (0..16 * rate)
            .map(|i| (i as f32 * 0.05).sin() * 0.3)
            .collect();
        samples[7 * rate..7 * rate + rate * 3 / 10].fill(0.0);
        let region = Region {
            start: 0,
            end: samples.len(),
        };
        let mut looper = Looper { calls: Vec::new() };
        let t = transcribe_regions("t", &samples, &[region], &mut looper, &options()).unwrap();
        // 16 s loops; the halves (~7.1 s, ~8.9 s) loop too; the quarters (under 6 s) do not.
        assert_eq!(looper.calls.len(), 7, "{:?}", looper.calls);
        let split = looper.calls[1];
        assert!(
            (7 * rate..7 * rate + rate * 3 / 10).contains(&split),
            "split at {split}"
        );
        assert_eq!(t.segments.len(), 4);
        assert!(t.segments.iter().all(|s| !s.text.contains("amlodipine")));
        assert!(t.segments.windows(2).all(|w| w[0].start < w[1].start));
    }
    use crate::inference::AsrSegment;

    /// Returns one segment per call, timed at 0.5–1.5 s of the audio it was given.
    struct Echo {
        calls: Vec<usize>,
        fail_on: Option<usize>,
    }

    impl Transcriber for Echo {
        fn transcribe(
            &mut self,
            audio: &[f32],
            _: &TranscribeOptions,
        ) -> Result<Vec<AsrSegment>, InferenceError> {
            self.calls.push(audio.len());
            if self.fail_on == Some(self.calls.len()) {
                return Err(InferenceError::ModelMissing {
                    name: "x".into(),
                    dir: "/".into(),
                });
            }
            Ok(vec![
                AsrSegment {
                    start_ms: 500,
                    end_ms: 1500,
                    text: format!(" words {} ", self.calls.len()),
                    confidence: 0.8,
                },
                AsrSegment {
                    start_ms: 1500,
                    end_ms: 1600,
                    text: "[BLANK_AUDIO]".into(),
                    confidence: 0.1,
                },
            ])
        }
        fn model(&self) -> String {
            "echo".into()
        }
    }

    fn options() -> TranscribeOptions {
        TranscribeOptions {
            language: Some("en".into()),
            initial_prompt: None,
            beam_size: 1,
        }
    }

    #[test]
    fn segments_land_on_the_encounter_time_base_with_stable_ids() {
        let samples = vec![0.0f32; 16_000 * 10];
        let regions = [
            Region {
                start: 16_000,
                end: 16_000 * 3,
            },
            Region {
                start: 16_000 * 5,
                end: 16_000 * 9,
            },
        ];
        let mut echo = Echo {
            calls: vec![],
            fail_on: None,
        };
        let t = transcribe_regions("e", &samples, &regions, &mut echo, &options()).unwrap();
        assert_eq!(t.segments.len(), 2, "annotations are dropped");
        assert_eq!(t.segments[0].id, "s1");
        assert_eq!(t.segments[1].id, "s2");
        assert!((t.segments[0].start - 1.5).abs() < 1e-9);
        assert!((t.segments[1].start - 5.5).abs() < 1e-9);
        assert_eq!(t.segments[1].text, "words 2");
    }

    #[test]
    fn zero_length_sentences_last_until_the_next_one() {
        let seg = |start: f64, end: f64| Segment {
            id: String::new(),
            start,
            end,
            speaker: Speaker::Unknown,
            text: String::new(),
            confidence: 1.0,
            overlap: false,
        };
        let mut segments = vec![
            seg(1.0, 2.0),
            seg(2.5, 2.5),
            seg(2.5, 2.5),
            seg(3.0, 4.0),
            seg(5.0, 5.0),
        ];
        close_zero_length_segments(&mut segments, 6_000);
        let ends: Vec<f64> = segments.iter().map(|s| s.end).collect();
        assert_eq!(ends, [2.0, 3.0, 3.0, 4.0, 6.0]);
    }

    #[test]
    fn short_regions_are_padded_to_what_whisper_accepts() {
        let samples = vec![0.0f32; 16_000 * 2];
        let regions = [Region {
            start: 0,
            end: 4_000,
        }];
        let mut echo = Echo {
            calls: vec![],
            fail_on: None,
        };
        let t = transcribe_regions("e", &samples, &regions, &mut echo, &options()).unwrap();
        assert_eq!(echo.calls, vec![MIN_ASR_SAMPLES]);
        // The segment is clamped to the 250 ms that were really heard.
        assert!(t.segments[0].end <= 0.25 + 1e-9);
    }

    #[test]
    fn an_asr_failure_is_an_error_not_a_shorter_transcript() {
        let samples = vec![0.0f32; 16_000 * 4];
        let regions = [
            Region {
                start: 0,
                end: 16_000,
            },
            Region {
                start: 32_000,
                end: 48_000,
            },
        ];
        let mut echo = Echo {
            calls: vec![],
            fail_on: Some(2),
        };
        assert!(transcribe_regions("e", &samples, &regions, &mut echo, &options()).is_err());
    }
}
