//! Capture: what the box can hear, as streams of 16 kHz blocks on a per-source timeline.
//!
//! A source is a sound card (`CpalSource`, supervised and retried when missing) or a recorded
//! file (`ReplaySource`, paced like a device). Either hands blocks through a bounded buffer
//! that never makes the producer wait; what it has to drop comes out of the `CaptureReader` as
//! counted silence at the right place, so the timeline never shifts. `EncounterRecorder` then
//! keeps only the frames between consent and the encounter's end.
//!
//! This file also lists devices for the admin port: sound cards and the configured replay
//! sources, which behave as devices named `replay-<n>`.

mod buffer;
mod device;
mod encounter;
mod replay;
mod resample;
mod wav;

use serde::Serialize;

use crate::config::Config;

pub use buffer::{CaptureHandle, CaptureReader, CaptureState, ReadEvent, ReaderStats};
pub use device::{CpalSource, RetryPolicy};
pub use encounter::{
    EncounterAudio, EncounterCounts, EncounterError, EncounterRecorder, MAX_KEPT_FRAMES,
};
pub use replay::{ReplayOptions, ReplaySource};
pub use wav::{read_wav_channels, MultiChannelAudio, WavError, WavFile};

/// The capture timeline's rate: the pipeline's one rate.
pub const SAMPLE_RATE: u32 = crate::audio::SAMPLE_RATE;

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(transparent)]
    Wav(#[from] WavError),
    #[error("capture source {source_id}: {detail}")]
    InvalidOption { source_id: String, detail: String },
    #[error("resampling from {from} Hz failed: {reason}")]
    Resample { from: u32, reason: String },
    #[error("cannot start a thread for capture source {source_id}: {source}")]
    Spawn {
        source_id: String,
        source: std::io::Error,
    },
}

/// A stretch of audio on a source's timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioBlock {
    /// Index at 16 kHz, since the stream opened, of the block's first frame.
    pub first_frame: u64,
    pub channels: u16,
    /// Interleaved, 16 kHz, in [-1, 1].
    pub samples: Vec<f32>,
}

impl AudioBlock {
    pub fn frames(&self) -> u64 {
        (self.samples.len() / usize::from(self.channels.max(1))) as u64
    }
}

/// Anything that can be heard: a device or a replayed file.
pub trait CaptureSource: Send {
    /// The name the source goes by in config and logs.
    fn id(&self) -> &str;
    fn channels(&self) -> u16;
    /// Starts producing on a thread of its own, through a buffer of `capacity_blocks` blocks.
    fn start(self: Box<Self>, capacity_blocks: usize) -> Result<CaptureStream, CaptureError>;
}

/// A started source: the reader for the consumer and the handle for whoever supervises it.
pub struct CaptureStream {
    pub reader: CaptureReader,
    pub handle: CaptureHandle,
}

/// A device as IT sees it on the admin port.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeviceInfo {
    /// Stable id to name the device in config (`[[capture.room]] array = "<id>"`).
    pub id: String,
    /// `alsa` for a sound card, `replay` for a recorded file.
    pub kind: &'static str,
    pub channels: u16,
    pub sample_rate: u32,
    /// `available`, `missing` (a configured file that is not there) or `unreadable`.
    pub state: &'static str,
}

/// Input devices of the default audio host. Never fails: a host without sound cards (a VM,
/// a CI machine) simply has none.
pub fn sound_cards() -> Vec<DeviceInfo> {
    use cpal::traits::{DeviceTrait, HostTrait};
    let host = cpal::default_host();
    let Ok(devices) = host.input_devices() else {
        return Vec::new();
    };
    devices
        .filter_map(|device| {
            let name = device.name().ok()?;
            let config = device.default_input_config().ok();
            Some(DeviceInfo {
                id: name,
                kind: "alsa",
                channels: config.as_ref().map_or(0, |c| c.channels()),
                sample_rate: config.as_ref().map_or(0, |c| c.sample_rate().0),
                state: if config.is_some() {
                    "available"
                } else {
                    "unreadable"
                },
            })
        })
        .collect()
}

/// The replay sources of `config`, as devices.
pub fn replay_devices(config: &Config) -> Vec<DeviceInfo> {
    config
        .replay_sources
        .iter()
        .enumerate()
        .map(|(i, source)| {
            let spec = hound::WavReader::open(&source.path).map(|r| r.spec());
            DeviceInfo {
                id: format!("replay-{i}"),
                kind: "replay",
                channels: spec.as_ref().map_or(0, |s| s.channels),
                sample_rate: spec.as_ref().map_or(0, |s| s.sample_rate),
                state: match &spec {
                    Ok(_) => "available",
                    Err(_) if !source.path.exists() => "missing",
                    Err(_) => "unreadable",
                },
            }
        })
        .collect()
}

/// Every device: sound cards first, then replay sources.
pub fn all_devices(config: &Config) -> Vec<DeviceInfo> {
    let mut devices = sound_cards();
    devices.extend(replay_devices(config));
    devices
}
