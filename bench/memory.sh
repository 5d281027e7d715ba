#!/usr/bin/env bash
# Daemon memory over an index left by bench/quality.sh (HGD_BENCH_HOME): runs each dev
# repository's benchmark queries in turn from its benchmark folder (so no scope widens and no job
# starts) and prints the daemon's resident memory and its search indexes' share after each.
# Works on a copy of the home, so the original stays as it was.
# Usage: bench/memory.sh HOME [N_REPOS] [IDLE_SECONDS]
#   IDLE_SECONDS: wait that long at the end and print memory again (the indexing session is
#   released after 2 minutes unused). BIN: measure other binaries (an older build's).
cd "$(dirname "$0")/.."
home_src="${1:?usage: bench/memory.sh HOME [N_REPOS] [IDLE_SECONDS]}"
n="${2:-21}"
idle="${3:-0}"
repos_dir="${REPOS_DIR:-/tmp/semble-bench/repos}"
source bench/daemon-home.sh mem "$home_src"
memory() { hgd status 2>/dev/null | head -1 | grep -oE '[0-9]+ MiB resident( \([0-9]+ MiB search indexes\))?'; }
total=0
python3 - "$repos_dir" "$n" <<'PY' > "$HGD_HOME/plan.txt"
import json, os, sys
repos_dir, n = sys.argv[1], int(sys.argv[2])
specs = {r["name"]: r for r in json.load(open("../shared/bench/semble-dev/repos.json"))}
split = json.load(open("../shared/bench/semble-dev/split.json"))["dev"]
shown = 0
for name in split:
    root = os.path.join(repos_dir, name, specs[name].get("benchmark_root") or "")
    ann = f"../shared/bench/semble-dev/annotations/{name}.json"
    if shown < n and os.path.isdir(root) and os.path.isfile(ann):
        print(name, root, ann)
        shown += 1
PY
while read -r name root ann; do
  python3 -c "import json,sys; [print(q['query']) for q in json.load(open(sys.argv[1]))]" "$ann" > "$HGD_HOME/q.txt"
  (cd "$root" && while read -r q; do hgd search --json -n 10 "$q" >/dev/null 2>&1; done < "$HGD_HOME/q.txt")
  blocks=$(hgd status 2>/dev/null | grep -E "^[^ ]*/$name: " | grep -oE '[0-9]+ blocks' | grep -oE '[0-9]+')
  total=$((total + ${blocks:-0}))
  jobs=$(hgd status 2>/dev/null | grep -c ': indexing')
  printf '%-20s %7s blocks, %7s searched in total: %s, jobs running %s\n' "$name" "${blocks:-?}" "$total" "$(memory)" "$jobs"
done < "$HGD_HOME/plan.txt"
if [ "$idle" -gt 0 ]; then
  sleep "$idle"
  echo "after ${idle}s idle: $(memory)"
fi
