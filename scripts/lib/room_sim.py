#!/usr/bin/env python3
"""Simulate a multi-channel exam-room recording of a scripted visit, with ground truth.

Run through scripts/simulate-room, which makes the pinned venv (pyroomacoustics, numpy, scipy).
See docs/ROOM_SIM.md for what is modelled, the output files and the limitations.

  simulate-room --script VISIT.txt --out DIR [options]
  simulate-room --aci CSV [--encounter ID] --max-turns N --out DIR [options]

Each turn is spoken by espeak-ng (a voice per role), converted by sox to 16 kHz mono, and placed
on a timeline (pauses, and a fraction of turns that start before the previous one ends). The
talkers, a ceiling HVAC vent / fan and the microphones sit in a shoebox room simulated with the
image-source method (pyroomacoustics); the RT60 is set by Sabine's formula. The noise is scaled to
the requested SNR at array mic 0. Outputs, in DIR:

  array.wav      N channels, 16 kHz, 16-bit (the tabletop array)
  badge.wav      mono, 16 kHz, 16-bit (a mic 15-20 cm below the clinician's mouth), starting
                 badge.offset_s later than array.wav, with badge.gain_db of extra gain
  geometry.json  mic positions in metres ([[x, y, z], ...] relative to the array centre), room,
                 talker and noise positions
  truth.json     per turn: speaker role, start/end (s, array time), text, overlap flag; SNR, RT60,
                 badge offset and gain, seed
  truth.rttm     NIST RTTM of the same turns (one SPEAKER line per turn)

The output is deterministic for a given seed on the same espeak-ng, sox and package versions.
"""

import argparse
import csv
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np
import pyroomacoustics as pra

FS = 16000
SPEED_WPM = 150
SOUND_SPEED = 343.0

# role -> (espeak-ng voice, pitch). Distinct so a diarizer has a fair chance; the clinician and
# patient voices are those of scripts/make-visit.
VOICES = {
    "clinician": ("en-us", 40),
    "patient": ("en-us+f2", 60),
    "other-1": ("en-us+m3", 50),
    "other-2": ("en-gb+f4", 70),
    "other-3": ("en-us+m7", 30),
}
# About -60 dBFS: trims espeak-ng's own leading and trailing silence.
TRIM_THRESHOLD = 33 / 32768

PAUSE_RANGE_S = (0.35, 0.8)
OVERLAP_RANGE_S = (0.4, 1.1)
# Room tone before the first and after the last turn: a recording starts before anyone speaks,
# and the noise-only stretch lets the SNR be measured from the mix.
EDGE_SILENCE_S = 1.2
# Mic self-noise, relative to the fan noise at mic 0 (included in the noise the SNR counts).
SENSOR_NOISE_DB = -30.0
PREROLL_S = 1.0
WALL_MARGIN_M = 0.6
PEAK = 0.89  # full-scale fraction the loudest of array/badge is scaled to

TAG_RE = re.compile(r"^\[([A-Za-z_ \-]+)\]\s*(.*)$")


class SimError(Exception):
    """A problem the user can fix; reported as one line without a traceback."""


# ---------------------------------------------------------------------------------------------
# Scripts


def tag_role(tag, others):
    """Map a script tag to a role; every distinct non-doctor/non-patient tag is other-N."""
    t = tag.strip().lower()
    if t in ("doctor", "clinician", "provider", "physician", "nurse"):
        return "clinician"
    if t == "patient":
        return "patient"
    if t not in others:
        others[t] = f"other-{len(others) + 1}"
    return others[t]


def parse_lines(lines, source, allow_continuation):
    turns, others = [], {}
    for lineno, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = TAG_RE.match(line)
        if m is None:
            if allow_continuation and turns:
                turns[-1][1] = f"{turns[-1][1]} {line}"
                continue
            raise SimError(f"{source}:{lineno}: expected '[doctor] text', '[patient] text' or "
                           f"'[companion] text', got: {line[:60]!r}")
        turns.append([tag_role(m.group(1), others), m.group(2).strip()])
    # A turn of punctuation only ("[patient] .", as ACI-Bench has) has nothing to say.
    turns = [(r, t) for r, t in turns if re.search(r"\w", t)]
    if not turns:
        raise SimError(f"{source}: no turns found")
    return turns


def parse_script(path):
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise SimError(f"cannot read script {path}: {e.strerror}") from e
    return parse_lines(lines, path, allow_continuation=False)


def parse_aci(path, encounter):
    """An ACI-Bench CSV (columns encounter_id, dialogue) or a plain dialogue text file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise SimError(f"cannot read {path}: {e.strerror}") from e
    if not str(path).endswith(".csv"):
        return parse_lines(text.splitlines(), path, allow_continuation=True), Path(path).stem
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or "dialogue" not in rows[0]:
        raise SimError(f"{path}: not an ACI-Bench CSV (no 'dialogue' column)")
    if encounter is None:
        row = rows[0]
    else:
        row = next((r for r in rows if r.get("encounter_id") == encounter), None)
        if row is None:
            raise SimError(f"{path}: no encounter {encounter!r}")
    return (parse_lines(row["dialogue"].splitlines(), f"{path}:{row.get('encounter_id')}",
                        allow_continuation=True), row.get("encounter_id", "aci"))


# ---------------------------------------------------------------------------------------------
# Speech


def run(cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SimError(f"{cmd[0]} failed: {proc.stderr.strip() or proc.returncode}")


def read_wav(path):
    with wave.open(str(path), "rb") as w:
        ch, width, fs, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
        if width != 2:
            raise SimError(f"{path}: expected 16-bit PCM")
        data = np.frombuffer(w.readframes(n), dtype="<i2").astype(np.float64) / 32768.0
    return data.reshape(-1, ch).T, fs


def write_wav(path, signals):
    """signals: (channels, samples) floats in [-1, 1)."""
    signals = np.atleast_2d(signals)
    pcm = np.clip(np.round(signals * 32768.0), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(signals.shape[0])
        w.setsampwidth(2)
        w.setframerate(FS)
        w.writeframes(pcm.T.tobytes())


def synthesize(role, text, workdir, index):
    voice, pitch = VOICES[role]
    txt, raw, out = (workdir / f"t{index:03d}.txt", workdir / f"t{index:03d}.raw.wav",
                     workdir / f"t{index:03d}.wav")
    txt.write_text(text + "\n", encoding="utf-8")  # a file, so a leading "-" is never an option
    run(["espeak-ng", "-v", voice, "-s", str(SPEED_WPM), "-p", str(pitch), "-w", str(raw),
         "-f", str(txt)])
    # -D: no dither (deterministic); gain -n -3: every turn peaks at -3 dBFS.
    run(["sox", "-D", str(raw), "-r", str(FS), "-c", "1", "-b", "16", "-e", "signed-integer",
         str(out), "gain", "-n", "-3"])
    x = read_wav(out)[0][0]
    loud = np.flatnonzero(np.abs(x) > TRIM_THRESHOLD)
    if loud.size == 0:
        raise SimError(f"espeak-ng produced no audible speech for turn {index + 1}: {text[:60]!r}")
    return x[loud[0]: loud[-1] + 1]


def schedule(roles, lengths, overlap, rng):
    """Start sample of every turn: pauses between turns, and a fraction that overlap."""
    n = len(roles)
    candidates = [i for i in range(1, n) if roles[i] != roles[i - 1]]
    k = 0
    if overlap > 0 and candidates:
        k = min(len(candidates), max(1, int(round(overlap * (n - 1)))))
    chosen = set(rng.choice(candidates, size=k, replace=False).tolist()) if k else set()
    starts, last_end = [], {}
    t = int(EDGE_SILENCE_S * FS)
    prev_start = prev_end = None
    for i in range(n):
        if i == 0:
            start = t
        elif i in chosen:
            ov = rng.uniform(*OVERLAP_RANGE_S) * FS
            ov = min(ov, 0.6 * lengths[i - 1], 0.6 * lengths[i])
            start = int(prev_end - ov)
            start = max(start, prev_start + int(0.3 * FS), last_end.get(roles[i], 0) + int(0.2 * FS))
        else:
            start = int(prev_end + rng.uniform(*PAUSE_RANGE_S) * FS)
            start = max(start, last_end.get(roles[i], 0) + int(0.2 * FS))
        end = start + lengths[i]
        starts.append(start)
        prev_start = start
        prev_end = max(end, prev_end or 0)
        last_end[roles[i]] = end
    return starts


# ---------------------------------------------------------------------------------------------
# Noise


def fan_noise(n, rng):
    """Fan / HVAC noise: brown-pink broadband with a blade-pass tone and harmonics, slowly
    modulated a little. Stationary enough for an SNR measured over the whole file."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / FS)
    shape = np.where(f < 50, 0.0, 1.0 / np.maximum(f, 50) ** 0.5)  # pink: -3 dB/octave
    shape *= 1.0 / (1.0 + (f / 4000.0) ** 2)  # roll-off above 4 kHz
    x = np.fft.irfft(spec * shape, n)
    x /= np.sqrt(np.mean(x ** 2))
    t = np.arange(n) / FS
    blade = rng.uniform(80, 140)
    tone = sum(0.25 / h * np.sin(2 * np.pi * h * blade * t + rng.uniform(0, 2 * np.pi))
               for h in (1, 2, 3))
    am = 1.0 + 0.01 * np.sin(2 * np.pi * rng.uniform(0.2, 0.5) * t)
    return (x + tone) * am


# ---------------------------------------------------------------------------------------------
# Scene


def array_mics(kind, n, radius, spacing):
    """Mic offsets from the array centre (n, 3), in the room's axes."""
    if kind == "circular":
        a = 2 * np.pi * np.arange(n) / n
        return np.stack([radius * np.cos(a), radius * np.sin(a), np.zeros(n)], axis=1)
    x = (np.arange(n) - (n - 1) / 2) * spacing
    return np.stack([x, np.zeros(n), np.zeros(n)], axis=1)


def place(rng, roles_present):
    """Room, array, talkers and noise positions (metres), jittered by the seed."""
    room = np.array([rng.uniform(3.6, 4.6), rng.uniform(3.0, 3.8), rng.uniform(2.6, 2.9)])
    centre = np.array([room[0] * rng.uniform(0.42, 0.55), room[1] * rng.uniform(0.42, 0.55),
                       0.76])  # a desk
    az = rng.uniform(0, 2 * np.pi)
    spots = {
        # role: (azimuth from the array, horizontal distance, mouth height)
        "clinician": (az, rng.uniform(0.8, 1.1), rng.uniform(1.15, 1.25)),
        "patient": (az + np.pi + rng.uniform(-0.5, 0.5), rng.uniform(1.1, 1.5),
                    rng.uniform(1.1, 1.2)),
        "other-1": (az + np.pi / 2 + rng.uniform(-0.3, 0.3), rng.uniform(1.3, 1.8),
                    rng.uniform(1.1, 1.6)),
        "other-2": (az - np.pi / 2 + rng.uniform(-0.3, 0.3), rng.uniform(1.3, 1.8),
                    rng.uniform(1.1, 1.6)),
        "other-3": (az + np.pi / 4, rng.uniform(1.3, 1.8), rng.uniform(1.1, 1.6)),
    }
    talkers = {}
    for role in roles_present:
        a, d, z = spots[role]
        u = np.array([np.cos(a), np.sin(a)])
        # Nobody stands against a wall: pull the talker in along the same azimuth so that it stays
        # WALL_MARGIN_M from every wall (a wall right behind a talker makes an early reflection as
        # strong as the direct path, which no real exam room seats anyone in).
        for axis in (0, 1):
            if abs(u[axis]) > 1e-9:
                limit = (room[axis] - WALL_MARGIN_M - centre[axis]) if u[axis] > 0 \
                    else (WALL_MARGIN_M - centre[axis])
                d = min(d, limit / u[axis])
        p = np.array([centre[0] + d * u[0], centre[1] + d * u[1], z])
        talkers[role] = p
    # The badge: on the chest, 15-20 cm from the mouth (below it, slightly forward).
    mouth = talkers["clinician"] if "clinician" in talkers else centre + [0.9, 0, 0.45]
    towards = centre[:2] - mouth[:2]
    towards /= np.linalg.norm(towards)
    drop = rng.uniform(0.14, 0.18)
    badge = mouth + np.array([0.05 * towards[0], 0.05 * towards[1], -drop])
    # The noise: an HVAC vent near the ceiling by a wall, or a floor fan in a corner.
    if rng.uniform() < 0.5:
        noise = np.array([rng.uniform(0.4, room[0] - 0.4), 0.3, room[2] - 0.15])
    else:
        noise = np.array([room[0] - 0.3, room[1] - 0.3, 0.4])
    return room, centre, talkers, badge, noise


def simulate(args, turns, script_name):
    rng = np.random.default_rng(args.seed)
    roles = [r for r, _ in turns]
    for r in roles:
        if r not in VOICES:
            raise SimError(f"too many distinct speakers (no voice for {r})")
    with tempfile.TemporaryDirectory(prefix="room-sim-") as tmp:
        speech = [synthesize(r, t, Path(tmp), i) for i, (r, t) in enumerate(turns)]
    lengths = [len(s) for s in speech]
    starts = schedule(roles, lengths, args.overlap, rng)
    n_dry = max(s + l for s, l in zip(starts, lengths)) + int(EDGE_SILENCE_S * FS)

    present = list(dict.fromkeys(roles))
    room_dim, centre, talkers, badge_pos, noise_pos = place(rng, present)
    offsets = array_mics(args.array, args.mics, args.radius, args.spacing)
    mics = centre + offsets
    all_mics = np.vstack([mics, badge_pos[None, :]]) if args.badge else mics

    # The simulation runs PREROLL_S before array time 0, so the fan's reverberant field is in
    # steady state when the recording starts.
    pre = int(PREROLL_S * FS)
    dry = {r: np.zeros(pre + n_dry) for r in present}
    for r, s, x in zip(roles, starts, speech):
        dry[r][pre + s: pre + s + len(x)] += x
    # Each talker speaks at about the same level; a little random level per talker.
    for r in present:
        dry[r] *= 10 ** (rng.uniform(-1.5, 1.5) / 20)

    try:
        e_abs, max_order = pra.inverse_sabine(args.rt60, room_dim)
    except ValueError as e:
        raise SimError(f"--rt60 {args.rt60} is impossible in a {room_dim.round(2).tolist()} m "
                       f"room: {e}") from e
    room = pra.ShoeBox(room_dim, fs=FS, materials=pra.Material(e_abs), max_order=max_order)
    for r in present:
        room.add_source(talkers[r], signal=dry[r])
    noise_dry = fan_noise(pre + n_dry, rng)
    room.add_source(noise_pos, signal=noise_dry)
    room.add_microphone_array(all_mics.T)
    premix = room.simulate(return_premix=True)  # (sources, mics, samples)
    # pyroomacoustics centres its fractional-delay filter: every RIR starts 40 samples late.
    # Remove that so array time is physical time (source onset + distance / c).
    lag = pra.constants.get("frac_delay_length") // 2
    premix = premix[:, :, pre + lag: pre + lag + n_dry]
    speech_img = premix[:-1].sum(axis=0)  # (mics, n)
    noise_img = premix[-1]
    rt60_measured = float(np.median(room.measure_rt60()[: len(mics), :len(present)]))

    # Sensor self-noise, independent per mic, 30 dB under the fan at mic 0.
    fan_p0 = np.mean(noise_img[0] ** 2)
    noise_img = noise_img + rng.standard_normal(noise_img.shape) * math.sqrt(
        fan_p0 * 10 ** (SENSOR_NOISE_DB / 10))

    # Truth times are at the array centre: dry onset plus the direct path's travel time.
    delay = {r: np.linalg.norm(talkers[r] - centre) / SOUND_SPEED for r in present}
    truth_turns = []
    for i, (r, t) in enumerate(turns):
        s = starts[i] / FS + delay[r]
        e = (starts[i] + lengths[i]) / FS + delay[r]
        truth_turns.append({"index": i, "speaker": r, "start": round(s, 4), "end": round(e, 4),
                            "text": t, "overlap": False})
    for a in truth_turns:
        for b in truth_turns:
            if a is not b and a["start"] < b["end"] and b["start"] < a["end"]:
                a["overlap"] = True

    # SNR at mic 0: speech power over the truth turns (the union) / noise power over the file.
    mask = speech_mask(truth_turns, n_dry)
    p_speech = np.mean(speech_img[0, mask] ** 2)
    p_noise = np.mean(noise_img[0] ** 2)
    g = math.sqrt(p_speech / (p_noise * 10 ** (args.snr / 10)))
    mix = speech_img + g * noise_img

    arr = mix[: len(mics)]
    badge_gain_db = float(rng.uniform(-2.0, 2.0))
    badge_offset = int(round(rng.uniform(0.05, 0.35) * FS))
    scale_peak = np.max(np.abs(arr))
    if args.badge:
        badge_sig = mix[len(mics)] * 10 ** (badge_gain_db / 20)
        scale_peak = max(scale_peak, np.max(np.abs(badge_sig)))
    scale = PEAK / scale_peak
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_wav(out / "array.wav", arr * scale)
    for stale in ("badge.wav",):
        if not args.badge and (out / stale).exists():
            (out / stale).unlink()
    if args.badge:
        # The badge started recording badge_offset samples after the array.
        write_wav(out / "badge.wav", badge_sig[badge_offset:] * scale)

    scene = out.resolve().name
    r3 = lambda v: [round(float(c), 4) + 0.0 for c in v]  # noqa: E731  (+ 0.0: no "-0.0")
    geometry = {
        "units": "metres",
        "sample_rate": FS,
        "array": {
            "kind": args.array,
            "center": r3(centre),
            # Relative to the centre, in the room's axes (x, y horizontal, z up): what a config's
            # array geometry holds. Absolute position = center + mic.
            "mics": [r3(m) for m in offsets],
            "channels": args.mics,
        },
        "badge": ({"position": r3(badge_pos), "worn_by": "clinician",
                   "mouth_distance_m": round(float(np.linalg.norm(badge_pos - talkers.get(
                       "clinician", badge_pos))), 4)} if args.badge else None),
        "room": {"dimensions": r3(room_dim), "rt60_s": args.rt60,
                 "absorption": round(float(e_abs), 4), "max_order": int(max_order)},
        "talkers": {r: r3(talkers[r]) for r in present},
        "noise_source": r3(noise_pos),
        "speed_of_sound": SOUND_SPEED,
    }
    truth = {
        "version": 1,
        "scene": scene,
        "script": script_name,
        "seed": args.seed,
        "sample_rate": FS,
        "duration_s": round(n_dry / FS, 4),
        "channels": args.mics,
        "snr_db": args.snr,
        "snr_reference": "array mic 0; speech power over the truth turns / noise power over the file",
        "rt60_s": args.rt60,
        "rt60_measured_s": round(rt60_measured, 3),
        "time_reference": "array time; turn start/end = speech onset/offset of the direct path at the "
                          "array centre (reverberant tails not included)",
        "badge": ({"file": "badge.wav", "worn_by": "clinician",
                   "offset_s": badge_offset / FS,
                   "offset_meaning": "badge.wav sample 0 is array time offset_s "
                                     "(array_time = badge_time + offset_s)",
                   "gain_db": round(badge_gain_db, 3),
                   "gain_meaning": "extra electronic gain of the badge over the array "
                                   "(same scale otherwise)",
                   "mouth_distance_m": geometry["badge"]["mouth_distance_m"]}
                  if args.badge else None),
        "speakers": {r: {"voice": VOICES[r][0], "pitch": VOICES[r][1],
                         "distance_to_array_m": round(float(np.linalg.norm(talkers[r] - centre)), 4)}
                     for r in present},
        "turns": truth_turns,
    }
    (out / "geometry.json").write_text(compact_json(geometry) + "\n", encoding="utf-8")
    (out / "truth.json").write_text(json.dumps(truth, indent=2, ensure_ascii=False) + "\n",
                                    encoding="utf-8")
    rttm = [f"SPEAKER {scene} 1 {t['start']:.3f} {t['end'] - t['start']:.3f} <NA> <NA> "
            f"{t['speaker']} <NA> <NA>" for t in truth_turns]
    (out / "truth.rttm").write_text("\n".join(rttm) + "\n", encoding="utf-8")
    # Direct-path arrival (samples, array time) of every talker at every mic, from the RIRs.
    rir_peaks = {r: [int(np.argmax(np.abs(room.rir[k][j]))) - lag for k in range(len(mics))]
                 for j, r in enumerate(present)}
    stems = {"rir_peaks": rir_peaks, "speech": speech_img[: len(mics)] * scale,
             "per_talker": {r: premix[j, : len(mics)] * scale for j, r in enumerate(present)}}
    return truth, geometry, stems


def compact_json(obj):
    """Indented JSON with every innermost list of numbers on one line ([x, y, z])."""
    text = json.dumps(obj, indent=2)
    return re.sub(r"\[\s+([-0-9.eE,\s]+?)\s+\]",
                  lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]", text)


def display_path(path):
    """A path relative to the repository when it is inside it (truth.json stays portable)."""
    repo = Path(__file__).resolve().parents[2]
    p = Path(path).resolve()
    try:
        return str(p.relative_to(repo))
    except ValueError:
        return str(path)


def speech_mask(turns, n):
    mask = np.zeros(n, dtype=bool)
    for t in turns:
        mask[int(round(t["start"] * FS)): int(round(t["end"] * FS))] = True
    return mask


# ---------------------------------------------------------------------------------------------
# Checks (on the written files; the stems only for the coverage check)


def gcc_phat(a, b, up=32, max_lag=None):
    """Delay of b relative to a in samples (positive: b later), sub-sample by zero-padding."""
    n = len(a) + len(b)
    A, B = np.fft.rfft(a, n), np.fft.rfft(b, n)
    r = B * np.conj(A)
    r /= np.abs(r) + 1e-12
    cc = np.fft.irfft(r, n * up)
    m = int((max_lag or n // 2) * up)
    cc = np.concatenate((cc[-m:], cc[: m + 1]))
    return (np.argmax(np.abs(cc)) - m) / up


def runs(mask):
    """(start, end) sample ranges where mask is true."""
    d = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)))


def stft(x, ranges, nfft=1024, hop=256):
    win = np.hanning(nfft)
    frames = [x[s0: s0 + nfft] * win for s, e in ranges for s0 in range(s, e - nfft + 1, hop)]
    return np.fft.rfft(np.array(frames), axis=1)


def gcc_snr_weighted(x0, xk, talk, quiet, up=32, max_lag=30, nfft=1024):
    """Delay of xk relative to x0 (samples) over the `talk` ranges: GCC-PHAT whose bins are
    weighted by the talker's SNR there (noise spectra from the `quiet` ranges), so that the fan,
    a coherent point source of its own, does not pull the peak to its own TDOA."""
    A, B = stft(x0, talk, nfft), stft(xk, talk, nfft)
    NA, NB = stft(x0, quiet, nfft), stft(xk, quiet, nfft)
    g = np.mean(B * np.conj(A), axis=0)
    pa, pb = np.mean(np.abs(A) ** 2, axis=0), np.mean(np.abs(B) ** 2, axis=0)
    na, nb = np.mean(np.abs(NA) ** 2, axis=0), np.mean(np.abs(NB) ** 2, axis=0)
    snr = np.minimum(np.maximum(pa - na, 0) / (na + 1e-20), np.maximum(pb - nb, 0) / (nb + 1e-20))
    w = snr / (1 + snr) / (np.abs(g) + 1e-20)
    cc = np.fft.irfft(g * w, nfft * up)
    m = max_lag * up
    cc = np.concatenate((cc[-m:], cc[: m + 1]))
    return (np.argmax(cc) - m) / up


def check(out, truth, geometry, stems):
    ok = True

    def report(name, passed, detail):
        nonlocal ok
        ok &= bool(passed)
        print(f"check {'PASS' if passed else 'FAIL'} {name}: {detail}")

    # Everything is read back from the files; the stems (in memory after a simulation, None for
    # --verify) add the checks against the simulation itself.
    geometry = json.loads((out / "geometry.json").read_text(encoding="utf-8"))
    truth = json.loads((out / "truth.json").read_text(encoding="utf-8"))
    arr, fs = read_wav(out / "array.wav")
    n_ch = geometry["array"]["channels"]
    report("format", fs == FS and arr.shape[0] == n_ch,
           f"{arr.shape[0]} channels (want {n_ch}), {fs} Hz, 16-bit")
    dur = arr.shape[1] / fs
    report("duration", abs(dur - truth["duration_s"]) < 1e-3,
           f"{dur:.3f} s (truth {truth['duration_s']:.3f} s)")
    peak = np.max(np.abs(arr))
    report("no clipping", peak < 0.999, f"array peak {20 * np.log10(peak):.1f} dBFS")

    # The geometry file against the simulation: each talker's direct-path peak in the simulated
    # room impulse responses, against distance / c from geometry.json's positions.
    centre = np.array(geometry["array"]["center"])
    mics = centre + np.array(geometry["array"]["mics"])
    if stems:
        errs = [peak - np.linalg.norm(np.array(geometry["talkers"][r]) - mics[k]) / SOUND_SPEED * FS
                for r, peaks in stems["rir_peaks"].items() for k, peak in enumerate(peaks)]
        worst_rir = max(abs(e) for e in errs)
        report("rir direct paths vs geometry.json", worst_rir <= 0.5 + 1e-6,
               f"worst {worst_rir:.2f} samples over {len(errs)} talker-mic paths "
               f"(integer peak vs exact delay; limit 0.5)")

    # Non-speech stretches (noise only), away from the turns' reverberant tails: 0.6 x RT60 after
    # a turn the tail is 36 dB down, negligible against the noise.
    n = arr.shape[1]
    mask = speech_mask(truth["turns"], n)
    quiet = np.ones(n, dtype=bool)
    tail = max(0.25, 0.6 * truth["rt60_s"])
    for t in truth["turns"]:
        quiet[max(0, int((t["start"] - 0.05) * FS)): int((t["end"] + tail) * FS)] = False
    quiet_ranges = runs(quiet)

    # TDOA: GCC-PHAT (bins weighted by the talker's SNR) between mic 0 and each other mic over a
    # talker's non-overlapped turns (first 1.5 s of each), against the geometry.
    aperture = np.max(np.linalg.norm(mics[:, None] - mics[None], axis=2))
    max_lag = int(math.ceil(aperture / SOUND_SPEED * FS)) + 2
    all_errs = []
    for role, pos in geometry["talkers"].items():
        pos = np.array(pos)
        segs = [t for t in truth["turns"] if t["speaker"] == role and not t["overlap"]]
        if not segs:
            continue
        talk = [(int(t["start"] * FS), min(int(t["start"] * FS) + int(1.5 * FS), int(t["end"] * FS)))
                for t in segs]
        d0 = np.linalg.norm(pos - mics[0])
        errs = []
        for k in range(1, len(mics)):
            expected = (np.linalg.norm(pos - mics[k]) - d0) / SOUND_SPEED * FS
            measured = gcc_snr_weighted(arr[0], arr[k], talk, quiet_ranges, max_lag=max_lag)
            errs.append(measured - expected)
        all_errs += [abs(x) for x in errs]
        print(f"      tdoa {role}: error per mic pair 0-k (samples) "
              f"{', '.join(f'{x:+.2f}' for x in errs)}")
    # GCC-PHAT is itself fooled now and then by strong early reflections (a far talker near
    # a pair's endfire, a long RT60): the median must be sub-sample and 80% of the talker-pair
    # estimates within 1 sample. Swapped channels or a wrong geometry fail this by far.
    worst, median = max(all_errs), float(np.median(all_errs))
    within = float(np.mean(np.array(all_errs) <= 1.0))
    report("tdoa from array.wav vs geometry.json", median <= 0.5 and within >= 0.8,
           f"median |error| {median:.2f} samples ({median / FS * 1e6:.0f} us), "
           f"{100 * within:.0f}% within 1 sample, worst {worst:.2f} samples")

    # SNR at mic 0, measured blind from array.wav and the truth: noise power where nobody speaks
    # (away from the reverberant tails), speech power = power inside turns - noise power.
    x0 = arr[0]
    if quiet.sum() < 0.3 * FS:
        report("snr", False, "too little non-speech to measure the noise")
    else:
        p_n = np.mean(x0[quiet] ** 2)
        p_sn = np.mean(x0[mask] ** 2)
        snr = 10 * np.log10(max(p_sn - p_n, 1e-20) / p_n)
        exact = 10 * np.log10(np.mean(stems["speech"][0, mask] ** 2)
                              / np.mean((x0 - stems["speech"][0])[mask] ** 2)) if stems else None
        report("snr at mic 0", abs(snr - truth["snr_db"]) <= 1.0,
               f"measured {snr:.2f} dB from the mix ({quiet.sum() / FS:.1f} s of noise), "
               f"requested {truth['snr_db']} dB"
               + (f"; from the stems {exact:.2f} dB" if exact is not None else ""))
        if stems:
            nz = x0 - stems["speech"][0]
            print(f"      noise power in the non-speech stretches vs the whole file (stems): "
                  f"{10 * np.log10(np.mean(nz[quiet] ** 2) / np.mean(nz ** 2)):+.2f} dB")

    # Truth covers the speech: the speech image at mic 0 (per talker) starts at each turn's start
    # and its energy lies in the turns, allowing for the reverberant tail.
    if stems:
        onset_errs, inside, total = [], 0.0, 0.0
        for role, img in stems["per_talker"].items():
            x = img[0]
            own = [t for t in truth["turns"] if t["speaker"] == role]
            mt = np.zeros(n, dtype=bool)
            for t in own:
                mt[int(t["start"] * FS): int((t["end"] + 0.1) * FS)] = True
            e = x ** 2
            inside += e[mt].sum()
            total += e.sum()
            for t in own:
                s = int(t["start"] * FS)
                seg = np.abs(x[max(0, s - int(0.1 * FS)): int(t["end"] * FS)])
                thr = seg.max() * 10 ** (-40 / 20)
                first = np.flatnonzero(seg > thr)[0] + max(0, s - int(0.1 * FS))
                onset_errs.append((first - s) / FS * 1000)
        lo, hi = min(onset_errs), max(onset_errs)
        frac = inside / total
        # Onset: first sample of the talker's image at mic 0 above -40 dB of the turn's peak,
        # minus the truth start (the fractional-delay filters ring up to 2.5 ms ahead).
        report("truth covers speech", frac >= 0.97 and lo >= -10.0 and hi <= 10.0,
               f"{100 * frac:.1f}% of the speech energy at mic 0 lies in the turns (+100 ms tail); "
               f"onset - truth start in [{lo:+.2f}, {hi:+.2f}] ms over {len(onset_errs)} turns")
    n_ov = sum(t["overlap"] for t in truth["turns"])
    print(f"      turns: {len(truth['turns'])}, overlapped: {n_ov}, "
          f"speakers: {', '.join(truth['speakers'])}, rt60 measured {truth['rt60_measured_s']} s")

    # Badge: recover its offset against mic 0 (GCC-PHAT over the whole file).
    if truth["badge"]:
        b, _ = read_wav(out / "badge.wav")
        b = b[0]
        length = min(len(b), n)
        lag = gcc_phat(x0[:length], b[:length], up=1, max_lag=int(1.0 * FS))
        # badge sample k = array sample k + offset, so b lags x0 by -offset (plus the path
        # difference clinician->mic0 minus clinician->badge, a few ms).
        est = -lag / FS
        clin = np.array(geometry["talkers"].get("clinician", geometry["badge"]["position"]))
        path = (np.linalg.norm(clin - mics[0]) - np.linalg.norm(clin - np.array(
            geometry["badge"]["position"]))) / SOUND_SPEED
        want = truth["badge"]["offset_s"] + path
        report("badge offset", abs(est - want) <= 2 / FS,
               f"estimated {est * 1000:.2f} ms, truth offset {truth['badge']['offset_s'] * 1000:.2f} ms "
               f"+ path difference {path * 1000:.2f} ms")
        # What the diarizer's cheapest cue sees: badge / array power per speaker (dB), over
        # each speaker's non-overlapped turns, the badge aligned by the truth offset.
        off = int(round(truth["badge"]["offset_s"] * FS))
        ratios = []
        for role in truth["speakers"]:
            segs = [t for t in truth["turns"] if t["speaker"] == role and not t["overlap"]]
            pa = pb = 0.0
            for t in segs:
                s0, s1 = int(t["start"] * FS), int(t["end"] * FS)
                pa += np.sum(x0[s0:s1] ** 2)
                pb += np.sum(b[max(0, s0 - off): max(0, s1 - off)] ** 2)
            if segs and pa > 0 and pb > 0:
                ratios.append(f"{role} {10 * np.log10(pb / pa):+.1f} dB")
        print(f"      badge/array power by speaker: {', '.join(ratios)}")
    return ok


# ---------------------------------------------------------------------------------------------


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="simulate-room",
        description="Simulate a multi-channel exam-room recording of a scripted visit "
                    "(espeak-ng voices, image-source room, fan noise) with ground truth.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--verify", metavar="DIR",
                     help="only check an existing scene (no simulation; the checks that need "
                          "the simulation's stems are skipped)")
    src.add_argument("--script", metavar="VISIT.txt",
                     help="one turn a line: '[doctor] ...', '[patient] ...', any other tag "
                          "('[companion] ...') is another speaker (other-N)")
    src.add_argument("--aci", metavar="FILE",
                     help="an ACI-Bench CSV (encounter_id, dialogue) or a dialogue text file")
    p.add_argument("--encounter", metavar="ID", help="ACI-Bench encounter_id (default: the first)")
    p.add_argument("--max-turns", type=int, metavar="N", help="keep only the first N turns")
    p.add_argument("--out", metavar="DIR", help="where to write the scene (required unless --verify)")
    p.add_argument("--snr", type=float, default=5.0, help="SNR at array mic 0 in dB (default 5)")
    p.add_argument("--mics", type=int, default=4, help="array channels (default 4)")
    p.add_argument("--array", choices=("circular", "linear"), default="circular")
    p.add_argument("--radius", type=float, default=0.05, help="circular array radius, m (0.05)")
    p.add_argument("--spacing", type=float, default=0.05, help="linear array spacing, m (0.05)")
    p.add_argument("--rt60", type=float, default=0.4, help="reverberation time, s (default 0.4)")
    p.add_argument("--overlap", type=float, default=0.1,
                   help="fraction of turns that start before the previous ends (default 0.1)")
    p.add_argument("--seed", type=int, default=1, help="scene seed (default 1)")
    p.add_argument("--no-badge", dest="badge", action="store_false", help="no badge.wav")
    p.add_argument("--check", action="store_true", help="verify the written scene and print checks")
    args = p.parse_args(argv)
    if args.mics < 2:
        p.error("--mics must be at least 2")
    if not 0.1 <= args.rt60 <= 1.0:
        # Exam rooms run 0.3-0.8 s; past 1 s the image-source order (and memory) explodes.
        p.error("--rt60 must be between 0.1 and 1.0 s")
    if not 0 <= args.overlap <= 1:
        p.error("--overlap must be in [0, 1]")
    if args.max_turns is not None and args.max_turns < 1:
        p.error("--max-turns must be positive")
    if args.verify:
        try:
            ok = check(Path(args.verify), None, None, None)
        except (OSError, KeyError, ValueError) as e:
            print(f"simulate-room: cannot verify {args.verify}: {e}", file=sys.stderr)
            return 1
        return 0 if ok else 1
    if not args.out:
        p.error("--out DIR is required")
    try:
        for tool in ("espeak-ng", "sox"):
            if shutil.which(tool) is None:
                raise SimError(f"{tool} not found; install with: apt-get install espeak-ng sox")
        if args.script:
            turns, name = parse_script(args.script), display_path(args.script)
        else:
            turns, enc = parse_aci(args.aci, args.encounter)
            name = f"{display_path(args.aci)}#{enc}"
        if args.max_turns:
            turns = turns[: args.max_turns]
        truth, geometry, stems = simulate(args, turns, name)
        out = Path(args.out)
        print(f"simulate-room: wrote {out}/ ({len(truth['turns'])} turns, "
              f"{truth['duration_s']:.2f} s, {args.mics} mics, SNR {args.snr} dB, "
              f"RT60 {args.rt60} s)", file=sys.stderr)
        if args.check:
            if not check(out, truth, geometry, stems):
                print("simulate-room: some checks failed", file=sys.stderr)
                return 1
    except SimError as e:
        print(f"simulate-room: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
