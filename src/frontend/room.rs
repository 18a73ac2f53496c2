//! The room front end: from a tabletop array (and, when worn, the clinician's badge) to who
//! spoke when, and one signal per turn for the speech recogniser.
//!
//! Stages, all on the array's time base at 16 kHz:
//! 1. The badge is aligned to the array by whitened cross-correlation ([`super::align`]).
//! 2. Speech is found on the channel mean by a [`SpeechDetector`] (Silero, or webrtc-vad when
//!    no neural model is installed), one decision per 32 ms frame.
//! 3. Per frame: band powers (300 Hz–4 kHz) of the array and the badge, with the noise floor
//!    measured on non-speech frames taken out, and the direction of arrival (GCC-PHAT delays of
//!    every mic against mic 0).
//! 4. The clinician is the voice that is far louder at the badge than at the array: the
//!    badge/array ratio of speech power is bimodal, split by two-means. Where the clinician
//!    talks, the array power the badge does not explain (per band, through the clinician's
//!    measured badge→array transfer) is a second voice: overlap.
//! 5. The other voices are clustered by direction (speakers sit still in an exam room) and,
//!    when a [`VoiceEmbedder`] is given, clusters with the same voice are merged. Without a
//!    badge the clinician is taken to be the first voice heard (clinicians open visits).
//! 6. Delay-and-sum and MVDR are steered per frame at the active voice's cluster direction;
//!    MVDR learns the noise covariance on non-speech frames. The ASR signal takes the badge for
//!    the clinician's turns and the beamformer for everybody else, level-matched.
//!
//! No I/O and no logging of audio; models enter through the two traits.

use realfft::num_complex::Complex;
use realfft::RealFftPlanner;

use super::align::{Aligner, Offset};
use super::beamform::Beamformer;
use super::FrontendError;

/// Samples per decision frame: 32 ms at 16 kHz, Silero's frame.
pub const FRAME: usize = 512;
const SAMPLE_RATE: f32 = 16_000.0;
const SPEED_OF_SOUND: f32 = 343.0;
/// The speech band the power features use: 300 Hz to 4 kHz of a 512-point spectrum.
const BAND_FIRST_BIN: usize = 10;
const BAND_LAST_BIN: usize = 128;
const BANDS: usize = 12;
/// A bin counts toward a direction only where the frame is clearly above the noise there
/// (3 dB with a factor of 2): a fan's frame-to-frame fluctuation must not vote.
const NOISE_OVERSUBTRACTION: f32 = 3.0;
/// Directions this close (RMS delay, samples) to the noise source's are taken for the noise.
const FAN_EXCLUSION: f32 = 0.45;
/// A talker is heard for at least this many frames with a clear direction (about 1 s).
const MIN_CLUSTER_FRAMES: usize = 30;
/// Frames each side whose directions vote on a frame's talker (about 0.3 s).
const VOTE_RADIUS: usize = 10;

/// Speech probabilities for 16 kHz audio, one per [`FRAME`] samples (the last partial frame
/// padded). Implemented by the Silero model and by the webrtc-vad fallback.
pub trait SpeechDetector {
    fn probabilities(&mut self, samples: &[f32]) -> Result<Vec<f32>, FrontendError>;
    /// For the record: which detector decided.
    fn name(&self) -> &'static str;
}

/// A fixed-size voice embedding of 16 kHz audio (unit length), for telling voices apart.
pub trait VoiceEmbedder {
    /// Shorter audio cannot be embedded.
    fn min_samples(&self) -> usize;
    fn embed(&mut self, samples: &[f32]) -> Result<Vec<f32>, FrontendError>;
}

/// Who a turn belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Voice {
    Clinician,
    Patient,
    /// Everybody else (companion, interpreter), numbered from 1 by how much they said.
    Other(u8),
}

impl Voice {
    pub fn label(&self) -> String {
        match self {
            Voice::Clinician => "clinician".to_string(),
            Voice::Patient => "patient".to_string(),
            Voice::Other(n) => format!("other-{n}"),
        }
    }
}

/// A stretch of one voice, in samples of the array's time base.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomTurn {
    pub start: usize,
    pub end: usize,
    pub voice: Voice,
    /// Another voice talks during part of this turn.
    pub overlap: bool,
}

/// Which beamformer feeds the speech recogniser for the voices the badge does not carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeamChoice {
    DelayAndSum,
    Mvdr,
}

/// Tunables, with the values measured best on the simulated scenes.
#[derive(Debug, Clone)]
pub struct RoomSettings {
    /// Probability above which a frame is speech.
    pub speech_threshold: f32,
    /// Frames of a direction estimate window.
    pub doa_window: usize,
    /// Lowest GCC-PHAT peak for a frame's direction to count.
    pub doa_min_peak: f32,
    /// Two directions closer than this (in samples of delay, RMS over mics) are one talker.
    pub doa_cluster_distance: f32,
    /// Voices whose mean embeddings are closer than this (cosine) are merged.
    pub embedding_merge_cosine: f32,
    /// MVDR diagonal loading, relative to the noise power per bin.
    pub mvdr_loading: f32,
    pub beam: BeamChoice,
    /// Shortest turn kept, in frames; shorter runs join their neighbours.
    pub min_turn_frames: usize,
}

impl Default for RoomSettings {
    fn default() -> Self {
        Self {
            speech_threshold: 0.5,
            doa_window: 1024,
            doa_min_peak: 0.15,
            doa_cluster_distance: 1.0,
            embedding_merge_cosine: 0.85,
            mvdr_loading: 0.05,
            beam: BeamChoice::Mvdr,
            min_turn_frames: 6,
        }
    }
}

/// What the room front end produced for one recording.
#[derive(Debug, Clone)]
pub struct RoomAnalysis {
    /// The badge's offset against the array, when a badge was given.
    pub badge_offset: Option<Offset>,
    /// The badge on the array's time base.
    pub badge: Option<Vec<f32>>,
    /// Speech decision per frame.
    pub speech: Vec<bool>,
    pub turns: Vec<RoomTurn>,
    pub delay_and_sum: Vec<f32>,
    pub mvdr: Vec<f32>,
    /// The recogniser's input: the badge for the clinician, the chosen beamformer otherwise.
    pub asr_signal: Vec<f32>,
    pub detector: &'static str,
    /// Direction clusters before and after merging by voice.
    pub direction_clusters: usize,
    pub voices: usize,
    pub overlap_frames: usize,
}

/// Runs the whole room front end over a recording. `array` holds one signal per mic (equal
/// lengths, 16 kHz), `geometry` one position per mic in metres; `badge` is the badge's signal
/// with its own start time.
pub fn analyse_room(
    array: &[Vec<f32>],
    geometry: &[[f32; 3]],
    badge: Option<&[f32]>,
    detector: &mut dyn SpeechDetector,
    embedder: Option<&mut dyn VoiceEmbedder>,
    settings: &RoomSettings,
) -> Result<RoomAnalysis, FrontendError> {
    let channels = array.len();
    if channels == 0 {
        return Err(FrontendError::Parameter("the array has no channels"));
    }
    if geometry.len() != channels {
        return Err(FrontendError::Channels {
            expected: geometry.len(),
            got: channels,
        });
    }
    let n = array[0].len();
    for ch in array {
        if ch.len() != n {
            return Err(FrontendError::Length {
                expected: n,
                got: ch.len(),
            });
        }
    }
    let frames = n.div_ceil(FRAME);

    // A badge recording too short to align (a dropout, a badge switched on late) leaves the
    // array to decide alone rather than failing the visit; `badge` stays `None` to say so.
    let (badge_offset, badge) = match badge.map(|b| align_badge(&array[0], b)) {
        Some(Ok((offset, aligned))) => (Some(offset), Some(aligned)),
        Some(Err(FrontendError::Parameter(_))) | None => (None, None),
        Some(Err(e)) => return Err(e),
    };

    let mean: Vec<f32> = (0..n)
        .map(|i| array.iter().map(|ch| ch[i]).sum::<f32>() / channels as f32)
        .collect();
    let probabilities = detector.probabilities(&mean)?;
    let mut speech: Vec<bool> = (0..frames)
        .map(|f| probabilities.get(f).copied().unwrap_or(0.0) >= settings.speech_threshold)
        .collect();
    fill_short_gaps(&mut speech, 3);

    let features = frame_features(array, badge.as_deref(), &speech)?;
    let directions = frame_directions(array, geometry, &speech, settings)?;
    // Clinician and overlap from the badge.
    let (clinician, overlap) = match &badge {
        Some(_) => clinician_frames(&features, &speech),
        None => (vec![false; frames], vec![false; frames]),
    };

    // Direction clusters over every speech frame: the badge then names the clinician's cluster,
    // which is steadier than the per-frame badge/array ratio (that decides only where the
    // clinician's direction cannot be told from another voice's).
    let no_frames = vec![false; frames];
    let mut labels = cluster_directions(&directions, &speech, &no_frames, settings);
    let direction_clusters = labels.iter().flatten().copied().max().map_or(0, |m| m + 1);
    if let Some(embedder) = embedder {
        merge_by_voice(&mut labels, &clinician, &mean, embedder, settings)?;
    }
    smooth_labels(&mut labels, settings.min_turn_frames);

    let voices = assign_voices(&labels, &clinician, &speech, badge.is_some());
    let turns = build_turns(&voices, &overlap, n);

    let (delay_and_sum, mvdr) = beamform(array, &voices, &directions, &speech, settings)?;
    let chosen = match settings.beam {
        BeamChoice::DelayAndSum => &delay_and_sum,
        BeamChoice::Mvdr => &mvdr,
    };
    let asr_signal = splice_for_asr(chosen, badge.as_deref(), &turns);
    let overlap_frames = overlap.iter().filter(|&&o| o).count();
    let voice_count = {
        let mut seen: Vec<Voice> = voices.iter().flatten().copied().collect();
        seen.sort();
        seen.dedup();
        seen.len()
    };
    Ok(RoomAnalysis {
        badge_offset,
        badge,
        speech,
        turns,
        delay_and_sum,
        mvdr,
        asr_signal,
        detector: detector.name(),
        direction_clusters,
        voices: voice_count,
        overlap_frames,
    })
}

/// Aligns the badge to array mic 0: the offset is searched over the first stretch that both
/// cover (up to 8 s, offsets up to ±2 s), then the badge is shifted by whole samples.
fn align_badge(reference: &[f32], badge: &[f32]) -> Result<(Offset, Vec<f32>), FrontendError> {
    let max_offset = 2 * 16_000usize;
    let window = reference.len().min(badge.len()).min(8 * 16_000);
    if window <= max_offset / 4 {
        return Err(FrontendError::Parameter(
            "the badge recording is too short to align with the array",
        ));
    }
    let search = max_offset.min(window - 1);
    let mut aligner = Aligner::new(window, search)?;
    let offset = aligner.offset(&reference[..window], &badge[..window])?;
    // An event at array sample t is at badge sample t + offset.samples.
    let aligned = (0..reference.len())
        .map(|t| {
            let b = t as i64 + offset.samples;
            if b >= 0 {
                badge.get(b as usize).copied().unwrap_or(0.0)
            } else {
                0.0
            }
        })
        .collect();
    Ok((offset, aligned))
}

/// Non-speech gaps of up to `max` frames between speech are speech (pauses inside a turn).
fn fill_short_gaps(flags: &mut [bool], max: usize) {
    let mut last_speech: Option<usize> = None;
    for i in 0..flags.len() {
        if flags[i] {
            if let Some(last) = last_speech {
                if i - last > 1 && i - last - 1 <= max {
                    flags[last + 1..i].fill(true);
                }
            }
            last_speech = Some(i);
        }
    }
}

/// Speech-band powers per frame, noise floor removed.
struct Features {
    /// `[frame][band]`: array power (mean over mics), badge power.
    array: Vec<[f32; BANDS]>,
    badge: Vec<[f32; BANDS]>,
    array_noise: [f32; BANDS],
    badge_noise: [f32; BANDS],
}

fn frame_features(
    array: &[Vec<f32>],
    badge: Option<&[f32]>,
    speech: &[bool],
) -> Result<Features, FrontendError> {
    let frames = speech.len();
    let mut planner = RealFftPlanner::<f32>::new();
    let fft = planner.plan_fft_forward(FRAME);
    let window: Vec<f32> = (0..FRAME)
        .map(|i| 0.5 - 0.5 * (2.0 * std::f32::consts::PI * i as f32 / FRAME as f32).cos())
        .collect();
    let mut input = fft.make_input_vec();
    let mut spectrum = fft.make_output_vec();
    let mut scratch = fft.make_scratch_vec();
    let mut band_power = |signal: &[f32], f: usize, out: &mut [f32; BANDS]| {
        let start = f * FRAME;
        for (i, slot) in input.iter_mut().enumerate() {
            *slot = signal.get(start + i).copied().unwrap_or(0.0) * window[i];
        }
        fft.process_with_scratch(&mut input, &mut spectrum, &mut scratch)?;
        let per_band = (BAND_LAST_BIN - BAND_FIRST_BIN) / BANDS;
        for (b, slot) in out.iter_mut().enumerate() {
            let first = BAND_FIRST_BIN + b * per_band;
            *slot += spectrum[first..first + per_band]
                .iter()
                .map(Complex::norm_sqr)
                .sum::<f32>();
        }
        Ok::<(), FrontendError>(())
    };
    let mut array_power = vec![[0.0f32; BANDS]; frames];
    let mut badge_power = vec![[0.0f32; BANDS]; frames];
    for f in 0..frames {
        for ch in array {
            band_power(ch, f, &mut array_power[f])?;
        }
        for v in &mut array_power[f] {
            *v /= array.len() as f32;
        }
        if let Some(b) = badge {
            band_power(b, f, &mut badge_power[f])?;
        }
    }
    let array_noise = noise_floor(&array_power, speech);
    let badge_noise = noise_floor(&badge_power, speech);
    for (a, b) in array_power.iter_mut().zip(badge_power.iter_mut()) {
        for k in 0..BANDS {
            a[k] = (a[k] - array_noise[k]).max(0.0);
            b[k] = (b[k] - badge_noise[k]).max(0.0);
        }
    }
    Ok(Features {
        array: array_power,
        badge: badge_power,
        array_noise,
        badge_noise,
    })
}

/// Mean power per band over non-speech frames; with too few of them, the 10th percentile.
fn noise_floor(power: &[[f32; BANDS]], speech: &[bool]) -> [f32; BANDS] {
    let quiet: Vec<&[f32; BANDS]> = power
        .iter()
        .zip(speech)
        .filter(|(_, &s)| !s)
        .map(|(p, _)| p)
        .collect();
    let mut floor = [0.0f32; BANDS];
    if quiet.len() >= 10 {
        for k in 0..BANDS {
            floor[k] = quiet.iter().map(|p| p[k]).sum::<f32>() / quiet.len() as f32;
        }
    } else {
        for (k, slot) in floor.iter_mut().enumerate() {
            let mut values: Vec<f32> = power.iter().map(|p| p[k]).collect();
            values.sort_by(f32::total_cmp);
            *slot = values.get(values.len() / 10).copied().unwrap_or(0.0);
        }
    }
    floor
}

/// Per-frame direction of arrival, as the far-field delays (samples) of every mic against
/// mic 0, for speech frames whose steered response has a clear peak; `None` elsewhere.
///
/// It is SRP-PHAT over a grid of directions, with two changes for a noisy exam room. Plain PHAT
/// would find the fan: whitening gives every bin the same weight, and in most bins of a 5 dB
/// room the fan, a point source too, is stronger than the voice. So the cross-spectra of
/// non-speech frames (the fan's) are averaged and subtracted from each speech frame's before
/// whitening, and each bin is weighted by the voice's share of it. And all mic pairs vote on
/// one direction, so a pair's spatially aliased peak cannot win on its own. The steering
/// phases of every direction, pair and bin are tabulated once.
fn frame_directions(
    array: &[Vec<f32>],
    geometry: &[[f32; 3]],
    speech: &[bool],
    settings: &RoomSettings,
) -> Result<Vec<Option<Vec<f32>>>, FrontendError> {
    let channels = array.len();
    if channels < 2 {
        return Ok(vec![None; speech.len()]);
    }
    let window = settings.doa_window;
    let mut planner = RealFftPlanner::<f32>::new();
    let fft = planner.plan_fft_forward(window);
    let mut input = fft.make_input_vec();
    let mut scratch = fft.make_scratch_vec();
    let first_bin = (300.0 * window as f32 / SAMPLE_RATE) as usize;
    let last_bin = (3500.0 * window as f32 / SAMPLE_RATE) as usize;
    let band = last_bin - first_bin;
    let taper: Vec<f32> = (0..window)
        .map(|i| 0.5 - 0.5 * (2.0 * std::f32::consts::PI * i as f32 / window as f32).cos())
        .collect();
    let pairs: Vec<(usize, usize)> = (0..channels)
        .flat_map(|a| (a + 1..channels).map(move |b| (a, b)))
        .collect();

    // Candidate directions: azimuth every 5°, two elevations (talkers' mouths sit above a
    // tabletop array), and their delays.
    let mut candidates: Vec<Vec<f32>> = Vec::new();
    for elevation in [10.0f32, 30.0] {
        for step in 0..72 {
            let (az, el) = (((step * 5) as f32).to_radians(), elevation.to_radians());
            let toward = [el.cos() * az.cos(), el.cos() * az.sin(), el.sin()];
            let mut delays = vec![0.0f32; channels];
            super::beamform::far_field_delays(
                geometry,
                toward,
                SAMPLE_RATE,
                SPEED_OF_SOUND,
                &mut delays,
            )?;
            candidates.push(delays);
        }
    }
    // steering[(c * pairs + p) * band + k] = e^{-jω(τ_b - τ_a)}.
    let mut steering: Vec<Complex<f32>> = Vec::with_capacity(candidates.len() * pairs.len() * band);
    for delays in &candidates {
        for &(a, b) in &pairs {
            for k in first_bin..last_bin {
                let omega = 2.0 * std::f32::consts::PI * k as f32 / window as f32;
                let phase = -omega * (delays[b] - delays[a]);
                steering.push(Complex::new(phase.cos(), phase.sin()));
            }
        }
    }

    let n = array[0].len();
    let mut spectra: Vec<Vec<Complex<f32>>> = vec![fft.make_output_vec(); channels];
    let zero = Complex::new(0.0f32, 0.0);
    let mut cross = vec![zero; pairs.len() * band];
    let mut frame_cross = |f: usize, cross: &mut [Complex<f32>]| -> Result<(), FrontendError> {
        let centre = f * FRAME + FRAME / 2;
        let start = centre.saturating_sub(window / 2);
        for (ch, spec) in array.iter().zip(spectra.iter_mut()) {
            for i in 0..window {
                input[i] = if start + i < n {
                    ch[start + i] * taper[i]
                } else {
                    0.0
                };
            }
            fft.process_with_scratch(&mut input, spec, &mut scratch)?;
        }
        for (p, &(a, b)) in pairs.iter().enumerate() {
            for k in first_bin..last_bin {
                cross[p * band + k - first_bin] = spectra[a][k] * spectra[b][k].conj();
            }
        }
        Ok(())
    };
    // The noise's cross-spectra, averaged over (every other) non-speech frame.
    let mut noise = vec![zero; pairs.len() * band];
    let mut noise_frames = 0usize;
    for (f, &is_speech) in speech.iter().enumerate() {
        if is_speech || f % 2 == 1 {
            continue;
        }
        frame_cross(f, &mut cross)?;
        for (acc, x) in noise.iter_mut().zip(&cross) {
            *acc += x;
        }
        noise_frames += 1;
    }
    if noise_frames > 0 {
        for v in &mut noise {
            *v /= noise_frames as f32;
        }
    }

    let per_candidate = pairs.len() * band;
    let best_candidate = |whitened: &[Complex<f32>]| {
        steering
            .chunks_exact(per_candidate)
            .map(|table| {
                table
                    .iter()
                    .zip(whitened)
                    .map(|(s, w)| s.re * w.re - s.im * w.im)
                    .sum::<f32>()
            })
            .enumerate()
            .fold((0usize, f32::NEG_INFINITY), |acc, (i, v)| {
                if v > acc.1 {
                    (i, v)
                } else {
                    acc
                }
            })
    };
    // Where the fan is: frames whose best direction is the fan's are pauses, not a talker.
    let noise_direction = (noise_frames > 0).then(|| {
        let whitened: Vec<Complex<f32>> = noise
            .iter()
            .map(|&x| {
                if x.norm() > f32::MIN_POSITIVE {
                    x / x.norm()
                } else {
                    zero
                }
            })
            .collect();
        candidates[best_candidate(&whitened).0].clone()
    });

    let mut out = Vec::with_capacity(speech.len());
    let mut whitened = vec![zero; pairs.len() * band];
    for (f, &is_speech) in speech.iter().enumerate() {
        if !is_speech {
            out.push(None);
            continue;
        }
        frame_cross(f, &mut cross)?;
        let mut weight_sum = 0.0f32;
        for ((w, &x), &nz) in whitened.iter_mut().zip(&cross).zip(&noise) {
            let g = x - nz;
            let magnitude = g.norm();
            let share = (1.0 - NOISE_OVERSUBTRACTION * nz.norm() / x.norm().max(f32::MIN_POSITIVE))
                .clamp(0.0, 1.0);
            *w = if magnitude > f32::MIN_POSITIVE {
                g * (share / magnitude)
            } else {
                zero
            };
            weight_sum += share;
        }
        let (best, score) = best_candidate(&whitened);
        let confidence = if weight_sum > 0.0 {
            score / weight_sum
        } else {
            0.0
        };
        let is_fan = noise_direction
            .as_ref()
            .is_some_and(|d| rms_distance(d, &candidates[best]) < FAN_EXCLUSION);
        out.push(
            (confidence >= settings.doa_min_peak && !is_fan).then(|| candidates[best].clone()),
        );
    }
    Ok(out)
}

/// Clinician frames (badge far louder than the array) and overlap frames (another voice is
/// clearly heard within the same fraction of a second as the clinician).
///
/// Only frames with real speech energy decide (the array or the badge well above its noise
/// floor); the quiet frames inside a turn — pauses between words — take the decision of the
/// nearest frame that had some. Overlap shows as the two kinds of loud frame interleaving: the
/// badge/array ratio flips back and forth as each voice dominates in turn.
fn clinician_frames(features: &Features, speech: &[bool]) -> (Vec<bool>, Vec<bool>) {
    let frames = speech.len();
    let total = |p: &[f32; BANDS]| p.iter().sum::<f32>();
    let array_floor = total(&features.array_noise).max(f32::MIN_POSITIVE);
    let badge_floor = total(&features.badge_noise).max(f32::MIN_POSITIVE);
    let array_snr: Vec<f32> = features
        .array
        .iter()
        .map(|p| total(p) / array_floor)
        .collect();
    let badge_snr: Vec<f32> = features
        .badge
        .iter()
        .map(|p| total(p) / badge_floor)
        .collect();
    // The badge/array ratio of speech power, each relative to its own floor so the badge's
    // gain does not matter; a tenth of the floor keeps silent bands from dividing by zero.
    let ratio: Vec<f32> = (0..frames)
        .map(|f| 10.0 * ((badge_snr[f] + 0.1) / (array_snr[f] + 0.1)).log10())
        .collect();
    let loud: Vec<bool> = (0..frames)
        .map(|f| speech[f] && (array_snr[f] > 1.0 || badge_snr[f] > 4.0))
        .collect();
    let loud_ratios: Vec<f32> = (0..frames).filter(|&f| loud[f]).map(|f| ratio[f]).collect();
    let Some(threshold) = two_means_threshold(&loud_ratios) else {
        return (vec![false; frames], vec![false; frames]);
    };
    let mut clinician: Vec<bool> = (0..frames)
        .map(|f| loud[f] && ratio[f] > threshold)
        .collect();
    fill_from_loud_neighbours(&mut clinician, &loud, speech);
    majority_filter(&mut clinician, speech, 2);

    // Interleaving loud frames of both kinds within ±6 frames (±190 ms).
    let clearly_clinician: Vec<bool> = (0..frames)
        .map(|f| loud[f] && array_snr[f] > 1.5 && ratio[f] > threshold + 2.0)
        .collect();
    let clearly_other: Vec<bool> = (0..frames)
        .map(|f| loud[f] && array_snr[f] > 1.5 && ratio[f] < threshold - 4.0)
        .collect();
    let radius = 6usize;
    let mut overlap: Vec<bool> = (0..frames)
        .map(|f| {
            let lo = f.saturating_sub(radius);
            let hi = (f + radius + 1).min(frames);
            let c = clearly_clinician[lo..hi].iter().filter(|&&x| x).count();
            let o = clearly_other[lo..hi].iter().filter(|&&x| x).count();
            speech[f] && c >= 2 && o >= 2
        })
        .collect();
    majority_filter(&mut overlap, speech, 2);
    (clinician, overlap)
}

/// Frames in `speech` but not `loud` take the value of the nearest loud frame in the same
/// speech run (false when the run has none).
fn fill_from_loud_neighbours(flags: &mut [bool], loud: &[bool], speech: &[bool]) {
    let frames = flags.len();
    let mut f = 0;
    while f < frames {
        if !speech[f] {
            f += 1;
            continue;
        }
        let start = f;
        while f < frames && speech[f] {
            f += 1;
        }
        let decided: Vec<(usize, bool)> = (start..f)
            .filter(|&g| loud[g])
            .map(|g| (g, flags[g]))
            .collect();
        for g in start..f {
            if !loud[g] {
                flags[g] = decided
                    .iter()
                    .min_by_key(|(k, _)| k.abs_diff(g))
                    .is_some_and(|&(_, v)| v);
            }
        }
    }
}

/// The threshold between the two modes of `values` (two-means); `None` when the modes are less
/// than 6 dB apart, i.e. only one kind of frame is present.
fn two_means_threshold(values: &[f32]) -> Option<f32> {
    if values.len() < 4 {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f32::total_cmp);
    let mut low = sorted[sorted.len() / 5];
    let mut high = sorted[sorted.len() * 4 / 5];
    for _ in 0..30 {
        let mid = (low + high) / 2.0;
        let (lo, hi): (Vec<f32>, Vec<f32>) = sorted.iter().partition(|&&v| v <= mid);
        if lo.is_empty() || hi.is_empty() {
            break;
        }
        low = lo.iter().sum::<f32>() / lo.len() as f32;
        high = hi.iter().sum::<f32>() / hi.len() as f32;
    }
    (high - low >= 6.0).then_some((low + high) / 2.0)
}

/// Each frame in `within` takes the majority value of the `within` frames up to `radius` away.
fn majority_filter(flags: &mut [bool], within: &[bool], radius: usize) {
    let original = flags.to_vec();
    for f in 0..flags.len() {
        if !within[f] {
            flags[f] = false;
            continue;
        }
        let lo = f.saturating_sub(radius);
        let hi = (f + radius + 1).min(flags.len());
        let (mut yes, mut all) = (0, 0);
        for g in lo..hi {
            if within[g] {
                all += 1;
                yes += usize::from(original[g]);
            }
        }
        flags[f] = 2 * yes > all;
    }
}

/// Online leader clustering of the frames' directions (in time order, as a stream would see
/// them); frames without a direction take the label of the nearest labelled frame of the same
/// speech run. Clinician frames get no label.
fn cluster_directions(
    directions: &[Option<Vec<f32>>],
    speech: &[bool],
    clinician: &[bool],
    settings: &RoomSettings,
) -> Vec<Option<usize>> {
    let frames = speech.len();
    let mut centroids: Vec<(Vec<f32>, usize)> = Vec::new();
    let mut labels: Vec<Option<usize>> = vec![None; frames];
    for f in 0..frames {
        if !speech[f] || clinician[f] {
            continue;
        }
        let Some(d) = &directions[f] else { continue };
        let nearest = centroids
            .iter()
            .enumerate()
            .map(|(i, (c, _))| (i, rms_distance(c, d)))
            .min_by(|a, b| a.1.total_cmp(&b.1));
        match nearest {
            Some((i, dist)) if dist < settings.doa_cluster_distance => {
                let (c, count) = &mut centroids[i];
                *count += 1;
                let w = 1.0 / *count as f32;
                for (cv, dv) in c.iter_mut().zip(d) {
                    *cv += (dv - *cv) * w;
                }
                labels[f] = Some(i);
            }
            _ => {
                centroids.push((d.clone(), 1));
                labels[f] = Some(centroids.len() - 1);
            }
        }
    }
    // Clusters seen in fewer than ~1 s of frames are stray reflections: fold them into the
    // nearest big cluster.
    let big: Vec<usize> = (0..centroids.len())
        .filter(|&i| centroids[i].1 >= MIN_CLUSTER_FRAMES)
        .collect();
    if !big.is_empty() {
        let remap: Vec<usize> = (0..centroids.len())
            .map(|i| {
                if big.contains(&i) {
                    i
                } else {
                    *big.iter()
                        .min_by(|&&a, &&b| {
                            rms_distance(&centroids[a].0, &centroids[i].0)
                                .total_cmp(&rms_distance(&centroids[b].0, &centroids[i].0))
                        })
                        .unwrap_or(&i)
                }
            })
            .collect();
        for l in labels.iter_mut().flatten() {
            *l = remap[*l];
        }
    }
    // Dense numbering.
    let mut used: Vec<usize> = labels.iter().flatten().copied().collect();
    used.sort_unstable();
    used.dedup();
    for l in labels.iter_mut().flatten() {
        *l = used.iter().position(|u| u == l).unwrap_or(0);
    }
    // Every non-clinician speech frame takes the label most of the directions around it say
    // (±0.3 s within its run, widening until one is found): single directions are noisy, a
    // talker's is steady.
    let confident = labels.clone();
    let mut f = 0;
    while f < frames {
        if !speech[f] || clinician[f] {
            f += 1;
            continue;
        }
        let start = f;
        while f < frames && speech[f] && !clinician[f] {
            f += 1;
        }
        let end = f;
        for (g, label) in labels.iter_mut().enumerate().take(end).skip(start) {
            let mut radius = VOTE_RADIUS;
            *label = loop {
                let lo = g.saturating_sub(radius).max(start);
                let hi = (g + radius + 1).min(end);
                let mut votes: Vec<(usize, usize)> = Vec::new();
                for l in confident[lo..hi].iter().flatten() {
                    match votes.iter_mut().find(|(x, _)| x == l) {
                        Some((_, n)) => *n += 1,
                        None => votes.push((*l, 1)),
                    }
                }
                if let Some(&(l, _)) = votes.iter().max_by_key(|(_, n)| *n) {
                    break Some(l);
                }
                if lo == start && hi == end {
                    break Some(0);
                }
                radius *= 2;
            };
        }
    }
    labels
}

fn rms_distance(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().max(1) as f32;
    (a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f32>() / n).sqrt()
}

/// Merges direction clusters that carry the same voice: each cluster's mean embedding over its
/// longest runs, merged greedily while two clusters' cosine exceeds the threshold.
fn merge_by_voice(
    labels: &mut [Option<usize>],
    clinician: &[bool],
    mean: &[f32],
    embedder: &mut dyn VoiceEmbedder,
    settings: &RoomSettings,
) -> Result<(), FrontendError> {
    let clusters = labels.iter().flatten().copied().max().map_or(0, |m| m + 1);
    if clusters < 2 {
        return Ok(());
    }
    let min_frames = embedder.min_samples().div_ceil(FRAME);
    let mut sums: Vec<Option<Vec<f32>>> = vec![None; clusters];
    // A few seconds per voice make a stable print; more only costs time (CAM++ is the front
    // end's most expensive stage), so each cluster gets at most three windows, longest runs first.
    let mut windows_left = vec![3usize; clusters];
    let mut all_runs = runs(labels);
    all_runs.sort_by_key(|&(start, end, _)| std::cmp::Reverse(end - start));
    for (start, end, label) in all_runs {
        // Up to 3 s per embedding: long enough for a stable voice print, short enough to stay
        // inside one turn.
        let mut s = start;
        while end - s >= min_frames {
            let e = (s + 94).min(end);
            if e - s < min_frames {
                break;
            }
            let audio = &mean[(s * FRAME).min(mean.len())..(e * FRAME).min(mean.len())];
            if audio.len() >= embedder.min_samples() && windows_left[label] > 0 {
                windows_left[label] -= 1;
                let v = embedder.embed(audio)?;
                let slot = sums[label].get_or_insert_with(|| vec![0.0; v.len()]);
                for (a, b) in slot.iter_mut().zip(&v) {
                    *a += b;
                }
            }
            s = e;
        }
    }
    // The badge has the last word: a cluster it claims and one it does not are two people,
    // however alike their voices (two similar voices are exactly where embeddings err).
    let claimed: Vec<f32> = (0..clusters)
        .map(|c| {
            let frames = labels.iter().filter(|l| **l == Some(c)).count().max(1);
            let mine = (0..labels.len())
                .filter(|&f| labels[f] == Some(c) && clinician[f])
                .count();
            mine as f32 / frames as f32
        })
        .collect();
    let mut parent: Vec<usize> = (0..clusters).collect();
    loop {
        let mut best: Option<(usize, usize, f32)> = None;
        for a in 0..clusters {
            for b in a + 1..clusters {
                if parent[a] != a || parent[b] != b {
                    continue;
                }
                let (Some(x), Some(y)) = (&sums[a], &sums[b]) else {
                    continue;
                };
                if (claimed[a] >= 0.5) != (claimed[b] >= 0.5) {
                    continue;
                }
                let c = cosine(x, y);
                if c > settings.embedding_merge_cosine && best.is_none_or(|(_, _, bc)| c > bc) {
                    best = Some((a, b, c));
                }
            }
        }
        let Some((a, b, _)) = best else { break };
        parent[b] = a;
        if let Some(y) = sums[b].take() {
            if let Some(x) = sums[a].as_mut() {
                for (p, q) in x.iter_mut().zip(&y) {
                    *p += q;
                }
            }
        }
    }
    let root = |mut i: usize| {
        while parent[i] != i {
            i = parent[i];
        }
        i
    };
    for l in labels.iter_mut().flatten() {
        *l = root(*l);
    }
    Ok(())
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}

/// Maximal runs of one label: (first frame, end frame, label).
fn runs(labels: &[Option<usize>]) -> Vec<(usize, usize, usize)> {
    let mut out = Vec::new();
    let mut f = 0;
    while f < labels.len() {
        let Some(l) = labels[f] else {
            f += 1;
            continue;
        };
        let start = f;
        while f < labels.len() && labels[f] == Some(l) {
            f += 1;
        }
        out.push((start, f, l));
    }
    out
}

/// Runs shorter than `min` frames between two runs take their neighbours' label (a label
/// flicker inside a turn is an estimation error, not a speaker change).
fn smooth_labels(labels: &mut [Option<usize>], min: usize) {
    let all = runs(labels);
    for (i, &(start, end, _)) in all.iter().enumerate() {
        if end - start >= min {
            continue;
        }
        let before = i
            .checked_sub(1)
            .and_then(|j| all.get(j))
            .filter(|r| r.1 == start);
        let after = all.get(i + 1).filter(|r| r.0 == end);
        let take = match (before, after) {
            (Some(b), Some(a)) => Some(if b.1 - b.0 >= a.1 - a.0 { b.2 } else { a.2 }),
            (Some(b), None) => Some(b.2),
            (None, Some(a)) => Some(a.2),
            (None, None) => None,
        };
        if let Some(l) = take {
            labels[start..end].fill(Some(l));
        }
    }
}

/// Names the clusters: with a badge, the badge's frames are the clinician and the other voices
/// are the patient (who said most) and others; without one, the first voice heard is the
/// clinician.
fn assign_voices(
    labels: &[Option<usize>],
    clinician: &[bool],
    speech: &[bool],
    has_badge: bool,
) -> Vec<Option<Voice>> {
    let clusters = labels.iter().flatten().copied().max().map_or(0, |m| m + 1);
    let mut amount = vec![0usize; clusters];
    let mut first_heard = vec![usize::MAX; clusters];
    for (f, l) in labels.iter().enumerate() {
        if let Some(l) = *l {
            amount[l] += 1;
            first_heard[l] = first_heard[l].min(f);
        }
    }
    let mut order: Vec<usize> = (0..clusters).filter(|&c| amount[c] > 0).collect();
    order.sort_by(|&a, &b| amount[b].cmp(&amount[a]));
    let mut names: Vec<Option<Voice>> = vec![None; clusters];
    let mut rest = order.clone();
    // With a badge: the cluster most of whose frames the badge claims is the clinician's.
    let clinician_cluster = if has_badge {
        let share = |c: usize| {
            let claimed = (0..labels.len())
                .filter(|&f| labels[f] == Some(c) && clinician[f])
                .count();
            claimed as f32 / amount[c].max(1) as f32
        };
        order
            .iter()
            .copied()
            .map(|c| (c, share(c)))
            .filter(|&(_, s)| s >= 0.5)
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(c, _)| c)
    } else {
        order.iter().copied().min_by_key(|&c| first_heard[c])
    };
    if let Some(c) = clinician_cluster {
        names[c] = Some(Voice::Clinician);
        rest.retain(|&x| x != c);
    }
    for (rank, &c) in rest.iter().enumerate() {
        names[c] = Some(if rank == 0 {
            Voice::Patient
        } else {
            Voice::Other(u8::try_from(rank).unwrap_or(u8::MAX))
        });
    }
    // Without a clinician cluster, the badge's per-frame decision names the clinician.
    let per_frame = has_badge && clinician_cluster.is_none();
    (0..labels.len())
        .map(|f| {
            if per_frame && clinician[f] {
                Some(Voice::Clinician)
            } else if speech[f] {
                labels[f]
                    .and_then(|l| names[l])
                    .filter(|v| !per_frame || *v != Voice::Clinician)
                    .or(Some(Voice::Patient))
            } else {
                None
            }
        })
        .collect()
}

/// Frame voices → turns in samples; a turn is marked overlapped if any of its frames is. An
/// overlapped stretch also gets a turn for its second voice: the clinician's partner is the
/// nearest other voice in time (within 2 s), and the other way round.
fn build_turns(voices: &[Option<Voice>], overlap: &[bool], samples: usize) -> Vec<RoomTurn> {
    let frames = voices.len();
    let reach = 63usize;
    let second: Vec<Option<Voice>> = (0..frames)
        .map(|f| {
            if !overlap[f] {
                return None;
            }
            match voices[f]? {
                Voice::Clinician => (1..=reach).find_map(|d| {
                    [f.checked_sub(d), Some(f + d)]
                        .into_iter()
                        .flatten()
                        .filter_map(|g| voices.get(g).copied().flatten())
                        .find(|v| *v != Voice::Clinician)
                }),
                _ => Some(Voice::Clinician),
            }
        })
        .collect();
    let mut turns = runs_of(voices, overlap, samples);
    turns.extend(runs_of(&second, overlap, samples));
    turns.sort_by_key(|t| (t.start, t.end));
    turns
}

fn runs_of(voices: &[Option<Voice>], overlap: &[bool], samples: usize) -> Vec<RoomTurn> {
    let mut turns: Vec<RoomTurn> = Vec::new();
    let mut f = 0;
    while f < voices.len() {
        let Some(v) = voices[f] else {
            f += 1;
            continue;
        };
        let start = f;
        let mut any_overlap = false;
        while f < voices.len() && voices[f] == Some(v) {
            any_overlap |= overlap[f];
            f += 1;
        }
        turns.push(RoomTurn {
            start: start * FRAME,
            end: (f * FRAME).min(samples),
            voice: v,
            overlap: any_overlap,
        });
    }
    turns
}

/// Both beamformers over the whole recording, steered per frame at the active voice's
/// direction (the mean direction of its cluster), MVDR learning noise on non-speech frames.
fn beamform(
    array: &[Vec<f32>],
    voices: &[Option<Voice>],
    directions: &[Option<Vec<f32>>],
    speech: &[bool],
    settings: &RoomSettings,
) -> Result<(Vec<f32>, Vec<f32>), FrontendError> {
    let channels = array.len();
    let n = array[0].len();
    // Mean direction per voice, from that voice's confident frames.
    let mut voice_dirs: Vec<(Voice, Vec<f32>, usize)> = Vec::new();
    for f in 0..voices.len() {
        let (Some(v), Some(d)) = (voices[f], &directions[f]) else {
            continue;
        };
        match voice_dirs.iter_mut().find(|(x, _, _)| *x == v) {
            Some((_, sum, count)) => {
                for (s, x) in sum.iter_mut().zip(d) {
                    *s += x;
                }
                *count += 1;
            }
            None => voice_dirs.push((v, d.clone(), 1)),
        }
    }
    for (_, sum, count) in &mut voice_dirs {
        for s in sum.iter_mut() {
            *s /= *count as f32;
        }
    }
    let steering_for = |f: usize| -> Option<&Vec<f32>> {
        let v = voices.get(f).copied().flatten()?;
        voice_dirs
            .iter()
            .find(|(x, _, _)| *x == v)
            .map(|(_, d, _)| d)
    };

    let hop = 256;
    let mut das = Beamformer::new(channels, 512, hop)?;
    let mut mvdr = Beamformer::new(channels, 512, hop)?;
    mvdr.set_noise_forgetting(0.995)?;
    let zeros = vec![0.0f32; channels];
    das.steer(&zeros)?;
    mvdr.steer(&zeros)?;
    let latency = das.latency();
    let mut das_out = vec![0.0f32; n];
    let mut mvdr_out = vec![0.0f32; n];
    let mut block_in: Vec<Vec<f32>> = vec![vec![0.0; hop]; channels];
    let mut block_out = vec![0.0f32; hop];
    let mut current: Option<Vec<f32>> = None;
    let mut hops_since_mvdr = 0usize;
    let hops = (n + latency).div_ceil(hop);
    for h in 0..hops {
        let start = h * hop;
        for (b, ch) in block_in.iter_mut().zip(array) {
            for (i, slot) in b.iter_mut().enumerate() {
                *slot = ch.get(start + i).copied().unwrap_or(0.0);
            }
        }
        let frame = (start + hop / 2) / FRAME;
        let is_speech = speech.get(frame).copied().unwrap_or(false);
        let target = steering_for(frame);
        hops_since_mvdr += 1;
        if let Some(t) = target {
            let changed = current.as_ref() != Some(t);
            if changed {
                das.steer(t)?;
            }
            // MVDR weights follow the noise statistics, refreshed about once a second.
            if changed || hops_since_mvdr >= 62 {
                if mvdr.noise_frames() > 0 {
                    mvdr.steer_mvdr(t, settings.mvdr_loading)?;
                } else {
                    mvdr.steer(t)?;
                }
                hops_since_mvdr = 0;
            }
            current = Some(t.clone());
        }
        das.process_hop(&block_in, &mut block_out)?;
        place(&mut das_out, &block_out, start, latency);
        mvdr.process_hop(&block_in, &mut block_out)?;
        if !is_speech {
            mvdr.mark_noise();
        }
        place(&mut mvdr_out, &block_out, start, latency);
    }
    Ok((das_out, mvdr_out))
}

fn place(out: &mut [f32], block: &[f32], start: usize, latency: usize) {
    for (i, &v) in block.iter().enumerate() {
        if let Some(t) = (start + i).checked_sub(latency) {
            if let Some(slot) = out.get_mut(t) {
                *slot = v;
            }
        }
    }
}

/// The recogniser's input: the beamformer, with the clinician's turns taken from the badge,
/// scaled so both sources speak at the same level, and 10 ms crossfades at the seams.
fn splice_for_asr(beam: &[f32], badge: Option<&[f32]>, turns: &[RoomTurn]) -> Vec<f32> {
    let mut out = beam.to_vec();
    let Some(badge) = badge else {
        return out;
    };
    let rms = |x: &[f32], pick: &dyn Fn(&RoomTurn) -> bool| {
        let (mut e, mut n) = (0.0f64, 0usize);
        for t in turns.iter().filter(|t| pick(t)) {
            for &v in &x[t.start.min(x.len())..t.end.min(x.len())] {
                e += f64::from(v) * f64::from(v);
                n += 1;
            }
        }
        if n == 0 {
            None
        } else {
            Some((e / n as f64).sqrt())
        }
    };
    let beam_level = rms(beam, &|t| t.voice != Voice::Clinician);
    let badge_level = rms(badge, &|t| t.voice == Voice::Clinician);
    let gain = match (beam_level, badge_level) {
        (Some(a), Some(b)) if b > 0.0 => (a / b) as f32,
        _ => 1.0,
    };
    let fade = 160usize;
    for t in turns.iter().filter(|t| t.voice == Voice::Clinician) {
        let (start, end) = (t.start.min(out.len()), t.end.min(out.len()));
        for i in start..end {
            let into = (i - start).min(end - 1 - i);
            let w = if into < fade {
                into as f32 / fade as f32
            } else {
                1.0
            };
            out[i] = w * gain * badge[i] + (1.0 - w) * beam[i];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_means_splits_bimodal_ratios_and_refuses_one_mode() {
        let mut v: Vec<f32> = (0..50).map(|i| -2.0 + (i % 5) as f32 * 0.5).collect();
        v.extend((0..50).map(|i| 15.0 + (i % 5) as f32 * 0.5));
        let t = two_means_threshold(&v).unwrap();
        assert!(t > 2.0 && t < 13.0, "{t}");
        let one: Vec<f32> = (0..100).map(|i| (i % 7) as f32 * 0.3).collect();
        assert!(two_means_threshold(&one).is_none());
    }

    #[test]
    fn short_gaps_fill_and_short_runs_smooth() {
        let mut flags = vec![true, false, false, true, false, false, false, false, true];
        fill_short_gaps(&mut flags, 2);
        assert_eq!(
            flags,
            vec![true, true, true, true, false, false, false, false, true]
        );
        let mut labels = vec![Some(0); 10];
        labels[4] = Some(1);
        labels.extend(vec![Some(1); 10]);
        smooth_labels(&mut labels, 3);
        assert_eq!(labels[4], Some(0));
        assert_eq!(labels[15], Some(1));
    }

    #[test]
    fn the_first_voice_is_the_clinician_without_a_badge() {
        let labels = vec![None, Some(1), Some(1), Some(0), Some(0), Some(0), Some(2)];
        let speech = vec![false, true, true, true, true, true, true];
        let none = vec![false; 7];
        let voices = assign_voices(&labels, &none, &speech, false);
        assert_eq!(voices[1], Some(Voice::Clinician));
        assert_eq!(voices[3], Some(Voice::Patient));
        assert_eq!(voices[6], Some(Voice::Other(1)));
        let with_badge = assign_voices(&labels, &none, &speech, true);
        assert_eq!(with_badge[3], Some(Voice::Patient));
        assert_eq!(with_badge[1], Some(Voice::Other(1)));
    }
}
