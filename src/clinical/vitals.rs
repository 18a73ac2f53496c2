//! Vital signs read out in the visit: a vital's name followed closely by a plausible value
//! ("blood pressure is one twenty over eighty", "o2 sat is at a hundred percent").
//!
//! A value is taken only when it sits within a few words of the name, in the same sentence, with
//! no other vital's name or a comparison ("greater than", "goal") between them, and only inside
//! the range the vital can physically take. The unit is the vital's own (nobody says "mmHg");
//! temperature's scale comes from the value's range unless a scale word is said.

use std::ops::Range;

use super::collect::{Candidate, Collector, Doc, Evidence, Role};
use super::text::{read_number, Seg, SpokenNumber, Token};
use super::{Assertion, Detail, FactKind, VitalKind};

/// Tokens between a vital's name and its value.
const VALUE_WINDOW: usize = 10;
const BLOOD_PRESSURE_WINDOW: usize = 40;

const NAMES: &[(&[&str], VitalKind)] = &[
    (&["blood", "pressure"], VitalKind::BloodPressure),
    (&["blood", "pressures"], VitalKind::BloodPressure),
    (&["blood", "pressure's"], VitalKind::BloodPressure),
    (&["bp"], VitalKind::BloodPressure),
    (&["heart", "rate"], VitalKind::HeartRate),
    (&["heart", "rate's"], VitalKind::HeartRate),
    (&["pulse", "rate"], VitalKind::HeartRate),
    (&["pulse", "ox"], VitalKind::OxygenSaturation),
    (&["pulse", "oximetry"], VitalKind::OxygenSaturation),
    (&["pulse", "oximeter"], VitalKind::OxygenSaturation),
    (&["pulse"], VitalKind::HeartRate),
    (&["hr"], VitalKind::HeartRate),
    (&["temperature"], VitalKind::Temperature),
    (&["temp"], VitalKind::Temperature),
    (&["fever", "of"], VitalKind::Temperature),
    (&["fever"], VitalKind::Temperature),
    (&["oxygen", "saturation"], VitalKind::OxygenSaturation),
    (&["oxygen", "sat"], VitalKind::OxygenSaturation),
    (&["oxygen", "sats"], VitalKind::OxygenSaturation),
    (&["oxygen", "level"], VitalKind::OxygenSaturation),
    (&["oxygen", "levels"], VitalKind::OxygenSaturation),
    (&["o2", "sat"], VitalKind::OxygenSaturation),
    (&["o2", "sats"], VitalKind::OxygenSaturation),
    (&["o2", "saturation"], VitalKind::OxygenSaturation),
    (&["oxygenation"], VitalKind::OxygenSaturation),
    (&["saturation"], VitalKind::OxygenSaturation),
    (&["saturating"], VitalKind::OxygenSaturation),
    (&["satting"], VitalKind::OxygenSaturation),
    (&["sats"], VitalKind::OxygenSaturation),
    (&["sat"], VitalKind::OxygenSaturation),
    (&["spo2"], VitalKind::OxygenSaturation),
    (&["o2"], VitalKind::OxygenSaturation),
    (&["oxygen"], VitalKind::OxygenSaturation),
    (&["respiratory", "rate"], VitalKind::RespiratoryRate),
    (&["respiration", "rate"], VitalKind::RespiratoryRate),
    (&["respirations"], VitalKind::RespiratoryRate),
    (&["breathing", "rate"], VitalKind::RespiratoryRate),
    (&["rr"], VitalKind::RespiratoryRate),
    (&["weight"], VitalKind::Weight),
    (&["weigh"], VitalKind::Weight),
    (&["weighs"], VitalKind::Weight),
    (&["weighing"], VitalKind::Weight),
    (&["weighed"], VitalKind::Weight),
    (&["height"], VitalKind::Height),
    (&["bmi"], VitalKind::Bmi),
    (&["body", "mass", "index"], VitalKind::Bmi),
];

/// Words that make a number a target, a threshold or a change rather than a reading.
const NOT_A_READING: &[&str] = &[
    "greater",
    "less",
    "above",
    "below",
    "under",
    "than",
    "goal",
    "target",
    "keep",
    "aim",
    "should",
    "ideally",
    "if",
    "gain",
    "gained",
    "lose",
    "lost",
    "losing",
    "drop",
    "dropped",
    "increase",
    "decrease",
    "cuff",
    "medication",
    "medications",
    "meds",
    "pills",
];

/// Words saying a reading is not today's.
/// How many words before a reading may say it is an earlier one.
const EARLIER_WINDOW: usize = 10;

const EARLIER: &[&str] = &[
    "er",
    "emergency",
    "urgent",
    "hospital",
    "ago",
    "yesterday",
    "last",
    "previous",
    "previously",
    "prior",
    "earlier",
    "before",
    "when",
];

fn name_at(tokens: &[Token], i: usize, stop: usize) -> Option<(usize, VitalKind)> {
    NAMES.iter().find_map(|(words, kind)| {
        let fits = i + words.len() <= stop
            && words
                .iter()
                .zip(&tokens[i..])
                .all(|(word, token)| token.is(word));
        fits.then_some((words.len(), *kind))
    })
}

struct Reading {
    value: String,
    unit: &'static str,
    /// Tokens from the vital's name to the end of its value (and unit word).
    tokens: Range<usize>,
    attributes: Vec<(&'static str, &'static str)>,
}

pub(crate) fn extract(doc: &Doc, out: &mut Collector) {
    for seg in &doc.segs {
        for sentence in &seg.sentences {
            let mut i = sentence.start;
            while i < sentence.end {
                let Some((len, kind)) = name_at(&seg.tokens, i, sentence.end) else {
                    i += 1;
                    continue;
                };
                let reading = if len == 1 && seg.tokens[i].is("fever") {
                    read_fever_value(seg, sentence, i)
                } else {
                    read_value(seg, sentence, i, len, kind)
                };
                if let Some(reading) = reading {
                    push_reading(doc, seg, sentence, kind, reading, out);
                }
                i += len;
            }
            extract_pain_score(doc, seg, sentence, out);
        }
        reported_pressure(doc, seg, out);
    }
}

/// Turns back (inclusive of clinician and patient turns) a patient's "X over Y" may answer a
/// question about blood pressure.
const REPORTED_PRESSURE_REACH: usize = 6;

/// A patient's own reading given in answer to the clinician asking about blood pressure, a few
/// turns back: "how is your blood pressure doing , have you been taking it at home" … "i think
/// it runs around one twenty over seventy". Only a reply whose turn names no vital itself (the
/// name-first rule reads those), an "X over Y" inside the blood pressure range, and the
/// clinician's mention of blood pressure cited with it.
fn reported_pressure(doc: &Doc, seg: &Seg, out: &mut Collector) {
    if doc.role(seg.index) != Role::Patient {
        return;
    }
    let tokens = &seg.tokens;
    if (0..tokens.len()).any(|i| name_at(tokens, i, tokens.len()).is_some()) {
        return;
    }
    let Some((asked, name)) = (seg.index.saturating_sub(REPORTED_PRESSURE_REACH)..seg.index)
        .rev()
        .filter(|k| doc.may_be_clinician(*k))
        .find_map(|k| {
            let q = &doc.segs[k];
            (0..q.tokens.len()).find_map(|i| match name_at(&q.tokens, i, q.tokens.len()) {
                Some((len, VitalKind::BloodPressure)) => Some((q, i..i + len)),
                _ => None,
            })
        })
    else {
        return;
    };
    for sentence in &seg.sentences {
        if seg.is_question(sentence) {
            continue;
        }
        let mut i = sentence.start;
        while i < sentence.end {
            let Some(systolic) = read_number(tokens, i, sentence.end) else {
                i += 1;
                continue;
            };
            let over = systolic.tokens.end;
            let reading = tokens
                .get(over)
                .filter(|t| t.is("over") || t.is("/"))
                .and_then(|_| read_number(tokens, over + 1, sentence.end))
                .filter(|diastolic| {
                    (80.0..=220.0).contains(&systolic.value)
                        && (40.0..=130.0).contains(&diastolic.value)
                        && diastolic.value < systolic.value
                        && is_integer(&systolic)
                        && is_integer(diastolic)
                });
            let Some(diastolic) = reading else {
                i = systolic.tokens.end;
                continue;
            };
            let before = sentence.start..systolic.tokens.start;
            if tokens[before.clone()]
                .iter()
                .any(|t| t.is_any(NOT_A_READING) || t.is_any(EARLIER))
            {
                return;
            }
            let approximate = tokens[before.start..systolic.tokens.start]
                .iter()
                .rev()
                .take(3)
                .any(|t| t.is_any(&["around", "about", "approximately", "like", "roughly"]));
            let at_home = said(asked, "home") || said(seg, "home");
            let value = format!("{}/{}", systolic.digits, diastolic.digits);
            let text = format!(
                "{}lood pressure {}{value} mmHg.",
                if at_home { "Home b" } else { "B" },
                if approximate { "about " } else { "" }
            );
            let evidence = [
                Evidence::of(seg, systolic.tokens.start..diastolic.tokens.end),
                Evidence::of(asked, name),
            ];
            let Some(evidence) = evidence.into_iter().collect::<Option<Vec<_>>>() else {
                return;
            };
            let mut candidate = Candidate::new(
                FactKind::Vital,
                Assertion::Present,
                text,
                Detail::Vital {
                    vital: VitalKind::BloodPressure,
                    value: value.clone(),
                    unit: "mmHg".to_string(),
                },
                evidence,
                format!("BloodPressure:{value}:reported:{at_home}"),
            )
            .with_attribute("reported_by", "patient");
            if at_home {
                candidate = candidate.with_attribute("setting", "home");
            }
            out.push(candidate);
            return;
        }
    }
}

/// "you are not running a fever so that's great look at ninety seven . two": a temperature
/// after the word "fever" with no "temperature" said. Only a reading with a decimal place in the
/// Fahrenheit range counts ("fever for three days" is no reading), and numbers before it that
/// are no temperature ("ninety ninety seven . two") are stepped over.
fn read_fever_value(seg: &Seg, sentence: &Range<usize>, name: usize) -> Option<Reading> {
    let tokens = &seg.tokens;
    let stop = sentence.end.min(tokens.len());
    let mut j = name + 1;
    while j < stop.min(name + 1 + VALUE_WINDOW) {
        let token = &tokens[j];
        if token.is_any(NOT_A_READING) || name_at(tokens, j, stop).is_some() {
            return None;
        }
        let Some(number) = read_number(tokens, j, tokens.len()) else {
            j += 1;
            continue;
        };
        let number = decimal_split_by_period(tokens, &number).unwrap_or(number);
        let decimal = number.digits.contains('.');
        if decimal && (95.0..=106.0).contains(&number.value) {
            let end = unit_end(tokens, number.tokens.end, tokens.len(), &[&["degrees"]]);
            return Some(Reading {
                value: number.digits,
                unit: "°F",
                tokens: name..end,
                attributes: Vec::new(),
            });
        }
        j = number.tokens.end.max(j + 1);
    }
    None
}

fn read_value(
    seg: &Seg,
    sentence: &Range<usize>,
    name_start: usize,
    name_len: usize,
    kind: VitalKind,
) -> Option<Reading> {
    let tokens = &seg.tokens;
    let stop = sentence.end.min(tokens.len());
    let after_name = name_start + name_len;
    // "pulses" at an exam, "heart rate is regular": no number follows inside the window.
    let mut j = after_name;
    // "X over Y" is specific enough to reach across a clinician's aside.
    let window = if kind == VitalKind::BloodPressure {
        BLOOD_PRESSURE_WINDOW
    } else {
        VALUE_WINDOW
    };
    let number = loop {
        if j >= stop || j >= after_name + window {
            return None;
        }
        let token = &tokens[j];
        if token.is_any(NOT_A_READING) || token.is("?") {
            return None;
        }
        if j > after_name && name_at(tokens, j, stop).is_some() {
            return None;
        }
        if let Some(number) = read_number(tokens, j, stop) {
            let is_pressure = |n: &SpokenNumber| {
                let mut k = n.tokens.end;
                while tokens.get(k).is_some_and(|t| t.is("over")) && k < stop {
                    k += 1;
                }
                k > n.tokens.end || tokens.get(k).is_some_and(|t| t.is("/"))
            };
            if kind != VitalKind::BloodPressure || is_pressure(&number) {
                break number;
            }
            j = number.tokens.end;
            continue;
        }
        j += 1;
    };
    let after = number.tokens.end;
    let word_at = |k: usize| tokens.get(k).filter(|_| k < stop).map(|t| t.text.as_str());
    let value = number.value;
    let reading = |value: String, unit: &'static str, end: usize| Reading {
        value,
        unit,
        tokens: name_start..end,
        attributes: Vec::new(),
    };
    match kind {
        VitalKind::BloodPressure => {
            let separator = word_at(after)?;
            if separator != "over" && separator != "/" {
                return None;
            }
            // "a hundred and forty over over seventy"
            let mut diastolic_at = after + 1;
            while word_at(diastolic_at) == Some("over") {
                diastolic_at += 1;
            }
            let diastolic = read_number(tokens, diastolic_at, stop)?;
            let valid = (60.0..=260.0).contains(&value)
                && (30.0..=160.0).contains(&diastolic.value)
                && diastolic.value < value
                && is_integer(&number)
                && is_integer(&diastolic);
            valid.then(|| {
                reading(
                    format!("{}/{}", number.digits, diastolic.digits),
                    "mmHg",
                    diastolic.tokens.end,
                )
            })
        }
        VitalKind::HeartRate => {
            if !(25.0..=250.0).contains(&value) || !is_integer(&number) {
                return None;
            }
            let end = unit_end(
                tokens,
                after,
                stop,
                &[&["beats", "per", "minute"], &["bpm"]],
            );
            Some(reading(number.digits, "bpm", end))
        }
        VitalKind::RespiratoryRate => {
            if !(6.0..=60.0).contains(&value) || !is_integer(&number) {
                return None;
            }
            let end = unit_end(tokens, after, stop, &[&["breaths", "per", "minute"]]);
            Some(reading(number.digits, "breaths/min", end))
        }
        VitalKind::OxygenSaturation => {
            if !(70.0..=100.0).contains(&value) {
                return None;
            }
            let end = unit_end(tokens, after, stop, &[&["percent"], &["%"]]);
            let mut r = reading(number.digits, "%", end);
            if word_at(end) == Some("on") && word_at(end + 1) == Some("room") {
                r.attributes.push(("on", "room air"));
            }
            Some(r)
        }
        VitalKind::Temperature => {
            let (number, after) = spoken_decimal_split_by_period(tokens, number);
            let value = number.value;
            let mut end = unit_end(tokens, after, stop.max(after), &[&["degrees"]]);
            let scale = word_at(end);
            let unit = match scale {
                Some("fahrenheit") | Some("f") => {
                    end += 1;
                    "°F"
                }
                Some("celsius") | Some("centigrade") | Some("c") => {
                    end += 1;
                    "°C"
                }
                _ if (93.0..=108.0).contains(&value) => "°F",
                _ if (34.0..=43.0).contains(&value) => "°C",
                _ => return None,
            };
            let plausible = match unit {
                "°F" => (93.0..=108.0).contains(&value),
                _ => (34.0..=43.0).contains(&value),
            };
            plausible.then(|| reading(number.digits, unit, end))
        }
        VitalKind::Weight => {
            let unit = super::text::unit_abbreviation(word_at(after)?)?;
            let plausible = match unit {
                "lb" => (40.0..=800.0).contains(&value),
                "kg" => (20.0..=350.0).contains(&value),
                _ => false,
            };
            plausible.then(|| reading(number.digits, unit, after + 1))
        }
        VitalKind::Height => {
            let unit = match word_at(after)? {
                "feet" | "foot" => {
                    // "five feet six inches" is written 5 ft 6 in.
                    let inches = read_number(tokens, after + 1, stop);
                    return match inches {
                        Some(inches) if inches.value < 12.0 && (3.0..=7.0).contains(&value) => {
                            let end = unit_end(
                                tokens,
                                inches.tokens.end,
                                stop,
                                &[&["inches"], &["inch"]],
                            );
                            Some(reading(
                                format!("{} ft {} in", number.digits, inches.digits),
                                "ft/in",
                                end,
                            ))
                        }
                        _ if (3.0..=7.0).contains(&value) => {
                            Some(reading(number.digits, "ft", after + 1))
                        }
                        _ => None,
                    };
                }
                "centimeters" | "cm" if (100.0..=230.0).contains(&value) => "cm",
                "inches" if (36.0..=90.0).contains(&value) => "in",
                _ => return None,
            };
            Some(reading(number.digits, unit, after + 1))
        }
        VitalKind::Bmi => (12.0..=80.0)
            .contains(&value)
            .then(|| reading(number.digits, "kg/m2", after)),
        VitalKind::PainScore => None,
    }
}

/// Transcribers write a spoken "point" as a period: "ninety eight . two" is 98.2. Only a single
/// digit word after a whole temperature in the 90s reads this way.
fn spoken_decimal_split_by_period(tokens: &[Token], number: SpokenNumber) -> (SpokenNumber, usize) {
    match decimal_split_by_period(tokens, &number) {
        Some(split) => {
            let end = split.tokens.end;
            (split, end)
        }
        None => {
            let end = number.tokens.end;
            (number, end)
        }
    }
}

/// The temperature-range number `number` continued by ". digit" ("ninety seven . two"), if the
/// tokens after it read that way.
pub(crate) fn decimal_split_by_period(
    tokens: &[Token],
    number: &SpokenNumber,
) -> Option<SpokenNumber> {
    let after = number.tokens.end;
    let period = tokens.get(after).is_some_and(|t| t.is("."));
    const DIGITS: [&str; 10] = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    ];
    let d = tokens
        .get(after + 1)
        .and_then(|t| DIGITS.iter().position(|d| t.is(d)))?;
    if !period || !is_integer(number) || !(93.0..=107.0).contains(&number.value) {
        return None;
    }
    let digits = format!("{}.{d}", number.digits);
    let value = digits.parse::<f64>().ok()?;
    Some(SpokenNumber {
        digits,
        value,
        tokens: number.tokens.start..after + 2,
    })
}

fn is_integer(number: &SpokenNumber) -> bool {
    number.digits.chars().all(|c| c.is_ascii_digit())
}

/// The token index after an optional unit phrase at `at`.
fn unit_end(tokens: &[Token], at: usize, stop: usize, units: &[&[&str]]) -> usize {
    for unit in units {
        let fits = at + unit.len() <= stop
            && unit
                .iter()
                .zip(&tokens[at..])
                .all(|(word, token)| token.is(word));
        if fits {
            return at + unit.len();
        }
    }
    at
}

/// The vital's name at the start of `tokens`, capitalized ("O2 sat", "Pulse"), if it has a
/// word a reader (and the verifier) takes as content.
fn render_name(seg: &Seg, tokens: &Range<usize>) -> String {
    let Some((len, _)) = name_at(&seg.tokens, tokens.start, tokens.end) else {
        return String::new();
    };
    let words: Vec<&str> = seg.tokens[tokens.start..tokens.start + len]
        .iter()
        .map(|t| t.text.as_str())
        .collect();
    if !words
        .iter()
        .any(|w| w.len() >= 3 && *w != "fever" && !w.chars().any(|c| c.is_ascii_digit()))
    {
        return String::new();
    }
    let mut name = words.join(" ");
    if let Some(first) = name.get(..1).map(str::to_uppercase) {
        name.replace_range(..1, &first);
    }
    name
}

/// Whether a word with the first five letters of `word` is said ("weigh" for "weight").
fn said_like(seg: &Seg, word: &str) -> bool {
    let prefix = |w: &str| w.chars().take(5).collect::<String>();
    seg.tokens.iter().any(|t| prefix(&t.text) == prefix(word))
}

fn said(seg: &Seg, word: &str) -> bool {
    seg.tokens.iter().any(|t| t.is(word))
}

fn vital_label(kind: VitalKind) -> &'static str {
    match kind {
        VitalKind::BloodPressure => "Blood pressure",
        VitalKind::HeartRate => "Heart rate",
        VitalKind::Temperature => "Temperature",
        VitalKind::OxygenSaturation => "Oxygen saturation",
        VitalKind::RespiratoryRate => "Respiratory rate",
        VitalKind::Weight => "Weight",
        VitalKind::Height => "Height",
        VitalKind::Bmi => "BMI",
        VitalKind::PainScore => "Pain score",
    }
}

fn push_reading(
    doc: &Doc,
    seg: &Seg,
    sentence: &Range<usize>,
    kind: VitalKind,
    reading: Reading,
    out: &mut Collector,
) {
    let tokens = &seg.tokens;
    // Only the words just before the reading say when it was taken: unpunctuated transcripts
    // run whole paragraphs into one "sentence", where an earlier "when" belongs to another clause.
    let before = sentence
        .start
        .max(reading.tokens.start.saturating_sub(EARLIER_WINDOW))
        ..reading.tokens.start;
    // "when you came in today your blood pressure was ...": today's reading.
    let earlier = tokens[before.clone()].iter().any(|t| t.is_any(EARLIER))
        && !tokens[before.clone()]
            .iter()
            .any(|t| t.is_any(&["today", "assistant", "nurse", "vitals"]))
        && !(before.start..reading.tokens.start).any(|i| {
            tokens[i].is_any(&["came", "come"]) && tokens.get(i + 1).is_some_and(|t| t.is("in"))
        });
    let at_home = tokens[sentence.clone()].iter().any(|t| t.is("home"));
    let Some(evidence) = Evidence::of(seg, reading.tokens.clone()) else {
        return;
    };
    // The vital's name as said when the note's name is not ("o2 sat 98%", "pulse 67 bpm"):
    // the note's words must be in the evidence.
    let canonical = vital_label(kind);
    let name_said = render_name(seg, &reading.tokens);
    let label = if canonical
        .split(' ')
        .all(|w| said_like(seg, &w.to_lowercase()))
        || name_said.is_empty()
    {
        canonical.to_string()
    } else {
        name_said
    };
    let value_text = match reading.unit {
        "%" => format!("{}%", reading.value),
        "ft/in" | "kg/m2" => reading.value.clone(),
        // Written out only when said: the note's words must be in the evidence.
        "breaths/min" if said(seg, "breaths") => format!("{} breaths per minute", reading.value),
        "breaths/min" => reading.value.clone(),
        unit => format!("{} {}", reading.value, unit),
    };
    let (assertion, text) = if earlier {
        // "Earlier" is not in the words; a patient's reading is "reported" (filler to a
        // verifier), a clinician's keeps "earlier" next to the vital's own name.
        let qualifier = if doc.role(seg.index) == Role::Patient {
            "Reported"
        } else {
            "Earlier"
        };
        (
            Assertion::Historical,
            format!("{qualifier} {} {}.", label.to_lowercase(), value_text),
        )
    } else if at_home {
        (
            Assertion::Present,
            format!("Home {} {}.", label.to_lowercase(), value_text),
        )
    } else {
        (Assertion::Present, format!("{label} {value_text}."))
    };
    let mut candidate = Candidate::new(
        FactKind::Vital,
        assertion,
        text,
        Detail::Vital {
            vital: kind,
            value: reading.value.clone(),
            unit: reading.unit.to_string(),
        },
        vec![evidence],
        format!("{kind:?}:{}:{:?}:{at_home}", reading.value, assertion),
    );
    if doc.role(seg.index) == Role::Patient {
        candidate = candidate.with_attribute("reported_by", "patient");
    }
    if at_home && !earlier {
        candidate = candidate.with_attribute("setting", "home");
    }
    if kind == VitalKind::Temperature {
        let system = if reading.unit == "°F" {
            "imperial"
        } else {
            "metric"
        };
        candidate = candidate.with_attribute("unit_system", system);
    }
    for (name, value) in reading.attributes {
        candidate = candidate.with_attribute(name, value);
    }
    out.push(candidate);
}

/// "a seven out of ten" in a sentence about pain: the pain score.
fn extract_pain_score(doc: &Doc, seg: &Seg, sentence: &Range<usize>, out: &mut Collector) {
    let tokens = &seg.tokens;
    let stop = sentence.end.min(tokens.len());
    let about_pain = |range: Range<usize>, s: &Seg| {
        s.tokens[range]
            .iter()
            .any(|t| t.is_any(&["pain", "hurt", "hurts", "hurting", "scale"]))
    };
    let mut pain_here = about_pain(sentence.clone(), seg);
    if !pain_here && seg.index > 0 {
        // The score is often the answer to the clinician's question about pain.
        if let Some(question) = doc
            .segs
            .get(seg.index - 1)
            .and_then(|q| q.last_question().map(|r| (q, r)))
        {
            pain_here = about_pain(question.1, question.0);
        }
    }
    if !pain_here {
        return;
    }
    for i in sentence.start..stop {
        let Some(number) = read_number(tokens, i, stop) else {
            continue;
        };
        let after = number.tokens.end;
        let out_of_ten = tokens.get(after).is_some_and(|t| t.is("out"))
            && tokens.get(after + 1).is_some_and(|t| t.is("of"))
            && tokens
                .get(after + 2)
                .is_some_and(|t| t.is_any(&["ten", "10"]))
            && after + 3 <= stop;
        if !out_of_ten || !(0.0..=10.0).contains(&number.value) || !is_integer(&number) {
            continue;
        }
        // "four out of ten with ibuprofen": a qualifier changes the reading; keep it attached.
        let Some(evidence) = Evidence::of(seg, number.tokens.start..after + 3) else {
            continue;
        };
        let candidate = Candidate::new(
            FactKind::Vital,
            Assertion::Present,
            format!("Pain {}/10.", number.digits),
            Detail::Vital {
                vital: VitalKind::PainScore,
                value: number.digits.clone(),
                unit: "/10".to_string(),
            },
            vec![evidence],
            format!("PainScore:{}:{}", number.digits, seg.index),
        );
        out.push(candidate);
    }
}

#[cfg(test)]
mod tests {
    use crate::clinical::{extract, Detail, FactKind, VitalKind};
    use crate::transcript::Transcript;

    fn vitals(dialogue: &str) -> Vec<(VitalKind, String, String)> {
        let transcript = Transcript::from_dialogue(dialogue).expect("dialogue");
        extract(&transcript)
            .into_iter()
            .filter(|f| f.kind == FactKind::Vital)
            .filter_map(|f| match f.detail {
                Detail::Vital { vital, value, unit } => Some((vital, value, unit)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn each_vital_is_read_with_its_unit() {
        let found = vitals(
            "[doctor] your blood pressure is one twenty eight over seventy two , heart rate is \
             seventy two , your respirations are sixteen , temperature is ninety eight point six \
             and your o2 sat is at a hundred percent on room air . you weigh 169 pounds and your \
             bmi is thirty one .",
        );
        let expected = [
            (VitalKind::BloodPressure, "128/72", "mmHg"),
            (VitalKind::HeartRate, "72", "bpm"),
            (VitalKind::RespiratoryRate, "16", "breaths/min"),
            (VitalKind::Temperature, "98.6", "°F"),
            (VitalKind::OxygenSaturation, "100", "%"),
            (VitalKind::Weight, "169", "lb"),
            (VitalKind::Bmi, "31", "kg/m2"),
        ];
        for (kind, value, unit) in expected {
            assert!(
                found.contains(&(kind, value.to_string(), unit.to_string())),
                "{kind:?} {value} {unit} missing from {found:?}"
            );
        }
    }

    #[test]
    fn digits_celsius_and_pain_score() {
        let found = vitals(
            "[doctor] bp 120/80 , temp 38.2 degrees celsius .\n[doctor] how bad is the pain ?\n\
             [patient] like a seven out of ten .",
        );
        assert!(found.contains(&(VitalKind::BloodPressure, "120/80".into(), "mmHg".into())));
        assert!(found.contains(&(VitalKind::Temperature, "38.2".into(), "°C".into())));
        assert!(found.contains(&(VitalKind::PainScore, "7".into(), "/10".into())));
    }

    #[test]
    fn transcribed_forms_of_temperature_and_pressure() {
        let found = vitals(
            "[doctor] your temperature is ninety eight . two your pulse is seventy two .\n\
             [doctor] your blood pressure is a little elevated but honestly that's probably to do \
             with the pain , we are looking at like a hundred and forty over over seventy .",
        );
        assert!(found.contains(&(VitalKind::Temperature, "98.2".into(), "°F".into())));
        assert!(found.contains(&(VitalKind::HeartRate, "72".into(), "bpm".into())));
        assert!(found.contains(&(VitalKind::BloodPressure, "140/70".into(), "mmHg".into())));
    }

    fn texts(dialogue: &str) -> Vec<String> {
        let transcript = Transcript::from_dialogue(dialogue).expect("dialogue");
        extract(&transcript)
            .into_iter()
            .filter(|f| f.kind == FactKind::Vital)
            .map(|f| f.text)
            .collect()
    }

    #[test]
    fn a_when_in_an_earlier_clause_does_not_make_todays_reading_an_old_one() {
        let found = texts(
            "[doctor] i'm gon na let you know what that means when i'm done okay so looking here first at your vital signs your vital signs look pretty good your blood pressure is pretty good it's about one thirty two over eighty",
        );
        assert_eq!(found, ["Blood pressure 132/80 mmHg."]);
    }

    #[test]
    fn a_temperature_after_fever_and_a_reported_home_pressure() {
        let found = vitals(
            "[doctor] you are not running a fever so that's great look at ninety ninety seven . \
             two your respiratory rate is pretty normal at like twenty",
        );
        assert!(found.contains(&(VitalKind::Temperature, "97.2".into(), "°F".into())));
        assert!(vitals("[patient] i've had a fever for three days .").is_empty());
        let home = texts(
            "[doctor] how is your blood pressure doing , have you been taking it at home ?\n\
             [patient] yes it's fine .\n[doctor] so what has it been running\n\
             [patient] i think it runs around one twenty over seventy somewhere in there",
        );
        assert_eq!(home, ["Home blood pressure about 120/70 mmHg."]);
        let murmur = texts(
            "[doctor] your blood pressure is fine .\n[patient] good .\n\
             [patient] my vision is twenty over twenty and i heard a two over six murmur",
        );
        assert!(murmur.is_empty(), "{murmur:?}");
    }

    #[test]
    fn wording_uses_the_names_said_and_intake_vitals_are_today() {
        let found = texts(
            "[doctor] the vital signs my assistant took when you came in , your pulse was \
             sixty seven , your o2 sat is ninety eight percent and your respiratory rate was \
             eighteen .",
        );
        assert_eq!(
            found,
            ["Pulse 67 bpm.", "O2 sat 98%.", "Respiratory rate 18."],
            "{found:?}"
        );
        let earlier = texts("[patient] when i was in the er my temperature was 101.2 .");
        assert_eq!(earlier, ["Reported temperature 101.2 °F."]);
    }

    #[test]
    fn thresholds_and_implausible_values_are_not_readings() {
        let found = vitals(
            "[doctor] we want your blood pressure less than 130 over 80 . you qualify with a bmi \
             greater than 30 . your heart rate is regular . you gained ten pounds of weight .",
        );
        assert!(found.is_empty(), "{found:?}");
    }
}
