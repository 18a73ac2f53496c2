//! Capture devices: what the box can hear. Live capture from arrays and badges plugs in here
//! (room audio); for now this lists the sound cards the system offers and the replay sources,
//! which behave as devices named `replay-<n>`.

use serde::Serialize;

use crate::config::Config;

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
