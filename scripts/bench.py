#!/usr/bin/env python3
"""Measures edge-scribe on this machine and writes docs/BENCHMARKS.md.

Run through `scripts/bench`, which builds the release binaries, installs the models and the
reference venv (faster-whisper + CTranslate2), and starts this script with that venv's Python.
Three parts, each against the obvious alternative or variant on the same input in the same run:

1. ASR: every installed Whisper model transcribes samples/sample-encounter.wav through the ASR
   worker (whisper.cpp on the converted ggml file) and through faster-whisper (CTranslate2) on the
   original CTranslate2 files, with the same threads and the same greedy decoding settings. The
   runs alternate between the engines so that load from other processes hits both alike.
2. LLM: the LLM worker (llama.cpp) drafts from a ~600-token prompt with and without a GBNF grammar.
3. End to end: `edge-scribe process` on the sample, with the peak RSS of the daemon and both
   workers taken from /proc.
4. ACI-Bench drafting (scripts/bench_aci.py): `edge-scribe eval aci` extraction-only and with each
   installed LLM, next to the published numbers, plus drafting from ASR of synthesized audio.
   `--parts aci` alone refreshes only that section of an existing report.

    bench.py [--target-dir DIR] [--models-dir DIR] [--out docs/BENCHMARKS.md] [--repeats 3]
             [--threads 2] [--e2e-runs 2] [--command "scripts/bench"]

Needs only the standard library, plus faster-whisper for the ASR comparison (without it that
column is reported as missing rather than failing the whole run). The `fw-child` sub-command is
internal: it is this script re-started as the faster-whisper process, so that its memory and
start-up are measured the same way as a worker's.
"""

import argparse
import datetime
import json
import os
import platform
import re
import select
import shlex
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import bench_aci

REPO = Path(__file__).resolve().parent.parent
SAMPLE_WAV = REPO / "samples" / "sample-encounter.wav"
SAMPLE_TRUTH = REPO / "samples" / "sample-encounter.truth.json"
CONFIG = REPO / "config" / "edge-scribe.toml"
ASR_MODELS = ["whisper-tiny.en", "whisper-base"]
LLM_MODEL = "smollm2-135m-instruct"
SAMPLE_RATE = 16000
# The pipeline packs speech into at most this much audio per ASR request (vad.max_region_s).
CHUNK_MAX_S = 28.0
# A chunk is cut in the middle of the quietest 620 ms stretch of its last CHUNK_SEARCH_S seconds,
# so that no word is split between two requests.
CHUNK_SEARCH_S = 8.0
# Half-width, in 20 ms frames, of the window over which a pause is measured (±300 ms).
QUIET_HALF = 15
LLM_MAX_TOKENS = 200
LLM_REQUESTS = 3
POLL_S = 0.05

INSTALL_HINT = {
    "binaries": "run scripts/bench, which builds them (cargo build --release --workspace with "
                "CARGO_TARGET_DIR=~/.cache/edge-scribe/target)",
    "models": "run scripts/bench, which fetches them (edge-scribe models fetch [--model "
              "whisper-base])",
    "venv": "scripts/lib/ref-venv.sh creates it",
}


class BenchError(Exception):
    """A failure with a message that says what to do."""


def log(message):
    print(f"bench: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Audio, text and numbers


def read_wav_16k_mono(path):
    """16 kHz mono 16-bit PCM as raw little-endian int16 bytes (what both engines are fed)."""
    with wave.open(str(path), "rb") as w:
        if w.getnchannels() != 1 or w.getframerate() != SAMPLE_RATE or w.getsampwidth() != 2:
            raise BenchError(
                f"{path}: need 16 kHz mono 16-bit PCM, got {w.getframerate()} Hz, "
                f"{w.getnchannels()} channel(s), {8 * w.getsampwidth()}-bit"
            )
        return w.readframes(w.getnframes())


def pcm16_to_f32le(pcm):
    """int16 → f32 in [-1, 1) as little-endian bytes, the ASR worker's payload (x / 32768)."""
    count = len(pcm) // 2
    samples = struct.unpack(f"<{count}h", pcm)
    return struct.pack(f"<{count}f", *(s / 32768.0 for s in samples))


def chunk_bounds(pcm):
    """Splits the audio into pieces of at most CHUNK_MAX_S, cut at quiet 20 ms frames.

    Returns [(start_sample, end_sample)]. The pipeline sends VAD speech regions packed up to the
    same length; this keeps the request sizes and count alike without needing the VAD here.
    """
    count = len(pcm) // 2
    samples = struct.unpack(f"<{count}h", pcm)
    frame = SAMPLE_RATE // 50
    energy = [
        sum(abs(s) for s in samples[i : i + frame]) for i in range(0, count - frame + 1, frame)
    ]
    # Energy summed over ±QUIET_HALF frames, so that the cut lands in the middle of a pause
    # rather than in a short gap between two words.
    smooth = [
        sum(energy[max(0, f - QUIET_HALF) : f + QUIET_HALF + 1]) for f in range(len(energy))
    ]
    max_len = int(CHUNK_MAX_S * SAMPLE_RATE)
    search = int(CHUNK_SEARCH_S * SAMPLE_RATE)
    bounds, start = [], 0
    while count - start > max_len:
        first = (start + max_len - search) // frame
        last = (start + max_len) // frame - 1
        # Quietest stretch; on ties the latest, so chunks stay long.
        best = min(range(first, last + 1), key=lambda f: (smooth[f], -f))
        cut = best * frame + frame // 2
        bounds.append((start, cut))
        start = cut
    bounds.append((start, count))
    return bounds


def normalise_words(text):
    text = text.lower().replace("'", "").replace("\u2019", "")
    return re.sub(r"[^a-z0-9]+", " ", text).split()


def wer(reference, hypothesis):
    """Word-level Levenshtein distance / reference words, after lowercasing and stripping
    punctuation (simpler than the Rust eval::wer, which also equates "10" and "ten" etc.)."""
    ref, hyp = normalise_words(reference), normalise_words(hypothesis)
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h))
        previous = current
    return previous[-1] / max(1, len(ref))


def median(values):
    return statistics.median(values) if values else None


def fmt(value, digits=2, unit=""):
    if value is None:
        return "–"
    return f"{value:.{digits}f}{unit}"


def mb(kb):
    return None if kb is None else kb / 1024.0


def times_phrase(subject, subject_s, other, other_s):
    """'A is 1.40× faster than B' (or slower) from two processing times."""
    if not subject_s or not other_s:
        return f"{subject} vs {other}: not measured"
    ratio = other_s / subject_s
    if ratio >= 1:
        return f"{subject} is {ratio:.2f}× faster than {other}"
    return f"{subject} is {1 / ratio:.2f}× slower than {other}"


def proc_status_kb(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


class CpuMeter:
    """How much CPU other processes used over an interval, in cores: the machine's busy time
    from /proc/stat minus this script's own, its waited-for children's (os.times) and that of
    the live processes it is told about (/proc/PID/stat)."""

    def __init__(self, pids=()):
        self.pids = list(pids)
        self.start = self._snapshot()

    def _snapshot(self):
        tick = os.sysconf("SC_CLK_TCK")
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        # user nice system idle iowait irq softirq steal ...; busy excludes idle, iowait, steal.
        busy = (fields[0] + fields[1] + fields[2] + fields[5] + fields[6]) / tick
        t = os.times()
        ours = t.user + t.system + t.children_user + t.children_system
        for pid in self.pids:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    stat = f.read()
                rest = stat[stat.rfind(")") + 2 :].split()
                ours += (int(rest[11]) + int(rest[12])) / tick  # utime, stime
            except (OSError, ValueError, IndexError):
                pass
        return time.monotonic(), busy, ours

    def others_cores(self):
        wall0, busy0, ours0 = self.start
        wall1, busy1, ours1 = self._snapshot()
        return max(0.0, ((busy1 - busy0) - (ours1 - ours0)) / max(wall1 - wall0, 1e-9))


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


# ---------------------------------------------------------------------------------------------
# The worker protocol: u32 LE header_len | u32 LE payload_len | JSON header | payload


class ChildProcess:
    """What the benchmark needs of every engine process it drives: peak memory, and an end
    that never hangs (close stdin, wait, kill if it will not go)."""

    def sample_peak(self):
        value = proc_status_kb(self.proc.pid, "VmHWM")
        if value is not None:
            self.peak_kb = max(self.peak_kb or 0, value)

    def close_stdin_and_wait(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Worker(ChildProcess):
    """One worker process driven over its stdin/stdout, with deadlines on every read."""

    def __init__(self, argv, name, timeout_s):
        self.name = name
        self.stderr = tempfile.TemporaryFile()
        started = time.perf_counter()
        try:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, cwd="/"
            )
        except OSError as e:
            raise BenchError(f"cannot start {name} ({argv[0]}): {e}") from e
        self.peak_kb = None
        ready, _ = self._read(timeout_s)
        self.start_s = time.perf_counter() - started
        if ready.get("type") != "ready":
            self.kill()
            raise BenchError(f"{name} sent {ready.get('type')!r} instead of ready")
        self.ready = ready
        self._next_id = 1

    def request(self, header, payload=b"", timeout_s=600):
        header = dict(header, id=self._next_id)
        self._next_id += 1
        data = json.dumps(header).encode()
        try:
            self.proc.stdin.write(struct.pack("<II", len(data), len(payload)) + data + payload)
            self.proc.stdin.flush()
        except BrokenPipeError:
            self.kill()
            raise BenchError(f"{self.name} exited; its stderr:\n{self.stderr_tail()}") from None
        response, _ = self._read(timeout_s)
        self.sample_peak()
        if response.get("type") == "failed":
            raise BenchError(f"{self.name} failed request {header['id']}: {response.get('message')}")
        return response

    def _read_exact(self, n, deadline):
        fd = self.proc.stdout.fileno()
        buf = bytearray()
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise BenchError(f"{self.name} did not answer in time; killed it")
            readable, _, _ = select.select([fd], [], [], min(left, 1.0))
            self.sample_peak()
            if not readable:
                continue
            chunk = os.read(fd, n - len(buf))
            if not chunk:
                self.proc.wait(timeout=5)
                raise BenchError(
                    f"{self.name} exited (code {self.proc.returncode}); its stderr:\n"
                    f"{self.stderr_tail()}"
                )
            buf += chunk
        return bytes(buf)

    def _read(self, timeout_s):
        deadline = time.monotonic() + timeout_s
        header_len, payload_len = struct.unpack("<II", self._read_exact(8, deadline))
        header = json.loads(self._read_exact(header_len, deadline))
        payload = self._read_exact(payload_len, deadline) if payload_len else b""
        return header, payload

    def reported_load_s(self):
        """The model load time the worker logs on stderr ("loaded … in N ms"), if it does."""
        self.stderr.seek(0)
        m = re.search(rb"loaded .*? in (\d+) ms", self.stderr.read())
        return int(m.group(1)) / 1000 if m else None

    def stderr_tail(self):
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")[-2000:]

    def close(self):
        """Asks the worker to shut down, closes stdin, and waits (kills after 10 s)."""
        if self.proc.poll() is None:
            self.sample_peak()
            try:
                data = json.dumps({"type": "shutdown"}).encode()
                self.proc.stdin.write(struct.pack("<II", len(data), 0) + data)
                self.proc.stdin.flush()
            except OSError:
                pass
        self.close_stdin_and_wait()



class FasterWhisperChild(ChildProcess):
    """This script re-started as `fw-child`: one faster-whisper model, JSON lines in and out."""

    def __init__(self, python, model_dir, compute_type, threads, chunks_file, timeout_s):
        argv = [
            python, str(Path(__file__).resolve()), "fw-child", str(model_dir),
            "--compute-type", compute_type, "--threads", str(threads), "--chunks", str(chunks_file),
        ]
        self.name = f"faster-whisper ({compute_type})"
        self.stderr = tempfile.TemporaryFile()
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True
        )
        self.peak_kb = None
        self.ready = self._read(timeout_s)
        self.start_s = time.perf_counter() - started

    def _read(self, timeout_s):
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise BenchError(f"{self.name} did not answer in time; killed it")
            readable, _, _ = select.select([fd], [], [], min(left, 1.0))
            self.sample_peak()
            if readable:
                break
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=5)
            self.stderr.seek(0)
            tail = self.stderr.read().decode(errors="replace")[-2000:]
            raise BenchError(f"{self.name} exited (code {self.proc.returncode}):\n{tail}")
        return json.loads(line)

    def transcribe(self, mode, timeout_s=600):
        self.proc.stdin.write(json.dumps({"mode": mode}) + "\n")
        self.proc.stdin.flush()
        answer = self._read(timeout_s)
        self.sample_peak()
        return answer

    def close(self):
        self.sample_peak()
        self.close_stdin_and_wait()



def fw_child(argv):
    """faster-whisper side: loads the model, then transcribes on request and reports timings.

    Decoding settings are those of scripts/reference/ct2_transcribe.py (the converter's
    reference) and of the ASR worker: greedy, temperature 0 only, no conditioning on previous
    text, timestamps decoded, no VAD, English.
    """
    parser = argparse.ArgumentParser(prog="bench.py fw-child")
    parser.add_argument("model_dir")
    parser.add_argument("--compute-type", default="default")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chunks", required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np
    import ctranslate2
    import faster_whisper
    from faster_whisper import WhisperModel

    audio = np.frombuffer(read_wav_16k_mono(SAMPLE_WAV), dtype="<i2").astype(np.float32) / 32768.0
    chunks = json.loads(Path(args.chunks).read_text())
    started = time.perf_counter()
    model = WhisperModel(
        args.model_dir,
        device="cpu",
        compute_type=args.compute_type,
        cpu_threads=args.threads,
        num_workers=1,
        local_files_only=True,
    )
    load_s = time.perf_counter() - started
    out = sys.stdout

    def say(obj):
        out.write(json.dumps(obj) + "\n")
        out.flush()

    say({
        "type": "ready",
        "load_s": load_s,
        "compute_type": model.model.compute_type,
        "faster_whisper": faster_whisper.__version__,
        "ctranslate2": ctranslate2.__version__,
    })

    def run(samples):
        segments, _info = model.transcribe(
            samples,
            language="en",
            task="transcribe",
            beam_size=1,
            best_of=1,
            temperature=[0.0],
            condition_on_previous_text=False,
            initial_prompt=None,
            without_timestamps=False,
            word_timestamps=False,
            vad_filter=False,
        )
        # transcribe() is lazy: the decoding happens while the generator is drained.
        return [s.text.strip() for s in segments]

    for line in sys.stdin:
        mode = json.loads(line)["mode"]
        started = time.perf_counter()
        if mode == "whole":
            texts = run(audio)
        else:
            texts = [t for a, b in chunks for t in run(audio[a:b])]
        seconds = time.perf_counter() - started
        say({"seconds": seconds, "text": " ".join(t for t in texts if t)})
    return 0


# ---------------------------------------------------------------------------------------------
# Part 1: ASR


def bench_asr(ctx):
    pcm = read_wav_16k_mono(SAMPLE_WAV)
    audio_s = len(pcm) / 2 / SAMPLE_RATE
    payload_all = pcm16_to_f32le(pcm)
    bounds = chunk_bounds(pcm)
    payloads = [payload_all[a * 4 : b * 4] for a, b in bounds]
    chunks_file = ctx.tmp / "chunks.json"
    chunks_file.write_text(json.dumps(bounds))
    truth = ctx.truth_text
    models = [m for m in ctx.asr_models if (ctx.models_dir / m / "ggml-model.bin").is_file()]
    ctx.asr_skipped = [m for m in ctx.asr_models if m not in models]
    if not models:
        raise BenchError(
            f"no Whisper model in {ctx.models_dir} ({', '.join(ctx.asr_models)}): "
            f"{INSTALL_HINT['models']}"
        )
    results = []
    for model in models:
        model_dir = ctx.models_dir / model
        ggml = model_dir / "ggml-model.bin"
        log(f"ASR {model}: starting the ASR worker and faster-whisper")
        load_before = loadavg()
        worker = Worker(
            [str(ctx.bins["asr"]), "--model", str(ggml), "--threads", str(ctx.threads)],
            "edge-scribe-asr-worker",
            ctx.step_timeout,
        )
        ctx.versions["whisper.cpp"] = worker.ready.get("engine", "?")
        fws = []
        try:
            if ctx.have_fw:
                for compute_type in ctx.fw_compute_types:
                    if not (model_dir / "model.bin").is_file():
                        break
                    fws.append(FasterWhisperChild(
                        ctx.fw_python, model_dir, compute_type, ctx.threads, chunks_file,
                        ctx.step_timeout,
                    ))
            runs = {}  # (engine key, mode) -> [seconds], texts

            def record(key, mode, seconds, text, others):
                entry = runs.setdefault((key, mode), {"seconds": [], "others": [], "text": text})
                entry["seconds"].append(seconds)
                entry["others"].append(others)

            header = {"type": "transcribe", "language": "en", "initial_prompt": None,
                      "beam_size": 1}
            pids = [worker.proc.pid] + [fw.proc.pid for fw in fws]
            for rep in range(ctx.repeats):
                for mode in ("chunks", "whole"):
                    log(f"ASR {model}: run {rep + 1}/{ctx.repeats}, {mode}")
                    meter = CpuMeter(pids)
                    started = time.perf_counter()
                    texts = []
                    for p in payloads if mode == "chunks" else [payload_all]:
                        response = worker.request(header, p, ctx.step_timeout)
                        texts += [s["text"] for s in response["segments"]]
                    record("whisper.cpp", mode, time.perf_counter() - started, " ".join(texts),
                           meter.others_cores())
                    for fw in fws:
                        meter = CpuMeter(pids)
                        answer = fw.transcribe(mode, ctx.step_timeout)
                        record(fw.name, mode, answer["seconds"], answer["text"],
                               meter.others_cores())
            worker.sample_peak()
            for fw in fws:
                fw.sample_peak()
        finally:
            worker.close()
            for fw in fws:
                fw.close()
        load_after = loadavg()
        ggml_ftype = read_ggml_ftype(ggml)
        engines = [{
            "key": "whisper.cpp",
            "engine": "whisper.cpp (ASR worker)",
            "weights": f"ggml-model.bin, {ggml_ftype} weights, f32 activations",
            "start_s": worker.start_s,
            "load_s": worker.reported_load_s(),
            "peak_kb": worker.peak_kb,
        }]
        for fw in fws:
            ctx.versions["faster-whisper"] = fw.ready["faster_whisper"]
            ctx.versions["ctranslate2"] = fw.ready["ctranslate2"]
            requested = fw.name.split("(")[1].rstrip(")")
            engines.append({
                "key": fw.name,
                "engine": "faster-whisper (CTranslate2)",
                "weights": f"CT2 model.bin, compute_type=\"{requested}\" → "
                           f"{fw.ready['compute_type']}",
                "start_s": fw.start_s,
                "load_s": fw.ready["load_s"],
                "peak_kb": fw.peak_kb,
                "compute_type": fw.ready["compute_type"],
                "requested": requested,
            })
        for e in engines:
            e["modes"] = {}
            for mode in ("chunks", "whole"):
                entry = runs.get((e["key"], mode))
                if not entry:
                    continue
                med = median(entry["seconds"])
                e["modes"][mode] = {
                    "runs": entry["seconds"],
                    "others": entry["others"],
                    "min_s": min(entry["seconds"]),
                    "median_s": med,
                    "speed": audio_s / med,
                    "rtf": med / audio_s,
                    "wer": wer(truth, entry["text"]),
                }
        results.append({
            "model": model,
            "engines": engines,
            "load_before": load_before,
            "load_after": load_after,
        })
    ctx.asr = {"audio_s": audio_s, "chunks": bounds, "models": results}


def read_ggml_ftype(path):
    """ftype from the whisper.cpp ggml header: magic, then 11 i32 hyper-parameters."""
    names = {0: "f32", 1: "f16", 2: "q4_0", 3: "q4_1", 8: "q5_0", 9: "q5_1", 7: "q8_0"}
    with open(path, "rb") as f:
        head = f.read(48)
    ftype = struct.unpack("<i", head[44:48])[0] % 1000
    return names.get(ftype, f"ftype {ftype}")


# ---------------------------------------------------------------------------------------------
# Part 2: LLM

# A small JSON shape with bounded strings, so that a complete object fits in LLM_MAX_TOKENS.
LLM_GRAMMAR = r'''root ::= "{" ws "\"summary\":" ws str "," ws "\"problems\":" ws "[" item ("," ws item){0,3} "]" ws "}"
str ::= "\"" [^"\\\x00-\x1f]{1,200} "\""
item ::= "\"" [^"\\\x00-\x1f]{1,60} "\""
ws ::= " "?
'''


def llm_messages(ctx):
    lines = [
        f"[s{i}] {turn['speaker'].capitalize()}: {turn['text']}"
        for i, turn in enumerate(ctx.truth["turns"], 1)
    ]
    system = (
        "You are a clinical scribe. Summarise the transcript of a primary-care visit for the "
        "clinician as one JSON object with the keys \"summary\" (one or two sentences) and "
        "\"problems\" (a list of at most four short strings). Use only facts stated in the "
        "transcript."
    )
    user = "Transcript of the visit:\n" + "\n".join(lines) + "\n\nWrite the JSON object now."
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def bench_llm(ctx):
    gguf = ctx.models_dir / LLM_MODEL / "model.gguf"
    if not gguf.is_file():
        raise BenchError(f"{gguf} is missing: {INSTALL_HINT['models']}")
    messages = llm_messages(ctx)
    load_before = loadavg()
    log("LLM: starting the LLM worker")
    worker = Worker(
        [str(ctx.bins["llm"]), "--model", str(gguf), "--threads", str(ctx.threads),
         "--ctx", "4096"],
        "edge-scribe-llm-worker",
        ctx.step_timeout,
    )
    ctx.versions["llama.cpp"] = worker.ready.get("engine", "?")
    runs = {"free": [], "grammar": []}
    try:
        for rep in range(LLM_REQUESTS):
            for mode in ("free", "grammar"):
                log(f"LLM: request {rep + 1}/{LLM_REQUESTS}, {mode}")
                response = worker.request({
                    "type": "generate",
                    "messages": messages,
                    "grammar": LLM_GRAMMAR if mode == "grammar" else None,
                    "max_tokens": LLM_MAX_TOKENS,
                    "seed": 0,
                    "temperature": 0.0,
                }, b"", ctx.step_timeout)
                runs[mode].append(response)
        worker.sample_peak()
    finally:
        worker.close()
    out = {"start_s": worker.start_s, "peak_kb": worker.peak_kb, "modes": {},
           "load_before": load_before, "load_after": loadavg(), "model": gguf.name}
    for mode, responses in runs.items():
        def valid(text):
            try:
                json.loads(text)
                return True
            except ValueError:
                return False
        out["modes"][mode] = {
            "prompt_tokens": responses[0]["prompt_tokens"],
            "generated_tokens": [r["generated_tokens"] for r in responses],
            "prompt_tps": median([r["prompt_tokens"] / max(r["prompt_ms"], 1) * 1000
                                  for r in responses]),
            "gen_tps": median([r["generated_tokens"] / max(r["generation_ms"], 1) * 1000
                               for r in responses]),
            "prompt_ms": [r["prompt_ms"] for r in responses],
            "generation_ms": [r["generation_ms"] for r in responses],
            "valid_json": sum(valid(r["text"]) for r in responses),
            "requests": len(responses),
        }
    ctx.llm = out


# ---------------------------------------------------------------------------------------------
# Part 3: end to end


def descendants(root):
    """{pid: ppid} of every process below root (root included), from /proc/*/stat."""
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: split after the last ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        parents[int(entry)] = int(fields[1])
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        children = [p for p, pp in parents.items() if pp == pid and p not in tree]
        tree.update(children)
        frontier += children
    return tree


def process_name(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv0 = f.read().split(b"\0")[0].decode(errors="replace")
        return os.path.basename(argv0) or None
    except OSError:
        return None


def bench_e2e(ctx, run_index):
    out_dir = ctx.tmp / f"e2e-{run_index}" / "out"
    data_dir = ctx.tmp / f"e2e-{run_index}" / "data"
    argv = [
        str(ctx.bins["edge-scribe"]), "process", str(SAMPLE_WAV), "--out", str(out_dir),
        "--data-dir", str(data_dir), "--config", str(CONFIG), "--models-dir", str(ctx.models_dir),
        "--quiet",
    ]
    ctx.e2e_command = " ".join(
        shlex.quote(a) for a in ["edge-scribe"] + argv[1:]
    ).replace(str(ctx.tmp), "$TMP").replace(str(REPO) + "/", "").replace(
        f"e2e-{run_index}/", "e2e-N/")
    log(f"end to end: run {run_index + 1}/{ctx.e2e_runs}")
    load_before = loadavg()
    log_file = tempfile.TemporaryFile()
    meter = CpuMeter()
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, cwd=str(REPO))
    peaks = {}  # pid -> (name, kb)
    deadline = time.monotonic() + ctx.step_timeout
    while proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise BenchError(f"edge-scribe process did not finish in {ctx.step_timeout} s")
        for pid in descendants(proc.pid):
            kb = proc_status_kb(pid, "VmHWM")
            if kb is None:
                continue
            name = process_name(pid) or peaks.get(pid, ("?", 0))[0]
            peaks[pid] = (name, max(kb, peaks.get(pid, (name, 0))[1]))
        time.sleep(POLL_S)
    wall_s = time.perf_counter() - started
    others = meter.others_cores()
    if proc.returncode != 0:
        log_file.seek(0)
        raise BenchError(
            f"edge-scribe process exited with {proc.returncode}:\n"
            f"{log_file.read().decode(errors='replace')[-3000:]}"
        )
    run = json.loads((out_dir / "run.json").read_text())
    transcript = json.loads((out_dir / "transcript.json").read_text())
    text = " ".join(s["text"] for s in transcript["segments"])
    by_name = {}
    for name, kb in peaks.values():
        by_name.setdefault(name, []).append(kb)
    return {
        "wall_s": wall_s,
        "others": others,
        "run": run,
        "wer": wer(ctx.truth_text, text),
        "peaks": by_name,
        "load_before": load_before,
        "load_after": loadavg(),
    }


# ---------------------------------------------------------------------------------------------
# Machine and report


def machine_info():
    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    if "cpu" not in info:
        try:
            lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
            m = re.search(r"Model name:\s*(.+)", lscpu)
            info["cpu"] = m.group(1).strip() if m else "unknown"
        except (OSError, subprocess.SubprocessError):
            info["cpu"] = "unknown"
    info["cores"] = os.cpu_count()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        m = re.search(r"Hypervisor vendor:\s*(.+)", lscpu)
        if m:
            info["hypervisor"] = m.group(1).strip()
        flags = re.search(r"Flags:\s*(.+)", lscpu)
        if flags:
            have = set(flags.group(1).split())
            info["simd"] = " ".join(f for f in ("avx2", "fma", "f16c", "avx512f", "avx512_vnni")
                                    if f in have)
    except (OSError, subprocess.SubprocessError):
        pass
    mem_kb = None
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    info["memory"] = f"{mem_kb / 1024 / 1024:.1f} GiB" if mem_kb else "unknown"
    os_name = platform.system()
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    os_name = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    info["os"] = f"{os_name}, kernel {platform.release()}"
    return info


def crate_versions():
    """Versions of the Rust bindings, from Cargo.lock (the engines' own builds are vendored)."""
    wanted = ("whisper-rs", "llama-cpp-2")
    found = {}
    try:
        lock = (REPO / "Cargo.lock").read_text()
    except OSError:
        return found
    for m in re.finditer(r'name = "([^"]+)"\nversion = "([^"]+)"', lock):
        if m.group(1) in wanted:
            found[m.group(1)] = m.group(2)
    return found


def git_commit():
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=30, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=30).stdout.strip()
        return head + (" (with uncommitted changes in the working tree)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"


def render_asr(ctx, add):
    a = ctx.asr
    add("## 1. Speech recognition: whisper.cpp (ASR worker) vs faster-whisper, same weights")
    add("")
    add(f"Audio: `samples/sample-encounter.wav`, {a['audio_s']:.1f} s, 16 kHz mono. "
        f"Median of {ctx.repeats} runs; \"× real time\" = audio seconds ÷ processing seconds "
        "(higher is faster); RTF = processing ÷ audio (lower is faster). Each run is listed with "
        "the CPU other processes on the machine used meanwhile; a run with a high value was "
        "slowed by them.")
    add("")
    add("| Model | Engine | Weights / compute | Input | Processing s (median) | "
        "every run, s [other processes' CPU, cores] | "
        "× real time | RTF | Start-up s | Peak RSS MB | WER |")
    add("|---|---|---|---|---:|---|---:|---:|---:|---:|---:|")
    for res in a["models"]:
        for e in res["engines"]:
            for mode, r in e["modes"].items():
                label = (f"{len(a['chunks'])} chunks ≤ {CHUNK_MAX_S:.0f} s" if mode == "chunks"
                         else "whole file, 1 call")
                add(f"| {res['model']} | {e['engine']} | {e['weights']} | {label} | "
                    f"{fmt(r['median_s'])} | "
                    f"{', '.join(f'{fmt(t)} [{o:.2f}]' for t, o in zip(r['runs'], r['others']))} | "
                    f"{fmt(r['speed'], 1)}× | {fmt(r['rtf'], 3)} | {fmt(e['start_s'])} | "
                    f"{fmt(mb(e['peak_kb']), 0)} | {fmt(100 * r['wer'], 1)} % |")
    add("")
    for res in a["models"]:
        wcpp = next(e for e in res["engines"] if e["key"] == "whisper.cpp")
        for fw in (e for e in res["engines"] if e["key"] != "whisper.cpp"):
            same = fw["compute_type"] == "float32"
            other = f"faster-whisper {fw['compute_type']}"
            for mode in ("chunks", "whole"):
                if mode not in wcpp["modes"] or mode not in fw["modes"]:
                    continue
                ws, fs = wcpp["modes"][mode]["median_s"], fw["modes"][mode]["median_s"]
                wmin, fmin = wcpp["modes"][mode]["min_s"], fw["modes"][mode]["min_s"]
                what = "in chunks" if mode == "chunks" else "on the whole file"
                add(f"- {res['model']}, {what}: {times_phrase('whisper.cpp', ws, other, fs)}"
                    + (" on the same weights" if same else
                       " (whose 8-bit weights are a quantized copy, not the same arithmetic)"
                       if fw["compute_type"].startswith("int8") else "")
                    + f" (median processing time {ws:.2f} s vs {fs:.2f} s, ratio "
                    f"whisper.cpp ÷ faster-whisper = {ws / fs:.2f}; fastest runs "
                    f"{wmin:.2f} s vs {fmin:.2f} s, ratio {wmin / fmin:.2f}).")
            if wcpp["peak_kb"] and fw["peak_kb"]:
                add(f"- {res['model']}, memory: peak RSS of the ASR worker is "
                    f"{wcpp['peak_kb'] / fw['peak_kb']:.2f}× that of the {other} process "
                    f"({mb(wcpp['peak_kb']):.0f} MB vs {mb(fw['peak_kb']):.0f} MB).")
    if len(a["models"]) > 1:
        t, b = a["models"][0], a["models"][1]
        tw = t["engines"][0]["modes"]["chunks"]["median_s"]
        bw = b["engines"][0]["modes"]["chunks"]["median_s"]
        add(f"- whisper.cpp, {t['model']} vs {b['model']} in chunks: "
            f"{times_phrase(t['model'], tw, b['model'], bw)}.")
    for skipped in ctx.asr_skipped:
        add(f"- {skipped} is not installed, so it was not measured"
            f"{': ' + ctx.notes.get(skipped) if ctx.notes.get(skipped) else ''}.")
    if not ctx.have_fw:
        add(f"- faster-whisper was not available ({ctx.fw_missing}), so the comparison is missing.")
    add("")
    add("How measured: `scripts/bench.py` starts the ASR worker (`--model ggml-model.bin "
        f"--threads {ctx.threads}`) and, as a second process, faster-whisper "
        f"(`WhisperModel(dir, device=\"cpu\", compute_type=…, cpu_threads={ctx.threads})` on the "
        "original CTranslate2 files the ggml file was converted from). Both decode greedily "
        "(beam 1, temperature 0 with no fallback), without conditioning on previous text, with "
        "timestamps, no VAD, language en, no initial prompt — the settings of "
        "`scripts/reference/ct2_transcribe.py`. Each engine gets bit-identical samples (16-bit "
        "PCM ÷ 32768). \"chunks\": the audio is cut in the middle of the quietest 0.62 s "
        "stretch in the last "
        f"{CHUNK_SEARCH_S:.0f} s before every {CHUNK_MAX_S:.0f} s mark "
        f"({', '.join(f'{(b - a_) / SAMPLE_RATE:.1f}' for a_, b in a['chunks'])} s), one request "
        "per piece, as the pipeline sends VAD regions packed up to `vad.max_region_s`; \"whole "
        "file\": one request with all the audio, each engine windowing it itself. Processing time "
        "is wall clock from sending the audio to receiving the text (for the worker it includes "
        "the f32 payload transfer over the pipe), excluding model load. Start-up is process "
        "start → ready (model loaded; for faster-whisper it includes importing Python packages). "
        "Model load alone: "
        + ", ".join(f"{r['model']} {e['engine'].split(' ')[0]}"
                    f"{' ' + e['requested'] if 'requested' in e else ''} {e['load_s']:.2f} s"
                    for r in a["models"] for e in r["engines"] if e.get("load_s") is not None)
        + ". Peak RSS is VmHWM from /proc/PID/status, over both input modes (the whole-file request "
        "holds all the audio at once, so it is higher than in the pipeline, see part 3). The runs "
        "alternate between the engines. "
        "WER: word-level Levenshtein against `samples/sample-encounter.truth.json` after "
        "lowercasing and stripping punctuation only — simpler than the Rust `eval::wer`, which "
        "also equates spellings such as \"10\"/\"ten\", so these WERs are higher than the test "
        "suite's.")
    add("")


def render_llm(ctx, add):
    l = ctx.llm
    add(f"## 2. Drafting LLM: llama.cpp (LLM worker), {LLM_MODEL}, with vs without a grammar")
    add("")
    add("| Mode | Prompt tokens | Prompt tok/s (median) | Generated tokens | "
        "Generation tok/s (median) | prompt ms | generation ms | Valid JSON |")
    add("|---|---:|---:|---|---:|---|---|---:|")
    for mode, label in (("free", "no grammar"), ("grammar", "JSON grammar (GBNF)")):
        r = l["modes"][mode]
        add(f"| {label} | {r['prompt_tokens']} | {fmt(r['prompt_tps'], 0)} | "
            f"{', '.join(map(str, r['generated_tokens']))} | {fmt(r['gen_tps'], 1)} | "
            f"{', '.join(map(str, r['prompt_ms']))} | {', '.join(map(str, r['generation_ms']))} | "
            f"{r['valid_json']}/{r['requests']} |")
    add("")
    f, g = l["modes"]["free"], l["modes"]["grammar"]
    add(f"- Generation with the grammar runs at {g['gen_tps'] / f['gen_tps']:.2f}× the tokens per "
        f"second of generation without it ({fmt(g['gen_tps'], 1)} vs {fmt(f['gen_tps'], 1)} "
        "tok/s).")
    add(f"- Prompt processing with the grammar runs at {g['prompt_tps'] / f['prompt_tps']:.2f}× "
        "the rate without it (the prompt is identical; the grammar only acts on sampling).")
    add(f"- Prompt processing is {f['prompt_tps'] / f['gen_tps']:.1f}× faster per token than "
        "generation (no grammar).")
    add(f"- LLM worker start-up {fmt(l['start_s'])} s; peak RSS {fmt(mb(l['peak_kb']), 0)} MB "
        "(context 4096).")
    add("")
    add(f"How measured: the LLM worker (`--model {l['model']} --threads {ctx.threads} --ctx 4096`) "
        f"gets {LLM_REQUESTS} Generate requests without and {LLM_REQUESTS} with a grammar, "
        f"alternating, greedy (temperature 0, seed 0), max_tokens {LLM_MAX_TOKENS}. The messages "
        "are a system instruction asking for a JSON summary and the sample's ground-truth "
        "transcript, one line per turn with its segment id and speaker; the grammar admits "
        "`{\"summary\": \"…\", \"problems\": [\"…\", …]}` with a summary of at most 200 "
        "and one to four problems of at most 60 characters (bounded repetitions, as in the "
        "note grammar of `src/draft/grammar.rs`). Tokens per second come from the "
        "worker's own fields: prompt_tokens ÷ prompt_ms (which includes applying the chat "
        "template and tokenizing) and generated_tokens ÷ generation_ms. The worker clears its KV "
        "cache after every request, so no prompt is reused. \"Valid JSON\" = the output parses "
        "with `json.loads` (a run stopped by max_tokens can be cut off mid-object).")
    add("")


def rate(gen, what):
    tokens = gen.get(f"{what}_tokens")
    ms = gen.get("prompt_ms" if what == "prompt" else "generation_ms")
    return fmt(tokens / ms * 1000, 0) if tokens and ms else "–"


def render_e2e(ctx, add):
    e2e = ctx.e2e
    add("## 3. End to end: `edge-scribe process` on the sample")
    add("")
    audio_s = ctx.audio_s
    add("| Run | Wall s [other processes' CPU, cores] | × real time | VAD ms | ASR ms | Draft ms | Store ms | Pipeline total ms | "
        "Regions | Segments | LLM prompt / generated tokens (rates) | Statements accepted / proposed | "
        "Worker restarts | WER |")
    add("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|---:|")
    for i, r in enumerate(e2e, 1):
        t, run = r["run"]["timings"], r["run"]
        gen = run.get("generation") or {}
        ver = run.get("verifier") or {}
        add(f"| {i} | {fmt(r['wall_s'])} [{r['others']:.2f}] | {fmt(audio_s / r['wall_s'], 1)}× | {t.get('vad_ms')} | "
            f"{t.get('asr_ms')} | {t.get('draft_ms')} | {t.get('store_ms', '–')} | "
            f"{t.get('total_ms')} | {run.get('speech_regions')} | {run.get('segments')} | "
            f"{gen.get('prompt_tokens', '–')} / {gen.get('generated_tokens', '–')} "
            f"({rate(gen, 'prompt')} / {rate(gen, 'generated')} tok/s; "
            f"{gen.get('attempts', '–')} attempt(s)) | {ver.get('accepted', '–')} / "
            f"{ver.get('proposed', '–')} | asr {run.get('asr_worker_restarts')}, llm "
            f"{run.get('llm_worker_restarts')} | {fmt(100 * r['wer'], 1)} % |")
    add("")
    walls = [r["wall_s"] for r in e2e]
    add(f"- Median wall time {fmt(median(walls))} s for {audio_s:.1f} s of audio: "
        f"{audio_s / median(walls):.1f}× faster than real time.")
    asr_ms = median([r["run"]["timings"]["asr_ms"] for r in e2e])
    tiny = next((res for res in (ctx.asr or {}).get("models", [])
                 if res["model"] == "whisper-tiny.en"), None)
    if tiny:
        direct = tiny["engines"][0]["modes"]["chunks"]["median_s"]
        add(f"- The pipeline's ASR stage (its own VAD regions, with the clinic initial prompt) "
            f"took {asr_ms / 1000:.2f} s (median) against {direct:.2f} s (median) for the whole "
            f"file in fixed chunks through the worker in part 1, a ratio of "
            f"{asr_ms / 1000 / direct:.2f}.")
    add("")
    add("Peak resident memory (VmHWM, max over runs):")
    add("")
    add("| Process | Peak RSS MB |")
    add("|---|---:|")
    names = {}
    for r in e2e:
        for name, kbs in r["peaks"].items():
            names[name] = max(names.get(name, 0), max(kbs))
    order = ["edge-scribe", "edge-scribe-asr-worker", "edge-scribe-llm-worker"]
    for name in order + sorted(n for n in names if n not in order):
        if name in names:
            add(f"| {name} | {mb(names[name]):.0f} |")
    total = sum(names.get(n, 0) for n in order)
    add(f"| sum of the three (upper bound on the simultaneous peak) | {mb(total):.0f} |")
    add("")
    add(f"How measured: `{ctx.e2e_command}` with `config/edge-scribe.toml` (Whisper tiny.en and "
        f"SmolLM2 at {ctx.threads} threads each, the LLM worker loading while ASR runs), a fresh "
        f"data dir per run, {ctx.e2e_runs} run(s). Wall time is from spawning the command to its "
        "exit (model loads, SQLCipher store creation, writing the outputs included); stage "
        "timings come from the run's `run.json`. Every 50 ms the script walks /proc for the "
        "command's process tree and keeps each process's last VmHWM, so a peak reached in the "
        "final 50 ms of a process's life can be missed. WER is computed on `transcript.json` as "
        "in part 1.")
    add("")


def render(ctx):
    L = []
    add = L.append
    m = ctx.machine
    add("# Benchmarks")
    add("")
    add("Written by `scripts/bench` (`scripts/bench.py`); rerun it to refresh. Every number below "
        "comes from one run on the machine described here; ratios compare measurements taken in "
        "that same run on the same input.")
    add("")
    add("| | |")
    add("|---|---|")
    add(f"| Date | {ctx.date} |")
    add(f"| Command | `{ctx.command}` |")
    add(f"| Git commit | {ctx.commit} |")
    cpu = m["cpu"] + (f" ({m['hypervisor']} guest)" if m.get("hypervisor") else "")
    add(f"| CPU | {cpu}; {m['cores']} cores; SIMD: {m.get('simd', '?')} |")
    add(f"| Memory | {m['memory']} |")
    add(f"| OS | {m['os']} |")
    add(f"| Threads | {ctx.threads} per engine (ASR worker, faster-whisper, LLM worker) |")
    add(f"| Load average (1/5/15 min) | {ctx.load_start} at start, {ctx.load_end} at end |")
    add("| CPU used by other processes | " + "; ".join(
        f"{k}: {v:.2f} of {m['cores']} cores" for k, v in ctx.others.items()) + " (mean over each "
        "part) |")
    crates = crate_versions()
    engines = []
    if "whisper.cpp" in ctx.versions:
        engines.append(ctx.versions["whisper.cpp"]
                       + (f" (whisper-rs {crates['whisper-rs']})" if "whisper-rs" in crates else ""))
    if "llama.cpp" in ctx.versions:
        engines.append(ctx.versions["llama.cpp"]
                       + (f" (llama-cpp-2 {crates['llama-cpp-2']})" if "llama-cpp-2" in crates
                          else ""))
    engines += [f"{k} {v}" for k, v in ctx.versions.items() if k not in ("whisper.cpp", "llama.cpp")]
    add(f"| Engines | {', '.join(engines)} |")
    add("")
    add("The load average and the CPU time other processes used (the machine's busy time in "
        "/proc/stat minus the benchmark's own processes) are recorded because anything else "
        f"running on these {m['cores']} cores (builds, tests) slows every engine: llama.cpp and "
        "whisper.cpp threads that lose their core stall each other, so under contention the "
        "absolute numbers are pessimistic and noisy, far more than in proportion to the load. "
        "The ASR and LLM runs alternate between the compared variants so that such load falls "
        "on both sides of a ratio alike; the per-run times are listed to show the spread.")
    add("")

    for part, fn, title in (
        ("asr", render_asr, "1. Speech recognition"),
        ("llm", render_llm, "2. Drafting LLM"),
        ("e2e", render_e2e, "3. End to end"),
        ("aci", bench_aci.render, "4. Drafting on ACI-Bench"),
    ):
        if getattr(ctx, part):
            fn(ctx, add)
        else:
            add(f"## {title}")
            add("")
            add("Not run this time (`--parts`).")
            add("")
    if ctx.notes.get("general"):
        add("## Notes")
        add("")
        for note in ctx.notes["general"]:
            add(f"- {note}")
        add("")
    return "\n".join(L)


class Ctx:
    pass


def main(argv):
    if argv and argv[0] == "fw-child":
        return fw_child(argv[1:])
    parser = argparse.ArgumentParser(description="Writes docs/BENCHMARKS.md.")
    parser.add_argument("--target-dir", default=os.environ.get("CARGO_TARGET_DIR") or str(
        Path(os.environ.get("EDGE_SCRIBE_CACHE", Path.home() / ".cache/edge-scribe")) / "target"))
    parser.add_argument("--models-dir", default=os.environ.get("EDGE_SCRIBE_MODELS_DIR")
                        or str(REPO / "models"))
    parser.add_argument("--out", default=str(REPO / "docs" / "BENCHMARKS.md"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--e2e-runs", type=int, default=2)
    parser.add_argument("--fw-compute-types", default="default,int8",
                        help="faster-whisper compute types to run, comma-separated; the first is "
                             "the like-for-like comparison")
    parser.add_argument("--step-timeout", type=int, default=600,
                        help="seconds any one request or run may take")
    parser.add_argument("--asr-models", default=",".join(ASR_MODELS),
                        help="Whisper models to measure, comma-separated; missing ones are noted")
    parser.add_argument("--parts", default="asr,llm,e2e,aci",
                        help="which parts to run, comma-separated (asr, llm, e2e, aci); aci "
                             "alone replaces only its section of an existing --out file")
    parser.add_argument("--aci-data", default=str(bench_aci.DEFAULT_DATA),
                        help="directory holding ACI-Bench's train.csv and valid.csv")
    parser.add_argument("--aci-asr", type=int, default=3,
                        help="how many (shortest) valid dialogues to synthesize and run through "
                             "ASR for part 4; 0 skips it")
    parser.add_argument("--command", default=None, help="command line to record in the report")
    parser.add_argument("--note", action="append", default=[],
                        help="MODEL=TEXT: why a model is missing, for the report")
    args = parser.parse_args(argv)

    ctx = Ctx()
    ctx.threads, ctx.repeats, ctx.e2e_runs = args.threads, args.repeats, args.e2e_runs
    ctx.step_timeout = args.step_timeout
    ctx.models_dir = Path(args.models_dir).resolve()
    ctx.fw_compute_types = [c for c in args.fw_compute_types.split(",") if c]
    ctx.command = args.command or " ".join(shlex.quote(a) for a in [sys.argv[0]] + argv)
    ctx.parts = set(args.parts.split(","))
    ctx.asr_models = [m for m in args.asr_models.split(",") if m]
    ctx.notes = {"general": []}
    ctx.aci_data, ctx.aci_asr = args.aci_data, args.aci_asr
    for note in args.note:
        model, _, text = note.partition("=")
        ctx.notes[model] = text
    release = Path(args.target_dir) / "release"
    ctx.bins = {
        "edge-scribe": release / "edge-scribe",
        "asr": release / "edge-scribe-asr-worker",
        "llm": release / "edge-scribe-llm-worker",
    }
    missing = [str(p) for p in ctx.bins.values() if not os.access(p, os.X_OK)]
    if missing:
        raise BenchError(f"missing binaries: {', '.join(missing)}; {INSTALL_HINT['binaries']}")
    for path in (SAMPLE_WAV, SAMPLE_TRUTH):
        if not path.is_file():
            raise BenchError(f"{path} is missing: scripts/make-visit generates it (see scripts/demo)")
    ctx.truth = json.loads(SAMPLE_TRUTH.read_text())
    ctx.truth_text = " ".join(t["text"] for t in ctx.truth["turns"])
    with wave.open(str(SAMPLE_WAV), "rb") as w:
        ctx.audio_s = w.getnframes() / w.getframerate()
    ctx.fw_python = sys.executable
    try:
        import faster_whisper  # noqa: F401
        ctx.have_fw = True
    except ImportError as e:
        ctx.have_fw, ctx.fw_missing = False, f"{e}; {INSTALL_HINT['venv']}"
    ctx.versions = {}
    ctx.machine = machine_info()
    ctx.date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    ctx.commit = git_commit()
    ctx.load_start = loadavg()
    log(f"load average at start: {ctx.load_start}")

    with tempfile.TemporaryDirectory(prefix="edge-scribe-bench-") as tmp:
        ctx.tmp = Path(tmp)
        ctx.asr = ctx.llm = ctx.e2e = ctx.aci = None
        ctx.others = {}
        if "asr" in ctx.parts:
            meter = CpuMeter()
            bench_asr(ctx)
            ctx.others["ASR"] = meter.others_cores()
        if "llm" in ctx.parts:
            meter = CpuMeter()
            bench_llm(ctx)
            ctx.others["LLM"] = meter.others_cores()
        if "e2e" in ctx.parts:
            meter = CpuMeter()
            ctx.e2e = [bench_e2e(ctx, i) for i in range(ctx.e2e_runs)]
            ctx.others["end to end"] = meter.others_cores()
        if "aci" in ctx.parts:
            meter = CpuMeter()
            try:
                bench_aci.bench_aci(ctx, wer)
            except (bench_aci.AciBenchError, subprocess.TimeoutExpired) as e:
                raise BenchError(f"ACI-Bench part: {e}") from e
            ctx.others["ACI-Bench"] = meter.others_cores()
        log("CPU used by other processes (cores): " + ", ".join(
            f"{k} {v:.2f}" for k, v in ctx.others.items()))
    ctx.load_end = loadavg()
    log(f"load average at end: {ctx.load_end}")
    out = Path(args.out)
    if ctx.parts == {"aci"} and out.is_file():
        section = []
        bench_aci.render(ctx, section.append)
        report = bench_aci.splice(out.read_text(), "\n".join(section))
    else:
        report = render(ctx) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(".md.tmp")
    tmp_out.write_text(report)
    tmp_out.replace(out)
    print(report)
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BenchError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
