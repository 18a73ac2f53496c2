#!/usr/bin/env python3
"""Reference transcription with CTranslate2 (through faster-whisper) on the original weights.

This is the yardstick for the CTranslate2 -> ggml converter: run on the same WAV with the same
decoding settings, the ASR worker (whisper.cpp on the converted file) must produce the same words.
The settings mirror the worker's: greedy (beam 1), temperature 0 only (no fallback), no
conditioning on previous text, timestamps decoded, no VAD, English unless told otherwise.

The audio front end is made to match whisper.cpp's (and openai-whisper's): the log-mel of a
window that runs past the end of the audio is computed from the audio followed by 30 s of
silence. faster-whisper 1.x instead pads the log-mel itself with zeros, which is a different
encoder input; on tiny.en that alone flips words whose top two logits are close. So the audio is
handed over with 30 s of silence appended, and decoding is clipped to max(duration, 30 s). For
clips up to 30 s (what the daemon sends: speech regions) every window then sees exactly the
features whisper.cpp computes; past 30 s, the last window is still padded the faster-whisper way.

    ct2_transcribe.py MODEL_DIR AUDIO.wav [--threads N] [--beam-size N] [--language en]
                      [--initial-prompt TEXT] [--compute-type float32]

Prints one JSON object on stdout: {"text", "segments": [{"start", "end", "text"}], "elapsed_s"}.
Needs the venv from scripts/lib/ref-venv.sh. Never reaches the network: the model is a local
directory and the Hugging Face hub is forced offline.
"""

import argparse
import json
import os
import sys
import time
import wave

# faster-whisper imports huggingface_hub; a local model dir never needs it, and a clinic box must
# not try the network, so say so before the import.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402  (after the environment is set)
from faster_whisper import WhisperModel  # noqa: E402

SAMPLE_RATE = 16000


def read_wav_16k_mono(path):
    """Reads 16 kHz mono 16-bit PCM as float32 in [-1, 1), exactly as the Rust side does.

    faster-whisper would decode files with PyAV; reading the samples here instead guarantees both
    engines see bit-identical audio.
    """
    with wave.open(path, "rb") as w:
        if w.getnchannels() != 1 or w.getframerate() != SAMPLE_RATE or w.getsampwidth() != 2:
            sys.exit(
                f"{path}: need 16 kHz mono 16-bit PCM, got {w.getframerate()} Hz, "
                f"{w.getnchannels()} channel(s), {8 * w.getsampwidth()}-bit; "
                "convert with: sox IN -r 16000 -c 1 -b 16 OUT.wav"
            )
        frames = w.readframes(w.getnframes())
    return np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("wav")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--beam-size", type=int, default=1)
    parser.add_argument("--language", default="en")
    parser.add_argument("--initial-prompt", default=None)
    # float32 computes with the stored fp16 weights exactly (widened to f32); CTranslate2 has no
    # float16 compute on CPU.
    parser.add_argument("--compute-type", default="float32")
    args = parser.parse_args()

    audio = read_wav_16k_mono(args.wav)
    duration = len(audio) / SAMPLE_RATE
    padded = np.concatenate([audio, np.zeros(30 * SAMPLE_RATE, dtype=np.float32)])
    model = WhisperModel(
        args.model_dir,
        device="cpu",
        compute_type=args.compute_type,
        cpu_threads=args.threads,
        local_files_only=True,
    )
    started = time.perf_counter()
    segments, _info = model.transcribe(
        padded,
        language=args.language,
        task="transcribe",
        beam_size=args.beam_size,
        best_of=1,
        temperature=[0.0],
        condition_on_previous_text=False,
        initial_prompt=args.initial_prompt,
        without_timestamps=False,
        word_timestamps=False,
        vad_filter=False,
        # Stop where whisper.cpp stops: at the end of the audio, or of the first window.
        clip_timestamps=[0.0, max(duration, 30.0)],
    )
    # transcribe() is lazy: the decoding happens while the generator is drained.
    segments = [
        {"start": round(s.start, 3), "end": round(s.end, 3), "text": s.text.strip()}
        for s in segments
    ]
    elapsed = time.perf_counter() - started
    json.dump(
        {
            "text": " ".join(s["text"] for s in segments),
            "segments": segments,
            "elapsed_s": round(elapsed, 3),
        },
        sys.stdout,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
