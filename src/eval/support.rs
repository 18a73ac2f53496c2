//! An independent check of draft statements against the words they cite, for the ACI-Bench
//! harness. It deliberately shares no code with `draft::verify`: two implementations of "is this
//! supported" that agree are worth more than one that is tested against itself.
//!
//! A statement is supported when every number (number words normalized: "twenty five" = 25),
//! unit, drug name, dose (number + dose unit), laterality word and negation it contains also
//! occurs in the text of the segments it cites. Drug names come from a lexicon built here from
//! the data itself (words next to a dose such as "lisinopril 20 mg") plus a short list of common
//! drugs. Pure functions, no I/O.

use std::collections::{BTreeSet, HashSet};

/// Number words and their values; "hundred" and "thousand" multiply.
const UNITS: [(&str, u64); 20] = [
    ("zero", 0),
    ("one", 1),
    ("two", 2),
    ("three", 3),
    ("four", 4),
    ("five", 5),
    ("six", 6),
    ("seven", 7),
    ("eight", 8),
    ("nine", 9),
    ("ten", 10),
    ("eleven", 11),
    ("twelve", 12),
    ("thirteen", 13),
    ("fourteen", 14),
    ("fifteen", 15),
    ("sixteen", 16),
    ("seventeen", 17),
    ("eighteen", 18),
    ("nineteen", 19),
];
const TENS: [(&str, u64); 8] = [
    ("twenty", 20),
    ("thirty", 30),
    ("forty", 40),
    ("fifty", 50),
    ("sixty", 60),
    ("seventy", 70),
    ("eighty", 80),
    ("ninety", 90),
];

/// A token of normalized text: a lower-case word, a number in canonical form ("98.6", "120"), or
/// "%".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tok {
    Word(String),
    Num(String),
}

impl Tok {
    pub fn word(&self) -> Option<&str> {
        match self {
            Tok::Word(w) => Some(w),
            Tok::Num(_) => None,
        }
    }
    pub fn num(&self) -> Option<&str> {
        match self {
            Tok::Num(n) => Some(n),
            Tok::Word(_) => None,
        }
    }
}

fn canonical_number(text: &str) -> Option<String> {
    let value: f64 = text.parse().ok()?;
    Some(format_number(value))
}

fn format_number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

fn word_value(word: &str) -> Option<(u64, bool)> {
    UNITS
        .iter()
        .chain(TENS.iter())
        .find(|(w, _)| *w == word)
        .map(|(_, v)| (*v, TENS.iter().any(|(w, _)| *w == word)))
}

/// Lower-cases, splits "n't" into "not", and turns digits and number words into numbers:
/// "ninety eight point six" → 98.6, "one hundred and twenty" → 120, "1,000" → 1000.
pub fn normalize(text: &str) -> Vec<Tok> {
    let lower = text.to_lowercase().replace("n't", " not");
    // Raw pieces: runs of letters, runs of digits with at most one inner '.', and '%'.
    let chars: Vec<char> = lower.chars().collect();
    let mut raw: Vec<Tok> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_digit() {
            let mut s = String::new();
            while i < chars.len() {
                let d = chars[i];
                let next_digit = chars.get(i + 1).is_some_and(|n| n.is_ascii_digit());
                if d.is_ascii_digit() {
                    s.push(d);
                } else if d == '.' && next_digit && !s.contains('.') {
                    s.push('.');
                } else if d == ',' && next_digit && !s.contains('.') {
                    // thousands separator
                } else {
                    break;
                }
                i += 1;
            }
            if let Some(n) = canonical_number(&s) {
                raw.push(Tok::Num(n));
            }
        } else if c.is_alphabetic() {
            // Letters may carry digits ("o2", "b12", "a1c"): those digits are names, not numbers.
            let mut s = String::new();
            while i < chars.len() && chars[i].is_alphanumeric() {
                s.push(chars[i]);
                i += 1;
            }
            raw.push(Tok::Word(s));
        } else {
            if c == '%' {
                raw.push(Tok::Word("%".into()));
            } else if c == '.' {
                // Kept for "ninety eight . two" (ACI-Bench writes spoken decimals so); dropped
                // again after number words are combined.
                raw.push(Tok::Word(".".into()));
            }
            i += 1;
        }
    }
    combine_number_words(raw)
}

fn combine_number_words(raw: Vec<Tok>) -> Vec<Tok> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        // "a hundred and forty": "hundred" may open a number.
        let opening = match raw[i].word() {
            Some("hundred") => Some((100, false)),
            Some("thousand") => Some((1000, false)),
            Some(word) => word_value(word),
            None => None,
        };
        let Some((first, _)) = opening else {
            if raw[i].word() != Some(".") {
                out.push(raw[i].clone());
            }
            i += 1;
            continue;
        };
        // total = completed thousands, current = the group being built.
        let mut total = 0u64;
        let mut current = first;
        let mut last_was_tens = raw[i].word().and_then(word_value).is_some_and(|(_, t)| t);
        let mut j = i + 1;
        while j < raw.len() {
            let Some(word) = raw[j].word() else { break };
            match word {
                "hundred" => current = current.max(1) * 100,
                "thousand" => {
                    total += current.max(1) * 1000;
                    current = 0;
                }
                // "one hundred and twenty": "and" joins only when a number word follows.
                "and"
                    if raw
                        .get(j + 1)
                        .and_then(Tok::word)
                        .and_then(word_value)
                        .is_some() => {}
                // "five hundred five hundred": a number word that takes its own scale starts
                // a new number (a repetition), it does not add to this one.
                _ if word_value(word).is_some()
                    && matches!(
                        raw.get(j + 1).and_then(Tok::word),
                        Some("hundred" | "thousand")
                    )
                    && current >= 100 =>
                {
                    break
                }
                _ => match word_value(word) {
                    // "one eighteen over seventy": a unit then a teen is spoken hundreds too.
                    Some((v, false))
                        if j == i + 1 && (1..=9).contains(&current) && (10..=19).contains(&v) =>
                    {
                        current = current * 100 + v;
                        last_was_tens = false;
                    }
                    // "one twenty two over seventy": a unit then a tens word is spoken hundreds.
                    Some((v, true)) if j == i + 1 && (1..=9).contains(&current) => {
                        current = current * 100 + v;
                        last_was_tens = true;
                    }
                    // "twenty five": a unit after a tens word adds to it.
                    Some((v, false)) if last_was_tens && v < 10 && current % 10 == 0 => {
                        current += v;
                        last_was_tens = false;
                    }
                    // "one hundred twenty": tens or units after hundreds add.
                    Some((v, is_tens)) if current % 100 == 0 && current >= 100 => {
                        current += v;
                        last_was_tens = is_tens;
                    }
                    _ => break,
                },
            }
            j += 1;
        }
        let value = (total + current) as f64;
        let mut text = None;
        // "ninety eight point six": digits after "point" are read one by one.
        if matches!(raw.get(j).and_then(Tok::word), Some("point" | ".")) {
            let mut digits = String::new();
            let mut k = j + 1;
            while let Some((d, false)) = raw.get(k).and_then(Tok::word).and_then(word_value) {
                if d > 9 {
                    break;
                }
                digits.push_str(&d.to_string());
                k += 1;
            }
            if !digits.is_empty() {
                text = canonical_number(&format!("{}.{digits}", total + current));
                j = k;
            }
        }
        out.push(Tok::Num(text.unwrap_or_else(|| format_number(value))));
        i = j;
    }
    out
}

/// Canonical unit for a unit word, if it is one. Single letters ("g", "f", "c") count only right
/// after a number, where they cannot be anything else.
fn unit_of(word: &str, after_number: bool) -> Option<&'static str> {
    Some(match word {
        "mg" | "milligram" | "milligrams" | "mgs" => "mg",
        "mcg" | "microgram" | "micrograms" | "ug" => "mcg",
        "gram" | "grams" => "g",
        "g" if after_number => "g",
        "ml" | "milliliter" | "milliliters" | "millilitres" | "cc" | "ccs" => "ml",
        "unit" | "units" | "iu" => "units",
        "mmhg" => "mmhg",
        "bpm" => "bpm",
        "%" | "percent" => "%",
        "degree" | "degrees" | "fahrenheit" | "celsius" => "degrees",
        "f" | "c" if after_number => "degrees",
        "kg" | "kilogram" | "kilograms" | "kilos" => "kg",
        "lb" | "lbs" | "pound" | "pounds" => "lb",
        "cm" | "centimeter" | "centimeters" => "cm",
        "mm" | "millimeter" | "millimeters" => "mm",
        "meq" => "meq",
        "mmol" => "mmol",
        _ => return None,
    })
}

const DOSE_UNITS: [&str; 5] = ["mg", "mcg", "g", "ml", "units"];

/// Words a vital's conventional unit may be left out with: "blood pressure 120 over 80" supports
/// "120/80 mmHg".
fn implied_by(unit: &str) -> &'static [&'static str] {
    match unit {
        "mmhg" => &["pressure", "bp"],
        "bpm" => &["heart", "pulse", "hr"],
        "%" => &["oxygen", "saturation", "sat", "sats", "o2", "pulse", "ox"],
        "degrees" => &["temperature", "temp", "fever"],
        _ => &[],
    }
}

const NEGATIONS: [&str; 14] = [
    "no", "not", "denies", "denied", "deny", "without", "negative", "never", "none", "nor",
    "nothing", "nope", "nah", "neither",
];
const LATERALITY: [&str; 4] = ["left", "right", "bilateral", "both"];

/// Words that sit next to doses but are not drugs.
const NOT_DRUGS: &[&str] = &[
    "about",
    "also",
    "another",
    "around",
    "back",
    "been",
    "daily",
    "dose",
    "doses",
    "dosage",
    "each",
    "every",
    "extra",
    "from",
    "have",
    "higher",
    "increase",
    "increased",
    "decrease",
    "decreased",
    "continue",
    "start",
    "started",
    "starting",
    "prescribe",
    "prescribed",
    "take",
    "taking",
    "takes",
    "took",
    "tablet",
    "tablets",
    "capsule",
    "capsules",
    "pill",
    "pills",
    "once",
    "twice",
    "times",
    "that",
    "this",
    "your",
    "their",
    "them",
    "some",
    "then",
    "just",
    "like",
    "only",
    "same",
    "total",
    "more",
    "less",
    "than",
    "with",
    "over",
    "under",
    "maybe",
    "okay",
    "which",
    "what",
    "those",
    "these",
    "were",
    "will",
    "would",
    "could",
    "should",
    "been",
    "also",
    "being",
    "into",
    "onto",
    "upto",
    "anywhere",
    "between",
    "roughly",
    "approximately",
    "need",
    "needs",
    "give",
    "given",
    "giving",
    "going",
    "want",
    "prescription",
    "medication",
    "medications",
    "medicine",
    "milligrams",
    "micrograms",
    "units",
    "unit",
    "sure",
    "down",
    "double",
    "half",
    "dosing",
    "range",
    "usually",
    "still",
    "currently",
    "refill",
    "send",
    "initiate",
    "hundred",
    "thousand",
    "point",
    "there",
    "here",
    "mouth",
    "night",
    "morning",
    "evening",
    "week",
    "weeks",
    "days",
    "month",
    "months",
    "year",
    "years",
    "hour",
    "hours",
    "patient",
    "intake",
    "salt",
    "sodium",
    "exercises",
    "elevation",
    "inject",
    "injection",
    "cholesterol",
    "triglycerides",
    "glucose",
    "sugar",
    "level",
    "levels",
];

/// Drugs common in primary-care visits, so a drug the data never doses is still recognized.
const KNOWN_DRUGS: &[&str] = &[
    "acetaminophen",
    "tylenol",
    "ibuprofen",
    "motrin",
    "advil",
    "naproxen",
    "aleve",
    "meloxicam",
    "mobic",
    "aspirin",
    "celebrex",
    "celecoxib",
    "tramadol",
    "ultram",
    "oxycodone",
    "percocet",
    "hydrocodone",
    "vicodin",
    "norco",
    "morphine",
    "codeine",
    "gabapentin",
    "neurontin",
    "lyrica",
    "pregabalin",
    "flexeril",
    "cyclobenzaprine",
    "lisinopril",
    "losartan",
    "cozaar",
    "valsartan",
    "amlodipine",
    "norvasc",
    "hydrochlorothiazide",
    "hctz",
    "chlorthalidone",
    "metoprolol",
    "lopressor",
    "toprol",
    "carvedilol",
    "coreg",
    "atenolol",
    "propranolol",
    "lasix",
    "furosemide",
    "bumex",
    "bumetanide",
    "torsemide",
    "spironolactone",
    "entresto",
    "digoxin",
    "atorvastatin",
    "lipitor",
    "simvastatin",
    "zocor",
    "rosuvastatin",
    "crestor",
    "pravastatin",
    "metformin",
    "glucophage",
    "glipizide",
    "insulin",
    "lantus",
    "humalog",
    "novolog",
    "januvia",
    "jardiance",
    "farxiga",
    "ozempic",
    "trulicity",
    "victoza",
    "levothyroxine",
    "synthroid",
    "warfarin",
    "coumadin",
    "eliquis",
    "apixaban",
    "xarelto",
    "rivaroxaban",
    "plavix",
    "clopidogrel",
    "omeprazole",
    "prilosec",
    "pantoprazole",
    "protonix",
    "nexium",
    "famotidine",
    "pepcid",
    "zofran",
    "ondansetron",
    "prednisone",
    "medrol",
    "methylprednisolone",
    "dexamethasone",
    "albuterol",
    "flonase",
    "fluticasone",
    "singulair",
    "montelukast",
    "zyrtec",
    "cetirizine",
    "claritin",
    "loratadine",
    "allegra",
    "benadryl",
    "amoxicillin",
    "augmentin",
    "penicillin",
    "azithromycin",
    "zithromax",
    "keflex",
    "cephalexin",
    "doxycycline",
    "bactrim",
    "ciprofloxacin",
    "cipro",
    "levofloxacin",
    "flagyl",
    "metronidazole",
    "nitrofurantoin",
    "macrobid",
    "clindamycin",
    "fluconazole",
    "diflucan",
    "valacyclovir",
    "valtrex",
    "tamiflu",
    "prozac",
    "fluoxetine",
    "zoloft",
    "sertraline",
    "lexapro",
    "escitalopram",
    "citalopram",
    "celexa",
    "paxil",
    "cymbalta",
    "duloxetine",
    "wellbutrin",
    "bupropion",
    "trazodone",
    "xanax",
    "alprazolam",
    "ativan",
    "lorazepam",
    "klonopin",
    "ambien",
    "melatonin",
    "adderall",
    "ritalin",
    "topamax",
    "topiramate",
    "imitrex",
    "sumatriptan",
    "keppra",
    "depakote",
    "lamictal",
    "lithium",
    "seroquel",
    "abilify",
    "methotrexate",
    "humira",
    "plaquenil",
    "colchicine",
    "allopurinol",
    "flomax",
    "tamsulosin",
    "finasteride",
    "viagra",
    "cialis",
    "lidocaine",
    "epinephrine",
    "epipen",
    "miralax",
    "colace",
    "imodium",
    "sudafed",
    "mucinex",
    "robitussin",
    "tessalon",
    "nicotine",
    "chantix",
];

/// Drug names known to the independent check.
#[derive(Debug, Clone, Default)]
pub struct DrugLexicon {
    names: BTreeSet<String>,
}

impl DrugLexicon {
    /// The built-in list plus every word that names something dosed in `texts`: the word before
    /// a dose ("lisinopril 20 mg", "lasix to 80 milligrams") or after "mg of".
    pub fn build<'a>(texts: impl IntoIterator<Item = &'a str>) -> DrugLexicon {
        let mut names: BTreeSet<String> = KNOWN_DRUGS.iter().map(|s| s.to_string()).collect();
        let candidate = |tok: Option<&Tok>| -> Option<String> {
            let word = tok?.word()?;
            (word.len() >= 4
                && word.chars().all(|c| c.is_ascii_alphabetic())
                && !NOT_DRUGS.contains(&word)
                && !NEGATIONS.contains(&word)
                && !LATERALITY.contains(&word)
                && unit_of(word, false).is_none())
            .then(|| word.to_string())
        };
        for text in texts {
            let toks = normalize(text);
            for (i, tok) in toks.iter().enumerate() {
                if tok.num().is_none() {
                    continue;
                }
                let is_dose = toks
                    .get(i + 1)
                    .and_then(Tok::word)
                    .and_then(|w| unit_of(w, true))
                    .is_some_and(|u| DOSE_UNITS.contains(&u));
                // "222 mg/dL" is a lab value, not a dose.
                let concentration = matches!(
                    toks.get(i + 2).and_then(Tok::word),
                    Some("dl" | "deciliter" | "per" | "l" | "liter")
                );
                if !is_dose || concentration {
                    continue;
                }
                // "lisinopril 20", "lasix to 80", "lisinopril from 10"
                let before = i.checked_sub(1).map(|k| &toks[k]);
                let two_before = i.checked_sub(2).map(|k| &toks[k]);
                let joiner = before
                    .and_then(Tok::word)
                    .is_some_and(|w| matches!(w, "to" | "from" | "of" | "at" | "on" | "is"));
                if let Some(name) = candidate(before) {
                    names.insert(name);
                } else if joiner {
                    if let Some(name) = candidate(two_before) {
                        names.insert(name);
                    }
                }
                // "20 mg of prednisone"
                if toks.get(i + 2).and_then(Tok::word) == Some("of") {
                    if let Some(name) = candidate(toks.get(i + 3)) {
                        names.insert(name);
                    }
                }
            }
        }
        DrugLexicon { names }
    }

    pub fn contains(&self, word: &str) -> bool {
        self.names.contains(word)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The drug names among `toks`, in order, without repeats.
    pub fn find(&self, toks: &[Tok]) -> Vec<String> {
        let mut seen = Vec::new();
        for word in toks.iter().filter_map(Tok::word) {
            if self.contains(word) && !seen.iter().any(|s: &String| s == word) {
                seen.push(word.to_string());
            }
        }
        seen
    }
}

/// The facts of a piece of text the check compares.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Content {
    pub numbers: Vec<String>,
    pub units: Vec<String>,
    /// (number, unit) for dose units directly after a number.
    pub doses: Vec<(String, String)>,
    pub drugs: Vec<String>,
    pub laterality: Vec<String>,
    pub negated: bool,
    pub words: HashSet<String>,
}

pub fn content(text: &str, lexicon: &DrugLexicon) -> Content {
    let toks = normalize(text);
    let mut c = Content {
        drugs: lexicon.find(&toks),
        ..Content::default()
    };
    for (i, tok) in toks.iter().enumerate() {
        match tok {
            Tok::Num(n) => {
                if !c.numbers.contains(n) {
                    c.numbers.push(n.clone());
                }
                if let Some(unit) = toks
                    .get(i + 1)
                    .and_then(Tok::word)
                    .and_then(|w| unit_of(w, true))
                {
                    if DOSE_UNITS.contains(&unit) {
                        let dose = (n.clone(), unit.to_string());
                        if !c.doses.contains(&dose) {
                            c.doses.push(dose);
                        }
                    }
                }
            }
            Tok::Word(w) => {
                c.words.insert(w.clone());
                let after_number = i > 0 && toks[i - 1].num().is_some();
                if let Some(unit) = unit_of(w, after_number) {
                    if !c.units.iter().any(|u| u == unit) {
                        c.units.push(unit.to_string());
                    }
                }
                if LATERALITY.contains(&w.as_str()) && !c.laterality.contains(w) {
                    c.laterality.push(w.clone());
                }
                if NEGATIONS.contains(&w.as_str()) {
                    c.negated = true;
                }
            }
        }
    }
    // "mm hg" written apart
    if toks
        .windows(2)
        .any(|w| w[0].word() == Some("mm") && matches!(w[1].word(), Some("hg") | Some("mercury")))
    {
        c.units.retain(|u| u != "mm");
        if !c.units.iter().any(|u| u == "mmhg") {
            c.units.push("mmhg".into());
        }
    }
    // "beats per minute"
    if c.words.contains("beats")
        && c.words.contains("minute")
        && !c.units.iter().any(|u| u == "bpm")
    {
        c.units.push("bpm".into());
    }
    c
}

/// What was wrong with a statement; empty when it is supported.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Findings {
    pub numbers: Vec<String>,
    pub units: Vec<String>,
    pub doses: Vec<String>,
    pub drugs: Vec<String>,
    pub laterality: Vec<String>,
    pub negation: bool,
}

impl Findings {
    pub fn supported(&self) -> bool {
        self.numbers.is_empty()
            && self.units.is_empty()
            && self.doses.is_empty()
            && self.drugs.is_empty()
            && self.laterality.is_empty()
            && !self.negation
    }

    /// A short reason for the report, e.g. "number 40; dose 40 mg".
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for n in &self.numbers {
            parts.push(format!("number {n}"));
        }
        for u in &self.units {
            parts.push(format!("unit {u}"));
        }
        for d in &self.doses {
            parts.push(format!("dose {d}"));
        }
        for d in &self.drugs {
            parts.push(format!("drug {d}"));
        }
        for l in &self.laterality {
            parts.push(format!("laterality {l}"));
        }
        if self.negation {
            parts.push("negation".into());
        }
        parts.join("; ")
    }
}

/// Checks one statement against the text of the segments it cites.
pub fn check(statement: &str, evidence: &str, lexicon: &DrugLexicon) -> Findings {
    let s = content(statement, lexicon);
    let e = content(evidence, lexicon);
    let missing = |items: &[String], present: &dyn Fn(&String) -> bool| -> Vec<String> {
        items.iter().filter(|i| !present(i)).cloned().collect()
    };
    Findings {
        numbers: missing(&s.numbers, &|n| e.numbers.contains(n)),
        units: missing(&s.units, &|u| {
            e.units.contains(u) || implied_by(u).iter().any(|w| e.words.contains(*w))
        }),
        doses: s
            .doses
            .iter()
            .filter(|d| !e.doses.contains(d))
            .map(|(n, u)| format!("{n} {u}"))
            .collect(),
        drugs: missing(&s.drugs, &|d| e.words.contains(d)),
        laterality: missing(&s.laterality, &|l| {
            // "both knees" and "bilateral" say the same thing.
            let alternatives: &[&str] = match l.as_str() {
                "bilateral" | "both" => &["bilateral", "both"],
                "left" => &["left"],
                _ => &["right"],
            };
            alternatives.iter().any(|a| e.words.contains(*a))
        }),
        negation: s.negated && !e.negated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nums(text: &str) -> Vec<String> {
        normalize(text)
            .iter()
            .filter_map(|t| t.num().map(str::to_string))
            .collect()
    }

    #[test]
    fn number_words_become_numbers() {
        assert_eq!(nums("twenty five milligrams"), ["25"]);
        assert_eq!(nums("one hundred and twenty over eighty"), ["120", "80"]);
        assert_eq!(nums("ninety eight point six degrees"), ["98.6"]);
        assert_eq!(nums("two thousand units"), ["2000"]);
        assert_eq!(nums("a thousand milligrams"), ["1000"]);
        assert_eq!(nums("one eighteen over seventy two"), ["118", "72"]);
        assert_eq!(nums("five hundred five hundred milligrams"), ["500", "500"]);
        assert_eq!(
            nums("120/80, 1,000 mg, 98.6"),
            ["120", "80", "1000", "98.6"]
        );
        assert_eq!(nums("twenty-five"), ["25"]);
        // Two separate numbers stay separate: "one two" is not 12.
        assert_eq!(nums("one two"), ["1", "2"]);
        assert_eq!(nums("ten and no more"), ["10"]);
        assert_eq!(nums("2.5mg"), ["2.5"]);
        assert_eq!(nums("o2 sat 98%, a1c 7.2"), ["98", "7.2"]);
        // ACI-Bench's spoken forms
        assert_eq!(nums("ninety eight . two"), ["98.2"]);
        assert_eq!(nums("one twenty two over seventy"), ["122", "70"]);
        assert_eq!(nums("a hundred and forty over seventy"), ["140", "70"]);
        assert_eq!(nums("it was fine . two weeks"), ["2"]);
    }

    #[test]
    fn contractions_become_negations() {
        let c = content("he does n't smoke", &DrugLexicon::default());
        assert!(c.negated);
        let c = content("she doesn't smoke", &DrugLexicon::default());
        assert!(c.negated);
    }

    fn lexicon() -> DrugLexicon {
        DrugLexicon::build([
            "continue lisinopril 20 mg daily",
            "increase his lasix to 80 milligrams",
            "take 25 mg of zestoretic",
            "take 2 tablets",
            "cholesterol 222 mg/dL",
        ])
    }

    #[test]
    fn the_lexicon_learns_dosed_words_and_skips_verbs() {
        let l = lexicon();
        assert!(l.contains("lisinopril"));
        assert!(l.contains("lasix"));
        assert!(l.contains("zestoretic"));
        assert!(!l.contains("continue"));
        assert!(!l.contains("increase"));
        assert!(!l.contains("tablets"));
        assert!(!l.contains("cholesterol"));
        // from the built-in list
        assert!(l.contains("metformin"));
    }

    #[test]
    fn a_statement_restating_its_evidence_is_supported() {
        let f = check(
            "Lisinopril 20 mg daily.",
            "i take lisinopril twenty milligrams every day",
            &lexicon(),
        );
        assert!(f.supported(), "{f:?}");
        let f = check(
            "Blood pressure 120/80 mmHg.",
            "your blood pressure is 120 over 80",
            &lexicon(),
        );
        assert!(f.supported(), "{f:?}");
        let f = check("No fever.", "any fever ? no .", &lexicon());
        assert!(f.supported(), "{f:?}");
        let f = check("Pain in both knees.", "bilateral knee pain", &lexicon());
        assert!(f.supported(), "{f:?}");
    }

    #[test]
    fn changed_numbers_drugs_sides_and_negations_are_caught() {
        let l = lexicon();
        let f = check("Lisinopril 40 mg daily.", "lisinopril 20 mg", &l);
        assert_eq!(f.numbers, ["40"]);
        assert_eq!(f.doses, ["40 mg"]);
        let f = check("Metformin 20 mg.", "lisinopril 20 mg", &l);
        assert_eq!(f.drugs, ["metformin"]);
        let f = check("Lisinopril 20 mcg.", "lisinopril 20 mg", &l);
        assert_eq!(f.units, ["mcg"]);
        assert_eq!(f.doses, ["20 mcg"]);
        let f = check("Left knee pain.", "my right knee hurts", &l);
        assert_eq!(f.laterality, ["left"]);
        let f = check("Denies chest pain.", "i have chest pain", &l);
        assert!(f.negation);
        assert!(!f.supported());
        assert_eq!(f.describe(), "negation");
    }
}
