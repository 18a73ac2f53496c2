//! Multi-channel WAV reading for replay sources. Unlike `crate::audio::read_wav` this keeps
//! every channel (an array's channels are the point) and decodes in pieces, so a long
//! recording is never held in memory whole. Errors name the file, never its contents.

use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::resample::StreamResampler;
use super::CaptureError;

#[derive(Debug, thiserror::Error)]
pub enum WavError {
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
    #[error(
        "{path} is truncated: its header promises {declared_frames} frames but the file holds \
         {present_frames}; the copy was cut short, copy the recording again"
    )]
    Truncated {
        path: PathBuf,
        declared_frames: u64,
        present_frames: u64,
    },
    #[error("{path} holds no audio samples")]
    Empty { path: PathBuf },
}

/// An open WAV file, read frame by frame as `f32` in [-1, 1], channels interleaved.
pub struct WavFile {
    path: PathBuf,
    reader: hound::WavReader<BufReader<File>>,
    spec: hound::WavSpec,
    frames: u64,
}

impl WavFile {
    /// Opens `path` and checks, before any audio is read, that the header is sane and that the
    /// file really holds the frames the header promises.
    pub fn open(path: &Path) -> Result<WavFile, WavError> {
        let file = File::open(path).map_err(|source| WavError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let file_len = file
            .metadata()
            .map_err(|source| WavError::Open {
                path: path.to_path_buf(),
                source,
            })?
            .len();
        let reader = header(path, BufReader::new(file))?;
        let spec = reader.spec();
        if spec.channels == 0 {
            return Err(WavError::Corrupt {
                path: path.to_path_buf(),
                reason: "header declares zero channels".into(),
            });
        }
        if !(1_000..=384_000).contains(&spec.sample_rate) {
            return Err(WavError::Unsupported {
                path: path.to_path_buf(),
                detail: format!("sample rate {} Hz", spec.sample_rate),
            });
        }
        match (spec.sample_format, spec.bits_per_sample) {
            (hound::SampleFormat::Float, 32) | (hound::SampleFormat::Int, 1..=32) => {}
            (format, bits) => {
                return Err(WavError::Unsupported {
                    path: path.to_path_buf(),
                    detail: format!("{bits}-bit {format:?} samples"),
                })
            }
        }
        let channels = u64::from(spec.channels);
        let frames = u64::from(reader.len()) / channels;
        if frames == 0 {
            return Err(WavError::Empty {
                path: path.to_path_buf(),
            });
        }
        // hound reports a short data chunk only when the read reaches it, which for a replay
        // is minutes in; the sizes tell now. A sample takes at least ceil(bits / 8) bytes
        // (more in a padded container, which only makes this check lenient, never wrong).
        let mut inner = reader.into_inner();
        let data_start = inner.stream_position().map_err(|source| WavError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let frame_bytes = u64::from(spec.bits_per_sample).div_ceil(8) * channels;
        let present_frames = file_len.saturating_sub(data_start) / frame_bytes;
        if present_frames < frames {
            return Err(WavError::Truncated {
                path: path.to_path_buf(),
                declared_frames: frames,
                present_frames,
            });
        }
        inner
            .seek(SeekFrom::Start(0))
            .map_err(|source| WavError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        let reader = header(path, inner)?;
        Ok(WavFile {
            path: path.to_path_buf(),
            reader,
            spec,
            frames,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn channels(&self) -> u16 {
        self.spec.channels
    }

    pub fn sample_rate(&self) -> u32 {
        self.spec.sample_rate
    }

    pub fn bits_per_sample(&self) -> u16 {
        self.spec.bits_per_sample
    }

    /// Frames in the file at its own rate.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Moves to frame `frame` (at the file's rate) of the file.
    pub fn seek_frame(&mut self, frame: u64) -> Result<(), WavError> {
        let frame = u32::try_from(frame.min(self.frames)).unwrap_or(u32::MAX);
        self.reader.seek(frame).map_err(|e| WavError::Corrupt {
            path: self.path.clone(),
            reason: format!("cannot seek: {e}"),
        })
    }

    /// Decodes up to `max_frames` frames into `out` (cleared first); returns how many were
    /// read, 0 at the end of the file.
    pub fn read_frames(
        &mut self,
        max_frames: usize,
        out: &mut Vec<f32>,
    ) -> Result<usize, WavError> {
        out.clear();
        let channels = usize::from(self.spec.channels);
        let wanted = max_frames.saturating_mul(channels);
        let path = &self.path;
        let corrupt = |e: hound::Error| WavError::Corrupt {
            path: path.clone(),
            reason: match e {
                hound::Error::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
                    "the audio data ends early (truncated copy?)".to_string()
                }
                other => other.to_string(),
            },
        };
        match self.spec.sample_format {
            hound::SampleFormat::Float => {
                for sample in self.reader.samples::<f32>().take(wanted) {
                    let v = sample.map_err(corrupt)?;
                    out.push(if v.is_finite() {
                        v.clamp(-1.0, 1.0)
                    } else {
                        0.0
                    });
                }
            }
            hound::SampleFormat::Int => {
                let bits = u32::from(self.spec.bits_per_sample.clamp(1, 32));
                let scale = 1.0 / (1u64 << (bits - 1)) as f32;
                for sample in self.reader.samples::<i32>().take(wanted) {
                    out.push(sample.map_err(corrupt)? as f32 * scale);
                }
            }
        }
        if !out.len().is_multiple_of(channels) {
            return Err(WavError::Corrupt {
                path: self.path.clone(),
                reason: "the audio data ends inside a frame".into(),
            });
        }
        Ok(out.len() / channels)
    }
}

fn header(
    path: &Path,
    reader: BufReader<File>,
) -> Result<hound::WavReader<BufReader<File>>, WavError> {
    hound::WavReader::new(reader).map_err(|e| match e {
        // The file is open: failing to read its first bytes means a short or damaged header.
        hound::Error::IoError(source) => WavError::NotWav {
            path: path.to_path_buf(),
            reason: format!("the header cannot be read: {source}"),
        },
        hound::Error::Unsupported => WavError::Unsupported {
            path: path.to_path_buf(),
            detail: "compressed or unknown sample format".into(),
        },
        other => WavError::NotWav {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    })
}

/// A whole WAV file at 16 kHz with its channels kept, interleaved.
#[derive(Debug, Clone)]
pub struct MultiChannelAudio {
    pub channels: u16,
    pub samples: Vec<f32>,
    pub source_rate: u32,
}

impl MultiChannelAudio {
    pub fn frames(&self) -> usize {
        self.samples.len() / usize::from(self.channels.max(1))
    }

    /// One channel, de-interleaved.
    pub fn channel(&self, index: u16) -> Vec<f32> {
        let channels = usize::from(self.channels.max(1));
        self.samples
            .iter()
            .skip(usize::from(index))
            .step_by(channels)
            .copied()
            .collect()
    }
}

/// Reads a whole WAV file to 16 kHz, keeping its channels: for batch work and tests, where
/// pacing does not matter.
pub fn read_wav_channels(path: &Path) -> Result<MultiChannelAudio, CaptureError> {
    let mut wav = WavFile::open(path)?;
    let mut resampler = StreamResampler::new(wav.sample_rate(), wav.channels())?;
    let mut samples = Vec::new();
    let mut chunk = Vec::new();
    while wav.read_frames(4096, &mut chunk)? > 0 {
        resampler.push(&chunk, &mut samples)?;
    }
    resampler.finish(&mut samples)?;
    Ok(MultiChannelAudio {
        channels: wav.channels(),
        samples,
        source_rate: wav.sample_rate(),
    })
}
