//! Frame-level scoring of voice activity detection against ground-truth speech turns.
//!
//! Audio is cut into 10 ms frames and each frame is speech or not by whether its centre lies in
//! an interval: fine enough that a 30 ms detector's edges show, coarse enough to be cheap on an
//! hour. Overlapping or touching turns simply merge, so the reference is the union of turns.

const FRAME_S: f64 = 0.01;

/// Precision, recall and F1 over speech frames; `false_alarm_rate` = false-positive frames /
/// non-speech frames (what a fan-only stretch costs); `frames` = 10 ms frames scored.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct VadScore {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub false_alarm_rate: f64,
    pub frames: usize,
}

/// Marks the 10 ms frames whose centres fall inside any interval (seconds).
fn frame_mask(intervals: &[(f64, f64)], frames: usize) -> Vec<bool> {
    let mut mask = vec![false; frames];
    for &(start, end) in intervals {
        if !(start.is_finite() && end.is_finite()) || end <= start {
            continue;
        }
        // Frame k's centre is (k + 0.5) * FRAME_S; it lies in [start, end) when
        // k >= start / FRAME_S - 0.5 and k < end / FRAME_S - 0.5.
        let first = (start / FRAME_S - 0.5).ceil().max(0.0) as usize;
        let last = ((end / FRAME_S - 0.5).ceil().max(0.0) as usize).min(frames);
        for flag in mask.iter_mut().take(last).skip(first) {
            *flag = true;
        }
    }
    mask
}

/// Scores hypothesis speech intervals against reference ones (both in seconds) over
/// `duration_s` of audio. An empty denominator counts as perfect: claiming nothing on silence
/// has precision 1, missing nothing where there is no speech has recall 1.
pub fn score_intervals(
    reference_s: &[(f64, f64)],
    hypothesis_s: &[(f64, f64)],
    duration_s: f64,
) -> VadScore {
    let frames = if duration_s.is_finite() && duration_s > 0.0 {
        (duration_s / FRAME_S).round() as usize
    } else {
        0
    };
    let reference = frame_mask(reference_s, frames);
    let hypothesis = frame_mask(hypothesis_s, frames);
    let (mut tp, mut fp, mut fn_, mut tn) = (0usize, 0usize, 0usize, 0usize);
    for (&r, &h) in reference.iter().zip(&hypothesis) {
        match (r, h) {
            (true, true) => tp += 1,
            (false, true) => fp += 1,
            (true, false) => fn_ += 1,
            (false, false) => tn += 1,
        }
    }
    let ratio = |num: usize, den: usize, empty: f64| {
        if den == 0 {
            empty
        } else {
            num as f64 / den as f64
        }
    };
    let precision = ratio(tp, tp + fp, 1.0);
    let recall = ratio(tp, tp + fn_, 1.0);
    let f1 = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    VadScore {
        precision,
        recall,
        f1,
        false_alarm_rate: ratio(fp, fp + tn, 0.0),
        frames,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn identical_intervals_score_perfectly() {
        let truth = [(1.0, 2.0), (3.0, 4.5)];
        let score = score_intervals(&truth, &truth, 6.0);
        assert_eq!(score.frames, 600);
        assert!(close(score.f1, 1.0) && close(score.false_alarm_rate, 0.0));
    }

    #[test]
    fn half_detected_speech_has_half_recall() {
        let score = score_intervals(&[(1.0, 3.0)], &[(1.0, 2.0)], 10.0);
        assert!(close(score.precision, 1.0));
        assert!(close(score.recall, 0.5));
        assert!(close(score.f1, 2.0 * 0.5 / 1.5));
        assert!(close(score.false_alarm_rate, 0.0));
    }

    #[test]
    fn false_alarms_are_counted_over_non_speech() {
        // 2 s speech, 8 s non-speech; 1 s claimed in the non-speech.
        let score = score_intervals(&[(0.0, 2.0)], &[(0.0, 2.0), (5.0, 6.0)], 10.0);
        assert!(close(score.false_alarm_rate, 100.0 / 800.0));
        assert!(close(score.precision, 200.0 / 300.0));
        assert!(close(score.recall, 1.0));
    }

    #[test]
    fn overlapping_reference_turns_are_a_union() {
        let score = score_intervals(&[(1.0, 3.0), (2.0, 4.0)], &[(1.0, 4.0)], 5.0);
        assert!(close(score.f1, 1.0));
    }

    #[test]
    fn intervals_past_the_end_or_empty_are_clipped() {
        let score = score_intervals(&[(9.0, 12.0)], &[(9.0, 15.0), (3.0, 3.0)], 10.0);
        assert_eq!(score.frames, 1000);
        assert!(close(score.f1, 1.0));
    }

    #[test]
    fn nothing_claimed_on_silence_is_perfect_and_missing_all_is_zero() {
        let silent = score_intervals(&[], &[], 3.0);
        assert!(close(silent.f1, 1.0) && close(silent.false_alarm_rate, 0.0));
        let missed = score_intervals(&[(0.0, 1.0)], &[], 3.0);
        assert!(close(missed.recall, 0.0) && close(missed.f1, 0.0));
    }
}
