//! Alignment of a badge stream to an array channel: the offset between two recordings of the
//! same room whose clocks or start times differ (a badge file starting later, a USB device with
//! its own buffering).
//!
//! It is GCC-PHAT over a long window (seconds, not milliseconds): the badge hears the clinician
//! loud and the room faint, the array the reverse, so their spectra differ in colour but share
//! phase where they share a source, which is what the whitened correlation measures. The offset
//! is rounded to whole samples, because the streams are then shifted by whole samples; the
//! sub-sample part and the peak height are kept as a check. [`Aligner`] owns its buffers for one
//! window length; aligning allocates nothing.

use super::gcc_phat::GccPhat;
use super::FrontendError;

/// The offset found between the badge and the array.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Offset {
    /// Whole samples by which the badge lags the array: `badge[n] ≈ array[n - samples]`, so an
    /// event at array sample `t` is at badge sample `t + samples`.
    pub samples: i64,
    /// The unrounded estimate, in samples.
    pub exact: f32,
    /// Whitened correlation peak (0..~1); below ~0.05 the two windows share little and the
    /// offset should not be trusted.
    pub peak: f32,
}

/// Cross-correlation alignment over windows of a fixed length.
pub struct Aligner {
    gcc: GccPhat,
    max_offset: usize,
}

impl Aligner {
    /// An aligner for windows of `window_len` samples searching offsets up to ±`max_offset`
    /// samples (e.g. 8 s and 2 s at 16 kHz). The window must be longer than the offset, and
    /// should be several times longer so the streams overlap for most of it.
    pub fn new(window_len: usize, max_offset: usize) -> Result<Self, FrontendError> {
        if max_offset >= window_len {
            return Err(FrontendError::Parameter(
                "alignment window must be longer than the largest offset",
            ));
        }
        // Integer lags are the result; interpolating a correlation hundreds of thousands of
        // samples long would only double the cost.
        Ok(Self {
            gcc: GccPhat::new(window_len, 1)?,
            max_offset,
        })
    }

    /// The offset of `badge` against `array`, both windows of the length this aligner was built
    /// for and starting at the same nominal time.
    pub fn offset(&mut self, array: &[f32], badge: &[f32]) -> Result<Offset, FrontendError> {
        let est = self.gcc.estimate(array, badge, self.max_offset)?;
        Ok(Offset {
            samples: est.delay.round() as i64,
            exact: est.delay,
            peak: est.peak,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_signals::XorShift;
    use super::*;

    /// A speech-like source: noise bursts with syllable-rate gating and a low-pass colour.
    fn bursty_source(rng: &mut XorShift, len: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(len);
        let mut lp = 0.0f32;
        let mut gate = 1.0f32;
        for n in 0..len {
            if n % 2400 == 0 {
                gate = if rng.uniform() < 0.6 { 1.0 } else { 0.05 };
            }
            lp = 0.7 * lp + 0.3 * rng.gauss();
            out.push(gate * lp);
        }
        out
    }

    #[test]
    fn finds_a_0_73_s_offset_exactly() {
        const FS: usize = 16_000;
        let offset = 730 * FS / 1000; // 0.73 s = 11 680 samples
        let mut rng = XorShift::new(11);
        let source = bursty_source(&mut rng, 12 * FS);
        let start = FS;
        let window = 8 * FS;
        // The array hears the source faint in room noise; the badge hears it loud, with its own
        // colour (a first difference: a small mic's weak bass), later by `offset`.
        let array: Vec<f32> = (start..start + window)
            .map(|n| 0.3 * source[n] + 0.3 * rng.gauss())
            .collect();
        let badge: Vec<f32> = (start..start + window)
            .map(|n| {
                let s = |i: usize| source[i - offset];
                2.0 * (s(n) - 0.8 * s(n - 1)) + 0.1 * rng.gauss()
            })
            .collect();
        let mut aligner = Aligner::new(window, 2 * FS).unwrap();
        let found = aligner.offset(&array, &badge).unwrap();
        eprintln!(
            "alignment: true {offset}, found {} (exact {:.3}, peak {:.3})",
            found.samples, found.exact, found.peak
        );
        assert_eq!(found.samples, offset as i64);
        assert!(found.peak > 0.05);

        // And the other way round: the array lagging the badge.
        let found = aligner.offset(&badge, &array).unwrap();
        assert_eq!(found.samples, -(offset as i64));
    }

    #[test]
    fn offset_must_fit_in_the_window() {
        assert!(Aligner::new(1000, 1000).is_err());
        assert!(Aligner::new(1000, 999).is_ok());
    }
}
