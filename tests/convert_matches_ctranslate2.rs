//! The converter's proof: Whisper tiny.en converted from CTranslate2 to ggml and run by the real
//! ASR worker (whisper.cpp) must hear, word for word, what CTranslate2 hears on the original
//! weights, with the same decoding settings (greedy, temperature 0, no previous-text
//! conditioning). whisper.cpp checks only sizes when it loads, so a wrong dtype, a swapped slice
//! or a bad mel filterbank would load silently and show up here as different words.
//!
//! Prerequisites, all installed by `scripts/test` (each missing one fails this test, naming the
//! script that installs it): the CTranslate2 model in `$EDGE_SCRIBE_MODELS_DIR/whisper-tiny.en/`
//! (`edge-scribe models fetch`), the reference venv (`scripts/lib/ref-venv.sh`), the worker
//! binary (`cargo build --release --workspace`), and espeak-ng + sox for the fixtures.

use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use edge_scribe::models::convert::convert_ct2_to_ggml;
use edge_scribe_protocol::{read_frame, samples_to_payload, write_frame, Request, Response};

const MODEL_NAME: &str = "whisper-tiny.en";
const THREADS: &str = "2";
/// Long enough for tiny.en on two busy cores; a hung worker must fail the test, not stall CI.
const WORKER_TIMEOUT: Duration = Duration::from_secs(300);

/// Clinical sentences spoken by espeak-ng. Each was checked to be decided with a clear margin:
/// on identical features the two engines' logits differ by about 0.005 on average (whisper.cpp
/// multiplies in f16), so a word whose top two candidates are closer than that can legitimately
/// go either way. The closest call on these greedy paths is 0.12 (in "Lizzy Hopril", tiny.en's
/// hearing of lisinopril); sentences with near-ties (e.g. "shortness of/and breath", 0.02) were
/// left out because they would test rounding, not the conversion.
const FIXTURES: &[&str] = &[
    "The patient reports chest pain for three days and takes lisinopril ten milligrams daily.",
    "We will order a chest x-ray and a complete blood count today.",
    "I would like you to stop smoking and walk for thirty minutes every day.",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn cache_dir() -> PathBuf {
    match std::env::var_os("EDGE_SCRIBE_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME is not set"))
            .join(".cache/edge-scribe"),
    }
}

fn model_dir() -> PathBuf {
    let models = std::env::var_os("EDGE_SCRIBE_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("models"));
    let dir = models.join(MODEL_NAME);
    for file in [
        "model.bin",
        "config.json",
        "tokenizer.json",
        "vocabulary.txt",
    ] {
        assert!(
            dir.join(file).is_file(),
            "prerequisite missing: {} has no {file}. Install the CTranslate2 model with \
             scripts/test, or `target/release/edge-scribe models fetch --models-dir {}` \
             (set EDGE_SCRIBE_MODELS_DIR to use another models directory)",
            dir.display(),
            models.display()
        );
    }
    dir
}

fn reference_python() -> PathBuf {
    let python = std::env::var_os("EDGE_SCRIBE_REF_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("venv-ref/bin/python"));
    assert!(
        python.is_file(),
        "prerequisite missing: the reference Python {} does not exist. Create the venv with \
         scripts/lib/ref-venv.sh (scripts/test runs it), or point EDGE_SCRIBE_REF_PYTHON at a \
         Python that has faster-whisper",
        python.display()
    );
    python
}

fn worker_binary() -> PathBuf {
    let dir = std::env::var_os("EDGE_SCRIBE_WORKER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // target/release/deps/<this test> -> target/release/
            let exe = std::env::current_exe().expect("test executable path");
            exe.parent()
                .and_then(Path::parent)
                .expect("test executable lives in target/<profile>/deps")
                .to_path_buf()
        });
    let worker = dir.join("edge-scribe-asr-worker");
    assert!(
        worker.is_file(),
        "prerequisite missing: {} does not exist. Build it with \
         `cargo build --release --workspace` (scripts/test does), or set EDGE_SCRIBE_WORKER_DIR",
        worker.display()
    );
    worker
}

fn run(command: &mut Command, what: &str) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}; scripts/test installs it"));
    assert!(
        output.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Speaks `text` with espeak-ng and resamples it to 16 kHz mono 16-bit PCM with sox.
fn make_fixture(dir: &Path, index: usize, text: &str) -> PathBuf {
    let raw = dir.join(format!("fixture-{index}-22k.wav"));
    let wav = dir.join(format!("fixture-{index}.wav"));
    run(
        Command::new("espeak-ng")
            .args(["-v", "en-us", "-s", "150", "-w"])
            .arg(&raw)
            .arg(text),
        "espeak-ng",
    );
    run(
        Command::new("sox")
            .arg(&raw)
            .args(["-r", "16000", "-c", "1", "-b", "16"])
            .arg(&wav),
        "sox",
    );
    wav
}

/// 16-bit samples scaled exactly as the reference script scales them.
fn read_samples(wav: &Path) -> Vec<f32> {
    let mut reader = hound::WavReader::open(wav).expect("fixture WAV");
    let spec = reader.spec();
    assert_eq!(
        (spec.sample_rate, spec.channels, spec.bits_per_sample),
        (16_000, 1, 16)
    );
    reader
        .samples::<i16>()
        .map(|s| f32::from(s.expect("fixture sample")) / 32768.0)
        .collect()
}

/// Lower-case words with punctuation removed: the comparison is about what was heard, not how
/// it was punctuated.
fn normalize(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric() || *c == '\'')
                .flat_map(char::to_lowercase)
                .collect::<String>()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

struct WorkerRun {
    texts: Vec<String>,
    elapsed_ms: Vec<u64>,
}

fn transcribe_with_worker(ggml: &Path, wavs: &[PathBuf]) -> WorkerRun {
    let mut child = Command::new(worker_binary())
        .arg("--model")
        .arg(ggml)
        .args(["--threads", THREADS])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the ASR worker");
    let mut stdin = BufWriter::new(child.stdin.take().expect("worker stdin"));
    let mut stdout = BufReader::new(child.stdout.take().expect("worker stdout"));

    // Frames are read on a thread so that a hung worker fails the test after a timeout.
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || loop {
        let frame = read_frame::<_, Response>(&mut stdout);
        let done = !matches!(frame, Ok(Some(_)));
        if tx.send(frame.map(|f| f.map(|f| f.message))).is_err() || done {
            break;
        }
    });
    let next = || -> Response {
        rx.recv_timeout(WORKER_TIMEOUT)
            .expect("the worker did not answer in time")
            .expect("the worker's frame is readable")
            .expect("the worker closed stdout early")
    };

    match next() {
        Response::Ready {
            protocol_version,
            model,
            ..
        } => {
            assert_eq!(protocol_version, edge_scribe_protocol::PROTOCOL_VERSION);
            assert_eq!(
                model, "ggml-tiny.en.bin",
                "Ready names the file, not its path"
            );
        }
        other => panic!("expected Ready, got {other:?}"),
    }

    let mut run = WorkerRun {
        texts: Vec::new(),
        elapsed_ms: Vec::new(),
    };
    for (i, wav) in wavs.iter().enumerate() {
        let id = 100 + i as u64;
        let request = Request::Transcribe {
            id,
            language: Some("en".into()),
            initial_prompt: None,
            beam_size: 1,
        };
        write_frame(
            &mut stdin,
            &request,
            &samples_to_payload(&read_samples(wav)),
        )
        .expect("send a request to the worker");
        match next() {
            Response::Transcription {
                id: got,
                segments,
                elapsed_ms,
            } => {
                assert_eq!(got, id);
                assert!(!segments.is_empty(), "no speech found in fixture {i}");
                for s in &segments {
                    assert!(s.start_ms <= s.end_ms, "segment times out of order: {s:?}");
                    assert!((0.0..=1.0).contains(&s.confidence), "confidence: {s:?}");
                }
                let text: Vec<&str> = segments.iter().map(|s| s.text.as_str()).collect();
                run.texts.push(text.join(" "));
                run.elapsed_ms.push(elapsed_ms);
            }
            other => panic!("expected a transcription for fixture {i}, got {other:?}"),
        }
    }

    write_frame(&mut stdin, &Request::Shutdown, &[]).expect("send Shutdown");
    drop(stdin);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll the worker") {
            break status;
        }
        if started.elapsed() > WORKER_TIMEOUT {
            let _ = child.kill();
            panic!("the worker did not exit after Shutdown");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "worker exited with {status}");
    reader.join().expect("frame reader thread");
    run
}

fn transcribe_with_ctranslate2(model_dir: &Path, wav: &Path) -> (String, f64) {
    let output = Command::new(reference_python())
        .arg(repo().join("scripts/reference/ct2_transcribe.py"))
        .arg(model_dir)
        .arg(wav)
        .args(["--threads", THREADS])
        .output()
        .expect("run the reference transcriber");
    assert!(
        output.status.success(),
        "the reference transcriber failed (recreate its venv with scripts/lib/ref-venv.sh): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("the reference prints JSON");
    let text = json["text"].as_str().expect("reference text").to_owned();
    let elapsed = json["elapsed_s"].as_f64().unwrap_or(f64::NAN);
    (text, elapsed)
}

#[test]
fn converted_tiny_en_transcribes_word_for_word_like_ctranslate2() {
    // Check every prerequisite first, so a missing one is reported before minutes of work.
    let model_dir = model_dir();
    let _ = reference_python();
    let _ = worker_binary();

    let tmp = tempfile::tempdir().expect("temp dir");
    let wavs: Vec<PathBuf> = FIXTURES
        .iter()
        .enumerate()
        .map(|(i, text)| make_fixture(tmp.path(), i, text))
        .collect();

    let ggml = tmp.path().join("ggml-tiny.en.bin");
    let started = Instant::now();
    let report = convert_ct2_to_ggml(&model_dir, &ggml).expect("conversion");
    eprintln!("converted in {:?}: {report:?}", started.elapsed());
    assert_eq!(report.n_vocab, 51864);
    assert_eq!((report.n_audio_layer, report.n_text_layer), (4, 4));
    assert_eq!((report.n_audio_state, report.n_text_state), (384, 384));
    assert_eq!((report.n_audio_head, report.n_text_head), (6, 6));
    assert!(!report.multilingual);
    assert_eq!(report.n_tensors, 167);

    let worker = transcribe_with_worker(&ggml, &wavs);

    let mut mismatches = Vec::new();
    for (i, wav) in wavs.iter().enumerate() {
        let (reference, reference_s) = transcribe_with_ctranslate2(&model_dir, wav);
        let ours = &worker.texts[i];
        eprintln!(
            "fixture {i}\n  whisper.cpp ({} ms): {ours}\n  CTranslate2 ({reference_s:.3} s): {reference}",
            worker.elapsed_ms[i]
        );
        if normalize(ours) != normalize(&reference) {
            mismatches.push(format!(
                "fixture {i}:\n  whisper.cpp: {ours}\n  CTranslate2: {reference}"
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "the converted model does not hear what CTranslate2 hears:\n{}",
        mismatches.join("\n")
    );
}

#[test]
fn normalization_ignores_only_case_and_punctuation() {
    assert_eq!(
        normalize("Lissie Hopril, 10 milligrams daily."),
        ["lissie", "hopril", "10", "milligrams", "daily"]
    );
    assert_ne!(normalize("ten"), normalize("10"));
}
