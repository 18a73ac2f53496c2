//! Room-audio front end: the DSP between capture and VAD/ASR for a tabletop mic array and a
//! clinician's badge.
//!
//! - [`gcc_phat`]: time delay between two channels (GCC-PHAT, sub-sample), the building block of
//!   steering and of badge/array alignment.
//! - [`beamform`]: delay-and-sum (the baseline) and MVDR (noise statistics from frames the caller
//!   marks as non-speech) over one weighted-overlap-add STFT, so both share framing and latency
//!   and differ only in their per-bin weights.
//! - [`align`]: the offset of a badge stream against an array channel over a long window.
//! - [`embedding`]: CAM++ speaker embeddings (192-d) from the pinned state dict, over the
//!   Kaldi-compatible log-mel features of [`fbank`]; `load` reads the model file once.
//! - [`room`]: the whole room front end over a recording — alignment, speech detection,
//!   clinician and overlap from the badge, voices by direction and embedding, beamforming, and
//!   the signal the recogniser hears.
//! - [`silero`]: Silero VAD v6 (16 kHz) on tract-onnx, gated by webrtc-vad; `load` reads and
//!   rewrites the ONNX graph once.
//!
//! Invariants: everything here is pure and synchronous — no I/O, no async, no logging of audio.
//! Each processor allocates its FFT plans and buffers once, when it is built for a frame size;
//! processing a frame never allocates, so a real-time capture thread can call it. Wrong buffer
//! lengths are errors, never panics.

pub mod align;
pub mod beamform;
pub mod doa;
pub mod embedding;
pub mod fbank;
pub mod gcc_phat;
pub mod room;
pub mod silero;
pub mod speech;
pub mod stream;

/// Errors of the front end. They are programming or configuration errors (a buffer of the wrong
/// length, an array with no channels), not properties of the audio: silence and noise give
/// low-confidence results, not errors.
#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    #[error("buffer has {got} samples but this processor was built for {expected}")]
    Length { expected: usize, got: usize },
    #[error("got {got} channels but this processor was built for {expected}")]
    Channels { expected: usize, got: usize },
    #[error("invalid front-end parameter: {0}")]
    Parameter(&'static str),
    #[error("the {stage} model failed: {message}")]
    Model {
        stage: &'static str,
        message: String,
    },
    #[error("FFT failed: {0}")]
    Fft(#[from] realfft::FftError),
}

/// Signal-to-noise ratio in dB of a signal and the noise that accompanies it (same length),
/// from their energies. Both components are needed separately: the beamformers are linear, so
/// tests run the clean source and the noise through the same weights and compare the results.
/// Silence in the noise gives `f64::INFINITY`, silence in both gives `f64::NAN`.
pub fn snr_db(signal: &[f32], noise: &[f32]) -> f64 {
    10.0 * (energy(signal) / energy(noise)).log10()
}

fn energy(x: &[f32]) -> f64 {
    x.iter().map(|&v| f64::from(v) * f64::from(v)).sum()
}

/// An SNR before and after a processing stage (e.g. a reference mic versus the beamformer
/// output), so the benchmark and the tests report the same numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SnrGain {
    pub input_db: f64,
    pub output_db: f64,
}

impl SnrGain {
    /// Measures both SNRs from the separated components: the input's signal and noise (e.g. one
    /// reference mic) and the output's (the same stage applied to each component alone).
    pub fn measure(
        input_signal: &[f32],
        input_noise: &[f32],
        output_signal: &[f32],
        output_noise: &[f32],
    ) -> Self {
        Self {
            input_db: snr_db(input_signal, input_noise),
            output_db: snr_db(output_signal, output_noise),
        }
    }

    /// Output SNR minus input SNR: positive means the stage helped.
    pub fn gain_db(&self) -> f64 {
        self.output_db - self.input_db
    }
}

#[cfg(test)]
pub(crate) mod test_signals;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snr_of_equal_energies_is_zero_db() {
        let s = [1.0f32, -1.0, 1.0, -1.0];
        let n = [0.5f32, 0.5, -1.5, 0.5]; // energy 3 against the signal's 4
        assert!((snr_db(&s, &s) - 0.0).abs() < 1e-12);
        let expected = 10.0 * (4.0f64 / 3.0).log10();
        assert!((snr_db(&s, &n) - expected).abs() < 1e-9);
    }

    #[test]
    fn snr_gain_is_output_minus_input() {
        let g = SnrGain {
            input_db: 0.0,
            output_db: 6.0,
        };
        assert!((g.gain_db() - 6.0).abs() < 1e-12);
        let s = [1.0f32; 8];
        let n = [0.5f32; 8];
        let half = [0.25f32; 8];
        let g = SnrGain::measure(&s, &n, &s, &half);
        assert!((g.gain_db() - 20.0 * 2.0f64.log10()).abs() < 1e-9);
    }
}
