//! The patient's own account, for history sections: the sentences in which the patient told what
//! a section's facts say, turned into third person ("I have had a cough" → "The patient reports
//! they have had a cough"). Deterministic; the verifier still checks every sentence, and a fact
//! whose sentence does not pass keeps its extracted wording.

use std::ops::Range;

use crate::clinical::Fact;
use crate::transcript::{Speaker, Transcript};

/// One sentence of a patient turn and the facts whose evidence lies in it.
pub struct NarrativeSentence<'a> {
    pub text: String,
    pub segment: &'a str,
    pub facts: Vec<&'a Fact>,
}

/// Words that carry nothing in a written note.
const FILLERS: &[&str] = &["um", "uh", "uhm", "mm-hmm", "hmm", "er", "ah"];

/// First person → third person. "I" and "they" take the same verb forms except "am" and "was",
/// which are rewritten with them.
const PRONOUNS: &[(&str, &str)] = &[
    ("i'm", "they're"),
    ("i've", "they've"),
    ("i'll", "they'll"),
    ("i'd", "they'd"),
    ("myself", "themselves"),
    ("my", "their"),
    ("me", "them"),
    ("mine", "theirs"),
];

/// The patient sentences that hold the evidence of `facts` or answer the clinician, in
/// transcript order, each with the facts it covers (possibly none: a history tells more than the
/// extracted facts). Sentences of fewer than five words or more than forty are skipped: the
/// first say too little ("yes, that's right"), the second ramble.
pub fn patient_sentences<'a>(
    transcript: &'a Transcript,
    facts: &[&'a Fact],
) -> Vec<NarrativeSentence<'a>> {
    let mut out = Vec::new();
    for segment in &transcript.segments {
        if segment.speaker != Speaker::Patient {
            continue;
        }
        for range in sentence_ranges(&segment.text) {
            let covered: Vec<&Fact> = facts
                .iter()
                .copied()
                .filter(|fact| {
                    fact.evidence.iter().any(|span| {
                        span.segment == segment.id
                            && span.start >= range.start
                            && span.end <= range.end
                    })
                })
                .collect();
            if covered.is_empty()
                && !answers_the_clinician(transcript, segment)
                && word_count(&segment.text, &range) < LONG_SENTENCE_WORDS
            {
                continue;
            }
            let sentence: String = segment
                .text
                .chars()
                .skip(range.start)
                .take(range.end - range.start)
                .collect();
            if let Some(text) = third_person(&sentence) {
                out.push(NarrativeSentence {
                    text,
                    segment: &segment.id,
                    facts: covered,
                });
            }
        }
    }
    out
}

/// A sentence at least this long is a piece of history even when nobody asked for it.
const LONG_SENTENCE_WORDS: usize = 8;

fn word_count(text: &str, range: &Range<usize>) -> usize {
    let sentence: String = text
        .chars()
        .skip(range.start)
        .take(range.end - range.start)
        .collect();
    sentence
        .split_whitespace()
        .filter(|w| w.chars().any(char::is_alphanumeric))
        .count()
}

/// A patient turn that follows a clinician's question: what the patient was asked about.
fn answers_the_clinician(transcript: &Transcript, segment: &crate::transcript::Segment) -> bool {
    let index = transcript
        .segments
        .iter()
        .position(|s| s.id == segment.id)
        .unwrap_or(0);
    index > 0
        && transcript.segments[index - 1].speaker == Speaker::Clinician
        && transcript.segments[index - 1].text.contains('?')
}

/// Char ranges of the sentences of `text` (split after '.', '?' and '!' that end a word).
fn sentence_ranges(text: &str) -> Vec<Range<usize>> {
    let chars: Vec<char> = text.chars().collect();
    let mut ranges = Vec::new();
    let mut start = 0;
    for (i, c) in chars.iter().enumerate() {
        let ends = matches!(c, '?' | '!')
            || (*c == '.' && !chars.get(i + 1).is_some_and(|n| n.is_ascii_digit()));
        if ends {
            ranges.push(start..i + 1);
            start = i + 1;
        }
    }
    if start < chars.len() {
        ranges.push(start..chars.len());
    }
    ranges
}

fn third_person(sentence: &str) -> Option<String> {
    let mut words: Vec<String> = Vec::new();
    let mut previous: Option<String> = None;
    for raw in sentence.split_whitespace() {
        let word = raw.trim_matches(|c: char| matches!(c, ',' | '.' | '?' | '!' | ';'));
        let lower = word.to_lowercase();
        if word.is_empty() || FILLERS.contains(&lower.as_str()) {
            continue;
        }
        // Spoken stutters: "i , i just feel" → "i just feel".
        if previous.as_deref() == Some(lower.as_str()) {
            continue;
        }
        previous = Some(lower.clone());
        let replaced = match lower.as_str() {
            "i" => "they".to_string(),
            "am" if words.last().is_some_and(|w| w == "they") => "are".to_string(),
            "was" if words.last().is_some_and(|w| w == "they") => "were".to_string(),
            other => PRONOUNS
                .iter()
                .find(|(first, _)| *first == other)
                .map(|(_, third)| third.to_string())
                .unwrap_or_else(|| word.to_string()),
        };
        words.push(replaced);
    }
    if !(5..=40).contains(&words.len()) {
        return None;
    }
    Some(format!("The patient reports {}.", words.join(" ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clinical::{Assertion, Detail, FactKind, Span};

    fn fact(segment: &str, start: usize, end: usize) -> Fact {
        Fact {
            id: "f1".into(),
            kind: FactKind::Symptom,
            assertion: Assertion::Present,
            text: "Fatigue.".into(),
            detail: Detail::Text,
            evidence: vec![Span {
                segment: segment.into(),
                start,
                end,
            }],
            attributes: Default::default(),
        }
    }

    #[test]
    fn the_patient_sentence_holding_a_fact_is_told_in_third_person() {
        let t = Transcript::from_dialogue(
            "[doctor] how are you ?\n[patient] i , i just feel so tired . um , my knee is fine . i am worried .",
        )
        .unwrap();
        let tired = fact("s2", 16, 21);
        let sentences = patient_sentences(&t, &[&tired]);
        assert_eq!(sentences.len(), 1);
        assert_eq!(
            sentences[0].text,
            "The patient reports they just feel so tired."
        );
        assert_eq!(sentences[0].segment, "s2");
        assert_eq!(
            third_person("i am worried about my knee").unwrap(),
            "The patient reports they are worried about their knee."
        );
    }

    #[test]
    fn clinician_turns_short_answers_and_short_unprompted_chat_give_nothing() {
        let t = Transcript::from_dialogue(
            "[doctor] you look tired today my friend .\n[patient] yes i guess so .\n\
             [patient] we moved house in june .\n\
             [doctor] how is the knee ?\n[patient] it swells up after i run .\n\
             [patient] we moved my daughter into college this summer .",
        )
        .unwrap();
        assert!(patient_sentences(&t, &[&fact("s1", 9, 14)])
            .iter()
            .all(|s| s.segment != "s1"));
        let told: Vec<String> = patient_sentences(&t, &[])
            .into_iter()
            .map(|s| s.text)
            .collect();
        assert_eq!(
            told,
            [
                "The patient reports it swells up after they run.",
                "The patient reports we moved their daughter into college this summer.",
            ],
            "an answer to a question, and a long sentence; not the short chat"
        );
    }

    #[test]
    fn decimal_points_do_not_end_sentences() {
        assert_eq!(sentence_ranges("it was 98.6 . then"), vec![0..13, 13..18]);
    }
}
