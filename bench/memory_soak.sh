#!/usr/bin/env bash
# Memory over many searches: over a copy of an index left by bench/quality.sh, runs N searches
# (default 10,000), cycling through the benchmark queries of the first K dev repositories (default
# 5, so their indexes stay cached) with a different result count each pass so no reply repeats
# exactly, and prints the daemon's resident memory after the first pass (warm) and at the end.
# The issue's bound: no more than 5% growth. BIN: measure other binaries.
# Usage: bench/memory_soak.sh HOME [N] [K]
cd "$(dirname "$0")/.."
home_src="${1:?usage: bench/memory_soak.sh HOME [N] [K]}"
n="${2:-10000}"
k="${3:-5}"
repos_dir="${REPOS_DIR:-/tmp/semble-bench/repos}"
source bench/daemon-home.sh soak "$home_src"
python3 - "$repos_dir" "$n" "$k" <<'PY'
import json, os, re, subprocess, sys, time
repos_dir, n, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
specs = {r["name"]: r for r in json.load(open("../shared/bench/semble-dev/repos.json"))}
split = json.load(open("../shared/bench/semble-dev/split.json"))["dev"]
plan, used = [], 0
for name in split:
    root = os.path.join(repos_dir, name, specs[name].get("benchmark_root") or "")
    ann = f"../shared/bench/semble-dev/annotations/{name}.json"
    if used < k and os.path.isdir(root) and os.path.isfile(ann):
        plan += [(root, q["query"]) for q in json.load(open(ann))]
        used += 1
def resident():
    out = subprocess.run(["hgd", "status"], capture_output=True, text=True).stdout
    m = re.search(r"(\d+) MiB resident \((\d+) MiB search indexes\)", out)
    return (int(m.group(1)), int(m.group(2))) if m else (None, None)
started = time.time()
warm = None
for i in range(n):
    root, query = plan[i % len(plan)]
    count = 5 + (i // len(plan)) % 10
    subprocess.run(["hgd", "search", "--json", "-n", str(count), query], cwd=root,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if i + 1 == len(plan):
        warm = resident()
        print(f"after the first pass ({len(plan)} searches): {warm[0]} MiB resident ({warm[1]} MiB search indexes)", flush=True)
end = resident()
growth = (end[0] - warm[0]) / warm[0] * 100 if warm and warm[0] else float("nan")
print(f"after {n} searches ({time.time() - started:.0f} s): {end[0]} MiB resident ({end[1]} MiB search indexes); growth since the first pass {growth:+.1f}%")
PY
