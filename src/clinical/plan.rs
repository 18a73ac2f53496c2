//! The clinician's own statements: chief complaint, exam findings, results read out, the
//! stated assessment and the plan (tests, referrals, follow-up, return precautions, counseling).
//!
//! These facts keep the clinician's words: the text is the cue phrase and what follows it in the
//! sentence, cleaned of fillers with numbers as digits, so negations and laterality in it are the
//! ones said. Questions and the patient's turns never make these facts.

use std::ops::Range;

use super::collect::{Candidate, Collector, Doc, Evidence};
use super::text::{as_sentence, is_decimal_point, is_number_word, render, Seg, Token};
use super::{Assertion, Detail, FactKind, PlanCategory};

/// Longest excerpt (in tokens) a clinician statement is cut to.
const MAX_EXCERPT: usize = 32;

fn phrase_at(tokens: &[Token], i: usize, phrase: &[&str], stop: usize) -> bool {
    i + phrase.len() <= stop
        && phrase
            .iter()
            .zip(&tokens[i..])
            .all(|(word, token)| token.is(word))
}

fn find_phrase(
    tokens: &[Token],
    range: Range<usize>,
    phrases: &[&[&str]],
) -> Option<(usize, usize)> {
    range.clone().find_map(|i| {
        phrases
            .iter()
            .find(|p| phrase_at(tokens, i, p, range.end))
            .map(|p| (i, p.len()))
    })
}

/// From `start` to the sentence end, at most `MAX_EXCERPT` tokens, cut back to a comma when long.
fn excerpt(seg: &Seg, start: usize, sentence: &Range<usize>) -> Range<usize> {
    let hard_end = sentence.end.min(start + MAX_EXCERPT);
    if hard_end == sentence.end {
        return start..hard_end;
    }
    let comma = (start + 6..hard_end)
        .rev()
        .find(|i| seg.tokens[*i].is(",") || seg.tokens[*i].is_any(&["okay", "so", "and"]));
    start..comma.unwrap_or(hard_end)
}

fn statement(
    seg: &Seg,
    range: Range<usize>,
    kind: FactKind,
    assertion: Assertion,
    detail: Detail,
) -> Option<Candidate> {
    let text = as_sentence(&render(seg, range.clone()));
    if text.split_whitespace().count() < 3 {
        return None;
    }
    let evidence = Evidence::of(seg, range)?;
    let key = text.to_lowercase();
    Some(Candidate::new(
        kind,
        assertion,
        text,
        detail,
        vec![evidence],
        key,
    ))
}

pub(crate) fn extract(doc: &Doc, out: &mut Collector) {
    chief_complaint(doc, out);
    for seg in &doc.segs {
        if !doc.may_be_clinician(seg.index) {
            continue;
        }
        for sentence in &seg.sentences {
            if seg.is_question(sentence) {
                continue;
            }
            let facts = [
                exam_finding(seg, sentence),
                result(seg, sentence),
                assessment(seg, sentence),
            ];
            for candidate in facts.into_iter().flatten() {
                out.push(candidate);
            }
            for candidate in plan_items(seg, sentence) {
                out.push(candidate);
            }
        }
    }
}

const COMPLAINT_CUES: &[&[&str]] = &[
    &["presents", "today", "for"],
    &["presents", "today", "with"],
    &["presents", "for"],
    &["presents", "with"],
    &["here", "today", "for"],
    &["in", "today", "for"],
    &["here", "for"],
    &["coming", "in", "for"],
    &["came", "in", "for"],
    &["in", "for"],
];

fn chief_complaint(doc: &Doc, out: &mut Collector) {
    for seg in doc.segs.iter().take(12) {
        if !doc.may_be_clinician(seg.index) {
            continue;
        }
        for sentence in &seg.sentences {
            if seg.is_question(sentence) {
                continue;
            }
            let Some((at, len)) = find_phrase(&seg.tokens, sentence.clone(), COMPLAINT_CUES) else {
                continue;
            };
            let start = at + len;
            let mut end = sentence.end.min(start + 12);
            if let Some(stop) = (start..end).find(|i| {
                (seg.tokens[*i].is_punct() && !is_decimal_point(&seg.tokens, *i))
                    || seg.tokens[*i].is_any(&["and", "so", "which", "but"])
            }) {
                end = stop;
            }
            // Never cut a number in two ("a four . four centimeter" cut after "four" would
            // state a number that was never said): drop a number the window splits.
            while end > start
                && end < seg.tokens.len()
                && (is_decimal_point(&seg.tokens, end - 1)
                    || is_number_word(&seg.tokens[end - 1].text)
                        && (is_decimal_point(&seg.tokens, end)
                            || is_number_word(&seg.tokens[end].text)))
            {
                end -= 1;
            }
            if end <= start + 1 {
                continue;
            }
            if let Some(candidate) = statement(
                seg,
                start..end,
                FactKind::ChiefComplaint,
                Assertion::Present,
                Detail::Text,
            ) {
                let mut candidate = candidate;
                candidate.key = "chief complaint".to_string();
                out.push(candidate);
                return;
            }
        }
    }
}

const EXAM_CUES: &[&[&str]] = &[
    &["on", "exam"],
    &["on", "your", "exam"],
    &["on", "my", "exam"],
    &["on", "examination"],
    &["on", "physical", "exam"],
    &["on", "your", "physical"],
    &["heart", "exam"],
    &["lung", "exam"],
    &["neck", "exam"],
    &["abdominal", "exam"],
    &["skin", "exam"],
    &["musculoskeletal", "exam"],
    &["neurologic", "exam"],
    &["neurological", "exam"],
    &["i", "do", "appreciate"],
    &["i", "appreciate"],
    &["i", "don't", "appreciate"],
    &["i", "do", "not", "appreciate"],
    &["i", "do", "notice"],
    &["i", "do", "hear"],
    &["i", "don't", "hear"],
    &["i", "hear"],
    &["lungs", "are"],
    &["lungs", "sound"],
    &["your", "lungs"],
    &["your", "heart", "sounds"],
    &["regular", "rate", "and", "rhythm"],
    &["tenderness", "to", "palpation"],
    &["there", "is", "no"],
    &["there's", "no"],
    &["range", "of", "motion"],
    &["pain", "to", "palpation"],
];

const EXAM_WORDS: &[&str] = &[
    "murmur",
    "crackles",
    "rales",
    "wheezing",
    "wheezes",
    "rhonchi",
    "edema",
    "tenderness",
    "tender",
    "swelling",
    "effusion",
    "erythema",
    "bruising",
    "distention",
    "clear",
    "rhythm",
    "motion",
    "palpation",
    "pulses",
    "reflexes",
    "strength",
    "sensation",
    "lesion",
    "rash",
    "mass",
    "nodes",
    "lymphadenopathy",
    "bruit",
    "laxity",
    "soft",
    "normal",
];

fn exam_finding(seg: &Seg, sentence: &Range<usize>) -> Option<Candidate> {
    let (at, _) = find_phrase(&seg.tokens, sentence.clone(), EXAM_CUES)?;
    let range = excerpt(seg, at, sentence);
    let has_finding = seg.tokens[range.clone()]
        .iter()
        .any(|t| t.is_any(EXAM_WORDS));
    let future = seg.tokens[range.clone()]
        .iter()
        .any(|t| t.is_any(&["gonna", "going", "will", "let's", "want", "if"]));
    if !has_finding || future {
        return None;
    }
    statement(
        seg,
        range,
        FactKind::ExamFinding,
        Assertion::Present,
        Detail::Text,
    )
}

const RESULT_NOUNS: &[&str] = &[
    "x-ray",
    "x-rays",
    "xray",
    "mri",
    "ct",
    "cat",
    "ultrasound",
    "echo",
    "echocardiogram",
    "ekg",
    "ecg",
    "electrocardiogram",
    "labs",
    "lab",
    "bloodwork",
    "a1c",
    "hemoglobin",
    "cholesterol",
    "biopsy",
    "results",
    "scan",
    "urinalysis",
    "culture",
    "ejection",
    "creatinine",
    "potassium",
    "ldl",
];

const RESULT_VERBS: &[&str] = &[
    "showed",
    "shows",
    "showing",
    "demonstrated",
    "demonstrates",
    "revealed",
    "reveals",
    "was",
    "were",
    "is",
    "came",
    "looked",
    "looks",
    "see",
];

const FUTURE: &[&str] = &[
    "gonna", "going", "will", "we'll", "i'll", "order", "want", "let's", "schedule", "get", "need",
    "should", "if",
];

fn result(seg: &Seg, sentence: &Range<usize>) -> Option<Candidate> {
    let tokens = &seg.tokens;
    let noun = sentence.clone().find(|i| tokens[*i].is_any(RESULT_NOUNS))?;
    let start = (sentence.start..noun)
        .rev()
        .take(4)
        .find(|i| tokens[*i].is_any(&["your", "the", "my", "her", "his"]))
        .unwrap_or(noun);
    let range = excerpt(seg, start, sentence);
    let verb = tokens[range.clone()].iter().any(|t| t.is_any(RESULT_VERBS));
    let future = tokens[sentence.clone()].iter().any(|t| t.is_any(FUTURE));
    if !verb || future || range.len() < 4 {
        return None;
    }
    statement(
        seg,
        range,
        FactKind::Result,
        Assertion::Present,
        Detail::Text,
    )
}

const ASSESSMENT_CUES: &[&[&str]] = &[
    &["my", "impression"],
    &["my", "assessment"],
    &["my", "diagnosis"],
    &["i", "think", "this", "is"],
    &["i", "think", "that", "this", "is"],
    &["i", "think", "you", "have"],
    &["i", "think", "that", "you", "have"],
    &["i", "think", "you're"],
    &["i", "think", "it's"],
    &["i", "believe", "you", "have"],
    &["it", "sounds", "like", "you", "have"],
    &["sounds", "like", "you", "have"],
    &["it", "looks", "like", "you", "have"],
    &["this", "looks", "like"],
    &["this", "sounds", "like"],
    &["consistent", "with"],
    &["you", "have", "a"],
    &["you've", "got", "a"],
    &["diagnosed", "with"],
];

fn assessment(seg: &Seg, sentence: &Range<usize>) -> Option<Candidate> {
    let (at, _) = find_phrase(&seg.tokens, sentence.clone(), ASSESSMENT_CUES)?;
    let range = excerpt(seg, at, sentence);
    let hedged = seg.tokens[range.clone()].iter().any(|t| {
        t.is_any(&[
            "might", "maybe", "possible", "possibly", "probably", "could",
        ])
    });
    let assertion = if hedged {
        Assertion::Possible
    } else {
        Assertion::Present
    };
    statement(seg, range, FactKind::Assessment, assertion, Detail::Text)
}

const PLAN_CUES: &[&[&str]] = &[
    &["i'm", "gonna"],
    &["i", "am", "going", "to"],
    &["i'm", "going", "to"],
    &["we're", "gonna"],
    &["we're", "going", "to"],
    &["we", "will"],
    &["we'll"],
    &["i'll"],
    &["i", "will"],
    &["i", "want", "you", "to"],
    &["i'd", "like", "you", "to"],
    &["i", "would", "like", "you", "to"],
    &["i", "want", "to"],
    &["i'd", "like", "to"],
    &["let's"],
    &["i", "recommend"],
    &["i", "would", "recommend"],
    &["i'd", "recommend"],
    &["you", "should"],
    &["make", "sure", "you"],
    &["call", "me"],
    &["let", "me", "know"],
    &["come", "back"],
    &["follow", "up"],
];

fn category_of(tokens: &[Token]) -> Option<PlanCategory> {
    let has = |words: &[&str]| tokens.iter().any(|t| t.is_any(words));
    let has_phrase =
        |phrase: &[&str]| (0..tokens.len()).any(|i| phrase_at(tokens, i, phrase, tokens.len()));
    if has(&["if", "worse", "worsens", "emergency", "er"])
        && has(&["call", "come", "let", "go", "contact", "return"])
    {
        return Some(PlanCategory::ReturnPrecaution);
    }
    if has(&["refer", "referral", "specialist", "therapy", "pt"])
        || has_phrase(&["physical", "therapy"])
    {
        return Some(PlanCategory::Referral);
    }
    if has(&[
        "order",
        "ordering",
        "x-ray",
        "mri",
        "ct",
        "ultrasound",
        "echocardiogram",
        "echo",
        "ekg",
        "labs",
        "bloodwork",
        "a1c",
        "biopsy",
        "test",
        "tests",
        "scan",
        "culture",
        "urinalysis",
        "colonoscopy",
        "egd",
        "panel",
        "cbc",
    ]) {
        return Some(PlanCategory::Test);
    }
    if has(&["prescribe", "prescription", "prescribing"]) {
        return Some(PlanCategory::Prescription);
    }
    if has(&[
        "injection",
        "inject",
        "surgery",
        "procedure",
        "splint",
        "brace",
        "sling",
        "cast",
        "aspirate",
        "drain",
        "stitches",
        "sutures",
    ]) {
        return Some(PlanCategory::Procedure);
    }
    if has_phrase(&["follow", "up"])
        || has_phrase(&["come", "back"])
        || has_phrase(&["see", "you"])
        || has(&["weeks", "months", "follow-up", "recheck"])
            && has(&["see", "back", "return", "follow"])
    {
        return Some(PlanCategory::FollowUp);
    }
    if has(&[
        "monitor",
        "diet",
        "exercise",
        "avoid",
        "limit",
        "ice",
        "rest",
        "elevate",
        "hydrated",
        "fluids",
        "track",
        "record",
        "weigh",
        "stretches",
        "stretching",
        "activity",
        "sleep",
        "stop",
        "quit",
        "continue",
        "keep",
        "try",
    ]) {
        return Some(PlanCategory::Counseling);
    }
    None
}

fn plan_items(seg: &Seg, sentence: &Range<usize>) -> Vec<Candidate> {
    let tokens = &seg.tokens;
    let mut found = Vec::new();
    let mut i = sentence.start;
    while i < sentence.end {
        let Some((at, _)) = find_phrase(tokens, i..sentence.end, PLAN_CUES) else {
            break;
        };
        // "if it gets worse , call me": the condition belongs to the plan item.
        let start = (sentence.start..at)
            .rev()
            .take(10)
            .find(|k| tokens[*k].is("if"))
            .unwrap_or(at);
        let range = excerpt(seg, start, sentence);
        // The next cue in the sentence starts the next item.
        let next_cue = find_phrase(tokens, at + 2..range.end, PLAN_CUES).map(|(k, _)| k);
        let range = range.start..next_cue.unwrap_or(range.end).max(range.start + 1);
        i = range.end.max(at + 1);
        let words = &tokens[range.clone()];
        let Some(category) = category_of(words) else {
            continue;
        };
        // Medication plan items come from the medication extractor, with their doses.
        if !super::meds::DRUGS.find(tokens, range.clone()).is_empty() {
            continue;
        }
        let hedged = words
            .iter()
            .any(|t| t.is_any(&["might", "maybe", "possibly"]));
        let assertion = if hedged {
            Assertion::Possible
        } else {
            Assertion::Present
        };
        if let Some(candidate) = statement(
            seg,
            range,
            FactKind::Plan,
            assertion,
            Detail::Plan { category },
        ) {
            found.push(candidate);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use crate::clinical::{extract, Detail, FactKind, PlanCategory};
    use crate::transcript::Transcript;

    #[test]
    fn this_looks_like_states_the_clinicians_assessment() {
        let facts = crate::clinical::extract(
            &crate::transcript::Transcript::from_dialogue(
                "[patient] so is it something serious ?\n[doctor] no , this looks like a muscle strain on the lower back .",
            )
            .unwrap(),
        );
        let assessment = facts
            .iter()
            .find(|f| f.kind == FactKind::Assessment)
            .expect("an assessment");
        assert!(
            assessment.text.contains("muscle strain"),
            "{}",
            assessment.text
        );
        assert_eq!(assessment.assertion, crate::clinical::Assertion::Present);
    }

    #[test]
    fn a_chief_complaint_never_ends_inside_a_spoken_decimal() {
        let facts = crate::clinical::extract(
            &crate::transcript::Transcript::from_dialogue(
                "[doctor] she presents for follow-up during chemotherapy she was diagnosed with a four . four centimeter nodule",
            )
            .unwrap(),
        );
        let complaint = facts
            .iter()
            .find(|f| f.kind == FactKind::ChiefComplaint)
            .expect("a chief complaint");
        assert!(!complaint.text.contains("four"), "{}", complaint.text);
    }

    #[test]
    fn clinician_statements_become_assessment_exam_and_plan() {
        let transcript = Transcript::from_dialogue(
            "[doctor] hi , you're here today for right knee pain .\n\
             [doctor] on exam of your right knee , i do appreciate some swelling and tenderness \
             to palpation .\n\
             [doctor] your x-ray showed no fracture .\n\
             [doctor] i think this is a sprain . i'm gonna order an mri of the right knee . \
             if it gets worse , call me .",
        )
        .expect("dialogue");
        let facts = extract(&transcript);
        let of = |kind: FactKind| -> Vec<&str> {
            facts
                .iter()
                .filter(|f| f.kind == kind)
                .map(|f| f.text.as_str())
                .collect()
        };
        assert_eq!(of(FactKind::ChiefComplaint), ["Right knee pain."]);
        assert_eq!(
            of(FactKind::ExamFinding),
            ["On exam of your right knee, I do appreciate some swelling and tenderness to palpation."]
        );
        assert_eq!(of(FactKind::Result), ["Your x-ray showed no fracture."]);
        assert_eq!(of(FactKind::Assessment), ["I think this is a sprain."]);
        let categories: Vec<PlanCategory> = facts
            .iter()
            .filter_map(|f| match f.detail {
                Detail::Plan { category } => Some(category),
                _ => None,
            })
            .collect();
        assert_eq!(
            categories,
            [PlanCategory::Test, PlanCategory::ReturnPrecaution]
        );
    }
}
