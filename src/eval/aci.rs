//! The ACI-Bench drafting harness: drafts a note for every encounter of a split and scores it
//! against the reference note — ROUGE (as ACI-Bench computed it), statement precision by the
//! verifier's own verdict and by the independent check of [`super::support`], and fact recall
//! for vitals, medications and allergies ([`super::recall`]).
//!
//! The input of each draft is the dialogue text, or, for the ASR comparison, a `transcript.json`
//! that `edge-scribe process` wrote for synthesized audio of that dialogue. The copy-transcript
//! baseline (the input text itself as the note) is scored in the same run as a sanity check of
//! the ROUGE implementation against the published 32.84.
//!
//! The report holds the text of statements that failed a check, so an engineer can see why;
//! ACI-Bench is synthetic, published data. Nothing here logs any text: log events carry
//! encounter ids, counts and durations.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::recall::{self, Category};
use super::rouge::{self, RougeOptions, RougeScores};
use super::support::{self, DrugLexicon};
use crate::draft::compose::compose_draft;
use crate::draft::template::Template;
use crate::draft::{render_text, Draft, DraftSettings};
use crate::inference::Drafter;
use crate::transcript::Transcript;

#[derive(Debug, thiserror::Error)]
pub enum AciError {
    #[error("cannot read {path}: {source}; point --data at the directory holding ACI-Bench's train.csv and valid.csv")]
    Read { path: PathBuf, source: csv::Error },
    #[error("{path} row {row} is not an ACI-Bench row (columns dataset, encounter_id, dialogue, note): {source}")]
    Row {
        path: PathBuf,
        row: usize,
        source: csv::Error,
    },
    #[error("unknown split {0:?}: use train or valid")]
    Split(String),
    #[error("no encounter of the split matches the selection (--encounter / --limit)")]
    NothingSelected,
    #[error("cannot read transcript {path}: {message}")]
    Transcript { path: PathBuf, message: String },
}

/// One row of ACI-Bench's `train.csv` / `valid.csv`.
#[derive(Debug, Clone, Deserialize)]
pub struct AciEncounter {
    pub dataset: String,
    pub encounter_id: String,
    pub dialogue: String,
    pub note: String,
}

/// Reads `DIR/<split>.csv`.
pub fn load_split(dir: &Path, split: &str) -> Result<Vec<AciEncounter>, AciError> {
    if !matches!(split, "train" | "valid") {
        return Err(AciError::Split(split.into()));
    }
    let path = dir.join(format!("{split}.csv"));
    let mut reader = csv::Reader::from_path(&path).map_err(|source| AciError::Read {
        path: path.clone(),
        source,
    })?;
    reader
        .deserialize()
        .enumerate()
        .map(|(i, row)| {
            row.map_err(|source| AciError::Row {
                path: path.clone(),
                row: i + 1,
                source,
            })
        })
        .collect()
}

/// The dialogue as plain text: speaker tags removed (the copy-transcript baseline).
pub fn dialogue_text(dialogue: &str) -> String {
    dialogue
        .lines()
        .map(|line| {
            let line = line.trim();
            match line.strip_prefix('[').and_then(|rest| rest.split_once(']')) {
                Some((_, words)) => words.trim(),
                None => line,
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The note as scored: `render_text` without evidence brackets ("[s3, s7]", "[f2]") and without
/// lines that are only a bracketed status ("[insufficient input: ...]"), which a clinician would
/// not keep in the signed note.
pub fn scoring_text(rendered: &str) -> String {
    let mut out = Vec::new();
    for line in rendered.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') && trimmed.ends_with(']') {
            continue;
        }
        out.push(strip_id_brackets(line));
    }
    out.join("\n")
}

fn is_id_list(inner: &str) -> bool {
    let parts: Vec<&str> = inner.split(',').map(str::trim).collect();
    !parts.is_empty()
        && parts.iter().all(|p| {
            let mut chars = p.chars();
            matches!(chars.next(), Some('s' | 'f'))
                && !chars.as_str().is_empty()
                && chars.as_str().chars().all(|c| c.is_ascii_digit())
        })
}

fn strip_id_brackets(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(open) = rest.find('[') {
        let Some(close) = rest[open..].find(']') else {
            break;
        };
        let inner = &rest[open + 1..open + close];
        out.push_str(&rest[..open]);
        if !is_id_list(inner) {
            out.push_str(&rest[open..=open + close]);
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out.trim_end().to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// No drafter: the note is the extracted wording.
    Extraction,
    /// A drafter rephrases the extracted facts.
    Llm,
}

/// F-measures in percent, the way papers print them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RougeRow {
    pub rouge1: f64,
    pub rouge2: f64,
    pub rouge_l: f64,
    pub rouge_lsum: f64,
    /// ROUGE-1 with stemming, for comparison with papers that stem.
    pub rouge1_stemmed: f64,
}

impl RougeRow {
    fn score(reference: &str, candidate: &str) -> RougeRow {
        let plain: RougeScores = rouge::score(reference, candidate, RougeOptions::aci_bench());
        let stemmed = rouge::score(reference, candidate, RougeOptions::stemmed());
        RougeRow {
            rouge1: 100.0 * plain.rouge1.f1,
            rouge2: 100.0 * plain.rouge2.f1,
            rouge_l: 100.0 * plain.rouge_l.f1,
            rouge_lsum: 100.0 * plain.rouge_lsum.f1,
            rouge1_stemmed: 100.0 * stemmed.rouge1.f1,
        }
    }

    fn mean(rows: &[RougeRow]) -> RougeRow {
        let n = rows.len().max(1) as f64;
        let sum = |f: fn(&RougeRow) -> f64| rows.iter().map(f).sum::<f64>() / n;
        RougeRow {
            rouge1: sum(|r| r.rouge1),
            rouge2: sum(|r| r.rouge2),
            rouge_l: sum(|r| r.rouge_l),
            rouge_lsum: sum(|r| r.rouge_lsum),
            rouge1_stemmed: sum(|r| r.rouge1_stemmed),
        }
    }
}

/// Statement precision by the verifier's verdict recorded in the draft.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct VerifierCounts {
    pub supported: u32,
    pub unsupported: u32,
    /// Statements without a recorded verdict, counted as supported because the draft only holds
    /// what passed the verifier.
    pub no_verdict: u32,
    /// The verifier's own counts: statements proposed, accepted and dropped.
    pub proposed: u32,
    pub accepted: u32,
    pub dropped: u32,
}

/// Statement precision by the independent check.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct IndependentCounts {
    pub supported: u32,
    pub unsupported: u32,
    pub unsupported_numbers: u32,
    pub unsupported_units: u32,
    pub unsupported_drugs: u32,
    pub unsupported_doses: u32,
    pub unsupported_laterality: u32,
    pub unsupported_negation: u32,
    /// Statements that cite a segment the transcript does not have.
    pub missing_evidence: u32,
    /// Statements all of whose content words occur in the reference note.
    pub content_in_reference: u32,
    /// Sum over statements of the share of content words found in the reference note.
    pub content_share_sum: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RecallCounts {
    /// Reference facts whose value the dialogue states.
    pub stated: u32,
    pub found: u32,
    /// Labels of stated facts the draft misses ("heart rate 72", "lisinopril").
    pub missed: Vec<String>,
}

/// A statement that failed a check, for the engineer reading the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Problem {
    pub section: String,
    pub text: String,
    pub evidence: Vec<String>,
    pub origin: String,
    pub check: &'static str,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct EncounterResult {
    pub encounter_id: String,
    pub dataset: String,
    /// "dialogue" or "asr".
    pub input: &'static str,
    pub draft_ms: u64,
    /// Why no draft was made (the error's message; it carries no patient text).
    pub error: Option<String>,
    pub rouge: Option<RougeRow>,
    /// The note as scored (`render_text` without evidence ids and status lines).
    pub note_text: String,
    /// The input text itself as the note.
    pub copy_rouge: RougeRow,
    pub statements: u32,
    pub statements_by_origin: BTreeMap<String, u32>,
    pub verifier: VerifierCounts,
    pub independent: IndependentCounts,
    pub recall: BTreeMap<Category, RecallCounts>,
    pub problems: Vec<Problem>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Totals {
    pub encounters: u32,
    pub drafted: u32,
    pub errors: u32,
    /// Mean over drafted encounters.
    pub rouge: RougeRow,
    /// Mean over all encounters.
    pub copy_rouge: RougeRow,
    pub statements: u32,
    pub statements_by_origin: BTreeMap<String, u32>,
    pub verifier: VerifierCounts,
    pub independent: IndependentCounts,
    /// supported / statements; 1 when there are no statements.
    pub precision_verifier: f64,
    pub precision_independent: f64,
    pub content_in_reference_share: f64,
    pub mean_content_share: f64,
    pub recall: BTreeMap<Category, RecallCounts>,
    /// found / stated per category; 1 when nothing is stated.
    pub recall_rate: BTreeMap<Category, f64>,
    pub draft_ms_mean: f64,
    pub draft_ms_max: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct AciReport {
    pub split: String,
    pub mode: Mode,
    pub model: Option<String>,
    pub template: String,
    pub input: &'static str,
    /// How ROUGE was computed, so the numbers are read right.
    pub rouge_settings: &'static str,
    pub drug_lexicon_size: usize,
    /// Time to start the drafter (model load), not part of any draft's time.
    pub model_load_ms: Option<u64>,
    pub totals: Totals,
    pub encounters: Vec<EncounterResult>,
}

pub const ROUGE_SETTINGS: &str =
    "rouge-score defaults as ACI-Bench's evaluate_fullnote.py used them: \
lowercase, tokens [a-z0-9]+, no stemming; rouge_lsum (newline-split summary-level LCS) is the \
published ROUGE-L; rouge_l is LCS over the whole note; rouge1_stemmed uses Snowball English";

/// What one evaluation run does.
pub struct EvalOptions<'a> {
    pub split: String,
    pub mode: Mode,
    pub template: &'a Template,
    pub settings: DraftSettings,
    /// Draft from `DIR/<encounter id>/transcript.json` instead of the dialogue (ASR input).
    pub transcripts: Option<PathBuf>,
    pub model_load_ms: Option<u64>,
}

/// Keeps the encounters named in `ids` (all when empty), then at most `limit`.
pub fn select(
    encounters: Vec<AciEncounter>,
    ids: &[String],
    limit: Option<usize>,
) -> Result<Vec<AciEncounter>, AciError> {
    let mut selected: Vec<AciEncounter> = encounters
        .into_iter()
        .filter(|e| ids.is_empty() || ids.contains(&e.encounter_id))
        .collect();
    if let Some(limit) = limit {
        selected.truncate(limit);
    }
    if selected.is_empty() {
        return Err(AciError::NothingSelected);
    }
    Ok(selected)
}

fn read_transcript(dir: &Path, encounter_id: &str) -> Result<Transcript, AciError> {
    let path = dir.join(encounter_id).join("transcript.json");
    let text = std::fs::read_to_string(&path).map_err(|e| AciError::Transcript {
        path: path.clone(),
        message: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| AciError::Transcript {
        path,
        message: format!(
            "not a transcript.json: line {} column {}",
            e.line(),
            e.column()
        ),
    })
}

/// Drafts and scores every encounter. `lexicon_texts` are the texts the drug lexicon is built
/// from (the whole split's dialogues and notes, so each encounter is checked with the same list).
pub fn evaluate(
    encounters: &[AciEncounter],
    lexicon_texts: &[&str],
    options: &EvalOptions<'_>,
    mut drafter: Option<&mut dyn Drafter>,
) -> Result<AciReport, AciError> {
    let lexicon = DrugLexicon::build(lexicon_texts.iter().copied());
    let model = drafter.as_ref().map(|d| d.model());
    let mut results = Vec::with_capacity(encounters.len());
    for encounter in encounters {
        let (transcript, input) = match &options.transcripts {
            Some(dir) => (read_transcript(dir, &encounter.encounter_id)?, "asr"),
            None => match Transcript::from_dialogue(&encounter.dialogue) {
                Ok(t) => (t, "dialogue"),
                Err(e) => {
                    results.push(failed(encounter, &e));
                    continue;
                }
            },
        };
        let started = Instant::now();
        let drafted = compose_draft(
            &transcript,
            options.template,
            drafter.as_mut().map(|d| &mut **d as &mut dyn Drafter),
            &options.settings,
        );
        let draft_ms = started.elapsed().as_millis() as u64;
        let result = match drafted {
            Ok(draft) => score_encounter(encounter, &transcript, input, &draft, draft_ms, &lexicon),
            Err(e) => {
                let mut result = failed(encounter, &e);
                result.input = input;
                result.draft_ms = draft_ms;
                result.copy_rouge = RougeRow::score(&encounter.note, &transcript_text(&transcript));
                result
            }
        };
        tracing::info!(
            encounter = %encounter.encounter_id,
            statements = result.statements,
            draft_ms,
            failed = result.error.is_some(),
            "ACI-Bench encounter scored"
        );
        results.push(result);
    }
    Ok(AciReport {
        split: options.split.clone(),
        mode: options.mode,
        model,
        template: options.template.id.clone(),
        input: if options.transcripts.is_some() {
            "asr"
        } else {
            "dialogue"
        },
        rouge_settings: ROUGE_SETTINGS,
        drug_lexicon_size: lexicon.len(),
        model_load_ms: options.model_load_ms,
        totals: totals(&results),
        encounters: results,
    })
}

fn transcript_text(transcript: &Transcript) -> String {
    transcript
        .segments
        .iter()
        .map(|s| s.text.trim())
        .collect::<Vec<_>>()
        .join("\n")
}

fn failed(encounter: &AciEncounter, error: &dyn std::fmt::Display) -> EncounterResult {
    EncounterResult {
        encounter_id: encounter.encounter_id.clone(),
        dataset: encounter.dataset.clone(),
        input: "dialogue",
        draft_ms: 0,
        error: Some(error.to_string()),
        rouge: None,
        note_text: String::new(),
        copy_rouge: RougeRow::score(&encounter.note, &dialogue_text(&encounter.dialogue)),
        statements: 0,
        statements_by_origin: BTreeMap::new(),
        verifier: VerifierCounts::default(),
        independent: IndependentCounts::default(),
        recall: BTreeMap::new(),
        problems: Vec::new(),
    }
}

/// A statement as the draft records it, read through JSON so the harness keeps working while
/// the draft's fields grow (fact ids, verdicts).
struct StatementView {
    section: String,
    text: String,
    evidence: Vec<String>,
    origin: String,
    verdict: Option<String>,
}

fn statements(draft: &Draft) -> Vec<StatementView> {
    let value = serde_json::to_value(draft).unwrap_or_default();
    let mut out = Vec::new();
    let empty = Vec::new();
    for section in value["sections"].as_array().unwrap_or(&empty) {
        let name = section["name"].as_str().unwrap_or_default();
        for s in section["statements"].as_array().unwrap_or(&empty) {
            let verdict = ["verifier", "verdict"]
                .iter()
                .find_map(|k| s[*k].as_str())
                .filter(|v| !v.is_empty())
                .map(str::to_string);
            out.push(StatementView {
                section: name.to_string(),
                text: s["text"].as_str().unwrap_or_default().to_string(),
                evidence: s["evidence"]
                    .as_array()
                    .unwrap_or(&empty)
                    .iter()
                    .filter_map(|e| e.as_str().map(str::to_string))
                    .collect(),
                origin: s["origin"].as_str().unwrap_or("unknown").to_string(),
                verdict,
            });
        }
    }
    out
}

fn verifier_report(draft: &Draft) -> (u32, u32, u32) {
    let value = serde_json::to_value(&draft.verifier).unwrap_or_default();
    let count = |key: &str| value[key].as_u64().unwrap_or(0) as u32;
    let dropped = value["rejected"]
        .as_array()
        .map(|a| a.len() as u32)
        .unwrap_or(0);
    (count("proposed"), count("accepted"), dropped)
}

fn is_supported_verdict(verdict: &str) -> bool {
    let v = verdict.to_ascii_lowercase();
    ["supported", "accepted", "pass", "passed", "ok", "verified"]
        .iter()
        .any(|good| {
            v == *good || v.starts_with(&format!("{good} ")) || v.starts_with(&format!("{good}:"))
        })
}

/// Content words for the reference check: letters only, longer than 2, not a function word.
fn content_words(text: &str) -> Vec<String> {
    const FUNCTION_WORDS: &[&str] = &[
        "the", "and", "for", "with", "has", "had", "have", "was", "were", "are", "his", "her",
        "she", "him", "they", "them", "their", "that", "this", "there", "from", "not", "but",
        "you", "your", "she", "who", "which", "also", "been", "into", "out", "any", "some", "per",
        "about", "will", "would", "should", "can", "did", "does", "patient", "reports", "states",
    ];
    rouge::tokenize(text, RougeOptions::stemmed())
        .into_iter()
        .filter(|t| t.len() > 2 && t.chars().all(|c| c.is_ascii_alphabetic()))
        .filter(|t| !FUNCTION_WORDS.contains(&t.as_str()))
        .collect()
}

fn score_encounter(
    encounter: &AciEncounter,
    transcript: &Transcript,
    input: &'static str,
    draft: &Draft,
    draft_ms: u64,
    lexicon: &DrugLexicon,
) -> EncounterResult {
    let note_text = scoring_text(&render_text(draft));
    let views = statements(draft);
    let (proposed, accepted, dropped) = verifier_report(draft);
    let mut verifier = VerifierCounts {
        proposed,
        accepted,
        dropped,
        ..VerifierCounts::default()
    };
    let mut independent = IndependentCounts::default();
    let mut problems = Vec::new();
    let mut by_origin: BTreeMap<String, u32> = BTreeMap::new();
    let reference_words: std::collections::HashSet<String> =
        content_words(&encounter.note).into_iter().collect();

    for s in &views {
        *by_origin.entry(s.origin.clone()).or_insert(0) += 1;
        let problem = |check: &'static str, reason: String| Problem {
            section: s.section.clone(),
            text: s.text.clone(),
            evidence: s.evidence.clone(),
            origin: s.origin.clone(),
            check,
            reason,
        };
        match &s.verdict {
            Some(v) if is_supported_verdict(v) => verifier.supported += 1,
            Some(v) => {
                verifier.unsupported += 1;
                problems.push(problem("verifier", v.clone()));
            }
            None => {
                verifier.supported += 1;
                verifier.no_verdict += 1;
            }
        }

        let cited: Vec<&str> = s
            .evidence
            .iter()
            .filter_map(|id| transcript.segment(id).map(|seg| seg.text.as_str()))
            .collect();
        let missing = cited.len() < s.evidence.len() || s.evidence.is_empty();
        let findings = support::check(&s.text, &cited.join("\n"), lexicon);
        let c = &mut independent;
        c.unsupported_numbers += u32::from(!findings.numbers.is_empty());
        c.unsupported_units += u32::from(!findings.units.is_empty());
        c.unsupported_drugs += u32::from(!findings.drugs.is_empty());
        c.unsupported_doses += u32::from(!findings.doses.is_empty());
        c.unsupported_laterality += u32::from(!findings.laterality.is_empty());
        c.unsupported_negation += u32::from(findings.negation);
        c.missing_evidence += u32::from(missing);
        if findings.supported() && !missing {
            c.supported += 1;
        } else {
            c.unsupported += 1;
            let mut reason = findings.describe();
            if missing {
                if !reason.is_empty() {
                    reason.push_str("; ");
                }
                reason.push_str("cites no existing segment");
            }
            problems.push(problem("independent", reason));
        }

        let words = content_words(&s.text);
        let share = if words.is_empty() {
            1.0
        } else {
            words
                .iter()
                .filter(|w| reference_words.contains(*w))
                .count() as f64
                / words.len() as f64
        };
        c.content_share_sum += share;
        c.content_in_reference += u32::from(share >= 1.0);
    }

    let turns = recall::contents(
        Transcript::from_dialogue(&encounter.dialogue)
            .map(|t| t.segments.into_iter().map(|s| s.text).collect::<Vec<_>>())
            .unwrap_or_default()
            .iter()
            .map(String::as_str),
        lexicon,
    );
    let statement_contents = recall::contents(views.iter().map(|s| s.text.as_str()), lexicon);
    let mut recall_counts: BTreeMap<Category, RecallCounts> =
        [Category::Vitals, Category::Medications, Category::Allergies]
            .into_iter()
            .map(|c| (c, RecallCounts::default()))
            .collect();
    for fact in recall::reference_facts(&encounter.note, lexicon) {
        if !recall::stated_in(&fact, &turns) {
            continue;
        }
        let counts = recall_counts.entry(fact.category).or_default();
        counts.stated += 1;
        if recall::found_in(&fact, &statement_contents) {
            counts.found += 1;
        } else {
            counts.missed.push(fact.label.clone());
        }
    }

    EncounterResult {
        encounter_id: encounter.encounter_id.clone(),
        dataset: encounter.dataset.clone(),
        input,
        draft_ms,
        error: None,
        rouge: Some(RougeRow::score(&encounter.note, &note_text)),
        note_text,
        copy_rouge: RougeRow::score(
            &encounter.note,
            &match input {
                "asr" => transcript_text(transcript),
                _ => dialogue_text(&encounter.dialogue),
            },
        ),
        statements: views.len() as u32,
        statements_by_origin: by_origin,
        verifier,
        independent,
        recall: recall_counts,
        problems,
    }
}

fn ratio(numerator: u32, denominator: u32) -> f64 {
    if denominator == 0 {
        1.0
    } else {
        f64::from(numerator) / f64::from(denominator)
    }
}

fn totals(results: &[EncounterResult]) -> Totals {
    let drafted: Vec<&EncounterResult> = results.iter().filter(|r| r.error.is_none()).collect();
    let mut verifier = VerifierCounts::default();
    let mut independent = IndependentCounts::default();
    let mut recall_counts: BTreeMap<Category, RecallCounts> = BTreeMap::new();
    let mut by_origin: BTreeMap<String, u32> = BTreeMap::new();
    for r in &drafted {
        let v = &r.verifier;
        verifier.supported += v.supported;
        verifier.unsupported += v.unsupported;
        verifier.no_verdict += v.no_verdict;
        verifier.proposed += v.proposed;
        verifier.accepted += v.accepted;
        verifier.dropped += v.dropped;
        let i = &r.independent;
        let t = &mut independent;
        t.supported += i.supported;
        t.unsupported += i.unsupported;
        t.unsupported_numbers += i.unsupported_numbers;
        t.unsupported_units += i.unsupported_units;
        t.unsupported_drugs += i.unsupported_drugs;
        t.unsupported_doses += i.unsupported_doses;
        t.unsupported_laterality += i.unsupported_laterality;
        t.unsupported_negation += i.unsupported_negation;
        t.missing_evidence += i.missing_evidence;
        t.content_in_reference += i.content_in_reference;
        t.content_share_sum += i.content_share_sum;
        for (category, counts) in &r.recall {
            let total = recall_counts.entry(*category).or_default();
            total.stated += counts.stated;
            total.found += counts.found;
            total.missed.extend(
                counts
                    .missed
                    .iter()
                    .map(|m| format!("{}: {m}", r.encounter_id)),
            );
        }
        for (origin, n) in &r.statements_by_origin {
            *by_origin.entry(origin.clone()).or_insert(0) += n;
        }
    }
    let statements: u32 = drafted.iter().map(|r| r.statements).sum();
    let rouge_rows: Vec<RougeRow> = drafted.iter().filter_map(|r| r.rouge).collect();
    let copy_rows: Vec<RougeRow> = results.iter().map(|r| r.copy_rouge).collect();
    let times: Vec<u64> = drafted.iter().map(|r| r.draft_ms).collect();
    let recall_rate = recall_counts
        .iter()
        .map(|(c, counts)| (*c, ratio(counts.found, counts.stated)))
        .collect();
    Totals {
        encounters: results.len() as u32,
        drafted: drafted.len() as u32,
        errors: (results.len() - drafted.len()) as u32,
        rouge: RougeRow::mean(&rouge_rows),
        copy_rouge: RougeRow::mean(&copy_rows),
        statements,
        statements_by_origin: by_origin,
        precision_verifier: ratio(verifier.supported, statements),
        precision_independent: ratio(independent.supported, statements),
        content_in_reference_share: ratio(independent.content_in_reference, statements),
        mean_content_share: if statements == 0 {
            0.0
        } else {
            independent.content_share_sum / f64::from(statements)
        },
        verifier,
        independent,
        recall: recall_counts,
        recall_rate,
        draft_ms_mean: if times.is_empty() {
            0.0
        } else {
            times.iter().sum::<u64>() as f64 / times.len() as f64
        },
        draft_ms_max: times.iter().copied().max().unwrap_or(0),
    }
}

/// A short table for the terminal.
pub fn summary(report: &AciReport) -> String {
    let t = &report.totals;
    let mut out = String::new();
    let model = report.model.as_deref().unwrap_or("-");
    out.push_str(&format!(
        "ACI-Bench {} · mode {:?} · model {model} · input {} · template {}\n",
        report.split, report.mode, report.input, report.template
    ));
    out.push_str(&format!(
        "encounters {} (drafted {}, failed {})\n",
        t.encounters, t.drafted, t.errors
    ));
    if let Some(first) = report.encounters.iter().find_map(|e| e.error.as_deref()) {
        out.push_str(&format!("first failure: {first}\n"));
    }
    out.push_str("                    R-1    R-2    R-L  R-Lsum\n");
    let row = |name: &str, r: &RougeRow| {
        format!(
            "{name:<16} {:>6.2} {:>6.2} {:>6.2} {:>6.2}\n",
            r.rouge1, r.rouge2, r.rouge_l, r.rouge_lsum
        )
    };
    out.push_str(&row("draft", &t.rouge));
    out.push_str(&row("copy transcript", &t.copy_rouge));
    out.push_str(&format!(
        "statements {} · precision verifier {:.3} · independent {:.3} · unsupported numbers {} drugs {} doses {} units {} laterality {} negation {}\n",
        t.statements,
        t.precision_verifier,
        t.precision_independent,
        t.independent.unsupported_numbers,
        t.independent.unsupported_drugs,
        t.independent.unsupported_doses,
        t.independent.unsupported_units,
        t.independent.unsupported_laterality,
        t.independent.unsupported_negation,
    ));
    out.push_str(&format!(
        "content words in reference: all {:.3} of statements, mean share {:.3}\n",
        t.content_in_reference_share, t.mean_content_share
    ));
    for (category, counts) in &t.recall {
        out.push_str(&format!(
            "recall {:<12} {}/{} = {:.3}\n",
            format!("{category:?}").to_lowercase(),
            counts.found,
            counts.stated,
            ratio(counts.found, counts.stated)
        ));
    }
    out.push_str(&format!(
        "draft time mean {:.0} ms, max {} ms\n",
        t.draft_ms_mean, t.draft_ms_max
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoring_text_drops_evidence_ids_and_status_lines_only() {
        let rendered =
            "SUBJECTIVE\n  - Knee pain for 2 weeks. [s2, s5]\n  - Takes [brand] pills [f3]\n\n\
OBJECTIVE\n  [insufficient input: nothing in the visit supports this section]\n";
        assert_eq!(
            scoring_text(rendered),
            "SUBJECTIVE\n  - Knee pain for 2 weeks.\n  - Takes [brand] pills\n\nOBJECTIVE"
        );
    }

    #[test]
    fn dialogue_text_removes_speaker_tags() {
        assert_eq!(
            dialogue_text("[doctor] hi , how are you ?\n[patient_guest] fine .\ncontinued"),
            "hi , how are you ?\nfine .\ncontinued"
        );
    }

    #[test]
    fn verdicts_that_mean_supported() {
        assert!(is_supported_verdict("supported"));
        assert!(is_supported_verdict("Accepted"));
        assert!(!is_supported_verdict("unsupported: number 40"));
        assert!(!is_supported_verdict("replaced"));
    }

    #[test]
    fn splits_are_train_or_valid() {
        assert!(matches!(
            load_split(Path::new("/nonexistent"), "test"),
            Err(AciError::Split(_))
        ));
    }
}
