//! Kaldi-compatible log-mel filterbank features, as speaker models trained with Kaldi or
//! `torchaudio.compliance.kaldi.fbank` expect them: 25 ms frames every 10 ms at 16 kHz, frames
//! that would run past the end are dropped (`snip_edges`), DC removed per frame, pre-emphasis
//! 0.97, Povey window, 512-point power spectrum, 80 triangular mel bands from 20 Hz to Nyquist,
//! natural log floored at `f32::EPSILON`, no dither.
//!
//! The mel bank and window are the model's contract: a different window or band layout shifts
//! every feature and silently degrades the embeddings, so they follow Kaldi exactly rather than
//! reusing the beamformer's STFT.

use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};

/// Samples per frame (25 ms at 16 kHz).
pub const FRAME_LEN: usize = 400;
/// Samples between frame starts (10 ms at 16 kHz).
pub const FRAME_SHIFT: usize = 160;
/// Mel bands per frame.
pub const NUM_MEL: usize = 80;

const FFT_LEN: usize = 512;
const PREEMPH: f32 = 0.97;
const LOW_HZ: f64 = 20.0;
const SAMPLE_RATE: f64 = 16_000.0;

/// One triangular mel filter: its weights start at FFT bin `first`.
struct MelBand {
    first: usize,
    weights: Vec<f32>,
}

/// A reusable filterbank extractor: the FFT plan, window and mel bands are built once.
pub struct Fbank {
    fft: Arc<dyn RealToComplex<f32>>,
    window: Vec<f32>,
    bands: Vec<MelBand>,
    frame: Vec<f32>,
    spectrum: Vec<realfft::num_complex::Complex<f32>>,
    scratch: Vec<realfft::num_complex::Complex<f32>>,
    power: Vec<f32>,
}

impl std::fmt::Debug for Fbank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fbank").field("num_mel", &NUM_MEL).finish()
    }
}

impl Default for Fbank {
    fn default() -> Self {
        Self::new()
    }
}

fn mel(hz: f64) -> f64 {
    1127.0 * (1.0 + hz / 700.0).ln()
}

impl Fbank {
    pub fn new() -> Fbank {
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(FFT_LEN);
        let spectrum = fft.make_output_vec();
        let scratch = fft.make_scratch_vec();
        let denom = (FRAME_LEN - 1) as f64;
        let window = (0..FRAME_LEN)
            .map(|i| {
                let hann = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / denom).cos();
                hann.powf(0.85) as f32
            })
            .collect();
        // Kaldi spaces the band edges evenly in mel between 20 Hz and Nyquist and evaluates the
        // triangles in the mel domain at the centre of each FFT bin below Nyquist.
        let mel_low = mel(LOW_HZ);
        let mel_high = mel(SAMPLE_RATE / 2.0);
        let delta = (mel_high - mel_low) / (NUM_MEL + 1) as f64;
        let bin_hz = SAMPLE_RATE / FFT_LEN as f64;
        let bands = (0..NUM_MEL)
            .map(|b| {
                let left = mel_low + b as f64 * delta;
                let centre = left + delta;
                let right = centre + delta;
                let mut first = None;
                let mut weights = Vec::new();
                for i in 0..FFT_LEN / 2 {
                    let m = mel(bin_hz * i as f64);
                    if m > left && m < right {
                        let w = if m <= centre {
                            (m - left) / (centre - left)
                        } else {
                            (right - m) / (right - centre)
                        };
                        first.get_or_insert(i);
                        weights.push(w as f32);
                    }
                }
                MelBand {
                    first: first.unwrap_or(0),
                    weights,
                }
            })
            .collect();
        Fbank {
            fft,
            window,
            bands,
            frame: vec![0.0; FFT_LEN],
            spectrum,
            scratch,
            power: vec![0.0; FFT_LEN / 2 + 1],
        }
    }

    /// Number of frames `compute` yields for `n` samples.
    pub fn num_frames(n: usize) -> usize {
        if n < FRAME_LEN {
            0
        } else {
            1 + (n - FRAME_LEN) / FRAME_SHIFT
        }
    }

    /// Log-mel features of `samples` (16 kHz, any scale), frame-major: `out[frame * 80 + band]`.
    /// `out` is cleared and refilled.
    pub fn compute(&mut self, samples: &[f32], out: &mut Vec<f32>) {
        let frames = Self::num_frames(samples.len());
        out.clear();
        out.reserve(frames * NUM_MEL);
        for f in 0..frames {
            let src = &samples[f * FRAME_SHIFT..f * FRAME_SHIFT + FRAME_LEN];
            let mean = src.iter().map(|&x| x as f64).sum::<f64>() / FRAME_LEN as f64;
            let frame = &mut self.frame;
            for (d, &s) in frame.iter_mut().zip(src) {
                *d = (s as f64 - mean) as f32;
            }
            for i in (1..FRAME_LEN).rev() {
                frame[i] -= PREEMPH * frame[i - 1];
            }
            frame[0] -= PREEMPH * frame[0];
            for (d, &w) in frame.iter_mut().zip(&self.window) {
                *d *= w;
            }
            frame[FRAME_LEN..].fill(0.0);
            // The lengths are fixed by construction, so the FFT cannot fail; a failure would
            // leave the spectrum zeroed, which shows up as a floor-valued frame, not a panic.
            if self
                .fft
                .process_with_scratch(frame, &mut self.spectrum, &mut self.scratch)
                .is_err()
            {
                self.spectrum
                    .iter_mut()
                    .for_each(|c| *c = realfft::num_complex::Complex::new(0.0, 0.0));
            }
            for (p, c) in self.power.iter_mut().zip(&self.spectrum) {
                *p = c.re * c.re + c.im * c.im;
            }
            for band in &self.bands {
                let e: f32 = band
                    .weights
                    .iter()
                    .zip(&self.power[band.first..])
                    .map(|(w, p)| w * p)
                    .sum();
                out.push(e.max(f32::EPSILON).ln());
            }
        }
    }
}

/// Subtracts each band's mean over time, the per-utterance normalisation CAM++ was trained with.
pub fn subtract_mean(features: &mut [f32]) {
    let frames = features.len() / NUM_MEL;
    if frames == 0 {
        return;
    }
    let mut mean = [0.0f64; NUM_MEL];
    for frame in features.chunks_exact(NUM_MEL) {
        for (m, &x) in mean.iter_mut().zip(frame) {
            *m += x as f64;
        }
    }
    for m in &mut mean {
        *m /= frames as f64;
    }
    for frame in features.chunks_exact_mut(NUM_MEL) {
        for (x, &m) in frame.iter_mut().zip(&mean) {
            *x = (*x as f64 - m) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_count_follows_snip_edges() {
        assert_eq!(Fbank::num_frames(399), 0);
        assert_eq!(Fbank::num_frames(400), 1);
        assert_eq!(Fbank::num_frames(559), 1);
        assert_eq!(Fbank::num_frames(560), 2);
        assert_eq!(Fbank::num_frames(16_000), 98);
    }

    #[test]
    fn tone_peaks_in_its_band_and_silence_hits_the_floor() {
        let mut fb = Fbank::new();
        let tone: Vec<f32> = (0..16_000)
            .map(|i| 0.5 * (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 16_000.0).sin())
            .collect();
        let mut out = Vec::new();
        fb.compute(&tone, &mut out);
        assert_eq!(out.len(), 98 * NUM_MEL);
        let frame = &out[50 * NUM_MEL..51 * NUM_MEL];
        let peak =
            frame.iter().enumerate().fold(
                (0, f32::MIN),
                |acc, (i, &v)| if v > acc.1 { (i, v) } else { acc },
            );
        // 1 kHz is 1000 mel; centres are 34.7 mel apart from 66 mel, so band ≈ 27.
        assert!((26..=28).contains(&peak.0), "peak band {}", peak.0);

        fb.compute(&[0.0; 800], &mut out);
        assert!(out.iter().all(|&v| (v - f32::EPSILON.ln()).abs() < 1e-6));
    }

    #[test]
    fn mean_subtraction_zeroes_each_band() {
        let mut feats: Vec<f32> = (0..10 * NUM_MEL).map(|i| (i % 7) as f32).collect();
        subtract_mean(&mut feats);
        for b in 0..NUM_MEL {
            let s: f32 = feats.iter().skip(b).step_by(NUM_MEL).sum();
            assert!(s.abs() < 1e-4);
        }
    }
}
