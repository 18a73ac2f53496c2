//! The verifier: decides which statements enter the draft.
//!
//! Every statement — the extractor's own wording as much as the LLM's — must be supported by what
//! it cites: the segments exist; every number, dose, unit, drug name and laterality word in it
//! occurs in the evidence; it negates exactly when the evidence negates; most of its content
//! words are there; it does not loop. Anything else is dropped and counted. This is deliberately
//! lexical and strict: a dropped true statement costs the clinician a line of typing, a kept
//! false one costs a wrong medical record.

use std::collections::HashSet;

use crate::clinical::{Assertion, Fact};
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
    "them",
    "themselves",
    "history",
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

const LATERALITY: &[&str] = &["left", "right", "bilateral", "both"];

/// Units whose spoken and written forms differ; the first is the canonical form.
const UNITS: &[(&str, &[&str])] = &[
    ("mg", &["mg", "milligram", "milligrams", "milligrams."]),
    ("mcg", &["mcg", "microgram", "micrograms", "µg"]),
    ("g", &["g", "gram", "grams"]),
    ("kg", &["kg", "kilogram", "kilograms", "kilo", "kilos"]),
    ("lb", &["lb", "lbs", "pound", "pounds"]),
    (
        "ml",
        &["ml", "milliliter", "milliliters", "millilitre", "cc"],
    ),
    ("units", &["unit", "units", "iu"]),
    // Vital-sign units (mmHg, bpm, °F, %) are how a note writes a reading, not something the
    // speaker must have said; they are not checked.
];

/// Plain words and the clinical words a note uses for them. Only content words: a synonym never
/// excuses a number, unit, drug, side or negation, which are checked exactly.
const SYNONYMS: &[&[&str]] = &[
    &[
        "pain", "hurt", "hurts", "hurting", "ache", "aches", "aching", "sore", "soreness",
        "painful",
    ],
    &["fatigue", "tired", "tiredness", "exhausted", "exhaustion"],
    &["dyspnea", "breath", "breathing", "winded"],
    &["lightheadedness", "lightheaded", "dizzy", "dizziness"],
    &["nausea", "nauseous", "nauseated", "queasy"],
    &["emesis", "vomiting", "vomit", "throwing"],
    &[
        "pyrexia",
        "fever",
        "fevers",
        "febrile",
        "temperature",
        "temp",
    ],
    &["pulse", "heart", "rate", "beats"],
    &[
        "saturation",
        "oxygen",
        "sat",
        "sats",
        "spo2",
        "o2",
        "pulse-ox",
    ],
    &["respiratory", "respirations", "breathing", "breaths"],
    &["edema", "swelling", "swollen", "swell"],
    &[
        "tobacco",
        "smoke",
        "smokes",
        "smoking",
        "smoker",
        "cigarettes",
    ],
    &["alcohol", "drink", "drinks", "drinking", "beer", "wine"],
    &["follow", "come", "return"],
    &["order", "get", "obtain", "check"],
    &["prescribe", "prescription", "start", "give"],
    &["referral", "refer", "send"],
    &["abdominal", "belly", "stomach", "tummy"],
];

fn synonyms_of(token: &str) -> impl Iterator<Item = &'static str> + '_ {
    SYNONYMS
        .iter()
        .filter(move |group| group.contains(&token))
        .flat_map(|group| group.iter().copied())
}

fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for raw in text
        .to_lowercase()
        .split(|c: char| !(c.is_alphanumeric() || matches!(c, '.' | '\'' | '%' | '/')))
    {
        // "120/80" is two numbers; "mg/dl" two units.
        for part in raw.split('/') {
            let part = part.trim_matches(|c: char| c == '.' || c == '\'');
            if let Some(number) = part.strip_suffix('%') {
                if !number.is_empty() {
                    out.push(number.to_string());
                }
                out.push("%".into());
            } else if !part.is_empty() {
                out.push(part.to_string());
            }
        }
    }
    out
}

/// A number token in canonical digits, if the token is one ("10", "10.5", "ten").
fn number_value(token: &str) -> Option<String> {
    // A word that merely contains a digit ("spo2", "a1c", "b12") is a name, not a number.
    if token.starts_with(|c: char| c.is_ascii_digit()) {
        let digits: String = token
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let trimmed = if digits.contains('.') {
            digits.trim_end_matches('0').trim_end_matches('.')
        } else {
            digits.as_str()
        };
        return Some(trimmed.to_string());
    }
    if let Some(value) = ONES.iter().position(|w| *w == token) {
        return Some(value.to_string());
    }
    TENS.iter()
        .position(|w| !w.is_empty() && *w == token)
        .map(|tens| (tens * 10).to_string())
}

fn unit_value(token: &str) -> Option<&'static str> {
    UNITS
        .iter()
        .find(|(_, forms)| forms.contains(&token))
        .map(|(canonical, _)| *canonical)
}

fn is_negation(token: &str) -> bool {
    NEGATIONS.contains(&token) || token.ends_with("n't")
}

/// A crude stem: inflection suffixes off, then the first five letters, so "takes", "taking"
/// and "take" meet, as do "swelling" and "swollen" no better than a reader would allow.
fn stem(token: &str) -> &str {
    let mut base = token;
    for suffix in ["ing", "ed", "es", "s"] {
        if let Some(stripped) = base.strip_suffix(suffix) {
            if stripped.chars().count() >= 3 {
                base = stripped;
                break;
            }
        }
    }
    if base.chars().count() > 3 {
        base = base.strip_suffix('e').unwrap_or(base);
    }
    match base.char_indices().nth(5) {
        Some((index, _)) => &base[..index],
        None => base,
    }
}

/// True when some run of three words occurs twice: small models fall into loops ("10 days ago,
/// 10 days ago, …") whose words all appear in the evidence but which state nothing.
fn repeats_itself(tokens: &[String]) -> bool {
    let mut seen = HashSet::new();
    tokens.windows(3).any(|w| !seen.insert(w))
}

/// (number, unit) pairs: a dose is only supported if the same amount comes with the same unit.
fn doses(tokens: &[String]) -> HashSet<(String, &'static str)> {
    tokens
        .windows(2)
        .filter_map(|w| Some((number_value(&w[0])?, unit_value(&w[1])?)))
        .collect()
}

/// What a statement may rest on: the words of the segments it cites and, for a rephrasing,
/// the wording of the facts it cites.
pub struct Support<'a> {
    pub segments: Vec<&'a str>,
    pub fact_texts: Vec<&'a str>,
    /// The assertions of the cited facts: a statement must negate iff they are all `Absent`.
    pub assertions: Vec<Assertion>,
}

impl<'a> Support<'a> {
    /// The support of a statement citing `facts`, plus any extra segment ids it cites directly.
    /// `Err` names the first cited segment that does not exist.
    pub fn gather(
        facts: &[&'a Fact],
        extra_segments: &[String],
        transcript: &'a Transcript,
        include_fact_texts: bool,
    ) -> Result<Support<'a>, String> {
        let mut ids: Vec<&str> = Vec::new();
        for fact in facts {
            for span in &fact.evidence {
                if !ids.contains(&span.segment.as_str()) {
                    ids.push(&span.segment);
                }
            }
        }
        for id in extra_segments {
            if !ids.contains(&id.as_str()) {
                ids.push(id);
            }
        }
        let mut segments = Vec::with_capacity(ids.len());
        for id in ids {
            match transcript.segment(id) {
                Some(segment) => segments.push(segment.text.as_str()),
                None => return Err(format!("cites segment {id}, which does not exist")),
            }
        }
        Ok(Support {
            segments,
            fact_texts: if include_fact_texts {
                facts.iter().map(|f| f.text.as_str()).collect()
            } else {
                Vec::new()
            },
            assertions: facts.iter().map(|f| f.assertion).collect(),
        })
    }
}

/// Checks one statement against its support; `Err` carries the reason it is dropped.
/// `drug_names` finds the drug names a text mentions (the extractor's lexicon).
pub fn check_statement(
    text: &str,
    support: &Support<'_>,
    drug_names: &dyn Fn(&str) -> Vec<String>,
) -> Result<(), String> {
    if text.trim().chars().count() < 3 {
        return Err("empty statement".into());
    }
    if support.segments.is_empty() {
        return Err("cites no evidence".into());
    }
    let mut evidence_text = support.segments.join(" \n ");
    for fact_text in &support.fact_texts {
        evidence_text.push_str(" \n ");
        evidence_text.push_str(fact_text);
    }
    // "one twenty eight over seventy" supports "128/70": read spoken numbers the way the
    // extractor does, and keep the words too.
    let spoken = crate::clinical::spoken_numbers_as_digits(&evidence_text);
    evidence_text.push_str(" \n ");
    evidence_text.push_str(&spoken);
    let statement_tokens = tokens(text);
    if repeats_itself(&statement_tokens) {
        return Err("repeats itself (a degenerate generation)".into());
    }
    let evidence_tokens = tokens(&evidence_text);
    let evidence_numbers: HashSet<String> = evidence_tokens
        .iter()
        .filter_map(|t| number_value(t))
        .collect();
    if statement_tokens
        .iter()
        .filter_map(|t| number_value(t))
        .any(|n| !evidence_numbers.contains(&n))
    {
        return Err("states a number its evidence does not".into());
    }
    let evidence_units: HashSet<&str> = evidence_tokens
        .iter()
        .filter_map(|t| unit_value(t))
        .collect();
    if statement_tokens
        .iter()
        .filter_map(|t| unit_value(t))
        .any(|u| !evidence_units.contains(u))
    {
        return Err("states a unit its evidence does not".into());
    }
    let evidence_doses = doses(&evidence_tokens);
    if doses(&statement_tokens)
        .iter()
        .any(|d| !evidence_doses.contains(d))
    {
        return Err("states a dose its evidence does not".into());
    }
    let evidence_lower = evidence_text.to_lowercase();
    for drug in drug_names(text) {
        if !evidence_lower.contains(&drug.to_lowercase()) {
            return Err("names a drug its evidence does not".into());
        }
    }
    for side in LATERALITY {
        if statement_tokens.iter().any(|t| t == side) && !evidence_tokens.iter().any(|t| t == side)
        {
            return Err("states a side its evidence does not".into());
        }
    }
    let statement_negates = statement_tokens.iter().any(|t| is_negation(t));
    let all_absent = !support.assertions.is_empty()
        && support.assertions.iter().all(|a| *a == Assertion::Absent);
    let any_absent = support.assertions.contains(&Assertion::Absent);
    if statement_negates && !any_absent && !evidence_tokens.iter().any(|t| is_negation(t)) {
        return Err("negates what its evidence does not".into());
    }
    if statement_negates && !support.assertions.is_empty() && !any_absent {
        return Err("negates a fact that is asserted present".into());
    }
    if all_absent && !statement_negates {
        return Err("drops the negation of its facts".into());
    }
    let evidence_stems: HashSet<&str> = evidence_tokens.iter().map(|t| stem(t)).collect();
    let content: Vec<&String> = statement_tokens
        .iter()
        .filter(|t| {
            t.chars().count() >= 3
                && number_value(t).is_none()
                && unit_value(t).is_none()
                && !is_negation(t)
                && !STOPWORDS.contains(&t.as_str())
        })
        .collect();
    if content.is_empty() {
        return Err("has no content words".into());
    }
    let supported = content
        .iter()
        .filter(|t| {
            evidence_stems.contains(stem(t))
                || synonyms_of(t).any(|synonym| evidence_stems.contains(stem(synonym)))
        })
        .count();
    if (supported as f64) < MIN_CONTENT_OVERLAP * content.len() as f64 {
        return Err("its words are not in its evidence".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clinical::{Detail, Span};
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
                    overlap: false,
                })
                .collect(),
        }
    }

    fn fact(text: &str, segments: &[&str], assertion: Assertion) -> Fact {
        Fact {
            id: "f1".into(),
            kind: crate::clinical::FactKind::Symptom,
            assertion,
            text: text.into(),
            detail: Detail::Text,
            evidence: segments
                .iter()
                .map(|s| Span {
                    segment: s.to_string(),
                    start: 0,
                    end: 1,
                })
                .collect(),
            attributes: Default::default(),
        }
    }

    fn drugs(text: &str) -> Vec<String> {
        ["lisinopril", "metformin", "ibuprofen"]
            .iter()
            .filter(|d| text.to_lowercase().contains(*d))
            .map(|d| d.to_string())
            .collect()
    }

    fn check(text: &str, t: &Transcript, cited: &[Fact]) -> Result<(), String> {
        let refs: Vec<&Fact> = cited.iter().collect();
        let support = Support::gather(&refs, &[], t, true)?;
        check_statement(text, &support, &drugs)
    }

    #[test]
    fn supported_statements_pass() {
        let t = transcript(&[
            "I take lisinopril 10 milligrams every morning.",
            "Your blood pressure is 140 over 90.",
            "Any fever? No, I have not had any fever.",
            "The pain is in my right knee.",
        ]);
        let present = Assertion::Present;
        for (text, f) in [
            (
                "Takes lisinopril 10 mg every morning.",
                fact("Lisinopril 10 mg.", &["s1"], present),
            ),
            ("Blood pressure 140/90.", fact("x", &["s2"], present)),
            ("Denies fever.", fact("Fever.", &["s3"], Assertion::Absent)),
            (
                "Takes lisinopril ten milligrams.",
                fact("x", &["s1"], present),
            ),
            ("Right knee pain.", fact("x", &["s4"], present)),
        ] {
            assert_eq!(check(text, &t, &[f]), Ok(()), "{text}");
        }
    }

    #[test]
    fn unsupported_numbers_units_doses_drugs_sides_and_negations_are_dropped() {
        let t = transcript(&[
            "I take lisinopril 10 milligrams and 20 pills a week.",
            "I have had a fever since Tuesday.",
            "My right knee hurts.",
            "No chest pain.",
        ]);
        let present = Assertion::Present;
        for (text, f, why) in [
            (
                "Takes lisinopril 30 mg.",
                fact("x", &["s1"], present),
                "number",
            ),
            (
                "Takes lisinopril 10 mcg.",
                fact("x", &["s1"], present),
                "unit",
            ),
            (
                "Takes lisinopril 20 mg.",
                fact("x", &["s1"], present),
                "dose",
            ),
            ("Takes metformin.", fact("x", &["s1"], present), "drug"),
            ("No fever.", fact("x", &["s2"], present), "negat"),
            ("Left knee pain.", fact("x", &["s3"], present), "side"),
            (
                "Chest pain.",
                fact("Chest pain.", &["s4"], Assertion::Absent),
                "drops the negation",
            ),
            (
                "Fever since Tuesday.",
                fact("x", &["s9"], present),
                "does not exist",
            ),
            (
                "Has diabetes and asthma.",
                fact("x", &["s2"], present),
                "words",
            ),
            (
                "Fever since Tuesday, fever since Tuesday, fever since Tuesday.",
                fact("x", &["s2"], present),
                "repeats",
            ),
        ] {
            let err = check(text, &t, &[f]).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
        }
        let empty = Support {
            segments: vec![],
            fact_texts: vec![],
            assertions: vec![],
        };
        assert!(check_statement("Fever.", &empty, &drugs)
            .unwrap_err()
            .contains("no evidence"));
    }
}
