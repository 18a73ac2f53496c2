//! The consent gate: which frames of a stream belong to an encounter and may be kept.
//!
//! An encounter starts and ends at frames of the stream's timeline (a config, CLI or API
//! event). Audio is kept only from the consent frame on; anything earlier is discarded as it
//! arrives and only counted, so a patient who never consents leaves no audio behind. Pure
//! logic: no threads, no I/O.

use super::buffer::ReadEvent;
use super::{AudioBlock, SAMPLE_RATE};

/// Longest encounter kept: beyond this a recording was almost certainly left running, and
/// memory would run out first (same bound as a WAV file in `crate::audio`).
pub const MAX_KEPT_FRAMES: u64 = crate::audio::MAX_DURATION_S * SAMPLE_RATE as u64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncounterError {
    #[error("encounter {current} is still open; end it before starting {requested}")]
    AlreadyStarted { current: String, requested: String },
    #[error("no encounter has started")]
    NotStarted,
    #[error("the encounter has ended; consent and audio can no longer be added")]
    Ended,
    #[error("consent for this encounter was already recorded at frame {at_frame}")]
    ConsentTwice { at_frame: u64 },
    #[error("the encounter cannot end at frame {end}, before its start at frame {start}")]
    EndBeforeStart { start: u64, end: u64 },
    #[error("a block with {got} channels was pushed to an encounter recording {expected}")]
    ChannelMismatch { expected: u16, got: u16 },
}

/// What happened to the frames pushed so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EncounterCounts {
    /// Frames kept (after consent, before the end), silence for gaps included.
    pub kept_frames: u64,
    /// Frames of the encounter before consent: dropped on arrival, never stored.
    pub discarded_frames: u64,
    /// Frames outside the encounter (before its start, after its end).
    pub ignored_frames: u64,
    /// Kept frames that are silence standing in for dropped audio, and in how many stretches.
    pub gap_frames: u64,
    pub gaps: u64,
    /// Frames past `MAX_KEPT_FRAMES`, not kept.
    pub over_limit_frames: u64,
}

/// An encounter's kept audio.
#[derive(Debug, Clone, PartialEq)]
pub struct EncounterAudio {
    pub encounter_id: String,
    /// Timeline frame of the first kept frame (the consent frame, or later if audio arrived
    /// later); `None` when nothing was kept.
    pub first_frame: Option<u64>,
    /// Kept samples, one vector per channel, all the same length.
    pub channels: Vec<Vec<f32>>,
    pub consent_at: Option<u64>,
    pub end_at: Option<u64>,
    pub counts: EncounterCounts,
}

/// Gathers one encounter's audio from a stream, one block at a time.
#[derive(Debug)]
pub struct EncounterRecorder {
    channels: u16,
    encounter_id: Option<String>,
    start_at: u64,
    consent_at: Option<u64>,
    end_at: Option<u64>,
    kept: Vec<Vec<f32>>,
    first_kept: Option<u64>,
    /// End of the last gap block kept, so that a long gap split in pieces counts once.
    gap_end: Option<u64>,
    /// Kept frames already handed on by [`EncounterRecorder::take_kept`].
    taken: u64,
    counts: EncounterCounts,
}

impl EncounterRecorder {
    pub fn new(channels: u16) -> EncounterRecorder {
        EncounterRecorder {
            channels,
            encounter_id: None,
            start_at: 0,
            consent_at: None,
            end_at: None,
            kept: vec![Vec::new(); usize::from(channels)],
            first_kept: None,
            gap_end: None,
            taken: 0,
            counts: EncounterCounts::default(),
        }
    }

    /// Opens encounter `encounter_id` at timeline frame `at_frame`.
    pub fn start(&mut self, encounter_id: &str, at_frame: u64) -> Result<(), EncounterError> {
        if let Some(current) = &self.encounter_id {
            return Err(EncounterError::AlreadyStarted {
                current: current.clone(),
                requested: encounter_id.to_string(),
            });
        }
        self.encounter_id = Some(encounter_id.to_string());
        self.start_at = at_frame;
        Ok(())
    }

    /// Records consent from timeline frame `at_frame` on (a frame before the start counts as
    /// the start). Frames already discarded stay discarded.
    pub fn consent(&mut self, at_frame: u64) -> Result<(), EncounterError> {
        if self.encounter_id.is_none() {
            return Err(EncounterError::NotStarted);
        }
        if self.end_at.is_some() {
            return Err(EncounterError::Ended);
        }
        if let Some(at_frame) = self.consent_at {
            return Err(EncounterError::ConsentTwice { at_frame });
        }
        self.consent_at = Some(at_frame.max(self.start_at));
        Ok(())
    }

    /// Closes the encounter at timeline frame `at_frame`; later frames are ignored.
    pub fn end(&mut self, at_frame: u64) -> Result<(), EncounterError> {
        if self.encounter_id.is_none() {
            return Err(EncounterError::NotStarted);
        }
        if self.end_at.is_some() {
            return Err(EncounterError::Ended);
        }
        if at_frame < self.start_at {
            return Err(EncounterError::EndBeforeStart {
                start: self.start_at,
                end: at_frame,
            });
        }
        self.end_at = Some(at_frame);
        // The end event can arrive after frames past it were kept: they are not the
        // encounter's.
        // Frames already handed on cannot be called back; they were heard before the event.
        if let Some(first_kept) = self.first_kept {
            let keep = at_frame
                .saturating_sub(first_kept)
                .saturating_sub(self.taken);
            let kept = self.kept.first().map_or(0, |c| c.len() as u64);
            if kept > keep {
                for channel in &mut self.kept {
                    channel.truncate(keep as usize);
                }
                self.counts.kept_frames -= kept - keep;
                self.counts.ignored_frames += kept - keep;
            }
        }
        Ok(())
    }

    /// Takes captured audio.
    pub fn push(&mut self, block: &AudioBlock) -> Result<(), EncounterError> {
        self.take(block, false)
    }

    /// Takes silence that stands in for dropped audio (a reader's `ReadEvent::Gap`): kept like
    /// audio so the timeline holds, and counted.
    pub fn push_gap(&mut self, block: &AudioBlock) -> Result<(), EncounterError> {
        self.take(block, true)
    }

    /// Takes whatever a reader delivered; timeouts and the end carry no frames.
    pub fn push_event(&mut self, event: &ReadEvent) -> Result<(), EncounterError> {
        match event {
            ReadEvent::Audio(block) => self.push(block),
            ReadEvent::Gap(block) => self.push_gap(block),
            ReadEvent::Timeout | ReadEvent::Ended => Ok(()),
        }
    }

    fn take(&mut self, block: &AudioBlock, gap: bool) -> Result<(), EncounterError> {
        if block.channels != self.channels {
            return Err(EncounterError::ChannelMismatch {
                expected: self.channels,
                got: block.channels,
            });
        }
        let first = block.first_frame;
        let end = first + block.frames();
        if self.encounter_id.is_none() {
            self.counts.ignored_frames += end - first;
            return Ok(());
        }
        let start = self.start_at;
        let stop = self.end_at.unwrap_or(u64::MAX).max(start);
        let consent = self.consent_at.unwrap_or(u64::MAX).clamp(start, stop);
        let span = |from: u64, to: u64| {
            let (from, to) = (from.max(first), to.min(end));
            (from < to).then_some((from, to))
        };
        if let Some((from, to)) = span(0, start) {
            self.counts.ignored_frames += to - from;
        }
        if let Some((from, to)) = span(start, consent) {
            self.counts.discarded_frames += to - from;
        }
        if let Some((from, to)) = span(stop, u64::MAX) {
            self.counts.ignored_frames += to - from;
        }
        if let Some((from, to)) = span(consent, stop) {
            self.keep(block, from, to, gap);
        }
        Ok(())
    }

    fn keep(&mut self, block: &AudioBlock, from: u64, to: u64, gap: bool) {
        let first_kept = *self.first_kept.get_or_insert(from);
        let kept_end = first_kept + self.taken + self.kept.first().map_or(0, |c| c.len() as u64);
        // A block the caller skipped would shift everything after it: fill with counted silence.
        if from > kept_end {
            self.counts.gaps += 1;
            self.append_silence(from - kept_end);
            self.counts.gap_frames += from - kept_end;
        }
        // Frames already kept are not kept twice.
        let from = from.max(kept_end);
        if from >= to {
            return;
        }
        let room = MAX_KEPT_FRAMES.saturating_sub(self.counts.kept_frames);
        let to_keep = (to - from).min(room);
        self.counts.over_limit_frames += (to - from) - to_keep;
        let channels = usize::from(self.channels);
        let offset = usize::try_from(from - block.first_frame).unwrap_or(usize::MAX);
        let count = usize::try_from(to_keep).unwrap_or(0);
        let samples = block
            .samples
            .get(offset * channels..(offset + count) * channels)
            .unwrap_or_default();
        for frame in samples.chunks_exact(channels.max(1)) {
            for (channel, &sample) in self.kept.iter_mut().zip(frame) {
                channel.push(sample);
            }
        }
        self.counts.kept_frames += to_keep;
        if gap {
            if self.gap_end != Some(from) {
                self.counts.gaps += 1;
            }
            self.counts.gap_frames += to_keep;
            self.gap_end = Some(from + to_keep);
        }
    }

    fn append_silence(&mut self, frames: u64) {
        let room = MAX_KEPT_FRAMES.saturating_sub(self.counts.kept_frames);
        let frames = frames.min(room);
        for channel in &mut self.kept {
            channel.resize(channel.len() + frames as usize, 0.0);
        }
        self.counts.kept_frames += frames;
    }

    pub fn encounter_id(&self) -> Option<&str> {
        self.encounter_id.as_deref()
    }

    pub fn has_consent(&self) -> bool {
        self.consent_at.is_some()
    }

    pub fn has_ended(&self) -> bool {
        self.end_at.is_some()
    }

    pub fn counts(&self) -> EncounterCounts {
        self.counts
    }

    /// The kept samples so far, one vector per channel.
    pub fn kept(&self) -> &[Vec<f32>] {
        &self.kept
    }

    /// Timeline frame of the first kept frame.
    pub fn first_kept_frame(&self) -> Option<u64> {
        self.first_kept
    }

    /// Hands on the frames kept since the last call (one vector per channel), for a consumer
    /// that processes the encounter as it goes rather than at its end.
    pub fn take_kept(&mut self) -> Vec<Vec<f32>> {
        let frames = self.kept.first().map_or(0, |c| c.len() as u64);
        self.taken += frames;
        self.kept.iter_mut().map(std::mem::take).collect()
    }

    /// Hands over the kept audio; `None` if no encounter was started.
    pub fn finish(self) -> Option<EncounterAudio> {
        Some(EncounterAudio {
            encounter_id: self.encounter_id?,
            first_frame: self.first_kept,
            channels: self.kept,
            consent_at: self.consent_at,
            end_at: self.end_at,
            counts: self.counts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two channels; sample value = frame index (channel 0) and its negative (channel 1).
    fn block(first_frame: u64, frames: u64) -> AudioBlock {
        AudioBlock {
            first_frame,
            channels: 2,
            samples: (first_frame..first_frame + frames)
                .flat_map(|f| [f as f32, -(f as f32)])
                .collect(),
        }
    }

    #[test]
    fn only_frames_between_consent_and_end_are_kept() {
        let mut recorder = EncounterRecorder::new(2);
        recorder.push(&block(0, 100)).unwrap();
        recorder.start("enc-1", 100).unwrap();
        for first in (100..1000).step_by(100) {
            if first == 400 {
                recorder.consent(350).unwrap();
            }
            if first == 800 {
                recorder.end(750).unwrap();
            }
            recorder.push(&block(first, 100)).unwrap();
        }
        let counts = recorder.counts();
        // Consent arrived at frame 400 for frame 350: 350..400 was already discarded.
        assert_eq!(counts.discarded_frames, 300);
        assert_eq!(counts.kept_frames, 350);
        // 50 frames kept before the late end event are given back.
        assert_eq!(counts.ignored_frames, 100 + 50 + 200);
        let audio = recorder.finish().unwrap();
        assert_eq!(audio.first_frame, Some(400));
        let expected: Vec<f32> = (400..750).map(|f| f as f32).collect();
        assert_eq!(audio.channels[0], expected);
        let negated: Vec<f32> = expected.iter().map(|v| -v).collect();
        assert_eq!(audio.channels[1], negated);
    }

    #[test]
    fn frames_taken_as_they_come_are_the_same_frames_and_are_not_kept_twice() {
        let mut recorder = EncounterRecorder::new(2);
        recorder.start("enc-1", 0).unwrap();
        recorder.consent(50).unwrap();
        let mut taken: Vec<f32> = Vec::new();
        for first in (0..600).step_by(100) {
            if first == 500 {
                // A late end event: frames already taken stay taken, the rest are given back.
                recorder.end(450).unwrap();
            }
            recorder.push(&block(first, 100)).unwrap();
            // A skipped block is filled with counted silence on the right frames.
            if first == 200 {
                recorder.push(&block(400, 100)).unwrap();
            }
            taken.extend(recorder.take_kept()[0].iter().copied());
            assert!(recorder.kept()[0].is_empty());
        }
        let mut expected: Vec<f32> = (50..300).map(|f| f as f32).collect();
        expected.extend(std::iter::repeat_n(0.0, 100));
        // 450..500 had been taken before the end event arrived; nothing after it is.
        expected.extend((400..500).map(|f| f as f32));
        assert_eq!(taken, expected);
        assert_eq!(recorder.counts().gap_frames, 100);
    }

    #[test]
    fn consent_recorded_before_audio_keeps_from_the_consent_frame() {
        let mut recorder = EncounterRecorder::new(2);
        recorder.start("enc-1", 0).unwrap();
        recorder.consent(150).unwrap();
        recorder.push(&block(0, 200)).unwrap();
        recorder.push(&block(200, 200)).unwrap();
        assert_eq!(recorder.counts().discarded_frames, 150);
        assert_eq!(recorder.kept()[0].first(), Some(&150.0));
        assert_eq!(recorder.kept()[0].len(), 250);
    }

    #[test]
    fn without_consent_nothing_is_kept() {
        let mut recorder = EncounterRecorder::new(2);
        recorder.start("enc-1", 0).unwrap();
        recorder.push(&block(0, 500)).unwrap();
        recorder.end(500).unwrap();
        assert_eq!(recorder.consent(600), Err(EncounterError::Ended));
        recorder.push(&block(500, 100)).unwrap();
        let audio = recorder.finish().unwrap();
        assert!(audio.channels.iter().all(Vec::is_empty));
        assert_eq!(audio.counts.discarded_frames, 500);
        assert_eq!(audio.counts.ignored_frames, 100);
        assert_eq!(audio.first_frame, None);
    }

    #[test]
    fn gaps_are_kept_as_counted_silence_and_misuse_is_refused() {
        let mut recorder = EncounterRecorder::new(2);
        assert_eq!(recorder.consent(0), Err(EncounterError::NotStarted));
        recorder.start("enc-1", 0).unwrap();
        assert!(matches!(
            recorder.start("enc-2", 0),
            Err(EncounterError::AlreadyStarted { .. })
        ));
        recorder.consent(0).unwrap();
        assert_eq!(
            recorder.consent(5),
            Err(EncounterError::ConsentTwice { at_frame: 0 })
        );
        recorder.push(&block(0, 100)).unwrap();
        let silence = AudioBlock {
            first_frame: 100,
            channels: 2,
            samples: vec![0.0; 200],
        };
        recorder.push_gap(&silence).unwrap();
        let silence = AudioBlock {
            first_frame: 200,
            channels: 2,
            samples: vec![0.0; 200],
        };
        recorder.push_gap(&silence).unwrap();
        // A skipped block (300..400) is filled, not closed up.
        recorder.push(&block(400, 100)).unwrap();
        assert!(matches!(
            recorder.push(&AudioBlock {
                first_frame: 500,
                channels: 1,
                samples: vec![0.0; 10]
            }),
            Err(EncounterError::ChannelMismatch {
                expected: 2,
                got: 1
            })
        ));
        let counts = recorder.counts();
        assert_eq!(counts.kept_frames, 500);
        assert_eq!(counts.gap_frames, 300);
        assert_eq!(counts.gaps, 2);
        assert_eq!(recorder.kept()[0][400], 400.0);
        let mut late = EncounterRecorder::new(1);
        late.start("enc-3", 10).unwrap();
        assert_eq!(
            late.end(5),
            Err(EncounterError::EndBeforeStart { start: 10, end: 5 })
        );
    }
}
