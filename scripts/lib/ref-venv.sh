#!/usr/bin/env bash
# Creates (or reuses) the Python venv that holds the CTranslate2 reference transcriber used to
# prove the CTranslate2 -> ggml conversion, and prints its path on stdout.
#
#   scripts/lib/ref-venv.sh            # -> ~/.cache/edge-scribe/venv-ref
#   EDGE_SCRIBE_CACHE=/x scripts/lib/ref-venv.sh
#
# The packages that decide the reference transcript are pinned to exact versions so that it cannot
# drift under us. The venv is rebuilt only when the pins change (a stamp file records them), so a second run
# takes well under a second. Only PyPI is used; nothing is fetched from a model hub.
set -euo pipefail

cache="${EDGE_SCRIBE_CACHE:-$HOME/.cache/edge-scribe}"
venv="$cache/venv-ref"
python="${EDGE_SCRIBE_PYTHON:-python3}"

# faster-whisper 1.2.1 accepts ctranslate2 >=4.0,<5; 4.8.5 is the newest such release. The rest
# are their dependencies as pip resolved them, pinned too: tokenizers and numpy shape the decoded
# text as much as ctranslate2 does.
pins=(
    "faster-whisper==1.2.1"
    "ctranslate2==4.8.5"
    "tokenizers==0.23.3"
    "numpy==2.4.6"
    "onnxruntime==1.32.0"
    "av==18.1.0"
    "huggingface_hub==2.4.0"
    "tqdm==4.70.1"
    "PyYAML==6.0.3"
)

stamp="$venv/.edge-scribe-pins"
wanted="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])') ${pins[*]}"

if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$wanted" ]]; then
    echo "$venv"
    exit 0
fi

echo "ref-venv: building $venv (pins changed or venv missing)" >&2
mkdir -p "$cache"
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --only-binary=:all: "${pins[@]}" >&2
# Prove the import works before declaring the venv good; a half-built venv must not be reused.
"$venv/bin/python" -c 'import ctranslate2, faster_whisper' >&2
echo "$wanted" >"$stamp"
echo "$venv"
