//! `edge-scribe draft` end to end with the real binary: a dialogue becomes a verified note with
//! facts, codes and gaps; the encounter type picks the template; bad input is refused with a
//! reason that names the file and never its words; with the real LLM worker every statement
//! still passes the verifier.

mod common;

use std::process::Command;
use std::time::Duration;

fn fixture() -> std::path::PathBuf {
    common::repo_root().join("tests/fixtures/dialogues/knee-and-blood-pressure.txt")
}

fn draft(args: &[&str], out: &std::path::Path, input: &std::path::Path) -> common::Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edge-scribe"));
    cmd.arg("draft")
        .arg(input)
        .arg("--out")
        .arg(out)
        .arg("--config")
        .arg(common::repo_root().join("config/edge-scribe.toml"))
        .arg("--models-dir")
        .arg(common::models_dir())
        .args(args);
    common::run_logged(
        cmd,
        out.parent().unwrap(),
        "draft",
        Duration::from_secs(180),
    )
}

fn read_json(path: std::path::PathBuf) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn statements(draft: &serde_json::Value) -> Vec<(String, String, String)> {
    draft["sections"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|section| {
            let name = section["name"].as_str().unwrap().to_string();
            section["statements"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |s| {
                    (
                        name.clone(),
                        s["text"].as_str().unwrap().to_string(),
                        s["origin"].as_str().unwrap().to_string(),
                    )
                })
        })
        .collect()
}

#[test]
fn a_dialogue_becomes_a_verified_note_with_facts_codes_and_gaps() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let run = draft(&["--no-llm"], &out, &fixture());
    assert!(run.status.success(), "{}", run.stderr_tail());
    let draft = read_json(out.join("draft.json"));
    assert_eq!(draft["template"], "soap");
    assert_eq!(draft["model"], "none");
    let said = statements(&draft);
    let in_section = |name: &str, needle: &str| {
        said.iter()
            .any(|(section, text, _)| section == name && text.contains(needle))
    };
    assert!(in_section("Objective", "152/94"), "{said:?}");
    assert!(in_section("Objective", "78"), "{said:?}");
    assert!(in_section("Subjective", "Ibuprofen 400 mg"), "{said:?}");
    assert!(in_section("Plan", "Lisinopril 10 mg"), "{said:?}");
    let facts = draft["facts"].as_array().unwrap();
    let allergy = facts
        .iter()
        .find(|f| f["kind"] == "allergy")
        .expect("the penicillin allergy");
    assert_eq!(allergy["detail"]["substance"], "penicillin");
    assert!(
        facts
            .iter()
            .any(|f| f["kind"] == "pertinent_negative"
                && f["text"].as_str().unwrap().contains("ever"))
    );
    // Every statement cites evidence that exists in the transcript.
    let transcript = read_json(out.join("transcript.json"));
    let ids: Vec<&str> = transcript["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    for section in draft["sections"].as_array().unwrap() {
        for statement in section["statements"].as_array().unwrap() {
            for id in statement["evidence"].as_array().unwrap() {
                assert!(ids.contains(&id.as_str().unwrap()), "{statement}");
            }
        }
    }
    let codes: Vec<&str> = draft["codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["code"].as_str().unwrap())
        .collect();
    assert!(
        codes.iter().any(|c| c.starts_with("M17")),
        "osteoarthritis of the knee: {codes:?}"
    );
    let note = std::fs::read_to_string(out.join("note.txt")).unwrap();
    assert!(note.contains("SUGGESTED ICD-10-CM CODES"), "{note}");
}

#[test]
fn the_encounter_type_picks_the_template() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let run = draft(
        &["--no-llm", "--encounter-type", "follow-up"],
        &out,
        &fixture(),
    );
    assert!(run.status.success(), "{}", run.stderr_tail());
    let draft = read_json(out.join("draft.json"));
    assert_eq!(draft["template"], "follow-up");
    assert_eq!(draft["sections"][0]["name"], "Interval History");
}

#[test]
fn bad_input_is_refused_naming_the_file_and_never_its_words() {
    let work = tempfile::tempdir().unwrap();
    let cases = [
        ("no-tags.txt", "my knee hurts since tuesday\n[doctor] ok"),
        (
            "broken.json",
            "{\"segments\": [{\"id\": \"s1\", \"text\": \"my knee hurts since tuesday\"",
        ),
        ("empty.txt", "   \n"),
    ];
    for (name, body) in cases {
        let input = work.path().join(name);
        std::fs::write(&input, body).unwrap();
        let out = work.path().join(format!("out-{name}"));
        let run = draft(&["--no-llm"], &out, &input);
        assert!(!run.status.success(), "{name} was accepted");
        let stderr = run.stderr_tail();
        assert!(stderr.contains(name), "{name}: {stderr}");
        assert!(
            !stderr.contains("tuesday"),
            "{name} leaked its words: {stderr}"
        );
        assert!(!out.join("draft.json").exists(), "{name} left a draft");
    }
}

#[test]
fn with_the_real_llm_every_statement_still_passes_the_verifier() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let run = draft(&[], &out, &fixture());
    assert!(run.status.success(), "{}", run.stderr_tail());
    let draft = read_json(out.join("draft.json"));
    assert_eq!(draft["model"], "smollm2-135m-instruct");
    assert!(
        draft["generation"]["attempts"].as_u64().unwrap() >= 1,
        "{}",
        draft["generation"]
    );
    let verifier = &draft["verifier"];
    assert_eq!(
        verifier["accepted"].as_u64().unwrap()
            + verifier["rejected"].as_array().unwrap().len() as u64,
        verifier["proposed"].as_u64().unwrap()
    );
    for (_, text, origin) in statements(&draft) {
        assert!(
            ["extraction", "narrative", "llm"].contains(&origin.as_str()),
            "{origin}"
        );
        assert!(
            !text.contains("Sore throat"),
            "the prompt's example leaked: {text}"
        );
    }
    // The numbers of the visit survive whoever words them.
    let note = std::fs::read_to_string(out.join("note.txt")).unwrap();
    assert!(note.contains("152/94"), "{note}");
}
