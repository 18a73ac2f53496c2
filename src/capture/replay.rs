//! A recorded WAV file played back as if a device were hearing it: blocks paced by the clock
//! (times a speed factor), on the timeline of the room it was recorded in.

use std::path::Path;
use std::time::{Duration, Instant};

use super::buffer::{self, BlockSender, CaptureHandle, CaptureState, Offer, Shared};
use super::resample::StreamResampler;
use super::wav::WavFile;
use super::{AudioBlock, CaptureError, CaptureSource, CaptureStream, SAMPLE_RATE};

/// How a replay plays.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplayOptions {
    /// 1.0 plays in real time, 10.0 ten times faster; `f32::INFINITY` as fast as the reader
    /// takes the blocks.
    pub speed: f32,
    /// Where the file's first sample falls on the shared timeline, in seconds: a badge that
    /// started 0.15 s after the array has `offset_s = 0.15` (the replay starts with that much
    /// silence); a negative offset trims the file's start.
    pub offset_s: f64,
    /// Length of one block.
    pub block_ms: u32,
}

impl Default for ReplayOptions {
    fn default() -> ReplayOptions {
        ReplayOptions {
            speed: 1.0,
            offset_s: 0.0,
            block_ms: 20,
        }
    }
}

/// A WAV file as a capture source.
pub struct ReplaySource {
    id: String,
    wav: WavFile,
    options: ReplayOptions,
    /// Silent frames before the file's first sample on the timeline.
    lead_frames: u64,
    /// Frames of the file (at its own rate) skipped at the start.
    trim_frames: u64,
}

impl ReplaySource {
    /// Opens and checks the file now, so that a bad file is refused with its name before
    /// anything starts.
    pub fn open(
        id: impl Into<String>,
        path: &Path,
        options: ReplayOptions,
    ) -> Result<ReplaySource, CaptureError> {
        let id = id.into();
        if options.speed.is_nan() || options.speed <= 0.0 {
            return Err(CaptureError::InvalidOption {
                source_id: id,
                detail: format!("replay speed must be above 0, not {}", options.speed),
            });
        }
        if !options.offset_s.is_finite() || options.offset_s.abs() > 3600.0 {
            return Err(CaptureError::InvalidOption {
                source_id: id,
                detail: format!(
                    "replay offset must be within an hour, not {} s",
                    options.offset_s
                ),
            });
        }
        if !(1..=1000).contains(&options.block_ms) {
            return Err(CaptureError::InvalidOption {
                source_id: id,
                detail: format!(
                    "block length must be 1 to 1000 ms, not {}",
                    options.block_ms
                ),
            });
        }
        let mut wav = WavFile::open(path)?;
        let (lead_frames, trim_frames) = if options.offset_s >= 0.0 {
            (
                (options.offset_s * f64::from(SAMPLE_RATE)).round() as u64,
                0,
            )
        } else {
            let trim = (-options.offset_s * f64::from(wav.sample_rate())).round() as u64;
            (0, trim.min(wav.frames()))
        };
        if trim_frames > 0 {
            wav.seek_frame(trim_frames)?;
        }
        Ok(ReplaySource {
            id,
            wav,
            options,
            lead_frames,
            trim_frames,
        })
    }

    pub fn path(&self) -> &Path {
        self.wav.path()
    }

    /// Frames the replay puts on the timeline: leading silence plus the (trimmed) file at
    /// 16 kHz.
    pub fn frames(&self) -> u64 {
        let file_frames = self.wav.frames() - self.trim_frames;
        self.lead_frames + file_frames * u64::from(SAMPLE_RATE) / u64::from(self.wav.sample_rate())
    }

    /// The file's own sample rate.
    pub fn source_rate(&self) -> u32 {
        self.wav.sample_rate()
    }
}

impl CaptureSource for ReplaySource {
    fn id(&self) -> &str {
        &self.id
    }

    fn channels(&self) -> u16 {
        self.wav.channels()
    }

    fn start(self: Box<Self>, capacity_blocks: usize) -> Result<CaptureStream, CaptureError> {
        let shared = Shared::new(&self.id);
        let (sender, reader) = buffer::channel(&shared, self.wav.channels(), capacity_blocks);
        let thread_shared = std::sync::Arc::clone(&shared);
        let id = self.id.clone();
        let thread = std::thread::Builder::new()
            .name(format!("replay-{}", self.id))
            .spawn(move || run(*self, sender, thread_shared))
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

struct Player {
    sender: BlockSender,
    shared: std::sync::Arc<Shared>,
    channels: u16,
    block_frames: usize,
    speed: f32,
    started: Instant,
    next_frame: u64,
    /// Set when the reader is gone or a stop was asked.
    done: bool,
}

impl Player {
    /// Sends whole blocks out of `pending` (all of it when `flush`), each when its last frame
    /// would have been heard.
    fn emit(&mut self, pending: &mut Vec<f32>, flush: bool) {
        let channels = usize::from(self.channels);
        let block_len = self.block_frames * channels;
        let mut start = 0;
        while !self.done && (pending.len() - start >= block_len || (flush && start < pending.len()))
        {
            let end = (start + block_len).min(pending.len());
            let block = AudioBlock {
                first_frame: self.next_frame,
                channels: self.channels,
                samples: pending[start..end].to_vec(),
            };
            start = end;
            self.send(block);
        }
        pending.drain(..start);
    }

    fn send(&mut self, block: AudioBlock) {
        let frames = block.frames();
        let end = self.next_frame + frames;
        self.next_frame = end;
        if self.speed.is_infinite() {
            if !self.sender.send_waiting(block) {
                self.done = true;
            }
            return;
        }
        let due =
            Duration::from_secs_f64(end as f64 / f64::from(SAMPLE_RATE) / f64::from(self.speed));
        if self.shared.sleep_until(self.started + due) {
            self.done = true;
            return;
        }
        if self.sender.offer(block) == Offer::Closed {
            self.done = true;
        }
    }
}

fn run(source: ReplaySource, sender: BlockSender, shared: std::sync::Arc<Shared>) {
    let ReplaySource {
        id,
        mut wav,
        options,
        lead_frames,
        ..
    } = source;
    let channels = wav.channels();
    let block_frames = (SAMPLE_RATE * options.block_ms / 1000).max(1) as usize;
    shared.set_state(CaptureState::Connected);
    tracing::info!(
        device = %id,
        channels,
        source_rate = wav.sample_rate(),
        speed = options.speed,
        "replay started"
    );
    let mut player = Player {
        sender,
        shared: std::sync::Arc::clone(&shared),
        channels,
        block_frames,
        speed: options.speed,
        started: Instant::now(),
        next_frame: 0,
        done: false,
    };
    let outcome = play(&mut player, &mut wav, lead_frames);
    match outcome {
        Ok(()) => {
            tracing::info!(device = %id, frames = player.next_frame, "replay finished");
            shared.set_state(CaptureState::Finished);
        }
        Err(e) => {
            tracing::warn!(device = %id, frames = player.next_frame, error = %e, "replay failed");
            shared.set_state(CaptureState::Failed {
                reason: e.to_string(),
            });
        }
    }
}

fn play(player: &mut Player, wav: &mut WavFile, lead_frames: u64) -> Result<(), CaptureError> {
    let channels = usize::from(player.channels);
    let mut pending = Vec::new();
    let mut lead = lead_frames;
    while lead > 0 && !player.done {
        let frames = lead.min(player.block_frames as u64);
        pending.resize(frames as usize * channels, 0.0);
        player.emit(&mut pending, true);
        lead -= frames;
    }
    let mut resampler = StreamResampler::new(wav.sample_rate(), wav.channels())?;
    // About one block at the file's rate per read, so pacing is not lumpy.
    let read_frames =
        (wav.sample_rate() as usize * player.block_frames / SAMPLE_RATE as usize).max(64);
    let mut chunk = Vec::new();
    while !player.done {
        if wav.read_frames(read_frames, &mut chunk)? == 0 {
            break;
        }
        resampler.push(&chunk, &mut pending)?;
        player.emit(&mut pending, false);
    }
    if !player.done {
        resampler.finish(&mut pending)?;
        player.emit(&mut pending, true);
    }
    Ok(())
}
