#!/usr/bin/env bash
# Retrieval quality (NDCG@10) and latency of hgd on the semble benchmark's dev split, with the
# harness in ../shared/bench. Uses a throwaway HGD_HOME so the index starts empty.
# Usage: bench/quality.sh REPOS_DIR REPO... (work trees made by ../shared/bench/setup_repos.py)
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
source scripts/env.sh
repos_dir="${1:?usage: bench/quality.sh REPOS_DIR REPO...}"
shift
cargo build --workspace --bins --quiet
"$HGD_BIN/hgd" setup >/dev/null
model_dir="$("$HGD_BIN/hgd-daemon" model-dir)"
runtime="$(ls "$(dirname "$(dirname "$model_dir")")"/runtime/libonnxruntime* | head -1)"
bench_home="$(mktemp -d /tmp/hgd-bench.XXXXXX)"
trap 'HGD_HOME="$bench_home" "$HGD_BIN/hgd" stop >/dev/null 2>&1; rm -rf "$bench_home"' EXIT
export HGD_HOME="$bench_home" HGD_MODEL_DIR="$model_dir" HGD_ORT_DYLIB="$runtime"
export PATH="$HGD_BIN:$PATH"
args=()
for r in "$@"; do args+=(--repo "$r"); done
python3 ../shared/bench/semble_eval.py --data ../shared/bench/semble-dev --repos "$repos_dir" \
  "${args[@]}" --index-cmd 'hgd index .' --cmd 'hgd search --json -n {k} {query}' \
  --label hgd --out "${OUT:-/tmp/hgd-quality.json}"
