//! Drafting: from a transcript to a SOAP note whose every statement cites the transcript
//! segments it rests on.
//!
//! The LLM is a helper whose output is never trusted: it writes under a GBNF grammar that only
//! admits the note's JSON shape and only the segment ids that exist, the result is parsed into
//! typed structs, and the [`verify`] step drops every statement its cited evidence does not
//! support. A section left with nothing is marked `insufficient_input`, never filled. This module
//! builds prompts and checks answers; it does no I/O and holds no model.

pub mod compose;
pub mod grammar;
pub mod template;
pub mod verify;

use serde::{Deserialize, Serialize};

use crate::inference::{ChatMessage, Drafter, GenerateRequest, InferenceError};
use crate::transcript::Transcript;

/// The note's sections, in order. A later issue makes templates data; the grammar and the
/// verifier already take the list as input.
pub const SOAP_SECTIONS: [&str; 4] = ["Subjective", "Objective", "Assessment", "Plan"];
pub const TEMPLATE_ID: &str = "soap-v1";
/// Bumped whenever the prompt or grammar changes, so each draft records what produced it.
pub const PROMPT_VERSION: &str = "soap-prompt-1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SectionStatus {
    Drafted,
    InsufficientInput,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    pub text: String,
    /// Ids of the transcript segments this statement rests on.
    pub evidence: Vec<String>,
    /// Where the statement came from: "llm" (checked by the verifier).
    pub origin: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Section {
    pub name: String,
    pub status: SectionStatus,
    pub statements: Vec<Statement>,
}

/// A statement the verifier dropped, and why, so the review screen can show what the model
/// tried to say. Part of the draft (patient data): never logged.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejection {
    pub section: String,
    pub text: String,
    pub evidence: Vec<String>,
    pub reason: String,
}

impl std::fmt::Debug for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rejection")
            .field("section", &self.section)
            .field("text_bytes", &self.text.len())
            .field("reason", &self.reason)
            .finish()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VerifierReport {
    pub proposed: u32,
    pub accepted: u32,
    pub rejected: Vec<Rejection>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationStats {
    pub prompt_tokens: u32,
    pub generated_tokens: u32,
    pub prompt_ms: u64,
    pub generation_ms: u64,
    /// How many generations it took to get output that parsed.
    pub attempts: u32,
}

/// What `draft.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Draft {
    pub template: String,
    pub prompt_version: String,
    pub model: String,
    pub sections: Vec<Section>,
    pub verifier: VerifierReport,
    /// Set when no usable model output could be had; every section is then flagged.
    pub warning: Option<String>,
    pub generation: Option<GenerationStats>,
}

#[derive(Debug, thiserror::Error)]
pub enum DraftError {
    #[error(transparent)]
    Inference(#[from] InferenceError),
    #[error("composition is not built yet")]
    NotImplemented,
}

/// The shape the model is made to write (and nothing else parses).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelNote {
    sections: Vec<ModelSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelSection {
    name: String,
    status: SectionStatus,
    statements: Vec<ModelStatement>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelStatement {
    text: String,
    evidence: Vec<String>,
}

const SYSTEM_PROMPT: &str = "You are a clinical scribe. Write a SOAP note of the visit from the \
transcript. Use only facts the transcript states; never add facts. Subjective: the patient's \
complaints, history, medications and allergies. Objective: vital signs and exam findings. \
Assessment: the clinician's diagnosis. Plan: tests, treatment and follow-up. Each statement is \
one short sentence and cites the ids of the transcript lines it comes from. If the transcript \
says nothing for a section, set its status to insufficient_input with no statements. Answer with \
JSON only.";

/// A made-up visit and its note, shown to the model once: small models follow an example far
/// better than a description. The verifier catches any of it copied into a real note.
const EXAMPLE_TRANSCRIPT: [&str; 6] = [
    "What brings you in today?",
    "I have had a sore throat for two days.",
    "Any fever?",
    "No, no fever.",
    "Your temperature is 98.6 and your throat is red.",
    "This looks like a viral sore throat. Drink fluids and come back if it gets worse.",
];
const EXAMPLE_NOTE: &str = r#"{"sections":[{"name":"Subjective","status":"drafted","statements":[{"text":"Sore throat for two days.","evidence":["s2"]},{"text":"No fever.","evidence":["s3","s4"]}]},{"name":"Objective","status":"drafted","statements":[{"text":"Temperature 98.6, throat red.","evidence":["s5"]}]},{"name":"Assessment","status":"drafted","statements":[{"text":"Viral sore throat.","evidence":["s6"]}]},{"name":"Plan","status":"drafted","statements":[{"text":"Drink fluids; come back if it gets worse.","evidence":["s6"]}]}]}"#;

fn transcript_prompt<'a>(lines: impl Iterator<Item = (String, &'a str, &'a str)>) -> String {
    let mut prompt = String::from("Transcript:\n");
    for (id, speaker, text) in lines {
        prompt.push_str(&format!("[{id}] {speaker}: {}\n", text.trim()));
    }
    prompt.push_str("\nWrite the SOAP note as JSON.");
    prompt
}

/// The chat sent to the model: instructions, one worked example, then the transcript as
/// numbered lines.
pub fn build_messages(transcript: &Transcript) -> Vec<ChatMessage> {
    let message = |role: &str, content: String| ChatMessage {
        role: role.into(),
        content,
    };
    let example = transcript_prompt(
        EXAMPLE_TRANSCRIPT
            .iter()
            .enumerate()
            .map(|(i, text)| (Transcript::segment_id(i), "unknown", *text)),
    );
    let visit = transcript_prompt(
        transcript
            .segments
            .iter()
            .map(|s| (s.id.clone(), s.speaker.as_str(), s.text.as_str())),
    );
    vec![
        message("system", SYSTEM_PROMPT.into()),
        message("user", example),
        message("assistant", EXAMPLE_NOTE.into()),
        message("user", visit),
    ]
}

/// Settings for one drafting run.
#[derive(Debug, Clone)]
pub struct DraftSettings {
    pub max_tokens: u32,
    pub temperature: f32,
    pub seed: u32,
    pub max_statements_per_section: u32,
}

/// Drafts a SOAP note. An empty transcript, or model output that never parses, gives a draft with
/// every section flagged `insufficient_input` rather than an error: the clinician still gets a
/// note to fill in, and nothing invented.
pub fn draft_note(
    drafter: &mut dyn Drafter,
    transcript: &Transcript,
    settings: &DraftSettings,
) -> Result<Draft, DraftError> {
    let model = drafter.model();
    if transcript.segments.is_empty() {
        return Ok(all_flagged(model, "the transcript is empty", None));
    }
    let ids: Vec<&str> = transcript.segments.iter().map(|s| s.id.as_str()).collect();
    let messages = build_messages(transcript);
    let mut stats = GenerationStats {
        prompt_tokens: 0,
        generated_tokens: 0,
        prompt_ms: 0,
        generation_ms: 0,
        attempts: 0,
    };
    // A second try with a tighter grammar (fewer, shorter statements) when the first output ran
    // out of tokens before closing its JSON.
    let plans = [
        (settings.max_statements_per_section, 160usize),
        (1, 100usize),
    ];
    for (max_statements, max_chars) in plans {
        let grammar = grammar::soap_grammar(&SOAP_SECTIONS, &ids, max_statements, max_chars);
        let generation = drafter.generate(&GenerateRequest {
            messages: messages.clone(),
            grammar: Some(grammar),
            max_tokens: settings.max_tokens,
            temperature: settings.temperature,
            seed: settings.seed,
        })?;
        stats.attempts += 1;
        stats.prompt_tokens = generation.prompt_tokens;
        stats.generated_tokens += generation.generated_tokens;
        stats.prompt_ms += generation.prompt_ms;
        stats.generation_ms += generation.generation_ms;
        match serde_json::from_str::<ModelNote>(&generation.text) {
            Ok(note) => {
                let mut draft = verify::verify_note(note_sections(note), transcript);
                draft.model = model;
                draft.generation = Some(stats);
                return Ok(draft);
            }
            Err(e) => {
                tracing::warn!(
                    attempt = stats.attempts,
                    generated_tokens = generation.generated_tokens,
                    line = e.line(),
                    column = e.column(),
                    "model output did not parse as a note"
                );
            }
        }
    }
    Ok(all_flagged(
        model,
        "the model did not produce a complete note; every section needs the clinician",
        Some(stats),
    ))
}

fn note_sections(note: ModelNote) -> Vec<Section> {
    note.sections
        .into_iter()
        .map(|section| Section {
            name: section.name,
            status: section.status,
            statements: section
                .statements
                .into_iter()
                .map(|s| Statement {
                    text: s.text,
                    evidence: s.evidence,
                    origin: "llm".into(),
                })
                .collect(),
        })
        .collect()
}

fn all_flagged(model: String, warning: &str, generation: Option<GenerationStats>) -> Draft {
    Draft {
        template: TEMPLATE_ID.into(),
        prompt_version: PROMPT_VERSION.into(),
        model,
        sections: SOAP_SECTIONS
            .iter()
            .map(|name| Section {
                name: (*name).into(),
                status: SectionStatus::InsufficientInput,
                statements: Vec::new(),
            })
            .collect(),
        verifier: VerifierReport::default(),
        warning: Some(warning.into()),
        generation,
    }
}

/// The note as a clinician reads it, with evidence ids in brackets.
pub fn render_text(draft: &Draft) -> String {
    let mut out = String::new();
    for section in &draft.sections {
        out.push_str(&section.name.to_uppercase());
        out.push('\n');
        match section.status {
            SectionStatus::InsufficientInput => {
                out.push_str("  [insufficient input: nothing in the visit supports this section]\n")
            }
            SectionStatus::Drafted => {
                for statement in &section.statements {
                    out.push_str(&format!(
                        "  - {} [{}]\n",
                        statement.text,
                        statement.evidence.join(", ")
                    ));
                }
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::Generation;
    use crate::transcript::{Segment, Speaker};

    struct Scripted {
        outputs: Vec<String>,
        requests: Vec<GenerateRequest>,
    }

    impl Drafter for Scripted {
        fn generate(&mut self, request: &GenerateRequest) -> Result<Generation, InferenceError> {
            self.requests.push(request.clone());
            let text = if self.outputs.is_empty() {
                String::new()
            } else {
                self.outputs.remove(0)
            };
            Ok(Generation {
                text,
                prompt_tokens: 10,
                generated_tokens: 5,
                prompt_ms: 1,
                generation_ms: 1,
            })
        }
        fn model(&self) -> String {
            "scripted".into()
        }
    }

    fn transcript() -> Transcript {
        let texts = [
            "What brings you in today?",
            "I have had a cough for three days.",
            "Your blood pressure is 120 over 80.",
            "Take ibuprofen 400 milligrams twice a day.",
        ];
        Transcript {
            segments: texts
                .iter()
                .enumerate()
                .map(|(i, t)| Segment {
                    id: Transcript::segment_id(i),
                    start: i as f64,
                    end: i as f64 + 1.0,
                    speaker: Speaker::Unknown,
                    text: (*t).into(),
                    confidence: 0.9,
                })
                .collect(),
        }
    }

    fn settings() -> DraftSettings {
        DraftSettings {
            max_tokens: 100,
            temperature: 0.0,
            seed: 1,
            max_statements_per_section: 3,
        }
    }

    #[test]
    fn the_prompt_numbers_every_segment_and_the_grammar_admits_only_their_ids() {
        let t = transcript();
        let mut drafter = Scripted {
            outputs: vec![],
            requests: vec![],
        };
        let _ = draft_note(&mut drafter, &t, &settings()).unwrap();
        let request = &drafter.requests[0];
        assert!(request.messages[3]
            .content
            .contains("[s2] unknown: I have had a cough"));
        // The worked example is valid under the same rules the model's answer is held to.
        assert!(serde_json::from_str::<ModelNote>(&request.messages[2].content).is_ok());
        let grammar = request.grammar.as_ref().unwrap();
        assert!(grammar.contains("\"\\\"s4\\\"\""), "{grammar}");
        assert!(!grammar.contains("\"\\\"s5\\\"\""));
    }

    #[test]
    fn unparseable_output_twice_flags_every_section_instead_of_failing() {
        let mut drafter = Scripted {
            outputs: vec!["{\"sections\":[".into(), "garbage".into()],
            requests: vec![],
        };
        let draft = draft_note(&mut drafter, &transcript(), &settings()).unwrap();
        assert_eq!(drafter.requests.len(), 2);
        assert!(draft.warning.is_some());
        assert!(draft
            .sections
            .iter()
            .all(|s| s.status == SectionStatus::InsufficientInput && s.statements.is_empty()));
        assert_eq!(draft.generation.unwrap().attempts, 2);
    }

    #[test]
    fn a_good_answer_is_verified_and_kept() {
        let output = r#"{"sections":[
            {"name":"Subjective","status":"drafted","statements":[{"text":"Cough for three days.","evidence":["s2"]}]},
            {"name":"Objective","status":"drafted","statements":[{"text":"Blood pressure 120/80.","evidence":["s3"]}]},
            {"name":"Assessment","status":"insufficient_input","statements":[]},
            {"name":"Plan","status":"drafted","statements":[{"text":"Ibuprofen 400 mg twice a day.","evidence":["s4"]}]}]}"#;
        let mut drafter = Scripted {
            outputs: vec![output.into()],
            requests: vec![],
        };
        let draft = draft_note(&mut drafter, &transcript(), &settings()).unwrap();
        assert_eq!(draft.verifier.proposed, 3);
        assert_eq!(draft.verifier.accepted, 3, "{:?}", draft.verifier);
        assert_eq!(draft.sections[2].status, SectionStatus::InsufficientInput);
        assert_eq!(draft.model, "scripted");
        let text = render_text(&draft);
        assert!(text.contains("- Cough for three days. [s2]"));
        assert!(text.contains("insufficient input"));
    }

    #[test]
    fn an_empty_transcript_is_never_sent_to_the_model() {
        let mut drafter = Scripted {
            outputs: vec![],
            requests: vec![],
        };
        let draft = draft_note(&mut drafter, &Transcript::default(), &settings()).unwrap();
        assert!(drafter.requests.is_empty());
        assert!(draft
            .sections
            .iter()
            .all(|s| s.status == SectionStatus::InsufficientInput));
    }
}
