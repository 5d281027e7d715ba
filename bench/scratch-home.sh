# Sourced by benchmarks: builds hgd, installs the runtime and model once (`hgd setup`), and points
# HGD_HOME at a throwaway folder that shares them, so every run starts with an empty index.
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
cargo build --workspace --bins --quiet
"$HGD_BIN/hgd" setup >/dev/null
HGD_MODEL_DIR="$("$HGD_BIN/hgd-daemon" model-dir)"
HGD_ORT_DYLIB="$(ls "$(dirname "$(dirname "$HGD_MODEL_DIR")")"/runtime/libonnxruntime* | head -1)"
HGD_HOME="$(mktemp -d /tmp/hgd-bench.XXXXXX)"
export HGD_HOME HGD_MODEL_DIR HGD_ORT_DYLIB
export PATH="$HGD_BIN:$PATH"
trap '"$HGD_BIN/hgd" stop >/dev/null 2>&1; rm -rf "$HGD_HOME"' EXIT
