//! Voice activity detection: splits 16 kHz mono audio into speech regions with webrtc-vad.
//!
//! webrtc-vad decides per 30 ms frame; a region is a run of speech frames, closed by a pause of at
//! least `min_silence`, dropped if shorter than `min_speech`, padded so word edges survive, and
//! split if longer than `max_region` (so a worker restart never redoes much audio). The detector
//! is not `Send` and panics on an empty buffer, so it lives only inside [`speech_regions`] and is
//! only ever given full frames. Pure: no I/O.

use webrtc_vad::{SampleRate, Vad};

use super::SAMPLE_RATE;
use crate::config::{VadMode, VadSettings};

const FRAME_MS: u64 = 30;
const FRAME_SAMPLES: usize = (SAMPLE_RATE as u64 * FRAME_MS / 1000) as usize;

/// A speech region as sample offsets into the encounter's 16 kHz audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub start: usize,
    pub end: usize,
}

impl Region {
    pub fn start_ms(&self) -> u64 {
        samples_to_ms(self.start)
    }
    pub fn end_ms(&self) -> u64 {
        samples_to_ms(self.end)
    }
    pub fn len(&self) -> usize {
        self.end - self.start
    }
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

pub fn samples_to_ms(samples: usize) -> u64 {
    samples as u64 * 1000 / u64::from(SAMPLE_RATE)
}

fn ms_to_frames(duration: std::time::Duration) -> usize {
    (duration.as_millis() as u64).div_ceil(FRAME_MS) as usize
}

/// Finds speech regions in 16 kHz mono audio.
pub fn speech_regions(samples: &[f32], settings: &VadSettings) -> Vec<Region> {
    let flags = frame_decisions(samples, settings.mode);
    regions_from_flags(&flags, samples.len(), settings)
}

/// One speech/non-speech decision per full 30 ms frame.
pub fn frame_decisions(samples: &[f32], mode: VadMode) -> Vec<bool> {
    let mut vad = Vad::new_with_rate_and_mode(
        SampleRate::Rate16kHz,
        match mode {
            VadMode::Quality => webrtc_vad::VadMode::Quality,
            VadMode::LowBitrate => webrtc_vad::VadMode::LowBitrate,
            VadMode::Aggressive => webrtc_vad::VadMode::Aggressive,
            VadMode::VeryAggressive => webrtc_vad::VadMode::VeryAggressive,
        },
    );
    let mut frame = [0i16; FRAME_SAMPLES];
    samples
        .chunks_exact(FRAME_SAMPLES)
        .map(|chunk| {
            for (dst, &src) in frame.iter_mut().zip(chunk) {
                *dst = (src.clamp(-1.0, 1.0) * f32::from(i16::MAX)) as i16;
            }
            // A full 480-sample frame at 16 kHz is always a valid length, so an error here means
            // the detector itself failed; treating the frame as speech keeps the audio.
            vad.is_voice_segment(&frame).unwrap_or(true)
        })
        .collect()
}

fn regions_from_flags(flags: &[bool], total_samples: usize, settings: &VadSettings) -> Vec<Region> {
    let min_silence = ms_to_frames(settings.min_silence).max(1);
    let min_speech = ms_to_frames(settings.min_speech).max(1);
    let padding = settings.padding.as_millis() as usize * SAMPLE_RATE as usize / 1000;
    let max_len = settings.max_region.as_millis() as usize * SAMPLE_RATE as usize / 1000;

    // Runs of speech frames, with short pauses bridged.
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    for (index, &speech) in flags.iter().enumerate() {
        if !speech {
            continue;
        }
        current = match current {
            Some((start, end)) if index - end < min_silence => Some((start, index + 1)),
            Some(run) => {
                runs.push(run);
                Some((index, index + 1))
            }
            None => Some((index, index + 1)),
        };
    }
    runs.extend(current);

    let mut regions: Vec<Region> = Vec::new();
    for (start_frame, end_frame) in runs {
        if end_frame - start_frame < min_speech {
            continue;
        }
        let start = (start_frame * FRAME_SAMPLES).saturating_sub(padding);
        let end = (end_frame * FRAME_SAMPLES + padding).min(total_samples);
        // Padding can make neighbours touch; keep regions disjoint.
        let start = regions.last().map_or(start, |prev| start.max(prev.end));
        if end <= start {
            continue;
        }
        let mut piece_start = start;
        while end - piece_start > max_len {
            regions.push(Region {
                start: piece_start,
                end: piece_start + max_len,
            });
            piece_start += max_len;
        }
        regions.push(Region {
            start: piece_start,
            end,
        });
    }
    regions
}

/// Packs consecutive regions into chunks no longer than `max_len` samples, each spanning from its
/// first region's start to its last region's end (pauses inside stay, so times map linearly).
/// Whisper encodes a fixed 30 s window per call whatever the input length, so a few full chunks
/// cost far less than many short ones, and the longer context helps recognition.
pub fn pack_regions(regions: &[Region], max_len: usize) -> Vec<Region> {
    let mut chunks: Vec<Region> = Vec::new();
    for region in regions {
        match chunks.last_mut() {
            Some(chunk) if region.end - chunk.start <= max_len => chunk.end = region.end,
            _ => chunks.push(*region),
        }
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn settings() -> VadSettings {
        VadSettings {
            mode: VadMode::Aggressive,
            min_speech: Duration::from_millis(90),
            min_silence: Duration::from_millis(300),
            padding: Duration::from_millis(0),
            max_region: Duration::from_secs(28),
        }
    }

    fn flags(pattern: &str) -> Vec<bool> {
        pattern.chars().map(|c| c == '#').collect()
    }

    #[test]
    fn short_pauses_are_bridged_and_long_ones_split() {
        // 30 ms frames: a 2-frame pause (60 ms) is bridged; a 12-frame pause (360 ms) splits.
        let f = flags("....####..####............####....");
        let regions = regions_from_flags(&f, f.len() * FRAME_SAMPLES, &settings());
        assert_eq!(
            regions,
            vec![
                Region {
                    start: 4 * FRAME_SAMPLES,
                    end: 14 * FRAME_SAMPLES
                },
                Region {
                    start: 26 * FRAME_SAMPLES,
                    end: 30 * FRAME_SAMPLES
                },
            ]
        );
    }

    #[test]
    fn blips_shorter_than_min_speech_are_dropped() {
        let f = flags("..#.......................##........");
        assert!(regions_from_flags(&f, f.len() * FRAME_SAMPLES, &settings()).is_empty());
    }

    #[test]
    fn padding_never_overlaps_or_leaves_the_audio() {
        let mut s = settings();
        s.padding = Duration::from_millis(300);
        let f = flags("####.............####");
        let total = f.len() * FRAME_SAMPLES;
        let regions = regions_from_flags(&f, total, &s);
        assert_eq!(regions.len(), 2);
        assert_eq!(regions[0].start, 0);
        assert!(regions[0].end <= regions[1].start);
        assert_eq!(regions[1].end, total);
    }

    #[test]
    fn long_regions_are_split_at_the_limit() {
        let mut s = settings();
        s.max_region = Duration::from_secs(1);
        let f = vec![true; 100]; // 3 s of speech
        let regions = regions_from_flags(&f, 100 * FRAME_SAMPLES, &s);
        assert_eq!(regions.len(), 3);
        assert!(regions.iter().all(|r| r.len() <= SAMPLE_RATE as usize));
        assert_eq!(regions.last().unwrap().end, 100 * FRAME_SAMPLES);
    }

    #[test]
    fn packing_fills_chunks_up_to_the_limit_without_reordering() {
        let r = |start, end| Region { start, end };
        let regions = [r(0, 10), r(20, 30), r(35, 60), r(100, 120), r(200, 290)];
        assert_eq!(
            pack_regions(&regions, 100),
            vec![r(0, 60), r(100, 120), r(200, 290)]
        );
        assert_eq!(pack_regions(&regions, 5), regions.to_vec());
        assert!(pack_regions(&[], 100).is_empty());
    }

    #[test]
    fn silence_and_empty_input_give_no_regions() {
        assert!(speech_regions(&[], &settings()).is_empty());
        assert!(speech_regions(&[0.0; 100], &settings()).is_empty());
        assert!(speech_regions(&vec![0.0; 16_000], &settings()).is_empty());
    }

    #[test]
    fn a_voiced_tone_burst_is_found_where_it_is() {
        // A harmonic-rich buzz (like a voiced vowel) from 1.0 s to 2.0 s in 3 s of near silence.
        let mut samples = vec![0.0f32; 48_000];
        for (n, s) in samples.iter_mut().enumerate().take(32_000).skip(16_000) {
            let t = n as f32 / 16_000.0;
            *s = (1..10)
                .map(|h| (2.0 * std::f32::consts::PI * 140.0 * h as f32 * t).sin() / h as f32)
                .sum::<f32>()
                * 0.3;
        }
        let regions = speech_regions(&samples, &settings());
        assert_eq!(regions.len(), 1, "{regions:?}");
        assert!(regions[0].start_ms().abs_diff(1000) <= 90, "{regions:?}");
        // webrtc-vad holds its decision a few frames past the end of voicing.
        assert!((2000..=2200).contains(&regions[0].end_ms()), "{regions:?}");
    }
}
