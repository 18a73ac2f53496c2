//! Speech/non-speech for the room front end, frame by frame as a stream arrives: the detector
//! interface (Silero, the webrtc-vad fallback, the evaluation's oracle), webrtc-vad as the cheap
//! gate, and the decision rules (hysteresis with minimum durations, short-gap filling) in a form
//! that commits each frame as soon as later audio can no longer change it.
//!
//! The stream's decisions equal the batch rules of [`super::silero::speech_intervals`] (without
//! padding) followed by gap filling; the tests check that on random sequences.

use webrtc_vad::{SampleRate, Vad, VadMode};

use super::silero::SpeechSettings;
use super::FrontendError;

/// Samples per decision frame: 32 ms at 16 kHz, Silero's frame.
pub const FRAME: usize = 512;
/// webrtc-vad decides on 10 ms frames here: the finest grain it offers.
pub const GATE_FRAME: usize = 160;

/// How a detector's probabilities become speech decisions.
#[derive(Debug, Clone, PartialEq)]
pub enum SpeechDecision {
    /// Speech from `threshold` on, frame by frame.
    Threshold(f32),
    /// Hysteresis with minimum speech and silence durations (padding is not applied).
    Hysteresis(SpeechSettings),
}

/// Speech probabilities of a 16 kHz stream, one per [`FRAME`] samples, asked for in order.
/// Implemented by the Silero model, the webrtc-vad fallback and the evaluation's oracle.
pub trait SpeechDetector {
    /// A new stream begins: forget the previous one.
    fn reset(&mut self);
    /// The probability of frame `index`. `signal` holds the stream from its first sample up to
    /// at least the end of that frame (the very last frame is zero-padded); `voiced` is the
    /// stream's webrtc-vad gate so far, in the mode [`SpeechDetector::gate_aggressiveness`] asks.
    fn frame_probability(
        &mut self,
        signal: &[f32],
        index: usize,
        voiced: &VoicedGate,
    ) -> Result<f32, FrontendError>;
    /// How probabilities become decisions.
    fn decision(&self) -> SpeechDecision;
    /// The webrtc-vad mode (0 = quality … 3 = very aggressive) of the gate it reads.
    fn gate_aggressiveness(&self) -> u8 {
        0
    }
    /// For the record: which detector decided.
    fn name(&self) -> &'static str;
}

/// webrtc-vad over a stream, as prefix counts of voiced 10 ms frames, so any range of samples
/// is answered in O(1). Not `Send` (the C detector is not); it lives with its stream.
pub struct VoicedGate {
    vad: Vad,
    pending: Vec<i16>,
    prefix: Vec<u32>,
}

impl VoicedGate {
    /// A gate in webrtc-vad mode `aggressiveness` (0–3; larger values are clamped).
    pub fn new(aggressiveness: u8) -> VoicedGate {
        let mode = match aggressiveness {
            0 => VadMode::Quality,
            1 => VadMode::LowBitrate,
            2 => VadMode::Aggressive,
            _ => VadMode::VeryAggressive,
        };
        VoicedGate {
            // Panics on an empty buffer: it is fed only full frames.
            vad: Vad::new_with_rate_and_mode(SampleRate::Rate16kHz, mode),
            pending: Vec::with_capacity(GATE_FRAME),
            prefix: vec![0],
        }
    }

    /// Judges the next samples of the stream.
    pub fn push(&mut self, samples: &[f32]) {
        for &s in samples {
            self.pending
                .push((s.clamp(-1.0, 1.0) * f32::from(i16::MAX)) as i16);
            if self.pending.len() == GATE_FRAME {
                // An error means the detector failed on a valid frame; calling it voiced keeps
                // the later stages' say rather than silencing the frame.
                let voiced = self.vad.is_voice_segment(&self.pending).unwrap_or(true);
                let last = self.prefix.last().copied().unwrap_or(0);
                self.prefix.push(last + u32::from(voiced));
                self.pending.clear();
            }
        }
    }

    /// 10 ms frames judged so far.
    pub fn judged(&self) -> usize {
        self.prefix.len() - 1
    }

    /// Whether any 10 ms frame overlapping samples `[start, end)` was voiced. Samples past the
    /// last judged frame count as voiced, so the stream's end is never lost.
    pub fn between(&self, start: usize, end: usize) -> bool {
        let judged = self.judged();
        let first = start / GATE_FRAME;
        let last = end.div_ceil(GATE_FRAME);
        if last > judged && end > judged * GATE_FRAME {
            return true;
        }
        let last = last.min(judged);
        first < last && self.prefix[last] > self.prefix[first]
    }

    /// The share of judged 10 ms frames overlapping `[start, end)` that were voiced (0 when none
    /// was judged).
    pub fn fraction(&self, start: usize, end: usize) -> f32 {
        let first = start / GATE_FRAME;
        let last = end.div_ceil(GATE_FRAME).min(self.judged());
        if first >= last {
            return 0.0;
        }
        (self.prefix[last] - self.prefix[first]) as f32 / (last - first) as f32
    }
}

/// Turns probabilities into final decisions, frame by frame, committing a frame once no later
/// probability can change it. Decisions are appended to the vector given to [`push`].
///
/// [`push`]: SpeechTracker::push
#[derive(Debug, Clone)]
pub struct SpeechTracker {
    rule: SpeechDecision,
    /// Frames whose probability was pushed.
    seen: usize,
    /// Hysteresis: the open interval's first frame and the current pause's first frame.
    open: Option<usize>,
    pause: Option<usize>,
    /// Frames the hysteresis has committed (before gap filling).
    raw_committed: usize,
    /// Gap filling: the last speech frame committed by the hysteresis, and whether the
    /// non-speech frames after it are still waiting to learn whether speech resumes in time.
    last_speech: Option<usize>,
    /// Gaps of up to this many frames between speech frames are speech.
    max_gap: usize,
}

impl SpeechTracker {
    pub fn new(rule: SpeechDecision, max_gap: usize) -> SpeechTracker {
        SpeechTracker {
            rule,
            seen: 0,
            open: None,
            pause: None,
            raw_committed: 0,
            last_speech: None,
            max_gap,
        }
    }

    /// The probability of the next frame; newly final decisions are appended to `out`.
    pub fn push(&mut self, probability: f32, out: &mut Vec<bool>) {
        let index = self.seen;
        self.seen += 1;
        let mut raw: Vec<(usize, usize, bool)> = Vec::new();
        match &self.rule {
            SpeechDecision::Threshold(t) => raw.push((index, index + 1, probability >= *t)),
            SpeechDecision::Hysteresis(s) => {
                let min_speech = ms_to_samples(s.min_speech_ms);
                let min_silence = ms_to_samples(s.min_silence_ms);
                if probability >= s.threshold {
                    self.pause = None;
                    self.open.get_or_insert(index);
                } else if let Some(open) = self.open {
                    if probability < s.negative_threshold {
                        let began = *self.pause.get_or_insert(index);
                        if (index + 1 - began) * FRAME >= min_silence {
                            let long_enough = (began - open) * FRAME >= min_speech;
                            raw.push((self.raw_committed, began, long_enough));
                            raw.push((began, index + 1, false));
                            self.open = None;
                            self.pause = None;
                        }
                    }
                } else {
                    raw.push((index, index + 1, false));
                }
                // An open interval already long enough is speech up to its pause, however it ends.
                if let Some(open) = self.open {
                    let until = self.pause.unwrap_or(index + 1);
                    if (until - open) * FRAME >= min_speech {
                        raw.push((self.raw_committed.max(open), until, true));
                    }
                }
            }
        }
        for (from, to, speech) in raw {
            self.commit_raw(from, to, speech, out);
        }
    }

    /// The stream ended: every frame is decided.
    pub fn finish(&mut self, out: &mut Vec<bool>) {
        if let SpeechDecision::Hysteresis(s) = &self.rule {
            if let Some(open) = self.open.take() {
                let end = self.pause.take().unwrap_or(self.seen);
                let long_enough = (end - open) * FRAME >= ms_to_samples(s.min_speech_ms);
                self.commit_raw(self.raw_committed, end, long_enough, out);
            }
        }
        let seen = self.seen;
        self.commit_raw(self.raw_committed, seen, false, out);
        // Trailing non-speech is final: no speech follows to fill it.
        let committed = out.len();
        out.resize(self.raw_committed.max(committed), false);
    }

    /// Frames `[from, to)` decided by the hysteresis; gap filling then commits what it can.
    fn commit_raw(&mut self, from: usize, to: usize, speech: bool, out: &mut Vec<bool>) {
        let from = from.max(self.raw_committed);
        if from >= to {
            return;
        }
        // Frames not yet committed to `out` are the non-speech run after the last speech frame.
        for frame in from..to {
            if speech {
                if let Some(last) = self.last_speech {
                    let gap = frame - last - 1;
                    if gap > 0 && gap <= self.max_gap {
                        out.resize(frame, true);
                    }
                }
                out.resize(frame, false);
                out.push(true);
                self.last_speech = Some(frame);
            } else {
                let gap = self.last_speech.map_or(usize::MAX, |last| frame - last);
                // Too far from the last speech for any later speech to fill it: final.
                if gap > self.max_gap {
                    out.resize(frame + 1, false);
                }
            }
        }
        self.raw_committed = to;
    }
}

fn ms_to_samples(ms: u32) -> usize {
    ms as usize * 16_000 / 1000
}

#[cfg(test)]
mod tests {
    use super::super::silero::speech_intervals;
    use super::super::test_signals::XorShift;
    use super::*;

    /// The batch rules: intervals, then gaps of up to `max_gap` frames filled.
    fn batch(probs: &[f32], rule: &SpeechDecision, max_gap: usize) -> Vec<bool> {
        let mut flags = match rule {
            SpeechDecision::Threshold(t) => probs.iter().map(|p| p >= t).collect::<Vec<_>>(),
            SpeechDecision::Hysteresis(s) => {
                let mut flags = vec![false; probs.len()];
                for (start, end) in speech_intervals(probs, s) {
                    flags[start / FRAME..end / FRAME].fill(true);
                }
                flags
            }
        };
        let mut last: Option<usize> = None;
        for i in 0..flags.len() {
            if flags[i] {
                if let Some(l) = last {
                    if i - l > 1 && i - l - 1 <= max_gap {
                        flags[l + 1..i].fill(true);
                    }
                }
                last = Some(i);
            }
        }
        flags
    }

    fn streamed(probs: &[f32], rule: &SpeechDecision, max_gap: usize) -> Vec<bool> {
        let mut tracker = SpeechTracker::new(rule.clone(), max_gap);
        let mut out = Vec::new();
        for (i, &p) in probs.iter().enumerate() {
            tracker.push(p, &mut out);
            assert!(out.len() <= i + 1, "committed a frame not yet seen");
        }
        tracker.finish(&mut out);
        out
    }

    #[test]
    fn the_stream_decides_exactly_like_the_batch_rules() {
        let hysteresis = SpeechDecision::Hysteresis(SpeechSettings {
            threshold: 0.6,
            negative_threshold: 0.5,
            min_speech_ms: 250,
            min_silence_ms: 200,
            pad_ms: 0,
        });
        let threshold = SpeechDecision::Threshold(0.5);
        let mut rng = XorShift::new(7);
        for case in 0..400 {
            // Runs of similar probabilities, like a detector's output.
            let len = 20 + case % 180;
            let mut probs = Vec::with_capacity(len);
            while probs.len() < len {
                let level = rng.uniform() as f32;
                let run = 1 + (rng.uniform() * 14.0) as usize;
                for _ in 0..run {
                    probs.push((level + 0.1 * rng.gauss()).clamp(0.0, 1.0));
                }
            }
            probs.truncate(len);
            for rule in [&hysteresis, &threshold] {
                for max_gap in [0, 3] {
                    assert_eq!(
                        streamed(&probs, rule, max_gap),
                        batch(&probs, rule, max_gap),
                        "case {case}, {rule:?}, gap {max_gap}: {probs:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_long_turn_is_committed_while_it_goes_on() {
        let rule = SpeechDecision::Hysteresis(SpeechSettings::default());
        let mut tracker = SpeechTracker::new(rule, 3);
        let mut out = Vec::new();
        for _ in 0..10 {
            tracker.push(0.0, &mut out);
        }
        for _ in 0..100 {
            tracker.push(0.95, &mut out);
        }
        // 3 s into the turn, all but the last few frames are already speech.
        assert!(out.len() >= 105, "{}", out.len());
        assert!(out[10..out.len()].iter().all(|&s| s));
    }

    #[test]
    fn the_gate_answers_ranges_and_keeps_the_end_open() {
        let mut gate = VoicedGate::new(0);
        gate.push(&vec![0.0; 3 * GATE_FRAME]);
        assert_eq!(gate.judged(), 3);
        assert!(!gate.between(0, 3 * GATE_FRAME));
        assert!(gate.between(3 * GATE_FRAME, 3 * GATE_FRAME + 5));
        assert_eq!(gate.fraction(0, 3 * GATE_FRAME), 0.0);
    }
}
