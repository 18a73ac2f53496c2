//! Silero VAD on tract-onnx against a simulated room: the installed model (`models fetch`
//! installs `silero-vad`) must find the speech of `tests/fixtures/rooms/two-voice-0db` (fan noise
//! at 0 dB SNR, RT60 0.4 s) and stay quiet on the fan before the first turn.
//!
//! Measured when written (default `SpeechSettings`): mic 0 F1 0.955, false alarms 3.8 %;
//! channel mean F1 0.958, false alarms 3.1 %; webrtc-vad with the default `VadSettings` F1 0.83
//! with every non-speech frame a false alarm. The tract output matched onnxruntime on the
//! unmodified graph to 2e-6 per frame, so a mis-rewritten graph (8 kHz branch, context missing,
//! state dropped) lands far outside these bounds.

use std::path::{Path, PathBuf};

use edge_scribe::eval::vad::score_intervals;
use edge_scribe::frontend::silero::{speech_intervals, SileroError, SileroVad, SpeechSettings};

const MODEL_NAME: &str = "silero-vad";
const MODEL_FILE: &str = "silero_vad.onnx";
const SCENE: &str = "tests/fixtures/rooms/two-voice-0db";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn model_path() -> PathBuf {
    let models = std::env::var_os("EDGE_SCRIBE_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("models"));
    let path = models.join(MODEL_NAME).join(MODEL_FILE);
    assert!(
        path.is_file(),
        "prerequisite missing: {}. Install it with scripts/test or `edge-scribe models fetch \
         --models-dir {}` (set EDGE_SCRIBE_MODELS_DIR to use another models directory)",
        path.display(),
        models.display()
    );
    path
}

/// All channels of a 16-bit 16 kHz WAV as f32 in [-1, 1], one Vec per channel.
fn read_channels(path: &Path) -> Vec<Vec<f32>> {
    let mut reader = hound::WavReader::open(path).unwrap();
    let spec = reader.spec();
    assert_eq!(spec.sample_rate, 16_000);
    assert_eq!(spec.bits_per_sample, 16);
    let channels = spec.channels as usize;
    let all: Vec<f32> = reader
        .samples::<i16>()
        .map(|s| f32::from(s.unwrap()) / 32768.0)
        .collect();
    (0..channels)
        .map(|ch| all.iter().skip(ch).step_by(channels).copied().collect())
        .collect()
}

fn truth_turns(dir: &Path) -> Vec<(f64, f64)> {
    let text = std::fs::read_to_string(dir.join("truth.json")).unwrap();
    let truth: serde_json::Value = serde_json::from_str(&text).unwrap();
    truth["turns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["start"].as_f64().unwrap(), t["end"].as_f64().unwrap()))
        .collect()
}

fn to_seconds(intervals: &[(usize, usize)]) -> Vec<(f64, f64)> {
    intervals
        .iter()
        .map(|&(s, e)| (s as f64 / 16_000.0, e as f64 / 16_000.0))
        .collect()
}

struct Scene {
    mic0: Vec<f32>,
    mean: Vec<f32>,
    turns: Vec<(f64, f64)>,
    duration_s: f64,
}

fn scene() -> Scene {
    let dir = repo().join(SCENE);
    let channels = read_channels(&dir.join("array.wav"));
    let n = channels[0].len();
    let mean = (0..n)
        .map(|i| channels.iter().map(|c| c[i]).sum::<f32>() / channels.len() as f32)
        .collect();
    Scene {
        mic0: channels[0].clone(),
        mean,
        turns: truth_turns(&dir),
        duration_s: n as f64 / 16_000.0,
    }
}

#[test]
fn speech_is_high_and_fan_only_audio_low() {
    let mut vad = SileroVad::load(&model_path()).unwrap();
    let scene = scene();
    let probs = vad.probabilities(&scene.mic0).unwrap();
    assert_eq!(probs.len(), scene.mic0.len().div_ceil(SileroVad::FRAME));

    let frame_s = SileroVad::FRAME as f64 / 16_000.0;
    let first_turn = scene.turns.iter().map(|t| t.0).fold(f64::MAX, f64::min);
    // Fan only: every frame that ends before the first turn begins.
    let fan: Vec<f32> = probs
        .iter()
        .enumerate()
        .filter(|(i, _)| (*i as f64 + 1.0) * frame_s <= first_turn)
        .map(|(_, &p)| p)
        .collect();
    assert!(fan.len() >= 30, "{} fan-only frames", fan.len());
    let fan_max = fan.iter().copied().fold(0.0f32, f32::max);
    assert!(fan_max < 0.2, "fan-only frames reach {fan_max}");

    // Frames well inside a turn (150 ms from either edge) are speech nearly everywhere;
    // espeak's short breaks inside a sentence are why this is a median, not a minimum.
    let mut inside: Vec<f32> = probs
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            let (s, e) = (*i as f64 * frame_s, (*i as f64 + 1.0) * frame_s);
            scene
                .turns
                .iter()
                .any(|t| s >= t.0 + 0.15 && e <= t.1 - 0.15)
        })
        .map(|(_, &p)| p)
        .collect();
    inside.sort_by(f32::total_cmp);
    let median = inside[inside.len() / 2];
    let high = inside.iter().filter(|&&p| p >= 0.6).count() as f64 / inside.len() as f64;
    assert!(median > 0.9, "median speech probability {median}");
    assert!(high > 0.85, "only {high:.2} of speech frames reach 0.6");
}

#[test]
fn zero_db_scene_meets_the_target_on_mic0_and_the_channel_mean() {
    let mut vad = SileroVad::load(&model_path()).unwrap();
    let scene = scene();
    let settings = SpeechSettings::default();
    for (name, signal) in [("mic 0", &scene.mic0), ("channel mean", &scene.mean)] {
        let probs = vad.probabilities(signal).unwrap();
        let hypothesis = to_seconds(&speech_intervals(&probs, &settings));
        let score = score_intervals(&scene.turns, &hypothesis, scene.duration_s);
        assert!(
            score.f1 >= 0.95 && score.false_alarm_rate < 0.05,
            "{name}: {score:?}"
        );
    }
}

#[test]
fn state_carries_across_frames_and_reset_clears_it() {
    let mut vad = SileroVad::load(&model_path()).unwrap();
    let scene = scene();
    let whole = vad.probabilities(&scene.mic0).unwrap();
    // Frame by frame after a reset gives exactly what `probabilities` gave.
    vad.reset();
    for (i, chunk) in scene
        .mic0
        .chunks_exact(SileroVad::FRAME)
        .take(80)
        .enumerate()
    {
        let p = vad.frame_probability(chunk).unwrap();
        assert!(
            (p - whole[i]).abs() < 1e-6,
            "frame {i}: {p} vs {}",
            whole[i]
        );
    }
    // Without the reset the same frame is judged with other history.
    let speech_frame = &scene.mic0[60 * SileroVad::FRAME..61 * SileroVad::FRAME];
    let after_history = vad.frame_probability(speech_frame).unwrap();
    vad.reset();
    let fresh = vad.frame_probability(speech_frame).unwrap();
    assert!((after_history - fresh).abs() > 1e-3);

    assert!(matches!(
        vad.frame_probability(&[0.0; 100]),
        Err(SileroError::FrameLength {
            expected: 512,
            got: 100
        })
    ));
}

#[test]
fn gate_skips_silence_and_keeps_the_speech() {
    let mut vad = SileroVad::load(&model_path()).unwrap();
    let scene = scene();
    // Five seconds of digital silence in front: webrtc-vad hears nothing there, so Silero must
    // not run on most of it, and the scene after it must score as without the gate.
    let lead = 5 * 16_000;
    let mut signal = vec![0.0f32; lead];
    signal.extend_from_slice(&scene.mic0);
    let (gated, ran) = vad.gated_probabilities(&signal).unwrap();
    let frames = signal.len().div_ceil(SileroVad::FRAME);
    assert_eq!(gated.len(), frames);
    let silent_frames = lead / SileroVad::FRAME;
    assert!(
        ran < frames - silent_frames / 2,
        "Silero ran on {ran} of {frames} frames"
    );
    assert!(gated[..silent_frames - 20].iter().all(|&p| p == 0.0));

    let shifted: Vec<(f64, f64)> = scene.turns.iter().map(|t| (t.0 + 5.0, t.1 + 5.0)).collect();
    let hypothesis = to_seconds(&speech_intervals(&gated, &SpeechSettings::default()));
    let score = score_intervals(&shifted, &hypothesis, signal.len() as f64 / 16_000.0);
    assert!(score.f1 >= 0.93, "{score:?}");
}

#[test]
fn a_missing_or_foreign_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing-here.onnx");
    let err = SileroVad::load(&missing).unwrap_err();
    assert!(matches!(err, SileroError::Read { .. }), "{err:?}");
    assert!(err.to_string().contains("nothing-here.onnx"), "{err}");

    let text = dir.path().join("notes.onnx");
    std::fs::write(&text, "this is a text file, not a model\n").unwrap();
    let err = SileroVad::load(&text).unwrap_err();
    assert!(matches!(err, SileroError::NotOnnx { .. }), "{err:?}");
    assert!(err.to_string().contains("not an ONNX model"), "{err}");

    let empty = dir.path().join("empty.onnx");
    std::fs::write(&empty, b"").unwrap();
    let err = SileroVad::load(&empty).unwrap_err();
    assert!(matches!(err, SileroError::NotOnnx { .. }), "{err:?}");
}
