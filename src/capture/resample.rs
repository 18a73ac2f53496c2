//! Streaming, multi-channel resampling to 16 kHz for capture: audio arrives in pieces (a device
//! callback's worth, a replay's read), and the output must line up with the input in time
//! (`crate::audio::resample_to_16k` does the same for a whole mono buffer).

use rubato::{FftFixedIn, Resampler};

use super::{CaptureError, SAMPLE_RATE};

/// Input frames per resampler call: ~21 ms at 48 kHz, small enough for live latency.
const CHUNK: usize = 1024;

pub(crate) struct StreamResampler {
    channels: usize,
    from_rate: u32,
    inner: Option<FftFixedIn<f32>>,
    /// Input not yet resampled, per channel.
    input: Vec<Vec<f32>>,
    output: Vec<Vec<f32>>,
    /// Output frames still to discard: the resampler's delay, so output frame n is time n/16k.
    skip: usize,
    frames_in: u64,
    frames_out: u64,
}

impl StreamResampler {
    pub(crate) fn new(from_rate: u32, channels: u16) -> Result<StreamResampler, CaptureError> {
        let channels = usize::from(channels.max(1));
        let (inner, output, skip) = if from_rate == SAMPLE_RATE {
            (None, Vec::new(), 0)
        } else {
            let resampler = FftFixedIn::<f32>::new(
                from_rate as usize,
                SAMPLE_RATE as usize,
                CHUNK,
                2,
                channels,
            )
            .map_err(|e| CaptureError::Resample {
                from: from_rate,
                reason: e.to_string(),
            })?;
            let output = resampler.output_buffer_allocate(true);
            let skip = resampler.output_delay();
            (Some(resampler), output, skip)
        };
        Ok(StreamResampler {
            channels,
            from_rate,
            inner,
            input: vec![Vec::new(); channels],
            output,
            skip,
            frames_in: 0,
            frames_out: 0,
        })
    }

    fn error(&self, e: impl std::fmt::Display) -> CaptureError {
        CaptureError::Resample {
            from: self.from_rate,
            reason: e.to_string(),
        }
    }

    /// Takes interleaved frames at the source rate; appends whatever 16 kHz frames are ready
    /// to `out`, interleaved.
    pub(crate) fn push(
        &mut self,
        interleaved: &[f32],
        out: &mut Vec<f32>,
    ) -> Result<(), CaptureError> {
        let frames = interleaved.len() / self.channels;
        let interleaved = &interleaved[..frames * self.channels];
        self.frames_in += frames as u64;
        if self.inner.is_none() {
            out.extend_from_slice(interleaved);
            self.frames_out += frames as u64;
            return Ok(());
        }
        for frame in interleaved.chunks_exact(self.channels) {
            for (channel, &sample) in self.input.iter_mut().zip(frame) {
                channel.push(sample);
            }
        }
        self.run(out)
    }

    /// Silence standing in for `frames` source frames that were lost, keeping time.
    pub(crate) fn push_silence(
        &mut self,
        frames: usize,
        out: &mut Vec<f32>,
    ) -> Result<(), CaptureError> {
        self.frames_in += frames as u64;
        if self.inner.is_none() {
            out.resize(out.len() + frames * self.channels, 0.0);
            self.frames_out += frames as u64;
            return Ok(());
        }
        for channel in &mut self.input {
            channel.resize(channel.len() + frames, 0.0);
        }
        self.run(out)
    }

    fn run(&mut self, out: &mut Vec<f32>) -> Result<(), CaptureError> {
        loop {
            let Some(resampler) = self.inner.as_mut() else {
                return Ok(());
            };
            let needed = resampler.input_frames_next();
            if self.input.first().map_or(0, Vec::len) < needed {
                return Ok(());
            }
            let slices: Vec<&[f32]> = self.input.iter().map(|c| &c[..needed]).collect();
            let result = resampler.process_into_buffer(&slices, &mut self.output, None);
            let (_, written) = result.map_err(|e| self.error(e))?;
            for channel in &mut self.input {
                channel.drain(..needed);
            }
            self.emit(written, None, out);
        }
    }

    /// Flushes the resampler so that the output holds exactly the input's duration at 16 kHz.
    pub(crate) fn finish(&mut self, out: &mut Vec<f32>) -> Result<(), CaptureError> {
        let expected = self.frames_in * u64::from(SAMPLE_RATE) / u64::from(self.from_rate);
        let Some(resampler) = self.inner.as_mut() else {
            return Ok(());
        };
        let rest: Vec<&[f32]> = self.input.iter().map(Vec::as_slice).collect();
        let result = resampler.process_partial_into_buffer(Some(&rest), &mut self.output, None);
        let (_, written) = result.map_err(|e| self.error(e))?;
        for channel in &mut self.input {
            channel.clear();
        }
        self.emit(written, Some(expected), out);
        while self.frames_out < expected {
            let Some(resampler) = self.inner.as_mut() else {
                break;
            };
            let result =
                resampler.process_partial_into_buffer(None::<&[&[f32]]>, &mut self.output, None);
            let (_, written) = result.map_err(|e| self.error(e))?;
            if written == 0 {
                break;
            }
            self.emit(written, Some(expected), out);
        }
        Ok(())
    }

    fn emit(&mut self, written: usize, limit: Option<u64>, out: &mut Vec<f32>) {
        let skipped = self.skip.min(written);
        self.skip -= skipped;
        let mut frames = written - skipped;
        if let Some(limit) = limit {
            frames =
                frames.min(usize::try_from(limit.saturating_sub(self.frames_out)).unwrap_or(0));
        }
        out.reserve(frames * self.channels);
        for i in skipped..skipped + frames {
            for channel in &self.output {
                out.push(channel.get(i).copied().unwrap_or(0.0));
            }
        }
        self.frames_out += frames as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_of_any_size_resample_to_the_input_duration_in_time() {
        let rate = 48_000u32;
        let seconds = 1.5;
        let n = (rate as f64 * seconds) as usize;
        // Channel 0 a 440 Hz tone, channel 1 its negative: channels must not mix.
        let mut interleaved = Vec::with_capacity(n * 2);
        for i in 0..n {
            let v = (2.0 * std::f32::consts::PI * 440.0 * i as f32 / rate as f32).sin() * 0.5;
            interleaved.extend([v, -v]);
        }
        let mut resampler = StreamResampler::new(rate, 2).unwrap();
        let mut out = Vec::new();
        for piece in interleaved.chunks(2 * 777) {
            resampler.push(piece, &mut out).unwrap();
        }
        resampler.finish(&mut out).unwrap();
        assert_eq!(out.len(), 24_000 * 2);
        // Within 0.04 of the reference = within half a 16 kHz sample of the right time (the
        // FFT resampler's delay is compensated to the whole sample).
        for (i, frame) in out.chunks_exact(2).enumerate().skip(200).take(23_000) {
            let expected = (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 16_000.0).sin() * 0.5;
            assert!(
                (frame[0] - expected).abs() < 0.04,
                "frame {i}: {} vs {expected}",
                frame[0]
            );
            assert!((frame[0] + frame[1]).abs() < 1e-4);
        }
    }
}
