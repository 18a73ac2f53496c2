//! An encounter heard live: a room's capture streams (the array and, when worn, the clinician's
//! badge) go through the consent gate and the streaming room front end as they arrive, and the
//! recogniser transcribes each chunk of speech on its own thread while the visit goes on. When
//! the visit ends only the tail is left: the front end's last second, the last chunk, and the
//! final who-spoke-when that names each sentence's speaker. The result goes to
//! [`crate::pipeline::conclude`], like a recorded visit's.
//!
//! Nothing is written while listening: audio before consent is dropped as it arrives, and what
//! is kept stays in memory until the encounter is stored. Logs carry counts and timings only.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::audio::vad::Region;
use crate::capture::{CaptureStream, EncounterCounts, EncounterRecorder, ReadEvent};
use crate::config::Config;
use crate::frontend::room::{RoomAnalysis, VoiceEmbedder};
use crate::frontend::stream::RoomStream;
use crate::inference::{AsrSegment, InferenceError, TranscribeOptions, Transcriber};
use crate::pipeline::{self, PipelineError, SegmentCollector, Timings};
use crate::room::{self, ChunkCutter, RoomError, RoomModels};
use crate::transcript::Transcript;
use crate::visits::VisitControl;

/// How long one read waits for the array before the loop looks at its other duties.
const READ_WAIT: Duration = Duration::from_millis(20);

/// A room's capture streams for one encounter.
pub struct RoomCapture {
    pub array: CaptureStream,
    pub badge: Option<CaptureStream>,
    /// Microphone positions in metres, one per array channel.
    pub geometry: Vec<[f32; 3]>,
}

/// What listening to an encounter produced.
pub struct Listened {
    /// The recogniser's signal, kept for playback.
    pub samples: Vec<f32>,
    pub transcript: Transcript,
    /// Chunks the recogniser was given.
    pub regions: usize,
    pub analysis: RoomAnalysis,
    /// What the consent gate did with the array's frames.
    pub counts: EncounterCounts,
    /// The badge's level over what it heard (dBFS), for IT's badge list.
    pub badge_dbfs: Option<f64>,
    /// Front end and recogniser compute time, and the tail: from the end of the audio to the
    /// transcript with its speakers.
    pub timings: Timings,
    pub started: Instant,
}

/// Where listening is, for the caller's watchdog and the visit's status.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Progress {
    /// Still listening, this many seconds heard: reported every few tens of milliseconds.
    Listening { heard_s: f32 },
    /// The audio ended after this many seconds; the tail (the last chunks' recognition, the
    /// final decisions) follows without further reports.
    Tail { heard_s: f32 },
}

/// Listens to one encounter until its array stream ends, the visit is ended (`control`) or
/// the box shuts down (`shutdown`). Audio is kept from the moment `control` has consent: what
/// was heard before is dropped as it arrives, and without consent nothing is transcribed.
pub fn listen(
    config: &Config,
    capture: RoomCapture,
    models: &mut RoomModels,
    transcriber: &mut dyn Transcriber,
    control: &VisitControl,
    shutdown: &AtomicBool,
    progress: &dyn Fn(Progress),
) -> Result<Listened, PipelineError> {
    let started = Instant::now();
    let RoomCapture {
        array,
        badge,
        geometry,
    } = capture;
    let channels = array.reader.channels();
    if usize::from(channels) != geometry.len() {
        return Err(RoomError::GeometryMismatch {
            channels: usize::from(channels),
            positions: geometry.len(),
        }
        .into());
    }
    let mut array_gate = EncounterRecorder::new(channels);
    let mut badge_gate = EncounterRecorder::new(1);
    for gate in [&mut array_gate, &mut badge_gate] {
        gate.start("live", 0).map_err(RoomError::from)?;
    }
    let options = TranscribeOptions::from(&config.asr);
    let max_chunk = pipeline::max_chunk_samples(config);
    let embedder = models
        .embedder
        .as_deref_mut()
        .map(|e| e as &mut dyn VoiceEmbedder);
    let mut stream = RoomStream::new(
        &geometry,
        badge.is_some(),
        models.detector.as_mut(),
        embedder,
        models.settings.clone(),
        false,
    )?;
    tracing::info!(
        channels,
        badge = badge.is_some(),
        consent = control.consented(),
        "listening to a room encounter"
    );

    std::thread::scope(|scope| {
        let (jobs, job_queue) = mpsc::channel::<(Region, Vec<f32>)>();
        let (results, done) = mpsc::channel::<AsrResult>();
        let recogniser = std::thread::Builder::new()
            .name("live-asr".into())
            .spawn_scoped(scope, move || {
                transcribe_jobs(job_queue, results, transcriber, &options)
            })
            .map_err(|_| PipelineError::Listen("cannot start the recogniser thread"))?;
        let mut cutter = ChunkCutter::new(max_chunk);
        let mut collector = SegmentCollector::default();
        let mut regions = 0usize;
        let mut asr_ms = 0u64;
        let mut frontend = Duration::ZERO;
        let mut badge_stream = badge;
        let mut array_stream = Some(array);
        let mut badge_energy = (0.0f64, 0usize);
        let mut chunks_while_listening = 0usize;
        loop {
            progress(Progress::Listening {
                heard_s: stream.heard() as f32 / crate::audio::SAMPLE_RATE as f32,
            });
            let Some(array) = array_stream.as_mut() else {
                break;
            };
            // Consent counts from the next frame each stream delivers.
            if control.consented() && !array_gate.has_consent() {
                array_gate
                    .consent(array.reader.position())
                    .map_err(RoomError::from)?;
                let badge_at = badge_stream.as_ref().map_or(0, |b| b.reader.position());
                badge_gate.consent(badge_at).map_err(RoomError::from)?;
            }
            let event = array.reader.next_block(READ_WAIT);
            let array_ended = event == ReadEvent::Ended;
            array_gate.push_event(&event).map_err(RoomError::from)?;
            let kept = array_gate.take_kept();
            let pushing = Instant::now();
            if kept.first().is_some_and(|c| !c.is_empty()) {
                let blocks: Vec<&[f32]> = kept.iter().map(Vec::as_slice).collect();
                stream.push_array(&blocks)?;
            }
            // The badge is read as far as it has come, without waiting.
            if let Some(badge) = badge_stream.as_mut() {
                loop {
                    let event = badge.reader.next_block(Duration::ZERO);
                    match event {
                        ReadEvent::Timeout => break,
                        ReadEvent::Ended => {
                            if let Some(ended) = badge_stream.take() {
                                ended.handle.stop();
                            }
                            break;
                        }
                        _ => {
                            badge_gate.push_event(&event).map_err(RoomError::from)?;
                            if let Some(samples) = badge_gate.take_kept().first() {
                                badge_energy.0 += samples
                                    .iter()
                                    .map(|&v| f64::from(v) * f64::from(v))
                                    .sum::<f64>();
                                badge_energy.1 += samples.len();
                                stream.push_badge(samples)?;
                            }
                        }
                    }
                }
            }
            frontend += pushing.elapsed();
            for region in cutter.advance(stream.speech(), stream.asr_signal().len()) {
                let audio = stream.asr_signal()[region.start..region.end].to_vec();
                regions += 1;
                // A closed queue means the recogniser stopped on an error, collected below.
                let _ = jobs.send((region, audio));
            }
            while let Ok(result) = done.try_recv() {
                let (pieces, ms) = result.map_err(PipelineError::Transcribe)?;
                asr_ms += ms;
                for (piece, segments) in pieces {
                    collector.add(&piece, segments);
                }
                chunks_while_listening += 1;
            }
            if array_ended || control.ended() || shutdown.load(Ordering::SeqCst) {
                if let Some(array) = array_stream.take() {
                    array.handle.stop();
                }
            }
        }
        if let Some(badge) = badge_stream.take() {
            badge.handle.stop();
        }

        // The visit is over: the tail.
        let tail_started = Instant::now();
        let finishing = Instant::now();
        let heard = stream.heard();
        progress(Progress::Tail {
            heard_s: heard as f32 / crate::audio::SAMPLE_RATE as f32,
        });
        let analysis = stream.finish()?;
        frontend += finishing.elapsed();
        for region in cutter.finish(&analysis.detected, analysis.asr_signal.len()) {
            regions += 1;
            let _ = jobs.send((
                region,
                analysis.asr_signal[region.start..region.end].to_vec(),
            ));
        }
        drop(jobs);
        for result in done {
            let (pieces, ms) = result.map_err(PipelineError::Transcribe)?;
            asr_ms += ms;
            for (piece, segments) in pieces {
                collector.add(&piece, segments);
            }
        }
        if recogniser.join().is_err() {
            return Err(PipelineError::Listen("the recogniser thread panicked"));
        }
        let mut transcript = collector.finish();
        room::label_speakers(&mut transcript, &analysis.turns);
        let tail_ms = tail_started.elapsed().as_millis() as u64;
        tracing::info!(
            heard_ms = crate::audio::vad::samples_to_ms(heard),
            chunks = regions,
            chunks_while_listening,
            segments = transcript.segments.len(),
            voices = analysis.voices,
            frontend_ms = frontend.as_millis() as u64,
            asr_ms,
            tail_ms,
            "speech regions found and transcribed while listening"
        );
        Ok(Listened {
            samples: analysis.asr_signal.clone(),
            transcript,
            regions,
            counts: array_gate.counts(),
            badge_dbfs: (badge_energy.1 > 0)
                .then(|| crate::audio::level_dbfs(badge_energy.0, badge_energy.1)),
            analysis,
            timings: Timings {
                frontend_ms: frontend.as_millis() as u64,
                asr_ms,
                tail_ms,
                ..Timings::default()
            },
            started,
        })
    })
}

/// A chunk's recognised pieces (more than one when a failed decode was split) and the
/// milliseconds the recogniser took.
type AsrResult = Result<(Vec<(Region, Vec<AsrSegment>)>, u64), InferenceError>;

/// The recogniser's thread: chunks in order, results in the same order; it stops at the first
/// failure (the worker supervisor has already retried) or when no more chunks can come.
fn transcribe_jobs(
    jobs: mpsc::Receiver<(Region, Vec<f32>)>,
    results: mpsc::Sender<AsrResult>,
    transcriber: &mut dyn Transcriber,
    options: &TranscribeOptions,
) {
    for (region, audio) in jobs {
        let started = Instant::now();
        let result = pipeline::transcribe_chunk(&audio, region, transcriber, options)
            .map(|pieces| (pieces, started.elapsed().as_millis() as u64));
        let failed = result.is_err();
        if results.send(result).is_err() || failed {
            break;
        }
    }
}
