//! What an encounter run hands back to people: its output files (written atomically) and the
//! readable summary on stdout. Shared by batch mode and the daemon's export; patient content
//! goes only to these explicitly requested outputs, never to logs.

use std::path::{Path, PathBuf};

use crate::draft;
use crate::pipeline::EncounterOutcome;
use crate::transcript::Transcript;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write {path}: {source} (check the output directory exists, is writable and the disk is not full)")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode the encounter's outputs: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Writes the encounter's files; each goes to a temp file first and is renamed into place, so a
/// crash never leaves a half-written output that looks complete.
pub fn write_outputs(dir: &Path, outcome: &EncounterOutcome) -> Result<(), ReportError> {
    let run = serde_json::json!({
        "encounter_id": outcome.encounter_id,
        "audio_duration_ms": outcome.audio_duration_ms,
        "speech_regions": outcome.speech_regions,
        "segments": outcome.transcript.segments.len(),
        "asr_model": outcome.asr_model,
        "llm_model": outcome.draft.model,
        "timings": outcome.timings,
        "generation": outcome.draft.generation,
        "facts": outcome.draft.facts.len(),
        "verifier": {
            "proposed": outcome.draft.verifier.proposed,
            "accepted": outcome.draft.verifier.accepted,
            "extraction": outcome.draft.verifier.extraction,
            "llm": outcome.draft.verifier.llm,
            "rejected": outcome.draft.verifier.rejected.len(),
        },
        "asr_worker_restarts": outcome.asr_worker_restarts,
        "llm_worker_restarts": outcome.llm_worker_restarts,
    });
    let files: [(&str, Vec<u8>); 4] = [
        (
            "transcript.json",
            serde_json::to_vec_pretty(&outcome.transcript)?,
        ),
        ("draft.json", serde_json::to_vec_pretty(&outcome.draft)?),
        ("note.txt", draft::render_text(&outcome.draft).into_bytes()),
        ("run.json", serde_json::to_vec_pretty(&run)?),
    ];
    write_files(dir, files)
}

/// The files of `edge-scribe draft`: the transcript drafted from, the draft and the note.
pub fn write_draft_outputs(
    dir: &Path,
    transcript: &Transcript,
    draft: &draft::Draft,
) -> Result<(), ReportError> {
    let files: [(&str, Vec<u8>); 3] = [
        ("transcript.json", serde_json::to_vec_pretty(transcript)?),
        ("draft.json", serde_json::to_vec_pretty(draft)?),
        ("note.txt", draft::render_text(draft).into_bytes()),
    ];
    write_files(dir, files)
}

/// Each file goes to a temp file in `dir` first and is renamed into place.
fn write_files<const N: usize>(dir: &Path, files: [(&str, Vec<u8>); N]) -> Result<(), ReportError> {
    let write_error = |path: PathBuf| move |source| ReportError::Write { path, source };
    std::fs::create_dir_all(dir).map_err(write_error(dir.to_path_buf()))?;
    for (name, bytes) in files {
        let path = dir.join(name);
        let mut file =
            tempfile::NamedTempFile::new_in(dir).map_err(write_error(dir.to_path_buf()))?;
        std::io::Write::write_all(&mut file, &bytes).map_err(write_error(path.clone()))?;
        file.persist(&path).map_err(|e| ReportError::Write {
            path: path.clone(),
            source: e.error,
        })?;
    }
    Ok(())
}

fn clock(seconds: f64) -> String {
    let total = seconds.max(0.0);
    format!("{:02}:{:04.1}", (total / 60.0) as u64, total % 60.0)
}

/// The readable summary on stdout: the clinician-facing output of a batch run.
pub fn print_summary(outcome: &EncounterOutcome) {
    println!(
        "== Transcript ({} segments) ==",
        outcome.transcript.segments.len()
    );
    for s in &outcome.transcript.segments {
        println!(
            "[{:>4} {}–{}] {}",
            s.id,
            clock(s.start),
            clock(s.end),
            s.text
        );
    }
    println!();
    println!("== Draft note ({}) ==", outcome.draft.model);
    if let Some(warning) = &outcome.draft.warning {
        println!("!! {warning}");
    }
    print!("{}", draft::render_text(&outcome.draft));
    let v = &outcome.draft.verifier;
    println!(
        "Verifier: {} statements proposed, {} accepted, {} rejected.",
        v.proposed,
        v.accepted,
        v.rejected.len()
    );
    for rejection in &v.rejected {
        println!(
            "  dropped from {}: \"{}\" [{}] — {}",
            rejection.section,
            rejection.text,
            rejection.evidence.join(", "),
            rejection.reason
        );
    }
    let t = &outcome.timings;
    let audio_s = outcome.audio_duration_ms as f64 / 1000.0;
    println!(
        "Timings: audio {:.1} s | VAD {} ms | ASR {} ms ({:.1}x real time) | draft {} ms | store {} ms | total {} ms",
        audio_s,
        t.vad_ms,
        t.asr_ms,
        audio_s * 1000.0 / t.asr_ms.max(1) as f64,
        t.draft_ms,
        t.store_ms,
        t.total_ms
    );
    if let Some(g) = &outcome.draft.generation {
        println!(
            "LLM: {} prompt tokens in {} ms, {} generated in {} ms ({} attempt(s))",
            g.prompt_tokens, g.prompt_ms, g.generated_tokens, g.generation_ms, g.attempts
        );
    }
}
