//! The bounded hand-over between a producer (a device's converter thread, a replay thread) and
//! the consumer, plus the state a running source reports.
//!
//! Blocks carry their position on the stream's timeline, so a block the producer had to drop
//! is not lost silently: the reader sees the jump and fills it with counted silence, and every
//! frame downstream stays at its true time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::metrics::{Metrics, METRICS};

use super::{AudioBlock, SAMPLE_RATE};

/// Longest stretch of silence the reader hands out in one block, so that filling an hour-long
/// disconnection never asks for an hour of memory at once.
const MAX_FILL_FRAMES: u64 = SAMPLE_RATE as u64;

/// How often, at most, a producer warns about a full buffer: an overrun tends to last, and one
/// line per dropped 20 ms block would bury the log.
const OVERRUN_WARN_INTERVAL: Duration = Duration::from_secs(5);

/// What a running source is doing, as the admin port and the daemon see it.
#[derive(Debug, Clone, PartialEq)]
pub enum CaptureState {
    /// Started, not yet delivering.
    Starting,
    /// Delivering audio.
    Connected,
    /// Not delivering; `reason` says why in words IT can act on. A live device is retried.
    Disconnected { reason: String },
    /// About to try the device again (`attempt` counts from 1 since the last connection).
    Retrying { attempt: u32 },
    /// The source ended (a replay reached the end of its file, or the source was stopped).
    Finished,
    /// The source cannot go on (a replay file that turns out unreadable half-way).
    Failed { reason: String },
}

impl CaptureState {
    /// Whether the source will deliver no more audio.
    pub fn is_terminal(&self) -> bool {
        matches!(self, CaptureState::Finished | CaptureState::Failed { .. })
    }

    /// A one-word name for status lists (the admin port's device `state`).
    pub fn label(&self) -> &'static str {
        match self {
            CaptureState::Starting => "starting",
            CaptureState::Connected => "connected",
            CaptureState::Disconnected { .. } => "disconnected",
            CaptureState::Retrying { .. } => "retrying",
            CaptureState::Finished => "finished",
            CaptureState::Failed { .. } => "failed",
        }
    }
}

/// State shared by a source's thread, its handle and its reader.
pub(crate) struct Shared {
    id: String,
    state: Mutex<CaptureState>,
    changed: Condvar,
    stop: AtomicBool,
    retries: AtomicU64,
    produced_frames: AtomicU64,
    dropped_blocks: AtomicU64,
    dropped_frames: AtomicU64,
    /// Timeline position just after the last block produced (sent or dropped). Read by the
    /// reader once the producer is gone, to fill a dropped tail.
    timeline_end: AtomicU64,
}

impl Shared {
    pub(crate) fn new(id: &str) -> Arc<Shared> {
        Arc::new(Shared {
            id: id.to_string(),
            state: Mutex::new(CaptureState::Starting),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            retries: AtomicU64::new(0),
            produced_frames: AtomicU64::new(0),
            dropped_blocks: AtomicU64::new(0),
            dropped_frames: AtomicU64::new(0),
            timeline_end: AtomicU64::new(0),
        })
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    fn lock(&self) -> MutexGuard<'_, CaptureState> {
        // A panic elsewhere while holding this lock leaves a plain enum behind, still valid.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn set_state(&self, state: CaptureState) {
        *self.lock() = state;
        self.changed.notify_all();
    }

    pub(crate) fn state(&self) -> CaptureState {
        self.lock().clone()
    }

    pub(crate) fn count_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    pub(crate) fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        // Taking the lock orders the flag before any sleeper's check-then-wait.
        let _guard = self.lock();
        self.changed.notify_all();
    }

    /// Sleeps until `deadline` unless asked to stop first; returns whether a stop was asked.
    pub(crate) fn sleep_until(&self, deadline: Instant) -> bool {
        let mut guard = self.lock();
        loop {
            if self.stopped() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            guard = match self.changed.wait_timeout(guard, deadline - now) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    pub(crate) fn sleep(&self, duration: Duration) -> bool {
        self.sleep_until(Instant::now() + duration)
    }

    fn wait_for(&self, timeout: Duration, done: &dyn Fn(&CaptureState) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut guard = self.lock();
        loop {
            if done(&guard) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            guard = match self.changed.wait_timeout(guard, deadline - now) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }
}

/// The producer's end of the buffer.
pub(crate) struct BlockSender {
    tx: SyncSender<AudioBlock>,
    shared: Arc<Shared>,
    last_warning: Option<Instant>,
}

/// What became of an offered block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offer {
    Sent,
    Dropped,
    /// The reader is gone: nobody wants the audio any more.
    Closed,
}

impl BlockSender {
    /// Hands a block over without ever waiting: a full buffer drops the block, counts it and
    /// warns (rate-limited, ids and counts only).
    pub(crate) fn offer(&mut self, block: AudioBlock) -> Offer {
        let frames = block.frames();
        let end = block.first_frame + frames;
        let outcome = match self.tx.try_send(block) {
            Ok(()) => Offer::Sent,
            Err(TrySendError::Full(_)) => {
                let blocks = self.shared.dropped_blocks.fetch_add(1, Ordering::Relaxed) + 1;
                let dropped = self
                    .shared
                    .dropped_frames
                    .fetch_add(frames, Ordering::Relaxed)
                    + frames;
                Metrics::add(&METRICS.capture_overruns, frames);
                let due = self
                    .last_warning
                    .is_none_or(|at| at.elapsed() >= OVERRUN_WARN_INTERVAL);
                if due {
                    self.last_warning = Some(Instant::now());
                    tracing::warn!(
                        device = %self.shared.id,
                        dropped_blocks = blocks,
                        dropped_frames = dropped,
                        "capture buffer full: audio dropped; the reader fills the gap with silence"
                    );
                }
                Offer::Dropped
            }
            Err(TrySendError::Disconnected(_)) => Offer::Closed,
        };
        self.produced(frames, end);
        outcome
    }

    /// Hands a block over, waiting for room: for a replay at unlimited speed, which has no
    /// clock to keep and would otherwise drop most of its file. Returns false when the reader
    /// is gone or a stop was asked.
    pub(crate) fn send_waiting(&mut self, block: AudioBlock) -> bool {
        let frames = block.frames();
        let end = block.first_frame + frames;
        let mut block = block;
        loop {
            match self.tx.try_send(block) {
                Ok(()) => {
                    self.produced(frames, end);
                    return true;
                }
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(returned)) => {
                    block = returned;
                    if self.shared.sleep(Duration::from_millis(1)) {
                        return false;
                    }
                }
            }
        }
    }

    /// Marks the timeline as advanced without a block (nothing to send, e.g. a trimmed tail).
    fn produced(&self, frames: u64, end: u64) {
        self.shared
            .produced_frames
            .fetch_add(frames, Ordering::Relaxed);
        self.shared.timeline_end.fetch_max(end, Ordering::SeqCst);
    }
}

/// A bounded buffer of `capacity_blocks` blocks: the producer's end and the reader.
pub(crate) fn channel(
    shared: &Arc<Shared>,
    channels: u16,
    capacity_blocks: usize,
) -> (BlockSender, CaptureReader) {
    let (tx, rx) = std::sync::mpsc::sync_channel(capacity_blocks.max(1));
    (
        BlockSender {
            tx,
            shared: Arc::clone(shared),
            last_warning: None,
        },
        CaptureReader {
            rx,
            shared: Arc::clone(shared),
            channels,
            next_frame: 0,
            pending: None,
            gap_until: None,
            ended: false,
            stats: ReaderStats::default(),
        },
    )
}

/// One step of reading a stream.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadEvent {
    /// Audio as captured.
    Audio(AudioBlock),
    /// Silence standing in for frames that were dropped (or never arrived); a gap longer than
    /// a second comes as several of these.
    Gap(AudioBlock),
    /// Nothing arrived within the timeout; the source may still deliver.
    Timeout,
    /// The source is done and every frame it produced has been delivered.
    Ended,
}

/// What a reader has delivered so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReaderStats {
    /// Every frame handed out, audio and silence: the stream's position.
    pub frames_delivered: u64,
    pub audio_frames: u64,
    /// Frames of silence standing in for dropped audio.
    pub gap_frames: u64,
    /// Separate stretches of dropped audio.
    pub gaps: u64,
    /// Frames a producer sent twice for the same time (never expected); skipped, not repeated.
    pub overlap_frames: u64,
}

/// The consumer's end: hands out a gap-free timeline, starting at frame 0.
pub struct CaptureReader {
    rx: Receiver<AudioBlock>,
    shared: Arc<Shared>,
    channels: u16,
    next_frame: u64,
    pending: Option<AudioBlock>,
    gap_until: Option<u64>,
    ended: bool,
    stats: ReaderStats,
}

impl CaptureReader {
    pub fn id(&self) -> &str {
        self.shared.id()
    }

    pub fn channels(&self) -> u16 {
        self.channels
    }

    /// The frame the next block starts at.
    pub fn position(&self) -> u64 {
        self.next_frame
    }

    pub fn stats(&self) -> ReaderStats {
        self.stats
    }

    /// The next stretch of the timeline, waiting up to `timeout` for the producer.
    pub fn next_block(&mut self, timeout: Duration) -> ReadEvent {
        loop {
            if let Some(until) = self.gap_until {
                if self.next_frame < until {
                    return self.fill(until);
                }
                self.gap_until = None;
            }
            if self.ended {
                return ReadEvent::Ended;
            }
            let block = match self.pending.take() {
                Some(block) => block,
                None => match self.rx.recv_timeout(timeout) {
                    Ok(block) => block,
                    Err(RecvTimeoutError::Timeout) => return ReadEvent::Timeout,
                    Err(RecvTimeoutError::Disconnected) => {
                        self.ended = true;
                        // A dropped tail is still part of what was produced.
                        let end = self.shared.timeline_end.load(Ordering::SeqCst);
                        if end > self.next_frame {
                            self.stats.gaps += 1;
                            self.gap_until = Some(end);
                        }
                        continue;
                    }
                },
            };
            let channels = usize::from(self.channels);
            if block.channels != self.channels || channels == 0 {
                // Not produced by this crate's sources; dropping it leaves a counted gap
                // instead of mis-strided samples.
                continue;
            }
            let frames = block.frames();
            if block.first_frame > self.next_frame {
                self.stats.gaps += 1;
                self.gap_until = Some(block.first_frame);
                self.pending = Some(block);
                continue;
            }
            let overlap = self.next_frame - block.first_frame;
            if overlap >= frames {
                self.stats.overlap_frames += frames;
                continue;
            }
            let block = if overlap > 0 {
                self.stats.overlap_frames += overlap;
                let skip = usize::try_from(overlap).unwrap_or(usize::MAX) * channels;
                AudioBlock {
                    first_frame: self.next_frame,
                    channels: block.channels,
                    samples: block.samples.get(skip..).unwrap_or_default().to_vec(),
                }
            } else {
                block
            };
            let delivered = block.frames();
            self.next_frame += delivered;
            self.stats.frames_delivered += delivered;
            self.stats.audio_frames += delivered;
            return ReadEvent::Audio(block);
        }
    }

    fn fill(&mut self, until: u64) -> ReadEvent {
        let frames = (until - self.next_frame).min(MAX_FILL_FRAMES);
        let block = AudioBlock {
            first_frame: self.next_frame,
            channels: self.channels,
            samples: vec![0.0; frames as usize * usize::from(self.channels)],
        };
        self.next_frame += frames;
        self.stats.frames_delivered += frames;
        self.stats.gap_frames += frames;
        ReadEvent::Gap(block)
    }
}

/// Control of a running source: its state and counters, and stopping it. Dropping the handle
/// asks the source to stop without waiting for it.
pub struct CaptureHandle {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl CaptureHandle {
    pub(crate) fn new(shared: Arc<Shared>, thread: JoinHandle<()>) -> CaptureHandle {
        CaptureHandle {
            shared,
            thread: Some(thread),
        }
    }

    pub fn id(&self) -> &str {
        self.shared.id()
    }

    pub fn state(&self) -> CaptureState {
        self.shared.state()
    }

    /// Attempts to reopen a device since the source started.
    pub fn retries(&self) -> u64 {
        self.shared.retries.load(Ordering::Relaxed)
    }

    /// Frames the source produced, including those dropped on a full buffer.
    pub fn produced_frames(&self) -> u64 {
        self.shared.produced_frames.load(Ordering::Relaxed)
    }

    pub fn dropped_blocks(&self) -> u64 {
        self.shared.dropped_blocks.load(Ordering::Relaxed)
    }

    pub fn dropped_frames(&self) -> u64 {
        self.shared.dropped_frames.load(Ordering::Relaxed)
    }

    /// Waits up to `timeout` for the state to satisfy `done`; returns whether it did.
    pub fn wait_for(&self, timeout: Duration, done: impl Fn(&CaptureState) -> bool) -> bool {
        self.shared.wait_for(timeout, &done)
    }

    /// Stops the source and waits for its thread to end.
    pub fn stop(mut self) {
        self.shared.request_stop();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!(device = %self.shared.id(), "capture thread panicked");
            }
        }
    }
}

impl Drop for CaptureHandle {
    fn drop(&mut self) {
        self.shared.request_stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(first_frame: u64, channels: u16, frames: usize, value: f32) -> AudioBlock {
        AudioBlock {
            first_frame,
            channels,
            samples: vec![value; frames * usize::from(channels)],
        }
    }

    fn drain(reader: &mut CaptureReader) -> Vec<ReadEvent> {
        let mut events = Vec::new();
        loop {
            match reader.next_block(Duration::from_millis(200)) {
                ReadEvent::Ended => return events,
                ReadEvent::Timeout => panic!("timed out"),
                event => events.push(event),
            }
        }
    }

    #[test]
    fn a_dropped_block_becomes_counted_silence_at_its_place() {
        let shared = Shared::new("test");
        let (mut tx, mut reader) = channel(&shared, 2, 2);
        let before = Metrics::get(&METRICS.capture_overruns);
        assert_eq!(tx.offer(block(0, 2, 320, 0.5)), Offer::Sent);
        assert_eq!(tx.offer(block(320, 2, 320, 0.5)), Offer::Sent);
        assert_eq!(tx.offer(block(640, 2, 320, 0.5)), Offer::Dropped);
        assert!(Metrics::get(&METRICS.capture_overruns) >= before + 320);
        assert!(matches!(
            reader.next_block(Duration::ZERO),
            ReadEvent::Audio(_)
        ));
        assert!(matches!(
            reader.next_block(Duration::ZERO),
            ReadEvent::Audio(_)
        ));
        assert_eq!(tx.offer(block(960, 2, 320, 0.25)), Offer::Sent);
        // The last block is dropped too: the tail must still be filled.
        assert_eq!(tx.offer(block(1280, 2, 320, 0.25)), Offer::Sent);
        assert_eq!(tx.offer(block(1600, 2, 320, 0.25)), Offer::Dropped);
        drop(tx);
        let events = drain(&mut reader);
        let kinds: Vec<(bool, u64, u64)> = events
            .iter()
            .map(|e| match e {
                ReadEvent::Audio(b) => (true, b.first_frame, b.frames()),
                ReadEvent::Gap(b) => (false, b.first_frame, b.frames()),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                (false, 640, 320),
                (true, 960, 320),
                (true, 1280, 320),
                (false, 1600, 320)
            ]
        );
        let stats = reader.stats();
        assert_eq!(stats.frames_delivered, 1920);
        assert_eq!(stats.gap_frames, 640);
        assert_eq!(stats.gaps, 2);
        assert_eq!(shared.dropped_blocks.load(Ordering::Relaxed), 2);
        if let ReadEvent::Gap(b) = &events[0] {
            assert!(b.samples.iter().all(|&s| s == 0.0));
        }
    }

    #[test]
    fn long_gaps_come_in_bounded_pieces_and_overlaps_are_not_repeated() {
        let shared = Shared::new("test");
        let (mut tx, mut reader) = channel(&shared, 1, 8);
        tx.offer(block(0, 1, 100, 1.0));
        tx.offer(block(50, 1, 100, 2.0));
        tx.offer(block(3 * MAX_FILL_FRAMES, 1, 10, 3.0));
        drop(tx);
        let events = drain(&mut reader);
        match &events[1] {
            ReadEvent::Audio(b) => {
                assert_eq!((b.first_frame, b.frames()), (100, 50));
                assert!(b.samples.iter().all(|&s| s == 2.0));
            }
            other => panic!("{other:?}"),
        }
        let gaps: Vec<u64> = events
            .iter()
            .filter_map(|e| match e {
                ReadEvent::Gap(b) => Some(b.frames()),
                _ => None,
            })
            .collect();
        assert!(gaps.iter().all(|&n| n <= MAX_FILL_FRAMES));
        assert_eq!(gaps.iter().sum::<u64>(), 3 * MAX_FILL_FRAMES - 150);
        let stats = reader.stats();
        assert_eq!(stats.gaps, 1);
        assert_eq!(stats.overlap_frames, 50);
        assert_eq!(stats.frames_delivered, 3 * MAX_FILL_FRAMES + 10);
    }
}
