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
    mut drafter: Option<&mut dyn Drafter>,
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
    let encounter_id = store.create_encounter(&store::NewEncounter {
        source_kind: source.kind.to_string(),
        audio_sha256: Some(source.sha256.clone()),
        audio_duration_ms: Some(audio.duration_ms() as i64),
        clinician_id: source.clinician_id.clone(),
        patient_ref: source.patient_ref.clone(),
        consent: source.consent,
    })?;
    // Kept sealed in the store for evidence playback; the store discards it (audited) when no
    // consent is recorded. Clamped: resampling can overshoot [-1, 1] slightly.
    let pcm: Vec<i16> = audio
        .samples
        .iter()
        .map(|s| (s.clamp(-1.0, 1.0) * f32::from(i16::MAX)).round() as i16)
        .collect();
    store.save_audio(&encounter_id, &pcm)?;
    drop(pcm);
    tracing::info!(encounter = %encounter_id, duration_ms = audio.duration_ms(), "encounter started");

    let vad_started = Instant::now();
    let max_chunk = config.vad.max_region.as_millis() as usize * SAMPLE_RATE as usize / 1000;
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
        encounter = %encounter_id,
        speech_regions = speech.len(),
        regions = regions.len(),
        vad_ms,
        frontend_ms,
        voices = analysis.as_ref().map_or(0, |a| a.voices),
        "speech regions found"
    );

    let asr_started = Instant::now();
    let mut transcript = transcribe_regions(
        &encounter_id,
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
    tracing::info!(
        encounter = %encounter_id,
        segments = transcript.segments.len(),
        words = transcript.word_count(),
        asr_ms,
        "transcription finished"
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
    let store_ms = elapsed_ms(store_started);

    Ok(EncounterOutcome {
        encounter_id,
        audio_duration_ms: audio.duration_ms(),
        speech_regions: regions.len(),
        asr_model: transcriber.model(),
        asr_worker_restarts: transcriber.restarts(),
        llm_worker_restarts: drafter.as_ref().map_or(0, |d| d.restarts()),
        transcript,
        draft,
        timings: Timings {
            frontend_ms,
            vad_ms,
            asr_ms,
            draft_ms,
            store_ms,
            total_ms: elapsed_ms(started),
        },
    })
}

/// Transcribes each speech region and shifts its segments onto the encounter's time base.
pub fn transcribe_regions(
    encounter_id: &str,
    samples: &[f32],
    regions: &[Region],
    transcriber: &mut dyn Transcriber,
    options: &TranscribeOptions,
) -> Result<Transcript, InferenceError> {
    let mut segments = Vec::new();
    let mut padded = Vec::with_capacity(MIN_ASR_SAMPLES);
    for (index, region) in regions.iter().enumerate() {
        let audio = &samples[region.start..region.end];
        let audio = if audio.len() < MIN_ASR_SAMPLES {
            padded.clear();
            padded.extend_from_slice(audio);
            padded.resize(MIN_ASR_SAMPLES, 0.0);
            &padded[..]
        } else {
            audio
        };
        let offset_ms = region.start_ms();
        let region_end_ms = region.end_ms();
        let first_of_region = segments.len();
        for asr in transcriber.transcribe(audio, options)? {
            let text = asr.text.trim();
            if text.is_empty() || is_non_speech_annotation(text) {
                continue;
            }
            // Padding can push whisper's timestamps past the region; clamp to what was heard.
            let start_ms = (offset_ms + asr.start_ms).min(region_end_ms);
            let end_ms = (offset_ms + asr.end_ms).clamp(start_ms, region_end_ms);
            segments.push(Segment {
                id: Transcript::segment_id(segments.len()),
                start: start_ms as f64 / 1000.0,
                end: end_ms as f64 / 1000.0,
                speaker: Speaker::Unknown,
                text: text.to_string(),
                confidence: asr.confidence,
                overlap: false,
            });
        }
        close_zero_length_segments(&mut segments[first_of_region..], region_end_ms);
        tracing::info!(
            encounter = %encounter_id,
            region = index + 1,
            regions = regions.len(),
            segments = segments.len(),
            "transcribed region"
        );
    }
    Ok(Transcript { segments })
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
