# Sourced by benchmarks that run one daemon in a throwaway home: the binaries and the installed
# runtime and model (bench/binaries.sh), and HGD_HOME in a temp folder named after $1, removed
# (daemon stopped) at exit. With $2, the home starts as a copy of that index (e.g. one left by
# bench/quality.sh), so the original is kept.
source "$(dirname "${BASH_SOURCE[0]}")/binaries.sh"
HGD_HOME="$(mktemp -d "/tmp/hgd-$1.XXXXXX")"
export HGD_HOME
trap 'hgd stop >/dev/null 2>&1; rm -rf "$HGD_HOME"' EXIT
if [ -n "${2:-}" ]; then
  cp -a "$2/." "$HGD_HOME/"
  rm -f "$HGD_HOME/hgd.sock" "$HGD_HOME/daemon.lock"
fi
