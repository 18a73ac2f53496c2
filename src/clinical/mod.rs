//! Clinical extraction: the facts a note is made of, found deterministically in a diarized
//! transcript, each with the exact words that support it.
//!
//! Extraction is the trusted half of drafting: every fact points at a segment and a character
//! range of that segment's text, so the verifier and the review screen can check it against the
//! words. The LLM may only rephrase and order facts found here. Pure code, no I/O.

use std::collections::BTreeMap;

mod collect;
mod context;
mod findings;
mod meds;
mod plan;
mod qa;
mod text;
mod vitals;

use serde::{Deserialize, Serialize};

/// A character range (Unicode scalar values, end exclusive) of one transcript segment's text.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Span {
    pub segment: String,
    pub start: usize,
    pub end: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FactKind {
    ChiefComplaint,
    Symptom,
    /// A symptom or finding the patient or clinician explicitly denies.
    PertinentNegative,
    MedicalHistory,
    Vital,
    ExamFinding,
    /// Lab, imaging and other results the clinician reads out.
    Result,
    Medication,
    Allergy,
    SocialHistory,
    FamilyHistory,
    Assessment,
    Plan,
}

/// How the words assert the fact (ConText: negation, uncertainty, history, experiencer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Assertion {
    Present,
    Absent,
    Possible,
    Historical,
    /// About someone other than the patient (e.g. family history).
    OtherPerson,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Laterality {
    Left,
    Right,
    Bilateral,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VitalKind {
    BloodPressure,
    HeartRate,
    Temperature,
    OxygenSaturation,
    RespiratoryRate,
    Weight,
    Height,
    Bmi,
    PainScore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanCategory {
    Test,
    Prescription,
    MedicationChange,
    Referral,
    FollowUp,
    ReturnPrecaution,
    Procedure,
    Counseling,
    Other,
}

/// The normalized content of a fact; which variant goes with which [`FactKind`] is fixed by the
/// extractor (e.g. `Vital` only for `FactKind::Vital`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Detail {
    Finding {
        /// Normalized name, e.g. "knee pain", "shortness of breath".
        name: String,
        onset: Option<String>,
        duration: Option<String>,
        severity: Option<String>,
        laterality: Option<Laterality>,
        site: Option<String>,
    },
    Vital {
        vital: VitalKind,
        /// As a clinician writes it: "120/80", "98.6", "97".
        value: String,
        /// "mmHg", "bpm", "°F", "°C", "%", "breaths/min", "lb", "kg", "cm", "in", "kg/m2", "/10".
        unit: String,
    },
    Medication {
        /// Generic or brand name as said, lower case.
        name: String,
        dose: Option<String>,
        route: Option<String>,
        frequency: Option<String>,
    },
    Allergy {
        substance: String,
        reaction: Option<String>,
    },
    Social {
        /// "tobacco", "alcohol", "drugs", "occupation", "exercise", "living situation", ...
        topic: String,
        value: String,
    },
    Plan {
        category: PlanCategory,
    },
    /// Facts whose content is their `text` (assessment, history, results).
    Text,
}

/// One extracted fact. `text` is the clinician-readable wording the composer uses when no LLM
/// rephrases it; it only contains words, numbers and units that occur in `evidence`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fact {
    /// "f1", "f2", ... in order of first evidence.
    pub id: String,
    pub kind: FactKind,
    pub assertion: Assertion,
    pub text: String,
    pub detail: Detail,
    pub evidence: Vec<Span>,
    /// Extra normalized attributes a rule may test (e.g. "unit_system" = "imperial").
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

/// Finds every fact in a transcript. Segments spoken by the clinician carry exam findings,
/// assessment and plan; the patient's answers to the clinician's questions are paired with them.
pub fn extract(transcript: &crate::transcript::Transcript) -> Vec<Fact> {
    let segs: Vec<text::Seg> = transcript
        .segments
        .iter()
        .enumerate()
        .map(|(i, segment)| text::Seg::new(i, segment))
        .collect();
    let roles = collect::roles_for(&segs);
    let doc = collect::Doc { segs, roles };
    let mut out = collect::Collector::default();
    vitals::extract(&doc, &mut out);
    meds::extract(&doc, &mut out);
    findings::extract(&doc, &mut out);
    plan::extract(&doc, &mut out);
    let mut facts = out.finish(&doc);
    drop_duplicated_readings(&mut facts);
    facts
}

/// Removes facts another fact already states better, then renumbers: the reaction of an
/// allergy is not a symptom of the visit, the allergen is not a medication the patient takes,
/// and a drug being started belongs in the plan, not in the list of current medications.
fn drop_duplicated_readings(facts: &mut Vec<Fact>) {
    let within = |inner: &Fact, outer: &Fact| {
        inner.evidence.iter().all(|i| {
            outer
                .evidence
                .iter()
                .any(|o| o.segment == i.segment && o.start <= i.start && i.end <= o.end)
        })
    };
    let allergies: Vec<Fact> = facts
        .iter()
        .filter(|f| f.kind == FactKind::Allergy && f.assertion == Assertion::Present)
        .cloned()
        .collect();
    let planned_drugs: Vec<String> = facts
        .iter()
        .filter(|f| f.kind == FactKind::Plan)
        .filter_map(|f| f.attributes.get("drug").cloned())
        .collect();
    facts.retain(|fact| match (&fact.kind, &fact.detail) {
        (FactKind::Symptom, _) => !allergies.iter().any(|a| within(fact, a)),
        (FactKind::Medication, Detail::Medication { name, .. }) => {
            let allergen = allergies.iter().any(|a| match &a.detail {
                Detail::Allergy { substance, .. } => substance.eq_ignore_ascii_case(name),
                _ => false,
            });
            let started = fact.attributes.get("status").map(String::as_str) == Some("start")
                && planned_drugs.iter().any(|d| d.eq_ignore_ascii_case(name));
            !allergen && !started
        }
        _ => true,
    });
    for (index, fact) in facts.iter_mut().enumerate() {
        fact.id = format!("f{}", index + 1);
    }
}

/// The drug names (lower case, as in the lexicon) a text mentions. The verifier uses it to hold
/// every drug a statement names to its evidence.
/// Returned as written (not the canonical name), so "Lasix" is looked for as "lasix".
pub fn drug_names_in(text: &str) -> Vec<String> {
    let tokens = text::tokenize(text);
    meds::DRUGS
        .find(&tokens, 0..tokens.len())
        .into_iter()
        .map(|m| {
            tokens[m.tokens]
                .iter()
                .map(|t| t.text.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// `text` with every spoken number written in digits, as the extractor reads it ("one twenty
/// eight" → 128, "ninety eight point six" → 98.6, a transcribed "ninety seven . two" → 97.2,
/// "one hundred milligrams" → "100 milligrams"); other words are kept, lower-cased. A verifier
/// holding a statement's numbers and doses to its evidence needs this reading: "Heart rate 72
/// bpm." rests on "seventy two", which no single word of the evidence says.
pub fn spoken_numbers_as_digits(text: &str) -> String {
    let tokens = text::tokenize(text);
    let mut words: Vec<String> = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        let spoken = tokens[i].kind == text::TokenKind::Word;
        match text::read_number(&tokens, i, tokens.len()).filter(|_| spoken) {
            Some(number) => {
                let number = vitals::decimal_split_by_period(&tokens, &number).unwrap_or(number);
                words.push(number.digits);
                i = number.tokens.end.max(i + 1);
            }
            None => {
                words.push(tokens[i].text.clone());
                i += 1;
            }
        }
    }
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::text::{read_number, tokenize, TokenKind};
    use super::*;

    #[test]
    fn spoken_numbers_are_written_in_digits() {
        assert_eq!(
            spoken_numbers_as_digits(
                "BP one twenty eight over seventy two , temp ninety seven . two"
            ),
            "bp 128 over 72 , temp 97.2"
        );
        assert_eq!(
            spoken_numbers_as_digits("cozaar one hundred milligrams , 20 mg of lasix"),
            "cozaar 100 milligrams , 20 mg of lasix"
        );
        assert_eq!(spoken_numbers_as_digits("a fine day"), "a fine day");
    }

    /// Every number in `text`, digits or words, as digit strings.
    fn numbers_in(text: &str) -> Vec<String> {
        let tokens = tokenize(text);
        let mut found = Vec::new();
        for i in 0..tokens.len() {
            if let Some(number) = read_number(&tokens, i, tokens.len()) {
                if let Some(split) = vitals::decimal_split_by_period(&tokens, &number) {
                    found.push(split.digits);
                }
                found.push(number.digits.trim_end_matches('+').to_string());
            }
            if tokens[i].kind == TokenKind::Number {
                found.push(tokens[i].text.trim_end_matches('+').to_string());
            }
        }
        found
    }

    #[test]
    fn an_allergy_is_neither_a_symptom_nor_a_medication_and_a_new_drug_is_planned_once() {
        let facts = extract(
            &Transcript::from_dialogue(
                "[doctor] any allergies to medications ?\n[patient] yes , penicillin gives me hives .\n\
                 [doctor] i will start lisinopril ten milligrams once a day .",
            )
            .unwrap(),
        );
        let kinds: Vec<(FactKind, &str)> =
            facts.iter().map(|f| (f.kind, f.text.as_str())).collect();
        assert!(
            kinds.iter().any(|(k, _)| *k == FactKind::Allergy),
            "{kinds:?}"
        );
        assert!(
            !kinds.iter().any(|(k, _)| *k == FactKind::Symptom),
            "{kinds:?}"
        );
        assert!(
            !kinds.iter().any(|(k, _)| *k == FactKind::Medication),
            "{kinds:?}"
        );
        assert!(
            kinds
                .iter()
                .any(|(k, t)| *k == FactKind::Plan && t.contains("Lisinopril 10 mg")),
            "{kinds:?}"
        );
        let ids: Vec<&str> = facts.iter().map(|f| f.id.as_str()).collect();
        let expected: Vec<String> = (1..=facts.len()).map(|i| format!("f{i}")).collect();
        assert_eq!(ids, expected);
    }

    #[test]
    fn drug_names_are_found_as_written() {
        assert_eq!(
            drug_names_in("Increase Lasix to 80 mg; continue lisinopril."),
            ["lasix", "lisinopril"]
        );
        assert!(drug_names_in("Drink fluids.").is_empty());
    }
    use crate::transcript::Transcript;

    /// ACI-Bench dialogues of one split, from the copy in the repository's `data/aci-bench`.
    fn aci_bench(split: &str) -> Vec<(String, String, String)> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("data/aci-bench")
            .join(format!("{split}.csv"));
        let mut reader = csv::Reader::from_path(&path).unwrap_or_else(|e| {
            panic!(
                "ACI-Bench {split} set not readable at {}: {e}; the precision test needs it",
                path.display()
            )
        });
        reader
            .records()
            .map(|r| {
                let r = r.expect("csv record");
                (r[1].to_string(), r[2].to_string(), r[3].to_string())
            })
            .collect()
    }

    fn digit_runs(text: &str) -> Vec<String> {
        text.split(|c: char| !c.is_ascii_digit())
            .filter(|run| !run.is_empty())
            .map(str::to_string)
            .collect()
    }

    fn drugs_in(text: &str) -> Vec<String> {
        let tokens = tokenize(text);
        meds::DRUGS
            .find(&tokens, 0..tokens.len())
            .into_iter()
            .map(|m| {
                tokens[m.tokens]
                    .iter()
                    .map(|t| t.text.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    }

    fn evidence_text(transcript: &Transcript, fact: &Fact) -> String {
        fact.evidence
            .iter()
            .map(|span| {
                let segment = transcript
                    .segment(&span.segment)
                    .expect("cited segment exists");
                segment
                    .text
                    .chars()
                    .skip(span.start)
                    .take(span.end - span.start)
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join(" | ")
    }

    /// Numbers and drug names in a fact's wording that its evidence does not contain.
    fn unsupported(transcript: &Transcript, fact: &Fact) -> Vec<String> {
        let evidence = evidence_text(transcript, fact);
        let mut numbers = numbers_in(&evidence);
        numbers.extend(digit_runs(&evidence));
        let drugs = drugs_in(&evidence);
        let mut missing: Vec<String> = digit_runs(&fact.text)
            .into_iter()
            .filter(|run| !numbers.iter().any(|n| n.contains(run.as_str())))
            .collect();
        missing.extend(
            drugs_in(&fact.text)
                .into_iter()
                .filter(|d| !drugs.contains(d)),
        );
        missing
    }

    #[test]
    fn every_number_and_drug_in_valid_facts_is_in_its_evidence() {
        let dialogues = aci_bench("valid");
        assert_eq!(dialogues.len(), 20, "ACI-Bench valid has 20 encounters");
        let mut failures = Vec::new();
        let mut total = 0;
        for (encounter, dialogue, _) in &dialogues {
            let transcript = Transcript::from_dialogue(dialogue).expect("dialogue parses");
            let facts = extract(&transcript);
            total += facts.len();
            for fact in &facts {
                assert!(
                    !fact.evidence.is_empty(),
                    "{encounter} {} has no evidence",
                    fact.id
                );
                for span in &fact.evidence {
                    let segment = transcript.segment(&span.segment).expect("segment exists");
                    assert!(span.start < span.end && span.end <= segment.text.chars().count());
                }
                let missing = unsupported(&transcript, fact);
                if !missing.is_empty() {
                    failures.push(format!(
                        "{encounter} {}: {:?} not in evidence «{}» for «{}»",
                        fact.id,
                        missing,
                        evidence_text(&transcript, fact),
                        fact.text
                    ));
                }
            }
        }
        assert!(total > 200, "only {total} facts over 20 dialogues");
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn fact_ids_follow_first_evidence() {
        let transcript = Transcript::from_dialogue(
            "[doctor] any fever ?\n[patient] no .\n[doctor] your heart rate is 72 .",
        )
        .expect("dialogue");
        let facts = extract(&transcript);
        let ids: Vec<&str> = facts.iter().map(|f| f.id.as_str()).collect();
        let expected: Vec<String> = (1..=facts.len()).map(|i| format!("f{i}")).collect();
        assert_eq!(ids, expected);
        assert!(facts.windows(2).all(|w| {
            let segment = |f: &Fact| f.evidence[0].segment[1..].parse::<usize>().unwrap_or(0);
            (segment(&w[0]), w[0].evidence[0].start) <= (segment(&w[1]), w[1].evidence[0].start)
        }));
    }
}
