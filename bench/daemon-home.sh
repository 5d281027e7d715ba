# Sourced by benchmarks that run one daemon in a throwaway home: the binaries (BIN, an older
# build's to compare, else this checkout's, built now), the installed runtime and model, and
# HGD_HOME in a temp folder named after $1, removed (daemon stopped) at exit. With $2, the home
# starts as a copy of that index (e.g. one left by bench/quality.sh), so the original is kept.
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
set +e
if [ -n "${BIN:-}" ]; then HGD_BIN="$BIN"; else cargo build --workspace --bins --quiet; fi
export PATH="$HGD_BIN:$PATH"
HGD_MODEL_DIR="$(hgd-daemon model-dir)"
HGD_ORT_DYLIB="$(ls "$(dirname "$(dirname "$HGD_MODEL_DIR")")"/runtime/libonnxruntime* | head -1)"
export HGD_MODEL_DIR HGD_ORT_DYLIB
HGD_HOME="$(mktemp -d "/tmp/hgd-$1.XXXXXX")"
export HGD_HOME
trap 'hgd stop >/dev/null 2>&1; rm -rf "$HGD_HOME"' EXIT
if [ -n "${2:-}" ]; then
  cp -a "$2/." "$HGD_HOME/"
  rm -f "$HGD_HOME/hgd.sock" "$HGD_HOME/daemon.lock"
fi
