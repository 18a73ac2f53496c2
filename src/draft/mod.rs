//! Drafting: from a transcript to a note whose every statement cites the facts and transcript
//! segments it rests on.
//!
//! Quality comes from structure and checking, not from the model: [`crate::clinical`] extracts
//! the facts deterministically, [`compose`] lays them into the encounter's [`template`], an LLM
//! may rephrase and order them under a grammar that only admits the note's JSON and existing
//! fact ids, and [`verify`] drops every statement its cited evidence does not support. A required
//! section left with nothing is marked `insufficient_input`, never filled. No I/O here beyond
//! reading template files.

pub mod compose;
pub mod context;
pub mod grammar;
pub mod narrative;
pub mod template;
pub mod verify;

use serde::{Deserialize, Serialize};

use crate::clinical::Fact;
use crate::inference::InferenceError;

/// Bumped whenever the prompt or grammar changes, so each draft records what produced it.
pub const PROMPT_VERSION: &str = "facts-prompt-1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SectionStatus {
    Drafted,
    InsufficientInput,
}

/// Who wrote a statement's wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// The extractor's own wording of one fact.
    Extraction,
    /// The LLM's rephrasing of the facts it cites, checked by the verifier.
    Llm,
    /// The patient's own sentence, in third person, for the facts it holds.
    Narrative,
}

impl Origin {
    pub fn as_str(&self) -> &'static str {
        match self {
            Origin::Extraction => "extraction",
            Origin::Llm => "llm",
            Origin::Narrative => "narrative",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    pub text: String,
    /// Ids of the transcript segments this statement rests on.
    pub evidence: Vec<String>,
    /// Ids of the extracted facts it states.
    #[serde(default)]
    pub facts: Vec<String>,
    pub origin: Origin,
    /// What the verifier said: every statement in a draft passed it.
    #[serde(default)]
    pub verifier: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Section {
    pub name: String,
    pub status: SectionStatus,
    pub statements: Vec<Statement>,
}

/// A statement the verifier dropped, and why, so the review screen can show what was tried.
/// Part of the draft (patient data): never logged.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejection {
    pub section: String,
    pub text: String,
    pub evidence: Vec<String>,
    #[serde(default)]
    pub facts: Vec<String>,
    pub origin: Origin,
    pub reason: String,
}

impl std::fmt::Debug for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rejection")
            .field("section", &self.section)
            .field("text_bytes", &self.text.len())
            .field("origin", &self.origin)
            .field("reason", &self.reason)
            .finish()
    }
}

/// Counts per origin: how many statements were proposed and how many the verifier let in.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OriginCounts {
    pub proposed: u32,
    pub accepted: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VerifierReport {
    pub proposed: u32,
    pub accepted: u32,
    pub extraction: OriginCounts,
    pub llm: OriginCounts,
    pub rejected: Vec<Rejection>,
}

impl VerifierReport {
    fn count(&mut self, origin: Origin, accepted: bool) {
        self.proposed += 1;
        self.accepted += u32::from(accepted);
        let counts = match origin {
            Origin::Extraction | Origin::Narrative => &mut self.extraction,
            Origin::Llm => &mut self.llm,
        };
        counts.proposed += 1;
        counts.accepted += u32::from(accepted);
    }
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
    /// The LLM that rephrased the facts, or "none" for an extraction-only draft.
    pub model: String,
    pub sections: Vec<Section>,
    /// Everything the extractor found, with evidence spans, for the review screen.
    #[serde(default)]
    pub facts: Vec<Fact>,
    /// ICD-10-CM suggestions for the clinician to accept or reject, each with its evidence.
    #[serde(default)]
    pub codes: Vec<crate::coding::CodeSuggestion>,
    /// Documentation gaps found by the rules, each with the words that raised it.
    #[serde(default)]
    pub gaps: Vec<crate::gaps::Gap>,
    pub verifier: VerifierReport,
    /// Set when the model's output could not be used; the draft then holds extracted wording only.
    pub warning: Option<String>,
    pub generation: Option<GenerationStats>,
}

#[derive(Debug, thiserror::Error)]
pub enum DraftError {
    #[error(transparent)]
    Inference(#[from] InferenceError),
}

/// Settings for one drafting run.
#[derive(Debug, Clone)]
pub struct DraftSettings {
    pub max_tokens: u32,
    pub temperature: f32,
    pub seed: u32,
    pub max_statements_per_section: u32,
    /// Time after which no further section is sent to the model.
    pub time_budget: std::time::Duration,
}

impl From<&crate::config::LlmSettings> for DraftSettings {
    fn from(llm: &crate::config::LlmSettings) -> Self {
        DraftSettings {
            max_tokens: llm.max_tokens,
            temperature: llm.temperature,
            seed: llm.seed,
            max_statements_per_section: llm.max_statements_per_section,
            time_budget: llm.draft_time_budget,
        }
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
    if !draft.codes.is_empty() {
        out.push_str("SUGGESTED ICD-10-CM CODES (for review)\n");
        for code in &draft.codes {
            out.push_str(&format!(
                "  - {} {} [{}]\n",
                code.code,
                code.title,
                code.fact_ids.join(", ")
            ));
            for missing in &code.missing_specificity {
                out.push_str(&format!("      more specific code needs: {missing}\n"));
            }
        }
        out.push('\n');
    }
    if !draft.gaps.is_empty() {
        out.push_str("DOCUMENTATION GAPS\n");
        for gap in &draft.gaps {
            out.push_str(&format!("  - {}: {}\n", gap.title, gap.message));
        }
        out.push('\n');
    }
    out
}
