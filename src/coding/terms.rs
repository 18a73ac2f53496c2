//! Words of code titles and inclusion terms, normalized so a clinician's wording can be matched
//! against them.
//!
//! ICD-10-CM titles carry their own conventions, used here to decide which words a note must
//! say for a term to match ("required") and which are optional:
//! - words in parentheses or brackets are nonessential modifiers ("Essential (primary)
//!   hypertension") or synonyms ("[E. coli]");
//! - "NOS" and "unspecified" say that nothing more was documented, so a note need not say them;
//! - a trailing clause that only states a default ("…, unspecified organism", "…, site not
//!   specified", "…, not intractable", "… without complications") is what an unqualified
//!   mention of the condition is coded as.

use std::collections::HashMap;

use super::tabular::{Node, NodeId};

/// Words that carry no meaning for matching, on both sides.
const STOPWORDS: &[&str] = &[
    "a", "an", "and", "as", "at", "by", "due", "for", "from", "her", "his", "in", "is", "of", "on",
    "or", "patient", "the", "to", "with", "has", "have", "having", "likely", "probable",
    "possible", "this", "that", "be", "are", "was", "which",
];

/// A term made only of these words would match nearly any sentence, so it is not indexed.
const GENERIC: &[&str] = &[
    "other",
    "specified",
    "disease",
    "disorder",
    "condition",
    "syndrome",
    "acute",
    "chronic",
    "right",
    "left",
    "bilateral",
    "type",
    "part",
    "site",
    "multiple",
    "single",
    "initial",
    "encounter",
    "subsequent",
    "sequela",
    "unilateral",
    "primary",
    "secondary",
    "abnormal",
    "finding",
    "status",
    "history",
    "personal",
    "family",
    "problem",
    "complication",
    "body",
    "mild",
    "moderate",
    "severe",
    "stage",
    "elsewhere",
    "classified",
];

/// Lower case, split on anything but letters and digits, plurals folded, stopwords dropped.
pub(crate) fn tokens(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| fold(&w.to_lowercase()))
        .filter(|w| !STOPWORDS.contains(&w.as_str()))
        .collect()
}

/// Crude plural folding, the same on both sides so it only has to be consistent.
fn fold(word: &str) -> String {
    let keep = word.len() <= 3
        || word.ends_with("ss")
        || word.ends_with("is")
        || word.ends_with("us")
        || !word.ends_with('s');
    if keep {
        word.to_owned()
    } else {
        word[..word.len() - 1].to_owned()
    }
}

pub(crate) fn is_generic(token: &str) -> bool {
    GENERIC.contains(&token)
}

/// One wording of one code.
#[derive(Debug, Clone)]
pub(crate) struct Term {
    pub node: NodeId,
    /// Sorted, deduplicated words a note must contain for this term to match.
    pub required: Vec<String>,
    /// Number of words including the optional ones: fewer means a closer match.
    pub total: usize,
    /// True for the official title, false for an inclusion term.
    pub is_title: bool,
}

/// Every title and inclusion term, with postings from each required word to its terms.
#[derive(Debug, Default)]
pub(crate) struct TermIndex {
    pub terms: Vec<Term>,
    postings: HashMap<String, Vec<u32>>,
}

impl TermIndex {
    pub fn build(nodes: &[Node]) -> TermIndex {
        let mut index = TermIndex::default();
        for (id, node) in nodes.iter().enumerate() {
            let id = id as NodeId;
            index.add(id, &node.title, true);
            for inclusion in &node.inclusion {
                index.add(id, inclusion, false);
            }
        }
        index
    }

    fn add(&mut self, node: NodeId, text: &str, is_title: bool) {
        let (required, total) = split_term(text);
        if required.is_empty() || required.iter().all(|t| is_generic(t)) {
            return;
        }
        let at = self.terms.len() as u32;
        for t in &required {
            self.postings.entry(t.clone()).or_default().push(at);
        }
        self.terms.push(Term {
            node,
            required,
            total,
            is_title,
        });
    }

    /// Terms all of whose required words are among `query` (deduplicated words).
    pub fn matching(&self, query: &[String]) -> Vec<&Term> {
        let mut hits: HashMap<u32, usize> = HashMap::new();
        let mut seen = std::collections::HashSet::new();
        for word in query.iter().filter(|w| seen.insert(w.as_str())) {
            for &t in self
                .postings
                .get(word)
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                *hits.entry(t).or_default() += 1;
            }
        }
        let mut out: Vec<&Term> = hits
            .into_iter()
            .filter_map(|(t, n)| {
                let term = &self.terms[t as usize];
                (n == term.required.len()).then_some(term)
            })
            .collect();
        out.sort_by_key(|t| t.node);
        out
    }
}

/// The required words of a title or inclusion term, and its total word count.
pub(crate) fn split_term(text: &str) -> (Vec<String>, usize) {
    let mut essential = String::with_capacity(text.len());
    let mut depth = 0usize;
    for c in text.chars() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth = depth.saturating_sub(1),
            _ if depth == 0 => essential.push(c),
            _ => {}
        }
    }
    let total = tokens(text).len();
    let mut required = Vec::new();
    for (i, clause) in essential.split(',').enumerate() {
        let lower = clause.trim().to_lowercase();
        if i > 0 && is_default_clause(&lower) {
            continue;
        }
        // "Severe sepsis without septic shock": what follows "without" is a default.
        let kept = match lower.find(" without ") {
            Some(at) => &lower[..at],
            None if lower.starts_with("without ") => "",
            None => lower.as_str(),
        };
        required.extend(
            tokens(kept)
                .into_iter()
                .filter(|t| t != "unspecified" && t != "nos"),
        );
    }
    required.sort();
    required.dedup();
    (required, total)
}

/// A clause that only states the default when nothing more is documented.
fn is_default_clause(clause: &str) -> bool {
    clause.starts_with("unspecified")
        || clause.starts_with("not ")
        || clause.starts_with("without ")
        || clause.contains("not specified")
        || clause.contains("not elsewhere classified")
        || clause == "nos"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(text: &str) -> Vec<String> {
        split_term(text).0
    }

    #[test]
    fn titles_keep_only_the_words_a_note_must_say() {
        assert_eq!(
            req("Essential (primary) hypertension"),
            ["essential", "hypertension"]
        );
        assert_eq!(req("Sepsis, unspecified organism"), ["sepsis"]);
        assert_eq!(req("Pain in unspecified knee"), ["knee", "pain"]);
        assert_eq!(
            req("Urinary tract infection, site not specified"),
            ["infection", "tract", "urinary"]
        );
        assert_eq!(
            req("Severe sepsis without septic shock"),
            ["sepsis", "severe"]
        );
        assert_eq!(
            req("Upper respiratory infection NOS"),
            ["infection", "respiratory", "upper"]
        );
        assert_eq!(
            req("Migraine, unspecified, not intractable, without status migrainosus"),
            ["migraine"]
        );
        assert_eq!(
            req("Type 2 diabetes mellitus without complications"),
            ["2", "diabete", "mellitus", "type"]
        );
    }

    #[test]
    fn tokens_fold_plurals_and_drop_stopwords() {
        assert_eq!(tokens("Pain in the Knees"), ["pain", "knee"]);
        assert_eq!(
            tokens("sepsis, lactic acidosis"),
            ["sepsis", "lactic", "acidosis"]
        );
    }
}
