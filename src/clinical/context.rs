//! ConText-style assertion: whether the words around a finding negate it, hedge it, put it in
//! the past, make it hypothetical, or give it to someone other than the patient.
//!
//! Scope is the clause: a trigger only reaches a target inside the same sentence with no
//! terminator ("but", "however", ...) between them, and only within a few words. A negation read
//! where there is none is the worst error this module can make, so pseudo-triggers ("no
//! increase", "not sure") are checked first and an answer particle ("no , ...") opens no scope.

use std::ops::Range;

use super::text::{Seg, Token};
use super::Assertion;

/// How far (in tokens) a trigger before the target reaches.
const PRE_WINDOW: usize = 8;
/// How far (in tokens) a trigger after the target reaches.
const POST_WINDOW: usize = 4;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Context {
    pub assertion: Assertion,
    /// Conditional or instructional wording ("if you get a fever, call me"): not a fact at all.
    pub hypothetical: bool,
    /// The trigger words that decided the assertion, to cite with the finding.
    pub trigger: Option<Range<usize>>,
}

const TERMINATORS: &[&str] = &[
    "but", "however", "though", "although", "except", "aside", "apart", "besides", "which",
    "whereas", "yet", "because", "cause", "since", "so", "still", "other",
];

const NEGATION_WORDS: &[&str] = &[
    "no", "not", "denies", "denied", "deny", "denying", "without", "never", "none", "nor",
    "neither", "nothing", "don't", "doesn't", "didn't", "haven't", "hasn't", "hadn't", "isn't",
    "wasn't", "aren't", "weren't", "dont", "didnt", "havent",
];

const NEGATION_PHRASES: &[&[&str]] = &[
    &["negative", "for"],
    &["free", "of"],
    &["absence", "of"],
    &["ruled", "out"],
];

/// Words right after a negation word that make it no negation of a finding.
const PSEUDO_AFTER_NEGATION: &[&[&str]] = &[
    &["increase"],
    &["change"],
    &["changes"],
    &["only"],
    &["further"],
    &["necessarily"],
    &["just"],
    &["doubt"],
    &["sure"],
    &["certain"],
    &["know"],
    &["better"],
    &["worse"],
    &["improvement"],
    &["improved"],
    &["improving"],
    &["help"],
    &["helped"],
    &["helping"],
    &["relief"],
    &["gone"],
    &["go", "away"],
    &["went", "away"],
    &["stop"],
    &["stopped"],
    &["resolve"],
    &["resolved"],
    &["matter"],
    &["problem"],
    &["think", "so"],
    &["remember"],
    &["recall"],
    &["worry"],
    &["always"],
    &["really", "sure"],
    &["any", "better"],
    &["any", "worse"],
    &["getting", "better"],
    &["longer", "working"],
    &["working"],
    &["bad"],
    &["too"],
    &["that", "bad"],
    &["as", "bad"],
    &["much", "better"],
];

const UNCERTAINTY: &[&[&str]] = &[
    &["might"],
    &["may"],
    &["maybe"],
    &["possible"],
    &["possibly"],
    &["probably"],
    &["probable"],
    &["perhaps"],
    &["could"],
    &["questionable"],
    &["suspect"],
    &["suspicious"],
    &["concern", "for"],
    &["concerned"],
    &["worried"],
    &["rule", "out"],
    &["whether"],
    &["not", "sure"],
    &["not", "certain"],
    &["think"],
    &["wonder"],
    &["wondering"],
];

const HYPOTHETICAL: &[&[&str]] = &[
    &["if"],
    &["should"],
    &["unless"],
    &["in", "case"],
    &["watch", "for"],
    &["look", "out"],
    &["call", "me"],
    &["let", "me", "know"],
    &["make", "sure"],
    &["prevent"],
    &["avoid"],
    &["risk"],
    &["side", "effects"],
    &["side", "effect"],
    &["cause"],
    &["causes"],
    &["whenever"],
    &["any"],
];

/// "past" and "prior" alone are not here: "the past week" dates an onset, it does not make the
/// finding history.
const HISTORICAL: &[&[&str]] = &[
    &["history", "of"],
    &["used", "to"],
    &["in", "the", "past"],
    &["previously"],
    &["quit"],
];

pub(crate) const FAMILY_WORDS: &[&str] = &[
    "mother",
    "mom",
    "mum",
    "mama",
    "father",
    "dad",
    "brother",
    "brothers",
    "sister",
    "sisters",
    "grandmother",
    "grandfather",
    "grandma",
    "grandpa",
    "grandparents",
    "aunt",
    "aunts",
    "uncle",
    "uncles",
    "cousin",
    "cousins",
    "son",
    "daughter",
    "wife",
    "husband",
    "family",
    "parents",
    "parent",
    "sibling",
    "siblings",
    "niece",
    "nephew",
    "boyfriend",
    "girlfriend",
    "friend",
    "friends",
    "coworker",
    "coworkers",
    "kids",
];

/// The clause around `target` inside `sentence`: bounded by terminators and by commas that
/// follow an answer particle ("no , but ...").
pub(crate) fn clause(seg: &Seg, sentence: &Range<usize>, target: &Range<usize>) -> Range<usize> {
    let tokens = &seg.tokens;
    let mut start = sentence.start;
    for i in (sentence.start..target.start).rev() {
        if tokens[i].is_any(TERMINATORS) || tokens[i].is(":") {
            start = i + 1;
            break;
        }
    }
    let mut end = sentence.end.min(tokens.len());
    for (i, token) in tokens
        .iter()
        .enumerate()
        .take(sentence.end.min(tokens.len()))
        .skip(target.end)
    {
        if token.is_any(TERMINATORS) || token.is(":") {
            end = i;
            break;
        }
    }
    start..end
}

fn phrase_at(tokens: &[Token], i: usize, phrase: &[&str], stop: usize) -> bool {
    i + phrase.len() <= stop
        && phrase
            .iter()
            .zip(&tokens[i..])
            .all(|(word, token)| token.is(word))
}

/// The first of `phrases` that starts at `i`, with its length.
fn any_phrase_at(tokens: &[Token], i: usize, phrases: &[&[&str]], stop: usize) -> Option<usize> {
    phrases
        .iter()
        .find(|p| phrase_at(tokens, i, p, stop))
        .map(|p| p.len())
}

/// A negation trigger starting at `i`, if the word there opens a negation scope.
fn negation_at(tokens: &[Token], i: usize, stop: usize) -> Option<usize> {
    if let Some(len) = any_phrase_at(tokens, i, NEGATION_PHRASES, stop) {
        return Some(len);
    }
    let token = tokens.get(i)?;
    if !token.is_any(NEGATION_WORDS) {
        return None;
    }
    // An answer particle ("no , it's fine") negates the question, not what follows.
    if token.is_any(&["no", "nope", "nothing", "none"])
        && tokens.get(i + 1).is_none_or(|t| t.is_punct())
    {
        return None;
    }
    let mut next = i + 1;
    // "not really", "don't really have": the adverb is no pseudo-trigger by itself.
    while tokens
        .get(next)
        .is_some_and(|t| t.is_any(&["really", "even"]))
    {
        next += 1;
    }
    if any_phrase_at(tokens, next, PSEUDO_AFTER_NEGATION, stop).is_some() {
        return None;
    }
    Some(1)
}

/// Reads the assertion of the finding at token range `target` in `sentence` of `seg`.
pub(crate) fn assess(seg: &Seg, sentence: &Range<usize>, target: &Range<usize>) -> Context {
    let tokens = &seg.tokens;
    let clause = clause(seg, sentence, target);
    let pre_start = target.start.saturating_sub(PRE_WINDOW).max(clause.start);
    let post_end = (target.end + POST_WINDOW).min(clause.end);

    let mut context = Context {
        assertion: Assertion::Present,
        hypothetical: false,
        trigger: None,
    };

    // A first-person subject between the relative and the finding gives it back to the
    // patient: "my mother had cancer and i have diabetes".
    let first_person = |range: Range<usize>| {
        tokens[range]
            .iter()
            .any(|t| t.is_any(&["i", "i'm", "i've", "i'd", "i'll", "you", "you've", "you're"]))
    };
    let family = (pre_start..post_end)
        .filter(|i| !target.contains(i))
        .filter(|i| tokens[*i].is_any(FAMILY_WORDS))
        .find(|i| {
            if *i < target.start {
                !first_person(*i + 1..target.start)
            } else {
                !first_person(target.end..*i)
            }
        });
    if let Some(i) = family {
        context.assertion = Assertion::OtherPerson;
        context.trigger = Some(i..i + 1);
        return context;
    }

    for i in pre_start..target.start {
        if any_phrase_at(tokens, i, HYPOTHETICAL, target.start).is_some() {
            // "any" only makes a question hypothetical; in a statement it follows a negation.
            if tokens[i].is("any") && !seg.is_question(sentence) {
                continue;
            }
            // "not sure if", "wondering whether": doubt, not a condition.
            let doubt_before = i > 0
                && tokens[i - 1].is_any(&["sure", "know", "wonder", "wondering", "see", "certain"]);
            if tokens[i].is("if") && doubt_before {
                continue;
            }
            context.hypothetical = true;
            return context;
        }
    }

    let mut negation = None;
    for i in pre_start..target.start {
        if let Some(len) = negation_at(tokens, i, target.start) {
            negation = Some(i..i + len);
        }
    }
    if negation.is_none() {
        for i in target.end..post_end {
            if any_phrase_at(tokens, i, &[&["negative"], &["ruled", "out"]], post_end).is_some() {
                negation = Some(i..i + 1);
                break;
            }
        }
    }
    let uncertainty = (pre_start..target.start)
        .find_map(|i| any_phrase_at(tokens, i, UNCERTAINTY, target.start).map(|len| i..i + len));

    if let Some(trigger) = negation {
        let hedged_negation = uncertainty
            .as_ref()
            .is_some_and(|u| tokens[u.start].is("not") && u.len() > 1);
        if !hedged_negation {
            context.assertion = Assertion::Absent;
            context.trigger = Some(trigger);
            return context;
        }
    }
    if let Some(trigger) = uncertainty {
        context.assertion = Assertion::Possible;
        context.trigger = Some(trigger);
        return context;
    }
    let historical = (pre_start..post_end)
        .filter(|i| !target.contains(i))
        .find_map(|i| any_phrase_at(tokens, i, HISTORICAL, post_end).map(|len| i..i + len));
    if let Some(trigger) = historical {
        context.assertion = Assertion::Historical;
        context.trigger = Some(trigger);
    }
    context
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcript::{Segment, Speaker};

    fn assertion_of(text: &str, target: &str) -> (Assertion, bool) {
        let segment = Segment {
            id: "s1".into(),
            start: 0.0,
            end: 1.0,
            speaker: Speaker::Patient,
            text: text.into(),
            confidence: 1.0,
            overlap: false,
        };
        let seg = Seg::new(0, &segment);
        let target_words: Vec<&str> = target.split(' ').collect();
        let start = (0..seg.tokens.len())
            .find(|i| phrase_at(&seg.tokens, *i, &target_words, seg.tokens.len()))
            .expect("target in text");
        let range = start..start + target_words.len();
        let sentence = seg.sentence_of(start);
        let context = assess(&seg, &sentence, &range);
        (context.assertion, context.hypothetical)
    }

    #[test]
    fn negation_scope_ends_at_the_clause() {
        assert_eq!(
            assertion_of("no fever , chills or cough", "cough").0,
            Assertion::Absent
        );
        assert_eq!(
            assertion_of("i have no fever but i do have a cough", "cough").0,
            Assertion::Present
        );
        assert_eq!(
            assertion_of("i have no fever . i have a cough", "cough").0,
            Assertion::Present
        );
        assert_eq!(
            assertion_of("i do n't have any nausea", "nausea").0,
            Assertion::Absent
        );
        assert_eq!(
            assertion_of("the swelling is ruled out", "swelling").0,
            Assertion::Absent
        );
    }

    #[test]
    fn pseudo_triggers_and_answer_particles_do_not_negate() {
        assert_eq!(
            assertion_of("no increase in the pain , it is the same", "pain").0,
            Assertion::Present
        );
        assert_eq!(
            assertion_of("no , i have a headache", "headache").0,
            Assertion::Present
        );
        assert_eq!(
            assertion_of("the cough is not better", "cough").0,
            Assertion::Present
        );
        assert_eq!(
            assertion_of("i'm not sure if it is a rash", "rash").0,
            Assertion::Possible
        );
    }

    #[test]
    fn other_people_history_and_hypotheticals() {
        assert_eq!(
            assertion_of("my mother had breast cancer", "breast cancer").0,
            Assertion::OtherPerson
        );
        assert_eq!(
            assertion_of("i used to have migraines", "migraines").0,
            Assertion::Historical
        );
        assert_eq!(
            assertion_of("i might have a fever", "fever").0,
            Assertion::Possible
        );
        assert!(assertion_of("if you get a fever call me", "fever").1);
    }
}
