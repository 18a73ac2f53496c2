//! Medications (with dose, route and frequency) and allergies (with reactions).
//!
//! A drug is only ever a name from the lexicon (`lexicon/drugs.txt`), and a dose only a number
//! with a dose unit said right after the name in the same clause, so a note never carries a drug
//! or a dose the visit did not mention. Mentions of the same drug merge; a different dose of the
//! same drug is its own fact (a dose change is two facts, each with its own words).

use std::ops::Range;
use std::sync::LazyLock;

use super::collect::{Candidate, Collector, Doc, Evidence, Role};
use super::context::{self, FAMILY_WORDS};
use super::qa::{self, Reply};
use super::text::{read_number, unit_abbreviation, Lexicon, Seg, Token};
use super::{Assertion, Detail, FactKind, PlanCategory};

pub(crate) static DRUGS: LazyLock<Lexicon> =
    LazyLock::new(|| Lexicon::parse(include_str!("lexicon/drugs.txt")));

/// Things people are allergic to that are not drugs.
static ALLERGENS: LazyLock<Lexicon> =
    LazyLock::new(|| Lexicon::parse(include_str!("lexicon/allergens.txt")));

/// Tokens after a drug name in which its dose, route and frequency may be said.
const DOSE_WINDOW: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Current,
    Start,
    Increase,
    Decrease,
    Stop,
    Continue,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Current => "current",
            Status::Start => "start",
            Status::Increase => "increase",
            Status::Decrease => "decrease",
            Status::Stop => "stop",
            Status::Continue => "continue",
        }
    }
}

/// Verbs before a drug name that make the mention a plan item, nearest first wins.
const STATUS_VERBS: &[(&str, Status)] = &[
    ("prescribe", Status::Start),
    ("prescribed", Status::Start),
    ("prescribing", Status::Start),
    ("prescription", Status::Start),
    ("start", Status::Start),
    ("starting", Status::Start),
    ("begin", Status::Start),
    ("trial", Status::Start),
    ("try", Status::Start),
    ("increase", Status::Increase),
    ("increasing", Status::Increase),
    ("raise", Status::Increase),
    ("bump", Status::Increase),
    ("up", Status::Increase),
    ("decrease", Status::Decrease),
    ("decreasing", Status::Decrease),
    ("reduce", Status::Decrease),
    ("lower", Status::Decrease),
    ("stop", Status::Stop),
    ("stopping", Status::Stop),
    ("discontinue", Status::Stop),
    ("hold", Status::Stop),
    ("continue", Status::Continue),
    ("continuing", Status::Continue),
    ("keep", Status::Continue),
];

#[derive(Debug, Clone)]
struct Mention {
    /// The name as said, lower case.
    name: String,
    canonical: usize,
    assertion: Assertion,
    status: Status,
    dose: Option<String>,
    route: Option<&'static str>,
    frequency: Option<String>,
    evidence: Vec<Evidence>,
    /// The words the wording may lean on: the status verb and history trigger as said, and
    /// whether "take"/"taking" is said.
    said: Vec<String>,
}

pub(crate) fn extract(doc: &Doc, out: &mut Collector) {
    let mut mentions = Vec::new();
    for seg in &doc.segs {
        for sentence in &seg.sentences {
            for hit in DRUGS.find(&seg.tokens, sentence.clone()) {
                if let Some(mention) = read_mention(doc, seg, sentence, &hit.tokens, hit.canonical)
                {
                    mentions.push(mention);
                }
            }
        }
    }
    for fact in merge(mentions) {
        push_medication(fact, out);
    }
    extract_allergies(doc, out);
}

fn is_allergy_context(tokens: &[Token], sentence: &Range<usize>, target: &Range<usize>) -> bool {
    let from = target.start.saturating_sub(4).max(sentence.start);
    let to = (target.end + 2).min(sentence.end);
    tokens[from..to].iter().any(|t| {
        t.is_any(&[
            "allergic",
            "allergy",
            "allergies",
            "reaction",
            "intolerant",
            "intolerance",
        ])
    })
}

fn read_mention(
    doc: &Doc,
    seg: &Seg,
    sentence: &Range<usize>,
    target: &Range<usize>,
    canonical: usize,
) -> Option<Mention> {
    let tokens = &seg.tokens;
    if is_allergy_context(tokens, sentence, target) {
        return None;
    }
    // "vitamin d level", "iron studies": a lab, not a medication.
    if tokens
        .get(target.end)
        .is_some_and(|t| t.is_any(&["level", "levels", "test", "studies", "panel", "deficiency"]))
    {
        return None;
    }
    let name = tokens[target.clone()]
        .iter()
        .map(|t| t.text.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let ctx = context::assess(seg, sentence, target);
    let clause = context::clause(seg, sentence, target);
    let mut assertion = ctx.assertion;
    let mut evidence_tokens = target.clone();
    let mut evidence = Vec::new();

    match assertion {
        Assertion::OtherPerson | Assertion::Possible => return None,
        // A clinician's "don't take ibuprofen" is advice, not a medication list entry.
        Assertion::Absent if doc.role(seg.index) == Role::Clinician => return None,
        _ => {}
    }

    if seg.is_question(sentence) {
        let answered = qa::answered(doc, seg.index)?;
        if answered.question != *sentence {
            return None;
        }
        let reply_seg = doc.segs.get(answered.reply_seg)?;
        evidence.push(Evidence::of(reply_seg, answered.reply_tokens.clone())?);
        assertion = match (answered.reply, assertion) {
            (Reply::Yes, Assertion::Present | Assertion::Historical) => assertion,
            (Reply::No, Assertion::Present) => Assertion::Absent,
            _ => return None,
        };
    } else if ctx.hypothetical {
        // "if the pain comes back you can take tylenol": still the drug the clinician means.
        if !doc.may_be_clinician(seg.index) {
            return None;
        }
    }
    if let Some(trigger) = &ctx.trigger {
        if assertion == Assertion::Absent || assertion == Assertion::Historical {
            evidence_tokens.start = evidence_tokens.start.min(trigger.start);
        }
    }

    let status = if assertion == Assertion::Present && doc.may_be_clinician(seg.index) {
        (clause.start..target.start)
            .rev()
            .take(8)
            .find_map(|i| {
                STATUS_VERBS
                    .iter()
                    .find(|(verb, _)| tokens[i].is(verb))
                    .map(|(_, status)| (i, *status))
            })
            .map(|(i, status)| {
                evidence_tokens.start = evidence_tokens.start.min(i);
                status
            })
            .unwrap_or(Status::Current)
    } else {
        Status::Current
    };

    // Dose, route and frequency: after the name, up to the next drug, within the clause.
    let mut window_end = (target.end + DOSE_WINDOW).min(clause.end);
    if let Some(next_drug) = DRUGS
        .find(tokens, target.end..window_end)
        .first()
        .map(|m| m.tokens.start)
    {
        window_end = next_drug;
    }
    let mut dose = None;
    let mut route = None;
    let mut frequency = None;
    if assertion != Assertion::Absent {
        if let Some((text, range)) = find_dose(tokens, target.end, window_end) {
            evidence_tokens.end = evidence_tokens.end.max(range.end);
            window_end = (range.end + DOSE_WINDOW).min(clause.end);
            if let Some(next_drug) = DRUGS
                .find(tokens, range.end..window_end)
                .first()
                .map(|m| m.tokens.start)
            {
                window_end = next_drug;
            }
            dose = Some(text);
        } else if let Some((text, range)) = find_dose_before(tokens, clause.start, target.start) {
            evidence_tokens.start = evidence_tokens.start.min(range.start);
            dose = Some(text);
        } else if let Some((text, range)) = dose_said_later(doc, seg, sentence, target) {
            // "we'll get you some motrin . we'll give you 600 milligrams every six hours"
            evidence_tokens.end = evidence_tokens.end.max(range.end);
            window_end = (range.end + DOSE_WINDOW).min(seg.sentence_of(range.start).end);
            dose = Some(text);
        }
        if let Some((text, range)) = find_frequency(tokens, target.end, window_end) {
            evidence_tokens.end = evidence_tokens.end.max(range.end);
            frequency = Some(text);
        }
        if let Some((text, range)) = find_route(tokens, target.end, window_end) {
            evidence_tokens.end = evidence_tokens.end.max(range.end);
            route = Some(text);
        }
    }
    let said = tokens[clause.clone()]
        .iter()
        .map(|t| t.text.clone())
        .collect::<Vec<_>>();
    evidence.insert(0, Evidence::of(seg, evidence_tokens)?);
    Some(Mention {
        said,
        name,
        canonical,
        assertion,
        status,
        dose,
        route,
        frequency,
        evidence,
    })
}

/// "20 milligrams", "two point five mg", "1000 mg": a number and a dose unit.
fn find_dose(tokens: &[Token], from: usize, to: usize) -> Option<(String, Range<usize>)> {
    for i in from..to {
        // A number without a dose unit ("for two weeks") belongs to something else.
        let Some(number) = read_number(tokens, i, to) else {
            continue;
        };
        let unit_at = number.tokens.end;
        let unit = tokens
            .get(unit_at)
            .filter(|_| unit_at < to)
            .and_then(|t| dose_unit(&t.text));
        let Some(unit) = unit.filter(|_| number.value > 0.0) else {
            continue;
        };
        return Some((format!("{} {}", number.digits, unit), i..unit_at + 1));
    }
    None
}

/// A clinician's dose said a little later in the same turn ("we'll get you some motrin . we'll
/// give you 600 milligrams"), when no other drug is named in between and a giving verb
/// ("give", "take", "be") comes right before the dose.
fn dose_said_later(
    doc: &Doc,
    seg: &Seg,
    sentence: &Range<usize>,
    target: &Range<usize>,
) -> Option<(String, Range<usize>)> {
    const REACH: usize = 30;
    if !doc.may_be_clinician(seg.index) {
        return None;
    }
    let position = seg.sentences.iter().position(|s| s == sentence)?;
    let sentences_end = seg
        .sentences
        .get(position + 2)
        .or(seg.sentences.last())
        .map(|s| s.end)
        .unwrap_or(sentence.end);
    let limit = sentences_end.min(target.end + REACH).min(seg.tokens.len());
    let next_drug = DRUGS
        .find(&seg.tokens, target.end..limit)
        .first()
        .map(|m| m.tokens.start)
        .unwrap_or(limit);
    let (text, range) = find_dose(&seg.tokens, target.end, next_drug)?;
    let verb_from = range.start.saturating_sub(4).max(target.end);
    let given = seg.tokens[verb_from..range.start]
        .iter()
        .any(|t| t.is_any(&["give", "take", "be", "prescribe", "dose", "taking"]));
    given.then_some((text, range))
}

/// "twenty milligrams of lisinopril".
fn find_dose_before(
    tokens: &[Token],
    from: usize,
    target: usize,
) -> Option<(String, Range<usize>)> {
    let of = target.checked_sub(1)?;
    if of < from || !tokens[of].is("of") {
        return None;
    }
    let unit_at = of.checked_sub(1)?;
    let unit = dose_unit(&tokens.get(unit_at)?.text)?;
    for start in (from..unit_at).rev().take(4) {
        if let Some(number) = read_number(tokens, start, unit_at) {
            if number.tokens.end == unit_at {
                return Some((format!("{} {}", number.digits, unit), start..target));
            }
        }
    }
    None
}

fn dose_unit(word: &str) -> Option<&'static str> {
    match unit_abbreviation(word)? {
        unit @ ("mg" | "mcg" | "g" | "mL" | "units" | "%") => Some(unit),
        _ => None,
    }
}

const FREQUENCIES: &[(&[&str], &str)] = &[
    (&["once", "a", "day"], "daily"),
    (&["once", "daily"], "daily"),
    (&["once", "per", "day"], "daily"),
    (&["one", "time", "a", "day"], "daily"),
    (&["once", "a", "week"], "weekly"),
    (&["once", "weekly"], "weekly"),
    (&["every", "week"], "weekly"),
    (&["weekly"], "weekly"),
    (&["twice", "a", "day"], "twice daily"),
    (&["twice", "daily"], "twice daily"),
    (&["twice", "per", "day"], "twice daily"),
    (&["two", "times", "a", "day"], "twice daily"),
    (&["two", "times", "daily"], "twice daily"),
    (&["bid"], "twice daily"),
    (&["three", "times", "a", "day"], "three times daily"),
    (&["three", "times", "daily"], "three times daily"),
    (&["tid"], "three times daily"),
    (&["four", "times", "a", "day"], "four times daily"),
    (&["every", "day"], "daily"),
    (&["each", "day"], "daily"),
    (&["per", "day"], "daily"),
    (&["a", "day"], "daily"),
    (&["daily"], "daily"),
    (&["every", "morning"], "every morning"),
    (&["in", "the", "morning"], "in the morning"),
    (&["every", "night"], "at night"),
    (&["at", "night"], "at night"),
    (&["nightly"], "at night"),
    (&["at", "bedtime"], "at bedtime"),
    (&["before", "bed"], "at bedtime"),
    (&["as", "needed"], "as needed"),
    (&["when", "needed"], "as needed"),
    (&["prn"], "as needed"),
    (&["with", "meals"], "with meals"),
];

fn phrase_at(tokens: &[Token], i: usize, phrase: &[&str], stop: usize) -> bool {
    i + phrase.len() <= stop
        && phrase
            .iter()
            .zip(&tokens[i..])
            .all(|(word, token)| token.is(word))
}

fn find_frequency(tokens: &[Token], from: usize, to: usize) -> Option<(String, Range<usize>)> {
    for i in from..to {
        // "every six hours", "every 4 to 6 hours" is left alone (no single interval).
        if tokens[i].is("every") {
            if let Some(number) = read_number(tokens, i + 1, to) {
                let unit = tokens.get(number.tokens.end).map(|t| t.text.as_str());
                if matches!(unit, Some("hours")) && number.tokens.end < to {
                    return Some((
                        format!("every {} hours", number.digits),
                        i..number.tokens.end + 1,
                    ));
                }
            }
        }
        for (phrase, normalized) in FREQUENCIES {
            if phrase_at(tokens, i, phrase, to) {
                return Some((normalized.to_string(), i..i + phrase.len()));
            }
        }
    }
    None
}

const ROUTES: &[(&[&str], &str)] = &[
    (&["by", "mouth"], "by mouth"),
    (&["orally"], "by mouth"),
    (&["po"], "by mouth"),
    (&["inhaler"], "inhaled"),
    (&["inhaled"], "inhaled"),
    (&["nebulizer"], "nebulized"),
    (&["injection"], "injection"),
    (&["injections"], "injection"),
    (&["shot"], "injection"),
    (&["shots"], "injection"),
    (&["subcutaneous"], "subcutaneous"),
    (&["iv"], "IV"),
    (&["intravenous"], "IV"),
    (&["cream"], "topical"),
    (&["ointment"], "topical"),
    (&["gel"], "topical"),
    (&["topical"], "topical"),
    (&["patch"], "transdermal"),
    (&["nasal", "spray"], "nasal"),
    (&["eye", "drops"], "ophthalmic"),
];

fn find_route(tokens: &[Token], from: usize, to: usize) -> Option<(&'static str, Range<usize>)> {
    for i in from..to {
        for (phrase, normalized) in ROUTES {
            if phrase_at(tokens, i, phrase, to) {
                return Some((normalized, i..i + phrase.len()));
            }
        }
    }
    None
}

/// Merges mentions in transcript order: a dose-less mention joins the first fact of that drug;
/// a dosed mention fills a dose-less fact with the same standing or starts its own.
fn merge(mentions: Vec<Mention>) -> Vec<Mention> {
    let mut facts: Vec<Mention> = Vec::new();
    let same_standing = |a: Status, b: Status| {
        let current = |s: Status| matches!(s, Status::Current | Status::Continue);
        a == b || (current(a) && current(b))
    };
    for mention in mentions {
        let drug_facts =
            |f: &&mut Mention| f.canonical == mention.canonical && f.assertion == mention.assertion;
        let target = match &mention.dose {
            None => facts.iter_mut().find(|f| drug_facts(f)),
            Some(dose) => {
                let same_dose = facts.iter().position(|f| {
                    f.canonical == mention.canonical
                        && f.assertion == mention.assertion
                        && f.dose.as_deref() == Some(dose.as_str())
                });
                match same_dose {
                    Some(i) => facts.get_mut(i),
                    None => facts.iter_mut().find(|f| {
                        drug_facts(f) && f.dose.is_none() && same_standing(f.status, mention.status)
                    }),
                }
            }
        };
        match target {
            Some(fact) => {
                if fact.dose.is_none() && mention.dose.is_some() {
                    fact.dose = mention.dose.clone();
                    fact.frequency = None;
                    fact.route = None;
                    if mention.status != Status::Current {
                        fact.status = mention.status;
                    }
                }
                if fact.dose == mention.dose || mention.dose.is_none() {
                    if fact.frequency.is_none() && mention.dose == fact.dose {
                        fact.frequency = mention.frequency.clone();
                    }
                    if fact.route.is_none() && mention.dose == fact.dose {
                        fact.route = mention.route;
                    }
                }
                if fact.status == Status::Current && mention.status != Status::Current {
                    fact.status = mention.status;
                }
                fact.evidence.extend(mention.evidence);
                fact.said.extend(mention.said);
            }
            None => facts.push(mention),
        }
    }
    facts
}

fn display_name(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn push_medication(fact: Mention, out: &mut Collector) {
    let name = display_name(&fact.name);
    let mut regimen = Vec::new();
    if let Some(dose) = &fact.dose {
        regimen.push(dose.clone());
    }
    if let Some(route) = fact.route {
        regimen.push(route.to_string());
    }
    if let Some(frequency) = &fact.frequency {
        regimen.push(frequency.clone());
    }
    let regimen = regimen.join(" ");
    let with_regimen = |prefix: &str, joiner: &str| {
        if regimen.is_empty() {
            format!("{prefix}{name}.")
        } else {
            format!("{prefix}{name}{joiner}{regimen}.")
        }
    };
    // Verbs only as said: a note's "Start" over a clinician's "let's try" is a word the
    // evidence does not have.
    let said = |words: &[&str]| fact.said.iter().any(|w| words.contains(&w.as_str()));
    let verb = |choices: &[(&[&str], &'static str)], fallback: &'static str| {
        choices
            .iter()
            .find(|(words, _)| said(words))
            .map(|(_, v)| *v)
            .unwrap_or(fallback)
    };
    let text = match (fact.assertion, fact.status) {
        (Assertion::Absent, _) if said(&["take", "taking", "takes"]) => {
            format!("Not taking {name}.")
        }
        (Assertion::Absent, _) => format!("No {name}."),
        (Assertion::Historical, _) => {
            let prefix = verb(
                &[
                    (&["used"], "Previously used "),
                    (&["quit"], "Quit "),
                    (&["history"], "History of "),
                    (&["past"], "In the past, "),
                ],
                "Previously took ",
            );
            with_regimen(prefix, " ")
        }
        (_, Status::Current) => with_regimen("", " "),
        (_, Status::Start) => with_regimen(
            verb(
                &[
                    (&["start", "starting"], "Start "),
                    (
                        &["prescribe", "prescribed", "prescribing", "prescription"],
                        "Prescribe ",
                    ),
                    (&["try", "trial"], "Try "),
                    (&["begin"], "Begin "),
                ],
                "Start ",
            ),
            " ",
        ),
        (_, Status::Increase) => with_regimen(verb(&[(&["raise"], "Raise ")], "Increase "), " to "),
        (_, Status::Decrease) => with_regimen(
            verb(
                &[(&["reduce"], "Reduce "), (&["lower"], "Lower ")],
                "Decrease ",
            ),
            " to ",
        ),
        (_, Status::Stop) => format!(
            "{} {}.",
            verb(
                &[(&["discontinue"], "Discontinue"), (&["hold"], "Hold")],
                "Stop"
            ),
            fact.name
        ),
        (_, Status::Continue) => with_regimen("Continue ", " "),
    };
    let detail = Detail::Medication {
        name: fact.name.clone(),
        dose: fact.dose.clone(),
        route: fact.route.map(str::to_string),
        frequency: fact.frequency.clone(),
    };
    let key = format!(
        "{}:{:?}:{:?}:{}",
        fact.canonical,
        fact.assertion,
        fact.dose,
        fact.status.as_str()
    );
    out.push(
        Candidate::new(
            FactKind::Medication,
            fact.assertion,
            text.clone(),
            detail,
            fact.evidence.clone(),
            key.clone(),
        )
        .with_attribute("status", fact.status.as_str()),
    );
    let category = match fact.status {
        Status::Current => return,
        _ if fact.assertion != Assertion::Present => return,
        Status::Start => PlanCategory::Prescription,
        Status::Increase | Status::Decrease | Status::Stop => PlanCategory::MedicationChange,
        Status::Continue => PlanCategory::Other,
    };
    out.push(
        Candidate::new(
            FactKind::Plan,
            Assertion::Present,
            text,
            Detail::Plan { category },
            fact.evidence,
            format!("medication:{key}"),
        )
        .with_attribute("drug", &fact.name),
    );
}

const REACTIONS: &[(&[&str], &str)] = &[
    (&["hives"], "hives"),
    (&["rash"], "rash"),
    (&["itching"], "itching"),
    (&["itchy"], "itching"),
    (&["itch"], "itching"),
    (&["swelling"], "swelling"),
    (&["swell"], "swelling"),
    (&["swells"], "swelling"),
    (&["anaphylaxis"], "anaphylaxis"),
    (&["anaphylactic"], "anaphylaxis"),
    (&["throat", "closes"], "throat closing"),
    (&["throat", "closing"], "throat closing"),
    (&["shortness", "of", "breath"], "shortness of breath"),
    (&["trouble", "breathing"], "trouble breathing"),
    (&["nausea"], "nausea"),
    (&["vomiting"], "vomiting"),
    (&["throw", "up"], "vomiting"),
    (&["upset", "stomach"], "upset stomach"),
    (&["stomach", "upset"], "upset stomach"),
    (&["diarrhea"], "diarrhea"),
    (&["palpitations"], "palpitations"),
    (&["headache"], "headache"),
    (&["headaches"], "headache"),
    (&["break", "out"], "breaking out"),
    (&["breaks", "out"], "breaking out"),
    (&["blisters"], "blisters"),
];

/// A reaction said after the substance, in the same turn, within a short reach.
fn find_reaction(seg: &Seg, from: usize) -> Option<(&'static str, Range<usize>)> {
    let to = (from + 15).min(seg.tokens.len());
    for i in from..to {
        if !DRUGS.find(&seg.tokens, i..i + 1).is_empty() && i > from {
            return None;
        }
        for (phrase, normalized) in REACTIONS {
            if phrase_at(&seg.tokens, i, phrase, to) {
                let negated = i > 0 && seg.tokens[i - 1].is_any(&["no", "not", "without"]);
                return (!negated).then(|| (*normalized, i..i + phrase.len()));
            }
        }
    }
    None
}

/// Substances (drugs and common allergens) inside `range`.
fn substances(seg: &Seg, range: Range<usize>) -> Vec<(String, Range<usize>)> {
    let mut found: Vec<(String, Range<usize>)> = Vec::new();
    for m in DRUGS
        .find(&seg.tokens, range.clone())
        .into_iter()
        .chain(ALLERGENS.find(&seg.tokens, range))
    {
        let said = seg.tokens[m.tokens.clone()]
            .iter()
            .map(|t| t.text.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        if !found
            .iter()
            .any(|(_, r)| r.start < m.tokens.end && m.tokens.start < r.end)
        {
            found.push((said, m.tokens));
        }
    }
    found.sort_by_key(|(_, r)| r.start);
    found
}

const ALLERGY_WORDS: &[&str] = &["allergic", "allergy", "allergies", "nkda"];

fn extract_allergies(doc: &Doc, out: &mut Collector) {
    let mut candidates: Vec<Candidate> = Vec::new();
    for seg in &doc.segs {
        for sentence in &seg.sentences {
            let tokens = &seg.tokens;
            let Some(word) =
                (sentence.start..sentence.end).find(|i| tokens[*i].is_any(ALLERGY_WORDS))
            else {
                if seg.is_question(sentence) {
                    candidates.extend(reaction_confirmed(doc, seg, sentence));
                }
                continue;
            };
            let is_question = seg.is_question(sentence);
            // The reply to "any allergies?" carries the substance or the denial.
            if is_question {
                if let Some(c) = allergy_from_reply(doc, seg, sentence, word) {
                    candidates.extend(c);
                }
                continue;
            }
            let word_range = word..word + 1;
            let ctx = context::assess(seg, sentence, &word_range);
            if ctx.assertion == Assertion::OtherPerson || ctx.hypothetical {
                continue;
            }
            let clause = context::clause(seg, sentence, &word_range);
            let near = clause.start.max(word.saturating_sub(3))..(word + 6).min(clause.end);
            let found = substances(seg, near);
            if ctx.assertion == Assertion::Absent {
                if found.is_empty() {
                    let start = ctx.trigger.map(|t| t.start).unwrap_or(word).min(word);
                    if let Some(evidence) = Evidence::of(seg, start..word + 1) {
                        candidates.push(no_known_allergies(seg, start..word + 1, vec![evidence]));
                    }
                }
                continue;
            }
            if ctx.assertion != Assertion::Present && ctx.assertion != Assertion::Historical {
                continue;
            }
            for (substance, range) in found {
                candidates.extend(allergy(seg, word, &substance, range, Vec::new()));
            }
            if tokens[word].is("allergies")
                && word > sentence.start
                && tokens[word - 1].is("seasonal")
            {
                if let Some(evidence) = Evidence::of(seg, word - 1..word + 1) {
                    candidates.push(Candidate::new(
                        FactKind::Allergy,
                        Assertion::Present,
                        "Seasonal allergies.".to_string(),
                        Detail::Allergy {
                            substance: "seasonal allergens".to_string(),
                            reaction: None,
                        },
                        vec![evidence],
                        "seasonal".to_string(),
                    ));
                }
            }
        }
    }
    let has_allergy = candidates
        .iter()
        .any(|c| c.assertion != Assertion::Absent && c.key != "seasonal");
    for candidate in candidates {
        // A denial next to a named allergy is a denial of *other* allergies: not NKDA.
        if candidate.assertion == Assertion::Absent && has_allergy {
            continue;
        }
        out.push(candidate);
    }
}

/// Reactions a confirmed question may name: the ones only an allergy or intolerance explains.
const ALLERGIC_REACTIONS: &[&str] = &[
    "hives",
    "rash",
    "itching",
    "itchy",
    "itch",
    "anaphylaxis",
    "swelling",
];

/// "it looks like you suffer from itching with the methylprednisolone ?" — "that's correct": a
/// reaction to a drug the clinician names, confirmed by a bare yes. Conditions, risks and side
/// effects to watch for ("this can cause a rash", "if you get hives") are no history.
fn reaction_confirmed(doc: &Doc, seg: &Seg, sentence: &Range<usize>) -> Vec<Candidate> {
    let tokens = &seg.tokens;
    let speculative = tokens[sentence.clone()].iter().any(|t| {
        t.is_any(&[
            "if", "can", "could", "may", "might", "cause", "causes", "side", "risk", "not", "no",
            "don't", "any", "other", "when",
        ]) || t.is_any(FAMILY_WORDS)
    });
    let Some(answered) = qa::answered(doc, seg.index) else {
        return Vec::new();
    };
    if speculative || answered.question != *sentence || answered.reply != Reply::Yes {
        return Vec::new();
    }
    let addressed = tokens[sentence.clone()]
        .iter()
        .any(|t| t.is_any(&["you", "you're", "your"]));
    let Some(reaction) =
        (sentence.start..sentence.end).find(|i| tokens[*i].is_any(ALLERGIC_REACTIONS))
    else {
        return Vec::new();
    };
    let near = reaction.saturating_sub(6).max(sentence.start)..(reaction + 6).min(sentence.end);
    let found = DRUGS.find(tokens, near);
    let (Some(reply_seg), true, [drug]) = (
        doc.segs.get(answered.reply_seg),
        addressed,
        found.as_slice(),
    ) else {
        return Vec::new();
    };
    let substance = tokens[drug.tokens.clone()]
        .iter()
        .map(|t| t.text.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let normalized = REACTIONS
        .iter()
        .find(|(phrase, _)| phrase.len() == 1 && tokens[reaction].is(phrase[0]))
        .map(|(_, n)| *n)
        .unwrap_or("reaction");
    let span = drug.tokens.start.min(reaction)..drug.tokens.end.max(reaction + 1);
    let evidence = [
        Evidence::of(seg, span),
        Evidence::of(reply_seg, answered.reply_tokens.clone()),
    ];
    let Some(evidence) = evidence.into_iter().collect::<Option<Vec<_>>>() else {
        return Vec::new();
    };
    vec![Candidate::new(
        FactKind::Allergy,
        Assertion::Present,
        format!("Allergic to {substance} ({normalized})."),
        Detail::Allergy {
            substance: substance.clone(),
            reaction: Some(normalized.to_string()),
        },
        evidence,
        format!("substance:{substance}"),
    )]
}

fn no_known_allergies(seg: &Seg, range: Range<usize>, evidence: Vec<Evidence>) -> Candidate {
    let about_drugs = seg.tokens[range.clone()].iter().any(|t| {
        t.is_any(&[
            "drug",
            "drugs",
            "medication",
            "medications",
            "medicine",
            "medicines",
        ])
    });
    // Only words said: "known" and "drug" are often not.
    let said = |w: &str| seg.tokens[range.clone()].iter().any(|t| t.is(w));
    let what = [
        "drug",
        "drugs",
        "medication",
        "medications",
        "medicine",
        "medicines",
    ]
    .into_iter()
    .find(|w| said(w))
    .map(|w| w.strip_suffix('s').unwrap_or(w));
    let text = match (said("known"), what) {
        (true, Some(what)) => format!("No known {what} allergies."),
        (true, None) => "No known allergies.".to_string(),
        (false, Some(what)) => format!("Denies {what} allergies."),
        (false, None) => "Denies allergies.".to_string(),
    };
    Candidate::new(
        FactKind::Allergy,
        Assertion::Absent,
        text,
        Detail::Allergy {
            substance: if about_drugs { "drugs" } else { "any" }.to_string(),
            reaction: None,
        },
        evidence,
        "none".to_string(),
    )
}

fn allergy(
    seg: &Seg,
    allergy_word: usize,
    substance: &str,
    range: Range<usize>,
    mut evidence: Vec<Evidence>,
) -> Option<Candidate> {
    let reaction = find_reaction(seg, range.end);
    let start = range.start.min(allergy_word);
    let mut end = range.end.max(allergy_word + 1);
    if let Some((_, r)) = &reaction {
        end = end.max(r.end);
    }
    evidence.insert(0, Evidence::of(seg, start..end)?);
    let text = match &reaction {
        Some((reaction, _)) => format!("Allergic to {substance} ({reaction})."),
        None => format!("Allergic to {substance}."),
    };
    Some(Candidate::new(
        FactKind::Allergy,
        Assertion::Present,
        text,
        Detail::Allergy {
            substance: substance.to_string(),
            reaction: reaction.map(|(r, _)| r.to_string()),
        },
        evidence,
        format!("substance:{substance}"),
    ))
}

fn allergy_from_reply(
    doc: &Doc,
    seg: &Seg,
    sentence: &Range<usize>,
    word: usize,
) -> Option<Vec<Candidate>> {
    let question_evidence = Evidence::of(seg, word..word + 1)?;
    let asks_for_more = seg.tokens[sentence.clone()]
        .iter()
        .any(|t| t.is_any(&["other", "else", "more", "new"]));
    if let Some(answered) = qa::answered(doc, seg.index) {
        if answered.question != *sentence {
            return None;
        }
        let reply_seg = doc.segs.get(answered.reply_seg)?;
        let reply_evidence = Evidence::of(reply_seg, answered.reply_tokens.clone())?;
        if answered.reply == Reply::No && !asks_for_more {
            let evidence = vec![question_evidence, reply_evidence];
            return Some(vec![no_known_allergies(seg, sentence.clone(), evidence)]);
        }
        // "i have that you're allergic to augmentin , is that right ?" — "yes": the substance
        // the question names, confirmed. Not "any other allergies?", not "not allergic".
        // The allergy's own clause: "you're not taking any medications , but you're allergic
        // to augmentin" is not negated.
        let own_clause = context::clause(seg, sentence, &(word..word + 1));
        let negated = seg.tokens[own_clause]
            .iter()
            .any(|t| t.is_any(&["not", "no", "don't", "never", "if"]) || t.is_any(FAMILY_WORDS));
        if answered.reply == Reply::Yes && !asks_for_more && !negated {
            let near = word..(word + 6).min(sentence.end);
            let found = substances(seg, near);
            return Some(
                found
                    .into_iter()
                    .filter_map(|(substance, range)| {
                        allergy(seg, word, &substance, range, vec![reply_evidence])
                    })
                    .collect(),
            );
        }
        return None;
    }
    // "any allergies?" — "penicillin , i get hives": the reply names the substance.
    let reply_index = seg.index + 1;
    if doc.role(seg.index) == Role::Patient || doc.role(reply_index) == Role::Clinician {
        return None;
    }
    let reply = doc.segs.get(reply_index)?;
    let first = reply.sentences.first()?.clone();
    // Only a question about allergies and a short reply naming the substance: "any allergies
    // with your breathing?" — "other than the pollen ..." is no allergy list.
    let about_allergies = seg.tokens[sentence.clone()].windows(2).any(|w| {
        w[1].is_any(&["allergies", "allergic"])
            && w[0].is_any(&["any", "you're", "are", "drug", "medication"])
    });
    let short = reply.tokens[first.clone()]
        .iter()
        .filter(|t| !t.is_punct())
        .count()
        <= 6;
    if !about_allergies || !short {
        return None;
    }
    let negated = reply.tokens[first.clone()]
        .iter()
        .any(|t| t.is_any(&["no", "not", "don't", "nope", "never"]) || t.is_any(FAMILY_WORDS));
    if negated {
        return None;
    }
    let found = substances(reply, first);
    let candidates = found
        .into_iter()
        .filter_map(|(substance, range)| {
            allergy(
                reply,
                range.start,
                &substance,
                range,
                vec![question_evidence],
            )
        })
        .collect();
    Some(candidates)
}

#[cfg(test)]
mod tests {
    use crate::clinical::{extract, Assertion, Detail, Fact, FactKind};
    use crate::transcript::Transcript;

    fn facts(dialogue: &str) -> Vec<Fact> {
        extract(&Transcript::from_dialogue(dialogue).expect("dialogue"))
    }

    fn medications(facts: &[Fact]) -> Vec<(String, Option<String>, Option<String>, Assertion)> {
        facts
            .iter()
            .filter(|f| f.kind == FactKind::Medication)
            .filter_map(|f| match &f.detail {
                Detail::Medication {
                    name,
                    dose,
                    frequency,
                    ..
                } => Some((name.clone(), dose.clone(), frequency.clone(), f.assertion)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn medication_with_dose_and_frequency() {
        let found = facts(
            "[doctor] you're on lisinopril twenty milligrams once a day and metformin 1000 mg \
             twice a day .",
        );
        let meds = medications(&found);
        assert!(meds.contains(&(
            "lisinopril".into(),
            Some("20 mg".into()),
            Some("daily".into()),
            Assertion::Present
        )));
        assert!(meds.contains(&(
            "metformin".into(),
            Some("1000 mg".into()),
            Some("twice daily".into()),
            Assertion::Present
        )));
        let lisinopril = found
            .iter()
            .find(|f| f.text == "Lisinopril 20 mg daily.")
            .expect("lisinopril wording");
        assert_eq!(lisinopril.evidence[0].segment, "s1");
    }

    #[test]
    fn a_yes_to_a_medication_question_is_a_medication_with_both_turns() {
        let found = facts("[doctor] are you taking your lisinopril ?\n[patient] yes .");
        let med = found
            .iter()
            .find(|f| f.kind == FactKind::Medication)
            .expect("medication");
        assert_eq!(med.assertion, Assertion::Present);
        let segments: Vec<&str> = med.evidence.iter().map(|e| e.segment.as_str()).collect();
        assert_eq!(segments, ["s1", "s2"]);
    }

    #[test]
    fn a_dose_change_is_a_plan_item_and_keeps_its_verb() {
        let found = facts("[doctor] i'm going to increase your lasix to 80 milligrams daily .");
        let plan = found
            .iter()
            .find(|f| f.kind == FactKind::Plan)
            .expect("plan item");
        assert_eq!(plan.text, "Increase Lasix to 80 mg daily.");
    }

    #[test]
    fn medication_wording_uses_the_verbs_said() {
        // A drug being started is stated once, as a plan item; others in the medication list.
        let texts = |dialogue: &str| -> Vec<String> {
            let mut texts: Vec<String> = facts(dialogue)
                .into_iter()
                .filter(|f| matches!(f.kind, FactKind::Medication | FactKind::Plan))
                .map(|f| f.text)
                .collect();
            texts.dedup();
            texts
        };
        assert_eq!(
            texts("[doctor] let's try some ibuprofen 600 milligrams ."),
            ["Try Ibuprofen 600 mg."]
        );
        assert_eq!(
            texts("[patient] i used to be on metformin ."),
            ["Previously used Metformin."]
        );
        assert_eq!(
            texts("[patient] i have n't been taking my lasix ."),
            ["Not taking Lasix."]
        );
        assert_eq!(
            texts("[patient] i have n't had any tylenol ."),
            ["No Tylenol."]
        );
    }

    #[test]
    fn allergy_with_reaction_and_no_known_allergies() {
        let found = facts("[patient] i'm allergic to penicillin , i get hives .");
        let allergy = found
            .iter()
            .find(|f| f.kind == FactKind::Allergy)
            .expect("allergy");
        assert_eq!(allergy.text, "Allergic to penicillin (hives).");
        assert_eq!(allergy.assertion, Assertion::Present);
        assert!(!found.iter().any(|f| f.kind == FactKind::Medication));

        let none = facts("[doctor] any allergies to medications ?\n[patient] no .");
        let nkda = none
            .iter()
            .find(|f| f.kind == FactKind::Allergy)
            .expect("nkda");
        assert_eq!(nkda.assertion, Assertion::Absent);
        assert_eq!(nkda.text, "Denies medication allergies.");
        assert_eq!(nkda.evidence.len(), 2);

        let stated = facts("[patient] i have no known drug allergies .");
        assert!(stated.iter().any(|f| f.kind == FactKind::Allergy
            && f.assertion == Assertion::Absent
            && f.text == "No known drug allergies."));
    }

    #[test]
    fn a_confirmed_allergy_or_reaction_in_a_question_is_an_allergy() {
        let found = facts(
            "[doctor] i have that you're not taking any medications , but that you're allergic \
             to augmentin , is that right ?\n[patient] yes .",
        );
        let allergy = found
            .iter()
            .find(|f| f.kind == FactKind::Allergy)
            .expect("allergy");
        assert_eq!(allergy.text, "Allergic to augmentin.");
        assert_eq!(allergy.evidence.len(), 2);

        let reaction = facts(
            "[doctor] okay , and it looks like you suffer from itching with the \
             methylprednisolone ?\n[patient] uh , that's correct .",
        );
        assert!(reaction.iter().any(|f| f.kind == FactKind::Allergy
            && f.text == "Allergic to methylprednisolone (itching)."));

        for unconfirmed in [
            "[doctor] are you allergic to augmentin ?\n[patient] no .",
            "[doctor] prednisone can cause a rash , okay ?\n[patient] yes .",
            "[doctor] did you get a rash with any other medicine like prednisone ?\n[patient] yes .",
            "[doctor] so your mother is allergic to penicillin ?\n[patient] yes .",
        ] {
            let found = facts(unconfirmed);
            assert!(
                !found
                    .iter()
                    .any(|f| f.kind == FactKind::Allergy && f.assertion == Assertion::Present),
                "{unconfirmed}: {found:?}"
            );
        }
    }

    #[test]
    fn a_denial_of_other_allergies_is_not_nkda() {
        let found = facts(
            "[doctor] i have that you're allergic to penicillin . any other allergies ?\n\
             [patient] nope , just penicillin .",
        );
        let allergies: Vec<&Fact> = found
            .iter()
            .filter(|f| f.kind == FactKind::Allergy)
            .collect();
        assert_eq!(allergies.len(), 1, "{allergies:?}");
        assert_eq!(allergies[0].assertion, Assertion::Present);
    }
}
