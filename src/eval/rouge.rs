//! ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum F-measures, computed the way Google's `rouge-score`
//! package computes them, so our numbers sit next to published ones.
//!
//! ACI-Bench scored with HuggingFace `evaluate.load('rouge').compute(...)`, which calls
//! `rouge-score` with its defaults: lower-case, every run of characters outside `[a-z0-9]` is a
//! separator, **no stemming**, and four types: `rouge1`, `rouge2`, `rougeL` (one LCS over the whole
//! token sequences) and `rougeLsum` (summary-level LCS over newline-separated lines). The paper's
//! "ROUGE-L" column is `rougeLsum`: on ACI-Bench train the copy-transcript baseline scores
//! 32.8 / 13.1 / 19.5 (rougeL) / 30.9 (rougeLsum) with rouge-score, against the published
//! 32.84 / 12.53 / 30.61. So [`RougeOptions::aci_bench`] is the comparable setting.
//!
//! Stemming is available ([`RougeOptions::stemmed`]) with the Snowball English (Porter2) stemmer
//! of `rust-stemmers`; rouge-score stems with NLTK's Porter, and the two disagree on a few words
//! (e.g. "generously"), so stemmed scores match rouge-score only to about a tenth of a point.
//! Pure functions, no I/O.

use std::collections::HashMap;

use rust_stemmers::{Algorithm, Stemmer};
use serde::{Deserialize, Serialize};

/// How text becomes tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RougeOptions {
    /// Stem tokens longer than three characters (rouge-score's `use_stemmer=True`).
    pub stem: bool,
}

impl RougeOptions {
    /// What ACI-Bench's evaluation script used: rouge-score defaults, no stemming.
    pub fn aci_bench() -> Self {
        Self { stem: false }
    }

    pub fn stemmed() -> Self {
        Self { stem: true }
    }
}

/// Precision, recall and F-measure of one ROUGE type, each in 0..=1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Score {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

impl Score {
    fn new(hits: usize, candidate_total: usize, reference_total: usize) -> Score {
        // rouge-score divides by max(total, 1), so an empty side gives 0 rather than NaN.
        let precision = hits as f64 / candidate_total.max(1) as f64;
        let recall = hits as f64 / reference_total.max(1) as f64;
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        Score {
            precision,
            recall,
            f1,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RougeScores {
    pub rouge1: Score,
    pub rouge2: Score,
    /// LCS over the whole token sequences (rouge-score `rougeL`).
    pub rouge_l: Score,
    /// Summary-level LCS over lines (rouge-score `rougeLsum`; ACI-Bench's "ROUGE-L").
    pub rouge_lsum: Score,
}

/// rouge-score's tokenizer: lower-case, split on anything outside `[a-z0-9]`, optionally stem
/// tokens longer than three characters.
pub fn tokenize(text: &str, options: RougeOptions) -> Vec<String> {
    let stemmer = options.stem.then(|| Stemmer::create(Algorithm::English));
    tokenize_with(text, stemmer.as_ref())
}

fn tokenize_with(text: &str, stemmer: Option<&Stemmer>) -> Vec<String> {
    let lower = text.to_lowercase();
    lower
        .split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit()))
        .filter(|t| !t.is_empty())
        .map(|t| match stemmer {
            Some(stemmer) if t.len() > 3 => stemmer.stem(t).into_owned(),
            _ => t.to_string(),
        })
        .filter(|t| !t.is_empty())
        .collect()
}

/// Scores `candidate` against `reference` (one reference, as in ACI-Bench).
pub fn score(reference: &str, candidate: &str, options: RougeOptions) -> RougeScores {
    let stemmer = options.stem.then(|| Stemmer::create(Algorithm::English));
    let stemmer = stemmer.as_ref();
    let reference_tokens = tokenize_with(reference, stemmer);
    let candidate_tokens = tokenize_with(candidate, stemmer);
    let lines = |text: &str| -> Vec<Vec<String>> {
        text.split('\n')
            .filter(|line| !line.is_empty())
            .map(|line| tokenize_with(line, stemmer))
            .collect()
    };
    RougeScores {
        rouge1: ngram_score(&reference_tokens, &candidate_tokens, 1),
        rouge2: ngram_score(&reference_tokens, &candidate_tokens, 2),
        rouge_l: lcs_score(&reference_tokens, &candidate_tokens),
        rouge_lsum: summary_lcs_score(&lines(reference), &lines(candidate)),
    }
}

fn ngram_counts(tokens: &[String], n: usize) -> HashMap<&[String], usize> {
    let mut counts = HashMap::new();
    if tokens.len() >= n {
        for gram in tokens.windows(n) {
            *counts.entry(gram).or_insert(0) += 1;
        }
    }
    counts
}

/// ROUGE-N: clipped n-gram overlap.
pub fn ngram_score(reference: &[String], candidate: &[String], n: usize) -> Score {
    let reference_counts = ngram_counts(reference, n);
    let candidate_counts = ngram_counts(candidate, n);
    let hits = reference_counts
        .iter()
        .map(|(gram, &count)| count.min(candidate_counts.get(gram).copied().unwrap_or(0)))
        .sum();
    Score::new(
        hits,
        candidate_counts.values().sum(),
        reference_counts.values().sum(),
    )
}

/// The LCS dynamic-programming table, `(reference.len() + 1) × (candidate.len() + 1)`, row-major.
fn lcs_table(reference: &[String], candidate: &[String]) -> Vec<u32> {
    let cols = candidate.len() + 1;
    let mut table = vec![0u32; (reference.len() + 1) * cols];
    for i in 1..=reference.len() {
        for j in 1..=candidate.len() {
            table[i * cols + j] = if reference[i - 1] == candidate[j - 1] {
                table[(i - 1) * cols + j - 1] + 1
            } else {
                table[(i - 1) * cols + j].max(table[i * cols + j - 1])
            };
        }
    }
    table
}

/// ROUGE-L: longest common subsequence of the two token sequences.
pub fn lcs_score(reference: &[String], candidate: &[String]) -> Score {
    if reference.is_empty() || candidate.is_empty() {
        return Score::default();
    }
    let table = lcs_table(reference, candidate);
    let lcs = table[table.len() - 1] as usize;
    Score::new(lcs, candidate.len(), reference.len())
}

/// Indices into `reference` of one LCS with `candidate`, chosen by the same backtracking rule as
/// rouge-score (`_backtrack_norec`): the union in ROUGE-Lsum depends on which LCS is picked.
fn lcs_indices(reference: &[String], candidate: &[String]) -> Vec<usize> {
    let table = lcs_table(reference, candidate);
    let cols = candidate.len() + 1;
    let (mut i, mut j) = (reference.len(), candidate.len());
    let mut indices = Vec::new();
    while i > 0 && j > 0 {
        if reference[i - 1] == candidate[j - 1] {
            indices.push(i - 1);
            i -= 1;
            j -= 1;
        } else if table[i * cols + j - 1] > table[(i - 1) * cols + j] {
            j -= 1;
        } else {
            i -= 1;
        }
    }
    indices.reverse();
    indices
}

/// ROUGE-Lsum: for each reference line, the union of its LCS with every candidate line; hits are
/// counted without using any token more often than it occurs on either side (ROUGE 1.5.5).
pub fn summary_lcs_score(reference: &[Vec<String>], candidate: &[Vec<String>]) -> Score {
    let m: usize = reference.iter().map(Vec::len).sum();
    let n: usize = candidate.iter().map(Vec::len).sum();
    if reference.is_empty() || candidate.is_empty() || m == 0 || n == 0 {
        return Score::default();
    }
    let mut reference_left: HashMap<&str, usize> = HashMap::new();
    let mut candidate_left: HashMap<&str, usize> = HashMap::new();
    for token in reference.iter().flatten() {
        *reference_left.entry(token.as_str()).or_insert(0) += 1;
    }
    for token in candidate.iter().flatten() {
        *candidate_left.entry(token.as_str()).or_insert(0) += 1;
    }
    let mut hits = 0;
    for line in reference {
        let mut union: Vec<usize> = candidate
            .iter()
            .flat_map(|c| lcs_indices(line, c))
            .collect();
        union.sort_unstable();
        union.dedup();
        for index in union {
            let token = line[index].as_str();
            let (Some(r), Some(c)) = (reference_left.get_mut(token), candidate_left.get_mut(token))
            else {
                continue;
            };
            if *r > 0 && *c > 0 {
                hits += 1;
                *r -= 1;
                *c -= 1;
            }
        }
    }
    Score::new(hits, n, m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(text: &str) -> Vec<String> {
        tokenize(text, RougeOptions::aci_bench())
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn tokens_are_lowercase_alphanumeric_runs() {
        assert_eq!(
            toks("BP: 120/80 mmHg, pt's O2-sat 98%."),
            ["bp", "120", "80", "mmhg", "pt", "s", "o2", "sat", "98"]
        );
        // Non-ASCII letters are separators, as in rouge-score's [^a-z0-9]+ after lower().
        assert_eq!(toks("naïve café"), ["na", "ve", "caf"]);
    }

    #[test]
    fn stemming_touches_only_tokens_longer_than_three_characters() {
        let t = tokenize("running dogs was pains", RougeOptions::stemmed());
        assert_eq!(t, ["run", "dog", "was", "pain"]);
    }

    #[test]
    fn rouge_1_and_2_by_hand() {
        // reference: the cat sat on the mat (6 unigrams, 5 bigrams)
        // candidate: the cat lay on the mat (6 unigrams, 5 bigrams)
        // unigram overlap: the×2, cat, on, mat = 5 → P = R = F = 5/6
        // bigram overlap: "the cat", "on the", "the mat" = 3 → 3/5
        let s = score(
            "the cat sat on the mat",
            "the cat lay on the mat",
            RougeOptions::aci_bench(),
        );
        assert!(close(s.rouge1.f1, 5.0 / 6.0), "{s:?}");
        assert!(close(s.rouge2.f1, 3.0 / 5.0), "{s:?}");
        // LCS: the cat on the mat = 5 → 5/6
        assert!(close(s.rouge_l.f1, 5.0 / 6.0), "{s:?}");
    }

    #[test]
    fn clipped_counts_and_unequal_lengths() {
        // reference "a a b" (3), candidate "a a a a" (4): clipped unigram hits = 2.
        // P = 2/4, R = 2/3, F = 2·(1/2)(2/3)/(1/2 + 2/3) = 4/7.
        let s = score("a a b", "a a a a", RougeOptions::aci_bench());
        assert!(close(s.rouge1.f1, 4.0 / 7.0), "{s:?}");
        // bigrams: ref {aa:1, ab:1}, cand {aa:3} → 1 hit; P = 1/3, R = 1/2, F = 2/5.
        assert!(close(s.rouge2.f1, 0.4), "{s:?}");
    }

    #[test]
    fn lcs_ignores_gaps_but_not_order() {
        // reference: a b c d e; candidate: e d c b a → LCS 1; candidate: a x c y e → LCS 3.
        let r = toks("a b c d e");
        assert!(close(lcs_score(&r, &toks("e d c b a")).f1, 0.2));
        assert!(close(lcs_score(&r, &toks("a x c y e")).f1, 0.6));
    }

    #[test]
    fn summary_level_lcs_by_hand() {
        // The example of Lin (2004), section 3.2: r = w1 w2 w3 w4 w5; c1 = w1 w2 w6 w7 w8,
        // c2 = w1 w3 w8 w9 w5. Union LCS = w1 w2 w3 w5 → 4 hits; R = 4/5, P = 4/10.
        let s = score(
            "w1 w2 w3 w4 w5",
            "w1 w2 w6 w7 w8\nw1 w3 w8 w9 w5",
            RougeOptions::aci_bench(),
        );
        assert!(close(s.rouge_lsum.recall, 0.8), "{s:?}");
        assert!(close(s.rouge_lsum.precision, 0.4), "{s:?}");
        // Over the joined candidate the whole-sequence LCS is also w1 w2 w3 w5 (across lines).
        assert!(close(s.rouge_l.recall, 4.0 / 5.0), "{s:?}");
    }

    #[test]
    fn lsum_never_counts_a_token_more_often_than_it_occurs() {
        // Both reference lines match the single candidate "a"; it can be used once only.
        let s = score("a\na", "a", RougeOptions::aci_bench());
        assert!(close(s.rouge_lsum.recall, 0.5), "{s:?}");
        assert!(close(s.rouge_lsum.precision, 1.0), "{s:?}");
    }

    #[test]
    fn empty_sides_score_zero_not_nan() {
        let s = score("", "something", RougeOptions::aci_bench());
        assert_eq!(s, RougeScores::default());
        let s = score("something", "!!!", RougeOptions::aci_bench());
        assert_eq!(s.rouge1.f1, 0.0);
        assert_eq!(s.rouge_lsum.f1, 0.0);
    }
}
