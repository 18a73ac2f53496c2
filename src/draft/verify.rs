//! The verifier: decides which model-written statements enter the draft.
//!
//! A statement survives only if every segment it cites exists, every number in it appears in the
//! cited words, most of its content words appear there, and it does not negate what the evidence
//! never negates. Anything else is dropped and counted; a section left empty is flagged
//! `insufficient_input`. This is deliberately lexical and strict — a dropped true statement costs
//! the clinician a line of typing, a kept false one costs a wrong medical record. A stronger,
//! fact-level verifier replaces the lexical checks in a later issue; the contract stays.

use std::collections::HashSet;

use super::{
    Draft, Rejection, Section, SectionStatus, Statement, VerifierReport, PROMPT_VERSION,
    SOAP_SECTIONS, TEMPLATE_ID,
};
use crate::eval::wer::{ONES, TENS};
use crate::transcript::Transcript;

/// Share of a statement's content words that must appear in its evidence.
const MIN_CONTENT_OVERLAP: f64 = 0.6;

const STOPWORDS: &[&str] = &[
    "the",
    "and",
    "for",
    "with",
    "has",
    "have",
    "had",
    "was",
    "were",
    "are",
    "is",
    "this",
    "that",
    "patient",
    "patients",
    "reports",
    "reported",
    "states",
    "stated",
    "she",
    "her",
    "his",
    "him",
    "they",
    "their",
    "from",
    "about",
    "also",
    "been",
    "will",
    "should",
    "would",
    "which",
    "who",
    "per",
    "day",
    "daily",
    "visit",
    "today",
    "doctor",
    "clinician",
    "noted",
    "note",
    "its",
    "into",
    "over",
    "some",
    "any",
    "very",
    "currently",
    "continue",
    "mild",
    "does",
];

const NEGATIONS: &[&str] = &[
    "no", "not", "denies", "denied", "deny", "without", "negative", "never", "none", "nor",
];

fn tokens(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !(c.is_alphanumeric() || c == '.' || c == '\''))
        .map(|t| t.trim_matches(|c: char| c == '.' || c == '\''))
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// A number token in canonical digits, if the token is one ("10", "10.5", "ten").
fn number_value(token: &str) -> Option<String> {
    if token.chars().any(|c| c.is_ascii_digit()) {
        let digits: String = token
            .chars()
            .filter(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        return Some(digits.trim_end_matches(".0").to_string());
    }
    if let Some(value) = ONES.iter().position(|w| *w == token) {
        return Some(value.to_string());
    }
    TENS.iter()
        .position(|w| !w.is_empty() && *w == token)
        .map(|tens| (tens * 10).to_string())
}

fn is_negation(token: &str) -> bool {
    NEGATIONS.contains(&token) || token.ends_with("n't")
}

fn stem(token: &str) -> &str {
    match token.char_indices().nth(5) {
        Some((index, _)) => &token[..index],
        None => token,
    }
}

/// True when some run of three words occurs twice: small models fall into loops ("10 days ago,
/// 10 days ago, …") whose words all appear in the evidence but which state nothing.
fn repeats_itself(tokens: &[String]) -> bool {
    let mut seen = HashSet::new();
    tokens.windows(3).any(|w| !seen.insert(w))
}

/// Checks one statement against the transcript; `Err` carries the reason it is dropped.
pub fn check_statement(statement: &Statement, transcript: &Transcript) -> Result<(), String> {
    if statement.text.trim().chars().count() < 3 {
        return Err("empty statement".into());
    }
    if statement.evidence.is_empty() {
        return Err("cites no evidence".into());
    }
    let mut evidence_text = String::new();
    for id in &statement.evidence {
        match transcript.segment(id) {
            Some(segment) => {
                evidence_text.push_str(&segment.text);
                evidence_text.push(' ');
            }
            None => return Err(format!("cites segment {id}, which does not exist")),
        }
    }
    let statement_tokens = tokens(&statement.text);
    if repeats_itself(&statement_tokens) {
        return Err("repeats itself (a degenerate generation)".into());
    }
    let evidence_tokens = tokens(&evidence_text);
    let evidence_numbers: HashSet<String> = evidence_tokens
        .iter()
        .filter_map(|t| number_value(t))
        .collect();
    for token in &statement_tokens {
        if let Some(number) = number_value(token) {
            if !evidence_numbers.contains(&number) {
                return Err("states a number its evidence does not".into());
            }
        }
    }
    if statement_tokens.iter().any(|t| is_negation(t))
        && !evidence_tokens.iter().any(|t| is_negation(t))
    {
        return Err("negates what its evidence does not".into());
    }
    let evidence_stems: HashSet<&str> = evidence_tokens.iter().map(|t| stem(t)).collect();
    let content: Vec<&String> = statement_tokens
        .iter()
        .filter(|t| {
            t.chars().count() >= 3
                && number_value(t).is_none()
                && !is_negation(t)
                && !STOPWORDS.contains(&t.as_str())
        })
        .collect();
    if content.is_empty() {
        return Err("has no content words".into());
    }
    let supported = content
        .iter()
        .filter(|t| evidence_stems.contains(stem(t)))
        .count();
    if (supported as f64) < MIN_CONTENT_OVERLAP * content.len() as f64 {
        return Err("its words are not in its evidence".into());
    }
    Ok(())
}

/// Runs every statement of the model's sections through [`check_statement`] and assembles the
/// draft in template order. `model` and `generation` are left for the caller to fill.
pub fn verify_note(sections: Vec<Section>, transcript: &Transcript) -> Draft {
    let mut report = VerifierReport::default();
    let mut out = Vec::with_capacity(SOAP_SECTIONS.len());
    for name in SOAP_SECTIONS {
        let proposed: Vec<Statement> = sections
            .iter()
            .filter(|s| s.name == name && s.status == SectionStatus::Drafted)
            .flat_map(|s| s.statements.iter().cloned())
            .collect();
        let mut kept = Vec::new();
        for mut statement in proposed {
            report.proposed += 1;
            let mut seen = HashSet::new();
            statement.evidence.retain(|id| seen.insert(id.clone()));
            match check_statement(&statement, transcript) {
                Ok(()) => {
                    report.accepted += 1;
                    kept.push(statement);
                }
                Err(reason) => report.rejected.push(Rejection {
                    section: name.to_string(),
                    text: statement.text,
                    evidence: statement.evidence,
                    reason,
                }),
            }
        }
        out.push(Section {
            name: name.to_string(),
            status: if kept.is_empty() {
                SectionStatus::InsufficientInput
            } else {
                SectionStatus::Drafted
            },
            statements: kept,
        });
    }
    Draft {
        template: TEMPLATE_ID.into(),
        prompt_version: PROMPT_VERSION.into(),
        model: String::new(),
        sections: out,
        verifier: report,
        warning: None,
        generation: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcript::{Segment, Speaker};

    fn transcript(texts: &[&str]) -> Transcript {
        Transcript {
            segments: texts
                .iter()
                .enumerate()
                .map(|(i, t)| Segment {
                    id: Transcript::segment_id(i),
                    start: 0.0,
                    end: 1.0,
                    speaker: Speaker::Unknown,
                    text: (*t).into(),
                    confidence: 1.0,
                })
                .collect(),
        }
    }

    fn statement(text: &str, evidence: &[&str]) -> Statement {
        Statement {
            text: text.into(),
            evidence: evidence.iter().map(|s| s.to_string()).collect(),
            origin: "llm".into(),
        }
    }

    #[test]
    fn supported_statements_pass() {
        let t = transcript(&[
            "I take lisinopril 10 milligrams every morning.",
            "Your blood pressure is 140 over 90.",
            "No, I have not had any fever.",
        ]);
        for (text, ev) in [
            ("Takes lisinopril 10 milligrams every morning.", vec!["s1"]),
            ("Blood pressure 140/90.", vec!["s2"]),
            ("Denies fever.", vec!["s3"]),
            ("Takes lisinopril ten milligrams.", vec!["s1"]),
        ] {
            assert_eq!(check_statement(&statement(text, &ev), &t), Ok(()), "{text}");
        }
    }

    #[test]
    fn unsupported_numbers_drugs_negations_and_citations_are_dropped() {
        let t = transcript(&[
            "I take lisinopril 10 milligrams every morning.",
            "I have had a fever since Tuesday.",
        ]);
        for (text, ev, why) in [
            ("Takes lisinopril 20 milligrams.", vec!["s1"], "number"),
            ("Takes metformin every morning.", vec!["s1"], "words"),
            ("No fever.", vec!["s2"], "negates"),
            ("Fever since Tuesday.", vec!["s9"], "does not exist"),
            ("Fever since Tuesday.", vec![], "no evidence"),
            ("Has diabetes and asthma.", vec!["s2"], "words"),
            (
                "Fever since Tuesday, fever since Tuesday, fever since Tuesday.",
                vec!["s2"],
                "repeats",
            ),
        ] {
            let err = check_statement(&statement(text, &ev), &t).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
        }
    }

    #[test]
    fn sections_with_nothing_left_are_flagged_and_counts_add_up() {
        let t = transcript(&["I have had a cough for three days."]);
        let sections = vec![
            Section {
                name: "Subjective".into(),
                status: SectionStatus::Drafted,
                statements: vec![
                    statement("Cough for three days.", &["s1", "s1"]),
                    statement("Cough for five days.", &["s1"]),
                ],
            },
            Section {
                name: "Objective".into(),
                status: SectionStatus::Drafted,
                statements: vec![statement("Temperature 39 degrees.", &["s1"])],
            },
        ];
        let draft = verify_note(sections, &t);
        assert_eq!(draft.sections.len(), 4);
        assert_eq!(draft.sections[0].status, SectionStatus::Drafted);
        assert_eq!(draft.sections[0].statements.len(), 1);
        assert_eq!(draft.sections[0].statements[0].evidence, vec!["s1"]);
        assert!(draft.sections[1..]
            .iter()
            .all(|s| s.status == SectionStatus::InsufficientInput));
        assert_eq!(draft.verifier.proposed, 3);
        assert_eq!(draft.verifier.accepted, 1);
        assert_eq!(draft.verifier.rejected.len(), 2);
    }
}
