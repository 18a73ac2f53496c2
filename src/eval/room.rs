//! Scores the room front end on simulated scenes with ground truth (`scripts/simulate-room`
//! writes them: array.wav, badge.wav, geometry.json, truth.json).
//!
//! Per scene: DER and clinician attribution against the truth turns, speech-detection F1 and
//! false alarms, the SNR gain of each beamformer, the front end's speed, and — with a speech
//! recogniser — WER per channel choice: one raw array mic (the baseline), the badge alone,
//! delay-and-sum, MVDR, and the front end's own choice (badge for the clinician, beamformer for
//! the rest). SNR is measured the way the simulator defines it: speech power over the truth
//! turns against noise power where nobody talks (0.3 s clear of any turn, so reverberant tails
//! do not count as noise), with the noise power taken out of the speech power.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::diarization::{clinician_attribution, diarization_error, merge_turns, Turn};
use super::vad::{score_intervals, VadScore};
use super::wer::word_error_rate;
use crate::audio::vad::{self};
use crate::audio::SAMPLE_RATE;
use crate::config::VadSettings;
use crate::frontend::room::{RoomAnalysis, FRAME};
use crate::inference::{TranscribeOptions, Transcriber};
use crate::room::{self, RoomError, RoomModels, RoomRecording};

#[derive(Debug, thiserror::Error)]
pub enum SceneError {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error(transparent)]
    Room(#[from] RoomError),
}

#[derive(Debug, Clone, Deserialize)]
pub struct TruthTurn {
    pub speaker: String,
    pub start: f64,
    pub end: f64,
    #[serde(default)]
    pub text: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Truth {
    #[serde(default)]
    pub scene: String,
    #[serde(default)]
    pub snr_db: f64,
    pub turns: Vec<TruthTurn>,
}

/// A scene on disk.
pub struct Scene {
    pub dir: PathBuf,
    pub truth: Truth,
    pub recording: RoomRecording,
}

impl Scene {
    /// Reads a scene directory; `with_badge = false` ignores badge.wav (the array-only case).
    pub fn read(dir: &Path, with_badge: bool) -> Result<Scene, SceneError> {
        let truth_path = dir.join("truth.json");
        let text = std::fs::read_to_string(&truth_path).map_err(|e| SceneError::Read {
            path: truth_path.clone(),
            reason: e.to_string(),
        })?;
        let truth: Truth = serde_json::from_str(&text).map_err(|e| SceneError::Read {
            path: truth_path.clone(),
            reason: e.to_string(),
        })?;
        let geometry = room::read_geometry(&dir.join("geometry.json"))?;
        let badge = dir.join("badge.wav");
        let badge = (with_badge && badge.exists()).then_some(badge);
        let recording = RoomRecording::read(&dir.join("array.wav"), &geometry, badge.as_deref())?;
        Ok(Scene {
            dir: dir.to_path_buf(),
            truth,
            recording,
        })
    }

    pub fn reference_turns(&self) -> Vec<Turn> {
        self.truth
            .turns
            .iter()
            .map(|t| Turn::new(&t.speaker, t.start, t.end))
            .collect()
    }

    /// What was said, in order of speaking.
    pub fn reference_text(&self) -> String {
        let mut turns = self.truth.turns.clone();
        turns.sort_by(|a, b| a.start.total_cmp(&b.start));
        turns
            .iter()
            .map(|t| t.text.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The truth as a speech detector: isolates the rest of the front end from detection errors
/// (reported separately, never as the product's numbers).
pub struct OracleDetector {
    pub turns: Vec<Turn>,
}

impl crate::frontend::room::SpeechDetector for OracleDetector {
    fn reset(&mut self) {}

    fn frame_probability(
        &mut self,
        _signal: &[f32],
        index: usize,
        _voiced: &crate::frontend::speech::VoicedGate,
    ) -> Result<f32, crate::frontend::FrontendError> {
        let t = (index * FRAME + FRAME / 2) as f64 / f64::from(SAMPLE_RATE);
        let inside = self
            .turns
            .iter()
            .any(|turn| turn.start <= t && t < turn.end);
        Ok(if inside { 1.0 } else { 0.0 })
    }

    fn decision(&self) -> crate::frontend::speech::SpeechDecision {
        crate::frontend::speech::SpeechDecision::Threshold(0.5)
    }

    fn name(&self) -> &'static str {
        "oracle"
    }
}

/// Everything measured on one scene.
#[derive(Debug, Clone, Serialize)]
pub struct SceneScore {
    pub scene: String,
    pub snr_db: f64,
    pub badge: bool,
    pub detector: String,
    pub audio_s: f64,
    pub frontend_ms: f64,
    /// Audio seconds per second of front-end compute.
    pub realtime_factor: f64,
    pub der: f64,
    pub missed_s: f64,
    pub false_alarm_s: f64,
    pub confusion_s: f64,
    /// Share of single-speaker frames whose clinician/not-clinician call is right.
    pub attribution: Option<f64>,
    pub speech: VadScore,
    pub snr_mic_db: f64,
    pub snr_gain_das_db: f64,
    pub snr_gain_mvdr_db: f64,
    pub voices: usize,
    pub overlap_frames: usize,
    /// WER per channel choice, when a recogniser was given.
    pub wer: BTreeMap<String, f64>,
    /// The front end's turns (speaker, start s, end s).
    pub turns: Vec<(String, f64, f64)>,
}

/// Runs the front end on a scene and scores it; with a transcriber also WER per channel.
pub fn score_scene(
    scene: &Scene,
    models: &mut RoomModels,
    vad_settings: &VadSettings,
    transcriber: Option<(&mut dyn Transcriber, &TranscribeOptions)>,
) -> Result<SceneScore, SceneError> {
    let started = Instant::now();
    let analysis = room::analyse(&scene.recording, models)?;
    let frontend_ms = started.elapsed().as_secs_f64() * 1000.0;
    let audio_s = scene.recording.array[0].len() as f64 / f64::from(SAMPLE_RATE);

    let reference = scene.reference_turns();
    let hypothesis = hypothesis_turns(&analysis);
    let der = diarization_error(&reference, &hypothesis);
    let attribution = scene
        .recording
        .badge
        .is_some()
        .then(|| clinician_attribution(&reference, &hypothesis, "clinician").accuracy());
    let speech = score_speech(&reference, &analysis.speech, audio_s);

    let mic = &scene.recording.array[0];
    let snr_mic = segmental_snr(mic, &reference);
    let snr_gain_das = segmental_snr(&analysis.delay_and_sum, &reference) - snr_mic;
    let snr_gain_mvdr = segmental_snr(&analysis.mvdr, &reference) - snr_mic;

    let mut wer = BTreeMap::new();
    if let Some((transcriber, options)) = transcriber {
        let text = scene.reference_text();
        let mut channels: Vec<(&str, &[f32])> = vec![
            ("mic", mic),
            ("delay_and_sum", &analysis.delay_and_sum),
            ("mvdr", &analysis.mvdr),
        ];
        if let Some(b) = &analysis.badge {
            channels.push(("badge", b));
        }
        for (name, signal) in channels {
            let hypothesis = transcribe_plain(signal, vad_settings, transcriber, options)?;
            wer.insert(name.to_string(), word_error_rate(&text, &hypothesis).wer);
        }
        let max_chunk = 28 * SAMPLE_RATE as usize;
        let t = room::transcribe("scene", &analysis, max_chunk, transcriber, options)?;
        let hypothesis: Vec<&str> = t.segments.iter().map(|s| s.text.as_str()).collect();
        wer.insert(
            "front_end".to_string(),
            word_error_rate(&text, &hypothesis.join(" ")).wer,
        );
    }

    Ok(SceneScore {
        scene: if scene.truth.scene.is_empty() {
            scene.dir.display().to_string()
        } else {
            scene.truth.scene.clone()
        },
        snr_db: scene.truth.snr_db,
        badge: scene.recording.badge.is_some(),
        detector: analysis.detector.to_string(),
        audio_s,
        frontend_ms,
        realtime_factor: audio_s * 1000.0 / frontend_ms.max(1e-6),
        der: der.der(),
        missed_s: der.missed_s,
        false_alarm_s: der.false_alarm_s,
        confusion_s: der.confusion_s,
        attribution,
        speech,
        snr_mic_db: snr_mic,
        snr_gain_das_db: snr_gain_das,
        snr_gain_mvdr_db: snr_gain_mvdr,
        voices: analysis.voices,
        overlap_frames: analysis.overlap_frames,
        wer,
        turns: hypothesis
            .iter()
            .map(|t| (t.speaker.clone(), t.start, t.end))
            .collect(),
    })
}

/// Writes a 16 kHz mono signal as a 16-bit WAV file (for listening to the front end's output).
pub fn write_wav(path: &Path, signal: &[f32]) -> Result<(), SceneError> {
    let failed = |e: hound::Error| SceneError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: SAMPLE_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(path, spec).map_err(failed)?;
    for &v in signal {
        writer
            .write_sample((v.clamp(-1.0, 1.0) * f32::from(i16::MAX)) as i16)
            .map_err(failed)?;
    }
    writer.finalize().map_err(failed)
}

/// The front end's turns as diarization turns (seconds).
pub fn hypothesis_turns(analysis: &RoomAnalysis) -> Vec<Turn> {
    let rate = f64::from(SAMPLE_RATE);
    merge_turns(
        analysis
            .turns
            .iter()
            .map(|t| Turn::new(&t.voice.label(), t.start as f64 / rate, t.end as f64 / rate))
            .collect(),
    )
}

/// The plain pipeline on one signal: webrtc-vad regions, packed, transcribed.
fn transcribe_plain(
    signal: &[f32],
    settings: &VadSettings,
    transcriber: &mut dyn Transcriber,
    options: &TranscribeOptions,
) -> Result<String, SceneError> {
    let regions = vad::speech_regions(signal, settings);
    let max_chunk = settings.max_region.as_millis() as usize * SAMPLE_RATE as usize / 1000;
    let packed = vad::pack_regions(&regions, max_chunk);
    let t = crate::pipeline::transcribe_regions("scene", signal, &packed, transcriber, options)
        .map_err(RoomError::from)?;
    Ok(t.segments
        .iter()
        .map(|s| s.text.as_str())
        .collect::<Vec<_>>()
        .join(" "))
}

/// Scores per-frame speech decisions against the truth turns (10 ms frames, [`score_intervals`]).
pub fn score_speech(reference: &[Turn], speech: &[bool], duration_s: f64) -> VadScore {
    let frame_s = FRAME as f64 / f64::from(SAMPLE_RATE);
    let mut hypothesis: Vec<(f64, f64)> = Vec::new();
    for (f, &is_speech) in speech.iter().enumerate() {
        if !is_speech {
            continue;
        }
        let (start, end) = (f as f64 * frame_s, (f + 1) as f64 * frame_s);
        match hypothesis.last_mut() {
            Some(last) if (last.1 - start).abs() < 1e-9 => last.1 = end,
            _ => hypothesis.push((start, end)),
        }
    }
    let truth: Vec<(f64, f64)> = reference.iter().map(|t| (t.start, t.end)).collect();
    score_intervals(&truth, &hypothesis, duration_s)
}

/// SNR (dB) of a signal from the truth: power over the turns minus the noise power, against the
/// noise power where nobody has talked for 0.3 s.
pub fn segmental_snr(signal: &[f32], reference: &[Turn]) -> f64 {
    let rate = f64::from(SAMPLE_RATE);
    let n = signal.len();
    let mut in_turn = vec![false; n];
    let mut near_turn = vec![false; n];
    for t in reference {
        let a = ((t.start * rate) as usize).min(n);
        let b = ((t.end * rate) as usize).min(n);
        in_turn[a..b.max(a)].fill(true);
        let c = (((t.start - 0.3) * rate).max(0.0) as usize).min(n);
        let d = (((t.end + 0.3) * rate) as usize).min(n);
        near_turn[c..d.max(c)].fill(true);
    }
    let (mut speech, mut speech_n, mut noise, mut noise_n) = (0.0f64, 0usize, 0.0f64, 0usize);
    for i in 0..n {
        let p = f64::from(signal[i]) * f64::from(signal[i]);
        if in_turn[i] {
            speech += p;
            speech_n += 1;
        } else if !near_turn[i] {
            noise += p;
            noise_n += 1;
        }
    }
    if speech_n == 0 || noise_n == 0 || noise == 0.0 {
        return f64::NAN;
    }
    let noise_power = noise / noise_n as f64;
    let speech_power = (speech / speech_n as f64 - noise_power).max(noise_power * 1e-3);
    10.0 * (speech_power / noise_power).log10()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speech_score_counts_frames() {
        let reference = [Turn::new("a", 0.0, 1.0)];
        // 2 s of frames: speech flagged for the first ~1.5 s.
        let frames = (2.0 * 16_000.0 / FRAME as f64).ceil() as usize;
        let cut = (1.5 * 16_000.0 / FRAME as f64) as usize;
        let speech: Vec<bool> = (0..frames).map(|f| f < cut).collect();
        let s = score_speech(&reference, &speech, 2.0);
        assert!((s.recall - 1.0).abs() < 1e-9);
        assert!(s.precision > 0.6 && s.precision < 0.72, "{s:?}");
        assert!(
            s.false_alarm_rate > 0.4 && s.false_alarm_rate < 0.55,
            "{s:?}"
        );
    }

    #[test]
    fn segmental_snr_measures_a_known_mix() {
        // 1 s noise (amplitude 0.1), 1 s tone + noise, 1 s noise: SNR of a 0.5-amplitude
        // square wave over that noise is 10·log10(0.25 / 0.01) = 14 dB.
        let mut x = Vec::new();
        for i in 0..48_000 {
            let noise = if i % 2 == 0 { 0.1 } else { -0.1 };
            let tone = if (16_000..32_000).contains(&i) {
                if (i / 8) % 2 == 0 {
                    0.5
                } else {
                    -0.5
                }
            } else {
                0.0
            };
            x.push(noise + tone);
        }
        let snr = segmental_snr(&x, &[Turn::new("a", 1.0, 2.0)]);
        assert!((snr - 14.0).abs() < 0.5, "{snr}");
    }
}
