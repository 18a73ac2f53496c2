#!/usr/bin/env python3
"""Live-room benchmark: a whole ACI-Bench visit (about ten minutes) simulated as an exam room
(scripts/simulate-room, 5 dB fan, badge on the clinician) is replayed to the daemon at the pace
of a live room, so the front end and the recogniser run while it plays; the tail is what is left
when the audio ends. The obvious alternative on the same files in the same run: the recording
processed whole after the visit (`edge-scribe process --array --badge`), where everything is
tail. Writes section 9 of docs/BENCHMARKS.md. Standard library only.
"""

import argparse
import datetime
import json
import os
import platform
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

ENCOUNTER = "D2N068"
SNR = 5


def run(cmd, **kw):
    print("+", " ".join(str(c) for c in cmd), file=sys.stderr, flush=True)
    return subprocess.run([str(c) for c in cmd], check=True, **kw)


def make_scene(repo, work):
    out = work / f"live-{ENCOUNTER}-{SNR}db"
    if not (out / "truth.json").exists():
        aci = repo.parent / "shared/data/aci-bench/valid.csv"
        if not aci.exists():
            aci = repo / "data/aci-bench/valid.csv"
        run([repo / "scripts/simulate-room", "--aci", aci, "--encounter", ENCOUNTER,
             "--snr", SNR, "--overlap", "0.1", "--seed", 900, "--out", out],
            stdout=subprocess.DEVNULL)
    return out


def geometry_toml(scene):
    mics = json.loads((scene / "geometry.json").read_text())["array"]["mics"]
    return "[" + ", ".join(f"[{x}, {y}, {z}]" for x, y, z in mics) + "]"


def fields(line):
    return {k: v for k, v in re.findall(r"(\w+)=(\S+)", line)}


def timestamp(line):
    stamp = line.split()[0]
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def live_run(binary, models_dir, scene, work):
    """The daemon on the scene replayed in real time; returns the measurements."""
    data = work / "live-data"
    if data.exists():
        subprocess.run(["rm", "-rf", str(data)], check=True)
    config = work / "live.toml"
    config.write_text(
        f'[storage]\ndata_dir = "{data}"\n[models]\ndir = "{models_dir}"\n'
        '[review]\nlisten = ""\n[admin]\nlisten = ""\n[log]\nlevel = "info"\n'
        f'[[capture.room]]\nname = "exam-1"\ngeometry = {geometry_toml(scene)}\n'
        f'[[capture.replay]]\npath = "{scene / "array.wav"}"\nroom = "exam-1"\n'
        f'badge_audio = "{scene / "badge.wav"}"\nrealtime = true\nconsent = true\n')
    cpu_before = cpu_seconds()
    started = time.time()
    proc = run([binary, "run", "--exit-when-idle", "--config", config],
               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.time() - started
    cpu = cpu_seconds() - cpu_before
    log = proc.stderr.splitlines()
    heard = next(l for l in log if "transcribed while listening" in l)
    drafting = next(l for l in log if "drafting started" in l)
    f = fields(heard)
    tail_ms = int(f["tail_ms"])
    audio_end = timestamp(heard) - tail_ms / 1000
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "heard_s": int(f["heard_ms"]) / 1000,
        "chunks": int(f["chunks"]),
        "chunks_while_listening": int(f["chunks_while_listening"]),
        "frontend_ms": int(f["frontend_ms"]),
        "asr_ms": int(f["asr_ms"]),
        "tail_ms": tail_ms,
        "to_draft_s": timestamp(drafting) - audio_end,
    }


def batch_run(binary, config, models_dir, scene, work):
    """The alternative: the whole recording processed once the visit is over."""
    out = work / "batch-out"
    cpu_before = cpu_seconds()
    started = time.time()
    run([binary, "process", "--array", scene / "array.wav", "--badge", scene / "badge.wav",
         "--geometry", scene / "geometry.json", "--out", out, "--data-dir", work / "batch-data",
         "--config", config, "--models-dir", models_dir, "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.time() - started
    timings = json.loads((out / "run.json").read_text())["timings"]
    return {
        "wall_s": wall,
        "cpu_s": cpu_seconds() - cpu_before,
        "to_draft_s": (timings["frontend_ms"] + timings["vad_ms"] + timings["asr_ms"]) / 1000,
        "frontend_ms": timings["frontend_ms"],
        "asr_ms": timings["asr_ms"],
    }


def write_section(doc, section):
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    start = text.find("\n## 9. ")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + 1)
        text = text[: start + 1] + section + (text[end:] if end >= 0 else "")
    doc.write_text(text)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--models-dir", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--command", default="scripts/bench live")
    args = ap.parse_args()
    repo = Path(__file__).resolve().parents[2]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    began = time.time()
    scene = make_scene(repo, work)
    live = live_run(args.binary, args.models_dir, scene, work)
    batch = batch_run(args.binary, args.config, args.models_dir, scene, work)
    minutes = live["heard_s"] / 60
    section = f"""## 9. Live room encounters: transcribing while the visit goes on

`{args.command}` on {platform.node()} ({os.cpu_count()} cores, {platform.processor() or platform.machine()}),
{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {time.time() - began:.0f} s. One whole
ACI-Bench visit ({ENCOUNTER}, all turns, {minutes:.1f} min) simulated as an exam room at {SNR} dB
(`scripts/simulate-room`, 4-mic array, badge on the clinician), replayed to the daemon
(`edge-scribe run`) in real time through the capture layer: the consent gate, the streaming
front end and the recogniser (Whisper tiny.en, chunks of up to 28 s) run while it plays. The
tail is the time from the end of the audio to the transcript with its speakers named; "to
draft" runs until drafting starts (the encounter and its transcript stored). The alternative,
in the same run on the same files: `edge-scribe process --array --badge` after the visit,
where front end and recognition of the whole visit are all tail. CPU = user + system seconds
of the process and its workers.

| | live (daemon, real time) | after the visit (process) | ratio |
|---|---|---|---|
| audio end → transcript ready | {live['tail_ms'] / 1000:.1f} s | {batch['to_draft_s']:.1f} s | {batch['to_draft_s'] / max(live['tail_ms'] / 1000, 1e-3):.0f}× |
| audio end → drafting starts | {live['to_draft_s']:.1f} s | {batch['to_draft_s']:.1f} s (+ storing) | {batch['to_draft_s'] / max(live['to_draft_s'], 1e-3):.0f}× |
| chunks recognised before the audio ended | {live['chunks_while_listening']} of {live['chunks']} | 0 | |
| front-end compute | {live['frontend_ms'] / 1000:.1f} s ({live['heard_s'] * 1000 / max(live['frontend_ms'], 1):.0f}× real time) | {batch['frontend_ms'] / 1000:.1f} s ({live['heard_s'] * 1000 / max(batch['frontend_ms'], 1):.0f}× real time) | |
| recogniser compute | {live['asr_ms'] / 1000:.1f} s | {batch['asr_ms'] / 1000:.1f} s | |
| CPU over the visit | {live['cpu_s']:.0f} s ({100 * live['cpu_s'] / live['heard_s'] / (os.cpu_count() or 1):.0f} % of the machine) | {batch['cpu_s']:.0f} s | |

Keeping up: the visit lasted {live['heard_s']:.0f} s and the daemon's run {live['wall_s']:.0f} s in all
(start-up, the visit, the tail, drafting and storing).
"""
    write_section(Path(args.out), section)
    print(section)


if __name__ == "__main__":
    main()
