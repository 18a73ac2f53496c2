//! Question–answer pairing across turns: the clinician's question carries the finding, the
//! patient's short reply ("no", "yeah") carries the assertion. Only a reply that is nothing but
//! a yes or a no counts; anything longer is read on its own.

use std::ops::Range;

use super::collect::{Doc, Role};
use super::text::Seg;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reply {
    Yes,
    No,
}

/// A question (the last one in a clinician turn) and the yes/no reply of the next turn.
#[derive(Debug, Clone)]
pub(crate) struct Answered {
    pub question: Range<usize>,
    pub reply_seg: usize,
    /// The reply's yes/no words, to cite as evidence.
    pub reply_tokens: Range<usize>,
    pub reply: Reply,
}

const NO_WORDS: &[&str] = &["no", "nope", "nah", "never", "none", "nothing", "negative"];
const NEGATED_VERBS: &[&str] = &[
    "don't", "haven't", "didn't", "doesn't", "hasn't", "isn't", "wasn't", "not", "aren't",
];
const YES_WORDS: &[&str] = &[
    "yes",
    "yeah",
    "yep",
    "yup",
    "mm-hmm",
    "uh-huh",
    "correct",
    "definitely",
    "absolutely",
];
/// Words a bare yes or no may carry ("no , not really", "yes i do", "uh , nope").
const PADDING: &[&str] = &[
    "i", "do", "did", "have", "am", "uh", "um", "oh", "well", "really", "at", "all", "sir",
    "ma'am", "that", "it", "so", "okay", "ok", "of", "is", "was", "has", "any", "i'm", "been",
    "not", "i've", "nope", "still", "yes", "no", "know", "that's", "right", "sure",
];

/// Reads the leading words of `seg` (up to the first sentence end or "but") as a bare yes or no.
pub(crate) fn read_reply(seg: &Seg) -> Option<(Reply, Range<usize>)> {
    let first = seg.sentences.first()?;
    let mut end = first.end;
    for i in first.clone() {
        if seg.tokens[i].is("but") {
            end = i;
            break;
        }
    }
    let words: Vec<usize> = (first.start..end)
        .filter(|i| !seg.tokens[*i].is_punct())
        .collect();
    if words.is_empty() || words.len() > 8 {
        return None;
    }
    let is_no = |i: &usize| seg.tokens[*i].is_any(NO_WORDS) || seg.tokens[*i].is_any(NEGATED_VERBS);
    let is_yes = |i: &usize| seg.tokens[*i].is_any(YES_WORDS);
    let all_known = words
        .iter()
        .all(|i| is_no(i) || is_yes(i) || seg.tokens[*i].is_any(PADDING));
    if !all_known {
        return None;
    }
    let no = words.iter().any(is_no);
    let yes = words.iter().any(is_yes);
    let span = words.first().copied().unwrap_or(first.start)
        ..words.last().map(|w| w + 1).unwrap_or(first.end);
    match (yes, no) {
        (true, false) => Some((Reply::Yes, span)),
        (false, true) => Some((Reply::No, span)),
        // "yes i do" is a yes; "yeah , no" is nothing.
        (false, false)
            if words
                .iter()
                .any(|i| seg.tokens[*i].is_any(&["do", "am", "have"])) =>
        {
            Some((Reply::Yes, span))
        }
        _ => None,
    }
}

/// The reply to the last question of segment `q`, if the next turn is a bare yes or no from
/// someone other than the clinician.
pub(crate) fn answered(doc: &Doc, q: usize) -> Option<Answered> {
    if !doc.may_be_clinician(q) {
        return None;
    }
    let question_seg = doc.segs.get(q)?;
    let question = question_seg.last_question()?;
    // The question must close the turn, or its answer is not the next turn.
    let closes_turn = question_seg
        .sentences
        .last()
        .is_some_and(|last| last.end == question.end);
    if !closes_turn {
        return None;
    }
    let reply_index = q + 1;
    let reply_seg = doc.segs.get(reply_index)?;
    let reply_role = doc.role(reply_index);
    let question_role = doc.role(q);
    let speakers_alternate = match (question_role, reply_role) {
        (Role::Clinician, Role::Patient) => true,
        (Role::Unknown, Role::Unknown) => !reply_seg.is_question(reply_seg.sentences.first()?),
        _ => false,
    };
    if !speakers_alternate {
        return None;
    }
    let (reply, reply_tokens) = read_reply(reply_seg)?;
    Some(Answered {
        question,
        reply_seg: reply_index,
        reply_tokens,
        reply,
    })
}
