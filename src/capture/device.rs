//! A sound card (cpal input device) as a capture source, supervised: a device that is missing
//! or unplugged is reported, logged and retried with capped backoff, on its own thread, so the
//! other sources never notice.
//!
//! The audio callback does the least it can: convert to `f32` and copy into a lock-free ring.
//! Resampling, channel selection and blocking happen on the supervisor thread.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{FromSample, Sample, SampleFormat, SizedSample};

use crate::metrics::{Metrics, METRICS};

use super::buffer::{self, BlockSender, CaptureHandle, CaptureState, Shared};
use super::resample::StreamResampler;
use super::{AudioBlock, CaptureError, CaptureSource, CaptureStream, SAMPLE_RATE};

/// A device that delivers nothing for this long is treated as gone: some drivers stop
/// calling back on unplug without reporting an error.
const STALL_TIMEOUT: Duration = Duration::from_secs(2);

/// How often, at most, lost callbacks are logged.
const LOSS_WARN_INTERVAL: Duration = Duration::from_secs(5);

/// Seconds of audio the callback ring holds: covers any scheduling hiccup of the converter.
const RING_SECONDS: usize = 2;

/// How the supervisor retries a device that is not there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Wait before the first retry; doubled per failed attempt up to `max`.
    pub initial: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_secs(2),
            max: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// A cpal input device named in config, by its name as `sound_cards()` lists it.
pub struct CpalSource {
    device: String,
    channels: u16,
    retry: RetryPolicy,
    block_ms: u32,
}

impl CpalSource {
    /// `channels` is what the role needs: the array's microphone count, or 1 for a badge. A
    /// device with more channels is opened with enough and the first `channels` are kept; one
    /// with fewer is refused (and retried, in case the right device is plugged in).
    pub fn new(device: impl Into<String>, channels: u16) -> Result<CpalSource, CaptureError> {
        let device = device.into();
        if device.trim().is_empty() || channels == 0 {
            return Err(CaptureError::InvalidOption {
                source_id: device,
                detail: "a device needs a name and at least one channel".into(),
            });
        }
        Ok(CpalSource {
            device,
            channels,
            retry: RetryPolicy::default(),
            block_ms: 20,
        })
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> CpalSource {
        self.retry = retry;
        self
    }
}

impl CaptureSource for CpalSource {
    fn id(&self) -> &str {
        &self.device
    }

    fn channels(&self) -> u16 {
        self.channels
    }

    fn start(self: Box<Self>, capacity_blocks: usize) -> Result<CaptureStream, CaptureError> {
        let shared = Shared::new(&self.device);
        let (sender, reader) = buffer::channel(&shared, self.channels, capacity_blocks);
        let thread_shared = Arc::clone(&shared);
        let id = self.device.clone();
        let thread = std::thread::Builder::new()
            .name("capture-device".into())
            .spawn(move || supervise(*self, sender, thread_shared))
            .map_err(|source| CaptureError::Spawn {
                source_id: id,
                source,
            })?;
        Ok(CaptureStream {
            reader,
            handle: CaptureHandle::new(shared, thread),
        })
    }
}

fn supervise(source: CpalSource, mut sender: BlockSender, shared: Arc<Shared>) {
    // Frame 0 is when the device first connected; unset until then.
    let mut origin: Option<Instant> = None;
    let mut next_frame = 0u64;
    let mut attempt = 0u32;
    while !shared.stopped() {
        let reason = match open(&source) {
            Ok(live) => {
                attempt = 0;
                shared.set_state(CaptureState::Connected);
                tracing::info!(
                    device = %source.device,
                    channels = live.device_channels,
                    rate = live.rate,
                    "capture device connected"
                );
                // After a disconnection the timeline resumes at wall-clock time, so the
                // reader fills the outage with counted silence and later audio keeps its time.
                let origin = *origin.get_or_insert_with(Instant::now);
                let elapsed = (origin.elapsed().as_secs_f64() * f64::from(SAMPLE_RATE)) as u64;
                next_frame = next_frame.max(elapsed);
                match pump(&source, live, &mut sender, &shared, &mut next_frame) {
                    Some(reason) => reason,
                    None => break,
                }
            }
            Err(reason) => reason,
        };
        let delay = source.retry.delay(attempt);
        tracing::warn!(
            device = %source.device,
            attempt,
            retry_in_ms = delay.as_millis() as u64,
            reason = %reason,
            "capture device unavailable"
        );
        shared.set_state(CaptureState::Disconnected { reason });
        if shared.sleep(delay) {
            break;
        }
        attempt = attempt.saturating_add(1);
        shared.count_retry();
        shared.set_state(CaptureState::Retrying { attempt });
    }
    shared.set_state(CaptureState::Finished);
    tracing::info!(device = %source.device, "capture device stopped");
}

/// An open, playing input stream and the consumer ends of its rings.
struct Live {
    /// Dropping the stream closes the device; it stays on this thread (not `Send` everywhere).
    _stream: cpal::Stream,
    rings: RingReader,
    error: Arc<Mutex<Option<String>>>,
    device_channels: usize,
    rate: u32,
}

fn open(source: &CpalSource) -> Result<Live, String> {
    let host = cpal::default_host();
    let devices = host
        .input_devices()
        .map_err(|e| format!("cannot list the input devices of the sound system: {e}"))?;
    let device = devices
        .into_iter()
        .find(|d| d.name().is_ok_and(|name| name == source.device))
        .ok_or_else(|| {
            format!(
                "no input device named {:?} is present (unplugged, or a different name; the admin \
                 port lists the devices this box sees)",
                source.device
            )
        })?;
    let ranges: Vec<cpal::SupportedStreamConfigRange> = device
        .supported_input_configs()
        .map_err(|e| format!("cannot read the device's supported formats: {e}"))?
        .collect();
    let wanted = source.channels;
    let range = ranges
        .iter()
        .filter(|r| r.channels() >= wanted && format_rank(r.sample_format()).is_some())
        .min_by_key(|r| {
            (
                r.channels() - wanted,
                format_rank(r.sample_format()),
                rate_rank(r),
            )
        })
        .ok_or_else(|| {
            let most = ranges.iter().map(|r| r.channels()).max().unwrap_or(0);
            format!(
                "the device offers at most {most} input channels in a usable format; {wanted} are \
                 needed"
            )
        })?;
    let rate = pick_rate(range);
    let supported = (*range).with_sample_rate(cpal::SampleRate(rate));
    let config = supported.config();
    let device_channels = usize::from(config.channels);
    let (ring, rings) = rings(
        rate as usize * device_channels * RING_SECONDS,
        device_channels,
    );
    let error = Arc::new(Mutex::new(None));
    let stream = match supported.sample_format() {
        SampleFormat::F32 => build::<f32>(&device, &config, ring, &error),
        SampleFormat::I16 => build::<i16>(&device, &config, ring, &error),
        SampleFormat::I32 => build::<i32>(&device, &config, ring, &error),
        SampleFormat::U16 => build::<u16>(&device, &config, ring, &error),
        SampleFormat::I8 => build::<i8>(&device, &config, ring, &error),
        SampleFormat::U8 => build::<u8>(&device, &config, ring, &error),
        SampleFormat::F64 => build::<f64>(&device, &config, ring, &error),
        other => Err(format!("unsupported sample format {other:?}")),
    }?;
    stream
        .play()
        .map_err(|e| format!("the device refused to start: {e}"))?;
    Ok(Live {
        _stream: stream,
        rings,
        error,
        device_channels,
        rate,
    })
}

/// The callback's end and the converter's end of a device's rings.
fn rings(capacity_samples: usize, device_channels: usize) -> (Ring, RingReader) {
    let (samples_in, samples) = rtrb::RingBuffer::<f32>::new(capacity_samples);
    let (losses_in, losses) = rtrb::RingBuffer::<(u64, u64)>::new(64);
    (
        Ring {
            samples: samples_in,
            losses: losses_in,
            channels: device_channels.max(1),
            position: 0,
            lost: 0,
        },
        RingReader { samples, losses },
    )
}

/// Lower is better; `None` for formats not handled.
fn format_rank(format: SampleFormat) -> Option<u8> {
    match format {
        SampleFormat::F32 => Some(0),
        SampleFormat::I16 => Some(1),
        SampleFormat::I32 => Some(2),
        SampleFormat::U16 | SampleFormat::I8 | SampleFormat::U8 | SampleFormat::F64 => Some(3),
        _ => None,
    }
}

/// 16 kHz needs no resampling; 48 kHz resamples by an integer ratio; anything else works.
fn rate_rank(range: &cpal::SupportedStreamConfigRange) -> u8 {
    let supports =
        |rate: u32| (range.min_sample_rate().0..=range.max_sample_rate().0).contains(&rate);
    if supports(SAMPLE_RATE) {
        0
    } else if supports(48_000) {
        1
    } else {
        2
    }
}

fn pick_rate(range: &cpal::SupportedStreamConfigRange) -> u32 {
    let (min, max) = (range.min_sample_rate().0, range.max_sample_rate().0);
    [SAMPLE_RATE, 48_000]
        .into_iter()
        .find(|rate| (min..=max).contains(rate))
        .unwrap_or_else(|| 48_000u32.clamp(min, max))
}

struct RingReader {
    samples: rtrb::Consumer<f32>,
    /// (ring position in frames, frames lost there) when the ring was full.
    losses: rtrb::Consumer<(u64, u64)>,
}

/// The callback's side: writes whole callbacks or records that one was lost.
struct Ring {
    samples: rtrb::Producer<f32>,
    losses: rtrb::Producer<(u64, u64)>,
    channels: usize,
    /// Frames written so far.
    position: u64,
    /// Frames lost and not yet reported.
    lost: u64,
}

impl Ring {
    fn write<T>(&mut self, data: &[T])
    where
        T: SizedSample,
        f32: FromSample<T>,
    {
        let frames = (data.len() / self.channels) as u64;
        let data = &data[..frames as usize * self.channels];
        if self.lost > 0 && self.losses.push((self.position, self.lost)).is_ok() {
            self.lost = 0;
        }
        // Writing while a loss is unreported would put samples at the wrong time.
        if self.lost == 0 {
            if let Ok(chunk) = self.samples.write_chunk_uninit(data.len()) {
                chunk.fill_from_iter(data.iter().map(|&s| f32::from_sample(s)));
                self.position += frames;
                return;
            }
        }
        self.lost += frames;
    }
}

fn build<T>(
    device: &cpal::Device,
    config: &cpal::StreamConfig,
    mut ring: Ring,
    error: &Arc<Mutex<Option<String>>>,
) -> Result<cpal::Stream, String>
where
    T: SizedSample + Send + 'static,
    f32: FromSample<T>,
{
    let error = Arc::clone(error);
    device
        .build_input_stream::<T, _, _>(
            config,
            move |data: &[T], _: &cpal::InputCallbackInfo| ring.write(data),
            move |e| {
                let mut slot = error
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                slot.get_or_insert_with(|| format!("the device reported an error: {e}"));
            },
            None,
        )
        .map_err(|e| format!("cannot open the device's input stream: {e}"))
}

/// Turns what the callback wrote into 16 kHz frames of the wanted channels, with silence
/// where the ring was full.
struct Converter {
    rings: RingReader,
    device_channels: usize,
    wanted: usize,
    resampler: StreamResampler,
    /// Frames taken from the ring so far (the callback's `position` counts the same way).
    read_position: u64,
    /// 16 kHz frames, interleaved, not yet in a block.
    pending: Vec<f32>,
    /// 16 kHz frames lost to a full ring since the stream opened.
    lost_frames: u64,
    last_loss_warning: Option<Instant>,
}

impl Converter {
    fn new(
        rings: RingReader,
        device_channels: usize,
        rate: u32,
        wanted: u16,
    ) -> Result<Converter, CaptureError> {
        Ok(Converter {
            rings,
            device_channels: device_channels.max(1),
            wanted: usize::from(wanted),
            resampler: StreamResampler::new(rate, wanted)?,
            read_position: 0,
            pending: Vec::new(),
            lost_frames: 0,
            last_loss_warning: None,
        })
    }

    /// Takes whatever the rings hold; returns whether there was anything.
    fn drain(&mut self, device: &str, rate: u32) -> Result<bool, CaptureError> {
        let mut progressed = false;
        // Losses first when they fall here, so silence lands where the audio was lost.
        while let Ok(&(at, lost)) = self.rings.losses.peek() {
            if at != self.read_position {
                break;
            }
            let _ = self.rings.losses.pop();
            let frames = lost * u64::from(SAMPLE_RATE) / u64::from(rate);
            Metrics::add(&METRICS.capture_overruns, frames);
            self.lost_frames += frames;
            // One line per lost callback would flood the log while the converter lags.
            let due = self
                .last_loss_warning
                .is_none_or(|at| at.elapsed() >= LOSS_WARN_INTERVAL);
            if due {
                self.last_loss_warning = Some(Instant::now());
                tracing::warn!(
                    device = %device,
                    lost_frames = self.lost_frames,
                    "capture ring full: audio lost; filled with silence"
                );
            }
            let lost = usize::try_from(lost).unwrap_or(usize::MAX);
            self.resampler.push_silence(lost, &mut self.pending)?;
            progressed = true;
        }
        let mut available = (self.rings.samples.slots() / self.device_channels) as u64;
        if let Ok(&(at, _)) = self.rings.losses.peek() {
            available = available.min(at.saturating_sub(self.read_position));
        }
        if available == 0 {
            return Ok(progressed);
        }
        let count = available as usize * self.device_channels;
        let Ok(chunk) = self.rings.samples.read_chunk(count) else {
            return Ok(progressed);
        };
        let (a, b) = chunk.as_slices();
        // Keeps the first `wanted` channels of each frame; the ring may wrap mid-frame.
        let (device_channels, wanted) = (self.device_channels, self.wanted);
        let selected: Vec<f32> = a
            .iter()
            .chain(b)
            .enumerate()
            .filter(|(i, _)| i % device_channels < wanted)
            .map(|(_, &s)| s)
            .collect();
        chunk.commit_all();
        self.read_position += available;
        self.resampler.push(&selected, &mut self.pending)?;
        Ok(true)
    }

    /// Whole blocks of `block_frames` out of what is pending, numbered from `next_frame`.
    fn blocks(&mut self, block_frames: usize, next_frame: &mut u64) -> Vec<AudioBlock> {
        let block_len = block_frames * self.wanted;
        let whole = self.pending.len() / block_len.max(1) * block_len;
        let channels = u16::try_from(self.wanted).unwrap_or(u16::MAX);
        let blocks = self.pending[..whole]
            .chunks_exact(block_len.max(1))
            .map(|samples| {
                let block = AudioBlock {
                    first_frame: *next_frame,
                    channels,
                    samples: samples.to_vec(),
                };
                *next_frame += block_frames as u64;
                block
            })
            .collect();
        self.pending.drain(..whole);
        blocks
    }
}

/// Moves audio from the rings to the reader until the device fails (the reason) or a stop is
/// asked (`None`).
fn pump(
    source: &CpalSource,
    live: Live,
    sender: &mut BlockSender,
    shared: &Shared,
    next_frame: &mut u64,
) -> Option<String> {
    let Live {
        _stream,
        rings,
        error,
        device_channels,
        rate,
    } = live;
    let mut converter = match Converter::new(rings, device_channels, rate, source.channels) {
        Ok(converter) => converter,
        Err(e) => return Some(e.to_string()),
    };
    let block_frames = (SAMPLE_RATE * source.block_ms / 1000) as usize;
    let mut last_data = Instant::now();
    loop {
        if shared.stopped() {
            return None;
        }
        let failure = error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(reason) = failure {
            return Some(reason);
        }
        let progressed = match converter.drain(&source.device, rate) {
            Ok(progressed) => progressed,
            Err(e) => return Some(e.to_string()),
        };
        for block in converter.blocks(block_frames, next_frame) {
            sender.offer(block);
        }
        if progressed {
            last_data = Instant::now();
        } else if last_data.elapsed() >= STALL_TIMEOUT {
            return Some(format!(
                "the device delivered no audio for {} s (unplugged?)",
                STALL_TIMEOUT.as_secs()
            ));
        } else if shared.sleep(Duration::from_millis(5)) {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_ring_becomes_silence_at_the_right_place_and_extra_channels_are_dropped() {
        // Three device channels, two wanted; the ring holds two callbacks of 4 frames.
        let (mut ring, reader) = rings(2 * 4 * 3, 3);
        let mut converter = Converter::new(reader, 3, SAMPLE_RATE, 2).unwrap();
        let callback = |base: i16| -> Vec<i16> {
            (0..4).flat_map(|f| [base + f, -(base + f), 9999]).collect()
        };
        ring.write(&callback(100));
        ring.write(&callback(200));
        // Full: this callback is lost; the next one reports the loss, then is written.
        ring.write(&callback(300));
        assert!(converter.drain("test", SAMPLE_RATE).unwrap());
        ring.write(&callback(400));
        ring.write(&callback(500));
        let before = Metrics::get(&METRICS.capture_overruns);
        while converter.drain("test", SAMPLE_RATE).unwrap() {}
        assert!(Metrics::get(&METRICS.capture_overruns) >= before + 4);
        ring.write(&callback(600));
        while converter.drain("test", SAMPLE_RATE).unwrap() {}
        let mut next_frame = 0;
        let blocks = converter.blocks(4, &mut next_frame);
        assert_eq!(next_frame, 24);
        let frames: Vec<[f32; 2]> = blocks
            .iter()
            .flat_map(|b| b.samples.chunks_exact(2).map(|f| [f[0], f[1]]))
            .collect();
        let scale = 1.0 / 32768.0;
        let expected: Vec<[f32; 2]> = [
            Some(100i16),
            Some(200),
            None,
            Some(400),
            Some(500),
            Some(600),
        ]
        .into_iter()
        .flat_map(|base| {
            (0..4).map(move |f| match base {
                Some(base) => [f32::from(base + f) * scale, -f32::from(base + f) * scale],
                None => [0.0, 0.0],
            })
        })
        .collect();
        assert_eq!(frames, expected);
        assert_eq!(converter.lost_frames, 4);
    }

    #[test]
    fn a_missing_device_is_named_in_the_reason() {
        let source = CpalSource::new("edge-scribe-no-such-device", 2).unwrap();
        let reason = open(&source).err().unwrap_or_default();
        assert!(reason.contains("edge-scribe-no-such-device"), "{reason}");
        assert!(RetryPolicy::default().delay(10) == Duration::from_secs(30));
        assert!(CpalSource::new(" ", 1).is_err() && CpalSource::new("x", 0).is_err());
    }
}
