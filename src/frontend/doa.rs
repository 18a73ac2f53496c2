//! Direction of arrival per frame for the room front end: SRP-PHAT over a grid of directions,
//! made to work in a noisy exam room, one frame at a time.
//!
//! Plain PHAT would find the fan: whitening gives every bin the same weight, and in most bins of a
//! 5 dB room the fan, a point source too, is stronger than the voice. So the cross-spectra of
//! non-speech frames (the fan's) are averaged and subtracted from each speech frame's before
//! whitening, and each bin is weighted by the voice's share of it. All mic pairs vote on one
//! direction, so a pair's spatially aliased peak cannot win on its own, and a frame whose best
//! direction is the fan's is a pause, not a talker. The noise average grows as non-speech frames
//! arrive, so a stream uses what it has heard so far. The steering phases of every direction,
//! pair and bin are tabulated once; a frame allocates nothing but the delays it returns.

use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};

use super::FrontendError;

const SAMPLE_RATE: f32 = 16_000.0;
const SPEED_OF_SOUND: f32 = 343.0;
/// A bin counts toward a direction only where the frame is clearly above the noise there
/// (3 dB with a factor of 2): a fan's frame-to-frame fluctuation must not vote.
const NOISE_OVERSUBTRACTION: f32 = 3.0;
/// Directions this close (RMS delay, samples) to the noise source's are taken for the noise.
const FAN_EXCLUSION: f32 = 0.45;
/// The fan's direction is looked up again after this many more noise frames.
const NOISE_DIRECTION_REFRESH: usize = 32;

/// Directions of arrival of an array, frame by frame.
pub struct DirectionFinder {
    channels: usize,
    window: usize,
    first_bin: usize,
    band: usize,
    min_peak: f32,
    fft: Arc<dyn RealToComplex<f32>>,
    taper: Vec<f32>,
    input: Vec<f32>,
    scratch: Vec<Complex<f32>>,
    spectra: Vec<Vec<Complex<f32>>>,
    pairs: Vec<(usize, usize)>,
    /// Far-field delays of each candidate direction, per mic.
    candidates: Vec<Vec<f32>>,
    /// `steering[(c * pairs + p) * band + k]` = e^{-jω(τ_b - τ_a)}.
    steering: Vec<Complex<f32>>,
    cross: Vec<Complex<f32>>,
    whitened: Vec<Complex<f32>>,
    noise_sum: Vec<Complex<f32>>,
    noise_frames: usize,
    noise_mean: Vec<Complex<f32>>,
    noise_direction: Option<usize>,
    noise_direction_at: usize,
}

impl DirectionFinder {
    /// A finder for `geometry` (one position per mic, metres) over analysis windows of `window`
    /// samples; a frame's direction counts only when its normalised steered response reaches
    /// `min_peak`.
    pub fn new(
        geometry: &[[f32; 3]],
        window: usize,
        min_peak: f32,
    ) -> Result<DirectionFinder, FrontendError> {
        let channels = geometry.len();
        if window < 64 || !window.is_multiple_of(2) {
            return Err(FrontendError::Parameter(
                "the direction window must be even and at least 64 samples",
            ));
        }
        let mut planner = RealFftPlanner::<f32>::new();
        let fft = planner.plan_fft_forward(window);
        let first_bin = (300.0 * window as f32 / SAMPLE_RATE) as usize;
        let last_bin = (3500.0 * window as f32 / SAMPLE_RATE) as usize;
        let band = last_bin - first_bin;
        let taper = (0..window)
            .map(|i| 0.5 - 0.5 * (2.0 * std::f32::consts::PI * i as f32 / window as f32).cos())
            .collect();
        let pairs: Vec<(usize, usize)> = (0..channels)
            .flat_map(|a| (a + 1..channels).map(move |b| (a, b)))
            .collect();
        // Candidate directions: azimuth every 5°, two elevations (talkers' mouths sit above a
        // tabletop array), and their delays.
        let mut candidates: Vec<Vec<f32>> = Vec::new();
        if channels >= 2 {
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
        }
        let mut steering = Vec::with_capacity(candidates.len() * pairs.len() * band);
        for delays in &candidates {
            for &(a, b) in &pairs {
                for k in first_bin..last_bin {
                    let omega = 2.0 * std::f32::consts::PI * k as f32 / window as f32;
                    let phase = -omega * (delays[b] - delays[a]);
                    steering.push(Complex::new(phase.cos(), phase.sin()));
                }
            }
        }
        let zero = Complex::new(0.0f32, 0.0);
        let per_frame = pairs.len() * band;
        Ok(DirectionFinder {
            channels,
            window,
            first_bin,
            band,
            min_peak,
            input: fft.make_input_vec(),
            scratch: fft.make_scratch_vec(),
            spectra: vec![fft.make_output_vec(); channels],
            fft,
            taper,
            pairs,
            candidates,
            steering,
            cross: vec![zero; per_frame],
            whitened: vec![zero; per_frame],
            noise_sum: vec![zero; per_frame],
            noise_frames: 0,
            noise_mean: vec![zero; per_frame],
            noise_direction: None,
            noise_direction_at: 0,
        })
    }

    /// Noise windows averaged so far.
    pub fn noise_frames(&self) -> usize {
        self.noise_frames
    }

    /// Samples per analysis window.
    pub fn window(&self) -> usize {
        self.window
    }

    /// The cross-spectra of one window: `sample(ch, i)` gives sample `i` of the window on
    /// channel `ch` (0 outside the recording).
    fn analyse(&mut self, sample: &dyn Fn(usize, usize) -> f32) -> Result<(), FrontendError> {
        for ch in 0..self.channels {
            for i in 0..self.window {
                self.input[i] = sample(ch, i) * self.taper[i];
            }
            self.fft.process_with_scratch(
                &mut self.input,
                &mut self.spectra[ch],
                &mut self.scratch,
            )?;
        }
        for (p, &(a, b)) in self.pairs.iter().enumerate() {
            for k in self.first_bin..self.first_bin + self.band {
                self.cross[p * self.band + k - self.first_bin] =
                    self.spectra[a][k] * self.spectra[b][k].conj();
            }
        }
        Ok(())
    }

    /// Adds a non-speech window to the noise average.
    pub fn add_noise(&mut self, sample: &dyn Fn(usize, usize) -> f32) -> Result<(), FrontendError> {
        if self.channels < 2 {
            return Ok(());
        }
        self.analyse(sample)?;
        for (acc, x) in self.noise_sum.iter_mut().zip(&self.cross) {
            *acc += x;
        }
        self.noise_frames += 1;
        let scale = 1.0 / self.noise_frames as f32;
        for (mean, sum) in self.noise_mean.iter_mut().zip(&self.noise_sum) {
            *mean = sum * scale;
        }
        if self.noise_direction.is_none()
            || self.noise_frames >= self.noise_direction_at + NOISE_DIRECTION_REFRESH
        {
            self.noise_direction_at = self.noise_frames;
            for (w, &x) in self.whitened.iter_mut().zip(&self.noise_mean) {
                *w = if x.norm() > f32::MIN_POSITIVE {
                    x / x.norm()
                } else {
                    Complex::new(0.0, 0.0)
                };
            }
            self.noise_direction = Some(self.best_candidate().0);
        }
        Ok(())
    }

    /// The direction of a speech window, as the far-field delays (samples) of every mic against
    /// mic 0; `None` when the steered response has no clear peak or points at the noise.
    pub fn direction(
        &mut self,
        sample: &dyn Fn(usize, usize) -> f32,
    ) -> Result<Option<Vec<f32>>, FrontendError> {
        if self.channels < 2 {
            return Ok(None);
        }
        self.analyse(sample)?;
        let zero = Complex::new(0.0f32, 0.0);
        let mut weight_sum = 0.0f32;
        for ((w, &x), &nz) in self
            .whitened
            .iter_mut()
            .zip(&self.cross)
            .zip(&self.noise_mean)
        {
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
        let (best, score) = self.best_candidate();
        let confidence = if weight_sum > 0.0 {
            score / weight_sum
        } else {
            0.0
        };
        let is_fan = self.noise_direction.is_some_and(|fan| {
            rms_distance(&self.candidates[fan], &self.candidates[best]) < FAN_EXCLUSION
        });
        Ok((confidence >= self.min_peak && !is_fan).then(|| self.candidates[best].clone()))
    }

    /// The candidate with the largest steered response to `self.whitened`, and that response.
    fn best_candidate(&self) -> (usize, f32) {
        let per_candidate = self.pairs.len() * self.band;
        self.steering
            .chunks_exact(per_candidate)
            .map(|table| {
                table
                    .iter()
                    .zip(&self.whitened)
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
    }
}

/// RMS distance of two delay vectors (samples).
pub fn rms_distance(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().max(1) as f32;
    (a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f32>() / n).sqrt()
}
