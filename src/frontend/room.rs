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
use realfft::{RealFftPlanner, RealToComplex};

use super::align::Offset;
use super::beamform::Beamformer;
use super::doa::rms_distance;
pub use super::speech::{SpeechDetector, FRAME};
use super::stream::RoomStream;
use super::FrontendError;

/// The speech band the power features use: 300 Hz to 4 kHz of a 512-point spectrum.
const BAND_FIRST_BIN: usize = 10;
const BAND_LAST_BIN: usize = 128;
pub(super) const BANDS: usize = 12;
/// A talker is heard for at least this many frames with a clear direction (about 1 s).
const MIN_CLUSTER_FRAMES: usize = 30;
/// Frames each side whose directions vote on a frame's talker (about 0.3 s).
pub(super) const VOTE_RADIUS: usize = 10;
/// Frames each side that decide whether two voices overlap (about 0.2 s)…
pub(super) const OVERLAP_RADIUS: usize = 6;
/// …and the clearly-clinician and clearly-other loud frames each needed within them. With 2 the
/// overlap marks had a frame precision of 0.21 on the simulated rooms and cost more DER than
/// they saved; 3 halves the false marks.
const OVERLAP_MIN_FRAMES: usize = 3;
/// Beamformer hop (samples) and the frames of its STFT.
pub(super) const BEAM_HOP: usize = 256;
const BEAM_FFT: usize = 512;
/// Steering toward a voice is refreshed with new noise statistics about once a second.
const MVDR_REFRESH_HOPS: usize = 62;

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
    /// Speech-run edge refinement ([`EdgeSettings`]); `None` keeps the detector's edges (the
    /// truth's own, in evaluation).
    pub edges: Option<EdgeSettings>,
    /// A pause of up to this many frames between two stretches of the same voice stays inside
    /// that voice's turn (0 = off).
    pub bridge_frames: usize,
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
            edges: Some(EdgeSettings::default()),
            bridge_frames: 15,
        }
    }
}

/// What the room front end produced for one recording.
#[derive(Debug, Clone)]
pub struct RoomAnalysis {
    /// The badge's offset against the array, when a badge was given and could be aligned.
    pub badge_offset: Option<Offset>,
    /// The badge on the array's time base (kept only when the stream was asked to keep its
    /// signals, as for evaluation).
    pub badge: Option<Vec<f32>>,
    /// Speech decision per frame, edges refined: who spoke when.
    pub speech: Vec<bool>,
    /// The speech detector's own decisions: the recogniser's chunks follow these (a trimmed
    /// tail may still hold a word's end).
    pub detected: Vec<bool>,
    pub turns: Vec<RoomTurn>,
    /// Both beamformers' outputs (empty unless the signals were kept).
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

/// Runs the whole room front end over a recording: the stream of [`RoomStream`] fed at once.
/// `array` holds one signal per mic (equal lengths, 16 kHz), `geometry` one position per mic in
/// metres; `badge` is the badge's signal with its own start time.
pub fn analyse_room<'m>(
    array: &[Vec<f32>],
    geometry: &[[f32; 3]],
    badge: Option<&[f32]>,
    detector: &'m mut dyn SpeechDetector,
    embedder: Option<&'m mut dyn VoiceEmbedder>,
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
    let mut stream = RoomStream::new(
        geometry,
        badge.is_some(),
        detector,
        embedder,
        settings.clone(),
        true,
    )?;
    // The badge first: with the whole array ahead of it, the badge would look stalled.
    if let Some(badge) = badge {
        stream.push_badge(badge)?;
    }
    let blocks: Vec<&[f32]> = array.iter().map(Vec::as_slice).collect();
    stream.push_array(&blocks)?;
    stream.finish()
}

/// Aligns the badge to array mic 0: the offset is searched over the first stretch that both
/// cover (up to 8 s, offsets up to ±2 s). Errors with [`FrontendError::Parameter`] when the
/// two are too short to align.
pub(super) fn badge_offset(reference: &[f32], badge: &[f32]) -> Result<Offset, FrontendError> {
    let window = reference.len().min(badge.len()).min(ALIGN_WINDOW);
    if window <= ALIGN_MAX_OFFSET / 4 {
        return Err(FrontendError::Parameter(
            "the badge recording is too short to align with the array",
        ));
    }
    let search = ALIGN_MAX_OFFSET.min(window - 1);
    let mut aligner = super::align::Aligner::new(window, search)?;
    aligner.offset(&reference[..window], &badge[..window])
}

/// The badge is aligned over this much of the start of the visit (8 s)…
pub(super) const ALIGN_WINDOW: usize = 8 * 16_000;
/// …searching offsets up to this far either way (2 s).
pub(super) const ALIGN_MAX_OFFSET: usize = 2 * 16_000;

/// Band powers (300 Hz–4 kHz, [`BANDS`] bands) of 512-sample frames, Hann-windowed.
pub(super) struct BandPowers {
    fft: std::sync::Arc<dyn RealToComplex<f32>>,
    window: Vec<f32>,
    input: Vec<f32>,
    spectrum: Vec<Complex<f32>>,
    scratch: Vec<Complex<f32>>,
}

impl BandPowers {
    pub(super) fn new() -> BandPowers {
        let mut planner = RealFftPlanner::<f32>::new();
        let fft = planner.plan_fft_forward(FRAME);
        BandPowers {
            window: (0..FRAME)
                .map(|i| 0.5 - 0.5 * (2.0 * std::f32::consts::PI * i as f32 / FRAME as f32).cos())
                .collect(),
            input: fft.make_input_vec(),
            spectrum: fft.make_output_vec(),
            scratch: fft.make_scratch_vec(),
            fft,
        }
    }

    /// Adds the band powers of one frame (`sample(i)`, i < [`FRAME`]) to `out`.
    pub(super) fn add(
        &mut self,
        sample: &dyn Fn(usize) -> f32,
        out: &mut [f32; BANDS],
    ) -> Result<(), FrontendError> {
        for (i, slot) in self.input.iter_mut().enumerate() {
            *slot = sample(i) * self.window[i];
        }
        self.fft
            .process_with_scratch(&mut self.input, &mut self.spectrum, &mut self.scratch)?;
        let per_band = (BAND_LAST_BIN - BAND_FIRST_BIN) / BANDS;
        for (b, slot) in out.iter_mut().enumerate() {
            let first = BAND_FIRST_BIN + b * per_band;
            *slot += self.spectrum[first..first + per_band]
                .iter()
                .map(Complex::norm_sqr)
                .sum::<f32>();
        }
        Ok(())
    }
}

/// Who-spoke-when over the frames heard so far: the decisions of the front end that need the
/// whole visit, cheap over the per-frame records.
pub(super) struct Decisions {
    /// Speech after the edges were refined: what is scored as speech and who-spoke-when.
    pub speech: Vec<bool>,
    pub voices: Vec<Option<Voice>>,
    pub overlap: Vec<bool>,
    pub turns: Vec<RoomTurn>,
    /// The turns over the detector's own extent (a trimmed tail keeps its voice): what the
    /// badge/beam splice follows.
    pub splice_turns: Vec<RoomTurn>,
    pub direction_clusters: usize,
    pub voice_count: usize,
}

/// Decides the clinician, the overlaps and the voices from the detector's per-frame speech
/// decisions (`detected`), raw band powers and directions (all the same length); with a voice
/// embedder, direction clusters with the same voice are merged (`mean` is the channel mean the
/// embeddings are taken from).
pub(super) fn decide(
    detected: &[bool],
    array_power: &[[f32; BANDS]],
    badge_power: Option<&[[f32; BANDS]]>,
    directions: &[Option<Vec<f32>>],
    voice: Option<(&[f32], &mut dyn VoiceEmbedder)>,
    settings: &RoomSettings,
    samples: usize,
) -> Result<Decisions, FrontendError> {
    let frames = detected.len();
    // The detector's decisions stay the estimators' idea of speech (noise floors here, the
    // fan's cross-spectra and MVDR's noise frames upstream): a reverberant tail is no noise
    // sample. The refined edges decide only who spoke when.
    let silent_badge = vec![[0.0f32; BANDS]; frames];
    let features = Features::new(array_power, badge_power.unwrap_or(&silent_badge), detected);
    let mut speech = detected.to_vec();
    if let Some(edges) = &settings.edges {
        refine_speech_edges(&mut speech, &features, edges);
    }
    let speech = speech;
    // Clinician and overlap from the badge.
    let (clinician, overlap) = match badge_power {
        Some(_) => clinician_frames(&features, &speech),
        None => (vec![false; frames], vec![false; frames]),
    };
    // Direction clusters over every speech frame: the badge then names the clinician's cluster,
    // which is steadier than the per-frame badge/array ratio (that decides only where the
    // clinician's direction cannot be told from another voice's).
    let no_frames = vec![false; frames];
    let mut labels = cluster_directions(directions, &speech, &no_frames, settings);
    let direction_clusters = labels.iter().flatten().copied().max().map_or(0, |m| m + 1);
    if let Some((mean, embedder)) = voice {
        merge_by_voice(&mut labels, &clinician, mean, embedder, settings)?;
    }
    smooth_labels(&mut labels, settings.min_turn_frames);
    let mut voices = assign_voices(&labels, &clinician, &speech, badge_power.is_some());
    bridge_same_voice_gaps(&mut voices, settings.bridge_frames);
    let turns = build_turns(&voices, &overlap, samples);
    let splice_turns = if speech == detected {
        turns.clone()
    } else {
        build_turns(&extend_over(&voices, detected), &overlap, samples)
    };
    let voice_count = {
        let mut seen: Vec<Voice> = voices.iter().flatten().copied().collect();
        seen.sort();
        seen.dedup();
        seen.len()
    };
    Ok(Decisions {
        speech,
        voices,
        overlap,
        turns,
        splice_turns,
        direction_clusters,
        voice_count,
    })
}

/// Frames without a voice between two frames of the same voice, at most `max_gap` of them,
/// take that voice: a turn's pauses between sentences are part of the turn (the scenes' truth
/// counts them so; 0.5 s measured best on them).
fn bridge_same_voice_gaps(voices: &mut [Option<Voice>], max_gap: usize) {
    let mut last: Option<(usize, Voice)> = None;
    for f in 0..voices.len() {
        let Some(v) = voices[f] else { continue };
        if let Some((l, lv)) = last {
            if lv == v && f - l > 1 && f - l - 1 <= max_gap {
                voices[l + 1..f].fill(Some(v));
            }
        }
        last = Some((f, v));
    }
}

/// Detected frames the edge refinement left without a voice take the voice of the run they were
/// trimmed from (the nearest voiced frame of the same detected run).
fn extend_over(voices: &[Option<Voice>], detected: &[bool]) -> Vec<Option<Voice>> {
    let mut out = voices.to_vec();
    let mut f = 0;
    while f < voices.len() {
        if !detected[f] {
            f += 1;
            continue;
        }
        let start = f;
        while f < voices.len() && detected[f] {
            f += 1;
        }
        for (g, slot) in out.iter_mut().enumerate().take(f).skip(start) {
            if slot.is_none() {
                *slot = (1..f - start).find_map(|d| {
                    [
                        g.checked_sub(d).filter(|&h| h >= start),
                        Some(g + d).filter(|&h| h < f),
                    ]
                    .into_iter()
                    .flatten()
                    .find_map(|h| voices[h])
                });
            }
        }
    }
    out
}

/// Trims the reverberant tail off each speech run and takes in a late onset, from the array's
/// speech-band SNR per frame (Σ over bands of noise-subtracted power / noise power). Silero keeps
/// 100–300 ms of a room's reverberation after each turn: on the simulated rooms 95 % of its false
/// alarms lay there, and this takes them from ~10 % to 2–3 % with F1 up at every SNR.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeSettings {
    /// A run's trailing frames are dropped while their SNR is below
    /// max(`floor_db`, the run's 90th-percentile SNR − `tail_db`)…
    pub floor_db: f32,
    pub tail_db: f32,
    /// …up to this many frames.
    pub max_trim: usize,
    /// Up to this many frames before a run join it while their SNR is at least
    /// max(`floor_db`, the run's 90th-percentile SNR − `onset_db`).
    pub max_extend: usize,
    pub onset_db: f32,
}

impl Default for EdgeSettings {
    fn default() -> Self {
        Self {
            floor_db: 2.0,
            tail_db: 15.0,
            max_trim: 5,
            max_extend: 2,
            onset_db: 15.0,
        }
    }
}

/// See [`EdgeSettings`].
fn refine_speech_edges(speech: &mut [bool], features: &Features, edges: &EdgeSettings) {
    let snr_db: Vec<f32> = features
        .array
        .iter()
        .map(|p| {
            let s: f32 = p
                .iter()
                .zip(&features.array_noise)
                .map(|(x, n)| x / n.max(f32::MIN_POSITIVE))
                .sum();
            10.0 * s.max(1e-20).log10()
        })
        .collect();
    let runs: Vec<(usize, usize)> = {
        let mut runs = Vec::new();
        let mut f = 0;
        while f < speech.len() {
            if !speech[f] {
                f += 1;
                continue;
            }
            let start = f;
            while f < speech.len() && speech[f] {
                f += 1;
            }
            runs.push((start, f));
        }
        runs
    };
    let mut sorted = Vec::new();
    for (start, mut end) in runs {
        sorted.clear();
        sorted.extend_from_slice(&snr_db[start..end]);
        sorted.sort_by(f32::total_cmp);
        // Linear between the closest ranks (numpy's default percentile).
        let rank = 0.9 * (sorted.len() - 1) as f32;
        let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
        let p90 = sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f32);
        let tail = edges.floor_db.max(p90 - edges.tail_db);
        let mut trimmed = 0;
        while end - 1 > start && trimmed < edges.max_trim && snr_db[end - 1] < tail {
            speech[end - 1] = false;
            end -= 1;
            trimmed += 1;
        }
        let onset = edges.floor_db.max(p90 - edges.onset_db);
        let mut s = start;
        let mut extended = 0;
        while extended < edges.max_extend && s > 0 && !speech[s - 1] && snr_db[s - 1] >= onset {
            speech[s - 1] = true;
            s -= 1;
            extended += 1;
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

impl Features {
    /// Raw band powers with each device's noise floor (measured on non-speech frames) taken out.
    fn new(array: &[[f32; BANDS]], badge: &[[f32; BANDS]], speech: &[bool]) -> Features {
        let array_noise = noise_floor(array, speech);
        let badge_noise = noise_floor(badge, speech);
        let less = |powers: &[[f32; BANDS]], floor: &[f32; BANDS]| {
            powers
                .iter()
                .map(|p| {
                    let mut out = [0.0f32; BANDS];
                    for k in 0..BANDS {
                        out[k] = (p[k] - floor[k]).max(0.0);
                    }
                    out
                })
                .collect::<Vec<_>>()
        };
        Features {
            array: less(array, &array_noise),
            badge: less(badge, &badge_noise),
            array_noise,
            badge_noise,
        }
    }
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
    if loud_ratios.is_empty() {
        return (vec![false; frames], vec![false; frames]);
    }
    // Two modes straddling the prior split the frames; with one mode so far (the start of a
    // visit, or a visit where one side does the talking) the prior decides which mode it is.
    let threshold = match two_means(&loud_ratios) {
        Some((low, high)) if low < PRIOR_CLINICIAN_RATIO_DB && PRIOR_CLINICIAN_RATIO_DB < high => {
            (low + high) / 2.0
        }
        _ => PRIOR_CLINICIAN_RATIO_DB,
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
    let radius = OVERLAP_RADIUS;
    let mut overlap: Vec<bool> = (0..frames)
        .map(|f| {
            let lo = f.saturating_sub(radius);
            let hi = (f + radius + 1).min(frames);
            let c = clearly_clinician[lo..hi].iter().filter(|&&x| x).count();
            let o = clearly_other[lo..hi].iter().filter(|&&x| x).count();
            speech[f] && c >= OVERLAP_MIN_FRAMES && o >= OVERLAP_MIN_FRAMES
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

/// The badge/array ratio (each against its own noise floor, dB) above which a frame is the
/// clinician's when the frames heard do not show two modes. The badge is 15–20 cm from the
/// clinician's mouth and metres from anyone else: on the simulated rooms the two modes sit near
/// +5…+11 dB and −12…−2 dB, and the two-means threshold between them at −3.5…+4.4 dB.
const PRIOR_CLINICIAN_RATIO_DB: f32 = 1.0;

/// The means of the two modes of `values` (two-means); `None` when they are less than 6 dB
/// apart, i.e. only one kind of frame is present.
fn two_means(values: &[f32]) -> Option<(f32, f32)> {
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
    (high - low >= 6.0).then_some((low, high))
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
    // With a badge: every cluster most of whose frames the badge claims is the clinician's.
    // The badge is the authority; a clinician heard from two directions (a turned head, a
    // strong reflection) makes two clusters, and both are the clinician.
    let clinician_clusters: Vec<usize> = if has_badge {
        let share = |c: usize| {
            let claimed = (0..labels.len())
                .filter(|&f| labels[f] == Some(c) && clinician[f])
                .count();
            claimed as f32 / amount[c].max(1) as f32
        };
        order.iter().copied().filter(|&c| share(c) >= 0.5).collect()
    } else {
        order
            .iter()
            .copied()
            .min_by_key(|&c| first_heard[c])
            .into_iter()
            .collect()
    };
    for &c in &clinician_clusters {
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
    let per_frame = has_badge && clinician_clusters.is_empty();
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

/// The mean direction of each voice over its frames with a clear direction: where the
/// beamformers steer while that voice talks.
pub(super) fn voice_directions(
    voices: &[Option<Voice>],
    directions: &[Option<Vec<f32>>],
) -> Vec<(Voice, Vec<f32>)> {
    let mut sums: Vec<(Voice, Vec<f32>, usize)> = Vec::new();
    for (voice, direction) in voices.iter().zip(directions) {
        let (Some(v), Some(d)) = (voice, direction) else {
            continue;
        };
        match sums.iter_mut().find(|(x, _, _)| x == v) {
            Some((_, sum, count)) => {
                for (s, x) in sum.iter_mut().zip(d) {
                    *s += x;
                }
                *count += 1;
            }
            None => sums.push((*v, d.clone(), 1)),
        }
    }
    sums.into_iter()
        .map(|(v, mut sum, count)| {
            for s in &mut sum {
                *s /= count as f32;
            }
            (v, sum)
        })
        .collect()
}

/// Delay-and-sum and MVDR side by side, one hop at a time, steered at whichever voice is
/// talking; MVDR learns the noise on non-speech hops and refreshes its weights about once a
/// second. Allocates nothing per hop.
pub(super) struct BeamStage {
    das: Beamformer,
    mvdr: Beamformer,
    block_in: Vec<Vec<f32>>,
    pub das_out: Vec<f32>,
    pub mvdr_out: Vec<f32>,
    current: Option<Vec<f32>>,
    hops_since_mvdr: usize,
    loading: f32,
    /// Hops processed so far.
    pub hops: usize,
}

impl BeamStage {
    pub(super) fn new(channels: usize, loading: f32) -> Result<BeamStage, FrontendError> {
        let mut das = Beamformer::new(channels, BEAM_FFT, BEAM_HOP)?;
        let mut mvdr = Beamformer::new(channels, BEAM_FFT, BEAM_HOP)?;
        mvdr.set_noise_forgetting(0.995)?;
        let zeros = vec![0.0f32; channels];
        das.steer(&zeros)?;
        mvdr.steer(&zeros)?;
        Ok(BeamStage {
            das,
            mvdr,
            block_in: vec![vec![0.0; BEAM_HOP]; channels],
            das_out: vec![0.0; BEAM_HOP],
            mvdr_out: vec![0.0; BEAM_HOP],
            current: None,
            hops_since_mvdr: 0,
            loading,
            hops: 0,
        })
    }

    /// Samples between an input sample and its output.
    pub(super) fn latency(&self) -> usize {
        self.das.latency()
    }

    /// The next hop: `sample(ch, i)` is sample `hops * BEAM_HOP + i` of channel `ch`, `target`
    /// the talking voice's direction (None keeps the last one), `speech` whether the hop is
    /// speech. The outputs (`das_out`, `mvdr_out`) then hold samples starting
    /// [`latency`](Self::latency) before the hop.
    pub(super) fn process(
        &mut self,
        sample: &dyn Fn(usize, usize) -> f32,
        target: Option<&[f32]>,
        speech: bool,
    ) -> Result<(), FrontendError> {
        for (ch, block) in self.block_in.iter_mut().enumerate() {
            for (i, slot) in block.iter_mut().enumerate() {
                *slot = sample(ch, i);
            }
        }
        self.hops_since_mvdr += 1;
        if let Some(t) = target {
            let changed = self.current.as_deref() != Some(t);
            if changed {
                self.das.steer(t)?;
            }
            // MVDR weights follow the noise statistics as well as the talker.
            if changed || self.hops_since_mvdr >= MVDR_REFRESH_HOPS {
                if self.mvdr.noise_frames() > 0 {
                    self.mvdr.steer_mvdr(t, self.loading)?;
                } else {
                    self.mvdr.steer(t)?;
                }
                self.hops_since_mvdr = 0;
            }
            if changed {
                self.current = Some(t.to_vec());
            }
        }
        self.das.process_hop(&self.block_in, &mut self.das_out)?;
        self.mvdr.process_hop(&self.block_in, &mut self.mvdr_out)?;
        if !speech {
            self.mvdr.mark_noise();
        }
        self.hops += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_means_splits_bimodal_ratios_and_refuses_one_mode() {
        let mut v: Vec<f32> = (0..50).map(|i| -2.0 + (i % 5) as f32 * 0.5).collect();
        v.extend((0..50).map(|i| 15.0 + (i % 5) as f32 * 0.5));
        let (low, high) = two_means(&v).unwrap();
        let t = (low + high) / 2.0;
        assert!(t > 2.0 && t < 13.0, "{t}");
        let one: Vec<f32> = (0..100).map(|i| (i % 7) as f32 * 0.3).collect();
        assert!(two_means(&one).is_none());
    }

    #[test]
    fn short_runs_take_their_neighbours_label() {
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

    #[test]
    fn every_cluster_the_badge_claims_is_the_clinician_however_small() {
        // Cluster 0: the clinician's main direction; 2: a few frames of the clinician from a
        // reflection (all claimed); 1: the patient.
        let labels = vec![
            Some(0),
            Some(0),
            Some(0),
            Some(0),
            Some(1),
            Some(1),
            Some(1),
            Some(2),
            Some(2),
        ];
        let claimed = vec![true, true, true, false, false, false, false, true, true];
        let speech = vec![true; 9];
        let voices = assign_voices(&labels, &claimed, &speech, true);
        assert_eq!(voices[0], Some(Voice::Clinician));
        assert_eq!(voices[7], Some(Voice::Clinician));
        assert_eq!(voices[4], Some(Voice::Patient));
    }
}
