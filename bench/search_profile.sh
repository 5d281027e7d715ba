#!/usr/bin/env bash
# Where a search's time goes, on a quiet machine, over a copy of an index left by
# bench/quality.sh (HGD_BENCH_HOME): process start (`hgd --version`), whole searches with new and with repeated queries (query vector cached), and
# `rg` on the first word of each query in the same folder; then the daemon's own split per search
# (index check, overlay, embedding and ranking) from its debug log.
# Usage: bench/search_profile.sh HOME REPO [SUBDIR]   e.g. ... /tmp/hgd-bench-v3 click src/click
cd "$(dirname "$0")/.."
home_src="${1:?usage: bench/search_profile.sh HOME REPO [SUBDIR]}"
repo="${2:?usage: bench/search_profile.sh HOME REPO [SUBDIR]}"
sub="${3:-}"
repos_dir="${REPOS_DIR:-/tmp/semble-bench/repos}"
export HGD_LOG=hgd_daemon=debug
source bench/daemon-home.sh profile "$home_src"
queries="$HGD_HOME/queries.txt"
python3 -c "import json,sys; [print(q['query']) for q in json.load(open(sys.argv[1]))]" \
  "../shared/bench/semble-dev/annotations/$repo.json" > "$queries"
cd "$repos_dir/$repo/$sub" || { echo "no folder $repos_dir/$repo/$sub" >&2; exit 2; }
hgd search -n 1 warmup >/dev/null 2>&1
python3 - "$queries" "$HGD_HOME/logs/daemon.log" <<'PY'
import re, statistics, subprocess, sys, time
qs = open(sys.argv[1]).read().splitlines()
def run(cmd):
    t = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return (time.perf_counter() - t) * 1000
def show(label, xs):
    xs = sorted(xs)
    print(f"{label:50s} p50 {statistics.median(xs):6.1f} ms  p95 {xs[max(0, int(len(xs) * 0.95) - 1)]:6.1f} ms  (n={len(xs)})")
show("hgd --version (process start)", [run(["hgd", "--version"]) for _ in qs])
log = open(sys.argv[2]); log.seek(0, 2)
show("hgd search --json -n 10, new queries", [run(["hgd", "search", "--json", "-n", "10", q]) for q in qs])
lines = [l for l in log.read().splitlines() if "search: index check" in l]
show("hgd search --json -n 10, repeated (vector cached)", [run(["hgd", "search", "--json", "-n", "10", q]) for q in qs])
show("rg -i -n FIRST_WORD .", [run(["rg", "-i", "-n", q.split()[0], "."]) for q in qs])
def ms(v, u):
    return {"ns": float(v) / 1e6, "µs": float(v) / 1000, "s": float(v) * 1000}.get(u, float(v))
parts = [[ms(v, u) for v, u in re.findall(r"([0-9.]+)(ms|µs|ns|s)\b", l)[-3:]] for l in lines]
for i, name in enumerate(["index check (locate, HEAD)", "overlay (watcher sync)", "embedding wait + ranking"]):
    print(f"  daemon, new queries: {name:32s} median {statistics.median(p[i] for p in parts):.2f} ms")
PY
