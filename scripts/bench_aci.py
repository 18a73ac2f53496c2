"""Part 4 of scripts/bench.py: drafting on ACI-Bench (issue 5), measured with `edge-scribe eval aci`.

Runs, each a separate `edge-scribe eval aci` process whose JSON report is read back:

- valid, extraction only (no LLM) and LLM-composed with every installed GGUF model (SmolLM2-135M
  by default); train, extraction only;
- the ASR comparison: the shortest few valid dialogues are synthesized with `scripts/make-visit
  --aci` (espeak-ng, two voices), transcribed by `edge-scribe process` (VAD + Whisper), and the
  resulting transcript.json is drafted and scored exactly like the dialogue text of the same
  encounters.

Standard library only. `render(ctx, add)` writes the Markdown section between the markers
MARK_START / MARK_END, so `scripts/bench aci` can refresh this section alone in an existing
docs/BENCHMARKS.md.
"""

import csv
import json
import shlex
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO / "data" / "aci-bench"
MARK_START = "<!-- aci-bench:start -->"
MARK_END = "<!-- aci-bench:end -->"
DEFAULT_LLM = "smollm2-135m-instruct"

# Full-note scores on ACI-Bench test set 1 as published (Yim et al. 2023, Table 5); ROUGE-L there
# is rouge-score's rougeLsum (see src/eval/rouge.rs for how that was established).
PUBLISHED = [
    ("GPT-4 (published, test 1)", 51.76, 22.58, 45.97),
    ("ChatGPT (published, test 1)", 47.44, 19.01, 42.47),
    ("BART fine-tuned (published, test 1)", 53.46, 25.08, 48.62),
    ("copy transcript (published, test 1)", 32.84, 12.53, 30.61),
]

TARGET_PRECISION = 0.99
TARGET_RECALL = 0.90


class AciBenchError(Exception):
    pass


def log(message):
    print(f"bench: {message}", flush=True, file=__import__("sys").stderr)


def installed_llms(models_dir):
    """Installed LLMs (directories holding a .gguf), the default first."""
    names = sorted(p.name for p in Path(models_dir).iterdir()
                   if p.is_dir() and any(p.glob("*.gguf")))
    return sorted(names, key=lambda n: n != DEFAULT_LLM)


def run(argv, timeout, what):
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=str(REPO))
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise AciBenchError(f"{what} exited with {proc.returncode}:\n{proc.stderr[-3000:]}")
    return wall


def eval_aci(ctx, name, split, mode, model=None, encounters=(), transcripts=None):
    out = ctx.tmp / f"aci-{name}.json"
    argv = [str(ctx.bins["edge-scribe"]), "eval", "aci", "--data", str(ctx.aci_data),
            "--split", split, "--mode", mode, "--models-dir", str(ctx.models_dir),
            "--out", str(out)]
    if model:
        argv += ["--model", model]
    for e in encounters:
        argv += ["--encounter", e]
    if transcripts:
        argv += ["--transcripts", str(transcripts)]
    log(f"ACI-Bench: {name}")
    wall = run(argv, ctx.step_timeout * 4, f"edge-scribe eval aci ({name})")
    report = json.loads(out.read_text())
    report["wall_s"] = wall
    report["name"] = name
    report["command"] = " ".join(shlex.quote(a) for a in ["edge-scribe"] + argv[1:]).replace(
        str(ctx.tmp), "$TMP").replace(str(ctx.aci_data), "$ACI").replace(str(REPO) + "/", "")
    return report


def shortest(ctx, split, n):
    with open(ctx.aci_data / f"{split}.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    rows.sort(key=lambda r: len(r["dialogue"].split()))
    return [(r["encounter_id"], len(r["dialogue"].split())) for r in rows[:n]]


def bench_aci(ctx, wer):
    ctx.aci_data = Path(ctx.aci_data)
    if not (ctx.aci_data / "valid.csv").is_file():
        raise AciBenchError(f"ACI-Bench is not at {ctx.aci_data} (--aci-data DIR)")
    result = {"runs": [], "asr": None, "models": installed_llms(ctx.models_dir)}
    result["runs"].append(eval_aci(ctx, "valid-extraction", "valid", "extraction"))
    for model in result["models"]:
        result["runs"].append(eval_aci(ctx, f"valid-llm-{model}", "valid", "llm", model=model))
    result["runs"].append(eval_aci(ctx, "train-extraction", "train", "extraction"))

    if ctx.aci_asr > 0:
        picked = shortest(ctx, "valid", ctx.aci_asr)
        asr_dir = ctx.tmp / "aci-asr"
        visits = []
        for encounter, words in picked:
            wav = ctx.tmp / f"aci-{encounter}.wav"
            truth = ctx.tmp / f"aci-{encounter}.truth.json"
            log(f"ACI-Bench ASR: synthesizing {encounter}")
            run([str(REPO / "scripts" / "make-visit"), "--aci", str(ctx.aci_data / "valid.csv"),
                 "--encounter", encounter, str(wav), "--truth", str(truth)],
                ctx.step_timeout, "scripts/make-visit")
            log(f"ACI-Bench ASR: edge-scribe process {encounter}")
            wall = run([str(ctx.bins["edge-scribe"]), "process", str(wav),
                        "--out", str(asr_dir / encounter),
                        "--data-dir", str(ctx.tmp / "aci-asr-data" / encounter),
                        "--models-dir", str(ctx.models_dir), "--quiet"],
                       ctx.step_timeout, f"edge-scribe process ({encounter})")
            truth_json = json.loads(truth.read_text())
            transcript = json.loads((asr_dir / encounter / "transcript.json").read_text())
            run_json = json.loads((asr_dir / encounter / "run.json").read_text())
            hyp = " ".join(s["text"] for s in transcript["segments"])
            ref = " ".join(t["text"] for t in truth_json["turns"])
            visits.append({
                "encounter": encounter, "words": words, "audio_s": truth_json["duration_s"],
                "process_s": wall, "asr_ms": run_json.get("timings", {}).get("asr_ms"),
                "wer": wer(ref, hyp), "segments": len(transcript["segments"]),
            })
        ids = [v["encounter"] for v in visits]
        model = result["models"][0] if result["models"] else None
        pairs = [("extraction", None)] + ([("llm", model)] if model else [])
        asr_runs = []
        for mode, m in pairs:
            asr_runs.append(eval_aci(ctx, f"asr-subset-dialogue-{mode}", "valid", mode, m, ids))
            asr_runs.append(eval_aci(ctx, f"asr-subset-asr-{mode}", "valid", mode, m, ids,
                                     transcripts=asr_dir))
        result["asr"] = {"visits": visits, "runs": asr_runs}
    ctx.aci = result


def f2(x):
    return f"{x:.2f}"


def label(r):
    mode = "extraction only" if r["mode"] == "extraction" else f"LLM: {r.get('model') or '?'}"
    return f"edge-scribe, {mode} ({r['split']}, {r['input']})"


def recall_cell(r, category):
    c = r["totals"]["recall"].get(category, {"found": 0, "stated": 0})
    rate = r["totals"]["recall_rate"].get(category, 1.0)
    return f"{c['found']}/{c['stated']} = {rate:.2f}"


def render(ctx, add):
    a = ctx.aci
    add(MARK_START)
    add("## 4. Drafting on ACI-Bench")
    add("")
    add(f"Measured {ctx.date} at commit {ctx.commit} (load average {ctx.load_start} at start of "
        "the run).")
    add("")
    add("`edge-scribe eval aci` drafts a note for every encounter of an ACI-Bench split (the "
        "dialogue text in, the reference note as the answer) and scores it. ROUGE is computed as "
        "ACI-Bench's `evaluate_fullnote.py` did (HuggingFace `evaluate` → `rouge-score` defaults: "
        "lower-case, `[a-z0-9]+` tokens, no stemming); the published \"ROUGE-L\" is `rougeLsum` "
        "(newline-split summary-level LCS), so our R-L column is that, and whole-note LCS is "
        "shown apart. Our copy-transcript rows (the tag-free dialogue as the note, scored in the "
        "same run) check the implementation against the published copy-transcript numbers; the "
        "published rows are on test set 1, ours on valid (20) and train (67).")
    add("")
    add("| System | n | ROUGE-1 | ROUGE-2 | ROUGE-L (Lsum) | whole-note LCS |")
    add("|---|---:|---:|---:|---:|---:|")
    for r in a["runs"]:
        t = r["totals"]
        g = t["rouge"]
        add(f"| {label(r)} | {t['drafted']}/{t['encounters']} | {f2(g['rouge1'])} | "
            f"{f2(g['rouge2'])} | {f2(g['rouge_lsum'])} | {f2(g['rouge_l'])} |")
    seen = set()
    for r in a["runs"]:
        if r["split"] in seen or r["mode"] != "extraction":
            continue
        seen.add(r["split"])
        c = r["totals"]["copy_rouge"]
        add(f"| copy transcript (this run, {r['split']}) | {r['totals']['encounters']} | "
            f"{f2(c['rouge1'])} | {f2(c['rouge2'])} | {f2(c['rouge_lsum'])} | {f2(c['rouge_l'])} |")
    for name, r1, r2, rl in PUBLISHED:
        add(f"| {name} | 40 | {r1:.2f} | {r2:.2f} | {rl:.2f} | – |")
    add("")

    add("### Statement precision")
    add("")
    add("Every statement of every draft is checked twice: by the project verifier's verdict as the "
        "draft records it, and by an independent check (`src/eval/support.rs`, no code shared "
        "with the verifier) that every number (number words normalized), unit, drug name, dose, "
        "laterality word and negation in the statement occurs in the text of the segments it "
        "cites; drug names come from a lexicon built from the words next to doses in the split's "
        "dialogues and notes plus a list of common drugs. Target: precision ≥ 0.99 and no "
        "unsupported number, drug or dose. \"In reference\" = statements all of whose content "
        "words (stemmed) occur in the reference note.")
    add("")
    add("| Run | Statements (by origin) | Verifier precision | Independent precision | "
        "Unsupported numbers / drugs / doses | units / laterality / negation | In reference | "
        "Verifier dropped / proposed |")
    add("|---|---|---:|---:|---|---|---:|---|")
    for r in a["runs"]:
        t = r["totals"]
        i = t["independent"]
        v = t["verifier"]
        origins = ", ".join(f"{k} {n}" for k, n in sorted(t["statements_by_origin"].items()))
        add(f"| {label(r)} | {t['statements']} ({origins or '–'}) | {t['precision_verifier']:.3f} | "
            f"{t['precision_independent']:.3f} | {i['unsupported_numbers']} / "
            f"{i['unsupported_drugs']} / {i['unsupported_doses']} | {i['unsupported_units']} / "
            f"{i['unsupported_laterality']} / {i['unsupported_negation']} | "
            f"{t['content_in_reference_share']:.2f} | {v['dropped']} / {v['proposed']} |")
    add("")

    add("### Fact recall (vitals, medications, allergies stated in the dialogue)")
    add("")
    add("Parsed from the reference note (BP `d/d`, heart rate, temperature, SpO2, respiratory "
        "rate, weight; drug names from the lexicon; the ALLERGIES section and \"allergic to …\"), "
        "kept when the dialogue states the value (near the vital's name) or the name, and "
        "counted as found when one draft statement carries it. Target ≥ 0.90 per category.")
    add("")
    add("| Run | Vitals | Medications | Allergies |")
    add("|---|---:|---:|---:|")
    for r in a["runs"]:
        add(f"| {label(r)} | {recall_cell(r, 'vitals')} | {recall_cell(r, 'medications')} | "
            f"{recall_cell(r, 'allergies')} |")
    add("")

    add("### Drafting time")
    add("")
    add("| Run | Mean ms per draft | Max ms | LLM worker start ms | Whole run s |")
    add("|---|---:|---:|---:|---:|")
    for r in a["runs"]:
        t = r["totals"]
        load = r.get("model_load_ms")
        add(f"| {label(r)} | {t['draft_ms_mean']:.0f} | {t['draft_ms_max']} | "
            f"{'–' if load is None else load} | {r['wall_s']:.1f} |")
    add("")

    asr = a.get("asr")
    add("### Dialogue text vs ASR of synthesized audio")
    add("")
    if not asr:
        add("Not run this time (`--aci-asr 0`).")
        add("")
    else:
        add("The shortest valid dialogues are spoken by espeak-ng (`scripts/make-visit --aci`, "
            "two voices plus a third for other speakers), transcribed by `edge-scribe process` "
            "(VAD + Whisper tiny.en), and the transcript.json is drafted and scored like the "
            "dialogue text of the same encounters. Fact recall keeps only facts the original "
            "dialogue states, so what ASR loses counts as missed. WER is against the spoken "
            "text (bench normalization of part 1).")
        add("")
        add("| Encounter | Dialogue words | Audio s | `process` wall s | ASR ms | Segments | WER |")
        add("|---|---:|---:|---:|---:|---:|---:|")
        for v in asr["visits"]:
            add(f"| {v['encounter']} | {v['words']} | {v['audio_s']:.0f} | {v['process_s']:.1f} | "
                f"{v['asr_ms']} | {v['segments']} | {100 * v['wer']:.1f} % |")
        add("")
        add("| Input | Mode | ROUGE-1 | ROUGE-2 | ROUGE-L (Lsum) | copy-input R-1 | Statements | "
            "Precision verifier / independent | Unsupported numbers / drugs / doses | Vitals | "
            "Medications | Allergies |")
        add("|---|---|---:|---:|---:|---:|---:|---|---|---:|---:|---:|")
        for r in asr["runs"]:
            t = r["totals"]
            g = t["rouge"]
            i = t["independent"]
            mode = "extraction" if r["mode"] == "extraction" else f"LLM {r.get('model')}"
            add(f"| {r['input']} | {mode} | {f2(g['rouge1'])} | {f2(g['rouge2'])} | "
                f"{f2(g['rouge_lsum'])} | {f2(t['copy_rouge']['rouge1'])} | {t['statements']} | "
                f"{t['precision_verifier']:.3f} / {t['precision_independent']:.3f} | "
                f"{i['unsupported_numbers']} / {i['unsupported_drugs']} / {i['unsupported_doses']} | "
                f"{recall_cell(r, 'vitals')} | {recall_cell(r, 'medications')} | "
                f"{recall_cell(r, 'allergies')} |")
        add("")

    add("### Against the issue's targets (valid)")
    add("")
    for r in a["runs"]:
        if r["split"] != "valid":
            continue
        t = r["totals"]
        i = t["independent"]
        checks = [
            ("verifier precision ≥ 0.99", t["precision_verifier"] >= TARGET_PRECISION),
            ("independent precision ≥ 0.99", t["precision_independent"] >= TARGET_PRECISION),
            ("no unsupported numbers, drugs or doses",
             i["unsupported_numbers"] + i["unsupported_drugs"] + i["unsupported_doses"] == 0),
        ] + [(f"{c} recall ≥ 0.90", t["recall_rate"].get(c, 1.0) >= TARGET_RECALL)
             for c in ("vitals", "medications", "allergies")]
        met = ", ".join(f"{name}: {'met' if ok else '**missed**'}" for name, ok in checks)
        add(f"- {label(r)}: {met}.")
    add("")
    add("Commands (`$ACI` = the ACI-Bench directory, `$TMP` a scratch directory):")
    add("")
    for r in a["runs"] + (asr["runs"] if asr else []):
        add(f"- `{r['command']}`")
    add("")
    add(MARK_END)


def splice(existing, section):
    """Replaces the ACI-Bench section of an existing report, or appends it."""
    if MARK_START in existing and MARK_END in existing:
        head, rest = existing.split(MARK_START, 1)
        _, tail = rest.split(MARK_END, 1)
        return head + section + tail
    notes = existing.find("\n## Notes")
    if notes >= 0:
        return existing[:notes + 1] + section + "\n\n" + existing[notes + 1:]
    return existing.rstrip("\n") + "\n\n" + section + "\n"
