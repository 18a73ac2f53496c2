//! Beamforming for the tabletop array: delay-and-sum (the baseline) and MVDR (the better one
//! where a directional noise source dominates), on one short-time Fourier transform.
//!
//! Both beamformers are a set of complex weights per frequency bin, `y(k) = w(k)ᴴ x(k)`, applied
//! in a weighted overlap-add STFT (periodic sqrt-Hann analysis and synthesis windows, hop a
//! divisor of the frame, so an all-pass weight reconstructs the input exactly, delayed by
//! [`Beamformer::latency`] samples). Fractional steering delays are therefore exact phase shifts
//! per bin, with no interpolation filter to tune. The array's delays are a few samples against a
//! frame of hundreds, so the circular shift inside each tapered frame is negligible.
//!
//! - Delay-and-sum: `w_m(k) = d_m(k) / M` with the steering vector `d_m(k) = e^{-jωₖτ_m}`. It
//!   aligns the target and averages away uncorrelated noise (≈ 10·log₁₀ M dB), but a 15 cm array
//!   barely rejects a directional interferer below a few kHz.
//! - MVDR: `w(k) = R(k)⁻¹d(k) / (d(k)ᴴR(k)⁻¹d(k))`, with `R(k)` the noise covariance averaged over
//!   frames the caller marks as non-speech ([`Beamformer::mark_noise`]) plus diagonal loading
//!   (robustness to steering errors and a short noise history). Distortionless toward the target
//!   while placing nulls on whatever the noise frames contained.
//!
//! Steering delays come from geometry ([`far_field_delays`]) or from GCC-PHAT against a reference
//! mic ([`estimate_delays`]). Weights are computed when steering changes, never per frame;
//! processing a hop allocates nothing.

use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};

use super::gcc_phat::GccPhat;
use super::FrontendError;

/// An STFT beamformer for `channels` mics; build once per array and frame size.
pub struct Beamformer {
    channels: usize,
    fft_len: usize,
    hop: usize,
    bins: usize,
    /// Periodic sqrt-Hann, used for both analysis and synthesis.
    window: Vec<f32>,
    /// Scales the overlap-added output so the squared windows sum to exactly 1.
    ola_gain: f32,
    fwd: Arc<dyn RealToComplex<f32>>,
    inv: Arc<dyn ComplexToReal<f32>>,
    /// The last `fft_len` samples of each channel, channel-major.
    history: Vec<f32>,
    time: Vec<f32>,
    /// The last frame's spectra, channel-major (`[ch * bins + k]`).
    spectra: Vec<Complex<f32>>,
    out_spec: Vec<Complex<f32>>,
    ola: Vec<f32>,
    /// Per-bin weights, bin-major (`[k * channels + m]`).
    weights: Vec<Complex<f32>>,
    scratch_fwd: Vec<Complex<f32>>,
    scratch_inv: Vec<Complex<f32>>,
    /// Zero-padded tail of a signal in [`Beamformer::process`].
    pad: Vec<f32>,
    noise: NoiseCovariance,
    solver: Solver,
}

impl Beamformer {
    /// A beamformer for `channels` mics with frames of `fft_len` samples advanced by `hop`
    /// (`hop` must divide `fft_len` and be at most half of it; 512/256 at 16 kHz is a good
    /// start). It starts as the plain average of the channels (delay-and-sum steered broadside).
    pub fn new(channels: usize, fft_len: usize, hop: usize) -> Result<Self, FrontendError> {
        if channels == 0 {
            return Err(FrontendError::Parameter(
                "a beamformer needs at least one channel",
            ));
        }
        if fft_len < 4 || !fft_len.is_multiple_of(2) {
            return Err(FrontendError::Parameter(
                "beamformer frame length must be even and ≥ 4",
            ));
        }
        if hop == 0 || !fft_len.is_multiple_of(hop) || fft_len / hop < 2 {
            return Err(FrontendError::Parameter(
                "beamformer hop must divide the frame length and be at most half of it",
            ));
        }
        let mut planner = RealFftPlanner::<f32>::new();
        let fwd = planner.plan_fft_forward(fft_len);
        let inv = planner.plan_fft_inverse(fft_len);
        let bins = fft_len / 2 + 1;
        let window = (0..fft_len)
            .map(|n| (std::f32::consts::PI * n as f32 / fft_len as f32).sin())
            .collect();
        // The periodic Hann (the squared window) sums to fft_len / (2 hop) at this overlap; the
        // inverse FFT is unnormalized, hence the extra 1 / fft_len.
        let ola_gain = 2.0 * hop as f32 / fft_len as f32 / fft_len as f32;
        let mut bf = Self {
            channels,
            fft_len,
            hop,
            bins,
            window,
            ola_gain,
            time: fwd.make_input_vec(),
            scratch_fwd: fwd.make_scratch_vec(),
            out_spec: inv.make_input_vec(),
            scratch_inv: inv.make_scratch_vec(),
            fwd,
            inv,
            history: vec![0.0; channels * fft_len],
            spectra: vec![Complex::new(0.0, 0.0); channels * bins],
            ola: vec![0.0; fft_len],
            weights: vec![Complex::new(0.0, 0.0); bins * channels],
            pad: vec![0.0; hop],
            noise: NoiseCovariance::new(channels, bins),
            solver: Solver::new(channels),
        };
        let broadside = vec![0.0; channels];
        bf.steer(&broadside)?;
        Ok(bf)
    }

    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Samples per hop: the length of each input and output block of [`process_hop`](Self::process_hop).
    pub fn hop(&self) -> usize {
        self.hop
    }

    /// Samples between an input sample and the output sample it ends up in.
    pub fn latency(&self) -> usize {
        self.fft_len - self.hop
    }

    /// Delay-and-sum toward `delays`: each mic's arrival delay in samples (fractional) relative
    /// to the reference mic, as from [`far_field_delays`] or [`estimate_delays`]. The output is
    /// aligned with the mic whose delay is 0.
    pub fn steer(&mut self, delays: &[f32]) -> Result<(), FrontendError> {
        self.check_channels(delays.len())?;
        let scale = 1.0 / self.channels as f32;
        for k in 0..self.bins {
            for (m, &tau) in delays.iter().enumerate() {
                self.weights[k * self.channels + m] = steering(k, self.fft_len, tau) * scale;
            }
        }
        Ok(())
    }

    /// MVDR toward `delays` using the noise frames marked so far. `loading` is the diagonal
    /// loading relative to the mean noise power per mic (1e-2 is a robust default; larger moves
    /// MVDR toward delay-and-sum). Errors if no noise frame has been marked.
    pub fn steer_mvdr(&mut self, delays: &[f32], loading: f32) -> Result<(), FrontendError> {
        self.check_channels(delays.len())?;
        if self.noise.frames == 0 {
            return Err(FrontendError::Parameter(
                "MVDR needs noise statistics: mark non-speech frames first",
            ));
        }
        if !(loading >= 0.0 && loading.is_finite()) {
            return Err(FrontendError::Parameter(
                "MVDR loading must be finite and ≥ 0",
            ));
        }
        let m_count = self.channels;
        let inv_frames = 1.0 / self.noise.weight;
        for k in 0..self.bins {
            let r = &self.noise.sum[k * m_count * m_count..(k + 1) * m_count * m_count];
            let trace: f64 = (0..m_count).map(|i| r[i * m_count + i].re).sum::<f64>() * inv_frames;
            // The absolute floor keeps a bin the noise never reached (e.g. DC of a high-passed
            // capture) solvable; it then falls back to delay-and-sum, which is MVDR for white noise.
            let load = f64::from(loading) * trace / m_count as f64 + 1e-20;
            for (i, &tau) in delays.iter().enumerate() {
                let d = steering(k, self.fft_len, tau);
                self.solver.d[i] = Complex::new(f64::from(d.re), f64::from(d.im));
            }
            for (dst, src) in self.solver.a.iter_mut().zip(r) {
                *dst = src * inv_frames;
            }
            for i in 0..m_count {
                self.solver.a[i * m_count + i] += load;
            }
            let w = &mut self.weights[k * m_count..(k + 1) * m_count];
            match self.solver.mvdr() {
                Some(()) => {
                    for (wi, xi) in w.iter_mut().zip(&self.solver.x) {
                        *wi = Complex::new(xi.re as f32, xi.im as f32);
                    }
                }
                None => {
                    let scale = 1.0 / m_count as f32;
                    for (wi, di) in w.iter_mut().zip(&self.solver.d) {
                        *wi = Complex::new(di.re as f32, di.im as f32) * scale;
                    }
                }
            }
        }
        Ok(())
    }

    /// Adds the frame analysed by the last [`process_hop`](Self::process_hop) to the noise
    /// statistics: call it for hops the VAD judged non-speech.
    pub fn mark_noise(&mut self) {
        self.noise.accumulate(&self.spectra);
    }

    /// Noise frames accumulated so far.
    pub fn noise_frames(&self) -> u64 {
        self.noise.frames
    }

    /// How fast old noise frames fade: each marked frame multiplies the statistics so far by
    /// `factor` before adding itself, so they cover about `1 / (1 - factor)` recent frames (0.99
    /// at a 16 ms hop: about 1.6 s of noise). 1, the default, weighs every frame equally, for a
    /// steady room; less than 1 follows a fan that starts or a door that opens.
    pub fn set_noise_forgetting(&mut self, factor: f32) -> Result<(), FrontendError> {
        if !(factor > 0.0 && factor <= 1.0) {
            return Err(FrontendError::Parameter(
                "noise forgetting factor must be in (0, 1]",
            ));
        }
        self.noise.forget = f64::from(factor);
        Ok(())
    }

    /// Forgets the noise statistics (a new room, a moved array).
    pub fn clear_noise(&mut self) {
        self.noise.clear();
    }

    /// Forgets the stream (history and overlap-add state), keeping weights and noise statistics.
    pub fn reset_stream(&mut self) {
        self.history.fill(0.0);
        self.ola.fill(0.0);
        self.spectra.fill(Complex::new(0.0, 0.0));
    }

    /// One hop: `input` holds one block of [`hop`](Self::hop) samples per channel, `output`
    /// receives one block of the beamformed signal, [`latency`](Self::latency) samples late.
    pub fn process_hop<S: AsRef<[f32]>>(
        &mut self,
        input: &[S],
        output: &mut [f32],
    ) -> Result<(), FrontendError> {
        self.check_channels(input.len())?;
        for block in input {
            self.check_len(block.as_ref().len(), self.hop)?;
        }
        self.check_len(output.len(), self.hop)?;
        for (ch, block) in input.iter().enumerate() {
            self.analyse(ch, block.as_ref())?;
        }
        self.synthesise(output)
    }

    /// Beamforms whole signals (equal lengths) into `output` (the same length), compensating
    /// the latency so `output[n]` lines up with sample `n` of the mic whose delay is 0. Resets
    /// the stream state first; weights and noise statistics are kept.
    pub fn process<S: AsRef<[f32]>>(
        &mut self,
        channels: &[S],
        output: &mut [f32],
    ) -> Result<(), FrontendError> {
        self.check_channels(channels.len())?;
        let n = output.len();
        for ch in channels {
            self.check_len(ch.as_ref().len(), n)?;
        }
        self.reset_stream();
        let latency = self.latency();
        let hops = (n + latency).div_ceil(self.hop);
        for b in 0..hops {
            let start = b * self.hop;
            for (ch, signal) in channels.iter().enumerate() {
                let signal = signal.as_ref();
                let end = (start + self.hop).min(n);
                if end == start + self.hop {
                    self.analyse(ch, &signal[start..end])?;
                } else {
                    // Past the end: the stream continues with silence until the latency is out.
                    let mut pad = std::mem::take(&mut self.pad);
                    pad.fill(0.0);
                    if start < end {
                        pad[..end - start].copy_from_slice(&signal[start..end]);
                    }
                    let result = self.analyse(ch, &pad);
                    self.pad = pad;
                    result?;
                }
            }
            // This hop completes output samples [start - latency, start - latency + hop).
            let mut block = std::mem::take(&mut self.pad);
            let result = self.synthesise(&mut block);
            if result.is_ok() {
                for (i, &v) in block.iter().enumerate() {
                    let t = (start + i).checked_sub(latency);
                    if let Some(slot) = t.and_then(|t| output.get_mut(t)) {
                        *slot = v;
                    }
                }
            }
            self.pad = block;
            result?;
        }
        Ok(())
    }

    /// Shifts one hop into a channel's history and transforms the windowed frame.
    fn analyse(&mut self, ch: usize, block: &[f32]) -> Result<(), FrontendError> {
        let hist = &mut self.history[ch * self.fft_len..(ch + 1) * self.fft_len];
        hist.copy_within(self.hop.., 0);
        hist[self.fft_len - self.hop..].copy_from_slice(block);
        for ((t, h), w) in self.time.iter_mut().zip(hist.iter()).zip(&self.window) {
            *t = h * w;
        }
        let spec = &mut self.spectra[ch * self.bins..(ch + 1) * self.bins];
        self.fwd
            .process_with_scratch(&mut self.time, spec, &mut self.scratch_fwd)?;
        Ok(())
    }

    /// Applies the weights to the current spectra and overlap-adds one output hop.
    fn synthesise(&mut self, output: &mut [f32]) -> Result<(), FrontendError> {
        for k in 0..self.bins {
            let w = &self.weights[k * self.channels..(k + 1) * self.channels];
            let mut y = Complex::new(0.0f32, 0.0);
            for (m, wm) in w.iter().enumerate() {
                y += wm.conj() * self.spectra[m * self.bins + k];
            }
            self.out_spec[k] = y;
        }
        // A real signal's DC and Nyquist bins are real; weights may leave rounding there.
        self.out_spec[0].im = 0.0;
        self.out_spec[self.bins - 1].im = 0.0;
        self.inv
            .process_with_scratch(&mut self.out_spec, &mut self.time, &mut self.scratch_inv)?;
        for ((acc, t), w) in self.ola.iter_mut().zip(&self.time).zip(&self.window) {
            *acc += t * w * self.ola_gain;
        }
        output.copy_from_slice(&self.ola[..self.hop]);
        self.ola.copy_within(self.hop.., 0);
        let tail = self.fft_len - self.hop;
        self.ola[tail..].fill(0.0);
        Ok(())
    }

    fn check_channels(&self, got: usize) -> Result<(), FrontendError> {
        if got == self.channels {
            Ok(())
        } else {
            Err(FrontendError::Channels {
                expected: self.channels,
                got,
            })
        }
    }

    fn check_len(&self, got: usize, expected: usize) -> Result<(), FrontendError> {
        if got == expected {
            Ok(())
        } else {
            Err(FrontendError::Length { expected, got })
        }
    }
}

/// `e^{-jωₖτ}`: the phase a delay of `tau` samples puts on bin `k` of an `n`-point FFT.
fn steering(k: usize, n: usize, tau: f32) -> Complex<f32> {
    let phase = -2.0 * std::f64::consts::PI * k as f64 * f64::from(tau) / n as f64;
    Complex::new(phase.cos() as f32, phase.sin() as f32)
}

/// Sum of `x xᴴ` over noise frames, per bin, in f64 (thousands of frames are summed),
/// optionally exponentially forgotten.
struct NoiseCovariance {
    channels: usize,
    bins: usize,
    /// Bin-major M×M matrices: `[k * M * M + i * M + j] = Σ x_i x_j*`.
    sum: Vec<Complex<f64>>,
    frames: u64,
    /// Total weight of the frames in `sum` (their count when nothing is forgotten).
    weight: f64,
    /// Factor applied to the old statistics at each new frame; 1 keeps them all.
    forget: f64,
}

impl NoiseCovariance {
    fn new(channels: usize, bins: usize) -> Self {
        Self {
            channels,
            bins,
            sum: vec![Complex::new(0.0, 0.0); bins * channels * channels],
            frames: 0,
            weight: 0.0,
            forget: 1.0,
        }
    }

    /// Adds one frame of channel-major spectra.
    fn accumulate(&mut self, spectra: &[Complex<f32>]) {
        let m_count = self.channels;
        if self.forget < 1.0 {
            let forget = self.forget;
            self.sum.iter_mut().for_each(|v| *v *= forget);
        }
        for k in 0..self.bins {
            let r = &mut self.sum[k * m_count * m_count..(k + 1) * m_count * m_count];
            for i in 0..m_count {
                let xi = spectra[i * self.bins + k];
                let xi = Complex::new(f64::from(xi.re), f64::from(xi.im));
                for j in 0..m_count {
                    let xj = spectra[j * self.bins + k];
                    let xj = Complex::new(f64::from(xj.re), f64::from(xj.im));
                    r[i * m_count + j] += xi * xj.conj();
                }
            }
        }
        self.frames += 1;
        self.weight = self.weight * self.forget + 1.0;
    }

    fn clear(&mut self) {
        self.sum.fill(Complex::new(0.0, 0.0));
        self.frames = 0;
        self.weight = 0.0;
    }
}

/// Preallocated complex linear solver for the MVDR weights of one bin.
struct Solver {
    m: usize,
    /// Row-major `R + λI`, overwritten by the elimination.
    a: Vec<Complex<f64>>,
    d: Vec<Complex<f64>>,
    x: Vec<Complex<f64>>,
}

impl Solver {
    fn new(m: usize) -> Self {
        Self {
            m,
            a: vec![Complex::new(0.0, 0.0); m * m],
            d: vec![Complex::new(0.0, 0.0); m],
            x: vec![Complex::new(0.0, 0.0); m],
        }
    }

    /// `x = A⁻¹d / (dᴴA⁻¹d)`; `None` if `A` is numerically singular or the result degenerate.
    /// Gaussian elimination with partial pivoting: M is at most a handful of mics, and the
    /// loaded covariance is well conditioned, so nothing fancier pays off.
    fn mvdr(&mut self) -> Option<()> {
        let m = self.m;
        let a = &mut self.a;
        let x = &mut self.x;
        x.copy_from_slice(&self.d);
        for col in 0..m {
            let pivot = (col..m).max_by(|&p, &q| {
                a[p * m + col]
                    .norm_sqr()
                    .total_cmp(&a[q * m + col].norm_sqr())
            })?;
            if a[pivot * m + col].norm_sqr() < 1e-300 {
                return None;
            }
            if pivot != col {
                for j in 0..m {
                    a.swap(pivot * m + j, col * m + j);
                }
                x.swap(pivot, col);
            }
            let diag = a[col * m + col];
            for row in col + 1..m {
                let f = a[row * m + col] / diag;
                for j in col..m {
                    let v = a[col * m + j];
                    a[row * m + j] -= f * v;
                }
                let v = x[col];
                x[row] -= f * v;
            }
        }
        for row in (0..m).rev() {
            let mut s = x[row];
            for j in row + 1..m {
                s -= a[row * m + j] * x[j];
            }
            x[row] = s / a[row * m + row];
        }
        let denom: Complex<f64> = self.d.iter().zip(x.iter()).map(|(d, x)| d.conj() * x).sum();
        if !(denom.norm() > 1e-300 && denom.re.is_finite()) {
            return None;
        }
        x.iter_mut().for_each(|v| *v /= denom);
        Some(())
    }
}

/// Far-field arrival delays in samples relative to mic 0, for mics at `positions` (metres) and
/// a source in the direction of the unit vector `toward_source`. A mic nearer the source hears
/// it earlier (negative delay).
pub fn far_field_delays(
    positions: &[[f32; 3]],
    toward_source: [f32; 3],
    sample_rate: f32,
    speed_of_sound: f32,
    delays: &mut [f32],
) -> Result<(), FrontendError> {
    if delays.len() != positions.len() {
        return Err(FrontendError::Length {
            expected: positions.len(),
            got: delays.len(),
        });
    }
    let Some(origin) = positions.first() else {
        return Ok(());
    };
    for (d, p) in delays.iter_mut().zip(positions) {
        let along: f32 = (0..3).map(|i| (origin[i] - p[i]) * toward_source[i]).sum();
        *d = along / speed_of_sound * sample_rate;
    }
    Ok(())
}

/// Steering delays from the audio: GCC-PHAT of every channel against `reference` over one frame
/// (each channel `gcc.frame_len()` samples), searched within ±`max_delay` samples (the array's
/// aperture in samples). Writes one delay per channel (0 for the reference) and returns the
/// lowest correlation peak, so the caller can keep the old steering when the frame was not
/// dominated by one source.
pub fn estimate_delays<S: AsRef<[f32]>>(
    gcc: &mut GccPhat,
    channels: &[S],
    reference: usize,
    max_delay: usize,
    delays: &mut [f32],
) -> Result<f32, FrontendError> {
    if delays.len() != channels.len() {
        return Err(FrontendError::Length {
            expected: channels.len(),
            got: delays.len(),
        });
    }
    let Some(reference_frame) = channels.get(reference) else {
        return Err(FrontendError::Parameter(
            "reference mic is not one of the channels",
        ));
    };
    gcc.set_reference(reference_frame.as_ref())?;
    let mut weakest = 1.0f32;
    for (m, (ch, d)) in channels.iter().zip(delays.iter_mut()).enumerate() {
        if m == reference {
            *d = 0.0;
            continue;
        }
        let est = gcc.delay_from_reference(ch.as_ref(), max_delay)?;
        *d = est.delay;
        weakest = weakest.min(est.peak);
    }
    Ok(weakest)
}

#[cfg(test)]
mod tests {
    use super::super::test_signals::{at_mics, ula_delays, XorShift};
    use super::super::SnrGain;
    use super::*;

    const FFT: usize = 512;
    const HOP: usize = 256;

    fn add(a: &[f32], b: &[f32]) -> Vec<f32> {
        a.iter().zip(b).map(|(x, y)| x + y).collect()
    }

    /// Runs the beamformer on each component alone (it is linear) and measures against mic 0,
    /// away from the edges where the circular test signals wrap.
    fn gain(bf: &mut Beamformer, target: &[Vec<f32>], noise: &[Vec<f32>]) -> SnrGain {
        let n = target[0].len();
        let mut out_t = vec![0.0; n];
        let mut out_n = vec![0.0; n];
        bf.process(target, &mut out_t).unwrap();
        bf.process(noise, &mut out_n).unwrap();
        let r = 2 * FFT..n - 2 * FFT;
        SnrGain::measure(
            &target[0][r.clone()],
            &noise[0][r.clone()],
            &out_t[r.clone()],
            &out_n[r],
        )
    }

    #[test]
    fn reconstructs_a_single_channel_exactly() {
        let mut rng = XorShift::new(5);
        let x = rng.white(4000);
        let mut bf = Beamformer::new(1, FFT, HOP).unwrap();
        let mut y = vec![0.0; x.len()];
        bf.process(&[&x], &mut y).unwrap();
        let err = x
            .iter()
            .zip(&y)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(err < 1e-4, "max reconstruction error {err}");
        // Quarter-overlap hops reconstruct too.
        let mut bf = Beamformer::new(1, FFT, FFT / 4).unwrap();
        bf.process(&[&x], &mut y).unwrap();
        let err = x
            .iter()
            .zip(&y)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(err < 1e-4, "max reconstruction error {err}");
    }

    #[test]
    fn hop_by_hop_matches_whole_signal_processing() {
        let mut rng = XorShift::new(9);
        let mics: Vec<Vec<f32>> = (0..3).map(|_| rng.white(HOP * 12)).collect();
        let mut bf = Beamformer::new(3, FFT, HOP).unwrap();
        bf.steer(&[0.0, 0.7, -1.3]).unwrap();
        let mut whole = vec![0.0; HOP * 12];
        bf.process(&mics, &mut whole).unwrap();
        bf.reset_stream();
        let mut block = vec![0.0; HOP];
        let lat = bf.latency();
        for b in 0..12 {
            let input: Vec<&[f32]> = mics.iter().map(|m| &m[b * HOP..(b + 1) * HOP]).collect();
            bf.process_hop(&input, &mut block).unwrap();
            for (i, v) in block.iter().enumerate() {
                if let Some(t) = (b * HOP + i).checked_sub(lat) {
                    assert!((whole[t] - v).abs() < 1e-5);
                }
            }
        }
    }

    /// 4 mics, 5 cm, 16 kHz; white target at 40°, independent white noise at 0 dB per mic;
    /// steering estimated by GCC-PHAT on the noisy mixture. Theory: 10·log₁₀ 4 = 6.02 dB.
    #[test]
    fn delay_and_sum_gains_at_least_5_db_with_4_mics() {
        let mut rng = XorShift::new(2024);
        let n = 16_384;
        let truth = ula_delays(4, 0.05, 40.0);
        let target = at_mics(&rng.white(n), &truth);
        let noise: Vec<Vec<f32>> = (0..4).map(|_| rng.white(n)).collect();
        let mixture: Vec<Vec<f32>> = target.iter().zip(&noise).map(|(t, v)| add(t, v)).collect();

        let mut gcc = GccPhat::new(4096, 4).unwrap();
        let frames: Vec<&[f32]> = mixture.iter().map(|m| &m[6000..10_096]).collect();
        let mut delays = [0.0f32; 4];
        let peak = estimate_delays(&mut gcc, &frames, 0, 8, &mut delays).unwrap();
        for (d, t) in delays.iter().zip(&truth) {
            assert!((d - t).abs() < 0.25, "delays {delays:?} truth {truth:?}");
        }

        let mut bf = Beamformer::new(4, FFT, HOP).unwrap();
        bf.steer(&delays).unwrap();
        let g = gain(&mut bf, &target, &noise);
        bf.steer(&truth).unwrap();
        let g_true = gain(&mut bf, &target, &noise);
        eprintln!(
            "delay-and-sum, 4 mics, 0 dB white noise: gain {:.2} dB (estimated steering, peak {peak:.2}), {:.2} dB (true steering)",
            g.gain_db(),
            g_true.gain_db()
        );
        assert!(g.gain_db() >= 5.0, "gain {:.2} dB", g.gain_db());
        assert!(
            g.gain_db() <= 6.5,
            "more than theory: {:.2} dB",
            g.gain_db()
        );
    }

    /// Target at 40°, a white directional interferer at −50° at the same level, sensor noise
    /// 10 dB below. MVDR learns the interferer from earlier noise-only frames and nulls it;
    /// delay-and-sum on a 15 cm aperture cannot.
    #[test]
    fn mvdr_beats_delay_and_sum_against_a_directional_interferer() {
        let mut rng = XorShift::new(77);
        let n = 16_384;
        let target = at_mics(&rng.white(n), &ula_delays(4, 0.05, 40.0));
        // Noise over twice the length: the first half trains MVDR, the second is the test.
        let interferer = at_mics(&rng.white(2 * n), &ula_delays(4, 0.05, -50.0));
        let noise_all: Vec<Vec<f32>> = interferer
            .iter()
            .map(|i| i.iter().map(|v| v + 0.316 * rng.gauss()).collect())
            .collect();
        let training: Vec<&[f32]> = noise_all.iter().map(|v| &v[..n]).collect();
        let noise: Vec<Vec<f32>> = noise_all.iter().map(|v| v[n..].to_vec()).collect();
        let steer = ula_delays(4, 0.05, 40.0);

        let mut bf = Beamformer::new(4, FFT, HOP).unwrap();
        bf.steer(&steer).unwrap();
        let das = gain(&mut bf, &target, &noise);

        assert!(bf.steer_mvdr(&steer, 1e-2).is_err(), "no noise frames yet");
        let mut block = vec![0.0; HOP];
        for b in 0..n / HOP {
            let input: Vec<&[f32]> = training
                .iter()
                .map(|m| &m[b * HOP..(b + 1) * HOP])
                .collect();
            bf.process_hop(&input, &mut block).unwrap();
            bf.mark_noise();
        }
        assert_eq!(bf.noise_frames(), (n / HOP) as u64);
        bf.steer_mvdr(&steer, 1e-2).unwrap();
        let mvdr = gain(&mut bf, &target, &noise);
        eprintln!(
            "directional interferer at 0 dB + sensor noise at -10 dB: delay-and-sum {:.2} dB, MVDR {:.2} dB (input SNR {:.2} dB)",
            das.gain_db(),
            mvdr.gain_db(),
            das.input_db
        );
        assert!(
            mvdr.gain_db() > das.gain_db() + 3.0,
            "MVDR {:.2} dB vs delay-and-sum {:.2} dB",
            mvdr.gain_db(),
            das.gain_db()
        );
    }

    /// With only uncorrelated noise MVDR has nothing to null and must not lose to delay-and-sum
    /// (in theory they coincide): guards the covariance scaling and the loading.
    #[test]
    fn mvdr_matches_delay_and_sum_in_uncorrelated_noise() {
        let mut rng = XorShift::new(31);
        let n = 16_384;
        let steer = ula_delays(4, 0.05, -25.0);
        let target = at_mics(&rng.white(n), &steer);
        let noise: Vec<Vec<f32>> = (0..4).map(|_| rng.white(2 * n)).collect();
        let (training, test): (Vec<&[f32]>, Vec<Vec<f32>>) =
            noise.iter().map(|v| (&v[..n], v[n..].to_vec())).unzip();
        let mut bf = Beamformer::new(4, FFT, HOP).unwrap();
        bf.steer(&steer).unwrap();
        let das = gain(&mut bf, &target, &test);
        let mut block = vec![0.0; HOP];
        for b in 0..n / HOP {
            let input: Vec<&[f32]> = training
                .iter()
                .map(|m| &m[b * HOP..(b + 1) * HOP])
                .collect();
            bf.process_hop(&input, &mut block).unwrap();
            bf.mark_noise();
        }
        bf.steer_mvdr(&steer, 1e-2).unwrap();
        let mvdr = gain(&mut bf, &target, &test);
        eprintln!(
            "uncorrelated noise: delay-and-sum {:.2} dB, MVDR {:.2} dB",
            das.gain_db(),
            mvdr.gain_db()
        );
        assert!(
            mvdr.gain_db() > das.gain_db() - 0.5,
            "MVDR {:.2} dB vs delay-and-sum {:.2} dB",
            mvdr.gain_db(),
            das.gain_db()
        );
    }

    /// The interferer moves from −50° to +75°: with forgetting, MVDR trained on the old noise
    /// and then on a short stretch of the new one nulls the new position.
    #[test]
    fn forgetting_follows_a_moving_interferer() {
        let mut rng = XorShift::new(99);
        let n = 16_384;
        let steer = ula_delays(4, 0.05, 20.0);
        let target = at_mics(&rng.white(n), &steer);
        let old = at_mics(&rng.white(2 * n), &ula_delays(4, 0.05, -50.0));
        let new = at_mics(&rng.white(2 * n), &ula_delays(4, 0.05, 75.0));
        let with_sensor = |v: &Vec<f32>, rng: &mut XorShift| -> Vec<f32> {
            v.iter().map(|x| x + 0.316 * rng.gauss()).collect()
        };
        let old: Vec<Vec<f32>> = old.iter().map(|v| with_sensor(v, &mut rng)).collect();
        let new: Vec<Vec<f32>> = new.iter().map(|v| with_sensor(v, &mut rng)).collect();
        let test: Vec<Vec<f32>> = new.iter().map(|v| v[n..].to_vec()).collect();

        let mut gains = [0.0f64; 2];
        for (slot, factor) in gains.iter_mut().zip([1.0f32, 0.95]) {
            let mut bf = Beamformer::new(4, FFT, HOP).unwrap();
            bf.set_noise_forgetting(factor).unwrap();
            let mut block = vec![0.0; HOP];
            // A long history of the old interferer (2 s), then 48 hops (0.77 s) of the new one.
            for (source, hops) in [(&old, 2 * n / HOP), (&new, 48)] {
                for b in 0..hops {
                    let input: Vec<&[f32]> =
                        source.iter().map(|m| &m[b * HOP..(b + 1) * HOP]).collect();
                    bf.process_hop(&input, &mut block).unwrap();
                    bf.mark_noise();
                }
            }
            bf.steer_mvdr(&steer, 1e-2).unwrap();
            *slot = gain(&mut bf, &target, &test).gain_db();
        }
        eprintln!(
            "moving interferer: MVDR {:.2} dB without forgetting, {:.2} dB with 0.95",
            gains[0], gains[1]
        );
        // Four mics can null both positions at once, so without forgetting MVDR still does
        // something; what forgetting buys is the degrees of freedom spent on the old position.
        assert!(gains[1] > gains[0] + 2.5, "{gains:?}");
        let mut bf = Beamformer::new(1, FFT, HOP).unwrap();
        assert!(bf.set_noise_forgetting(0.0).is_err());
        assert!(bf.set_noise_forgetting(1.5).is_err());
    }

    #[test]
    fn mvdr_is_distortionless_toward_the_target() {
        let mut rng = XorShift::new(13);
        let n = 8192;
        let noise: Vec<Vec<f32>> = (0..4).map(|_| rng.white(n)).collect();
        let mut bf = Beamformer::new(4, FFT, HOP).unwrap();
        let mut block = vec![0.0; HOP];
        for b in 0..n / HOP {
            let input: Vec<&[f32]> = noise.iter().map(|m| &m[b * HOP..(b + 1) * HOP]).collect();
            bf.process_hop(&input, &mut block).unwrap();
            bf.mark_noise();
        }
        let steer = [0.0, 1.2, 2.4, 3.6];
        bf.steer_mvdr(&steer, 1e-2).unwrap();
        for k in 0..bf.bins {
            let resp: Complex<f32> = (0..4)
                .map(|m| bf.weights[k * 4 + m].conj() * steering(k, FFT, steer[m]))
                .sum();
            assert!(
                (resp - Complex::new(1.0, 0.0)).norm() < 1e-3,
                "bin {k}: {resp}"
            );
        }
        bf.clear_noise();
        assert_eq!(bf.noise_frames(), 0);
    }

    #[test]
    fn far_field_delays_of_a_linear_array_match_the_formula() {
        let positions = [
            [0.0, 0.0, 0.0],
            [0.05, 0.0, 0.0],
            [0.10, 0.0, 0.0],
            [0.15, 0.0, 0.0],
        ];
        // A source toward −x (beyond mic 0) at 40° from broadside (the y axis).
        let a = 40.0f32.to_radians();
        let mut delays = [0.0; 4];
        far_field_delays(
            &positions,
            [-a.sin(), a.cos(), 0.0],
            16_000.0,
            343.0,
            &mut delays,
        )
        .unwrap();
        for (d, t) in delays.iter().zip(ula_delays(4, 0.05, 40.0)) {
            assert!((d - t).abs() < 1e-4, "{delays:?}");
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        assert!(Beamformer::new(0, FFT, HOP).is_err());
        assert!(Beamformer::new(2, 511, 256).is_err());
        assert!(Beamformer::new(2, 512, 300).is_err());
        assert!(Beamformer::new(2, 512, 512).is_err());
        let mut bf = Beamformer::new(2, FFT, HOP).unwrap();
        assert!(bf.steer(&[0.0]).is_err());
        let a = vec![0.0; HOP];
        let mut out = vec![0.0; HOP];
        assert!(matches!(
            bf.process_hop(&[&a], &mut out),
            Err(FrontendError::Channels {
                expected: 2,
                got: 1
            })
        ));
        assert!(bf.process_hop(&[&a, &a[1..]], &mut out).is_err());
        assert!(bf.process_hop(&[&a, &a], &mut out).is_ok());
    }
}
