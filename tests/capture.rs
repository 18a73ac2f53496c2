//! Capture sources end to end: replays paced and placed on the timeline, overruns that become
//! counted silence, the consent gate over a real stream, odd channel counts, bad files, and a
//! missing sound card that is retried without disturbing anything else.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use edge_scribe::capture::{
    read_wav_channels, CaptureSource, CaptureState, CaptureStream, CpalSource, EncounterRecorder,
    ReadEvent, ReaderStats, ReplayOptions, ReplaySource, RetryPolicy,
};
use edge_scribe::metrics::{Metrics, METRICS};

fn fixture(scene: &str, file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/rooms")
        .join(scene)
        .join(file)
}

/// A float WAV whose every sample is distinct and says where it belongs.
fn write_float_wav(path: &Path, rate: u32, channels: u16, frames: usize) -> Vec<f32> {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut writer = hound::WavWriter::create(path, spec).unwrap();
    let mut samples = Vec::with_capacity(frames * usize::from(channels));
    for i in 0..frames {
        for c in 0..channels {
            let v = ((i * 7 + usize::from(c) * 131) % 2000) as f32 / 2000.0 - 0.5;
            writer.write_sample(v).unwrap();
            samples.push(v);
        }
    }
    writer.finalize().unwrap();
    samples
}

/// Channel c holds the constant (c + 1) / 10, so mixed-up channels show.
fn write_int_wav(path: &Path, rate: u32, channels: u16, bits: u16, frames: usize) {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: bits,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(path, spec).unwrap();
    let full = ((1i64 << (bits - 1)) - 1) as f32;
    for _ in 0..frames {
        for c in 0..channels {
            let v = (f32::from(c + 1) / 10.0 * full) as i32;
            writer.write_sample(v).unwrap();
        }
    }
    writer.finalize().unwrap();
}

fn start(path: &Path, options: ReplayOptions, capacity: usize) -> CaptureStream {
    Box::new(ReplaySource::open("replay-test", path, options).unwrap())
        .start(capacity)
        .unwrap()
}

struct Collected {
    samples: Vec<f32>,
    stats: ReaderStats,
    /// (first_frame, frames) of each gap block.
    gaps: Vec<(u64, u64)>,
    elapsed: Duration,
}

fn collect(stream: &mut CaptureStream) -> Collected {
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut gaps = Vec::new();
    let deadline = started + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "the stream never ended");
        match stream.reader.next_block(Duration::from_millis(100)) {
            ReadEvent::Audio(block) => samples.extend_from_slice(&block.samples),
            ReadEvent::Gap(block) => {
                gaps.push((block.first_frame, block.frames()));
                samples.extend_from_slice(&block.samples);
            }
            ReadEvent::Timeout => {}
            ReadEvent::Ended => break,
        }
    }
    Collected {
        samples,
        stats: stream.reader.stats(),
        gaps,
        elapsed: started.elapsed(),
    }
}

fn options(speed: f32) -> ReplayOptions {
    ReplayOptions {
        speed,
        ..ReplayOptions::default()
    }
}

#[test]
fn replay_is_paced_by_its_speed_and_delivers_the_file_intact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("four.wav");
    let written = write_float_wav(&path, 16_000, 4, 16_000);

    let mut stream = start(&path, options(10.0), 64);
    assert_eq!(stream.reader.channels(), 4);
    let paced = collect(&mut stream);
    assert_eq!(paced.samples, written, "samples or channel order changed");
    assert_eq!(paced.stats.frames_delivered, 16_000);
    assert_eq!(paced.stats.gap_frames, 0);
    assert!(
        paced.elapsed >= Duration::from_millis(90) && paced.elapsed < Duration::from_millis(600),
        "1 s at speed 10 took {:?}",
        paced.elapsed
    );
    assert!(stream
        .handle
        .wait_for(Duration::from_secs(2), |s| *s == CaptureState::Finished));
    stream.handle.stop();

    // Unlimited speed: no pacing, and no drops even through a small buffer.
    let mut stream = start(&path, options(f32::INFINITY), 4);
    let fast = collect(&mut stream);
    assert_eq!(fast.samples, written);
    assert_eq!(fast.stats.gap_frames, 0);
    assert!(
        fast.elapsed < Duration::from_millis(80),
        "unlimited speed took {:?}",
        fast.elapsed
    );

    // The 16-bit fixture array, against hound's own reading of it.
    let array = fixture("two-voice-5db", "array.wav");
    let mut reader = hound::WavReader::open(&array).unwrap();
    let expected: Vec<f32> = reader
        .samples::<i16>()
        .map(|s| f32::from(s.unwrap()) / 32768.0)
        .collect();
    let mut stream = start(&array, options(f32::INFINITY), 16);
    assert_eq!(stream.reader.channels(), 4);
    assert_eq!(collect(&mut stream).samples, expected);
}

#[test]
fn an_offset_badge_lands_at_its_frame_on_the_array_timeline() {
    let badge_path = fixture("two-voice-5db", "badge.wav");
    let truth: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("two-voice-5db", "truth.json")).unwrap(),
    )
    .unwrap();
    let offset_s = truth["badge"]["offset_s"].as_f64().unwrap();
    let offset_frames = (offset_s * 16_000.0).round() as usize;
    assert_eq!(offset_frames, 2345);
    let badge = read_wav_channels(&badge_path).unwrap();
    assert_eq!(badge.channels, 1);

    let source = ReplaySource::open(
        "badge",
        &badge_path,
        ReplayOptions {
            speed: f32::INFINITY,
            offset_s,
            ..ReplayOptions::default()
        },
    )
    .unwrap();
    assert_eq!(source.frames(), (offset_frames + badge.frames()) as u64);
    let mut stream = Box::new(source).start(8).unwrap();
    let got = collect(&mut stream);
    assert_eq!(got.samples.len(), offset_frames + badge.frames());
    assert!(got.samples[..offset_frames].iter().all(|&s| s == 0.0));
    assert_eq!(&got.samples[offset_frames..], &badge.samples[..]);
    // Leading silence is the badge not yet recording, not lost audio.
    assert_eq!(got.stats.gap_frames, 0);

    // A negative offset trims: timeline frame 0 is the file's frame 8000.
    let mut stream = Box::new(
        ReplaySource::open(
            "badge",
            &badge_path,
            ReplayOptions {
                speed: f32::INFINITY,
                offset_s: -0.5,
                ..ReplayOptions::default()
            },
        )
        .unwrap(),
    )
    .start(8)
    .unwrap();
    let trimmed = collect(&mut stream);
    assert_eq!(&trimmed.samples[..], &badge.samples[8000..]);
}

#[test]
fn a_full_buffer_drops_blocks_counts_them_and_the_reader_keeps_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stalled.wav");
    let written = write_float_wav(&path, 16_000, 2, 16_000);
    let before = Metrics::get(&METRICS.capture_overruns);

    // Two 20 ms blocks of room, 1 s of audio in 50 ms, and a consumer that stalls for 300 ms.
    let mut stream = start(&path, options(20.0), 2);
    assert!(stream
        .handle
        .wait_for(Duration::from_secs(5), CaptureState::is_terminal));
    let got = collect(&mut stream);

    let dropped = stream.handle.dropped_frames();
    assert!(dropped > 0, "nothing was dropped");
    assert!(Metrics::get(&METRICS.capture_overruns) >= before + dropped);
    assert_eq!(stream.handle.produced_frames(), 16_000);
    assert_eq!(got.stats.frames_delivered, 16_000, "the timeline shifted");
    assert_eq!(got.samples.len(), written.len());
    assert_eq!(got.stats.gap_frames, dropped);
    assert!(got.stats.gaps >= 1);
    // Every frame is either the file's own or silence inside a reported gap.
    let in_gap = |frame: u64| {
        got.gaps
            .iter()
            .any(|&(first, n)| frame >= first && frame < first + n)
    };
    for (frame, (got, want)) in got
        .samples
        .chunks_exact(2)
        .zip(written.chunks_exact(2))
        .enumerate()
    {
        if in_gap(frame as u64) {
            assert_eq!(got, [0.0, 0.0], "frame {frame}");
        } else {
            assert_eq!(got, want, "frame {frame}");
        }
    }
}

#[test]
fn only_audio_after_consent_is_kept_from_a_stream() {
    let array = fixture("companion-5db", "array.wav");
    let reference = read_wav_channels(&array).unwrap();
    let mut stream = start(&array, options(f32::INFINITY), 8);
    let mut recorder = EncounterRecorder::new(stream.reader.channels());
    recorder.start("enc-test", 0).unwrap();
    loop {
        let event = stream.reader.next_block(Duration::from_secs(5));
        // Consent and end arrive as events while the stream runs.
        if !recorder.has_consent() && stream.reader.position() >= 16_000 {
            recorder.consent(16_000).unwrap();
        }
        if !recorder.has_ended() && stream.reader.position() >= 48_000 {
            recorder.end(48_000).unwrap();
        }
        match event {
            ReadEvent::Ended => break,
            ReadEvent::Timeout => panic!("replay stalled"),
            event => recorder.push_event(&event).unwrap(),
        }
    }
    let counts = recorder.counts();
    assert_eq!(counts.discarded_frames, 16_000);
    assert_eq!(counts.kept_frames, 32_000);
    assert_eq!(counts.ignored_frames, reference.frames() as u64 - 48_000);
    let audio = recorder.finish().unwrap();
    assert_eq!(audio.first_frame, Some(16_000));
    assert_eq!(audio.channels.len(), 4);
    for c in 0..4u16 {
        let want = reference.channel(c);
        assert_eq!(
            audio.channels[usize::from(c)],
            want[16_000..48_000],
            "channel {c}"
        );
    }
}

#[test]
fn seven_channel_and_mono_files_of_other_rates_work() {
    let dir = tempfile::tempdir().unwrap();
    for (name, rate, channels, bits) in [
        ("seven.wav", 44_100, 7u16, 24u16),
        ("mono.wav", 8_000, 1, 8),
        ("stereo.wav", 48_000, 2, 16),
    ] {
        let path = dir.path().join(name);
        write_int_wav(&path, rate, channels, bits, rate as usize / 2);
        let mut stream = start(&path, options(f32::INFINITY), 8);
        assert_eq!(stream.reader.channels(), channels, "{name}");
        let got = collect(&mut stream);
        let frames = got.samples.len() / usize::from(channels);
        assert_eq!(frames, 8_000, "{name}: half a second at 16 kHz");
        // Away from the edges, every channel still holds its own level.
        for frame in got
            .samples
            .chunks_exact(usize::from(channels))
            .skip(500)
            .take(7_000)
        {
            for (c, &v) in frame.iter().enumerate() {
                let want = (c + 1) as f32 / 10.0;
                assert!((v - want).abs() < 0.02, "{name} channel {c}: {v} vs {want}");
            }
        }
    }
}

#[test]
fn bad_files_are_refused_with_their_name_and_no_panic() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.wav");
    write_float_wav(&good, 16_000, 4, 16_000);
    let bytes = std::fs::read(&good).unwrap();

    let truncated = dir.path().join("truncated.wav");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let garbage = dir.path().join("garbage.wav");
    std::fs::write(&garbage, b"this is not a wave file at all, only words").unwrap();
    let header_only = dir.path().join("header-only.wav");
    std::fs::write(&header_only, &bytes[..20]).unwrap();
    let missing = dir.path().join("missing.wav");

    for (path, words) in [
        (&truncated, "truncated"),
        (&garbage, "not a readable WAV"),
        (&header_only, "not a readable WAV"),
        (&missing, "cannot open"),
    ] {
        let err = match ReplaySource::open("replay-bad", path, ReplayOptions::default()) {
            Ok(_) => panic!("{} was accepted", path.display()),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains(words), "{err}");
        let err = read_wav_channels(path).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
    }
    let err = ReplaySource::open("replay-bad", &good, options(0.0))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("speed"), "{err}");
}

#[test]
fn a_missing_sound_card_is_reported_and_retried_while_replays_run_on() {
    let name = "edge-scribe-test-no-such-card";
    let device = CpalSource::new(name, 4).unwrap().with_retry(RetryPolicy {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(50),
    });
    let mut card = Box::new(device).start(8).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("room.wav");
    let written = write_float_wav(&path, 16_000, 4, 8_000);
    let mut replay = start(&path, options(f32::INFINITY), 8);

    assert!(card.handle.wait_for(Duration::from_secs(10), |s| matches!(
        s,
        CaptureState::Disconnected { .. }
    )));
    match card.handle.state() {
        CaptureState::Disconnected { reason } => {
            assert!(reason.contains(name), "{reason}");
            assert!(reason.contains("no input device"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while card.handle.retries() < 3 {
        assert!(Instant::now() < deadline, "no retries");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(matches!(
        card.reader.next_block(Duration::from_millis(10)),
        ReadEvent::Timeout
    ));

    assert_eq!(collect(&mut replay).samples, written);
    assert!(replay
        .handle
        .wait_for(Duration::from_secs(2), |s| *s == CaptureState::Finished));

    card.handle.stop();
    assert!(matches!(
        card.reader.next_block(Duration::from_secs(1)),
        ReadEvent::Ended
    ));
}
