//! Documentation-gap prompts: rules over a note's facts that point the clinician at what the
//! record does not yet say (a symptom without duration, SIRS criteria without an
//! interpretation, ...), each with the words that raised it.
//!
//! Rules are data: TOML files in `config/gaps/` that IT can add to; `rules.rs` describes the
//! language. Every file is checked whole at load, so a mistake is reported with its file, rule
//! and key before anything runs, never half-applied.
//!
//! What it may not do: change the note, decide anything clinical (a gap is a prompt the
//! clinician may dismiss), or log fact text (logs carry rule ids and counts only).

mod rules;

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::clinical::{Detail, Fact, Span, VitalKind};
pub use rules::Field;
use rules::{Component, Condition, Quantity, RawFile, Rule, Source, Unit};

/// One gap shown to the clinician.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gap {
    /// Id of the rule that found it.
    pub rule: String,
    pub title: String,
    pub message: String,
    /// The words that raised it, in transcript order.
    pub evidence: Vec<Span>,
    pub fact_ids: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum GapsError {
    #[error(
        "could not list the gap rules directory {dir}: {source}; create it or fix its permissions"
    )]
    ReadDir {
        dir: PathBuf,
        source: std::io::Error,
    },

    #[error("could not read the gap rule file {path}: {source}; check its permissions")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error(
        "the gap rule file {path} is not valid: {source}; fix the file (see src/gaps/rules.rs \
         for the keys a rule may have) or move it out of the directory"
    )]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },

    #[error("the gap rule file {path} has an invalid {detail}; fix the rule or move the file out of the directory")]
    Invalid {
        path: PathBuf,
        detail: rules::Invalid,
    },

    #[error("gap rule id {rule:?} is used in both {first} and {second}; rule ids must be unique")]
    Duplicate {
        rule: String,
        first: PathBuf,
        second: PathBuf,
    },
}

const BUILTIN: [(&str, &str); 2] = [
    (
        "(built-in) outpatient.toml",
        include_str!("../../config/gaps/outpatient.toml"),
    ),
    (
        "(built-in) sep1.toml",
        include_str!("../../config/gaps/sep1.toml"),
    ),
];

/// The loaded, checked rules.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    rules: Vec<(Rule, PathBuf)>,
}

impl RuleSet {
    /// Every `*.toml` file of `dir`, in file-name order.
    pub fn load_dir(dir: &Path) -> Result<RuleSet, GapsError> {
        let read_dir = |source| GapsError::ReadDir {
            dir: dir.to_path_buf(),
            source,
        };
        let mut paths: Vec<PathBuf> = fs::read_dir(dir)
            .map_err(read_dir)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(read_dir)?;
        paths.retain(|p| p.extension().is_some_and(|e| e == "toml") && p.is_file());
        paths.sort();
        let mut set = RuleSet::default();
        for path in paths {
            let text = fs::read_to_string(&path).map_err(|source| GapsError::Read {
                path: path.clone(),
                source,
            })?;
            set.add_str(&text, &path)?;
        }
        Ok(set)
    }

    /// Adds the rules of one file's text; `path` names it in errors.
    pub fn add_str(&mut self, text: &str, path: &Path) -> Result<(), GapsError> {
        let file: RawFile = toml::from_str(text).map_err(|source| GapsError::Parse {
            path: path.to_path_buf(),
            source: Box::new(source),
        })?;
        let mut compiled = Vec::with_capacity(file.rule.len());
        for raw in file.rule {
            let rule = rules::compile(raw).map_err(|detail| GapsError::Invalid {
                path: path.to_path_buf(),
                detail,
            })?;
            let earlier = self
                .rules
                .iter()
                .chain(compiled.iter())
                .find(|(r, _)| r.id == rule.id);
            if let Some((_, first)) = earlier {
                return Err(GapsError::Duplicate {
                    rule: rule.id,
                    first: first.clone(),
                    second: path.to_path_buf(),
                });
            }
            compiled.push((rule, path.to_path_buf()));
        }
        self.rules.extend(compiled);
        Ok(())
    }

    /// The rules compiled into the binary (the repository's `config/gaps/`).
    pub fn builtin() -> Result<RuleSet, GapsError> {
        let mut set = RuleSet::default();
        for (name, text) in BUILTIN {
            set.add_str(text, Path::new(name))?;
        }
        Ok(set)
    }

    /// The built-in rules with the files of `dir` (if it exists) on top; a file rule whose id
    /// matches a built-in one replaces it, so IT can retune a shipped rule.
    pub fn with_overrides(dir: &Path) -> Result<RuleSet, GapsError> {
        let mut set = Self::builtin()?;
        if !dir.is_dir() {
            return Ok(set);
        }
        let local = Self::load_dir(dir)?;
        set.rules
            .retain(|(rule, _)| !local.rules.iter().any(|(l, _)| l.id == rule.id));
        set.rules.extend(local.rules);
        Ok(set)
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|(r, _)| r.id.as_str())
    }
}

/// The rules shipped in the source tree (`config/gaps/`), for development and tests; an
/// appliance points [`RuleSet::load_dir`] at its configured directory.
pub fn default_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config")
        .join("gaps")
}

/// Runs every rule over the facts of one note.
pub fn evaluate(rules: &RuleSet, facts: &[Fact]) -> Vec<Gap> {
    let note = Note::new(facts);
    let mut gaps = Vec::new();
    for (rule, _) in &rules.rules {
        match &rule.for_each {
            None => gaps.extend(apply(rule, &note, None)),
            Some(each) => {
                for fact in facts.iter().filter(|f| note.matches(each, f).is_some()) {
                    gaps.extend(apply(rule, &note, Some(fact)));
                }
            }
        }
    }
    tracing::debug!(
        rules = rules.len(),
        gaps = gaps.len(),
        "gap rules evaluated"
    );
    gaps
}

/// What every rule may need about the note beyond single facts.
struct Note<'f> {
    facts: &'f [Fact],
    /// The patient's weight in kg, from the first weight stated.
    weight_kg: Option<f64>,
}

impl<'f> Note<'f> {
    fn new(facts: &'f [Fact]) -> Note<'f> {
        let weight_kg = facts.iter().find_map(|f| match &f.detail {
            Detail::Vital {
                vital: VitalKind::Weight,
                value,
                unit,
            } if f.assertion == crate::clinical::Assertion::Present => {
                let unit = Unit::parse(unit)?;
                unit.convert(first_number(value)?, Unit::Kg)
            }
            _ => None,
        });
        Note { facts, weight_kg }
    }

    /// Some(measured value, if the condition measures) when the fact matches every filter.
    fn matches(&self, c: &Condition, fact: &Fact) -> Option<Option<(f64, String)>> {
        if !c.kinds.contains(&fact.kind) {
            return None;
        }
        if let Some(allowed) = &c.assertions {
            if !allowed.contains(&fact.assertion) {
                return None;
            }
        }
        if c.text_matches.is_some() || c.text_not_matches.is_some() {
            let hay = haystack(fact);
            if c.text_matches.as_ref().is_some_and(|r| !r.is_match(&hay)) {
                return None;
            }
            if c.text_not_matches
                .as_ref()
                .is_some_and(|r| r.is_match(&hay))
            {
                return None;
            }
        }
        match (&fact.detail, c.vital) {
            (Detail::Vital { vital, .. }, Some(want)) if *vital != want => return None,
            (_, Some(_)) if !matches!(fact.detail, Detail::Vital { .. }) => return None,
            _ => {}
        }
        if let Some(topic) = &c.topic {
            match &fact.detail {
                Detail::Social { topic: t, .. } if t.to_lowercase() == *topic => {}
                _ => return None,
            }
        }
        if let Some(category) = c.plan_category {
            match &fact.detail {
                Detail::Plan { category: got } if *got == category => {}
                _ => return None,
            }
        }
        for (key, want) in &c.attributes {
            if !fact
                .attributes
                .get(key)
                .is_some_and(|v| v.eq_ignore_ascii_case(want))
            {
                return None;
            }
        }
        if !c.missing.is_empty() && !c.missing.iter().all(|f| is_missing(fact, *f) == Some(true)) {
            return None;
        }
        if !c.missing_any.is_empty()
            && !c
                .missing_any
                .iter()
                .any(|f| is_missing(fact, *f) == Some(true))
        {
            return None;
        }
        match &c.measure {
            None => Some(None),
            Some(m) => {
                let (value, unit) = self.measure(&m.source, c, fact)?;
                m.op.holds(value, m.value).then_some(Some((value, unit)))
            }
        }
    }

    /// The fact's number for a comparison, with the unit to show it in.
    fn measure(&self, source: &Source, c: &Condition, fact: &Fact) -> Option<(f64, String)> {
        match source {
            Source::Vital { unit, component } => {
                let Detail::Vital {
                    value, unit: said, ..
                } = &fact.detail
                else {
                    return None;
                };
                let number = match component {
                    Some(Component::Systolic) => first_number(value.split('/').next()?)?,
                    Some(Component::Diastolic) => first_number(value.split('/').nth(1)?)?,
                    None => first_number(value)?,
                };
                match unit {
                    None => Some((number, said.clone())),
                    // A vital stated without a unit is taken to be in the rule's unit only if
                    // the value is plausible for it; rather than guess, it does not match.
                    Some(to) => Some((
                        Unit::parse(said)?.convert(number, *to)?,
                        to.symbol().to_owned(),
                    )),
                }
            }
            Source::Text { quantity, per_kg } => {
                let text = &fact.text;
                let (value, mut unit, already_per_kg) = match quantity {
                    Quantity::Number => {
                        let from = c
                            .text_matches
                            .as_ref()
                            .and_then(|r| r.find(text))
                            .map_or(0, |m| m.end());
                        (first_number(&text[from..])?, String::new(), false)
                    }
                    Quantity::VolumeMl => {
                        let (ml, per_kg) = volume_ml(text)?;
                        (ml, "mL".to_owned(), per_kg)
                    }
                };
                if *per_kg && !already_per_kg {
                    let kg = self.weight_kg.filter(|w| *w > 0.0)?;
                    unit.push_str("/kg");
                    return Some((value / kg, unit));
                }
                if already_per_kg {
                    unit.push_str("/kg");
                }
                Some((value, unit))
            }
        }
    }
}

/// The fact's text and the names in its detail, for `text_matches`.
fn haystack(fact: &Fact) -> String {
    let mut parts: Vec<&str> = vec![&fact.text];
    match &fact.detail {
        Detail::Finding { name, site, .. } => {
            parts.push(name);
            parts.extend(site.as_deref());
        }
        Detail::Medication { name, .. } => parts.push(name),
        Detail::Allergy { substance, .. } => parts.push(substance),
        Detail::Social { topic, value } => {
            parts.push(topic);
            parts.push(value);
        }
        Detail::Vital { .. } | Detail::Plan { .. } | Detail::Text => {}
    }
    parts.join(" \n ")
}

/// Some(true) when the field is undocumented; None when the fact has no such field.
fn is_missing(fact: &Fact, field: Field) -> Option<bool> {
    let value = match (&fact.detail, field) {
        (Detail::Finding { duration, .. }, Field::Duration) => duration.is_none(),
        (Detail::Finding { onset, .. }, Field::Onset) => onset.is_none(),
        (Detail::Finding { severity, .. }, Field::Severity) => severity.is_none(),
        (Detail::Finding { laterality, .. }, Field::Laterality) => laterality.is_none(),
        (Detail::Finding { site, .. }, Field::Site) => site.is_none(),
        (Detail::Medication { dose, .. }, Field::Dose) => dose.is_none(),
        (Detail::Medication { route, .. }, Field::Route) => route.is_none(),
        (Detail::Medication { frequency, .. }, Field::Frequency) => frequency.is_none(),
        (Detail::Allergy { reaction, .. }, Field::Reaction) => reaction.is_none(),
        _ => return None,
    };
    Some(value)
}

/// Fixed patterns, compiled once; `None` cannot happen (tested) but is not a panic either.
fn number_re() -> Option<&'static Regex> {
    static RE: OnceLock<Option<Regex>> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"\d+(?:\.\d+)?").ok())
        .as_ref()
}

fn volume_re() -> Option<&'static Regex> {
    static RE: OnceLock<Option<Regex>> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r"(?i)(\d+(?:\.\d+)?)\s*(l|liters?|litres?|ml|milliliters?|millilitres?|cc)\b(\s*/\s*kg)?",
        )
        .ok()
    })
    .as_ref()
}

fn first_number(text: &str) -> Option<f64> {
    number_re()?.find(text)?.as_str().parse().ok()
}

/// A volume in mL, and whether it was stated per kg ("30 mL/kg").
fn volume_ml(text: &str) -> Option<(f64, bool)> {
    let caps = volume_re()?.captures(text)?;
    let number: f64 = caps.get(1)?.as_str().parse().ok()?;
    let unit = caps.get(2)?.as_str().to_ascii_lowercase();
    let ml = if unit.starts_with('l') {
        number * 1000.0
    } else {
        number
    };
    Some((ml, caps.get(3).is_some()))
}

fn apply(rule: &Rule, note: &Note<'_>, subject: Option<&Fact>) -> Option<Gap> {
    let mut evidence_facts: Vec<&Fact> = subject.into_iter().collect();
    let mut matched: Vec<String> = Vec::new();
    let mut values: Vec<String> = Vec::new();
    let mut held = 0;
    for c in &rule.when {
        let hits: Vec<(&Fact, Option<(f64, String)>)> = note
            .facts
            .iter()
            .filter_map(|f| note.matches(c, f).map(|m| (f, m)))
            .collect();
        if hits.len() < c.count_at_least {
            continue;
        }
        held += 1;
        if !matched.contains(&c.label) {
            matched.push(c.label.clone());
        }
        for (fact, measured) in hits {
            evidence_facts.push(fact);
            if let Some((value, unit)) = measured {
                values.push(format_value(value, &unit));
            }
        }
    }
    if held < rule.min_match {
        return None;
    }
    let suppressed = rule.unless.iter().any(|c| {
        note.facts
            .iter()
            .filter(|f| note.matches(c, f).is_some())
            .count()
            >= c.count_at_least
    });
    if suppressed {
        return None;
    }

    let mut seen = HashSet::new();
    evidence_facts.retain(|f| seen.insert(f.id.as_str()));
    let evidence: BTreeSet<Span> = evidence_facts
        .iter()
        .flat_map(|f| f.evidence.iter().cloned())
        .collect();
    let mut message = rule
        .message
        .replace("{matched}", &matched.join(", "))
        .replace("{values}", &values.join(", "));
    if let (Some(fact), Some(each)) = (subject, &rule.for_each) {
        let missing: Vec<&str> = each
            .missing
            .iter()
            .chain(&each.missing_any)
            .filter(|f| is_missing(fact, **f) == Some(true))
            .map(|f| f.name())
            .collect();
        message = message
            .replace("{subject}", &subject_name(fact))
            .replace("{missing}", &missing.join(" and "));
    }
    Some(Gap {
        rule: rule.id.clone(),
        title: rule.title.clone(),
        message,
        evidence: evidence.into_iter().collect(),
        fact_ids: evidence_facts.iter().map(|f| f.id.clone()).collect(),
    })
}

fn subject_name(fact: &Fact) -> String {
    match &fact.detail {
        Detail::Finding { name, .. } | Detail::Medication { name, .. } => name.clone(),
        Detail::Allergy { substance, .. } => substance.clone(),
        _ => fact.text.clone(),
    }
}

fn format_value(value: f64, unit: &str) -> String {
    let number = if (value - value.round()).abs() < 0.05 {
        format!("{}", value.round())
    } else {
        format!("{value:.1}")
    };
    match unit {
        "" => number,
        u if u.starts_with('°') || u == "%" => format!("{number}{u}"),
        u => format!("{number} {u}"),
    }
}

#[cfg(test)]
mod tests;
