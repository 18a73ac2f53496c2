//! Diarization scores against a scene's ground truth: diarization error rate and clinician
//! attribution.
//!
//! Both are computed on a grid of 10 ms frames, with no forgiveness collar and with overlapped
//! speech counted (a frame where two people talk needs two hypothesis speakers to be right).
//! DER = (missed + false alarm + confusion) / reference speech, where the hypothesis labels are
//! mapped one-to-one onto the reference speakers so that the mapping maximises the time they
//! agree (the NIST definition); the labels' names do not matter. Attribution, by contrast, is
//! about names: of the frames where exactly one reference speaker talks and the hypothesis
//! hears speech, how many did it call clinician exactly when the clinician spoke.

use std::collections::BTreeMap;

/// One speaker turn: who, and when (seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    pub speaker: String,
    pub start: f64,
    pub end: f64,
}

impl Turn {
    pub fn new(speaker: &str, start: f64, end: f64) -> Self {
        Self {
            speaker: speaker.to_string(),
            start,
            end,
        }
    }
}

/// The frame on which scores are computed.
pub const FRAME_S: f64 = 0.01;

/// Diarization error rate and its parts, in seconds of reference speech.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct DerReport {
    pub reference_s: f64,
    pub missed_s: f64,
    pub false_alarm_s: f64,
    pub confusion_s: f64,
    /// Hypothesis label → reference speaker, as chosen by the optimal mapping.
    pub mapping: BTreeMap<String, String>,
}

impl DerReport {
    pub fn der(&self) -> f64 {
        if self.reference_s <= 0.0 {
            return 0.0;
        }
        (self.missed_s + self.false_alarm_s + self.confusion_s) / self.reference_s
    }
}

/// Clinician attribution: frames with one reference speaker and hypothesis speech.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Attribution {
    pub frames: usize,
    pub correct: usize,
}

impl Attribution {
    pub fn accuracy(&self) -> f64 {
        if self.frames == 0 {
            return 0.0;
        }
        self.correct as f64 / self.frames as f64
    }
}

/// Per-frame speaker sets: index = frame, value = bitmask over `labels`.
struct FrameLabels {
    labels: Vec<String>,
    masks: Vec<u32>,
}

fn rasterise(turns: &[Turn], frames: usize) -> FrameLabels {
    let mut labels: Vec<String> = Vec::new();
    let mut masks = vec![0u32; frames];
    for turn in turns {
        let index = match labels.iter().position(|l| *l == turn.speaker) {
            Some(i) => i,
            None => {
                labels.push(turn.speaker.clone());
                labels.len() - 1
            }
        };
        // More than 32 speakers in one exam room is not a scene this scores.
        if index >= 32 {
            continue;
        }
        let (first, last) = frame_span(turn.start, turn.end, frames);
        for mask in &mut masks[first..last] {
            *mask |= 1 << index;
        }
    }
    FrameLabels { labels, masks }
}

/// The frames whose centre lies in [start, end).
fn frame_span(start: f64, end: f64, frames: usize) -> (usize, usize) {
    let to_frame = |t: f64| ((t / FRAME_S - 0.5).ceil().max(0.0) as usize).min(frames);
    let first = to_frame(start);
    (first, to_frame(end).max(first))
}

fn frame_count(reference: &[Turn], hypothesis: &[Turn]) -> usize {
    let end = reference
        .iter()
        .chain(hypothesis)
        .map(|t| t.end)
        .fold(0.0f64, f64::max);
    (end / FRAME_S).ceil() as usize + 1
}

/// DER with the optimal one-to-one mapping of hypothesis labels onto reference speakers.
pub fn diarization_error(reference: &[Turn], hypothesis: &[Turn]) -> DerReport {
    let frames = frame_count(reference, hypothesis);
    let reference = rasterise(reference, frames);
    let hypothesis = rasterise(hypothesis, frames);
    let (nr, nh) = (reference.labels.len(), hypothesis.labels.len());
    // Frames where reference speaker r and hypothesis label h both talk.
    let mut together = vec![vec![0usize; nh]; nr];
    let (mut reference_frames, mut missed, mut false_alarm, mut both) = (0usize, 0, 0, 0);
    for (&r, &h) in reference.masks.iter().zip(&hypothesis.masks) {
        let (cr, ch) = (r.count_ones() as usize, h.count_ones() as usize);
        reference_frames += cr;
        missed += cr.saturating_sub(ch);
        false_alarm += ch.saturating_sub(cr);
        both += cr.min(ch);
        for (ri, row) in together.iter_mut().enumerate() {
            if r & (1 << ri) == 0 {
                continue;
            }
            for (hi, cell) in row.iter_mut().enumerate() {
                if h & (1 << hi) != 0 {
                    *cell += 1;
                }
            }
        }
    }
    let assignment = best_assignment(&together);
    let matched: usize = assignment
        .iter()
        .enumerate()
        .filter_map(|(ri, h)| h.map(|hi| together[ri][hi]))
        .sum();
    let mapping = assignment
        .iter()
        .enumerate()
        .filter_map(|(ri, h)| {
            h.map(|hi| (hypothesis.labels[hi].clone(), reference.labels[ri].clone()))
        })
        .collect();
    let seconds = |n: usize| n as f64 * FRAME_S;
    DerReport {
        reference_s: seconds(reference_frames),
        missed_s: seconds(missed),
        false_alarm_s: seconds(false_alarm),
        confusion_s: seconds(both.saturating_sub(matched)),
        mapping,
    }
}

/// The one-to-one assignment of columns to rows with the largest total, by exhaustive search
/// (an exam room has a handful of speakers; the search is pruned by an upper bound).
fn best_assignment(weights: &[Vec<usize>]) -> Vec<Option<usize>> {
    struct Search<'a> {
        weights: &'a [Vec<usize>],
        row_max: Vec<usize>,
        best_total: usize,
        best: Vec<Option<usize>>,
        current: Vec<Option<usize>>,
        used: Vec<bool>,
    }
    impl Search<'_> {
        fn run(&mut self, row: usize, total: usize) {
            if row == self.weights.len() {
                if total > self.best_total || self.best.is_empty() {
                    self.best_total = total;
                    self.best = self.current.clone();
                }
                return;
            }
            let bound: usize = total + self.row_max[row..].iter().sum::<usize>();
            if !self.best.is_empty() && bound <= self.best_total {
                return;
            }
            for col in 0..self.used.len() {
                if self.used[col] || self.weights[row][col] == 0 {
                    continue;
                }
                self.used[col] = true;
                self.current[row] = Some(col);
                self.run(row + 1, total + self.weights[row][col]);
                self.used[col] = false;
            }
            self.current[row] = None;
            self.run(row + 1, total);
        }
    }
    let columns = weights.first().map_or(0, Vec::len);
    let mut search = Search {
        weights,
        row_max: weights
            .iter()
            .map(|r| r.iter().copied().max().unwrap_or(0))
            .collect(),
        best_total: 0,
        best: Vec::new(),
        current: vec![None; weights.len()],
        used: vec![false; columns],
    };
    search.run(0, 0);
    if search.best.is_empty() {
        vec![None; weights.len()]
    } else {
        search.best
    }
}

/// How often the hypothesis says "clinician" exactly when the reference clinician speaks, over
/// frames with one reference speaker and some hypothesis speech. Naming the clinician next to
/// another voice where only that other voice talks is a wrong call. `clinician` names the
/// clinician's label in each (e.g. "clinician" in both).
pub fn clinician_attribution(
    reference: &[Turn],
    hypothesis: &[Turn],
    clinician: &str,
) -> Attribution {
    let frames = frame_count(reference, hypothesis);
    let reference = rasterise(reference, frames);
    let hypothesis = rasterise(hypothesis, frames);
    let bit = |labels: &FrameLabels| {
        labels
            .labels
            .iter()
            .position(|l| l == clinician)
            .map_or(0u32, |i| 1 << i)
    };
    let (rc, hc) = (bit(&reference), bit(&hypothesis));
    let mut result = Attribution::default();
    for (&r, &h) in reference.masks.iter().zip(&hypothesis.masks) {
        if r.count_ones() != 1 || h == 0 {
            continue;
        }
        result.frames += 1;
        let reference_is_clinician = r & rc != 0;
        let hypothesis_is_clinician = h & hc != 0;
        if reference_is_clinician == hypothesis_is_clinician {
            result.correct += 1;
        }
    }
    result
}

/// Merges turns of the same speaker that touch or overlap, and drops empty ones.
pub fn merge_turns(mut turns: Vec<Turn>) -> Vec<Turn> {
    turns.retain(|t| t.end > t.start);
    turns.sort_by(|a, b| a.speaker.cmp(&b.speaker).then(a.start.total_cmp(&b.start)));
    let mut merged: Vec<Turn> = Vec::with_capacity(turns.len());
    for turn in turns {
        match merged.last_mut() {
            Some(last) if last.speaker == turn.speaker && turn.start <= last.end + 1e-9 => {
                last.end = last.end.max(turn.end);
            }
            _ => merged.push(turn),
        }
    }
    merged.sort_by(|a, b| a.start.total_cmp(&b.start));
    merged
}

/// Reads an RTTM file's SPEAKER lines (onset and duration in fields 4 and 5, name in 8).
pub fn parse_rttm(text: &str) -> Result<Vec<Turn>, String> {
    let mut turns = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.first() != Some(&"SPEAKER") {
            continue;
        }
        let bad = || format!("RTTM line {} is not a SPEAKER record", n + 1);
        let onset: f64 = fields.get(3).and_then(|f| f.parse().ok()).ok_or_else(bad)?;
        let duration: f64 = fields.get(4).and_then(|f| f.parse().ok()).ok_or_else(bad)?;
        let name = fields.get(7).ok_or_else(bad)?;
        if !(onset.is_finite() && duration.is_finite() && onset >= 0.0 && duration >= 0.0) {
            return Err(bad());
        }
        turns.push(Turn::new(name, onset, onset + duration));
    }
    Ok(turns)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str, a: f64, b: f64) -> Turn {
        Turn::new(s, a, b)
    }

    #[test]
    fn a_perfect_hypothesis_with_other_names_scores_zero() {
        let reference = [t("clinician", 0.0, 2.0), t("patient", 2.5, 4.0)];
        let hypothesis = [t("A", 0.0, 2.0), t("B", 2.5, 4.0)];
        let report = diarization_error(&reference, &hypothesis);
        assert!(report.der().abs() < 1e-9, "{report:?}");
        assert!((report.reference_s - 3.5).abs() < 0.011);
        assert_eq!(report.mapping["A"], "clinician");
        assert_eq!(report.mapping["B"], "patient");
    }

    #[test]
    fn missed_false_alarm_and_confusion_are_counted_apart() {
        let reference = [t("c", 0.0, 10.0)];
        // 2 s missed, 1 s false alarm after the end, 3 s given to a second label.
        let hypothesis = [t("x", 2.0, 7.0), t("y", 7.0, 10.0), t("x", 10.0, 11.0)];
        let r = diarization_error(&reference, &hypothesis);
        assert!((r.missed_s - 2.0).abs() < 0.011, "{r:?}");
        assert!((r.false_alarm_s - 1.0).abs() < 0.011, "{r:?}");
        assert!((r.confusion_s - 3.0).abs() < 0.011, "{r:?}");
        assert!((r.der() - 0.6).abs() < 0.002);
    }

    #[test]
    fn overlap_needs_two_hypothesis_speakers() {
        let reference = [t("c", 0.0, 4.0), t("p", 2.0, 6.0)];
        let single = [t("A", 0.0, 3.0), t("B", 3.0, 6.0)];
        let r = diarization_error(&reference, &single);
        // Frames 2–4 s carry two reference speakers and one hypothesis speaker: 2 s missed.
        assert!((r.missed_s - 2.0).abs() < 0.011, "{r:?}");
        let both = [t("A", 0.0, 4.0), t("B", 2.0, 6.0)];
        assert!(diarization_error(&reference, &both).der() < 1e-9);
    }

    #[test]
    fn the_mapping_is_optimal_not_greedy() {
        // Greedy would give A to c (5 s) and leave p with nothing better than B.
        let reference = [t("c", 0.0, 5.0), t("p", 5.0, 9.0), t("q", 9.0, 10.0)];
        let hypothesis = [t("A", 0.0, 9.0), t("B", 9.0, 10.0)];
        let r = diarization_error(&reference, &hypothesis);
        assert_eq!(r.mapping["A"], "c");
        assert_eq!(r.mapping["B"], "q");
        assert!((r.confusion_s - 4.0).abs() < 0.011, "{r:?}");
    }

    #[test]
    fn attribution_counts_clinician_decisions_on_single_speaker_frames() {
        let reference = [
            t("clinician", 0.0, 2.0),
            t("patient", 2.0, 4.0),
            t("patient", 5.0, 6.0),
        ];
        let hypothesis = [t("clinician", 0.0, 3.0), t("patient", 3.0, 6.0)];
        let a = clinician_attribution(&reference, &hypothesis, "clinician");
        assert_eq!(a.frames, 500);
        assert_eq!(a.correct, 400);
        assert!((a.accuracy() - 0.8).abs() < 1e-9);
        // Saying "clinician" alongside another label on a patient frame is not a correct call.
        let both = [t("clinician", 0.0, 6.0), t("patient", 2.0, 6.0)];
        let a = clinician_attribution(&reference, &both, "clinician");
        assert_eq!(a.correct, 200);
    }

    #[test]
    fn turns_merge_and_rttm_parses() {
        let merged = merge_turns(vec![t("a", 0.0, 1.0), t("a", 1.0, 2.0), t("b", 0.5, 0.5)]);
        assert_eq!(merged, vec![t("a", 0.0, 2.0)]);
        let rttm = "SPEAKER scene 1 1.20 2.40 <NA> <NA> clinician <NA> <NA>\n\
                    SPEAKER scene 1 3.00 1.00 <NA> <NA> patient <NA> <NA>\n";
        let turns = parse_rttm(rttm).unwrap();
        assert_eq!(turns.len(), 2);
        assert!((turns[0].end - 3.6).abs() < 1e-9);
        assert!(parse_rttm("SPEAKER x 1 abc 1 <NA> <NA> p").is_err());
    }
}
