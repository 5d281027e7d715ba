# Sourced by benchmarks: the binaries (BIN, an older build's to compare, else this checkout's,
# built now) on PATH, and the installed runtime and model (HGD_MODEL_DIR, HGD_ORT_DYLIB), so a
# home made by the benchmark shares them instead of installing its own.
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
set +e
if [ -n "${BIN:-}" ]; then HGD_BIN="$BIN"; else hgd_build --quiet; fi
export PATH="$HGD_BIN:$PATH"
HGD_MODEL_DIR="$(hgd-daemon model-dir)"
HGD_ORT_DYLIB="$(ls "$(dirname "$(dirname "$HGD_MODEL_DIR")")"/runtime/libonnxruntime* | head -1)"
export HGD_MODEL_DIR HGD_ORT_DYLIB
