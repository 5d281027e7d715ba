#!/usr/bin/env bash
# Retrieval quality (NDCG@10) and latency of hgd on the semble benchmark's dev split, with the
# harness in ../shared/bench, from an empty index.
# Usage: bench/quality.sh REPOS_DIR REPO... (work trees made by ../shared/bench/setup_repos.py)
cd "$(dirname "$0")/.."
repos_dir="${1:?usage: bench/quality.sh REPOS_DIR REPO...}"
shift
source bench/scratch-home.sh
args=()
for r in "$@"; do args+=(--repo "$r"); done
python3 ../shared/bench/semble_eval.py --data ../shared/bench/semble-dev --repos "$repos_dir" \
  "${args[@]}" --index-cmd 'hgd index .' --cmd 'hgd search --json -n {k} {query}' \
  --label hgd --out "${OUT:-/tmp/hgd-quality.json}"
