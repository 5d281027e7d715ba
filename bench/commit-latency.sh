#!/usr/bin/env bash
# Commit-to-searchable latency in a ~2,000-file and a ~200-file repository, and the time hgd's hooks
# add to `git commit`. Usage: bench/commit-latency.sh [ROUNDS]
cd "$(dirname "$0")/.."
source bench/scratch-home.sh
python3 bench/commit_latency.py --bin "$HGD_BIN" --rounds "${1:-10}"
