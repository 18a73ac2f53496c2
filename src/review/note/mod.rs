//! The note under review: statements with a review state, how a clinician's save is checked
//! and turned into the next version, the diff between versions, and the text that is signed.
//!
//! The server is the authority on AI content: a save may change a statement's text and state,
//! but the id, the evidence and the origin of an AI statement always come from the draft, so a
//! client cannot attach evidence to words the transcript does not hold. Clinician text is
//! marked as such and carries no evidence.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::attest::AiStatements;
use crate::draft::{Draft, SectionStatus};
use crate::store::review::ChangeCounts;

/// Longest statement text accepted in a save, in characters.
pub const MAX_STATEMENT_CHARS: usize = 4000;
/// Most statements a section may hold.
pub const MAX_STATEMENTS_PER_SECTION: usize = 400;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatementState {
    /// Not yet looked at; kept (as accepted) if the note is signed as is.
    Pending,
    Accepted,
    Edited,
    Rejected,
    /// Written by the clinician.
    Added,
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct ReviewStatement {
    pub id: String,
    pub text: String,
    pub evidence: Vec<String>,
    /// `extraction`, `narrative`, `llm` or `clinician`.
    pub origin: String,
    pub state: StatementState,
}

impl std::fmt::Debug for ReviewStatement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReviewStatement")
            .field("id", &self.id)
            .field("text_bytes", &self.text.len())
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReviewSection {
    pub name: String,
    pub status: SectionStatus,
    pub statements: Vec<ReviewStatement>,
}

/// One version of the note: its sections in template order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReviewNote {
    pub sections: Vec<ReviewSection>,
}

/// A statement as a client sends it in a save.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmittedStatement {
    pub id: String,
    pub text: String,
    pub state: StatementState,
    /// Ignored: evidence comes from the draft. Accepted so a client may send back what it got.
    #[serde(default)]
    pub evidence: Option<serde_json::Value>,
    #[serde(default)]
    pub origin: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmittedSection {
    pub name: String,
    #[serde(default)]
    pub status: Option<serde_json::Value>,
    pub statements: Vec<SubmittedStatement>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Accepted,
    Edited,
    Rejected,
    Added,
    Removed,
    /// A rejected statement taken back.
    Restored,
}

/// One line of a version's diff: ids and kinds only, never text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub statement: String,
    pub section: String,
    pub kind: ChangeKind,
}

/// Why a save was refused. Messages name ids and limits, never text.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EditError {
    #[error("the save must list the note's sections in order: expected {expected:?}")]
    Sections { expected: Vec<String> },
    #[error("statement {id} is not part of this draft; new statements need an id starting with \"new-\"")]
    UnknownStatement { id: String },
    #[error("statement {id} appears twice")]
    Duplicate { id: String },
    #[error("AI statement {id} is missing from the save; reject it instead of leaving it out")]
    MissingAiStatement { id: String },
    #[error("statement {id} is in section {found:?} but belongs to {expected:?}")]
    WrongSection {
        id: String,
        found: String,
        expected: String,
    },
    #[error("statement {id}: an AI statement cannot be marked 'added', and new text can only be 'added' or 'rejected'")]
    BadState { id: String },
    #[error("statement {id} is longer than {MAX_STATEMENT_CHARS} characters")]
    TooLong { id: String },
    #[error("statement {id} is empty; reject it instead")]
    Empty { id: String },
    #[error("section {section:?} has more than {MAX_STATEMENTS_PER_SECTION} statements")]
    TooMany { section: String },
}

impl ReviewNote {
    /// Version 1: the draft's statements, all pending, with ids `ai-<section>-<n>` (1-based).
    pub fn from_draft(draft: &Draft) -> ReviewNote {
        ReviewNote {
            sections: draft
                .sections
                .iter()
                .enumerate()
                .map(|(si, section)| ReviewSection {
                    name: section.name.clone(),
                    status: section.status,
                    statements: section
                        .statements
                        .iter()
                        .enumerate()
                        .map(|(ti, s)| ReviewStatement {
                            id: format!("ai-{}-{}", si + 1, ti + 1),
                            text: s.text.clone(),
                            evidence: s.evidence.clone(),
                            origin: s.origin.as_str().to_owned(),
                            state: StatementState::Pending,
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    fn statements(&self) -> impl Iterator<Item = (&ReviewSection, &ReviewStatement)> {
        self.sections
            .iter()
            .flat_map(|section| section.statements.iter().map(move |s| (section, s)))
    }

    pub fn flagged_sections(&self) -> usize {
        self.sections
            .iter()
            .filter(|s| s.status == SectionStatus::InsufficientInput)
            .count()
    }

    /// The note text that is signed and sent: each section's kept statements, rejected ones
    /// left out; a section with nothing kept says so rather than staying silent.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        for section in &self.sections {
            out.push_str(&section.name);
            out.push_str(":\n");
            let kept: Vec<&ReviewStatement> = section
                .statements
                .iter()
                .filter(|s| s.state != StatementState::Rejected)
                .collect();
            if kept.is_empty() {
                out.push_str("Not documented.\n");
            }
            for s in kept {
                out.push_str(s.text.trim());
                out.push('\n');
            }
            out.push('\n');
        }
        out.trim_end().to_owned() + "\n"
    }

    /// What became of the AI's statements, for the attestation: pending or accepted count as
    /// accepted (signing attests to them), edited as modified.
    pub fn ai_statements(&self) -> AiStatements {
        let mut ai = AiStatements::default();
        for (_, s) in self.statements() {
            match s.state {
                StatementState::Pending | StatementState::Accepted => {
                    ai.accepted.push(s.id.clone())
                }
                StatementState::Edited => ai.modified.push(s.id.clone()),
                StatementState::Rejected if s.origin != "clinician" => {
                    ai.rejected.push(s.id.clone())
                }
                StatementState::Rejected | StatementState::Added => {}
            }
        }
        ai
    }

    pub fn added_statements(&self) -> usize {
        self.statements()
            .filter(|(_, s)| s.state == StatementState::Added)
            .count()
    }
}

/// Checks a save against the draft and builds the next version from it.
///
/// `draft` is version 1 (the AI's statements as drafted). Sections must come in the draft's
/// order; every AI statement must be present, in its own section; new statements have ids
/// starting with `new-` and become `added` clinician text without evidence.
pub fn apply_save(
    draft: &ReviewNote,
    submitted: &[SubmittedSection],
) -> Result<ReviewNote, EditError> {
    let expected: Vec<String> = draft.sections.iter().map(|s| s.name.clone()).collect();
    if submitted.len() != draft.sections.len()
        || submitted
            .iter()
            .zip(&expected)
            .any(|(s, name)| &s.name != name)
    {
        return Err(EditError::Sections { expected });
    }
    let ai_by_id: HashMap<&str, (&ReviewSection, &ReviewStatement)> = draft
        .statements()
        .map(|(sec, s)| (s.id.as_str(), (sec, s)))
        .collect();
    let mut seen: HashSet<String> = HashSet::new();
    let mut sections = Vec::with_capacity(submitted.len());
    for (draft_section, sent) in draft.sections.iter().zip(submitted) {
        if sent.statements.len() > MAX_STATEMENTS_PER_SECTION {
            return Err(EditError::TooMany {
                section: sent.name.clone(),
            });
        }
        let mut statements = Vec::with_capacity(sent.statements.len());
        for s in &sent.statements {
            if !seen.insert(s.id.clone()) {
                return Err(EditError::Duplicate { id: s.id.clone() });
            }
            if s.text.chars().count() > MAX_STATEMENT_CHARS {
                return Err(EditError::TooLong { id: s.id.clone() });
            }
            if s.text.trim().is_empty() && s.state != StatementState::Rejected {
                return Err(EditError::Empty { id: s.id.clone() });
            }
            statements.push(match ai_by_id.get(s.id.as_str()) {
                Some((home, original)) => {
                    if home.name != draft_section.name {
                        return Err(EditError::WrongSection {
                            id: s.id.clone(),
                            found: sent.name.clone(),
                            expected: home.name.clone(),
                        });
                    }
                    ai_statement(original, s)?
                }
                None if is_new_id(&s.id) => clinician_statement(s)?,
                None => return Err(EditError::UnknownStatement { id: s.id.clone() }),
            });
        }
        sections.push(ReviewSection {
            name: draft_section.name.clone(),
            status: draft_section.status,
            statements,
        });
    }
    if let Some((_, missing)) = draft.statements().find(|(_, s)| !seen.contains(&s.id)) {
        return Err(EditError::MissingAiStatement {
            id: missing.id.clone(),
        });
    }
    Ok(ReviewNote { sections })
}

fn is_new_id(id: &str) -> bool {
    id.strip_prefix("new-").is_some_and(|rest| {
        (1..=64).contains(&rest.len())
            && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    })
}

fn ai_statement(
    original: &ReviewStatement,
    sent: &SubmittedStatement,
) -> Result<ReviewStatement, EditError> {
    let text_changed = sent.text.trim() != original.text.trim();
    let state = match sent.state {
        StatementState::Added => {
            return Err(EditError::BadState {
                id: sent.id.clone(),
            })
        }
        StatementState::Rejected => StatementState::Rejected,
        // Changed words make an edit whatever the client called it; unchanged words are not
        // an edit even if the client says so.
        _ if text_changed => StatementState::Edited,
        StatementState::Edited => StatementState::Accepted,
        other => other,
    };
    Ok(ReviewStatement {
        id: original.id.clone(),
        text: if state == StatementState::Rejected {
            original.text.clone()
        } else {
            sent.text.trim().to_owned()
        },
        evidence: original.evidence.clone(),
        origin: original.origin.clone(),
        state,
    })
}

fn clinician_statement(sent: &SubmittedStatement) -> Result<ReviewStatement, EditError> {
    let state = match sent.state {
        StatementState::Rejected => StatementState::Rejected,
        StatementState::Added | StatementState::Accepted | StatementState::Pending => {
            StatementState::Added
        }
        StatementState::Edited => StatementState::Added,
    };
    Ok(ReviewStatement {
        id: sent.id.clone(),
        text: sent.text.trim().to_owned(),
        evidence: Vec::new(),
        origin: "clinician".to_owned(),
        state,
    })
}

/// The changes from `before` to `after`, in `after`'s order, then removals.
pub fn diff(before: &ReviewNote, after: &ReviewNote) -> Vec<Change> {
    let old: HashMap<&str, &ReviewStatement> = before
        .statements()
        .map(|(_, s)| (s.id.as_str(), s))
        .collect();
    let mut changes = Vec::new();
    let mut present = HashSet::new();
    for (section, s) in after.statements() {
        present.insert(s.id.as_str());
        let kind = match old.get(s.id.as_str()) {
            None if s.state == StatementState::Rejected => continue,
            None => Some(ChangeKind::Added),
            Some(prev) if prev.state == s.state && prev.text == s.text => None,
            Some(prev) => Some(match s.state {
                StatementState::Rejected => ChangeKind::Rejected,
                StatementState::Edited => ChangeKind::Edited,
                StatementState::Added if prev.text != s.text => ChangeKind::Edited,
                _ if prev.state == StatementState::Rejected => ChangeKind::Restored,
                StatementState::Accepted => ChangeKind::Accepted,
                StatementState::Pending | StatementState::Added => ChangeKind::Restored,
            }),
        };
        if let Some(kind) = kind {
            changes.push(Change {
                statement: s.id.clone(),
                section: section.name.clone(),
                kind,
            });
        }
    }
    for (section, s) in before.statements() {
        if !present.contains(s.id.as_str()) && s.state != StatementState::Rejected {
            changes.push(Change {
                statement: s.id.clone(),
                section: section.name.clone(),
                kind: ChangeKind::Removed,
            });
        }
    }
    changes
}

/// Counts of a diff by kind, for the audit log.
pub fn count_changes(changes: &[Change]) -> ChangeCounts {
    let mut counts = ChangeCounts::default();
    for change in changes {
        match change.kind {
            ChangeKind::Accepted | ChangeKind::Restored => counts.accepted += 1,
            ChangeKind::Edited => counts.edited += 1,
            ChangeKind::Rejected | ChangeKind::Removed => counts.rejected += 1,
            ChangeKind::Added => counts.added += 1,
        }
    }
    counts
}

/// Levenshtein distance in characters, with two rows of memory. Texts are capped so a
/// pathological note cannot stall a sign-off: beyond the cap the length difference of the rest
/// is added, an upper bound.
pub fn edit_distance(a: &str, b: &str) -> u64 {
    const CAP: usize = 20_000;
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let (a_head, b_head) = (&a[..a.len().min(CAP)], &b[..b.len().min(CAP)]);
    let tail = (a.len() - a_head.len()).max(b.len() - b_head.len());
    let mut previous: Vec<usize> = (0..=b_head.len()).collect();
    let mut current = vec![0usize; b_head.len() + 1];
    for (i, ca) in a_head.iter().enumerate() {
        current[0] = i + 1;
        for (j, cb) in b_head.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    (previous[b_head.len()] + tail) as u64
}

#[cfg(test)]
mod tests;
