//! Audio in: WAV files of any sample rate, bit depth and channel count, brought to the one format
//! the rest of the pipeline uses — mono, 16 kHz, `f32` in [-1, 1]. Pure functions over buffers
//! apart from [`read_wav`]; errors name the file but never carry audio.

pub mod vad;

use std::path::{Path, PathBuf};

use rubato::{FftFixedIn, Resampler};

/// The pipeline's one sample rate: what both webrtc-vad and Whisper take.
pub const SAMPLE_RATE: u32 = 16_000;

/// Longest recording accepted in one file: a visit longer than this is almost certainly a
/// mistake (a device left running), and would need gigabytes of memory.
pub const MAX_DURATION_S: u64 = 4 * 3600;

#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("cannot open audio file {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is not a readable WAV file ({reason}); export the recording as PCM or float WAV"
    )]
    NotWav { path: PathBuf, reason: String },
    #[error("{path} uses an unsupported WAV encoding: {detail}")]
    Unsupported { path: PathBuf, detail: String },
    #[error("{path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path} holds no audio samples")]
    Empty { path: PathBuf },
    #[error("{path} is {seconds} s long; recordings over {MAX_DURATION_S} s are refused")]
    TooLong { path: PathBuf, seconds: u64 },
    #[error("resampling from {from} Hz failed: {reason}")]
    Resample { from: u32, reason: String },
}

/// Mono 16 kHz audio plus what the source file was.
#[derive(Debug, Clone)]
pub struct Audio {
    pub samples: Vec<f32>,
    pub source_rate: u32,
    pub source_channels: u16,
    pub source_bits: u16,
}

impl Audio {
    pub fn duration_ms(&self) -> u64 {
        self.samples.len() as u64 * 1000 / u64::from(SAMPLE_RATE)
    }
}

/// Reads a WAV file, downmixes to mono and resamples to 16 kHz.
pub fn read_wav(path: &Path) -> Result<Audio, AudioError> {
    let (interleaved, spec) = read_interleaved(path)?;
    let mono = downmix(&interleaved, usize::from(spec.channels));
    let samples = resample_to_16k(&mono, spec.sample_rate)?;
    Ok(Audio {
        samples,
        source_rate: spec.sample_rate,
        source_channels: spec.channels,
        source_bits: spec.bits_per_sample,
    })
}

/// Opens, checks and decodes a WAV file into interleaved floats (whole frames only).
fn read_interleaved(path: &Path) -> Result<(Vec<f32>, hound::WavSpec), AudioError> {
    let file = std::fs::File::open(path).map_err(|source| AudioError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let reader = hound::WavReader::new(std::io::BufReader::new(file)).map_err(|e| match e {
        hound::Error::IoError(source) => AudioError::Open {
            path: path.to_path_buf(),
            source,
        },
        hound::Error::Unsupported => AudioError::Unsupported {
            path: path.to_path_buf(),
            detail: "compressed or unknown sample format".into(),
        },
        other => AudioError::NotWav {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    })?;
    let spec = reader.spec();
    if spec.channels == 0 {
        return Err(AudioError::Corrupt {
            path: path.to_path_buf(),
            reason: "header declares zero channels".into(),
        });
    }
    if !(1_000..=384_000).contains(&spec.sample_rate) {
        return Err(AudioError::Unsupported {
            path: path.to_path_buf(),
            detail: format!("sample rate {} Hz", spec.sample_rate),
        });
    }
    let frames = u64::from(reader.duration());
    let seconds = frames / u64::from(spec.sample_rate);
    if seconds > MAX_DURATION_S {
        return Err(AudioError::TooLong {
            path: path.to_path_buf(),
            seconds,
        });
    }
    let mut interleaved = decode_samples(reader, spec, path)?;
    let channels = usize::from(spec.channels);
    if interleaved.len() < channels {
        return Err(AudioError::Empty {
            path: path.to_path_buf(),
        });
    }
    interleaved.truncate(interleaved.len() / channels * channels);
    Ok((interleaved, spec))
}

fn decode_samples<R: std::io::Read>(
    mut reader: hound::WavReader<R>,
    spec: hound::WavSpec,
    path: &Path,
) -> Result<Vec<f32>, AudioError> {
    let corrupt = |e: hound::Error| AudioError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Float, 32) => reader
            .samples::<f32>()
            .map(|s| {
                s.map(|v| {
                    if v.is_finite() {
                        v.clamp(-1.0, 1.0)
                    } else {
                        0.0
                    }
                })
            })
            .collect::<Result<_, _>>()
            .map_err(corrupt),
        (hound::SampleFormat::Int, bits @ 1..=32) => {
            let scale = 1.0 / (1u64 << (bits - 1)) as f32;
            reader
                .samples::<i32>()
                .map(|s| s.map(|v| v as f32 * scale))
                .collect::<Result<_, _>>()
                .map_err(corrupt)
        }
        (format, bits) => Err(AudioError::Unsupported {
            path: path.to_path_buf(),
            detail: format!("{bits}-bit {format:?} samples"),
        }),
    }
}

/// RMS level in dBFS of `count` samples whose squares sum to `energy` (-120 for silence).
pub fn level_dbfs(energy: f64, count: usize) -> f64 {
    if count == 0 {
        return -120.0;
    }
    let rms = (energy / count as f64).sqrt();
    if rms <= 1e-6 {
        -120.0
    } else {
        (20.0 * rms.log10()).max(-120.0)
    }
}

/// Averages interleaved channels into one; a trailing partial frame is dropped.
pub fn downmix(interleaved: &[f32], channels: usize) -> Vec<f32> {
    if channels <= 1 {
        return interleaved.to_vec();
    }
    let scale = 1.0 / channels as f32;
    interleaved
        .chunks_exact(channels)
        .map(|frame| frame.iter().sum::<f32>() * scale)
        .collect()
}

/// Resamples mono audio to 16 kHz with an FFT resampler, compensating its delay so that sample
/// `n` of the output lines up with time `n / 16000` s of the input.
pub fn resample_to_16k(samples: &[f32], from_rate: u32) -> Result<Vec<f32>, AudioError> {
    if from_rate == SAMPLE_RATE {
        return Ok(samples.to_vec());
    }
    let resample_error = |reason: String| AudioError::Resample {
        from: from_rate,
        reason,
    };
    const CHUNK: usize = 1024;
    let mut resampler =
        FftFixedIn::<f32>::new(from_rate as usize, SAMPLE_RATE as usize, CHUNK, 2, 1)
            .map_err(|e| resample_error(e.to_string()))?;
    let expected_len =
        (samples.len() as u64 * u64::from(SAMPLE_RATE) / u64::from(from_rate)) as usize;
    let delay = resampler.output_delay();
    let mut out = Vec::with_capacity(expected_len + delay + CHUNK);
    let mut output_buffer = resampler.output_buffer_allocate(true);
    let mut position = 0;
    while position + resampler.input_frames_next() <= samples.len() {
        let needed = resampler.input_frames_next();
        let (_, written) = resampler
            .process_into_buffer(
                &[&samples[position..position + needed]],
                &mut output_buffer,
                None,
            )
            .map_err(|e| resample_error(e.to_string()))?;
        out.extend_from_slice(&output_buffer[0][..written]);
        position += needed;
    }
    // The tail, then enough silence to flush the resampler's delay line.
    let tail = &samples[position..];
    let (_, written) = resampler
        .process_partial_into_buffer(Some(&[tail]), &mut output_buffer, None)
        .map_err(|e| resample_error(e.to_string()))?;
    out.extend_from_slice(&output_buffer[0][..written]);
    while out.len() < expected_len + delay {
        let (_, written) = resampler
            .process_partial_into_buffer(None::<&[&[f32]]>, &mut output_buffer, None)
            .map_err(|e| resample_error(e.to_string()))?;
        if written == 0 {
            break;
        }
        out.extend_from_slice(&output_buffer[0][..written]);
    }
    let end = (delay + expected_len).min(out.len());
    Ok(out.get(delay..end).map(<[f32]>::to_vec).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: u32, freq: f32, seconds: f32) -> Vec<f32> {
        (0..(rate as f32 * seconds) as usize)
            .map(|n| (2.0 * std::f32::consts::PI * freq * n as f32 / rate as f32).sin() * 0.5)
            .collect()
    }

    fn write_wav(path: &Path, spec: hound::WavSpec, samples: &[f32]) {
        let mut writer = hound::WavWriter::create(path, spec).unwrap();
        for &s in samples {
            for _ in 0..spec.channels {
                match (spec.sample_format, spec.bits_per_sample) {
                    (hound::SampleFormat::Float, _) => writer.write_sample(s).unwrap(),
                    (_, 8) => writer.write_sample((s * 127.0) as i8).unwrap(),
                    (_, 16) => writer.write_sample((s * 32767.0) as i16).unwrap(),
                    (_, 24) => writer.write_sample((s * 8_388_607.0) as i32).unwrap(),
                    _ => writer.write_sample((s * 2_147_483_647.0) as i32).unwrap(),
                }
            }
        }
        writer.finalize().unwrap();
    }

    /// Correlation with a reference 440 Hz sine at 16 kHz: 1.0 means the same waveform, in phase.
    fn correlation_with_reference(samples: &[f32]) -> f32 {
        let reference = sine(
            SAMPLE_RATE,
            440.0,
            samples.len() as f32 / SAMPLE_RATE as f32,
        );
        let n = samples.len().min(reference.len());
        let (a, b) = (&samples[1000..n - 1000], &reference[1000..n - 1000]);
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
        dot / (na * nb)
    }

    #[test]
    fn every_common_format_arrives_as_aligned_16k_mono() {
        let dir = tempfile::tempdir().unwrap();
        for (rate, channels, bits, format) in [
            (16_000, 1, 16, hound::SampleFormat::Int),
            (44_100, 2, 16, hound::SampleFormat::Int),
            (48_000, 1, 24, hound::SampleFormat::Int),
            (8_000, 1, 8, hound::SampleFormat::Int),
            (22_050, 4, 32, hound::SampleFormat::Float),
            (32_000, 1, 32, hound::SampleFormat::Int),
        ] {
            let spec = hound::WavSpec {
                channels,
                sample_rate: rate,
                bits_per_sample: bits,
                sample_format: format,
            };
            let path = dir.path().join(format!("{rate}-{channels}-{bits}.wav"));
            write_wav(&path, spec, &sine(rate, 440.0, 2.0));
            let audio = read_wav(&path).unwrap();
            assert_eq!(audio.source_rate, rate);
            let expected = 32_000usize;
            assert!(
                audio.samples.len().abs_diff(expected) <= 2,
                "{rate} Hz: {} samples",
                audio.samples.len()
            );
            let corr = correlation_with_reference(&audio.samples);
            assert!(corr > 0.98, "{rate} Hz/{bits} bit: correlation {corr}");
        }
    }

    #[test]
    fn a_text_file_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.wav");
        std::fs::write(&path, b"this is not audio at all").unwrap();
        let err = read_wav(&path).unwrap_err();
        assert!(matches!(err, AudioError::NotWav { .. }), "{err}");
        assert!(err.to_string().contains("notes.wav"));
    }

    #[test]
    fn a_truncated_file_is_refused_not_half_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.wav");
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 16_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        write_wav(&path, spec, &sine(16_000, 440.0, 1.0));
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2 + 1]).unwrap();
        let err = read_wav(&path).unwrap_err();
        assert!(matches!(err, AudioError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn an_empty_file_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.wav");
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 16_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        write_wav(&path, spec, &[]);
        assert!(matches!(read_wav(&path), Err(AudioError::Empty { .. })));
    }

    #[test]
    fn a_missing_file_names_the_path() {
        let err = read_wav(Path::new("/nonexistent/visit.wav")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/visit.wav"));
    }

    /// Damaged WAV files give an error (or, if the damage hits only samples, audio), never a
    /// panic: recordings come from devices and people, not from us.
    #[test]
    fn damaged_wav_files_never_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 44_100,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        write_wav(&path, spec, &sine(44_100, 440.0, 0.05));
        let original = std::fs::read(&path).unwrap();
        let mut next = crate::test_support::xorshift(0x9e37_79b9_7f4a_7c15);
        for round in 0..400 {
            let mut bytes = original.clone();
            // Mostly the 44-byte header, where damage changes how the rest is read.
            for _ in 0..(next() % 3 + 1) {
                let at = if round % 4 == 0 {
                    (next() as usize) % bytes.len()
                } else {
                    (next() as usize) % 44
                };
                bytes[at] = next() as u8;
            }
            if round % 5 == 0 {
                bytes.truncate((next() as usize) % bytes.len());
            }
            std::fs::write(&path, &bytes).unwrap();
            let _ = read_wav(&path);
        }
    }

    #[test]
    fn downmix_averages_channels() {
        assert_eq!(downmix(&[1.0, 0.0, 0.5, 0.5, 9.0], 2), vec![0.5, 0.5]);
    }
}
