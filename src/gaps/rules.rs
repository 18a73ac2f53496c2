//! The rule files: their TOML shape (`Raw*`, mirroring the file, unknown keys refused) and the
//! checked, compiled form the engine runs.
//!
//! A file holds `[[rule]]` tables:
//!
//! ```toml
//! [[rule]]
//! id = "sep1-sirs-without-interpretation"     # a-z, 0-9, '-'; unique over all files
//! title = "SIRS criteria without interpretation"
//! message = "Two SIRS criteria are documented ({matched}: {values}) but ..."
//! for_each = { kind = "symptom", missing = ["duration", "onset"] }   # optional
//! when = [ { kind = "vital", vital = "heart_rate", op = ">", value = 90 }, ... ]
//! min_match = 2                                # of `when`; default: all of them
//! unless = [ { kind = "assessment", assertion = "any", text_matches = "sepsis|sirs" } ]
//! ```
//!
//! Without `for_each` a rule yields at most one gap per note; with it, one per fact that
//! matches `for_each` (and the rest of the rule). A condition holds when at least
//! `count_at_least` (default 1) facts match all of its filters:
//!
//! | key | meaning |
//! |---|---|
//! | `kind` | fact kind or list of kinds (`symptom`, `vital`, `assessment`, `plan`, ...) |
//! | `assertion` | `present` (default), `absent`, `possible`, `historical`, `other_person`, a list, or `any` |
//! | `text_matches`, `text_not_matches` | regex (case-insensitive) over the fact's text and names |
//! | `vital` | vital kind (`kind = "vital"` only) |
//! | `component` | `systolic` or `diastolic` (blood pressure only) |
//! | `topic` | social-history topic, e.g. `tobacco` |
//! | `plan_category` | plan category, e.g. `counseling` |
//! | `attributes` | table of attribute values the fact must have, e.g. `{ status = "start" }` |
//! | `missing` | detail fields that must all be undocumented (`duration`, `onset`, `severity`, `laterality`, `site`, `dose`, `route`, `frequency`, `reaction`) |
//! | `missing_any` | detail fields of which at least one is undocumented |
//! | `op`, `value` | compare a number: `>`, `>=`, `<`, `<=`, `==`, `!=` |
//! | `unit` | unit of `value`: `C`/`F` for temperature, `kg`/`lb` for weight, `cm`/`in` for height |
//! | `quantity` | for non-vitals, what number to read from the text: `number` (first after the `text_matches` match) or `volume_ml` (a volume in L, mL or cc) |
//! | `per_kg` | divide the quantity by the weight stated in the note (no weight: no match) |
//! | `label` | name of the condition in `{matched}` |
//!
//! Messages may use `{matched}` (labels of the `when` conditions that held), `{values}` (their
//! numbers with units), and with `for_each`: `{subject}` (the fact's name) and `{missing}` (its
//! undocumented fields).

use std::collections::BTreeMap;
use std::fmt;

use regex::{Regex, RegexBuilder};
use serde::Deserialize;

use crate::clinical::{Assertion, FactKind, PlanCategory, VitalKind};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFile {
    #[serde(default)]
    pub rule: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    pub id: String,
    pub title: String,
    pub message: String,
    pub for_each: Option<RawCondition>,
    #[serde(default)]
    pub when: Vec<RawCondition>,
    pub min_match: Option<usize>,
    #[serde(default)]
    pub unless: Vec<RawCondition>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn items(&self) -> Vec<&str> {
        match self {
            OneOrMany::One(s) => vec![s.as_str()],
            OneOrMany::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCondition {
    pub kind: OneOrMany,
    pub assertion: Option<OneOrMany>,
    pub label: Option<String>,
    pub text_matches: Option<String>,
    pub text_not_matches: Option<String>,
    pub vital: Option<VitalKind>,
    pub component: Option<Component>,
    pub topic: Option<String>,
    pub plan_category: Option<PlanCategory>,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub missing: Vec<Field>,
    #[serde(default)]
    pub missing_any: Vec<Field>,
    pub op: Option<Op>,
    pub value: Option<f64>,
    pub unit: Option<String>,
    pub quantity: Option<Quantity>,
    #[serde(default)]
    pub per_kg: bool,
    pub count_at_least: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    Systolic,
    Diastolic,
}

/// A detail field of a finding, medication or allergy that may be undocumented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    Duration,
    Onset,
    Severity,
    Laterality,
    Site,
    Dose,
    Route,
    Frequency,
    Reaction,
}

impl Field {
    pub fn name(self) -> &'static str {
        match self {
            Field::Duration => "duration",
            Field::Onset => "onset",
            Field::Severity => "severity",
            Field::Laterality => "laterality",
            Field::Site => "site",
            Field::Dose => "dose",
            Field::Route => "route",
            Field::Frequency => "frequency",
            Field::Reaction => "reaction",
        }
    }

    fn of_findings(self) -> bool {
        matches!(
            self,
            Field::Duration | Field::Onset | Field::Severity | Field::Laterality | Field::Site
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Op {
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = "==")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
}

impl Op {
    pub fn holds(self, left: f64, right: f64) -> bool {
        match self {
            Op::Gt => left > right,
            Op::Ge => left >= right,
            Op::Lt => left < right,
            Op::Le => left <= right,
            Op::Eq => (left - right).abs() < 1e-9,
            Op::Ne => (left - right).abs() >= 1e-9,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quantity {
    Number,
    VolumeMl,
}

/// Units a vital's value may be compared in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Celsius,
    Fahrenheit,
    Kg,
    Lb,
    Cm,
    Inch,
}

impl Unit {
    pub fn parse(s: &str) -> Option<Unit> {
        match s
            .trim()
            .trim_start_matches('°')
            .to_ascii_lowercase()
            .as_str()
        {
            "c" | "celsius" => Some(Unit::Celsius),
            "f" | "fahrenheit" => Some(Unit::Fahrenheit),
            "kg" | "kgs" | "kilograms" => Some(Unit::Kg),
            "lb" | "lbs" | "pounds" => Some(Unit::Lb),
            "cm" => Some(Unit::Cm),
            "in" | "inches" => Some(Unit::Inch),
            _ => None,
        }
    }

    /// `value` in `self` converted to `to`; None when the two measure different things.
    pub fn convert(self, value: f64, to: Unit) -> Option<f64> {
        use Unit::*;
        Some(match (self, to) {
            (a, b) if a == b => value,
            (Fahrenheit, Celsius) => (value - 32.0) * 5.0 / 9.0,
            (Celsius, Fahrenheit) => value * 9.0 / 5.0 + 32.0,
            (Lb, Kg) => value * 0.453_592_37,
            (Kg, Lb) => value / 0.453_592_37,
            (Inch, Cm) => value * 2.54,
            (Cm, Inch) => value / 2.54,
            _ => return None,
        })
    }

    pub fn symbol(self) -> &'static str {
        match self {
            Unit::Celsius => "°C",
            Unit::Fahrenheit => "°F",
            Unit::Kg => "kg",
            Unit::Lb => "lb",
            Unit::Cm => "cm",
            Unit::Inch => "in",
        }
    }
}

/// Where a condition's number comes from.
#[derive(Debug, Clone)]
pub enum Source {
    Vital {
        unit: Option<Unit>,
        component: Option<Component>,
    },
    Text {
        quantity: Quantity,
        per_kg: bool,
    },
}

#[derive(Debug, Clone)]
pub struct Measure {
    pub op: Op,
    pub value: f64,
    pub source: Source,
}

/// A checked condition.
#[derive(Debug, Clone)]
pub struct Condition {
    pub kinds: Vec<FactKind>,
    /// None: any assertion.
    pub assertions: Option<Vec<Assertion>>,
    pub label: String,
    pub text_matches: Option<Regex>,
    pub text_not_matches: Option<Regex>,
    pub vital: Option<VitalKind>,
    pub topic: Option<String>,
    pub plan_category: Option<PlanCategory>,
    pub attributes: BTreeMap<String, String>,
    pub missing: Vec<Field>,
    pub missing_any: Vec<Field>,
    pub measure: Option<Measure>,
    pub count_at_least: usize,
}

/// A checked rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub title: String,
    pub message: String,
    pub for_each: Option<Condition>,
    pub when: Vec<Condition>,
    pub min_match: usize,
    pub unless: Vec<Condition>,
}

/// What is wrong with a rule, said so that whoever edits the file can fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub rule: String,
    pub reason: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rule {:?}: {}", self.rule, self.reason)
    }
}

const KINDS: &[(&str, FactKind)] = &[
    ("chief_complaint", FactKind::ChiefComplaint),
    ("symptom", FactKind::Symptom),
    ("pertinent_negative", FactKind::PertinentNegative),
    ("medical_history", FactKind::MedicalHistory),
    ("vital", FactKind::Vital),
    ("exam_finding", FactKind::ExamFinding),
    ("result", FactKind::Result),
    ("medication", FactKind::Medication),
    ("allergy", FactKind::Allergy),
    ("social_history", FactKind::SocialHistory),
    ("family_history", FactKind::FamilyHistory),
    ("assessment", FactKind::Assessment),
    ("plan", FactKind::Plan),
];

const ASSERTIONS: &[(&str, Assertion)] = &[
    ("present", Assertion::Present),
    ("absent", Assertion::Absent),
    ("possible", Assertion::Possible),
    ("historical", Assertion::Historical),
    ("other_person", Assertion::OtherPerson),
];

const PLACEHOLDERS: &[&str] = &["matched", "values", "subject", "missing"];

fn names<T>(table: &[(&str, T)]) -> String {
    table.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

pub(crate) fn compile(raw: RawRule) -> Result<Rule, Invalid> {
    let id = raw.id.clone();
    let bad = |reason: String| Invalid {
        rule: id.clone(),
        reason,
    };
    if id.is_empty()
        || !id
            .bytes()
            .all(|c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'-'))
    {
        return Err(bad(
            "the id may use only a-z, 0-9 and '-', and must not be empty".to_owned(),
        ));
    }
    if raw.title.trim().is_empty() || raw.message.trim().is_empty() {
        return Err(bad("title and message must not be empty".to_owned()));
    }
    if raw.for_each.is_none() && raw.when.is_empty() {
        return Err(bad(
            "a rule needs `for_each` or at least one `when` condition".to_owned(),
        ));
    }
    let min_match = raw.min_match.unwrap_or(raw.when.len());
    if raw.min_match.is_some() && (min_match == 0 || min_match > raw.when.len()) {
        return Err(bad(format!(
            "min_match = {min_match}, but it must be between 1 and the number of `when` \
             conditions ({})",
            raw.when.len()
        )));
    }
    let for_each = raw
        .for_each
        .map(|c| condition(c, "for_each"))
        .transpose()
        .map_err(&bad)?;
    if for_each.as_ref().is_some_and(|c| c.count_at_least != 1) {
        return Err(bad(
            "count_at_least has no meaning in `for_each`; remove it".to_owned(),
        ));
    }
    let when = conditions(raw.when, "when").map_err(&bad)?;
    let unless = conditions(raw.unless, "unless").map_err(&bad)?;
    check_message(&raw.message, for_each.as_ref()).map_err(&bad)?;
    Ok(Rule {
        id: raw.id,
        title: raw.title,
        message: raw.message,
        for_each,
        when,
        min_match,
        unless,
    })
}

fn conditions(raw: Vec<RawCondition>, list: &str) -> Result<Vec<Condition>, String> {
    raw.into_iter()
        .enumerate()
        .map(|(i, c)| condition(c, &format!("{list}[{i}]")))
        .collect()
}

fn check_message(message: &str, for_each: Option<&Condition>) -> Result<(), String> {
    let mut rest = message;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| "the message has a '{' without a closing '}'".to_owned())?;
        let name = &after[..close];
        if !PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "the message uses {{{name}}}; the placeholders are {{{}}}",
                PLACEHOLDERS.join("}, {")
            ));
        }
        if (name == "subject" || name == "missing") && for_each.is_none() {
            return Err(format!("{{{name}}} needs `for_each`"));
        }
        if name == "missing"
            && for_each.is_some_and(|c| c.missing.is_empty() && c.missing_any.is_empty())
        {
            return Err("{missing} needs `missing` or `missing_any` in `for_each`".to_owned());
        }
        rest = &after[close + 1..];
    }
    Ok(())
}

fn regex(pattern: Option<String>, key: &str, at: &str) -> Result<Option<Regex>, String> {
    pattern
        .map(|p| {
            RegexBuilder::new(&p)
                .case_insensitive(true)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| format!("{at}.{key} is not a valid regular expression: {e}"))
        })
        .transpose()
}

fn condition(raw: RawCondition, at: &str) -> Result<Condition, String> {
    let mut kinds = Vec::new();
    for name in raw.kind.items() {
        let kind = KINDS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, k)| *k)
            .ok_or_else(|| format!("{at}: unknown kind {name:?}; known kinds: {}", names(KINDS)))?;
        kinds.push(kind);
    }
    if kinds.is_empty() {
        return Err(format!("{at}: `kind` must name at least one fact kind"));
    }
    let only = |kind: FactKind, key: &str| -> Result<(), String> {
        if kinds.iter().all(|k| *k == kind) {
            Ok(())
        } else {
            Err(format!(
                "{at}: `{key}` applies only to kind {:?}",
                KINDS
                    .iter()
                    .find(|(_, k)| *k == kind)
                    .map(|(n, _)| *n)
                    .unwrap_or_default()
            ))
        }
    };

    let assertions = match &raw.assertion {
        None => Some(vec![Assertion::Present]),
        Some(OneOrMany::One(s)) if s == "any" => None,
        Some(list) => {
            let mut out = Vec::new();
            for name in list.items() {
                out.push(
                    ASSERTIONS
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map(|(_, a)| *a)
                        .ok_or_else(|| {
                            format!(
                                "{at}: unknown assertion {name:?}; use \"any\" or one or more of {}",
                                names(ASSERTIONS)
                            )
                        })?,
                );
            }
            Some(out)
        }
    };

    if raw.vital.is_some() {
        only(FactKind::Vital, "vital")?;
    }
    if raw.topic.is_some() {
        only(FactKind::SocialHistory, "topic")?;
    }
    if raw.plan_category.is_some() {
        only(FactKind::Plan, "plan_category")?;
    }
    for field in raw.missing.iter().chain(&raw.missing_any) {
        let fits = |k: &FactKind| match k {
            FactKind::Medication => {
                matches!(field, Field::Dose | Field::Route | Field::Frequency)
            }
            FactKind::Allergy => *field == Field::Reaction,
            FactKind::ChiefComplaint
            | FactKind::Symptom
            | FactKind::PertinentNegative
            | FactKind::ExamFinding => field.of_findings(),
            _ => false,
        };
        if let Some(k) = kinds.iter().find(|k| !fits(k)) {
            return Err(format!(
                "{at}: facts of kind {:?} have no field {:?} to be missing",
                KINDS
                    .iter()
                    .find(|(_, kk)| kk == k)
                    .map(|(n, _)| *n)
                    .unwrap_or_default(),
                field.name()
            ));
        }
    }

    let measure = match (raw.op, raw.value) {
        (None, None) => {
            if raw.unit.is_some() || raw.quantity.is_some() || raw.per_kg || raw.component.is_some()
            {
                return Err(format!(
                    "{at}: `unit`, `quantity`, `per_kg` and `component` need `op` and `value`"
                ));
            }
            None
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err(format!("{at}: `op` and `value` go together; give both"));
        }
        (Some(op), Some(value)) => Some(Measure {
            op,
            value,
            source: measure_source(&raw, &kinds, at)?,
        }),
    };

    let label = raw.label.clone().unwrap_or_else(|| match raw.vital {
        Some(v) => vital_name(v).to_owned(),
        None => raw.kind.items().join(" or ").replace('_', " "),
    });
    let count_at_least = raw.count_at_least.unwrap_or(1);
    if count_at_least == 0 {
        return Err(format!(
            "{at}: count_at_least must be 1 or more (to require that nothing matches, put the \
             condition under `unless`)"
        ));
    }
    Ok(Condition {
        kinds,
        assertions,
        label,
        text_matches: regex(raw.text_matches, "text_matches", at)?,
        text_not_matches: regex(raw.text_not_matches, "text_not_matches", at)?,
        vital: raw.vital,
        topic: raw.topic.map(|t| t.to_lowercase()),
        plan_category: raw.plan_category,
        attributes: raw.attributes,
        missing: raw.missing,
        missing_any: raw.missing_any,
        measure,
        count_at_least,
    })
}

fn measure_source(raw: &RawCondition, kinds: &[FactKind], at: &str) -> Result<Source, String> {
    if kinds == [FactKind::Vital] {
        let vital = raw.vital.ok_or_else(|| {
            format!(
                "{at}: comparing a vital needs `vital` (which one: heart_rate, temperature, ...)"
            )
        })?;
        if raw.quantity.is_some() || raw.per_kg {
            return Err(format!(
                "{at}: `quantity` and `per_kg` are for numbers read from text, not vitals"
            ));
        }
        let component = raw.component;
        if (vital == VitalKind::BloodPressure) != component.is_some() {
            return Err(format!(
                "{at}: blood pressure needs `component = \"systolic\"` or `\"diastolic\"`, and \
                 other vitals take no component"
            ));
        }
        let allowed: &[Unit] = match vital {
            VitalKind::Temperature => &[Unit::Celsius, Unit::Fahrenheit],
            VitalKind::Weight => &[Unit::Kg, Unit::Lb],
            VitalKind::Height => &[Unit::Cm, Unit::Inch],
            _ => &[],
        };
        let unit = match (&raw.unit, allowed.is_empty()) {
            (None, true) => None,
            (Some(u), true) => {
                return Err(format!(
                    "{at}: {} is compared as stated (no unit conversion); remove `unit = {u:?}`",
                    vital_name(vital)
                ))
            }
            (None, false) => {
                return Err(format!(
                    "{at}: {} values need a `unit` ({}) so °F/°C or lb/kg are compared right",
                    vital_name(vital),
                    allowed
                        .iter()
                        .map(|u| u.symbol())
                        .collect::<Vec<_>>()
                        .join(" or ")
                ))
            }
            (Some(u), false) => Some(Unit::parse(u).filter(|p| allowed.contains(p)).ok_or_else(
                || {
                    format!(
                        "{at}: unit {u:?} does not fit {}; use {}",
                        vital_name(vital),
                        allowed
                            .iter()
                            .map(|u| u.symbol())
                            .collect::<Vec<_>>()
                            .join(" or ")
                    )
                },
            )?),
        };
        return Ok(Source::Vital { unit, component });
    }
    if kinds.contains(&FactKind::Vital) {
        return Err(format!(
            "{at}: a comparison over vitals must have kind = \"vital\" alone"
        ));
    }
    if raw.unit.is_some() || raw.component.is_some() {
        return Err(format!(
            "{at}: `unit` and `component` are for vitals; for text use `quantity`"
        ));
    }
    let quantity = raw.quantity.ok_or_else(|| {
        format!(
            "{at}: comparing a number from a fact's text needs `quantity` (\"number\" or \
             \"volume_ml\")"
        )
    })?;
    Ok(Source::Text {
        quantity,
        per_kg: raw.per_kg,
    })
}

pub fn vital_name(v: VitalKind) -> &'static str {
    match v {
        VitalKind::BloodPressure => "blood pressure",
        VitalKind::HeartRate => "heart rate",
        VitalKind::Temperature => "temperature",
        VitalKind::OxygenSaturation => "oxygen saturation",
        VitalKind::RespiratoryRate => "respiratory rate",
        VitalKind::Weight => "weight",
        VitalKind::Height => "height",
        VitalKind::Bmi => "BMI",
        VitalKind::PainScore => "pain score",
    }
}
