#!/usr/bin/env bash
# The whole test suite, from a fresh machine: system packages, build, `hgd setup` (idempotent),
# formatting and lints, then every test (unit tests and end-to-end tests on the real binaries).
cd "$(dirname "$0")/.."
source scripts/env.sh

# The service tests check the systemd unit with `systemd-analyze verify` (Debian's systemd
# package; it runs without systemd as PID 1).
if [ "$(uname -s)" = Linux ] && ! command -v systemd-analyze >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  echo "hgd: installing systemd (for systemd-analyze)" >&2
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq systemd >&2
fi
# Tests of a full disk, a read-only home and another user's client need root and mounts; where
# both work here, they must run rather than skip.
probe="$(mktemp -d)"
if [ "$(id -u)" = 0 ] && mount -t tmpfs -o size=1m tmpfs "$probe" 2>/dev/null; then
  umount "$probe"
  export HGD_REQUIRE_PRIVILEGED=1
fi
rmdir "$probe"
hgd_build
"$HGD_BIN/hgd" setup
# The S3 API server of the remote tests (PyPI's moto[server], pinned; made once under ~/.cache).
scripts/s3-venv.sh >/dev/null
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
# The fuzz targets (their own workspace, see RELIABILITY.md) must keep compiling.
CARGO_TARGET_DIR="$CARGO_TARGET_DIR/../fuzz-check" cargo check --quiet --manifest-path fuzz/Cargo.toml --bins
cargo test --workspace --no-fail-fast "$@"
