//! Gathers candidate facts from the extractors, merges repeated mentions of the same fact
//! (keeping every piece of evidence) and numbers them in order of first evidence.

use std::collections::BTreeMap;
use std::ops::Range;

use super::text::Seg;
use super::{Assertion, Detail, Fact, FactKind, Span};
use crate::transcript::Speaker;

/// Who said a segment, once tags are read (and a swapped dialogue is put right).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Clinician,
    Patient,
    /// Unknown speaker: an ASR transcript without diarization.
    Unknown,
}

/// The transcript as the extractors read it.
pub(crate) struct Doc<'a> {
    pub segs: Vec<Seg<'a>>,
    pub roles: Vec<Role>,
}

impl<'a> Doc<'a> {
    pub fn role(&self, seg: usize) -> Role {
        self.roles.get(seg).copied().unwrap_or(Role::Unknown)
    }

    /// Clinician, or unknown speaker when nothing says otherwise.
    pub fn may_be_clinician(&self, seg: usize) -> bool {
        self.role(seg) != Role::Patient
    }
}

/// Clinician phrases used to notice a dialogue whose speaker tags are swapped.
const CLINICIAN_CUES: &[&[&str]] = &[
    &["physical", "exam"],
    &["your", "blood", "pressure"],
    &["your", "vitals"],
    &["going", "to", "order"],
    &["prescribe"],
    &["i", "want", "you", "to"],
    &["follow", "up"],
    &["your", "lungs"],
    &["your", "heart"],
    &["my", "assessment"],
    &["my", "impression"],
    &["refer", "you"],
    &["what", "brings", "you"],
];

pub(crate) fn roles_for(segs: &[Seg]) -> Vec<Role> {
    let mut cue_count = [0usize; 2];
    for seg in segs {
        let slot = match seg.speaker {
            Speaker::Clinician => 0,
            Speaker::Patient => 1,
            _ => continue,
        };
        for i in 0..seg.tokens.len() {
            if CLINICIAN_CUES.iter().any(|cue| {
                cue.iter()
                    .enumerate()
                    .all(|(k, w)| seg.tokens.get(i + k).is_some_and(|t| t.is(w)))
            }) {
                cue_count[slot] += 1;
            }
        }
    }
    // Only a clear majority flips the tags: a few swapped turns are normal, a swapped dialogue
    // reads as a patient running the exam.
    let swapped = cue_count[1] >= 3 && cue_count[1] > 2 * cue_count[0];
    segs.iter()
        .map(|seg| match (seg.speaker, swapped) {
            (Speaker::Clinician, false) | (Speaker::Patient, true) => Role::Clinician,
            (Speaker::Patient, false) | (Speaker::Clinician, true) => Role::Patient,
            _ => Role::Unknown,
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Evidence {
    pub seg: usize,
    pub start: usize,
    pub end: usize,
}

impl Evidence {
    /// The characters of tokens `tokens` of `seg`.
    pub fn of(seg: &Seg, tokens: Range<usize>) -> Option<Evidence> {
        let (start, end) = seg.char_span(tokens)?;
        Some(Evidence {
            seg: seg.index,
            start,
            end,
        })
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub kind: FactKind,
    pub assertion: Assertion,
    pub text: String,
    pub detail: Detail,
    pub evidence: Vec<Evidence>,
    pub attributes: BTreeMap<String, String>,
    /// Mentions with the same kind and key are one fact.
    pub key: String,
}

impl Candidate {
    pub fn new(
        kind: FactKind,
        assertion: Assertion,
        text: String,
        detail: Detail,
        evidence: Vec<Evidence>,
        key: String,
    ) -> Candidate {
        Candidate {
            kind,
            assertion,
            text,
            detail,
            evidence,
            attributes: BTreeMap::new(),
            key,
        }
    }

    pub fn with_attribute(mut self, name: &str, value: &str) -> Candidate {
        self.attributes.insert(name.to_string(), value.to_string());
        self
    }
}

#[derive(Debug, Default)]
pub(crate) struct Collector {
    candidates: Vec<Candidate>,
}

impl Collector {
    pub fn push(&mut self, candidate: Candidate) {
        if candidate.evidence.is_empty() || candidate.text.is_empty() {
            return;
        }
        let existing = self
            .candidates
            .iter_mut()
            .find(|c| c.kind == candidate.kind && c.key == candidate.key);
        match existing {
            Some(fact) => {
                for evidence in candidate.evidence {
                    if !fact.evidence.contains(&evidence) {
                        fact.evidence.push(evidence);
                    }
                }
                for (name, value) in candidate.attributes {
                    fact.attributes.entry(name).or_insert(value);
                }
            }
            None => self.candidates.push(candidate),
        }
    }

    pub fn finish(self, doc: &Doc) -> Vec<Fact> {
        let mut candidates = self.candidates;
        for candidate in &mut candidates {
            candidate.evidence.sort();
            candidate.evidence.dedup();
        }
        candidates.sort_by_key(|c| c.evidence.first().copied());
        candidates
            .into_iter()
            .enumerate()
            .map(|(i, c)| Fact {
                id: format!("f{}", i + 1),
                kind: c.kind,
                assertion: c.assertion,
                text: c.text,
                detail: c.detail,
                evidence: c
                    .evidence
                    .iter()
                    .filter_map(|e| {
                        doc.segs.get(e.seg).map(|seg| Span {
                            segment: seg.id.to_string(),
                            start: e.start,
                            end: e.end,
                        })
                    })
                    .collect(),
                attributes: c.attributes,
            })
            .collect()
    }
}
