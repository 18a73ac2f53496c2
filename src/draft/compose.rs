//! Composition: the note is built from extracted facts into the template's sections.
//!
//! Every fact first gets the extractor's own wording. With a drafter, the LLM is shown the facts
//! (never the raw transcript) grouped by section and may rephrase and merge them, each sentence
//! citing the fact ids it uses; a sentence the verifier accepts replaces the extracted wording of
//! the facts it cites, and every fact no accepted sentence covers keeps its extracted wording. A
//! bigger model therefore writes better prose without being able to add anything.

use std::collections::{HashMap, HashSet};

use serde::Deserialize;

use super::grammar::{note_grammar, GrammarSection};
use super::narrative;
use super::template::{Template, TemplateSection};
use super::verify::{check_statement, Support};
use super::{
    Draft, DraftError, DraftSettings, GenerationStats, Origin, Rejection, Section, SectionStatus,
    Statement, VerifierReport, PROMPT_VERSION,
};
use crate::clinical::{self, Fact};
use crate::inference::{ChatMessage, Drafter, GenerateRequest};
use crate::transcript::Transcript;

/// The longest sentence the model may write, in characters.
const MAX_SENTENCE_CHARS: usize = 200;

/// Drafts a note for `transcript` in `template`. Without a drafter the note is the extracted
/// wording alone.
pub fn compose_draft(
    transcript: &Transcript,
    template: &Template,
    drafter: Option<&mut dyn Drafter>,
    settings: &DraftSettings,
) -> Result<Draft, DraftError> {
    let facts = clinical::extract(transcript);
    compose_from_facts(transcript, facts, template, drafter, settings)
}

/// A fact placed in the note: its section and its extracted statement, if that passed.
struct Placed<'a> {
    fact: &'a Fact,
    order: usize,
}

/// [`compose_draft`] after extraction; split out so tests can hand in facts.
pub fn compose_from_facts(
    transcript: &Transcript,
    facts: Vec<Fact>,
    template: &Template,
    drafter: Option<&mut dyn Drafter>,
    settings: &DraftSettings,
) -> Result<Draft, DraftError> {
    let mut report = VerifierReport::default();
    let drug_names = |text: &str| clinical::drug_names_in(text);

    // Each section's facts, in the order the template lists kinds, then by first evidence. Only
    // facts whose extracted wording passes the verifier take part: the LLM never sees the rest.
    let mut placed: Vec<Vec<Placed<'_>>> = Vec::with_capacity(template.sections.len());
    for section in &template.sections {
        let mut in_section = Vec::new();
        for (kind_rank, kind) in section.facts.iter().enumerate() {
            for (fact_rank, fact) in facts.iter().enumerate().filter(|(_, f)| f.kind == *kind) {
                let verdict = Support::gather(&[fact], &[], transcript, false)
                    .and_then(|support| check_statement(&fact.text, &support, &drug_names));
                report.count(Origin::Extraction, verdict.is_ok());
                match verdict {
                    Ok(()) => in_section.push(Placed {
                        fact,
                        order: kind_rank * facts.len() + fact_rank,
                    }),
                    Err(reason) => report.rejected.push(Rejection {
                        section: section.name.clone(),
                        text: fact.text.clone(),
                        evidence: segment_ids(&[fact]),
                        facts: vec![fact.id.clone()],
                        origin: Origin::Extraction,
                        reason,
                    }),
                }
            }
        }
        in_section.sort_by_key(|p| p.order);
        placed.push(in_section);
    }

    // The patient's own sentences for narrative sections; the facts they hold are told there and
    // go neither to the model nor out as extracted wording.
    let mut narrated: Vec<Vec<(usize, Statement)>> = vec![Vec::new(); template.sections.len()];
    for ((section, in_section), told) in template
        .sections
        .iter()
        .zip(placed.iter_mut())
        .zip(narrated.iter_mut())
    {
        if !section.narrative || in_section.is_empty() {
            continue;
        }
        let section_facts: Vec<&Fact> = in_section.iter().map(|p| p.fact).collect();
        let mut told_ids: HashSet<String> = HashSet::new();
        for sentence in narrative::patient_sentences(transcript, &section_facts) {
            let fresh: Vec<&Fact> = sentence
                .facts
                .iter()
                .copied()
                .filter(|f| !told_ids.contains(&f.id))
                .collect();
            if fresh.is_empty() && !sentence.facts.is_empty() {
                continue;
            }
            let verdict =
                Support::gather(&fresh, &[sentence.segment.to_string()], transcript, false)
                    .and_then(|support| check_statement(&sentence.text, &support, &drug_names));
            report.count(Origin::Narrative, verdict.is_ok());
            let fact_ids: Vec<String> = fresh.iter().map(|f| f.id.clone()).collect();
            match verdict {
                Ok(()) => {
                    // A history reads in the order it was told.
                    let order = transcript
                        .segments
                        .iter()
                        .position(|s| s.id == sentence.segment)
                        .unwrap_or(usize::MAX);
                    told_ids.extend(fact_ids.iter().cloned());
                    told.push((
                        order,
                        Statement {
                            text: sentence.text,
                            evidence: vec![sentence.segment.to_string()],
                            facts: fact_ids,
                            origin: Origin::Narrative,
                            verifier: "supported".into(),
                        },
                    ));
                }
                Err(reason) => report.rejected.push(Rejection {
                    section: section.name.clone(),
                    text: sentence.text,
                    evidence: vec![sentence.segment.to_string()],
                    facts: fact_ids,
                    origin: Origin::Narrative,
                    reason,
                }),
            }
        }
        in_section.retain(|p| !told_ids.contains(&p.fact.id));
    }

    let mut model = "none".to_string();
    let mut warning = None;
    let mut generation = None;
    let mut rephrased: Vec<Vec<(usize, Statement)>> = vec![Vec::new(); template.sections.len()];
    if let Some(drafter) = drafter {
        model = drafter.model();
        let outcome = rephrase(drafter, template, &placed, settings)?;
        if outcome.unusable_sections > 0 || outcome.skipped_sections > 0 {
            warning = Some(format!(
                "the model's wording was not used for {} section(s) (output unusable) and {} \
                 section(s) (time budget reached); they keep the extracted wording",
                outcome.unusable_sections, outcome.skipped_sections
            ));
        }
        if outcome.stats.attempts > 0 {
            generation = Some(outcome.stats);
        }
        rephrased = check_rephrasings(outcome.notes, template, &placed, transcript, &mut report);
    }

    let mut sections = Vec::with_capacity(template.sections.len());
    for (((section, in_section), llm_statements), told) in template
        .sections
        .iter()
        .zip(&placed)
        .zip(rephrased)
        .zip(narrated)
    {
        let covered: HashSet<String> = llm_statements
            .iter()
            .flat_map(|(_, s)| s.facts.iter().cloned())
            .collect();
        let mut statements: Vec<(usize, Statement)> = told;
        statements.extend(llm_statements);
        for p in in_section {
            if !covered.contains(&p.fact.id) {
                statements.push((
                    p.order,
                    Statement {
                        text: p.fact.text.clone(),
                        evidence: segment_ids(&[p.fact]),
                        facts: vec![p.fact.id.clone()],
                        origin: Origin::Extraction,
                        verifier: "supported".into(),
                    },
                ));
            }
        }
        statements.sort_by_key(|(order, _)| *order);
        let statements: Vec<Statement> = statements.into_iter().map(|(_, s)| s).collect();
        if statements.is_empty() && !section.required {
            continue;
        }
        sections.push(Section {
            name: section.name.clone(),
            status: if statements.is_empty() {
                SectionStatus::InsufficientInput
            } else {
                SectionStatus::Drafted
            },
            statements,
        });
    }

    Ok(Draft {
        template: template.id.clone(),
        prompt_version: PROMPT_VERSION.into(),
        model,
        sections,
        facts,
        codes: Vec::new(),
        gaps: Vec::new(),
        verifier: report,
        warning,
        generation,
    })
}

/// The distinct segment ids of the facts' evidence, in order of appearance.
fn segment_ids(facts: &[&Fact]) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for fact in facts {
        for span in &fact.evidence {
            if !ids.contains(&span.segment) {
                ids.push(span.segment.clone());
            }
        }
    }
    ids
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
    statements: Vec<ModelStatement>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelStatement {
    text: String,
    facts: Vec<String>,
}

struct Rephrasing {
    notes: Vec<ModelNote>,
    stats: GenerationStats,
    unusable_sections: u32,
    skipped_sections: u32,
}

/// Generation budget per fact of a section.
const TOKENS_PER_FACT: u32 = 32;
/// Below this many tokens not even one sentence and its JSON fit: the section is skipped.
const MIN_SECTION_TOKENS: u32 = 40;
/// Generation speed assumed before the first call of a draft has measured it (a small model on
/// two busy cores).
const ASSUMED_TOKENS_PER_S: f64 = 20.0;

const SYSTEM_PROMPT: &str = "You are a clinical scribe. You get the facts of one section of a \
visit note, each with an id. Rewrite the facts as short, clear clinical sentences. \
You may join related facts into one sentence. Use only the words, numbers and doses of the \
facts; never add anything. Each sentence lists the ids of the facts it states. Answer with JSON \
only.";

/// A made-up visit, shown once: small models follow an example far better than a description.
/// The verifier rejects any of it copied into a real note, since no real fact supports it.
const EXAMPLE_FACTS: &str =
    "Section Subjective:\n[f1] Sore throat for 2 days.\n[f2] Denies fever.\n\
Section Plan:\n[f3] Drink fluids.\n[f4] Return if it gets worse.\n";
const EXAMPLE_NOTE: &str = r#"{"sections":[{"name":"Subjective","statements":[{"facts":["e1","e2"],"text":"Sore throat for 2 days without fever."},{"facts":["e3"],"text":"Drinks fluids."}]}]}"#;

fn facts_prompt(section: &TemplateSection, in_section: &[Placed<'_>]) -> String {
    let mut prompt = format!("Section {}:\n", section.name);
    for p in in_section {
        prompt.push_str(&format!("[{}] {}\n", p.fact.id, p.fact.text));
    }
    prompt
}

/// The chat sent to the model for one section: instructions, one worked example, then the
/// section's facts.
fn build_messages(section: &TemplateSection, in_section: &[Placed<'_>]) -> Vec<ChatMessage> {
    let message = |role: &str, content: String| ChatMessage {
        role: role.into(),
        content,
    };
    vec![
        message("system", SYSTEM_PROMPT.into()),
        message("user", EXAMPLE_FACTS.into()),
        message("assistant", EXAMPLE_NOTE.into()),
        message("user", facts_prompt(section, in_section)),
    ]
}

/// Asks the model to rephrase one section at a time: a small grammar and prompt per call, a
/// failure costs one section, and once `settings.time_budget` is spent the remaining sections
/// keep the extracted wording, so a slow model cannot hold the draft back.
fn rephrase(
    drafter: &mut dyn Drafter,
    template: &Template,
    placed: &[Vec<Placed<'_>>],
    settings: &DraftSettings,
) -> Result<Rephrasing, DraftError> {
    let started = std::time::Instant::now();
    let mut outcome = Rephrasing {
        notes: Vec::new(),
        stats: GenerationStats {
            prompt_tokens: 0,
            generated_tokens: 0,
            prompt_ms: 0,
            generation_ms: 0,
            attempts: 0,
        },
        unusable_sections: 0,
        skipped_sections: 0,
    };
    for (section, in_section) in template.sections.iter().zip(placed) {
        if in_section.is_empty() {
            continue;
        }
        // Tokens the rest of the budget can pay for, at the speed seen so far in this draft
        // (a cautious guess before the first call): a call is never started that would run
        // far past the budget.
        let remaining = settings.time_budget.saturating_sub(started.elapsed());
        let stats = &outcome.stats;
        let tokens_per_s = if stats.generation_ms > 0 && stats.generated_tokens > 0 {
            stats.generated_tokens as f64 * 1000.0 / stats.generation_ms as f64
        } else {
            ASSUMED_TOKENS_PER_S
        };
        let affordable = (remaining.as_secs_f64() * tokens_per_s) as u32;
        if affordable < MIN_SECTION_TOKENS {
            outcome.skipped_sections += 1;
            continue;
        }
        let grammar = note_grammar(
            &[GrammarSection {
                name: &section.name,
                fact_ids: in_section.iter().map(|p| p.fact.id.as_str()).collect(),
            }],
            settings
                .max_statements_per_section
                .min(in_section.len() as u32),
            MAX_SENTENCE_CHARS,
        );
        // Enough for every fact's wording once plus the JSON around it, and no more: a model
        // that loops runs out of tokens instead of time.
        let budget = (in_section.len() as u32 * TOKENS_PER_FACT + 24)
            .min(settings.max_tokens)
            .min(affordable);
        let generation = drafter.generate(&GenerateRequest {
            messages: build_messages(section, in_section),
            grammar: Some(grammar),
            max_tokens: budget,
            temperature: settings.temperature,
            seed: settings.seed,
        })?;
        let stats = &mut outcome.stats;
        stats.attempts += 1;
        stats.prompt_tokens += generation.prompt_tokens;
        stats.generated_tokens += generation.generated_tokens;
        stats.prompt_ms += generation.prompt_ms;
        stats.generation_ms += generation.generation_ms;
        match serde_json::from_str::<ModelNote>(&generation.text) {
            Ok(note) => outcome.notes.push(note),
            Err(e) => {
                // Usually the token budget ran out before the JSON closed.
                outcome.unusable_sections += 1;
                tracing::warn!(
                    generated_tokens = generation.generated_tokens,
                    line = e.line(),
                    column = e.column(),
                    "model output for a section did not parse"
                );
            }
        }
    }
    Ok(outcome)
}

/// Verifies each model sentence against the facts it cites; returns the accepted ones per
/// template section, keyed by the position of their first fact.
fn check_rephrasings(
    notes: Vec<ModelNote>,
    template: &Template,
    placed: &[Vec<Placed<'_>>],
    transcript: &Transcript,
    report: &mut VerifierReport,
) -> Vec<Vec<(usize, Statement)>> {
    let drug_names = |text: &str| clinical::drug_names_in(text);
    let mut accepted: Vec<Vec<(usize, Statement)>> = vec![Vec::new(); template.sections.len()];
    for model_section in notes.into_iter().flat_map(|n| n.sections) {
        let Some(index) = template
            .sections
            .iter()
            .position(|s| s.name == model_section.name)
        else {
            continue;
        };
        let by_id: HashMap<&str, &Placed<'_>> = placed[index]
            .iter()
            .map(|p| (p.fact.id.as_str(), p))
            .collect();
        let mut already_covered: HashSet<String> = HashSet::new();
        for statement in model_section.statements {
            let mut fact_ids = statement.facts.clone();
            let mut seen = HashSet::new();
            fact_ids.retain(|id| seen.insert(id.clone()));
            let cited: Vec<&Placed<'_>> = fact_ids
                .iter()
                .filter_map(|id| by_id.get(id.as_str()).copied())
                .collect();
            let cited_facts: Vec<&Fact> = cited.iter().map(|p| p.fact).collect();
            let verdict = if cited.len() != fact_ids.len() {
                Err("cites a fact outside its section".to_string())
            } else if fact_ids.iter().any(|id| already_covered.contains(id)) {
                Err("states a fact another sentence already states".to_string())
            } else {
                Support::gather(&cited_facts, &[], transcript, true)
                    .and_then(|support| check_statement(&statement.text, &support, &drug_names))
                    .and_then(|()| covers_every_cited_fact(&statement.text, &cited_facts))
            };
            report.count(Origin::Llm, verdict.is_ok());
            let evidence = segment_ids(&cited_facts);
            match verdict {
                Ok(()) => {
                    already_covered.extend(fact_ids.iter().cloned());
                    let order = cited.iter().map(|p| p.order).min().unwrap_or(usize::MAX);
                    accepted[index].push((
                        order,
                        Statement {
                            text: statement.text,
                            evidence,
                            facts: fact_ids,
                            origin: Origin::Llm,
                            verifier: "supported".into(),
                        },
                    ));
                }
                Err(reason) => report.rejected.push(Rejection {
                    section: model_section.name.clone(),
                    text: statement.text,
                    evidence,
                    facts: fact_ids,
                    origin: Origin::Llm,
                    reason,
                }),
            }
        }
    }
    accepted
}

/// A sentence that cites a fact must actually state it: its numbers and most of its words must
/// be there, or the fact would silently vanish from the note behind a vaguer sentence.
fn covers_every_cited_fact(text: &str, facts: &[&Fact]) -> Result<(), String> {
    let lower = text.to_lowercase();
    let words: HashSet<&str> = lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    for fact in facts {
        let fact_lower = fact.text.to_lowercase();
        let fact_words: Vec<&str> = fact_lower
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.len() >= 3 || w.chars().any(|c| c.is_ascii_digit()))
            .collect();
        if fact_words.is_empty() {
            continue;
        }
        let numbers_kept = fact_words
            .iter()
            .filter(|w| w.chars().any(|c| c.is_ascii_digit()))
            .all(|w| words.contains(w));
        let kept = fact_words.iter().filter(|w| words.contains(*w)).count();
        if !numbers_kept || (kept as f64) < 0.5 * fact_words.len() as f64 {
            return Err(format!("leaves out what fact {} says", fact.id));
        }
        // A side, a drug or a negation dropped changes the record as much as one added.
        let sides_kept = ["left", "right", "bilateral"]
            .iter()
            .filter(|side| fact_words.contains(side))
            .all(|side| words.contains(side));
        let drugs_kept = clinical::drug_names_in(&fact.text)
            .iter()
            .all(|drug| lower.contains(drug.as_str()));
        if !sides_kept || !drugs_kept {
            return Err(format!("drops the side or drug of fact {}", fact.id));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clinical::{Assertion, Detail, FactKind, Span};
    use crate::draft::template::TemplateSet;
    use crate::inference::{Generation, InferenceError};
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

    fn scripted(outputs: &[&str]) -> Scripted {
        Scripted {
            outputs: outputs.iter().map(|s| s.to_string()).collect(),
            requests: vec![],
        }
    }

    fn transcript() -> Transcript {
        let turns = [
            (Speaker::Clinician, "What brings you in today?"),
            (Speaker::Patient, "I have had a cough for three days."),
            (Speaker::Clinician, "Any fever?"),
            (Speaker::Patient, "No."),
            (Speaker::Clinician, "Your blood pressure is 120 over 80."),
            (
                Speaker::Clinician,
                "Take ibuprofen 400 milligrams twice a day.",
            ),
        ];
        Transcript {
            segments: turns
                .iter()
                .enumerate()
                .map(|(i, (speaker, text))| Segment {
                    id: Transcript::segment_id(i),
                    start: i as f64,
                    end: i as f64 + 1.0,
                    speaker: *speaker,
                    text: (*text).into(),
                    confidence: 0.9,
                    overlap: false,
                })
                .collect(),
        }
    }

    fn fact(id: &str, kind: FactKind, assertion: Assertion, text: &str, segments: &[&str]) -> Fact {
        Fact {
            id: id.into(),
            kind,
            assertion,
            text: text.into(),
            detail: Detail::Text,
            evidence: segments
                .iter()
                .map(|s| Span {
                    segment: s.to_string(),
                    start: 0,
                    end: 2,
                })
                .collect(),
            attributes: Default::default(),
        }
    }

    fn facts() -> Vec<Fact> {
        vec![
            fact(
                "f1",
                FactKind::Symptom,
                Assertion::Present,
                "Cough for 3 days.",
                &["s2"],
            ),
            fact(
                "f2",
                FactKind::PertinentNegative,
                Assertion::Absent,
                "Denies fever.",
                &["s3", "s4"],
            ),
            fact(
                "f3",
                FactKind::Vital,
                Assertion::Present,
                "Blood pressure 120/80.",
                &["s5"],
            ),
            fact(
                "f4",
                FactKind::Plan,
                Assertion::Present,
                "Ibuprofen 400 mg twice a day.",
                &["s6"],
            ),
        ]
    }

    fn soap() -> Template {
        TemplateSet::builtin().unwrap().get("soap").unwrap().clone()
    }

    fn settings() -> DraftSettings {
        DraftSettings {
            max_tokens: 100,
            temperature: 0.0,
            seed: 1,
            max_statements_per_section: 3,
            time_budget: std::time::Duration::from_secs(60),
        }
    }

    fn texts(draft: &Draft, section: &str) -> Vec<String> {
        draft
            .sections
            .iter()
            .find(|s| s.name == section)
            .map(|s| s.statements.iter().map(|st| st.text.clone()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn without_a_model_every_supported_fact_is_stated_in_its_section() {
        let draft = compose_from_facts(&transcript(), facts(), &soap(), None, &settings()).unwrap();
        assert_eq!(draft.model, "none");
        assert_eq!(
            texts(&draft, "Subjective"),
            ["Cough for 3 days.", "Denies fever."]
        );
        assert_eq!(texts(&draft, "Objective"), ["Blood pressure 120/80."]);
        assert_eq!(texts(&draft, "Plan"), ["Ibuprofen 400 mg twice a day."]);
        let assessment = draft
            .sections
            .iter()
            .find(|s| s.name == "Assessment")
            .unwrap();
        assert_eq!(assessment.status, SectionStatus::InsufficientInput);
        let negative = &draft.sections[0].statements[1];
        assert_eq!(negative.evidence, ["s3", "s4"]);
        assert_eq!(negative.facts, ["f2"]);
        assert_eq!(negative.origin, Origin::Extraction);
        assert_eq!(draft.verifier.extraction.proposed, 4);
        assert_eq!(draft.verifier.extraction.accepted, 4);
        assert_eq!(draft.facts.len(), 4);
    }

    #[test]
    fn optional_sections_with_nothing_are_left_out_and_required_ones_flagged() {
        let template = TemplateSet::builtin()
            .unwrap()
            .get("history-and-physical")
            .unwrap()
            .clone();
        let draft =
            compose_from_facts(&transcript(), facts(), &template, None, &settings()).unwrap();
        let names: Vec<&str> = draft.sections.iter().map(|s| s.name.as_str()).collect();
        assert!(names.contains(&"Review of Systems"), "{names:?}");
        assert!(!names.contains(&"Family History"), "{names:?}");
        let allergies = draft
            .sections
            .iter()
            .find(|s| s.name == "Allergies")
            .unwrap();
        assert_eq!(allergies.status, SectionStatus::InsufficientInput);
    }

    #[test]
    fn an_extracted_fact_its_evidence_does_not_support_is_dropped_and_counted() {
        let mut bad = facts();
        bad[2].text = "Blood pressure 150/80.".into();
        let draft = compose_from_facts(&transcript(), bad, &soap(), None, &settings()).unwrap();
        assert!(texts(&draft, "Objective").is_empty());
        assert_eq!(draft.verifier.extraction.accepted, 3);
        assert_eq!(draft.verifier.rejected.len(), 1);
        assert!(draft.verifier.rejected[0].reason.contains("number"));
    }

    #[test]
    fn the_model_sees_facts_not_the_transcript_and_may_cite_only_its_section() {
        let mut drafter = scripted(&[]);
        let draft = compose_from_facts(
            &transcript(),
            facts(),
            &soap(),
            Some(&mut drafter),
            &settings(),
        )
        .unwrap();
        let request = &drafter.requests[0];
        let prompt = &request.messages[3].content;
        assert!(
            prompt.contains("Section Subjective:\n[f1] Cough for 3 days.\n[f2] Denies fever.\n"),
            "{prompt}"
        );
        assert!(!prompt.contains("What brings you in"), "{prompt}");
        assert!(!prompt.contains("Section Assessment"), "{prompt}");
        let grammar = request.grammar.as_ref().unwrap();
        assert!(
            grammar.contains("fid0 ::= \"\\\"f1\\\"\" | \"\\\"f2\\\"\""),
            "{grammar}"
        );
        // Unusable output leaves the extracted wording in place, with a warning.
        assert!(draft
            .warning
            .as_deref()
            .unwrap_or("")
            .contains("3 section(s) (output unusable)"));
        assert_eq!(
            texts(&draft, "Subjective"),
            ["Cough for 3 days.", "Denies fever."]
        );
    }

    #[test]
    fn accepted_rephrasings_replace_the_wording_and_rejected_ones_leave_it() {
        let mut drafter = scripted(&[
            r#"{"sections":[{"name":"Subjective","statements":[{"facts":["f1","f2"],"text":"Cough for 3 days, denies fever."}]}]}"#,
            r#"{"sections":[{"name":"Objective","statements":[{"facts":["f3"],"text":"Blood pressure 130/80."}]}]}"#,
            r#"{"sections":[{"name":"Plan","statements":[{"facts":["f4"],"text":"Ibuprofen twice a day."}]}]}"#,
        ]);
        let draft = compose_from_facts(
            &transcript(),
            facts(),
            &soap(),
            Some(&mut drafter),
            &settings(),
        )
        .unwrap();
        assert_eq!(draft.model, "scripted");
        assert_eq!(
            texts(&draft, "Subjective"),
            ["Cough for 3 days, denies fever."]
        );
        let merged = &draft.sections[0].statements[0];
        assert_eq!(merged.origin, Origin::Llm);
        assert_eq!(merged.facts, ["f1", "f2"]);
        assert_eq!(merged.evidence, ["s2", "s3", "s4"]);
        // A changed number is rejected; so is a sentence that drops the dose it cites.
        assert_eq!(texts(&draft, "Objective"), ["Blood pressure 120/80."]);
        assert_eq!(texts(&draft, "Plan"), ["Ibuprofen 400 mg twice a day."]);
        assert_eq!(draft.verifier.llm.proposed, 3);
        assert_eq!(draft.verifier.llm.accepted, 1);
        let reasons: Vec<&str> = draft
            .verifier
            .rejected
            .iter()
            .map(|r| r.reason.as_str())
            .collect();
        assert!(reasons[0].contains("number"), "{reasons:?}");
        assert!(reasons[1].contains("leaves out"), "{reasons:?}");
    }

    #[test]
    fn once_the_time_budget_is_spent_no_further_section_goes_to_the_model() {
        let mut drafter = scripted(&[]);
        let mut no_time = settings();
        no_time.time_budget = std::time::Duration::ZERO;
        let draft = compose_from_facts(
            &transcript(),
            facts(),
            &soap(),
            Some(&mut drafter),
            &no_time,
        )
        .unwrap();
        assert!(drafter.requests.is_empty());
        assert!(draft
            .warning
            .as_deref()
            .unwrap_or("")
            .contains("3 section(s) (time budget reached)"));
        assert!(draft.generation.is_none());
        assert_eq!(texts(&draft, "Objective"), ["Blood pressure 120/80."]);
    }

    #[test]
    fn a_rephrasing_that_drops_a_side_or_a_drug_is_rejected() {
        let t = Transcript::from_dialogue(
            "[patient] my right knee has hurt for two weeks .\n[patient] i take ibuprofen for it .",
        )
        .unwrap();
        let facts = vec![
            fact(
                "f1",
                FactKind::Symptom,
                Assertion::Present,
                "Right knee pain for 2 weeks.",
                &["s1"],
            ),
            fact(
                "f2",
                FactKind::Medication,
                Assertion::Present,
                "Takes ibuprofen.",
                &["s2"],
            ),
        ];
        let mut drafter = scripted(&[
            r#"{"sections":[{"name":"Subjective","statements":[{"facts":["f1"],"text":"Knee pain for 2 weeks."},{"facts":["f2"],"text":"Takes it for that."}]}]}"#,
        ]);
        let draft =
            compose_from_facts(&t, facts, &soap(), Some(&mut drafter), &settings()).unwrap();
        let reasons: Vec<&str> = draft
            .verifier
            .rejected
            .iter()
            .map(|r| r.reason.as_str())
            .collect();
        assert_eq!(draft.verifier.llm.accepted, 0, "{reasons:?}");
        assert!(
            reasons
                .iter()
                .all(|r| r.contains("side or drug") || r.contains("leaves out")),
            "{reasons:?}"
        );
        assert_eq!(
            texts(&draft, "Subjective"),
            ["Right knee pain for 2 weeks.", "Takes ibuprofen."]
        );
    }

    #[test]
    fn a_rephrasing_that_flips_a_negation_or_cites_another_section_is_rejected() {
        let mut drafter = scripted(&[
            r#"{"sections":[{"name":"Subjective","statements":[{"facts":["f2"],"text":"Fever."},{"facts":["f3"],"text":"Blood pressure 120/80."}]}]}"#,
        ]);
        let draft = compose_from_facts(
            &transcript(),
            facts(),
            &soap(),
            Some(&mut drafter),
            &settings(),
        )
        .unwrap();
        assert_eq!(draft.verifier.llm.accepted, 0);
        let reasons: Vec<&str> = draft
            .verifier
            .rejected
            .iter()
            .map(|r| r.reason.as_str())
            .collect();
        assert!(reasons[0].contains("negation"), "{reasons:?}");
        assert!(reasons[1].contains("outside its section"), "{reasons:?}");
        assert_eq!(
            texts(&draft, "Subjective"),
            ["Cough for 3 days.", "Denies fever."]
        );
    }
}
