//! Installing a model from a local file, with the real workers and the real model files: a copy
//! of the installed SmolLM2 GGUF and of the Whisper tiny.en ggml file go in under new names,
//! pass their smoke tests and can then be configured; a wrong hash, a file that is no model and
//! a name that could escape the models directory are refused with nothing left behind.
//!
//! Needs the worker executables (`cargo build --release --workspace`, as scripts/test does, or
//! EDGE_SCRIBE_WORKER_DIR) and the fetched models (`$EDGE_SCRIBE_MODELS_DIR`, else `models/`).
//! Every install goes to a temporary models directory; the real one is only read.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use edge_scribe::config::Config;
use edge_scribe::draft::compose::compose_draft;
use edge_scribe::draft::template::TemplateSet;
use edge_scribe::draft::DraftSettings;
use edge_scribe::inference::{
    Drafter, TranscribeOptions, Transcriber, WorkerDrafter, WorkerTranscriber,
};
use edge_scribe::models::install::{
    install_local_model, list_installed, smoke_test, InstallError, InstallRequest, InstalledKind,
    ModelKind, Origin, SmokeFailure, ASR_FILE, LLM_FILE,
};
use edge_scribe::pipeline::sha256_file;
use edge_scribe::transcript::Transcript;

/// target/release/deps/<this test> → target/release/, where cargo puts the workers.
fn worker_dir() -> PathBuf {
    let dir = std::env::var_os("EDGE_SCRIBE_WORKER_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().expect("test executable path");
            exe.parent()
                .and_then(Path::parent)
                .expect("test executable lives in target/<profile>/deps")
                .to_path_buf()
        });
    for worker in ["edge-scribe-asr-worker", "edge-scribe-llm-worker"] {
        assert!(
            dir.join(worker).is_file(),
            "prerequisite missing: {} does not exist. Build it with \
             `cargo build --release --workspace` (scripts/test does), or set \
             EDGE_SCRIBE_WORKER_DIR",
            dir.join(worker).display()
        );
    }
    dir
}

fn installed_file(model: &str, file: &str) -> PathBuf {
    let path = common::models_dir().join(model).join(file);
    assert!(
        path.is_file(),
        "prerequisite missing: {} does not exist; run `edge-scribe models fetch` (scripts/test \
         does) or set EDGE_SCRIBE_MODELS_DIR",
        path.display()
    );
    path
}

fn config(models_dir: &Path) -> Config {
    let mut config = Config::defaults().unwrap();
    config.models_dir = models_dir.to_path_buf();
    config.workers.dir = Some(worker_dir());
    config
}

fn sha256(path: &Path) -> String {
    sha256_file(path).unwrap_or_else(|e| panic!("cannot hash {}: {e}", path.display()))
}

/// Everything in the models directory, hidden staging directories included.
fn entries(dir: &Path) -> Vec<String> {
    let Ok(read) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = read
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn request(name: &str, kind: ModelKind, source: &Path, sha256: &str) -> InstallRequest {
    InstallRequest {
        name: name.to_owned(),
        kind,
        source: source.to_path_buf(),
        sha256: sha256.to_owned(),
    }
}

/// Deterministic bytes that are no model of any kind.
fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[test]
fn a_copy_of_smollm2_installs_passes_its_smoke_test_and_drafts_under_its_new_name() {
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    let source = installed_file("smollm2-135m-instruct", "model.gguf");
    let sha = sha256(&source);
    let mut config = config(&models);

    let model = install_local_model(
        &config,
        &request("clinic-llm", ModelKind::Llm, &source, &sha),
    )
    .unwrap();
    assert_eq!(model.name, "clinic-llm");
    assert_eq!(model.kind, InstalledKind::Llm);
    assert_eq!(model.origin, Origin::Local);
    assert!(model.intact);
    assert_eq!(model.files.len(), 1);
    assert_eq!(model.files[0].path, LLM_FILE);
    assert_eq!(model.files[0].sha256.as_deref(), Some(sha.as_str()));
    assert_eq!(model.files[0].bytes, fs::metadata(&source).unwrap().len());
    let install_smoke = model.smoke.expect("the smoke test is recorded");
    eprintln!(
        "install smoke test, SmolLM2 135M: load {} ms, run {} ms",
        install_smoke.load_ms, install_smoke.run_ms
    );
    assert_eq!(entries(&models), ["clinic-llm"]);

    assert_eq!(
        list_installed(&models).unwrap(),
        std::slice::from_ref(&model)
    );

    let report = smoke_test(&config, ModelKind::Llm, "clinic-llm").unwrap();
    eprintln!(
        "smoke test of the installed SmolLM2 135M: load {} ms, run {} ms",
        report.load_ms, report.run_ms
    );

    // Installing the same file again is a no-op that answers with the installed model.
    let again = install_local_model(
        &config,
        &request("clinic-llm", ModelKind::Llm, &source, &sha),
    )
    .unwrap();
    assert_eq!(again, model);

    // Switched to it, drafting runs on it and records its hash.
    config.llm_model = "clinic-llm".into();
    let mut drafter = WorkerDrafter::new(&config).unwrap();
    assert_eq!(drafter.model_sha256(), sha);
    let dialogue = fs::read_to_string(
        common::repo_root().join("tests/fixtures/dialogues/knee-and-blood-pressure.txt"),
    )
    .unwrap();
    let transcript = Transcript::from_dialogue(&dialogue).unwrap();
    let templates = TemplateSet::builtin().unwrap();
    let draft = compose_draft(
        &transcript,
        templates.get("soap").unwrap(),
        Some(&mut drafter as &mut dyn Drafter),
        &DraftSettings::from(&config.llm),
    )
    .unwrap();
    assert_eq!(draft.model, "clinic-llm");
    let generation = draft.generation.expect("the LLM was asked");
    assert!(generation.generated_tokens > 0, "{generation:?}");
    assert!(draft.verifier.llm.proposed > 0, "{:?}", draft.verifier);
}

#[test]
fn a_wrong_sha256_is_refused_naming_both_hashes_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    let source = installed_file("smollm2-135m-instruct", "model.gguf");
    let actual = sha256(&source);
    let wrong = format!("{}0", &actual[..63]);
    let wrong = if wrong == actual {
        "0".repeat(64)
    } else {
        wrong
    };

    let err = install_local_model(
        &config(&models),
        &request("clinic-llm", ModelKind::Llm, &source, &wrong),
    )
    .unwrap_err();
    assert!(
        matches!(&err, InstallError::HashMismatch { expected, actual: got, .. }
            if *expected == wrong && *got == actual),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains(&wrong) && message.contains(&actual),
        "{message}"
    );
    assert!(entries(&models).is_empty(), "left {:?}", entries(&models));
}

#[test]
fn a_file_with_the_right_sha256_that_is_no_model_fails_its_smoke_test_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    let config = config(&models);

    let random = tmp.path().join("random.gguf");
    fs::write(&random, noise(1 << 20)).unwrap();
    // Right magic, wrong everything else: llama.cpp must refuse it too.
    let fake_gguf = tmp.path().join("fake.gguf");
    let mut bytes = b"GGUF".to_vec();
    bytes.extend(noise(1 << 16));
    fs::write(&fake_gguf, bytes).unwrap();

    let cases = [
        (ModelKind::Llm, &random, "not a GGUF file"),
        (
            ModelKind::Llm,
            &fake_gguf,
            "it is a GGUF file, but llama.cpp could not use it",
        ),
        (ModelKind::Asr, &random, "not a whisper.cpp ggml model"),
    ];
    for (kind, source, hint) in cases {
        let err = install_local_model(
            &config,
            &request("clinic-model", kind, source, &sha256(source)),
        )
        .unwrap_err();
        assert!(
            matches!(
                &err,
                InstallError::SmokeTest { kind: k, failure: SmokeFailure::LoadFailed { .. }, .. }
                    if *k == kind
            ),
            "{kind} {}: {err}",
            source.display()
        );
        let message = err.to_string();
        assert!(message.contains("failed to load the model"), "{message}");
        assert!(message.contains(hint), "{message}");
        assert!(entries(&models).is_empty(), "left {:?}", entries(&models));
    }
}

#[test]
fn a_copy_of_whisper_tiny_en_installs_and_transcribes_under_its_new_name() {
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    let source = installed_file("whisper-tiny.en", ASR_FILE);
    let sha = sha256(&source);
    let mut config = config(&models);

    let model = install_local_model(
        &config,
        &request("clinic-asr", ModelKind::Asr, &source, &sha),
    )
    .unwrap();
    assert_eq!(model.kind, InstalledKind::Asr);
    assert_eq!(model.origin, Origin::Local);
    assert_eq!(model.files[0].path, ASR_FILE);
    assert_eq!(model.files[0].sha256.as_deref(), Some(sha.as_str()));
    let install_smoke = model.smoke.expect("the smoke test is recorded");
    eprintln!(
        "install smoke test, whisper tiny.en: load {} ms, run {} ms",
        install_smoke.load_ms, install_smoke.run_ms
    );
    assert_eq!(entries(&models), ["clinic-asr"]);
    assert_eq!(list_installed(&models).unwrap(), [model]);

    let report = smoke_test(&config, ModelKind::Asr, "clinic-asr").unwrap();
    eprintln!(
        "smoke test of the installed whisper tiny.en: load {} ms, run {} ms",
        report.load_ms, report.run_ms
    );

    // An LLM smoke test of an ASR model finds no LLM there.
    let err = smoke_test(&config, ModelKind::Llm, "clinic-asr").unwrap_err();
    assert!(matches!(err, InstallError::NotInstalled { .. }), "{err}");

    config.asr_model = "clinic-asr".into();
    let mut transcriber = WorkerTranscriber::new(&config).unwrap();
    assert_eq!(transcriber.model_sha256(), sha);
    let audio =
        edge_scribe::audio::read_wav(&common::repo_root().join("samples/sample-encounter.wav"))
            .unwrap();
    let segments = transcriber
        .transcribe(
            &audio.samples[..16_000 * 6],
            &TranscribeOptions::from(&config.asr),
        )
        .unwrap();
    assert!(
        segments.iter().any(|s| !s.text.trim().is_empty()),
        "{segments:?}"
    );
}

#[test]
fn names_that_could_escape_the_models_directory_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    let source = tmp.path().join("m.gguf");
    fs::write(&source, b"GGUF").unwrap();
    let sha = sha256(&source);
    for name in ["../evil", "", "..", ".hidden", "a/b", "/etc/evil"] {
        let err = install_local_model(
            &config(&models),
            &request(name, ModelKind::Llm, &source, &sha),
        )
        .unwrap_err();
        assert!(
            matches!(err, InstallError::InvalidName { .. }),
            "{name:?}: {err}"
        );
        let err = smoke_test(&config(&models), ModelKind::Llm, name).unwrap_err();
        assert!(
            matches!(err, InstallError::InvalidName { .. }),
            "{name:?}: {err}"
        );
    }
    assert!(!models.exists(), "created {:?}", entries(&models));
    assert!(!tmp.path().join("evil").exists());
}
