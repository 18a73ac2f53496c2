//! Fact recall for the ACI-Bench harness: the vitals, medications and allergies a reference note
//! states, kept when the dialogue states them too, and looked for in the draft.
//!
//! Parsing is by patterns over the reference note's plain text ("Blood pressure: 124/80 mmHg",
//! "Heart rate: 72 bpm", "lisinopril 20 mg", "ALLERGIES / Penicillin."), written for the notes in
//! ACI-Bench. A fact is "stated in the dialogue" when its value occurs in a turn that, with its
//! neighbours, also names the vital (or, for drugs and allergens, when the name occurs at all).
//! A fact is "in the draft" when one statement carries its value together with the vital's name
//! or unit (drugs: the name; allergens: the name in a statement about allergy). Pure, no I/O.

use std::sync::OnceLock;

use regex::Regex;
use serde::Serialize;

use super::support::{content, normalize, Content, DrugLexicon, Tok};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Vitals,
    Medications,
    Allergies,
}

/// One fact of a reference note.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RefFact {
    pub category: Category,
    /// e.g. "blood pressure 124/80", "lisinopril", "allergy penicillin", "no known allergies".
    pub label: String,
    /// Numbers that must appear (vitals).
    #[serde(skip)]
    numbers: Vec<String>,
    /// Words that name it in a dialogue turn or a statement (any one suffices).
    #[serde(skip)]
    names: &'static [&'static str],
    /// A drug or allergen name that must appear.
    #[serde(skip)]
    name: Option<String>,
    /// "No known allergies": a statement about allergy with a negation.
    #[serde(skip)]
    none_known: bool,
}

struct VitalPattern {
    label: &'static str,
    regex: &'static str,
    /// Words naming the vital in dialogue and draft; units count in the draft too.
    names: &'static [&'static str],
}

const VITALS: [VitalPattern; 6] = [
    VitalPattern {
        label: "blood pressure",
        regex: r"\b(\d{2,3})\s*/\s*(\d{2,3})\b",
        names: &["pressure", "bp", "mmhg"],
    },
    VitalPattern {
        label: "heart rate",
        regex: r"(?i)\b(?:heart rate|pulse|hr)\b[^0-9\n.]{0,25}?(\d{2,3})\b",
        names: &["heart", "pulse", "hr", "bpm"],
    },
    VitalPattern {
        label: "temperature",
        regex: r"(?i)\b(?:temperature|temp)\b[^0-9\n.]{0,25}?(\d{2,3}(?:\.\d+)?)",
        names: &["temperature", "temp", "fever", "degrees"],
    },
    VitalPattern {
        label: "oxygen saturation",
        regex: r"(?i)\b(?:oxygen saturation|o2 sat\w*|spo2|pulse ox\w*|saturation|sats?)\b[^0-9\n.]{0,25}?(\d{2,3})\b",
        names: &["oxygen", "saturation", "sat", "sats", "o2", "spo2", "%"],
    },
    VitalPattern {
        label: "respiratory rate",
        regex: r"(?i)\b(?:respiratory rate|respirations|respiration rate|rr)\b[^0-9\n.]{0,25}?(\d{1,2})\b",
        names: &["respiratory", "respirations", "breathing", "breaths"],
    },
    VitalPattern {
        label: "weight",
        regex: r"(?i)\b(?:weight|weighs|weighing|weighed)\b[^0-9\n.]{0,25}?(\d{2,3}(?:\.\d+)?)\s*(?:pounds|lbs?|kg|kilograms)\b",
        names: &["weight", "weigh", "weighs", "lb", "kg", "pounds"],
    },
];

/// Words in an allergy line that are not the allergen.
const ALLERGY_FILLER: &[&str] = &[
    "patient",
    "reports",
    "report",
    "history",
    "of",
    "causes",
    "caused",
    "allergies",
    "allergy",
    "allergic",
    "to",
    "has",
    "have",
    "a",
    "an",
    "the",
    "known",
    "drug",
    "reaction",
    "reactions",
    "with",
    "and",
    "mild",
    "severe",
    "she",
    "he",
    "is",
    "was",
    "states",
    "notes",
];

fn compiled() -> &'static [(usize, Regex)] {
    static CELL: OnceLock<Vec<(usize, Regex)>> = OnceLock::new();
    CELL.get_or_init(|| {
        VITALS
            .iter()
            .enumerate()
            // The patterns are constants checked by the tests below.
            .filter_map(|(i, v)| Regex::new(v.regex).ok().map(|r| (i, r)))
            .collect()
    })
}

fn allergic_to() -> Option<&'static Regex> {
    static CELL: OnceLock<Option<Regex>> = OnceLock::new();
    CELL.get_or_init(|| Regex::new(r"(?i)\ballerg(?:ic|y|ies) to ([^.;:\n]+)").ok())
        .as_ref()
}

fn canonical(n: &str) -> String {
    normalize(n)
        .into_iter()
        .find_map(|t| t.num().map(str::to_string))
        .unwrap_or_else(|| n.to_string())
}

/// The vitals, medications and allergies a reference note states.
pub fn reference_facts(note: &str, lexicon: &DrugLexicon) -> Vec<RefFact> {
    let mut facts: Vec<RefFact> = Vec::new();
    let push = |fact: RefFact, facts: &mut Vec<RefFact>| {
        if !facts.iter().any(|f| f.label == fact.label) {
            facts.push(fact);
        }
    };
    for (index, regex) in compiled() {
        let pattern = &VITALS[*index];
        for caps in regex.captures_iter(note) {
            let numbers: Vec<String> = caps
                .iter()
                .skip(1)
                .flatten()
                .map(|m| canonical(m.as_str()))
                .collect();
            if pattern.label == "blood pressure" {
                let values: Vec<f64> = numbers.iter().filter_map(|n| n.parse().ok()).collect();
                let plausible = matches!(values.as_slice(), [s, d]
                    if (70.0..=260.0).contains(s) && (30.0..=160.0).contains(d) && s > d);
                if !plausible {
                    continue;
                }
            }
            push(
                RefFact {
                    category: Category::Vitals,
                    label: format!("{} {}", pattern.label, numbers.join("/")),
                    numbers,
                    names: pattern.names,
                    name: None,
                    none_known: false,
                },
                &mut facts,
            );
        }
    }

    let allergies = allergy_facts(note);
    let allergens: Vec<String> = allergies.iter().filter_map(|f| f.name.clone()).collect();
    for name in lexicon.find(&normalize(note)) {
        if allergens.contains(&name) {
            continue;
        }
        push(
            RefFact {
                category: Category::Medications,
                label: name.clone(),
                numbers: Vec::new(),
                names: &[],
                name: Some(name),
                none_known: false,
            },
            &mut facts,
        );
    }
    for fact in allergies {
        push(fact, &mut facts);
    }
    facts
}

fn allergen_fact(name: String) -> RefFact {
    RefFact {
        category: Category::Allergies,
        label: format!("allergy {name}"),
        numbers: Vec::new(),
        names: &[],
        name: Some(name),
        none_known: false,
    }
}

fn allergy_facts(note: &str) -> Vec<RefFact> {
    let mut facts = Vec::new();
    let lines: Vec<&str> = note.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if line.trim() != "ALLERGIES" {
            continue;
        }
        let Some(body) = lines[i + 1..].iter().find(|l| !l.trim().is_empty()) else {
            continue;
        };
        let toks = normalize(body);
        let words: Vec<&str> = toks.iter().filter_map(Tok::word).collect();
        if words
            .iter()
            .any(|w| matches!(*w, "no" | "denies" | "none" | "nkda" | "nka"))
        {
            facts.push(RefFact {
                category: Category::Allergies,
                label: "no known allergies".into(),
                numbers: Vec::new(),
                names: &[],
                name: None,
                none_known: true,
            });
        } else if let Some(word) = words.iter().find(|w| !ALLERGY_FILLER.contains(*w)) {
            facts.push(allergen_fact((*word).to_string()));
        }
    }
    if let Some(regex) = allergic_to() {
        for caps in regex.captures_iter(note) {
            let Some(list) = caps.get(1) else { continue };
            for part in list
                .as_str()
                .split([',', '/'])
                .flat_map(|p| p.split(" and "))
            {
                let toks = normalize(part);
                if let Some(word) = toks
                    .iter()
                    .filter_map(Tok::word)
                    .find(|w| !ALLERGY_FILLER.contains(w) && w.len() > 2)
                {
                    let fact = allergen_fact(word.to_string());
                    if !facts.iter().any(|f: &RefFact| f.label == fact.label) {
                        facts.push(fact);
                    }
                }
            }
        }
    }
    facts
}

fn has_name(c: &Content, names: &[&str]) -> bool {
    names
        .iter()
        .any(|n| c.words.contains(*n) || c.units.iter().any(|u| u == n))
}

fn mentions_allergy(c: &Content) -> bool {
    c.words.iter().any(|w| w.starts_with("allerg")) || c.words.contains("nkda")
}

/// Whether the dialogue (one text per turn) states `fact`.
pub fn stated_in(fact: &RefFact, turns: &[Content]) -> bool {
    if fact.none_known {
        return turns.iter().any(mentions_allergy);
    }
    if let Some(name) = &fact.name {
        return turns.iter().any(|t| t.words.contains(name));
    }
    turns.iter().enumerate().any(|(i, turn)| {
        fact.numbers.iter().all(|n| turn.numbers.contains(n))
            && turns[i.saturating_sub(1)..(i + 2).min(turns.len())]
                .iter()
                .any(|t| has_name(t, fact.names))
    })
}

/// Whether one of the draft's statements states `fact`.
pub fn found_in(fact: &RefFact, statements: &[Content]) -> bool {
    statements.iter().any(|s| {
        if fact.none_known {
            mentions_allergy(s) && s.negated
        } else if let Some(name) = &fact.name {
            s.words.contains(name) && (fact.category != Category::Allergies || mentions_allergy(s))
        } else {
            fact.numbers.iter().all(|n| s.numbers.contains(n)) && has_name(s, fact.names)
        }
    })
}

/// The normalized content of each text, for [`stated_in`] and [`found_in`].
pub fn contents<'a>(
    texts: impl IntoIterator<Item = &'a str>,
    lexicon: &DrugLexicon,
) -> Vec<Content> {
    texts.into_iter().map(|t| content(t, lexicon)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOTE: &str =
        "CHIEF COMPLAINT\n\nKnee pain.\n\nMEDICATIONS\n\nLisinopril 20 mg daily.\n\n\
ALLERGIES\n\nPenicillin.\n\nVITALS\n\nBlood pressure: 124/80 mmHg\nHeart rate: 72 bpm\n\
Oxygen saturation: 98% on room air\nBody Temperature: 98.6 degrees F.\nRespiratory rate: 16\n\
Weight: 180 lbs\n\nShe was seen on 12/2019.\n\nPLAN\n\nIncrease metformin to 1000 mg twice a day.";

    fn lexicon() -> DrugLexicon {
        DrugLexicon::build([NOTE])
    }

    #[test]
    fn every_vital_pattern_compiles() {
        assert_eq!(compiled().len(), VITALS.len());
        assert!(allergic_to().is_some());
    }

    #[test]
    fn reference_vitals_medications_and_allergies_are_parsed() {
        let facts = reference_facts(NOTE, &lexicon());
        let labels: Vec<&str> = facts.iter().map(|f| f.label.as_str()).collect();
        for expected in [
            "blood pressure 124/80",
            "heart rate 72",
            "oxygen saturation 98",
            "temperature 98.6",
            "respiratory rate 16",
            "weight 180",
            "lisinopril",
            "metformin",
            "allergy penicillin",
        ] {
            assert!(
                labels.contains(&expected),
                "{expected} missing from {labels:?}"
            );
        }
        // Dates are not blood pressures, and an allergen is not a medication.
        assert!(!labels.iter().any(|l| l.contains("12/")), "{labels:?}");
        assert!(!labels.contains(&"penicillin"), "{labels:?}");
    }

    #[test]
    fn allergy_phrasings() {
        let facts = allergy_facts(
            "ALLERGIES\n\nNo known allergies.\n\nHe is allergic to percocet, vicodin and regulin.",
        );
        let labels: Vec<&str> = facts.iter().map(|f| f.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "no known allergies",
                "allergy percocet",
                "allergy vicodin",
                "allergy regulin"
            ]
        );
    }

    #[test]
    fn stated_needs_the_value_near_the_vital_name_and_found_needs_both_in_one_statement() {
        let l = lexicon();
        let facts = reference_facts(NOTE, &l);
        let bp = facts
            .iter()
            .find(|f| f.label == "blood pressure 124/80")
            .unwrap();
        let turns = contents(
            [
                "let me check your blood pressure",
                "okay",
                "it is 124 over 80",
            ],
            &l,
        );
        // the keyword is two turns away from the value
        assert!(!stated_in(bp, &turns));
        let turns = contents(["what is my blood pressure ?", "it is 124 over 80"], &l);
        assert!(stated_in(bp, &turns));
        assert!(found_in(bp, &contents(["Blood pressure 124/80 mmHg."], &l)));
        assert!(!found_in(
            bp,
            &contents(["Lisinopril 124 mg.", "80 years old"], &l)
        ));

        let penicillin = facts
            .iter()
            .find(|f| f.label == "allergy penicillin")
            .unwrap();
        assert!(found_in(
            penicillin,
            &contents(["Allergic to penicillin."], &l)
        ));
        assert!(!found_in(penicillin, &contents(["Takes penicillin."], &l)));
    }
}
