#!/usr/bin/env bash
# The whole test suite, from a fresh machine: system packages, build, `hgd setup` (idempotent),
# formatting and lints, then every test (unit tests and end-to-end tests on the real binaries).
cd "$(dirname "$0")/.."
source scripts/env.sh

cargo build --workspace --bins
"$HGD_BIN/hgd" setup
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace --no-fail-fast "$@"
