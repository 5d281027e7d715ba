# Sourced by benchmarks: builds hgd, installs the runtime and model once (`hgd setup`), and points
# HGD_HOME at a throwaway folder that shares them, so every run starts with an empty index.
# With HGD_BENCH_HOME set, that folder is used instead and kept, so a later run (or
# `hgd-daemon eval`) re-uses its index.
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
hgd_build --quiet
"$HGD_BIN/hgd" setup >/dev/null
HGD_MODEL_DIR="$("$HGD_BIN/hgd-daemon" model-dir)"
HGD_ORT_DYLIB="$(ls "$(dirname "$(dirname "$HGD_MODEL_DIR")")"/runtime/libonnxruntime* | head -1)"
export HGD_MODEL_DIR HGD_ORT_DYLIB
export PATH="$HGD_BIN:$PATH"
if [ -n "${HGD_BENCH_HOME:-}" ]; then
  mkdir -p "$HGD_BENCH_HOME"
  HGD_HOME="$HGD_BENCH_HOME"
  export HGD_HOME
  trap '"$HGD_BIN/hgd" stop >/dev/null 2>&1' EXIT
else
  HGD_HOME="$(mktemp -d /tmp/hgd-bench.XXXXXX)"
  export HGD_HOME
  trap '"$HGD_BIN/hgd" stop >/dev/null 2>&1; rm -rf "$HGD_HOME"' EXIT
fi
