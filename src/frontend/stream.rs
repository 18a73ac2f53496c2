//! The room front end as a stream: the array's (and the badge's) audio goes in block by block
//! while the visit goes on, and the recogniser's signal comes out a second or two behind, so
//! speech recognition can run during the visit and only the tail is left when it ends.
//!
//! The heavy per-frame work runs once, as audio arrives: speech probability, band powers,
//! direction of arrival, both beamformers. Its results are kept per 32 ms frame for the whole
//! visit (a few hundred bytes a frame). The decisions that need the whole visit — the badge/array
//! threshold that marks the clinician, direction clusters, who is the patient — are cheap over
//! those records ([`super::room`]'s `decide`). During the visit they are taken over what has been
//! heard so far, about once a second, to steer the beamformers and to choose the badge or the
//! beam for each frame; frames within a fraction of a second of the newest audio wait for the
//! next round. When the visit ends they are taken once more over everything, with the voice
//! embeddings, and those final turns name each transcript segment's speaker.
//!
//! Audio is held only as long as a stage needs it (about a second of the array), except the
//! channel mean (the voice embeddings read it at the end) and the recogniser's signal (kept for
//! playback). No I/O, no logging.

use super::align::Offset;
use super::doa::DirectionFinder;
use super::room::{
    badge_offset, decide, voice_directions, BandPowers, BeamChoice, BeamStage, Decisions,
    RoomAnalysis, RoomSettings, Voice, VoiceEmbedder, ALIGN_WINDOW, BANDS, BEAM_HOP,
    OVERLAP_RADIUS, VOTE_RADIUS,
};
use super::speech::{SpeechDetector, SpeechTracker, VoicedGate, FRAME};
use super::FrontendError;

/// Provisional decisions are taken again after this many new frames (about 1 s).
const REFRESH_FRAMES: usize = 32;
/// Frames at the newest edge whose provisional voice may still change with what comes next.
const LOOKAHEAD_FRAMES: usize = VOTE_RADIUS + OVERLAP_RADIUS + 2;
/// A badge this far behind the array (samples) has stopped delivering (unplugged, out of
/// range); the array goes on and the badge's missing audio is silence.
const BADGE_STALL: usize = 3 * 16_000;
/// Stale samples a buffer may hold before it is trimmed.
const TRIM_SLACK: usize = 16_000;
/// Crossfade at each seam between the badge and the beam (10 ms).
const FADE: usize = 160;
/// Directions wait for this many noise frames (every other non-speech frame: about 10 s of
/// pauses) so the fan is known well before any talker's direction is taken against it. On the
/// simulated rooms 48 frames cost 1–6 points of DER on some scenes; 150 matches an estimate
/// from the whole recording…
const NOISE_WARMUP_FRAMES: usize = 150;
/// …but for no more than this many frames (10 s), which bounds how far the start of a visit
/// waits and how much audio is held meanwhile (with 150 and 30 s the scores barely differ).
const NOISE_WARMUP_CAP: usize = 940;
/// Non-speech gaps of up to this many frames inside speech are pauses within a turn.
const MAX_SPEECH_GAP: usize = 3;

/// A stretch of a signal: sample `t` of the stream is `data[t - base]`.
#[derive(Debug, Default)]
struct Tail {
    base: usize,
    data: Vec<f32>,
}

impl Tail {
    fn end(&self) -> usize {
        self.base + self.data.len()
    }

    /// Sample `t`, or 0 where the stretch does not reach.
    fn at(&self, t: usize) -> f32 {
        t.checked_sub(self.base)
            .and_then(|i| self.data.get(i))
            .copied()
            .unwrap_or(0.0)
    }

    /// Forgets samples before `t` once enough of them have piled up.
    fn trim_before(&mut self, t: usize) {
        let stale = t.saturating_sub(self.base).min(self.data.len());
        if stale > TRIM_SLACK {
            self.data.drain(..stale);
            self.base += stale;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum BadgeState {
    /// No badge in this room.
    Absent,
    /// Collecting the first seconds to align.
    Pending,
    Aligned(Offset),
    /// Too short to align: the array decides alone.
    Dropped,
}

/// One visit's room audio through the front end, as it arrives.
pub struct RoomStream<'m> {
    settings: RoomSettings,
    channels: usize,
    detector: &'m mut dyn SpeechDetector,
    embedder: Option<&'m mut dyn VoiceEmbedder>,
    keep_signals: bool,
    finished: bool,

    array: Vec<Tail>,
    pushed: usize,
    /// Mic 0's first seconds, which the badge is aligned against.
    align_reference: Vec<f32>,
    badge_state: BadgeState,
    /// The badge as it was recorded (its own time base).
    badge: Tail,

    /// The channel mean of the whole visit: the speech detector and the voice embeddings read it.
    mean: Vec<f32>,
    gate: VoicedGate,
    tracker: SpeechTracker,
    probabilities: usize,
    tracker_finished: bool,
    speech: Vec<bool>,

    bands: BandPowers,
    array_power: Vec<[f32; BANDS]>,
    badge_power: Vec<[f32; BANDS]>,
    doa: DirectionFinder,
    /// Frames whose noise contribution has been considered (ahead of the directions while the
    /// noise estimate warms up).
    noise_cursor: usize,
    directions: Vec<Option<Vec<f32>>>,

    /// Frames the provisional decisions cover, and those of them settled enough to act on.
    provisional_frames: usize,
    settled: usize,
    voices: Vec<Option<Voice>>,
    clinician_turn: Vec<bool>,
    voice_dirs: Vec<(Voice, Vec<f32>)>,

    beam: BeamStage,
    /// The chosen beamformer's output, and both in full when the signals are kept.
    chosen: Tail,
    delay_and_sum: Vec<f32>,
    mvdr: Vec<f32>,
    /// Level matching of badge to beam: energies and sample counts so far.
    beam_other: (f64, usize),
    beam_clinician: f64,
    badge_clinician: (f64, usize),
    asr: Vec<f32>,
}

impl<'m> RoomStream<'m> {
    /// A stream for an array with `geometry` (one position per mic, metres), with or without a
    /// badge. `keep_signals` keeps both beamformers' outputs and the aligned badge for the
    /// analysis (evaluation listens to them); the daemon needs only the recogniser's signal.
    pub fn new(
        geometry: &[[f32; 3]],
        expect_badge: bool,
        detector: &'m mut dyn SpeechDetector,
        embedder: Option<&'m mut dyn VoiceEmbedder>,
        settings: RoomSettings,
        keep_signals: bool,
    ) -> Result<RoomStream<'m>, FrontendError> {
        let channels = geometry.len();
        if channels == 0 {
            return Err(FrontendError::Parameter("the array has no channels"));
        }
        detector.reset();
        let gate = VoicedGate::new(detector.gate_aggressiveness());
        let tracker = SpeechTracker::new(detector.decision(), MAX_SPEECH_GAP);
        let doa = DirectionFinder::new(geometry, settings.doa_window, settings.doa_min_peak)?;
        let beam = BeamStage::new(channels, settings.mvdr_loading)?;
        Ok(RoomStream {
            channels,
            detector,
            embedder,
            keep_signals,
            finished: false,
            array: (0..channels).map(|_| Tail::default()).collect(),
            pushed: 0,
            align_reference: Vec::new(),
            badge_state: if expect_badge {
                BadgeState::Pending
            } else {
                BadgeState::Absent
            },
            badge: Tail::default(),
            mean: Vec::new(),
            gate,
            tracker,
            probabilities: 0,
            tracker_finished: false,
            speech: Vec::new(),
            bands: BandPowers::new(),
            array_power: Vec::new(),
            badge_power: Vec::new(),
            doa,
            noise_cursor: 0,
            directions: Vec::new(),
            provisional_frames: 0,
            settled: 0,
            voices: Vec::new(),
            clinician_turn: Vec::new(),
            voice_dirs: Vec::new(),
            beam,
            chosen: Tail::default(),
            delay_and_sum: Vec::new(),
            mvdr: Vec::new(),
            beam_other: (0.0, 0),
            beam_clinician: 0.0,
            badge_clinician: (0.0, 0),
            asr: Vec::new(),
            settings,
        })
    }

    /// The next samples of every mic (one slice per channel, equal lengths), then as much
    /// processing as they allow.
    pub fn push_array(&mut self, blocks: &[&[f32]]) -> Result<(), FrontendError> {
        if blocks.len() != self.channels {
            return Err(FrontendError::Channels {
                expected: self.channels,
                got: blocks.len(),
            });
        }
        let len = blocks.first().map_or(0, |b| b.len());
        if let Some(bad) = blocks.iter().find(|b| b.len() != len) {
            return Err(FrontendError::Length {
                expected: len,
                got: bad.len(),
            });
        }
        if self.finished {
            return Err(FrontendError::Parameter("the stream has already finished"));
        }
        for (tail, block) in self.array.iter_mut().zip(blocks) {
            tail.data.extend_from_slice(block);
        }
        let first = self.mean.len();
        let scale = 1.0 / self.channels as f32;
        self.mean
            .extend((0..len).map(|i| blocks.iter().map(|b| b[i]).sum::<f32>() * scale));
        self.gate.push(&self.mean[first..]);
        if self.align_reference.len() < ALIGN_WINDOW {
            let take = (ALIGN_WINDOW - self.align_reference.len()).min(len);
            self.align_reference.extend_from_slice(&blocks[0][..take]);
        }
        self.pushed += len;
        self.advance()
    }

    /// The next samples of the badge, on its own time base (it is aligned to the array from the
    /// first seconds both have heard).
    pub fn push_badge(&mut self, samples: &[f32]) -> Result<(), FrontendError> {
        if self.finished {
            return Err(FrontendError::Parameter("the stream has already finished"));
        }
        if self.badge_state != BadgeState::Absent {
            self.badge.data.extend_from_slice(samples);
        }
        self.advance()
    }

    /// Array samples heard so far.
    pub fn heard(&self) -> usize {
        self.pushed
    }

    /// The detector's final speech decisions so far, one per [`FRAME`] (before the edges are
    /// refined at the end: the recogniser's chunks follow these).
    pub fn speech(&self) -> &[bool] {
        &self.speech
    }

    /// The recogniser's signal so far: final, it will not change.
    pub fn asr_signal(&self) -> &[f32] {
        &self.asr
    }

    /// The visit ended: processes what is left and takes the final decisions over all of it.
    pub fn finish(mut self) -> Result<RoomAnalysis, FrontendError> {
        self.finished = true;
        self.advance()?;
        let frames = self.speech.len();
        if self.array_power.len() != frames || self.asr.len() != self.pushed {
            return Err(FrontendError::Parameter(
                "the room stream stopped before processing all of its audio",
            ));
        }
        let offset = self.badge_offset();
        let badge_power = offset.map(|_| self.badge_power.as_slice());
        let voice = match self.embedder.take() {
            Some(embedder) => Some((self.mean.as_slice(), embedder)),
            None => None,
        };
        let decisions = decide(
            &self.speech,
            &self.array_power,
            badge_power,
            &self.directions,
            voice,
            &self.settings,
            self.pushed,
        )?;
        let badge = match (offset, self.keep_signals) {
            (Some(offset), true) => Some(
                (0..self.pushed)
                    .map(|t| self.badge_at(t, offset))
                    .collect::<Vec<f32>>(),
            ),
            _ => None,
        };
        Ok(RoomAnalysis {
            badge_offset: offset,
            badge,
            speech: decisions.speech,
            detected: self.speech,
            overlap_frames: decisions.overlap.iter().filter(|&&o| o).count(),
            turns: decisions.turns,
            delay_and_sum: self.delay_and_sum,
            mvdr: self.mvdr,
            asr_signal: self.asr,
            detector: self.detector.name(),
            direction_clusters: decisions.direction_clusters,
            voices: decisions.voice_count,
        })
    }

    fn badge_offset(&self) -> Option<Offset> {
        match self.badge_state {
            BadgeState::Aligned(offset) => Some(offset),
            _ => None,
        }
    }

    /// The badge at array time `t`.
    fn badge_at(&self, t: usize, offset: Offset) -> f32 {
        let at = t as i64 + offset.samples;
        if at < 0 {
            0.0
        } else {
            self.badge.at(at as usize)
        }
    }

    /// Runs every stage as far as the audio so far allows.
    fn advance(&mut self) -> Result<(), FrontendError> {
        loop {
            let mut progress = self.align();
            progress |= self.detect()?;
            progress |= self.analyse()?;
            progress |= self.refresh()?;
            progress |= self.beamform()?;
            progress |= self.splice();
            if !progress {
                break;
            }
        }
        self.trim();
        Ok(())
    }

    /// Aligns the badge once both have been heard long enough (or the visit ended, or the
    /// badge stalled).
    fn align(&mut self) -> bool {
        if self.badge_state != BadgeState::Pending {
            return false;
        }
        let badge_heard = self.badge.end();
        let enough = self.pushed >= ALIGN_WINDOW && badge_heard >= ALIGN_WINDOW;
        let stalled = self.pushed >= ALIGN_WINDOW + BADGE_STALL;
        if !(enough || stalled || self.finished) {
            return false;
        }
        // A badge recording too short to align (a dropout, a badge switched on late) leaves
        // the array to decide alone rather than failing the visit.
        self.badge_state = match badge_offset(&self.align_reference, &self.badge.data) {
            Ok(offset) => BadgeState::Aligned(offset),
            Err(_) => BadgeState::Dropped,
        };
        true
    }

    /// Speech probabilities and final decisions for the frames heard.
    fn detect(&mut self) -> Result<bool, FrontendError> {
        let start = self.probabilities;
        while (self.probabilities + 1) * FRAME <= self.pushed
            || (self.finished && self.probabilities * FRAME < self.pushed)
        {
            let p = self
                .detector
                .frame_probability(&self.mean, self.probabilities, &self.gate)?;
            self.tracker.push(p, &mut self.speech);
            self.probabilities += 1;
        }
        let mut progress = self.probabilities > start;
        if self.finished && !self.tracker_finished && self.probabilities * FRAME >= self.pushed {
            self.tracker.finish(&mut self.speech);
            self.tracker_finished = true;
            progress = true;
        }
        Ok(progress)
    }

    /// Whether the badge has what frame `frame` needs (or never will).
    fn badge_ready(&self, frame: usize) -> bool {
        match self.badge_state {
            BadgeState::Absent | BadgeState::Dropped => true,
            BadgeState::Pending => false,
            BadgeState::Aligned(offset) => {
                let needed = ((frame + 1) * FRAME) as i64 + offset.samples;
                let covered = self.badge.end() as i64 - offset.samples;
                self.finished
                    || needed <= self.badge.end() as i64
                    || self.pushed as i64 > covered + BADGE_STALL as i64
            }
        }
    }

    /// Band powers and direction of each decided frame.
    fn analyse(&mut self) -> Result<bool, FrontendError> {
        let start = self.array_power.len();
        let window = self.doa.window();
        // Never past the next refresh: the provisional decisions are then taken at the same
        // frames however the audio was cut into blocks, and so is everything after them.
        let limit = self
            .speech
            .len()
            .min(self.provisional_frames + REFRESH_FRAMES);
        loop {
            let f = self.array_power.len();
            if f >= limit {
                break;
            }
            let centre = f * FRAME + FRAME / 2;
            let needed = centre + window / 2;
            if (!self.finished && needed > self.pushed) || !self.badge_ready(f) {
                break;
            }
            // While the noise estimate warms up, it reads ahead; the frames wait for it.
            while self.doa.noise_frames() < NOISE_WARMUP_FRAMES
                && self.noise_cursor < self.speech.len()
                && self.noise_cursor < f + NOISE_WARMUP_CAP
                && (self.finished || self.window_end(self.noise_cursor) <= self.pushed)
            {
                self.add_noise(self.noise_cursor)?;
                self.noise_cursor += 1;
            }
            let warmed = self.doa.noise_frames() >= NOISE_WARMUP_FRAMES
                || self.noise_cursor >= f + NOISE_WARMUP_CAP
                || (self.tracker_finished && self.noise_cursor == self.speech.len());
            if !warmed {
                break;
            }
            let mut power = [0.0f32; BANDS];
            {
                let frame = heard_sample(&self.array, self.pushed, f * FRAME);
                for ch in 0..self.channels {
                    self.bands.add(&|i| frame(ch, i), &mut power)?;
                }
            }
            for v in &mut power {
                *v /= self.channels as f32;
            }
            self.array_power.push(power);
            let mut badge_power = [0.0f32; BANDS];
            if let Some(offset) = self.badge_offset() {
                let badge = &self.badge;
                let sample = |i: usize| {
                    let at = (f * FRAME + i) as i64 + offset.samples;
                    if at < 0 {
                        0.0
                    } else {
                        badge.at(at as usize)
                    }
                };
                self.bands.add(&sample, &mut badge_power)?;
            }
            self.badge_power.push(badge_power);

            if f >= self.noise_cursor {
                self.add_noise(f)?;
                self.noise_cursor = f + 1;
            }
            let direction = if self.speech[f] {
                let first = centre.saturating_sub(window / 2);
                let sample = heard_sample(&self.array, self.pushed, first);
                self.doa.direction(&sample)?
            } else {
                None
            };
            self.directions.push(direction);
        }
        Ok(self.array_power.len() > start)
    }

    /// The end (exclusive, samples) of frame `f`'s direction window.
    fn window_end(&self, f: usize) -> usize {
        f * FRAME + FRAME / 2 + self.doa.window() / 2
    }

    /// Adds frame `f` to the noise estimate when it is a non-speech frame (every other one).
    fn add_noise(&mut self, f: usize) -> Result<(), FrontendError> {
        if self.speech[f] || f % 2 == 1 {
            return Ok(());
        }
        let first = (f * FRAME + FRAME / 2).saturating_sub(self.doa.window() / 2);
        let sample = heard_sample(&self.array, self.pushed, first);
        self.doa.add_noise(&sample)
    }

    /// Whether every frame of a finished stream has been analysed.
    fn all_analysed(&self) -> bool {
        self.finished && self.tracker_finished && self.array_power.len() == self.speech.len()
    }

    /// Provisional who-spoke-when over everything analysed, about once a second.
    fn refresh(&mut self) -> Result<bool, FrontendError> {
        let analysed = self.array_power.len();
        let due = analysed == self.provisional_frames + REFRESH_FRAMES
            || (self.all_analysed() && analysed > self.provisional_frames);
        if !due || analysed == 0 {
            return Ok(false);
        }
        let badge_power = self.badge_offset().map(|_| &self.badge_power[..analysed]);
        let Decisions {
            voices,
            splice_turns,
            ..
        } = decide(
            &self.speech[..analysed],
            &self.array_power[..analysed],
            badge_power,
            &self.directions[..analysed],
            None,
            &self.settings,
            (analysed * FRAME).min(self.pushed),
        )?;
        self.voice_dirs = voice_directions(&voices, &self.directions[..analysed]);
        self.clinician_turn = vec![false; analysed];
        for turn in splice_turns.iter().filter(|t| t.voice == Voice::Clinician) {
            let last = turn.end.div_ceil(FRAME).min(analysed);
            self.clinician_turn[turn.start / FRAME..last].fill(true);
        }
        self.voices = voices;
        self.provisional_frames = analysed;
        self.settled = if self.all_analysed() {
            analysed
        } else {
            analysed.saturating_sub(LOOKAHEAD_FRAMES)
        };
        Ok(true)
    }

    /// Both beamformers over the hops whose talker is settled.
    fn beamform(&mut self) -> Result<bool, FrontendError> {
        let start = self.beam.hops;
        let latency = self.beam.latency();
        let all_settled = self.all_analysed() && self.settled == self.speech.len();
        loop {
            let hop = self.beam.hops;
            let first = hop * BEAM_HOP;
            let frame = (first + BEAM_HOP / 2) / FRAME;
            let ready = if all_settled {
                // Past the end the input is silence, flushed until the output covers it all.
                first < self.pushed + latency
            } else {
                frame < self.settled && first + BEAM_HOP <= self.pushed
            };
            if !ready {
                break;
            }
            let target = self
                .voices
                .get(frame)
                .copied()
                .flatten()
                .and_then(|v| self.voice_dirs.iter().find(|(x, _)| *x == v))
                .map(|(_, d)| d.as_slice());
            let speech = self.speech.get(frame).copied().unwrap_or(false);
            let sample = heard_sample(&self.array, self.pushed, first);
            self.beam.process(&sample, target, speech)?;
            // The output block holds samples from `first - latency` on.
            let chosen = match self.settings.beam {
                BeamChoice::DelayAndSum => &self.beam.das_out,
                BeamChoice::Mvdr => &self.beam.mvdr_out,
            };
            for (i, &v) in chosen.iter().enumerate() {
                let Some(t) = (first + i).checked_sub(latency) else {
                    continue;
                };
                if t >= self.pushed {
                    break;
                }
                if t == self.chosen.end() {
                    self.chosen.data.push(v);
                    if self.keep_signals {
                        self.delay_and_sum.push(self.beam.das_out[i]);
                        self.mvdr.push(self.beam.mvdr_out[i]);
                    }
                }
            }
        }
        Ok(self.beam.hops > start)
    }

    /// The recogniser's signal, frame by frame: the badge (level-matched, crossfaded) where the
    /// clinician talks, the chosen beamformer elsewhere.
    fn splice(&mut self) -> bool {
        let start = self.asr.len();
        let all_settled = self.all_analysed() && self.settled == self.speech.len();
        let offset = self.badge_offset();
        loop {
            let g = self.asr.len() / FRAME;
            let first = g * FRAME;
            let end = ((g + 1) * FRAME).min(self.pushed);
            if first >= self.pushed || self.asr.len() != first {
                break;
            }
            let ready = if all_settled {
                self.chosen.end() >= end
            } else {
                self.chosen.end() >= end && g + 1 < self.settled
            };
            if !ready {
                break;
            }
            let clinician = |f: usize| self.clinician_turn.get(f).copied().unwrap_or(false);
            let from_badge = offset.filter(|_| clinician(g));
            let gain = self.badge_gain();
            let (mut beam_energy, mut badge_energy) = (0.0f64, 0.0f64);
            for t in first..end {
                let beam = self.chosen.at(t);
                beam_energy += f64::from(beam) * f64::from(beam);
                let value = match from_badge {
                    Some(offset) => {
                        let badge = self.badge_at(t, offset);
                        badge_energy += f64::from(badge) * f64::from(badge);
                        let into_start = if g > 0 && clinician(g - 1) {
                            FADE
                        } else {
                            t - first
                        };
                        let into_end = if clinician(g + 1) && end == first + FRAME {
                            FADE
                        } else {
                            end - 1 - t
                        };
                        let into = into_start.min(into_end);
                        let w = if into < FADE {
                            into as f32 / FADE as f32
                        } else {
                            1.0
                        };
                        w * gain * badge + (1.0 - w) * beam
                    }
                    None => beam,
                };
                self.asr.push(value);
            }
            if self.speech.get(g).copied().unwrap_or(false) {
                if clinician(g) {
                    self.beam_clinician += beam_energy;
                    self.badge_clinician.0 += badge_energy;
                    self.badge_clinician.1 += end - first;
                } else {
                    self.beam_other.0 += beam_energy;
                    self.beam_other.1 += end - first;
                }
            }
        }
        self.asr.len() > start
    }

    /// The badge's gain so both sources speak at one level: the beam's level on the other
    /// voices over the badge's on the clinician (before anyone else has talked, the beam's own
    /// level on the clinician).
    fn badge_gain(&self) -> f32 {
        let (badge, badge_n) = self.badge_clinician;
        if badge <= 0.0 || badge_n == 0 {
            return 1.0;
        }
        let (other, other_n) = self.beam_other;
        let ratio = if other_n > 0 && other > 0.0 {
            (other / other_n as f64) / (badge / badge_n as f64)
        } else if self.beam_clinician > 0.0 {
            self.beam_clinician / badge
        } else {
            1.0
        };
        ratio.sqrt() as f32
    }

    /// Lets go of audio no stage needs any more.
    fn trim(&mut self) {
        if self.keep_signals {
            return;
        }
        let window = self.doa.window();
        let next_direction =
            (self.array_power.len() * FRAME + FRAME / 2).saturating_sub(window / 2);
        let array_needed = next_direction.min(self.beam.hops * BEAM_HOP);
        for tail in &mut self.array {
            tail.trim_before(array_needed);
        }
        self.chosen.trim_before(self.asr.len());
        if let Some(offset) = self.badge_offset() {
            let needed =
                (self.array_power.len() * FRAME).min(self.asr.len()) as i64 + offset.samples;
            self.badge.trim_before(needed.max(0) as usize);
        }
    }
}

/// Sample `first + i` of channel `ch` as heard so far (silence past it).
fn heard_sample(array: &[Tail], pushed: usize, first: usize) -> impl Fn(usize, usize) -> f32 + '_ {
    move |ch, i| {
        let t = first + i;
        if t < pushed {
            array[ch].at(t)
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::room::{analyse_room, RoomSettings};
    use super::super::speech::SpeechDecision;
    use super::super::test_signals::XorShift;
    use super::*;

    /// Speech wherever the signal is loud: enough to drive the stream in a unit test.
    struct Loudness;

    impl SpeechDetector for Loudness {
        fn reset(&mut self) {}
        fn frame_probability(
            &mut self,
            signal: &[f32],
            index: usize,
            _: &VoicedGate,
        ) -> Result<f32, FrontendError> {
            let frame = &signal[index * FRAME..((index + 1) * FRAME).min(signal.len())];
            let power = frame.iter().map(|v| v * v).sum::<f32>() / frame.len().max(1) as f32;
            Ok(if power > 0.01 { 1.0 } else { 0.0 })
        }
        fn decision(&self) -> SpeechDecision {
            SpeechDecision::Threshold(0.5)
        }
        fn name(&self) -> &'static str {
            "loudness"
        }
    }

    /// Two mics 10 cm apart; a talker bursting on and off with a 1-sample delay between mics,
    /// a badge hearing the same talker loud, 0.1 s late.
    fn scene(seconds: usize) -> (Vec<Vec<f32>>, Vec<f32>) {
        let n = seconds * 16_000;
        let mut rng = XorShift::new(3);
        let source: Vec<f32> = (0..n)
            .map(|i| {
                let on = (i / 8_000) % 3 != 2;
                if on {
                    0.5 * rng.gauss()
                } else {
                    0.0
                }
            })
            .collect();
        let noise = |rng: &mut XorShift| 0.01 * rng.gauss();
        let mic0: Vec<f32> = (0..n).map(|i| source[i] + noise(&mut rng)).collect();
        let mic1: Vec<f32> = (0..n)
            .map(|i| source[i.saturating_sub(1)] + noise(&mut rng))
            .collect();
        let badge: Vec<f32> = (0..n)
            .map(|i| 2.0 * source[(i + 1_600).min(n - 1)] + noise(&mut rng))
            .collect();
        (vec![mic0, mic1], badge)
    }

    const GEOMETRY: [[f32; 3]; 2] = [[0.05, 0.0, 0.0], [-0.05, 0.0, 0.0]];

    #[test]
    fn blocks_of_any_size_give_the_same_result_as_one_push() {
        let (array, badge) = scene(12);
        let mut detector = Loudness;
        let whole = analyse_room(
            &array,
            &GEOMETRY,
            Some(&badge),
            &mut detector,
            None,
            &RoomSettings::default(),
        )
        .unwrap();
        for block in [160usize, 1_000, 7_777] {
            let mut detector = Loudness;
            let mut stream = RoomStream::new(
                &GEOMETRY,
                true,
                &mut detector,
                None,
                RoomSettings::default(),
                true,
            )
            .unwrap();
            let mut at = 0;
            while at < array[0].len() {
                let end = (at + block).min(array[0].len());
                let blocks = [&array[0][at..end], &array[1][at..end]];
                stream.push_array(&blocks).unwrap();
                stream.push_badge(&badge[at..end]).unwrap();
                at = end;
            }
            let streamed = stream.finish().unwrap();
            assert_eq!(streamed.speech, whole.speech, "block {block}");
            assert_eq!(streamed.turns, whole.turns, "block {block}");
            assert_eq!(streamed.badge_offset, whole.badge_offset);
            assert_eq!(streamed.asr_signal.len(), array[0].len());
            let max_diff = streamed
                .asr_signal
                .iter()
                .zip(&whole.asr_signal)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert_eq!(max_diff, 0.0, "block {block}");
        }
    }

    #[test]
    fn the_signal_follows_the_audio_closely_during_the_visit() {
        let (array, badge) = scene(60);
        let mut detector = Loudness;
        let mut stream = RoomStream::new(
            &GEOMETRY,
            true,
            &mut detector,
            None,
            RoomSettings::default(),
            false,
        )
        .unwrap();
        let block = 1_600;
        let mut worst_lag = 0usize;
        let mut at = 0;
        while at < array[0].len() {
            let end = (at + block).min(array[0].len());
            stream
                .push_array(&[&array[0][at..end], &array[1][at..end]])
                .unwrap();
            stream.push_badge(&badge[at..end]).unwrap();
            at = end;
            // Past the badge's alignment (8 s) and the noise estimate's warm-up (10 s ahead until
            // it has its 150 frames: 30 s of this scene), the signal trails by a second or two.
            if at > 40 * 16_000 {
                worst_lag = worst_lag.max(stream.heard() - stream.asr_signal().len());
            }
        }
        assert!(
            worst_lag < 3 * 16_000,
            "the signal trailed by {} s",
            worst_lag as f32 / 16_000.0
        );
        // Only a few seconds of each mic are held, not the visit.
        assert!(stream.array[0].data.len() < 5 * 16_000);
        let analysis = stream.finish().unwrap();
        assert_eq!(analysis.asr_signal.len(), array[0].len());
        assert!(
            analysis.delay_and_sum.is_empty(),
            "signals were not asked for"
        );
    }
}
