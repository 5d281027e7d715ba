#!/usr/bin/env bash
# Retrieval quality (NDCG@10) and latency of hgd on the semble benchmark's dev split, with the
# harness in ../shared/bench, from an empty index (or into HGD_BENCH_HOME, kept for
# `hgd-daemon eval`).
# Usage: bench/quality.sh REPOS_DIR [REPO...]
#   REPOS_DIR: work trees made by bench/dev_repos.py; with no REPO, every dev repository that
#   has a work tree there (the whole split, not a hand-picked subset).
cd "$(dirname "$0")/.."
repos_dir="${1:?usage: bench/quality.sh REPOS_DIR [REPO...]}"
shift
source bench/scratch-home.sh
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  mapfile -t names < <(python3 -c '
import json, os, sys
split = json.load(open("../shared/bench/semble-dev/split.json"))["dev"]
print("\n".join(n for n in split if os.path.isdir(os.path.join(sys.argv[1], n))))' "$repos_dir")
fi
args=()
for r in "${names[@]}"; do args+=(--repo "$r"); done
python3 ../shared/bench/semble_eval.py --data ../shared/bench/semble-dev --repos "$repos_dir" \
  "${args[@]}" --index-cmd 'hgd index .' --cmd 'hgd search --json -n {k} {query}' \
  --label hgd --out "${OUT:-/tmp/hgd-quality.json}"
